package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
)

func TestCheckText(t *testing.T) {
	tests := []struct {
		name      string
		s         string
		multiline bool
		want      string // "" = accepted; else the message
	}{
		{"plain", "Approved - thank you", false, ""},
		{"empty", "", false, ""},
		{"non-ASCII letters", "Zürich café 東京 ٤٢", false, ""},
		{"emoji", "ok 👍", false, ""},
		{"U+FFFD sent as such", "a\uFFFDb", false, ""},
		{"bidi override is not a control character", "a\u202Eb", false, ""},
		{"escape sequence", "\x1b[2J\x1b[31mPWNED", false, msgControl},
		{"NUL", "a\x00b", false, msgControl},
		{"tab", "a\tb", false, msgControl},
		{"DEL", "a\x7fb", false, msgControl},
		{"C1 CSI", "a\u009b2Jb", false, msgControl},
		{"C1 NEL", "a\u0085b", true, msgControlMultline},
		{"invalid UTF-8", "ab\xff", false, msgNotUTF8},
		{"truncated UTF-8", "caf\xc3", true, msgNotUTF8},
		{"UTF-8 encoded surrogate", "a\xed\xa0\x80b", false, msgNotUTF8},
		{"newline in one-line text", "a\nb", false, msgControl},
		{"newline in a receipt", "TOTAL 12.50\nTHANK YOU\n", true, ""},
		{"CR LF in a receipt", "TOTAL 12.50\r\nTHANK YOU\r\n", true, ""},
		{"lone CR in a receipt", "TOTAL 12.50\rFAKE", true, msgControlMultline},
		{"CR at the end of a receipt", "TOTAL\r", true, msgControlMultline},
		{"escape in a receipt", "TOTAL\n\x1b[2J", true, msgControlMultline},
		{"full card number", "card 4111111111111111 declined", false, msgCardNumber},
		{"full card number in a receipt", "VISA\n4111 1111 1111 1111\n", true, msgCardNumber},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := CheckText("f.g", tt.s, tt.multiline)
			switch {
			case tt.want == "" && e != nil:
				t.Fatalf("CheckText(%q) = %v, want accepted", tt.s, e)
			case tt.want != "" && (e == nil || e.Code != CodeInvalidRequest || e.Field != "f.g" || e.Message != tt.want):
				t.Fatalf("CheckText(%q) = %v, want invalid_request f.g %q", tt.s, e, tt.want)
			}
		})
	}
}

func TestContainsCardNumber(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		// Luhn-valid runs of 13 to 19 digits.
		{"4111111111111111", true},
		{"4242424242424242", true},
		{"5555555555554444", true},
		{"378282246310005", true},  // 15 digits
		{"30569309025904", true},   // 14 digits
		{"4222222222222", true},    // 13 digits
		{"6011000990139424", true}, // Discover
		{"4111111111111111110", true},
		{"rrn 4111111111111111 end", true},
		{"ORDER4111111111111111", true}, // letters bound a run
		{"4111111111111111-1", true},    // an unbroken group is checked whatever follows
		{"0004111111111111111", true},   // 19 digits, leading zeros do not change Luhn
		// Printed groupings.
		{"4111 1111 1111 1111", true},
		{"4111-1111-1111-1111", true},
		{"card: 4111 1111 1111 1111.", true},
		{"12 4111 1111 1111 1111", true}, // the card is a span of the run
		{"4111 1111 1111 1111 12/27", true},
		{"3782 822463 10005", true}, // Amex 4-6-5
		{"3056 930902 5904", true},  // Diners 4-6-4
		{"4222 2222 2222 2", true},  // 4-4-4-1
		{"4111-1111 1111-1111", true},
		{"４１１１１１１１１１１１１１１１", true}, // full-width digits
		{"٤١١١١١١١١١١١١١١١", true}, // Arabic-Indic digits
		// Not card numbers.
		{"", false},
		{"4111111111111112", false},       // fails Luhn
		{"411111111111", false},           // 12 digits
		{"123456789012", false},           // a 12-digit rrn
		{"41111111111111111111", false},   // 20 digits, Luhn-valid as a whole or not: not inspected inside
		{"00000000000000000000", false},   // 20 zeros
		{"4111  1111  1111  1111", false}, // double spaces end a run
		{"4111 1111 1111 1112", false},
		{"4111.1111.1111.1111", false},                  // dots are not separators
		{"0044 20 7946 0958 11", false},                 // a phone-like grouping
		{"123e4567-e89b-12d3-a456-426614174000", false}, // UUID
		{"2024-05-01 12:30:45 TID 12345678 MID 0001", false},
		{"41111111 11111111", false}, // 8-8 is not a card grouping
		{"AUTH 123456 RRN 123456789012", false},
		{"4111\n1111\n1111\n1111", false}, // line breaks end a run
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			if got := ContainsCardNumber(tt.s); got != tt.want {
				t.Errorf("ContainsCardNumber(%q) = %v, want %v", tt.s, got, tt.want)
			}
		})
	}
}

