// Command benchtable is `make bench`: it runs the benchmarks that have a goal (Go host, Envoy filter,
// the npm package in Node and Deno), each beside its peer in the same run, takes the median of each
// figure over -count runs (as benchstat does), and prints one markdown table: figure, peer, ratio,
// goal, met. The machine is shared and noisy, so only ratios from the same run are compared; the raw
// output goes to -raw, for benchstat.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	count := flag.Int("count", 5, "runs of each benchmark (the table shows medians)")
	raw := flag.String("raw", "build/bench.txt", "file for the benchmarks' raw output")
	skipJS := flag.Bool("nojs", false, "skip the Node and Deno measurements")
	flag.Parse()
	if err := run(*count, *raw, *skipJS, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(count int, rawPath string, skipJS bool, w io.Writer) error {
	if err := os.MkdirAll(filepath.Dir(rawPath), 0o755); err != nil {
		return err
	}
	rawFile, err := os.Create(rawPath)
	if err != nil {
		return err
	}
	defer rawFile.Close()
	n := strconv.Itoa(count)
	fig := figures{}

	goBench := []string{"test", "-run", "^$", "-benchmem", "-count", n, "-timeout", "60m"}
	out, err := runCmd(rawFile, "", "go", append(goBench, "-bench", "^Benchmark(TokenFetch|FlowDriver|Codec|TokenCacheHit)$", "./host")...)
	if err != nil {
		return err
	}
	fig.addGo(out)
	envoyDir, envoyPkg := "", "./plugin/envoy"
	if _, err := os.Stat("plugin/envoy/go.mod"); err == nil {
		envoyDir, envoyPkg = "plugin/envoy", "."
	}
	out, err = runCmd(rawFile, envoyDir, "go", append(goBench, "-bench", "RequestOutOfScope|RequestFromSharedData|Fetch", envoyPkg)...)
	if err != nil {
		return err
	}
	fig.addGo(out)

	versions := []string{"Go " + strings.TrimPrefix(runtime.Version(), "go")}
	if !skipJS {
		for _, rt := range jsRuntimes() {
			for range count {
				out, err := runCmd(rawFile, "host/js", rt.cmd[0], rt.cmd[1:]...)
				if err != nil {
					return err
				}
				fig.addJS(rt.name, out)
			}
			versions = append(versions, rt.name+" "+rt.version())
		}
	}
	fmt.Fprintf(w, "Measured %s on %s (%s), medians of %d runs: `make bench`\n\n", time.Now().UTC().Format("2006-01-02"), machine(), strings.Join(versions, ", "), count)
	writeTable(w, fig, rows())
	return nil
}

// runCmd runs a command in dir, its output copied to raw as well, and returns its standard output.
func runCmd(raw io.Writer, dir, name string, args ...string) ([]byte, error) {
	fmt.Fprintf(os.Stderr, "benchtable: %s %s\n", name, strings.Join(args, " "))
	fmt.Fprintf(raw, "# %s %s\n", name, strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, raw)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.Bytes(), nil
}

type jsRuntime struct {
	name string
	cmd  []string
}

// jsRuntimes are the runtimes bench/measure.js runs in: Node from PATH, Deno from the package's
// devDependencies (`npm ci` in host/js).
func jsRuntimes() []jsRuntime {
	return []jsRuntime{
		{"Node", []string{"node", "bench/measure.js"}},
		{"Deno", []string{"node_modules/.bin/deno", "run", "-A", "bench/measure.js"}},
	}
}

func (rt jsRuntime) version() string {
	cmd := exec.Command(rt.cmd[0], "--version")
	cmd.Dir = "host/js"
	out, err := cmd.Output()
	if err != nil {
		return "?"
	}
	first, _, _ := strings.Cut(string(out), "\n") // "v20.20.2", or "deno 2.9.6 (stable, ...)"
	v := strings.Fields(first)
	switch len(v) {
	case 0:
		return "?"
	case 1:
		return strings.TrimPrefix(v[0], "v")
	}
	return v[1]
}

// machine names the CPU and the number of cores.
func machine() string {
	model := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores", model, runtime.NumCPU())
}

// figures holds every sample of every figure: "go:BenchmarkX/sub" (ns/op, and allocs/op under
// "go:...#allocs"), "Node:what" and "Deno:what" (measure.js's lines).
type figures map[string][]float64

// addGo reads `go test -bench` output: name-P  N  v ns/op ... a allocs/op.
func (f figures) addGo(out []byte) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name := fields[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch fields[i+1] {
			case "ns/op":
				f["go:"+name] = append(f["go:"+name], v)
			case "allocs/op":
				f["go:"+name+"#allocs"] = append(f["go:"+name+"#allocs"], v)
			}
		}
	}
}

// addJS reads measure.js's lines: runtime<TAB>what<TAB>value unit. Figures are kept in ns.
func (f figures) addJS(rt string, out []byte) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "\t")
		if len(parts) != 3 {
			continue
		}
		val := strings.Fields(parts[2])
		if len(val) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(val[0], 64)
		if err != nil {
			continue
		}
		switch val[1] {
		case "us":
			v *= 1e3
		case "ms":
			v *= 1e6
		case "ns/op":
		default:
			continue
		}
		f[rt+":"+parts[1]] = append(f[rt+":"+parts[1]], v)
	}
}

