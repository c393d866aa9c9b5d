package bench

import "testing"

// The two placements take turns, the first swapped every round, and each
// round runs the same pair of both; over 2×pairs rounds every pair runs
// first as often for each placement.
func TestSchedule(t *testing.T) {
	got := schedule(6, 3)
	want := []block{
		{sameNode, 0}, {crossNode, 0},
		{crossNode, 1}, {sameNode, 1},
		{sameNode, 2}, {crossNode, 2},
		{crossNode, 0}, {sameNode, 0},
		{sameNode, 1}, {crossNode, 1},
		{crossNode, 2}, {sameNode, 2},
	}
	if len(got) != len(want) {
		t.Fatalf("schedule = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("block %d = %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
	firsts := map[block]int{}
	for i := 0; i < len(got); i += 2 {
		firsts[got[i]]++
	}
	for _, b := range want {
		if firsts[b] != 1 {
			t.Fatalf("%v ran first %d times, want once", b, firsts[b])
		}
	}
	if n := len(schedule(5, 0)); n != 10 {
		t.Fatalf("no pairs: %d blocks", n)
	}
}

// Same-node puts POS i and its terminals on one node; cross-node puts its
// terminals on the next, never the POS's own.
func TestPlaceNode(t *testing.T) {
	for i := range 7 {
		p, term := placeNode(sameNode, i, 3)
		if p != i%3 || term != p {
			t.Fatalf("same %d: %d, %d", i, p, term)
		}
		p, term = placeNode(crossNode, i, 3)
		if p != i%3 || term != (p+1)%3 || term == p {
			t.Fatalf("cross %d: %d, %d", i, p, term)
		}
	}
}

// The ledger counts finals by transaction id: a replay of the same message
// is a redelivery, a void after the final is a late void, and a second
// different final, or a final of a second transaction for one payment, is a
// duplicate.
func TestFinalLedger(t *testing.T) {
	var l finalLedger
	steps := []struct {
		seq         int
		txn, mid    string
		voided      bool
		want        finalKind
		description string
	}{
		{0, "t0", "m1", false, firstFinal, "first final"},
		{0, "t0", "m1", false, redelivered, "same message again"},
		{0, "t0", "m2", true, lateVoid, "late approval voided"},
		{0, "t0", "m3", false, duplicateFinal, "a second final"},
		{1, "t1", "", false, firstFinal, "no message id"},
		{1, "t1", "", false, duplicateFinal, "no message id: never a redelivery"},
		{1, "t9", "m4", false, duplicateFinal, "a second transaction for one payment"},
		{2, "", "m5", false, firstFinal, "no transaction id: keyed by payment"},
		{2, "", "m5", false, redelivered, "no transaction id, replayed"},
	}
	for _, s := range steps {
		if got := l.record(s.seq, s.txn, s.mid, s.voided); got != s.want {
			t.Fatalf("%s: %d, want %d", s.description, got, s.want)
		}
	}
}

// Sub-fleets of a multi-node run never share a merchant, and a range past
// the end is cut, not a panic.
func TestFleetSub(t *testing.T) {
	f := GenerateFleet(5, 2)
	a, b := f.sub(0, 3), f.sub(3, 9)
	if len(a.Merchants) != 3 || len(b.Merchants) != 2 || a.Merchants[2].ID == b.Merchants[0].ID {
		t.Fatalf("sub: %d, %d", len(a.Merchants), len(b.Merchants))
	}
	if len(f.sub(7, 9).Merchants) != 0 {
		t.Fatal("sub past the end")
	}
}

// A multi-node scenario refuses a launcher that cannot start nodes.
func TestNodesNeedNodeLauncher(t *testing.T) {
	o := Options{Scenarios: map[string]bool{"nodes": true, "failover": true}, Nodes: 3}
	res := Run(t.Context(), o, &inProcess{t: t})
	if len(res.Errors) != 2 {
		t.Fatalf("errors = %v", res.Errors)
	}
}

// A client's list of nodes starts at its own and goes round the others.
func TestRotate(t *testing.T) {
	eps := []Endpoint{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	got := ""
	for _, ep := range rotate(eps, 2) {
		got += ep.Name
	}
	if got != "cab" {
		t.Fatalf("rotate = %q", got)
	}
}
