// Package model is a model-based test of termhub. It drives random sequences
// of steps and, after every step, checks what the project exists for: a
// payment result is never lost and nobody is charged without the merchant
// knowing.
//
// Steps: a POS (1 or 2 API keys) connects, drops (CloseNow) or acks the
// newest messageId it received; it pays on a random terminal over REST or
// the WebSocket, repeats a reference, cancels or voids. Each of 2 terminals
// (a scripted real terminal: it keeps every result until resultAck, re-sends
// unacked results when it reconnects, answers cancelPayment with outcome
// cancelled if it has not finished and voidPayment with voidResult ok)
// connects, drops, reconnects over a live connection (displacement), loses
// its network silently (half-open, also right after sending an approval),
// reads its commands, sends commandReceived, paymentProgress, an approved or
// declined result (also while offline: cached for the next connection) or a
// duplicate. The clock jumps 10 s, 61 s or 181 s. The hub restarts, drained
// or crashed, after 0–120 s of downtime, as a new App on the same Redis.
// Redis itself stalls (the hub's commands wait in it, and their callers time
// out), wakes up and runs what it was sent, or is killed and restarted with
// its AOF, having run only some of it; or it loses the reply to a command
// it ran (internal/redisfault, on the hub's client only). The hub then
// answers unavailable: a POS retries its unanswered sales by reference once
// Redis is back, and a terminal sends again what was refused (docs/protocol.md#terminal-protocol),
// while the hub recovers on its own (lost commits, held events).
// At the end everyone reconnects and every command and cached result plays
// out.
//
// Invariants: (1) every approval a terminal sent ends, for its POS, as a
// COMPLETED/AUTHORIZED message or a paymentVoided carrying that approval;
// (2) no transaction gets two different final statuses, except final →
// VOIDED (and AUTHORIZED → COMPLETED), in what the POS is told and in the
// history in Redis; (3) a VOIDED transaction never changes again; (4) every
// durable message still in the outbox after a connection's starting cursor
// reaches that connection, messageIds increase per connection, nothing acked
// comes back on a later connection; (5) a transaction's version never goes
// backwards on one connection. Also: the action matches the status told
// (VOIDED as paymentVoided…), messages go to the creating key only, a
// repeated reference answers the same transaction, every terminal result is
// acknowledged, what the POS last saw is what Redis holds, an accepted void
// gets an outcome (docs/protocol.md#pos-protocol), and money agrees with the terminal: VOIDED
// if and only if the terminal really reversed the approval.
//
// The same driver and checker run against two backends: a whole App behind
// httptest with real WebSocket clients and a fake clock (socket_test.go, the
// default smoke; real Redis when REDIS_URL is set), and the real
// session.Engine and Store with the hub replaced by an in-process double
// (engine_test.go, on an in-process miniredis, for volume). A seed gives the
// same steps on both. A third backend runs whole hubs of 2 or 3 nodes on one
// Redis (nodes_test.go, docs/cluster.md): clients on random nodes, and node
// deaths, drains and returns in place of whole-hub restarts and Redis faults.
//
// Environment: TERMHUB_SOAK_SEQUENCES=N runs N engine-level, N/20
// socket-level and N/20 several-node sequences (TERMHUB_SOAK_ENGINE_SEQUENCES,
// TERMHUB_SOAK_SOCKET_SEQUENCES and TERMHUB_SOAK_NODES_SEQUENCES set each count); TERMHUB_SOAK_SEED fixes
// the base seed (sequence i runs seed+i; random and logged otherwise);
// TERMHUB_SOAK_WORKERS sets how many sequences run at once; TERMHUB_MODEL_STEPS
// sets the steps per sequence (40); TERMHUB_MODEL_STRICT=1 fails on the
// known, reported bugs (knownBugs) instead of skipping them with "BUG: …";
// TERMHUB_TEST_LOG=1 writes the hub's log.
package model

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
)

// merchant is kit.Config's m1, whose keys (pk1, pk1b) and terminals (T1,
// T2) the sequences use; every hub of a sequence runs kit.Config.
const merchant = "m1"

// gracePeriod and paymentTimeout are kit.Config's.
const (
	gracePeriod    = 60 * time.Second
	paymentTimeout = 180 * time.Second
)

// backend is what a sequence drives. Every method returns once the hub has
// done what the step asked (a drop is applied, an ack is stored); settle
// then collects everything the hub has sent into the world's callbacks.
type backend interface {
	bind(w *world)
	posConnect(key string) error
	posDrop(key string) error
	// posAck acks and waits until the ack is stored; perr is the hub's
	// refusal (unavailable while Redis does not answer).
	posAck(key, messageID string) (perr *protocol.Error, err error)
	create(key, dev, ref string, minor int64, rest bool) (createResult, error)
	act(key, action, txnID string, rest bool) (*protocol.Transaction, *protocol.Error, error)
	termConnect(dev string, displace bool) error
	termDrop(dev string) error
	// termSilent makes dev's live connection half-open: the hub still has
	// it, but nothing it sends from now on reaches the terminal.
	termSilent(dev string)
	// termSend sends a terminal message with requestId rid; an error reply
	// reaches the world's onTerminalError.
	termSend(dev, action, rid string, body any) error
	advance(d time.Duration)
	restart(crash bool, downtime time.Duration) error
	settle() error
	// redisStall stops Redis answering the hub, its probe noticing at once
	// (the hub then sends nothing more) or not yet (commands go on being
	// sent into the stalled Redis); redisResume ends the stall,
	// Redis running the first keep commands it was sent meanwhile (all
	// when keep < 0); redisLoseReply loses the reply to the hub's next
	// command (or next script: a commit, an ack), which Redis runs.
	redisStall(noticed bool)
	redisResume(keep int)
	redisLoseReply(scriptOnly bool)
	store() *session.Store
	outbox() *queue.Outbox
	close()
}

