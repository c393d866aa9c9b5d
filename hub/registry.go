package hub

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// flapWindow and flapLimit implement the fighting-keys rule (docs/protocol.md#connections):
// from the flapLimit-th displacement of one key within flapWindow on, the
// displaced client is told not to reconnect.
const (
	flapWindow = 60 * time.Second
	flapLimit  = 3
)

// KeyConflict records an API key whose connections keep displacing each
// other (a copied key), for ops.
type KeyConflict struct {
	APIKeyID      string    `json:"apiKeyId"`
	MerchantID    string    `json:"merchantId"`
	Displacements int       `json:"displacements"` // within the last 60 s when last seen
	LastAt        time.Time `json:"lastAt"`
}

// terminalState is the live status of one registered device.
type terminalState struct {
	status   string
	connID   string
	lastSeen time.Time
	// graceUntil is when a reconnecting terminal goes offline.
	graceUntil time.Time
	grace      clock.Timer
	graceSeq   uint64 // identifies the running grace timer; a stale firing is ignored
	conns      uint64 // connections of the device registered so far
	// node and epoch are the shared record's (peers.go): the node holding
	// the device and the record's epoch, newer news only replacing older.
	node  string
	epoch int64
	// mine: the state held is this node's own write of the record (its
	// epoch came back from this node's script), so it may tell the other
	// nodes; a copy of another node's news, or a change made here while
	// Redis did not answer, is not broadcast.
	mine bool
}

func (h *Hub) stateLocked(deviceID string) *terminalState {
	st := h.status[deviceID]
	if st == nil {
		st = &terminalState{status: protocol.TerminalOffline}
		h.status[deviceID] = st
	}
	return st
}

// registerPOS makes c the connection of its API key, displacing the older
// one, and queues the greeting before any broadcast can reach c. flaps are
// the key's displacements as counted across nodes (claimKey), or -1 to
// count here.
func (h *Hub) registerPOS(c *conn, flaps int) {
	cur := h.currentTxns(c.merchantID)
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.pos[c.keyID]; old != nil {
		allowed := h.allowedLocked(c.keyID, c.merchantID, flaps)
		old.log.Info().Str("by", c.id).Bool("reconnectAllowed", allowed).Msg("displaced by a new connection with the same API key")
		h.metrics.Displacements.WithLabelValues(string(KindPOS)).Inc()
		old.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonAPIKeyUsedElsewhere,
			Message: "Connection displaced by new connection with same API key", ReconnectAllowed: allowed})
		h.dropPOSLocked(old)
	}
	c.dlv.reading = true // live messages wait until the replay has run
	h.pos[c.keyID] = c
	defer h.displacedEarlyLocked(c)
	if h.posByMerch[c.merchantID] == nil {
		h.posByMerch[c.merchantID] = map[*conn]struct{}{}
	}
	h.posByMerch[c.merchantID][c] = struct{}{}
	h.byID[c.id] = c
	c.sendJSON(protocol.POSConnected{
		Action: protocol.ActionConnected, ConnectionID: c.id, MerchantID: c.merchantID, APIKeyID: c.keyID,
		ServerTime: h.now(), Terminals: h.terminalInfosLocked(c.merchantID, cur),
	})
	h.publishConnLocked(c, "connected")
	c.log.Info().Msg("POS connected")
	h.kickIfDrainingLocked(c)
}

// kickIfDrainingLocked tells a connection that registered after Drain took
// its snapshot to go too.
func (h *Hub) kickIfDrainingLocked(c *conn) {
	if h.draining.Load() {
		c.disconnect(&protocol.Disconnect{Code: protocol.CloseShutdown, Reason: protocol.ReasonShutdown,
			Message: "Server is shutting down; reconnect", ReconnectAllowed: true})
	}
}

// unregisterPOS forgets c, but only if it is still the registered
// connection of its key: a displaced connection's cleanup must not remove
// its successor.
func (h *Hub) unregisterPOS(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pos[c.keyID] == c {
		h.dropPOSLocked(c)
	}
	h.releaseKey(c)
	h.publishConnLocked(c, "disconnected")
}

func (h *Hub) dropPOSLocked(c *conn) {
	if h.pos[c.keyID] == c {
		delete(h.pos, c.keyID)
	}
	delete(h.posByMerch[c.merchantID], c)
	if len(h.posByMerch[c.merchantID]) == 0 {
		delete(h.posByMerch, c.merchantID)
	}
	if h.byID[c.id] == c {
		delete(h.byID, c.id)
	}
}

// allowedLocked reports whether a displaced client of keyID may
// reconnect: from flaps, the displacements counted across nodes, or
// counting this one here when flaps is -1.
func (h *Hub) allowedLocked(keyID, merchantID string, flaps int) bool {
	if flaps < 0 {
		return h.recordDisplacementLocked(keyID, merchantID)
	}
	if flaps < flapLimit {
		return true
	}
	h.conflictLocked(keyID, merchantID, flaps)
	return false
}

// conflictLocked records that keyID's connections keep displacing each
// other, and tells the other nodes.
func (h *Hub) conflictLocked(keyID, merchantID string, n int) {
	now := h.now()
	h.metrics.KeyConflicts.Inc()
	k := &KeyConflict{APIKeyID: keyID, MerchantID: merchantID, Displacements: n, LastAt: now}
	h.conflicts[keyID] = k
	h.log.Warn().Str("apiKeyId", keyID).Str("merchantId", merchantID).Int("displacements", n).
		Msg("API key connections keep displacing each other: the displaced client is told not to reconnect")
	if h.node != nil {
		if body, err := json.Marshal(k); err == nil {
			h.node.Broadcast(nodes.Message{Type: msgConflict, Merchant: merchantID, Key: keyID, Body: body})
		}
	}
}

// recordDisplacementLocked counts a displacement of keyID and reports
// whether the displaced client may reconnect.
func (h *Hub) recordDisplacementLocked(keyID, merchantID string) bool {
	now := h.now()
	recent := h.flaps[keyID][:0]
	for _, t := range h.flaps[keyID] {
		if now.Sub(t) < flapWindow {
			recent = append(recent, t)
		}
	}
	recent = append(recent, now)
	h.flaps[keyID] = recent
	if len(recent) < flapLimit {
		return true
	}
	h.conflictLocked(keyID, merchantID, len(recent))
	return false
}

// registerTerminal makes c the connection of its device, displacing an
// older one (a half-open connection after a network change), marks the
// terminal online and tells the merchant's POS and ops. epoch is the
// shared record's after claimDevice made c its holder (0: alone, or not
// claimed yet).
func (h *Hub) registerTerminal(c *conn, epoch int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.terminals[c.deviceID]; old != nil {
		old.log.Info().Str("by", c.id).Msg("displaced by a new connection of the same device")
		h.metrics.Displacements.WithLabelValues(string(KindTerminal)).Inc()
		old.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonDeviceElsewhere,
			Message: "Connection displaced by new connection of the same device", ReconnectAllowed: true})
		if h.byID[old.id] == old {
			delete(h.byID, old.id)
		}
	}
	h.terminals[c.deviceID] = c
	h.byID[c.id] = c
	c.sendJSON(protocol.TerminalConnected{
		Action: protocol.ActionConnected, ConnectionID: c.id, DeviceID: c.deviceID,
		ServerTime: h.now(), HeartbeatInterval: int((h.opts.HeartbeatInterval + time.Second - 1) / time.Second),
	})
	st := h.stateLocked(c.deviceID)
	if h.node != nil && epoch != 0 && epoch < st.epoch {
		// Another connection took the device over after this one's claim:
		// this one is displaced (the record, and the status, are not its).
		h.displaceLocked(c, "", true)
		return
	}
	if h.displacedEarlyLocked(c) {
		return
	}
	prev := st.status
	st.status, st.connID, st.graceUntil = protocol.TerminalOnline, c.id, time.Time{}
	st.mine = false
	if epoch != 0 && epoch >= st.epoch {
		st.node, st.epoch, st.mine = h.NodeID(), epoch, true
	}
	st.conns++
	h.stopGraceLocked(st)
	h.publishStatusLocked(c.merchantID, c.deviceID, st, prev)
	h.publishConnLocked(c, "connected")
	c.log.Info().Str("previousStatus", prev).Msg("terminal connected")
	h.kickIfDrainingLocked(c)
}

// unregisterTerminal handles the end of c. If c is still the device's
// connection the terminal becomes "reconnecting" and its grace timer starts.
// It reports whether c was the registered connection.
func (h *Hub) unregisterTerminal(c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byID[c.id] == c {
		delete(h.byID, c.id)
	}
	h.publishConnLocked(c, "disconnected")
	if h.terminals[c.deviceID] != c {
		return false
	}
	delete(h.terminals, c.deviceID)
	st := h.stateLocked(c.deviceID)
	prev := st.status
	st.status, st.lastSeen = protocol.TerminalReconnecting, c.lastSeenAt()
	st.mine = false // with several nodes, told once the record says so (dropShared)
	st.graceUntil = h.now().Add(h.opts.GracePeriod)
	h.armGraceLocked(c.merchantID, c.deviceID, st)
	h.publishStatusLocked(c.merchantID, c.deviceID, st, prev)
	c.log.Info().Dur("grace", h.opts.GracePeriod).Msg("terminal dropped: reconnecting")
	return true
}

// armGraceLocked (re)starts the timer that ends st's grace period at
// st.graceUntil, stopping any earlier one. With several nodes every node
// that learns of the grace period arms one (the claim in Redis lets one
// act): a node that took the record from Redis or from the bus has no
// other reason to look at it again until its next heartbeat's sweep.
func (h *Hub) armGraceLocked(merchantID, deviceID string, st *terminalState) {
	h.stopGraceLocked(st)
	if st.status != protocol.TerminalReconnecting || st.graceUntil.IsZero() {
		return
	}
	seq, connID := st.graceSeq, st.connID
	d := st.graceUntil.Sub(h.now())
	if d <= 0 {
		// Already due (a record learnt late): end it now, whatever the
		// clock (a fake one fires a past timer only when next moved).
		go h.graceExpired(merchantID, deviceID, connID, seq)
		return
	}
	st.grace = h.clock.AfterFunc(d, func() { h.graceExpired(merchantID, deviceID, connID, seq) })
}

func (h *Hub) stopGraceLocked(st *terminalState) {
	if st.grace != nil {
		st.grace.Stop()
		st.grace = nil
	}
	st.graceSeq++
}

// graceExpired turns a terminal that did not come back in time offline
// (with several nodes, if no other node did: expireShared).
func (h *Hub) graceExpired(merchantID, deviceID, connID string, seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.status[deviceID]
	if st == nil || st.graceSeq != seq || st.status != protocol.TerminalReconnecting {
		return
	}
	if h.node != nil {
		st.grace = nil
		go h.expireShared(merchantID, deviceID)
		return
	}
	st.grace = nil
	st.status, st.graceUntil = protocol.TerminalOffline, time.Time{}
	h.publishStatusLocked(merchantID, deviceID, st, protocol.TerminalReconnecting)
	h.log.Info().Str("deviceId", deviceID).Msg("grace period expired: terminal offline")
}

// publishStatusLocked pushes a terminalStatusUpdate of st, which was prev,
// to every POS connection of the merchant (never another merchant's) and
// to the ops observers, here and on every other node.
func (h *Hub) publishStatusLocked(merchantID, deviceID string, st *terminalState, prev string) {
	u := protocol.TerminalStatusUpdate{
		Action: protocol.ActionTerminalStatusUpdate, TerminalID: deviceID, ConnectionID: st.connID,
		Status: st.status, PreviousStatus: prev, Timestamp: h.now(),
	}
	h.pushStatusLocked(merchantID, u)
	h.broadcastStatusLocked(merchantID, deviceID, st, u)
	for _, f := range h.statusHooks {
		f(merchantID, u)
	}
}

// pushStatusLocked pushes u to this node's POS connections of the
// merchant and to its ops observers.
func (h *Hub) pushStatusLocked(merchantID string, u protocol.TerminalStatusUpdate) {
	frame, err := json.Marshal(u)
	if err != nil {
		return
	}
	for pc := range h.posByMerch[merchantID] {
		pc.enqueue(frame)
	}
	for _, o := range h.observers {
		o.TerminalStatus(merchantID, u)
	}
}

// ConnectionUpdate tells ops that a POS or terminal connection came or went.
type ConnectionUpdate struct {
	Action     string   `json:"action"` // "connectionUpdate"
	Event      string   `json:"event"`  // "connected" or "disconnected"
	Connection ConnInfo `json:"connection"`
}

func (h *Hub) publishConnLocked(c *conn, event string) {
	u := ConnectionUpdate{Action: "connectionUpdate", Event: event, Connection: h.connInfo(c)}
	for _, o := range h.observers {
		o.Connection(c.merchantID, u)
	}
	if h.node == nil {
		return
	}
	body, err := json.Marshal(u.Connection)
	if err != nil {
		return
	}
	typ := msgConnUp
	if event == "connected" {
		h.node.AddConn(c.id, body)
	} else {
		typ = msgConnDown
		h.node.RemoveConn(c.id)
	}
	h.node.Broadcast(nodes.Message{Type: typ, Merchant: c.merchantID, Conn: c.id, Node: h.node.ID(), Body: body})
}

// connInfo describes c for ops.
func (h *Hub) connInfo(c *conn) ConnInfo {
	return ConnInfo{ConnectionID: c.id, Kind: c.kind, MerchantID: c.merchantID, APIKeyID: c.keyID,
		DeviceID: c.deviceID, ConnectedAt: c.connected, LastSeen: c.lastSeenAt(), Node: h.NodeID()}
}

// Observer is told of every terminal status change and every connection
// that comes or goes, each with the merchant it belongs to (the ops feed).
// Its methods are called with the hub lock held and must not block.
type Observer interface {
	TerminalStatus(merchantID string, u protocol.TerminalStatusUpdate)
	Connection(merchantID string, u ConnectionUpdate)
}

// Observe registers o.
func (h *Hub) Observe(o Observer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observers = append(h.observers, o)
}

// OnStatusChange registers f to hear of every terminal status change on
// the node that makes it: unlike an Observer's TerminalStatus, which every
// node's feeds get, f hears each change once across the nodes, so that
// what it records is not written once per node. It is called with the hub
// lock held and must not block.
func (h *Hub) OnStatusChange(f func(merchantID string, u protocol.TerminalStatusUpdate)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.statusHooks = append(h.statusHooks, f)
}

// connsOf is how many connections of the device have registered so far.
func (h *Hub) connsOf(deviceID string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.status[deviceID]; st != nil {
		return st.conns
	}
	return 0
}

