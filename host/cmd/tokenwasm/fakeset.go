package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"

	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// The SMART and mTLS fakes' clients: a SMART client authenticates with a key the fake has in its
// JWKS, an mTLS client with a certificate from the fake's client CA.
const (
	smartClientID = "smart-client"
	smartKeyID    = "smart-key-1"
	smartAlg      = "ES384" // a P-384 key: made at start in a millisecond, where RSA takes far longer
	smartScope    = "system/Patient.rs"
	mtlsClientID  = "mtls-client"
	mtlsCertID    = "client-certificate"
)

// fakeNames are the fakes in their -base-port order.
var fakeNames = []string{"candid", "pattern", "candescent", "nikohealth", "smart", "mtls"}

// fakeSet is every fake provider, with what their clients need: the SMART client's key and the
// mTLS client's certificate. The mTLS fake is https with a certificate from ca; with https, every
// fake is.
type fakeSet struct {
	candid, pattern, candescent, nikohealth *providertest.Fake
	smart                                   *providertest.SMART
	mtls                                    *providertest.MTLS
	ca                                      *providertest.CA
	https                                   bool
	smartKey                                *ecdsa.PrivateKey
	mtlsCert                                tls.Certificate
}

// startFakes starts the six fakes on addr: on ports basePort, basePort+1, ... in fakeNames' order,
// or free ports when basePort is 0; over https from a new CA when https is set.
func startFakes(addr string, basePort int, https bool) (_ *fakeSet, err error) {
	if basePort < 0 || basePort > 65535-(len(fakeNames)-1) {
		return nil, usageError{fmt.Sprintf("-base-port %d: the fakes need %d ports from it, up to 65535", basePort, len(fakeNames))}
	}
	s := &fakeSet{https: https}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.ca, err = providertest.NewCA("tokenwasm fakes CA"); err != nil {
		return nil, err
	}
	// 127.0.0.1 and localhost, as clients name loopback; ::1 and addr itself for -addr.
	hosts := []string{"127.0.0.1", "localhost", "::1"}
	if ip := net.ParseIP(addr); addr != "" && addr != "localhost" && (ip == nil || !ip.IsUnspecified() && !ip.Equal(net.IPv4(127, 0, 0, 1)) && !ip.Equal(net.IPv6loopback)) {
		hosts = append(hosts, addr)
	}
	cert, err := s.ca.ServerCertificate(hosts...)
	if err != nil {
		return nil, err
	}
	server := func(i int, tlsAlways bool) providertest.Server {
		port := 0
		if basePort > 0 {
			port = basePort + i
		}
		sv := providertest.Server{Addr: net.JoinHostPort(addr, strconv.Itoa(port))}
		if https || tlsAlways {
			sv.Certificate = &cert
		}
		return sv
	}
	if s.smartKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, err
	}
	if s.candid, err = server(0, false).NewCandid(providertest.DefaultConfig("candid")); err != nil {
		return nil, err
	}
	if s.pattern, err = server(1, false).NewPattern(providertest.DefaultConfig("pattern")); err != nil {
		return nil, err
	}
	if s.candescent, err = server(2, false).NewCandescent(providertest.DefaultConfig("candescent")); err != nil {
		return nil, err
	}
	if s.nikohealth, err = server(3, false).NewNikoHealth(providertest.DefaultConfig("nikohealth")); err != nil {
		return nil, err
	}
	if s.smart, err = server(4, false).NewSMART(providertest.SMARTConfig{ClientID: smartClientID,
		Keys: map[string]crypto.PublicKey{smartKeyID: &s.smartKey.PublicKey}}); err != nil {
		return nil, err
	}
	if s.mtls, err = server(5, true).NewMTLS(mtlsClientID); err != nil {
		return nil, err
	}
	s.mtlsCert = s.mtls.ClientCertificate(mtlsClientID)
	return s, nil
}

// all returns the fakes in fakeNames' order.
func (s *fakeSet) all() []*providertest.Fake {
	return []*providertest.Fake{s.candid, s.pattern, s.candescent, s.nikohealth, s.smart.Fake, s.mtls.Fake}
}

// Close shuts down the fakes started so far.
func (s *fakeSet) Close() {
	for _, f := range []*providertest.Fake{s.candid, s.pattern, s.candescent, s.nikohealth} {
		if f != nil {
			f.Close()
		}
	}
	if s.smart != nil {
		s.smart.Close()
	}
	if s.mtls != nil {
		s.mtls.Close()
	}
}
