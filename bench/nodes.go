package bench

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// TargetCrossNodeP50 is the multi-node target: a payment whose POS and
// terminal are on different nodes takes at most this many times the p50 of
// one whose POS and terminal share a node.
const TargetCrossNodeP50 = 1.25

// Placements of a POS and its terminals on the nodes of a hub.
const (
	sameNode  = "same"  // POS i and its terminals on node i mod n
	crossNode = "cross" // POS i on node i mod n, its terminals on the next
)

// placeNode is where POS i of a placement and its terminals go among n
// nodes. POS spread over every node so that each node carries both ends.
func placeNode(placement string, i, n int) (pos, term int) {
	pos = i % n
	if placement == crossNode {
		return pos, (pos + 1) % n
	}
	return pos, pos
}

// block is one block of the latency comparison: pair of placement.
type block struct {
	placement string
	pair      int
}

// schedule is the order of the latency comparison's blocks: rounds rounds,
// each one block of each placement, the first placement swapped every round
// (same, cross, cross, same, ...) so that whatever the machine does falls
// on both alike; round k runs pair k mod pairs of both, so that every node
// serves both placements as often.
func schedule(rounds, pairs int) []block {
	out := make([]block, 0, 2*rounds)
	for k := range rounds {
		first, second := sameNode, crossNode
		if k%2 == 1 {
			first, second = second, first
		}
		p := k % max(pairs, 1)
		out = append(out, block{first, p}, block{second, p})
	}
	return out
}

// NodesStats is the multi-node comparison: the same payments with the POS
// and the terminal on one node and on two.
type NodesStats struct {
	Nodes                 int
	Rounds                int // latency blocks of each placement, taking turns
	Same, Cross           *PaymentStats
	LoadRounds            int
	SameLoad, CrossLoad   *PaymentStats
	StealBefore, StealAdd time.Duration // host steal at the start, and during the run
}

// P50Ratio is the cross-node p50 over the same-node p50.
func (s *NodesStats) P50Ratio() float64 {
	if s.Same == nil || s.Cross == nil {
		return 0
	}
	return ratio(float64(s.Cross.RoundTrip.P50), float64(s.Same.RoundTrip.P50))
}

// rotate is eps starting at eps[i], then the ones after it, wrapping.
func rotate(eps []Endpoint, i int) []Endpoint {
	out := make([]Endpoint, 0, len(eps))
	for k := range eps {
		out = append(out, eps[(i+k)%len(eps)])
	}
	return out
}

// startNodes starts Options.Nodes nodes for scenario; ok false when it
// could not (the failure is recorded).
func (r *runner) startNodes(scenario string) (eps []Endpoint, stop func(), ok bool) {
	nl, ok := r.l.(NodeLauncher)
	if !ok || r.o.Nodes < 2 {
		r.fail(scenario, errors.New("needs --nodes 2 or more and hubs the bench starts itself (not --hub-url)"))
		return nil, nil, false
	}
	eps, stop, err := nl.Nodes(r.ctx, scenario, r.o.Nodes, r.o.NodeTimeout, r.profile)
	if err != nil {
		r.fail(scenario, err)
		return nil, nil, false
	}
	return eps, stop, true
}

// placedSide connects a load of npos POS and nterm terminals from fleet f
// on eps as placement where puts them.
func (r *runner) placedSide(name string, f Fleet, eps []Endpoint, where string, npos, nterm, warm int) (*side, func()) {
	plans, err := f.Plan(npos, nterm)
	if err != nil {
		r.fail(name, err)
		return nil, func() {}
	}
	n := len(eps)
	// Every client reconnects to the next node if its own lets it go (a
	// node the others took for dead does): what is measured is then what
	// the hub kept, not what a client that gave up missed.
	fc, err := connectPlaced(r.ctx, plans, r.tag+name, placement{
		pos: func(pi int) []Endpoint { p, _ := placeNode(where, pi, n); return rotate(eps, p) },
		term: func(pi, _ int) []Endpoint {
			_, t := placeNode(where, pi, n)
			return rotate(eps, t)
		},
	})
	if err != nil {
		r.fail(name, err)
		return nil, func() {}
	}
	if warm > 0 {
		fc.closedLoop(r.ctx, name, int64(warm), 0, r.o.Drain)
	}
	return &side{name: name, ep: eps[0], fc: fc}, fc.close
}

