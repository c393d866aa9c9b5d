package hub

import (
	"context"
	"encoding/json"
	"time"

	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// Several nodes on one Redis (docs/cluster.md, docs/cluster.md). With
// Options.Node set, the hub shares what one process kept to itself:
//
//   - each device's status is a record in Redis (nodes.Device) written
//     before anyone hears of the change, and h.status is this node's copy,
//     kept current by the other nodes' broadcasts and, where a payment's
//     answer depends on it (TerminalLive), read again from Redis;
//   - who holds each API key's and device's connection is in Redis too: a
//     connection that takes one over displaces the holder on whatever node
//     it is, and fighting keys are counted there;
//   - what a commit causes for a connection on another node goes there on
//     the bus: a nudge to read the outbox (never the message itself: the
//     stream is the only copy), a terminal's commands, a displacement, a
//     kick; a long poll anywhere is woken by a broadcast.
//
// Without a node, none of this runs: the hub is alone (the embedded Redis).

// Message types on the bus.
const (
	msgStatus   = "status"   // a device's record changed (broadcast)
	msgConnUp   = "conn+"    // a connection came (broadcast)
	msgConnDown = "conn-"    // a connection went (broadcast)
	msgConflict = "conflict" // an API key is caught fighting (broadcast)
	msgDead     = "dead"     // a node was declared dead and released (broadcast)
	msgWake     = "wake"     // an API key's outbox has news; no holder known (broadcast)
	msgNudge    = "nudge"    // an API key's outbox has news (to its holder)
	msgCommands = "cmds"     // commands for a device (to its holder)
	msgDisplace = "displace" // a newer connection took a key or device over (to the old holder)
	msgKick     = "kick"     // an operator disconnects a connection (to its holder)
)

// peerTimeout bounds a Redis read of the node's own that a request waits
// for (a record read again for TerminalLive).
const peerTimeout = time.Second

// Node returns this node's id, "" when the hub is alone.
func (h *Hub) NodeID() string {
	if h.node == nil {
		return ""
	}
	return h.node.ID()
}

// Message handles a message of another node (nodes.Handler).
func (h *Hub) Message(m nodes.Message) {
	switch m.Type {
	case msgStatus:
		h.applyStatus(m)
	case msgConnUp, msgConnDown:
		h.applyConn(m)
	case msgConflict:
		var k KeyConflict
		if json.Unmarshal(m.Body, &k) == nil {
			h.mu.Lock()
			h.conflicts[k.APIKeyID] = &k
			h.mu.Unlock()
		}
	case msgDead:
		h.forgetNode(m.Node)
	case msgWake:
		h.nudgeLocal(m.Merchant, m.Key)
	case msgNudge:
		if !h.nudgeLocal(m.Merchant, m.Key) && m.Hops == 0 {
			go h.forwardNudge(m)
		}
	case msgCommands:
		h.applyCommands(m)
	case msgDisplace:
		h.applyDisplace(m)
	case msgKick:
		var d protocol.Disconnect
		if json.Unmarshal(m.Body, &d) == nil {
			h.disconnectLocal(m.Conn, &d)
		}
	default:
		h.mu.Lock()
		f := h.peerHandlers[m.Type]
		h.mu.Unlock()
		if f != nil {
			f(m)
		}
	}
}

// OnPeer makes f handle the other nodes' messages of type typ, for what
// rides on the bus without being the hub's (the ops feed's transaction
// updates). f runs in the bus's receiving goroutine and must not block.
func (h *Hub) OnPeer(typ string, f func(nodes.Message)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.peerHandlers[typ] = f
}

// OnTick adds f to what runs at every heartbeat of the node.
func (h *Hub) OnTick(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tickers = append(h.tickers, f)
}

// applyStatus takes another node's change of a device's record, unless
// this node knows a newer one, and tells this node's POS connections of
// the merchant and its ops feeds.
func (h *Hub) applyStatus(m nodes.Message) {
	var u protocol.TerminalStatusUpdate
	if json.Unmarshal(m.Body, &u) != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateLocked(m.Device)
	if m.Epoch <= st.epoch {
		return
	}
	st.status, st.connID, st.node, st.epoch, st.graceUntil = u.Status, u.ConnectionID, m.Node, m.Epoch, m.At
	st.mine = false
	h.armGraceLocked(m.Merchant, m.Device, st) // a timer of this node for an older state is moot
	if !m.Seen.IsZero() {
		st.lastSeen = m.Seen
	}
	h.pushStatusLocked(m.Merchant, u)
	h.checkLocalLocked(m.Device, st)
}

// checkLocalLocked ends this node's connection of a device whose record
// no longer names it: taken over elsewhere (the displacement may still be
// on its way) or released by a node that took this one's for gone. Served
// on, it would be online nowhere else; it reconnects and claims afresh.
func (h *Hub) checkLocalLocked(deviceID string, st *terminalState) {
	c := h.terminals[deviceID]
	if c == nil || st.status == protocol.TerminalOnline && st.node == h.node.ID() && st.connID == c.id {
		return
	}
	if st.status == protocol.TerminalOnline {
		h.displaceLocked(c, st.node, true)
		return
	}
	// Released: the others took this node for gone, as a node that comes
	// back after being taken for dead finds at its heartbeat.
	c.log.Warn().Msg("the terminal's record was released by another node: closing its connection here")
	c.disconnect(&protocol.Disconnect{Code: protocol.CloseShutdown, Reason: protocol.ReasonShutdown,
		Message: "This node lost contact with the hub; reconnect", ReconnectAllowed: true})
	delete(h.terminals, deviceID)
	delete(h.byID, c.id)
}

// applyRecordLocked takes a device's record read from Redis when it is
// newer than this node's copy, telling this node's POS connections and ops
// feeds of the change (the broadcast of it, if any, then finds it known).
func (h *Hub) applyRecordLocked(merchantID, deviceID string, rec nodes.Device) {
	st := h.stateLocked(deviceID)
	if rec.Epoch <= st.epoch || rec.Status == "" {
		return
	}
	prev := st.status
	st.status, st.connID, st.node, st.epoch, st.graceUntil = rec.Status, rec.Conn, rec.Node, rec.Epoch, rec.GraceUntil
	h.armGraceLocked(merchantID, deviceID, st)
	st.mine = rec.Node == h.node.ID() && h.terminals[deviceID] != nil && h.terminals[deviceID].id == rec.Conn
	if !rec.LastSeen.IsZero() {
		st.lastSeen = rec.LastSeen
	}
	if prev != st.status {
		h.pushStatusLocked(merchantID, protocol.TerminalStatusUpdate{
			Action: protocol.ActionTerminalStatusUpdate, TerminalID: deviceID, ConnectionID: rec.Conn,
			Status: rec.Status, PreviousStatus: prev, Timestamp: h.now(),
		})
	}
	h.checkLocalLocked(deviceID, st)
}

// broadcastStatusLocked tells the other nodes of a change of a device's
// record that this node made (st holds it).
func (h *Hub) broadcastStatusLocked(merchantID, deviceID string, st *terminalState, u protocol.TerminalStatusUpdate) {
	if h.node == nil || !st.mine {
		return
	}
	body, err := json.Marshal(u)
	if err != nil {
		return
	}
	h.node.Broadcast(nodes.Message{Type: msgStatus, Merchant: merchantID, Device: deviceID, Node: st.node,
		Epoch: st.epoch, At: st.graceUntil, Seen: st.lastSeen, Body: body})
}

// refreshDevice reads a device's record from Redis and takes it if newer:
// before an answer that depends on whether the device is online, when
// this node's copy says it is not (the broadcast that says it is may still
// be on its way).
func (h *Hub) refreshDevice(deviceID string) {
	t, ok := h.Directory().Terminal(deviceID)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, min(peerTimeout, h.opts.RequestTimeout))
	defer cancel()
	recs, err := h.node.Devices(ctx, []nodes.DeviceRef{{Merchant: t.MerchantID, Device: deviceID}})
	if err != nil || len(recs) != 1 {
		return
	}
	h.mu.Lock()
	h.applyRecordLocked(t.MerchantID, deviceID, recs[0])
	h.mu.Unlock()
}

