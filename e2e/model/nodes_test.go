package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// Several nodes on one Redis are one hub (docs/cluster.md). TestModelNodes
// runs the socket-level sequences on 2 or 3 in-process nodes sharing the
// test's Redis and one fake clock: every POS and terminal connection goes
// to a random live node (and comes back to a random one), every REST call
// too, and besides the single-node steps (Redis faults and whole-hub
// restarts aside) a node dies, drains or comes back:
//
//   - death: its heartbeat and its engine stop (a crashed process fires no
//     timers), the clock passes node_timeout so that another node releases
//     what it held, and only then do its clients see their connections end,
//     as after a crash; its hub stays up in-process, and its late handling of
//     those ends must change nothing (fencing: no device record is written
//     in its name). Or it crashes with its clients noticing at
//     once, its hub cut off from Redis, and the others find it dead at a
//     later clock step. Some of its clients reconnect elsewhere at once,
//     the others later.
//   - drain: App.Drain, as on SIGTERM; every client must be told
//     forceDisconnect server_shutdown with reconnectAllowed, and its
//     terminals reconnect to another node at once: none may be seen offline
//     and no payment may fail because of it (docs/cluster.md).
//   - return: a new App with the node's id on the same Redis (a dead node's
//     hub process is stopped first).
//
// At least one node is always up. Every invariant of the single-node model
// holds as it is; in addition a payment through any node is never answered
// terminal_offline while the model's terminal is connected to some node.

// TestModelNodes drives whole hubs of several nodes over WebSockets and
// REST (TERMHUB_SOAK_NODES_SEQUENCES sets its count in a soak; by default
// TERMHUB_SOAK_SEQUENCES/20).
func TestModelNodes(t *testing.T) {
	p := planFor(t, 12, 20, "TERMHUB_SOAK_NODES_SEQUENCES")
	runMany(t, "nodes", p, soakWorkers(p, 2*runtime.GOMAXPROCS(0)), func(t *testing.T, seed uint64) outcome {
		return runNodesSequence(t, seed, p.steps)
	})
}

func runNodesSequence(t *testing.T, seed uint64, steps int) outcome {
	be := newNodesBackend(t, 2+int(seed%2))
	defer be.close()
	return runSequence(seed, steps, be, 1+int(seed/2%2), true)
}

type nodeState int

const (
	nodeUp      nodeState = iota
	nodeDead              // its hub process lingers (zombie) until it returns
	nodeDrained           // gone
)

// nodeModel is the world's view of the nodes: the backend that runs them,
// and what a drain must not do.
type nodeModel struct {
	b *nodesBackend
	// drainWatch are the terminals of a node being drained: a POS told
	// any of them is offline meanwhile is a violation.
	drainWatch map[string]bool
}

func (m *nodeModel) termNode(d string) string {
	if i, ok := m.b.termAt[d]; ok {
		return fmt.Sprintf("node-%d", i)
	}
	return "no node"
}

// nodesBackend is the socket backend over several nodes. The embedded
// socketBackend's gen is pointed at the node a call concerns before the
// call (the one a client connects to or is on, a random live one for REST).
type nodesBackend struct {
	*socketBackend
	nodes  []*generation
	state  []nodeState
	posAt  map[string]int // key → node of its live connection
	termAt map[string]int // device → node of its live connection
}

func newNodesBackend(t *testing.T, n int) *nodesBackend {
	b := &nodesBackend{socketBackend: newSocketBase(t), nodes: make([]*generation, n), state: make([]nodeState, n),
		posAt: map[string]int{}, termAt: map[string]int{}}
	b.clk.Store(clock.NewFake(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)))
	for i := range n {
		if err := b.startNode(i); err != nil {
			t.Fatal(err)
		}
	}
	b.gen = b.nodes[0]
	return b
}

func (b *nodesBackend) bind(w *world) {
	b.socketBackend.bind(w)
	w.nodes = &nodeModel{b: b}
}

