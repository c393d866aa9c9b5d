package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/termhub/termhub/client"
)

// Endpoint is a server the bench drives: the hub or the floor relay.
type Endpoint struct {
	Name  string // "hub" or "floor"
	URL   string // http://127.0.0.1:port
	Fleet Fleet
	// Proc is the server's process when the bench knows it (for RSS and
	// CPU time); nil for an in-process server or a hub given by URL.
	Proc *Proc
	// OpsToken reads the hub's /metrics ("" when unknown).
	OpsToken string
	// NodeID is the node's id when the hub runs on several nodes.
	NodeID string
}

// runtimeMetrics reads the unlabelled gauges of the hub's /metrics.
func (ep Endpoint) runtimeMetrics(ctx context.Context) (map[string]float64, error) {
	if ep.OpsToken == "" {
		return nil, errors.New("bench: no ops token")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+ep.OpsToken)
	// Uncompressed: a gzip writer for each scrape would count in the hub's
	// allocations the bench reads here.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: /metrics: HTTP %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

func (ep Endpoint) opts() client.Options { return clientOptions(ep.URL) }

// parallel runs f(i) for i in [0, n) on at most width goroutines and returns
// the first error.
func parallel(n, width int, f func(i int) error) error {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next int
		err  error
	)
	for w := 0; w < min(width, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := err != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if e := f(i); e != nil {
					mu.Lock()
					if err == nil {
						err = e
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return err
}

// dialWidth is how many connections the bench opens at a time while setting
// up a load (the storm scenario, which measures exactly that, opens all at
// once).
const dialWidth = 64

// fleetConns is a connected load: POS drivers and their terminals, each
// with its reader running.
type fleetConns struct {
	drivers []*posDriver
	terms   []*simTerminal
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// connect dials every terminal of plans, then every POS, and starts their
// readers. tag makes the references of this load unique in the run.
func connect(ctx context.Context, ep Endpoint, plans []PlanPOS, tag string) (*fleetConns, error) {
	return connectPlaced(ctx, plans, tag, placement{
		pos:  func(int) []Endpoint { return []Endpoint{ep} },
		term: func(int, int) []Endpoint { return []Endpoint{ep} },
	})
}

// placement says which node each client of a load connects to: POS pi to
// pos(pi)[0], its terminal ti to term(pi, ti)[0] (the rest of each list is
// where the client reconnects when its socket drops).
type placement struct {
	pos  func(pi int) []Endpoint
	term func(pi, ti int) []Endpoint
	// terminal, when set, adjusts each terminal before it dials (a card
	// delay, a reconnect callback).
	terminal func(t *simTerminal)
}

// connectPlaced is connect with each client on the node p gives it.
func connectPlaced(ctx context.Context, plans []PlanPOS, tag string, p placement) (*fleetConns, error) {
	fc := &fleetConns{}
	var all []*simTerminal
	for i, pl := range plans {
		d := &posDriver{nodeLink: nodeLink{nodes: p.pos(i)}, idx: i, key: pl.Key, prefix: fmt.Sprintf("%s-p%d", tag, i)}
		for ti, t := range pl.Terminals {
			st := &simTerminal{nodeLink: nodeLink{nodes: p.term(i, ti)}, cred: t}
			if p.terminal != nil {
				p.terminal(st)
			}
			d.terms = append(d.terms, st)
			all = append(all, st)
		}
		fc.drivers = append(fc.drivers, d)
	}
	fc.terms = all
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := parallel(len(all), dialWidth, func(i int) error {
		c, err := client.DialTerminal(dctx, all[i].nodes[0].opts(), all[i].cred.ID, all[i].cred.Secret)
		if err != nil {
			return fmt.Errorf("dial terminal %s: %w", all[i].cred.ID, err)
		}
		all[i].setConn(c)
		return nil
	})
	if err == nil {
		err = parallel(len(fc.drivers), dialWidth, func(i int) error {
			d := fc.drivers[i]
			c, err := client.DialPOS(dctx, d.nodes[0].opts(), d.key.ID, d.key.Secret)
			if err != nil {
				return fmt.Errorf("dial POS %s: %w", d.key.ID, err)
			}
			d.setConn(c)
			return nil
		})
	}
	rctx, rcancel := context.WithCancel(context.Background())
	fc.cancel = rcancel
	if err != nil {
		fc.close()
		return nil, err
	}
	for _, t := range all {
		fc.wg.Go(func() { t.run(rctx) })
	}
	for _, d := range fc.drivers {
		fc.wg.Go(func() { d.read(rctx) })
	}
	return fc, nil
}

// only is the load of driver i alone, for a phase that runs on it: its
// payments go through the same readers and ledger.
func (fc *fleetConns) only(i int) *fleetConns {
	d := fc.drivers[i]
	return &fleetConns{drivers: []*posDriver{d}, terms: d.terms}
}

// close drops every connection and waits for the readers.
func (fc *fleetConns) close() {
	fc.cancel()
	_ = parallel(len(fc.terms), dialWidth, func(i int) error {
		if c := fc.terms[i].getConn(); c != nil {
			_ = c.CloseNow()
		}
		return nil
	})
	for _, d := range fc.drivers {
		if c := d.getConn(); c != nil {
			_ = c.CloseNow()
		}
	}
	fc.wg.Wait()
}

// maxPhase bounds a payment phase that stops by count rather than by time.
const maxPhase = 10 * time.Minute

// closedLoop runs payments with one in flight per terminal until limit
// payments were sent (limit > 0) or for dur, then waits up to drain for the
// finals of those in flight.
func (fc *fleetConns) closedLoop(ctx context.Context, name string, limit int64, dur, drain time.Duration) PaymentStats {
	r := newRun(ctx, fc.drivers, true)
	r.limit = limit
	r.startAt = nowNS()
	for _, d := range fc.drivers {
		go r.sender(d)
		for ti := range d.terms {
			r.next[d.idx] <- ti
		}
	}
	if dur <= 0 || dur > maxPhase {
		dur = maxPhase
	}
	r.wait(ctx, dur, drain)
	return r.stats(name, fc)
}

// openLoop offers rate payments/s spread over every terminal for dur, each
// stamped with its scheduled time (so a late send counts against the round
// trip instead of hiding it), then drains.
func (fc *fleetConns) openLoop(ctx context.Context, name string, rate float64, dur, drain time.Duration) PaymentStats {
	r := newRun(ctx, fc.drivers, false)
	r.offered = rate
	type slot struct {
		d  *posDriver
		ti int
	}
	var slots []slot
	for ti := 0; ; ti++ {
		took := false
		for _, d := range fc.drivers {
			if ti < len(d.terms) {
				slots = append(slots, slot{d, ti})
				took = true
			}
		}
		if !took {
			break
		}
	}
	total := int(rate * dur.Seconds())
	interval := float64(time.Second) / rate
	r.startAt = nowNS()
	go func() {
		defer r.stop()
		for i := 0; i < total && ctx.Err() == nil; i++ {
			at := r.startAt + int64(float64(i)*interval)
			if wait := at - nowNS(); wait > 0 {
				time.Sleep(time.Duration(wait))
			}
			if !r.begin() {
				return
			}
			s := slots[i%len(slots)]
			if err := s.d.pay(ctx, r, s.ti, at); err != nil {
				r.failed("send: " + err.Error())
				r.end()
			}
		}
	}()
	r.wait(ctx, dur+time.Minute, drain)
	return r.stats(name, fc)
}

// wait stops the phase after dur (if it did not stop itself) and waits up to
// drain for the payments in flight.
func (r *loopRun) wait(ctx context.Context, dur, drain time.Duration) {
	stopT := time.NewTimer(dur)
	defer stopT.Stop()
	select {
	case <-r.done:
		return
	case <-stopT.C:
	case <-ctx.Done():
	}
	r.stop()
	drainT := time.NewTimer(drain)
	defer drainT.Stop()
	select {
	case <-r.done:
	case <-drainT.C:
	case <-ctx.Done():
	}
}

func (r *loopRun) stats(name string, fc *fleetConns) PaymentStats {
	st := PaymentStats{Target: name, POS: len(fc.drivers), Terminals: len(fc.terms)}
	st.Sent = int(r.issuedN.Load())
	st.Responses = int(r.responses.Load())
	st.Completed = int(r.completed.Load())
	st.Failures = int(r.failures.Load())
	st.Duplicated = int(r.dups.Load())
	st.AutoVoids = int(r.autoVoids.Load())
	st.Redelivered = int(r.redelivered.Load())
	st.Unanswered = r.unanswered(fc.drivers)
	st.Lost = max(st.Sent-st.Completed-st.Failures-st.Unanswered, 0)
	r.errMu.Lock()
	st.Errors = map[string]int{}
	for k, v := range r.errs {
		st.Errors[k] = v
	}
	r.errMu.Unlock()
	select {
	case <-r.done:
	default:
		st.Unfinished = true
	}
	st.Offered = r.offered
	st.timed, st.accept, st.finish, st.late = r.rounds.values(), r.accept.Values(), r.finish.Values(), r.late.Values()
	st.summarize()
	stop := r.stopAt.Load()
	if r.limit > 0 || stop == 1<<62-1 {
		// Stopped by count: the window runs to the last final.
		if lf := r.lastFinal.Load(); lf > r.startAt {
			st.Elapsed = time.Duration(lf - r.startAt)
			st.Counted = st.Completed + st.Failures
		}
	} else if stop > r.startAt {
		st.Elapsed = time.Duration(stop - r.startAt)
		st.Counted = int(r.inWindow.Load())
	}
	if st.Elapsed > 0 {
		st.Rate = float64(st.Counted) / st.Elapsed.Seconds()
	}
	return st
}
