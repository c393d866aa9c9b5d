package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// Malformed requests (docs/protocol.md#pos-protocol, docs/protocol.md#terminal-protocol, docs/protocol.md#transactions): each is answered with the exact
// code and field, and a bad message never closes the connection unless it
// is not JSON or over 64 KiB.

type badCase struct {
	name  string
	frame string // sent as is; a JSON object gets "requestId" added
	code  protocol.Code
	field string
}

func long(n int) string { return strings.Repeat("x", n) }

// withRequestID puts "requestId":id first into a JSON object frame, and
// reports whether it could (only objects carry one).
func withRequestID(frame, id string) (string, bool) {
	f := strings.TrimSpace(frame)
	if !strings.HasPrefix(f, "{") || !json.Valid([]byte(f)) {
		return frame, false
	}
	if strings.TrimSpace(f[1:]) == "}" {
		return `{"requestId":"` + id + `"}`, true
	}
	return `{"requestId":"` + id + `",` + f[1:], true
}

// expectBad sends c.frame on conn and checks the error reply; probe then
// checks the connection still answers.
func expectBad(t *testing.T, conn *client.Conn, i int, c badCase, probe func()) {
	t.Helper()
	id := fmt.Sprintf("bad-%d", i)
	frame, hasID := withRequestID(c.frame, id)
	if err := conn.SendRaw(kit.Ctx(t), websocket.MessageText, []byte(frame)); err != nil {
		t.Fatalf("%s: send: %v", c.name, err)
	}
	m := next(t, conn)
	var r protocol.ErrorReply
	if m.Action != protocol.ActionError || m.Decode(&r) != nil {
		t.Errorf("%s: %s\n  got %s, want error %s field %q", c.name, frame, m.Raw, c.code, c.field)
	} else {
		if r.Code != c.code || r.Field != c.field || r.Message == "" {
			t.Errorf("%s: %s\n  got %s field %q (%s), want %s field %q", c.name, frame, r.Code, r.Field, r.Message, c.code, c.field)
		}
		if hasID && string(r.RequestID) != `"`+id+`"` {
			t.Errorf("%s: requestId %s, want %q echoed", c.name, r.RequestID, id)
		}
	}
	probe()
}

