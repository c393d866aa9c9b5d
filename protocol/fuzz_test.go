package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

var posSeeds = []string{
	// Not JSON: whitespace JSON does not allow around a valid frame.
	"\v{\"action\":\"listTerminals\"}", "{\"action\":\"listTerminals\"}\u2028",
	"\u00a0{\"action\":\"listTerminals\"}", "{\"action\":\"listTerminals\"}\f",
	`{"action":"payment","terminalId":"TERM-001","amountMinor":1250,"currency":"usd","reference":"order-1"}`,
	`{"action":"payment","terminalId":"T1","amount":"12.50","currency":"USD","reference":"r","captureMode":"manual","timeoutSeconds":30,"requestId":"q1"}`,
	`{"action":"payment","terminalId":"T1","amount":12.5,"currency":"KWD","reference":"r"}`,
	`{"action":"payment","terminalId":"T1","amount":"1.5","currency":"JPY","reference":"r"}`,
	`{"action":"payment","terminalId":"T1","amount":"1","amountMinor":1,"currency":"USD","reference":"r"}`,
	`{"action":"payment","terminalId":"T1","amountMinor":"12","currency":"USD","reference":"r"}`,
	`{"action":"refund","transactionId":"txn_1","amount":"5.00","requestId":7}`,
	`{"action":"cancel","transactionId":"txn_1"}`,
	`{"action":"void","transactionId":"txn_1","reason":"x"}`,
	`{"action":"capture","transactionId":"txn_1","amountMinor":-1}`,
	`{"action":"signatureVerification","transactionId":"txn_1","accepted":true}`,
	`{"action":"getTransactionStatus","transactionId":"txn_1"}`,
	`{"action":"listTerminals"}`,
	`{"action":"ack","messageId":"1-0"}`,
	`{"action":"ack","messageId":"1733480000004-0","requestId":{"k":[1,"x"]}}`,
	`{"action":"ack","messageId":"4111111111111111-0"}`,
	`{"action":"getTransactionStatus","transactionId":"txn_4111111111111111abcdef12","requestId":4111111111111111}`,
	`{"action":"cancel","transactionId":"4111111111111111","requestId":"\u001b"}`,
	`{"action":"payment","terminalId":"conn_76569530031221f56a21a56e","amountMinor":100,"currency":"USD","reference":"r","requestId":"ok"}`,
	`{"action":"payment","terminalId":"TERM-4111111111111111","amountMinor":100,"currency":"USD","reference":"r"}`,
	`{"action":"nope"}`,
	`{"action":1}`,
	`{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o\u001b[2J","description":"4111 1111 1111 1111"}`,
	"{\"action\":\"payment\",\"terminalId\":\"T1\",\"amountMinor\":100,\"currency\":\"USD\",\"reference\":\"r\xff\"}",
	`{"action":"void","transactionId":"txn_1","reason":"\ud800"}`,
	`[{"action":"payment"}]`,
	`not json`,
	``,
}

var terminalSeeds = []string{
	"\u00a0{\"action\":\"commandReceived\",\"transactionId\":\"txn_1\"}",
	"{\"action\":\"commandReceived\",\"transactionId\":\"txn_1\"}\f",
	`{"action":"commandReceived","transactionId":"txn_1"}`,
	`{"action":"commandReceived","transactionId":"txn_76569530031221f56a21a56e","requestId":"r\u0085"}`,
	`{"action":"voidResult","transactionId":"4111111111111111","ok":true,"requestId":[378282246310005]}`,
	`{"action":"paymentProgress","transactionId":"txn_1","stage":"pin_entry"}`,
	`{"action":"signatureRequired","transactionId":"txn_1"}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","maskedPan":"424242******4242","entryMode":"emv_chip","receipts":{"customer":"c"}}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","maskedPan":"4242424242424242"}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"declined","maskedPan":"****4242","amountMinor":5}`,
	`{"action":"voidResult","transactionId":"txn_1","ok":false,"errorMessage":"no"}`,
	`{"action":"captureResult","transactionId":"txn_1","ok":true,"amountMinor":100}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","authCode":"\u001b[2J\u001b[31mPWNED","rrn":"4111111111111111"}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","receipts":{"customer":"A\r\nB\nC","merchant":"4111-1111-1111-1111"}}`,
	"{\"action\":\"paymentResult\",\"transactionId\":\"txn_1\",\"outcome\":\"error\",\"errorMessage\":\"\xc3\u0085\"}",
	`{"action":"startPayment"}`,
	`{"requestId":"x"}`,
	`null`,
	`{`,
}

