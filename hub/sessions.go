package hub

import (
	"context"

	"github.com/termhub/termhub/protocol"
)

// A key has one live HTTP event session (package httpapi, CONTRACT §9) or
// one live WebSocket: each displaces the other, and both count toward the
// fighting-keys rule. The sessions are the HTTP API's; the hub only ends
// one when a WebSocket takes its key over, and displaces the WebSocket
// when a session opens.

// Sessions is what the hub needs of the HTTP event sessions.
type Sessions interface {
	// Delete ends the key's session, reporting whether one existed.
	Delete(ctx context.Context, merchantID, apiKey string) (bool, error)
}

// displaceSession ends the key's HTTP session when a WebSocket takes over.
func (h *Hub) displaceSession(ctx context.Context, merchantID, apiKey string) {
	if h.opts.Sessions == nil {
		return
	}
	existed, err := h.opts.Sessions.Delete(ctx, merchantID, apiKey)
	if err != nil {
		h.log.Error().Err(err).Str("apiKeyId", apiKey).Msg("could not end the HTTP event session")
		return
	}
	if existed {
		h.mu.Lock()
		h.recordDisplacementLocked(apiKey, merchantID)
		h.mu.Unlock()
	}
}

// SessionOpened displaces the key's WebSocket, if any, when an HTTP event
// session opens for it; hadSession tells that it replaced another session.
// Either replacement counts as a displacement.
func (h *Hub) SessionOpened(merchantID, apiKey string, hadSession bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.pos[apiKey]
	allowed := true
	if old != nil || hadSession {
		allowed = h.recordDisplacementLocked(apiKey, merchantID)
		h.metrics.Displacements.WithLabelValues("session").Inc()
	}
	if old != nil {
		old.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonAPIKeyUsedElsewhere,
			Message: "Connection displaced by new connection with same API key", ReconnectAllowed: allowed})
		h.dropPOSLocked(old)
	}
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