func TestMalformedPOSMessages(t *testing.T) {
	e := newEnv(t)
	pos := e.pos("pk1")
	txnCases := []badCase{
		// The envelope.
		{"empty object", `{}`, protocol.CodeInvalidRequest, "action"},
		{"null action", `{"action":null}`, protocol.CodeInvalidRequest, "action"},
		{"numeric action", `{"action":5}`, protocol.CodeInvalidRequest, "action"},
		{"object action", `{"action":{"name":"payment"}}`, protocol.CodeInvalidRequest, "action"},
		{"empty action", `{"action":""}`, protocol.CodeUnknownAction, "action"},
		{"unknown action", `{"action":"nope"}`, protocol.CodeUnknownAction, "action"},
		{"terminal action on the POS socket", `{"action":"paymentResult","transactionId":"txn_x","outcome":"approved"}`, protocol.CodeUnknownAction, "action"},
		{"action in the wrong case", `{"action":"Payment"}`, protocol.CodeUnknownAction, "action"},
		{"array", `[{"action":"listTerminals"}]`, protocol.CodeInvalidRequest, ""},
		{"string", `"payment"`, protocol.CodeInvalidRequest, ""},
		{"number", `42`, protocol.CodeInvalidRequest, ""},
		{"null", `null`, protocol.CodeInvalidRequest, ""},
		{"boolean", `true`, protocol.CodeInvalidRequest, ""},

		// payment.
		{"payment without terminalId", `{"action":"payment","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "terminalId"},
		{"payment with empty terminalId", `{"action":"payment","terminalId":"","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "terminalId"},
		{"payment with over-long terminalId", `{"action":"payment","terminalId":"` + long(129) + `","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "terminalId"},
		{"payment with numeric terminalId", `{"action":"payment","terminalId":1,"amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "terminalId"},
		{"payment with a newline in terminalId", `{"action":"payment","terminalId":"T\n1","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "terminalId"},
		{"payment without currency", `{"action":"payment","terminalId":"T1","amountMinor":100,"reference":"o1"}`, protocol.CodeInvalidRequest, "currency"},
		{"payment with unknown currency", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"ZZZ","reference":"o1"}`, protocol.CodeInvalidRequest, "currency"},
		{"payment with numeric currency", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":840,"reference":"o1"}`, protocol.CodeInvalidRequest, "currency"},
		{"payment without amount", `{"action":"payment","terminalId":"T1","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with amount and amountMinor", `{"action":"payment","terminalId":"T1","amountMinor":100,"amount":"1.00","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"payment with zero amountMinor", `{"action":"payment","terminalId":"T1","amountMinor":0,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with negative amountMinor", `{"action":"payment","terminalId":"T1","amountMinor":-100,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with string amountMinor", `{"action":"payment","terminalId":"T1","amountMinor":"100","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with fractional amountMinor", `{"action":"payment","terminalId":"T1","amountMinor":12.5,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with huge amountMinor", `{"action":"payment","terminalId":"T1","amountMinor":4503599627370497,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with amountMinor beyond int64", `{"action":"payment","terminalId":"T1","amountMinor":99999999999999999999,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"USD amount with three decimals", `{"action":"payment","terminalId":"T1","amount":"12.345","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"zero amount", `{"action":"payment","terminalId":"T1","amount":"0.00","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"negative amount", `{"action":"payment","terminalId":"T1","amount":"-1.00","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"amount not a number", `{"action":"payment","terminalId":"T1","amount":"abc","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"amount in exponent form", `{"action":"payment","terminalId":"T1","amount":"1e3","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"amount as exponent number", `{"action":"payment","terminalId":"T1","amount":1e3,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"JPY amount with decimals", `{"action":"payment","terminalId":"T1","amount":"100.5","currency":"JPY","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"KWD amount with four decimals", `{"action":"payment","terminalId":"T1","amount":"1.2345","currency":"KWD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"empty amount", `{"action":"payment","terminalId":"T1","amount":"","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"amount with a trailing dot", `{"action":"payment","terminalId":"T1","amount":"12.","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"amount with a leading space", `{"action":"payment","terminalId":"T1","amount":" 12.50","currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"boolean amount", `{"action":"payment","terminalId":"T1","amount":true,"currency":"USD","reference":"o1"}`, protocol.CodeInvalidRequest, "amount"},
		{"payment without reference", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD"}`, protocol.CodeInvalidRequest, "reference"},
		{"payment with over-long reference", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"` + long(129) + `"}`, protocol.CodeInvalidRequest, "reference"},
		{"payment with a NUL in reference", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"a\u0000b"}`, protocol.CodeInvalidRequest, "reference"},
		{"payment with unknown captureMode", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","captureMode":"later"}`, protocol.CodeInvalidRequest, "captureMode"},
		{"timeoutSeconds below 10", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","timeoutSeconds":9}`, protocol.CodeInvalidRequest, "timeoutSeconds"},
		{"timeoutSeconds above 600", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","timeoutSeconds":601}`, protocol.CodeInvalidRequest, "timeoutSeconds"},
		{"timeoutSeconds as a string", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","timeoutSeconds":"30"}`, protocol.CodeInvalidRequest, "timeoutSeconds"},
		{"over-long description", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","description":"` + long(501) + `"}`, protocol.CodeInvalidRequest, "description"},
		{"printReceipt as a string", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","printReceipt":"yes"}`, protocol.CodeInvalidRequest, "printReceipt"},
		{"over-long idempotencyKey", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","idempotencyKey":"` + long(129) + `"}`, protocol.CodeInvalidRequest, "idempotencyKey"},
		{"payment with escape sequences in reference", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o\u001b[2J\u001b[31m"}`, protocol.CodeInvalidRequest, "reference"},
		{"payment with bytes that are not UTF-8 in reference", "{\"action\":\"payment\",\"terminalId\":\"T1\",\"amountMinor\":100,\"currency\":\"USD\",\"reference\":\"o\xff1\"}", protocol.CodeInvalidRequest, "reference"},
		{"payment with a card number as reference", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"4111111111111111"}`, protocol.CodeInvalidRequest, "reference"},
		{"payment with a card number in description", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","description":"4111 1111 1111 1111"}`, protocol.CodeInvalidRequest, "description"},
		{"payment with C1 control in description", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","description":"a\u009b2J"}`, protocol.CodeInvalidRequest, "description"},
		{"payment with a lone surrogate in description", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","description":"\ud800"}`, protocol.CodeInvalidRequest, "description"},
		{"payment with a card number as idempotencyKey", `{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","idempotencyKey":"5555555555554444"}`, protocol.CodeInvalidRequest, "idempotencyKey"},
		{"unknown action with escape sequences", `{"action":"x\u001b[2J"}`, protocol.CodeInvalidRequest, "action"},
		{"payment to an unknown terminal", `{"action":"payment","terminalId":"T9","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeTerminalNotFound, "terminalId"},
		{"payment to another merchant's terminal", `{"action":"payment","terminalId":"U1","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeTerminalNotFound, "terminalId"},
		{"payment to an offline terminal", `{"action":"payment","terminalId":"T2","amountMinor":100,"currency":"USD","reference":"o1"}`, protocol.CodeTerminalOffline, "terminalId"},

		// cancel, refund, void, capture, signatureVerification.
		{"cancel without transactionId", `{"action":"cancel"}`, protocol.CodeInvalidRequest, "transactionId"},
		{"cancel with numeric transactionId", `{"action":"cancel","transactionId":7}`, protocol.CodeInvalidRequest, "transactionId"},
		{"cancel of an unknown transaction", `{"action":"cancel","transactionId":"txn_unknown"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"refund with amount and amountMinor", `{"action":"refund","transactionId":"txn_x","amountMinor":1,"amount":"0.01"}`, protocol.CodeInvalidRequest, "amount"},
		{"refund with zero amountMinor", `{"action":"refund","transactionId":"txn_x","amountMinor":0}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"refund with over-long reason", `{"action":"refund","transactionId":"txn_x","reason":"` + long(501) + `"}`, protocol.CodeInvalidRequest, "reason"},
		{"refund with over-long reference", `{"action":"refund","transactionId":"txn_x","reference":"` + long(129) + `"}`, protocol.CodeInvalidRequest, "reference"},
		{"refund without transactionId", `{"action":"refund","amountMinor":1}`, protocol.CodeInvalidRequest, "transactionId"},
		{"refund of an unknown transaction", `{"action":"refund","transactionId":"txn_unknown"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"void without transactionId", `{"action":"void"}`, protocol.CodeInvalidRequest, "transactionId"},
		{"void with over-long reason", `{"action":"void","transactionId":"txn_x","reason":"` + long(501) + `"}`, protocol.CodeInvalidRequest, "reason"},
		{"void of an unknown transaction", `{"action":"void","transactionId":"txn_unknown"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"void with a control character in reason", `{"action":"void","transactionId":"txn_x","reason":"\u001b]0;owned\u0007"}`, protocol.CodeInvalidRequest, "reason"},
		{"refund with a card number in reason", `{"action":"refund","transactionId":"txn_x","reason":"card 4111-1111-1111-1111"}`, protocol.CodeInvalidRequest, "reason"},
		{"capture with negative amountMinor", `{"action":"capture","transactionId":"txn_x","amountMinor":-1}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"capture with string amountMinor", `{"action":"capture","transactionId":"txn_x","amountMinor":"5"}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"capture of an unknown transaction", `{"action":"capture","transactionId":"txn_unknown"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"signatureVerification without accepted", `{"action":"signatureVerification","transactionId":"txn_x"}`, protocol.CodeInvalidRequest, "accepted"},
		{"signatureVerification with null accepted", `{"action":"signatureVerification","transactionId":"txn_x","accepted":null}`, protocol.CodeInvalidRequest, "accepted"},
		{"signatureVerification with string accepted", `{"action":"signatureVerification","transactionId":"txn_x","accepted":"yes"}`, protocol.CodeInvalidRequest, "accepted"},
		{"signatureVerification without transactionId", `{"action":"signatureVerification","accepted":true}`, protocol.CodeInvalidRequest, "transactionId"},
		{"getTransactionStatus without transactionId", `{"action":"getTransactionStatus"}`, protocol.CodeInvalidRequest, "transactionId"},
		{"getTransactionStatus of an unknown transaction", `{"action":"getTransactionStatus","transactionId":"txn_unknown"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"ack without messageId", `{"action":"ack"}`, protocol.CodeInvalidRequest, "messageId"},
		{"ack with a malformed messageId", `{"action":"ack","messageId":"garbage"}`, protocol.CodeInvalidRequest, "messageId"},
		{"ack of a message never sent", `{"action":"ack","messageId":"99999999999999-0"}`, protocol.CodeInvalidRequest, "messageId"},
	}
	if len(txnCases) < 50 {
		t.Fatalf("only %d cases", len(txnCases))
	}
	probes := 0
	probe := func() {
		probes++
		id := "probe-" + strconv.Itoa(probes)
		send(t, pos, "listTerminals", map[string]any{"requestId": id})
		m := next(t, pos)
		var r protocol.TerminalsReply
		if m.Action != protocol.ActionTerminals || m.Decode(&r) != nil || string(r.RequestID) != `"`+id+`"` || len(r.Terminals) != 2 {
			t.Fatalf("listTerminals after a bad message: %s", m.Raw)
		}
	}
	for i, c := range txnCases {
		expectBad(t, pos, i, c, probe)
	}
	// A requestId of any JSON type is echoed verbatim.
	if err := pos.SendRaw(kit.Ctx(t), websocket.MessageText, []byte(`{"action":"cancel","requestId":{"n":[1,2]}}`)); err != nil {
		t.Fatal(err)
	}
	var r protocol.ErrorReply
	if m := next(t, pos); m.Decode(&r) != nil || string(r.RequestID) != `{"n":[1,2]}` || r.Field != "transactionId" {
		t.Fatalf("error for an object requestId: %s", m.Raw)
	}
	// Nothing was created by any of it.
	if p, _ := e.list(t, "pk1", ""); len(p.Data) != 0 {
		t.Fatalf("bad messages created transactions: %v", ids(p.Data))
	}
}

func TestMalformedTerminalMessages(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	t2 := e.terminal("T2")
	pos := e.pos("pk1")
	own := sell(t, pos, "T1", 100, "tm-own").Transaction.ID
	startPayment(t, term, own)
	other := sell(t, pos, "T2", 100, "tm-other").Transaction.ID // T2's
	startPayment(t, t2, other)

	pan := "4111111111111111"
	cases := []badCase{
		{"empty object", `{}`, protocol.CodeInvalidRequest, "action"},
		{"unknown action", `{"action":"hello"}`, protocol.CodeUnknownAction, "action"},
		{"POS action on the terminal socket", `{"action":"payment","terminalId":"T1","amountMinor":1,"currency":"USD","reference":"x"}`, protocol.CodeUnknownAction, "action"},
		{"hub command sent back", `{"action":"startPayment","transactionId":"` + own + `"}`, protocol.CodeUnknownAction, "action"},
		{"array", `[]`, protocol.CodeInvalidRequest, ""},
		{"commandReceived without transactionId", `{"action":"commandReceived"}`, protocol.CodeInvalidRequest, "transactionId"},
		{"paymentProgress without stage", `{"action":"paymentProgress","transactionId":"` + own + `"}`, protocol.CodeInvalidRequest, "stage"},
		{"paymentProgress with unknown stage", `{"action":"paymentProgress","transactionId":"` + own + `","stage":"tap"}`, protocol.CodeInvalidRequest, "stage"},
		{"paymentResult without outcome", `{"action":"paymentResult","transactionId":"` + own + `"}`, protocol.CodeInvalidRequest, "outcome"},
		{"paymentResult with unknown outcome", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"ok"}`, protocol.CodeInvalidRequest, "outcome"},
		{"paymentResult with unknown entryMode", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","entryMode":"nfc"}`, protocol.CodeInvalidRequest, "entryMode"},
		{"paymentResult with a full PAN", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","maskedPan":"` + pan + `"}`, protocol.CodeInvalidRequest, "maskedPan"},
		{"paymentResult with zero amountMinor", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","amountMinor":0}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"paymentResult with over-long authCode", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","authCode":"` + long(129) + `"}`, protocol.CodeInvalidRequest, "authCode"},
		{"paymentResult with an over-long receipt", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","receipts":{"customer":"` + long(8193) + `"}}`, protocol.CodeInvalidRequest, "receipts"},
		{"paymentResult with a string receipts", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","receipts":"x"}`, protocol.CodeInvalidRequest, "receipts"},
		{"paymentResult with escape sequences in authCode", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","authCode":"\u001b[2J\u001b[31mPWNED"}`, protocol.CodeInvalidRequest, "authCode"},
		{"paymentResult with bytes that are not UTF-8 in authCode", "{\"action\":\"paymentResult\",\"transactionId\":\"" + own + "\",\"outcome\":\"approved\",\"authCode\":\"A\xff\"}", protocol.CodeInvalidRequest, "authCode"},
		{"paymentResult with a card number in rrn", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","rrn":"` + pan + `"}`, protocol.CodeInvalidRequest, "rrn"},
		{"paymentResult with a card number in the customer receipt", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","receipts":{"customer":"VISA\n4111 1111 1111 1111"}}`, protocol.CodeInvalidRequest, "receipts.customer"},
		{"paymentResult with a control character in the merchant receipt", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"approved","receipts":{"merchant":"TOTAL\n\u001b[2J"}}`, protocol.CodeInvalidRequest, "receipts.merchant"},
		{"paymentResult with a newline in errorMessage", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"error","errorMessage":"a\nb"}`, protocol.CodeInvalidRequest, "errorMessage"},
		{"paymentResult with a card number in errorMessage", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"declined","errorMessage":"card ` + pan + ` declined"}`, protocol.CodeInvalidRequest, "errorMessage"},
		{"voidResult with a control character in errorMessage", `{"action":"voidResult","transactionId":"` + own + `","ok":false,"errorMessage":"\u009b2J"}`, protocol.CodeInvalidRequest, "errorMessage"},
		{"captureResult with a card number in errorMessage", `{"action":"captureResult","transactionId":"` + own + `","ok":false,"errorMessage":"` + pan + `"}`, protocol.CodeInvalidRequest, "errorMessage"},
		{"paymentResult with over-long errorMessage", `{"action":"paymentResult","transactionId":"` + own + `","outcome":"error","errorMessage":"` + long(501) + `"}`, protocol.CodeInvalidRequest, "errorMessage"},
		{"voidResult without ok", `{"action":"voidResult","transactionId":"` + own + `"}`, protocol.CodeInvalidRequest, "ok"},
		{"voidResult with string ok", `{"action":"voidResult","transactionId":"` + own + `","ok":"true"}`, protocol.CodeInvalidRequest, "ok"},
		{"captureResult without ok", `{"action":"captureResult","transactionId":"` + own + `"}`, protocol.CodeInvalidRequest, "ok"},
		{"captureResult with negative amountMinor", `{"action":"captureResult","transactionId":"` + own + `","ok":true,"amountMinor":-5}`, protocol.CodeInvalidRequest, "amountMinor"},
		{"signatureRequired without transactionId", `{"action":"signatureRequired"}`, protocol.CodeInvalidRequest, "transactionId"},
		{"result for an unknown transaction", `{"action":"paymentResult","transactionId":"txn_unknown","outcome":"approved"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"result for another terminal's transaction", `{"action":"paymentResult","transactionId":"` + other + `","outcome":"approved"}`, protocol.CodeTransactionNotFound, "transactionId"},
		{"commandReceived for another terminal's transaction", `{"action":"commandReceived","transactionId":"` + other + `"}`, protocol.CodeTransactionNotFound, "transactionId"},
	}
	probes := 0
	probe := func() {
		probes++
		id := "probe-" + strconv.Itoa(probes)
		send(t, term, "commandReceived", map[string]any{"requestId": id, "transactionId": "txn_probe"})
		m := next(t, term)
		var r protocol.ErrorReply
		if m.Decode(&r) != nil || r.Code != protocol.CodeTransactionNotFound || string(r.RequestID) != `"`+id+`"` {
			t.Fatalf("probe after a bad message: %s", m.Raw)
		}
	}
	for i, c := range cases {
		expectBad(t, term, i, c, probe)
	}
	// None of it touched either transaction.
	for _, id := range []string{own, other} {
		if got := e.get(t, "pk1", id); got.Status != protocol.StatusPending || got.Version != 1 {
			t.Errorf("%s after bad terminal messages: %s v%d", id, got.Status, got.Version)
		}
	}
}

// Not JSON, binary, or over 64 KiB: the connection is closed with 4400.
func TestProtocolViolationsClose(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name  string
		typ   websocket.MessageType
		frame []byte
	}{
		{"not JSON", websocket.MessageText, []byte(`{"action":"listTerminals"`)},
		{"binary", websocket.MessageBinary, []byte(`{"action":"listTerminals"}`)},
		{"over 64 KiB", websocket.MessageText, []byte(`{"action":"listTerminals","pad":"` + long(64<<10) + `"}`)},
	} {
		for _, kind := range []string{"pos", "terminal"} {
			var conn *client.Conn
			if kind == "pos" {
				conn = e.pos("pk1")
			} else {
				conn = e.terminal("T1")
			}
			if err := conn.SendRaw(kit.Ctx(t), c.typ, c.frame); err != nil {
				t.Fatalf("%s %s: %v", kind, c.name, err)
			}
			for {
				m, err := conn.Read(kit.Ctx(t))
				if err != nil {
					if code := client.CloseCode(err); code != 4400 {
						t.Errorf("%s %s: closed with %d (%v), want 4400", kind, c.name, code, err)
					}
					break
				}
				if m.Action == protocol.ActionError {
					t.Errorf("%s %s: answered %s, want the connection closed with 4400", kind, c.name, m.Raw)
				}
			}
		}
	}
}

func TestMalformedHTTPRequests(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := sell(t, pos, "T1", 100, "h-1").Transaction.ID
	startPayment(t, term, id)

	raw := func(s string) []byte { return []byte(s) }
	cases := []struct {
		name         string
		method, path string
		body         any
		headers      http.Header
		status       int
		code         protocol.Code
		field        string
	}{
		{"payment body not JSON", "POST", "/v1/payments", raw(`terminalId=T1`), nil, 400, protocol.CodeInvalidRequest, ""},
		{"payment body truncated", "POST", "/v1/payments", raw(`{"terminalId":"T1"`), nil, 400, protocol.CodeInvalidRequest, ""},
		{"payment body an array", "POST", "/v1/payments", raw(`[]`), nil, 400, protocol.CodeInvalidRequest, ""},
		{"payment body a string", "POST", "/v1/payments", raw(`"x"`), nil, 400, protocol.CodeInvalidRequest, ""},
		{"payment without body", "POST", "/v1/payments", nil, nil, 400, protocol.CodeInvalidRequest, "terminalId"},
		{"payment without currency", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "reference": "h"}, nil, 400, protocol.CodeInvalidRequest, "currency"},
		{"payment with unknown currency", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "ZZZ", "reference": "h"}, nil, 400, protocol.CodeInvalidRequest, "currency"},
		{"payment with zero amountMinor", "POST", "/v1/payments", sale("T1", 0, "h"), nil, 400, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with string amountMinor", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": "1", "currency": "USD", "reference": "h"}, nil, 400, protocol.CodeInvalidRequest, "amountMinor"},
		{"payment with both amounts", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "amount": "0.01", "currency": "USD", "reference": "h"}, nil, 400, protocol.CodeInvalidRequest, "amount"},
		{"payment with too many decimals", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amount": "1.001", "currency": "USD", "reference": "h"}, nil, 400, protocol.CodeInvalidRequest, "amount"},
		{"payment without reference", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "USD"}, nil, 400, protocol.CodeInvalidRequest, "reference"},
		{"payment with bad captureMode", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "USD", "reference": "h", "captureMode": "x"}, nil, 400, protocol.CodeInvalidRequest, "captureMode"},
		{"payment with timeoutSeconds 5", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "USD", "reference": "h", "timeoutSeconds": 5}, nil, 400, protocol.CodeInvalidRequest, "timeoutSeconds"},
		{"payment to an unknown terminal", "POST", "/v1/payments", sale("T9", 1, "h"), nil, 404, protocol.CodeTerminalNotFound, "terminalId"},
		{"over-long Idempotency-Key", "POST", "/v1/payments", sale("T1", 1, "h"), idem(long(129)), 400, protocol.CodeInvalidRequest, "Idempotency-Key"},
		{"body over 1 MiB", "POST", "/v1/payments", raw(`{"pad":"` + long(1<<20) + `"}`), nil, 400, protocol.CodeInvalidRequest, ""},
		{"cancel with another id in the body", "POST", "/v1/transactions/" + id + "/cancel", map[string]any{"transactionId": "txn_other"}, nil, 400, protocol.CodeInvalidRequest, "transactionId"},
		{"cancel body not JSON", "POST", "/v1/transactions/" + id + "/cancel", raw(`cancel`), nil, 400, protocol.CodeInvalidRequest, ""},
		{"signature without accepted", "POST", "/v1/transactions/" + id + "/signature", map[string]any{}, nil, 400, protocol.CodeInvalidRequest, "accepted"},
		{"signature with string accepted", "POST", "/v1/transactions/" + id + "/signature", map[string]any{"accepted": "y"}, nil, 400, protocol.CodeInvalidRequest, "accepted"},
		{"refund with both amounts", "POST", "/v1/transactions/" + id + "/refund", map[string]any{"amountMinor": 1, "amount": "0.01"}, nil, 400, protocol.CodeInvalidRequest, "amount"},
		{"refund with negative amountMinor", "POST", "/v1/transactions/" + id + "/refund", map[string]any{"amountMinor": -1}, nil, 400, protocol.CodeInvalidRequest, "amountMinor"},
		{"capture with zero amountMinor", "POST", "/v1/transactions/" + id + "/capture", map[string]any{"amountMinor": 0}, nil, 400, protocol.CodeInvalidRequest, "amountMinor"},
		{"void with over-long reason", "POST", "/v1/transactions/" + id + "/void", map[string]any{"reason": long(501)}, nil, 400, protocol.CodeInvalidRequest, "reason"},
		{"payment with bytes that are not UTF-8 in reference", "POST", "/v1/payments", raw("{\"terminalId\":\"T1\",\"amountMinor\":1,\"currency\":\"USD\",\"reference\":\"h\xff\"}"), nil, 400, protocol.CodeInvalidRequest, "reference"},
		{"payment with escape sequences in reference", "POST", "/v1/payments", sale("T1", 1, "h\x1b[2J"), nil, 400, protocol.CodeInvalidRequest, "reference"},
		{"payment with a card number in description", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "USD", "reference": "h", "description": "4111111111111111"}, nil, 400, protocol.CodeInvalidRequest, "description"},
		{"void with a control character in reason", "POST", "/v1/transactions/" + id + "/void", map[string]any{"reason": "\u009b31m"}, nil, 400, protocol.CodeInvalidRequest, "reason"},
		{"refund with a card number in reason", "POST", "/v1/transactions/" + id + "/refund", map[string]any{"reason": "4111 1111 1111 1111"}, nil, 400, protocol.CodeInvalidRequest, "reason"},
		{"unknown lifecycle action", "POST", "/v1/transactions/" + id + "/explode", nil, nil, 404, protocol.CodeNotFound, ""},
		{"cancel of an unknown transaction", "POST", "/v1/transactions/txn_unknown/cancel", nil, nil, 404, protocol.CodeTransactionNotFound, "transactionId"},
		{"list with limit 101", "GET", "/v1/transactions?limit=101", nil, nil, 400, protocol.CodeInvalidRequest, "limit"},
		{"list with unknown status", "GET", "/v1/transactions?status=DONE", nil, nil, 400, protocol.CodeInvalidRequest, "status"},
		{"list with unknown type", "GET", "/v1/transactions?type=charge", nil, nil, 400, protocol.CodeInvalidRequest, "type"},
		{"list with unknown cursor", "GET", "/v1/transactions?after=txn_unknown", nil, nil, 400, protocol.CodeInvalidRequest, "after"},
		// Credentials (docs/protocol.md#credentials): 401 naming the part that failed.
		{"missing signature", "GET", "/v1/transactions", nil, http.Header{"X-Signature": nil}, 401, protocol.CodeUnauthorized, "X-Signature"},
		{"bad signature", "GET", "/v1/transactions", nil, http.Header{"X-Signature": []string{strings.Repeat("0", 64)}}, 401, protocol.CodeUnauthorized, "X-Signature"},
		{"stale timestamp", "GET", "/v1/transactions", nil, http.Header{"X-Timestamp": []string{"1000000000"}}, 401, protocol.CodeUnauthorized, "X-Timestamp"},
		{"unknown key", "GET", "/v1/transactions", nil, http.Header{"X-Api-Key": []string{"pk_nope"}}, 401, protocol.CodeUnauthorized, "X-Api-Key"},
	}
	for _, c := range cases {
		resp := e.do(t, "pk1", c.method, c.path, c.body, c.headers)
		checkErr(t, c.name, resp, c.status, c.code, c.field)
	}
	// None of it changed the sale.
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusPending || got.Version != 1 {
		t.Fatalf("sale after bad requests: %s v%d", got.Status, got.Version)
	}
}
