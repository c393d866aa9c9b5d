package app

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// Bus message types of the ops relay.
const (
	msgWatching = "ops-watching" // a node has ops feeds open (again at every heartbeat)
	msgIdle     = "ops-idle"     // a node's last ops feed closed
	msgTxn      = "ops-txn"      // a transaction this node committed, for the others' ops feeds
)

// opsRelay brings every node's committed transactions to the ops feeds of
// every node (docs/cluster.md: ops see the whole hub from any node). Each
// commit would otherwise cost every node a message, so a node sends its
// transactions only while some other node has a feed open: a node with
// feeds says so on the bus when its first opens and again at every
// heartbeat, and a node not heard saying so for node_timeout is taken to
// have none.
type opsRelay struct {
	a        *App
	mu       sync.Mutex
	watchers map[string]time.Time // node → when it last said it has feeds
}

// newOpsRelay wires the relay into the hub's bus and the ops server.
func newOpsRelay(a *App) *opsRelay {
	r := &opsRelay{a: a, watchers: map[string]time.Time{}}
	h := a.Hub
	h.OnPeer(msgWatching, func(m nodes.Message) {
		r.mu.Lock()
		r.watchers[m.From] = a.Clock.Now()
		r.mu.Unlock()
	})
	h.OnPeer(msgIdle, func(m nodes.Message) {
		r.mu.Lock()
		delete(r.watchers, m.From)
		r.mu.Unlock()
	})
	h.OnPeer(msgTxn, func(m nodes.Message) {
		t := new(protocol.Transaction)
		if json.Unmarshal(m.Body, t) == nil {
			a.Ops.PublishRemote(t)
		}
	})
	h.OnTick(func() {
		if a.Ops.Watched() {
			a.Node.Broadcast(nodes.Message{Type: msgWatching})
		}
	})
	a.Ops.ObserveTransactions(r.committed)
	return r
}

// watching is ops.Options.Watching: tell the others at once.
func (r *opsRelay) watching(on bool) {
	if on {
		r.a.Node.Broadcast(nodes.Message{Type: msgWatching})
	} else {
		r.a.Node.Broadcast(nodes.Message{Type: msgIdle})
	}
}

// committed sends a transaction this node committed to the nodes that
// have feeds open.
func (r *opsRelay) committed(t *protocol.Transaction) {
	if !r.anyWatcher() {
		return
	}
	body, err := json.Marshal(t)
	if err != nil {
		return
	}
	r.a.Node.Broadcast(nodes.Message{Type: msgTxn, Body: body})
}

// anyWatcher reports whether another node has said lately that it has
// feeds open.
func (r *opsRelay) anyWatcher() bool {
	now := r.a.Clock.Now()
	timeout := r.a.Node.Timeout()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, at := range r.watchers {
		if now.Sub(at) > timeout {
			delete(r.watchers, id)
			continue
		}
		return true
	}
	return false
}

// OpsRelayWatched reports whether another node has ops feeds open, so that
// this node sends them its transactions.
func (a *App) OpsRelayWatched() bool { return a.relay != nil && a.relay.anyWatcher() }
