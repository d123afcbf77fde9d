package abi

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestSchemasMatchTypes keeps every JSON Schema and its Go type in step: every field of a Go type is
// a property of its schema (of one branch, for a oneOf; of a $defs entry, for an import's input and
// output) and every property a field. describe and token_step have no Go type: their required
// members are checked instead. Every schema in schema/ is checked.
func TestSchemasMatchTypes(t *testing.T) {
	tests := []struct {
		schema, def string // def: a $defs entry; "" the schema itself
		typ         any
	}{
		{"token_request", "", TokenRequest{}},
		{"profile", "", Profile{}},
		{"http_request", "", HTTPRequest{}},
		{"http_response", "", HTTPResponse{}},
		{"decode_input", "", DecodeInput{}},
		{"token", "", Token{}},
		{"error", "", Error{}},
		{"result", "", Result{}},
		{"cache_get", "input", CacheGetInput{}},
		{"cache_get", "output", CacheGetOutput{}},
		{"cache_set", "input", CacheSetInput{}},
		{"cache_set", "output", CacheSetOutput{}},
		{"cache_delete", "input", CacheDeleteInput{}},
		{"cache_delete", "output", struct{}{}},
		{"describe", "", struct {
			ABI        string `json:"abi"`
			Version    string `json:"version"`
			Providers  []any  `json:"providers"`
			ClientAuth any    `json:"client_auth"`
		}{}},
	}
	checked := map[string]bool{"token_step": true} // its shapes are the other schemas': see TestTokenStepSchema
	for _, tt := range tests {
		checked[tt.schema] = true
		t.Run(tt.schema+"/"+tt.def, func(t *testing.T) {
			b, err := os.ReadFile("schema/" + tt.schema + ".json")
			if err != nil {
				t.Fatal(err)
			}
			var s schemaNode
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			if tt.def != "" {
				d, ok := s.Defs[tt.def]
				if !ok {
					t.Fatalf("no $defs.%s", tt.def)
				}
				s = d
			}
			set := map[string]bool{}
			for k := range s.Properties {
				set[k] = true
			}
			for _, b := range s.OneOf {
				for k := range b.Properties {
					set[k] = true
				}
			}
			var props []string
			for k := range set {
				props = append(props, k)
			}
			sort.Strings(props)
			if got, want := strings.Join(props, ","), strings.Join(jsonFields(tt.typ), ","); got != want {
				t.Errorf("schema properties\n %s\nGo fields\n %s", got, want)
			}
		})
	}
	entries, err := os.ReadDir("schema")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if name := strings.TrimSuffix(e.Name(), ".json"); !checked[name] {
			t.Errorf("schema %s is checked against no Go type", e.Name())
		}
	}
}

// TestTokenStepSchema: token_step's schema has its input, output and action shapes.
func TestTokenStepSchema(t *testing.T) {
	b, err := os.ReadFile("schema/token_step.json")
	if err != nil {
		t.Fatal(err)
	}
	var s schemaNode
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	for _, def := range []string{"input", "output", "action"} {
		if _, ok := s.Defs[def]; !ok {
			t.Errorf("token_step.json has no $defs.%s", def)
		}
	}
}

// TestErrorKindsSchema: the schema's kinds are abi.Kinds(), in order: one list.
func TestErrorKindsSchema(t *testing.T) {
	b, err := os.ReadFile("schema/error.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			Kind struct {
				Enum []string `json:"enum"`
			} `json:"kind"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(s.Properties.Kind.Enum, ","), strings.Join(Kinds(), ","); got != want {
		t.Fatalf("schema kinds\n %s\nabi.Kinds\n %s", got, want)
	}
}

type schemaNode struct {
	Properties map[string]json.RawMessage `json:"properties"`
	OneOf      []schemaNode               `json:"oneOf"`
	Defs       map[string]schemaNode      `json:"$defs"`
}

func TestSchemasAreJSON(t *testing.T) {
	entries, err := os.ReadDir("schema")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 12 {
		t.Fatalf("%d schemas, want at least 12", len(entries))
	}
	for _, e := range entries {
		b, err := os.ReadFile("schema/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil || v["$schema"] == nil {
			t.Errorf("%s: not a JSON Schema: %v", e.Name(), err)
		}
	}
}

func jsonFields(v any) []string {
	var out []string
	typ := reflect.TypeOf(v)
	for i := 0; i < typ.NumField(); i++ {
		tag := typ.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// TestErrorStringSaysWhatTheProviderSaid: Error() carries the status and, as x/oauth2's
// RetrieveError, the provider's error code (when it is not the kind) and description, which the
// plugin has redacted before they reach an Error.
func TestErrorStringSaysWhatTheProviderSaid(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{Kind: KindInvalidClient, Status: 401, Message: "provider refused the token request", OAuthError: "invalid_client", Description: "bad [redacted]"},
			`tokenwasm: invalid_client (HTTP 401): provider refused the token request; provider says "bad [redacted]"`},
		{Error{Kind: KindServerError, Status: 400, Message: "provider refused the token request", OAuthError: "slow_down"},
			`tokenwasm: server_error (HTTP 400): provider refused the token request; provider error "slow_down"`},
		{Error{Kind: KindTransport, Message: "token request failed: connection refused"},
			`tokenwasm: transport: token request failed: connection refused`},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q\nwant      %q", got, tt.want)
		}
	}
}
