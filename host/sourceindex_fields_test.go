package host

import (
	"reflect"
	"strings"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// TestSameCredentialsComparesEveryField: two requests that differ in any one field of abi.TokenRequest
// or abi.Profile (the per-call fields of plugin/core's field table aside) are different credential
// sets to Runtime.Token's index. A field added to the ABI without a comparison in sameCredentials
// would let the index serve one credential set's source to another: this test names it.
func TestSameCredentialsComparesEveryField(t *testing.T) {
	perCall := map[string]bool{}
	for _, f := range core.RequestFields() {
		perCall[f.Name] = !f.Identity
	}
	set := func(v reflect.Value) { setField(t, v) }
	rt := reflect.TypeOf(abi.TokenRequest{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); perCall[name] {
			continue
		}
		var a, b abi.TokenRequest
		set(reflect.ValueOf(&b).Elem().Field(i))
		if sameCredentials(&a, &b) {
			t.Errorf("TokenRequest.%s is not compared", f.Name)
		}
	}
	pt := reflect.TypeOf(abi.Profile{})
	for i := range pt.NumField() {
		a, b := abi.TokenRequest{Profile: &abi.Profile{}}, abi.TokenRequest{Profile: &abi.Profile{}}
		set(reflect.ValueOf(b.Profile).Elem().Field(i))
		if sameCredentials(&a, &b) {
			t.Errorf("Profile.%s is not compared", pt.Field(i).Name)
		}
	}
}

// setField sets v, a field of abi.TokenRequest or abi.Profile, to a value other than its zero.
func setField(t *testing.T, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Int64, reflect.Int:
		v.SetInt(1)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Map:
		v.Set(reflect.ValueOf(map[string]string{"k": "v"}))
	case reflect.Slice:
		v.Set(reflect.ValueOf([]string{"x"}))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		if v.Elem().Kind() == reflect.Bool {
			v.Elem().SetBool(true)
		}
	default:
		t.Fatalf("no value for a field of kind %s", v.Kind())
	}
}

// TestSourceKeyClearsPerCallFields: the source map's key changes with every field of the credential
// set, and with no per-call field of plugin/core's field table.
func TestSourceKeyClearsPerCallFields(t *testing.T) {
	identity := map[string]bool{}
	for _, f := range core.RequestFields() {
		identity[f.Name] = f.Identity
	}
	base, _, err := sourceKey(abi.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rt := reflect.TypeOf(abi.TokenRequest{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		var req abi.TokenRequest
		setField(t, reflect.ValueOf(&req).Elem().Field(i))
		key, _, err := sourceKey(req)
		if err != nil {
			t.Fatal(err)
		}
		if changed := key != base; changed != identity[name] {
			t.Errorf("%s: the key changed %v, want %v (part of the credential set)", f.Name, changed, identity[name])
		}
	}
}

// TestSameBitsIsOnlyTheSameRequest: the index's fast path (sameBits) says yes only to a request that is
// the same bits as the one it remembers: a copy of it; every field of abi.TokenRequest changed alone,
// per-call fields included, is a no (and goes to sameCredentials).
func TestSameBitsIsOnlyTheSameRequest(t *testing.T) {
	base := abi.TokenRequest{Provider: "nikohealth", ClientID: "id", ClientSecret: "s", Params: map[string]string{"a": "b"}}
	if c := base; !sameBits(&base, &c) {
		t.Fatal("a copy of the request is not the same bits")
	}
	rt := reflect.TypeOf(abi.TokenRequest{})
	for i := range rt.NumField() {
		b := base
		setField(t, reflect.ValueOf(&b).Elem().Field(i))
		if sameBits(&base, &b) {
			t.Errorf("TokenRequest.%s changed: still the same bits", rt.Field(i).Name)
		}
	}
	if c := cloneRequest(base); sameBits(&base, &c) {
		t.Error("a request with a copy of the maps is the same bits: the index's copy would never be compared")
	}
}
