package host

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
)

// The plugin's imports (abi/ABI.md, "Imports"), implemented on the Client's sender and Cache. Each
// gets the JSON of its input block and returns the JSON of its answer; malformed input from the
// plugin is answered, never panicked on.

func (c *Client) httpSend(ctx context.Context, in []byte) []byte {
	var req abi.HTTPRequest
	if err := json.Unmarshal(in, &req); err != nil {
		return []byte(`{"error":"host: malformed http_send request"}`)
	}
	c.metrics.fetches.Add(1)
	start := time.Now()
	resp := c.sender.send(ctx, &req)
	c.log.Debug("tokenwasm: token request", "status", resp.Status, "failed", resp.Error != "", "elapsed", time.Since(start))
	b, _ := json.Marshal(resp)
	return b
}

func (c *Client) cacheGet(ctx context.Context, in []byte) []byte {
	var k abi.CacheGetInput
	if json.Unmarshal(in, &k) != nil {
		return []byte(`{"hit":false}`)
	}
	v, ok, err := c.cache.Get(ctx, k.Key)
	if err != nil {
		c.cacheFailed("get", err)
		return []byte(`{"hit":false}`)
	}
	if !ok {
		return []byte(`{"hit":false}`)
	}
	b, _ := json.Marshal(abi.CacheGetOutput{Hit: true, Value: string(v)})
	return b
}

func (c *Client) cacheSet(ctx context.Context, in []byte) []byte {
	var e abi.CacheSetInput
	if json.Unmarshal(in, &e) != nil {
		return []byte(`{"error":"host: malformed cache_set request"}`)
	}
	ttl := time.Duration(e.TTLMS) * time.Millisecond
	if ac, ok := c.cache.(AtomicCache); ok && e.NX {
		stored, err := ac.SetNX(ctx, e.Key, []byte(e.Value), ttl)
		if err != nil {
			c.cacheFailed("set", err)
			return []byte(`{"stored":true}`) // no lock to be had: fetch rather than wait
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

func (c *Client) cacheDelete(ctx context.Context, in []byte) []byte {
	var k abi.CacheDeleteInput
	if json.Unmarshal(in, &k) != nil {
		return []byte(`{"error":"host: malformed cache_delete request"}`)
	}
	var err error
	if ac, ok := c.cache.(AtomicCache); ok && k.IfValue != "" {
		err = ac.DeleteIf(ctx, k.Key, []byte(k.IfValue))
	} else if k.IfValue == "" {
		err = c.cache.Delete(ctx, k.Key)
	} // a conditional delete a plain Cache cannot do is left to the TTL
	if err != nil {
		c.cacheFailed("delete", err)
	}
	return []byte(`{}`)
}

// cacheFailed logs a cache failure; the error comes from the Cache, which never sees secrets.
func (c *Client) cacheFailed(op string, err error) {
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
