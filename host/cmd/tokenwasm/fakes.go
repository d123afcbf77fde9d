package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host/providertest"
)

const fakesUsage = `usage: tokenwasm fakes [flags]

Runs the six fake providers until interrupted (Ctrl-C). Prints one JSON line on stdout
({provider: {token_url, api_url, stats_url, config, ...}}, for scripts), and on stderr the lines
to paste: environment variables, and a tokenwasm token command for each fake.

With -base-port P the fakes listen on fixed ports, in this order:
  P candid, P+1 pattern, P+2 candescent, P+3 nikohealth, P+4 smart, P+5 mtls
The mtls fake always serves https (its client certificate needs TLS); -tls makes every fake https.

flags:
`

// fakesOptions are the fakes command's flags.
type fakesOptions struct {
	addr     string
	basePort int
	tls      bool
	caOut    string
	quiet    bool
}

// runFakes serves the fake providers until ctx ends, after printing their URLs and credentials (fake
// ones): one JSON line on stdout for scripts and hosts in other languages, the lines to paste on
// stderr. The SMART key, the mTLS client certificate and its profile go to a folder removed on exit.
func runFakes(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := flag.NewFlagSet("fakes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), fakesUsage)
		fs.PrintDefaults()
	}
	var o fakesOptions
	fs.StringVar(&o.addr, "addr", "127.0.0.1", "host (name or IP address) the fakes listen on")
	fs.IntVar(&o.basePort, "base-port", 0, "first of six consecutive ports, in the order above; 0 picks free ports")
	fs.BoolVar(&o.tls, "tls", false, "serve every fake over https, from a CA made at start (its certificate goes to -ca-out)")
	fs.StringVar(&o.caOut, "ca-out", "tokenwasm-fakes-ca.pem", "with -tls: the file the CA certificate (PEM) is written to, for clients to trust")
	fs.BoolVar(&o.quiet, "quiet", false, "print the JSON line only, not the lines to paste")
	if err := parse(fs, args); err != nil {
		return err
	}
	set, err := startFakes(o.addr, o.basePort, o.tls)
	if err != nil {
		return err
	}
	defer set.Close()
	dir, err := os.MkdirTemp("", "tokenwasm-fakes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files, err := writeFakeFiles(set, dir, o)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(stdout).Encode(fakesJSON(set, files)); err != nil {
		return err
	}
	if !o.quiet {
		printPasteLines(stderr, set, files, o)
	}
	<-ctx.Done()
	return nil
}

// fakeFiles are the files a client of the fakes reads: absolute paths.
type fakeFiles struct {
	ca          string // the CA certificate: of the mTLS fake, and with -tls of every fake
	smartKey    string // the SMART client's private key (PKCS #8 PEM)
	mtlsCert    string // the mTLS client's certificate and private key (PEM)
	mtlsProfile string // the custom profile of the mTLS fake (tls_client_auth)
}

func writeFakeFiles(set *fakeSet, dir string, o fakesOptions) (fakeFiles, error) {
	f := fakeFiles{ca: filepath.Join(dir, "ca.pem"), smartKey: filepath.Join(dir, "smart-key.pem"),
		mtlsCert: filepath.Join(dir, "mtls-client.pem"), mtlsProfile: filepath.Join(dir, "mtls-profile.json")}
	if o.tls {
		abs, err := filepath.Abs(o.caOut)
		if err != nil {
			return f, err
		}
		f.ca = abs
	}
	key, err := x509.MarshalPKCS8PrivateKey(set.smartKey)
	if err != nil {
		return f, err
	}
	certKey, err := x509.MarshalPKCS8PrivateKey(set.mtlsCert.PrivateKey)
	if err != nil {
		return f, err
	}
	profile, _ := json.Marshal(abi.Profile{ClientAuth: "tls_client_auth"})
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.ca, set.ca.PEM(), 0o644},
		{f.smartKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600},
		{f.mtlsCert, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: set.mtlsCert.Certificate[0]}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: certKey})...), 0o600},
		{f.mtlsProfile, append(profile, '\n'), 0o644},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return f, err
		}
	}
	return f, nil
}

