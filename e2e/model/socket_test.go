package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redisfault"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
)

// waitFor bounds every wait on the hub: a reply, a barrier, a drop being
// applied. Reaching it is reported as a violation ("stuck").
const waitFor = 10 * time.Second

func ctxT() context.Context { return context.Background() }

// TestModelSockets drives whole hubs over WebSockets and REST.
func TestModelSockets(t *testing.T) {
	p := planFor(t, 40, 20, "TERMHUB_SOAK_SOCKET_SEQUENCES")
	// Socket sequences mostly wait on the network: twice as many workers
	// as CPUs keeps them busy.
	runMany(t, "socket", p, soakWorkers(p, 2*runtime.GOMAXPROCS(0)), func(t *testing.T, seed uint64) outcome {
		return runSocketSequence(t, seed, p.steps)
	})
}

func runSocketSequence(t *testing.T, seed uint64, steps int) outcome {
	be := newSocketBackend(t)
	defer be.close()
	nKeys := 1 + int(seed%2)
	return runSequence(seed, steps, be, nKeys, true)
}

// wsConn is a client connection with a reader goroutine, so that waits are
// bounded without closing the socket (a Read whose ctx ends closes it).
type wsConn struct {
	c      *client.Conn
	ch     chan client.Message // closed when the connection has ended
	silent bool                // half-open: frames are read (for probes) but never reach the terminal
}

func newWSConn(c *client.Conn) *wsConn {
	wc := &wsConn{c: c, ch: make(chan client.Message, 4096)}
	go func() {
		defer close(wc.ch)
		for {
			m, err := c.Read(context.Background())
			if err != nil {
				return
			}
			wc.ch <- m
		}
	}()
	return wc
}

// next returns the next message; ok is false when the connection ended,
// and err is set when nothing came within waitFor.
func (wc *wsConn) next() (m client.Message, ok bool, err error) {
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case m, ok = <-wc.ch:
		return m, ok, nil
	case <-timer.C:
		return client.Message{}, true, errors.New("nothing received within " + waitFor.String())
	}
}

func requestID(m client.Message) string {
	var v struct {
		RequestID string `json:"requestId"`
	}
	_ = json.Unmarshal(m.Raw, &v)
	return v.RequestID
}

// generation is one hub process: its App, server, clock and Redis client.
type generation struct {
	app *app.App
	srv *httptest.Server
	clk *clock.Fake
	rdb *redis.Client
}

type socketBackend struct {
	w   *world
	tb  testing.TB
	r   *redistest.Redis
	cfg config.Config
	ks  keys.Space
	st  *session.Store
	ob  *queue.Outbox
	log zerolog.Logger
	gen *generation
	clk atomic.Pointer[clock.Fake]
	// tills gives each REST client a clock of its own, seconds apart
	// (inside the ±300 s window), as separate till processes have: the
	// fake clock stands still while the model sends identical requests,
	// and one client signs identical POSTs only as fast as its clock lets
	// it sign them afresh.
	tills atomic.Int64
	pos   map[string]*wsConn
	term  map[string]*wsConn
	n     int
	// faults apply to every hub process's client, behind its Health gate;
	// the test reads Redis through r.Client, untouched.
	faults *redisfault.Faults
	// drops are terminal connections that ended while Redis did not
	// answer: the hub applies the drop once it does (settle waits).
	drops map[string]string
}

