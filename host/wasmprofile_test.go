package host

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// TestWasmProfile prints where a forced fetch's time goes inside the plugin, function by function:
// Go's profiler sees the plugin's compiled code as one block (runtime._ExternalCode). It runs only
// when asked (RATIONALE.md, "Where a performance goal is not met"):
//
//	TOKENWASM_WASM_PROFILE=300 go test ./host -run TestWasmProfile -v
//
// A first run counts every function's calls; a second times those called at most maxCalls times per
// fetch (a listener on a leaf called hundreds of times would measure itself): total is a call's time,
// self that less the timed calls inside it. The listener adds some 0.3 us per timed call: compare the rows
// with each other, not with a benchmark.
func TestWasmProfile(t *testing.T) {
	fetches, _ := strconv.Atoi(os.Getenv("TOKENWASM_WASM_PROFILE"))
	if fetches <= 0 {
		t.Skip("set TOKENWASM_WASM_PROFILE to a number of fetches to profile")
	}
	const maxCalls = 12
	work := profileWork(t, os.Getenv("TOKENWASM_WASM_PROFILE_WORK"))
	if os.Getenv("TOKENWASM_WASM_PROFILE_ALLOCS") != "" {
		printAllocations(t, fetches, work)
		return
	}
	counts := profileFetches(t, fetches, work, func(string) bool { return true })
	timed := profileFetches(t, fetches, work, func(name string) bool {
		s := counts[name]
		return s != nil && s.calls <= maxCalls*fetches
	})
	rows := make([]string, 0, len(timed))
	for name := range timed {
		rows = append(rows, name)
	}
	slices.SortFunc(rows, func(a, b string) int { return cmp.Compare(timed[b].total, timed[a].total) })
	per := func(d time.Duration) string { return (d / time.Duration(fetches)).String() }
	fmt.Printf("%-72s %8s %10s %10s\n", "function (called at most 12 times per fetch)", "calls", "total", "self")
	for _, name := range rows[:min(len(rows), profileRows())] {
		s := timed[name]
		short := strings.ReplaceAll(strings.TrimPrefix(name, "main."), "github.com/tokenwasm/tokenwasm/plugin/", "")
		fmt.Printf("%-72.72s %8.1f %10s %10s\n", short, float64(s.calls)/float64(fetches), per(s.total), per(s.self))
	}
}

type callStat struct {
	calls       int
	total, self time.Duration
}

// profileFetches makes fetches forced fetches on one instance, the first 20 unmeasured, with a
// listener on each function of the plugin that timed says to time, and returns their figures.
func profileFetches(t *testing.T, fetches int, work func(*Runtime, abi.TokenRequest) error, timed func(name string) bool) map[string]*callStat {
	stats := map[string]*callStat{}
	type frame struct {
		name   string
		start  time.Time
		inside time.Duration // in the timed calls it made
	}
	var stack []frame
	on := false
	factory := experimental.FunctionListenerFactoryFunc(func(def api.FunctionDefinition) experimental.FunctionListener {
		name := def.DebugName()
		if _, _, imported := def.Import(); imported || !timed(name) {
			return nil
		}
		return listener{
			before: func(experimental.StackIterator) {
				if on {
					stack = append(stack, frame{name: name, start: time.Now()})
				}
			},
			after: func() {
				if !on || len(stack) == 0 {
					return
				}
				f := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				d := time.Since(f.start)
				s := stats[f.name]
				if s == nil {
					s = &callStat{}
					stats[f.name] = s
				}
				s.calls++
				s.total += d
				s.self += d - f.inside
				if len(stack) > 0 {
					stack[len(stack)-1].inside += d
				}
			},
		}
	})
	c, req := profileRuntime(t, experimental.WithFunctionListenerFactory(context.Background(), factory))
	for i := range 20 + fetches {
		on = i >= 20
		if err := work(c, req); err != nil {
			t.Fatal(err)
		}
	}
	return stats
}

