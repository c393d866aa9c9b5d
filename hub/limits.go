package hub

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/ratelimit"
	"github.com/termhub/termhub/protocol"
)

// limits are the hub's rate limits (docs/protocol.md#credentials). They are per process:
// with several hubs each keeps its own buckets, so a client spread over n
// hubs may go up to n times as fast.
type limits struct {
	cfg      config.RateLimit
	apiKey   *ratelimit.Buckets // requests (and POS frames) per API key
	terminal *ratelimit.Buckets // frames and connects per terminal
	failAddr *ratelimit.Buckets // failed authentications per client address
	failID   *ratelimit.Buckets // failed authentications per claimed key or device id
	proxies  ratelimit.Proxies

	// Failed authentications and refused repeats are logged at most
	// logRate a second (a burst of logBurst), so a flood cannot fill the
	// disk; the next line says how many were left out.
	authLog, duplicateLog *logThrottle
}

// logThrottle lets log lines of one kind through at a bounded rate.
type logThrottle struct {
	mu       sync.Mutex
	lim      *rate.Limiter
	unlogged int
}

func newLogThrottle() *logThrottle { return &logThrottle{lim: rate.NewLimiter(logRate, logBurst)} }

// allow reports whether a line may be logged at now and, if so, how many
// were left out since the last one.
func (t *logThrottle) allow(now time.Time) (unlogged int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lim.AllowN(now, 1) {
		t.unlogged++
		return 0, false
	}
	unlogged, t.unlogged = t.unlogged, 0
	return unlogged, true
}

const (
	logRate  = 1
	logBurst = 20
	// maxClaimedID bounds the id a failed attempt is counted under, so an
	// attacker's megabyte header does not become a map key.
	maxClaimedID = 128
)

func newLimits(cfg config.RateLimit) *limits {
	return &limits{
		cfg:          cfg,
		apiKey:       ratelimit.New(cfg.KeyRate, cfg.KeyBurst),
		terminal:     ratelimit.New(cfg.TerminalRate, cfg.TerminalBurst),
		failAddr:     ratelimit.New(cfg.AuthFailureRate, cfg.AuthFailureBurst),
		failID:       ratelimit.New(cfg.AuthFailureRate, cfg.AuthFailureBurst),
		proxies:      ratelimit.ParseProxies(cfg.TrustedProxies),
		authLog:      newLogThrottle(),
		duplicateLog: newLogThrottle(),
	}
}

// The limits a refusal names in termhub_rate_limited_total.
const (
	limitAuthAddress = "auth_address"
	limitAuthID      = "auth_id"
	limitAPIKey      = "api_key"
	limitTerminal    = "terminal"
)

// rateLimited is the error past a limit.
func rateLimited(what string, wait time.Duration) *protocol.Error {
	s := ratelimit.RetryAfter(wait)
	return &protocol.Error{Code: protocol.CodeRateLimited, RetryAfter: s,
		Message: what + "; retry after " + strconv.Itoa(s) + " s"}
}

// clientAddr is where r came from, through trusted proxies.
func (h *Hub) clientAddr(r *http.Request) string {
	return ratelimit.AddrKey(h.limits.proxies.ClientAddr(r))
}

// addrBlocked refuses, before its credentials are even checked, a request
// from an address that has used up its failed authentications: a guesser
// learns nothing more until the budget refills. (A valid request from that
// address waits too; keeping the budget per address, not per network, keeps
// that to the guesser's own address.)
func (h *Hub) addrBlocked(r *http.Request) *protocol.Error {
	if blocked, wait := h.limits.failAddr.Blocked(h.clientAddr(r), h.clock.Now()); blocked {
		h.metrics.RateLimited.WithLabelValues(limitAuthAddress).Inc()
		return rateLimited("too many failed authentications from this address", wait)
	}
	return nil
}

// AuthFailed counts a failed authentication of kind ("pos", "terminal",
// "ops") claiming id (the key or device id sent; "" for ops), logs it
// (rate-limited) and returns what to answer: e itself, or rate_limited when
// the address or the id has failed too often. The id's budget only turns
// failures into rate_limited: a request with a valid signature for that id
// still passes, so an attacker who knows a key id cannot lock its owner out.
func (h *Hub) AuthFailed(r *http.Request, kind, id string, e *protocol.Error) *protocol.Error {
	now := h.clock.Now()
	addr := h.clientAddr(r)
	h.metrics.AuthFailures.WithLabelValues(kind).Inc()
	if len(id) > maxClaimedID {
		id = id[:maxClaimedID]
	}
	h.logAuthFailure(now, addr, kind, id, r.URL.Path, e.Message)
	okAddr, waitAddr := h.limits.failAddr.Allow(addr, now)
	okID, waitID := true, time.Duration(0)
	if id != "" {
		okID, waitID = h.limits.failID.Allow(kind+":"+id, now)
	}
	switch {
	case !okAddr:
		h.metrics.RateLimited.WithLabelValues(limitAuthAddress).Inc()
		return rateLimited("too many failed authentications from this address", max(waitAddr, waitID))
	case !okID:
		h.metrics.RateLimited.WithLabelValues(limitAuthID).Inc()
		return rateLimited("too many failed authentications for this id", waitID)
	}
	return e
}

// ClientAddr is where r came from, through trusted_proxies, for the ops
// endpoints served outside the hub to log.
func (h *Hub) ClientAddr(r *http.Request) string {
	if a := h.limits.proxies.ClientAddr(r); a.IsValid() {
		return a.String()
	}
	return r.RemoteAddr
}

