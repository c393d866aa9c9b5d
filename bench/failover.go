package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// TargetFailoverSlack is the failover target beyond node_timeout: every
// terminal of a killed node online elsewhere and every payment in flight
// final within node_timeout plus this.
const TargetFailoverSlack = 5 * time.Second

// failoverWarm is how long the payments run before the kill: long enough
// for every terminal to have a payment in flight.
const failoverWarm = 3 * time.Second

// FailoverStats is the failover scenario's result: a node holding every
// terminal killed with payments in flight.
type FailoverStats struct {
	Nodes       int
	NodeTimeout time.Duration
	CardDelay   time.Duration
	Terminals   int
	POS         int
	Killed      string // the node id killed
	InFlight    int    // payments without a final when the node died
	// Back is how many terminals reconnected to another node, and AllBack
	// when the last did (its greeting), from the kill.
	Back    int
	AllBack time.Duration
	// HubOnline is when a surviving node first listed every terminal
	// online on a live node (GET /v1/ops/terminals), from the kill; 0 if
	// it never did before the end.
	HubOnline time.Duration
	// AllFinal is when the last payment in flight at the kill got its
	// final, from the kill (0 if some never did).
	AllFinal time.Duration
	// Released is when the surviving node's GET /v1/ops/nodes stopped
	// listing the killed node (its release, after node_timeout), from the
	// kill; 0 if it never did. OnlineAfter is how many terminals that node
	// listed online on a live node 1 s after that: the release must not
	// touch a terminal that already reconnected elsewhere.
	Released    time.Duration
	OnlineAfter int
	Payments    PaymentStats // every payment of the run, before the kill too
}

// Within reports whether the failover met its target.
func (s *FailoverStats) Within() bool {
	limit := s.NodeTimeout + TargetFailoverSlack
	return s.Back == s.Terminals && s.AllBack <= limit && s.HubOnline > 0 && s.HubOnline <= limit &&
		s.AllFinal > 0 && s.AllFinal <= limit && s.Payments.Lost == 0 && s.Payments.Duplicated == 0 &&
		s.Released > 0 && s.OnlineAfter == s.Terminals
}

// failover starts Options.Nodes nodes, puts every terminal on the first and
// the POS on the others, runs payments (each terminal answering after
// CardDelay) and kills the first node with every terminal's payment in
// flight; the terminals reconnect to the next node of their list.
func (r *runner) failover() {
	o := r.o
	eps, stop, ok := r.startNodes("failover")
	if !ok {
		return
	}
	defer stop()
	st := &FailoverStats{Nodes: len(eps), NodeTimeout: o.NodeTimeout, CardDelay: o.CardDelay, Terminals: o.Terminals, POS: o.POS, Killed: eps[0].NodeID}
	r.logf("failover: %d nodes, %d terminals on %s, %d POS on the others, card delay %s, node_timeout %s", len(eps), o.Terminals, st.Killed, o.POS, o.CardDelay, o.NodeTimeout)
	var back atomic.Int64
	var lastBack atomic.Int64
	fc, err := r.failoverLoad(eps, func(*simTerminal) {
		back.Add(1)
		storeMax(&lastBack, nowNS())
	})
	if err != nil {
		r.fail("failover", err)
		return
	}
	defer fc.close()
	lr := newRun(r.ctx, fc.drivers, true)
	lr.startAt = nowNS()
	for _, d := range fc.drivers {
		go lr.sender(d)
		for ti := range d.terms {
			lr.next[d.idx] <- ti
		}
	}
	time.Sleep(failoverWarm)
	r.signalAll(eps[1:], syscall.SIGUSR1) // profile the survivors from the kill
	// Issuing stops at the kill: what is measured is what was in flight.
	lr.stop()
	killAt := nowNS()
	eps[0].Proc.Kill()
	st.InFlight = int(lr.inflight.Load())
	r.logf("failover: killed %s (pid %d) with %d payments in flight", st.Killed, eps[0].Proc.PID(), st.InFlight)
	st.HubOnline = r.watchOnline(eps[1], st, killAt, lr.done)
	st.Released, st.OnlineAfter = r.watchRelease(eps[1], st, killAt)
	r.signalAll(eps[1:], syscall.SIGUSR2)
	st.Back = int(back.Load())
	if st.Back > 0 {
		st.AllBack = time.Duration(lastBack.Load() - killAt)
	}
	if lf := lr.lastFinal.Load(); lf > killAt && lr.inflight.Load() == 0 {
		st.AllFinal = time.Duration(lf - killAt)
	}
	st.Payments = lr.stats("failover", fc)
	r.logf("failover: %d/%d terminals back after %s (hub: all online after %s), last final after %s; %s; dead node released after %s, then %d terminals online",
		st.Back, st.Terminals, ms(st.AllBack), ms(st.HubOnline), ms(st.AllFinal), st.Payments.outcome(), ms(st.Released), st.OnlineAfter)
	r.res.Failover = st
	r.checkFinals("failover", &st.Payments)
	if st.Back < st.Terminals || st.AllFinal == 0 {
		r.fail("failover", fmt.Errorf("%d of %d terminals back, %d payments still without a final", st.Back, st.Terminals, lr.inflight.Load()))
	}
	if st.Released == 0 || st.OnlineAfter < st.Terminals {
		r.fail("failover", fmt.Errorf("dead node released after %s (0: never), then %d of %d terminals online", ms(st.Released), st.OnlineAfter, st.Terminals))
	}
}