func FuzzDecodePOS(f *testing.F) {
	for _, s := range posSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodePOS(data)
		checkDecoded(t, data, in, err, POSActions)
		if err == nil {
			if p, ok := in.Body.(*PaymentRequest); ok {
				if p.AmountMinor == nil || *p.AmountMinor <= 0 || *p.AmountMinor > maxMinor {
					t.Fatalf("payment amount not resolved: %v", p.AmountMinor)
				}
				if _, known := Exponent(p.Currency); !known {
					t.Fatalf("payment currency %q not normalised", p.Currency)
				}
				if p.Amount != nil {
					t.Fatalf("payment Amount %s left", p.Amount)
				}
				if p.CaptureMode != CaptureAuto && p.CaptureMode != CaptureManual {
					t.Fatalf("captureMode %q", p.CaptureMode)
				}
			}
		}
	})
}

func FuzzDecodeTerminal(f *testing.F) {
	for _, s := range terminalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeTerminal(data)
		checkDecoded(t, data, in, err, TerminalActions)
		if err == nil {
			if r, ok := in.Body.(*PaymentResult); ok && r.MaskedPAN != "" && !MaskedPANOK(r.MaskedPAN) {
				t.Fatalf("maskedPan %q accepted", r.MaskedPAN)
			}
		}
	})
}

// checkDecoded holds for both decoders: no panic (the fuzzer catches that),
// a valid Body on success, a coded *Error or ErrNotJSON on failure.
func checkDecoded(t *testing.T, data []byte, in Inbound, err error, actions []string) {
	t.Helper()
	if err == nil {
		if in.Body == nil {
			t.Fatal("no error and no Body")
		}
		checkAcceptedText(t, data, in.Body, in.RequestID)
		v, ok := in.Body.(Validator)
		if !ok {
			t.Fatalf("Body %T is not a Validator", in.Body)
		}
		if e := v.Validate(); e != nil {
			t.Fatalf("re-validating %T: %v", in.Body, e)
		}
		if !slices.Contains(actions, in.Action) {
			t.Fatalf("action %q accepted", in.Action)
		}
		if !json.Valid(data) {
			t.Fatal("invalid JSON accepted")
		}
		return
	}
	if in.Body != nil {
		t.Fatalf("Body %T set with error %v", in.Body, err)
	}
	if errors.Is(err, ErrNotJSON) {
		if json.Valid(data) {
			t.Fatalf("valid JSON %q reported as not JSON", data)
		}
		if in.RequestID != nil || in.Action != "" {
			t.Fatalf("not JSON, yet read request id %q and action %q", in.RequestID, in.Action)
		}
		return
	}
	if !json.Valid(data) {
		t.Fatalf("invalid JSON %q refused with %v, not ErrNotJSON", data, err)
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is neither ErrNotJSON nor *Error", err, err)
	}
	if pe.Code == "" {
		t.Fatalf("error without code: %+v", pe)
	}
	if pe.Code != CodeInvalidRequest && pe.Code != CodeUnknownAction {
		t.Fatalf("decode error code %q", pe.Code)
	}
	if pe.Message == "" {
		t.Fatalf("error without message: %+v", pe)
	}
	if pe.Field == "maskedPan" && pe.Message != msgNotUTF8 && strings.ContainsAny(pe.Message, "0123456789") {
		t.Fatalf("maskedPan error message has digits: %q", pe.Message)
	}
	if in.RequestID != nil && !json.Valid(in.RequestID) {
		t.Fatalf("RequestID %q is not JSON", in.RequestID)
	}
}

