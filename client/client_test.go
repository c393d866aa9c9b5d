package client

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/protocol"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoScript sends back every frame with its type and reports the types.
func echoScript(types chan<- websocket.MessageType) func(sc *serverConn) {
	return func(sc *serverConn) {
		ctx := context.Background()
		for {
			typ, b, err := sc.ws.Read(ctx)
			if err != nil {
				return
			}
			if types != nil {
				types <- typ
			}
			if err := sc.ws.Write(ctx, typ, b); err != nil {
				return
			}
		}
	}
}

func TestDialPOSHeaderAuth(t *testing.T) {
	ctx := testCtx(t)
	types := make(chan websocket.MessageType, 8)
	h := newFakeHub(t, func(h *fakeHub) { h.script = echoScript(types) })

	c, err := DialPOS(ctx, h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatalf("DialPOS: %v", err)
	}
	defer c.Close()
	rec := <-h.auths
	if !rec.HeaderSigs || rec.QueryForm || rec.ID != "pk_test" || rec.Path != POSPath {
		t.Fatalf("hub saw %+v, want header credentials of pk_test over %s", rec, POSPath)
	}
	if c.ConnectionID() != "conn_1" || c.Greeting.Action != protocol.ActionConnected {
		t.Fatalf("greeting %q / connection id %q", c.Greeting.Raw, c.ConnectionID())
	}

	amt := int64(1250)
	if err := c.SendAction(ctx, protocol.ActionPayment, "r1", protocol.PaymentRequest{
		TerminalID: "TERM-001", AmountMinor: &amt, Currency: "EUR", Reference: "order-1",
	}); err != nil {
		t.Fatal(err)
	}
	m, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The hub's own decoder must accept what SendAction produced.
	in, err := protocol.DecodePOS(m.Raw)
	if err != nil {
		t.Fatalf("hub would reject %s: %v", m.Raw, err)
	}
	if m.Action != protocol.ActionPayment || in.Action != protocol.ActionPayment || string(in.RequestID) != `"r1"` {
		t.Fatalf("echo %s decoded as %v", m.Raw, in)
	}
	if p := in.Body.(*protocol.PaymentRequest); p.Reference != "order-1" || p.Minor() != 1250 {
		t.Fatalf("payment body %+v", p)
	}
	if typ := <-types; typ != websocket.MessageText {
		t.Fatalf("SendAction frame type %v", typ)
	}

	if err := c.Send(ctx, map[string]string{"action": protocol.ActionListTerminals}); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Read(ctx); err != nil || m.Action != protocol.ActionListTerminals {
		t.Fatalf("Send echo: %v %v", m, err)
	}
	<-types

	if err := c.SendRaw(ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if typ := <-types; typ != websocket.MessageBinary {
		t.Fatalf("SendRaw frame type %v, want binary", typ)
	}
	if b, err := c.ReadRaw(ctx); err != nil || string(b) != "\x00\x01\x02" {
		t.Fatalf("ReadRaw = %q, %v", b, err)
	}

	if err := c.Ack(ctx, "1-0"); err != nil {
		t.Fatal(err)
	}
	m, err = c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in, err := protocol.DecodePOS(m.Raw); err != nil || in.Body.(*protocol.AckRequest).MessageID != "1-0" {
		t.Fatalf("ack %s: %v", m.Raw, err)
	}
}

func TestDialTerminalQueryAuth(t *testing.T) {
	ctx := testCtx(t)
	h := newFakeHub(t, nil)
	opts := h.opts()
	opts.QueryAuth = true

	c, err := DialTerminal(ctx, opts, "TERM-001", "dk_term1")
	if err != nil {
		t.Fatalf("DialTerminal: %v", err)
	}
	defer c.Close()
	rec := <-h.auths
	if rec.HeaderSigs || !rec.QueryForm || rec.ID != "TERM-001" || rec.Path != TerminalPath {
		t.Fatalf("hub saw %+v, want query credentials of TERM-001 over %s", rec, TerminalPath)
	}
}

func TestDialTerminalHeaderAuth(t *testing.T) {
	ctx := testCtx(t)
	h := newFakeHub(t, nil)
	c, err := DialTerminal(ctx, h.opts(), "TERM-001", "dk_term1")
	if err != nil {
		t.Fatalf("DialTerminal: %v", err)
	}
	defer c.Close()
	if rec := <-h.auths; !rec.HeaderSigs || rec.ID != "TERM-001" || rec.Path != TerminalPath {
		t.Fatalf("hub saw %+v", rec)
	}
}

func TestHandshakeError(t *testing.T) {
	ctx := testCtx(t)
	h := newFakeHub(t, nil)
	stale := h.opts()
	stale.Now = func() time.Time { return testNow.Add(-10 * time.Minute) }
	query := h.opts()
	query.QueryAuth = true

	cases := []struct {
		name string
		dial func() (*Conn, error)
		want string
	}{
		{"bad secret", func() (*Conn, error) { return DialPOS(ctx, h.opts(), "pk_test", "wrong") }, "bad signature"},
		{"bad secret in query", func() (*Conn, error) { return DialPOS(ctx, query, "pk_test", "wrong") }, "bad signature"},
		{"unknown device", func() (*Conn, error) { return DialTerminal(ctx, h.opts(), "TERM-999", "x") }, "bad signature"},
		{"stale timestamp", func() (*Conn, error) { return DialPOS(ctx, stale, "pk_test", "sk_test") }, "stale timestamp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.dial()
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			var he *HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("error %T %v, want *HandshakeError", err, err)
			}
			if he.StatusCode != 401 || !strings.Contains(he.Body, tc.want) {
				t.Fatalf("got %d %q, want 401 containing %q", he.StatusCode, he.Body, tc.want)
			}
			if e := he.Err(); e == nil || e.Code != protocol.CodeUnauthorized {
				t.Fatalf("Err() = %v", e)
			}
			if he.Unwrap() == nil || !strings.Contains(he.Error(), "401") {
				t.Fatalf("Error() %q / Unwrap %v", he.Error(), he.Unwrap())
			}
		})
	}
}

