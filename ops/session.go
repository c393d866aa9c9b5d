package ops

// Dashboard sessions (docs/protocol.md#credentials). POST /ops/login gives the browser a
// random session id in the termhub_ops cookie, never the ops token. The
// session lives in Redis under keys.OpsSession(HMAC-SHA256(ops token, id)):
// a copy of Redis yields no live cookie, and a hub started with another ops
// token finds none of the old sessions (changing ops_token, which takes a
// restart, ends them all). The key's TTL is the idle expiry: every check
// of the session is a PEXPIRE, which both tells whether it still exists and
// gives it SessionIdle again, so a check costs one command and logout (DEL)
// ends the session on every hub at once.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/protocol"
)

// sessionIDBytes is the entropy of a session id.
const sessionIDBytes = 32

// sessionEncoding writes session ids into the cookie (43 characters).
var sessionEncoding = base64.RawURLEncoding.Strict()

// errNoRedis is the error of a session operation on a Server built without
// Redis.
var errNoRedis = errors.New("ops: no Redis for dashboard sessions")

// sessionRecord is the value kept under a session's key; only operators
// reading Redis see it.
type sessionRecord struct {
	CreatedAt time.Time `json:"createdAt"`
	Remote    string    `json:"remote"`
}

// sessionKey returns the Redis key of the session whose id is the cookie
// value v, or false when v is not an id this package could have issued (the
// old cookie that held the token, say), which needs no Redis to refuse.
func (s *Server) sessionKey(v string) (string, bool) {
	raw, err := sessionEncoding.DecodeString(v)
	if err != nil || len(raw) != sessionIDBytes {
		return "", false
	}
	m := hmac.New(sha256.New, []byte(s.opts.Token))
	m.Write([]byte("termhub ops session\x00"))
	m.Write(raw)
	return s.opts.Keys.OpsSession(hex.EncodeToString(m.Sum(nil))), true
}

// requestSession returns the Redis key of the session named by r's cookie,
// or false when r carries no well-formed session cookie.
func (s *Server) requestSession(r *http.Request) (string, bool) {
	ck, err := r.Cookie(hub.OpsCookie)
	if err != nil {
		return "", false
	}
	return s.sessionKey(ck.Value)
}

// redisCtx bounds one session command by RequestTimeout.
func (s *Server) redisCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.RequestTimeout)
}

// newSession stores a fresh session for r and returns its id.
func (s *Server) newSession(ctx context.Context, r *http.Request) (string, error) {
	if s.opts.Redis == nil {
		return "", errNoRedis
	}
	raw := make([]byte, sessionIDBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := sessionEncoding.EncodeToString(raw)
	key, _ := s.sessionKey(id)
	val, err := json.Marshal(sessionRecord{CreatedAt: s.now(), Remote: s.hub.ClientAddr(r)})
	if err != nil {
		return "", err
	}
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	ok, err := s.opts.Redis.SetNX(ctx, key, val, s.opts.SessionIdle).Result()
	if err != nil {
		return "", err
	}
	if !ok { // 2^-256: a broken random source rather than bad luck
		return "", errors.New("ops: session id collision")
	}
	return id, nil
}

// touchSession reports whether the session at key is alive and, if it
// is, gives it SessionIdle again.
func (s *Server) touchSession(ctx context.Context, key string) (bool, error) {
	if s.opts.Redis == nil {
		return false, nil // no session can exist
	}
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	return s.opts.Redis.PExpire(ctx, key, s.opts.SessionIdle).Result()
}

// endSession deletes the session at key and ends this hub's feeds opened
// with it (other hubs' feeds notice at their next check).
// It reports whether there was such a session.
func (s *Server) endSession(ctx context.Context, key string) (bool, error) {
	ended := false
	if s.opts.Redis != nil {
		ctx, cancel := s.redisCtx(ctx)
		defer cancel()
		n, err := s.opts.Redis.Del(ctx, key).Result()
		if err != nil {
			return false, err
		}
		ended = n > 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for f := range s.feeds {
		if f.session == key {
			f.end()
		}
	}
	return ended, nil
}

// authenticate checks r's ops credentials: the bearer token when r has an
// `Authorization: Bearer` header, else the session cookie. It returns the
// session's key ("" for the bearer token), or the error to answer: 401 with
// message msg, or 503 unavailable when Redis could not tell whether the
// session is alive (the page must not take that for a logout).
func (s *Server) authenticate(r *http.Request, msg string) (string, *protocol.Error) {
	unauthorized := protocol.Errorf(protocol.CodeUnauthorized, "Authorization", "%s", msg)
	if s.opts.Token == "" {
		return "", unauthorized
	}
	// Failed attempts count against the address like any other credential
	// (hub rate limits); a request that presents nothing (the page asking
	// whether it is signed in) is not an attempt.
	if e := s.hub.AddrBlocked(r); e != nil {
		return "", e
	}
	if a := r.Header.Get("Authorization"); len(a) >= 7 && strings.EqualFold(a[:7], "Bearer ") {
		if s.hub.OpsAuthorized(r, s.opts.Token) {
			return "", nil
		}
		return "", s.hub.AuthFailed(r, string(hub.KindOps), "", unauthorized)
	}
	key, ok := s.requestSession(r)
	if !ok {
		if _, err := r.Cookie(hub.OpsCookie); err == nil {
			return "", s.hub.AuthFailed(r, string(hub.KindOps), "", unauthorized)
		}
		return "", unauthorized
	}
	live, err := s.touchSession(r.Context(), key)
	if err != nil {
		s.log.Warn().Err(err).Str("remote", s.hub.ClientAddr(r)).Msg("could not check an ops session: Redis unavailable")
		return "", errSessionUnavailable()
	}
	if !live {
		return "", s.hub.AuthFailed(r, string(hub.KindOps), "", unauthorized)
	}
	return key, nil
}

// errSessionUnavailable is the 503 of a session Redis could not check.
func errSessionUnavailable() *protocol.Error {
	return protocol.Errorf(protocol.CodeUnavailable, "",
		"ops sessions are unavailable (Redis does not answer); retry shortly, or use Authorization: Bearer")
}

// sessionCookie is the dashboard cookie holding a session id: HttpOnly
// (page scripts never see it), SameSite=Strict (no other site's request
// carries it), Path=/, Secure when the request came over TLS (directly or
// through a proxy that says so in X-Forwarded-Proto) or CookieSecure is
// set. It lasts for the browser session (the server ends it after
// SessionIdle unused); maxAge < 0 deletes it.
func (s *Server) sessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: hub.OpsCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: s.opts.CookieSecure || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
	}
}
