package ops_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/ops"
)

// ---- helpers ----

// get sends a GET with header and returns the response (body closed at
// the end of the test).
func (e *env) get(path string, header http.Header) *http.Response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(kit.Ctx(e.t), http.MethodGet, e.Srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.Srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// sessionStatus is the status of GET /ops/session with header.
func (e *env) sessionStatus(header http.Header) int {
	e.t.Helper()
	return e.get("/ops/session", header).StatusCode
}

// feedStatus is the HTTP status of a refused feed upgrade, or 101 when it
// was accepted (and the feed is closed again).
func (e *env) feedStatus(header http.Header) int {
	e.t.Helper()
	f, code, err := e.dialFeed(header)
	if err == nil {
		_ = f.ws.CloseNow()
		return http.StatusSwitchingProtocols
	}
	return code
}

// sessionCookieOf returns the termhub_ops cookie resp sets, or nil.
func sessionCookieOf(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == hub.OpsCookie {
			return c
		}
	}
	return nil
}

// sessionKeys lists the ops session keys under prefix.
func sessionKeys(t *testing.T, rdb redis.UniversalClient, prefix string) []string {
	t.Helper()
	ks, err := rdb.Keys(kit.Ctx(t), keys.Space{Prefix: prefix}.OpsSession("*")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// oneSessionKey returns the only ops session key under prefix.
func oneSessionKey(t *testing.T, rdb redis.UniversalClient, prefix string) string {
	t.Helper()
	ks := sessionKeys(t, rdb, prefix)
	if len(ks) != 1 {
		t.Fatalf("ops session keys = %v, want one", ks)
	}
	return ks[0]
}

func pttl(t *testing.T, r *redistest.Redis, key string) time.Duration {
	t.Helper()
	d, err := r.Client.PTTL(kit.Ctx(t), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitTTLBelow lets time pass until key has less than d to live: miniredis's
// clock is moved; on a real Redis, whose clock cannot be, it polls the TTL
// until a deadline.
func waitTTLBelow(t *testing.T, r *redistest.Redis, key string, d time.Duration) {
	t.Helper()
	left := pttl(t, r, key)
	if r.Mini != nil {
		r.Mini.FastForward(left - d + time.Millisecond)
		return
	}
	deadline := time.Now().Add(left + 5*time.Second)
	for left >= d {
		if time.Now().After(deadline) {
			t.Fatalf("%s still has %v to live", key, left)
		}
		time.Sleep(10 * time.Millisecond) // Redis-side expiry: polling with a deadline
		left = pttl(t, r, key)
	}
}

// waitExpired lets time pass until key has expired (see waitTTLBelow).
func waitExpired(t *testing.T, r *redistest.Redis, key string) {
	t.Helper()
	left := pttl(t, r, key)
	if r.Mini != nil {
		r.Mini.FastForward(left + time.Millisecond)
	} else {
		// PTTL is -2 once the key is gone; 0 means under a millisecond left,
		// not expired, and -1 no TTL at all (a failure, at the deadline).
		deadline := time.Now().Add(max(left, 0) + 5*time.Second)
		for left != -2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not expire: %v to live", key, left)
			}
			time.Sleep(10 * time.Millisecond) // Redis-side expiry: polling with a deadline
			left = pttl(t, r, key)
		}
	}
	if n, _ := r.Client.Exists(kit.Ctx(t), key).Result(); n != 0 {
		t.Fatalf("%s still exists", key)
	}
}

// opsNode is a hub with an ops server of its own, built directly so that
// a test can choose the session options; several may share one Redis.
func opsNode(t *testing.T, o ops.Options) *env {
	t.Helper()
	h := hub.New(hub.Options{OpsToken: kit.OpsToken, Logger: zerolog.New(io.Discard), Clock: o.Clock})
	o.Hub = h
	if o.Token == "" {
		o.Token = kit.OpsToken
	}
	s := ops.New(o)
	e := &env{t: t, Srv: newServer(t, nodeHandler(h, s))}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return e
}

// startApp starts an App with cfg on r (whose prefix it uses) behind its
// own server; stop drains it.
func startApp(t *testing.T, cfg config.Config, r *redistest.Redis) (e *env, stop func()) {
	t.Helper()
	cfg.KeyPrefix = r.Prefix
	a := app.New(cfg, r.Client, clock.NewFake(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)), zerolog.New(io.Discard))
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Drain(ctx)
		srv.Close()
	}
	t.Cleanup(stop)
	return &env{t: t, App: a, Srv: srv}, stop
}