// startNode starts node i as a new process: its own Redis client, the
// sequence's clock, node id node-i.
func (b *nodesBackend) startNode(i int) error {
	clk := b.clk.Load()
	rdb, err := b.processClient()
	if err != nil {
		return err
	}
	cfg := b.cfg
	cfg.NodeID = fmt.Sprintf("node-%d", i)
	a := app.New(cfg, rdb, clk, b.log)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		_ = rdb.Close()
		return fmt.Errorf("node-%d App.Start: %w", i, err)
	}
	b.nodes[i], b.state[i] = &generation{app: a, srv: httptest.NewServer(a.Handler()), clk: clk, rdb: rdb}, nodeUp
	clk.Advance(0) // deadlines that fell due while it was down fire at once
	return nil
}

// pick is a random live node.
func (b *nodesBackend) pick() int {
	var up []int
	for i, s := range b.state {
		if s == nodeUp {
			up = append(up, i)
		}
	}
	return up[b.w.rng.IntN(len(up))]
}

// firstUp is the live node of the lowest index.
func (b *nodesBackend) firstUp() int {
	for i, s := range b.state {
		if s == nodeUp {
			return i
		}
	}
	return -1
}

func (b *nodesBackend) upCount() int {
	n := 0
	for _, s := range b.state {
		if s == nodeUp {
			n++
		}
	}
	return n
}

func (b *nodesBackend) on(i int) *nodesBackend { b.gen = b.nodes[i]; return b }

func (b *nodesBackend) posConnect(key string) error {
	i := b.pick()
	b.posAt[key] = i
	b.w.note("on node-%d", i)
	return b.on(i).socketBackend.posConnect(key)
}

func (b *nodesBackend) posDrop(key string) error {
	defer delete(b.posAt, key)
	return b.on(b.posAt[key]).socketBackend.posDrop(key)
}

func (b *nodesBackend) create(key, dev, ref string, minor int64, rest bool) (createResult, error) {
	if rest {
		i := b.pick()
		b.w.note("through node-%d", i)
		b.on(i)
	}
	return b.socketBackend.create(key, dev, ref, minor, rest)
}

func (b *nodesBackend) act(key, action, txnID string, rest bool) (*protocol.Transaction, *protocol.Error, error) {
	if rest {
		i := b.pick()
		b.w.note("through node-%d", i)
		b.on(i)
	}
	return b.socketBackend.act(key, action, txnID, rest)
}

func (b *nodesBackend) termConnect(dev string, displace bool) error {
	i := b.pick()
	b.termAt[dev] = i
	b.w.note("on node-%d", i)
	return b.on(i).socketBackend.termConnect(dev, displace)
}

func (b *nodesBackend) termDrop(dev string) error {
	defer delete(b.termAt, dev)
	return b.on(b.termAt[dev]).socketBackend.termDrop(dev)
}

func (b *nodesBackend) restart(bool, time.Duration) error {
	return errors.New("a hub of several nodes restarts node by node (nodeDie, nodeDrain, nodeReturn)")
}

// settle sends what every live node has queued on the bus (a terminal
// command, a nudge) before the single-node barrier: a command published
// before a terminal's probe reaches its node before the probe's answer is
// sent in nearly every case; one that comes later is read at the next step.
func (b *nodesBackend) settle() error {
	for i, g := range b.nodes {
		if b.state[i] == nodeUp {
			g.app.Node.Flush(time.Second)
		}
	}
	return b.socketBackend.settle()
}

func (b *nodesBackend) close() {
	for _, wc := range b.pos {
		_ = wc.c.CloseNow()
	}
	for _, wc := range b.term {
		_ = wc.c.CloseNow()
	}
	for i, g := range b.nodes {
		b.stopNode(i, g)
	}
}

// stopNode ends node i's process: a live one drains, a dead one's lingering
// hub stops.
func (b *nodesBackend) stopNode(i int, g *generation) {
	switch b.state[i] {
	case nodeUp:
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		_ = g.app.Drain(ctx)
		cancel()
	case nodeDead:
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_ = g.app.Hub.Drain(ctx) // its connections are closed already
		cancel()
		g.app.Close()
	case nodeDrained:
		return
	}
	g.srv.Close()
	_ = g.rdb.Close() // a second Close of a crashed node's client only errs
}

