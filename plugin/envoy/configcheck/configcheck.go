// Package configcheck reads an Envoy bootstrap (plugin/envoy/envoy.yaml) with Envoy's own generated
// configuration types (go-control-plane) and checks it as far as that can be done without an Envoy:
// unknown fields are refused, every google.protobuf.Any is unpacked, Envoy's validation rules
// (protoc-gen-validate's ValidateAll) run on the bootstrap and on every unpacked message, and no
// deprecated field or enum value is set. It also finds what the tokenwasm filter needs (the wasm
// filters' configuration and VM environment, the clusters, which clusters routes use), checks that
// every cluster verifies its server's certificate, and applies Envoy's tag-extraction rule (stats_tags)
// to metric names.
//
// It is its own module so that go-control-plane stays out of the main one; its test
// (make test-envoy-config) runs the filter's own start on the configuration.
package configcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	yaml "go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	// The types an envoy.yaml may name in "@type": imported so they register, as Envoy links its
	// extensions. A type missing here is refused ("unable to resolve"): add its package.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// LoadBootstrap reads a YAML bootstrap as Envoy does: YAML to JSON, then the proto3 JSON mapping into
// envoy.config.bootstrap.v3.Bootstrap, refusing unknown fields and unresolvable "@type"s.
func LoadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(j, b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// YAMLToJSON converts one YAML document to JSON. yaml.v3 follows YAML 1.2 as Envoy's yaml-cpp does
// (yes/no/on/off are strings, not booleans) and refuses a key given twice.
func YAMLToJSON(data []byte) ([]byte, error) {
	var v any
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("more than one YAML document")
	}
	return json.Marshal(v)
}

// Plugin is one proxy-wasm plugin found in the configuration.
type Plugin struct {
	Path          string            // where it is, as a field path
	Name          string            // PluginConfig.name
	Configuration string            // PluginConfig.configuration, as the plugin receives it
	Code          string            // vm_config.code.local.filename: the module's file
	HostEnvKeys   []string          // vm_config.environment_variables.host_env_keys
	KeyValues     map[string]string // vm_config.environment_variables.key_values
}

// Found is what Walk found.
type Found struct {
	Plugins       []Plugin
	Clusters      map[string]*clusterv3.Cluster
	RouteClusters map[string][]string // cluster name -> the routes (field paths) that send to it
	HostRewrites  map[string][]string // cluster name -> host_rewrite_literal of the routes that send to it
}

// Walk unpacks every Any in b, runs the validation rules on b and on every unpacked message, refuses
// deprecated fields and enum values, and collects what the filter's checks need. Every problem is
// returned, each naming its field path.
func Walk(b *bootstrapv3.Bootstrap) (*Found, []error) {
	w := &walker{found: &Found{
		Clusters:      map[string]*clusterv3.Cluster{},
		RouteClusters: map[string][]string{},
		HostRewrites:  map[string][]string{},
	}}
	w.validate("bootstrap", b)
	w.message("bootstrap", b.ProtoReflect())
	for _, c := range b.GetStaticResources().GetClusters() {
		if _, dup := w.found.Clusters[c.GetName()]; dup {
			w.errorf("bootstrap.static_resources.clusters: %q is given twice", c.GetName())
		}
		w.found.Clusters[c.GetName()] = c
	}
	return w.found, w.errs
}

type walker struct {
	found *Found
	errs  []error
}

func (w *walker) errorf(format string, args ...any) {
	w.errs = append(w.errs, fmt.Errorf(format, args...))
}

// validate runs protoc-gen-validate's rules where the type has them (well-known types have none).
func (w *walker) validate(path string, m proto.Message) {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			w.errorf("%s (%s): %v", path, m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
}

func (w *walker) message(path string, m protoreflect.Message) {
	switch v := m.Interface().(type) {
	case *anypb.Any:
		inner, err := v.UnmarshalNew() // resolved through the registry the imports above fill
		if err != nil {
			w.errorf("%s: %v", path, err)
			return
		}
		p := path + "<" + string(inner.ProtoReflect().Descriptor().FullName()) + ">"
		w.validate(p, inner)
		w.message(p, inner.ProtoReflect())
		return
	case *wasmv3.PluginConfig:
		w.plugin(path, v)
	case *routev3.Route:
		w.route(path, v)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		fp := path + "." + string(fd.Name())
		if opts, ok := fd.Options().(interface{ GetDeprecated() bool }); ok && opts.GetDeprecated() {
			w.errorf("%s is deprecated", fp)
		}
		switch {
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				w.value(fmt.Sprintf("%s[%d]", fp, i), fd, l.Get(i))
			}
		case fd.IsMap():
			val.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				w.value(fmt.Sprintf("%s[%v]", fp, k.Interface()), fd.MapValue(), v)
				return true
			})
		default:
			w.value(fp, fd, val)
		}
		return true
	})
}

