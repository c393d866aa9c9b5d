// Package nodes lets several termhub processes ("nodes") on one Redis or
// Redis Cluster act as one hub (docs/cluster.md). It holds what the nodes
// share and how they talk, on Redis alone:
//
//   - the registry: every node heartbeats into one hash; a node not heard
//     from for node_timeout is dead, and exactly one of the others claims
//     its release (removes its entry) and lets its connections go;
//   - the shared records of who holds each device's and each API key's
//     connection, with an epoch that grows at every change (records.go):
//     a node acts on a connection only through a script that checks it
//     still holds it, so a node declared dead that comes back acts on
//     nothing it lost;
//   - the bus (bus.go): one PUB/SUB channel every node hears (status and
//     connection changes, kicks, long-poll wake-ups) and one per node
//     (nudges, terminal commands, displacements for its connections).
//
// What a message means to the connections is package hub's business;
// this package only carries it.
package nodes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/keys"
)

// Options configure a Node.
type Options struct {
	Redis redis.UniversalClient
	Keys  keys.Space
	// ID names the node; empty: a unique id is made (NewID).
	ID string
	// Address is where the node listens, for GET /v1/ops/nodes.
	Address string
	// Timeout is node_timeout: a node unheard for this long is dead. The
	// heartbeat runs every third of it.
	Timeout time.Duration
	Clock   clock.Clock
	Logger  zerolog.Logger
	// Sharded sends to node channels with SPUBLISH (a Redis Cluster: the
	// channel lives on one shard instead of every node of the cluster).
	Sharded bool
	// RequestTimeout bounds each Redis call of the node's own.
	RequestTimeout time.Duration
}

// Handler is what a node does with what it hears. Its methods are called
// from the node's own goroutines, never two at once for Message.
type Handler interface {
	// Message is a message of another node, in the order sent.
	Message(m Message)
	// Resync is called after the bus connection was lost and is back:
	// messages may have been lost meanwhile.
	Resync()
	// NodeDead is called on the one node that claimed a dead node's
	// release, for it to let the dead node's connections go.
	NodeDead(id string)
	// DeclaredDead is called when this node finds that the others took it
	// for dead: what it holds is no longer its own.
	DeclaredDead()
	// Tick is called at every heartbeat (sweeps that every node runs).
	Tick()
	// Republish is called when messages of this node were lost (Redis
	// refused a batch): the handler writes again what others read of it,
	// and the node then asks every node to resync.
	Republish()
	// Counts are this node's live connections, for its heartbeat.
	Counts() Counts
}

// Counts are a node's live connections by kind.
type Counts struct {
	POS      int `json:"pos"`
	Terminal int `json:"terminal"`
}

