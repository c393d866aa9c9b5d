package session

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redisfault"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// faultEngine is an engine on a test Redis whose client a test can stall
// or make lose replies, with a fake clock.
func faultEngine(t *testing.T) (*Engine, *recordSink, *redistest.Redis, *redisfault.Faults, *clock.Fake) {
	t.Helper()
	r := redistest.New(t)
	f := &redisfault.Faults{}
	r.Client.AddHook(f)
	sink := &recordSink{}
	clk := clock.NewFake(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	e := NewEngine(Options{Store: NewStore(r.Client, keys.Space{Prefix: r.Prefix}), Terminals: benchTerminals{}, Sink: sink,
		Logger: zerolog.Nop(), Clock: clk, Merchants: func() []string { return []string{"m1"} }})
	t.Cleanup(e.Close)
	return e, sink, r, f, clk
}

// dispatched is a sale on T1 the terminal has taken; the sink is emptied.
func dispatched(t *testing.T, e *Engine, sink *recordSink, ref string) string {
	t.Helper()
	res, err := nodeSale(t, e, "T1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.TerminalEvent(context.Background(), "m1", "T1", &protocol.CommandReceived{TransactionID: res.Txn.ID}); err != nil {
		t.Fatal(err)
	}
	sink.take()
	return res.Txn.ID
}

// resultIntoAStall stalls Redis and has the terminal approve id: the
// commit is lost (sent, no answer).
func resultIntoAStall(t *testing.T, e *Engine, f *redisfault.Faults, id string) {
	t.Helper()
	f.Stall()
	if err := e.TerminalEvent(context.Background(), "m1", "T1", approved(id)); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("result into a stalled Redis: %v, want ErrOutcomeUnknown", err)
	}
}

// delivered checks what the sink was told since it was last emptied.
func delivered(t *testing.T, sink *recordSink, want ...string) {
	t.Helper()
	if got := sink.take(); !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
}

func waitIdle(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !e.WaitIdle(ctx) {
		t.Fatal("the engine still holds transactions after 10 s")
	}
}

func statusOf(t *testing.T, e *Engine, id string) *protocol.Transaction {
	t.Helper()
	txn, err := e.Get(context.Background(), "m1", id)
	if err != nil {
		t.Fatal(err)
	}
	return txn
}

// A result whose commit was applied but whose reply was lost: the terminal
// is told unavailable, and the engine carries out what the commit asked
// once it finds its rev in Redis: resultAck to the terminal, the POS
// nudged to read its outbox (the entries' ids are not known), the
// payment's deadline disarmed.
func TestLostReplyOfAnAppliedCommitIsCarriedOut(t *testing.T) {
	e, sink, _, f, _ := faultEngine(t)
	id := dispatched(t, e, sink, "lost-reply")
	f.LoseReplies(1)
	err := e.TerminalEvent(context.Background(), "m1", "T1", approved(id))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("result with its reply lost: %v, want ErrOutcomeUnknown", err)
	}
	waitIdle(t, e)
	delivered(t, sink, "terminal resultAck", "nudge pk1")
	if s := statusOf(t, e, id).Status; s != protocol.StatusCompleted {
		t.Fatalf("status %s, want COMPLETED", s)
	}
	if n := e.ArmedTimers(); n != 0 {
		t.Fatalf("%d timers armed after the payment completed", n)
	}
}

// A result sent into a stalled Redis that was killed before reading it:
// the transaction is held (no other change, no deadline) until Redis
// answers, then the commit is fenced off and the result applied again,
// delivered like any other.
func TestStalledCommitThatNeverRanIsAppliedAgain(t *testing.T) {
	e, sink, r, f, _ := faultEngine(t)
	id := dispatched(t, e, sink, "never-ran")
	resultIntoAStall(t, e, f, id)
	// Held: a POS's cancel and the payment's deadline wait.
	_, err := e.Act(context.Background(), ActInput{MerchantID: "m1", TxnID: id, Action: protocol.ActionCancel, Event: EvCancel{}})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("cancel of a held transaction: %v, want ErrUnavailable", err)
	}
	if err := e.Deadline(context.Background(), "m1", id, DeadlinePayment); !errors.Is(err, errHeld) {
		t.Fatalf("deadline of a held transaction: %v, want errHeld", err)
	}
	if n := f.Resume(0); n == 0 {
		t.Fatal("nothing reached the stalled Redis")
	}
	waitIdle(t, e)
	delivered(t, sink, "terminal resultAck", "pos paymentComplete COMPLETED v3")
	if got := rev(t, r, id); got != "4" {
		t.Fatalf("%s commits, want 4: create, commandReceived, the fence, the result", got)
	}
}

