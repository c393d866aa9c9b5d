package session

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// Two engines on one Redis stand for two hub nodes: each keeps its own
// caches, so one node's memory of a terminal is stale as soon as the other
// commits. These tests show a stale guess costs a retry, never a wrong
// answer, and that the guess does save the read when it is right.

// readCounter counts the reads a create makes before its commit.
type readCounter struct{ mget, get atomic.Int64 }

func (h *readCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *readCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "mget":
			h.mget.Add(1)
		case "get":
			h.get.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *readCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// twoNodes returns two engines sharing one Redis and key space, and the
// read counter of the first.
func twoNodes(t *testing.T) (a, b *Engine, reads *readCounter) {
	t.Helper()
	r := redistest.New(t)
	ks := keys.Space{Prefix: r.Prefix}
	newNode := func(rdb redis.UniversalClient) *Engine {
		return NewEngine(Options{Store: NewStore(rdb, ks), Terminals: benchTerminals{}, Sink: benchSink{}, Logger: zerolog.Nop()})
	}
	opts := r.Client.Options()
	ca := redis.NewClient(&redis.Options{Addr: opts.Addr, DB: opts.DB, Username: opts.Username, Password: opts.Password})
	t.Cleanup(func() { _ = ca.Close() })
	reads = &readCounter{}
	ca.AddHook(reads)
	return newNode(ca), newNode(r.Client), reads
}

func nodeSale(t *testing.T, e *Engine, terminal, ref string) (Result, error) {
	t.Helper()
	amount := int64(1250)
	return e.Create(context.Background(), CreateInput{MerchantID: "m1", APIKeyID: "pk1",
		Req: &protocol.PaymentRequest{TerminalID: terminal, AmountMinor: &amount, Currency: "USD", Reference: ref}})
}

// nodeApprove takes a dispatched sale to COMPLETED through e.
func nodeApprove(t *testing.T, e *Engine, terminal, id string) {
	t.Helper()
	ctx := context.Background()
	if err := e.TerminalEvent(ctx, "m1", terminal, &protocol.CommandReceived{TransactionID: id}); err != nil {
		t.Fatalf("commandReceived: %v", err)
	}
	if err := e.TerminalEvent(ctx, "m1", terminal, &protocol.PaymentResult{TransactionID: id, Outcome: protocol.OutcomeApproved,
		AuthCode: "A1B2C3", ResponseCode: "00", CardScheme: "visa", MaskedPAN: "424242******4242", EntryMode: "contactless"}); err != nil {
		t.Fatalf("paymentResult: %v", err)
	}
}

func TestCreateSkipsReadsWhenThisNodeFreedTheTerminal(t *testing.T) {
	a, _, reads := twoNodes(t)
	first, err := nodeSale(t, a, "T1", "r1")
	if err != nil {
		t.Fatal(err)
	}
	nodeApprove(t, a, "T1", first.Txn.ID)
	before := reads.mget.Load() + reads.get.Load()
	second, err := nodeSale(t, a, "T1", "r2")
	if err != nil || second.Status != 201 {
		t.Fatalf("second sale: %+v, %v; want 201", second, err)
	}
	if n := reads.mget.Load() + reads.get.Load() - before; n != 0 {
		t.Fatalf("a sale on a terminal this node saw freed read Redis %d times before its commit, want 0", n)
	}
}

func TestStaleFreeTerminalStillAnswersDeviceBusy(t *testing.T) {
	a, b, _ := twoNodes(t)
	first, err := nodeSale(t, a, "T1", "r1")
	if err != nil {
		t.Fatal(err)
	}
	nodeApprove(t, a, "T1", first.Txn.ID) // a now remembers T1 as free
	other, err := nodeSale(t, b, "T1", "r2")
	if err != nil {
		t.Fatal(err)
	}
	// The terminal takes it: DISPATCHED, no longer supersedable.
	if err := b.TerminalEvent(context.Background(), "m1", "T1", &protocol.CommandReceived{TransactionID: other.Txn.ID}); err != nil {
		t.Fatalf("commandReceived on the other node: %v", err)
	}
	_, err = nodeSale(t, a, "T1", "r3")
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeDeviceBusy {
		t.Fatalf("sale on a terminal the other node made busy: %v, want device_busy", err)
	}
}

func TestStaleFreeTerminalStillFindsRepeatedReference(t *testing.T) {
	a, _, _ := twoNodes(t)
	first, err := nodeSale(t, a, "T1", "r1")
	if err != nil {
		t.Fatal(err)
	}
	nodeApprove(t, a, "T1", first.Txn.ID)
	again, err := nodeSale(t, a, "T1", "r1")
	if err != nil || again.Status != 200 || again.Created || again.Txn.ID != first.Txn.ID || again.Txn.Status != protocol.StatusCompleted {
		t.Fatalf("repeated reference: %+v, %v; want 200 with %s COMPLETED", again, err, first.Txn.ID)
	}
}

func TestStaleFreeTerminalSupersedesOtherNodesPendingSale(t *testing.T) {
	a, b, _ := twoNodes(t)
	first, err := nodeSale(t, a, "T1", "r1")
	if err != nil {
		t.Fatal(err)
	}
	nodeApprove(t, a, "T1", first.Txn.ID)
	// b's sale stays PENDING: b's terminal view says the terminal is
	// reconnecting, so nothing is sent.
	b.SetTerminals(reconnectingTerminals{})
	pending, err := nodeSale(t, b, "T1", "r2")
	if err != nil || pending.Txn.Status != protocol.StatusPending {
		t.Fatalf("sale on the other node: %+v, %v; want PENDING", pending, err)
	}
	next, err := nodeSale(t, a, "T1", "r3")
	if err != nil || next.Status != 201 {
		t.Fatalf("sale after the other node's PENDING one: %+v, %v; want 201", next, err)
	}
	old, err := a.store.Load(context.Background(), "m1", pending.Txn.ID)
	if err != nil || old.Status != protocol.StatusSuperseded {
		t.Fatalf("the other node's PENDING sale: %v, %v; want SUPERSEDED", old, err)
	}
}

// reconnectingTerminals has every terminal in its grace period.
type reconnectingTerminals struct{}

func (reconnectingTerminals) ResolveTerminal(_, terminalID string) (string, bool) {
	return terminalID, true
}
func (reconnectingTerminals) TerminalLive(string) (TerminalStatus, string, time.Time) {
	return protocol.TerminalReconnecting, "", time.Now().Add(time.Minute)
}

// offlineTerminals has every terminal offline.
type offlineTerminals struct{}

func (offlineTerminals) ResolveTerminal(_, terminalID string) (string, bool) { return terminalID, true }
func (offlineTerminals) TerminalLive(string) (TerminalStatus, string, time.Time) {
	return protocol.TerminalOffline, "", time.Time{}
}

// A repeated reference is answered with its transaction even when the
// terminal has since gone offline: the reference is read before the
// offline check, whatever the node remembers.
func TestRepeatedReferenceOnOfflineTerminalFindsTransaction(t *testing.T) {
	a, _, _ := twoNodes(t)
	first, err := nodeSale(t, a, "T1", "r1")
	if err != nil {
		t.Fatal(err)
	}
	nodeApprove(t, a, "T1", first.Txn.ID)
	a.SetTerminals(offlineTerminals{})
	again, err := nodeSale(t, a, "T1", "r1")
	if err != nil || again.Status != 200 || again.Txn.ID != first.Txn.ID {
		t.Fatalf("repeated reference on an offline terminal: %+v, %v; want 200 with %s", again, err, first.Txn.ID)
	}
	_, err = nodeSale(t, a, "T1", "r2")
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeTerminalOffline {
		t.Fatalf("new sale on an offline terminal: %v, want terminal_offline", err)
	}
}

// A POS request refused on a stale cached copy would be a wrong answer no
// rev catches, since a refusal commits nothing: node a cached the sale at
// PENDING, node b took it on to AWAITING_SIGNATURE, and a's answer to the
// signature must be judged on what Redis holds. (Within one node the same
// happens when a POS hears of a commit through a replay before the
// committing goroutine has cached it; sim's TestSignature found that.)
func TestRefusalIsNotDecidedOnAStaleCachedCopy(t *testing.T) {
	a, b, _ := twoNodes(t)
	ctx := context.Background()
	res, err := nodeSale(t, a, "T1", "stale-refusal")
	if err != nil {
		t.Fatal(err)
	}
	id := res.Txn.ID
	for _, ev := range []any{&protocol.CommandReceived{TransactionID: id}, &protocol.SignatureRequiredEvent{TransactionID: id}} {
		if err := b.TerminalEvent(ctx, "m1", "T1", ev); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Act(ctx, ActInput{MerchantID: "m1", TxnID: id, Event: EvSignatureAnswer{Accepted: true}})
	if err != nil {
		t.Fatalf("signature answer on node a: %v (its cached copy is still PENDING)", err)
	}
	if got.Txn.Status != protocol.StatusInProgress {
		t.Fatalf("status %s after the answer, want IN_PROGRESS", got.Txn.Status)
	}
}
