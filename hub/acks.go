package hub

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// WebSocket acks are applied off the reader: a POS typically acks a result
// and sends its next request at once, and that request's commit should not
// wait behind the ack's Redis round trip; the two run side by side.
// Acks of one API key are applied one at a time, in the order they
// arrived, by a goroutine that exists while some are queued and for
// ackLinger after the last: a POS acks every result, and a goroutine
// started afresh for each ack would grow its stack twice on its way into
// the Redis client, every time (docs/performance.md).
//
// What a POS may conclude from the order of frames is kept:
//   - Nothing the hub answers or delivers durably after an ack leaves
//     before the ack is stored: a reply to a later request, an error reply
//     and a durable message (live or held back during a replay) all wait
//     for the key's acks queued before them (WaitAcks). Pushes that are
//     not durable (terminalStatusUpdate, a new connection's greeting) do
//     not wait: they are sent with the hub's lock held. A POS that has seen
//     anything after its ack can rely on the ack, even across a crash of
//     the hub. (An ack applied off the reader with no such wait was tried
//     and reverted: the model test found acknowledged messages sent again
//     after a crash, to a POS that had seen a later reply.)
//   - Nothing reads the key's outbox position (a replay, an HTTP event
//     poll) while acks received before it are queued, so an acknowledged
//     message is never delivered again because its ack was late.
//   - A draining hub applies every queued ack before it stops.

// ackLines holds the queued acks of every API key.
type ackLines struct {
	mu      sync.Mutex
	lines   map[string]*ackLine // "<merchant>\x00<api key>" → its queue; guarded by mu
	running sync.WaitGroup      // one per applyAcks goroutine, so Drain can wait for them
	done    chan struct{}       // closed by endLinger: idle goroutines leave at once; guarded by mu
}

// ackLinger is how long a line's goroutine waits for the next ack once its
// queue is empty before it ends (on the hub's clock).
const ackLinger = time.Second

// doneLocked is the channel endLinger closes.
func (a *ackLines) doneLocked() chan struct{} {
	if a.done == nil {
		a.done = make(chan struct{})
	}
	return a.done
}

// endLinger makes every line's goroutine end as soon as its queue is empty
// (Drain, once no connection is left to queue an ack).
func (a *ackLines) endLinger() {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.doneLocked(): // already ended
	default:
		close(a.done)
	}
}

// ackLine is one API key's queued acks.
type ackLine struct {
	reqs     []ackReq      // oldest first
	queued   uint64        // acks ever queued on this line
	applied  uint64        // acks ever applied; the first applied of reqs is number applied+1
	progress chan struct{} // made by a waiter, closed (and dropped) when an ack has been applied
	more     chan struct{} // signalled (never blocking) when an ack is queued
}

// ackReq is one ack frame: where it came from and what it acknowledges.
type ackReq struct {
	c         *conn
	requestID json.RawMessage
	id        string
}

func ackLineKey(merchantID, keyID string) string { return merchantID + "\x00" + keyID }

// queueAck queues a WebSocket ack of c's API key and returns at once.
func (h *Hub) queueAck(c *conn, requestID json.RawMessage, id string) {
	k := ackLineKey(c.merchantID, c.keyID)
	h.acks.mu.Lock()
	if h.acks.lines == nil {
		h.acks.lines = map[string]*ackLine{}
	}
	l := h.acks.lines[k]
	start := l == nil
	if start {
		l = &ackLine{more: make(chan struct{}, 1)}
		h.acks.lines[k] = l
		h.acks.running.Add(1)
	}
	l.reqs = append(l.reqs, ackReq{c: c, requestID: requestID, id: id})
	l.queued++
	done := h.acks.doneLocked()
	h.acks.mu.Unlock()
	if start {
		go h.applyAcks(k, l, done)
	} else {
		select {
		case l.more <- struct{}{}:
		default: // already signalled
		}
	}
}

// applyAcks applies l's acks in order until none has come for ackLinger
// (or, once done is closed, until none is left). An ack's error reply goes
// to the connection it came from, if it is still open.
func (h *Hub) applyAcks(k string, l *ackLine, done <-chan struct{}) {
	defer h.acks.running.Done()
	for {
		h.acks.mu.Lock()
		if len(l.reqs) == 0 {
			h.acks.mu.Unlock()
			idle := h.lingerForAck(l, done)
			h.acks.mu.Lock()
			if idle && len(l.reqs) == 0 {
				delete(h.acks.lines, k)
				l.wakeLocked()
				h.acks.mu.Unlock()
				return
			}
			h.acks.mu.Unlock()
			continue
		}
		r := l.reqs[0]
		l.reqs[0] = ackReq{}
		l.reqs = l.reqs[1:]
		h.acks.mu.Unlock()
		// Not the connection's context: an ack that arrived is applied even
		// if its connection has closed since.
		// One ack's Redis work has request_timeout, so that a stalled Redis
		// holds the waiters of an API key (WaitAcks) for a bounded time; a
		// timed-out ack is answered like any failed one ("ack not stored; send
		// it again").
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.c.ctx), h.opts.RequestTimeout)
		h.ack(ctx, r.c, r.requestID, r.id)
		cancel()
		h.acks.mu.Lock()
		l.applied++
		l.wakeLocked()
		h.acks.mu.Unlock()
	}
}

// lingerForAck waits for the next ack of l, for ackLinger at most; true
// when none came (the time passed, or the hub drains or stopped).
func (h *Hub) lingerForAck(l *ackLine, done <-chan struct{}) bool {
	expired := make(chan struct{})
	timer := h.clock.AfterFunc(ackLinger, func() { close(expired) })
	defer timer.Stop()
	select {
	case <-l.more:
		return false
	case <-expired:
	case <-done:
	case <-h.baseCtx.Done(): // stopped without a drain
	}
	return true
}

// wakeLocked wakes the waiters of l to look again.
func (l *ackLine) wakeLocked() {
	if l.progress != nil {
		close(l.progress)
		l.progress = nil
	}
}

// WaitAcks returns once every ack of the API key queued before the call has
// been applied, or when ctx ends. Acks queued later do not hold it, so a
// POS that keeps acking cannot starve a waiter.
func (h *Hub) WaitAcks(ctx context.Context, merchantID, keyID string) {
	k := ackLineKey(merchantID, keyID)
	h.acks.mu.Lock()
	l := h.acks.lines[k]
	if l == nil {
		h.acks.mu.Unlock()
		return
	}
	target := l.queued
	for l.applied < target && h.acks.lines[k] == l {
		if l.progress == nil {
			l.progress = make(chan struct{})
		}
		progress := l.progress
		h.acks.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			return
		}
		h.acks.mu.Lock()
	}
	h.acks.mu.Unlock()
}
