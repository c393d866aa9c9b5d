package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/termhub/termhub/client"
)

// simTerminal answers every startPayment at once with commandReceived and
// an approved paymentResult: the cheapest terminal there is, so that what
// is measured is the hub (or the floor), not a card delay. In the failover
// scenario it waits delay before the result, so that payments are in
// flight when a node dies, and when its socket drops it reconnects to the
// next node of its list.
type simTerminal struct {
	nodeLink
	cred  Cred
	delay time.Duration
	// back is called after each reconnect's greeting.
	back func(t *simTerminal)
	acks atomic.Int64 // resultAcks received
}

// nodeLink is a simulated client's connection to one node of the hub.
// nodes are where it connects, the first first; when its socket drops (a
// node killed, or one that lets its connections go) it tries the next one
// after the one it was on, as a client with a list of gateways would (none:
// it stays down).
type nodeLink struct {
	nodes []Endpoint
	at    int // index in nodes of the current connection

	connMu sync.Mutex
	conn   *client.Conn
}

func (l *nodeLink) getConn() *client.Conn {
	l.connMu.Lock()
	defer l.connMu.Unlock()
	return l.conn
}

func (l *nodeLink) setConn(c *client.Conn) {
	l.connMu.Lock()
	l.conn = c
	l.connMu.Unlock()
}

func (t *simTerminal) run(ctx context.Context) {
	for {
		t.serve(ctx, t.getConn())
		if ctx.Err() != nil || len(t.nodes) < 2 || !t.redial(ctx) {
			return
		}
		if t.back != nil {
			t.back(t)
		}
	}
}

// serve answers on c until it ends.
func (t *simTerminal) serve(ctx context.Context, c *client.Conn) {
	for {
		b, err := c.ReadRaw(ctx)
		if err != nil {
			return
		}
		switch jsonStr(b, "action") {
		case "startPayment":
			txn := jsonStr(b, "transactionId")
			if send(ctx, c, commandReceivedFrame(txn)) != nil {
				return
			}
			if t.delay > 0 {
				// A result the socket no longer carries is lost: the hub
				// sends the open command again when the terminal is back.
				time.AfterFunc(t.delay, func() { _ = send(ctx, c, approvedFrame(txn)) })
			} else if send(ctx, c, approvedFrame(txn)) != nil {
				return
			}
		case "resultAck":
			t.acks.Add(1)
		}
	}
}

// redial closes the current connection and dials the nodes after it, in
// turn, with dial, waiting 100 ms × attempt (at most 1 s) between
// attempts, for at most a minute; false when none answered.
func (l *nodeLink) redial(ctx context.Context, dial func(context.Context, client.Options) (*client.Conn, error)) bool {
	_ = l.getConn().CloseNow()
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for attempt := 1; dctx.Err() == nil; attempt++ {
		i := (l.at + attempt) % len(l.nodes)
		actx, acancel := context.WithTimeout(dctx, 10*time.Second)
		c, err := dial(actx, l.nodes[i].opts())
		acancel()
		if err == nil {
			l.at = i
			l.setConn(c)
			return true
		}
		select {
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, time.Second)):
		case <-dctx.Done():
		}
	}
	return false
}

// redial connects the terminal to the next node of its list.
func (t *simTerminal) redial(ctx context.Context) bool {
	return t.nodeLink.redial(ctx, func(ctx context.Context, o client.Options) (*client.Conn, error) {
		return client.DialTerminal(ctx, o, t.cred.ID, t.cred.Secret)
	})
}

