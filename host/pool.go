package host

import (
	"context"
	"fmt"

	"github.com/tokenwasm/tokenwasm/host/internal/extism"
)

// pool hands out plugin instances, one caller at a time each (a wasm instance is single-threaded).
// Idle instances are reused; a broken one (trap, deadline, memory) is closed and replaced on demand.
type pool struct {
	module *extism.Module
	idle   chan *extism.Instance
	slots  chan struct{} // one token per live instance
	// recycleAbove is the const of that name; tests raise it to keep one instance for a whole run.
	recycleAbove int
}

func newPool(m *extism.Module, max int) *pool {
	if max <= 0 {
		max = 1
	}
	return &pool{module: m, idle: make(chan *extism.Instance, max), slots: make(chan struct{}, max), recycleAbove: recycleAbove}
}

// tryGet returns an idle instance if one is free now.
func (p *pool) tryGet() (*extism.Instance, bool) {
	select {
	case inst := <-p.idle:
		return inst, true
	default:
		return nil, false
	}
}

func (p *pool) get(ctx context.Context) (*extism.Instance, error) {
	if inst, ok := p.tryGet(); ok {
		return inst, nil
	}
	select {
	case inst := <-p.idle:
		return inst, nil
	case p.slots <- struct{}{}:
		inst, err := p.module.Instantiate(ctx)
		if err != nil {
			<-p.slots
			return nil, fmt.Errorf("tokenwasm: instantiate plugin: %w", err)
		}
		return inst, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recycleAbove is the kernel memory a call may move before its instance is replaced rather than
// reused. TinyGo's collector is conservative: a word in the plugin's data that happens to point into
// a large buffer keeps it alive, and a few megabyte-sized calls in a row once grew an instance past
// its memory cap. A token call moves a few KiB; only pathological inputs and responses pay the
// 80 us of a new instance.
const recycleAbove = 1 << 20

func (p *pool) put(ctx context.Context, inst *extism.Instance) {
	if inst.Broken() || inst.CallBytes() > p.recycleAbove {
		_ = inst.Close(ctx)
		<-p.slots
		return
	}
	p.idle <- inst // never blocks: at most cap(slots) instances exist
}

// warm creates n idle instances ahead of the first calls.
func (p *pool) warm(ctx context.Context, n int) error {
	insts := make([]*extism.Instance, 0, n)
	defer func() {
		for _, i := range insts {
			p.put(ctx, i)
		}
	}()
	for range n {
		i, err := p.get(ctx)
		if err != nil {
			return err
		}
		insts = append(insts, i)
	}
	return nil
}

func (p *pool) close(ctx context.Context) {
	for {
		select {
		case inst := <-p.idle:
			_ = inst.Close(ctx)
			<-p.slots
		default:
			return
		}
	}
}
