package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tokenwasm/tokenwasm/abi"
)

// The token flow through the token_step export (abi/ABI.md, "token_step"): one short plugin call per
// step, with the I/O done here between calls. The plugin's flow is the same one the token export
// runs; what changes is that no instance is held while a provider takes its time to answer, so a
// slow provider cannot starve the pool for every other credential set.

// maxSteps bounds a flow: the longest one has six calls (lock, second look, send).
const maxSteps = 16

// step runs one flow (token, or invalidate with op "invalidate") to its final answer and does the
// actions the answer leaves in "then". It returns the plugin's final answer as it came ("then"
// included: the result readers skip it). A flow that ends otherwise releases the fetch locks it took.
func (c *Runtime) step(ctx context.Context, request []byte, op string) (final []byte, err error) {
	locks := &heldLocks{}
	ctx = context.WithValue(ctx, heldLocksKey{}, locks)
	defer func() {
		if err != nil {
			locks.release(context.WithoutCancel(ctx), c.cache)
		}
	}()
	in := make([]byte, 0, len(request)+160)
	var state, answer []byte
	for range maxSteps {
		in = append(append(in[:0], `{"request":`...), request...)
		if op != "" {
			in = append(append(append(in, `,"op":"`...), op...), '"')
		}
		if state != nil {
			in = append(append(in, `,"state":`...), state...)
		}
		if answer != nil {
			in = append(append(in, `,"answer":`...), answer...)
		}
		in = append(in, '}')
		out, err := c.callRaw(ctx, abi.ExportTokenStep, in)
		if err != nil {
			return nil, err
		}
		var f [3]gjson.Result
		members(gjson.Parse(unsafeString(out)), f[:], "next", "state", "then")
		next, st := f[0], f[1]
		if !next.Exists() {
			// In order; an action marked after_ok only if every one before it succeeded (a grant's
			// exchange mark goes only once its new refresh token is stored).
			ok := true
			f[2].ForEach(func(_, a gjson.Result) bool {
				if a.Get("after_ok").Type == gjson.True && !ok {
					return true
				}
				if gjson.GetBytes(c.performAction(ctx, a), "error").Exists() {
					ok = false
				}
				return true
			})
			return out, nil
		}
		if st.Type != gjson.String {
			return nil, fmt.Errorf("tokenwasm: %s: an action without a state", abi.ExportTokenStep)
		}
		state = []byte(st.Raw)
		answer = c.performAction(ctx, next)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("tokenwasm: token_step did not end")
}

// performAction does one {"import","input"} action of the flow.
func (c *Runtime) performAction(ctx context.Context, a gjson.Result) []byte {
	var g [2]gjson.Result
	members(a, g[:], "import", "input")
	return c.perform(ctx, g[0].Str, []byte(g[1].Raw))
}

// perform does one action of the flow with the same functions the plugin's imports call.
func (c *Runtime) perform(ctx context.Context, name string, in []byte) []byte {
	switch name {
	case abi.ImportHTTPSend:
		return c.httpSend(ctx, in)
	case abi.ImportCacheGet:
		return c.cacheGet(ctx, in)
	case abi.ImportCacheSet:
		return c.cacheSet(ctx, in)
	case abi.ImportCacheDelete:
		return c.cacheDelete(ctx, in)
	case abi.ActionSign:
		return c.sign(ctx, in)
	}
	return nil // an import this host does not know: answered as nothing
}

// callRaw runs one export on a pooled instance and returns a copy of its answer (the instance's
// memory is reused by its next call).
func (c *Runtime) callRaw(ctx context.Context, export string, input []byte) ([]byte, error) {
	var out rawAnswer
	if err := c.call(ctx, export, input, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// unsafeString views b as a string: b is not changed while the string is read.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// rawAnswer keeps an export's answer as bytes, copied out of the instance.
type rawAnswer []byte

func (r *rawAnswer) parse(b []byte) error {
	if !gjson.ValidBytes(b) {
		return errNotJSON
	}
	*r = bytes.Clone(b)
	return nil
}

// runToken runs the token flow for an encoded request with the Runtime's driver and reads its answer.
func (c *Runtime) runToken(ctx context.Context, input []byte, res *abi.Result) error {
	if !c.stepFlow {
		return c.call(ctx, abi.ExportToken, input, (*tokenResult)(res))
	}
	out, err := c.step(ctx, input, "")
	if err != nil {
		return err
	}
	if err := (*tokenResult)(res).parse(out); err != nil {
		return fmt.Errorf("tokenwasm: %s: %w", abi.ExportTokenStep, err)
	}
	return nil
}

// invalidateFlow runs the invalidate flow and reports whether a new token is worth trying (for an
// access_token: the plugin's 401 window, fleet-wide).
func (c *Runtime) invalidateFlow(ctx context.Context, req abi.TokenRequest) (retry bool, err error) {
	var res abi.Result
	req, err = c.resolve(ctx, req)
	if err != nil {
		return false, err
	}
	var dropFailed atomic.Int32
	ctx = context.WithValue(ctx, dropFailuresKey{}, &dropFailed)
	if !c.stepFlow {
		if err := c.callJSON(ctx, abi.ExportInvalidate, req, (*result)(&res)); err != nil {
			return false, err
		}
	} else {
		if err := c.enter(); err != nil {
			return false, err
		}
		defer c.leave()
		if res, err = c.stepOp(ctx, req, abi.OpInvalidate); err != nil {
			return false, err
		}
	}
	if res.Error != nil {
		return false, res.Error
	}
	if dropFailed.Load() > 0 {
		return false, &NotDroppedError{}
	}
	return res.Retry == nil || *res.Retry, nil
}

// NotDroppedError is what Revoke and Invalidate return when the cache could not drop the token: a
// shared cache may serve it again (to this process and others) until it expires. Revoked tells
// whether the provider accepted the revocation; Err is the provider's answer when it did not.
type NotDroppedError struct {
	Revoked bool
	Err     error
}

func (e *NotDroppedError) Error() string {
	msg := "tokenwasm: the cache could not drop the token; it may be served again until it expires"
	switch {
	case e.Err != nil:
		return msg + " (the provider did not accept the revocation: " + e.Err.Error() + ")"
	case e.Revoked:
		return msg + " (the provider accepted the revocation)"
	}
	return msg
}

func (e *NotDroppedError) Unwrap() error { return e.Err }

// stepOp runs the flow op for req through token_step and reads its answer.
func (c *Runtime) stepOp(ctx context.Context, req abi.TokenRequest, op string) (abi.Result, error) {
	var res abi.Result
	b, err := json.Marshal(req)
	if err != nil {
		return res, fmt.Errorf("tokenwasm: %w", err)
	}
	out, err := c.step(ctx, b, op)
	if err != nil {
		return res, err
	}
	if err := (*result)(&res).parse(out); err != nil {
		return res, fmt.Errorf("tokenwasm: %s: %w", abi.ExportTokenStep, err)
	}
	return res, nil
}

// Revoke revokes a token at the provider's revocation endpoint (RFC 7009) and drops the cached
// token of req's credential set, in this process and in the shared cache, whatever the provider
// answered. It revokes req.AccessToken, or without one req.RefreshToken; the endpoint is
// req.RevocationURL, the profile's, or for smart the one discovery found. It runs through
// token_step (a private_key_jwt assertion is signed as for a token).
func (c *Runtime) Revoke(ctx context.Context, req abi.TokenRequest) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	if s, err := c.sources.get(c, req); err == nil {
		if h := s.cur.Load(); h != nil {
			s.cur.CompareAndSwap(h, nil)
		}
	}
	req, err := c.resolve(ctx, req)
	if err != nil {
		return err
	}
	var dropFailed atomic.Int32
	res, err := c.stepOp(withFetchLabels(context.WithValue(ctx, dropFailuresKey{}, &dropFailed), &req), req, abi.OpRevoke)
	if err != nil {
		return err
	}
	if res.Error != nil {
		c.metrics.countError(res.Error.Kind)
		if dropFailed.Load() > 0 {
			return &NotDroppedError{Err: res.Error}
		}
		return res.Error
	}
	if dropFailed.Load() > 0 {
		return &NotDroppedError{Revoked: true}
	}
	return nil
}

// withStepFlow chooses the flow's driver: token_step (true) or the token export.
func withStepFlow(on bool) Option { return func(c *config) { c.stepFlow = on } }

// withClock sets the Runtime's clock (clock.go) to now: it judges its held tokens by it, its default
// MemoryCache expires entries by it, and the plugin is given it as now_ms, so tests move time forward
// without sleeping. Deadlines stay on the wall clock.
func withClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }
