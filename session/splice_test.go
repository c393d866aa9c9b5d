package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// rawSink keeps every POS message the engine delivers, as delivered.
type rawSink struct {
	mu   sync.Mutex
	msgs []Message
}

func (s *rawSink) DeliverPOS(_, _ string, msgs []Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, msgs...)
}
func (s *rawSink) NudgePOS(_, _ string)                       {}
func (s *rawSink) SendTerminal(_ string, _ []TerminalCommand) {}

// The outbox entries a commit writes without the transaction's bytes
// (xaddw: spliced in by the script from the transaction's save) are, byte
// for byte, the messages the engine delivered: a POS that reconnects is
// replayed exactly what it was sent. Both kinds of entry are covered: a
// run's paymentStatusUpdate carries the transaction as of the first event
// (not what the commit saves: sent whole) and its paymentComplete the
// transaction the commit saves (spliced).
func TestOutboxEntriesAreTheMessagesDelivered(t *testing.T) {
	r := redistest.New(t)
	ks := keys.Space{Prefix: r.Prefix}
	sink := &rawSink{}
	ops := &opsSeen{}
	r.Client.AddHook(redistest.SeeHook(ops.note))
	e := NewEngine(Options{Store: NewStore(r.Client, ks), Terminals: benchTerminals{}, Sink: sink, Logger: zerolog.Nop(),
		Webhooks: func(string) bool { return true }})
	ctx := context.Background()
	for i, together := range []bool{true, false} {
		res, err := nodeSale(t, e, "T1", fmt.Sprintf("splice-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Txn.ID
		if together {
			e.TerminalEvents(ctx, "m1", "T1", []any{&protocol.CommandReceived{TransactionID: id}, approved(id)},
				func(i int, err error) { t.Fatalf("event %d refused: %v", i, err) })
		} else {
			nodeApprove(t, e, "T1", id)
		}
	}
	entries, err := r.Client.XRange(ctx, ks.Outbox("m1", "pk1"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(entries) != 4 || len(sink.msgs) != 4 {
		t.Fatalf("%d entries in the outbox, %d messages delivered; want 4 and 4", len(entries), len(sink.msgs))
	}
	for i, m := range sink.msgs {
		if entries[i].ID != m.ID || entries[i].Values["m"] != string(m.Data) {
			t.Errorf("entry %d is %s %q, delivered %s %q", i, entries[i].ID, entries[i].Values["m"], m.ID, m.Data)
		}
		// Numbered 1 to 4 in order, two of them by one commit (which
		// raises the counter once for both).
		if m.Seq != int64(i+1) {
			t.Errorf("message %d has number %d, want %d", i, m.Seq, i+1)
		}
	}
	if n, err := r.Client.Get(ctx, ks.OutboxSeq("m1", "pk1")).Int64(); err != nil || n != 4 {
		t.Errorf("outbox counter %d (%v), want 4", n, err)
	}
	// The webhook events (spliced too) carry the transaction as it ended.
	hooks, err := r.Client.XRange(ctx, ks.Webhooks("m1"), "-", "+").Result()
	if err != nil || len(hooks) != 2 {
		t.Fatalf("%d webhook events (%v), want 2", len(hooks), err)
	}
	for _, h := range hooks {
		var evt WebhookEvent
		if err := json.Unmarshal([]byte(h.Values["m"].(string)), &evt); err != nil || evt.Data.Transaction == nil {
			t.Fatalf("webhook event %q: %v", h.Values["m"], err)
		}
		got := evt.Data.Transaction
		want, err := e.Get(ctx, "m1", got.ID)
		if err != nil {
			t.Fatal(err)
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if !bytes.Equal(gb, wb) {
			t.Errorf("webhook event's transaction %s, stored %s", gb, wb)
		}
	}
	// Both spliced kinds were sent, and a whole one: what is compared
	// above went each way.
	for _, op := range []string{"xaddw", "appendw", "xadd"} {
		if ops.count(op) == 0 {
			t.Errorf("no commit sent an %s", op)
		}
	}
}

// opsSeen counts the commit ops sent to Redis, by name; its note is a
// redistest.SeeHook.
type opsSeen struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *opsSeen) count(op string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[op]
}

func (o *opsSeen) note(cmds ...redis.Cmder) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	for _, c := range cmds {
		for _, a := range c.Args() {
			if s, ok := a.(string); ok && (s == "xaddw" || s == "appendw" || s == "xadd" || s == "append") {
				o.n[s]++
			}
		}
	}
}

// A commit sends a message that carries the transaction it saves without
// the transaction's bytes, and one that carries another state of it (or
// something else) whole.
func TestCommitSendsASavedTransactionOnce(t *testing.T) {
	s := NewStore(nil, keys.Space{Prefix: "x:"})
	txn := &Txn{Transaction: protocol.Transaction{ID: "txn_1", MerchantID: "m1", TerminalID: "T1", Status: protocol.StatusCompleted, AmountMinor: 1250, Currency: "USD"}}
	c := newCommit()
	saved, err := s.saveTxn(c, txn, nil)
	if err != nil {
		t.Fatal(err)
	}
	same, err := protocol.POSEvent{Action: protocol.ActionPaymentComplete, TransactionID: "txn_1", Transaction: &txn.Transaction}.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	older := txn.Transaction
	older.Status = protocol.StatusDispatched
	other, err := protocol.POSEvent{Action: protocol.ActionPaymentStatusUpdate, TransactionID: "txn_1", Transaction: &older}.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.xadd("out", "seq", same, saved)
	c.xadd("out", "seq", other, saved)
	c.appendEntry("hooks", []byte(`{"data":"none"}`), saved)
	var kinds []string
	for i := 0; i < len(c.ops); {
		op := c.ops[i].(string)
		kinds = append(kinds, op)
		n, known := map[string]int{"hset": 4, "zadd": 4, "xaddw": 8, "xadd": 5, "append": 3}[op]
		if !known {
			t.Fatalf("unexpected op %q in %v", op, kinds)
		}
		i += n
	}
	if got := fmt.Sprint(kinds); got != "[hset xaddw xadd append]" {
		t.Fatalf("ops %s, want [hset xaddw xadd append]", got)
	}
	// The first entry to the outbox counts both; the second none.
	if c.ops[7] != 2 || c.ops[15] != 0 {
		t.Fatalf("outbox counts %v and %v, want 2 and 0", c.ops[7], c.ops[15])
	}
	// What xaddw leaves out is the transaction, and only that.
	before, after := c.ops[8].([]byte), c.ops[9].([]byte)
	if n := len(same) - len(before) - len(after); n != len(saved.wire) || c.ops[11] != len(saved.wire) || c.ops[10] != saved.ref {
		t.Fatalf("xaddw leaves out %d bytes with ref %v and length %v; the saved wire JSON is %d bytes at %d", n, c.ops[10], c.ops[11], len(saved.wire), saved.ref)
	}
}