// posDriver is one POS connection sending payments for its terminals and
// reading every reply and durable message on one goroutine.
type posDriver struct {
	nodeLink // on a reconnect the hub replays what the POS had not acknowledged
	idx      int
	key      Cred
	terms    []*simTerminal
	prefix   string // references are prefix + "s" + seq

	mu     sync.Mutex
	sent   []int64    // when each payment was sent (or scheduled, open loop), nowNS; by seq
	wrote  []int64    // just before each payment was written to the socket, nowNS; by seq
	resp   []int64    // when its paymentResponse arrived, nowNS (0: none yet); by seq
	term   []int32    // terminal index by seq
	finals []uint8    // finals received by seq
	answer []uint8    // by seq: answered (accepted) or refused, else 0
	runOf  []*loopRun // the phase each payment belongs to
	mids   int        // durable messages received (those with a messageId)
	last   string     // newest messageId received
	noAck  bool
	ledger finalLedger // finals by transaction id
}

// pay sends a payment for terminal ti, stamped at (nowNS, or the scheduled
// time in the open loop).
func (d *posDriver) pay(ctx context.Context, r *loopRun, ti int, at int64) error {
	d.mu.Lock()
	seq := len(d.sent)
	d.sent = append(d.sent, at)
	d.term = append(d.term, int32(ti))
	d.finals = append(d.finals, 0)
	d.answer = append(d.answer, 0)
	d.runOf = append(d.runOf, r)
	// Stamped before the write, which its answer cannot precede.
	wrote := nowNS()
	d.wrote = append(d.wrote, wrote)
	d.resp = append(d.resp, 0)
	d.mu.Unlock()
	r.issuedN.Add(1)
	if !r.closed {
		r.late.Add(time.Duration(wrote - at))
	}
	ref := d.prefix + "s" + itoa(seq)
	return send(ctx, d.getConn(), paymentFrame(d.terms[ti].cred.ID, ref))
}

func itoa(n int) string { return fmt.Sprint(n) }

// read handles everything the hub sends to the POS until the connection
// ends for good: with several nodes, it reconnects to the next.
func (d *posDriver) read(ctx context.Context) {
	for {
		d.serve(ctx, d.getConn())
		if ctx.Err() != nil || len(d.nodes) < 2 || !d.redial(ctx) {
			return
		}
	}
}

// redial connects the POS to the next node of its list.
func (d *posDriver) redial(ctx context.Context) bool {
	return d.nodeLink.redial(ctx, func(ctx context.Context, o client.Options) (*client.Conn, error) {
		return client.DialPOS(ctx, o, d.key.ID, d.key.Secret)
	})
}

// serve handles what the hub sends on c until it ends.
func (d *posDriver) serve(ctx context.Context, c *client.Conn) {
	for {
		b, err := c.ReadRaw(ctx)
		if err != nil {
			return
		}
		at := nowNS()
		switch act := jsonStr(b, "action"); act {
		case "paymentResponse":
			if r := d.accepted(jsonStr(b, "reference"), at); r != nil {
				r.responses.Add(1)
			}
		case "error":
			seq := refSeq(jsonStr(b, "requestId"), d.prefix+"s")
			if seq < 0 {
				continue
			}
			d.mu.Lock()
			r, ti := d.runOf[seq], int(d.term[seq])
			d.answer[seq] = refused
			d.mu.Unlock()
			r.failed(jsonStr(b, "code"))
			r.end()
			r.retry(d, ti)
		case "paymentStatusUpdate", "signatureRequired":
			d.durable(b)
			if r := d.runFor(jsonStr(b, "reference")); r != nil {
				r.updates.Add(1)
			}
		case "paymentComplete", "paymentVoided":
			mid := d.durable(b)
			seq := refSeq(jsonStr(b, "reference"), d.prefix+"s")
			if seq >= 0 {
				d.final(seq, jsonStr(b, "transactionId"), mid, jsonStr(b, "status"), act == "paymentVoided", at)
			}
			if mid != "" && !d.noAck {
				if send(ctx, c, ackFrame(mid)) != nil {
					return
				}
			}
		}
	}
}

func (d *posDriver) durable(b []byte) string {
	mid := jsonStr(b, "messageId")
	if mid != "" {
		d.mu.Lock()
		d.mids++
		d.last = mid
		d.mu.Unlock()
	}
	return mid
}

