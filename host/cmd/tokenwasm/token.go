package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
)

// runToken gets one token. Secrets come from environment variables or files only: a flag value is
// visible to every user of the machine in the process list.
func runToken(ctx context.Context, w, stderr io.Writer, args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	var req abi.TokenRequest
	fs.StringVar(&req.Provider, "provider", "", "candid, pattern, candescent, nikohealth, smart (with -fhir-base, -key-file), or custom (with -profile-file)")
	fs.StringVar(&req.GrantType, "grant", "", "grant type (default client_credentials)")
	fs.StringVar(&req.ClientID, "client-id", os.Getenv("TOKENWASM_CLIENT_ID"), "client id (default $TOKENWASM_CLIENT_ID)")
	fs.StringVar(&req.TokenURL, "token-url", "", "token endpoint, overriding the provider's")
	fs.StringVar(&req.Domain, "domain", "", "Pattern's API host or NikoHealth's customer domain")
	fs.StringVar(&req.Scope, "scope", "", "scope, where the provider takes one")
	fs.StringVar(&req.InstitutionID, "institution-id", "", "Candescent institutionId")
	fs.StringVar(&req.Username, "username", "", "password grant: user name")
	fs.StringVar(&req.RedirectURI, "redirect-uri", "", "authorization_code grant: redirect URI")
	fs.StringVar(&req.Body, "body", "", "json or form, where the provider accepts both")
	fs.StringVar(&req.FHIRBase, "fhir-base", "", "smart: the FHIR base URL, whose .well-known/smart-configuration gives the token URL")
	fs.StringVar(&req.KeyID, "key-id", "", "the key id of -key-file (the assertion's kid), or the id -client-cert-file is registered under")
	fs.StringVar(&req.AssertionAlg, "assertion-alg", "", "private_key_jwt: the client assertion's algorithm (smart: RS384 or ES384; default the profile's first)")
	keyFile := fs.String("key-file", "", "private_key_jwt (smart): file holding the private key that signs client assertions (PEM or JWK)")
	certFile := fs.String("client-cert-file", "", "tls_client_auth: PEM file holding the client certificate and its private key")
	caFile := fs.String("ca-file", "", "PEM file of CA certificates trusted for https token URLs, besides the system's")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (default $TOKENWASM_CLIENT_SECRET)")
	passwordFile := fs.String("password-file", "", "password grant: file holding the password (default $TOKENWASM_PASSWORD)")
	refreshFile := fs.String("refresh-token-file", "", "refresh_token grant: file holding it (default $TOKENWASM_REFRESH_TOKEN)")
	verifierFile := fs.String("code-verifier-file", "", "PKCE verifier file (default $TOKENWASM_CODE_VERIFIER)")
	codeFile := fs.String("code-file", "", "authorization_code grant: file holding the code (default $TOKENWASM_CODE)")
	profileFile := fs.String("profile-file", "", "custom provider: a JSON file holding its profile (abi/ABI.md, Profile)")
	refreshOut := fs.String("refresh-token-out", "", "write the new refresh token to this file (mode 0600) instead of stdout")
	var allow hostList
	fs.Var(&allow, "allow-host", "extra allowed token host (repeatable; Pattern's host goes here)")
	loopback := fs.Bool("allow-loopback", false, "allow loopback token URLs over plain http (testing only)")
	if err := parse(fs, args); err != nil {
		return err
	}
	var err error
	if *profileFile != "" {
		if req.Provider != "custom" {
			return usageError{"-profile-file describes a custom provider; " + strconv.Quote(req.Provider) + " has its own"}
		}
		if req.Profile, err = readProfile(*profileFile); err != nil {
			return err
		}
	}
	for _, s := range []struct {
		dst       *string
		file, env string
	}{
		{&req.ClientSecret, *secretFile, "TOKENWASM_CLIENT_SECRET"},
		{&req.Password, *passwordFile, "TOKENWASM_PASSWORD"},
		{&req.RefreshToken, *refreshFile, "TOKENWASM_REFRESH_TOKEN"},
		{&req.CodeVerifier, *verifierFile, "TOKENWASM_CODE_VERIFIER"},
		{&req.Code, *codeFile, "TOKENWASM_CODE"},
	} {
		if *s.dst, err = secret(s.file, s.env); err != nil {
			return err
		}
	}
	opts := []host.Option{host.WithAllowedHosts(allow...)}
	if *loopback {
		opts = append(opts, host.WithLoopback())
	}
	held, err := hostCredentials(&req, *keyFile, *certFile, *caFile)
	if err != nil {
		return err
	}
	opts = append(opts, held...)
	// A one-time grant's exchange is not left half-done: once sent, the provider has used up the
	// refresh token or code, and the new refresh token would be lost. The first Ctrl-C lets it finish
	// (within its timeout) and prints the result; a second one aborts.
	callCtx := ctx
	if req.GrantType == abi.GrantRefreshToken || req.GrantType == abi.GrantAuthorizationCode {
		callCtx = abortContext(ctx)
		stopNotice := context.AfterFunc(ctx, func() {
			if callCtx.Err() == nil {
				fmt.Fprintln(stderr, "tokenwasm: interrupted: finishing the one-time exchange so its new refresh token is not lost (Ctrl-C again to abort)")
			}
		})
		defer stopNotice()
	}
	c, err := host.New(callCtx, opts...)
	if err != nil {
		return err
	}
	defer c.Close(callCtx)
	tok, err := c.Token(callCtx, req)
	if err != nil {
		return err
	}
	if *refreshOut != "" && tok.RefreshToken != "" {
		if err := os.WriteFile(*refreshOut, []byte(tok.RefreshToken+"\n"), 0o600); err != nil {
			return fmt.Errorf("write the new refresh token: %w", err)
		}
		t := *tok
		t.RefreshToken = "" // in the file, not on stdout
		tok = &t
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(abi.Result{Token: tok})
}

// hostCredentials reads what the host holds for the plugin: the key that signs client assertions
// (private_key_jwt), the client certificate (tls_client_auth), extra trusted CAs. The key and the
// certificate are registered under req's key id, set here when the files give it.
func hostCredentials(req *abi.TokenRequest, keyFile, certFile, caFile string) ([]host.Option, error) {
	var opts []host.Option
	switch {
	case keyFile != "" && certFile != "":
		return nil, usageError{"-key-file and -client-cert-file are two client authentications; give one"}
	case keyFile != "":
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("read key file: %w", err)
		}
		signer, kid, err := host.ParseSigner(b)
		if err != nil {
			return nil, usageError{"key file " + keyFile + ": " + err.Error()}
		}
		if req.KeyID = cmp.Or(req.KeyID, kid); req.KeyID == "" {
			return nil, usageError{"-key-file holds a key without a kid (PEM): name it with -key-id"}
		}
		opts = append(opts, host.WithSigner(req.KeyID, signer, req.ClientID))
	case certFile != "":
		b, err := os.ReadFile(certFile)
		if err != nil {
			return nil, fmt.Errorf("read client certificate file: %w", err)
		}
		cert, err := tls.X509KeyPair(b, b) // one file: each call takes the blocks of its kind
		if err != nil {
			return nil, usageError{"client certificate file " + certFile + ": it must hold a certificate and its private key (PEM)"}
		}
		req.KeyID = cmp.Or(req.KeyID, "client-certificate")
		opts = append(opts, host.WithClientCertificate(req.KeyID, cert))
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, usageError{"CA file " + caFile + " holds no PEM certificate"}
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxResponseHeaderBytes = host.MaxResponseHeaderBytes
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		opts = append(opts, host.WithHTTPTransport(t))
	}
	return opts, nil
}

// readProfile reads a custom provider's profile; an unknown field is a usage error, not ignored.
func readProfile(file string) (*abi.Profile, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	var p abi.Profile
	if err := dec.Decode(&p); err != nil {
		return nil, usageError{"profile file " + file + ": " + err.Error()}
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, usageError{"profile file " + file + ": more than one JSON value"}
	}
	return &p, nil
}

// secret reads a secret from file when given, else from the environment variable env.
func secret(file, env string) (string, error) {
	if file == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

type hostList []string

func (h *hostList) String() string     { return strings.Join(*h, ",") }
func (h *hostList) Set(v string) error { *h = append(*h, v); return nil }