// AddrBlocked is addrBlocked for the ops endpoints served outside the hub.
func (h *Hub) AddrBlocked(r *http.Request) *protocol.Error { return h.addrBlocked(r) }

func (h *Hub) logAuthFailure(now time.Time, addr, kind, id, path, problem string) {
	unlogged, ok := h.limits.authLog.allow(now)
	if !ok {
		return
	}
	ev := h.log.Warn().Str("remote", addr).Str("kind", kind).Str("path", protocol.ForLog(path)).Str("problem", problem)
	if id != "" {
		ev = ev.Str("id", protocol.ForLog(id))
	}
	if unlogged > 0 {
		ev = ev.Int("unlogged", unlogged)
	}
	ev.Msg("authentication failed")
}

// allowKey takes one request of an API key's budget.
func (h *Hub) allowKey(keyID string) *protocol.Error {
	if ok, wait := h.limits.apiKey.Allow(keyID, h.clock.Now()); !ok {
		h.metrics.RateLimited.WithLabelValues(limitAPIKey).Inc()
		return rateLimited("too many requests for this API key", wait)
	}
	return nil
}

// allowTerminal takes one message of a terminal's budget.
func (h *Hub) allowTerminal(deviceID string) *protocol.Error {
	if ok, wait := h.limits.terminal.Allow(deviceID, h.clock.Now()); !ok {
		h.metrics.RateLimited.WithLabelValues(limitTerminal).Inc()
		return rateLimited("too many messages from this terminal", wait)
	}
	return nil
}

// frameLimited decides whether a WebSocket frame goes over its connection's
// budget. exempt frames (a terminal's results, a POS's acks) are never
// refused: they take a token when one is there, so that they count, but
// pass when none is. A connection that keeps going after being refused —
// as many refused frames in a row as its burst — is closed with 1008.
func (h *Hub) frameLimited(c *conn, exempt bool) *protocol.Error {
	var e *protocol.Error
	burst := h.limits.cfg.KeyBurst
	if c.kind == KindTerminal {
		e, burst = h.allowTerminal(c.deviceID), h.limits.cfg.TerminalBurst
	} else {
		e = h.allowKey(c.keyID)
	}
	if e == nil || exempt {
		c.refusedInARow = 0
		return nil
	}
	c.refusedInARow++
	if c.refusedInARow >= burst {
		c.log.Warn().Int("refused", c.refusedInARow).Msg("closing a connection that kept going past its rate limit")
		c.disconnect(&protocol.Disconnect{Code: protocol.ClosePolicy, Reason: protocol.ReasonOther,
			Message: "Rate limit exceeded; slow down before reconnecting", ReconnectAllowed: true})
	}
	return e
}

// ---- replayed signed requests (docs/protocol.md#credentials) ----

// Replays remembers the signatures of accepted POSTs for as long as their
// timestamp is valid, so a captured request sent again is refused.
type Replays interface {
	// First records sig with value for ttl and reports whether it was new;
	// when it was not, prev is the value recorded the first time.
	First(ctx context.Context, merchantID, keyID, sig, value string, ttl time.Duration) (first bool, prev string, err error)
}

// replayMargin keeps a signature beyond its own window, for hubs whose
// clocks run a little apart.
const replayMargin = 30 * time.Second

// FirstUse refuses a POST whose signature was accepted before. Every
// accepted POST's signature is recorded with its Idempotency-Key (the
// header is not signed): a repeat passes only on a route that honours the
// key (honoursKey: the stored answer comes back for a repeat) and with the
// key the first request carried, so that the stored answer is the reply.
// A captured request sent again with a key of the attacker's choosing is
// refused like one without.
func (h *Hub) FirstUse(ctx context.Context, r *http.Request, p Principal, honoursKey bool) *protocol.Error {
	if r.Method != http.MethodPost || h.opts.Replays == nil {
		return nil
	}
	idem := r.Header.Get(protocol.HeaderIdemKey)
	sec, _ := strconv.ParseInt(p.TS, 10, 64) // checked by authenticate
	ttl := time.Unix(sec, 0).Add(protocol.MaxClockSkew).Sub(h.clock.Now()) + replayMargin
	first, prev, err := h.opts.Replays.First(ctx, p.MerchantID, p.KeyID, strings.ToLower(p.Sig), "k:"+idem, ttl)
	if err != nil {
		return h.ClientError(err, h.log)
	}
	if first || (idem != "" && prev == "k:"+idem && honoursKey) {
		return nil
	}
	h.metrics.Duplicates.Inc()
	if n, ok := h.limits.duplicateLog.allow(h.clock.Now()); ok {
		ev := h.log.Warn().Str("apiKeyId", p.KeyID).Str("path", protocol.ForLog(r.URL.Path)).Str("remote", h.clientAddr(r))
		if n > 0 {
			ev = ev.Int("unlogged", n)
		}
		ev.Msg("repeated signed request refused")
	}
	return protocol.Errorf(protocol.CodeDuplicateRequest, protocol.HeaderSignature,
		"this signed request was already received; sign every attempt afresh, or send it again with the Idempotency-Key it first carried to get the stored answer")
}

// RequireWrite refuses a key without terminal:write.
func (p Principal) RequireWrite() *protocol.Error {
	if p.CanWrite {
		return nil
	}
	return protocol.Errorf(protocol.CodeInsufficientScopes, "", "this API key lacks the %s scope", config.ScopeWrite)
}

// RequireRead refuses a key without terminal:read.
func (p Principal) RequireRead() *protocol.Error {
	if p.CanRead {
		return nil
	}
	return protocol.Errorf(protocol.CodeInsufficientScopes, "", "this API key lacks the %s scope", config.ScopeRead)
}