// What the hub answered a payment request (posDriver.answer).
const (
	accepted uint8 = 1 // a paymentResponse: a transaction exists
	refused  uint8 = 2 // an error reply
)

// accepted records the paymentResponse of payment ref, read at (nowNS),
// and returns its run.
func (d *posDriver) accepted(ref string, at int64) *loopRun { return d.lookup(ref, true, at) }

// runFor is the run payment ref belongs to.
func (d *posDriver) runFor(ref string) *loopRun { return d.lookup(ref, false, 0) }

// lookup returns the run of payment ref (nil when it is not one of d's),
// marking the payment accepted, at at, when accept is set.
func (d *posDriver) lookup(ref string, accept bool, at int64) *loopRun {
	seq := refSeq(ref, d.prefix+"s")
	if seq < 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq >= len(d.runOf) {
		return nil
	}
	if accept {
		d.answer[seq] = accepted
		if d.resp[seq] == 0 {
			d.resp[seq] = at
		}
	}
	return d.runOf[seq]
}

// unanswered counts the payments of r that got no answer at all (no
// paymentResponse, no error, no final): requests written on a connection
// that ended before the hub took them, which a POS must send again. They
// are not lost finals: the hub never made a transaction of them.
func (r *loopRun) unanswered(drivers []*posDriver) int {
	n := 0
	for _, d := range drivers {
		d.mu.Lock()
		for seq, rr := range d.runOf {
			if rr == r && d.answer[seq] == 0 && d.finals[seq] == 0 {
				n++
			}
		}
		d.mu.Unlock()
	}
	return n
}

// final records a final message of payment seq (transaction txn, message
// mid), classified by the driver's ledger: a redelivered message or a late
// void is counted apart, a second different final as a duplicate.
func (d *posDriver) final(seq int, txn, mid, status string, voided bool, at int64) {
	d.mu.Lock()
	if seq >= len(d.finals) {
		d.mu.Unlock()
		return
	}
	r := d.runOf[seq]
	kind := d.ledger.record(seq, txn, mid, voided)
	if kind == firstFinal {
		d.finals[seq]++
	}
	sent, ti, wrote, resp := d.sent[seq], int(d.term[seq]), d.wrote[seq], d.resp[seq]
	d.mu.Unlock()
	switch kind {
	case redelivered:
		r.redelivered.Add(1)
		return
	case lateVoid:
		r.autoVoids.Add(1)
		return
	case duplicateFinal:
		r.dups.Add(1)
		return
	}
	r.rounds.add(sent, time.Duration(at-sent))
	if resp != 0 {
		r.accept.Add(time.Duration(resp - wrote))
		r.finish.Add(time.Duration(at - resp))
	}
	if at <= r.stopAt.Load() {
		r.inWindow.Add(1)
	}
	if r.lastFinal.Load() < at {
		r.lastFinal.Store(at)
	}
	if status == "COMPLETED" {
		r.completed.Add(1)
	} else {
		r.failed("final " + status)
	}
	r.end()
	r.again(d, ti)
}

// loopRun is one phase of payments over a set of POS drivers: a closed
// loop (each terminal has one payment in flight, the next sent when its
// final arrives) or an open loop (payments at a fixed rate).
type loopRun struct {
	closed  bool
	limit   int64   // closed loop: stop after this many payments (0: by time)
	offered float64 // open loop: payments/s

	startAt   int64        // nowNS at the start
	stopAt    atomic.Int64 // nowNS when issuing stops (finals after it are outside the rate window)
	lastFinal atomic.Int64
	issuedN   atomic.Int64
	next      []chan int // closed loop: per driver, terminals ready for their next payment

	rounds                                  timedSamples // round trips, by when each payment was due
	accept, finish                          Recorder     // a round trip's two steps: to the paymentResponse, from it to the final
	late                                    Recorder     // open loop: how late the generator wrote each payment
	responses, updates, completed, inWindow atomic.Int64
	dups, failures, autoVoids, redelivered  atomic.Int64
	inflight                                atomic.Int64
	stopped                                 atomic.Bool
	done                                    chan struct{}
	doneOnce                                sync.Once
	errMu                                   sync.Mutex
	errs                                    map[string]int
	retryMu                                 sync.Mutex
	retries                                 int
	ctx                                     context.Context
}

