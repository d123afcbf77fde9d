package host

import (
	"context"
	"encoding/json"
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
	if err := c.cache.Set(ctx, e.Key, []byte(e.Value), time.Duration(e.TTLMS)*time.Millisecond); err != nil {
		c.cacheFailed("set", err)
		return []byte(`{"error":"cache set failed"}`)
	}
	return []byte(`{}`)
}

func (c *Client) cacheDelete(ctx context.Context, in []byte) []byte {
	var k abi.CacheDeleteInput
	if json.Unmarshal(in, &k) != nil {
		return []byte(`{"error":"host: malformed cache_delete request"}`)
	}
	if err := c.cache.Delete(ctx, k.Key); err != nil {
		c.cacheFailed("delete", err)
	}
	return []byte(`{}`)
}

// cacheFailed logs a cache failure; the error comes from the Cache, which never sees secrets.
func (c *Client) cacheFailed(op string, err error) {
	c.metrics.cacheErrors.Add(1)
	c.log.Warn("tokenwasm: cache "+op+" failed; treated as a miss", "err", err)
}