// fakesJSON is the JSON line: each fake's URLs and its client's credentials.
func fakesJSON(set *fakeSet, files fakeFiles) map[string]any {
	out := map[string]any{}
	for i, f := range set.all() {
		entry := map[string]any{"token_url": f.TokenURL(), "api_url": f.APIURL(), "stats_url": f.URL() + "/_stats", "config": f.Config()}
		switch fakeNames[i] {
		case "smart":
			entry["fhir_base"] = set.smart.FHIRBase()
			entry["config"] = map[string]string{"client_id": smartClientID, "key_id": smartKeyID, "assertion_alg": smartAlg,
				"key_file": files.smartKey, "scope": smartScope}
		case "mtls":
			entry["config"] = map[string]string{"client_id": mtlsClientID, "client_cert_file": files.mtlsCert, "profile_file": files.mtlsProfile}
		}
		if strings.HasPrefix(f.URL(), "https:") {
			entry["ca_file"] = files.ca
		}
		out[fakeNames[i]] = entry
	}
	return out
}

// printPasteLines prints, for a person, what to paste: environment lines and a tokenwasm token
// command per fake and grant, and which opt-in lets each host reach loopback.
func printPasteLines(w io.Writer, set *fakeSet, files fakeFiles, o fakesOptions) {
	scheme := "http"
	if o.tls {
		scheme = "https"
	}
	fmt.Fprintf(w, "# tokenwasm fakes: six fake providers on %s (%s; mtls always https) until Ctrl-C. Every credential is fake.\n", o.addr, scheme)
	fmt.Fprintln(w, "# Hosts refuse loopback token URLs unless told they are for tests:")
	fmt.Fprintln(w, "#   Go: host.New(ctx, host.WithLoopback())   JS: createClient({ allowLoopback: true })   CLI: tokenwasm token -allow-loopback")
	fmt.Fprintln(w, "#")
	fmt.Fprintln(w, "# The environment (paste into a shell):")
	env := func(name, value string) { fmt.Fprintf(w, "export TOKENWASM_%s=%s\n", name, shellQuote(value)) }
	for i, f := range set.all() {
		n := strings.ToUpper(fakeNames[i])
		env(n+"_TOKEN_URL", f.TokenURL())
		env(n+"_API_URL", f.APIURL())
		env(n+"_STATS_URL", f.URL()+"/_stats")
		c := f.Config()
		env(n+"_CLIENT_ID", c.ClientID)
		if c.ClientSecret != "" {
			env(n+"_CLIENT_SECRET", c.ClientSecret)
		}
	}
	desc := set.candescent.Config()
	env("CANDESCENT_INSTITUTION_ID", desc.InstitutionID)
	env("CANDESCENT_USERNAME", desc.Username)
	env("CANDESCENT_PASSWORD", desc.Password)
	env("CANDESCENT_CODE", desc.Code)
	env("CANDESCENT_CODE_VERIFIER", desc.CodeVerifier)
	env("CANDESCENT_REDIRECT_URI", desc.RedirectURI)
	env("SMART_FHIR_BASE", set.smart.FHIRBase())
	env("SMART_KEY_ID", smartKeyID)
	env("SMART_KEY_FILE", files.smartKey)
	env("MTLS_CLIENT_CERT_FILE", files.mtlsCert)
	env("MTLS_PROFILE_FILE", files.mtlsProfile)
	env("CA_FILE", files.ca)

	fmt.Fprintln(w, "#")
	fmt.Fprintln(w, "# A token from each (tokenwasm is `go run -C host/cmd/tokenwasm .` in the repository; secrets come")
	fmt.Fprintln(w, "# from the environment, never from flags):")
	for _, line := range tokenCommands(set, files, o.tls) {
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "#")
	fmt.Fprintln(w, "# In Go: smart needs host.WithSigner(kid, signer) (host.ParseSigner reads the key file), mtls")
	fmt.Fprintln(w, "# host.WithClientCertificate(id, cert) (tls.LoadX509KeyPair(file, file)); in JS smart needs")
	fmt.Fprintln(w, "# createClient({ signers: [{ kid, key }] }) (a PKCS#8 PEM, a JWK or a CryptoKey); mtls is Go's only.")
	if o.tls {
		fmt.Fprintln(w, "# Trust the CA: Go, an http.Transport whose RootCAs hold it (host.WithHTTPTransport); Node,")
		fmt.Fprintln(w, "# NODE_EXTRA_CA_CERTS=<the file>; curl, --cacert <the file>. It is in "+files.ca+":")
		fmt.Fprint(w, string(set.ca.PEM()))
	} else {
		fmt.Fprintln(w, "# The mtls fake's server certificate is from the CA in $TOKENWASM_CA_FILE (-tls: every fake's).")
	}
	fmt.Fprintln(w, fakesLastLine)
}

