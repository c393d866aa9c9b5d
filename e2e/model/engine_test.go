package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redisfault"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
)

// TestModelEngine runs the same sequences against the real session.Engine
// and Store on Redis, with the hub replaced by an in-process double that
// keeps the hub's rules for terminal status, grace timers, replay and
// restarts (app.Start). It is fast enough for 10^5 sequences.
func TestModelEngine(t *testing.T) {
	p := planFor(t, 80, 1, "TERMHUB_SOAK_ENGINE_SEQUENCES")
	runMany(t, "engine", p, soakWorkers(p, runtime.GOMAXPROCS(0)), func(t *testing.T, seed uint64) outcome {
		return runEngineSequence(t, seed, p.steps)
	})
}

func runEngineSequence(t *testing.T, seed uint64, steps int) outcome {
	p, prefix, done := engineRedis(t)
	defer done()
	be := newEngineBackend(t, p, prefix)
	defer be.close()
	return runSequence(seed, steps, be, 1+int(seed%2), false)
}

// pipeRedis is a miniredis reached over net.Pipe, without TCP: the engine
// variant spends most of its time talking to Redis. One is reused by
// sequence after sequence (flushed in between). rdb is the test's own view
// of it; the hub double gets a client of its own per sequence (client),
// which the sequence's Redis faults apply to.
type pipeRedis struct {
	m   *miniredis.Miniredis
	rdb *redis.Client
}

// client returns a new client of p's server.
func (p *pipeRedis) client() *redis.Client {
	opts := &redis.Options{
		Addr: p.m.Addr(),
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			p.m.Server().ServeConn(server)
			return client, nil
		},
	}
	redistest.Configure(opts)
	return redis.NewClient(opts)
}

var pipePool struct {
	mu   sync.Mutex
	free []*pipeRedis
}

// engineRedis gives a sequence a pooled in-process miniredis, also when
// REDIS_URL is set: the engine variant is about volume; real Redis is what
// the socket variant (redistest) runs on.
func engineRedis(t *testing.T) (*pipeRedis, string, func()) {
	pipePool.mu.Lock()
	var p *pipeRedis
	if n := len(pipePool.free); n > 0 {
		p, pipePool.free = pipePool.free[n-1], pipePool.free[:n-1]
	}
	pipePool.mu.Unlock()
	if p == nil {
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		p = &pipeRedis{m: m}
		p.rdb = p.client()
	}
	p.m.FlushAll()
	return p, "test:", func() {
		pipePool.mu.Lock()
		pipePool.free = append(pipePool.free, p)
		pipePool.mu.Unlock()
	}
}

type engTerm struct {
	silent     bool // half-open: commands are lost
	status     string
	connID     string
	graceUntil time.Time
	grace      clock.Timer
	seq        int
}

type engPOS struct {
	connected bool
	from      string // the stream id up to which the connection has every entry
}

// engineBackend is the hub's part done in process: what app.App, the hub's
// registry and its delivery do, over the real engine, store and outbox.
// The engine works through the hub's own client (hubRdb), which Redis
// faults apply to, behind a redisx.Health gate as in the hub; the test
// reads Redis through its own (st, ob).
type engineBackend struct {
	w       *world
	hubRdb  *redis.Client
	faults  *redisfault.Faults
	health  *redisx.Health
	ks      keys.Space
	st      *session.Store // the test's view
	ob      *queue.Outbox  // the test's view
	hubOb   *queue.Outbox  // the hub's acks
	clk     *clock.Fake
	eng     *session.Engine
	mu      sync.Mutex  // guards gen and effects, which the engine's workers touch
	gen     int         // guarded by mu
	effects []engEffect // guarded by mu: what the engine asked for, not yet carried out (flush)
	terms   map[string]*engTerm
	poss    map[string]*engPOS
	n       int
	// Connection changes Redis did not take, tried again once it answers
	// (as the hub does): a resume by device (its connection id), a drop by
	// device (its grace deadline).
	resumes map[string]string
	drops   map[string]time.Time
}