// failoverLoad connects the failover's load: every terminal on eps[0],
// reconnecting to eps[1], eps[2], ... (every other terminal the other way
// round, so that the survivors share them), and POS i on eps[1 + i mod
// (n-1)].
func (r *runner) failoverLoad(eps []Endpoint, back func(*simTerminal)) (*fleetConns, error) {
	o, n := r.o, len(eps)
	plans, err := eps[0].Fleet.Plan(o.POS, o.Terminals)
	if err != nil {
		return nil, err
	}
	return connectPlaced(r.ctx, plans, r.tag+"failover", placement{
		pos: func(pi int) []Endpoint { return rotate(eps[1:], pi%(n-1)) },
		term: func(pi, ti int) []Endpoint {
			list := []Endpoint{eps[0]}
			for k := 1; k < n; k++ {
				j := k
				if (pi+ti)%2 == 1 {
					j = n - k
				}
				list = append(list, eps[j])
			}
			return list
		},
		terminal: func(t *simTerminal) { t.delay, t.back = o.CardDelay, back },
	})
}

// watchOnline polls ep's GET /v1/ops/terminals every 100 ms until it lists
// every terminal online on a node other than the killed one and the
// payments are done (or node_timeout + the drain has passed), and returns
// when the list was first complete, from killAt (0: never).
func (r *runner) watchOnline(ep Endpoint, st *FailoverStats, killAt int64, done <-chan struct{}) time.Duration {
	deadline := time.Now().Add(st.NodeTimeout + r.o.Drain)
	var online time.Duration
	finished := false
	for time.Now().Before(deadline) && r.ctx.Err() == nil {
		if online == 0 {
			if n, err := onlineElsewhere(r.ctx, ep, st.Killed); err == nil && n >= st.Terminals {
				online = time.Duration(nowNS() - killAt)
			}
		}
		if !finished {
			select {
			case <-done:
				finished = true
			default:
			}
		}
		if online > 0 && finished {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return online
}

// watchRelease polls ep's GET /v1/ops/nodes every 100 ms until the killed
// node is gone from it (at most node_timeout + the drain from the kill),
// waits 1 s for the release's news to settle, and counts the terminals ep
// lists online on a live node then.
func (r *runner) watchRelease(ep Endpoint, st *FailoverStats, killAt int64) (time.Duration, int) {
	deadline := time.Now().Add(st.NodeTimeout + r.o.Drain)
	var released time.Duration
	for time.Now().Before(deadline) && r.ctx.Err() == nil {
		if listed, err := nodeListed(r.ctx, ep, st.Killed); err == nil && !listed {
			released = time.Duration(nowNS() - killAt)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	n, _ := onlineElsewhere(r.ctx, ep, st.Killed)
	return released, n
}

// nodeListed reports whether ep's GET /v1/ops/nodes lists node id.
func nodeListed(ctx context.Context, ep Endpoint, id string) (bool, error) {
	var body struct{ Data []struct{ ID string } }
	if err := opsGet(ctx, ep, "/v1/ops/nodes", &body); err != nil {
		return false, err
	}
	for _, n := range body.Data {
		if n.ID == id {
			return true, nil
		}
	}
	return false, nil
}

// opsGet reads the JSON of ep's ops endpoint path into v.
func opsGet(ctx context.Context, ep Endpoint, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+ep.OpsToken)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: %s: HTTP %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// onlineElsewhere counts the terminals ep lists online on a node other
// than dead.
func onlineElsewhere(ctx context.Context, ep Endpoint, dead string) (int, error) {
	var body struct {
		Data []struct{ Status, Node string }
	}
	if err := opsGet(ctx, ep, "/v1/ops/terminals", &body); err != nil {
		return 0, err
	}
	n := 0
	for _, t := range body.Data {
		if t.Status == "online" && t.Node != "" && t.Node != dead {
			n++
		}
	}
	return n, nil
}

// storeMax sets a to v if v is larger.
func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// failoverRows are the failover scenario's rows.
func (r *Results) failoverRows(b *rowBuilder) {
	s := r.Failover
	if s == nil {
		return
	}
	scn := fmt.Sprintf("8 failover (%d nodes, node_timeout %s)", s.Nodes, s.NodeTimeout)
	limit := "≤ " + ms(s.NodeTimeout+TargetFailoverSlack)
	b.add(scn, "kill -9", fmt.Sprintf("%s holding %d terminals (card delay %s), %d payments in flight, %d POS on the other nodes", s.Killed, s.Terminals, s.CardDelay, s.InFlight, s.POS), "", "")
	b.add(scn, "every terminal back on another node (its greeting)", fmt.Sprintf("%s (%d of %d)", ms(s.AllBack), s.Back, s.Terminals), limit, verdict(s.Back == s.Terminals && s.AllBack <= s.NodeTimeout+TargetFailoverSlack))
	b.add(scn, "a surviving node lists every terminal online on a live node", ms(s.HubOnline), limit, verdict(s.HubOnline > 0 && s.HubOnline <= s.NodeTimeout+TargetFailoverSlack))
	b.add(scn, "every payment in flight final", ms(s.AllFinal), limit, verdict(s.AllFinal > 0 && s.AllFinal <= s.NodeTimeout+TargetFailoverSlack))
	b.add(scn, "killed node released (gone from GET /v1/ops/nodes)", ms(s.Released), "", "")
	b.add(scn, "terminals online on a live node 1 s after the release", fmt.Sprintf("%d of %d", s.OnlineAfter, s.Terminals), "all", verdict(s.OnlineAfter == s.Terminals))
	p := s.Payments
	b.add(scn, "finals: lost / duplicated", fmt.Sprintf("%d / %d (%s; %d redelivered)", p.Lost, p.Duplicated, p.outcome(), p.Redelivered), "0 / 0", verdict(p.Lost == 0 && p.Duplicated == 0))
	b.add(scn, "all of the above", "", "", verdict(s.Within()))
}