func FuzzParseAmount(f *testing.F) {
	seeds := []struct{ s, cur string }{
		{"12.50", "USD"}, {"12.500", "USD"}, {"12.345", "USD"}, {"1500", "JPY"}, {"1.5", "JPY"},
		{"0.001", "KWD"}, {"0.0001", "KWD"}, {"1.2345", "CLF"}, {"0", "USD"}, {"-1", "USD"},
		{"0012.50", "EUR"}, {"45035996273704.96", "USD"}, {"99999999999999999", "JPY"},
		{"1e3", "USD"}, {".5", "USD"}, {"5.", "USD"}, {"1", "XYZ"}, {"", "USD"},
	}
	for _, s := range seeds {
		f.Add(s.s, s.cur)
	}
	f.Fuzz(func(t *testing.T, s, cur string) {
		n, e := ParseAmount(s, cur, "amount")
		if e != nil {
			if n != 0 {
				t.Fatalf("ParseAmount(%q, %q) = %d with error %v", s, cur, n, e)
			}
			if e.Code != CodeInvalidRequest || (e.Field != "amount" && e.Field != "currency") || e.Message == "" {
				t.Fatalf("ParseAmount(%q, %q) error %+v", s, cur, e)
			}
			return
		}
		if n <= 0 || n > maxMinor {
			t.Fatalf("ParseAmount(%q, %q) = %d out of range", s, cur, n)
		}
		exp, ok := Exponent(cur)
		if !ok {
			t.Fatalf("ParseAmount accepted unknown currency %q", cur)
		}
		// Exact oracle: s × 10^exp, in rational arithmetic, is n.
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("ParseAmount(%q) accepted what big.Rat cannot read", s)
		}
		r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(exp)), nil)))
		if !r.IsInt() || r.Num().Int64() != n || !r.Num().IsInt64() {
			t.Fatalf("ParseAmount(%q, %s) = %d, exact value %s", s, cur, n, r.RatString())
		}
		formatted := FormatAmount(n, cur)
		back, e := ParseAmount(formatted, cur, "amount")
		if e != nil || back != n {
			t.Fatalf("round trip %q → %d → %q → %d, %v", s, n, formatted, back, e)
		}
		if FormatAmount(back, cur) != formatted {
			t.Fatalf("FormatAmount not canonical for %d", n)
		}
	})
}

// hubIDForms are the identifiers that may hold a card-number-like run, and
// only in the exact form of an id the hub issues (written out here apart
// from the code: "txn_"/"conn_" and 24 lower-case hex digits, a stream id
// with a time of at most 13 digits and a sequence of at most 12).
var hubIDForms = map[string]*regexp.Regexp{
	"transactionId": regexp.MustCompile(`^txn_[0-9a-f]{24}$`),
	"terminalId":    regexp.MustCompile(`^conn_[0-9a-f]{24}$`),
	"messageId":     regexp.MustCompile(`^[0-9]{1,13}-[0-9]{1,12}$`),
}

// checkAcceptedText is the text invariant of an accepted frame: it was
// valid UTF-8 with no unpaired surrogate escape (so decoding changed no
// text), every string of the body is clean text: no control character
// (receipts may have LF and CR LF), and no card number unless it is a
// hub id of the form hubIDForms gives; and the requestId to be echoed
// has no control character in any string or key of it (the card-number
// rule does not apply to a requestId).
func checkAcceptedText(t *testing.T, data []byte, body any, requestID json.RawMessage) {
	t.Helper()
	if !utf8.Valid(data) {
		t.Fatalf("frame %q with invalid UTF-8 accepted", data)
	}
	if e := checkRawText(data); e != nil {
		t.Fatalf("frame %q accepted though %v", data, e)
	}
	if len(requestID) > 0 {
		d := json.NewDecoder(bytes.NewReader(requestID))
		d.UseNumber()
		for {
			tok, err := d.Token()
			if err != nil {
				break
			}
			var s string
			switch v := tok.(type) {
			case string:
				s = v
			case json.Number:
				s = string(v)
			default:
				continue
			}
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }) {
				t.Fatalf("requestId %s with a control character accepted", requestID)
			}
		}
	}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem(), path)
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
				if path != "" {
					name = path + "." + name
				}
				walk(v.Field(i), name)
			}
		case reflect.String:
			s := v.String()
			multiline := strings.HasPrefix(path, "receipts.")
			if !utf8.ValidString(s) {
				t.Fatalf("%s = %q is not UTF-8", path, s)
			}
			for i, r := range s {
				if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
					if multiline && (r == '\n' || (r == '\r' && strings.HasPrefix(s[i:], "\r\n"))) {
						continue
					}
					t.Fatalf("%s = %q has control character %U", path, s, r)
				}
			}
			if form := hubIDForms[path]; (form == nil || !form.MatchString(s)) && ContainsCardNumber(s) {
				t.Fatalf("%s = %q holds a card number", path, s)
			}
		}
	}
	walk(reflect.ValueOf(body), "")
}