// median is the median of a figure's samples, and whether it has any.
func (f figures) median(key string) (float64, bool) {
	s := slices.Clone(f[key])
	if len(s) == 0 {
		return 0, false
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

// A row is one goal: ours beside peer. kind says how they are compared: a ratio (ours/peer <= goal),
// a difference (ours-peer <= goal ns), or an absolute (ours <= goal ns; peer shown for reference).
type row struct {
	what       string
	ours, peer string // figure keys
	oursName   string
	peerName   string
	kind       int
	goal       float64
	zeroAllocs bool // ours must also allocate nothing
}

const (
	ratio = iota
	difference
	absolute
)

func rows() []row {
	const fetchJS, oidc = "client.token({force: true}): a fetch through the plugin", "openid-client clientCredentialsGrant"
	const plainJS, frozenJS = "await client.token(plain object), cached", "await client.token(frozen request), cached"
	r := []row{
		{what: "Go: a fetch (loopback fake)", ours: "go:BenchmarkTokenFetch/tokenwasm", peer: "go:BenchmarkTokenFetch/x-oauth2",
			oursName: "tokenwasm", peerName: "x/oauth2 clientcredentials", kind: ratio, goal: 1.5},
		{what: "Go: flow driver", ours: "go:BenchmarkFlowDriver/token_step", peer: "go:BenchmarkFlowDriver/token",
			oursName: "token_step", peerName: "token export", kind: ratio, goal: 1.10},
		{what: "Go: encode + decode", ours: "go:BenchmarkCodec/wasm", peer: "go:BenchmarkCodec/native",
			oursName: "wasm", peerName: "native", kind: ratio, goal: 4},
		{what: "Go: cached token", ours: "go:BenchmarkTokenCacheHit/client-token", peer: "go:BenchmarkTokenCacheHit/tokenwasm",
			oursName: "Runtime.Token", peerName: "TokenSource", kind: ratio, goal: 1.3, zeroAllocs: true},
		{what: "Go: cached token", ours: "go:BenchmarkTokenCacheHit/tokenwasm", peer: "go:BenchmarkTokenCacheHit/x-oauth2",
			oursName: "TokenSource", peerName: "x/oauth2 ReuseTokenSource", kind: ratio, goal: 1, zeroAllocs: true},
	}
	for _, rt := range jsRuntimes() {
		r = append(r,
			row{what: rt.name + ": cached token()", ours: rt.name + ":" + plainJS, peer: rt.name + ":" + frozenJS,
				oursName: "plain object", peerName: "frozen object", kind: absolute, goal: 1000},
			row{what: rt.name + ": a fetch (loopback server)", ours: rt.name + ":" + fetchJS, peer: rt.name + ":" + oidc,
				oursName: "token({force})", peerName: "openid-client", kind: ratio, goal: 1.3})
	}
	for _, runner := range []struct {
		name string
		goal float64
	}{{"wasm", 5000}, {"native", 1000}} {
		r = append(r, row{what: "Envoy filter (" + runner.name + "): token from shared data",
			ours: "go:BenchmarkRequestFromSharedData/" + runner.name, peer: "go:BenchmarkRequestOutOfScope/" + runner.name,
			oursName: "token request", peerName: "out-of-scope request", kind: difference, goal: runner.goal})
	}
	return r
}

// writeTable prints the rows as a markdown table.
func writeTable(w io.Writer, f figures, rs []row) {
	fmt.Fprintln(w, "| measure | ours | peer (same run) | ratio | goal | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rs {
		ours, ok1 := f.median(r.ours)
		peer, ok2 := f.median(r.peer)
		if !ok1 || !ok2 {
			fmt.Fprintf(w, "| %s | %s | %s | | %s | not measured |\n", r.what, r.oursName, r.peerName, goalText(r))
			continue
		}
		oursText := r.oursName + " " + duration(ours)
		met := false
		var cmp string
		switch r.kind {
		case ratio:
			met = ours/peer <= r.goal
			cmp = fmt.Sprintf("%.2fx", ours/peer)
		case difference:
			met = ours-peer <= r.goal
			cmp = fmt.Sprintf("+%s (%.2fx)", duration(ours-peer), ours/peer)
		case absolute:
			met = ours <= r.goal
			cmp = fmt.Sprintf("%.2fx", ours/peer)
		}
		if r.zeroAllocs {
			allocs, _ := f.median(r.ours + "#allocs")
			oursText += fmt.Sprintf(", %g allocs", allocs)
			met = met && allocs == 0
		}
		verdict := "no"
		if met {
			verdict = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s %s | %s | %s | %s |\n", r.what, oursText, r.peerName, duration(peer), cmp, goalText(r), verdict)
	}
}

func goalText(r row) string {
	switch r.kind {
	case ratio:
		s := fmt.Sprintf("<= %gx", r.goal)
		if r.zeroAllocs {
			s += ", 0 allocs"
		}
		return s
	case difference:
		return "<= +" + duration(r.goal)
	}
	return "<= " + duration(r.goal)
}

// duration prints nanoseconds as benchstat would: ns below 1 us, then us, then ms.
func duration(ns float64) string {
	switch {
	case ns < 1000:
		return fmt.Sprintf("%.0f ns", ns)
	case ns < 1e6:
		return fmt.Sprintf("%.1f us", ns/1e3)
	}
	return fmt.Sprintf("%.2f ms", ns/1e6)
}