func (w *walker) value(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		w.message(path, v.Message())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			if opts, ok := ev.Options().(interface{ GetDeprecated() bool }); ok && opts.GetDeprecated() {
				w.errorf("%s: %s is deprecated", path, ev.Name())
			}
		}
	}
}

func (w *walker) plugin(path string, pc *wasmv3.PluginConfig) {
	p := Plugin{Path: path, Name: pc.GetName()}
	switch c := pc.GetConfiguration(); {
	case c == nil:
	case c.MessageIs(&wrapperspb.StringValue{}):
		s := &wrapperspb.StringValue{}
		if err := c.UnmarshalTo(s); err == nil {
			p.Configuration = s.GetValue()
		}
	case c.MessageIs(&wrapperspb.BytesValue{}):
		b := &wrapperspb.BytesValue{}
		if err := c.UnmarshalTo(b); err == nil {
			p.Configuration = string(b.GetValue())
		}
	default: // a Struct is serialized as JSON by Envoy; the example does not use one
		w.errorf("%s.configuration: %s: only StringValue and BytesValue are checked", path, c.GetTypeUrl())
	}
	env := pc.GetVmConfig().GetEnvironmentVariables()
	p.Code = pc.GetVmConfig().GetCode().GetLocal().GetFilename()
	p.HostEnvKeys = env.GetHostEnvKeys()
	p.KeyValues = env.GetKeyValues()
	seen := map[string]bool{}
	for k := range p.KeyValues {
		seen[k] = true
	}
	for _, k := range p.HostEnvKeys { // Envoy refuses a key given twice (EnvironmentVariables)
		if seen[k] {
			w.errorf("%s.vm_config.environment_variables: %s is given twice", path, k)
		}
		seen[k] = true
	}
	w.found.Plugins = append(w.found.Plugins, p)
}

func (w *walker) route(path string, r *routev3.Route) {
	a := r.GetRoute()
	if a == nil {
		return
	}
	names := []string{}
	if c := a.GetCluster(); c != "" {
		names = append(names, c)
	}
	for _, wc := range a.GetWeightedClusters().GetClusters() {
		names = append(names, wc.GetName())
	}
	if a.GetClusterHeader() != "" || a.GetClusterSpecifierPlugin() != "" || a.GetInlineClusterSpecifierPlugin() != nil {
		w.errorf("%s: a cluster chosen at request time is not checked", path)
	}
	for _, n := range names {
		w.found.RouteClusters[n] = append(w.found.RouteClusters[n], path)
		if h := a.GetHostRewriteLiteral(); h != "" {
			w.found.HostRewrites[n] = append(w.found.HostRewrites[n], h)
		}
	}
}

// SortedKeys returns a map's keys in order.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---- Tag extraction --------------------------------------------------------------------------

// TagProducer applies a bootstrap's stats_tags to a stat name as Envoy's TagProducerImpl does
// (source/common/stats/tag_producer_impl.cc, tag_extractor_impl.cc). For each regex specifier whose
// regex matches (std::regex_search: anywhere unless anchored) with at least one capture group, the
// FIRST capture group is the part of the name removed, and the second group, when the regex has
// one, is the tag's value (else the first). The removals are computed on the original name and
// applied together. A regex that starts with ^ and a literal token followed by \. is only tried on
// names whose first token is that one. When several specifiers share a tag name, only the first
// that matches counts. A fixed_value specifier adds its tag to every name and removes nothing.
//
// Envoy's built-in extractors (use_all_default_tags) are not modelled; of those, the ones that are
// tried on every name look for "_rq_" (response codes), which the checks refuse in a name.
type TagProducer struct {
	extractors []extractor
}

type extractor struct {
	name, prefix, fixed string
	re                  *regexp.Regexp
	sameName            bool // another extractor has this tag name
}

// Tag is one extracted tag.
type Tag struct{ Name, Value string }

