package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// sharedCache is the flow's cache (cache_get, cache_set, cache_delete in abi/ABI.md) on proxy-wasm
// shared data, which every worker of one vm_id sees. Shared data has no TTL and no delete, so each
// value is stored with its expiry, "<expires_at_ms> <value>", and an empty or expired entry is
// absent. Writes use the entry's CAS: "nx" stores only into an absent or expired entry and
// "if_value" deletes only that value, so of many workers racing exactly one wins.
type sharedCache struct {
	now func() int64
	// lastGet is what the last cache_get read: the filter remembers an answer the flow served from
	// it by that read's bytes and CAS (hot.go).
	lastGet entry
}

// entry is one read of a key in shared data.
type entry struct {
	key, raw string // raw: the bytes as stored, "<expires_at_ms> <value>"
	value    string
	untilMS  int64 // live while now < untilMS
	cas      uint32
	exists   bool // the key is in shared data at all
	live     bool // present and not expired
}

// perform answers one of the flow's cache actions as the import would.
func (c *sharedCache) perform(a core.Action) []byte {
	in := gjson.ParseBytes(a.Input)
	key := in.Get("key").String()
	switch a.Import {
	case abi.ImportCacheGet:
		e := c.read(key)
		c.lastGet = e
		if !e.live {
			return []byte(`{"hit":false}`)
		}
		return appendJSONString(append(make([]byte, 0, len(e.value)+32), `{"hit":true,"value":`...), e.value, '}')
	case abi.ImportCacheSet:
		value, ttl := in.Get("value").String(), in.Get("ttl_ms").Int()
		if in.Get("nx").Bool() {
			// An entry that would outlive the TTL it is stored with (a clock stepped back, another
			// filter's value) counts as absent: a lock never stops calls for longer than its TTL.
			limit := c.now() + ttl
			ok := c.write(key, c.entry(value, ttl), func(e entry) bool { return !e.live || e.untilMS > limit })
			return []byte(`{"stored":` + strconv.FormatBool(ok) + `}`)
		}
		c.set(key, value, ttl)
	case abi.ImportCacheDelete:
		ifValue := in.Get("if_value")
		c.write(key, nil, func(e entry) bool { return !ifValue.Exists() || e.live && e.value == ifValue.Str })
	}
	return []byte("{}")
}

// set stores value under key for ttlMS, whatever the key holds.
func (c *sharedCache) set(key, value string, ttlMS int64) {
	c.write(key, c.entry(value, ttlMS), func(entry) bool { return true })
}

func (c *sharedCache) entry(value string, ttlMS int64) []byte {
	b := strconv.AppendInt(make([]byte, 0, len(value)+21), c.now()+ttlMS, 10)
	return append(append(b, ' '), value...)
}

// read reads key: its value, whether it is live (present and not expired), its CAS and whether the
// key exists in shared data at all.
func (c *sharedCache) read(key string) entry {
	b, cas, err := proxywasm.GetSharedData(key)
	if err != nil {
		return entry{key: key}
	}
	e := entry{key: key, raw: string(b), cas: cas, exists: true} // a copy: the host may reuse b
	exp, v, ok := strings.Cut(e.raw, " ")
	if !ok {
		return e
	}
	until, err := strconv.ParseInt(exp, 10, 64)
	if err == nil && until > c.now() {
		e.value, e.untilMS, e.live = v, until, true
	}
	return e
}

// write stores entry under key if cond holds for what the key holds now, with that value's CAS, and
// reports whether it did. A key seen for the first time is created empty first: Envoy skips the
// check for CAS 0, so only a real CAS makes two workers' writes exclusive.
func (c *sharedCache) write(key string, value []byte, cond func(cur entry) bool) bool {
	for range 8 {
		e := c.read(key)
		if !cond(e) {
			return false
		}
		if !e.exists {
			_ = proxywasm.SetSharedData(key, nil, 0) // a race here is harmless: both create it empty
			continue
		}
		err := proxywasm.SetSharedData(key, value, e.cas)
		if err == nil {
			return true
		}
		if !errors.Is(err, types.ErrorStatusCasMismatch) {
			return false
		}
	}
	return false
}

// appendJSONString appends s as a JSON string, then the bytes of tail.
func appendJSONString(b []byte, s string, tail ...byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', upperHex[c>>4], upperHex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(append(b, '"'), tail...)
}
