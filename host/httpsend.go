package host

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenwasm/tokenwasm/abi"
)

// MaxResponseBytes caps what http_send reads of a token response. One byte more than the plugin
// parses, so an oversized body is reported as such instead of being cut into valid-looking JSON.
const MaxResponseBytes = 1<<20 + 1

// MaxResponseHeaderBytes caps the response headers of a token request, as MaxResponseBytes caps its
// body: the default transport reads no more (net/http's own default is 10 MB), and http_send passes
// the plugin at most this many bytes of header names and values whatever the transport, so a
// provider (or a proxy in front of it) cannot make the plugin's instance parse megabytes of headers.
// More is a transport error.
const MaxResponseHeaderBytes = 64 << 10

// DefaultAllowedHosts returns the token hosts of the built-in providers. Pattern's host is per
// customer: add it with WithAllowedHosts. It returns a new slice each call, so no caller can change
// what every Runtime of the process allows.
func DefaultAllowedHosts() []string { return append([]string(nil), defaultAllowedHosts...) }

var defaultAllowedHosts = []string{"api.joincandidhealth.com", "api.candescent.com", "*.nikohealth.com"}

// policyError is a request the host's policy refuses to send: the reason, and the opt-in that would
// allow it where there is one. http_send answers it {"error": reason, "policy": true} and the plugin
// puts "token request refused by the host's policy" before it, so the reason does not say it again.
type policyError struct{ reason string }

func (e *policyError) Error() string { return e.reason }

// refuse is a policyError with a formatted reason.
func refuse(format string, a ...any) error { return &policyError{fmt.Sprintf(format, a...)} }

// isPolicy reports whether err, or an error it wraps, is the policy's refusal.
func isPolicy(err error) bool {
	var pe *policyError
	return errors.As(err, &pe)
}

// sender performs the plugin's http_send with the host's policy: https to allowed hosts only (plain
// http to loopback only when allowed), no redirect to another host, a timeout, a size cap.
type sender struct {
	client        *http.Client
	allowed       []string
	allowLoopback bool
	// certClients present a client certificate (tls_client_auth), one client per certificate id.
	certClients map[string]*http.Client
}

// WithClientCertificate registers the client certificate presented for certificate id id (a
// request's key_id with tls_client_auth, RFC 8705 section 2): the connection carries it, the body
// only the client id. The certificate's private key may be a crypto.Signer (KMS, HSM). A custom
// WithHTTPTransport must then be an *http.Transport, cloned per certificate.
func WithClientCertificate(id string, cert tls.Certificate) Option {
	return func(c *config) {
		if c.clientCerts == nil {
			c.clientCerts = map[string]tls.Certificate{}
		}
		c.clientCerts[id] = cert
	}
}

func newSender(base http.RoundTripper, allowed []string, allowLoopback bool, certs map[string]tls.Certificate) (*sender, error) {
	if base == nil {
		base = &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  30 * time.Second,
			MaxResponseHeaderBytes: MaxResponseHeaderBytes,
			MaxIdleConnsPerHost:    16,
			IdleConnTimeout:        90 * time.Second,
			ForceAttemptHTTP2:      true,
		}
	}
	s := &sender{allowed: allowed, allowLoopback: allowLoopback}
	s.client = s.httpClient(base)
	for id, cert := range certs {
		t, ok := base.(*http.Transport)
		if !ok {
			return nil, fmt.Errorf("tokenwasm: client certificates need an *http.Transport, not %T", base)
		}
		t = t.Clone()
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		// The registered certificate and no other: Go's TLS client would ask a callback of the
		// caller's configuration before Certificates.
		t.TLSClientConfig.Certificates = []tls.Certificate{cert}
		t.TLSClientConfig.GetClientCertificate = nil
		if s.certClients == nil {
			s.certClients = map[string]*http.Client{}
		}
		s.certClients[id] = s.httpClient(t)
	}
	return s, nil
}

// httpClient is an http.Client on rt that follows redirects to the same host only, within policy.
func (s *sender) httpClient(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return refuse("too many redirects")
			}
			if req.URL.Host != via[0].URL.Host {
				return refuse("redirect to another host")
			}
			return s.check(req.URL)
		},
	}
}