// The same, but Redis wakes up and runs the stalled commit: the engine
// finds it applied and carries it out, without applying the result twice.
func TestStalledCommitThatRanLaterIsCarriedOut(t *testing.T) {
	e, sink, r, f, _ := faultEngine(t)
	id := dispatched(t, e, sink, "ran-later")
	resultIntoAStall(t, e, f, id)
	f.Resume(-1)
	waitIdle(t, e)
	delivered(t, sink, "terminal resultAck", "nudge pk1")
	if got := rev(t, r, id); got != "3" {
		t.Fatalf("%s commits, want 3: create, commandReceived, the result once", got)
	}
}

// A result held while its payment's deadline falls due: the result wins,
// and the deadline, tried again, finds nothing to do.
func TestHeldResultWinsOverItsDeadline(t *testing.T) {
	e, sink, _, f, clk := faultEngine(t)
	id := dispatched(t, e, sink, "result-first")
	resultIntoAStall(t, e, f, id)
	clk.Advance(181 * time.Second) // the deadline fires, finds the transaction held
	f.Resume(0)
	waitIdle(t, e)
	clk.Advance(2 * time.Second) // the deadline's retry
	txn := statusOf(t, e, id)
	if txn.Status != protocol.StatusCompleted {
		t.Fatalf("status %s, want COMPLETED: the result came before the deadline", txn.Status)
	}
	for _, h := range txn.History {
		if h.Status == protocol.StatusTimedOut {
			t.Fatalf("history has TIMED_OUT: %+v", txn.History)
		}
	}
}

// A sale whose commit was lost: if Redis never ran it, it is fenced off
// (a retry of its reference creates the sale); if Redis ran it, the
// terminal gets its startPayment and a retry answers the same sale.
func TestLostCreateIsCarriedOutOrFencedOff(t *testing.T) {
	for _, ran := range []bool{false, true} {
		name := "never ran"
		if ran {
			name = "ran later"
		}
		t.Run(name, func(t *testing.T) {
			e, sink, _, f, _ := faultEngine(t)
			// A first sale makes the engine know the terminal is free, so
			// that the next goes straight to its commit.
			nodeApprove(t, e, "T1", dispatched(t, e, sink, "first"))
			sink.take()
			f.Stall()
			if _, err := nodeSale(t, e, "T1", "lost-create"); !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("create into a stalled Redis: %v, want ErrOutcomeUnknown", err)
			}
			if ran {
				f.Resume(-1)
			} else {
				f.Resume(0)
			}
			waitIdle(t, e)
			got := sink.take()
			res, err := nodeSale(t, e, "T1", "lost-create")
			if err != nil {
				t.Fatal(err)
			}
			if res.Created == ran {
				t.Fatalf("retrying the reference: created=%v, want %v", res.Created, !ran)
			}
			if want := []string{"terminal startPayment"}; ran && !slices.Equal(got, want) {
				t.Fatalf("carried out %q, want %q", got, want)
			}
			if !ran && len(got) != 0 {
				t.Fatalf("a create that never ran carried out %q", got)
			}
		})
	}
}

// A deadline in Redis that no timer of this engine watches (another
// process committed it, then died) is found by the sweep and fires.
func TestSweepArmsADeadlineNoTimerWatches(t *testing.T) {
	a, sink, r, _, clk := faultEngine(t)
	id := dispatched(t, a, sink, "orphan")
	b := NewEngine(Options{Store: NewStore(r.Client, keys.Space{Prefix: r.Prefix}), Terminals: benchTerminals{}, Sink: sink,
		Logger: zerolog.Nop(), Clock: clk, Merchants: func() []string { return []string{"m1"} }})
	t.Cleanup(b.Close)
	a.Close()
	a.timers.mu.Lock()
	for k, armed := range a.timers.m { // a dies: its timers with it
		armed.t.Stop()
		delete(a.timers.m, k)
	}
	a.timers.mu.Unlock()
	clk.Advance(181 * time.Second)
	if s := statusOf(t, b, id).Status; s != protocol.StatusDispatched {
		t.Fatalf("status %s before the sweep, want DISPATCHED (nobody watches the deadline)", s)
	}
	b.Sweep()
	clk.Advance(0)
	if s := statusOf(t, b, id).Status; s != protocol.StatusTimedOut {
		t.Fatalf("status %s after the sweep, want TIMED_OUT", s)
	}
}

