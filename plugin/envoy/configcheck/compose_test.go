package configcheck

import (
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// composeFile is the part of compose.yaml the check reads (Compose Specification field names).
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		NetworkMode string            `yaml:"network_mode"`
		Ports       []any             `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
		Command     []string          `yaml:"command"`
		WorkingDir  string            `yaml:"working_dir"`
		Healthcheck map[string]any    `yaml:"healthcheck"`
		DependsOn   map[string]any    `yaml:"depends_on"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// TestComposeFile: compose.yaml is never run here (no container images), so it is read and held to
// what it runs: Envoy's -c file is a mount of envoy-local.yaml, which passes TestEnvoyYAML's checks
// (its clusters trusting the CA file fakes -tls writes); the filter's module is a mount of what
// ./build.sh --envoy builds; that CA file is written by the fakes' command into a volume both
// services mount; the token and API clusters reach the fakes' ports on loopback, as the token URL
// does; every host_env_keys variable is in Envoy's environment; both services use the host's network
// with no published ports (the listener stays on loopback); README.md gives the same command.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	envoy, fakes := c.Services["envoy"], c.Services["fakes"]
	if envoy.Image == "" || fakes.Image == "" || len(c.Services) != 2 {
		t.Fatalf("want the services envoy and fakes, each with an image: %v", c.Services)
	}
	for name, s := range c.Services {
		if s.NetworkMode != "host" || len(s.Ports) != 0 {
			t.Errorf("service %s: network_mode %q, ports %v: want the host's network and no published port", name, s.NetworkMode, s.Ports)
		}
	}
	// mounts: target -> source, a relative source resolved from compose.yaml's folder (plugin/envoy).
	mounts := func(volumes []string) map[string]string {
		m := map[string]string{}
		for _, v := range volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("volume %q: want source:target[:mode]", v)
				continue
			}
			src := parts[0]
			if strings.HasPrefix(src, ".") {
				src = filepath.Join("..", src)
				if _, err := os.Stat(src); err != nil && !strings.HasSuffix(src, ".wasm") {
					t.Errorf("volume %q: %v", v, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("volume %q: %s is not a named volume", v, src)
			}
			m[parts[1]] = src
		}
		return m
	}
	envoyMounts, fakesMounts := mounts(envoy.Volumes), mounts(fakes.Volumes)

	// Envoy's command and its configuration.
	i := slices.Index(envoy.Command, "-c")
	if len(envoy.Command) == 0 || envoy.Command[0] != "envoy" || i < 0 || i+1 >= len(envoy.Command) {
		t.Fatalf("envoy's command %q: want envoy -c <file>", envoy.Command)
	}
	confFile := envoyMounts[envoy.Command[i+1]]
	if filepath.Base(confFile) != "envoy-local.yaml" {
		t.Fatalf("envoy's -c %s is mounted from %q, want envoy-local.yaml", envoy.Command[i+1], confFile)
	}

	// The fakes' command: fakes -tls, its base port and the CA file it writes.
	cmd := fakes.Command
	flag := func(name string) string {
		if j := slices.Index(cmd, name); j >= 0 && j+1 < len(cmd) {
			return cmd[j+1]
		}
		return ""
	}
	if !slices.Contains(cmd, "fakes") || !slices.Contains(cmd, "-tls") {
		t.Errorf("fakes' command %q: want tokenwasm fakes -tls", cmd)
	}
	if fakesMounts[fakes.WorkingDir] != "../../.." || !slices.Contains(cmd, "host/cmd/tokenwasm") {
		t.Errorf("fakes: working_dir %q is mounted from %q, command %q: want the repository's root, go run -C host/cmd/tokenwasm .",
			fakes.WorkingDir, fakesMounts[fakes.WorkingDir], cmd)
	}
	if envoy.DependsOn["fakes"] == nil {
		t.Error("envoy does not depend on fakes: it would start before the CA file exists")
	}
	base, err := strconv.Atoi(flag("-base-port"))
	if err != nil {
		t.Fatalf("fakes' command %q: no -base-port", cmd)
	}
	caFile := flag("-ca-out")
	caVolume := fakesMounts[path.Dir(caFile)]
	if caFile == "" || caVolume == "" || envoyMounts[path.Dir(caFile)] != caVolume {
		t.Errorf("the CA file %q: want it written into a volume that Envoy mounts at the same place (fakes %v, envoy %v)", caFile, fakesMounts, envoyMounts)
	}

	found := checkBootstrap(t, confFile, caFile)
	for _, p := range found.Plugins {
		if src := envoyMounts[p.Code]; filepath.ToSlash(src) != "../../../build/envoy-filter.wasm" {
			t.Errorf("%s: the module %s is mounted from %q, want build/envoy-filter.wasm (./build.sh --envoy)", p.Path, p.Code, src)
		}
		for _, k := range p.HostEnvKeys {
			if envoy.Environment[k] == "" {
				t.Errorf("%s: host_env_keys %s is not in envoy's environment", p.Path, k)
			}
		}
		start := startFilter(t, p)
		host, port, err := net.SplitHostPort(start.Authority)
		if err != nil || host != "localhost" {
			t.Errorf("%s: the token URL's authority %q: want localhost:<port> (the fakes' certificate)", p.Path, start.Authority)
		}
		if n, _ := strconv.Atoi(port); n < base || n > base+5 {
			t.Errorf("%s: the token URL's port %s is none of the fakes' (%d to %d)", p.Path, port, base, base+5)
		}
	}
	for name, cl := range found.Clusters {
		for _, le := range cl.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				a := e.GetEndpoint().GetAddress().GetSocketAddress()
				if p := int(a.GetPortValue()); !net.ParseIP(a.GetAddress()).IsLoopback() || p < base || p > base+5 {
					t.Errorf("cluster %q: endpoint %s:%d is not a fake on loopback (ports %d to %d)", name, a.GetAddress(), p, base, base+5)
				}
			}
		}
	}

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"docker compose -f plugin/envoy/compose.yaml up", "-base-port " + strconv.Itoa(base), "no test runs docker"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
}
