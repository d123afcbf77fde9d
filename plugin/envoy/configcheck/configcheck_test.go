package configcheck

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	udpa "github.com/cncf/xds/go/udpa/annotations"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The example Envoy configuration, and the filter's module (plugin/envoy) it is checked against.
const (
	envoyYAML = "../envoy.yaml"
	filterDir = ".."
)

// filterStart is what plugin/envoy's TestConfigurationFile writes (configfile_test.go there).
type filterStart struct {
	Provider  string `json:"provider"`
	Filter    string `json:"filter"`
	Cluster   string `json:"cluster"`
	Authority string `json:"authority"`
	Metrics   []struct {
		Name string `json:"name"`
		Type string `json:"type"`
		Kind string `json:"kind"`
	} `json:"metrics"`
}

// TestEnvoyYAML loads envoy.yaml with Envoy's types (unknown fields refused, every Any unpacked, the
// validation rules run, no deprecated field), starts the filter on each wasm plugin's configuration,
// and checks: every cluster is used and verifies its server, the token cluster reaches the token
// URL's host, and every metric the filter defines is well formed after stats_tags, with the provider
// and the failure kind as tags.
func TestEnvoyYAML(t *testing.T) {
	checkBootstrap(t, envoyYAML, SystemCABundle)
}

// checkBootstrap is TestEnvoyYAML's check of one bootstrap file, whose clusters trust the CA file
// trustedCA; it returns what Walk found. Every listener binds loopback.
func checkBootstrap(t *testing.T, path, trustedCA string) *Found {
	t.Helper()
	b, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		if a := l.GetAddress().GetSocketAddress().GetAddress(); !net.ParseIP(a).IsLoopback() {
			t.Errorf("listener %q binds %q, not loopback: whoever reaches it acts as the client", l.GetName(), a)
		}
	}
	found, errs := Walk(b)
	for _, err := range errs {
		t.Error(err)
	}
	if len(found.Plugins) == 0 {
		t.Fatal("no wasm plugin in envoy.yaml")
	}
	tp, err := NewTagProducer(b.GetStatsConfig().GetStatsTags())
	if err != nil {
		t.Fatal(err)
	}

	used := map[string]bool{}
	for _, name := range SortedKeys(found.RouteClusters) {
		used[name] = true
		if found.Clusters[name] == nil {
			t.Errorf("%s send to cluster %q, which is not defined", found.RouteClusters[name], name)
		}
	}
	for _, p := range found.Plugins {
		start := startFilter(t, p)
		used[start.Cluster] = true
		c := found.Clusters[start.Cluster]
		if c == nil {
			t.Errorf("%s: the filter's cluster %q is not defined", p.Path, start.Cluster)
		} else if u, err := VerifiesServer(c); err == nil {
			host := start.Authority
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !strings.EqualFold(u.SNI, host) {
				t.Errorf("%s: the filter calls %s through cluster %q, whose sni is %q", p.Path, host, start.Cluster, u.SNI)
			}
		}
		checkMetrics(t, tp, start)
	}
	for _, name := range SortedKeys(found.Clusters) {
		if !used[name] {
			t.Errorf("cluster %q: no route or wasm filter uses it", name)
		}
		u, err := VerifiesServer(found.Clusters[name])
		if err != nil {
			t.Errorf("cluster %q: %v", name, err)
			continue
		}
		if u.TrustedCA != trustedCA {
			t.Errorf("cluster %q: trusted_ca is %q, not %s", name, u.TrustedCA, trustedCA)
		}
		for _, h := range append(u.Hosts, found.HostRewrites[name]...) {
			if net.ParseIP(h).IsLoopback() && trustedCA != SystemCABundle {
				continue // a local fake's address: its certificate names the sni (localhost)
			}
			if !strings.EqualFold(h, u.SNI) {
				t.Errorf("cluster %q: host %q is not its sni %q", name, h, u.SNI)
			}
		}
	}
	return found
}