// applyConn takes another node's connection coming or going: for ops, and
// to know which node holds each API key.
func (h *Hub) applyConn(m nodes.Message) {
	var info ConnInfo
	if json.Unmarshal(m.Body, &info) != nil {
		return
	}
	event := "connected"
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.Type == msgConnUp {
		h.remote[info.ConnectionID] = info
		if info.Kind == KindPOS {
			h.keyOwners[info.APIKeyID] = info.Node
		}
	} else {
		event = "disconnected"
		delete(h.remote, info.ConnectionID)
		if info.Kind == KindPOS && h.keyOwners[info.APIKeyID] == info.Node {
			delete(h.keyOwners, info.APIKeyID)
		}
	}
	u := ConnectionUpdate{Action: "connectionUpdate", Event: event, Connection: info}
	for _, o := range h.observers {
		o.Connection(info.MerchantID, u)
	}
}

// forgetNode drops what this node knew of a dead node's connections.
func (h *Hub) forgetNode(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for cid, info := range h.remote {
		if info.Node != id {
			continue
		}
		delete(h.remote, cid)
		u := ConnectionUpdate{Action: "connectionUpdate", Event: "disconnected", Connection: info}
		for _, o := range h.observers {
			o.Connection(info.MerchantID, u)
		}
	}
	for k, n := range h.keyOwners {
		if n == id {
			delete(h.keyOwners, k)
		}
	}
}

