package chaos

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/sim"
)

// ledger is what the clients saw, from every goroutine of the run: each
// durable message a POS received, each thing a terminal did, and each
// payment request with its answer. The checks compare it with what the hub's
// API says at the end.
type ledger struct {
	mu       sync.Mutex
	pos      map[string][]posMessage // guarded by mu; by transaction id
	term     map[string]*termTruth   // guarded by mu; by transaction id
	requests []request               // guarded by mu; every attempt, in the order answered
	refs     map[string]*payment     // guarded by mu; by reference
	drops    []drop                  // guarded by mu; live connections that ended
	notes    []string                // guarded by mu; oddities the clients met, for the report
}

// drop is a live connection of a client that ended (a hub kill ends them
// all; a Redis fault should end none).
type drop struct {
	at  time.Time
	who string // device id or API key
}

// posMessage is one durable message as a POS received it.
type posMessage struct {
	at         time.Time
	key        string // the API key of the connection it came on
	messageID  string
	action     string
	txnID      string
	version    int64
	status     protocol.Status
	reasonCode string
}

// termTruth is one transaction as the terminal lived it: the card was
// charged if it produced an approved result, and reversed if it received
// voidPayment.
type termTruth struct {
	device   string
	behavior sim.Behavior
	decided  bool
	results  []termResult
	voids    []time.Time
	events   []sim.Event
}

// termResult is one paymentResult the terminal sent (or tried to).
type termResult struct {
	at       time.Time
	outcome  string
	authCode string
}

// approved reports whether the terminal charged the card.
func (tt *termTruth) approved() bool {
	for _, r := range tt.results {
		if r.outcome == protocol.OutcomeApproved {
			return true
		}
	}
	return false
}

// payment is one sale a POS asked for, by its reference, with every
// transaction id the hub answered for it (more than one is a duplicate).
type payment struct {
	reference string
	key       string
	terminal  string
	amount    int64
	via       string   // "ws" or "rest"
	ids       []string // distinct transaction ids answered
	outcome   string   // the last answer's class (outcome* constants)
	converged bool     // it got a normal answer
}

// request is one attempt of a payment request.
type request struct {
	reference   string
	via         string
	sentAt      time.Time
	took        time.Duration
	duringFault bool
	outcome     string // outcome* constants
	detail      string
}

// Answer classes of a request.
const (
	outcomeCreated     = "created"   // a transaction, new (201 / created:true)
	outcomeExisting    = "existing"  // a transaction, already there (200 / created:false)
	outcomeUnavailable = "503"       // 503 unavailable: outcome unknown, retried
	outcomeInternal    = "500"       // 500 internal: retried, but the contract says 503
	outcomeTransport   = "transport" // no HTTP answer / the WebSocket went away: retried
	outcomeNoAnswer    = "no-answer" // nothing within answerTimeout: retried
	outcomeBusy        = "device_busy"
	outcomeOffline     = "terminal_offline"
	outcomeOther       = "other" // any other error: not retried
)

// retried reports whether an answer of this class leaves the outcome
// unknown, so the request is sent again.
func retried(outcome string) bool {
	switch outcome {
	case outcomeUnavailable, outcomeInternal, outcomeTransport, outcomeNoAnswer:
		return true
	}
	return false
}

func newLedger() *ledger {
	return &ledger{pos: map[string][]posMessage{}, term: map[string]*termTruth{}, refs: map[string]*payment{}}
}

func (l *ledger) addPOS(m posMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pos[m.txnID] = append(l.pos[m.txnID], m)
}

func (l *ledger) dropped(who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drops = append(l.drops, drop{at: time.Now(), who: who})
}

func (l *ledger) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notes = append(l.notes, s)
}

// truthLocked returns the terminal record of id, creating it.
func (l *ledger) truthLocked(id, device string) *termTruth {
	tt := l.term[id]
	if tt == nil {
		tt = &termTruth{device: device}
		l.term[id] = tt
	}
	return tt
}

func (l *ledger) decided(id, device string, b sim.Behavior) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tt := l.truthLocked(id, device)
	tt.behavior, tt.decided = b, true
}

func (l *ledger) addTermEvent(e sim.Event) {
	if e.Kind == sim.EventDisconnected && strings.HasPrefix(e.Detail, "connection ended") {
		l.dropped(e.DeviceID)
	}
	if e.TransactionID == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tt := l.truthLocked(e.TransactionID, e.DeviceID)
	tt.events = append(tt.events, e)
	switch {
	case e.Kind == sim.EventSent && e.Action == protocol.ActionPaymentResult:
		tt.results = append(tt.results, parseResult(e))
	case e.Kind == sim.EventReceived && e.Action == protocol.ActionVoidPayment:
		tt.voids = append(tt.voids, e.Time)
	}
}

func (l *ledger) addRequest(r request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests = append(l.requests, r)
}

// newPayment registers a sale before its first attempt.
func (l *ledger) newPayment(p *payment) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refs[p.reference] = p
}

// answered records the final class of a payment and the transaction id it
// got, if any.
func (l *ledger) answered(ref, outcome, txnID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.refs[ref]
	p.outcome = outcome
	p.converged = !retried(outcome)
	if txnID == "" {
		return
	}
	for _, id := range p.ids {
		if id == txnID {
			return
		}
	}
	p.ids = append(p.ids, txnID)
}

// snapshot copies what the checks need, so they run without the lock while
// the clients keep recording.
type seen struct {
	pos      map[string][]posMessage
	term     map[string]termTruth
	requests []request
	refs     map[string]payment
	drops    []drop
	notes    []string
}

func (l *ledger) snapshot() seen {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := seen{
		pos:      make(map[string][]posMessage, len(l.pos)),
		term:     make(map[string]termTruth, len(l.term)),
		requests: append([]request(nil), l.requests...),
		refs:     make(map[string]payment, len(l.refs)),
		drops:    append([]drop(nil), l.drops...),
		notes:    append([]string(nil), l.notes...),
	}
	for id, ms := range l.pos {
		ms = append([]posMessage(nil), ms...)
		sort.SliceStable(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
		s.pos[id] = ms
	}
	for id, tt := range l.term {
		c := *tt
		c.results = append([]termResult(nil), tt.results...)
		c.voids = append([]time.Time(nil), tt.voids...)
		c.events = append([]sim.Event(nil), tt.events...)
		s.term[id] = c
	}
	for ref, p := range l.refs {
		c := *p
		c.ids = append([]string(nil), p.ids...)
		s.refs[ref] = c
	}
	return s
}

// txnIDs is every transaction id a client heard of.
func (s seen) txnIDs() map[string]bool {
	ids := map[string]bool{}
	for id := range s.pos {
		ids[id] = true
	}
	for id := range s.term {
		ids[id] = true
	}
	for _, p := range s.refs {
		for _, id := range p.ids {
			ids[id] = true
		}
	}
	return ids
}
