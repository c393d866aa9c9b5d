package hub

import (
	"encoding/json"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/protocol"
)

// A connection's writer is lazy: frames go into a queue under c.wmu, and the
// first frame (or disconnect) finding no writer running starts one, which
// writes until the queue is empty and then ends. An idle connection thus
// holds no writer goroutine, no stack for it and no queue; a busy one is
// written by one goroutine at a time.
//
// Rules kept from the design of one writer per connection draining bounded
// queues:
//   - Frames are written in the order they were queued, live and replayed
//     alike: a POS's live messages held back during its replay are queued
//     after the last replayed one, and so follow it on the wire.
//   - Live frames (replies, pushes) beyond queueSize mean the peer does not
//     keep up: it is disconnected, never allowed to hold the hub back.
//   - Replayed frames (a POS's outbox replay, a terminal's re-sent commands)
//     wait for room instead (queueReplay), so a long replay is backpressure
//     and never a reason to kick the peer as slow.
//   - The greeting, the first live frame register queues, is the first frame
//     on the wire: replayed frames are taken only once it is queued.
//   - The first disconnect wins and is acted on before any frame still
//     queued, by the writer, never inside disconnect (which callers reach
//     with the hub's locks held).

// replayQueue is how many replayed frames may wait for the writer, and
// replayLow the level at which a waiting replay is woken to add more: the
// replay refills the queue in batches instead of being woken for every frame
// written (a wake-up per frame made a 10,000-message replay twice as slow),
// and the writer keeps finding frames queued instead of ending and being
// started again. Frames are only queued during a replay, so this is not
// memory an idle connection holds.
const (
	replayQueue = 64
	replayLow   = replayQueue / 4
)

// outFrame is one queued frame.
type outFrame struct {
	data   []byte
	replay bool // queued by queueReplay: counts against replayQueue, not queueSize
}

// enqueue queues a live frame. A full queue means the peer does not keep up;
// it is disconnected rather than allowed to hold the hub back. Frames queued
// once the connection is being disconnected are dropped: none would be sent.
func (c *conn) enqueue(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.kick != nil || c.ended || c.ctx.Err() != nil {
		return
	}
	if limit := queueSize(c.h.opts, c.kind); int(c.live) >= limit {
		c.log.Warn().Int("queue", limit).Msg("send queue full: disconnecting slow peer")
		c.disconnectLocked(&protocol.Disconnect{Code: protocol.ClosePolicy, Reason: protocol.ReasonOther,
			Message: "Connection too slow to receive messages", ReconnectAllowed: true})
		return
	}
	c.out = append(c.out, outFrame{data: frame})
	c.live++
	if !c.greeted {
		c.greeted = true // this is the greeting: replayed frames may follow it
		c.wakeLocked()
	}
	c.startWriterLocked()
}

// sendJSON marshals v and queues it.
func (c *conn) sendJSON(v any) {
	if b, ok := c.marshal(v); ok {
		c.enqueue(b)
	}
}

// sendNowJSON marshals v and sends it with send.
func (c *conn) sendNowJSON(v any) {
	if b, ok := c.marshal(v); ok {
		c.send(b)
	}
}

// jsonAppender is a message with an encoder of its own, faster than
// encoding/json's reflection and writing the same bytes (protocol's
// transaction_json.go): replies carrying a transaction.
type jsonAppender interface {
	AppendJSON(b []byte) ([]byte, error)
}

func (c *conn) marshal(v any) ([]byte, bool) {
	var b []byte
	var err error
	if a, ok := v.(jsonAppender); ok {
		b, err = a.AppendJSON(make([]byte, 0, 1024))
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		c.log.Error().Err(err).Msg("marshal outgoing message")
		return nil, false
	}
	return b, true
}

// send is enqueue for the hot paths: when nothing is queued and no writer
// is running, the caller writes the frame itself instead of starting a
// writer goroutine for it. That saves a goroutine start, a wake-up of
// another thread and a hand-off per frame (docs/performance.md), and it
// never blocks on the peer: the write is nonblocking (wsconn.Conn), and
// whatever the socket cannot take at once is left to a writer goroutine,
// which frames queued meanwhile follow.
// While the caller writes it is the connection's writer, so frames keep the
// order in which they were sent or queued. A peer that stops reading thus
// still fills its queue and is disconnected as slow, as with enqueue.
func (c *conn) send(frame []byte) {
	if !c.takeWriting() {
		c.enqueue(frame) // looks again under the lock: the state may have changed
		return
	}
	// Neither a timeout nor a cancellation (ioCtx): the write cannot wait
	// for the peer, and coder/websocket then ties nothing to the context.
	if err := c.ws.Write(c.ioCtx, websocket.MessageText, frame); err != nil {
		c.writeFailed(err)
		return
	}
	c.doneWriting()
}

// sendAll is send for several frames to one peer (a commit's messages to
// a POS): written the same way, but gathered into one system call (cork),
// which saves a write per frame after the first and lets the peer read
// them at once.
func (c *conn) sendAll(frames [][]byte) {
	if len(frames) == 1 {
		c.send(frames[0])
		return
	}
	if !c.takeWriting() {
		for _, f := range frames {
			c.enqueue(f)
		}
		return
	}
	c.spill.Cork()
	var err error
	for _, f := range frames {
		if err = c.ws.Write(c.ioCtx, websocket.MessageText, f); err != nil {
			break
		}
	}
	if uerr := c.spill.Uncork(); err == nil {
		err = uerr
	}
	if err != nil {
		c.writeFailed(err)
		return
	}
	c.doneWriting()
}

