package hub

import (
	"context"
	"encoding/json"
	"sync"
)

// WebSocket acks are applied off the reader: a POS typically acks a result
// and sends its next request at once, and that request should not wait for
// the ack's Redis round trip. Acks of one API key are still applied one at a
// time, in the order they arrived, by a goroutine that exists only while
// some are queued. Nothing reads the API key's outbox position (a replay, an
// HTTP event poll) while acks received before it are still queued, so an
// acknowledged message is never delivered again because its ack was late.

// ackLines holds the queued acks of every API key.
type ackLines struct {
	mu      sync.Mutex
	lines   map[string]*ackLine // "<merchant>\x00<api key>" → its queue; guarded by mu
	running sync.WaitGroup      // one per applyAcks goroutine, so Drain can wait for them
}

// ackLine is one API key's queued acks.
type ackLine struct {
	reqs    []ackReq    // oldest first
	queued  int64       // acks ever queued on this line
	applied int64       // acks applied so far
	waiters []ackWaiter // waitAcks calls, each for the acks queued before it
}

// ackWaiter is a waitAcks call: done is closed once applied reaches upTo.
type ackWaiter struct {
	upTo int64
	done chan struct{}
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
		l = &ackLine{}
		h.acks.lines[k] = l
		h.acks.running.Add(1)
	}
	l.reqs = append(l.reqs, ackReq{c: c, requestID: requestID, id: id})
	l.queued++
	h.acks.mu.Unlock()
	if start {
		go h.applyAcks(k, l)
	}
}

// applyAcks applies l's acks in order until none is left. An ack's error
// reply goes to the connection it came from, if it is still open.
func (h *Hub) applyAcks(k string, l *ackLine) {
	defer h.acks.running.Done()
	for {
		h.acks.mu.Lock()
		if len(l.reqs) == 0 {
			delete(h.acks.lines, k)
			for _, w := range l.waiters {
				close(w.done)
			}
			h.acks.mu.Unlock()
			return
		}
		r := l.reqs[0]
		l.reqs[0] = ackReq{}
		l.reqs = l.reqs[1:]
		h.acks.mu.Unlock()
		// Not the connection's context: an ack that arrived is applied even
		// if its connection has closed since. A panic is logged and ends
		// this ack, not the process (the reader it came from used to
		// apply it under net/http's recovery).
		r.c.protect(func() { h.ack(context.WithoutCancel(r.c.ctx), r.c, r.requestID, r.id) })
		h.acks.mu.Lock()
		l.applied++
		kept := l.waiters[:0]
		for _, w := range l.waiters {
			if w.upTo <= l.applied {
				close(w.done)
			} else {
				kept = append(kept, w)
			}
		}
		l.waiters = kept
		h.acks.mu.Unlock()
	}
}

// waitAcks returns once every ack of the API key queued so far has been
// applied (acks queued after it was called are not waited for), or when ctx
// ends.
func (h *Hub) waitAcks(ctx context.Context, merchantID, keyID string) {
	h.acks.mu.Lock()
	l := h.acks.lines[ackLineKey(merchantID, keyID)]
	if l == nil {
		h.acks.mu.Unlock()
		return
	}
	w := ackWaiter{upTo: l.queued, done: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	h.acks.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
	}
}
