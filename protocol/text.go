package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text rules (docs/protocol.md#credentials; docs/protocol.md, "Text rules"). Every text a
// POS or a terminal sends is checked before anything of it is stored:
//
//   - the frame or body is valid UTF-8 as sent, and has no \u escape of an
//     unpaired surrogate (both of which encoding/json would silently turn
//     into U+FFFD);
//   - a string has no control character (C0 U+0000–U+001F, DEL U+007F, C1
//     U+0080–U+009F), except line breaks (LF, or CR directly before LF) in
//     receipts;
//   - a string holds no full card number (see ContainsCardNumber), except
//     a transactionId, messageId or terminalId that has exactly the form
//     of an id the hub generates ("txn_…", a stream id "<ms>-<seq>", a
//     legacy "conn_…" connection id), where such a run is an accident of
//     randomness or of the clock; those are only compared with stored ids
//     (requireIssuedID);
//   - requestId, which may be any JSON value, is held to the first two
//     rules only (checkRequestID).
//
// A refusal is invalid_request naming the field (dotted for nested fields,
// e.g. receipts.customer) and never quotes the text.

// Messages of the text rules. None quotes the text or has a digit in it.
const (
	msgNotUTF8         = "is not valid UTF-8"
	msgLoneSurrogate   = "has a \\u escape of an unpaired surrogate (not valid Unicode text)"
	msgControl         = "contains a control character (none are allowed here)"
	msgControlMultline = "contains a control character other than a line break"
	msgCardNumber      = "contains what looks like a full card number; show at most the first six and last four digits and send it again"
)

// CheckText checks one text field: valid UTF-8, no control character
// (with multiline, LF and CR LF line breaks are allowed), and no full card
// number. The error names field and never quotes s.
func CheckText(field, s string, multiline bool) *Error {
	if e := checkChars(field, s, multiline); e != nil {
		return e
	}
	if ContainsCardNumber(s) {
		return Invalid(field, msgCardNumber)
	}
	return nil
}

// checkChars is CheckText without the card-number rule.
func checkChars(field, s string, multiline bool) *Error {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != 0x7f:
			case multiline && c == '\n':
			case multiline && c == '\r' && i+1 < len(s) && s[i+1] == '\n':
			case multiline:
				return Invalid(field, msgControlMultline)
			default:
				return Invalid(field, msgControl)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return Invalid(field, msgNotUTF8)
		case r <= 0x9f: // C1
			if multiline {
				return Invalid(field, msgControlMultline)
			}
			return Invalid(field, msgControl)
		}
		i += size
	}
	return nil
}

// checkRequestID applies rule 2 to a requestId (rule 1, UTF-8, was checked
// with the whole frame): it is any JSON value, echoed verbatim in the
// reply, so every string in it (keys included) must be one line of text.
// The card-number rule does not apply: a requestId is never stored or
// logged, only echoed to its sender, and clients build it from millisecond
// clocks and hub-issued ids, whose 13-digit runs pass the Luhn check one
// time in ten.
func checkRequestID(raw json.RawMessage) *Error {
	const field = "requestId"
	if len(raw) == 0 {
		return nil
	}
	switch c := raw[0]; {
	case c == '"' && bytes.IndexByte(raw, '\\') < 0:
		return checkChars(field, string(raw[1:len(raw)-1]), false)
	case c != '{' && c != '[' && c != '"':
		return nil // a number, true, false or null
	}
	// An object, an array or a string with escapes: every string in it,
	// keys included.
	d := json.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := d.Token()
		if err != nil {
			return nil // io.EOF: the frame was valid JSON, so nothing else
		}
		if v, ok := tok.(string); ok {
			if e := checkChars(field, v, false); e != nil {
				return e
			}
		}
	}
}

// ---- card numbers ----

// ForLog is s as a log line may carry it: s itself, or a placeholder when s
// holds what looks like a full card number. An id or a path a client sent
// is logged through it.
func ForLog(s string) string {
	if ContainsCardNumber(s) {
		return "[removed: holds a card number]"
	}
	return s
}

