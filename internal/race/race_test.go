package race

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFullCountRunsSomewhere: every test that runs fewer iterations under -race (it calls Iterations,
// or reads a package-level variable set from it) is listed in the Makefile's FULL_COUNT_TESTS, with
// its package in FULL_COUNT_PKGS, so `make unit` still runs its full count without -race.
func TestFullCountRunsSomewhere(t *testing.T) {
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	line := func(name string) []string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*=(.*)$`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("no %s in the Makefile", name)
		}
		return strings.FieldsFunc(string(m[1]), func(r rune) bool { return r == '|' || r == ' ' || r == '\t' })
	}
	tests, pkgs := line("FULL_COUNT_TESTS"), line("FULL_COUNT_PKGS")

	found := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(rel)
		for _, name := range scaledTests(t, path) {
			found++
			if !slices.Contains(tests, name) || !slices.Contains(pkgs, pkg) {
				t.Errorf("%s (%s) runs fewer iterations under -race: add %s to FULL_COUNT_TESTS and %s to FULL_COUNT_PKGS",
					name, path, name, pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no test using race.Iterations: the walk is broken")
	}
}

// scaledTests returns the Test functions of one file that call race.Iterations or read a
// package-level variable of that file initialised from it.
func scaledTests(t *testing.T, path string) []string {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	callsIterations := func(n ast.Node) bool {
		hit := false
		ast.Inspect(n, func(n ast.Node) bool {
			if s, ok := n.(*ast.SelectorExpr); ok && s.Sel.Name == "Iterations" {
				if x, ok := s.X.(*ast.Ident); ok && x.Name == "race" {
					hit = true
				}
			}
			return !hit
		})
		return hit
	}
	vars := map[string]bool{}
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.VAR {
			for _, s := range g.Specs {
				if v := s.(*ast.ValueSpec); callsIterations(v) {
					for _, n := range v.Names {
						vars[n.Name] = true
					}
				}
			}
		}
	}
	var out []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") {
			continue
		}
		uses := callsIterations(fn)
		ast.Inspect(fn, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && vars[id.Name] {
				uses = true
			}
			return !uses
		})
		if uses {
			out = append(out, fn.Name.Name)
		}
	}
	return out
}
