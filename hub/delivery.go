package hub

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
)

// replayPage is how many outbox entries one read of the stream takes.
const replayPage = 500

// posDelivery is a POS connection's place in its API key's outbox.
//
// Delivery to a connection has no gaps by construction: every entry of the
// outbox after the connection's starting cursor is sent, in stream order,
// and none is skipped, so a cumulative ack never covers a message the
// connection was not sent (docs/ops.md#when-redis-stalls-restarts-or-fails-over). A commit hands its entries over
// directly when they are the very next ones: the outbox counts its
// entries (Entry.Seq) and the connection knows the count at the last one
// it has. Anything else — a connection that has just been opened, a commit
// whose answer was lost and that turned out applied (a nudge), entries
// written by another process — is read from the stream after the last
// entry the connection has; live entries wait meanwhile and follow the
// read, skipping what it already sent.
type posDelivery struct {
	mu      sync.Mutex
	reading bool          // a read of the stream runs (replay or catch-up); guarded by mu
	held    []queue.Entry // live entries that came during the read; guarded by mu
	again   bool          // a nudge came during the read: read once more; guarded by mu
	// from is the stream id up to which the connection has every entry:
	// sent, or acknowledged before it connected. Reads go on after it.
	// Guarded by mu.
	from string
	// seq is the outbox's count at from: the next entry is seq+1. 0 while
	// unknown (before the first read). Guarded by mu.
	seq      int64
	lastSent string // newest stream id queued to the socket; guarded by mu
	// acked is the key's stored cursor as this connection knows it: read
	// when its replay starts and moved by each of its acks ("" once it is
	// unknown: an ack found the cursor moved by someone else). With it, an
	// ack of a message this connection delivered, newer than acked, needs
	// none of the script's checks (Outbox.AckForward). Guarded by mu.
	acked string
	// ackSeen: an ack of this connection has been applied, so the cursor
	// read when its replay started is no longer what acked may be set to
	// (acked "" then means unknown, not unset). Guarded by mu.
	ackSeen bool
}

// DeliverPOS sends freshly committed durable messages to the API key's live
// connection, if any. It is called in the order the commits were made
// (session's per-key lines), which is stream order unless two commits
// reached Redis the other way round: the entries' numbers then tell
// (sendEntriesLocked), and the stream is read.
func (h *Hub) DeliverPOS(merchantID, apiKeyID string, msgs []queue.Entry) {
	c := h.posFor(merchantID, apiKeyID)
	if c == nil {
		// Durable: replayed when the POS connects; a connection or long
		// poll on another node reads it from the stream when nudged.
		if h.node != nil {
			h.nudgeRemote(merchantID, apiKeyID)
		}
		return
	}
	h.WaitAcks(c.ctx, merchantID, apiKeyID) // what the POS acked before is stored before it hears more
	c.dlv.mu.Lock()
	defer c.dlv.mu.Unlock()
	if c.dlv.reading {
		c.dlv.held = append(c.dlv.held, msgs...)
		return
	}
	if !c.sendEntriesLocked(msgs) {
		h.startReadLocked(c)
	}
}

// NudgePOS makes the API key's live connection, if any, read its outbox
// for entries it was not handed (session.Sink).
func (h *Hub) NudgePOS(merchantID, apiKeyID string) {
	if !h.nudgeLocal(merchantID, apiKeyID) && h.node != nil {
		h.nudgeRemote(merchantID, apiKeyID)
	}
}

// nudgeLocal makes the API key's connection on this node, if any, read its
// outbox, and wakes the key's long polls here; it reports whether the
// connection is here.
func (h *Hub) nudgeLocal(merchantID, apiKeyID string) bool {
	c := h.posFor(merchantID, apiKeyID)
	if c == nil {
		return false
	}
	c.dlv.mu.Lock()
	defer c.dlv.mu.Unlock()
	if c.dlv.reading {
		c.dlv.again = true
		return true
	}
	h.startReadLocked(c)
	return true
}