func parseConfig(t *testing.T, yaml string) config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ---- tests ----

// TestSessionCookieIsRandomID: the cookie holds a fresh random session id,
// never the ops token (termhub_ops=<token> would hand the token to anyone
// who reads a cookie).
func TestSessionCookieIsRandomID(t *testing.T) {
	e := newEnv(t)
	a, b := e.login(), e.login()
	for _, c := range []*http.Cookie{a, b} {
		if strings.Contains(c.Value, kit.OpsToken) {
			t.Fatalf("the cookie carries the ops token: %q", c.Value)
		}
		raw, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil || len(raw) < 32 {
			t.Fatalf("cookie value %q is not ≥ 32 random bytes in base64url (%d bytes, %v)", c.Value, len(raw), err)
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure {
			t.Fatalf("cookie attributes: %+v", c)
		}
	}
	if a.Value == b.Value {
		t.Fatal("two logins got the same session id")
	}
	// Both sessions are live, each on its own.
	for _, c := range []*http.Cookie{a, b} {
		if code := e.sessionStatus(cookieHeader(c)); code != http.StatusNoContent {
			t.Fatalf("/ops/session with a fresh cookie: HTTP %d", code)
		}
	}
}

// TestSessionKeyHidesID: Redis holds a keyed hash of the session id, not the
// id, and neither the id nor the token is in the value; the session lives
// 12 h.
func TestSessionKeyHidesID(t *testing.T) {
	e := apptest.Start(t, kit.OpsConfig)
	env := &env{t: t, Srv: e.Srv}
	ck := env.login()
	key := oneSessionKey(t, e.Redis.Client, e.Redis.Prefix)
	raw, _ := base64.RawURLEncoding.DecodeString(ck.Value)
	val, err := e.Redis.Client.Get(kit.Ctx(t), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{ck.Value, hex.EncodeToString(raw), kit.OpsToken} {
		if strings.Contains(strings.ToLower(key), strings.ToLower(secret)) || strings.Contains(strings.ToLower(val), strings.ToLower(secret)) {
			t.Fatalf("Redis key %q / value %q reveals %q", key, val, secret)
		}
	}
	if ttl := pttl(t, e.Redis, key); ttl <= 11*time.Hour || ttl > ops.DefaultSessionIdle {
		t.Fatalf("session TTL %v, want 12 h", ttl)
	}
}

// TestSessionCookieSecure: Secure with ops_cookie_secure and over TLS, not
// over plain HTTP without the setting (which the browser would never send
// back).
func TestSessionCookieSecure(t *testing.T) {
	t.Run("ops_cookie_secure", func(t *testing.T) {
		h := apptest.Start(t, kit.OpsConfig+"ops_cookie_secure: true\n")
		e := &env{t: t, Srv: h.Srv}
		resp := e.post("/ops/login", map[string]string{"token": kit.OpsToken}, nil)
		if c := sessionCookieOf(resp); resp.StatusCode != http.StatusNoContent || c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			t.Fatalf("login with ops_cookie_secure: HTTP %d %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
		// Logout clears it with the same attributes.
		out := e.post("/ops/logout", nil, nil)
		if c := sessionCookieOf(out); c == nil || !c.Secure || c.MaxAge >= 0 {
			t.Fatalf("logout with ops_cookie_secure: %q", out.Header.Get("Set-Cookie"))
		}
	})
	t.Run("TLS", func(t *testing.T) {
		h := apptest.Start(t, kit.OpsConfig)
		tls := httptest.NewUnstartedServer(h.Srv.Config.Handler)
		tls.StartTLS()
		t.Cleanup(tls.Close)
		e := &env{t: t, Srv: tls}
		req, _ := http.NewRequestWithContext(kit.Ctx(t), http.MethodPost, tls.URL+"/ops/login", strings.NewReader(`{"token":"`+kit.OpsToken+`"}`))
		resp, err := tls.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c := sessionCookieOf(resp)
		if resp.StatusCode != http.StatusNoContent || c == nil || !c.Secure {
			t.Fatalf("login over TLS: HTTP %d %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
		if code := e.sessionStatus(cookieHeader(c)); code != http.StatusNoContent {
			t.Fatalf("/ops/session over TLS: HTTP %d", code)
		}
	})
}

// TestTokenCookieRefused: a cookie holding the ops token itself,
// termhub_ops=<ops token>, opens nothing: only a session id does.
func TestTokenCookieRefused(t *testing.T) {
	e := newEnv(t)
	pos := e.pos("pk1")
	old := http.Header{"Cookie": {hub.OpsCookie + "=" + kit.OpsToken}}
	if code := e.sessionStatus(old); code != http.StatusUnauthorized {
		t.Fatalf("/ops/session: HTTP %d, want 401", code)
	}
	if code := e.feedStatus(old); code != http.StatusUnauthorized {
		t.Fatalf("feed: HTTP %d, want 401", code)
	}
	if resp := e.post("/v1/ops/connections/"+pos.ConnectionID()+"/disconnect", nil, old); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("disconnect: HTTP %d, want 401", resp.StatusCode)
	}
	for _, path := range []string{"/v1/ops/terminals", "/metrics", "/v1/ops/webhooks"} {
		if resp := e.get(path, old); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: HTTP %d, want 401", path, resp.StatusCode)
		}
		if resp := e.get(path, bearer()); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s with the bearer token: HTTP %d, want 200", path, resp.StatusCode)
		}
	}
}

// TestLogoutRevokesSession: after logout the same cookie gets 401
// everywhere at once, and the feed it opened is closed.
func TestLogoutRevokesSession(t *testing.T) {
	e := newEnv(t)
	ck := e.login()
	pos := e.pos("pk1")
	if code := e.sessionStatus(cookieHeader(ck)); code != http.StatusNoContent {
		t.Fatalf("/ops/session before logout: HTTP %d", code)
	}
	f := e.mustFeed(cookieHeader(ck))
	f.until(ops.ActionSnapshot, nil)
	other := e.login() // another operator's session
	g := e.mustFeed(cookieHeader(other))
	g.until(ops.ActionSnapshot, nil)

	// Not from another site's page.
	cross := cookieHeader(ck)
	cross.Set("Origin", "https://evil.example")
	if resp := e.post("/ops/logout", nil, cross); resp.StatusCode != http.StatusUnauthorized || sessionCookieOf(resp) != nil {
		t.Fatalf("cross-origin logout: HTTP %d %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
	if code := e.sessionStatus(cookieHeader(ck)); code != http.StatusNoContent {
		t.Fatalf("a refused logout ended the session: HTTP %d", code)
	}

	out := e.post("/ops/logout", nil, cookieHeader(ck))
	if c := sessionCookieOf(out); out.StatusCode != http.StatusNoContent || c == nil || c.MaxAge >= 0 {
		t.Fatalf("logout: HTTP %d %q", out.StatusCode, out.Header.Get("Set-Cookie"))
	}
	if code := f.closeStatus(); code != websocket.StatusPolicyViolation {
		t.Fatalf("the logged-out session's feed closed with %d, want 1008", code)
	}
	if code := e.sessionStatus(cookieHeader(ck)); code != http.StatusUnauthorized {
		t.Fatalf("/ops/session after logout: HTTP %d, want 401", code)
	}
	if code := e.feedStatus(cookieHeader(ck)); code != http.StatusUnauthorized {
		t.Fatalf("feed after logout: HTTP %d, want 401", code)
	}
	h := cookieHeader(ck)
	h.Set("Origin", e.Srv.URL)
	if resp := e.post("/v1/ops/connections/"+pos.ConnectionID()+"/disconnect", nil, h); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("disconnect after logout: HTTP %d, want 401", resp.StatusCode)
	}
	// Logging out again is harmless; the other session lives on.
	if resp := e.post("/ops/logout", nil, cookieHeader(ck)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("second logout: HTTP %d", resp.StatusCode)
	}
	if code := e.sessionStatus(cookieHeader(other)); code != http.StatusNoContent {
		t.Fatalf("another session after the logout: HTTP %d", code)
	}
	e.Clock.Advance(ops.DefaultRefreshInterval)
	g.until(ops.ActionHeartbeats, nil)
}

// TestSessionIdleExpiry: a session expires after SessionIdle unused; a
// request, and an open feed's periodic check, start the idle time again.
func TestSessionIdleExpiry(t *testing.T) {
	r := redistest.New(t)
	const idle = time.Second
	clk := clock.NewFake(time.Now())
	e := opsNode(t, ops.Options{Redis: r.Client, Keys: keys.Space{Prefix: r.Prefix}, Clock: clk, SessionIdle: idle})
	ck := e.login()
	key := oneSessionKey(t, r.Client, r.Prefix)
	if d := pttl(t, r, key); d <= idle/2 || d > idle {
		t.Fatalf("a new session has %v to live, want about %v", d, idle)
	}

	// Used with less than half its idle time left: it has all of it again.
	waitTTLBelow(t, r, key, idle/2)
	if code := e.sessionStatus(cookieHeader(ck)); code != http.StatusNoContent {
		t.Fatalf("/ops/session: HTTP %d", code)
	}
	if d := pttl(t, r, key); d <= idle/2 {
		t.Fatalf("a request did not refresh the session: %v to live", d)
	}

	// An open feed keeps it alive too: it checks every SessionCheck.
	f := e.mustFeed(cookieHeader(ck))
	f.until(ops.ActionSnapshot, nil)
	waitTTLBelow(t, r, key, idle/2)
	clk.Advance(ops.DefaultSessionCheck)
	deadline := time.Now().Add(5 * time.Second)
	for pttl(t, r, key) <= idle/2 {
		if time.Now().After(deadline) {
			t.Fatal("the open feed's check did not refresh the session")
		}
		time.Sleep(time.Millisecond) // the feed's goroutine runs the check: polling with a deadline
	}
	_ = f.ws.CloseNow()

	// Unused for SessionIdle: gone.
	waitExpired(t, r, key)
	if code := e.sessionStatus(cookieHeader(ck)); code != http.StatusUnauthorized {
		t.Fatalf("/ops/session after the idle time: HTTP %d, want 401", code)
	}
	if code := e.feedStatus(cookieHeader(ck)); code != http.StatusUnauthorized {
		t.Fatalf("feed after the idle time: HTTP %d, want 401", code)
	}
}

// TestSessionsShared: sessions live in Redis, so every hub on it knows them
// and a logout on one hub ends the session on the others: at once for new
// requests, and at the next check for a feed already open there.
func TestSessionsShared(t *testing.T) {
	r := redistest.New(t)
	clkA, clkB := clock.NewFake(time.Now()), clock.NewFake(time.Now())
	ks := keys.Space{Prefix: r.Prefix}
	a := opsNode(t, ops.Options{Redis: r.Client, Keys: ks, Clock: clkA})
	b := opsNode(t, ops.Options{Redis: r.Client, Keys: ks, Clock: clkB})
	ck := a.login()
	if code := b.sessionStatus(cookieHeader(ck)); code != http.StatusNoContent {
		t.Fatalf("the session on the other hub: HTTP %d", code)
	}
	fb := b.mustFeed(cookieHeader(ck))
	fb.until(ops.ActionSnapshot, nil)

	if resp := a.post("/ops/logout", nil, cookieHeader(ck)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: HTTP %d", resp.StatusCode)
	}
	if code := b.sessionStatus(cookieHeader(ck)); code != http.StatusUnauthorized {
		t.Fatalf("the other hub after logout: HTTP %d, want 401", code)
	}
	clkB.Advance(ops.DefaultSessionCheck)
	if code := fb.closeStatus(); code != websocket.StatusPolicyViolation {
		t.Fatalf("the other hub's feed closed with %d, want 1008", code)
	}
}

// TestSessionSurvivesRestart: a session outlives the hub process that
// opened it (it is in Redis, not in memory), but not a change of ops_token.
func TestSessionSurvivesRestart(t *testing.T) {
	r := redistest.New(t)
	cfg := parseConfig(t, kit.OpsConfig)
	first, stop := startApp(t, cfg, r)
	ck := first.login()
	stop()
	if n := len(sessionKeys(t, r.Client, r.Prefix)); n != 1 {
		t.Fatalf("%d session keys in Redis, want 1", n)
	}

	second, stop := startApp(t, cfg, r)
	if code := second.sessionStatus(cookieHeader(ck)); code != http.StatusNoContent {
		t.Fatalf("the session after a restart: HTTP %d, want 204", code)
	}
	f := second.mustFeed(cookieHeader(ck))
	f.until(ops.ActionSnapshot, nil)
	_ = f.ws.CloseNow()
	stop()

	cfg.OpsToken = "a-new-ops-token"
	third, _ := startApp(t, cfg, r)
	if code := third.sessionStatus(cookieHeader(ck)); code != http.StatusUnauthorized {
		t.Fatalf("the session after the ops token changed: HTTP %d, want 401", code)
	}
}

// TestSessionsWithoutRedis: when Redis does not answer, a session cannot be
// opened, checked or ended: 503 with Retry-After (not 401, which would send
// the page to its login form). The bearer token needs no Redis.
func TestSessionsWithoutRedis(t *testing.T) {
	r := redistest.New(t)
	ks := keys.Space{Prefix: r.Prefix}
	up := opsNode(t, ops.Options{Redis: r.Client, Keys: ks})
	ck := up.login()

	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { _ = dead.Close() })
	e := opsNode(t, ops.Options{Redis: dead, Keys: ks, RequestTimeout: time.Second})

	unavailable := func(what string, resp *http.Response) {
		t.Helper()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || errorCode(t, resp) != "unavailable" {
			t.Fatalf("%s: HTTP %d Retry-After %q, want 503 unavailable", what, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if c := sessionCookieOf(resp); c != nil {
			t.Fatalf("%s set a cookie: %q", what, resp.Header.Get("Set-Cookie"))
		}
	}
	unavailable("login", e.post("/ops/login", map[string]string{"token": kit.OpsToken}, nil))
	unavailable("session", e.get("/ops/session", cookieHeader(ck)))
	unavailable("logout", e.post("/ops/logout", nil, cookieHeader(ck)))
	if code := e.feedStatus(cookieHeader(ck)); code != http.StatusServiceUnavailable {
		t.Fatalf("feed: HTTP %d, want 503", code)
	}
	// A wrong token is still 401, and a cookie that is no session id needs
	// no Redis to be refused.
	if resp := e.post("/ops/login", map[string]string{"token": "nope"}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: HTTP %d, want 401", resp.StatusCode)
	}
	if code := e.sessionStatus(http.Header{"Cookie": {hub.OpsCookie + "=" + kit.OpsToken}}); code != http.StatusUnauthorized {
		t.Fatalf("token as cookie: HTTP %d, want 401", code)
	}
	if code := e.sessionStatus(bearer()); code != http.StatusNoContent {
		t.Fatalf("bearer: HTTP %d, want 204", code)
	}
	e.mustFeed(bearer()).until(ops.ActionSnapshot, nil)
	// The failed logout ended nothing.
	if code := up.sessionStatus(cookieHeader(ck)); code != http.StatusNoContent {
		t.Fatalf("the session after a failed logout: HTTP %d", code)
	}
}