// Resumed reports whether the device's live connection has been resumed:
// its transactions told it is back and its open commands queued (false
// while that waits for Redis, and for a device that is not connected).
func (h *Hub) Resumed(deviceID string) bool {
	h.mu.Lock()
	c := h.terminals[deviceID]
	h.mu.Unlock()
	if c == nil {
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return !c.resuming
}

// graceUntilOf is when a reconnecting device's grace period ends.
func (h *Hub) graceUntilOf(deviceID string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.status[deviceID]; st != nil {
		return st.graceUntil
	}
	return time.Time{}
}

// refreshLocalLocked forgets this node's copy of c's device's record after
// c's end found the record someone else's, so that the record is read
// again (this node had marked the device reconnecting for c).
func (h *Hub) refreshLocalLocked(c *conn) {
	st := h.stateLocked(c.deviceID)
	h.stopGraceLocked(st)
	st.epoch = 0
	go h.refreshDevice(c.deviceID)
}

// TerminalStatus returns a device's status: online, reconnecting or offline.
func (h *Hub) TerminalStatus(deviceID string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.status[deviceID]; st != nil {
		return st.status
	}
	return protocol.TerminalOffline
}

// ResolveTerminal maps a POS's terminalId to a device id (docs/protocol.md#connections): first
// as a registered device id of the merchant, then as the connection id of
// one of the merchant's live terminals (legacy). Another merchant's terminal
// is not found.
func (h *Hub) ResolveTerminal(merchantID, terminalID string) (string, bool) {
	if t, ok := h.Directory().Terminal(terminalID); ok {
		return terminalID, t.MerchantID == merchantID
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.byID[terminalID]; c != nil && c.kind == KindTerminal && c.merchantID == merchantID {
		return c.deviceID, true
	}
	return "", false
}

// terminalInfosLocked lists a merchant's terminals in configuration order.
// cur maps device ids to their current transaction.
func (h *Hub) terminalInfosLocked(merchantID string, cur map[string]string) []protocol.TerminalInfo {
	entries := h.Directory().Terminals(merchantID)
	out := make([]protocol.TerminalInfo, 0, len(entries))
	for _, t := range entries {
		info := h.terminalInfoLocked(merchantID, t.DeviceID, t.Label)
		info.CurrentTransactionID = cur[t.DeviceID]
		out = append(out, info)
	}
	return out
}

// currentLookup bounds the read of current transactions for a greeting or
// a terminal list: they answer from memory when Redis does not answer at
// once (docs/ops.md#when-redis-stalls-restarts-or-fails-over).
const currentLookup = time.Second

// currentTxns reads which transaction occupies each of a merchant's
// terminals (outside h.mu: it asks Redis), or, when Redis does not answer
// within currentLookup, what this hub last committed.
func (h *Hub) currentTxns(merchantID string) map[string]string {
	if h.opts.Engine == nil {
		return nil
	}
	entries := h.Directory().Terminals(merchantID)
	devices := make([]string, len(entries))
	for i, t := range entries {
		devices[i] = t.DeviceID
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, min(currentLookup, h.opts.RequestTimeout))
	defer cancel()
	cur, err := h.opts.Engine.Current(ctx, merchantID, devices)
	if err != nil {
		h.log.Debug().Err(err).Msg("current transactions from memory: Redis did not answer")
		return h.opts.Engine.CurrentKnown(merchantID, devices)
	}
	return cur
}

func (h *Hub) terminalInfoLocked(merchantID, deviceID, label string) protocol.TerminalInfo {
	info := protocol.TerminalInfo{TerminalID: deviceID, MerchantID: merchantID, Label: label, Status: protocol.TerminalOffline}
	if st := h.status[deviceID]; st != nil {
		info.Status = st.status
		if st.status != protocol.TerminalOffline {
			info.ConnectionID = st.connID
		}
		if !st.lastSeen.IsZero() {
			t := st.lastSeen
			info.LastHeartbeat = &t
		}
	}
	if c := h.terminals[deviceID]; c != nil {
		t := c.lastSeenAt()
		info.LastHeartbeat = &t
	}
	return info
}

// Terminals lists a merchant's terminals with their live status.
func (h *Hub) Terminals(merchantID string) []protocol.TerminalInfo {
	cur := h.currentTxns(merchantID)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.terminalInfosLocked(merchantID, cur)
}

// AllTerminals lists every merchant's terminals, by merchant then file order.
func (h *Hub) AllTerminals() []protocol.TerminalInfo {
	ids := h.Directory().MerchantIDs()
	sort.Strings(ids)
	curs := make([]map[string]string, len(ids))
	for i, m := range ids {
		curs[i] = h.currentTxns(m)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []protocol.TerminalInfo
	for i, m := range ids {
		out = append(out, h.terminalInfosLocked(m, curs[i])...)
	}
	return out
}

// MarkReconnecting puts a terminal that is not connected into
// "reconnecting" with a fresh grace period. A restarted hub does this for
// every device that had work in flight, so that the device gets its grace
// period from the restart on.
func (h *Hub) MarkReconnecting(merchantID, deviceID string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateLocked(deviceID)
	if st.status == protocol.TerminalOnline {
		return time.Time{}
	}
	prev := st.status
	st.status, st.graceUntil = protocol.TerminalReconnecting, h.now().Add(h.opts.GracePeriod)
	h.armGraceLocked(merchantID, deviceID, st)
	h.publishStatusLocked(merchantID, deviceID, st, prev)
	return st.graceUntil
}
