package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// corkedConn holds what is written to it while corked and sends it in one
// write when uncorked, so that frames sent one by one reach the hub
// together, as a terminal's commandReceived and paymentResult do when it
// approves at once.
type corkedConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	held   bytes.Buffer
}

func (c *corkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		return c.held.Write(p)
	}
	return c.Conn.Write(p)
}

func (c *corkedConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkedConn) uncork(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if _, err := c.Conn.Write(c.held.Bytes()); err != nil {
		t.Fatal(err)
	}
	c.held.Reset()
}

// corkedTerminal connects terminal id over a corkedConn.
func (e *env) corkedTerminal(id string) (*client.Conn, *corkedConn) {
	e.t.Helper()
	var cc *corkedConn
	opts := e.opts
	opts.HTTPClient = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cc = &corkedConn{Conn: nc}
			return cc, nil
		},
	}}
	c, err := client.DialTerminal(kit.Ctx(e.t), opts, id, kit.Secrets[id])
	if err != nil {
		e.t.Fatalf("dial terminal %s: %v", id, err)
	}
	e.t.Cleanup(func() { _ = c.CloseNow() })
	// The hub reads a terminal's first frame only after it has resumed the
	// terminal's transactions, so once this is answered no resume can
	// commit a later sale behind the test's back.
	send(e.t, c, "commandReceived", map[string]any{"requestId": "barrier", "transactionId": "txn_000000000000000000000000"})
	if m := next(e.t, c); m.Action != protocol.ActionError {
		e.t.Fatalf("barrier answered with %s", m.Raw)
	}
	return c, cc
}

// storedRev is how many commits transaction id has had.
func (e *env) storedRev(t *testing.T, id string) string {
	t.Helper()
	v, err := e.Redis.Client.HGet(kit.Ctx(t), keys.Space{Prefix: e.Redis.Prefix}.Txn("m1", id), "rev").Int64()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(session.Commits(v), 10)
}

// corkedSale starts a sale on terminal T1, connected over a corkedConn,
// and corks it: what the test has T1 send next reaches the hub in one
// write when it uncorks.
func corkedSale(t *testing.T, ref string) (e *env, pos, term *client.Conn, cork *corkedConn, id string) {
	t.Helper()
	e = newEnv(t)
	pos = e.pos("pk1")
	term, cork = e.corkedTerminal("T1")
	id = sell(t, pos, "T1", 1250, ref).Transaction.ID
	startPayment(t, term, id)
	cork.cork()
	return e, pos, term, cork, id
}

// approveAtOnce sends what a terminal approving at once sends:
// commandReceived, then an approved paymentResult.
func approveAtOnce(t *testing.T, term *client.Conn, id, authCode string) {
	t.Helper()
	termSend(t, term, "commandReceived", id, nil)
	termSend(t, term, "paymentResult", id, map[string]any{"outcome": "approved", "authCode": authCode,
		"maskedPan": "411111******1111", "cardScheme": "visa", "entryMode": "emv_chip"})
}

// Frames a terminal sends together are served together: its commandReceived
// and paymentResult become one commit (the create and one more), and the
// POS and the terminal hear exactly what two separate frames would give
// them, in order.
func TestTerminalFramesArrivingTogetherCommitTogether(t *testing.T) {
	e, pos, term, cork, id := corkedSale(t, "together-1")
	approveAtOnce(t, term, id, "A1")
	cork.uncork(t)

	command(t, term, protocol.ActionResultAck, id)
	upd := event(t, next(t, pos))
	done := event(t, next(t, pos))
	if upd.Action != protocol.ActionPaymentStatusUpdate || upd.Transaction.Status != protocol.StatusDispatched ||
		done.Action != protocol.ActionPaymentComplete || done.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("POS got %s %s then %s %s, want paymentStatusUpdate DISPATCHED then paymentComplete COMPLETED",
			upd.Action, upd.Transaction.Status, done.Action, done.Transaction.Status)
	}
	if upd.Version != done.Version-1 || upd.MessageID == "" || upd.MessageID == done.MessageID {
		t.Fatalf("versions %d, %d and message ids %q, %q: want consecutive versions and two messages",
			upd.Version, done.Version, upd.MessageID, done.MessageID)
	}
	if got := e.storedRev(t, id); got != "2" {
		t.Fatalf("stored rev %s, want 2: the create and one commit for both frames", got)
	}
}

// An error answers its own frame, before anything a later frame of the same
// batch causes.
func TestTerminalBatchAnswersErrorsInOrder(t *testing.T) {
	e, pos, term, cork, id := corkedSale(t, "together-2")
	send(t, term, "commandReceived", map[string]any{"requestId": "nope", "transactionId": "txn_000000000000000000000000"})
	send(t, term, "paymentResult", map[string]any{"requestId": "bad", "transactionId": id, "outcome": "maybe"})
	termSend(t, term, "commandReceived", id, nil)
	termSend(t, term, "paymentResult", id, map[string]any{"outcome": "declined", "errorCode": "card_declined"})
	cork.uncork(t)

	for _, want := range []struct{ requestID, code, field string }{
		{"nope", string(protocol.CodeTransactionNotFound), "transactionId"},
		{"bad", string(protocol.CodeInvalidRequest), "outcome"},
	} {
		m := next(t, term)
		var r protocol.ErrorReply
		if err := m.Decode(&r); err != nil || m.Action != protocol.ActionError || string(r.RequestID) != `"`+want.requestID+`"` ||
			string(r.Code) != want.code || r.Field != want.field {
			t.Fatalf("terminal got %s, want the error %s on %s for %s", m.Raw, want.code, want.field, want.requestID)
		}
	}
	command(t, term, protocol.ActionResultAck, id)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, id); ev.Transaction.Status != protocol.StatusDeclined {
		t.Fatalf("sale ended %s, want DECLINED", ev.Transaction.Status)
	}
	if got := e.storedRev(t, id); got != "2" {
		t.Fatalf("stored rev %s, want 2: the create and one commit for the two good frames", got)
	}
}

// Frames that reached the hub before one breaking the rules are still
// served: the sale completes, and only then is the connection closed with
// 4400. (The binary frame is not gathered into the text frames' batch, so
// this is the reader's ordinary path; the batch's own early end, when the
// connection is closing while frames are gathered, has no test.)
func TestTerminalFramesBeforeAViolationAreServed(t *testing.T) {
	e, pos, term, cork, id := corkedSale(t, "together-3")
	approveAtOnce(t, term, id, "A3")
	if err := term.SendRaw(kit.Ctx(t), websocket.MessageBinary, []byte(`{"action":"listTerminals"}`)); err != nil {
		t.Fatal(err)
	}
	cork.uncork(t)

	for {
		m, err := term.Read(kit.Ctx(t))
		if err != nil {
			if code := client.CloseCode(err); code != 4400 {
				t.Fatalf("terminal closed with %d (%v), want 4400", code, err)
			}
			break
		}
		if m.Action == protocol.ActionError {
			t.Fatalf("terminal answered %s, want the frames served and then 4400", m.Raw)
		}
	}
	if done := posEvent(t, pos, protocol.ActionPaymentComplete, id); done.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("sale ended %s, want COMPLETED", done.Transaction.Status)
	}
	if got := e.storedRev(t, id); got != "2" {
		t.Fatalf("stored rev %s, want 2: the two frames before the binary one in one commit", got)
	}
}