// fakesLastLine ends what the fakes command prints.
const fakesLastLine = "# Ctrl-C stops the fakes and removes the files above (but not -ca-out's)."

// tokenCommands are tokenwasm token command lines, one per fake and grant.
func tokenCommands(set *fakeSet, files fakeFiles, https bool) []string {
	var lines []string
	cmd := func(secrets []string, args ...string) {
		args = append(args, "-allow-loopback")
		if https {
			args = append(args, "-ca-file", files.ca)
		}
		var b strings.Builder
		for i := 0; i+1 < len(secrets); i += 2 {
			b.WriteString(secrets[i] + "=" + shellQuote(secrets[i+1]) + " ")
		}
		b.WriteString("tokenwasm token")
		for _, a := range args {
			b.WriteString(" " + shellQuote(a))
		}
		lines = append(lines, b.String())
	}
	secret := func(f *providertest.Fake) []string {
		return []string{"TOKENWASM_CLIENT_SECRET", f.Config().ClientSecret}
	}
	basic := func(f *providertest.Fake) []string {
		return []string{"-provider", f.Name(), "-client-id", f.Config().ClientID, "-token-url", f.TokenURL()}
	}
	cmd(secret(set.candid), basic(set.candid)...)
	cmd(secret(set.pattern), basic(set.pattern)...)
	desc := set.candescent.Config()
	cmd(secret(set.candescent), append(basic(set.candescent), "-institution-id", desc.InstitutionID)...)
	cmd(append(secret(set.candescent), "TOKENWASM_PASSWORD", desc.Password),
		append(basic(set.candescent), "-grant", "password", "-username", desc.Username, "-institution-id", desc.InstitutionID)...)
	cmd(append(secret(set.candescent), "TOKENWASM_CODE", desc.Code, "TOKENWASM_CODE_VERIFIER", desc.CodeVerifier),
		append(basic(set.candescent), "-grant", "authorization_code", "-redirect-uri", desc.RedirectURI, "-scope", "openid offline_access",
			"-institution-id", desc.InstitutionID)...)
	cmd(secret(set.nikohealth), append(basic(set.nikohealth), "-scope", "external")...)
	cmd(nil, "-provider", "smart", "-client-id", smartClientID, "-fhir-base", set.smart.FHIRBase(), "-key-file", files.smartKey,
		"-key-id", smartKeyID, "-assertion-alg", smartAlg, "-scope", smartScope)
	mtls := []string{"-provider", "custom", "-profile-file", files.mtlsProfile, "-client-id", mtlsClientID,
		"-token-url", set.mtls.TokenURL(), "-client-cert-file", files.mtlsCert}
	if !https { // the mtls fake is https all the same
		mtls = append(mtls, "-ca-file", files.ca)
	}
	cmd(nil, mtls...)
	return lines
}

// shellSafe are the values a POSIX shell reads as one word without quotes.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s for a POSIX shell where it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