// ContainsCardNumber reports whether s holds what looks like a full card
// number: a run of 13 to 19 decimal digits that passes the Luhn check.
// Digits are those of any script ("４" counts as 4). A run is either
//
//   - one unbroken group of digits, bounded by non-digits (so a 20-digit
//     number is not searched for a card number inside it), or
//   - consecutive groups joined by a single space or hyphen and grouped the
//     way card numbers are printed: groups of four with a last group of one
//     to four ("4111 1111 1111 1111", "4111-1111-1111-1111-123"), or
//     4-6-4 / 4-6-5 ("3782 822463 10005").
//
// Other groupings (phone numbers, dates, UUIDs) are not read as card
// numbers. Runs of fewer than 13 digits, such as a 12-digit rrn, never are.
func ContainsCardNumber(s string) bool {
	if !enoughDigits(s) {
		return false
	}
	var (
		buf    [64]byte
		digits = buf[:0] // digit values of the current run
		lens   []int     // lengths of its groups
		cur    int       // length of the group being read
	)
	flush := func() bool {
		if cur > 0 {
			lens = append(lens, cur)
		}
		found := cardInRun(digits, lens)
		digits, lens, cur = digits[:0], lens[:0], 0
		return found
	}
	prevDigit := false
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		if v, ok := digitValue(r); ok {
			digits = append(digits, v)
			cur++
			prevDigit = true
			i += size
			continue
		}
		// A single space or hyphen between two digits joins two groups.
		if (r == ' ' || r == '-') && prevDigit && i+1 < len(s) {
			if nr, _ := utf8.DecodeRuneInString(s[i+1:]); isDigit(nr) {
				lens = append(lens, cur)
				cur = 0
				prevDigit = false
				i += size
				continue
			}
		}
		if len(digits) > 0 && flush() {
			return true
		}
		prevDigit = false
		i += size
	}
	return len(digits) > 0 && flush()
}

// enoughDigits is a quick filter: fewer than 13 ASCII digits and no other
// byte of a non-ASCII digit means there cannot be a card number.
func enoughDigits(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			n++
		} else if c >= utf8.RuneSelf {
			return true // possibly digits of another script: look closely
		}
	}
	return n >= 13
}

// cardInRun looks for a card number in one run of digit groups.
func cardInRun(digits []byte, lens []int) bool {
	if len(digits) < 13 {
		return false
	}
	start := 0 // offset of group i in digits
	for i, l := range lens {
		// One unbroken group.
		if l >= 13 && l <= 19 && luhn(digits[start:start+l]) {
			return true
		}
		// Groups of four, the last of one to four digits.
		if l == 4 {
			total := 0
			for j := i; j < len(lens) && total < 19; j++ {
				lj := lens[j]
				if lj > 4 {
					break
				}
				total += lj
				if j > i && total >= 13 && total <= 19 && luhn(digits[start:start+total]) {
					return true
				}
				if lj != 4 {
					break
				}
			}
		}
		// 4-6-4 and 4-6-5 (Diners, Amex).
		if l == 4 && i+2 < len(lens) && lens[i+1] == 6 && (lens[i+2] == 4 || lens[i+2] == 5) {
			if luhn(digits[start : start+10+lens[i+2]]) {
				return true
			}
		}
		start += l
	}
	return false
}

// luhn reports whether the digit values pass the Luhn (mod 10) check.
func luhn(digits []byte) bool {
	sum := 0
	double := false
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i])
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

func isDigit(r rune) bool { _, ok := digitValue(r); return ok }

// digitValue is the value of a decimal digit of any script. Unicode
// encodes every set of decimal digits as one contiguous block from 0 to 9
// (a stability guarantee), and the ranges of unicode.Nd are unions of whole
// blocks, so the value is the offset in its range modulo ten.
func digitValue(r rune) (byte, bool) {
	if r >= '0' && r <= '9' {
		return byte(r - '0'), true
	}
	if r < utf8.RuneSelf || !unicode.Is(unicode.Nd, r) {
		return 0, false
	}
	for _, rg := range unicode.Nd.R16 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return byte((r - rune(rg.Lo)) % 10), true
		}
	}
	for _, rg := range unicode.Nd.R32 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return byte((r - rune(rg.Lo)) % 10), true
		}
	}
	return 0, false
}