func TestDialConnectionRefusedIsNotHandshakeError(t *testing.T) {
	h := newFakeHub(t, nil)
	opts := h.opts()
	h.Close()
	_, err := DialPOS(testCtx(t), opts, "pk_test", "sk_test")
	var he *HandshakeError
	if err == nil || errors.As(err, &he) {
		t.Fatalf("err = %v", err)
	}
}

// The dial context only bounds the handshake and greeting; the connection
// must outlive it, because callers dial with a timeout and keep the Conn.
func TestConnOutlivesDialContext(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) { h.script = echoScript(nil) })
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := DialPOS(dctx, h.opts(), "pk_test", "sk_test")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	if err := c.Send(ctx, map[string]string{"action": "x"}); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Read(ctx); err != nil || m.Action != "x" {
		t.Fatalf("%v %v", m, err)
	}
}

func TestDialRejectsOtherGreeting(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) {
		h.greeting = func(*serverConn) any {
			return map[string]any{"action": protocol.ActionError, "code": "internal", "message": "boom"}
		}
	})
	_, err := DialPOS(testCtx(t), h.opts(), "pk_test", "sk_test")
	if err == nil || !strings.Contains(err.Error(), "connected") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadLimitAllowsBigHubMessages(t *testing.T) {
	pad := strings.Repeat("x", 200<<10)
	h := newFakeHub(t, func(h *fakeHub) {
		h.greeting = func(sc *serverConn) any {
			return map[string]any{"action": protocol.ActionConnected, "connectionId": sc.id, "pad": pad}
		}
		h.script = func(sc *serverConn) {
			ctx := context.Background()
			sc.send(ctx, map[string]any{"action": protocol.ActionTerminals, "pad": strings.Repeat("y", ReadLimit-100)})
			sc.send(ctx, map[string]any{"action": protocol.ActionTerminals, "pad": strings.Repeat("z", ReadLimit)})
			sc.ws.Read(ctx)
		}
	})
	ctx := testCtx(t)
	c, err := DialPOS(ctx, h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.ConnectionID() != "conn_1" || len(c.Greeting.Raw) < 200<<10 {
		t.Fatalf("greeting of %d bytes, id %q", len(c.Greeting.Raw), c.ConnectionID())
	}
	if m, err := c.Read(ctx); err != nil || m.Action != protocol.ActionTerminals {
		t.Fatalf("1 MiB message: %v", err)
	}
	if _, err := c.Read(ctx); !errors.Is(err, websocket.ErrMessageTooBig) {
		t.Fatalf("over 1 MiB: err = %v", err)
	}
}

func TestReadUntilSkips(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			ctx := context.Background()
			for _, m := range []map[string]any{
				{"action": protocol.ActionTerminalStatusUpdate, "terminalId": "TERM-001", "status": "online"},
				{"action": protocol.ActionPaymentStatusUpdate, "messageId": "1-0"},
				{"action": protocol.ActionPaymentComplete, "messageId": "2-0"},
				{"action": protocol.ActionTerminals},
			} {
				if err := sc.send(ctx, m); err != nil {
					return
				}
			}
			sc.ws.Read(ctx)
		}
	})
	ctx := testCtx(t)
	c, err := DialPOS(ctx, h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.ReadUntil(ctx, protocol.ActionPaymentComplete)
	if err != nil || m.MessageID() != "2-0" {
		t.Fatalf("ReadUntil = %s, %v", m.Raw, err)
	}
	if m, err := c.Read(ctx); err != nil || m.Action != protocol.ActionTerminals {
		t.Fatalf("next Read = %s, %v", m.Raw, err)
	}
}

