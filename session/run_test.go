package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// recordSink records what the engine delivers, in order, as one log.
type recordSink struct {
	mu  sync.Mutex
	log []string // "pos <action> <status>" or "terminal <action>"
}

func (s *recordSink) DeliverPOS(_, _ string, msgs []Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		var ev protocol.POSEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil || m.ID == "" {
			s.log = append(s.log, fmt.Sprintf("bad POS message %q (id %q): %v", m.Data, m.ID, err))
			continue
		}
		s.log = append(s.log, fmt.Sprintf("pos %s %s v%d", ev.Action, ev.Transaction.Status, ev.Version))
	}
}

func (s *recordSink) NudgePOS(_, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, "nudge "+key)
}

func (s *recordSink) SendTerminal(_ string, cmds []TerminalCommand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cmds {
		b, _ := json.Marshal(c)
		var m struct{ Action string }
		_ = json.Unmarshal(b, &m)
		s.log = append(s.log, "terminal "+m.Action)
	}
}

func (s *recordSink) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.log
	s.log = nil
	return out
}

// runEngine is an engine on a test Redis with a recording sink.
func runEngine(t *testing.T) (*Engine, *recordSink, *redistest.Redis) {
	t.Helper()
	r := redistest.New(t)
	sink := &recordSink{}
	e := NewEngine(Options{Store: NewStore(r.Client, keys.Space{Prefix: r.Prefix}), Terminals: benchTerminals{}, Sink: sink, Logger: zerolog.Nop()})
	return e, sink, r
}

// rev is the number of commits a transaction has had.
func rev(t *testing.T, r *redistest.Redis, id string) string {
	t.Helper()
	v, err := r.Client.HGet(context.Background(), keys.Space{Prefix: r.Prefix}.Txn("m1", id), "rev").Int64()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(Commits(v), 10)
}

func approved(id string) *protocol.PaymentResult {
	return &protocol.PaymentResult{TransactionID: id, Outcome: protocol.OutcomeApproved, AuthCode: "A1",
		MaskedPAN: "411111******1111", CardScheme: "visa", EntryMode: "emv_chip"}
}

// A terminal's commandReceived and paymentResult handed over together are
// one commit, with every message of both, in order, as two calls would give.
func TestTerminalEventsCommitARunTogether(t *testing.T) {
	e, sink, r := runEngine(t)
	res, err := nodeSale(t, e, "T1", "run-1")
	if err != nil {
		t.Fatal(err)
	}
	id := res.Txn.ID
	sink.take()
	var refused []string
	e.TerminalEvents(context.Background(), "m1", "T1", []any{&protocol.CommandReceived{TransactionID: id}, approved(id)},
		func(i int, err error) { refused = append(refused, fmt.Sprint(i, err)) })
	if len(refused) > 0 {
		t.Fatalf("refused: %v", refused)
	}
	// A commit's terminal commands go before its POS messages (Engine.run).
	want := []string{"terminal resultAck", "pos paymentStatusUpdate DISPATCHED v2", "pos paymentComplete COMPLETED v3"}
	if got := sink.take(); !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	if got := rev(t, r, id); got != "2" {
		t.Fatalf("rev %s after the create and the run, want 2 (one commit for the run)", got)
	}

	// The same two messages one call each: the same deliveries, two commits.
	res2, err := nodeSale(t, e, "T1", "run-2")
	if err != nil {
		t.Fatal(err)
	}
	id2 := res2.Txn.ID
	sink.take()
	for _, b := range []any{&protocol.CommandReceived{TransactionID: id2}, approved(id2)} {
		if err := e.TerminalEvent(context.Background(), "m1", "T1", b); err != nil {
			t.Fatal(err)
		}
	}
	// Each connection gets the same frames in the same order; how the two
	// connections' frames interleave differs (each commit serves its
	// terminal first) and no client can see it.
	got := sink.take()
	for _, conn := range []string{"pos ", "terminal "} {
		if g, w := only(got, conn), only(want, conn); !slices.Equal(g, w) {
			t.Fatalf("one call each delivered %q to the %s, want %q", g, conn, w)
		}
	}
	if got := rev(t, r, id2); got != "3" {
		t.Fatalf("rev %s after one call each, want 3", got)
	}
}