func newEngineBackend(t *testing.T, p *pipeRedis, prefix string) *engineBackend {
	ks := keys.Space{Prefix: prefix}
	b := &engineBackend{ks: ks, st: session.NewStore(p.rdb, ks), ob: queue.NewOutbox(p.rdb, ks), poss: map[string]*engPOS{},
		hubRdb: p.client(), faults: &redisfault.Faults{Exec: p.rdb}, resumes: map[string]string{}, drops: map[string]time.Time{}}
	b.health = redisx.NewHealth(redisx.HealthOptions{Client: b.hubRdb, MarkerKey: ks.Marker(), Logger: zerolog.Nop()})
	b.hubRdb.AddHook(b.faults) // behind the gate, as the network is
	b.hubOb = queue.NewOutbox(b.hubRdb, ks)
	for _, k := range []string{"pk1", "pk1b"} {
		b.poss[k] = &engPOS{}
	}
	if err := b.startGen(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *engineBackend) bind(w *world)         { b.w = w }
func (b *engineBackend) store() *session.Store { return b.st }
func (b *engineBackend) outbox() *queue.Outbox { return b.ob }

func (b *engineBackend) close() {
	b.eng.Close()
	b.health.Close()
	_ = b.hubRdb.Close()
}

// settle is what the hub does once Redis answers again: the probe finds it
// up, the connection changes it did not take are tried again, the engine's
// held work is done, and every POS connection has what its outbox holds.
func (b *engineBackend) settle() error {
	defer b.flush()
	if b.w.stalled {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := probeUntilUp(ctx, b.health); err != nil {
		return err
	}
	// The engine's held work first: a change of a held transaction is
	// refused (the hub's retries simply come again).
	for attempt := 0; ; attempt++ {
		if !b.eng.WaitIdle(ctx) {
			return errors.New("the engine still holds transactions")
		}
		err := b.retryConnections(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, session.ErrUnavailable) || attempt == 100 {
			return err
		}
	}
	if !b.eng.WaitIdle(ctx) {
		return errors.New("the engine still holds transactions")
	}
	b.flush()
	for k := range b.poss {
		b.deliver(k, nil)
	}
	return nil
}

// probeUntilUp probes Redis (the probe itself may lose its reply) until it
// answers, as the hub's probe loop does.
func probeUntilUp(ctx context.Context, h *redisx.Health) error {
	for {
		err := h.Check(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("Redis probe after the faults: %w", err)
		}
	}
}

// retryConnections applies the drops and resumes Redis did not take.
func (b *engineBackend) retryConnections(ctx context.Context) error {
	for _, d := range []string{"T1", "T2"} {
		if until, ok := b.drops[d]; ok {
			if err := b.eng.TerminalDropped(ctx, merchant, d, until); err != nil {
				return fmt.Errorf("drop of %s, tried again: %w", d, err)
			}
			delete(b.drops, d)
		}
		if connID, ok := b.resumes[d]; ok {
			cmds, err := b.eng.TerminalConnected(ctx, merchant, d, connID)
			if err != nil {
				return fmt.Errorf("resume of %s, tried again: %w", d, err)
			}
			delete(b.resumes, d)
			b.sendTerminal(d, cmds)
		}
	}
	return nil
}

func (b *engineBackend) redisStall(noticed bool) {
	b.faults.Stall()
	if !noticed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_ = b.health.Check(ctx) // the probe finds it down: the gate closes
}

func (b *engineBackend) redisResume(keep int) { b.faults.Resume(keep) }
func (b *engineBackend) redisLoseReply(scriptOnly bool) {
	if scriptOnly {
		b.faults.LoseScriptReplies(1)
	} else {
		b.faults.LoseReplies(1)
	}
}

// startGen is a hub process starting: a new engine and clock on the same
// Redis, then what app.App.Start does. The old engine, if any, dies with
// what it held.
func (b *engineBackend) startGen(start time.Time) error {
	defer b.flush()
	if b.eng != nil {
		b.eng.Close()
	}
	b.faults.LoseReplies(0) // a reply to be lost belonged to the old process
	b.faults.LoseScriptReplies(0)
	b.mu.Lock()
	b.gen++
	gen := b.gen
	b.effects = nil
	b.mu.Unlock()
	b.clk = clock.NewFake(start)
	b.terms = map[string]*engTerm{"T1": {status: protocol.TerminalOffline}, "T2": {status: protocol.TerminalOffline}}
	clear(b.resumes)
	clear(b.drops)
	log := zerolog.Nop()
	if os.Getenv("TERMHUB_TEST_LOG") != "" {
		log = zerolog.New(os.Stderr).With().Int("gen", b.gen).Logger()
	}
	b.eng = session.NewEngine(session.Options{
		Store: session.NewStore(b.hubRdb, b.ks), Clock: b.clk, Logger: log, Terminals: b, Sink: engSink{b, gen},
		PaymentTimeout: paymentTimeout, SignatureTimeout: 60 * time.Second, Ready: b.health.Ready,
		Merchants: func() []string { return []string{merchant} },
	})
	ctx := context.Background()
	if err := b.eng.Start(ctx, []string{merchant}); err != nil {
		return err
	}
	busy, err := b.eng.DevicesWithWork(ctx, merchant, []string{"T1", "T2"})
	if err != nil {
		return err
	}
	for _, d := range busy {
		until := b.markReconnecting(d)
		if err := b.eng.TerminalDropped(ctx, merchant, d, until); err != nil {
			return err
		}
	}
	b.clk.Advance(0)
	return nil
}

// ---- the hub's side of session.Terminals and session.Sink ----

func (b *engineBackend) ResolveTerminal(merchantID, terminalID string) (string, bool) {
	_, ok := b.terms[terminalID]
	return terminalID, ok && merchantID == merchant
}

func (b *engineBackend) TerminalLive(deviceID string) (session.TerminalStatus, string, time.Time) {
	t := b.terms[deviceID]
	if t == nil {
		return protocol.TerminalOffline, "", time.Time{}
	}
	return session.TerminalStatus(t.status), t.connID, t.graceUntil
}

// engSink takes one generation's effects. The engine hands them over from
// the caller's goroutine, or from a worker of its own (a lost commit
// carried out, held events applied): they wait in the backend's queue
// until the sequence's goroutine takes them (flush), which every backend
// call does before it returns. A dead generation's effects are dropped.
type engSink struct {
	b   *engineBackend
	gen int
}

// engEffect is a POS connection to deliver to, or commands for a terminal.
type engEffect struct {
	key  string
	dev  string
	cmds []session.TerminalCommand
}

func (s engSink) queue(e engEffect) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.gen == s.b.gen {
		s.b.effects = append(s.b.effects, e)
	}
}

func (s engSink) DeliverPOS(_, apiKeyID string, _ []session.Message) {
	s.queue(engEffect{key: apiKeyID})
}
func (s engSink) NudgePOS(_, apiKeyID string) { s.queue(engEffect{key: apiKeyID}) }
func (s engSink) SendTerminal(deviceID string, cmds []session.TerminalCommand) {
	s.queue(engEffect{dev: deviceID, cmds: cmds})
}

// flush carries out the queued effects, in the order they came.
func (b *engineBackend) flush() {
	for {
		b.mu.Lock()
		effects := b.effects
		b.effects = nil
		b.mu.Unlock()
		if len(effects) == 0 {
			return
		}
		for _, e := range effects {
			if e.key != "" {
				b.deliver(e.key, nil)
			} else {
				b.sendTerminal(e.dev, e.cmds)
			}
		}
	}
}

// sendTerminal is hub.SendTerminal: commands reach a live terminal, unless
// its connection is half-open.
func (b *engineBackend) sendTerminal(deviceID string, cmds []session.TerminalCommand) {
	if t := b.terms[deviceID]; t.status != protocol.TerminalOnline || t.silent {
		return
	}
	for _, c := range cmds {
		raw, err := json.Marshal(c)
		if err != nil {
			b.w.violate("terminal-undecodable", "%v", err)
			continue
		}
		b.w.onTerminal(deviceID, raw)
	}
}

// deliver is the hub's delivery to a POS connection: every entry of the
// outbox after what the connection has, in stream order, each once. The
// hub hands a commit's entries over directly when they are the next ones
// and reads the stream otherwise; the double always reads it, which sends
// the same frames.
func (b *engineBackend) deliver(key string, _ []queue.Entry) {
	p := b.poss[key]
	if !p.connected {
		return
	}
	entries, err := b.ob.After(context.Background(), merchant, key, p.from, 100000)
	if err != nil {
		b.w.violate("delivery", "%s: reading the outbox: %v", key, err)
		return
	}
	for _, m := range entries {
		p.from = m.ID
		b.w.onPOS(key, m.Frame())
	}
}

func (b *engineBackend) markReconnecting(d string) time.Time {
	t := b.terms[d]
	if t.grace != nil {
		t.grace.Stop()
	}
	t.seq++
	seq := t.seq
	t.status, t.graceUntil = protocol.TerminalReconnecting, b.clk.Now().UTC().Add(gracePeriod)
	t.grace = b.clk.AfterFunc(gracePeriod, func() {
		if t.seq == seq && t.status == protocol.TerminalReconnecting {
			t.status, t.graceUntil, t.grace = protocol.TerminalOffline, time.Time{}, nil
		}
	})
	return t.graceUntil
}

// ---- POS ----

func (b *engineBackend) posConnect(key string) error {
	p := b.poss[key]
	cursor, err := b.ob.Cursor(context.Background(), merchant, key)
	if err != nil {
		return err
	}
	p.connected, p.from = true, cursor
	b.deliver(key, nil)
	return nil
}

func (b *engineBackend) posDrop(key string) error {
	b.poss[key].connected = false
	return nil
}

func (b *engineBackend) posAck(key, id string) (*protocol.Error, error) {
	defer b.flush()
	_, err := b.hubOb.Ack(context.Background(), merchant, key, id)
	return clientErr(err)
}

// clientErr is what the hub answers for an engine error: a client error,
// or unavailable when Redis did not serve the request (hub.clientError).
func clientErr(err error) (*protocol.Error, error) {
	var pe *protocol.Error
	switch {
	case err == nil:
		return nil, nil
	case errors.As(err, &pe):
		return pe, nil
	case errors.Is(err, session.ErrUnavailable) || redisx.Outage(err):
		return protocol.Errorf(protocol.CodeUnavailable, "", "%v", err), nil
	}
	return nil, err
}

func (b *engineBackend) create(key, dev, ref string, minor int64, _ bool) (createResult, error) {
	defer b.flush()
	req := &protocol.PaymentRequest{TerminalID: dev, AmountMinor: &minor, Currency: "USD", Reference: ref}
	if e := req.Validate(); e != nil {
		return createResult{perr: e}, nil
	}
	res, err := b.eng.Create(context.Background(), session.CreateInput{MerchantID: merchant, APIKeyID: key, Req: req})
	if err != nil {
		pe, err := clientErr(err)
		return createResult{perr: pe}, err
	}
	return createResult{txn: res.Txn, created: res.Created}, nil
}

func (b *engineBackend) act(_, action, txnID string, _ bool) (*protocol.Transaction, *protocol.Error, error) {
	defer b.flush()
	in := session.ActInput{MerchantID: merchant, TxnID: txnID, Action: action}
	switch action {
	case protocol.ActionCancel:
		in.Body, in.Event = &protocol.CancelRequest{TransactionID: txnID}, session.EvCancel{}
	case protocol.ActionVoid:
		in.Body, in.Event = &protocol.VoidRequest{TransactionID: txnID}, session.EvVoid{}
	default:
		return nil, nil, fmt.Errorf("unsupported action %s", action)
	}
	res, err := b.eng.Act(context.Background(), in)
	if err != nil {
		pe, err := clientErr(err)
		return nil, pe, err
	}
	return res.Txn, nil, nil
}

// ---- terminals ----

func (b *engineBackend) termConnect(dev string, _ bool) error {
	defer b.flush()
	t := b.terms[dev]
	if t.grace != nil {
		t.grace.Stop()
		t.grace = nil
	}
	t.seq++
	b.n++
	t.silent = false
	t.status, t.connID, t.graceUntil = protocol.TerminalOnline, fmt.Sprintf("conn_%d", b.n), time.Time{}
	// Like hub.terminalUp: the engine resumes the device's transactions and
	// returns every command still open, which the hub re-sends; if Redis
	// does not answer, the hub tries again once it does.
	delete(b.drops, dev)
	cmds, err := b.eng.TerminalConnected(context.Background(), merchant, dev, t.connID)
	if errors.Is(err, session.ErrUnavailable) || redisx.Outage(err) {
		b.resumes[dev] = t.connID
		return nil
	}
	delete(b.resumes, dev)
	b.sendTerminal(dev, cmds)
	return err
}

func (b *engineBackend) termSilent(dev string) { b.terms[dev].silent = true }

func (b *engineBackend) termDrop(dev string) error {
	defer b.flush()
	b.terms[dev].silent = false
	until := b.markReconnecting(dev)
	delete(b.resumes, dev)
	err := b.eng.TerminalDropped(context.Background(), merchant, dev, until)
	if errors.Is(err, session.ErrUnavailable) || redisx.Outage(err) {
		b.drops[dev] = until // the hub tries again once Redis answers
		return nil
	}
	return err
}

func (b *engineBackend) termSend(dev, _, rid string, body any) error {
	defer b.flush()
	if b.terms[dev].status != protocol.TerminalOnline {
		return fmt.Errorf("terminal %s is not connected", dev)
	}
	err := b.eng.TerminalEvent(context.Background(), merchant, dev, body)
	if err != nil {
		pe, err := clientErr(err)
		if err != nil {
			return err
		}
		b.w.onTerminalError(dev, rid, pe.Code, pe.Message)
	}
	return nil
}

func (b *engineBackend) advance(d time.Duration) {
	defer b.flush()
	b.clk.Advance(d)
}

// restart: a drained hub first lets go of its terminals (their transactions
// start the grace period on the old engine); a crashed one does nothing more.
func (b *engineBackend) restart(crash bool, downtime time.Duration) error {
	if !crash {
		for _, d := range []string{"T1", "T2"} {
			if b.terms[d].status == protocol.TerminalOnline {
				if err := b.termDrop(d); err != nil {
					return err
				}
			}
		}
	}
	for _, p := range b.poss {
		p.connected = false
	}
	return b.startGen(b.clk.Now().Add(downtime))
}