func newSocketBackend(t *testing.T) *socketBackend {
	b := newSocketBase(t)
	if err := b.startGen(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	return b
}

// newSocketBase is a socket backend with its Redis and no hub process yet.
func newSocketBase(t *testing.T) *socketBackend {
	cfg, err := config.Parse([]byte(kit.Config), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	r := redistest.New(t)
	cfg.KeyPrefix = r.Prefix
	ks := keys.Space{Prefix: r.Prefix}
	b := &socketBackend{
		tb: t, r: r, cfg: cfg, ks: ks,
		st: session.NewStore(r.Client, ks), ob: queue.NewOutbox(r.Client, ks),
		log: zerolog.New(io.Discard),
		pos: map[string]*wsConn{}, term: map[string]*wsConn{},
		faults: &redisfault.Faults{Exec: r.Client}, drops: map[string]string{},
	}
	if os.Getenv("TERMHUB_TEST_LOG") != "" {
		b.log = zerolog.New(zerolog.NewTestWriter(t))
	}
	return b
}

func (b *socketBackend) bind(w *world) { b.w = w }

func (b *socketBackend) startGen(start time.Time) error {
	clk := clock.NewFake(start)
	b.clk.Store(clk)
	// Its own client, so that a crash can cut this process off from Redis.
	rdb, err := b.processClient()
	if err != nil {
		return err
	}
	a := app.New(b.cfg, rdb, clk, b.log)
	b.faults.LoseReplies(0) // a reply to be lost belonged to the old process
	b.faults.LoseScriptReplies(0)
	rdb.AddHook(b.faults) // behind the App's Health gate, as the network is
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		_ = rdb.Close()
		return fmt.Errorf("App.Start: %w", err)
	}
	b.gen = &generation{app: a, srv: httptest.NewServer(a.Handler()), clk: clk, rdb: rdb}
	clk.Advance(0) // deadlines that fell due while no hub ran fire at once
	return nil
}

// processClient is a Redis client of the test's Redis for one hub process.
func (b *socketBackend) processClient() (*redis.Client, error) {
	o := &redis.Options{}
	if b.r.URL != "" {
		var err error
		if o, err = redis.ParseURL(b.r.URL); err != nil {
			return nil, err
		}
	} else {
		o.Addr = b.r.Mini.Addr()
	}
	redistest.Configure(o)
	return redis.NewClient(o), nil
}

func (b *socketBackend) opts() client.Options {
	skew := time.Duration(b.tills.Add(1)%240) * time.Second
	return client.Options{BaseURL: b.gen.srv.URL, Now: func() time.Time { return b.clk.Load().Now().Add(skew) }}
}

func (b *socketBackend) store() *session.Store { return b.st }
func (b *socketBackend) outbox() *queue.Outbox { return b.ob }

func (b *socketBackend) close() {
	for _, wc := range b.pos {
		_ = wc.c.CloseNow()
	}
	for _, wc := range b.term {
		_ = wc.c.CloseNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_ = b.gen.app.Drain(ctx)
	b.gen.srv.Close()
	_ = b.gen.rdb.Close()
}

// ---- POS ----

func (b *socketBackend) posConnect(key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := client.DialPOS(ctx, b.opts(), key, kit.Secrets[key])
	if err != nil {
		return err
	}
	b.pos[key] = newWSConn(c)
	return nil
}

// readPOS reads key's connection, handing durable messages to the world,
// until until(m) holds for a message (which is returned). Replies whose
// requestId is in mine belong to the caller; any other error reply is a
// violation.
func (b *socketBackend) readPOS(key string, until func(client.Message) bool, mine ...string) (client.Message, error) {
	wc := b.pos[key]
	for {
		m, ok, err := wc.next()
		if err != nil {
			return m, fmt.Errorf("POS %s: %w", key, err)
		}
		if !ok {
			return m, fmt.Errorf("POS %s: connection ended", key)
		}
		if m.MessageID() != "" {
			b.w.onPOS(key, m.Raw)
		} else if m.Action == protocol.ActionTerminalStatusUpdate {
			b.w.onTerminalStatus(key, m.Raw)
		}
		if until(m) {
			return m, nil
		}
		if m.Action == protocol.ActionError && !slices.Contains(mine, requestID(m)) {
			b.w.violate("pos-error", "%s got an error nobody asked for: %s", key, m.Raw)
		}
	}
}

// drainPOS hands what a closing connection still received to the world.
func (b *socketBackend) drainPOS(key string, wc *wsConn) error {
	for {
		m, ok, err := wc.next()
		if err != nil {
			return fmt.Errorf("POS %s does not close: %w", key, err)
		}
		if !ok {
			return nil
		}
		if m.MessageID() != "" {
			b.w.onPOS(key, m.Raw)
		} else if m.Action == protocol.ActionTerminalStatusUpdate {
			b.w.onTerminalStatus(key, m.Raw)
		}
	}
}

func (b *socketBackend) posDrop(key string) error {
	wc := b.pos[key]
	delete(b.pos, key)
	id := wc.c.ConnectionID()
	_ = wc.c.CloseNow()
	if err := b.drainPOS(key, wc); err != nil {
		return err
	}
	// Wait until the hub has let go of it, so that the next connection of
	// the key is not a displacement.
	return poll(func() bool {
		for _, c := range b.gen.app.Hub.Connections() {
			if c.ConnectionID == id {
				return false
			}
		}
		return true
	}, "the hub to notice POS "+key+" dropped")
}

func (b *socketBackend) posAck(key, id string) (*protocol.Error, error) {
	b.n++
	ackID, syncID := fmt.Sprintf("ack-%d", b.n), fmt.Sprintf("sync-%d", b.n)
	c := b.pos[key].c
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.SendAction(ctx, protocol.ActionAck, ackID, protocol.AckRequest{MessageID: id}); err != nil {
		return nil, err
	}
	if err := c.SendAction(ctx, protocol.ActionListTerminals, syncID, nil); err != nil {
		return nil, err
	}
	// Frames of one connection are served in order: the reply to the
	// listTerminals after the ack means the ack is stored, unless an error
	// answering the ack comes first.
	m, err := b.readPOS(key, func(m client.Message) bool { r := requestID(m); return r == ackID || r == syncID }, ackID)
	if err != nil {
		return nil, err
	}
	if requestID(m) == ackID {
		if e := m.Err(); e != nil {
			// Its sync reply still comes: read it, so the next step starts clean.
			if _, err := b.readPOS(key, func(m client.Message) bool { return requestID(m) == syncID }); err != nil {
				return nil, err
			}
			return e, nil
		}
		return nil, fmt.Errorf("ack answered: %s", m.Raw)
	}
	return nil, nil
}

func (b *socketBackend) create(key, dev, ref string, minor int64, rest bool) (createResult, error) {
	body := map[string]any{"terminalId": dev, "amountMinor": minor, "currency": "USD", "reference": ref}
	var out struct {
		Transaction *protocol.Transaction `json:"transaction"`
		Created     bool                  `json:"created"`
	}
	if rest {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		resp, err := client.NewHTTP(b.opts(), key, kit.Secrets[key]).Do(ctx, "POST", "/v1/payments", body, nil)
		if err != nil {
			return createResult{}, err
		}
		if e := resp.Err(); e != nil {
			return createResult{perr: e}, nil
		}
		if err := resp.Decode(&out); err != nil {
			return createResult{}, err
		}
		return createResult{txn: out.Transaction, created: out.Created}, nil
	}
	m, err := b.wsRequest(key, protocol.ActionPayment, body)
	if err != nil {
		return createResult{}, err
	}
	if e := m.Err(); e != nil {
		return createResult{perr: e}, nil
	}
	if err := m.Decode(&out); err != nil {
		return createResult{}, err
	}
	return createResult{txn: out.Transaction, created: out.Created}, nil
}

// wsRequest sends a POS action and returns its reply (or error reply). The
// hub answers between the commit and the delivery of what it caused
// (session.WithReply), so the reply alone does not mean the terminal has its
// command yet: a listTerminals round trip after it does, because the frames
// of one connection are served in order.
func (b *socketBackend) wsRequest(key, action string, body any) (client.Message, error) {
	b.n++
	rid, syncID := fmt.Sprintf("req-%d", b.n), fmt.Sprintf("sync-%d", b.n)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c := b.pos[key].c
	if err := c.SendAction(ctx, action, rid, body); err != nil {
		return client.Message{}, err
	}
	if err := c.SendAction(ctx, protocol.ActionListTerminals, syncID, nil); err != nil {
		return client.Message{}, err
	}
	var reply client.Message
	_, err := b.readPOS(key, func(m client.Message) bool {
		switch requestID(m) {
		case rid:
			reply = m
		case syncID:
			return true
		}
		return false
	}, rid)
	if err == nil && reply.Raw == nil {
		err = fmt.Errorf("POS %s: no reply to %s", key, action)
	}
	return reply, err
}

func (b *socketBackend) act(key, action, txnID string, rest bool) (*protocol.Transaction, *protocol.Error, error) {
	var out struct {
		Transaction *protocol.Transaction `json:"transaction"`
	}
	if rest {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		resp, err := client.NewHTTP(b.opts(), key, kit.Secrets[key]).Do(ctx, "POST", "/v1/transactions/"+txnID+"/"+action, map[string]any{}, nil)
		if err != nil {
			return nil, nil, err
		}
		if e := resp.Err(); e != nil {
			return nil, e, nil
		}
		if err := resp.Decode(&out); err != nil {
			return nil, nil, err
		}
		return out.Transaction, nil, nil
	}
	m, err := b.wsRequest(key, action, map[string]any{"transactionId": txnID})
	if err != nil {
		return nil, nil, err
	}
	if e := m.Err(); e != nil {
		return nil, e, nil
	}
	if err := m.Decode(&out); err != nil {
		return nil, nil, err
	}
	return out.Transaction, nil, nil
}

// ---- terminals ----

func (b *socketBackend) termConnect(dev string, displace bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := client.DialTerminal(ctx, b.opts(), dev, kit.Secrets[dev])
	if err != nil {
		return err
	}
	old := b.term[dev]
	b.term[dev] = newWSConn(c)
	if displace && old != nil {
		// The hub displaces the old connection (4001); what it still got
		// came before anything on the new one.
		if err := b.drainTerm(dev, old); err != nil {
			return err
		}
	}
	return nil
}

// readTerm reads dev's connection, handing commands to the world, until
// until(m) holds.
func (b *socketBackend) readTerm(dev string, wc *wsConn, until func(client.Message) bool) error {
	for {
		m, ok, err := wc.next()
		if err != nil {
			return fmt.Errorf("terminal %s: %w", dev, err)
		}
		if !ok {
			if until == nil {
				return nil
			}
			return fmt.Errorf("terminal %s: connection ended", dev)
		}
		if until != nil && until(m) {
			return nil
		}
		if !wc.silent {
			b.w.onTerminal(dev, m.Raw)
		}
	}
}

func (b *socketBackend) drainTerm(dev string, wc *wsConn) error { return b.readTerm(dev, wc, nil) }

func (b *socketBackend) termDrop(dev string) error {
	wc := b.term[dev]
	delete(b.term, dev)
	id := wc.c.ConnectionID()
	_ = wc.c.CloseNow()
	if err := b.drainTerm(dev, wc); err != nil {
		return err
	}
	// The hub applies a drop asynchronously (reader error → grace period →
	// the engine moves the device's transactions). Wait until it has; while
	// Redis does not answer, until the terminal is reconnecting (the engine
	// is told once Redis answers: settle waits for that).
	if b.w.stalled {
		b.drops[dev] = id
		return poll(func() bool {
			st, cid, _ := b.gen.app.Hub.TerminalLive(dev)
			return st != protocol.TerminalOnline && cid == id
		},
			"the hub to notice terminal "+dev+" dropped")
	}
	return poll(func() bool { return b.dropApplied(dev, id) }, "the hub to apply terminal "+dev+"'s drop")
}

func (b *socketBackend) dropApplied(dev, connID string) bool {
	if st, cid, _ := b.gen.app.Hub.TerminalLive(dev); st == protocol.TerminalOnline || cid != connID {
		return false
	}
	ids, err := b.r.Client.SMembers(context.Background(), b.ks.Open(merchant, dev)).Result()
	if err != nil {
		return false
	}
	for _, id := range ids {
		t, err := b.st.Load(context.Background(), merchant, id)
		if err != nil {
			continue
		}
		switch {
		case !t.Active():
		case t.Status == protocol.StatusDispatched || t.Status == protocol.StatusInProgress || t.Status == protocol.StatusAwaitingSignature:
			return false
		case t.Status == protocol.StatusPending && t.GraceDeadline.IsZero():
			return false
		}
	}
	return true
}

// termSilent keeps the socket (the hub sees a live connection, and probes
// still keep steps in lock-step) but hides everything it carries from the
// terminal.
func (b *socketBackend) termSilent(dev string) { b.term[dev].silent = true }

func (b *socketBackend) termSend(dev, action, rid string, body any) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return b.term[dev].c.SendAction(ctx, action, rid, body)
}

func (b *socketBackend) redisStall(noticed bool) {
	b.faults.Stall()
	if !noticed {
		return // its probe notices in its own time (every 500 ms)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_ = b.gen.app.Health.Check(ctx) // its probe finds Redis down: the gate closes
}

func (b *socketBackend) redisResume(keep int) { b.faults.Resume(keep) }
func (b *socketBackend) redisLoseReply(scriptOnly bool) {
	if scriptOnly {
		b.faults.LoseScriptReplies(1)
	} else {
		b.faults.LoseReplies(1)
	}
}

// recover is what the hub does once Redis answers again, waited for: the
// probe finds it up (at once, not at its next tick), the engine's held
// work is done, the drops Redis missed are applied and every connected
// terminal is resumed.
func (b *socketBackend) recover() error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	a := b.gen.app
	if err := probeUntilUp(ctx, a.Health); err != nil {
		return err
	}
	if !a.Engine.WaitIdle(ctx) {
		return errors.New("the engine still holds transactions")
	}
	for dev, id := range b.drops {
		if err := poll(func() bool { return b.term[dev] != nil || b.dropApplied(dev, id) }, "the hub to apply terminal "+dev+"'s drop"); err != nil {
			return err
		}
		delete(b.drops, dev)
	}
	for dev := range b.term {
		if err := poll(func() bool { return a.Hub.Resumed(dev) }, "the hub to resume terminal "+dev); err != nil {
			return err
		}
	}
	// What a resume or a drop committed may have held work again.
	if !a.Engine.WaitIdle(ctx) {
		return errors.New("the engine still holds transactions")
	}
	return nil
}

// ---- time, restarts, barriers ----

func (b *socketBackend) advance(d time.Duration) { b.gen.clk.Advance(d) }

func (b *socketBackend) restart(crash bool, downtime time.Duration) error {
	old := b.gen
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if crash {
		// The process dies: from now on it can change nothing in Redis.
		_ = old.rdb.Close()
		for k, wc := range b.pos {
			_ = wc.c.CloseNow()
			if err := b.drainPOS(k, wc); err != nil {
				return err
			}
		}
		for d, wc := range b.term {
			_ = wc.c.CloseNow()
			if err := b.drainTerm(d, wc); err != nil {
				return err
			}
		}
		_ = old.app.Drain(ctx) // wait for its handlers to finish
	} else {
		if err := old.app.Drain(ctx); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		for k, wc := range b.pos {
			if err := b.drainPOS(k, wc); err != nil {
				return err
			}
			_ = wc.c.CloseNow()
		}
		for d, wc := range b.term {
			if err := b.drainTerm(d, wc); err != nil {
				return err
			}
			_ = wc.c.CloseNow()
		}
		_ = old.rdb.Close()
	}
	old.srv.Close()
	clear(b.pos)
	clear(b.term)
	return b.startGen(old.clk.Now().Add(downtime))
}

// settle waits until every connected client has everything the hub sent:
// a terminal until the error answering a probe sent after it (frames of a
// connection are served in order, and a terminal's frames only after its
// connect handling), a POS until the newest message of its outbox.
func (b *socketBackend) settle() error {
	if b.w.faults > 0 && !b.w.stalled {
		if err := b.recover(); err != nil {
			return err
		}
	}
	for _, dev := range b.w.devs {
		wc := b.term[dev]
		if wc == nil {
			continue
		}
		b.n++
		probe := fmt.Sprintf("probe-%d", b.n)
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err := wc.c.SendAction(ctx, protocol.ActionCommandReceived, probe, protocol.CommandReceived{TransactionID: "txn_probe"})
		cancel()
		if err != nil {
			return fmt.Errorf("terminal %s probe: %w", dev, err)
		}
		if err := b.readTerm(dev, wc, func(m client.Message) bool { return requestID(m) == probe }); err != nil {
			return err
		}
	}
	for _, key := range b.w.keys {
		if b.pos[key] == nil || b.w.stalled {
			continue // while Redis does not answer, a POS gets its replay later
		}
		newest, err := b.r.Client.XRevRangeN(context.Background(), b.ks.Outbox(merchant, key), "+", "-", 1).Result()
		if err != nil {
			return err
		}
		p := b.w.pos[key]
		reached := func() bool {
			if len(newest) == 0 || queue.CompareIDs(newest[0].ID, p.cursor0) <= 0 {
				return true
			}
			return p.lastID != "" && queue.CompareIDs(p.lastID, newest[0].ID) >= 0
		}
		if reached() {
			continue
		}
		if _, err := b.readPOS(key, func(client.Message) bool { return reached() }); err != nil {
			return fmt.Errorf("%w, waiting for messageId %s (newest received %q)", err, newest[0].ID, p.lastID)
		}
	}
	return nil
}

// poll checks cond until it holds or waitFor passes.
func poll(cond func() bool, what string) error {
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		<-tick.C
	}
	return nil
}
