package abi

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestSchemasMatchTypes keeps the JSON Schemas and the Go types in step: every field of a Go type is a
// property of its schema and every property a field.
func TestSchemasMatchTypes(t *testing.T) {
	tests := []struct {
		schema string
		typ    any
	}{
		{"token_request", TokenRequest{}},
		{"profile", Profile{}},
		{"http_request", HTTPRequest{}},
		{"decode_input", DecodeInput{}},
		{"token", Token{}},
		{"error", Error{}},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			b, err := os.ReadFile("schema/" + tt.schema + ".json")
			if err != nil {
				t.Fatal(err)
			}
			var s struct {
				Properties map[string]json.RawMessage `json:"properties"`
			}
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			var props []string
			for k := range s.Properties {
				props = append(props, k)
			}
			sort.Strings(props)
			if got, want := strings.Join(props, ","), strings.Join(jsonFields(tt.typ), ","); got != want {
				t.Errorf("schema properties\n %s\nGo fields\n %s", got, want)
			}
		})
	}
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

func TestErrorStringHasNoDescription(t *testing.T) {
	e := &Error{Kind: KindInvalidClient, Status: 401, Message: "provider refused the token request", Description: "secret-ish text"}
	if got := e.Error(); got != "tokenwasm: invalid_client (HTTP 401): provider refused the token request" {
		t.Fatalf("Error() = %q", got)
	}
}
