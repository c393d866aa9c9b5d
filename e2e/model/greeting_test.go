package model

import (
	"context"
	"testing"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// TestGreetingBeforeReplay connects a POS that has unacknowledged messages
// again and again: docs/protocol.md#pos-protocol says the hub sends `connected` first and then
// replays. A writer picking at random between its replay and send channels
// would let a replayed message overtake the greeting, and the random
// sequences reach that only now and then; this checks it directly.
func TestGreetingBeforeReplay(t *testing.T) {
	b := newSocketBackend(t)
	defer b.close()
	w := newWorld(1, b, 1)
	b.bind(w)
	w.stepDo(func() { w.termConnect("T1", false) })
	for i := 0; i < 3; i++ {
		w.stepDo(func() { w.create("pk1", "T1", true) })
		w.stepDo(func() { w.termProcess("T1") })
		if len(w.viol) == 0 {
			j := w.term["T1"].jobOrder[i]
			w.stepDo(func() { w.termFinish("T1", j, protocol.OutcomeDeclined) })
		}
	}
	if len(w.viol) > 0 {
		t.Fatal(outcome{steps: w.steps, viol: w.viol}.report("socket"))
	}
	const tries = 200
	bad := 0
	for i := 0; i < tries; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		c, err := client.DialPOS(ctx, b.opts(), "pk1", kit.Secrets["pk1"])
		cancel()
		if err != nil {
			bad++
			t.Logf("connection %d: %v", i, err)
			continue
		}
		_ = c.CloseNow()
		if err := poll(func() bool { return len(b.gen.app.Hub.Connections()) == 1 }, "the POS to go"); err != nil {
			t.Fatal(err)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d connections did not start with the `connected` greeting", bad, tries)
	}
}
