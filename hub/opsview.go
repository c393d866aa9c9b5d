package hub

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// What ops see of the hub's connections and terminals, on every node.

// OpsTerminal is a terminal as ops see it: with the node it is on.
type OpsTerminal struct {
	protocol.TerminalInfo
	// Node holds the terminal's connection (or held it, while it is
	// reconnecting); "" when offline or when the hub is alone.
	Node string `json:"node,omitempty"`
}

// OpsTerminals lists every merchant's terminals with their nodes.
func (h *Hub) OpsTerminals() []OpsTerminal {
	all := h.AllTerminals()
	out := make([]OpsTerminal, len(all))
	for i, t := range all {
		out[i] = OpsTerminal{TerminalInfo: t, Node: h.TerminalNode(t.TerminalID)}
	}
	return out
}

// TerminalNode is the node that holds a device's connection ("" for
// none known, or when the hub is alone).
func (h *Hub) TerminalNode(deviceID string) string {
	if h.node == nil {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.status[deviceID]; st != nil && st.status != protocol.TerminalOffline {
		return st.node
	}
	return ""
}

// ConnInfo describes a live connection for ops.
type ConnInfo struct {
	ConnectionID string    `json:"connectionId"`
	Kind         Kind      `json:"kind"`
	MerchantID   string    `json:"merchantId"`
	APIKeyID     string    `json:"apiKeyId,omitempty"`
	DeviceID     string    `json:"deviceId,omitempty"`
	ConnectedAt  time.Time `json:"connectedAt"`
	// LastSeen is live for this node's connections; for another node's,
	// as of when it connected.
	LastSeen time.Time `json:"lastSeen"`
	// Node is the node the connection is on ("" when the hub is alone).
	Node string `json:"node,omitempty"`
}

// Connections lists live POS and terminal connections of every node,
// oldest first.
func (h *Hub) Connections() []ConnInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ConnInfo, 0, len(h.byID)+len(h.remote))
	for _, c := range h.byID {
		out = append(out, h.connInfo(c))
	}
	for _, info := range h.remote {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ConnectedAt.Before(out[j].ConnectedAt) })
	return out
}

// Conflicts lists API keys caught fighting, most recent first. A conflict
// whose last displacement is a whole fighting-keys window (flapWindow) old,
// on the hub's clock, is over: the keys stopped fighting (a few quick
// restarts of one POS, say), so it is dropped rather than shown for ever. A
// key that fights again is recorded again.
func (h *Hub) Conflicts() []KeyConflict {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	out := make([]KeyConflict, 0, len(h.conflicts))
	for id, k := range h.conflicts {
		if now.Sub(k.LastAt) >= flapWindow {
			delete(h.conflicts, id)
			continue
		}
		out = append(out, *k)
	}
	// The displacement times of a key quiet for a window count for nothing
	// any more (recordDisplacementLocked drops them); forget the key.
	for id, times := range h.flaps {
		if len(times) == 0 || now.Sub(times[len(times)-1]) >= flapWindow {
			delete(h.flaps, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastAt.After(out[j].LastAt) })
	return out
}

// Disconnect kicks a live connection by id (ops), on whatever node it is,
// reporting whether it existed.
func (h *Hub) Disconnect(connectionID string, d *protocol.Disconnect) bool {
	if h.disconnectLocal(connectionID, d) {
		return true
	}
	h.mu.Lock()
	info, ok := h.remote[connectionID]
	h.mu.Unlock()
	if !ok || h.node == nil {
		return false
	}
	body, err := json.Marshal(d)
	if err != nil {
		return false
	}
	h.node.Send(info.Node, nodes.Message{Type: msgKick, Conn: connectionID, Body: body})
	return true
}

// disconnectLocal kicks one of this node's connections.
func (h *Hub) disconnectLocal(connectionID string, d *protocol.Disconnect) bool {
	h.mu.Lock()
	c := h.byID[connectionID]
	h.mu.Unlock()
	if c == nil {
		return false
	}
	c.disconnect(d)
	return true
}
