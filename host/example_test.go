package host_test

import (
	"context"
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

func ExampleClient_Token() {
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

func ExampleClient_TokenSource() {
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

func ExampleClient_Transport() {
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
