package nodes

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Message is what one node tells another. Type says which fields count.
type Message struct {
	Type     string `json:"t"`
	From     string `json:"from"`
	Merchant string `json:"m,omitempty"`
	Key      string `json:"k,omitempty"` // an API key id
	Device   string `json:"d,omitempty"`
	Conn     string `json:"c,omitempty"` // a connection id
	Node     string `json:"n,omitempty"` // the node a record or a connection is on
	Epoch    int64  `json:"e,omitempty"` // the record's epoch: older news is ignored
	Allowed  bool   `json:"a,omitempty"` // a displaced POS may reconnect
	// At is a device's grace deadline; Seen when it was last seen.
	At   time.Time `json:"at,omitzero"`
	Seen time.Time `json:"seen,omitzero"`
	// Hops counts forwards: a message that reached a node which no longer
	// holds the connection is forwarded once to the holder in Redis.
	Hops int `json:"h,omitempty"`
	// Body is the message's JSON payload (a status update, a connection).
	Body json.RawMessage `json:"b,omitempty"`
	// Frames are terminal commands, as sent to the terminal.
	Frames []json.RawMessage `json:"f,omitempty"`
}

// maxQueued bounds what waits to be published. Past it a message is
// dropped and logged: the bus only speeds things up (a lost nudge, command
// or status change is made good from Redis by the next read, the
// terminal's resume, a resync or a sweep), and a stalled Redis must not
// fill the node's memory.
const maxQueued = 100000

// bus carries messages between nodes over Redis PUB/SUB. Publishing is
// asynchronous and in order: one goroutine sends what is queued, a batch
// per round trip, so a commit never waits for it and two messages of this
// node never overtake each other. Receiving is one goroutine too, so the
// handler hears each node's messages in the order they were sent.
type bus struct {
	n      *Node
	mu     sync.Mutex
	queue  []func(redis.Pipeliner) // guarded by mu
	queued uint64                  // commands ever queued; guarded by mu
	sent   uint64                  // commands ever sent (or given up); guarded by mu
	idle   chan struct{}           // closed when sent catches up with queued; guarded by mu
	wake   chan struct{}
	ps     []*redis.PubSub
	cancel context.CancelFunc
	done   sync.WaitGroup
	drops  int // dropped since last logged; guarded by mu
	// lost: a batch Redis refused, or messages dropped, since the node's
	// last heartbeat, which then asks everyone to resync; guarded by mu.
	lost bool
}

func (b *bus) init(n *Node) {
	b.n = n
	b.wake = make(chan struct{}, 1)
}

// start subscribes to the bus channel and this node's channel, waits until
// Redis has confirmed both, and starts the publisher and the receiver.
func (b *bus) start(ctx context.Context) error {
	ks := b.n.opts.Keys
	rdb := b.n.rdb
	own := ks.NodeChannel(b.n.opts.ID)
	var subs []*redis.PubSub
	if b.n.opts.Sharded {
		subs = []*redis.PubSub{rdb.Subscribe(ctx, ks.BusChannel()), rdb.SSubscribe(ctx, own)}
	} else {
		subs = []*redis.PubSub{rdb.Subscribe(ctx, ks.BusChannel(), own)}
	}
	for _, ps := range subs {
		need := 3 - len(subs) // two channels on one connection, or one each
		for need > 0 {
			msg, err := ps.Receive(ctx)
			if err != nil {
				for _, p := range subs {
					_ = p.Close()
				}
				return err
			}
			if _, ok := msg.(*redis.Subscription); ok {
				need--
			}
		}
	}
	b.ps = subs
	runCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.done.Add(2)
	go b.publish(runCtx)
	go b.receive(subs)
	return nil
}

// stop ends the publisher (what is queued is sent first, within a
// second) and the receivers.
func (b *bus) stop() {
	if b.cancel == nil {
		return
	}
	b.flush(time.Second)
	b.cancel()
	for _, ps := range b.ps {
		_ = ps.Close()
	}
	b.done.Wait()
	b.cancel = nil
}