// Errors come back in order, each as soon as it is known: a message about
// another transaction, or not the terminal's, is refused before what the
// next messages cause; one the machine refuses ends its run, the messages
// before it are committed and those after it applied afterwards.
func TestTerminalEventsRefusals(t *testing.T) {
	e, sink, r := runEngine(t)
	res, err := nodeSale(t, e, "T1", "run-3")
	if err != nil {
		t.Fatal(err)
	}
	id := res.Txn.ID
	sink.take()
	var got []string
	refused := func(i int, err error) {
		var pe *protocol.Error
		if !errors.As(err, &pe) {
			t.Fatalf("message %d: %v, want a client error", i, err)
		}
		got = append(got, sink.take()...) // what was delivered before the refusal
		got = append(got, fmt.Sprintf("refused %d %s", i, pe.Code))
	}
	e.TerminalEvents(context.Background(), "m1", "T1", []any{
		&protocol.CommandReceived{TransactionID: "txn_000000000000000000000000"}, // no such transaction
		&protocol.CommandReceived{TransactionID: id},
		&protocol.PaymentProgress{TransactionID: id, Stage: "card_presented"},
		&protocol.AckRequest{MessageID: "1-0"}, // not a terminal's message
		approved(id),
	}, refused)
	got = append(got, sink.take()...)
	want := []string{
		"refused 0 transaction_not_found",
		"pos paymentStatusUpdate DISPATCHED v2", "pos paymentStatusUpdate IN_PROGRESS v3",
		"refused 3 unknown_action",
		"terminal resultAck", "pos paymentComplete COMPLETED v4", // the terminal first, as in every commit
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := rev(t, r, id); got != "3" {
		t.Fatalf("rev %s, want 3 (the create, the run before the refusal, the result)", got)
	}

	// Another terminal's transaction is not found, for every message of its run.
	got = nil
	e.TerminalEvents(context.Background(), "m1", "T2", []any{&protocol.CommandReceived{TransactionID: id}, approved(id)}, refused)
	if want := []string{"refused 0 transaction_not_found", "refused 1 transaction_not_found"}; !slices.Equal(got, want) {
		t.Fatalf("another terminal: got %q, want %q", got, want)
	}
}

// updateRun stops at the first event the machine refuses: the events before
// it are committed, the refused one and those after it are not applied.
func TestUpdateRunStopsAtARefusal(t *testing.T) {
	e, sink, r := runEngine(t)
	res, err := nodeSale(t, e, "T1", "run-4")
	if err != nil {
		t.Fatal(err)
	}
	id := res.Txn.ID
	sink.take()
	txn, n, perr, err := e.updateRun(context.Background(), "m1", id,
		[]Event{EvCommandReceived{}, EvProgress{Stage: "card_presented"}, EvCancel{}, EvResult{Result: *approved(id)}}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || perr == nil || perr.Code != protocol.CodeInvalidState {
		t.Fatalf("applied %d, refusal %v; want 2 and invalid_state (a cancel while the card is in)", n, perr)
	}
	if txn.Status != protocol.StatusInProgress {
		t.Fatalf("status %s, want IN_PROGRESS (the result after the refusal not applied)", txn.Status)
	}
	want := []string{"pos paymentStatusUpdate DISPATCHED v2", "pos paymentStatusUpdate IN_PROGRESS v3"}
	if got := sink.take(); !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	if got := rev(t, r, id); got != "2" {
		t.Fatalf("rev %s, want 2", got)
	}
}

// only is the entries of log that start with prefix.
func only(log []string, prefix string) []string {
	var out []string
	for _, l := range log {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// A commit's terminal commands go out before its reply and POS messages:
// a sale's startPayment before the reply, a result's resultAck before
// paymentComplete (Engine.run).
func TestCommitServesTheTerminalFirst(t *testing.T) {
	e, sink, _ := runEngine(t)
	amount := int64(1250)
	ctx := WithReply(context.Background(), func(Result) {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		sink.log = append(sink.log, "reply")
	})
	res, err := e.Create(ctx, CreateInput{MerchantID: "m1", APIKeyID: "pk1",
		Req: &protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &amount, Currency: "USD", Reference: "next-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := sink.take(); len(got) < 2 || got[0] != "terminal startPayment" || got[1] != "reply" {
		t.Fatalf("a sale delivered %q, want the terminal's startPayment, then the reply", got)
	}
	if err := e.TerminalEvent(context.Background(), "m1", "T1", &protocol.CommandReceived{TransactionID: res.Txn.ID}); err != nil {
		t.Fatal(err)
	}
	sink.take()
	if err := e.TerminalEvent(context.Background(), "m1", "T1", approved(res.Txn.ID)); err != nil {
		t.Fatal(err)
	}
	want := []string{"terminal resultAck", "pos paymentComplete COMPLETED v3"}
	if got := sink.take(); !slices.Equal(got, want) {
		t.Fatalf("a result delivered %q, want %q", got, want)
	}
}

// answeringSink is a recordSink whose terminal answers startPayment at
// once, from another goroutine, as a real connection's reader would.
type answeringSink struct {
	*recordSink
	e        *Engine
	answered chan error
}

func (s *answeringSink) SendTerminal(device string, cmds []TerminalCommand) {
	s.recordSink.SendTerminal(device, cmds)
	for _, c := range cmds {
		if sp, ok := c.(protocol.StartPayment); ok {
			go func() {
				s.answered <- s.e.TerminalEvent(context.Background(), "m1", device, &protocol.CommandReceived{TransactionID: sp.TransactionID})
			}()
		}
	}
}

// The terminal hears of a sale before the POS gets its reply (the reply
// follows the commands), but what the terminal's answer causes still
// reaches the POS after the reply, although a sale's commit has no POS
// message of its own: the sale's turn in its API key's line (order.go)
// lasts until the reply is out, and the answer's commit, whose place is
// behind it, waits for it. The reply waits (up to 200 ms) for the answer's
// commit, which must not be able to finish first.
func TestSaleReplyPrecedesWhatTheTerminalsAnswerCauses(t *testing.T) {
	e, rec, _ := runEngine(t)
	sink := &answeringSink{recordSink: rec, e: e, answered: make(chan error, 1)}
	e.SetSink(sink)
	amount := int64(1250)
	ctx := WithReply(context.Background(), func(Result) {
		select {
		case err := <-sink.answered: // the answer was applied before the reply: the bug
			sink.answered <- err
		case <-time.After(200 * time.Millisecond):
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.log = append(rec.log, "reply")
	})
	if _, err := e.Create(ctx, CreateInput{MerchantID: "m1", APIKeyID: "pk1",
		Req: &protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &amount, Currency: "USD", Reference: "order-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := <-sink.answered; err != nil {
		t.Fatal(err)
	}
	want := []string{"terminal startPayment", "reply", "pos paymentStatusUpdate DISPATCHED v2"}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
}

// The observer (the ops feed) hears of a commit before the terminal does,
// so what the terminal's answer commits cannot reach it first: a sale's
// PENDING precedes its DISPATCHED there, as on the POS.
func TestObserverHearsBeforeTheTerminal(t *testing.T) {
	e, rec, _ := runEngine(t)
	sink := &answeringSink{recordSink: rec, e: e, answered: make(chan error, 1)}
	e.SetSink(sink)
	e.SetObserver(func(tx *protocol.Transaction) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.log = append(rec.log, fmt.Sprintf("observe %s v%d", tx.Status, tx.Version))
	})
	amount := int64(1250)
	if _, err := e.Create(context.Background(), CreateInput{MerchantID: "m1", APIKeyID: "pk1",
		Req: &protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &amount, Currency: "USD", Reference: "order-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := <-sink.answered; err != nil {
		t.Fatal(err)
	}
	want := []string{"observe PENDING v1", "terminal startPayment", "observe DISPATCHED v2", "pos paymentStatusUpdate DISPATCHED v2"}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
}
