package host

import (
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/plugin/core"
)

// What names a credential set is plugin/core's field table (core.RequestFields): the Go host binds
// it to abi.TokenRequest's and abi.Profile's fields by their JSON names, once, so the source map's
// key (clearPerCall) and the source index's comparison (sameCredentials) read the one table the
// plugin's parser reads. plugin/core's TestFieldTableMatchesABI holds the table to the Go types.

// fieldSet is where a struct's fields of one table lie, by Go type (offsets in the struct): a
// comparison runs one tight loop per type.
type fieldSet struct {
	strings, ints, bools, maps, lists, flags, profiles []uintptr
}

// fieldBinding is a table bound to a Go struct: its identity fields, and the indexes of the others.
type fieldBinding struct {
	identity fieldSet
	perCall  []int
}

var (
	requestFields = bindFields(reflect.TypeFor[abi.TokenRequest](), core.RequestFields())
	profileFields = bindFields(reflect.TypeFor[abi.Profile](), core.ProfileFields())
)

// bindFields binds table to t's fields by their JSON names. A field of t not in the table, or of a
// type no comparison here knows, is a programming error caught by every test: it panics rather than
// go uncompared.
func bindFields(t reflect.Type, table []core.Field) fieldBinding {
	var b fieldBinding
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		j := slices.IndexFunc(table, func(f core.Field) bool { return f.Name == name })
		if j < 0 {
			panic("tokenwasm: " + t.Name() + "." + sf.Name + " is not in plugin/core's field table")
		}
		if !table[j].Identity {
			b.perCall = append(b.perCall, i)
			continue
		}
		var set *[]uintptr
		switch typ := sf.Type; {
		case typ.Kind() == reflect.String:
			set = &b.identity.strings
		case typ.Kind() == reflect.Int64:
			set = &b.identity.ints
		case typ.Kind() == reflect.Bool:
			set = &b.identity.bools
		case typ == reflect.TypeFor[map[string]string]():
			set = &b.identity.maps
		case typ == reflect.TypeFor[[]string]():
			set = &b.identity.lists
		case typ == reflect.TypeFor[*bool]():
			set = &b.identity.flags
		case typ == reflect.TypeFor[*abi.Profile]():
			set = &b.identity.profiles
		default:
			panic("tokenwasm: " + t.Name() + "." + sf.Name + ": no comparison for its type")
		}
		*set = append(*set, sf.Offset)
	}
	return b
}

// clearPerCall zeroes req's fields that are not part of its credential set (the table's per-call
// fields, as abi/ABI.md lists them under TokenRequest).
func clearPerCall(req *abi.TokenRequest) {
	v := reflect.ValueOf(req).Elem()
	for _, i := range requestFields.perCall {
		v.Field(i).SetZero()
	}
}

// same reports whether the structs at a and b agree in every field of s.
func (s *fieldSet) same(a, b unsafe.Pointer) bool {
	for _, off := range s.strings {
		if !same(*(*string)(unsafe.Add(a, off)), *(*string)(unsafe.Add(b, off))) {
			return false
		}
	}
	for _, off := range s.ints {
		if *(*int64)(unsafe.Add(a, off)) != *(*int64)(unsafe.Add(b, off)) {
			return false
		}
	}
	for _, off := range s.bools {
		if *(*bool)(unsafe.Add(a, off)) != *(*bool)(unsafe.Add(b, off)) {
			return false
		}
	}
	for _, off := range s.maps {
		if !sameMap(*(*map[string]string)(unsafe.Add(a, off)), *(*map[string]string)(unsafe.Add(b, off))) {
			return false
		}
	}
	for _, off := range s.lists {
		if !slices.Equal(*(*[]string)(unsafe.Add(a, off)), *(*[]string)(unsafe.Add(b, off))) {
			return false
		}
	}
	for _, off := range s.flags {
		if !sameBool(*(**bool)(unsafe.Add(a, off)), *(**bool)(unsafe.Add(b, off))) {
			return false
		}
	}
	for _, off := range s.profiles {
		if !sameProfile(*(**abi.Profile)(unsafe.Add(a, off)), *(**abi.Profile)(unsafe.Add(b, off))) {
			return false
		}
	}
	return true
}
