package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
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
	rdb, prefix, done := engineRedis(t)
	defer done()
	be := newEngineBackend(t, rdb, prefix)
	defer be.close()
	return runSequence(seed, steps, be, 1+int(seed%2), false)
}

// pipeRedis is a miniredis reached over net.Pipe, without TCP: the engine
// variant spends most of its time talking to Redis. One is reused by
// sequence after sequence (flushed in between).
type pipeRedis struct {
	m   *miniredis.Miniredis
	rdb *redis.Client
}

var pipePool struct {
	mu   sync.Mutex
	free []*pipeRedis
}

// engineRedis gives a sequence a pooled in-process miniredis, also when
// REDIS_URL is set: the engine variant is about volume; real Redis is what
// the socket variant (redistest) runs on.
func engineRedis(t *testing.T) (redis.UniversalClient, string, func()) {
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
		opts := &redis.Options{
			Addr: m.Addr(),
			Dialer: func(context.Context, string, string) (net.Conn, error) {
				client, server := net.Pipe()
				m.Server().ServeConn(server)
				return client, nil
			},
		}
		redistest.Configure(opts)
		p = &pipeRedis{m: m, rdb: redis.NewClient(opts)}
	}
	p.m.FlushAll()
	return p.rdb, "test:", func() {
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
type engineBackend struct {
	w     *world
	st    *session.Store
	ob    *queue.Outbox
	clk   *clock.Fake
	eng   *session.Engine
	gen   int
	terms map[string]*engTerm
	poss  map[string]*engPOS
	n     int
}

func newEngineBackend(t *testing.T, rdb redis.UniversalClient, prefix string) *engineBackend {
	ks := keys.Space{Prefix: prefix}
	b := &engineBackend{st: session.NewStore(rdb, ks), ob: queue.NewOutbox(rdb, ks), poss: map[string]*engPOS{}}
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
func (b *engineBackend) close()                {}
func (b *engineBackend) settle() error         { return nil }

// startGen is a hub process starting: a new engine and clock on the same
// Redis, then what app.App.Start does.
func (b *engineBackend) startGen(start time.Time) error {
	b.gen++
	b.clk = clock.NewFake(start)
	b.terms = map[string]*engTerm{"T1": {status: protocol.TerminalOffline}, "T2": {status: protocol.TerminalOffline}}
	b.eng = session.NewEngine(session.Options{
		Store: b.st, Clock: b.clk, Logger: zerolog.Nop(), Terminals: b, Sink: engSink{b, b.gen},
		PaymentTimeout: paymentTimeout, SignatureTimeout: 60 * time.Second,
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

func (b *engineBackend) TerminalLive(deviceID string) (string, string, time.Time) {
	t := b.terms[deviceID]
	if t == nil {
		return protocol.TerminalOffline, "", time.Time{}
	}
	return t.status, t.connID, t.graceUntil
}

// engSink delivers for one generation; a dead generation's engine is never
// called again (its clock is abandoned), the check is belt and braces.
type engSink struct {
	b   *engineBackend
	gen int
}

func (s engSink) DeliverPOS(_, apiKeyID string, msgs []session.Message) {
	if s.gen == s.b.gen {
		s.b.deliver(apiKeyID, msgs)
	}
}

func (s engSink) NudgePOS(_, apiKeyID string) {
	if s.gen == s.b.gen {
		s.b.deliver(apiKeyID, nil)
	}
}

func (s engSink) SendTerminal(deviceID string, cmds []any) {
	if s.gen == s.b.gen {
		s.b.sendTerminal(deviceID, cmds)
	}
}

// sendTerminal is hub.SendTerminal: commands reach a live terminal, unless
// its connection is half-open.
func (b *engineBackend) sendTerminal(deviceID string, cmds []any) {
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

func (b *engineBackend) posAck(key, id string) error {
	_, err := b.ob.Ack(context.Background(), merchant, key, id)
	return err
}

func clientErr(err error) (*protocol.Error, error) {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe, nil
	}
	return nil, err
}

func (b *engineBackend) create(key, dev, ref string, minor int64, _ bool) (createResult, error) {
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
	// returns every command still open, which the hub re-sends.
	cmds, err := b.eng.TerminalConnected(context.Background(), merchant, dev, t.connID)
	b.sendTerminal(dev, cmds)
	return err
}

func (b *engineBackend) termSilent(dev string) { b.terms[dev].silent = true }

func (b *engineBackend) termDrop(dev string) error {
	b.terms[dev].silent = false
	until := b.markReconnecting(dev)
	return b.eng.TerminalDropped(context.Background(), merchant, dev, until)
}

func (b *engineBackend) termSend(dev, _ string, body any) error {
	if b.terms[dev].status != protocol.TerminalOnline {
		return fmt.Errorf("terminal %s is not connected", dev)
	}
	err := b.eng.TerminalEvent(context.Background(), merchant, dev, body)
	if err != nil {
		pe, err := clientErr(err)
		if err != nil {
			return err
		}
		b.w.onTerminalError(dev, fmt.Sprintf("%s: %s", pe.Code, pe.Message))
	}
	return nil
}

func (b *engineBackend) advance(d time.Duration) { b.clk.Advance(d) }

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