// posFor returns the API key's live connection (nil for none) and wakes
// the key's HTTP long polls: its outbox has news.
func (h *Hub) posFor(merchantID, apiKeyID string) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wakeLocked(apiKeyID)
	if c := h.pos[apiKeyID]; c != nil && c.merchantID == merchantID {
		return c
	}
	return nil
}

// startReadLocked starts a catch-up read of c's outbox; live entries wait
// until it is done.
func (h *Hub) startReadLocked(c *conn) {
	c.dlv.reading = true
	go h.readOutbox(c, false)
}

// sendEntriesLocked sends, in one write (sendAll: a commit's messages to
// one POS usually come two at a time, a status update and the final), the
// entries after from, as long as each is the very next one of the outbox.
// It reports false at the first that may not be (its number is not the
// next, or unknown): the stream must then be read from `from` on, which
// sends it too.
func (c *conn) sendEntriesLocked(msgs []queue.Entry) bool {
	var one [2][]byte
	frames := one[:0]
	next := true
	for _, m := range msgs {
		if c.dlv.from != "" && queue.CompareIDs(m.ID, c.dlv.from) <= 0 {
			switch {
			case m.ID == c.dlv.from && m.Seq > 0:
				c.dlv.seq = m.Seq // a read sent it; now its number is known too
			case m.Seq > c.dlv.seq:
				// Numbered past what this connection has, with an older id:
				// the outbox was lost and rebuilt under an older clock. The
				// read finds the count gone back and starts again.
				next = false
			}
			if !next {
				break
			}
			continue
		}
		if m.Seq == 0 || c.dlv.seq == 0 || m.Seq != c.dlv.seq+1 {
			next = false
			break
		}
		c.dlv.from, c.dlv.lastSent, c.dlv.seq = m.ID, m.ID, m.Seq
		frames = append(frames, m.Frame())
	}
	if len(frames) > 0 {
		c.sendAll(frames)
	}
	return next
}

// replay sends every unacknowledged message of c's API key, oldest first,
// then switches c to live delivery (registerPOS set c reading).
func (h *Hub) replay(c *conn) {
	if h.opts.Outbox == nil {
		c.dlv.mu.Lock()
		c.dlv.reading = false
		c.dlv.mu.Unlock()
		return
	}
	h.readOutbox(c, true)
}