func FuzzCheckText(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J\x1b[31mPWNED", "a\x00b", "a\x7f", "a\u009b", "\xff", "a\r\nb", "a\rb", "a\nb",
		"4111111111111111", "4111 1111 1111 1111", "3782 822463 10005", "４１１１１１１１１１１１１１１１", "123456789012", "41111111111111111111"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, multiline bool) {
		e := CheckText("f", s, multiline)
		if e != nil {
			if e.Code != CodeInvalidRequest || e.Field != "f" || e.Message == "" || (s != "" && strings.Contains(e.Message, s)) {
				t.Fatalf("CheckText(%q) error %+v", s, e)
			}
			return
		}
		// Accepted text is UTF-8 without control characters (line breaks
		// only with multiline), and without a card number.
		if !utf8.ValidString(s) {
			t.Fatalf("CheckText accepted invalid UTF-8 %q", s)
		}
		for i, r := range s {
			if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
				if multiline && (r == '\n' || (r == '\r' && strings.HasPrefix(s[i:], "\r\n"))) {
					continue
				}
				t.Fatalf("CheckText accepted %q with %U (multiline %v)", s, r, multiline)
			}
		}
		if ContainsCardNumber(s) {
			t.Fatalf("CheckText accepted card number %q", s)
		}
	})
}

// FuzzContainsCardNumber checks ContainsCardNumber against two plain
// oracles over ASCII digits: every unbroken run of 13 to 19 digits that
// passes Luhn is found, and nothing is found where no run of digits (with
// single spaces or hyphens between them) reaches 13 digits.
func FuzzContainsCardNumber(f *testing.F) {
	for _, s := range []string{"4111111111111111", "x4111111111111111y", "4111 1111 1111 1111", "4111-1111-1111-111", "12345678901234567890",
		"3782 822463 10005", "0044 20 7946 0958", "4111111111111112", "1 2 3 4 5 6 7 8 9 0 1 2 3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := ContainsCardNumber(s)
		longest, cur := 0, 0
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c >= '0' && c <= '9':
				cur++
			case (c == ' ' || c == '-') && i > 0 && s[i-1] >= '0' && s[i-1] <= '9' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			default:
				cur = 0
			}
			longest = max(longest, cur)
		}
		ascii := !strings.ContainsFunc(s, func(r rune) bool { return r >= utf8.RuneSelf })
		if got && ascii && longest < 13 {
			t.Fatalf("ContainsCardNumber(%q) = true with at most %d digits in a run", s, longest)
		}
		for _, run := range strings.FieldsFunc(s, func(r rune) bool { _, d := digitValue(r); return !d }) {
			digits := []byte{}
			for _, r := range run {
				v, _ := digitValue(r)
				digits = append(digits, v)
			}
			if n := len(digits); n >= 13 && n <= 19 && luhn(digits) && !got {
				t.Fatalf("ContainsCardNumber(%q) = false but %q is a Luhn-valid run", s, run)
			}
		}
	})
}

// FuzzCheckRawText: a document checkRawText accepts decodes without any
// U+FFFD that was not in it; one it refuses has bad bytes or a surrogate
// escape.
func FuzzCheckRawText(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, "{\"a\":\"\xff\"}", `{"a":"\ud800"}`, `{"a":"\ud83d\ude00"}`, `{"a":["\\ud800",{"b":"\udc00"}]}`, "[\"\xc3\"]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		e := checkRawText(data)
		if e != nil {
			if utf8.Valid(data) && !maybeSurrogateEscape(data) {
				t.Fatalf("checkRawText(%q) = %v for clean text", data, e)
			}
			return
		}
		if !utf8.Valid(data) {
			t.Fatalf("checkRawText accepted invalid UTF-8 %q", data)
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return // too deep, say
		}
		out, _ := json.Marshal(v)
		if bytes.Contains(out, []byte("\ufffd")) && !bytes.Contains(data, []byte("\ufffd")) && !bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`)) {
			t.Fatalf("checkRawText accepted %q, which decodes with U+FFFD", data)
		}
	})
}
