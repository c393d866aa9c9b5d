package hub

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// The shared records' side of connections coming and going (peers.go).

// claimKey makes c its API key's holder across nodes and displaces the
// holder on another node. It returns the key's displacements counted
// across nodes, or -1 to count here (alone, or Redis did not answer: the
// connection is served all the same). replacedSession: an HTTP event
// session of the key was ended for c.
func (h *Hub) claimKey(c *conn, replacedSession bool) int {
	if h.node == nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
	defer cancel()
	node, old, flaps, err := h.node.ClaimKey(ctx, c.merchantID, c.keyID, c.id, h.now(), flapWindow, replacedSession)
	if err != nil {
		c.log.Warn().Err(err).Msg("could not record the API key's connection in Redis; a connection on another node is not displaced")
		return -1
	}
	h.displaceKeyElsewhere(c.merchantID, c.keyID, node, old, flaps)
	return flaps
}

// displaceKeyElsewhere tells node to end its connection old of the API key
// that a claim took over (nothing when the key was not held, or held here),
// and records a conflict when the key's displacements say it is fighting.
func (h *Hub) displaceKeyElsewhere(merchantID, apiKey, node, old string, flaps int) {
	if old == "" || node == "" || node == h.node.ID() {
		return
	}
	allowed := flaps < flapLimit
	if !allowed {
		h.mu.Lock()
		h.conflictLocked(apiKey, merchantID, flaps)
		h.mu.Unlock()
	}
	h.node.Send(node, nodes.Message{Type: msgDisplace, Merchant: merchantID, Key: apiKey, Conn: old, Allowed: allowed})
}

// releaseKey forgets c as its API key's holder, if it still is.
func (h *Hub) releaseKey(c *conn) {
	if h.node != nil {
		h.node.ReleaseKey(c.merchantID, c.keyID, h.node.ID(), c.id)
	}
}

// claimDevice makes c its device's holder across nodes, displacing the
// holder on another node, before the terminal is told it is connected: a
// terminal greeted by any node is online for payments through every node.
// It reports false when Redis did not answer (the terminal is served all
// the same, and the claim tried again with its resume).
func (h *Hub) claimDevice(c *conn) bool {
	if h.node == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
	defer cancel()
	old, epoch, err := h.node.DeviceUp(ctx, c.merchantID, c.deviceID, c.id, h.now())
	if err != nil {
		c.log.Warn().Err(err).Msg("could not record the terminal's connection in Redis yet")
		return false
	}
	c.epoch = epoch
	if old.Status == protocol.TerminalOnline && old.Node != "" && old.Node != h.node.ID() && old.Conn != "" {
		h.node.Send(old.Node, nodes.Message{Type: msgDisplace, Merchant: c.merchantID, Device: c.deviceID, Conn: old.Conn})
	}
	return true
}

// settleClaim records c as its device's holder after a claim that had
// failed, and tells everyone (registerTerminal did so here only).
func (h *Hub) settleClaim(c *conn) bool {
	if c.epoch != 0 || h.node == nil {
		return true
	}
	if !h.claimDevice(c) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateLocked(c.deviceID)
	if h.terminals[c.deviceID] == c && c.epoch >= st.epoch {
		st.node, st.epoch, st.mine = h.node.ID(), c.epoch, true
		h.publishStatusLocked(c.merchantID, c.deviceID, st, st.status)
	}
	return true
}

// dropShared handles the end of c, its device's connection here, on the
// shared record: it starts the grace period if c still held the device
// (true), or finds that a newer connection or this node's release as dead
// came first (false: nothing to do, the record is someone else's). An
// error is Redis not answering.
func (h *Hub) dropShared(c *conn, until time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	epoch, err := h.node.DeviceDown(ctx, c.merchantID, c.deviceID, c.id, until, c.lastSeenAt())
	if err != nil {
		return false, err
	}
	if epoch == 0 {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateLocked(c.deviceID)
	if epoch > st.epoch {
		st.node, st.epoch, st.mine = h.node.ID(), epoch, true
		h.broadcastStatusLocked(c.merchantID, c.deviceID, st, protocol.TerminalStatusUpdate{
			Action: protocol.ActionTerminalStatusUpdate, TerminalID: c.deviceID, ConnectionID: c.id,
			Status: st.status, PreviousStatus: protocol.TerminalOnline, Timestamp: h.now(),
		})
		// A grace period that ended while this drop was on its way to
		// Redis had nothing to claim there (its timer's expireShared came
		// first) and no timer left: end it now that Redis holds it,
		// rather than at the next heartbeat's sweep.
		if st.status == protocol.TerminalReconnecting && st.grace == nil && !st.graceUntil.After(h.now()) {
			go h.expireShared(c.merchantID, c.deviceID)
		}
	}
	return true, nil
}

// expireShared turns a device whose grace period is due offline, if no
// other node did (the grace set's member is claimed once).
func (h *Hub) expireShared(merchantID, deviceID string) {
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	epoch, err := h.node.ExpireGrace(ctx, merchantID, deviceID, h.now())
	if err != nil {
		h.log.Warn().Err(err).Str("deviceId", deviceID).Msg("could not end the grace period in Redis; the next sweep tries again")
		return
	}
	if epoch == 0 {
		// Another node claimed it, or the device came back: take the
		// record as it is now rather than wait for that node's broadcast.
		h.refreshDevice(deviceID)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateLocked(deviceID)
	if epoch <= st.epoch {
		return
	}
	prev := st.status
	h.stopGraceLocked(st)
	st.status, st.graceUntil, st.epoch, st.mine = protocol.TerminalOffline, time.Time{}, epoch, true
	h.publishStatusLocked(merchantID, deviceID, st, prev)
	h.log.Info().Str("deviceId", deviceID).Msg("grace period expired: terminal offline")
}

// Tick runs the sweeps every node runs at its heartbeat (nodes.Handler):
// grace periods that fell due, whoever started them (a node that died
// cannot end its own).
func (h *Hub) Tick() {
	h.mu.Lock()
	tickers := h.tickers
	h.mu.Unlock()
	for _, f := range tickers {
		f()
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	due, err := h.node.DueGraces(ctx, h.Directory().MerchantIDs(), h.now())
	cancel()
	if err == nil {
		for m, devices := range due {
			for _, d := range devices {
				h.expireShared(m, d)
			}
		}
	}
	// The reload makes good what the bus lost of other nodes' changes. A
	// node that was alone at this heartbeat and the one before has no
	// other writer to hear from (a node that died is released by this
	// one, a draining one broadcasts its releases), so it reloads only
	// every soloReloadEvery heartbeats, as a safety net: reading every
	// device's record is most of what an idle node asks of Redis.
	alone := int64(0)
	if len(h.node.LiveIDs()) > 1 {
		h.aloneTicks.Store(0)
	} else {
		alone = h.aloneTicks.Add(1)
	}
	if alone < 2 || alone%soloReloadEvery == 0 {
		h.reloadRecords()
	}
	h.takeOrphans()
}

// soloReloadEvery is how often, in heartbeats, a node alone in the
// registry still reloads every device's record (Tick).
const soloReloadEvery = 10

// reloadRecords reads every device's record and takes those newer than
// this node's copy: the bus only makes news arrive sooner, and what it
// lost (a publish Redis refused, a subscription that was down) is made
// good here, at every heartbeat.
func (h *Hub) reloadRecords() {
	refs := h.allDevices()
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	recs, err := h.node.Devices(ctx, refs)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, rec := range recs {
		h.applyRecordLocked(refs[i].Merchant, refs[i].Device, rec)
	}
}

// takeOrphans takes devices online on a node that is not alive and was
// never released (it left the registry with records still naming it: a
// drain cut short, say). This node's copy of the records names the
// suspects at no cost; each is read again before it is taken.
func (h *Hub) takeOrphans() {
	live := h.node.LiveIDs()
	var suspects []nodes.DeviceRef
	h.mu.Lock()
	for d, st := range h.status {
		if st.status == protocol.TerminalOnline && st.node != "" && !live[st.node] {
			if t, ok := h.Directory().Terminal(d); ok {
				suspects = append(suspects, nodes.DeviceRef{Merchant: t.MerchantID, Device: d})
			}
		}
	}
	h.mu.Unlock()
	if len(suspects) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	recs, err := h.node.Devices(ctx, suspects)
	if err != nil {
		return
	}
	until := h.now().Add(h.opts.GracePeriod)
	for i, rec := range recs {
		if rec.Status != protocol.TerminalOnline || rec.Node == "" || h.holderAlive(ctx, rec.Node) {
			continue
		}
		h.log.Warn().Str("deviceId", suspects[i].Device).Str("holder", rec.Node).Msg("terminal held by a node that is gone: releasing it")
		h.takeDevice(ctx, suspects[i], rec, until, true)
	}
}

// holderAlive reads the registry for whether a record's holder is alive,
// taking it for alive when the registry cannot be read: taking a device
// from a live node would leave it offline while it is connected.
func (h *Hub) holderAlive(ctx context.Context, node string) bool {
	alive, err := h.node.Alive(ctx, node)
	return alive || err != nil
}

// ReleaseOwn lets go of every device and API key this node's records
// still hold, as the others would if it died: a node leaving the registry
// (the end of a drain) must not leave records naming it behind. Devices it
// holds online go reconnecting with a grace period from now.
func (h *Hub) ReleaseOwn(ctx context.Context) error {
	if h.node == nil {
		return nil
	}
	return h.releaseHeldBy(ctx, h.node.ID())
}

// releaseHeldBy takes every device that node holds online (reconnecting,
// with a grace period from now, their transactions' grace started) and
// frees every API key it holds: what the others do for a dead node, and a
// draining node for itself.
func (h *Hub) releaseHeldBy(ctx context.Context, node string) error {
	refs := h.allDevices()
	recs, derr := h.node.Devices(ctx, refs) // on error, the keys are released all the same
	until := h.now().Add(h.opts.GracePeriod)
	for i, rec := range recs {
		if rec.Node == node && rec.Status == protocol.TerminalOnline {
			h.takeDevice(ctx, refs[i], rec, until, true)
		}
	}
	keys := h.allKeys()
	holders, err := h.node.KeyHolders(ctx, keys)
	if err != nil {
		return errors.Join(derr, err)
	}
	for i, n := range holders {
		if n == node {
			h.node.ReleaseKey(keys[i].Merchant, keys[i].Key, node, "")
		}
	}
	return derr
}

// allKeys lists every configured API key.
func (h *Hub) allKeys() []nodes.KeyRef {
	dir := h.Directory()
	var refs []nodes.KeyRef
	for _, m := range dir.MerchantIDs() {
		for _, k := range dir.KeyIDs(m) {
			refs = append(refs, nodes.KeyRef{Merchant: m, Key: k})
		}
	}
	return refs
}

// allDevices lists every configured device.
func (h *Hub) allDevices() []nodes.DeviceRef {
	dir := h.Directory()
	var refs []nodes.DeviceRef
	for _, m := range dir.MerchantIDs() {
		for _, t := range dir.Terminals(m) {
			refs = append(refs, nodes.DeviceRef{Merchant: m, Device: t.DeviceID})
		}
	}
	return refs
}

// NodeDead releases what a dead node held (nodes.Handler; on the one node
// that claimed it): its devices that were online go reconnecting with a
// grace period from now, their transactions' grace starts (docs/protocol.md#auto-void-reason-codes),
// and its API keys are free.
func (h *Hub) NodeDead(id string) {
	ctx, cancel := context.WithTimeout(h.baseCtx, 4*h.opts.RequestTimeout)
	defer cancel()
	if err := h.releaseHeldBy(ctx, id); err != nil {
		h.log.Error().Err(err).Str("deadNode", id).Msg("could not release all the dead node held; the others' sweeps take what is left")
	}
	h.forgetNode(id)
	h.node.Broadcast(nodes.Message{Type: msgDead, Node: id})
}

// takeDevice takes a device that rec says a node holds which no longer
// does: reconnecting until until (its transactions' grace started) or,
// with until zero, offline. It reports the grace deadline it set (zero
// when the record had changed meanwhile); tell: it starts the grace of
// the device's transactions too.
func (h *Hub) takeDevice(ctx context.Context, ref nodes.DeviceRef, rec nodes.Device, until time.Time, tell bool) time.Time {
	epoch, err := h.node.Demote(ctx, ref.Merchant, ref.Device, rec.Node, rec.Epoch, until)
	if err != nil || epoch == 0 {
		return time.Time{}
	}
	h.mu.Lock()
	st := h.stateLocked(ref.Device)
	if epoch > st.epoch {
		prev := st.status
		st.node, st.epoch, st.graceUntil, st.mine = "", epoch, until, true
		st.status = protocol.TerminalOffline
		if !until.IsZero() {
			st.status = protocol.TerminalReconnecting
		}
		h.armGraceLocked(ref.Merchant, ref.Device, st)
		h.publishStatusLocked(ref.Merchant, ref.Device, st, prev)
	}
	h.mu.Unlock()
	if until.IsZero() || h.opts.Engine == nil || !tell {
		return until
	}
	if err := h.opts.Engine.TerminalDropped(ctx, ref.Merchant, ref.Device, until); err != nil {
		h.log.Error().Err(err).Str("deviceId", ref.Device).Msg("could not start the grace period of the released terminal's transactions")
	}
	return until
}

// LoadShared reads what the other nodes hold before this one serves:
// every device's record and the connections of every live node.
func (h *Hub) LoadShared(ctx context.Context) error {
	if h.node == nil {
		return nil
	}
	refs := h.allDevices()
	recs, err := h.node.Devices(ctx, refs)
	if err != nil {
		return err
	}
	h.mu.Lock()
	for i, rec := range recs {
		st := h.stateLocked(refs[i].Device)
		st.status, st.connID, st.node, st.epoch, st.graceUntil, st.lastSeen = rec.Status, rec.Conn, rec.Node, rec.Epoch, rec.GraceUntil, rec.LastSeen
		if st.status == "" {
			st.status = protocol.TerminalOffline
		}
	}
	h.mu.Unlock()
	live := h.node.LiveIDs()
	ids := make([]string, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if id == h.node.ID() {
			continue
		}
		conns, err := h.node.Conns(ctx, id)
		if err != nil {
			return err
		}
		for _, raw := range conns {
			h.applyConn(nodes.Message{Type: msgConnUp, Body: []byte(raw)})
		}
	}
	return h.loadKeyOwners(ctx)
}

// loadKeyOwners sets which node holds each API key's connection from the
// keys' owner records. The connections the nodes recorded are not enough:
// those of a node that crashed and is not yet found dead are still there,
// and applied in node order they could name it over the live holder, so
// that nudges would go to a dead node while the POS waits on a live one.
func (h *Hub) loadKeyOwners(ctx context.Context) error {
	refs := h.allKeys()
	holders, err := h.node.KeyHolders(ctx, refs)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, n := range holders {
		if n != "" && n != h.node.ID() {
			h.keyOwners[refs[i].Key] = n
		} else {
			delete(h.keyOwners, refs[i].Key)
		}
	}
	return nil
}

// TakeOver is what a starting node does with a merchant's devices
// (package app): a device held by a node that is not alive (dead, or this
// node's previous run) is taken from it — reconnecting with a grace period
// from now when it has work in flight (busy), else offline. A device online
// on a live node, or in a grace period already running, is left alone. A
// busy device with no record, or offline, is marked reconnecting as on a
// lone hub. It returns the grace deadline of each busy device it marked,
// for its transactions' grace. The records are this node's copy, read at
// start (LoadShared); the registry is read once, and each take-over checks
// the record's epoch, so a record that changed since is left alone.
func (h *Hub) TakeOver(ctx context.Context, merchantID string, devices []string, busy map[string]bool) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if h.node == nil {
		for _, d := range devices {
			if busy[d] {
				if until := h.MarkReconnecting(merchantID, d); !until.IsZero() {
					out[d] = until
				}
			}
		}
		return out, nil
	}
	list, err := h.node.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, n := range list {
		alive[n.ID] = n.ID != h.node.ID() // this node's previous run is not alive
	}
	for _, d := range devices {
		h.mu.Lock()
		var rec nodes.Device
		if st := h.status[d]; st != nil {
			rec = nodes.Device{Status: st.status, Node: st.node, Conn: st.connID, Epoch: st.epoch}
		}
		h.mu.Unlock()
		switch rec.Status {
		case protocol.TerminalReconnecting:
			continue // its grace runs, shared: it ends once, in a sweep
		case protocol.TerminalOnline:
			if alive[rec.Node] {
				continue // online on a live node: that node's
			}
		default: // offline, or never seen
			if !busy[d] {
				continue
			}
		}
		var until time.Time
		if busy[d] {
			until = h.now().Add(h.opts.GracePeriod)
		}
		if got := h.takeDevice(ctx, nodes.DeviceRef{Merchant: merchantID, Device: d}, rec, until, false); !got.IsZero() {
			out[d] = got
		}
	}
	return out, nil
}
