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

// boundField is a field of the table where it lies in its Go struct.
type boundField struct {
	index int
	off   uintptr
	kind  reflect.Kind // the Go field's kind; for a pointer, its element's
	ptr   bool
}

// fieldBinding is a table bound to a Go struct: its identity fields, and the others.
type fieldBinding struct {
	identity, perCall []boundField
}

var (
	requestFields = bindFields(reflect.TypeFor[abi.TokenRequest](), core.RequestFields())
	profileFields = bindFields(reflect.TypeFor[abi.Profile](), core.ProfileFields())
)

// bindFields binds table to t's fields by their JSON names. A field of t not in the table is a
// programming error caught by every test: it panics rather than go uncompared.
func bindFields(t reflect.Type, table []core.Field) fieldBinding {
	var b fieldBinding
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		j := slices.IndexFunc(table, func(f core.Field) bool { return f.Name == name })
		if j < 0 {
			panic("tokenwasm: " + t.Name() + "." + sf.Name + " is not in plugin/core's field table")
		}
		f := boundField{index: i, off: sf.Offset, kind: sf.Type.Kind()}
		if f.kind == reflect.Pointer {
			f.kind, f.ptr = sf.Type.Elem().Kind(), true
		}
		if table[j].Identity {
			b.identity = append(b.identity, f)
		} else {
			b.perCall = append(b.perCall, f)
		}
	}
	return b
}

// clearPerCall zeroes req's fields that are not part of its credential set (the table's per-call
// fields: force, now_ms, min_ttl_ms, fleet_lock, access_token, and revocation_url).
func clearPerCall(req *abi.TokenRequest) {
	v := reflect.ValueOf(req).Elem()
	for _, f := range requestFields.perCall {
		v.Field(f.index).SetZero()
	}
}

// sameFields reports whether the structs at a and b agree in every field of fs.
func sameFields(fs []boundField, a, b unsafe.Pointer) bool {
	for _, f := range fs {
		x, y := unsafe.Add(a, f.off), unsafe.Add(b, f.off)
		var eq bool
		switch {
		case f.ptr && f.kind == reflect.Bool:
			eq = sameBool(*(**bool)(x), *(**bool)(y))
		case f.ptr: // the profile
			eq = sameProfile(*(**abi.Profile)(x), *(**abi.Profile)(y))
		case f.kind == reflect.String:
			eq = same(*(*string)(x), *(*string)(y))
		case f.kind == reflect.Int64:
			eq = *(*int64)(x) == *(*int64)(y)
		case f.kind == reflect.Bool:
			eq = *(*bool)(x) == *(*bool)(y)
		case f.kind == reflect.Map:
			eq = sameMap(*(*map[string]string)(x), *(*map[string]string)(y))
		case f.kind == reflect.Slice:
			eq = slices.Equal(*(*[]string)(x), *(*[]string)(y))
		}
		if !eq {
			return false
		}
	}
	return true
}
