package session

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// Microbenchmarks of a payment's transitions and of its commits on Redis.
// Every identifier here starts with "bench" (or Benchmark) so that this
// file cannot collide with the package's other test files.

var benchSettings = Settings{SignatureTimeout: time.Minute, CommandTimeout: 3 * time.Minute}

// benchDispatched is a sale the terminal has taken (DISPATCHED), built by
// Apply itself.
func benchDispatched(now time.Time) *Txn {
	t := &Txn{APIKeyID: "pk1", Transaction: protocol.Transaction{
		ID: "txn_0123456789abcdef01234567", MerchantID: "m1", TerminalID: "T1", Type: protocol.TypeSale,
		Status: protocol.StatusPending, AmountMinor: 1250, Amount: "12.50", Currency: "USD", Reference: "order-1",
		CaptureMode: protocol.CaptureAuto, PrintReceipt: true, TimeoutSeconds: 180, Version: 1, CreatedAt: now, UpdatedAt: now,
		History: []protocol.HistoryEntry{{Status: protocol.StatusPending, At: now, Cause: "created"}},
	}}
	Apply(t, EvSent{ConnectionID: "conn_1"}, now, benchSettings)
	Apply(t, EvCommandReceived{}, now, benchSettings)
	return t
}

var benchApproved = protocol.PaymentResult{TransactionID: "txn_0123456789abcdef01234567", Outcome: protocol.OutcomeApproved,
	AuthCode: "A1B2C3", ResponseCode: "00", CardScheme: "visa", MaskedPAN: "424242******4242", EntryMode: "contactless"}

// BenchmarkApplyResult is the transition a payment ends with: DISPATCHED
// and an approved paymentResult → COMPLETED with its paymentComplete. Each
// iteration copies the transaction first (Apply changes it in place).
func BenchmarkApplyResult(b *testing.B) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	base := benchDispatched(now)
	if base.Status != protocol.StatusDispatched {
		b.Fatalf("status %s, want DISPATCHED", base.Status)
	}
	ev := EvResult{Result: benchApproved}
	b.ReportAllocs()
	for b.Loop() {
		t := *base
		t.History = slices.Clip(base.History)
		fx, perr := Apply(&t, ev, now, benchSettings)
		if perr != nil || t.Status != protocol.StatusCompleted || len(fx.POS) != 1 {
			b.Fatalf("Apply: %v, status %s, %d messages", perr, t.Status, len(fx.POS))
		}
	}
}

// benchTerminals has every terminal online.
type benchTerminals struct{}

func (benchTerminals) ResolveTerminal(_, terminalID string) (string, bool) { return terminalID, true }
func (benchTerminals) TerminalLive(string) (TerminalStatus, string, time.Time) {
	return protocol.TerminalOnline, "conn_bench", time.Time{}
}

// benchSink drops every effect.
type benchSink struct{}

func (benchSink) DeliverPOS(string, string, []Message)   {}
func (benchSink) NudgePOS(string, string)                {}
func (benchSink) SendTerminal(string, []TerminalCommand) {}

func benchEngine(rdb redis.UniversalClient, prefix string) *Engine {
	return NewEngine(Options{Store: NewStore(rdb, keys.Space{Prefix: prefix}), Terminals: benchTerminals{}, Sink: benchSink{}, Logger: zerolog.Nop()})
}

// BenchmarkStoreCommit measures a payment's commits on Redis: Create (its
// reads and its one atomic commit) and a whole payment (Create, then the
// terminal's commandReceived and approved paymentResult: three commits).
// It runs on miniredis, and also on the real Redis of REDIS_URL when set.
func BenchmarkStoreCommit(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) (redis.UniversalClient, string)
	}{
		{"miniredis", func(b *testing.B) (redis.UniversalClient, string) {
			m := miniredis.RunT(b)
			c := redis.NewClient(&redis.Options{Addr: m.Addr()})
			b.Cleanup(func() { _ = c.Close() })
			return c, "bench:"
		}},
	}
	if os.Getenv("REDIS_URL") != "" {
		backends = append(backends, struct {
			name string
			open func(b *testing.B) (redis.UniversalClient, string)
		}{"redis", func(b *testing.B) (redis.UniversalClient, string) {
			r := redistest.New(b)
			return r.Client, r.Prefix
		}})
	}
	amount := int64(1250)
	for _, be := range backends {
		b.Run(be.name+"/create", func(b *testing.B) {
			rdb, prefix := be.open(b)
			e := benchEngine(rdb, prefix)
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				// A terminal of its own each time, so that no create waits
				// for or supersedes another.
				n := strconv.Itoa(i)
				if _, err := e.Create(ctx, CreateInput{MerchantID: "m1", APIKeyID: "pk1",
					Req: &protocol.PaymentRequest{TerminalID: "T" + n, AmountMinor: &amount, Currency: "USD", Reference: "r" + n}}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(be.name+"/payment", func(b *testing.B) {
			rdb, prefix := be.open(b)
			e := benchEngine(rdb, prefix)
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				res, err := e.Create(ctx, CreateInput{MerchantID: "m1", APIKeyID: "pk1",
					Req: &protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &amount, Currency: "USD", Reference: "p" + strconv.Itoa(i)}})
				if err != nil {
					b.Fatal(err)
				}
				id := res.Txn.ID
				if err := e.TerminalEvent(ctx, "m1", "T1", &protocol.CommandReceived{TransactionID: id}); err != nil {
					b.Fatal(err)
				}
				r := benchApproved
				r.TransactionID = id
				if err := e.TerminalEvent(ctx, "m1", "T1", &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeTxn is the stored copy of a completed sale, written by
// every commit: the hand-written encoder (txn_json.go) and encoding/json's
// reflection, which it replaced.
func BenchmarkEncodeTxn(b *testing.B) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	t := benchDispatched(now)
	Apply(t, EvResult{Result: benchApproved}, now, benchSettings)
	b.Run("hand-written", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := t.encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(t); err != nil {
				b.Fatal(err)
			}
		}
	})
}
