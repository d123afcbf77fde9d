package core

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// TestFieldTableMatchesABI holds the field table to abi.TokenRequest and abi.Profile (their JSON
// tags, and each field's Go type) and to the JSON schemas in abi/schema (their properties, and each
// property's type): a field added in one place only fails here, naming it.
func TestFieldTableMatchesABI(t *testing.T) {
	tests := []struct {
		schema string
		typ    reflect.Type
		fields []Field
	}{
		{"token_request", reflect.TypeOf(abi.TokenRequest{}), RequestFields()},
		{"profile", reflect.TypeOf(abi.Profile{}), ProfileFields()},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			table := map[string]FieldType{}
			for _, f := range tt.fields {
				if _, dup := table[f.Name]; dup {
					t.Errorf("%s is in the table twice", f.Name)
				}
				table[f.Name] = f.Type
			}
			goTypes := map[string]FieldType{}
			for i := range tt.typ.NumField() {
				sf := tt.typ.Field(i)
				name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
				goTypes[name] = goFieldType(sf.Type)
			}
			schemaTypes := map[string]FieldType{}
			for name, p := range schemaProperties(t, tt.schema) {
				schemaTypes[name] = p.fieldType()
			}
			for where, other := range map[string]map[string]FieldType{"the Go type": goTypes, "the schema": schemaTypes} {
				for name, typ := range table {
					if got, ok := other[name]; !ok {
						t.Errorf("%s is in the table, not in %s", name, where)
					} else if got != typ {
						t.Errorf("%s: the table says type %d, %s %d", name, typ, where, got)
					}
				}
				for name := range other {
					if _, ok := table[name]; !ok {
						t.Errorf("%s is in %s, not in the table", name, where)
					}
				}
			}
		})
	}
}

// TestSchemaProviders: the schema's providers are the built-in ones and custom.
func TestSchemaProviders(t *testing.T) {
	var got []string
	for _, v := range schemaProperties(t, "token_request")["provider"].Enum {
		got = append(got, v.(string))
	}
	want := []string{}
	for _, p := range Providers() {
		want = append(want, p.Name)
	}
	want = append(want, ProviderCustom)
	if !slices.Equal(got, want) {
		t.Errorf("schema providers %v, want %v", got, want)
	}
}

// TestFieldTableParsed: every field the plugin reads has a place in Request (or in the profile's
// parser), and the parser takes each type the table gives: a string field set to a number, say, is
// refused naming the field.
func TestFieldTableParsed(t *testing.T) {
	wrong := map[FieldType]string{FieldString: `1`, FieldMap: `"x"`, FieldBool: `"x"`, FieldNumber: `"x"`, FieldObject: `1`}
	for _, f := range requestFields {
		if f.Use == UseHost {
			continue
		}
		if f.Type == FieldString && (&Request{}).stringField(f.Name) == nil {
			t.Errorf("%s: no Request field", f.Name)
		}
		if f.Name == "provider" || f.Type == FieldObject {
			continue // the provider decides whether a profile is read
		}
		_, err := parseRequest(`{"provider":"candid","`+f.Name+`":`+wrong[f.Type]+`}`, new(requestBufs))
		if err == nil || !strings.HasPrefix(err.Message, f.Name+" must be") {
			t.Errorf("%s set to %s: got %v, want an error naming it", f.Name, wrong[f.Type], err)
		}
	}
}

// goFieldType is the table's type of a Go field of abi.TokenRequest or abi.Profile.
func goFieldType(t reflect.Type) FieldType {
	switch t.Kind() {
	case reflect.String:
		return FieldString
	case reflect.Map:
		return FieldMap
	case reflect.Bool:
		return FieldBool
	case reflect.Int64:
		return FieldNumber
	case reflect.Slice:
		return FieldArray
	case reflect.Pointer:
		if t.Elem().Kind() == reflect.Bool {
			return FieldBool // a profile's flag: unset is its default
		}
		return FieldObject
	}
	return 0
}

// schemaProperties reads the properties of abi/schema/<name>.json.
func schemaProperties(t *testing.T, name string) map[string]schemaProp {
	t.Helper()
	b, err := os.ReadFile("../../abi/schema/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]schemaProp `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s.Properties
}

type schemaProp struct {
	Type string `json:"type"`
	Enum []any  `json:"enum"`
	Ref  string `json:"$ref"`
}

func (p schemaProp) fieldType() FieldType {
	switch {
	case p.Ref != "":
		return FieldObject
	case p.Type == "string", p.Type == "" && len(p.Enum) > 0:
		return FieldString
	case p.Type == "object":
		return FieldMap
	case p.Type == "boolean":
		return FieldBool
	case p.Type == "integer":
		return FieldNumber
	case p.Type == "array":
		return FieldArray
	}
	return 0
}

// TestFieldListsInABI: abi/ABI.md's two lists of TokenRequest fields in prose, the options of one
// call (under TokenRequest) and the secrets (under Secrets), name exactly the field table's fields
// that are not part of the credential set and that are secret. Hosts written from ABI.md (the npm
// package's redaction, a new host's source map) read these lists, not the table.
func TestFieldListsInABI(t *testing.T) {
	b, err := os.ReadFile("../../abi/ABI.md")
	if err != nil {
		t.Fatal(err)
	}
	abiMD := string(b)
	var perCall, secret []string
	for _, f := range RequestFields() {
		if !f.Identity {
			perCall = append(perCall, f.Name)
		}
		if f.Secret {
			secret = append(secret, f.Name)
		}
	}
	for _, tt := range []struct {
		what, from, to string
		want           []string
	}{
		{"options of one call", "\nThe fields ", " are\noptions of one call", perCall},
		{"secrets", "### Secrets\n", " never appear", secret},
	} {
		_, rest, ok := strings.Cut(abiMD, tt.from)
		list, _, ok2 := strings.Cut(rest, tt.to)
		if !ok || !ok2 {
			t.Fatalf("%s: ABI.md has no sentence from %q to %q", tt.what, tt.from, tt.to)
		}
		var got []string
		for i, part := range strings.Split(list, "`") {
			if i%2 == 1 {
				got = append(got, part)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(got, want) {
			t.Errorf("ABI.md's %s: %v, the field table's: %v", tt.what, got, want)
		}
	}
}