func newRun(ctx context.Context, drivers []*posDriver, closed bool) *loopRun {
	r := &loopRun{closed: closed, done: make(chan struct{}), errs: map[string]int{}, ctx: ctx}
	r.stopAt.Store(1<<62 - 1)
	if closed {
		// By driver index: a phase may run over some of a load's drivers.
		n := 0
		for _, d := range drivers {
			n = max(n, d.idx+1)
		}
		r.next = make([]chan int, n)
		for _, d := range drivers {
			r.next[d.idx] = make(chan int, 2*len(d.terms)+1)
		}
	}
	return r
}

func (r *loopRun) failed(code string) {
	r.failures.Add(1)
	r.errMu.Lock()
	r.errs[code]++
	r.errMu.Unlock()
}

// begin counts a payment in flight, or refuses once the phase has stopped.
func (r *loopRun) begin() bool {
	r.inflight.Add(1)
	if r.stopped.Load() {
		r.end()
		return false
	}
	if r.limit > 0 && r.issuedN.Load() >= r.limit {
		r.stop()
		r.end()
		return false
	}
	return true
}

func (r *loopRun) end() {
	if r.inflight.Add(-1) == 0 && r.stopped.Load() {
		r.doneOnce.Do(func() { close(r.done) })
	}
}

func (r *loopRun) stop() {
	if r.stopped.CompareAndSwap(false, true) {
		r.stopAt.Store(nowNS())
	}
	if r.inflight.Load() == 0 {
		r.doneOnce.Do(func() { close(r.done) })
	}
}

// again queues terminal ti of d for its next payment (closed loop).
func (r *loopRun) again(d *posDriver, ti int) {
	if !r.closed || r.stopped.Load() {
		return
	}
	select {
	case r.next[d.idx] <- ti:
	default:
	}
}

// retry queues ti again after a refused payment, a little later so that a
// terminal the hub refuses does not spin.
func (r *loopRun) retry(d *posDriver, ti int) {
	if !r.closed || r.stopped.Load() {
		return
	}
	r.retryMu.Lock()
	r.retries++
	r.retryMu.Unlock()
	time.AfterFunc(5*time.Millisecond, func() { r.again(d, ti) })
}

// sender issues the closed loop's payments for d.
func (r *loopRun) sender(d *posDriver) {
	for {
		select {
		case ti := <-r.next[d.idx]:
			if !r.begin() {
				continue
			}
			if err := d.pay(r.ctx, r, ti, nowNS()); err != nil {
				r.failed("send: " + err.Error())
				r.end()
				return
			}
		case <-r.done:
			return
		case <-r.ctx.Done():
			return
		}
	}
}

// PaymentStats are the figures of one payment phase.
type PaymentStats struct {
	Target    string // "hub" or "floor"
	POS       int
	Terminals int
	Offered   float64 // open loop: payments/s offered; 0 for a closed loop
	Sent      int
	Responses int // paymentResponse replies
	Completed int // payments with a COMPLETED final
	Failures  int // error replies and finals other than COMPLETED
	Errors    map[string]int
	Lost      int // accepted (or of unknown fate), no final and no error reply
	// Unanswered is payments sent on a connection that ended with neither a
	// paymentResponse, an error nor a final: the hub never took them (not
	// in Lost).
	Unanswered int
	Duplicated int // finals beyond the first for one payment
	AutoVoids  int // paymentVoided after a payment's final (late approvals voided)
	// Redelivered is finals received again with the same messageId (at
	// least once delivery, after a reconnect): not duplicates.
	Redelivered int
	RoundTrip   Summary
	// Accept and Finish split each round trip at its paymentResponse: from
	// the payment's write to the paymentResponse (the server's first
	// commit), and from there to the final (the terminal's part and the
	// second commit). Late (open loop) is how long after its scheduled time the
	// generator wrote each payment: the round trip includes it, and a
	// generator short of CPU shows there.
	Accept, Finish, Late Summary
	Bursts               Bursts        // open loop: where in time the slowest payments fell
	Elapsed              time.Duration // from the first payment to the stop (closed loop: to the last final)
	Rate                 float64       // finals per second over the measuring window
	Counted              int           // the finals Rate counts: those inside the window
	Unfinished           bool          // the drain timed out

	// The samples behind the summaries, for mergeStats: the round trips,
	// by when each payment was due, and the steps.
	timed                []timedSample
	accept, finish, late []time.Duration
}

