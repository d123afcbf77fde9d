package core

import "unsafe"

// validJSON reports whether b is one JSON value, as gjson.Valid reads it (RFC 8259: whitespace
// around it, no trailing data), nested at most limit deep (limit <= 64): what depth(b) <= limit &&
// gjson.ValidBytes(b) answer, in one pass, with no recursion and no allocation. Every step of a flow
// checks its whole input, and under TinyGo two passes (one of them recursive) were a large part of
// a call's cost.
func validJSON(b []byte, limit int) bool {
	const (
		value = iota // a value is expected
		after        // a value ended: a comma, a closing bracket, or the end
		key          // a member's key is expected
	)
	var objects uint64 // bit d: the container at depth d+1 is an object
	d, i, state := 0, skipWS(b, 0), value
	for {
		switch state {
		case value:
			if i >= len(b) {
				return false
			}
			switch c := b[i]; c {
			case '{', '[':
				if d >= limit || d >= 64 {
					return false
				}
				if c == '{' {
					objects |= 1 << d
				} else {
					objects &^= 1 << d
				}
				d++
				i = skipWS(b, i+1)
				if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
					d--
					i++
					state = after
				} else if c == '{' {
					state = key
				}
				continue
			case '"':
				i = validString(b, i+1)
			case 't':
				i = literal(b, i, "true")
			case 'f':
				i = literal(b, i, "false")
			case 'n':
				i = literal(b, i, "null")
			default:
				i = validNumber(b, i)
			}
			if i < 0 {
				return false
			}
			state = after
		case after:
			i = skipWS(b, i)
			if d == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			inObject := objects&(1<<(d-1)) != 0
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
				state = value
				if inObject {
					state = key
				}
			case '}', ']':
				if inObject != (b[i] == '}') {
					return false
				}
				d--
				i++
			default:
				return false
			}
		case key:
			if i >= len(b) || b[i] != '"' {
				return false
			}
			if i = validString(b, i+1); i < 0 {
				return false
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return false
			}
			i = skipWS(b, i+1)
			state = value
		}
	}
}

// validJSONString is validJSON for a string, without converting it to bytes (which copies it in
// TinyGo).
func validJSONString(s string, limit int) bool {
	return validJSON(unsafe.Slice(unsafe.StringData(s), len(s)), limit)
}

// skipWS returns the index of the first byte at or after i that is not JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// validString returns the index after the string whose content starts at i, or -1.
func validString(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < ' ':
			return -1
		case c == '\\':
			i++
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return -1
				}
				for _, h := range b[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return -1
					}
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

// literal returns the index after word at i, or -1.
func literal(b []byte, i int, word string) int {
	if len(b)-i < len(word) {
		return -1
	}
	for j := range len(word) { // not string(b[...]) == word: TinyGo would copy b to compare it
		if b[i+j] != word[j] {
			return -1
		}
	}
	return i + len(word)
}

// validNumber returns the index after the number at i, or -1: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b) || b[i] < '0' || b[i] > '9':
		return -1
	case b[i] == '0':
		i++
	default:
		i = digits(b, i)
	}
	if i < len(b) && b[i] == '.' {
		if i+1 >= len(b) || b[i+1] < '0' || b[i+1] > '9' {
			return -1
		}
		i = digits(b, i+1)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		i = digits(b, i)
	}
	return i
}

// digits returns the index of the first byte at or after i that is not a decimal digit.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}