// clientsOn lists, in order, the POS keys and devices connected to node i.
func (b *nodesBackend) clientsOn(i int) (pos, terms []string) {
	for k, at := range b.posAt {
		if at == i && b.pos[k] != nil {
			pos = append(pos, k)
		}
	}
	for d, at := range b.termAt {
		if at == i && b.term[d] != nil {
			terms = append(terms, d)
		}
	}
	sort.Strings(pos)
	sort.Strings(terms)
	return pos, terms
}

// nodeDie kills node i (see TestModelNodes) and returns the clients it
// had. With past > 0 the clock moves that far first, so that another node
// releases what it held before its clients see their connections end, and
// its hub, still up, handles those ends late (fencing); with past 0 its
// clients see the ends at once, and its hub is cut off from Redis first, as
// a crashed process is: the others learn of its death at a later clock step.
func (b *nodesBackend) nodeDie(i int, past time.Duration) (pos, terms []string, err error) {
	g := b.nodes[i]
	b.state[i] = nodeDead
	g.app.Node.Close()
	g.app.Engine.Close()
	if past > 0 {
		// Another node's heartbeat (a timer, run in Advance) finds it dead
		// and releases what it held, there or on a worker of its own:
		// awaitRelease waits for that.
		b.clk.Load().Advance(past)
	} else {
		_ = g.rdb.Close()
	}
	pos, terms = b.clientsOn(i)
	var before map[string]nodes.Device
	if past > 0 {
		if before, err = b.awaitRelease(i); err != nil {
			return pos, terms, err
		}
	}
	var ids []string
	for _, k := range pos {
		wc := b.pos[k]
		delete(b.pos, k)
		delete(b.posAt, k)
		ids = append(ids, wc.c.ConnectionID())
		_ = wc.c.CloseNow()
		if err := b.drainPOS(k, wc); err != nil {
			return pos, terms, err
		}
	}
	for _, d := range terms {
		wc := b.term[d]
		delete(b.term, d)
		delete(b.termAt, d)
		ids = append(ids, wc.c.ConnectionID())
		_ = wc.c.CloseNow()
		if err := b.drainTerm(d, wc); err != nil {
			return pos, terms, err
		}
	}
	// Its late handling of those ends is over before the next step.
	err = poll(func() bool {
		for _, c := range g.app.Hub.Connections() {
			if slices.Contains(ids, c.ConnectionID) {
				return false
			}
		}
		return true
	}, fmt.Sprintf("dead node-%d to let its connections go", i))
	if err != nil || past == 0 {
		return pos, terms, err
	}
	// Its late handling changed nothing it no longer held (fencing): no
	// record was written in its name since.
	after, err := b.records()
	if err != nil {
		return pos, terms, err
	}
	id := g.app.Node.ID()
	for d, rec := range after {
		if rec != before[d] && rec.Node == id {
			b.w.violate("fencing", "dead node-%d's late handling of its connections changed %s's record: %+v → %+v", i, d, before[d], rec)
		}
	}
	return pos, terms, nil
}

// awaitRelease waits until another node has released dead node i: its
// registry entry and its connections' record are gone (the latter once
// what it held is released) and no device is online on it. It returns the
// devices' records then.
func (b *nodesBackend) awaitRelease(i int) (map[string]nodes.Device, error) {
	id := b.nodes[i].app.Node.ID()
	ks := b.nodes[i].app.Node.Keys()
	var recs map[string]nodes.Device
	err := poll(func() bool {
		var err error
		if recs, err = b.records(); err != nil {
			return false
		}
		for _, rec := range recs {
			if rec.Node == id && rec.Status == protocol.TerminalOnline {
				return false
			}
		}
		ctx := context.Background()
		n, err := b.r.Client.Exists(ctx, ks.NodeConns(id)).Result()
		if err != nil || n > 0 {
			return false
		}
		held, err := b.r.Client.HExists(ctx, ks.Nodes(), id).Result()
		return err == nil && !held
	}, fmt.Sprintf("node-%d to be released within node_timeout", i))
	if err != nil {
		b.w.violate("dead-node-holds", "node-%d was not released %s after it stopped: %v; records %+v", i, nodeDeathPast, err, recs)
	}
	return recs, err
}