// NewTagProducer builds the producer from stats_config.stats_tags. Envoy runs these regexes with
// std::regex (ECMAScript); they are run here with Go's RE2, which agrees on the common subset. A
// regex outside it (look-ahead, back-references, inline flags, named groups) is refused rather than
// checked wrongly.
func NewTagProducer(specs []*metricsv3.TagSpecifier) (*TagProducer, error) {
	tp := &TagProducer{}
	count := map[string]int{}
	for i, s := range specs {
		e := extractor{name: s.GetTagName()}
		switch v := s.GetTagValue().(type) {
		case *metricsv3.TagSpecifier_FixedValue:
			e.fixed = v.FixedValue
		case *metricsv3.TagSpecifier_Regex:
			if err := commonSubset(v.Regex); err != nil {
				return nil, fmt.Errorf("stats_tags[%d] (%s): %v", i, e.name, err)
			}
			re, err := regexp.Compile(v.Regex)
			if err != nil {
				return nil, fmt.Errorf("stats_tags[%d] (%s): %v", i, e.name, err)
			}
			e.re, e.prefix = re, regexPrefix(v.Regex)
		default:
			return nil, fmt.Errorf("stats_tags[%d] (%s): a built-in tag name (no regex) is not modelled", i, e.name)
		}
		count[e.name]++
		tp.extractors = append(tp.extractors, e)
	}
	for i := range tp.extractors {
		tp.extractors[i].sameName = count[tp.extractors[i].name] > 1
	}
	return tp, nil
}

// commonSubset refuses regex syntax that std::regex (ECMAScript) and RE2 read differently or that
// only one of them has: every "(?" must open a non-capturing group "(?:".
func commonSubset(re string) error {
	inClass := false
	for i := 0; i < len(re); i++ {
		switch c := re[i]; {
		case c == '\\':
			i++
		case inClass:
			inClass = c != ']'
		case c == '[':
			inClass = true
			if i+1 < len(re) && re[i+1] == ']' { // a ] first in a class is literal in RE2
				i++
			}
		case c == '(' && i+1 < len(re) && re[i+1] == '?':
			if i+2 >= len(re) || re[i+2] != ':' {
				return fmt.Errorf("regex %q: only (?:...) groups are checked here (std::regex and RE2 differ on the others)", re)
			}
		}
	}
	return nil
}

// regexPrefix is the literal first token a regex requires (Envoy's extractRegexPrefix): after ^,
// letters, digits and _ up to \. (or (?=\.)), or up to a final $.
func regexPrefix(re string) string {
	if !strings.HasPrefix(re, "^") {
		return ""
	}
	for i := 1; i < len(re); i++ {
		c := re[i]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		last := i == len(re)-1
		if i > 1 && (!last && (strings.HasPrefix(re[i:], `\.`) || strings.HasPrefix(re[i:], `(?=\.`)) || last && c == '$') {
			return re[1:i]
		}
		return ""
	}
	return ""
}

// Produce returns the tag-extracted name and the tags of a stat name.
func (tp *TagProducer) Produce(name string) (string, []Tag) {
	var tags []Tag
	remove := make([]bool, len(name))
	matched := map[string]bool{}
	first, _, hasDot := strings.Cut(name, ".")
	for _, e := range tp.extractors {
		if e.prefix != "" && (!hasDot || first != e.prefix) {
			continue
		}
		if e.sameName && matched[e.name] {
			continue
		}
		if e.re == nil {
			tags = append(tags, Tag{e.name, e.fixed})
			matched[e.name] = true
			continue
		}
		m := e.re.FindStringSubmatchIndex(name)
		if m == nil || e.re.NumSubexp() < 1 {
			continue
		}
		start, end := m[2], m[3]
		if start < 0 { // the first group took no part: std::regex gives an empty match at the end
			start, end = len(name), len(name)
		}
		value := name[start:end]
		if e.re.NumSubexp() >= 2 {
			value = ""
			if m[4] >= 0 {
				value = name[m[4]:m[5]]
			}
		}
		for i := start; i < end; i++ {
			remove[i] = true
		}
		tags = append(tags, Tag{e.name, value})
		matched[e.name] = true
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if !remove[i] {
			b.WriteByte(name[i])
		}
	}
	return b.String(), tags
}

// WellFormed reports what is wrong with a stat name: an empty segment, a leading or trailing dot.
func WellFormed(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%q starts with a dot", name)
	case strings.HasSuffix(name, "."):
		return fmt.Errorf("%q ends with a dot", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%q has an empty segment", name)
	}
	return nil
}

// ---- Upstream TLS --------------------------------------------------------------------------------

// SystemCABundle is the system's CA bundle on Debian and Ubuntu (Envoy's images are Ubuntu).
const SystemCABundle = "/etc/ssl/certs/ca-certificates.crt"