type createResult struct {
	txn     *protocol.Transaction
	created bool
	perr    *protocol.Error
}

type violation struct{ kind, msg string }

// world is one sequence: the model of the POS clients and terminals, what
// they have seen, and the checks.
type world struct {
	seed  uint64
	rng   *rand.Rand
	be    backend
	keys  []string
	devs  []string
	pos   map[string]*posState
	term  map[string]*termState
	txns  map[string]*txnState
	order []*txnState
	refs  []*txnState // successfully created, for retries
	nRef  int
	steps []string
	viol  []violation
	// storeEveryStep runs the Redis-side history check after every step
	// (the socket variant); otherwise only at the end.
	storeEveryStep bool
	faults         int             // Redis faults so far: unavailable answers are allowed once there was one
	stalled        bool            // Redis does not answer
	unknown        []unknownCreate // sales answered unavailable, retried by reference once Redis is back
	// nodes is the hub's nodes when the sequence runs on several
	// (nodes_test.go), nil on one hub process.
	nodes *nodeModel
}

// unknownCreate is a sale whose outcome the POS does not know
// (docs/ops.md#when-redis-stalls-restarts-or-fails-over: unavailable means it may or may not have been created).
type unknownCreate struct {
	key, dev, ref string
	minor         int64
	rest          bool
}

type posState struct {
	key       string
	connected bool
	conn      int              // connection number, from 1
	cursor0   string           // confirmed ack cursor when this connection opened
	lastID    string           // newest messageId received on this connection
	got       map[string]bool  // messageIds received on this connection
	vers      map[string]int64 // transaction → newest version on this connection
	acked     string           // confirmed cumulative ack
}

type txnState struct {
	id, alias, owner, dev, ref string
	minor                      int64
	seen                       map[int64]protocol.Status // version → status, from POS messages
	maxVer                     int64
	lastStatus                 protocol.Status
	approved                   bool   // the terminal produced an approval
	authCode                   string // of that approval
	approvalProcessed          bool   // the hub acknowledged the approval (resultAck)
	told                       bool   // the owner saw COMPLETED/AUTHORIZED or paymentVoided
	firstKey                   string // key of the first message, before ownership is known
	voidAskedAt                int64  // version of an accepted voidResponse, 0 if none
}

type job struct {
	txn      string
	state    int // 0 new, 1 commandReceived sent, 2 progress sent
	done     bool
	outcome  string
	reversed bool // the terminal carried out a voidPayment
}

type termCmd struct{ action, txn string }

type termState struct {
	dev         string
	connected   bool // the terminal can send and receive
	silent      bool // half-open: the hub thinks it is connected, nothing gets through
	inbox       []termCmd
	jobs        map[string]*job
	jobOrder    []*job
	cache       []protocol.PaymentResult // results not yet acknowledged by resultAck
	sent        []protocol.PaymentResult // every result produced, for duplicates
	voidResults []string                 // voidResult answers owed while offline
	bodies      map[string]any           // the last message sent under each requestId
	refused     []string                 // requestIds answered unavailable: sent again later (docs/protocol.md#terminal-protocol)
}

func newWorld(seed uint64, be backend, nKeys int) *world {
	w := &world{
		seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), be: be,
		devs: []string{"T1", "T2"},
		pos:  map[string]*posState{}, term: map[string]*termState{}, txns: map[string]*txnState{},
	}
	w.keys = []string{"pk1", "pk1b"}[:nKeys]
	for _, k := range w.keys {
		w.pos[k] = &posState{key: k, cursor0: "0-0", acked: "0-0", got: map[string]bool{}, vers: map[string]int64{}}
	}
	for _, d := range w.devs {
		w.term[d] = &termState{dev: d, jobs: map[string]*job{}, bodies: map[string]any{}}
	}
	return w
}

func (w *world) violate(kind, format string, args ...any) {
	w.viol = append(w.viol, violation{kind, fmt.Sprintf(format, args...)})
}

func (w *world) logStep(format string, args ...any) {
	w.steps = append(w.steps, fmt.Sprintf("%3d  ", len(w.steps)+1)+fmt.Sprintf(format, args...))
}

// note appends detail to the current step's line.
func (w *world) note(format string, args ...any) {
	if len(w.steps) == 0 {
		w.logStep("(setup)")
	}
	w.steps[len(w.steps)-1] += " → " + fmt.Sprintf(format, args...)
}

func (w *world) txn(id string) *txnState {
	t := w.txns[id]
	if t == nil {
		t = &txnState{id: id, alias: fmt.Sprintf("#%d", len(w.order)+1), seen: map[int64]protocol.Status{}}
		w.txns[id] = t
		w.order = append(w.order, t)
	}
	return t
}

func (w *world) alias(id string) string {
	if t := w.txns[id]; t != nil {
		return t.alias
	}
	return id
}

// ---- what the hub sends ----