// ---- text encoding/json would alter ----

// checkRawText refuses a JSON document (one json.Valid accepted) holding a
// string that encoding/json would silently change while decoding it: bytes
// that are not UTF-8, or a \u escape of an unpaired surrogate, both of which
// become U+FFFD. The error names the field whose value (or key) holds it.
func checkRawText(data []byte) *Error {
	if utf8.Valid(data) && !maybeSurrogateEscape(data) {
		return nil // the common case, without walking the document
	}
	w := rawWalker{data: data}
	w.value(skipSpace(data, 0), "")
	if w.problem == "" {
		return nil
	}
	return Invalid(w.field, "%s", w.problem)
}

// maybeSurrogateEscape reports whether data may have a \u escape of a
// surrogate (\uD800–\uDFFF); false positives are sorted out by the walk.
func maybeSurrogateEscape(data []byte) bool {
	for {
		i := bytes.Index(data, []byte(`\u`))
		if i < 0 || i+3 > len(data)-1 {
			return false
		}
		if c, d := data[i+2], data[i+3]; (c == 'd' || c == 'D') && strings.IndexByte("89abcdefABCDEF", d) >= 0 {
			return true
		}
		data = data[i+2:]
	}
}

// rawWalker finds the first bad string of a valid JSON document and the
// dotted path of the field it belongs to.
type rawWalker struct {
	data    []byte
	field   string
	problem string
}

// value walks the value at data[i] and returns the index just past it.
func (w *rawWalker) value(i int, path string) int {
	switch w.data[i] {
	case '"':
		end := stringEnd(w.data, i)
		if p := stringProblem(w.data[i+1 : end-1]); p != "" {
			w.field, w.problem = path, p
		}
		return end
	case '{':
		i = skipSpace(w.data, i+1)
		for w.problem == "" && w.data[i] != '}' {
			kend := stringEnd(w.data, i)
			key := w.data[i+1 : kend-1]
			if p := stringProblem(key); p != "" {
				w.field, w.problem = path, p
				return kend
			}
			name := string(key)
			if bytes.IndexByte(key, '\\') >= 0 {
				_ = json.Unmarshal(w.data[i:kend], &name)
			}
			if path != "" {
				name = path + "." + name
			}
			i = skipSpace(w.data, kend) // at ':'
			i = skipSpace(w.data, i+1)  // at the value
			i = skipSpace(w.data, w.value(i, name))
			if w.data[i] == ',' {
				i = skipSpace(w.data, i+1)
			}
		}
		return i + 1
	case '[':
		i = skipSpace(w.data, i+1)
		for w.problem == "" && w.data[i] != ']' {
			i = skipSpace(w.data, w.value(i, path))
			if w.data[i] == ',' {
				i = skipSpace(w.data, i+1)
			}
		}
		return i + 1
	}
	return valueEnd(w.data, i)
}

// stringProblem checks the raw contents of a JSON string (between its
// quotes): "" when encoding/json would decode it unchanged.
func stringProblem(s []byte) string {
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\\' {
			if s[i+1] != 'u' {
				i += 2
				continue
			}
			u := hex4(s[i+2 : i+6])
			i += 6
			switch {
			case u >= 0xD800 && u < 0xDC00: // high: a low one must follow
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if l := hex4(s[i+2 : i+6]); l >= 0xDC00 && l < 0xE000 {
						i += 6
						continue
					}
				}
				return msgLoneSurrogate
			case u >= 0xDC00 && u < 0xE000:
				return msgLoneSurrogate
			}
			continue
		}
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			return msgNotUTF8
		}
		i += size
	}
	return ""
}

// hex4 is the value of four hex digits (valid JSON guarantees them).
func hex4(b []byte) rune {
	var v rune
	for _, c := range b {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			v |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			v |= rune(c-'A') + 10
		}
	}
	return v
}