// startFilter runs plugin/envoy's TestConfigurationFile on a plugin's configuration, with the VM's
// environment as Envoy builds it: key_values as given, and each host_env_keys variable as if set in
// Envoy's environment (to a placeholder).
func startFilter(t *testing.T, p Plugin) filterStart {
	t.Helper()
	env := map[string]string{}
	for k, v := range p.KeyValues {
		env[k] = v
	}
	for _, k := range p.HostEnvKeys {
		env[k] = "placeholder-for-" + k
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.json"), filepath.Join(dir, "out.json")
	data, _ := json.Marshal(map[string]any{"configuration": p.Configuration, "env": env})
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-run", "^TestConfigurationFile$", ".")
	cmd.Dir = filterDir
	cmd.Env = append(os.Environ(), "TOKENWASM_CONFIGCHECK_IN="+in, "TOKENWASM_CONFIGCHECK_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: the filter's start on its configuration: %v\n%s", p.Path, err, b)
	}
	var s filterStart
	data, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(data, &s)
	}
	if err != nil || s.Provider == "" || len(s.Metrics) == 0 {
		t.Fatalf("%s: no answer from the filter's start (%v): %s", p.Path, err, data)
	}
	return s
}

// checkMetrics applies stats_tags to every metric the filter defines, as Envoy names it
// (wasmcustom.<name>): the tag-extracted name is well formed, the filter's name, the provider and a
// failures.<kind> counter's kind are tags, in that order, and no segment, and all kinds share one name.
func checkMetrics(t *testing.T, tp *TagProducer, start filterStart) {
	t.Helper()
	var tagNames [3]string // the filter's, the provider's, the kind's, as the first metric has them
	failuresName := ""
	for _, m := range start.Metrics {
		name := "wasmcustom." + m.Name
		extracted, tags := tp.Produce(name)
		t.Logf("%s -> %s %v", name, extracted, tags)
		if err := WellFormed(extracted); err != nil {
			t.Errorf("%s: tag-extracted name: %v (tags %v)", name, err, tags)
			continue
		}
		if strings.Contains(name, "_rq_") {
			t.Errorf("%s: Envoy's built-in response-code extractors would cut it", name)
		}
		want := []string{start.Filter, start.Provider}
		if m.Kind != "" {
			want = append(want, m.Kind)
		}
		if len(tags) != len(want) {
			t.Errorf("%s: tags %v, want values %v", name, tags, want)
			continue
		}
		for i, tag := range tags {
			if tag.Value != want[i] {
				t.Errorf("%s: tag %s=%q, want %q", name, tag.Name, tag.Value, want[i])
			}
			if tagNames[i] == "" {
				tagNames[i] = tag.Name
			} else if tag.Name != tagNames[i] {
				t.Errorf("%s: tag %d is %s here, %s elsewhere", name, i, tag.Name, tagNames[i])
			}
		}
		segments := strings.Split(extracted, ".")
		for _, v := range want {
			if slices.Contains(segments, v) {
				t.Errorf("%s: tag-extracted name %q still has %q", name, extracted, v)
			}
		}
		if m.Kind != "" {
			if failuresName == "" {
				failuresName = extracted
			} else if extracted != failuresName {
				t.Errorf("%s: tag-extracted name %q, other kinds %q: one metric with a kind tag", name, extracted, failuresName)
			}
		}
	}
	if tagNames[2] == "" {
		t.Error("no failure-kind tag: the filter defines no failures.<kind> counter, or stats_tags does not extract it")
	}
}

