package hub

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
)

// TestWaitAcksWaitsOnlyForEarlierAcks: a waiter returns once the acks
// queued before it are applied, even while later ones keep the line busy
// (a POS acking a long replay as it arrives must not starve a delivery).
func TestWaitAcksWaitsOnlyForEarlierAcks(t *testing.T) {
	h := New(Options{Logger: zerolog.Nop()})
	t.Cleanup(h.stop)
	k := ackLineKey("m1", "pk1")
	l := &ackLine{queued: 2}
	h.acks.lines = map[string]*ackLine{k: l}

	done := make(chan struct{})
	go func() {
		h.WaitAcks(context.Background(), "m1", "pk1")
		close(done)
	}()
	within(t, "the waiter to wait", func() bool {
		h.acks.mu.Lock()
		defer h.acks.mu.Unlock()
		return l.progress != nil
	})
	step := func(applied, queued uint64) {
		h.acks.mu.Lock()
		l.applied, l.queued = applied, queued
		l.wakeLocked()
		h.acks.mu.Unlock()
	}
	step(1, 3) // one of its two applied, one more queued behind it
	within(t, "the waiter to wait again", func() bool {
		h.acks.mu.Lock()
		defer h.acks.mu.Unlock()
		return l.progress != nil
	})
	select {
	case <-done:
		t.Fatal("WaitAcks returned with an earlier ack not applied")
	default:
	}
	step(2, 4) // both of its acks applied; the line is still busy
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WaitAcks still waits for acks queued after it")
	}

	// With nothing queued it returns at once; with a cancelled context too.
	h.WaitAcks(context.Background(), "m1", "other")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	step(2, 9)
	h.WaitAcks(ctx, "m1", "pk1")
}

// TestAckLineLingers: a line's goroutine stays for the next ack instead of
// ending with its queue (a POS acks every result, and a fresh goroutine per
// ack cost a stack growth or two each), and ends at once when the drain
// asks it to.
func TestAckLineLingers(t *testing.T) {
	// No outbox: an ack is applied as a no-op. The fake clock stands still:
	// only the drain can end the line.
	h := New(Options{Logger: zerolog.Nop(), Clock: clock.NewFake(time.Unix(0, 0))})
	t.Cleanup(h.stop)
	c := &conn{merchantID: "m1", keyID: "pk1", ctx: context.Background()}
	k := ackLineKey("m1", "pk1")
	line := func() *ackLine {
		h.acks.mu.Lock()
		defer h.acks.mu.Unlock()
		return h.acks.lines[k]
	}

	h.queueAck(c, nil, "1-1")
	h.WaitAcks(context.Background(), "m1", "pk1")
	first := line()
	if first == nil || first.applied != 1 {
		t.Fatalf("after one ack the line is %+v, want it kept with 1 applied", first)
	}
	h.queueAck(c, nil, "1-2")
	h.WaitAcks(context.Background(), "m1", "pk1")
	if l := line(); l != first || l.applied != 2 {
		t.Fatalf("the second ack went to line %p (%d applied), want the first one, %p, with 2", l, l.applied, first)
	}

	h.acks.endLinger()
	waitAckGoroutines(t, h, "the line's goroutine did not end when the drain asked")
	if l := line(); l != nil {
		t.Fatalf("the line is still registered after its goroutine ended: %+v", l)
	}
}

// TestAckLineEndsWithTheHub: a hub stopped without a drain does not keep a
// lingering line's goroutine.
func TestAckLineEndsWithTheHub(t *testing.T) {
	h := New(Options{Logger: zerolog.Nop(), Clock: clock.NewFake(time.Unix(0, 0))}) // only the stop can end it
	c := &conn{merchantID: "m1", keyID: "pk1", ctx: context.Background()}
	h.queueAck(c, nil, "1-1")
	h.WaitAcks(context.Background(), "m1", "pk1")
	h.stop()
	waitAckGoroutines(t, h, "the line's goroutine outlived the hub")
}

// TestAckLineEndsAfterLinger: with no further ack for ackLinger on the
// hub's clock, the line's goroutine ends and the line is gone; the next ack
// starts a new one.
func TestAckLineEndsAfterLinger(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	h := New(Options{Logger: zerolog.Nop(), Clock: clk})
	t.Cleanup(h.stop)
	c := &conn{merchantID: "m1", keyID: "pk1", ctx: context.Background()}
	h.queueAck(c, nil, "1-1")
	h.WaitAcks(context.Background(), "m1", "pk1")
	within(t, "the line to wait for its next ack", func() bool { return clk.Pending() == 1 })
	clk.Advance(ackLinger - time.Millisecond)
	if clk.Pending() != 1 {
		t.Fatal("the line stopped waiting before ackLinger had passed")
	}
	clk.Advance(time.Millisecond)
	waitAckGoroutines(t, h, "the line's goroutine outlived its linger")
	h.acks.mu.Lock()
	l := h.acks.lines[ackLineKey("m1", "pk1")]
	h.acks.mu.Unlock()
	if l != nil {
		t.Fatalf("the line is still registered after its linger: %+v", l)
	}
}

// waitAckGoroutines waits for every ack line's goroutine of h to end, and
// fails the test with failure if they have not within 5 s.
func waitAckGoroutines(t *testing.T, h *Hub, failure string) {
	t.Helper()
	ended := make(chan struct{})
	go func() { h.acks.running.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal(failure)
	}
}
