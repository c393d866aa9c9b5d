package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// HTTP-only POS clients read the same outbox the WebSocket replays, through
// an event session (docs/protocol.md#messageid-ack-and-replay). A key has one live session or one live
// WebSocket: each displaces the other (Hub.SessionOpened here, the hub on
// an upgrade), and both count toward the fighting-keys rule.

const (
	sessionIdle   = 24 * time.Hour
	maxEventWait  = 60 * time.Second
	eventsPerPoll = 100
)

// Sessions is where event sessions live; hub.Sessions is the part the hub
// needs.
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

func (s *Server) handleOpenSession(w http.ResponseWriter, r *http.Request, p hub.Principal, _ []byte) {
	if s.opts.Sessions == nil || s.opts.Outbox == nil {
		hub.WriteError(w, hub.ErrNoEngine)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := "ses_" + hex.EncodeToString(b)
	prev, err := s.opts.Sessions.Get(r.Context(), p.MerchantID, p.KeyID)
	if err == nil {
		err = s.opts.Sessions.Set(r.Context(), p.MerchantID, p.KeyID, id, sessionIdle)
	}
	if err != nil {
		hub.WriteError(w, s.hub.ClientError(err, s.log))
		return
	}
	s.hub.SessionOpened(p.MerchantID, p.KeyID, prev != "")
	s.log.Info().Str("apiKeyId", p.KeyID).Str("merchantId", p.MerchantID).Msg("HTTP event session opened")
	hub.WriteJSON(w, http.StatusCreated, map[string]string{"sessionId": id})
}

// checkSession validates X-Session-Id and refreshes its idle timeout.
func (s *Server) checkSession(r *http.Request, p hub.Principal) *protocol.Error {
	id := r.Header.Get(protocol.HeaderSession)
	if id == "" {
		return protocol.Invalid(protocol.HeaderSession, "is required: open a session with POST /v1/sessions")
	}
	if s.opts.Sessions == nil {
		return hub.ErrNoEngine
	}
	cur, err := s.opts.Sessions.Get(r.Context(), p.MerchantID, p.KeyID)
	if err != nil {
		return s.hub.ClientError(err, s.log)
	}
	if cur != id {
		return protocol.Errorf(protocol.CodeSessionDisplaced, protocol.HeaderSession,
			"session unknown, expired or displaced by another connection with the same API key; open a new one")
	}
	_ = s.opts.Sessions.Touch(r.Context(), p.MerchantID, p.KeyID, sessionIdle)
	return nil
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, p hub.Principal, _ []byte) {
	if e := s.checkSession(r, p); e != nil {
		hub.WriteError(w, e)
		return
	}
	// WebSocket acks of the same API key still queued move the cursor first.
	s.hub.WaitAcks(r.Context(), p.MerchantID, p.KeyID)
	q := r.URL.Query()
	after := q.Get("after")
	if after == "" {
		c, err := s.opts.Outbox.Cursor(r.Context(), p.MerchantID, p.KeyID)
		if err != nil {
			hub.WriteError(w, s.hub.ClientError(err, s.log))
			return
		}
		after = c
	} else if !queue.ValidID(after) {
		hub.WriteError(w, protocol.Invalid("after", "must be a messageId"))
		return
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxEventWait {
			hub.WriteError(w, protocol.Invalid("wait", "must be a duration from 0s to 60s, such as 30s"))
			return
		}
		wait = d
	}
	var entries []queue.Entry
	var err error
	for {
		// Take the wake-up channel before reading, so a message committed
		// between the read and the wait is not missed.
		woken := s.hub.NextCommit(p.KeyID)
		entries, err = s.opts.Outbox.After(r.Context(), p.MerchantID, p.KeyID, after, eventsPerPoll)
		if err != nil || len(entries) > 0 || wait <= 0 {
			break
		}
		timeout := make(chan struct{})
		t := s.opts.Clock.AfterFunc(wait, func() { close(timeout) })
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
		hub.WriteError(w, s.hub.ClientError(err, s.log))
		return
	}
	data := make([]json.RawMessage, 0, len(entries))
	next := after
	for _, m := range entries {
		data = append(data, m.Frame())
		next = m.ID
	}
	hub.WriteJSON(w, http.StatusOK, map[string]any{"data": data, "nextCursor": next})
}

func (s *Server) handleEventsAck(w http.ResponseWriter, r *http.Request, p hub.Principal, body []byte) {
	if e := s.checkSession(r, p); e != nil {
		hub.WriteError(w, e)
		return
	}
	req := new(protocol.AckRequest)
	if e := protocol.DecodeBody(body, req); e != nil {
		hub.WriteError(w, e)
		return
	}
	if _, err := s.opts.Outbox.Ack(r.Context(), p.MerchantID, p.KeyID, req.MessageID); err != nil {
		if errors.Is(err, queue.ErrUnknownID) {
			hub.WriteError(w, protocol.Invalid("messageId", "unknown messageId"))
			return
		}
		hub.WriteError(w, s.hub.ClientError(err, s.log))
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