// Upstream is what a cluster reaches and how it checks the server.
type Upstream struct {
	Hosts     []string // the endpoints' socket addresses (host names for a DNS cluster)
	SNI       string   // UpstreamTlsContext.sni
	TrustedCA string   // trusted_ca's file name ("" when given inline or by environment variable)
	SANs      []string // the DNS names a certificate must have one of (exact match)
	AutoSAN   bool     // the SAN is matched to the SNI sent (auto_sni_san_validation, or auto_sni with auto_san_validation)
}

// VerifiesServer reads a cluster's transport socket and returns an error unless the cluster uses TLS
// that verifies the server: UpstreamTlsContext with a validation_context whose trusted_ca is set,
// trust_chain_verification not ACCEPT_UNTRUSTED, no expired certificates, and the server's name
// checked: every SAN matcher an exact DNS name one of which is the SNI, or the SAN matched to the SNI
// Envoy sends. (The deprecated match_subject_alt_names is refused by Walk, as every deprecated field.) Envoy itself verifies nothing without trusted_ca (UpstreamTlsContext's attention note).
func VerifiesServer(c *clusterv3.Cluster) (*Upstream, error) {
	u := &Upstream{}
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			u.Hosts = append(u.Hosts, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	if len(c.GetTransportSocketMatches()) > 0 || c.GetTransportSocketMatcher() != nil {
		return u, errors.New("transport_socket_matches / transport_socket_matcher are not checked: use one transport_socket")
	}
	ts := c.GetTransportSocket().GetTypedConfig()
	if ts == nil {
		return u, errors.New("no transport_socket: plain text")
	}
	tlsCtx := &tlsv3.UpstreamTlsContext{}
	if !ts.MessageIs(tlsCtx) {
		return u, fmt.Errorf("transport_socket is %s, not UpstreamTlsContext", ts.GetTypeUrl())
	}
	if err := ts.UnmarshalTo(tlsCtx); err != nil {
		return u, err
	}
	u.SNI = tlsCtx.GetSni()
	if u.SNI == "" && !tlsCtx.GetAutoHostSni() {
		return u, errors.New("no sni: the server cannot pick its certificate by name")
	}
	common := tlsCtx.GetCommonTlsContext()
	vc := common.GetValidationContext()
	if vc == nil {
		vc = common.GetCombinedValidationContext().GetDefaultValidationContext()
	}
	switch {
	case vc == nil && (common.GetValidationContextSdsSecretConfig() != nil || common.GetCombinedValidationContext() != nil):
		return u, errors.New("the validation context comes from SDS: not checked here")
	case vc == nil:
		return u, errors.New("no validation_context: Envoy accepts any certificate")
	case vc.GetTrustedCa() == nil:
		return u, errors.New("validation_context has no trusted_ca: Envoy accepts any certificate")
	case vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED:
		return u, errors.New("trust_chain_verification is ACCEPT_UNTRUSTED")
	case vc.GetAllowExpiredCertificate():
		return u, errors.New("allow_expired_certificate is set")
	}
	u.TrustedCA = vc.GetTrustedCa().GetFilename()
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		exact := m.GetMatcher().GetExact()
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || exact == "" || m.GetMatcher().GetIgnoreCase() {
			return u, fmt.Errorf("match_typed_subject_alt_names: %v: only exact DNS names are checked here", m)
		}
		u.SANs = append(u.SANs, exact)
	}
	u.AutoSAN = tlsCtx.GetAutoSniSanValidation()
	if opts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; opts != nil {
		hpo := &upstreamhttpv3.HttpProtocolOptions{}
		if err := opts.UnmarshalTo(hpo); err != nil {
			return u, err
		}
		if o := hpo.GetUpstreamHttpProtocolOptions(); o.GetAutoSni() && o.GetAutoSanValidation() {
			u.AutoSAN = true
		}
	}
	switch {
	case u.AutoSAN:
	case len(u.SANs) == 0:
		return u, errors.New("the server's name is not checked: no match_typed_subject_alt_names and no auto_sni_san_validation, so any trusted certificate is accepted")
	case !containsFold(u.SANs, u.SNI):
		return u, fmt.Errorf("match_typed_subject_alt_names %q does not name the sni %q", u.SANs, u.SNI)
	}
	for _, san := range u.SANs {
		if !strings.EqualFold(san, u.SNI) {
			return u, fmt.Errorf("match_typed_subject_alt_names names %q besides the sni %q: a certificate for that name would be accepted too", san, u.SNI)
		}
	}
	return u, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