// takeWriting makes the caller the connection's writer when nothing is
// queued, no writer runs and its writes cannot block (see send); false
// means the frames must be queued instead.
func (c *conn) takeWriting() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writing || len(c.out) > 0 || !c.greeted || c.kick != nil || c.ended || c.ctx.Err() != nil || !c.spill.CanSpill() {
		return false
	}
	c.writing = true
	return true
}

// writeFailed ends a connection whose write failed.
func (c *conn) writeFailed(err error) {
	c.log.Debug().Err(err).Msg("write failed")
	_ = c.ws.CloseNow()
	c.endWriting()
}

// doneWriting gives up the writer role taken by takeWriting, or hands it
// to a writer goroutine when frames were queued meanwhile or a tail is left.
func (c *conn) doneWriting() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.out) > 0 || c.kick != nil || c.spill.HasTail() {
		go c.writeQueued() // stays the writer: writes the rest, then what was queued
		return
	}
	c.writing = false
}

// queueReplay queues a replayed frame behind the greeting. It waits while
// replayQueue replayed frames are queued or the greeting is not, so however
// many frames a replay has it never overflows the live queue nor counts as
// slow. It reports false, without queueing, once the connection is being
// disconnected or has ended.
func (c *conn) queueReplay(frame []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for {
		if c.kick != nil || c.ended || c.ctx.Err() != nil {
			return false
		}
		if c.greeted && c.replays < replayQueue {
			break
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.wmu.Unlock()
		select {
		case <-room:
		case <-c.ctx.Done():
		}
		c.wmu.Lock()
	}
	c.out = append(c.out, outFrame{data: frame, replay: true})
	c.replays++
	c.startWriterLocked()
	return true
}

// wakeLocked wakes the replays waiting in queueReplay to look again.
func (c *conn) wakeLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// disconnect ends the connection: the writer sends d's forceDisconnect
// (when d has a reason) and closes with d's code. Later calls are ignored.
// It returns at once, so it may be called with any lock held.
func (c *conn) disconnect(d *protocol.Disconnect) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.disconnectLocked(d)
}

func (c *conn) disconnectLocked(d *protocol.Disconnect) {
	if c.kick != nil || c.ended {
		return
	}
	c.kick = d
	// A replay waiting for room gives up now rather than when the kick
	// has been acted on: terminalUp waits holding the device's lock, which
	// acting on the kick (leave) takes.
	c.wakeLocked()
	c.startWriterLocked()
}

// tailed is the wsconn.Conn's onTail: a write left bytes for the writer.
// Whoever holds the writing role looks for a tail before giving it up, so a
// writer is started only when none runs.
func (c *conn) tailed() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.ended {
		c.startWriterLocked()
	}
}

// startWriterLocked starts a writer unless one is running.
func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.writeQueued()
	}
}

// writeQueued is the writer: it writes queued frames until there are none
// left and then ends. It ends the connection's writing for good when a
// disconnect is taken (after the forceDisconnect and the close), when a
// write fails or when the connection's context is done.
func (c *conn) writeQueued() {
	for {
		c.wmu.Lock()
		if c.ctx.Err() != nil {
			c.wmu.Unlock()
			c.endWriting()
			return
		}
		if c.spill.HasTail() {
			// Bytes a write could not finish (a frame of send's, a ping,
			// a pong) go out first; checked under wmu before the writer
			// may end, so a tail left meanwhile starts a writer (tailed).
			c.wmu.Unlock()
			if err := c.spill.FlushTail(c.h.opts.WriteTimeout); err != nil {
				c.log.Debug().Err(err).Msg("write failed")
				_ = c.ws.CloseNow()
				c.endWriting()
				return
			}
			continue
		}
		if d := c.kick; d != nil {
			c.wmu.Unlock()
			c.kicked.Store(true)
			if c.leave != nil {
				c.leave()
			}
			c.finish(d)
			c.endWriting()
			return
		}
		if len(c.out) == 0 {
			c.out = nil // let a drained queue's array go
			c.writing = false
			c.wmu.Unlock()
			return
		}
		f := c.out[0]
		c.out[0] = outFrame{}
		c.out = c.out[1:]
		if f.replay {
			c.replays--
			if c.replays <= replayLow {
				c.wakeLocked()
			}
		} else {
			c.live--
		}
		c.wmu.Unlock()
		if err := c.write(f.data); err != nil {
			c.log.Debug().Err(err).Msg("write failed")
			_ = c.ws.CloseNow()
			c.endWriting()
			return
		}
	}
}

// endWriting ends the connection's writing for good: the context is
// cancelled (the reader stops), queued frames are dropped, waiting replays
// give up and done is closed. Only the writer calls it, once.
func (c *conn) endWriting() {
	c.cancel()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ended, c.writing = true, false
	c.out, c.live, c.replays = nil, 0, 0
	c.wakeLocked()
	if c.done != nil {
		close(c.done)
	}
}

// waitWritten waits until the connection's writing has ended. done is made
// only here, by the one goroutine that waits, so that a connection that is
// never waited for does not carry a channel.
func (c *conn) waitWritten() {
	c.wmu.Lock()
	if c.ended {
		c.wmu.Unlock()
		return
	}
	if c.done == nil {
		c.done = make(chan struct{})
	}
	done := c.done
	c.wmu.Unlock()
	<-done
}