// A resolution that fenced a lost commit off, and whose own reply was lost
// too, is recognised by the next attempt (the fence is the same on every
// attempt): the result is applied again, not given up as overtaken.
func TestResolutionWhoseReplyWasLostIsRecognised(t *testing.T) {
	e, sink, r, f, _ := faultEngine(t)
	id := dispatched(t, e, sink, "fence-lost")
	resultIntoAStall(t, e, f, id)
	f.LoseScriptReplies(1) // the first script after the stall: the resolution's
	f.Resume(0)
	waitIdle(t, e)
	delivered(t, sink, "terminal resultAck", "pos paymentComplete COMPLETED v3")
	if got := rev(t, r, id); got != "4" {
		t.Fatalf("%s commits, want 4: create, commandReceived, the fence, the result", got)
	}
}

// A lost commit that reaches Redis only after it was fenced off (delayed
// in the network) changes nothing: the result, applied again, stands, and
// the late commit fails its condition.
func TestLateCommitAfterItsFenceChangesNothing(t *testing.T) {
	e, sink, r, f, _ := faultEngine(t)
	id := dispatched(t, e, sink, "late")
	resultIntoAStall(t, e, f, id)
	f.ResumeLate()
	waitIdle(t, e) // fenced off, the result applied again
	delivered(t, sink, "terminal resultAck", "pos paymentComplete COMPLETED v3")
	before := rev(t, r, id)
	if n := f.Arrive(); n == 0 {
		t.Fatal("nothing was on its way")
	}
	if got := rev(t, r, id); got != before || got != "4" {
		t.Fatalf("%s commits after the late commit arrived (%s before), want 4: it must fail its condition", got, before)
	}
	if s := statusOf(t, e, id).Status; s != protocol.StatusCompleted {
		t.Fatalf("status %s, want COMPLETED", s)
	}
}

// What a rev that is neither the one a lost commit expected nor the one it
// wrote says of it: its own fence (an attempt whose reply was lost) or a
// sibling's that replaced its expected rev, not applied; a sibling's that
// replaced the rev it wrote, applied (the sibling was built on its
// result); anything else, another writer's.
func TestFencedByTellsOwnAndSiblingFences(t *testing.T) {
	e := NewEngine(Options{Logger: zerolog.Nop()})
	const prev, next, own, sibling, other = 1<<32 | 7, 2<<32 | 9, 2<<32 | 11, 3<<32 | 13, 3<<32 | 17
	u := &lostCommit{merchantID: "m1", p: &pending{arm: []*Txn{{Transaction: protocol.Transaction{ID: "txn_1"}}},
		revs: []revChange{{prev: prev, next: next}}}, fence: own}
	e.work.txns[cacheKey{"m1", "txn_1"}] = &held{merchantID: "m1", id: "txn_1"}
	for _, c := range []struct {
		name     string
		replaced int64 // by the sibling's fence; 0: no sibling fence
		rev      int64
		want     outcome
	}{
		{"its own fence", 0, own, outcomeNotApplied},
		{"a sibling's fence of the rev it expected", prev, sibling, outcomeNotApplied},
		{"a sibling's fence of the rev it wrote", next, sibling, outcomeApplied},
		{"a sibling's fence of another rev", other, sibling, outcomeMoved},
		{"another writer's rev", next, other, outcomeMoved},
	} {
		h := e.work.txns[cacheKey{"m1", "txn_1"}]
		h.fences = nil
		if c.replaced != 0 {
			h.fences = []fenceRec{{fence: sibling, replaced: c.replaced}}
		}
		if got := e.work.fencedBy(u, c.rev); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