func TestCloseCodes(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			fd := (&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonAPIKeyUsedElsewhere, ReconnectAllowed: true}).Frame()
			sc.send(context.Background(), fd)
			sc.ws.Close(websocket.StatusCode(protocol.CloseDisplaced), "displaced")
		}
	})
	ctx := testCtx(t)
	c, err := DialPOS(ctx, h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadUntil(ctx, "never")
	if got := CloseCode(err); got != int(protocol.CloseDisplaced) {
		t.Fatalf("CloseCode(%v) = %d", err, got)
	}
	if CloseCode(nil) != -1 || CloseCode(errors.New("x")) != -1 {
		t.Fatal("CloseCode of a non-close error must be -1")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close after hub closed: %v", err)
	}
}

func TestCloseIsNormalClosure(t *testing.T) {
	status := make(chan websocket.StatusCode, 1)
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			_, _, err := sc.ws.Read(context.Background())
			status <- websocket.CloseStatus(err)
		}
	})
	c, err := DialPOS(testCtx(t), h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if s := <-status; s != websocket.StatusNormalClosure {
		t.Fatalf("hub saw close %v", s)
	}
}

func TestMessageHelpers(t *testing.T) {
	m := Message{Action: protocol.ActionError, Raw: json.RawMessage(`{"action":"error","requestId":"r","code":"device_busy","message":"busy","field":"terminalId"}`)}
	if e := m.Err(); e == nil || e.Code != protocol.CodeDeviceBusy || e.Field != "terminalId" {
		t.Fatalf("Err() = %v", e)
	}
	if (Message{Action: "paymentResponse", Raw: json.RawMessage(`{}`)}).Err() != nil {
		t.Fatal("Err() of a non-error")
	}
	if id := (Message{Raw: json.RawMessage(`{"messageId":"5-1"}`)}).MessageID(); id != "5-1" {
		t.Fatalf("MessageID = %q", id)
	}
}

func TestWithEnvelope(t *testing.T) {
	cases := []struct {
		action, req string
		v           any
		want        string
	}{
		{"listTerminals", "", nil, `{"action":"listTerminals"}`},
		{"listTerminals", "7", protocol.ListTerminalsRequest{}, `{"action":"listTerminals","requestId":"7"}`},
		{"ack", "", protocol.AckRequest{MessageID: "1-0"}, `{"action":"ack","messageId":"1-0"}`},
		{"cancel", "a\"b", map[string]string{"transactionId": "txn_1"}, `{"action":"cancel","requestId":"a\"b","transactionId":"txn_1"}`},
	}
	for _, tc := range cases {
		b, err := withEnvelope(tc.action, tc.req, tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("withEnvelope(%q, %q, %v) = %s, %v; want %s", tc.action, tc.req, tc.v, b, err, tc.want)
		}
		if !json.Valid(b) {
			t.Errorf("invalid JSON %s", b)
		}
	}
	if _, err := withEnvelope("x", "", []int{1}); err == nil {
		t.Error("non-object body accepted")
	}
}

func TestOptionsResolve(t *testing.T) {
	cases := []struct{ base, path, want string }{
		{"http://h:1", "/v1/pos/ws", "http://h:1/v1/pos/ws"},
		{"http://h:1/", "/v1/x?a=1", "http://h:1/v1/x?a=1"},
		{"ws://h:1/prefix", "/v1/x", "http://h:1/prefix/v1/x"},
		{"wss://h", "/v1/x", "https://h/v1/x"},
	}
	for _, tc := range cases {
		u, err := Options{BaseURL: tc.base}.HTTPURL(tc.path)
		if err != nil || u.String() != tc.want {
			t.Errorf("resolve(%q, %q) = %v, %v; want %s", tc.base, tc.path, u, err, tc.want)
		}
	}
	for _, bad := range []Options{{}, {BaseURL: "ftp://h"}} {
		if _, err := bad.HTTPURL("/v1"); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := (Options{BaseURL: "http://h"}).HTTPURL("v1"); err == nil {
		t.Error("relative path accepted")
	}
}