// Info is a node as listed by GET /v1/ops/nodes.
type Info struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`
	StartedAt   time.Time `json:"startedAt"`
	LastSeen    time.Time `json:"lastSeen"`
	Connections Counts    `json:"connections"`
}

// Node is this process's place among the nodes.
type Node struct {
	opts    Options
	rdb     redis.UniversalClient
	clock   clock.Clock
	log     zerolog.Logger
	h       Handler
	started time.Time
	bus     bus
	work    worker

	mu      sync.Mutex
	beat    clock.Timer // guarded by mu
	joined  bool        // the registry has held this node's entry; guarded by mu
	stopped bool        // guarded by mu
	live    map[string]Info
}

// NewID makes a node id that is never reused: the host's name would be
// shared by two nodes on one host and by a restarted node, which must not
// inherit what its previous run held.
func NewID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "node-" + hex.EncodeToString(b)
}

// New builds a node; Start joins it.
func New(opts Options) *Node {
	if opts.ID == "" {
		opts.ID = NewID()
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	n := &Node{opts: opts, rdb: opts.Redis, clock: opts.Clock, log: opts.Logger.With().Str("node", opts.ID).Logger(), live: map[string]Info{}}
	n.bus.init(n)
	return n
}

// ID is the node's id.
func (n *Node) ID() string { return n.opts.ID }

// Timeout is node_timeout.
func (n *Node) Timeout() time.Duration { return n.opts.Timeout }

// Keys is the key space of the records.
func (n *Node) Keys() keys.Space { return n.opts.Keys }

// Start listens on the bus (before anything can be sent to this node),
// joins the registry and starts the heartbeat. h hears what comes.
func (n *Node) Start(ctx context.Context, h Handler) error {
	n.h = h
	n.started = n.clock.Now().UTC()
	if err := n.bus.start(ctx); err != nil {
		return err
	}
	n.work.start(n)
	// A previous run under the same id held connections that are gone.
	if err := n.rdb.Del(ctx, n.opts.Keys.NodeConns(n.opts.ID)).Err(); err != nil {
		n.work.close()
		n.bus.stop()
		return err
	}
	if err := n.heartbeat(ctx); err != nil {
		n.work.close()
		n.bus.stop()
		return err
	}
	n.schedule()
	n.log.Info().Dur("nodeTimeout", n.opts.Timeout).Msg("node joined")
	return nil
}

func (n *Node) schedule() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	n.beat = n.clock.AfterFunc(n.opts.Timeout/3, func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.opts.RequestTimeout)
		if err := n.heartbeat(ctx); err != nil {
			n.log.Warn().Err(err).Msg("node heartbeat failed; trying again at the next")
		}
		cancel()
		n.schedule()
	})
}

// beatScript writes the node's entry. ARGV[2] "1" says the node joined
// before: if its entry is gone, another node declared it dead and it must
// not simply write it back (it answers 0 and rejoins after letting go).
var beatScript = redis.NewScript(`
if ARGV[2] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[1])
return 1
`)

// reapScript removes a dead node's entry if it is still the one that was
// read: of several nodes that find it dead, one gets 1.
var reapScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`)

// heartbeat writes this node's entry, finds dead nodes and claims their
// release, and hands the releases and the handler's sweeps to the worker:
// they may take long (a dead node with thousands of terminals), and a
// heartbeat that waited for them would come late enough for the others to
// take this node for dead too.
func (n *Node) heartbeat(ctx context.Context) error {
	now := n.clock.Now().UTC()
	info := Info{ID: n.opts.ID, Address: n.opts.Address, StartedAt: n.started, LastSeen: now}
	if n.h != nil {
		info.Connections = n.h.Counts()
	}
	b, _ := json.Marshal(info)
	n.mu.Lock()
	joined := n.joined
	n.mu.Unlock()
	flag := "0"
	if joined {
		flag = "1"
	}
	key := n.opts.Keys.Nodes()
	ok, err := beatScript.Run(ctx, n.rdb, []string{key}, b, flag, n.opts.ID).Int()
	if err != nil {
		return err
	}
	if ok == 0 {
		n.log.Error().Msg("the other nodes took this node for dead: letting its connections go and joining again")
		n.h.DeclaredDead()
		if err := n.rdb.HSet(ctx, key, n.opts.ID, b).Err(); err != nil {
			return err
		}
	}
	n.mu.Lock()
	n.joined = true
	n.mu.Unlock()
	all, err := n.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return err
	}
	live := map[string]Info{}
	for id, raw := range all {
		var in Info
		if json.Unmarshal([]byte(raw), &in) != nil {
			continue
		}
		if id != n.opts.ID && now.Sub(in.LastSeen) > n.opts.Timeout {
			n.reap(ctx, id, raw, in)
			continue
		}
		live[id] = in
	}
	n.mu.Lock()
	n.live = live
	n.mu.Unlock()
	if n.bus.takeLost() {
		n.h.Republish()
		n.Broadcast(Message{Type: MsgResync})
	}
	n.work.add("")
	return nil
}

// MsgResync asks every node to resync (Handler.Resync): messages of the
// sender were lost.
const MsgResync = "resync"

// reap claims the release of a dead node; the one that gets it has the
// worker let the dead node's connections go.
func (n *Node) reap(ctx context.Context, id, raw string, in Info) {
	got, err := reapScript.Run(ctx, n.rdb, []string{n.opts.Keys.Nodes()}, id, raw).Int()
	if err != nil || got == 0 {
		return
	}
	n.log.Warn().Str("deadNode", id).Time("lastSeen", in.LastSeen).Msg("node not heard from within node_timeout: releasing its connections")
	n.work.add(id)
}

