package hub

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// replayPage is how many outbox entries one replay read takes.
const replayPage = 500

// posDelivery is a POS connection's place in its API key's outbox. While a
// replay runs, live messages are held back and then sent after it, skipping
// those the replay already sent, so the POS sees every message once, in
// stream order, with no gap between replay and live delivery.
type posDelivery struct {
	mu        sync.Mutex
	replaying bool          // guarded by mu
	held      []queue.Entry // live entries that arrived during the replay; guarded by mu
	lastSent  string        // newest stream id queued to the socket; guarded by mu
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
// connection, if any. It is called in stream order (session holds the key's
// ordering lock).
func (h *Hub) DeliverPOS(merchantID, apiKeyID string, msgs []queue.Entry) {
	h.mu.Lock()
	c := h.pos[apiKeyID]
	h.wakeLocked(apiKeyID)
	h.mu.Unlock()
	if c == nil || c.merchantID != merchantID {
		return // durable: replayed when the POS connects
	}
	h.waitAcks(c.ctx, merchantID, apiKeyID) // what the POS acked before is stored before it hears more
	c.dlv.mu.Lock()
	defer c.dlv.mu.Unlock()
	if c.dlv.replaying {
		c.dlv.held = append(c.dlv.held, msgs...)
		return
	}
	c.sendEntriesLocked(msgs)
}

// sendEntriesLocked sends the entries not already sent, in one write
// (sendAll): a commit's messages to one POS usually come two at a time
// (a status update and the final).
func (c *conn) sendEntriesLocked(msgs []queue.Entry) {
	var one [2][]byte
	frames := one[:0]
	for _, m := range msgs {
		if c.dlv.lastSent != "" && queue.CompareIDs(m.ID, c.dlv.lastSent) <= 0 {
			continue
		}
		c.dlv.lastSent = m.ID
		frames = append(frames, m.Frame())
	}
	if len(frames) > 0 {
		c.sendAll(frames)
	}
}

// replay sends every unacknowledged message of c's API key, oldest first,
// then switches c to live delivery. Its frames wait for room in the
// writer's replay queue instead of filling the live one, so a long replay is
// backpressure, never a reason to kick the POS as slow.
func (h *Hub) replay(c *conn) {
	if h.opts.Outbox == nil {
		h.endReplay(c)
		return
	}
	started := h.now()
	h.waitAcks(c.ctx, c.merchantID, c.keyID) // acks of an earlier connection move the cursor first
	cursor, err := h.opts.Outbox.Cursor(c.ctx, c.merchantID, c.keyID)
	if err == nil {
		c.dlv.mu.Lock()
		if !c.dlv.ackSeen { // else an ack applied since the read knows better
			c.dlv.acked = cursor
		}
		c.dlv.mu.Unlock()
	}
	n := 0
	for err == nil {
		var page []queue.Entry
		page, err = h.opts.Outbox.After(c.ctx, c.merchantID, c.keyID, cursor, replayPage)
		for _, m := range page {
			if !c.queueReplay(m.Frame()) {
				return
			}
			c.dlv.mu.Lock()
			c.dlv.lastSent = m.ID
			c.dlv.mu.Unlock()
			cursor = m.ID
			n++
		}
		if len(page) < replayPage {
			break
		}
	}
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Error().Err(err).Msg("replay failed; the POS will get the rest on its next connection")
			c.disconnect(&protocol.Disconnect{Code: protocol.ClosePolicy, Reason: protocol.ReasonOther, Message: "Replay failed; reconnect", ReconnectAllowed: true})
		}
		return
	}
	h.endReplay(c)
	if n > 0 {
		h.metrics.Replays.Inc()
		h.metrics.ReplayedMessages.Add(float64(n))
		c.log.Info().Int("messages", n).Dur("took", h.now().Sub(started)).Msg("replayed unacknowledged messages")
	}
}

func (h *Hub) endReplay(c *conn) {
	// The POS may have acked replayed messages meanwhile: what it is sent
	// next waits for those acks, as in DeliverPOS.
	h.waitAcks(c.ctx, c.merchantID, c.keyID)
	c.dlv.mu.Lock()
	defer c.dlv.mu.Unlock()
	c.sendEntriesLocked(c.dlv.held)
	c.dlv.held = nil
	c.dlv.replaying = false
}

// SendTerminal sends commands to the device's live connection, if any; an
// offline terminal gets its open commands when it reconnects.
func (h *Hub) SendTerminal(deviceID string, cmds []any) {
	h.mu.Lock()
	c := h.terminals[deviceID]
	h.mu.Unlock()
	if c == nil {
		return
	}
	frames := make([][]byte, 0, len(cmds))
	for _, cmd := range cmds {
		if b, ok := c.marshal(cmd); ok {
			frames = append(frames, b)
		}
	}
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
// reconnecting, when its grace period ends.
func (h *Hub) TerminalLive(deviceID string) (string, string, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.status[deviceID]
	if st == nil {
		return protocol.TerminalOffline, "", time.Time{}
	}
	return st.status, st.connID, st.graceUntil
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
		c.log.Error().Err(err).Msg("ack failed")
		c.sendNowJSON(protocol.NewErrorReply(requestID, protocol.Errorf(protocol.CodeInternal, "", "ack failed; send it again")))
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