func TestLuhn(t *testing.T) {
	for s, want := range map[string]bool{"79927398713": true, "79927398710": false, "0": true, "18": true, "4111111111111111": true} {
		d := make([]byte, len(s))
		for i := range s {
			d[i] = s[i] - '0'
		}
		if luhn(d) != want {
			t.Errorf("luhn(%s) = %v, want %v", s, !want, want)
		}
	}
}

func TestDigitValue(t *testing.T) {
	for r, want := range map[rune]byte{'0': 0, '7': 7, '４': 4, '٤': 4, '४': 4, '০': 0, '𝟗': 9, '𝟘': 0} {
		if v, ok := digitValue(r); !ok || v != want {
			t.Errorf("digitValue(%q) = %d, %v, want %d", r, v, ok, want)
		}
	}
	for _, r := range []rune{'a', ' ', '-', '²', '½', 'Ⅻ', '②'} {
		if _, ok := digitValue(r); ok {
			t.Errorf("digitValue(%q) is a digit", r)
		}
	}
	// The value rule relies on every range of unicode.Nd being whole
	// blocks of ten consecutive code points.
	for _, rg := range unicode.Nd.R16 {
		if rg.Stride != 1 || (rg.Hi-rg.Lo+1)%10 != 0 {
			t.Errorf("unicode.Nd range %+v is not whole blocks of ten", rg)
		}
	}
	for _, rg := range unicode.Nd.R32 {
		if rg.Stride != 1 || (rg.Hi-rg.Lo+1)%10 != 0 {
			t.Errorf("unicode.Nd range %+v is not whole blocks of ten", rg)
		}
	}
}

