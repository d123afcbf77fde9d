package host

import (
	"reflect"
	"testing"

	"github.com/tokenwasm/tokenwasm/abi"
)

// TestSameCredentialsComparesEveryField: two requests that differ in any one field of abi.TokenRequest
// or abi.Profile (the per-call fields aside) are different credential sets to Runtime.Token's index.
// A field added to the ABI without a comparison in sameCredentials would let the index serve one
// credential set's source to another: this test names it.
func TestSameCredentialsComparesEveryField(t *testing.T) {
	perCall := map[string]bool{"Force": true, "NowMS": true, "MinTTLMS": true, "AccessToken": true, "FleetLock": true}
	set := func(v reflect.Value) {
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
	rt := reflect.TypeOf(abi.TokenRequest{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		if perCall[f.Name] {
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
