package hub

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
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
		h.waitAcks(context.Background(), "m1", "pk1")
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
		t.Fatal("waitAcks returned with an earlier ack not applied")
	default:
	}
	step(2, 4) // both of its acks applied; the line is still busy
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("waitAcks still waits for acks queued after it")
	}

	// With nothing queued it returns at once; with a cancelled context too.
	h.waitAcks(context.Background(), "m1", "other")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	step(2, 9)
	h.waitAcks(ctx, "m1", "pk1")
}