// summarize fills the summaries from the samples.
func (s *PaymentStats) summarize() {
	rounds := make([]time.Duration, len(s.timed))
	for i, x := range s.timed {
		rounds[i] = x.d
	}
	s.RoundTrip, s.Accept, s.Finish, s.Late = Summarize(rounds), Summarize(s.accept), Summarize(s.finish), Summarize(s.late)
	if s.Offered > 0 {
		s.Bursts = findBursts(s.timed, s.RoundTrip.P99, BurstWindow)
	}
}

// mergeStats adds up phases against one target into one figure: their
// counts, their round trips (percentiles of all the samples, not averages
// of percentiles) and their rate over the time they ran.
func mergeStats(parts []PaymentStats) PaymentStats {
	if len(parts) == 1 {
		return parts[0]
	}
	var out PaymentStats
	for i, p := range parts {
		if i == 0 {
			out.Target, out.POS, out.Terminals, out.Offered = p.Target, p.POS, p.Terminals, p.Offered
			out.Errors = map[string]int{}
		}
		out.Sent += p.Sent
		out.Responses += p.Responses
		out.Completed += p.Completed
		out.Failures += p.Failures
		out.Lost += p.Lost
		out.Unanswered += p.Unanswered
		out.Duplicated += p.Duplicated
		out.AutoVoids += p.AutoVoids
		out.Redelivered += p.Redelivered
		for k, v := range p.Errors {
			out.Errors[k] += v
		}
		out.Elapsed += p.Elapsed
		out.Counted += p.Counted
		out.Unfinished = out.Unfinished || p.Unfinished
		out.accept = append(out.accept, p.accept...)
		out.finish = append(out.finish, p.finish...)
		out.late = append(out.late, p.late...)
		out.timed = append(out.timed, p.timed...)
	}
	out.summarize()
	if out.Elapsed > 0 {
		out.Rate = float64(out.Counted) / out.Elapsed.Seconds()
	}
	return out
}

func (s PaymentStats) String() string {
	return fmt.Sprintf("%s: %s, %d completed; round trip %s; %.0f payments/s", s.Target, s.outcome(), s.Completed, s.RoundTrip, s.Rate)
}

// ErrorList renders the error counts, most frequent first.
func (s PaymentStats) ErrorList() string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range s.Errors {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || (l[i].v == l[j].v && l[i].k < l[j].k) })
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = fmt.Sprintf("%s ×%d", e.k, e.v)
	}
	return strings.Join(parts, ", ")
}

// tally counts, over every payment of r, how many finals each got.
func (r *loopRun) tally(drivers []*posDriver) (sent, lost, dup int) {
	for _, d := range drivers {
		d.mu.Lock()
		for seq, rr := range d.runOf {
			if rr != r {
				continue
			}
			sent++
			switch f := d.finals[seq]; {
			case f > 1:
				dup += int(f) - 1
			}
		}
		d.mu.Unlock()
	}
	lost = int(r.issuedN.Load()) - int(r.completed.Load()) - int(r.failures.Load())
	return sent, max(lost, 0), dup
}

// errDrain is returned when payments were still in flight at the end of the
// drain window.
var errDrain = errors.New("bench: payments still in flight after the drain window")
