package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// HTTP-only POS clients read the same outbox the WebSocket replays, through
// an event session (CONTRACT §9). A key has one live session or one live
// WebSocket: each displaces the other, and both count toward the
// fighting-keys rule.

const (
	sessionIdle   = 24 * time.Hour
	maxEventWait  = 60 * time.Second
	eventsPerPoll = 100
)

// Sessions is where event sessions live; the hub needs Redis only for them.
type Sessions interface {
	Get(ctx context.Context, merchantID, apiKey string) (string, error)
	Set(ctx context.Context, merchantID, apiKey, sessionID string, ttl time.Duration) error
	Touch(ctx context.Context, merchantID, apiKey string, ttl time.Duration) error
	Delete(ctx context.Context, merchantID, apiKey string) (bool, error)
}

// RedisSessions keeps one session id per API key in Redis.
type RedisSessions struct {
	RDB redis.UniversalClient
	Key func(merchantID, apiKey string) string
}

// Get returns the key's session id, "" when none.
func (s RedisSessions) Get(ctx context.Context, m, k string) (string, error) {
	v, err := s.RDB.Get(ctx, s.Key(m, k)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// Set makes id the key's session.
func (s RedisSessions) Set(ctx context.Context, m, k, id string, ttl time.Duration) error {
	return s.RDB.Set(ctx, s.Key(m, k), id, ttl).Err()
}

// Touch extends the session's idle timeout.
func (s RedisSessions) Touch(ctx context.Context, m, k string, ttl time.Duration) error {
	return s.RDB.PExpire(ctx, s.Key(m, k), ttl).Err()
}

// Delete ends the key's session, reporting whether one existed.
func (s RedisSessions) Delete(ctx context.Context, m, k string) (bool, error) {
	n, err := s.RDB.Del(ctx, s.Key(m, k)).Result()
	return n > 0, err
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

func (h *Hub) handleOpenSession(w http.ResponseWriter, r *http.Request, p principal, _ []byte) {
	if h.opts.Sessions == nil || h.opts.Outbox == nil {
		writeError(w, errUnavailable)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := "ses_" + hex.EncodeToString(b)
	prev, err := h.opts.Sessions.Get(r.Context(), p.merchantID, p.keyID)
	if err == nil {
		err = h.opts.Sessions.Set(r.Context(), p.merchantID, p.keyID, id, sessionIdle)
	}
	if err != nil {
		writeError(w, h.clientError(err, h.log))
		return
	}
	h.mu.Lock()
	old := h.pos[p.keyID]
	allowed := true
	if old != nil || prev != "" {
		allowed = h.recordDisplacementLocked(p.keyID, p.merchantID)
	}
	if old != nil || prev != "" {
		h.metrics.Displacements.WithLabelValues("session").Inc()
	}
	if old != nil {
		old.disconnect(&protocol.Disconnect{Code: protocol.CloseDisplaced, Reason: protocol.ReasonAPIKeyUsedElsewhere,
			Message: "Connection displaced by new connection with same API key", ReconnectAllowed: allowed})
		h.dropPOSLocked(old)
	}
	h.mu.Unlock()
	h.log.Info().Str("apiKeyId", p.keyID).Str("merchantId", p.merchantID).Msg("HTTP event session opened")
	writeJSON(w, http.StatusCreated, map[string]string{"sessionId": id})
}

// checkSession validates X-Session-Id and refreshes its idle timeout.
func (h *Hub) checkSession(r *http.Request, p principal) *protocol.Error {
	id := r.Header.Get(protocol.HeaderSession)
	if id == "" {
		return protocol.Invalid(protocol.HeaderSession, "is required: open a session with POST /v1/sessions")
	}
	if h.opts.Sessions == nil {
		return errUnavailable
	}
	cur, err := h.opts.Sessions.Get(r.Context(), p.merchantID, p.keyID)
	if err != nil {
		return h.clientError(err, h.log)
	}
	if cur != id {
		return protocol.Errorf(protocol.CodeSessionDisplaced, protocol.HeaderSession,
			"session unknown, expired or displaced by another connection with the same API key; open a new one")
	}
	_ = h.opts.Sessions.Touch(r.Context(), p.merchantID, p.keyID, sessionIdle)
	return nil
}

func (h *Hub) handleEvents(w http.ResponseWriter, r *http.Request, p principal, _ []byte) {
	if e := h.checkSession(r, p); e != nil {
		writeError(w, e)
		return
	}
	// WebSocket acks of the same API key still queued move the cursor first.
	h.waitAcks(r.Context(), p.merchantID, p.keyID)
	q := r.URL.Query()
	after := q.Get("after")
	if after == "" {
		c, err := h.opts.Outbox.Cursor(r.Context(), p.merchantID, p.keyID)
		if err != nil {
			writeError(w, h.clientError(err, h.log))
			return
		}
		after = c
	} else if !queue.ValidID(after) {
		writeError(w, protocol.Invalid("after", "must be a messageId"))
		return
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxEventWait {
			writeError(w, protocol.Invalid("wait", "must be a duration from 0s to 60s, such as 30s"))
			return
		}
		wait = d
	}
	var entries []queue.Entry
	var err error
	for {
		// Take the wake-up channel before reading, so a message committed
		// between the read and the wait is not missed.
		woken := h.waitFor(p.keyID)
		entries, err = h.opts.Outbox.After(r.Context(), p.merchantID, p.keyID, after, eventsPerPoll)
		if err != nil || len(entries) > 0 || wait <= 0 {
			break
		}
		timeout := make(chan struct{})
		t := h.clock.AfterFunc(wait, func() { close(timeout) })
		select {
		case <-woken:
			t.Stop()
			wait = 0 // one more read, then answer
			continue
		case <-timeout:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		break
	}
	if err != nil {
		writeError(w, h.clientError(err, h.log))
		return
	}
	data := make([]json.RawMessage, 0, len(entries))
	next := after
	for _, m := range entries {
		data = append(data, m.Frame())
		next = m.ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data, "nextCursor": next})
}

func (h *Hub) handleEventsAck(w http.ResponseWriter, r *http.Request, p principal, body []byte) {
	if e := h.checkSession(r, p); e != nil {
		writeError(w, e)
		return
	}
	req := new(protocol.AckRequest)
	if e := protocol.DecodeBody(body, req); e != nil {
		writeError(w, e)
		return
	}
	if _, err := h.opts.Outbox.Ack(r.Context(), p.merchantID, p.keyID, req.MessageID); err != nil {
		if errors.Is(err, queue.ErrUnknownID) {
			writeError(w, protocol.Invalid("messageId", "unknown messageId"))
			return
		}
		writeError(w, h.clientError(err, h.log))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// requestExtra is the time a request may take on top of request_timeout:
// a long poll's wait.
func requestExtra(r *http.Request) time.Duration {
	if r.URL.Path != "/v1/events" {
		return 0
	}
	d, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || d < 0 || d > maxEventWait {
		return 0 // refused by handleEvents
	}
	return d
}

// waitFor returns a channel closed when a message is next committed for key.
func (h *Hub) waitFor(apiKey string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.waiters[apiKey]
	if ch == nil {
		ch = make(chan struct{})
		h.waiters[apiKey] = ch
	}
	return ch
}

// wake releases the long polls waiting on key.
func (h *Hub) wakeLocked(apiKey string) {
	if ch := h.waiters[apiKey]; ch != nil {
		close(ch)
		delete(h.waiters, apiKey)
	}
}