// records reads every device's record.
func (b *nodesBackend) records() (map[string]nodes.Device, error) {
	var refs []nodes.DeviceRef
	for _, d := range b.w.devs {
		refs = append(refs, nodes.DeviceRef{Merchant: merchant, Device: d})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	recs, err := b.nodes[b.firstUp()].app.Node.Devices(ctx, refs)
	if err != nil {
		return nil, err
	}
	out := map[string]nodes.Device{}
	for i, r := range refs {
		out[r.Device] = recs[i]
	}
	return out, nil
}

// nodeDrain drains node i and returns the clients it had; each must have
// been told to reconnect (server_shutdown, reconnectAllowed).
func (b *nodesBackend) nodeDrain(i int) (pos, terms []string, err error) {
	g := b.nodes[i]
	b.state[i] = nodeDrained
	pos, terms = b.clientsOn(i)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := g.app.Drain(ctx); err != nil {
		return pos, terms, fmt.Errorf("drain of node-%d: %w", i, err)
	}
	for _, k := range pos {
		wc := b.pos[k]
		delete(b.pos, k)
		delete(b.posAt, k)
		told, err := b.readToEnd(wc, func(m client.Message) {
			if m.MessageID() != "" {
				b.w.onPOS(k, m.Raw)
			}
		})
		if err != nil {
			return pos, terms, fmt.Errorf("POS %s: %w", k, err)
		}
		if !told {
			b.w.violate("drain-untold", "POS %s on drained node-%d was not told forceDisconnect server_shutdown with reconnectAllowed", k, i)
		}
		_ = wc.c.CloseNow()
	}
	for _, d := range terms {
		wc := b.term[d]
		delete(b.term, d)
		delete(b.termAt, d)
		told, err := b.readToEnd(wc, func(m client.Message) {
			if !wc.silent {
				b.w.onTerminal(d, m.Raw)
			}
		})
		if err != nil {
			return pos, terms, fmt.Errorf("terminal %s: %w", d, err)
		}
		if !told && !wc.silent {
			b.w.violate("drain-untold", "terminal %s on drained node-%d was not told forceDisconnect server_shutdown with reconnectAllowed", d, i)
		}
		_ = wc.c.CloseNow()
	}
	g.srv.Close()
	_ = g.rdb.Close()
	return pos, terms, nil
}

// readToEnd hands each frame of a closing connection to f and reports
// whether one was forceDisconnect server_shutdown with reconnectAllowed.
func (b *nodesBackend) readToEnd(wc *wsConn, f func(client.Message)) (told bool, err error) {
	for {
		m, ok, err := wc.next()
		if err != nil {
			return told, fmt.Errorf("does not close: %w", err)
		}
		if !ok {
			return told, nil
		}
		if m.Action == protocol.ActionForceDisconnect {
			var fd protocol.ForceDisconnect
			if json.Unmarshal(m.Raw, &fd) == nil && fd.Reason == protocol.ReasonShutdown && fd.ReconnectAllowed {
				told = true
			}
			continue
		}
		f(m)
	}
}

// nodeReturn starts node i again with the same id; a dead node's lingering
// process stops first.
func (b *nodesBackend) nodeReturn(i int) error {
	if b.state[i] == nodeDead {
		b.stopNode(i, b.nodes[i])
	}
	return b.startNode(i)
}

// onlineEverywhere waits until every live node has dev online on its
// current connection (docs/cluster.md: one truth within 1 s).
func (b *nodesBackend) onlineEverywhere(dev string) error {
	id := b.term[dev].c.ConnectionID()
	for i, g := range b.nodes {
		if b.state[i] != nodeUp {
			continue
		}
		if err := poll(func() bool {
			st, cid, _ := g.app.Hub.TerminalLive(dev)
			return st == protocol.TerminalOnline && cid == id
		}, fmt.Sprintf("node-%d to have %s online on %s", i, dev, id)); err != nil {
			return err
		}
	}
	return nil
}

// ---- the world's node steps ----

// nodeSteps adds a death and a drain of each live node (while another is
// up) and the return of each node that is down.
func (w *world) nodeSteps(add func(int, func())) {
	b := w.nodes.b
	up := b.upCount()
	for i, s := range b.state {
		switch {
		case s == nodeUp && up > 1:
			add(1, func() { w.nodeDie(i) })
			add(1, func() { w.nodeDrain(i) })
		case s != nodeUp:
			add(2, func() { w.nodeReturn(i) })
		}
	}
}

// nodeDeathPast is how far the clock moves when a node dies: past
// node_timeout (10 s) and the next heartbeat of the others (every 10/3 s).
const nodeDeathPast = 15 * time.Second

func (w *world) nodeDie(i int) {
	past := nodeDeathPast
	if w.rng.IntN(3) == 0 {
		past = 0
		w.logStep("node-%d crashes: its clients see their connections end at once, the others find it dead later", i)
	} else {
		w.logStep("node-%d dies: its heartbeat and timers stop, clock +%s, then its clients see their connections end", i, past)
	}
	pos, terms, err := w.nodes.b.nodeDie(i, past)
	w.note("it had POS %v, terminals %v", pos, terms)
	w.lost(pos, terms)
	if err != nil {
		w.violate("stuck", "node-%d death: %v", i, err)
		return
	}
	w.comeBack(pos, terms, false)
}

// lost marks the clients whose connections ended with their node.
func (w *world) lost(pos, terms []string) {
	for _, k := range pos {
		w.pos[k].connected = false
	}
	for _, d := range terms {
		w.term[d].connected, w.term[d].silent = false, false
	}
}

// comeBack reconnects the clients a node lost, each to a random live node:
// every terminal when all is set (a drain's promise holds for terminals
// that reconnect within the grace period), else half of them at random.
func (w *world) comeBack(pos, terms []string, all bool) {
	for _, d := range terms {
		if all || w.rng.IntN(2) == 0 {
			w.settle()
			w.termConnect(d, false)
		}
	}
	for _, k := range pos {
		if w.rng.IntN(2) == 0 {
			w.settle()
			w.posConnect(k)
		}
	}
}

func (w *world) nodeDrain(i int) {
	b := w.nodes.b
	before := w.storeStatuses()
	w.logStep("node-%d drains (SIGTERM)", i)
	pos, terms, err := b.nodeDrain(i)
	w.note("it had POS %v, terminals %v", pos, terms)
	w.lost(pos, terms)
	if err != nil {
		w.violate("stuck", "%v", err)
		return
	}
	w.nodes.drainWatch = map[string]bool{}
	for _, d := range terms {
		w.nodes.drainWatch[d] = true
	}
	defer func() { w.nodes.drainWatch = nil }()
	w.comeBack(pos, terms, true)
	w.settle()
	for _, d := range terms {
		if w.term[d].connected {
			if err := b.onlineEverywhere(d); err != nil {
				w.violate("drain-offline", "%s reconnected after node-%d's drain: %v", d, i, err)
			}
		}
	}
	// No payment fails because of a drain when the terminal reconnects
	// within the grace period: nothing open before it is FAILED after.
	after := w.storeStatuses()
	for id, st := range before {
		if !st.Final() && after[id] == protocol.StatusFailed {
			w.violate("drain-failed-payment", "%s was %s before node-%d drained and its terminal came back at once, and is FAILED after", w.alias(id), st, i)
		}
	}
}

// storeStatuses reads every known transaction's status from Redis.
func (w *world) storeStatuses() map[string]protocol.Status {
	out := map[string]protocol.Status{}
	w.eachStored(func(t *txnState, st *session.Txn) { out[t.id] = st.Status })
	return out
}

func (w *world) nodeReturn(i int) {
	w.logStep("node-%d comes back (a new process, same node id)", i)
	if err := w.nodes.b.nodeReturn(i); err != nil {
		w.violate("restart", "node-%d: %v", i, err)
	}
}

// onTerminalStatus takes a terminalStatusUpdate a POS received: while a
// node drains, none of its terminals may be told offline.
func (w *world) onTerminalStatus(key string, raw []byte) {
	if w.nodes == nil || w.nodes.drainWatch == nil {
		return
	}
	var u protocol.TerminalStatusUpdate
	if err := json.Unmarshal(raw, &u); err != nil {
		w.violate("pos-undecodable", "%s: %v: %.200s", key, err, raw)
		return
	}
	if w.nodes.drainWatch[u.TerminalID] && u.Status == protocol.TerminalOffline {
		w.violate("drain-offline", "POS %s told %s is offline while its node drained: %s", key, u.TerminalID, strings.TrimSpace(string(raw)))
	}
}