// flush waits until everything queued so far was sent, or d has passed.
// The wait is on the wall clock: it bounds real I/O to Redis, which a
// test's fake clock does not move.
func (b *bus) flush(d time.Duration) {
	b.mu.Lock()
	if b.sent == b.queued {
		b.mu.Unlock()
		return
	}
	if b.idle == nil {
		b.idle = make(chan struct{})
	}
	idle := b.idle
	b.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

// enqueue adds a command to the next batch.
func (b *bus) enqueue(f func(redis.Pipeliner)) {
	b.mu.Lock()
	if len(b.queue) >= maxQueued {
		b.drops++
		b.lost = true
		if b.drops == 1 || b.drops%1000 == 0 {
			b.n.log.Warn().Int("dropped", b.drops).Msg("bus queue full (Redis slow or away): dropping messages to other nodes; they catch up from Redis")
		}
		b.mu.Unlock()
		return
	}
	b.queue = append(b.queue, f)
	b.queued++
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// publish sends what is queued, in order, one pipeline per batch. A batch
// Redis refused is not sent again: see maxQueued.
func (b *bus) publish(ctx context.Context) {
	defer b.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		for {
			b.mu.Lock()
			batch := b.queue
			b.queue = nil
			b.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, b.n.opts.RequestTimeout)
			pipe := b.n.rdb.Pipeline()
			for _, f := range batch {
				f(pipe)
			}
			if _, err := pipe.Exec(cctx); err != nil && ctx.Err() == nil {
				b.n.log.Warn().Err(err).Int("messages", len(batch)).Msg("could not publish to the other nodes; they catch up from Redis")
				b.mu.Lock()
				b.lost = true
				b.mu.Unlock()
			}
			cancel()
			b.mu.Lock()
			b.sent += uint64(len(batch))
			if b.sent == b.queued && b.idle != nil {
				close(b.idle)
				b.idle = nil
			}
			b.mu.Unlock()
		}
	}
}

// receive hands every message to the handler, from one goroutine however
// many subscriptions there are (a Redis Cluster has two: the bus and the
// sharded node channel), so the handler never hears two at once. A
// confirmation of a subscription after the first is a reconnection: what
// was published meanwhile is lost, so the handler resyncs.
func (b *bus) receive(subs []*redis.PubSub) {
	defer b.done.Done()
	chans := make([]<-chan interface{}, 2)
	for i, ps := range subs {
		chans[i] = ps.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	}
	for chans[0] != nil || chans[1] != nil {
		var v interface{}
		var ok bool
		select {
		case v, ok = <-chans[0]:
			if !ok {
				chans[0] = nil
				continue
			}
		case v, ok = <-chans[1]:
			if !ok {
				chans[1] = nil
				continue
			}
		}
		b.handle(v)
	}
}

// handle is one message or subscription event of the receiver.
func (b *bus) handle(v interface{}) {
	switch m := v.(type) {
	case *redis.Subscription:
		if m.Kind == "subscribe" || m.Kind == "ssubscribe" {
			b.n.log.Warn().Str("channel", m.Channel).Msg("bus connection back: resyncing")
			b.n.h.Resync()
		}
	case *redis.Message:
		var msg Message
		if err := json.Unmarshal([]byte(m.Payload), &msg); err != nil {
			b.n.log.Warn().Err(err).Msg("unreadable bus message ignored")
			return
		}
		if msg.From == b.n.opts.ID {
			return // this node's own broadcast: it acted already
		}
		if msg.Type == MsgResync {
			b.n.h.Resync()
			return
		}
		b.n.h.Message(msg)
	}
}

// takeLost reports whether messages were lost since it was last asked.
func (b *bus) takeLost() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	lost := b.lost
	b.lost = false
	return lost
}

// Send queues m for node to.
func (n *Node) Send(to string, m Message) {
	m.From = n.opts.ID
	body, err := json.Marshal(m)
	if err != nil {
		return
	}
	ch := n.opts.Keys.NodeChannel(to)
	sharded := n.opts.Sharded
	n.bus.enqueue(func(p redis.Pipeliner) {
		if sharded {
			p.SPublish(context.Background(), ch, body)
		} else {
			p.Publish(context.Background(), ch, body)
		}
	})
}

// Broadcast queues m for every other node.
func (n *Node) Broadcast(m Message) {
	m.From = n.opts.ID
	body, err := json.Marshal(m)
	if err != nil {
		return
	}
	ch := n.opts.Keys.BusChannel()
	n.bus.enqueue(func(p redis.Pipeliner) { p.Publish(context.Background(), ch, body) })
}

// Queue runs f's commands in the bus's next batch, in order with the
// messages around it (a connection's record written before the broadcast
// that announces it).
func (n *Node) Queue(f func(redis.Pipeliner)) { n.bus.enqueue(f) }

// Flush waits, at most d, until everything queued was sent.
func (n *Node) Flush(d time.Duration) { n.bus.flush(d) }