// onPOS takes one frame received by key's current connection.
func (w *world) onPOS(key string, raw []byte) {
	var ev protocol.POSEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		w.violate("pos-undecodable", "%s: %v: %.200s", key, err, raw)
		return
	}
	if ev.MessageID == "" {
		return // replies and terminalStatusUpdate are not durable
	}
	p := w.pos[key]
	id := ev.MessageID
	if !queue.ValidID(id) {
		w.violate("pos-bad-id", "%s got messageId %q", key, id)
		return
	}
	// (4) increasing messageId per connection; nothing acked comes back.
	if p.lastID != "" && queue.CompareIDs(id, p.lastID) <= 0 {
		w.violate("delivery-order", "%s connection %d: messageId %s after %s (duplicate or reordered)", key, p.conn, id, p.lastID)
	}
	if queue.CompareIDs(id, p.cursor0) <= 0 {
		w.violate("delivery-acked-again", "%s connection %d: messageId %s redelivered though %s was acknowledged before the connection opened", key, p.conn, id, p.cursor0)
	}
	if p.lastID == "" || queue.CompareIDs(id, p.lastID) > 0 {
		p.lastID = id
	}
	p.got[id] = true
	if ev.Transaction == nil {
		w.violate("pos-envelope", "%s: %s %s without transaction", key, ev.Action, id)
		return
	}
	t := w.txn(ev.TransactionID)
	if ev.Transaction.ID != ev.TransactionID || ev.Transaction.Version != ev.Version {
		w.violate("pos-envelope", "%s: %s for %s v%d carries transaction %s v%d", key, ev.Action, t.alias, ev.Version, ev.Transaction.ID, ev.Transaction.Version)
	}
	if t.owner != "" && t.owner != key {
		w.violate("pos-wrong-key", "%s got %s of %s, which %s created", key, ev.Action, t.alias, t.owner)
	}
	if t.owner == "" && t.firstKey == "" {
		t.firstKey = key
	}
	st := ev.Transaction.Status
	// (5) versions never go backwards on one connection.
	if ev.Version < p.vers[t.id] {
		w.violate("version-backwards", "%s connection %d: %s v%d (%s) after v%d", key, p.conn, t.alias, ev.Version, st, p.vers[t.id])
	}
	if ev.Version > p.vers[t.id] {
		p.vers[t.id] = ev.Version
	}
	// The message that tells a status change uses its action; a note that
	// changes no status (a void the terminal refused or never answered) may
	// come as paymentStatusUpdate whatever the status.
	h := ev.Transaction.History
	note := len(h) >= 2 && h[len(h)-1].Status == h[len(h)-2].Status
	if want := actionFor(st); ev.Action != want && !(note && ev.Action == protocol.ActionPaymentStatusUpdate) {
		w.violate("action-status", "%s: %s v%d is %s told as %s, want %s", key, t.alias, ev.Version, st, ev.Action, want)
	}
	w.observe(t, ev.Version, st, ev.Action)
	switch {
	case st == protocol.StatusCompleted || st == protocol.StatusAuthorized:
		t.told = true
	case ev.Action == protocol.ActionPaymentVoided:
		t.told = true
		if ev.ReasonCode == "" {
			w.violate("void-message", "%s paymentVoided without reasonCode", t.alias)
		}
		if ev.ReasonCode != protocol.VoidRequested && t.approved &&
			(ev.OriginalPaymentResponse == nil || ev.OriginalPaymentResponse.AuthCode != t.authCode) {
			w.violate("void-message", "%s paymentVoided (%s) does not carry the terminal's approval %s: %+v", t.alias, ev.ReasonCode, t.authCode, ev.OriginalPaymentResponse)
		}
	}
}

