package core

import (
	"strings"
	"testing"
)

// The review of client authentication (issue 16): attacks on the client assertion and revocation.

// TestAssertionIdentityIsUnambiguous: the key id and the client id are not in the form body of a
// private_key_jwt request, so the cache identity alone tells two credential sets apart. Joined with
// ':' and nothing else, key id "k:1" for client "c" and key id "k" for client "1:c" were one
// identity: a tenant who chose the second read the first one's token from a shared cache without
// signing anything (client ids are often URIs, holding ':').
func TestAssertionIdentityIsUnambiguous(t *testing.T) {
	key := func(kid, client string) string {
		req := strings.Replace(smartReq(kid, AlgRS384, ""), "backend-app", client, 1)
		_, _, k, err := (*Memo)(nil).Prepare([]byte(req))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for _, tt := range []struct{ kid1, client1, kid2, client2 string }{
		{"k:1", "c", "k", "1:c"},
		{"victim-key", "https://app.example/client", "victim-key:https", "//app.example/client"},
	} {
		if key(tt.kid1, tt.client1) == key(tt.kid2, tt.client2) {
			t.Errorf("kid %q client %q and kid %q client %q share one cache identity", tt.kid1, tt.client1, tt.kid2, tt.client2)
		}
	}
}
