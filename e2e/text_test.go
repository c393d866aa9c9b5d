package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// Text rules (docs/protocol.md#credentials), over real sockets: text a
// terminal reports or a POS sends that has control characters, is not
// UTF-8 or holds a full card number is refused with invalid_request naming
// the field; nothing of it is acknowledged, stored or logged, and the
// terminal's corrected result is then accepted.

// textEnv is a hub whose debug log is kept for inspection.
func textEnv(t *testing.T) (*env, *kit.LogBuffer) {
	t.Helper()
	logs := &kit.LogBuffer{}
	return envFrom(t, apptest.Start(t, kit.Config, apptest.Logger(zerolog.New(logs).Level(zerolog.DebugLevel)))), logs
}

// refusedFrame sends frame (raw bytes) with a requestId and expects the
// error reply for field, then shows that nothing else (no resultAck) was
// sent in between by probing the connection.
func refusedFrame(t *testing.T, term *client.Conn, n int, frame, field string) {
	t.Helper()
	id := "text-" + strconv.Itoa(n)
	frame = `{"requestId":"` + id + `",` + strings.TrimPrefix(frame, "{")
	if err := term.SendRaw(kit.Ctx(t), websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	m := next(t, term)
	var r protocol.ErrorReply
	if m.Action != protocol.ActionError || m.Decode(&r) != nil || r.Code != protocol.CodeInvalidRequest || r.Field != field || string(r.RequestID) != `"`+id+`"` {
		t.Fatalf("%q: got %s, want invalid_request field %s", frame, m.Raw, field)
	}
	// The next message is the answer to the probe: no resultAck came.
	probe := "probe-" + id
	send(t, term, "commandReceived", map[string]any{"requestId": probe, "transactionId": "txn_probe"})
	m = next(t, term)
	if m.Decode(&r) != nil || r.Code != protocol.CodeTransactionNotFound || string(r.RequestID) != `"`+probe+`"` {
		t.Fatalf("after the refused %q: got %s, want only the probe's answer", frame, m.Raw)
	}
}

func TestTerminalTextRefusedOverSockets(t *testing.T) {
	e, logs := textEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := dispatched(t, pos, term, "T1", 1250, "text-1")
	before := e.get(t, "pk1", id)

	result := func(extra string) string {
		return `{"action":"paymentResult","transactionId":"` + id + `","outcome":"approved","maskedPan":"411111******1111"` + extra + `}`
	}
	cases := []struct{ frame, field string }{
		{result(`,"authCode":"\u001b[2J\u001b[31mPWNED"`), "authCode"},
		{result(",\"authCode\":\"A1\xff\xfe\""), "authCode"}, // raw bytes that are not UTF-8
		{result(`,"authCode":"A1","rrn":"4111111111111111"`), "rrn"},
		{result(`,"authCode":"A1","receipts":{"customer":"VISA\n4111 1111 1111 1111\nAPPROVED","merchant":"ok"}`), "receipts.customer"},
		{result(`,"authCode":"A1","receipts":{"customer":"ok","merchant":"TOTAL 12.50\r\u009b2J"}`), "receipts.merchant"},
		{result(`,"authCode":"A1","errorMessage":"card 5555555555554444"`), "errorMessage"},
	}
	for i, c := range cases {
		refusedFrame(t, term, i, c.frame, c.field)
	}

	// Nothing of it was stored: the sale is as it was.
	got := e.get(t, "pk1", id)
	if got.Status != protocol.StatusDispatched || got.Version != before.Version || got.AuthCode != "" || got.RRN != "" || got.Receipts != nil || got.ErrorMessage != "" {
		t.Fatalf("after refused results: %s v%d (was v%d) authCode %q rrn %q receipts %+v", got.Status, got.Version, before.Version, got.AuthCode, got.RRN, got.Receipts)
	}

	// The terminal sends the result again, clean: it is acknowledged and
	// stored, and the POS's next message about the sale is its outcome.
	termSend(t, term, "paymentResult", id, map[string]any{"outcome": "approved", "authCode": "A1B2C3", "rrn": "123456789012",
		"maskedPan": "411111******1111", "receipts": map[string]string{"customer": "VISA 411111******1111\r\nAPPROVED\n", "merchant": "MERCHANT COPY"}})
	command(t, term, protocol.ActionResultAck, id)
	ev := event(t, take(t, pos, "the sale's next message", func(m client.Message) bool { return m.MessageID() != "" }))
	if ev.Action != protocol.ActionPaymentComplete || ev.TransactionID != id || ev.Version != before.Version+1 || ev.Transaction.AuthCode != "A1B2C3" {
		t.Fatalf("POS got %s v%d (authCode %q), want paymentComplete v%d", ev.Action, ev.Version, ev.Transaction.AuthCode, before.Version+1)
	}
	got = e.get(t, "pk1", id)
	if got.Status != protocol.StatusCompleted || got.AuthCode != "A1B2C3" || got.RRN != "123456789012" || got.Receipts == nil || got.Receipts.Customer != "VISA 411111******1111\r\nAPPROVED\n" {
		t.Fatalf("after the clean result: %+v", got)
	}

	// Neither the card numbers nor the escapes were logged.
	out := logs.String()
	if !strings.Contains(out, "bad request") {
		t.Fatalf("the refusals were not logged at all:\n%s", out)
	}
	for _, f := range []string{"4111111111111111", "4111 1111 1111 1111", "5555555555554444", "PWNED", "\x1b", "\\u001b"} {
		if strings.Contains(out, f) {
			t.Errorf("the log contains %q", f)
		}
	}
}

func TestPOSTextRefusedOverSockets(t *testing.T) {
	e, logs := textEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	// REST: the bodies are sent and signed as raw bytes.
	body := func(ref, extra string) []byte {
		return []byte(`{"terminalId":"T1","amountMinor":100,"currency":"USD","reference":"` + ref + `"` + extra + `}`)
	}
	e.doErr(t, "pk1", "POST", "/v1/payments", body("order-\xff\xfe", ""), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "reference")
	e.doErr(t, "pk1", "POST", "/v1/payments", body(`order-\u001b[2J`, ""), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "reference")
	e.doErr(t, "pk1", "POST", "/v1/payments", body("4111111111111111", ""), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "reference")
	e.doErr(t, "pk1", "POST", "/v1/payments", body("order-1", `,"description":"card 4111-1111-1111-1111"`), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "description")
	e.doErr(t, "pk1", "POST", "/v1/payments", body("order-1", `,"description":"\ud800"`), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "description")

	// The WebSocket: the same, with raw bytes in the frame.
	for i, c := range []struct{ frame, field string }{
		{`{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"order-` + "\xc3\x28" + `"}`, "reference"},
		{`{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","description":"\u001b[2J"}`, "description"},
		{`{"action":"payment","terminalId":"T1","amountMinor":100,"currency":"USD","reference":"o1","idempotencyKey":"4242424242424242"}`, "idempotencyKey"},
	} {
		id := "pos-text-" + strconv.Itoa(i)
		frame := `{"requestId":"` + id + `",` + c.frame[1:]
		if err := pos.SendRaw(kit.Ctx(t), websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		m := next(t, pos)
		var r protocol.ErrorReply
		if m.Decode(&r) != nil || r.Code != protocol.CodeInvalidRequest || r.Field != c.field || string(r.RequestID) != `"`+id+`"` {
			t.Fatalf("%q: got %s, want invalid_request field %s", frame, m.Raw, c.field)
		}
	}

	// A sale to void and refund, with bad reasons.
	sale := completedSale(t, pos, term, "T1", 500, "text-sale")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+sale+"/void", []byte(`{"reason":"\u001b]0;owned\u0007"}`), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "reason")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+sale+"/refund", []byte(`{"reason":"refund card 4111 1111 1111 1111"}`), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "reason")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+sale+"/refund", []byte("{\"reference\":\"r\xff\"}"), nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "reference")

	// Nothing was created besides the sale, which is unchanged.
	if p, _ := e.list(t, "pk1", ""); len(p.Data) != 1 || p.Data[0].ID != sale || p.Data[0].Status != protocol.StatusCompleted {
		t.Fatalf("transactions after refused requests: %v", ids(p.Data))
	}
	out := logs.String()
	for _, f := range []string{"4111111111111111", "4242424242424242", "4111-1111", "\x1b", "owned"} {
		if strings.Contains(out, f) {
			t.Errorf("the log contains %q", f)
		}
	}
}