// TestTagProducerAsEnvoyDocuments: TagSpecifier.regex's documented example (Envoy's proto comment,
// example 1), and the failure-kind regex envoy.yaml had before, whose first group left the dot in.
func TestTagProducerAsEnvoyDocuments(t *testing.T) {
	spec := func(name, re string) *metricsv3.TagSpecifier {
		return &metricsv3.TagSpecifier{TagName: name, TagValue: &metricsv3.TagSpecifier_Regex{Regex: re}}
	}
	tp, err := NewTagProducer([]*metricsv3.TagSpecifier{spec("envoy.cluster_name", `^cluster\.((.+?)\.)`)})
	if err != nil {
		t.Fatal(err)
	}
	if name, tags := tp.Produce("cluster.foo_cluster.upstream_rq_timeout"); name != "cluster.upstream_rq_timeout" ||
		len(tags) != 1 || tags[0] != (Tag{"envoy.cluster_name", "foo_cluster"}) {
		t.Errorf("got %q %v", name, tags)
	}

	old, err := NewTagProducer([]*metricsv3.TagSpecifier{
		spec("tokenwasm_provider", `^wasmcustom\.tokenwasm\.((.+?)\.)`),
		spec("tokenwasm_failure_kind", `^wasmcustom\.tokenwasm\.(?:[^.]+\.)?failures\.((.+))$`),
	})
	if err != nil {
		t.Fatal(err)
	}
	name, tags := old.Produce("wasmcustom.tokenwasm.nikohealth.failures.transport")
	if name != "wasmcustom.tokenwasm.failures." || WellFormed(name) == nil || len(tags) != 2 {
		t.Errorf("the old regex: got %q %v, want the trailing dot it had", name, tags)
	}

	if regexPrefix(`^wasmcustom\.tokenwasm`) != "wasmcustom" || regexPrefix(`^cluster$`) != "cluster" || regexPrefix(`wasmcustom\.`) != "" {
		t.Error("regexPrefix")
	}
	for _, re := range []string{`^http(?=\.).*?\.user_agent\.((.+?)\.)\w+?$`, `(?i)^x\.((y)\.)`, `^x\.(?P<v>y)`} {
		if _, err := NewTagProducer([]*metricsv3.TagSpecifier{spec("x", re)}); err == nil {
			t.Errorf("%s: accepted, though std::regex and RE2 read it differently", re)
		}
	}
}

