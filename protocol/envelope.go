package protocol

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// scanEnvelope reads the top-level "action" and "requestId" of a JSON
// object that json.Valid has accepted, in one pass and without decoding
// anything else: what json.Unmarshal into envelope gives (keys matched
// case-insensitively, the last of repeated keys winning, each value's raw
// bytes), at a fraction of the cost: json.Unmarshal parses the whole frame
// to find the two keys, the most expensive step of decoding a frame
// otherwise (docs/performance.md). ok is false when data is not an object, and
// when a key has an escape in it, which only json.Unmarshal matches
// exactly; the caller then uses it.
func scanEnvelope(data []byte) (env envelope, ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return env, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return env, true
	}
	for i < len(data) {
		if data[i] != '"' {
			return env, false
		}
		end := stringEnd(data, i)
		if end < 0 {
			return env, false
		}
		key := data[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return env, false
		}
		i = skipSpace(data, end)
		if i >= len(data) || data[i] != ':' {
			return env, false
		}
		i = skipSpace(data, i+1)
		vend := valueEnd(data, i)
		if vend < 0 {
			return env, false
		}
		switch {
		case bytes.EqualFold(key, []byte("action")):
			env.Action = bytes.Clone(data[i:vend])
		case bytes.EqualFold(key, []byte("requestId")):
			env.RequestID = bytes.Clone(data[i:vend])
		}
		i = skipSpace(data, vend)
		if i >= len(data) {
			return env, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return env, true
		default:
			return env, false
		}
	}
	return env, false
}

// actionString is the string an "action" value holds; ok is false when it
// is not a JSON string.
func actionString(raw json.RawMessage) (string, bool) {
	// Without escapes and in valid UTF-8 (json.Unmarshal replaces invalid
	// bytes), the string is its bytes.
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw[1:len(raw)-1], '\\') < 0 && utf8.Valid(raw[1:len(raw)-1]) {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string starting at data[i]
// (a '"'), or -1.
func stringEnd(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the value starting at data[i], or
// -1. Only its extent is found: whether the frame is valid JSON is
// checked elsewhere (decode), and on bytes that are not it stays in
// bounds and its answer is not used.
func valueEnd(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				e := stringEnd(data, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default: // a number, true, false or null: up to the next delimiter
		j := i
		for j < len(data) {
			switch data[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
			j++
		}
		return j
	}
}