// textBad are frames refused by the text rules, with the field named.
var textBad = []struct {
	name   string
	decode func([]byte) (Inbound, error)
	frame  string
	field  string
	msg    string
}{
	// Control characters in what a terminal reports.
	{"authCode with escape sequences", DecodeTerminal, result(`"authCode":"\u001b[2J\u001b[31mPWNED"`), "authCode", msgControl},
	{"authCode with a raw DEL", DecodeTerminal, result("\"authCode\":\"A1\x7f\""), "authCode", msgControl},
	{"responseCode with C1 CSI", DecodeTerminal, result(`"responseCode":"0\u009b0"`), "responseCode", msgControl},
	{"rrn with a tab", DecodeTerminal, result(`"rrn":"12\t34"`), "rrn", msgControl},
	{"cardScheme with NUL", DecodeTerminal, result(`"cardScheme":"visa\u0000"`), "cardScheme", msgControl},
	{"errorCode with escape", DecodeTerminal, result(`"outcome":"error","errorCode":"x\u001b"`), "errorCode", msgControl},
	{"maskedPan with escape", DecodeTerminal, result(`"maskedPan":"424242\u001b[J4242"`), "maskedPan", msgControl},
	{"errorMessage with newline", DecodeTerminal, result(`"outcome":"error","errorMessage":"line\nFAKE"`), "errorMessage", msgControl},
	{"customer receipt with escape", DecodeTerminal, result(`"receipts":{"customer":"OK\n\u001b[2J"}`), "receipts.customer", msgControlMultline},
	{"merchant receipt with lone CR", DecodeTerminal, result(`"receipts":{"customer":"ok","merchant":"TOTAL 1.00\rTOTAL 0.00"}`), "receipts.merchant", msgControlMultline},
	{"voidResult errorMessage with escape", DecodeTerminal, `{"action":"voidResult","transactionId":"txn_1","ok":false,"errorMessage":"\u001b[31mno"}`, "errorMessage", msgControl},
	{"captureResult errorMessage with C1", DecodeTerminal, `{"action":"captureResult","transactionId":"txn_1","ok":false,"errorMessage":"no\u0090"}`, "errorMessage", msgControl},
	{"transactionId with escape", DecodeTerminal, `{"action":"commandReceived","transactionId":"txn_1\u001b"}`, "transactionId", msgControl},
	// Text encoding/json would have changed.
	{"authCode not UTF-8", DecodeTerminal, result("\"authCode\":\"A\xff1\""), "authCode", msgNotUTF8},
	{"receipt not UTF-8", DecodeTerminal, result("\"receipts\":{\"merchant\":\"caf\xe9\"}"), "receipts.merchant", msgNotUTF8},
	{"errorMessage lone surrogate", DecodeTerminal, result(`"errorMessage":"x\ud800y"`), "errorMessage", msgLoneSurrogate},
	{"unknown field not UTF-8", DecodeTerminal, result("\"vendor\":{\"note\":\"\xff\"}"), "vendor.note", msgNotUTF8},
	// Full card numbers.
	{"PAN in rrn", DecodeTerminal, result(`"rrn":"4111111111111111"`), "rrn", msgCardNumber},
	{"PAN in authCode", DecodeTerminal, result(`"authCode":"4242424242424242"`), "authCode", msgCardNumber},
	{"PAN in customer receipt", DecodeTerminal, result(`"receipts":{"customer":"VISA\n4111 1111 1111 1111\nAPPROVED"}`), "receipts.customer", msgCardNumber},
	{"PAN in merchant receipt", DecodeTerminal, result(`"receipts":{"customer":"ok","merchant":"PAN 5555555555554444"}`), "receipts.merchant", msgCardNumber},
	{"PAN in errorMessage", DecodeTerminal, result(`"outcome":"declined","errorMessage":"card 378282246310005 declined"`), "errorMessage", msgCardNumber},
	{"PAN in errorCode", DecodeTerminal, result(`"outcome":"error","errorCode":"4111-1111-1111-1111"`), "errorCode", msgCardNumber},
	{"PAN in voidResult errorMessage", DecodeTerminal, `{"action":"voidResult","transactionId":"txn_1","ok":false,"errorMessage":"4111111111111111"}`, "errorMessage", msgCardNumber},
	// What a POS sends.
	{"reference not UTF-8", DecodePOS, "{\"action\":\"payment\",\"terminalId\":\"T1\",\"amountMinor\":100,\"currency\":\"USD\",\"reference\":\"ord\xc3\x28\"}", "reference", msgNotUTF8},
	{"reference with escape", DecodePOS, pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o\u001b[2J"`), "reference", msgControl},
	{"reference a PAN", DecodePOS, pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"4111111111111111"`), "reference", msgCardNumber},
	{"description with PAN", DecodePOS, payOK(`"amountMinor":100,"description":"card 4242 4242 4242 4242"`), "description", msgCardNumber},
	{"description with newline", DecodePOS, payOK(`"amountMinor":100,"description":"a\nb"`), "description", msgControl},
	{"description lone low surrogate", DecodePOS, payOK(`"amountMinor":100,"description":"\udc00"`), "description", msgLoneSurrogate},
	{"idempotencyKey a PAN", DecodePOS, payOK(`"amountMinor":100,"idempotencyKey":"4111111111111111"`), "idempotencyKey", msgCardNumber},
	{"terminalId with escape", DecodePOS, pay(`"terminalId":"T\u001b1","amountMinor":100,"currency":"USD","reference":"r"`), "terminalId", msgControl},
	{"refund reason with escape", DecodePOS, `{"action":"refund","transactionId":"txn_1","reason":"\u009b31m"}`, "reason", msgControl},
	{"refund reference a PAN", DecodePOS, `{"action":"refund","transactionId":"txn_1","reference":"5555 5555 5555 4444"}`, "reference", msgCardNumber},
	{"void reason a PAN", DecodePOS, `{"action":"void","transactionId":"txn_1","reason":"4111111111111111"}`, "reason", msgCardNumber},
	{"cancel idempotencyKey not UTF-8", DecodePOS, "{\"action\":\"cancel\",\"transactionId\":\"txn_1\",\"idempotencyKey\":\"k\xff\"}", "idempotencyKey", msgNotUTF8},
	{"unknown action with escape", DecodePOS, `{"action":"pay\u001b[2J"}`, "action", msgControl},
	{"unknown action a PAN", DecodePOS, `{"action":"4111111111111111"}`, "action", msgCardNumber},
	{"key not UTF-8", DecodePOS, "{\"action\":\"listTerminals\",\"\xff\":1}", "", msgNotUTF8},
	// requestId: echoed in the reply, so held to rule 2 as well.
	{"requestId with escape", DecodePOS, `{"action":"listTerminals","requestId":"\u001b[2J"}`, "requestId", msgControl},
	{"requestId with a raw C1", DecodePOS, "{\"action\":\"listTerminals\",\"requestId\":\"r\u0085\"}", "requestId", msgControl},
	{"requestId with newline", DecodeTerminal, `{"action":"commandReceived","transactionId":"txn_1","requestId":"a\nb"}`, "requestId", msgControl},
	{"requestId key with escape", DecodePOS, `{"action":"listTerminals","requestId":{"\u001b":1}}`, "requestId", msgControl},
	{"requestId checked before the action", DecodePOS, `{"action":"nope","requestId":"\u0007"}`, "requestId", msgControl},
	// Identifiers the hub issued: a card number is let through only in the
	// exact form of a hub id (see TestTextAccepted).
	{"terminalId a PAN", DecodePOS, pay(`"terminalId":"4111111111111111","amountMinor":100,"currency":"USD","reference":"r"`), "terminalId", msgCardNumber},
	{"terminalId with a PAN", DecodePOS, pay(`"terminalId":"TERM-4111111111111111","amountMinor":100,"currency":"USD","reference":"r"`), "terminalId", msgCardNumber},
	{"terminalId a conn id with a PAN and an extra digit", DecodePOS, pay(`"terminalId":"conn_4111111111111111abcdef120","amountMinor":100,"currency":"USD","reference":"r"`), "terminalId", msgCardNumber},
	{"transactionId a PAN", DecodeTerminal, `{"action":"voidResult","transactionId":"4111111111111111","ok":true}`, "transactionId", msgCardNumber},
	{"transactionId txn_ and a PAN", DecodePOS, `{"action":"getTransactionStatus","transactionId":"txn_4111111111111111"}`, "transactionId", msgCardNumber},
	{"transactionId upper-case hex", DecodePOS, `{"action":"cancel","transactionId":"txn_4111111111111111ABCDEF12"}`, "transactionId", msgCardNumber},
	{"transactionId a grouped PAN", DecodeTerminal, `{"action":"paymentResult","transactionId":"4242 4242 4242 4242","outcome":"approved"}`, "transactionId", msgCardNumber},
	{"messageId a PAN", DecodePOS, `{"action":"ack","messageId":"4111111111111111"}`, "messageId", msgCardNumber},
	{"messageId a PAN as stream time", DecodePOS, `{"action":"ack","messageId":"4111111111111111-0"}`, "messageId", msgCardNumber},
	{"messageId a PAN as stream sequence", DecodePOS, `{"action":"ack","messageId":"1-5555555555554444"}`, "messageId", msgCardNumber},
}

func TestTextRulesInDecoders(t *testing.T) {
	for _, tt := range textBad {
		t.Run(tt.name, func(t *testing.T) {
			in, err := tt.decode([]byte(tt.frame))
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != CodeInvalidRequest || pe.Field != tt.field || pe.Message != tt.msg {
				t.Fatalf("decode(%q) = %v, want invalid_request %q %q", tt.frame, err, tt.field, tt.msg)
			}
			if in.Body != nil {
				t.Errorf("Body %+v kept", in.Body)
			}
			if tt.field == "requestId" && in.RequestID != nil {
				t.Errorf("refused requestId %s kept to be echoed", in.RequestID)
			}
			if tt.msg == msgCardNumber {
				for _, pan := range []string{"4111111111111111", "4242424242424242", "5555555555554444", "378282246310005"} {
					if strings.Contains(strings.NewReplacer(" ", "", "-", "").Replace(tt.frame), pan) {
						assertPANNotEchoed(t, pan, in, pe)
					}
				}
			}
		})
	}
}

func TestTextAccepted(t *testing.T) {
	frames := []struct {
		decode func([]byte) (Inbound, error)
		frame  string
	}{
		{DecodeTerminal, result(`"authCode":"A1B2C3","responseCode":"00","rrn":"123456789012","cardScheme":"visa","maskedPan":"411111******1111",` +
			`"receipts":{"customer":"TERMHUB\nVISA 411111******1111\r\nAUTH 123456 RRN 123456789012\nTOTAL 12.50 €\n","merchant":"Zürich\nMERCHANT COPY"}`)},
		{DecodeTerminal, result(`"outcome":"declined","errorMessage":"Karte abgelehnt – 4111111111111112 ungültig"`)}, // not Luhn-valid
		{DecodeTerminal, result(`"rrn":"411111111111"`)},                                                              // 12 digits
		{DecodePOS, `{"action":"ack","messageId":"1712345678901-0"}`},
		// Hub ids in which a run of digits passes the Luhn check by chance
		// (1 transaction or connection id in about 900, 1 stream time in
		// 10): they are only compared with stored ids, never refused.
		{DecodeTerminal, `{"action":"voidResult","transactionId":"txn_76569530031221f56a21a56e","ok":true}`},
		{DecodePOS, `{"action":"getTransactionStatus","transactionId":"txn_4111111111111111abcdef12"}`},
		{DecodePOS, `{"action":"ack","messageId":"1733480000004-0"}`},
		{DecodePOS, `{"action":"ack","messageId":"1733480000012-17"}`},
		{DecodePOS, pay(`"terminalId":"conn_76569530031221f56a21a56e","amountMinor":100,"currency":"USD","reference":"r"`)},
		{DecodePOS, `{"action":"listTerminals","requestId":"r-1712345678901"}`}, // not Luhn-valid
		// A requestId is never stored or logged: rule 3 does not apply.
		// Millisecond clocks and hub ids pass Luhn one time in ten.
		{DecodePOS, `{"action":"ack","messageId":"1796547248353-0","requestId":"ack:1796547248353-0"}`},
		{DecodePOS, `{"action":"listTerminals","requestId":1796547248353}`},
		{DecodePOS, `{"action":"listTerminals","requestId":{"sent":1796547248353,"s":"\u0031796547248353"}}`},
		{DecodePOS, `{"action":"listTerminals","requestId":123456789012}`},                         // 12 digits
		{DecodePOS, `{"action":"listTerminals","requestId":{"n":[1,2.5,-3e2,null,true],"s":"é"}}`}, // any JSON value
		{DecodePOS, `{"action":"listTerminals","requestId":"caf\u00e9 \ud83d\ude00"}`},
		{DecodePOS, payOK(`"amountMinor":100,"description":"Zimmer 12 – 2 Nächte 👍","idempotencyKey":"123e4567-e89b-12d3-a456-426614174000"`)},
		{DecodePOS, pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"order-41111111111111111111"`)}, // 20 digits
		{DecodePOS, pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"2024-05-01 12:30 #1234"`)},
		{DecodePOS, payOK(`"amountMinor":100,"description":"smile \ud83d\ude00"`)}, // a surrogate pair is fine
		{DecodePOS, payOK(`"amountMinor":100,"description":"backslash-u text \\ud800"`)},
	}
	for _, f := range frames {
		if _, err := f.decode([]byte(f.frame)); err != nil {
			t.Errorf("decode(%s) = %v, want accepted", f.frame, err)
		}
	}
}

func TestTextRulesRequestIDNotEchoedWhenBad(t *testing.T) {
	in, err := DecodePOS([]byte("{\"action\":\"listTerminals\",\"requestId\":\"r\xff\"}"))
	var pe *Error
	if !errors.As(err, &pe) || pe.Field != "requestId" || pe.Message != msgNotUTF8 {
		t.Fatalf("error %v, want requestId not UTF-8", err)
	}
	if in.RequestID != nil {
		t.Errorf("RequestID %q kept: the reply would not be UTF-8", in.RequestID)
	}
	// A good requestId is echoed even when another field is bad.
	in, err = DecodePOS([]byte("{\"requestId\":\"r1\",\"action\":\"cancel\",\"transactionId\":\"txn_\xff\"}"))
	if !errors.As(err, &pe) || pe.Field != "transactionId" || string(in.RequestID) != `"r1"` {
		t.Fatalf("error %v, requestId %s", err, in.RequestID)
	}
}

func TestDecodeBodyTextRules(t *testing.T) {
	for _, tt := range []struct {
		body, field, msg string
	}{
		{"{\"terminalId\":\"T1\",\"amountMinor\":100,\"currency\":\"USD\",\"reference\":\"ord\xff\"}", "reference", msgNotUTF8},
		{`{"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o\u001b[2J"}`, "reference", msgControl},
		{`{"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"r","description":"4111 1111 1111 1111"}`, "description", msgCardNumber},
	} {
		var p PaymentRequest
		e := DecodeBody([]byte(tt.body), &p)
		if e == nil || e.Code != CodeInvalidRequest || e.Field != tt.field || e.Message != tt.msg {
			t.Errorf("DecodeBody(%q) = %v, want %s %q", tt.body, e, tt.field, tt.msg)
		}
	}
}

func TestCheckRawText(t *testing.T) {
	for _, tt := range []struct {
		doc, field, msg string
	}{
		{`{"a":"plain","b":[1,"x",{"c":null}]}`, "", ""},
		{"{\"a\":{\"b\":[\"ok\",\"\xff\"]}}", "a.b", msgNotUTF8},
		{`{"a":"\ud800\udc00"}`, "", ""},
		{`{"a":"\uD83D\uDE00"}`, "", ""},
		{`{"a":"\ud800"}`, "a", msgLoneSurrogate},
		{`{"a":"\ud800\u0041"}`, "a", msgLoneSurrogate},
		{`{"a":"\udc00\ud800"}`, "a", msgLoneSurrogate},
		{`{"a":"\\ud800"}`, "", ""}, // an escaped backslash, then text
		{`{"a\u0062":"\ud800"}`, "ab", msgLoneSurrogate},
		{`{"x":"\ud800"}`, "x", msgLoneSurrogate},
		{"{\"k\xff\":1}", "", msgNotUTF8},
		{"{\"o\":{\"k\xff\":1}}", "o", msgNotUTF8},
	} {
		e := checkRawText([]byte(tt.doc))
		switch {
		case tt.msg == "" && e != nil:
			t.Errorf("checkRawText(%q) = %v, want nil", tt.doc, e)
		case tt.msg != "" && (e == nil || e.Field != tt.field || e.Message != tt.msg):
			t.Errorf("checkRawText(%q) = %v, want %q %q", tt.doc, e, tt.field, tt.msg)
		}
		if tt.msg == "" {
			var v any
			if err := json.Unmarshal([]byte(tt.doc), &v); err != nil {
				t.Fatal(err)
			}
			if b, _ := json.Marshal(v); strings.Contains(string(b), "\ufffd") {
				t.Errorf("%q accepted but decodes with U+FFFD", tt.doc)
			}
		}
	}
}

func TestForLog(t *testing.T) {
	for in, want := range map[string]string{
		"pk_live_1":                         "pk_live_1",
		"/v1/transactions/txn_1":            "/v1/transactions/txn_1",
		"/v1/transactions/4111111111111111": "[removed: holds a card number]",
		"4242 4242 4242 4242":               "[removed: holds a card number]",
		"":                                  "",
	} {
		if got := ForLog(in); got != want {
			t.Errorf("ForLog(%q) = %q, want %q", in, got, want)
		}
	}
}
