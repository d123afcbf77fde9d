package host

import (
	"context"
	"reflect"
	"testing"

	"github.com/tokenwasm/tokenwasm/host/providertest"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// TestExtraAnswersAsOAuth2Does: a caller moving from x/oauth2 type-asserts Extra's values as x/oauth2
// gives them for a JSON answer (numbers are float64, strings string): the same fake, asked by both,
// answers each key with a value of the same type.
func TestExtraAnswersAsOAuth2Does(t *testing.T) {
	fake := providertest.NewNikoHealth(providertest.DefaultConfig("nikohealth"))
	defer fake.Close()
	ctx := context.Background()
	c, err := New(ctx, WithLoopback())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	fc := fake.Config()
	ours, err := (&Config{Provider: NikoHealth, ClientID: fc.ClientID, ClientSecret: fc.ClientSecret, TokenURL: fake.TokenURL(),
		Scopes: []string{"external"}, Host: c}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := (&clientcredentials.Config{ClientID: fc.ClientID, ClientSecret: fc.ClientSecret, TokenURL: fake.TokenURL(),
		Scopes: []string{"external"}, AuthStyle: oauth2.AuthStyleInHeader}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"expires_in", "scope", "token_type"} {
		if got, want := reflect.TypeOf(ours.Extra(key)), reflect.TypeOf(peer.Extra(key)); got != want {
			t.Errorf("Extra(%q) is a %v, x/oauth2's a %v", key, got, want)
		}
	}
}