// TestChecksRefuse: what the checks must refuse, each a small change to the example.
func TestChecksRefuse(t *testing.T) {
	dir := t.TempDir()
	load := func(yaml string) error {
		p := filepath.Join(dir, "x.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := LoadBootstrap(p)
		if err != nil {
			return err
		}
		if _, errs := Walk(b); len(errs) > 0 {
			return errs[0]
		}
		return nil
	}
	for _, tt := range []struct{ name, yaml, want string }{
		{"unknown field", "static_resources: {clusterz: []}", "clusterz"},
		{"unknown @type", "static_resources: {clusters: [{name: a, transport_socket: {name: t, typed_config: {'@type': type.googleapis.com/x.Y}}}]}", "x.Y"},
		{"unknown field inside an Any", "static_resources: {clusters: [{name: a, transport_socket: {name: t, typed_config: {'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, snii: x}}}]}", "snii"},
		{"validation rule", "static_resources: {clusters: [{name: ''}]}", "Name"},
		{"validation rule inside an Any", "static_resources: {clusters: [{name: a, transport_socket: {name: t, typed_config: {'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: '" + strings.Repeat("x", 256) + "'}}}]}", "Sni"},
		{"deprecated field", "static_resources: {clusters: [{name: a, max_requests_per_connection: 1}]}", "deprecated"},
		{"two documents", "{}\n---\n{}\n", "more than one"},
		{"a key twice", "static_resources: {}\nstatic_resources: {}\n", "already defined"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := load(tt.yaml); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error with %q", err, tt.want)
			}
		})
	}

	b, err := LoadBootstrap(envoyYAML)
	if err != nil {
		t.Fatal(err)
	}
	base := b.GetStaticResources().GetClusters()[0]
	if _, err := VerifiesServer(base); err != nil {
		t.Fatalf("the example's first cluster: %v", err)
	}
	for _, tt := range []struct {
		name   string
		change func(*clusterv3.Cluster, *tlsv3.UpstreamTlsContext)
	}{
		{"no transport socket", func(c *clusterv3.Cluster, _ *tlsv3.UpstreamTlsContext) { c.TransportSocket = nil }},
		{"no validation context", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) { u.CommonTlsContext = nil }},
		{"no trusted_ca", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) {
			u.CommonTlsContext.GetValidationContext().TrustedCa = nil
		}},
		{"no SAN matcher", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) {
			u.CommonTlsContext.GetValidationContext().MatchTypedSubjectAltNames = nil
		}},
		{"SAN not the sni", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) { u.Sni = "other.example" }},
		{"an extra SAN besides the sni", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) {
			vc := u.CommonTlsContext.GetValidationContext()
			extra := proto.Clone(vc.MatchTypedSubjectAltNames[0]).(*tlsv3.SubjectAltNameMatcher)
			extra.Matcher.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: "attacker.example"}
			vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, extra)
		}},
		{"no sni", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) { u.Sni = "" }},
		{"accept untrusted", func(_ *clusterv3.Cluster, u *tlsv3.UpstreamTlsContext) {
			u.CommonTlsContext.GetValidationContext().TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := proto.Clone(base).(*clusterv3.Cluster)
			u := &tlsv3.UpstreamTlsContext{}
			if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(u); err != nil {
				t.Fatal(err)
			}
			tt.change(c, u)
			if c.TransportSocket != nil {
				a, err := anypb.New(u)
				if err != nil {
					t.Fatal(err)
				}
				c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
			}
			if _, err := VerifiesServer(c); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestSecretRoutesInConfigDump: Envoy's /config_dump redacts only fields annotated
// udpa.annotations.sensitive (MessageUtil::redact). The fields a client secret can travel in, the
// plugin's configuration and the VM's environment_variables, carry no such annotation, so
// config_dump shows them as configured; a TLS private key, for contrast, is annotated. README.md
// (Secrets) says so; this test fails if go-control-plane's protos change that.
func TestSecretRoutesInConfigDump(t *testing.T) {
	sensitive := func(m proto.Message, field protoreflect.Name) bool {
		fd := m.ProtoReflect().Descriptor().Fields().ByName(field)
		if fd == nil {
			t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), field)
		}
		opts, _ := fd.Options().(*descriptorpb.FieldOptions)
		return opts != nil && proto.GetExtension(opts, udpa.E_Sensitive).(bool)
	}
	for _, f := range []struct {
		m     proto.Message
		field protoreflect.Name
	}{
		{&wasmv3.PluginConfig{}, "configuration"},
		{&wasmv3.PluginConfig{}, "vm_config"},
		{&wasmv3.VmConfig{}, "configuration"},
		{&wasmv3.VmConfig{}, "environment_variables"},
		{&wasmv3.EnvironmentVariables{}, "key_values"},
		{&wasmv3.EnvironmentVariables{}, "host_env_keys"},
		{&wrapperspb.StringValue{}, "value"},
	} {
		if sensitive(f.m, f.field) {
			t.Errorf("%s.%s is now annotated sensitive: config_dump redacts it; update README.md (Secrets)",
				f.m.ProtoReflect().Descriptor().FullName(), f.field)
		}
	}
	if !sensitive(&tlsv3.TlsCertificate{}, "private_key") {
		t.Error("TlsCertificate.private_key is not seen as sensitive: this test does not read the annotation")
	}
}

// TestREADMEStatsTags: the stats_tags README.md shows are envoy.yaml's.
func TestREADMEStatsTags(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var snippet string
	for _, block := range strings.Split(string(readme), "```yaml\n")[1:] {
		if body, _, _ := strings.Cut(block, "```"); strings.Contains(body, "stats_tags:") {
			snippet = body
		}
	}
	if snippet == "" {
		t.Fatal("README.md shows no stats_tags")
	}
	p := filepath.Join(t.TempDir(), "snippet.yaml")
	if err := os.WriteFile(p, []byte(snippet), 0o600); err != nil {
		t.Fatal(err)
	}
	shown, err := LoadBootstrap(p)
	if err != nil {
		t.Fatal(err)
	}
	example, err := LoadBootstrap(envoyYAML)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(shown.GetStatsConfig(), example.GetStatsConfig()) {
		t.Errorf("README.md shows\n%v\nenvoy.yaml has\n%v", shown.GetStatsConfig(), example.GetStatsConfig())
	}
}