// worker runs, one at a time and off the heartbeat, the releases of dead
// nodes this node claimed (none is dropped) and the handler's sweeps (one
// waiting is enough: a sweep covers everything due when it runs).
type worker struct {
	n     *Node
	mu    sync.Mutex
	dead  []string // claimed releases not run yet; guarded by mu
	sweep bool     // a sweep is due; guarded by mu
	wake  chan struct{}
	stop  chan struct{}
	done  sync.WaitGroup
}

func (w *worker) start(n *Node) {
	w.n = n
	w.wake = make(chan struct{}, 1)
	w.stop = make(chan struct{})
	w.done.Add(1)
	go w.run()
}

// add queues the release of dead node id, or a sweep for id "".
func (w *worker) add(id string) {
	if w.wake == nil {
		return
	}
	w.mu.Lock()
	if id == "" {
		w.sweep = true
	} else {
		w.dead = append(w.dead, id)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.done.Done()
	for {
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		dead, sweep := w.dead, w.sweep
		w.dead, w.sweep = nil, false
		w.mu.Unlock()
		for _, id := range dead {
			w.n.h.NodeDead(id)
			ctx, cancel := context.WithTimeout(context.Background(), w.n.opts.RequestTimeout)
			w.n.rdb.Del(ctx, w.n.opts.Keys.NodeConns(id))
			cancel()
		}
		if sweep {
			w.n.h.Tick()
		}
	}
}

// close stops the worker after what it is running.
func (w *worker) close() {
	if w.stop == nil {
		return
	}
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.done.Wait()
}

// Alive reads the registry for whether node id is alive now (this node
// always is): its entry is there and its heartbeat younger than
// node_timeout. What a node takes from another must rest on this, not on
// the copy of the last heartbeat (LiveIDs), which does not know a node that
// joined since — and a node joins before it holds anything.
func (n *Node) Alive(ctx context.Context, id string) (bool, error) {
	if id == n.opts.ID {
		return true, nil
	}
	raw, err := n.rdb.HGet(ctx, n.opts.Keys.Nodes(), id).Result()
	if err == redis.Nil {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var in Info
	if json.Unmarshal([]byte(raw), &in) != nil {
		return false, nil
	}
	return n.clock.Now().UTC().Sub(in.LastSeen) <= n.opts.Timeout, nil
}

// Nodes lists the live nodes, by id, from the registry.
func (n *Node) Nodes(ctx context.Context) ([]Info, error) {
	all, err := n.rdb.HGetAll(ctx, n.opts.Keys.Nodes()).Result()
	if err != nil {
		return nil, err
	}
	now := n.clock.Now().UTC()
	out := []Info{}
	for id, raw := range all {
		var in Info
		if json.Unmarshal([]byte(raw), &in) != nil {
			continue
		}
		if id == n.opts.ID || now.Sub(in.LastSeen) <= n.opts.Timeout {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// LiveIDs are the nodes alive at the last heartbeat, this one included.
func (n *Node) LiveIDs() map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]bool{n.opts.ID: true}
	for id := range n.live {
		out[id] = true
	}
	return out
}

// Leave takes the node out of the registry (a drain is over: it holds no
// connection any more) and stops its heartbeat and bus.
func (n *Node) Leave(ctx context.Context) error {
	n.Close()
	err := n.rdb.HDel(ctx, n.opts.Keys.Nodes(), n.opts.ID).Err()
	return errors.Join(err, n.rdb.Del(ctx, n.opts.Keys.NodeConns(n.opts.ID)).Err())
}

// Close stops the heartbeat and the bus without leaving: the others
// declare the node dead after node_timeout (a crash, as far as they know).
func (n *Node) Close() {
	n.mu.Lock()
	n.stopped = true
	if n.beat != nil {
		n.beat.Stop()
	}
	n.mu.Unlock()
	n.work.close()
	n.bus.stop()
}