// nudgeRemote tells the node that holds an API key's connection that its
// outbox has news, or every node when no holder is known (a long poll may
// wait anywhere).
func (h *Hub) nudgeRemote(merchantID, apiKeyID string) {
	h.mu.Lock()
	owner := h.keyOwners[apiKeyID]
	h.mu.Unlock()
	if owner != "" && owner != h.node.ID() {
		h.node.Send(owner, nodes.Message{Type: msgNudge, Merchant: merchantID, Key: apiKeyID})
		return
	}
	h.node.Broadcast(nodes.Message{Type: msgWake, Merchant: merchantID, Key: apiKeyID})
}

// forwardNudge passes on a nudge that reached a node which does not hold
// the key (its holder moved): once, to the holder Redis names, or to
// everyone.
func (h *Hub) forwardNudge(m nodes.Message) {
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	holders, err := h.node.KeyHolders(ctx, []nodes.KeyRef{{Merchant: m.Merchant, Key: m.Key}})
	m.Hops++
	if err == nil && len(holders) == 1 && holders[0] != "" && holders[0] != h.node.ID() {
		h.node.Send(holders[0], m)
		return
	}
	m.Type = msgWake
	h.node.Broadcast(m)
}

// sendRemote sends commands for a device this node does not hold to the
// node that does. A device this node's copy does not see online is looked
// up in Redis first (off the caller's path): commands for a device that
// is online nowhere wait for its resume.
func (h *Hub) sendRemote(deviceID string, frames [][]byte) {
	m := nodes.Message{Type: msgCommands, Device: deviceID, Frames: make([]json.RawMessage, len(frames))}
	for i, f := range frames {
		m.Frames[i] = f
	}
	h.mu.Lock()
	st := h.status[deviceID]
	online := st != nil && st.status == protocol.TerminalOnline
	target := ""
	if online {
		target = st.node
	}
	h.mu.Unlock()
	if online && target != "" && target != h.node.ID() {
		h.node.Send(target, m)
		return
	}
	go h.forwardCommands(m)
}

// forwardCommands sends commands to the node Redis names as the device's
// holder, if that is another node and the device is online there.
func (h *Hub) forwardCommands(m nodes.Message) {
	h.refreshDevice(m.Device)
	h.mu.Lock()
	st := h.status[m.Device]
	target := ""
	if st != nil && st.status == protocol.TerminalOnline {
		target = st.node
	}
	h.mu.Unlock()
	if target != "" && target != h.node.ID() {
		m.Hops++
		h.node.Send(target, m)
	}
}

// applyCommands sends commands another node committed to the device's
// connection here, or passes them on once if the device is elsewhere now.
func (h *Hub) applyCommands(m nodes.Message) {
	h.mu.Lock()
	c := h.terminals[m.Device]
	h.mu.Unlock()
	if c == nil {
		if m.Hops == 0 {
			go h.forwardCommands(m)
		}
		return
	}
	frames := make([][]byte, len(m.Frames))
	for i, f := range m.Frames {
		frames[i] = f
	}
	h.sendFrames(c, frames)
}

// applyDisplace ends this node's connection of a key or device that a
// newer connection on another node took over. A displacement that comes
// before the connection is registered (its claim and registration are
// not one step) is kept, and carried out when it registers.
func (h *Hub) applyDisplace(m nodes.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.byID[m.Conn]
	if c == nil {
		h.keepEarlyLocked(m)
		return
	}
	h.displaceLocked(c, m.From, m.Allowed)
}

// displaceLocked ends c, which a newer connection of its key or device
// took over (on node by, "" when this node found out itself).
func (h *Hub) displaceLocked(c *conn, by string, allowed bool) {
	if c.kind == KindPOS {
		c.log.Info().Str("byNode", by).Bool("reconnectAllowed", allowed).Msg("displaced by a new connection with the same API key on another node")
		h.metrics.Displacements.WithLabelValues(string(KindPOS)).Inc()
		c.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonAPIKeyUsedElsewhere,
			Message: "Connection displaced by new connection with same API key", ReconnectAllowed: allowed})
		h.dropPOSLocked(c)
		return
	}
	c.log.Info().Str("byNode", by).Msg("displaced: the device's record names another connection")
	h.metrics.Displacements.WithLabelValues(string(KindTerminal)).Inc()
	c.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonDeviceElsewhere,
		Message: "Connection displaced by new connection of the same device", ReconnectAllowed: true})
	// No longer the device's: its end changes no record (the new holder's).
	if h.terminals[c.deviceID] == c {
		delete(h.terminals, c.deviceID)
	}
	delete(h.byID, c.id)
}