// nodes runs the multi-node comparison: n nodes, the latency blocks of
// the two placements in turns, then their closed loops in turns.
func (r *runner) nodes() {
	o := r.o
	eps, stop, ok := r.startNodes("nodes")
	if !ok {
		return
	}
	defer stop()
	_, steal0 := MachineBusy()
	st := &NodesStats{Nodes: len(eps), StealBefore: steal0}
	n, f := len(eps), eps[0].Fleet
	r.signalAll(eps, syscall.SIGUSR1)
	r.logf("nodes: %d nodes; %d sequential payments per placement in %d rounds, POS and terminal on the same node and on two", n, o.Payments, o.Rounds)
	same, stopSame := r.placedSide("same-node", f.sub(0, n), eps, sameNode, n, n, o.Warmup)
	cross, stopCross := r.placedSide("cross-node", f.sub(n, 2*n), eps, crossNode, n, n, o.Warmup)
	if same != nil && cross != nil {
		sides := map[string]*side{sameNode: same, crossNode: cross}
		for k, b := range schedule(o.Rounds, n) {
			count := o.Payments/o.Rounds + btoi(k/2 < o.Payments%o.Rounds)
			r.measure(sides[b.placement], func(sd *side) PaymentStats {
				return sd.fc.only(b.pair).closedLoop(r.ctx, sd.name, int64(count), 0, o.Drain)
			})
		}
		var c CPUShare
		st.Same, st.Cross, st.Rounds = r.finish(same, &c), r.finish(cross, &c), o.Rounds
	}
	stopSame()
	stopCross()
	r.nodesLoad(st, f, eps)
	r.signalAll(eps, syscall.SIGUSR2)
	_, steal1 := MachineBusy()
	st.StealAdd = steal1 - steal0
	r.res.Nodes = st
	r.checkFinals("nodes", st.Same, st.Cross, st.SameLoad, st.CrossLoad)
}

// signalAll starts (SIGUSR1) or stops (SIGUSR2) the CPU profiles of nodes
// launched with profiling.
func (r *runner) signalAll(eps []Endpoint, sig syscall.Signal) {
	if !r.profile {
		return
	}
	for _, ep := range eps {
		if ep.Proc != nil {
			_ = ep.Proc.Signal(sig)
		}
	}
}

// nodesLoad runs the closed loops of the comparison, each placement with
// its own POS and terminals, in turns.
func (r *runner) nodesLoad(st *NodesStats, f Fleet, eps []Endpoint) {
	o, n := r.o, len(eps)
	rounds := max(min(o.LoadRounds, int(o.Duration/minBlock)), 1)
	r.logf("nodes: closed loop, %d terminals and %d POS per placement, %s each, taking turns in %d blocks", o.Terminals, o.POS, o.Duration, rounds)
	same, stopSame := r.placedSide("same-node-load", f.sub(2*n, 2*n+o.POS), eps, sameNode, o.POS, o.Terminals, o.Terminals)
	defer stopSame()
	cross, stopCross := r.placedSide("cross-node-load", f.sub(2*n+o.POS, 2*n+2*o.POS), eps, crossNode, o.POS, o.Terminals, o.Terminals)
	defer stopCross()
	if same == nil || cross == nil {
		return
	}
	blockDur := o.Duration / time.Duration(rounds)
	r.takeTurns(same, cross, rounds, func(int) func(sd *side) PaymentStats {
		return func(sd *side) PaymentStats { return sd.fc.closedLoop(r.ctx, sd.name, 0, blockDur, o.Drain) }
	})
	var c CPUShare
	st.SameLoad, st.CrossLoad, st.LoadRounds = r.finish(same, &c), r.finish(cross, &c), rounds
}

// checkFinals fails scenario if any of sts lost or doubled a final: that
// is a failure of the hub, whatever the timings.
func (r *runner) checkFinals(scenario string, sts ...*PaymentStats) {
	for _, s := range sts {
		if s != nil && (s.Lost > 0 || s.Duplicated > 0) {
			r.fail(scenario, fmt.Errorf("%s: %d finals lost, %d duplicated (%s)", s.Target, s.Lost, s.Duplicated, s.outcome()))
		}
	}
}

// nodesRows are the multi-node comparison's rows.
func (r *Results) nodesRows(b *rowBuilder) {
	s := r.Nodes
	if s == nil {
		return
	}
	scn := fmt.Sprintf("7 nodes (%d)", s.Nodes)
	if s.Same != nil && s.Cross != nil {
		b.add(scn, "same node: round trip", s.Same.RoundTrip.String()+" ("+s.Same.outcome()+")", "", "")
		b.add(scn, "cross node: round trip", s.Cross.RoundTrip.String()+" ("+s.Cross.outcome()+")", "", "")
		b.add(scn, "how", fmt.Sprintf("%d rounds, each one block of each placement (same, cross, cross, same, ...), one POS and one terminal a block, the pair rotating over the nodes", s.Rounds), "", "")
		q := s.P50Ratio()
		b.add(scn, "cross ÷ same, p50", fmt.Sprintf("%.2f×", q), fmt.Sprintf("≤ %.2f×", TargetCrossNodeP50), verdict(q <= TargetCrossNodeP50))
		b.add(scn, "cross ÷ same, p99", fmt.Sprintf("%.2f×", ratio(float64(s.Cross.RoundTrip.P99), float64(s.Same.RoundTrip.P99))), "", "")
	}
	for _, l := range []*PaymentStats{s.SameLoad, s.CrossLoad} {
		if l != nil {
			b.add(scn, l.Target+": closed loop", fmt.Sprintf("%s; round trip %s; %s", rate(l.Rate), l.RoundTrip, l.outcome()), "0 lost / 0 duplicated", verdict(l.Lost == 0 && l.Duplicated == 0))
		}
	}
	if s.SameLoad != nil && s.CrossLoad != nil {
		b.add(scn, "cross ÷ same, payments/s", fmt.Sprintf("%.2f×", ratio(s.CrossLoad.Rate, s.SameLoad.Rate)), "", "")
	}
	b.add(scn, "host steal", fmt.Sprintf("%s during the run (%s before)", s.StealAdd, s.StealBefore), "", "")
}