// profileRuntime returns a Runtime of one instance whose plugin is compiled with ctx's listeners,
// and a forced request to a NikoHealth fake.
func profileRuntime(t *testing.T, ctx context.Context) (*Runtime, abi.TokenRequest) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	t.Cleanup(fake.Close)
	// No compilation cache: each run compiles the plugin with its own listeners.
	c, err := New(ctx, WithLoopback(), WithMaxInstances(1), WithCompilationCache(wazero.NewCompilationCache()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	cfg := fake.Config()
	return c, abi.TokenRequest{Provider: "nikohealth", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		TokenURL: fake.TokenURL(), Force: true}
}

// profileWork is what one profiled iteration does: a forced fetch, or with
// TOKENWASM_WASM_PROFILE_WORK=codec BenchmarkCodec's encode and decode.
func profileWork(t *testing.T, name string) func(*Runtime, abi.TokenRequest) error {
	switch name {
	case "", "fetch":
		return func(c *Runtime, req abi.TokenRequest) error {
			_, err := c.Token(context.Background(), req)
			return err
		}
	case "codec":
		enc, dec := codecInputs()
		return func(c *Runtime, _ abi.TokenRequest) error {
			if _, err := c.callRaw(context.Background(), abi.ExportEncode, enc); err != nil {
				return err
			}
			_, err := c.callRaw(context.Background(), abi.ExportDecode, dec)
			return err
		}
	}
	t.Fatalf("TOKENWASM_WASM_PROFILE_WORK=%q: fetch or codec", name)
	return nil
}

// printAllocations prints where the plugin allocates, per iteration: the three functions above
// each call of TinyGo's runtime.alloc (a function inlined into another is counted as that one).
// Each allocation costs about half a microsecond, and a collection when the heap fills.
//
//	TOKENWASM_WASM_PROFILE_ALLOCS=1 TOKENWASM_WASM_PROFILE=100 go test ./host -run TestWasmProfile -v
func printAllocations(t *testing.T, n int, work func(*Runtime, abi.TokenRequest) error) {
	on, sites := false, map[string]int{}
	factory := experimental.FunctionListenerFactoryFunc(func(def api.FunctionDefinition) experimental.FunctionListener {
		if def.DebugName() != "main.runtime.alloc" {
			return nil
		}
		return listener{before: func(si experimental.StackIterator) {
			if !on || !si.Next() { // runtime.alloc itself
				return
			}
			var chain []string
			for range 3 {
				if !si.Next() {
					break
				}
				chain = append(chain, strings.TrimPrefix(si.Function().Definition().DebugName(), "main."))
			}
			sites[strings.Join(chain, " < ")]++
		}, after: func() {}}
	})
	c, req := profileRuntime(t, experimental.WithFunctionListenerFactory(context.Background(), factory))
	for i := range 20 + n {
		on = i >= 20
		if err := work(c, req); err != nil {
			t.Fatal(err)
		}
	}
	rows := slices.Collect(maps.Keys(sites))
	slices.SortFunc(rows, func(a, b string) int { return cmp.Or(cmp.Compare(sites[b], sites[a]), cmp.Compare(a, b)) })
	total := 0
	for _, r := range rows {
		total += sites[r]
	}
	fmt.Printf("%.1f allocations per iteration\n", float64(total)/float64(n))
	for _, r := range rows {
		fmt.Printf("%6.1f  %.150s\n", float64(sites[r])/float64(n), strings.ReplaceAll(r, "github.com/tokenwasm/tokenwasm/plugin/", ""))
	}
}

// listener calls before and after around every call of the function it is made for.
type listener struct {
	before func(experimental.StackIterator)
	after  func()
}

func (l listener) Before(_ context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, si experimental.StackIterator) {
	l.before(si)
}
func (l listener) After(context.Context, api.Module, api.FunctionDefinition, []uint64) { l.after() }
func (l listener) Abort(context.Context, api.Module, api.FunctionDefinition, error)    { l.after() }

// profileRows is how many functions TestWasmProfile prints: TOKENWASM_WASM_PROFILE_ROWS, or 30.
func profileRows() int {
	if n, err := strconv.Atoi(os.Getenv("TOKENWASM_WASM_PROFILE_ROWS")); err == nil && n > 0 {
		return n
	}
	return 30
}
