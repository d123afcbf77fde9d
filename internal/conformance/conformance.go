// Package conformance loads the language-neutral ABI vectors in testdata/ and checks an export's
// answer against them, so the native core, the wasm plugin in every host and the Node host are all
// held to the same truth.
//
// A vector is a JSON file {"name","doc","export","input","want"}: call export with input (as JSON
// bytes) and compare the answer with want. Comparison is exact JSON equality, except that the string
// "<uuid>" in want matches any RFC 4122 UUID (Candescent's per-request transactionId).
package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Vector is one conformance case. Run it with Check.
type Vector struct {
	Name   string          `json:"name"`
	Doc    string          `json:"doc"`
	Export string          `json:"export"`
	Input  json.RawMessage `json:"input"`
	Want   json.RawMessage `json:"want"`
	// Steps make a token_step flow of the vector (see Check).
	Steps []Step `json:"steps,omitempty"`

	Path string `json:"-"`
}

// Load reads every vector under dir (testdata/<provider>/*.json), sorted by path.
func Load(dir string) ([]Vector, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var vs []Vector
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var v Vector
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if v.Export == "" {
			continue // not a vector (e.g. a fuzz corpus file)
		}
		v.Path = p
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("no vectors under %s", dir)
	}
	return vs, nil
}

// Match reports how got differs from want, or nil when it matches.
func Match(want, got []byte) error {
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		return fmt.Errorf("want is not JSON: %w", err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	return match("$", w, g)
}

var uuid = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func match(path string, want, got any) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %v", path, got)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Errorf("%s.%s: unexpected field", path, k)
			}
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: missing", path, k)
			}
			if err := match(path+"."+k, w[k], gv); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: want %v, got %v", path, want, got)
		}
		for i := range w {
			if err := match(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	case string:
		if gs, ok := got.(string); ok && w == "<uuid>" && uuid.MatchString(gs) {
			return nil
		}
	}
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		return fmt.Errorf("%s: want %s, got %s", path, wb, gb)
	}
	return nil
}

// Update rewrites the vector file with want set to got (indented); used by `go test -update` after
// a reviewed change of behaviour. Per-request ids are replaced by "<uuid>".
func Update(v Vector, got []byte) error {
	v.Want = uuid4InJSON.ReplaceAll(got, []byte(`"<uuid>"`))
	for i := range v.Steps {
		v.Steps[i].Want = uuid4InJSON.ReplaceAll(v.Steps[i].Want, []byte(`"<uuid>"`))
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep "<uuid>" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	return os.WriteFile(v.Path, b.Bytes(), 0o644)
}

var uuid4InJSON = regexp.MustCompile(`"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"`)

// Builds returns the plugin builds a suite runs: embedded, and the files named by
// TOKENWASM_WASM_TINYGO and TOKENWASM_WASM_GO when set (make test sets them to build/'s builds), by
// name ("embedded", "tinygo", "go"), each distinct build once (a fresh TinyGo build is the embedded one).
func Builds(embedded []byte) (map[string][]byte, error) {
	out := map[string][]byte{"embedded": embedded}
	seen := map[string]bool{string(embedded): true}
	for name, env := range map[string]string{"tinygo": "TOKENWASM_WASM_TINYGO", "go": "TOKENWASM_WASM_GO"} {
		path := os.Getenv(env)
		if path == "" {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s=%s: %w", env, path, err)
		}
		if !seen[string(b)] {
			out[name] = b
			seen[string(b)] = true
		}
	}
	return out, nil
}

// FuzzCorpus reads the inputs of a Go fuzz corpus folder (files "go test fuzz v1" with one []byte),
// so the corpus found natively can be replayed through the wasm plugin in any host.
func FuzzCorpus(dir string) ([][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		lines := strings.SplitN(string(b), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" {
			return nil, fmt.Errorf("%s: not a fuzz corpus file", e.Name())
		}
		quoted, ok := strings.CutPrefix(strings.TrimSpace(lines[1]), "[]byte(")
		quoted, ok2 := strings.CutSuffix(quoted, ")")
		if !ok || !ok2 {
			return nil, fmt.Errorf("%s: not a []byte entry", e.Name())
		}
		s, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, []byte(s))
	}
	return out, nil
}
