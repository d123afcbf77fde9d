package host

import "time"

// clock is the Go host's one seam for time, as x/oauth2 has its one timeNow: every read of the time a
// token lives by goes through a Runtime's clock (a held token's schedule, refresh ahead and its
// backoff, the source map's eviction of expired tokens, the discovery cache's expiry, the default
// MemoryCache's entries, and the now_ms the plugin is given). The nil clock is the wall clock; tests
// set another with withClock to move time without sleeping.
//
// Deadlines are not on it: a context's deadline, a fetch's timeout_ms and a latency are measured on
// the wall clock, by time.Now, since the context package waits on that clock.
type clock func() time.Time

// now reads c.
func (c clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}