// check applies the host allow-list to u. A refusal that an option would lift names it, in Go and
// as the CLI's flag, so whoever reads the error knows the switch (and that it is one).
func (s *sender) check(u *url.URL) error {
	host := u.Hostname()
	loopback := isLoopback(host)
	switch {
	case u.User != nil:
		return refuse("credentials in the token URL")
	case u.Scheme == "https" && (s.allowedHost(host, u.Port()) || loopback && s.allowLoopback):
		return nil
	case u.Scheme == "http" && loopback && s.allowLoopback:
		return nil
	case loopback:
		return refuse("loopback token hosts are not allowed; host.WithLoopback() (tokenwasm token -allow-loopback) allows them, for tests against local fakes")
	case u.Scheme != "https":
		return refuse("token URL must be https")
	case u.Port() != "" && s.allowedHost(host, ""):
		entry := net.JoinHostPort(host, u.Port())
		return refuse("port %s of %q is not an allowed token port; host.WithAllowedHosts(%q) (tokenwasm token -allow-host %s) allows it", u.Port(), host, entry, entry)
	}
	entry := host
	if p := u.Port(); p != "" && p != "443" {
		entry = net.JoinHostPort(host, p)
	}
	return refuse("host %q is not an allowed token host; host.WithAllowedHosts(%q) (tokenwasm token -allow-host %s) allows it", host, entry, entry)
}

// allowedHost reports whether host and port match an allow-list entry: "host" or "*.domain" (its
// subdomains, not the domain itself) allow port 443 only; "host:port" allows that port only.
func (s *sender) allowedHost(host, port string) bool {
	host = strings.ToLower(host)
	if port == "" {
		port = "443"
	}
	for _, a := range s.allowed {
		a = strings.ToLower(a)
		ap := "443"
		if h, p, err := net.SplitHostPort(a); err == nil {
			a, ap = h, p
		}
		if ap != port {
			continue
		}
		if a == host || strings.HasPrefix(a, "*.") && strings.HasSuffix(host, a[1:]) && len(host) > len(a)-1 {
			return true
		}
	}
	return false
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// send performs req. A failure to get any response is an HTTPResponse with Error set; its message
// holds no URL (a URL may carry credentials in its query).
func (s *sender) send(ctx context.Context, req *abi.HTTPRequest) abi.HTTPResponse {
	u, err := url.Parse(req.URL)
	if err != nil || u.Host == "" {
		return abi.HTTPResponse{Error: "invalid token URL", Policy: true}
	}
	if err := s.check(u); err != nil {
		return abi.HTTPResponse{Error: err.Error(), Policy: true}
	}
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	client := s.client
	if req.ClientCert != "" {
		if client = s.certClients[req.ClientCert]; client == nil {
			return abi.HTTPResponse{Error: fmt.Sprintf("no client certificate %q; host.WithClientCertificate registers one", req.ClientCert), Policy: true}
		}
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.String(), strings.NewReader(req.Body))
	if err != nil {
		return abi.HTTPResponse{Error: "invalid token request", Policy: true}
	}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	if hr.Header.Get("User-Agent") == "" {
		hr.Header.Set("User-Agent", "tokenwasm/1")
	}
	resp, err := client.Do(hr)
	if err != nil {
		// A redirect the policy refused is as final as a refused URL: not worth a retry.
		return abi.HTTPResponse{Error: transportMessage(err), Policy: isPolicy(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return abi.HTTPResponse{Error: transportMessage(err)}
	}
	headers := make(map[string]string, len(resp.Header))
	n := 0
	for k, vs := range resp.Header {
		if len(vs) > 0 {
			headers[k] = vs[0]
			n += len(k) + len(vs[0])
		}
	}
	if n > MaxResponseHeaderBytes {
		return abi.HTTPResponse{Error: fmt.Sprintf("token endpoint's response headers exceed %d bytes", MaxResponseHeaderBytes)}
	}
	return abi.HTTPResponse{Status: resp.StatusCode, Headers: headers, Body: string(body)}
}

// transportMessage strips the URL that net/http puts in its errors.
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout waiting for the token endpoint"
	}
	return err.Error()
}
