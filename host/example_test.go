package host_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
	"github.com/tokenwasm/tokenwasm/host/providertest"
	"golang.org/x/oauth2"
)

// A fake NikoHealth on loopback stands in for https://{domain}.nikohealth.com in these examples; in
// production, set Domain instead of TokenURL and leave out WithLoopback.
func nikoRequest(f *providertest.Fake) abi.TokenRequest {
	return abi.TokenRequest{
		Provider:     "nikohealth",
		ClientID:     f.Config().ClientID,
		ClientSecret: f.Config().ClientSecret,
		TokenURL:     f.TokenURL(),
	}
}

// A Config is used as x/oauth2's clientcredentials.Config is. Here a fake NikoHealth on loopback
// stands in for https://acme.nikohealth.com; in production set Domain: "acme" and leave TokenURL and
// WithLoopback out (and Host too, if the defaults suit).
func ExampleConfig() {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	cfg := host.Config{
		Provider:     host.NikoHealth,
		ClientID:     fake.Config().ClientID,
		ClientSecret: fake.Config().ClientSecret,
		Scopes:       []string{"external"},
		TokenURL:     fake.TokenURL(),
		Host:         c,
	}
	tok, err := cfg.TokenSource(ctx).Token()
	if err != nil {
		panic(err)
	}
	resp, err := cfg.Client(ctx).Get(fake.APIURL())
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(tok.Type(), tok.Extra("scope"), resp.StatusCode, fake.Requests())
	// Output: Bearer external 200 1
}

// A provider the plugin has no profile for is described by Custom, AuthStyle and a Profile: here an
// endpoint that takes the credentials in a JSON body and counts expires_in in seconds.
func ExampleConfig_custom() {
	fake := providertest.NewCandid(providertest.DefaultConfig("candid"))
	defer fake.Close()
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	no := false
	cfg := host.Config{
		Provider:     host.Custom,
		TokenURL:     fake.TokenURL(),
		AuthStyle:    host.AuthStyleInParams,
		ClientID:     fake.Config().ClientID,
		ClientSecret: fake.Config().ClientSecret,
		Profile:      &abi.Profile{Body: "json", SendGrantType: &no, ExpiresInUnit: "s"},
		Host:         c,
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(tok.Type(), tok.Valid())
	// Output: Bearer true
}

// A provider's refusal is an *abi.Error: errors.Is tests its kind, errors.As gives its status and
// fields. Its message never holds a secret.
func ExampleConfig_errors() {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	cfg := host.Config{Provider: host.NikoHealth, ClientID: fake.Config().ClientID, ClientSecret: "wrong",
		TokenURL: fake.TokenURL(), Host: c}
	_, err = cfg.Token(ctx)
	var ae *abi.Error
	if errors.As(err, &ae) {
		fmt.Println(errors.Is(err, abi.ErrInvalidClient), ae.Kind, ae.Status, ae.Retryable)
	}
	// Output: true invalid_client 401 false
}

func ExampleRuntime_Token() {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()

	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	tok, err := c.Token(ctx, nikoRequest(fake))
	if err != nil {
		panic(err)
	}
	fmt.Println(tok.TokenType, tok.ExpiresIn, tok.Scope)
	// Output: Bearer 1200 external
}

func ExampleRuntime_TokenSource() {
	fake := providertest.NewPattern(providertest.DefaultConfig("pattern"))
	defer fake.Close()

	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	cfg := fake.Config()
	var ts oauth2.TokenSource = c.TokenSource(abi.TokenRequest{
		Provider: "pattern", ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: fake.TokenURL(),
	})
	for range 3 {
		if _, err := ts.Token(); err != nil {
			panic(err)
		}
	}
	tok, _ := ts.Token()
	// Pattern answers expires_in in milliseconds and "bearer" in lower case; the token is normalized,
	// and three calls made one request.
	fmt.Println(tok.Type(), tok.ExpiresIn, fake.Requests())
	// Output: Bearer 3600 1
}

func ExampleRuntime_Transport() {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()

	ctx := context.Background()
	c, err := host.New(ctx, host.WithLoopback())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	api := &http.Client{Transport: c.Transport(nil, nikoRequest(fake))}
	resp, err := api.Get(fake.APIURL())
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 {"ok":true}
}
