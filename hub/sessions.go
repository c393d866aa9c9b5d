package hub

import (
	"context"

	"github.com/termhub/termhub/protocol"
)

// A key has one live HTTP event session (package httpapi, docs/protocol.md#messageid-ack-and-replay) or
// one live WebSocket: each displaces the other, and both count toward the
// fighting-keys rule. The sessions are the HTTP API's; the hub only ends
// one when a WebSocket takes its key over, and displaces the WebSocket
// when a session opens.

// Sessions is what the hub needs of the HTTP event sessions.
type Sessions interface {
	// Delete ends the key's session, reporting whether one existed.
	Delete(ctx context.Context, merchantID, apiKey string) (bool, error)
}

// displaceSession ends the key's HTTP session when a WebSocket takes over,
// reporting whether there was one. With several nodes the displacement is
// counted with the WebSocket's claim of the key (claimKey); alone, here.
func (h *Hub) displaceSession(ctx context.Context, merchantID, apiKey string) bool {
	if h.opts.Sessions == nil {
		return false
	}
	existed, err := h.opts.Sessions.Delete(ctx, merchantID, apiKey)
	if err != nil {
		h.log.Error().Err(err).Str("apiKeyId", apiKey).Msg("could not end the HTTP event session")
		return false
	}
	if existed && h.node == nil {
		h.mu.Lock()
		h.recordDisplacementLocked(apiKey, merchantID)
		h.mu.Unlock()
	}
	return existed
}

// SessionOpened displaces the key's WebSocket, if any, when an HTTP event
// session opens for it; hadSession tells that it replaced another session.
// Either replacement counts as a displacement.
func (h *Hub) SessionOpened(merchantID, apiKey string, hadSession bool) {
	flaps := h.claimKeyForSession(merchantID, apiKey, hadSession)
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.pos[apiKey]
	allowed := true
	if old != nil || hadSession {
		allowed = h.allowedLocked(apiKey, merchantID, flaps)
		h.metrics.Displacements.WithLabelValues("session").Inc()
	}
	if old != nil {
		old.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonAPIKeyUsedElsewhere,
			Message: "Connection displaced by new connection with same API key", ReconnectAllowed: allowed})
		h.dropPOSLocked(old)
	}
}

// claimKeyForSession makes an HTTP event session its API key's holder
// across nodes, displacing a WebSocket of the key on another node; as
// claimKey.
func (h *Hub) claimKeyForSession(merchantID, apiKey string, hadSession bool) int {
	if h.node == nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	node, old, flaps, err := h.node.ClaimKey(ctx, merchantID, apiKey, "", h.now(), flapWindow, hadSession)
	if err != nil {
		h.log.Warn().Err(err).Str("apiKeyId", apiKey).Msg("could not record the HTTP event session's key in Redis")
		return -1
	}
	h.displaceKeyElsewhere(merchantID, apiKey, node, old, flaps)
	return flaps
}

// NextCommit returns a channel closed when a message is next committed for
// apiKey: a long poll waits on it. Taken before the poll reads the outbox,
// so that a message committed between the read and the wait is not missed.
func (h *Hub) NextCommit(apiKey string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.waiters[apiKey]
	if ch == nil {
		ch = make(chan struct{})
		h.waiters[apiKey] = ch
	}
	return ch
}

// wakeLocked releases the long polls waiting on apiKey.
func (h *Hub) wakeLocked(apiKey string) {
	if ch := h.waiters[apiKey]; ch != nil {
		close(ch)
		delete(h.waiters, apiKey)
	}
}

// Waiting reports whether a long poll of apiKey waits on this node for
// the next commit.
func (h *Hub) Waiting(apiKey string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiters[apiKey] != nil
}
