//go:build !wasip1

package main

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	gotypes "go/types"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// configCheckIn and configCheckOut are what plugin/envoy/configcheck (its own module, with Envoy's
// generated configuration types) and TestConfigurationFile exchange: the filter is a main package,
// so its start can only be run from here.
type configCheckIn struct {
	Configuration string            `json:"configuration"` // the wasm filter's configuration, as Envoy passes it
	Env           map[string]string `json:"env"`           // the VM's environment (vm_config.environment_variables)
}

type configCheckOut struct {
	Provider  string          `json:"provider"`
	Filter    string          `json:"filter"` // the filter's name in its metric names
	Cluster   string          `json:"cluster"`
	Authority string          `json:"authority"` // the token call's :authority, the token URL's host
	Metrics   []definedMetric `json:"metrics"`
}

type definedMetric struct {
	Name string `json:"name"`           // as the filter defines it; Envoy adds "wasmcustom."
	Type string `json:"type"`           // counter, gauge or histogram
	Kind string `json:"kind,omitempty"` // the ABI error kind in a failures.<kind> counter
}

// TestConfigurationFile starts the filter (natively in proxytest, OnPluginStart as Envoy calls it) on
// the configuration in the file named by TOKENWASM_CONFIGCHECK_IN, with only the environment given
// there (a wasm VM sees only its environment_variables), counts one failure of every ABI kind, and
// writes to TOKENWASM_CONFIGCHECK_OUT the provider, the token cluster and :authority, and every
// metric name the filter defines: each proxywasm.Define*Metric call in this package's sources, read
// from its argument, with the provider and every kind filled in, each found defined in the emulator,
// and no other metric defined. Without TOKENWASM_CONFIGCHECK_IN it is skipped:
// plugin/envoy/configcheck runs it (make test-envoy-config).
func TestConfigurationFile(t *testing.T) {
	inPath, outPath := os.Getenv("TOKENWASM_CONFIGCHECK_IN"), os.Getenv("TOKENWASM_CONFIGCHECK_OUT")
	if inPath == "" || outPath == "" {
		t.Skip("run by plugin/envoy/configcheck (make test-envoy-config)")
	}
	data, err := os.ReadFile(inPath)
	if err != nil {
		t.Fatal(err)
	}
	var in configCheckIn
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatal(err)
	}

	h := emulateRaw(t, "native", []byte(in.Configuration))
	saved := os.Environ()
	os.Clearenv()
	for k, v := range in.Env {
		os.Setenv(k, v)
	}
	st := h.host.StartPlugin()
	os.Clearenv()
	for _, kv := range saved {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	if st != types.OnPluginStartStatusOK {
		t.Fatalf("the filter does not start: %v %q", st, h.host.GetCriticalLogs())
	}
	p := h.vm.plugin
	for _, kind := range abi.Kinds() {
		p.m.failure(kind)
	}

	out := configCheckOut{Provider: p.s.provider, Filter: p.s.name, Cluster: p.s.cluster}
	_, enc, _, aerr := core.Prepare(p.s.input)
	if aerr != nil {
		t.Fatal(aerr)
	}
	u, err := url.Parse(enc.URL)
	if err != nil {
		t.Fatal(err)
	}
	out.Authority = u.Host // filter.go's send: {":authority", u.Host}

	if out.Metrics, err = metricNames(".", "tokenwasm."+p.s.name+"."+p.s.provider+"."); err != nil {
		t.Fatal(err)
	}
	for _, m := range out.Metrics {
		if err := definedAs(h.host, m); err != nil {
			t.Errorf("%s (read from the sources) is not defined by the filter: %v", m.Name, err)
		}
	}
	// proxytest numbers metrics from 0 in the order they are defined, so a new one's id is the count.
	if n := int(proxywasm.DefineCounterMetric("configcheck.probe")); n != len(out.Metrics) {
		t.Errorf("the filter defines %d metrics, the sources name %d: a Define*Metric call is not read by metricNames", n, len(out.Metrics))
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	if err := os.WriteFile(outPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func definedAs(host proxytest.HostEmulator, m definedMetric) error {
	var err error
	switch m.Type {
	case "counter":
		_, err = host.GetCounterMetric(m.Name)
	case "gauge":
		_, err = host.GetGaugeMetric(m.Name)
	case "histogram":
		_, err = host.GetHistogramMetric(m.Name)
	}
	return err
}

// metricNames reads every proxywasm.Define{Counter,Gauge,Histogram}Metric call in the package's
// non-test sources. Its argument must be <prefix> + "literal"... with an optional + kind: the prefix
// is taken as prefix, "tokenwasm.<name>.<provider>." (the caller checks each name is defined, which tests that) and
// kind stands for each of abi.Kinds(). Any other form is an error: teach this function the new one.
func metricNames(dir, prefix string) ([]definedMetric, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	fset := token.NewFileSet()
	var names []definedMetric
	var errs []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			return nil, err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "proxywasm" {
				return true
			}
			typ := map[string]string{"DefineCounterMetric": "counter", "DefineGaugeMetric": "gauge", "DefineHistogramMetric": "histogram"}[sel.Sel.Name]
			if typ == "" {
				return true
			}
			got, err := expandName(call.Args[0], prefix)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", fset.Position(call.Pos()), err))
			}
			for _, g := range got {
				g.Type = typ
				names = append(names, g)
			}
			return true
		})
	}
	if errs != nil {
		return nil, fmt.Errorf("metric names this test cannot read:\n%s", strings.Join(errs, "\n"))
	}
	return names, nil
}

func expandName(arg ast.Expr, prefix string) ([]definedMetric, error) {
	var parts []ast.Expr
	var flatten func(ast.Expr)
	flatten = func(e ast.Expr) {
		if b, ok := e.(*ast.BinaryExpr); ok && b.Op == token.ADD {
			flatten(b.X)
			flatten(b.Y)
			return
		}
		parts = append(parts, e)
	}
	flatten(arg)
	if len(parts) < 2 {
		return nil, fmt.Errorf("%s: not <prefix> + \"name\"", gotypes.ExprString(arg))
	}
	if _, lit := parts[0].(*ast.BasicLit); lit {
		return nil, fmt.Errorf("%s: does not start with the prefix", gotypes.ExprString(arg))
	}
	name, perKind := prefix, false
	for _, p := range parts[1:] {
		switch v := p.(type) {
		case *ast.BasicLit:
			s, err := strconv.Unquote(v.Value)
			if err != nil || v.Kind != token.STRING {
				return nil, fmt.Errorf("%s: not a string", gotypes.ExprString(arg))
			}
			name += s
		case *ast.Ident:
			if v.Name != "kind" || perKind {
				return nil, fmt.Errorf("%s: %s is not the one kind", gotypes.ExprString(arg), v.Name)
			}
			name += "\x00"
			perKind = true
		default:
			return nil, fmt.Errorf("%s: a part is neither a literal nor kind", gotypes.ExprString(arg))
		}
	}
	if !perKind {
		return []definedMetric{{Name: name}}, nil
	}
	var out []definedMetric
	for _, k := range abi.Kinds() {
		out = append(out, definedMetric{Name: strings.Replace(name, "\x00", k, 1), Kind: k})
	}
	return out, nil
}