// readOutbox reads c's outbox after from — from its key's ack cursor when
// replaying — and sends what it finds, then the live entries held
// meanwhile, reading again while there may be more. Its frames wait for
// room in the writer's replay queue instead of filling the live one, so a
// long read is backpressure, never a reason to kick the POS as slow. A
// Redis that does not answer is waited for: the connection stays up
// through an outage (docs/ops.md#when-redis-stalls-restarts-or-fails-over), and what it is owed is sent after.
func (h *Hub) readOutbox(c *conn, replaying bool) {
	started := h.now()
	n := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !h.waitStore(c.ctx, attempt-1) {
			return // the connection ended
		}
		if replaying {
			// Acks of an earlier connection move the cursor first.
			h.WaitAcks(c.ctx, c.merchantID, c.keyID)
			ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
			cursor, err := h.opts.Outbox.Cursor(ctx, c.merchantID, c.keyID)
			cancel()
			if err != nil {
				if !h.readFailed(c, err, attempt) {
					return
				}
				continue
			}
			c.dlv.mu.Lock()
			if !c.dlv.ackSeen { // else an ack applied since the read knows better
				c.dlv.acked = cursor
			}
			if c.dlv.from == "" || queue.CompareIDs(cursor, c.dlv.from) > 0 {
				c.dlv.from = cursor
			}
			c.dlv.mu.Unlock()
			replaying = false
		}
		c.dlv.mu.Lock()
		from := c.dlv.from
		c.dlv.again = false
		c.dlv.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
		page, count, err := h.opts.Outbox.Read(ctx, c.merchantID, c.keyID, from, replayPage)
		cancel()
		if err != nil {
			if !h.readFailed(c, err, attempt) {
				return
			}
			continue
		}
		attempt = -1 // the next pass reads at once
		// An entry read may be of a commit of this process that has not
		// sent its reply yet: the reply goes first (the POS never sees an
		// outcome before the answer to its request).
		if h.opts.Engine != nil && len(page) > 0 {
			h.opts.Engine.CarriedOut(c.ctx, c.merchantID, c.keyID)
		}
		c.dlv.mu.Lock()
		if count < c.dlv.seq && c.dlv.seq > 0 {
			// The outbox counts fewer entries than this connection was
			// sent: Redis lost it (restarted empty, or failed over to a
			// replica behind). What it holds now is all new: send it all
			// (what was sent already comes again, at least once).
			c.dlv.from, c.dlv.seq = "0-0", 0
			c.dlv.mu.Unlock()
			c.log.Warn().Msg("outbox counts fewer messages than this connection was sent: Redis lost data; sending what it holds again")
			continue
		}
		c.dlv.mu.Unlock()
		for _, m := range page {
			if !c.queueReplay(m.Frame()) {
				return
			}
			c.dlv.mu.Lock()
			c.dlv.from, c.dlv.lastSent = m.ID, m.ID
			c.dlv.mu.Unlock()
			n++
		}
		if len(page) == replayPage {
			continue // more to read
		}
		// Everything counted when the page was read is sent: the live
		// entries held meanwhile follow, unless one of them is not the
		// next (or a nudge came): then read again.
		h.WaitAcks(c.ctx, c.merchantID, c.keyID) // acks of what was just sent come first
		c.dlv.mu.Lock()
		c.dlv.seq = count
		held := c.dlv.held
		c.dlv.held = nil
		if !c.sendEntriesLocked(held) || c.dlv.again {
			c.dlv.mu.Unlock()
			continue
		}
		c.dlv.reading = false
		c.dlv.mu.Unlock()
		break
	}
	if n > 0 {
		h.metrics.Replays.Inc()
		h.metrics.ReplayedMessages.Add(float64(n))
		c.log.Info().Int("messages", n).Dur("took", h.now().Sub(started)).Msg("sent unacknowledged messages from the outbox")
	}
}

// readFailed handles a failed read of c's outbox and reports whether to
// try again: Redis not answering is waited for (the connection stays up
// through an outage, logged on its first failed attempt); any other error
// will not go away by waiting, so the connection is closed (1008) and the
// next one reads the outbox from the cursor.
func (h *Hub) readFailed(c *conn, err error, attempt int) bool {
	if c.ctx.Err() != nil {
		return false
	}
	if !redisx.Outage(err) {
		c.log.Error().Err(err).Msg("outbox read failed; closing the connection so that the next one reads it again")
		c.disconnect(&protocol.Disconnect{Code: protocol.ClosePolicy, Reason: protocol.ReasonOther, Message: "Reading undelivered messages failed; reconnect", ReconnectAllowed: true})
		return false
	}
	ev := c.log.Debug()
	if attempt <= 0 {
		ev = c.log.Warn()
	}
	ev.Err(err).Msg("outbox read failed; trying again once Redis answers")
	return true
}

// waitStore waits before another attempt at Redis: a short, growing pause,
// then until Redis is believed up. It reports false when ctx ends first.
// Its waits are on the wall clock: Redis answers in real time.
func (h *Hub) waitStore(ctx context.Context, attempt int) bool {
	pause := time.NewTimer(min(50*time.Millisecond<<min(attempt, 5), time.Second))
	defer pause.Stop()
	select {
	case <-pause.C:
	case <-ctx.Done():
		return false
	}
	select {
	case <-h.ready():
		return true
	case <-ctx.Done():
		return false
	}
}

