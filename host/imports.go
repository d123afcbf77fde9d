package host

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// The plugin's imports (abi/ABI.md, "Imports"), implemented on the Runtime's sender and Cache. Each
// gets the JSON of its input block and returns the JSON of its answer; malformed input from the
// plugin is answered, never panicked on.

// The imports parse with gjson: encoding/json's reflection was a quarter of a fetch's host-side cost.

// httpSend is http_send (abi/ABI.md, "http_send"): input an HttpRequest's JSON, output the
// HttpResponse's JSON, {"error"} when no response was had (the fetch's deadline passed, refused,
// reset), or {"error","policy":true} when the sender's policy refused it. It never answers empty
// (which the plugin would read as a transport error).
func (c *Runtime) httpSend(ctx context.Context, in []byte) []byte {
	if !gjson.ValidBytes(in) {
		return []byte(`{"error":"host: malformed http_send request"}`)
	}
	req := httpRequest(gjson.ParseBytes(in))
	if d, ok := fetchDeadline(ctx); ok {
		if !time.Now().Before(d) {
			return []byte(`{"error":"timeout waiting for the token endpoint"}`)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	c.metrics.fetches.Add(1)
	start := time.Now()
	resp := c.sender.send(ctx, &req)
	if c.log.Enabled(ctx, slog.LevelDebug) {
		l, _ := ctx.Value(fetchLabelsKey{}).(fetchLabels)
		c.log.LogAttrs(ctx, slog.LevelDebug, "tokenwasm: token request", slog.String("provider", l.provider), slog.String("grant", l.grant),
			slog.Int("status", resp.Status), slog.Bool("no_response", resp.Error != ""), latencyMS(time.Since(start)))
	}
	b, _ := json.Marshal(resp)
	return b
}

// cacheGet is cache_get (abi/ABI.md, "cache_get"): input {"key"}, output {"hit":true,"value"} or
// {"hit":false}, with "error" when the Cache failed (a miss but for a grant's lineage). A key that
// is not a string is a miss.
func (c *Runtime) cacheGet(ctx context.Context, in []byte) []byte {
	key := gjson.GetBytes(in, "key")
	if key.Type != gjson.String {
		return []byte(`{"hit":false}`)
	}
	v, ok, err := c.cache.Get(ctx, key.Str)
	if err != nil {
		// The flow reads a failure as a miss, except where a miss would be a guess: a grant's lineage
		// (its newest refresh token) it does not read is never replaced by the request's own.
		c.cacheFailed("get", err)
		return []byte(`{"hit":false,"error":"cache_get failed"}`)
	}
	if !ok {
		return []byte(`{"hit":false}`)
	}
	b, _ := json.Marshal(abi.CacheGetOutput{Hit: true, Value: string(v)})
	return b
}

// cacheSet is cache_set (abi/ABI.md, "cache_set"): input {"key","value","ttl_ms","nx"?}, output
// {"stored":true}, {"stored":false} (nx, and the key was held), or {"error"} when the Cache failed
// (with "stored":true for nx: no lock to be had, the flow goes on). nx is honoured when the Cache is
// an AtomicCache, ignored otherwise.
func (c *Runtime) cacheSet(ctx context.Context, in []byte) []byte {
	var f [4]gjson.Result
	members(gjson.ParseBytes(in), f[:], "key", "value", "ttl_ms", "nx")
	if f[0].Type != gjson.String || f[1].Type != gjson.String {
		return []byte(`{"error":"host: malformed cache_set request"}`)
	}
	e := abi.CacheSetInput{Key: f[0].Str, Value: f[1].Str, TTLMS: f[2].Int(), NX: f[3].Bool()}
	ttl := time.Duration(e.TTLMS) * time.Millisecond
	if ac, ok := c.cache.(AtomicCache); ok && e.NX {
		stored, err := ac.SetNX(ctx, e.Key, []byte(e.Value), ttl)
		if err != nil {
			// No lock to be had: the flow fetches rather than wait, but refuses to send a one-time
			// grant's credential it could not mark (the error).
			c.cacheFailed("set", err)
			return []byte(`{"stored":true,"error":"cache_set failed"}`)
		}
		if !stored {
			return []byte(`{"stored":false}`)
		}
		if l, ok := ctx.Value(heldLocksKey{}).(*heldLocks); ok {
			l.add(e.Key, e.Value)
		}
		return []byte(`{"stored":true}`)
	}
	if err := c.cache.Set(ctx, e.Key, []byte(e.Value), ttl); err != nil {
		c.cacheFailed("set", err)
		return []byte(`{"error":"cache set failed"}`)
	}
	return []byte(`{"stored":true}`)
}

// cacheDelete is cache_delete (abi/ABI.md, "cache_delete"): input {"key","if_value"?}, output {} or
// {"error"} when the Cache failed. With if_value, only while the key holds it (an AtomicCache);
// a plain Cache leaves a conditional delete to the entry's TTL.
func (c *Runtime) cacheDelete(ctx context.Context, in []byte) []byte {
	var f [2]gjson.Result
	members(gjson.ParseBytes(in), f[:], "key", "if_value")
	if f[0].Type != gjson.String {
		return []byte(`{"error":"host: malformed cache_delete request"}`)
	}
	k := abi.CacheDeleteInput{Key: f[0].Str, IfValue: f[1].Str}
	var err error
	if ac, ok := c.cache.(AtomicCache); ok && k.IfValue != "" {
		err = ac.DeleteIf(ctx, k.Key, []byte(k.IfValue))
	} else if k.IfValue == "" {
		err = c.cache.Delete(ctx, k.Key)
	} // a conditional delete a plain Cache cannot do is left to the TTL
	if err != nil {
		c.cacheFailed("delete", err)
		if f, ok := ctx.Value(dropFailuresKey{}).(*atomic.Int32); ok {
			f.Add(1)
		}
		return []byte(`{"error":"cache_delete failed"}`)
	}
	return []byte(`{}`)
}

// dropFailuresKey carries a counter of the cache_delete calls that failed during one Revoke or
// Invalidate, so they can say the shared cache still holds the token.
type dropFailuresKey struct{}

// cacheFailed logs a cache failure; the error comes from the Cache, which never sees secrets.
func (c *Runtime) cacheFailed(op string, err error) {
	c.metrics.cacheErrors.Add(1)
	c.log.Warn("tokenwasm: cache "+op+" failed; treated as a miss", "err", err)
}

// heldLocks records the fetch locks one token call took, so a call that dies releases them.
type heldLocks struct {
	mu    sync.Mutex
	locks [][2]string
}

type heldLocksKey struct{}

func (h *heldLocks) add(key, value string) {
	h.mu.Lock()
	h.locks = append(h.locks, [2]string{key, value})
	h.mu.Unlock()
}

func (h *heldLocks) release(ctx context.Context, cache Cache) {
	ac, ok := cache.(AtomicCache)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.locks {
		_ = ac.DeleteIf(ctx, l[0], []byte(l[1]))
	}
}
