package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// badCase is a frame that must be refused with exactly Code and Field.
type badCase struct {
	name  string
	frame string
	code  Code
	field string
}

// pay builds a payment frame from the given fields (raw JSON, without braces).
func pay(fields string) string { return `{"action":"payment",` + fields + `}` }

// payOK is the valid base of a payment; extra fields are appended.
func payOK(extra string) string {
	s := `"terminalId":"TERM-001","currency":"USD","reference":"order-1"`
	if extra != "" {
		s += "," + extra
	}
	return pay(s)
}

// result builds a paymentResult frame with the given extra fields.
func result(extra string) string {
	s := `{"action":"paymentResult","transactionId":"txn_1","outcome":"approved"`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

var long129 = strings.Repeat("x", 129)
var long501 = strings.Repeat("y", 501)

var posBad = []badCase{
	// payment: terminalId
	{"payment missing terminalId", pay(`"amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	{"payment empty terminalId", pay(`"terminalId":"","amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	{"payment null terminalId", pay(`"terminalId":null,"amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	{"payment terminalId too long", pay(`"terminalId":"` + long129 + `","amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	{"payment terminalId with newline", pay(`"terminalId":"T\n1","amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	{"payment terminalId with NUL", pay(`"terminalId":"T\u00001","amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	{"payment terminalId a number", pay(`"terminalId":1,"amountMinor":100,"currency":"USD","reference":"r"`), CodeInvalidRequest, "terminalId"},
	// payment: currency
	{"payment missing currency", pay(`"terminalId":"T1","amountMinor":100,"reference":"r"`), CodeInvalidRequest, "currency"},
	{"payment unknown currency", pay(`"terminalId":"T1","amount":"1.00","currency":"XYZ","reference":"r"`), CodeInvalidRequest, "currency"},
	{"payment currency symbol", pay(`"terminalId":"T1","amountMinor":100,"currency":"$","reference":"r"`), CodeInvalidRequest, "currency"},
	{"payment currency with spaces", pay(`"terminalId":"T1","amountMinor":100,"currency":" USD","reference":"r"`), CodeInvalidRequest, "currency"},
	{"payment currency a number", pay(`"terminalId":"T1","amountMinor":100,"currency":840,"reference":"r"`), CodeInvalidRequest, "currency"},
	// payment: amount / amountMinor
	{"payment no amount", payOK(``), CodeInvalidRequest, "amountMinor"},
	{"payment null amounts", payOK(`"amount":null,"amountMinor":null`), CodeInvalidRequest, "amountMinor"},
	{"payment amount and amountMinor", payOK(`"amount":"12.50","amountMinor":1250`), CodeInvalidRequest, "amount"},
	{"payment amountMinor zero", payOK(`"amountMinor":0`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor negative", payOK(`"amountMinor":-100`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor too large", payOK(`"amountMinor":9007199254740993`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor overflows int64", payOK(`"amountMinor":100000000000000000000`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor as string", payOK(`"amountMinor":"12"`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor fractional", payOK(`"amountMinor":12.5`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor exponent", payOK(`"amountMinor":1e3`), CodeInvalidRequest, "amountMinor"},
	{"payment amountMinor bool", payOK(`"amountMinor":true`), CodeInvalidRequest, "amountMinor"},
	{"payment amount too many decimals USD", payOK(`"amount":"12.345"`), CodeInvalidRequest, "amount"},
	{"payment amount decimals JPY", pay(`"terminalId":"T1","amount":"1.5","currency":"JPY","reference":"r"`), CodeInvalidRequest, "amount"},
	{"payment amount 0.0001 KWD", pay(`"terminalId":"T1","amount":"0.0001","currency":"KWD","reference":"r"`), CodeInvalidRequest, "amount"},
	{"payment amount zero", payOK(`"amount":"0"`), CodeInvalidRequest, "amount"},
	{"payment amount 0.00", payOK(`"amount":"0.00"`), CodeInvalidRequest, "amount"},
	{"payment amount negative string", payOK(`"amount":"-1.00"`), CodeInvalidRequest, "amount"},
	{"payment amount negative number", payOK(`"amount":-1`), CodeInvalidRequest, "amount"},
	{"payment amount number too many decimals", payOK(`"amount":12.345`), CodeInvalidRequest, "amount"},
	{"payment amount number exponent", payOK(`"amount":1e3`), CodeInvalidRequest, "amount"},
	{"payment amount number upper exponent", payOK(`"amount":1.5E2`), CodeInvalidRequest, "amount"},
	{"payment amount words", payOK(`"amount":"twelve"`), CodeInvalidRequest, "amount"},
	{"payment amount empty", payOK(`"amount":""`), CodeInvalidRequest, "amount"},
	{"payment amount bool", payOK(`"amount":true`), CodeInvalidRequest, "amount"},
	{"payment amount object", payOK(`"amount":{"value":"1.00"}`), CodeInvalidRequest, "amount"},
	{"payment amount array", payOK(`"amount":["1.00"]`), CodeInvalidRequest, "amount"},
	{"payment amount comma", payOK(`"amount":"12,50"`), CodeInvalidRequest, "amount"},
	{"payment amount leading dot", payOK(`"amount":".50"`), CodeInvalidRequest, "amount"},
	{"payment amount spaces", payOK(`"amount":" 12.50"`), CodeInvalidRequest, "amount"},
	{"payment amount too large", payOK(`"amount":"99999999999999999"`), CodeInvalidRequest, "amount"},
	{"payment amount with symbol", payOK(`"amount":"$12.50"`), CodeInvalidRequest, "amount"},
	{"payment amount escaped string", payOK(`"amount":"1\u0032.50x"`), CodeInvalidRequest, "amount"},
	// payment: reference and the rest
	{"payment missing reference", pay(`"terminalId":"T1","amountMinor":100,"currency":"USD"`), CodeInvalidRequest, "reference"},
	{"payment reference too long", pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"` + long129 + `"`), CodeInvalidRequest, "reference"},
	{"payment reference a number", pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":12345`), CodeInvalidRequest, "reference"},
	{"payment captureMode later", payOK(`"amountMinor":100,"captureMode":"later"`), CodeInvalidRequest, "captureMode"},
	{"payment captureMode upper case", payOK(`"amountMinor":100,"captureMode":"MANUAL"`), CodeInvalidRequest, "captureMode"},
	{"payment captureMode bool", payOK(`"amountMinor":100,"captureMode":true`), CodeInvalidRequest, "captureMode"},
	{"payment timeoutSeconds 5", payOK(`"amountMinor":100,"timeoutSeconds":5`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment timeoutSeconds 9", payOK(`"amountMinor":100,"timeoutSeconds":9`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment timeoutSeconds 601", payOK(`"amountMinor":100,"timeoutSeconds":601`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment timeoutSeconds 0", payOK(`"amountMinor":100,"timeoutSeconds":0`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment timeoutSeconds negative", payOK(`"amountMinor":100,"timeoutSeconds":-30`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment timeoutSeconds string", payOK(`"amountMinor":100,"timeoutSeconds":"30"`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment timeoutSeconds fractional", payOK(`"amountMinor":100,"timeoutSeconds":30.5`), CodeInvalidRequest, "timeoutSeconds"},
	{"payment description too long", payOK(`"amountMinor":100,"description":"` + long501 + `"`), CodeInvalidRequest, "description"},
	{"payment printReceipt string", payOK(`"amountMinor":100,"printReceipt":"yes"`), CodeInvalidRequest, "printReceipt"},
	{"payment printReceipt number", payOK(`"amountMinor":100,"printReceipt":1`), CodeInvalidRequest, "printReceipt"},
	{"payment idempotencyKey too long", payOK(`"amountMinor":100,"idempotencyKey":"` + long129 + `"`), CodeInvalidRequest, "idempotencyKey"},
	{"payment idempotencyKey with CR", payOK(`"amountMinor":100,"idempotencyKey":"k\r1"`), CodeInvalidRequest, "idempotencyKey"},
	// payment: text rules (control characters, UTF-8, card numbers)
	{"payment reference not UTF-8", pay("\"terminalId\":\"T1\",\"amountMinor\":100,\"currency\":\"USD\",\"reference\":\"r\xff\""), CodeInvalidRequest, "reference"},
	{"payment reference with escape sequence", pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"r\u001b[2J"`), CodeInvalidRequest, "reference"},
	{"payment reference a card number", pay(`"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"4111111111111111"`), CodeInvalidRequest, "reference"},
	{"payment description with DEL", payOK(`"amountMinor":100,"description":"a\u007fb"`), CodeInvalidRequest, "description"},
	{"payment description with C1", payOK(`"amountMinor":100,"description":"a\u009bb"`), CodeInvalidRequest, "description"},
	{"payment description with a card number", payOK(`"amountMinor":100,"description":"4242 4242 4242 4242"`), CodeInvalidRequest, "description"},
	{"payment description lone surrogate", payOK(`"amountMinor":100,"description":"\ud83d"`), CodeInvalidRequest, "description"},
	{"payment idempotencyKey a card number", payOK(`"amountMinor":100,"idempotencyKey":"5555555555554444"`), CodeInvalidRequest, "idempotencyKey"},
	{"payment unknown field not UTF-8", payOK("\"amountMinor\":100,\"note\":\"\xfe\""), CodeInvalidRequest, "note"},
	// cancel
	{"cancel missing transactionId", `{"action":"cancel"}`, CodeInvalidRequest, "transactionId"},
	{"cancel null transactionId", `{"action":"cancel","transactionId":null}`, CodeInvalidRequest, "transactionId"},
	{"cancel transactionId a number", `{"action":"cancel","transactionId":42}`, CodeInvalidRequest, "transactionId"},
	{"cancel transactionId an object", `{"action":"cancel","transactionId":{"id":"txn_1"}}`, CodeInvalidRequest, "transactionId"},
	{"cancel bad idempotencyKey", `{"action":"cancel","transactionId":"txn_1","idempotencyKey":"a\nb"}`, CodeInvalidRequest, "idempotencyKey"},
	// refund
	{"refund missing transactionId", `{"action":"refund","amountMinor":100}`, CodeInvalidRequest, "transactionId"},
	{"refund amount and amountMinor", `{"action":"refund","transactionId":"txn_1","amount":"1.00","amountMinor":100}`, CodeInvalidRequest, "amount"},
	{"refund amountMinor zero", `{"action":"refund","transactionId":"txn_1","amountMinor":0}`, CodeInvalidRequest, "amountMinor"},
	{"refund amountMinor negative", `{"action":"refund","transactionId":"txn_1","amountMinor":-1}`, CodeInvalidRequest, "amountMinor"},
	{"refund amountMinor string", `{"action":"refund","transactionId":"txn_1","amountMinor":"100"}`, CodeInvalidRequest, "amountMinor"},
	{"refund reference too long", `{"action":"refund","transactionId":"txn_1","reference":"` + long129 + `"}`, CodeInvalidRequest, "reference"},
	{"refund reason too long", `{"action":"refund","transactionId":"txn_1","reason":"` + long501 + `"}`, CodeInvalidRequest, "reason"},
	// void
	{"void missing transactionId", `{"action":"void","reason":"oops"}`, CodeInvalidRequest, "transactionId"},
	{"void reason too long", `{"action":"void","transactionId":"txn_1","reason":"` + long501 + `"}`, CodeInvalidRequest, "reason"},
	{"void reason a number", `{"action":"void","transactionId":"txn_1","reason":5}`, CodeInvalidRequest, "reason"},
	{"void reason with escape", `{"action":"void","transactionId":"txn_1","reason":"\u001b[31m"}`, CodeInvalidRequest, "reason"},
	{"refund reason a card number", `{"action":"refund","transactionId":"txn_1","reason":"card 4111111111111111"}`, CodeInvalidRequest, "reason"},
	{"refund reference not UTF-8", "{\"action\":\"refund\",\"transactionId\":\"txn_1\",\"reference\":\"\xc3\"}", CodeInvalidRequest, "reference"},
	{"unknown action with escape", `{"action":"x\u001b[2J"}`, CodeInvalidRequest, "action"},
	// capture
	{"capture missing transactionId", `{"action":"capture","amountMinor":100}`, CodeInvalidRequest, "transactionId"},
	{"capture amountMinor negative", `{"action":"capture","transactionId":"txn_1","amountMinor":-5}`, CodeInvalidRequest, "amountMinor"},
	{"capture amountMinor zero", `{"action":"capture","transactionId":"txn_1","amountMinor":0}`, CodeInvalidRequest, "amountMinor"},
	// signatureVerification
	{"signatureVerification accepted missing", `{"action":"signatureVerification","transactionId":"txn_1"}`, CodeInvalidRequest, "accepted"},
	{"signatureVerification accepted null", `{"action":"signatureVerification","transactionId":"txn_1","accepted":null}`, CodeInvalidRequest, "accepted"},
	{"signatureVerification accepted string", `{"action":"signatureVerification","transactionId":"txn_1","accepted":"true"}`, CodeInvalidRequest, "accepted"},
	{"signatureVerification accepted number", `{"action":"signatureVerification","transactionId":"txn_1","accepted":1}`, CodeInvalidRequest, "accepted"},
	{"signatureVerification missing transactionId", `{"action":"signatureVerification","accepted":true}`, CodeInvalidRequest, "transactionId"},
	// getTransactionStatus, ack
	{"getTransactionStatus missing transactionId", `{"action":"getTransactionStatus"}`, CodeInvalidRequest, "transactionId"},
	{"getTransactionStatus transactionId too long", `{"action":"getTransactionStatus","transactionId":"` + long129 + `"}`, CodeInvalidRequest, "transactionId"},
	{"ack missing messageId", `{"action":"ack"}`, CodeInvalidRequest, "messageId"},
	{"ack messageId a number", `{"action":"ack","messageId":1700000000000}`, CodeInvalidRequest, "messageId"},
	// action
	{"unknown action", `{"action":"refundd","transactionId":"txn_1"}`, CodeUnknownAction, "action"},
	{"action wrong case", `{"action":"Payment"}`, CodeUnknownAction, "action"},
	{"empty action", `{"action":""}`, CodeUnknownAction, "action"},
	{"terminal action on POS", `{"action":"paymentResult","transactionId":"txn_1","outcome":"approved"}`, CodeUnknownAction, "action"},
	{"hub action on POS", `{"action":"paymentResponse"}`, CodeUnknownAction, "action"},
	{"action missing", `{"transactionId":"txn_1"}`, CodeInvalidRequest, "action"},
	{"action null", `{"action":null}`, CodeInvalidRequest, "action"},
	{"action a number", `{"action":1}`, CodeInvalidRequest, "action"},
	{"action a bool", `{"action":true}`, CodeInvalidRequest, "action"},
	{"action an array", `{"action":["payment"]}`, CodeInvalidRequest, "action"},
	{"action an object", `{"action":{"name":"payment"}}`, CodeInvalidRequest, "action"},
	// frames that are JSON but not objects
	{"array frame", `[{"action":"payment"}]`, CodeInvalidRequest, ""},
	{"empty array frame", `[]`, CodeInvalidRequest, ""},
	{"string frame", `"payment"`, CodeInvalidRequest, ""},
	{"number frame", `42`, CodeInvalidRequest, ""},
	{"null frame", `null`, CodeInvalidRequest, ""},
	{"bool frame", `true`, CodeInvalidRequest, ""},
	{"array frame with whitespace", " \n\t[1]", CodeInvalidRequest, ""},
}

var terminalBad = []badCase{
	{"commandReceived missing transactionId", `{"action":"commandReceived"}`, CodeInvalidRequest, "transactionId"},
	{"commandReceived transactionId a number", `{"action":"commandReceived","transactionId":7}`, CodeInvalidRequest, "transactionId"},
	{"paymentProgress missing stage", `{"action":"paymentProgress","transactionId":"txn_1"}`, CodeInvalidRequest, "stage"},
	{"paymentProgress unknown stage", `{"action":"paymentProgress","transactionId":"txn_1","stage":"swiping"}`, CodeInvalidRequest, "stage"},
	{"paymentProgress missing transactionId", `{"action":"paymentProgress","stage":"pin_entry"}`, CodeInvalidRequest, "transactionId"},
	{"signatureRequired missing transactionId", `{"action":"signatureRequired"}`, CodeInvalidRequest, "transactionId"},
	{"paymentResult missing transactionId", `{"action":"paymentResult","outcome":"approved"}`, CodeInvalidRequest, "transactionId"},
	{"paymentResult missing outcome", `{"action":"paymentResult","transactionId":"txn_1"}`, CodeInvalidRequest, "outcome"},
	{"paymentResult unknown outcome", `{"action":"paymentResult","transactionId":"txn_1","outcome":"approvedd"}`, CodeInvalidRequest, "outcome"},
	{"paymentResult outcome upper case", `{"action":"paymentResult","transactionId":"txn_1","outcome":"APPROVED"}`, CodeInvalidRequest, "outcome"},
	{"paymentResult unknown entryMode", result(`"entryMode":"nfc"`), CodeInvalidRequest, "entryMode"},
	{"paymentResult full PAN", result(`"maskedPan":"4242424242424242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult ten leading digits", result(`"maskedPan":"4242424242**4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult full PAN with spaces", result(`"maskedPan":"4242 4242 4242 4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult full PAN with dashes", result(`"maskedPan":"4242-4242-4242-4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult five trailing digits", result(`"maskedPan":"424242*****24242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult seven leading digits", result(`"maskedPan":"4242424*****4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult digits in the middle", result(`"maskedPan":"424242**42**4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult eight bare digits", result(`"maskedPan":"42424242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult PAN as number", result(`"maskedPan":4242424242424242`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult maskedPan too long", result(`"maskedPan":"` + strings.Repeat("*", 29) + `4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult amountMinor zero", result(`"amountMinor":0`), CodeInvalidRequest, "amountMinor"},
	{"paymentResult authCode too long", result(`"authCode":"` + long129 + `"`), CodeInvalidRequest, "authCode"},
	{"paymentResult rrn with newline", result(`"rrn":"12\n34"`), CodeInvalidRequest, "rrn"},
	{"paymentResult responseCode a number", result(`"responseCode":0`), CodeInvalidRequest, "responseCode"},
	{"paymentResult errorCode too long", result(`"errorCode":"` + long129 + `"`), CodeInvalidRequest, "errorCode"},
	{"paymentResult cardScheme with NUL", result(`"cardScheme":"vi\u0000sa"`), CodeInvalidRequest, "cardScheme"},
	{"paymentResult receipts a string", result(`"receipts":"thanks"`), CodeInvalidRequest, "receipts"},
	{"paymentResult receipt not a string", result(`"receipts":{"customer":5}`), CodeInvalidRequest, "receipts.customer"},
	{"paymentResult receipt too large", result(`"receipts":{"merchant":"` + strings.Repeat("r", 8193) + `"}`), CodeInvalidRequest, "receipts"},
	{"paymentResult errorMessage too long", result(`"outcome":"error","errorMessage":"` + long501 + `"`), CodeInvalidRequest, "errorMessage"},
	// paymentResult: text rules (control characters, UTF-8, card numbers)
	{"paymentResult authCode with escape sequences", result(`"authCode":"\u001b[2J\u001b[31mPWNED"`), CodeInvalidRequest, "authCode"},
	{"paymentResult authCode not UTF-8", result("\"authCode\":\"A\xff\""), CodeInvalidRequest, "authCode"},
	{"paymentResult responseCode with DEL", result(`"responseCode":"0\u007f"`), CodeInvalidRequest, "responseCode"},
	{"paymentResult cardScheme with C1", result(`"cardScheme":"visa\u0085"`), CodeInvalidRequest, "cardScheme"},
	{"paymentResult maskedPan with escape", result(`"maskedPan":"424242\u001b[J4242"`), CodeInvalidRequest, "maskedPan"},
	{"paymentResult rrn a card number", result(`"rrn":"4111111111111111"`), CodeInvalidRequest, "rrn"},
	{"paymentResult errorMessage with newline", result(`"outcome":"error","errorMessage":"a\nb"`), CodeInvalidRequest, "errorMessage"},
	{"paymentResult errorMessage a card number", result(`"outcome":"error","errorMessage":"4111-1111-1111-1111"`), CodeInvalidRequest, "errorMessage"},
	{"paymentResult customer receipt with escape", result(`"receipts":{"customer":"ok\n\u001b[2J"}`), CodeInvalidRequest, "receipts.customer"},
	{"paymentResult customer receipt a card number", result(`"receipts":{"customer":"VISA 4111 1111 1111 1111"}`), CodeInvalidRequest, "receipts.customer"},
	{"paymentResult merchant receipt lone CR", result(`"receipts":{"merchant":"a\rb"}`), CodeInvalidRequest, "receipts.merchant"},
	{"paymentResult merchant receipt not UTF-8", result("\"receipts\":{\"merchant\":\"\xff\"}"), CodeInvalidRequest, "receipts.merchant"},
	{"paymentResult errorMessage lone surrogate", result(`"errorMessage":"\udfff"`), CodeInvalidRequest, "errorMessage"},
	{"voidResult missing ok", `{"action":"voidResult","transactionId":"txn_1"}`, CodeInvalidRequest, "ok"},
	{"voidResult ok a string", `{"action":"voidResult","transactionId":"txn_1","ok":"true"}`, CodeInvalidRequest, "ok"},
	{"voidResult missing transactionId", `{"action":"voidResult","ok":true}`, CodeInvalidRequest, "transactionId"},
	{"captureResult missing ok", `{"action":"captureResult","transactionId":"txn_1","amountMinor":100}`, CodeInvalidRequest, "ok"},
	{"captureResult amountMinor negative", `{"action":"captureResult","transactionId":"txn_1","ok":true,"amountMinor":-1}`, CodeInvalidRequest, "amountMinor"},
	{"voidResult errorMessage with escape", `{"action":"voidResult","transactionId":"txn_1","ok":false,"errorMessage":"\u001b[2J"}`, CodeInvalidRequest, "errorMessage"},
	{"captureResult errorMessage a card number", `{"action":"captureResult","transactionId":"txn_1","ok":false,"errorMessage":"378282246310005"}`, CodeInvalidRequest, "errorMessage"},
	{"captureResult errorMessage too long", `{"action":"captureResult","transactionId":"txn_1","ok":false,"errorMessage":"` + long501 + `"}`, CodeInvalidRequest, "errorMessage"},
	{"POS action on terminal", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"r"}`, CodeUnknownAction, "action"},
	{"hub command on terminal", `{"action":"startPayment","transactionId":"txn_1"}`, CodeUnknownAction, "action"},
	{"terminal action missing", `{"transactionId":"txn_1","outcome":"approved"}`, CodeInvalidRequest, "action"},
	{"terminal action a number", `{"action":3}`, CodeInvalidRequest, "action"},
	{"terminal array frame", `[]`, CodeInvalidRequest, ""},
}

func runBad(t *testing.T, decode func([]byte) (Inbound, error), cases []badCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			in, err := decode([]byte(tt.frame))
			if err == nil {
				t.Fatalf("decoded %s as %T %+v, want %s/%s", tt.frame, in.Body, in.Body, tt.code, tt.field)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *protocol.Error", err, err)
			}
			if pe.Code != tt.code || pe.Field != tt.field {
				t.Errorf("error %s/%s (%q), want %s/%s", pe.Code, pe.Field, pe.Message, tt.code, tt.field)
			}
			if pe.Message == "" {
				t.Error("empty message")
			}
			if in.Body != nil {
				t.Errorf("Body %+v set on error", in.Body)
			}
		})
	}
}

func TestDecodePOSMalformed(t *testing.T) { runBad(t, DecodePOS, posBad) }

func TestDecodeTerminalMalformed(t *testing.T) { runBad(t, DecodeTerminal, terminalBad) }

func TestMalformedCount(t *testing.T) {
	if n := len(posBad) + len(terminalBad); n < 50 {
		t.Errorf("only %d malformed frames", n)
	}
}

func TestDecodeNotJSON(t *testing.T) {
	frames := []string{
		"",
		" ",
		"payment",
		"{",
		`{"action":"payment",}`,
		`{"action":'payment'}`,
		`{action:"payment"}`,
		`{"action":"payment"}{"action":"cancel"}`,
		`{"action":"payment"} x`,
		"\x00",
		"\xff\xfe{}",
		`{"amount":NaN}`,
		`{"amountMinor":01}`,
	}
	for _, f := range frames {
		t.Run(f, func(t *testing.T) {
			for name, decode := range map[string]func([]byte) (Inbound, error){"pos": DecodePOS, "terminal": DecodeTerminal} {
				in, err := decode([]byte(f))
				if !errors.Is(err, ErrNotJSON) {
					t.Errorf("%s: error %v, want ErrNotJSON", name, err)
				}
				if in.RequestID != nil || in.Body != nil || in.Action != "" {
					t.Errorf("%s: Inbound %+v set for non-JSON", name, in)
				}
			}
		})
	}
}

func TestDecodeRequestIDEchoed(t *testing.T) {
	tests := []struct {
		name   string
		decode func([]byte) (Inbound, error)
		frame  string
		want   string // raw requestId; "" = none
		ok     bool
	}{
		{"string, valid", DecodePOS, `{"action":"listTerminals","requestId":"req-1"}`, `"req-1"`, true},
		{"number, valid", DecodePOS, `{"action":"listTerminals","requestId":42}`, `42`, true},
		{"number kept as written", DecodePOS, `{"action":"listTerminals","requestId":1.50e3}`, `1.50e3`, true},
		{"escaped string kept raw", DecodePOS, `{"action":"listTerminals","requestId":"r\u002d1"}`, `"r\u002d1"`, true},
		{"object", DecodePOS, `{"action":"listTerminals","requestId":{"a":1}}`, `{"a":1}`, true},
		{"absent", DecodePOS, `{"action":"listTerminals"}`, ``, true},
		{"string, validation fails", DecodePOS, `{"requestId":"req-2","action":"payment","terminalId":"T1"}`, `"req-2"`, false},
		{"number, validation fails", DecodePOS, `{"action":"payment","requestId":7,"amountMinor":"12"}`, `7`, false},
		{"string, unknown action", DecodePOS, `{"action":"nope","requestId":"req-3"}`, `"req-3"`, false},
		{"number, action missing", DecodePOS, `{"requestId":99}`, `99`, false},
		{"string, action a number", DecodePOS, `{"action":5,"requestId":"req-4"}`, `"req-4"`, false},
		{"terminal string, bad PAN", DecodeTerminal, result(`"maskedPan":"4242424242424242","requestId":"t-1"`), `"t-1"`, false},
		{"terminal number, valid", DecodeTerminal, `{"action":"commandReceived","transactionId":"txn_1","requestId":3}`, `3`, true},
		{"array frame has none", DecodePOS, `[{"requestId":"x"}]`, ``, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := tt.decode([]byte(tt.frame))
			if (err == nil) != tt.ok {
				t.Fatalf("error = %v, want ok %v", err, tt.ok)
			}
			if string(in.RequestID) != tt.want {
				t.Errorf("RequestID = %q, want %q", in.RequestID, tt.want)
			}
			if err != nil {
				var pe *Error
				if errors.As(err, &pe) {
					// The reply echoes it verbatim.
					reply, mErr := json.Marshal(NewErrorReply(in.RequestID, pe))
					if mErr != nil {
						t.Fatal(mErr)
					}
					if tt.want != "" && !strings.Contains(string(reply), `"requestId":`+tt.want) {
						t.Errorf("reply %s does not echo requestId %s", reply, tt.want)
					}
				}
			}
		})
	}
}

func i64(n int64) *int64 { return &n }
func intp(n int) *int    { return &n }
func boolp(b bool) *bool { return &b }

func TestDecodePOSValid(t *testing.T) {
	tests := []struct {
		name   string
		frame  string
		action string
		want   any
	}{
		{"payment amountMinor, currency upper-cased, captureMode auto",
			`{"action":"payment","terminalId":"TERM-001","amountMinor":1250,"currency":"usd","reference":"order-1"}`, ActionPayment,
			&PaymentRequest{TerminalID: "TERM-001", AmountMinor: i64(1250), Currency: "USD", Reference: "order-1", CaptureMode: CaptureAuto}},
		{"payment amount string",
			`{"action":"payment","terminalId":"T1","amount":"12.50","currency":"Usd","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(1250), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment amount trailing zeros",
			`{"action":"payment","terminalId":"T1","amount":"12.500","currency":"USD","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(1250), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment amount JSON number taken exactly",
			`{"action":"payment","terminalId":"T1","amount":0.29,"currency":"USD","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(29), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment amount JPY",
			`{"action":"payment","terminalId":"T1","amount":"1500","currency":"jpy","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(1500), Currency: "JPY", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment amount 0.001 KWD",
			`{"action":"payment","terminalId":"T1","amount":"0.001","currency":"KWD","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(1), Currency: "KWD", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment amount CLF",
			`{"action":"payment","terminalId":"T1","amount":"1.2345","currency":"CLF","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(12345), Currency: "CLF", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment amount null with amountMinor",
			`{"action":"payment","terminalId":"T1","amount":null,"amountMinor":5,"currency":"USD","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(5), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment every option",
			`{"action":"payment","requestId":"q","terminalId":"T1","amountMinor":100,"currency":"EUR","reference":"r","captureMode":"manual","description":"Coffee ☕","printReceipt":false,"timeoutSeconds":600,"idempotencyKey":"idem-1","unknownField":true}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(100), Currency: "EUR", Reference: "r", CaptureMode: CaptureManual,
				Description: "Coffee ☕", PrintReceipt: boolp(false), TimeoutSeconds: intp(600), IdempotencyKey: "idem-1"}},
		{"payment timeoutSeconds 10",
			`{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"r","timeoutSeconds":10}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(100), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto, TimeoutSeconds: intp(10)}},
		{"payment amountMinor max",
			`{"action":"payment","terminalId":"T1","amountMinor":4503599627370496,"currency":"USD","reference":"r"}`, ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(maxMinor), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto}},
		{"payment with whitespace around the frame",
			" \n{\"action\":\"payment\",\"terminalId\":\"T1\",\"amountMinor\":1,\"currency\":\"USD\",\"reference\":\"r\"}\n", ActionPayment,
			&PaymentRequest{TerminalID: "T1", AmountMinor: i64(1), Currency: "USD", Reference: "r", CaptureMode: CaptureAuto}},
		{"cancel", `{"action":"cancel","transactionId":"txn_1"}`, ActionCancel, &CancelRequest{TransactionID: "txn_1"}},
		{"refund full", `{"action":"refund","transactionId":"txn_1","reason":"broken"}`, ActionRefund,
			&RefundRequest{TransactionID: "txn_1", Reason: "broken"}},
		{"refund partial minor", `{"action":"refund","transactionId":"txn_1","amountMinor":500,"reference":"rf-1","idempotencyKey":"k"}`, ActionRefund,
			&RefundRequest{TransactionID: "txn_1", AmountMinor: i64(500), Reference: "rf-1", IdempotencyKey: "k"}},
		{"refund partial amount", `{"action":"refund","transactionId":"txn_1","amount":"5.00"}`, ActionRefund,
			&RefundRequest{TransactionID: "txn_1", Amount: json.RawMessage(`"5.00"`)}},
		{"void", `{"action":"void","transactionId":"txn_1","reason":"double charge"}`, ActionVoid,
			&VoidRequest{TransactionID: "txn_1", Reason: "double charge"}},
		{"capture", `{"action":"capture","transactionId":"txn_1"}`, ActionCapture, &CaptureRequest{TransactionID: "txn_1"}},
		{"capture partial", `{"action":"capture","transactionId":"txn_1","amountMinor":900}`, ActionCapture,
			&CaptureRequest{TransactionID: "txn_1", AmountMinor: i64(900)}},
		{"signatureVerification false", `{"action":"signatureVerification","transactionId":"txn_1","accepted":false}`, ActionSignatureVerification,
			&SignatureVerificationRequest{TransactionID: "txn_1", Accepted: boolp(false)}},
		{"signatureVerification true", `{"action":"signatureVerification","transactionId":"txn_1","accepted":true}`, ActionSignatureVerification,
			&SignatureVerificationRequest{TransactionID: "txn_1", Accepted: boolp(true)}},
		{"getTransactionStatus", `{"action":"getTransactionStatus","transactionId":"txn_1"}`, ActionGetTransactionStatus,
			&GetTransactionStatusRequest{TransactionID: "txn_1"}},
		{"listTerminals", `{"action":"listTerminals"}`, ActionListTerminals, &ListTerminalsRequest{}},
		{"ack", `{"action":"ack","messageId":"1700000000000-0"}`, ActionAck, &AckRequest{MessageID: "1700000000000-0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := DecodePOS([]byte(tt.frame))
			if err != nil {
				t.Fatalf("DecodePOS: %v", err)
			}
			if in.Action != tt.action {
				t.Errorf("Action = %q, want %q", in.Action, tt.action)
			}
			if reflect.TypeOf(in.Body) != reflect.TypeOf(tt.want) {
				t.Fatalf("Body is %T, want %T", in.Body, tt.want)
			}
			if !reflect.DeepEqual(in.Body, tt.want) {
				t.Errorf("Body\n got %+v\nwant %+v", in.Body, tt.want)
			}
			if p, ok := in.Body.(*PaymentRequest); ok {
				if p.Amount != nil {
					t.Errorf("Amount %s left after resolution", p.Amount)
				}
				if p.Minor() != *p.AmountMinor {
					t.Errorf("Minor() = %d", p.Minor())
				}
			}
			if e := in.Body.(Validator).Validate(); e != nil {
				t.Errorf("re-validation: %v", e)
			}
		})
	}
}

func TestRefundResolveAmount(t *testing.T) {
	tests := []struct {
		name, frame, currency string
		want                  int64
		field                 string // error field, "" = ok
	}{
		{"full refund", `{"action":"refund","transactionId":"t"}`, "USD", 0, ""},
		{"minor", `{"action":"refund","transactionId":"t","amountMinor":250}`, "USD", 250, ""},
		{"amount USD", `{"action":"refund","transactionId":"t","amount":"2.50"}`, "USD", 250, ""},
		{"amount JPY", `{"action":"refund","transactionId":"t","amount":"250"}`, "JPY", 250, ""},
		{"amount KWD", `{"action":"refund","transactionId":"t","amount":"0.001"}`, "KWD", 1, ""},
		{"amount number", `{"action":"refund","transactionId":"t","amount":2.5}`, "USD", 250, ""},
		{"too many decimals", `{"action":"refund","transactionId":"t","amount":"2.505"}`, "USD", 0, "amount"},
		{"JPY decimals", `{"action":"refund","transactionId":"t","amount":"2.5"}`, "JPY", 0, "amount"},
		{"zero", `{"action":"refund","transactionId":"t","amount":"0.00"}`, "USD", 0, "amount"},
		{"negative", `{"action":"refund","transactionId":"t","amount":"-1"}`, "USD", 0, "amount"},
		{"words", `{"action":"refund","transactionId":"t","amount":"all"}`, "USD", 0, "amount"},
		{"unknown sale currency", `{"action":"refund","transactionId":"t","amount":"1"}`, "XYZ", 0, "currency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := DecodePOS([]byte(tt.frame))
			if err != nil {
				t.Fatalf("DecodePOS: %v", err)
			}
			got, e := in.Body.(*RefundRequest).ResolveAmount(tt.currency)
			switch {
			case tt.field == "" && (e != nil || got != tt.want):
				t.Errorf("ResolveAmount = %d, %v; want %d", got, e, tt.want)
			case tt.field != "" && (e == nil || e.Code != CodeInvalidRequest || e.Field != tt.field):
				t.Errorf("ResolveAmount = %d, %v; want invalid_request/%s", got, e, tt.field)
			}
		})
	}
}

func TestDecodeTerminalValid(t *testing.T) {
	tests := []struct {
		name   string
		frame  string
		action string
		want   any
	}{
		{"commandReceived", `{"action":"commandReceived","transactionId":"txn_1"}`, ActionCommandReceived, &CommandReceived{TransactionID: "txn_1"}},
		{"paymentProgress card_presented", `{"action":"paymentProgress","transactionId":"txn_1","stage":"card_presented"}`, ActionPaymentProgress,
			&PaymentProgress{TransactionID: "txn_1", Stage: "card_presented"}},
		{"paymentProgress pin_entry", `{"action":"paymentProgress","transactionId":"txn_1","stage":"pin_entry"}`, ActionPaymentProgress,
			&PaymentProgress{TransactionID: "txn_1", Stage: "pin_entry"}},
		{"paymentProgress processing", `{"action":"paymentProgress","transactionId":"txn_1","stage":"processing"}`, ActionPaymentProgress,
			&PaymentProgress{TransactionID: "txn_1", Stage: "processing"}},
		{"signatureRequired", `{"action":"signatureRequired","transactionId":"txn_1"}`, ActionSignatureRequired, &SignatureRequiredEvent{TransactionID: "txn_1"}},
		{"paymentResult approved, full", `{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","authCode":"A1B2C3","responseCode":"00","rrn":"123456789012","cardScheme":"visa","maskedPan":"424242******4242","entryMode":"contactless","receipts":{"customer":"C","merchant":"M"},"amountMinor":1250}`,
			ActionPaymentResult, &PaymentResult{TransactionID: "txn_1", Outcome: OutcomeApproved, AuthCode: "A1B2C3", ResponseCode: "00", RRN: "123456789012",
				CardScheme: "visa", MaskedPAN: "424242******4242", EntryMode: "contactless", Receipts: &Receipts{Customer: "C", Merchant: "M"}, AmountMinor: i64(1250)}},
		{"paymentResult declined", `{"action":"paymentResult","transactionId":"txn_1","outcome":"declined","responseCode":"05"}`, ActionPaymentResult,
			&PaymentResult{TransactionID: "txn_1", Outcome: OutcomeDeclined, ResponseCode: "05"}},
		{"paymentResult error", `{"action":"paymentResult","transactionId":"txn_1","outcome":"error","errorCode":"card_error","errorMessage":"chip read failed"}`, ActionPaymentResult,
			&PaymentResult{TransactionID: "txn_1", Outcome: OutcomeError, ErrorCode: "card_error", ErrorMessage: "chip read failed"}},
		{"paymentResult cancelled", `{"action":"paymentResult","transactionId":"txn_1","outcome":"cancelled"}`, ActionPaymentResult,
			&PaymentResult{TransactionID: "txn_1", Outcome: OutcomeCancelled}},
		{"voidResult ok", `{"action":"voidResult","transactionId":"txn_1","ok":true}`, ActionVoidResult, &VoidResult{TransactionID: "txn_1", OK: boolp(true)}},
		{"voidResult failed", `{"action":"voidResult","transactionId":"txn_1","ok":false,"errorMessage":"too late"}`, ActionVoidResult,
			&VoidResult{TransactionID: "txn_1", OK: boolp(false), ErrorMessage: "too late"}},
		{"captureResult", `{"action":"captureResult","transactionId":"txn_1","ok":true,"amountMinor":900}`, ActionCaptureResult,
			&CaptureResult{TransactionID: "txn_1", OK: boolp(true), AmountMinor: i64(900)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := DecodeTerminal([]byte(tt.frame))
			if err != nil {
				t.Fatalf("DecodeTerminal: %v", err)
			}
			if in.Action != tt.action {
				t.Errorf("Action = %q, want %q", in.Action, tt.action)
			}
			if !reflect.DeepEqual(in.Body, tt.want) {
				t.Errorf("Body\n got %T %+v\nwant %T %+v", in.Body, in.Body, tt.want, tt.want)
			}
		})
	}
}

func TestEntryModes(t *testing.T) {
	for _, m := range []string{"contactless", "emv_chip", "magnetic_stripe", "manual_entry", "fallback"} {
		t.Run(m, func(t *testing.T) {
			if _, err := DecodeTerminal([]byte(result(`"entryMode":"` + m + `"`))); err != nil {
				t.Errorf("entryMode %s refused: %v", m, err)
			}
		})
	}
}

func TestMaskedPAN(t *testing.T) {
	tests := []struct {
		pan string
		ok  bool
	}{
		{"424242******4242", true},
		{"4242", true},
		{"****4242", true},
		{"************4242", true},
		{"424242******", true},
		{"424242", false}, // six bare digits could be the last six
		{"42", true},
		{"4242 42** **** 4242", true},
		{"4242-42XX-XXXX-4242", true},
		{"XXXX XXXX XXXX 4242", true},
		{"424242•••••• 4242", true},
		{"3782 82***** 1000", true}, // 15-digit Amex
		{"4242424242424242", false},
		{"4242424242**4242", false},
		{"4242 4242 4242 4242", false},
		{"4242-4242-4242-4242", false},
		{"424242*****24242", false},
		{"4242424*****4242", false},
		{"424242**42**4242", false},
		{"42424", false},
		{"42424242", false},
		{"*424242*4242", false}, // digits in the middle
		{"424242******42424", false},
		{"424242４２４２４２4242", false}, // full-width digits are digits, not a mask
		{"424242٤٢٤٢٤٢4242", false}, // Arabic-Indic digits
		{"4242②②②②②②4242", false},   // circled digits
		{"４２４２", false},             // only ASCII digits may show
		{strings.Repeat("*", 28) + "4242", true},
		{strings.Repeat("*", 29) + "4242", false},
	}
	for _, tt := range tests {
		t.Run(tt.pan, func(t *testing.T) {
			if got := MaskedPANOK(tt.pan); got != tt.ok {
				t.Errorf("MaskedPANOK(%q) = %v, want %v", tt.pan, got, tt.ok)
			}
			frame, _ := json.Marshal(map[string]any{"action": "paymentResult", "transactionId": "txn_1", "outcome": "approved", "maskedPan": tt.pan})
			in, err := DecodeTerminal(frame)
			if tt.ok {
				if err != nil {
					t.Fatalf("DecodeTerminal refused %q: %v", tt.pan, err)
				}
				if got := in.Body.(*PaymentResult).MaskedPAN; got != tt.pan {
					t.Errorf("MaskedPAN = %q, want %q", got, tt.pan)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != CodeInvalidRequest || pe.Field != "maskedPan" {
				t.Fatalf("DecodeTerminal(%q) = %v, want invalid_request/maskedPan", tt.pan, err)
			}
			assertPANNotEchoed(t, tt.pan, in, pe)
		})
	}
}

// assertPANNotEchoed checks that nothing sent back or logged about a refused
// result contains the card number or any run of its digits.
func assertPANNotEchoed(t *testing.T, pan string, in Inbound, pe *Error) {
	t.Helper()
	reply, err := json.Marshal(NewErrorReply(in.RequestID, pe))
	if err != nil {
		t.Fatal(err)
	}
	digits := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, pan)
	for _, s := range []string{pe.Message, pe.Error(), string(reply), in.String()} {
		if strings.Contains(s, pan) || (len(digits) >= 4 && strings.Contains(s, digits[len(digits)-4:])) {
			t.Errorf("%q echoes the refused PAN %q", s, pan)
		}
		if strings.ContainsAny(pe.Message, "0123456789") {
			t.Errorf("message %q has digits", pe.Message)
		}
	}
	if in.Body != nil {
		t.Errorf("refused result kept as Body: %+v", in.Body)
	}
}

func TestPANNeverInErrors(t *testing.T) {
	pans := []string{"4242424242424242", "4242424242**4242", "5555 5555 5555 4444", "378282246310005", "4000-0566-5566-5556"}
	for _, pan := range pans {
		t.Run(pan, func(t *testing.T) {
			frames := []string{
				result(`"maskedPan":"` + pan + `","requestId":"r1"`),
				result(`"maskedPan":"` + pan + `","entryMode":"emv_chip","authCode":"A1"`),
			}
			for _, f := range frames {
				in, err := DecodeTerminal([]byte(f))
				var pe *Error
				if !errors.As(err, &pe) || pe.Field != "maskedPan" {
					t.Fatalf("DecodeTerminal(%s) = %v, want maskedPan error", f, err)
				}
				assertPANNotEchoed(t, pan, in, pe)
			}
			// A PAN sent as a JSON number is a type error; it must not be echoed either.
			in, err := DecodeTerminal([]byte(result(`"maskedPan":` + strings.NewReplacer(" ", "", "-", "", "*", "1").Replace(pan))))
			var pe *Error
			if !errors.As(err, &pe) || pe.Field != "maskedPan" {
				t.Fatalf("number PAN: %v, want maskedPan error", err)
			}
			if strings.ContainsAny(pe.Error(), "0123456789") {
				t.Errorf("type error %q has digits", pe.Error())
			}
			_ = in
		})
	}
}

func TestUnknownActionTruncated(t *testing.T) {
	long := strings.Repeat("a", 1000)
	_, err := DecodePOS([]byte(`{"action":"` + long + `"}`))
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeUnknownAction || pe.Field != "action" {
		t.Fatalf("error %v, want unknown_action/action", err)
	}
	if len(pe.Message) > 200 {
		t.Errorf("message is %d bytes long; the action should be truncated", len(pe.Message))
	}
}

func TestEveryActionDecodes(t *testing.T) {
	// Every action listed for a side is known to that side's decoder and to
	// no other.
	for _, a := range POSActions {
		t.Run("pos/"+a, func(t *testing.T) {
			_, err := DecodePOS([]byte(`{"action":"` + a + `"}`))
			var pe *Error
			if errors.As(err, &pe) && pe.Code == CodeUnknownAction {
				t.Errorf("POS action %s unknown to DecodePOS", a)
			}
			if a == ActionSignatureRequired {
				return
			}
			if _, err := DecodeTerminal([]byte(`{"action":"` + a + `"}`)); !errors.As(err, &pe) || pe.Code != CodeUnknownAction {
				t.Errorf("POS action %s accepted by DecodeTerminal: %v", a, err)
			}
		})
	}
	for _, a := range TerminalActions {
		t.Run("terminal/"+a, func(t *testing.T) {
			_, err := DecodeTerminal([]byte(`{"action":"` + a + `"}`))
			var pe *Error
			if errors.As(err, &pe) && pe.Code == CodeUnknownAction {
				t.Errorf("terminal action %s unknown to DecodeTerminal", a)
			}
			if _, err := DecodePOS([]byte(`{"action":"` + a + `"}`)); !errors.As(err, &pe) || pe.Code != CodeUnknownAction {
				t.Errorf("terminal action %s accepted by DecodePOS: %v", a, err)
			}
		})
	}
}

func TestDecodeBody(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string // "" with ok
		ok    bool
	}{
		{"valid payment", `{"terminalId":"T1","amount":"1.00","currency":"usd","reference":"r"}`, "", true},
		{"empty body", ``, "terminalId", false},
		{"whitespace body", " \n", "terminalId", false},
		{"not JSON", `terminalId=T1`, "", false},
		{"array", `[]`, "", false},
		{"type error", `{"terminalId":"T1","amountMinor":"1","currency":"USD","reference":"r"}`, "amountMinor", false},
		{"validation error", `{"terminalId":"T1","amount":"1.001","currency":"USD","reference":"r"}`, "amount", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PaymentRequest
			e := DecodeBody([]byte(tt.body), &p)
			if tt.ok {
				if e != nil {
					t.Fatalf("DecodeBody: %v", e)
				}
				if p.Currency != "USD" || p.Minor() != 100 || p.CaptureMode != CaptureAuto {
					t.Errorf("not normalised: %+v", p)
				}
				return
			}
			if e == nil || e.Code != CodeInvalidRequest || e.Field != tt.field {
				t.Errorf("DecodeBody = %v, want invalid_request/%q", e, tt.field)
			}
		})
	}
	t.Run("list terminals takes an empty body", func(t *testing.T) {
		if e := DecodeBody(nil, &ListTerminalsRequest{}); e != nil {
			t.Errorf("DecodeBody(nil) = %v", e)
		}
	})
}

func TestErrorHTTPStatus(t *testing.T) {
	tests := []struct {
		code Code
		want int
	}{
		{CodeInvalidRequest, 400}, {CodeUnknownAction, 400}, {CodeUnauthorized, 401},
		{CodeNotFound, 404}, {CodeTerminalNotFound, 404}, {CodeTransactionNotFound, 404},
		{CodeDeviceBusy, 409}, {CodeReferenceConflict, 409}, {CodeInvalidState, 409}, {CodeSessionDisplaced, 409},
		{CodeIdempotencyKeyReused, 422}, {CodeTerminalOffline, 422}, {CodeRefundExceedsAmount, 422},
		{CodeInsufficientScopes, 403}, {CodeDuplicateRequest, 409}, {CodeRateLimited, 429}, {CodeUnavailable, 503}, {CodeInternal, 500}, {Code("bogus"), 500},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			if got := tt.code.HTTPStatus(); got != tt.want {
				t.Errorf("HTTPStatus = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestErrorJSON(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"body with field", ErrorBody{Error: Invalid("amount", "too many decimals")},
			`{"error":{"code":"invalid_request","message":"too many decimals","field":"amount"}}`},
		{"body without field", ErrorBody{Error: Errorf(CodeDeviceBusy, "", "terminal %s is busy", "T1")},
			`{"error":{"code":"device_busy","message":"terminal T1 is busy"}}`},
		{"ws reply", NewErrorReply(json.RawMessage(`"r1"`), Invalid("currency", "unknown")),
			`{"action":"error","requestId":"r1","code":"invalid_request","message":"unknown","field":"currency"}`},
		{"ws reply without request id", NewErrorReply(nil, Errorf(CodeUnknownAction, "action", "unknown action")),
			`{"action":"error","code":"unknown_action","message":"unknown action","field":"action"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("got  %s\nwant %s", b, tt.want)
			}
		})
	}
	if got := Invalid("amount", "bad").Error(); got != "invalid_request: bad (field amount)" {
		t.Errorf("Error() = %q", got)
	}
	if got := Errorf(CodeInternal, "", "boom").Error(); got != "internal: boom" {
		t.Errorf("Error() = %q", got)
	}
}
