package host

import (
	"context"
	"fmt"

	"github.com/tokenwasm/tokenwasm/host/internal/rawcall"
)

// The go-sdk witness's way in (host/internal/rawcall): one pooled instance of a runtime, called export
// by export with the runtime's imports.
func init() {
	rawcall.Open = func(ctx context.Context, opts ...any) (rawcall.Call, func(), error) {
		options := make([]Option, len(opts))
		for i, o := range opts {
			opt, ok := o.(Option)
			if !ok {
				return nil, nil, fmt.Errorf("rawcall: %T is not a host.Option", o)
			}
			options[i] = opt
		}
		c, err := New(ctx, options...)
		if err != nil {
			return nil, nil, err
		}
		inst, err := c.pool.get(ctx)
		if err != nil {
			_ = c.Close(ctx)
			return nil, nil, err
		}
		release := func() {
			c.pool.put(context.Background(), inst)
			_ = c.Close(context.Background())
		}
		return inst.Call, release, nil
	}
}
