package configcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLocalRouteWithoutContainer: "Trying it locally" with an Envoy on this machine. envoy-local.yaml
// names the module and the CA where compose.yaml mounts them (/etc/envoy, /ca), which do not exist
// outside the container, so README.md gives a sed rewrite: applied here to envoy-local.yaml, the
// result passes the same checks, its CA is the file the README's fakes command writes (-ca-out) and
// its module is what ./build.sh --envoy builds. (It once gave no such step: envoy-local.yaml, run as
// the README implied, loaded neither file.)
func TestLocalRouteWithoutContainer(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(readme), "\\\n", " ")
	ca := regexp.MustCompile(`fakes -tls -base-port \d+ -ca-out\s+"\$PWD/([^"]+)"`).FindStringSubmatch(text)
	if ca == nil {
		t.Fatal(`README.md: no fakes -tls command with -ca-out "$PWD/..."`)
	}
	edits := regexp.MustCompile(`-e "s\|([^|]+)\|\$PWD/([^|]+)\|"`).FindAllStringSubmatch(text, -1)
	if !regexp.MustCompile(`plugin/envoy/envoy-local\.yaml > (\S+)`).MatchString(text) || len(edits) == 0 {
		t.Fatal("README.md gives no rewrite of envoy-local.yaml for an Envoy outside a container")
	}
	data, err := os.ReadFile("../envoy-local.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	for _, e := range edits {
		if !strings.Contains(conf, e[1]) {
			t.Errorf("README.md rewrites %q, which envoy-local.yaml does not name", e[1])
		}
		conf = strings.ReplaceAll(conf, e[1], filepath.Join(root, e[2]))
	}
	out := filepath.Join(t.TempDir(), "envoy-local.yaml")
	if err := os.WriteFile(out, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	found := checkBootstrap(t, out, filepath.Join(root, ca[1]))
	for _, p := range found.Plugins {
		if want := filepath.Join(root, "build", "envoy-filter.wasm"); p.Code != want {
			t.Errorf("%s: the module is %s, want %s (./build.sh --envoy)", p.Path, p.Code, want)
		}
	}
}