// earlyDisplace is a displacement of a connection not registered yet.
type earlyDisplace struct {
	by      string
	allowed bool
	at      time.Time
}

// maxEarly bounds the displacements kept for connections not registered
// yet; those older than a minute go first (their connection never came).
const maxEarly = 10000

func (h *Hub) keepEarlyLocked(m nodes.Message) {
	now := h.now()
	if len(h.early) >= maxEarly {
		for id, e := range h.early {
			if now.Sub(e.at) > time.Minute {
				delete(h.early, id)
			}
		}
		if len(h.early) >= maxEarly {
			return
		}
	}
	h.early[m.Conn] = earlyDisplace{by: m.From, allowed: m.Allowed, at: now}
}

// displacedEarlyLocked carries out a displacement of c that came before it
// registered, reporting whether there was one.
func (h *Hub) displacedEarlyLocked(c *conn) bool {
	e, ok := h.early[c.id]
	if !ok {
		return false
	}
	delete(h.early, c.id)
	h.displaceLocked(c, e.by, e.allowed)
	return true
}

// Resync makes good what the bus may have lost while its connection was
// down (nodes.Handler): every local POS connection reads its outbox, every
// long poll looks again, and every local terminal is sent the commands
// still open for it, from what is committed (a terminal takes a repeated
// command as the repeat it is, as after a reconnect).
func (h *Hub) Resync() {
	h.mu.Lock()
	var pos, terms []*conn
	for _, c := range h.pos {
		pos = append(pos, c)
	}
	for _, c := range h.terminals {
		terms = append(terms, c)
	}
	for k := range h.waiters {
		h.wakeLocked(k)
	}
	h.mu.Unlock()
	for _, c := range pos {
		h.nudgeLocal(c.merchantID, c.keyID)
	}
	go func() {
		h.reloadRecords()
		h.reloadRemote()
		if h.opts.Engine == nil {
			return
		}
		for _, c := range terms {
			unlock := h.lockDevice(c.deviceID)
			h.mu.Lock()
			still := h.terminals[c.deviceID] == c
			h.mu.Unlock()
			if still {
				c.wmu.Lock()
				c.resuming = true
				c.wmu.Unlock()
				if !h.resume(c) {
					c.wmu.Lock()
					c.resuming, c.sentLive = false, nil
					c.wmu.Unlock()
				}
			}
			unlock()
		}
	}()
}

// reloadRemote reads again the connections of every other live node, for
// ops and to know which node holds each API key.
func (h *Hub) reloadRemote() {
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	remote := map[string]ConnInfo{}
	for id := range h.node.LiveIDs() {
		if id == h.node.ID() {
			continue
		}
		conns, err := h.node.Conns(ctx, id)
		if err != nil {
			return
		}
		for _, raw := range conns {
			var info ConnInfo
			if json.Unmarshal([]byte(raw), &info) == nil {
				remote[info.ConnectionID] = info
			}
		}
	}
	h.mu.Lock()
	h.remote = remote
	h.mu.Unlock()
	// Which node holds each key comes from the keys' records, not from the
	// connections (a node that crashed and is not yet found dead still has
	// its own listed).
	if err := h.loadKeyOwners(ctx); err != nil {
		h.log.Debug().Err(err).Msg("could not read the API keys' holders")
	}
}

// Republish writes this node's connections again for the others to read
// (nodes.Handler): a batch that held some of those writes was lost.
func (h *Hub) Republish() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.byID {
		if body, err := json.Marshal(h.connInfo(c)); err == nil {
			h.node.AddConn(c.id, body)
		}
	}
}

// Counts are this node's live connections (nodes.Handler).
func (h *Hub) Counts() nodes.Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	return nodes.Counts{POS: len(h.pos), Terminal: len(h.terminals)}
}

// DeclaredDead lets every connection of this node go (nodes.Handler): the
// others took it for dead and released them, so the records are no longer
// its own. The clients reconnect, here or elsewhere, and claim afresh.
func (h *Hub) DeclaredDead() {
	h.mu.Lock()
	conns := make([]*conn, 0, len(h.byID))
	for _, c := range h.byID {
		conns = append(conns, c)
	}
	for _, st := range h.status {
		h.stopGraceLocked(st)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.disconnect(&protocol.Disconnect{Code: protocol.CloseShutdown, Reason: protocol.ReasonShutdown,
			Message: "This node lost contact with the hub; reconnect", ReconnectAllowed: true})
	}
}