// SendTerminal sends commands to the device's live connection, here or on
// another node; an offline terminal gets its open commands when it
// reconnects.
func (h *Hub) SendTerminal(deviceID string, cmds []session.TerminalCommand) {
	h.mu.Lock()
	c := h.terminals[deviceID]
	h.mu.Unlock()
	if c == nil {
		if h.node != nil {
			h.sendRemote(deviceID, marshalCommands(cmds, h.log))
		}
		return
	}
	frames := make([][]byte, 0, len(cmds))
	for _, cmd := range cmds {
		if b, ok := c.marshal(cmd); ok {
			frames = append(frames, b)
		}
	}
	h.sendFrames(c, frames)
}

// marshalCommands encodes commands as a terminal connection would.
func marshalCommands(cmds []session.TerminalCommand, log zerolog.Logger) [][]byte {
	c := &conn{log: log}
	frames := make([][]byte, 0, len(cmds))
	for _, cmd := range cmds {
		if b, ok := c.marshal(cmd); ok {
			frames = append(frames, b)
		}
	}
	return frames
}

// sendFrames sends encoded commands to a terminal connection.
func (h *Hub) sendFrames(c *conn, frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	c.wmu.Lock()
	if c.resuming { // terminalUp: not to be re-sent
		c.sentLive = append(c.sentLive, frames...)
	}
	c.wmu.Unlock()
	c.sendAll(frames)
}

// TerminalLive reports a device's status, its connection and, while it is
// reconnecting, when its grace period ends. With several nodes, a device
// this node does not see online is looked up in Redis: it may have been
// greeted by another node a moment ago.
func (h *Hub) TerminalLive(deviceID string) (session.TerminalStatus, string, time.Time) {
	h.mu.Lock()
	st := h.status[deviceID]
	stale := h.node != nil && (st == nil || st.status != protocol.TerminalOnline)
	h.mu.Unlock()
	if stale {
		h.refreshDevice(deviceID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st = h.status[deviceID]
	if st == nil {
		return protocol.TerminalOffline, "", time.Time{}
	}
	return session.TerminalStatus(st.status), st.connID, st.graceUntil
}

// ack handles a POS ack.
func (h *Hub) ack(ctx context.Context, c *conn, requestID json.RawMessage, id string) {
	if h.opts.Outbox == nil {
		return
	}
	if err := h.storeAck(ctx, c, id); err != nil {
		if err == queue.ErrUnknownID {
			c.sendNowJSON(protocol.NewErrorReply(requestID, protocol.Invalid("messageId", "unknown messageId")))
			return
		}
		pe := h.ClientError(err, c.log)
		c.sendNowJSON(protocol.NewErrorReply(requestID, protocol.Errorf(pe.Code, "", "ack not stored; send it again")))
	}
}

// storeAck stores a WebSocket ack of c's API key. Acks of one key are
// applied one at a time (acks.go), so c.dlv.acked is the cursor as of
// the previous one: an ack this connection can vouch for (it delivered the
// message, and the message is newer than the cursor) is stored with plain
// commands, any other through the script that checks it.
func (h *Hub) storeAck(ctx context.Context, c *conn, id string) error {
	c.dlv.mu.Lock()
	known, acked := c.dlv.lastSent, c.dlv.acked
	c.dlv.ackSeen = true
	c.dlv.mu.Unlock()
	if known != "" && acked != "" && queue.ValidID(id) && queue.CompareIDs(id, known) <= 0 && queue.CompareIDs(id, acked) > 0 {
		err := h.opts.Outbox.AckForward(ctx, c.merchantID, c.keyID, id)
		c.dlv.mu.Lock()
		if err == nil {
			c.dlv.acked = id
		} else {
			c.dlv.acked = "" // it may or may not have been stored
		}
		c.dlv.mu.Unlock()
		return err
	}
	moved, err := h.opts.Outbox.Ack(ctx, c.merchantID, c.keyID, id)
	c.dlv.mu.Lock()
	switch {
	case err == queue.ErrUnknownID:
	case err != nil || !moved && acked != "" && queue.CompareIDs(id, acked) > 0:
		c.dlv.acked = "" // stored or not, or moved by someone else: unknown
	case moved:
		c.dlv.acked = id
	}
	c.dlv.mu.Unlock()
	return err
}