// observe records what the POS was told about t (by a durable message or a
// reply) and checks (2) and (3) over everything it was told, in version order.
func (w *world) observe(t *txnState, v int64, st protocol.Status, how string) {
	if prev, ok := t.seen[v]; ok && prev != st {
		w.violate("version-two-statuses", "%s v%d seen as %s and as %s (%s)", t.alias, v, prev, st, how)
	}
	t.seen[v] = st
	if v >= t.maxVer {
		t.maxVer, t.lastStatus = v, st
	}
	vs := make([]int64, 0, len(t.seen))
	for v := range t.seen {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	seq := make([]protocol.Status, len(vs))
	for i, v := range vs {
		seq[i] = t.seen[v]
	}
	if bad := badStatusSequence(seq); bad != "" {
		w.violate("final-changed", "%s as told to the POS: %s", t.alias, bad)
	}
}

// actionFor is the durable message that tells a status (docs/protocol.md#pos-protocol).
func actionFor(s protocol.Status) string {
	switch {
	case s == protocol.StatusAwaitingSignature:
		return protocol.ActionSignatureRequired
	case s == protocol.StatusVoided:
		return protocol.ActionPaymentVoided
	case s == protocol.StatusAuthorized || !s.Final():
		return protocol.ActionPaymentStatusUpdate
	}
	return protocol.ActionPaymentComplete
}

// badStatusSequence checks statuses in order: after a final status only the
// same status or VOIDED may follow (AUTHORIZED may also become COMPLETED by
// capture), and after VOIDED only VOIDED. It describes the first breach.
func badStatusSequence(seq []protocol.Status) string {
	var cur protocol.Status
	for i, s := range seq {
		if cur != "" && s != cur {
			ok := (s == protocol.StatusVoided) || (cur == protocol.StatusAuthorized && s == protocol.StatusCompleted)
			if !ok {
				return fmt.Sprintf("%s after %s (sequence %v, at %d)", s, cur, seq, i)
			}
		}
		if s.Final() {
			cur = s
		}
	}
	return ""
}

// onTerminal takes one frame received by dev.
func (w *world) onTerminal(dev string, raw []byte) {
	var m struct {
		Action        string `json:"action"`
		TransactionID string `json:"transactionId"`
		RequestID     string `json:"requestId"`
		Code          string `json:"code"`
		Message       string `json:"message"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		w.violate("terminal-undecodable", "%s: %v: %.200s", dev, err, raw)
		return
	}
	ts := w.term[dev]
	switch m.Action {
	case protocol.ActionResultAck:
		var kept []protocol.PaymentResult
		for _, r := range ts.cache {
			if r.TransactionID != m.TransactionID {
				kept = append(kept, r)
			}
		}
		ts.cache = kept
		if j := ts.jobs[m.TransactionID]; j != nil && j.outcome == protocol.OutcomeApproved {
			w.txn(m.TransactionID).approvalProcessed = true
		}
	case protocol.ActionError:
		w.onTerminalError(dev, m.RequestID, protocol.Code(m.Code), m.Message)
	case protocol.ActionStartPayment, protocol.ActionCancelPayment, protocol.ActionVoidPayment,
		protocol.ActionCapturePayment, protocol.ActionSignatureVerified:
		ts.inbox = append(ts.inbox, termCmd{m.Action, m.TransactionID})
	}
}

// onTerminalError takes the hub's error answering the terminal's message
// rid. Unavailable, after a Redis fault, means it may not be recorded: the
// terminal sends it again later (docs/protocol.md#terminal-protocol). Anything else is a
// violation.
func (w *world) onTerminalError(dev, rid string, code protocol.Code, msg string) {
	ts := w.term[dev]
	if code == protocol.CodeUnavailable && w.faults > 0 && ts.bodies[rid] != nil {
		if !slices.Contains(ts.refused, rid) {
			ts.refused = append(ts.refused, rid)
		}
		return
	}
	w.violate("terminal-refused", "%s: the hub refused a terminal message (%s): %s: %s", dev, rid, code, msg)
}

// ---- steps ----

type choice struct {
	weight int
	do     func()
}

// step picks one enabled step at random and runs it.
func (w *world) step() {
	var cs []choice
	add := func(weight int, f func()) { cs = append(cs, choice{weight, f}) }
	for _, k := range w.keys {
		p := w.pos[k]
		if !p.connected {
			add(6, func() { w.posConnect(k) })
		} else {
			add(3, func() { w.posDrop(k) })
			if p.lastID != "" && queue.CompareIDs(p.lastID, p.acked) > 0 {
				add(5, func() { w.posAck(k) })
			}
		}
		for _, d := range w.devs {
			add(5, func() { w.create(k, d, !p.connected || w.rng.IntN(2) == 0) })
		}
		if len(w.refs) > 0 {
			add(1, func() { w.retryCreate(k, !p.connected || w.rng.IntN(2) == 0) })
		}
		if c := w.candidates(k, func(t *txnState) bool { return !t.lastStatus.Final() }); len(c) > 0 {
			add(3, func() { w.act(k, protocol.ActionCancel, c[w.rng.IntN(len(c))], !p.connected || w.rng.IntN(2) == 0) })
		}
		if c := w.candidates(k, func(t *txnState) bool { return t.lastStatus == protocol.StatusCompleted }); len(c) > 0 {
			add(2, func() { w.act(k, protocol.ActionVoid, c[w.rng.IntN(len(c))], !p.connected || w.rng.IntN(2) == 0) })
		}
	}
	for _, d := range w.devs {
		ts := w.term[d]
		switch {
		case ts.silent:
			// It notices and reconnects; the new connection displaces the
			// half-open one (docs/protocol.md#connections).
			add(5, func() { w.termConnect(d, true) })
		case !ts.connected:
			add(5, func() { w.termConnect(d, false) })
		default:
			add(3, func() { w.termDrop(d) })
			add(1, func() { w.termConnect(d, true) })
			add(1, func() { w.termSilent(d) })
			if len(ts.sent) > 0 {
				add(1, func() { w.termDuplicate(d) })
			}
		}
		if len(ts.inbox) > 0 {
			add(10, func() { w.termProcess(d) })
		}
		if ts.connected && len(ts.refused) > 0 && !w.stalled {
			add(4, func() { w.termResend(d) })
		}
		for _, j := range ts.jobOrder {
			if j.done {
				continue
			}
			if ts.connected {
				if j.state < 1 {
					add(3, func() { w.termProgress(d, j, 1) })
				}
				if j.state < 2 {
					add(3, func() { w.termProgress(d, j, 2) })
				}
				add(4, func() { w.termFinish(d, j, protocol.OutcomeApproved) })
				add(2, func() { w.termFinish(d, j, protocol.OutcomeDeclined) })
				// The approval leaves, then the network dies before anything
				// comes back (resultAck, voidPayment…).
				add(1, func() { w.termApproveThenSilent(d, j) })
			} else {
				// The customer taps while the network is down: the result
				// waits in the terminal for the next connection.
				add(2, func() { w.termFinish(d, j, protocol.OutcomeApproved) })
				add(1, func() { w.termFinish(d, j, protocol.OutcomeDeclined) })
			}
		}
	}
	add(3, func() { w.advance(10 * time.Second) })
	add(3, func() { w.advance(61 * time.Second) })
	add(2, func() { w.advance(181 * time.Second) })
	if w.nodes != nil {
		// Several nodes: they die, drain and come back instead of the
		// whole hub restarting (Redis faults are the single-node model's).
		w.nodeSteps(add)
	} else if w.stalled {
		// Redis wakes up and runs what it was sent, or was killed and
		// comes back from its AOF having read only some of it.
		add(3, func() { w.redisResume(false) })
		add(2, func() { w.redisResume(true) })
	} else {
		add(1, func() { w.restart(false) })
		add(1, func() { w.restart(true) })
		add(1, func() { w.redisStall() })
		add(2, func() { w.redisLoseReply() })
	}

	total := 0
	for _, c := range cs {
		total += c.weight
	}
	n := w.rng.IntN(total)
	for _, c := range cs {
		if n < c.weight {
			c.do()
			break
		}
		n -= c.weight
	}
	w.settle()
	if len(w.viol) == 0 {
		w.stepChecks()
	}
}

func (w *world) candidates(key string, ok func(*txnState) bool) []string {
	var out []string
	for _, t := range w.order {
		if t.owner == key && ok(t) {
			out = append(out, t.id)
		}
	}
	return out
}

func (w *world) posConnect(k string) {
	p := w.pos[k]
	p.connected, p.conn = true, p.conn+1
	p.cursor0, p.lastID, p.got, p.vers = p.acked, "", map[string]bool{}, map[string]int64{}
	w.logStep("POS %s connects (connection %d, acked %s)", k, p.conn, p.acked)
	if err := w.be.posConnect(k); err != nil {
		kind := "pos-connect"
		if strings.Contains(err.Error(), "want \"connected\"") {
			kind = "greeting-not-first"
		}
		w.violate(kind, "%s: %v", k, err)
	}
}

func (w *world) posDrop(k string) {
	w.logStep("POS %s drops", k)
	if err := w.be.posDrop(k); err != nil {
		w.violate("stuck", "POS %s drop: %v", k, err)
	}
	w.pos[k].connected = false
}

func (w *world) posAck(k string) {
	p := w.pos[k]
	w.logStep("POS %s acks %s", k, p.lastID)
	perr, err := w.be.posAck(k, p.lastID)
	switch {
	case err != nil:
		w.violate("ack-refused", "%s ack %s: %v", k, p.lastID, err)
	case perr != nil && perr.Code == protocol.CodeUnavailable && w.faults > 0:
		w.note("unavailable: not stored") // the POS acks again later
	case perr != nil:
		w.violate("ack-refused", "%s ack %s: %s %s", k, p.lastID, perr.Code, perr.Message)
	default:
		p.acked = p.lastID
	}
}

func (w *world) create(k, d string, rest bool) {
	w.nRef++
	ref := fmt.Sprintf("order-%d", w.nRef)
	minor := int64(100 + w.rng.IntN(9900))
	w.logStep("POS %s pays %d on %s over %s (%s)", k, minor, d, via(rest), ref)
	res, err := w.be.create(k, d, ref, minor, rest)
	if err != nil {
		w.violate("request-failed", "create %s: %v", ref, err)
		return
	}
	if res.perr != nil {
		w.note("%s", res.perr.Code)
		switch {
		case res.perr.Code == protocol.CodeTerminalOffline && w.nodes != nil && (w.term[d].connected || w.term[d].silent):
			// docs/cluster.md: a terminal greeted by any node is online for
			// payments made through every node.
			w.violate("terminal-offline-while-online", "create %s on %s answered terminal_offline though %s is connected (on %s)", ref, d, d, w.nodes.termNode(d))
		case res.perr.Code == protocol.CodeDeviceBusy, res.perr.Code == protocol.CodeTerminalOffline:
		case res.perr.Code == protocol.CodeUnavailable && w.faults > 0:
			// It may or may not exist: the POS asks again by reference
			// once Redis answers.
			w.unknown = append(w.unknown, unknownCreate{key: k, dev: d, ref: ref, minor: minor, rest: rest})
		default:
			w.violate("create-refused", "create %s on %s: %s %s", ref, d, res.perr.Code, res.perr.Message)
		}
		return
	}
	t := w.txn(res.txn.ID)
	t.owner, t.dev, t.ref, t.minor = k, d, ref, minor
	w.refs = append(w.refs, t)
	w.note("%s %s", t.alias, res.txn.Status)
	w.observe(t, res.txn.Version, res.txn.Status, "paymentResponse")
	if t.firstKey != "" && t.firstKey != k {
		w.violate("pos-wrong-key", "%s (created by %s) was first told to %s", t.alias, k, t.firstKey)
	}
	if !res.created || res.txn.Status != protocol.StatusPending || res.txn.Version != 1 || res.txn.TerminalID != d {
		w.violate("create-answer", "create %s: created=%v %s v%d on %s", ref, res.created, res.txn.Status, res.txn.Version, res.txn.TerminalID)
	}
}

func (w *world) retryCreate(k string, rest bool) {
	t := w.refs[w.rng.IntN(len(w.refs))]
	w.logStep("POS %s repeats %s (%s) over %s", k, t.ref, t.alias, via(rest))
	res, err := w.be.create(k, t.dev, t.ref, t.minor, rest)
	if err != nil {
		w.violate("request-failed", "repeat %s: %v", t.ref, err)
		return
	}
	if res.perr != nil && res.perr.Code == protocol.CodeUnavailable && w.faults > 0 {
		w.note("unavailable")
		return
	}
	if res.perr != nil || res.created || res.txn == nil || res.txn.ID != t.id {
		w.violate("idempotency", "repeating reference %s of %s: %+v %+v", t.ref, t.alias, res.perr, res.txn)
		return
	}
	w.note("%s v%d created=false", res.txn.Status, res.txn.Version)
	w.observe(t, res.txn.Version, res.txn.Status, "repeated paymentResponse")
}

func (w *world) act(k, action, id string, rest bool) {
	t := w.txns[id]
	w.logStep("POS %s %ss %s (seen %s) over %s", k, action, t.alias, t.lastStatus, via(rest))
	got, perr, err := w.be.act(k, action, id, rest)
	switch {
	case err != nil:
		w.violate("request-failed", "%s %s: %v", action, t.alias, err)
	case perr != nil:
		w.note("%s", perr.Code)
		if perr.Code != protocol.CodeInvalidState && (perr.Code != protocol.CodeUnavailable || w.faults == 0) {
			w.violate("act-refused", "%s %s: %s %s", action, t.alias, perr.Code, perr.Message)
		}
	default:
		w.note("%s v%d", got.Status, got.Version)
		w.observe(t, got.Version, got.Status, action+"Response")
		if action == protocol.ActionCancel && got.Status != protocol.StatusCancelled {
			w.violate("cancel-answer", "cancel of %s answered %s", t.alias, got.Status)
		}
		if action == protocol.ActionVoid && got.Status != protocol.StatusVoided && t.voidAskedAt == 0 {
			t.voidAskedAt = got.Version
		}
	}
}

func (w *world) termConnect(d string, displace bool) {
	ts := w.term[d]
	if displace {
		w.logStep("terminal %s connects again over its live connection (displaces it)", d)
	} else {
		w.logStep("terminal %s connects", d)
	}
	if err := w.be.termConnect(d, displace); err != nil {
		w.violate("terminal-connect", "%s: %v", d, err)
		return
	}
	ts.connected, ts.silent = true, false
	// A terminal re-sends every result not yet acknowledged (docs/protocol.md#terminal-protocol).
	for _, r := range append([]protocol.PaymentResult(nil), ts.cache...) {
		w.note("re-sends %s %s", r.Outcome, w.alias(r.TransactionID))
		w.termSend(d, protocol.ActionPaymentResult, &r)
	}
	for _, id := range ts.voidResults {
		w.note("re-sends voidResult %s", w.alias(id))
		w.termSend(d, protocol.ActionVoidResult, &protocol.VoidResult{TransactionID: id, OK: ptr(true)})
	}
	ts.voidResults = nil
}

func (w *world) termSilent(d string) {
	w.logStep("terminal %s network dies silently (half-open)", d)
	w.be.termSilent(d)
	w.term[d].connected, w.term[d].silent = false, true
}

// termApproveThenSilent sends an approval and loses the network before
// anything the hub answers (resultAck, voidPayment) gets back.
func (w *world) termApproveThenSilent(d string, j *job) {
	ts := w.term[d]
	w.logStep("terminal %s result approved %s, then its network dies before any answer (half-open)", d, w.alias(j.txn))
	w.be.termSilent(d)
	ts.connected, ts.silent = false, true
	w.finishJob(ts, j, protocol.OutcomeApproved)
	r := ts.cache[len(ts.cache)-1]
	w.termSend(d, protocol.ActionPaymentResult, &r)
}

func (w *world) termDrop(d string) {
	w.logStep("terminal %s drops", d)
	if err := w.be.termDrop(d); err != nil {
		w.violate("stuck", "terminal %s drop: %v", d, err)
	}
	w.term[d].connected = false
}

func (w *world) termSend(d, action string, body any) {
	rid := action + ":" + txnOf(body)
	w.term[d].bodies[rid] = body
	if err := w.be.termSend(d, action, rid, body); err != nil {
		w.violate("stuck", "terminal %s send %s: %v", d, action, err)
	}
}

// txnOf is the transaction a terminal message is about.
func txnOf(body any) string {
	b, _ := json.Marshal(body)
	var v struct {
		TransactionID string `json:"transactionId"`
	}
	_ = json.Unmarshal(b, &v)
	return v.TransactionID
}

// termResend sends again what the hub answered unavailable (docs/protocol.md#terminal-protocol):
// a result only while the hub has not acknowledged it.
func (w *world) termResend(d string) {
	ts := w.term[d]
	rids := ts.refused
	ts.refused = nil
	w.logStep("terminal %s sends again what was answered unavailable: %s", d, strings.Join(rids, ", "))
	for _, rid := range rids {
		action, _, _ := strings.Cut(rid, ":")
		body := ts.bodies[rid]
		if r, ok := body.(*protocol.PaymentResult); ok && !slices.ContainsFunc(ts.cache, func(c protocol.PaymentResult) bool { return c.TransactionID == r.TransactionID }) {
			continue // acknowledged meanwhile
		}
		w.termSend(d, action, body)
	}
}

func (w *world) redisStall() {
	w.faults++
	w.stalled = true
	noticed := w.rng.IntN(2) == 0
	if noticed {
		w.logStep("Redis stalls (the hub's probe notices at once)")
	} else {
		w.logStep("Redis stalls (the hub goes on sending to it until its probe notices)")
	}
	w.be.redisStall(noticed)
}

func (w *world) redisLoseReply() {
	w.faults++
	scriptOnly := w.rng.IntN(3) > 0
	if scriptOnly {
		w.logStep("Redis loses the reply to the hub's next script (a commit, an ack)")
	} else {
		w.logStep("Redis loses the reply to the hub's next command")
	}
	w.be.redisLoseReply(scriptOnly)
}

// redisResume ends a stall: Redis wakes and runs everything it was sent,
// or (killed) comes back from its AOF having run only what it had read.
// Then the POS asks again about the sales it got no answer to.
func (w *world) redisResume(killed bool) {
	keep := -1
	if killed {
		keep = w.rng.IntN(4)
		w.logStep("Redis is killed and restarts with its AOF, having run the first %d commands it was sent during the stall", keep)
	} else {
		w.logStep("Redis wakes up and runs what it was sent")
	}
	w.stalled = false
	w.be.redisResume(keep)
	w.settle()
	w.retryUnknown()
}

// retryUnknown asks again, by reference, about every sale answered
// unavailable, as a POS does (docs/ops.md#when-redis-stalls-restarts-or-fails-over): one transaction per
// reference, whichever attempt created it.
func (w *world) retryUnknown() {
	pending := w.unknown
	w.unknown = nil
	for _, u := range pending {
		if !w.pos[u.key].connected {
			u.rest = true
		}
		w.logStep("POS %s asks again about %s on %s over %s", u.key, u.ref, u.dev, via(u.rest))
		res, err := w.be.create(u.key, u.dev, u.ref, u.minor, u.rest)
		if err != nil {
			w.violate("request-failed", "retry %s: %v", u.ref, err)
			continue
		}
		if res.perr != nil {
			w.note("%s", res.perr.Code)
			switch res.perr.Code {
			case protocol.CodeDeviceBusy, protocol.CodeTerminalOffline: // it never was created
			case protocol.CodeUnavailable:
				w.unknown = append(w.unknown, u)
			default:
				w.violate("create-refused", "retry %s on %s: %s %s", u.ref, u.dev, res.perr.Code, res.perr.Message)
			}
			continue
		}
		t := w.txn(res.txn.ID)
		if t.owner != "" && t.owner != u.key {
			w.violate("idempotency", "retrying %s answered %s, owned by %s", u.ref, t.alias, t.owner)
		}
		t.owner, t.dev, t.ref, t.minor = u.key, u.dev, u.ref, u.minor
		if !slices.Contains(w.refs, t) {
			w.refs = append(w.refs, t)
		}
		w.note("%s %s v%d created=%v", t.alias, res.txn.Status, res.txn.Version, res.created)
		w.observe(t, res.txn.Version, res.txn.Status, "paymentResponse (retry)")
		if t.firstKey != "" && t.firstKey != u.key {
			w.violate("pos-wrong-key", "%s (created by %s) was first told to %s", t.alias, u.key, t.firstKey)
		}
	}
}

func (w *world) termProgress(d string, j *job, state int) {
	j.state = state
	if state == 1 {
		w.logStep("terminal %s commandReceived %s", d, w.alias(j.txn))
		w.termSend(d, protocol.ActionCommandReceived, &protocol.CommandReceived{TransactionID: j.txn})
		return
	}
	w.logStep("terminal %s paymentProgress %s", d, w.alias(j.txn))
	w.termSend(d, protocol.ActionPaymentProgress, &protocol.PaymentProgress{TransactionID: j.txn, Stage: "card_presented"})
}

// termFinish ends a job with outcome: the result is kept until resultAck and
// sent now if the terminal is connected.
func (w *world) termFinish(d string, j *job, outcome string) {
	ts := w.term[d]
	t := w.txn(j.txn)
	if ts.connected {
		w.logStep("terminal %s result %s %s", d, outcome, t.alias)
	} else {
		w.logStep("terminal %s (offline) result %s %s, cached", d, outcome, t.alias)
	}
	w.finishJob(ts, j, outcome)
}

func (w *world) finishJob(ts *termState, j *job, outcome string) {
	t := w.txn(j.txn)
	j.done, j.outcome = true, outcome
	r := protocol.PaymentResult{TransactionID: j.txn, Outcome: outcome, MaskedPAN: "424242******4242", EntryMode: "contactless"}
	switch outcome {
	case protocol.OutcomeApproved:
		r.AuthCode, r.ResponseCode, r.RRN = "A"+strings.TrimPrefix(t.alias, "#"), "00", "rrn"+strings.TrimPrefix(t.alias, "#")
		t.approved, t.authCode = true, r.AuthCode
	case protocol.OutcomeDeclined:
		r.ResponseCode, r.ErrorCode = "05", protocol.TxnErrDeclined
	case protocol.OutcomeCancelled:
		r.MaskedPAN, r.EntryMode = "", ""
	}
	ts.cache = append(ts.cache, r)
	ts.sent = append(ts.sent, r)
	if ts.connected {
		w.termSend(ts.dev, protocol.ActionPaymentResult, &r)
	}
}

func (w *world) termDuplicate(d string) {
	ts := w.term[d]
	r := ts.sent[w.rng.IntN(len(ts.sent))]
	w.logStep("terminal %s sends its %s result for %s again", d, r.Outcome, w.alias(r.TransactionID))
	w.termSend(d, protocol.ActionPaymentResult, &r)
}

// termProcess is the terminal reading what the hub sent it.
func (w *world) termProcess(d string) {
	ts := w.term[d]
	var parts []string
	for _, c := range ts.inbox {
		parts = append(parts, c.action+" "+w.alias(c.txn))
	}
	w.logStep("terminal %s handles %s", d, strings.Join(parts, ", "))
	w.handleInbox(ts)
}

func (w *world) handleInbox(ts *termState) {
	for len(ts.inbox) > 0 {
		c := ts.inbox[0]
		ts.inbox = ts.inbox[1:]
		j := ts.jobs[c.txn]
		switch c.action {
		case protocol.ActionStartPayment:
			if j == nil {
				j = &job{txn: c.txn}
				ts.jobs[c.txn] = j
				ts.jobOrder = append(ts.jobOrder, j)
				if t := w.txns[c.txn]; t != nil && t.dev != "" && t.dev != ts.dev {
					w.violate("wrong-terminal", "%s of %s sent to %s", t.alias, t.dev, ts.dev)
				}
			}
		case protocol.ActionCancelPayment:
			if j != nil && !j.done {
				w.finishJob(ts, j, protocol.OutcomeCancelled)
			}
		case protocol.ActionVoidPayment:
			if j == nil || j.outcome != protocol.OutcomeApproved {
				w.violate("void-unapproved", "%s told to void %s, which it did not approve", ts.dev, w.alias(c.txn))
				continue
			}
			j.reversed = true
			if ts.connected {
				w.termSend(ts.dev, protocol.ActionVoidResult, &protocol.VoidResult{TransactionID: c.txn, OK: ptr(true)})
			} else {
				ts.voidResults = append(ts.voidResults, c.txn)
			}
		}
	}
}

func (w *world) advance(d time.Duration) {
	w.logStep("clock +%s", d)
	w.be.advance(d)
}

func (w *world) restart(crash bool) {
	downtime := []time.Duration{0, 0, 30 * time.Second, 120 * time.Second}[w.rng.IntN(4)]
	how := "drained"
	if crash {
		how = "crashed"
	}
	w.logStep("hub restart (%s, down %s)", how, downtime)
	if err := w.be.restart(crash, downtime); err != nil {
		w.violate("restart", "%v", err)
		return
	}
	var back []func()
	for _, k := range w.keys {
		if w.pos[k].connected {
			w.pos[k].connected = false
			if w.rng.IntN(2) == 0 {
				back = append(back, func() { w.posConnect(k) })
			}
		}
	}
	for _, d := range w.devs {
		if w.term[d].connected || w.term[d].silent {
			w.term[d].connected, w.term[d].silent = false, false
			if w.rng.IntN(2) == 0 {
				back = append(back, func() { w.termConnect(d, false) })
			}
		}
	}
	for _, f := range back {
		w.settle()
		f()
	}
}

func via(rest bool) string {
	if rest {
		return "REST"
	}
	return "WS"
}

func ptr[T any](v T) *T { return &v }

// ---- checks ----

func (w *world) settle() {
	if err := w.be.settle(); err != nil {
		w.violate("stuck", "%v", err)
	}
}

// stepChecks runs after every step, once everything sent has arrived.
func (w *world) stepChecks() {
	for _, k := range w.keys {
		p := w.pos[k]
		if !p.connected || w.stalled {
			continue
		}
		// (4) every durable message after the connection's starting cursor
		// that is still in the outbox reached this connection (once Redis
		// answers: a connection made during a stall gets its replay after).
		entries, err := w.be.outbox().After(ctxT(), merchant, k, p.cursor0, 100000)
		if err != nil {
			w.violate("stuck", "read outbox %s: %v", k, err)
			continue
		}
		for _, e := range entries {
			if !p.got[e.ID] {
				var ev protocol.POSEvent
				_ = json.Unmarshal(e.Frame(), &ev)
				w.violate("delivery-gap", "%s connection %d never got %s (%s %s v%d), newest received %s",
					k, p.conn, e.ID, ev.Action, w.alias(ev.TransactionID), ev.Version, p.lastID)
			}
		}
	}
	// (1) an approval the hub took is known to its (connected) owner, once
	// Redis answers (a connection made during a stall gets its replay after).
	for _, t := range w.order {
		if t.approvalProcessed && !t.told && w.pos[t.owner] != nil && w.pos[t.owner].connected && !w.stalled {
			w.violate("approval-untold", "the hub acknowledged the approval of %s but its POS %s, connected, was told neither COMPLETED nor paymentVoided (last seen %s v%d)",
				t.alias, t.owner, t.lastStatus, t.maxVer)
		}
	}
	if w.storeEveryStep {
		w.storeChecks(false)
	}
}

// storeChecks reads every transaction back from Redis: its history keeps
// the final-status rules; at the end, the POS's view and the terminal's
// money agree with it.
func (w *world) storeChecks(end bool) {
	w.eachStored(func(t *txnState, st *session.Txn) {
		seq := make([]protocol.Status, 0, len(st.History))
		for _, h := range st.History {
			seq = append(seq, h.Status)
		}
		if bad := badStatusSequence(seq); bad != "" {
			w.violate("final-changed", "%s in Redis: %s", t.alias, bad)
		}
		if !end {
			return
		}
		// docs/protocol.md#pos-protocol: a reply only says the request was accepted; the
		// outcome always comes later. An accepted void must end in
		// paymentVoided or a later message saying it failed, or still be open.
		if t.voidAskedAt > 0 && !st.OpenVoid && t.maxVer <= t.voidAskedAt {
			w.violate("void-outcome-missing", "POS %s's void of %s was accepted (v%d) but no outcome ever followed; Redis: %s v%d, history %s",
				t.owner, t.alias, t.voidAskedAt, st.Status, st.Version, lastCause(st))
		}
		if t.lastStatus != st.Status {
			w.violate("pos-view", "%s is %s v%d in Redis but its POS %s last saw %s v%d", t.alias, st.Status, st.Version, t.owner, t.lastStatus, t.maxVer)
		}
		if !t.approved {
			return
		}
		// (1) every approval is, for the POS, COMPLETED/AUTHORIZED or voided.
		if !t.told {
			w.violate("approval-lost", "the terminal approved %s (%s) but POS %s was never told COMPLETED/AUTHORIZED or paymentVoided (Redis: %s)", t.alias, t.authCode, t.owner, st.Status)
		}
		switch st.Status {
		case protocol.StatusCompleted, protocol.StatusAuthorized, protocol.StatusVoided:
		default:
			w.violate("approval-lost", "the terminal approved %s but it ends %s", t.alias, st.Status)
		}
		// Nobody is charged without the merchant knowing: VOIDED means the
		// terminal really reversed it, and a reversal is never left COMPLETED.
		j := w.term[t.dev].jobs[t.id]
		reversed := j != nil && j.reversed
		switch {
		case st.Status == protocol.StatusVoided && !reversed:
			w.violate("void-not-executed", "%s is VOIDED (%s) and the POS was told so, but the terminal never got voidPayment: the customer stays charged (void still open: %v; last history entry %s)",
				t.alias, st.VoidReasonCode, st.OpenVoid, lastCause(st))
		case st.Status != protocol.StatusVoided && reversed:
			w.violate("reversed-not-voided", "the terminal reversed %s but it ends %s", t.alias, st.Status)
		}
	})
}

// eachStored calls f with every transaction a POS made and its stored
// copy, read back from Redis; one that cannot be read is a violation.
func (w *world) eachStored(f func(t *txnState, st *session.Txn)) {
	for _, t := range w.order {
		if t.owner == "" {
			continue
		}
		st, err := w.be.store().Load(ctxT(), merchant, t.id)
		if err != nil {
			w.violate("stuck", "load %s: %v", t.alias, err)
			continue
		}
		f(t, st)
	}
}

func lastCause(t *session.Txn) string {
	if len(t.History) == 0 {
		return ""
	}
	h := t.History[len(t.History)-1]
	return fmt.Sprintf("%q", h.Cause)
}

// finish reconnects everyone, lets every open command and cached result
// play out, and runs the end checks.
func (w *world) finish() {
	if w.stalled {
		w.redisResume(false)
	}
	if len(w.unknown) > 0 {
		w.retryUnknown()
	}
	w.logStep("end: everyone reconnects")
	for _, d := range w.devs {
		if !w.term[d].connected {
			w.settle()
			w.termConnect(d, w.term[d].silent)
		}
	}
	for _, k := range w.keys {
		if !w.pos[k].connected {
			w.settle()
			w.posConnect(k)
		}
	}
	w.settle()
	for round := 0; round < 20 && len(w.viol) == 0; round++ {
		busy := false
		for _, d := range w.devs {
			if len(w.term[d].inbox) > 0 {
				busy = true
				w.termProcess(d)
			}
			if len(w.term[d].refused) > 0 {
				busy = true
				w.termResend(d)
			}
		}
		w.settle()
		if !busy {
			break
		}
	}
	if len(w.viol) > 0 {
		return
	}
	w.stepChecks()
	for _, d := range w.devs {
		for _, r := range w.term[d].cache {
			w.violate("result-unacked", "%s still holds its %s result for %s: the hub never acknowledged it", d, r.Outcome, w.alias(r.TransactionID))
		}
	}
	w.storeChecks(true)
}
