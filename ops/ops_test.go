package ops_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/ops"
	"github.com/termhub/termhub/protocol"
)

func TestLogin(t *testing.T) {
	e := newEnv(t)

	t.Run("wrong token", func(t *testing.T) {
		resp := e.post("/ops/login", map[string]string{"token": "nope"}, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("HTTP %d, want 401", resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("Content-Type %q", ct)
		}
		if code := errorCode(t, resp); code != "unauthorized" {
			t.Fatalf("code %q", code)
		}
		if len(resp.Cookies()) != 0 {
			t.Fatalf("a refused login set cookies: %v", resp.Cookies())
		}
	})

	t.Run("empty and malformed", func(t *testing.T) {
		if resp := e.post("/ops/login", map[string]string{"token": ""}, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("empty token: HTTP %d", resp.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodPost, e.Srv.URL+"/ops/login", strings.NewReader("token=x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || errorCode(t, resp) != "invalid_request" {
			t.Fatalf("not JSON: HTTP %d", resp.StatusCode)
		}
	})

	t.Run("right token", func(t *testing.T) {
		resp := e.post("/ops/login", map[string]string{"token": kit.OpsToken}, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("HTTP %d, want 204", resp.StatusCode)
		}
		raw := resp.Header.Get("Set-Cookie")
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == hub.OpsCookie {
				ck = c
			}
		}
		switch {
		case ck == nil:
			t.Fatalf("no %s cookie in %q", hub.OpsCookie, raw)
		case !ck.HttpOnly:
			t.Errorf("cookie not HttpOnly: %q", raw)
		case ck.SameSite != http.SameSiteStrictMode:
			t.Errorf("cookie SameSite %v, want Strict: %q", ck.SameSite, raw)
		case ck.Path != "/":
			t.Errorf("cookie Path %q, want /", ck.Path)
		case ck.Secure:
			t.Errorf("cookie Secure over plain HTTP: the browser would never send it back")
		}
		// The cookie is what authorizes the dashboard from now on.
		req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/ops/session", nil)
		req.AddCookie(ck)
		sr, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		sr.Body.Close()
		if sr.StatusCode != http.StatusNoContent {
			t.Fatalf("/ops/session with the cookie: HTTP %d", sr.StatusCode)
		}
	})

	t.Run("secure behind TLS proxy", func(t *testing.T) {
		resp := e.post("/ops/login", map[string]string{"token": kit.OpsToken}, http.Header{"X-Forwarded-Proto": {"https"}})
		if c := resp.Cookies(); len(c) != 1 || !c[0].Secure {
			t.Fatalf("cookie over https not Secure: %q", resp.Header.Get("Set-Cookie"))
		}
	})

	t.Run("cross origin", func(t *testing.T) {
		resp := e.post("/ops/login", map[string]string{"token": kit.OpsToken}, http.Header{"Origin": {"https://evil.example"}})
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Fatalf("cross-origin login: HTTP %d cookies %v", resp.StatusCode, resp.Cookies())
		}
	})

	t.Run("session and logout", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/ops/session", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/ops/session without credentials: HTTP %d", resp.StatusCode)
		}
		out := e.post("/ops/logout", nil, nil)
		c := out.Cookies()
		if out.StatusCode != http.StatusNoContent || len(c) != 1 || c[0].Name != hub.OpsCookie || c[0].MaxAge >= 0 {
			t.Fatalf("logout: HTTP %d %q", out.StatusCode, out.Header.Get("Set-Cookie"))
		}
	})
}

func TestStaticPage(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.Srv.URL + "/ops")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/ops/" {
		t.Fatalf("GET /ops → %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}
	for _, want := range []string{`id="terminals"`, `id="connections"`, `id="conflicts"`, `id="transactions"`, `id="login-form"`, `src="app.js"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for path, ctype := range map[string]string{"/ops/app.js": "javascript", "/ops/app.css": "text/css"} {
		r, err := http.Get(e.Srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || !strings.Contains(r.Header.Get("Content-Type"), ctype) || len(b) < 100 {
			t.Errorf("%s: %d %q (%d bytes)", path, r.StatusCode, r.Header.Get("Content-Type"), len(b))
		}
	}
	// Nothing of the page may reach outside: no CDN, no remote fonts.
	for _, f := range []string{"/ops/", "/ops/app.js", "/ops/app.css"} {
		r, _ := http.Get(e.Srv.URL + f)
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if strings.Contains(string(b), "https://") || strings.Contains(string(b), "http://") {
			t.Errorf("%s refers to a remote URL", f)
		}
	}
}

// TestRootRedirect: the hub's bare address leads to the dashboard (GET and
// HEAD), and only the exact path / does: other unknown paths stay 404.
func TestRootRedirect(t *testing.T) {
	e := newEnv(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, e.Srv.URL+"/", nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ops/" {
			t.Fatalf("%s / → %d Location %q; want 302 to /ops/", method, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	resp, err := http.Get(e.Srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/ops/" {
		t.Fatalf("GET / followed → %d at %s; want the dashboard", resp.StatusCode, resp.Request.URL.Path)
	}
	for _, path := range []string{"/index.html", "/nothing", "/ops-x"} {
		r, err := noFollow.Get(e.Srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s → %d; want 404", path, r.StatusCode)
		}
	}
	post, err := noFollow.Post(e.Srv.URL+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / → %d; want 405", post.StatusCode)
	}
}

func TestFeedAuth(t *testing.T) {
	e := newEnv(t)

	if _, code, err := e.dialFeed(nil); err == nil || code != http.StatusUnauthorized {
		t.Fatalf("no credentials: HTTP %d, %v; want 401", code, err)
	}
	if _, code, _ := e.dialFeed(http.Header{"Cookie": {hub.OpsCookie + "=wrong"}}); code != http.StatusUnauthorized {
		t.Fatalf("wrong cookie: HTTP %d; want 401", code)
	}
	if _, code, _ := e.dialFeed(http.Header{"Authorization": {"Bearer wrong"}}); code != http.StatusUnauthorized {
		t.Fatalf("wrong bearer: HTTP %d; want 401", code)
	}

	ck := e.login()
	f := e.mustFeed(cookieHeader(ck))
	var snap ops.Snapshot
	m := f.until(ops.ActionSnapshot, nil)
	m.decode(t, &snap)
	if len(snap.Terminals) != 3 || snap.Connections == nil || snap.Conflicts == nil || snap.Transactions == nil {
		t.Fatalf("snapshot = %s", m.Raw)
	}
	seen := map[string]string{}
	for _, r := range snap.Terminals {
		seen[r.TerminalID] = r.MerchantID + "/" + r.Label + "/" + r.Status
	}
	if seen["T1"] != "m1/Front/offline" || seen["U1"] != "m2/Till/offline" {
		t.Fatalf("ops sees every merchant's terminals: %v", seen)
	}

	// Bearer works too.
	e.mustFeed(bearer()).until(ops.ActionSnapshot, nil)

	// A page of another site cannot open the feed with the operator's cookie:
	// the WebSocket origin check stays on.
	h := cookieHeader(ck)
	h.Set("Origin", "https://evil.example")
	if _, code, _ := e.dialFeed(h); code != http.StatusForbidden {
		t.Fatalf("cross-origin feed: HTTP %d; want 403", code)
	}
	// The same origin is fine (what the dashboard sends).
	h.Set("Origin", e.Srv.URL)
	e.mustFeed(h).until(ops.ActionSnapshot, nil)
}

func TestFeedLiveUpdates(t *testing.T) {
	e := newEnv(t)
	f := e.mustFeed(bearer())
	f.until(ops.ActionSnapshot, nil)

	// A terminal connects: terminalStatusUpdate with its merchant, and a
	// connectionUpdate.
	term := e.terminal("T1")
	var su ops.StatusUpdate
	f.until(protocol.ActionTerminalStatusUpdate, nil).decode(t, &su)
	if su.TerminalID != "T1" || su.MerchantID != "m1" || su.Status != protocol.TerminalOnline ||
		su.PreviousStatus != protocol.TerminalOffline || su.ConnectionID != term.ConnectionID() {
		t.Fatalf("terminalStatusUpdate = %+v", su)
	}
	var cu hub.ConnectionUpdate
	f.until(ops.ActionConnectionUpdate, nil).decode(t, &cu)
	if cu.Event != "connected" || cu.Connection.Kind != hub.KindTerminal || cu.Connection.DeviceID != "T1" {
		t.Fatalf("connectionUpdate = %+v", cu)
	}

	// Another merchant's POS shows too: ops sees all merchants.
	pos := e.pos("pk2")
	f.until(ops.ActionConnectionUpdate, func(m frame) bool {
		var u hub.ConnectionUpdate
		m.decode(t, &u)
		return u.Connection.Kind == hub.KindPOS && u.Connection.APIKeyID == "pk2" && u.Connection.ConnectionID == pos.ConnectionID()
	})

	// A payment: every state change is a transactionUpdate.
	pos1 := e.pos("pk1")
	if err := pos1.Send(kit.Ctx(t), map[string]any{"action": "payment", "terminalId": "T1", "amountMinor": 1250, "currency": "USD", "reference": "ops-1"}); err != nil {
		t.Fatal(err)
	}
	txn := nextTxn(t, f)
	if txn.Status != protocol.StatusPending || txn.TerminalID != "T1" || txn.MerchantID != "m1" || txn.Amount != "12.50" || txn.Version != 1 {
		t.Fatalf("first transactionUpdate = %+v", txn)
	}
	if _, err := term.ReadUntil(kit.Ctx(t), protocol.ActionStartPayment); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		msg  map[string]any
		want protocol.Status
	}{
		{map[string]any{"action": "commandReceived", "transactionId": txn.ID}, protocol.StatusDispatched},
		{map[string]any{"action": "paymentProgress", "transactionId": txn.ID, "stage": "card_presented"}, protocol.StatusInProgress},
		{map[string]any{"action": "paymentResult", "transactionId": txn.ID, "outcome": "approved", "authCode": "A1"}, protocol.StatusCompleted},
	}
	for i, s := range steps {
		if err := term.Send(kit.Ctx(t), s.msg); err != nil {
			t.Fatal(err)
		}
		got := nextTxn(t, f)
		if got.ID != txn.ID || got.Status != s.want || got.Version != int64(i+2) {
			t.Fatalf("transactionUpdate %d = %s v%d, want %s v%d", i, got.Status, got.Version, s.want, i+2)
		}
	}

	// A new feed's snapshot carries the transaction and the live state.
	f2 := e.mustFeed(bearer())
	var snap ops.Snapshot
	f2.until(ops.ActionSnapshot, nil).decode(t, &snap)
	if len(snap.Transactions) != 1 || snap.Transactions[0].ID != txn.ID || snap.Transactions[0].Status != protocol.StatusCompleted {
		t.Fatalf("snapshot transactions = %+v", snap.Transactions)
	}
	var t1 ops.TerminalRow
	for _, r := range snap.Terminals {
		if r.TerminalID == "T1" {
			t1 = r
		}
	}
	if t1.Status != protocol.TerminalOnline || t1.ConnectionID != term.ConnectionID() || t1.LastHeartbeat == nil {
		t.Fatalf("snapshot T1 = %+v", t1)
	}
	kinds := map[hub.Kind]int{}
	for _, c := range snap.Connections {
		kinds[c.Kind]++
	}
	if kinds[hub.KindPOS] != 2 || kinds[hub.KindTerminal] != 1 {
		t.Fatalf("snapshot connections = %+v", snap.Connections)
	}

	// The terminal drops: reconnecting, then the connection goes.
	_ = term.CloseNow()
	f.until(protocol.ActionTerminalStatusUpdate, func(m frame) bool {
		var u ops.StatusUpdate
		m.decode(t, &u)
		return u.TerminalID == "T1" && u.Status == protocol.TerminalReconnecting
	})
}

// nextTxn reads the next transactionUpdate.
func nextTxn(t *testing.T, f *feed) *protocol.Transaction {
	t.Helper()
	var u ops.TransactionUpdate
	f.until(ops.ActionTransactionUpdate, nil).decode(t, &u)
	if u.Transaction == nil {
		t.Fatal("transactionUpdate without a transaction")
	}
	return u.Transaction
}

func TestFeedCurrentTransactionInSnapshot(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	if err := pos.Send(kit.Ctx(t), map[string]any{"action": "payment", "terminalId": "T1", "amountMinor": 500, "currency": "EUR", "reference": "cur-1"}); err != nil {
		t.Fatal(err)
	}
	m, err := term.ReadUntil(kit.Ctx(t), protocol.ActionStartPayment)
	if err != nil {
		t.Fatal(err)
	}
	var sp protocol.StartPayment
	_ = m.Decode(&sp)
	if err := term.Send(kit.Ctx(t), map[string]any{"action": "commandReceived", "transactionId": sp.TransactionID}); err != nil {
		t.Fatal(err)
	}
	if _, err := pos.ReadUntil(kit.Ctx(t), protocol.ActionPaymentStatusUpdate); err != nil {
		t.Fatal(err)
	}
	var snap ops.Snapshot
	e.mustFeed(bearer()).until(ops.ActionSnapshot, nil).decode(t, &snap)
	for _, r := range snap.Terminals {
		if r.TerminalID == "T1" && (r.CurrentTransactionID != sp.TransactionID || r.CurrentTransactionStatus != protocol.StatusDispatched) {
			t.Fatalf("T1 row = %+v, want current %s DISPATCHED", r, sp.TransactionID)
		}
	}
}

func TestFeedHeartbeats(t *testing.T) {
	e := newEnv(t)
	f := e.mustFeed(bearer())
	f.until(ops.ActionSnapshot, nil)
	term := e.terminal("T1")
	f.until(protocol.ActionTerminalStatusUpdate, nil)

	e.Clock.Advance(ops.DefaultRefreshInterval)
	var hb ops.Heartbeats
	f.until(ops.ActionHeartbeats, nil).decode(t, &hb)
	if !hb.ServerTime.Equal(e.Clock.Now()) || len(hb.Terminals) != 1 || hb.Terminals[0].TerminalID != "T1" ||
		hb.Terminals[0].ConnectionID != term.ConnectionID() || hb.Terminals[0].LastHeartbeat.IsZero() || len(hb.Connections) != 1 {
		t.Fatalf("heartbeats = %+v", hb)
	}

	// The terminal speaks later: the next refresh carries the newer time.
	before := hb.Terminals[0].LastHeartbeat
	e.Clock.Advance(ops.DefaultRefreshInterval)
	if err := term.Send(kit.Ctx(t), map[string]any{"action": "commandReceived", "transactionId": "txn_unknown"}); err != nil {
		t.Fatal(err)
	}
	if _, err := term.ReadUntil(kit.Ctx(t), protocol.ActionError); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(ops.DefaultRefreshInterval)
	f.until(ops.ActionHeartbeats, func(m frame) bool {
		var h ops.Heartbeats
		m.decode(t, &h)
		return len(h.Terminals) == 1 && h.Terminals[0].LastHeartbeat.After(before)
	})
}

func TestDisconnect(t *testing.T) {
	e := newEnv(t)
	pos := e.pos("pk1")
	path := "/v1/ops/connections/" + pos.ConnectionID() + "/disconnect"

	if resp := e.post(path, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: HTTP %d", resp.StatusCode)
	}
	resp := e.post("/v1/ops/connections/conn_nope/disconnect", nil, bearer())
	if resp.StatusCode != http.StatusNotFound || errorCode(t, resp) != "not_found" {
		t.Fatalf("unknown id: HTTP %d", resp.StatusCode)
	}
	// A cookie-authenticated POST from another site's page is refused.
	ck := e.login()
	h := cookieHeader(ck)
	h.Set("Origin", "https://evil.example")
	if resp := e.post(path, nil, h); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("cross-origin kick: HTTP %d", resp.StatusCode)
	}

	f := e.mustFeed(cookieHeader(ck))
	f.until(ops.ActionSnapshot, nil)
	h.Set("Origin", e.Srv.URL)
	if resp := e.post(path, nil, h); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("kick with the cookie: HTTP %d", resp.StatusCode)
	}

	m, err := pos.ReadUntil(kit.Ctx(t), protocol.ActionForceDisconnect)
	if err != nil {
		t.Fatal(err)
	}
	var fd protocol.ForceDisconnect
	_ = m.Decode(&fd)
	if fd.Reason != protocol.ReasonAdmin || !fd.ReconnectAllowed {
		t.Fatalf("forceDisconnect = %+v", fd)
	}
	_, err = pos.Read(kit.Ctx(t))
	if code := client.CloseCode(err); code != int(protocol.CloseAdmin) {
		t.Fatalf("close code %d (%v), want 4003", code, err)
	}
	f.until(ops.ActionConnectionUpdate, func(m frame) bool {
		var u hub.ConnectionUpdate
		m.decode(t, &u)
		return u.Event == "disconnected" && u.Connection.ConnectionID == pos.ConnectionID()
	})
	// Gone now: a second kick is 404.
	if resp := e.post(path, nil, bearer()); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second kick: HTTP %d", resp.StatusCode)
	}
}

func TestFeedConflicts(t *testing.T) {
	e := newEnv(t)
	f := e.mustFeed(bearer())
	f.until(ops.ActionSnapshot, nil)
	// Three displacements of one key within 60 s: fighting keys.
	for i := 0; i < 4; i++ {
		e.pos("pk1")
	}
	var c ops.Conflicts
	f.until(ops.ActionConflicts, func(m frame) bool {
		m.decode(t, &c)
		return len(c.Conflicts) == 1
	})
	if k := c.Conflicts[0]; k.APIKeyID != "pk1" || k.MerchantID != "m1" || k.Displacements < 3 {
		t.Fatalf("conflicts = %+v", c)
	}
	var snap ops.Snapshot
	e.mustFeed(bearer()).until(ops.ActionSnapshot, nil).decode(t, &snap)
	if len(snap.Conflicts) != 1 || snap.Conflicts[0].APIKeyID != "pk1" {
		t.Fatalf("snapshot conflicts = %+v", snap.Conflicts)
	}
}

// A conflict clears a fighting-keys window (60 s, the hub's clock) after the
// key's last displacement: GET /v1/ops/terminals and new snapshots no longer
// list it, and an open feed gets the shorter conflicts list with its
// heartbeats, with no connection change to carry it.
func TestFeedConflictClearsWhenTheKeysStopFighting(t *testing.T) {
	e := newEnv(t)
	f := e.mustFeed(bearer())
	f.until(ops.ActionSnapshot, nil)
	var last *client.Conn
	for i := 0; i < 4; i++ {
		last = e.pos("pk1")
	}
	f.until(ops.ActionConflicts, func(m frame) bool {
		var c ops.Conflicts
		m.decode(t, &c)
		return len(c.Conflicts) == 1
	})
	listed := func() []hub.KeyConflict {
		t.Helper()
		var body struct {
			Conflicts []hub.KeyConflict `json:"conflicts"`
		}
		resp := e.get("/v1/ops/terminals", bearer())
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/ops/terminals: HTTP %d %v", resp.StatusCode, err)
		}
		return body.Conflicts
	}
	// The POS that won goes away too, so that only the clock can clear the
	// conflict (a connection change would also make the feed read it again).
	id := last.ConnectionID()
	_ = last.Close()
	f.until(ops.ActionConnectionUpdate, func(m frame) bool {
		var u hub.ConnectionUpdate
		m.decode(t, &u)
		return u.Event == "disconnected" && u.Connection.ConnectionID == id
	})

	e.Clock.Advance(59 * time.Second)
	if got := listed(); len(got) != 1 || got[0].APIKeyID != "pk1" {
		t.Fatalf("59 s after the fight: conflicts %+v, want pk1 still", got)
	}
	e.Clock.Advance(2 * time.Second)
	f.until(ops.ActionConflicts, func(m frame) bool {
		var c ops.Conflicts
		m.decode(t, &c)
		return len(c.Conflicts) == 0
	})
	if got := listed(); len(got) != 0 {
		t.Fatalf("61 s after the fight: conflicts %+v, want none", got)
	}
	var snap ops.Snapshot
	e.mustFeed(bearer()).until(ops.ActionSnapshot, nil).decode(t, &snap)
	if len(snap.Conflicts) != 0 {
		t.Fatalf("snapshot conflicts = %+v, want none", snap.Conflicts)
	}
	// Fighting again is caught again.
	for i := 0; i < 4; i++ {
		e.pos("pk1")
	}
	if got := listed(); len(got) != 1 {
		t.Fatalf("after a new fight: conflicts %+v", got)
	}
}

func TestFeedEndsOnDrain(t *testing.T) {
	e := newEnv(t)
	f := e.mustFeed(bearer())
	f.until(ops.ActionSnapshot, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.App.Drain(ctx)
	}()
	if code := f.closeStatus(); code != websocket.StatusCode(protocol.CloseShutdown) {
		t.Fatalf("close %d, want 4004", code)
	}
	<-done
	if _, code, _ := e.dialFeed(bearer()); code != http.StatusServiceUnavailable {
		t.Fatalf("feed after drain: HTTP %d, want 503", code)
	}
}

// TestSlowFeedDropped checks that a feed that cannot keep up is cut off
// instead of holding anyone back.
func TestSlowFeedDropped(t *testing.T) {
	h := hub.New(hub.Options{OpsToken: kit.OpsToken, Logger: zerolog.New(io.Discard)})
	s := ops.New(ops.Options{Hub: h, Token: kit.OpsToken, FeedQueue: 1})
	e := &env{t: t, Srv: newServer(t, nodeHandler(h, s))}
	f := e.mustFeed(bearer())
	f.until(ops.ActionSnapshot, nil)

	// The publisher never waits, whatever the feed does.
	big := strings.Repeat("x", 32<<10)
	start := time.Now()
	for i := 0; i < 2000; i++ {
		s.PublishTransaction(&protocol.Transaction{ID: "txn_" + string(rune('a'+i%26)), Description: big, Version: int64(i)})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publishing took %v", d)
	}
	if code := f.closeStatus(); code != websocket.StatusPolicyViolation {
		t.Fatalf("close %d, want 1008", code)
	}
}

func TestObserveTransactionsFanOut(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var got []string
	e.App.Ops.ObserveTransactions(func(tx *protocol.Transaction) {
		mu.Lock()
		got = append(got, string(tx.Status))
		mu.Unlock()
	})
	e.terminal("T1")
	pos := e.pos("pk1")
	if err := pos.Send(kit.Ctx(t), map[string]any{"action": "payment", "terminalId": "T1", "amountMinor": 100, "currency": "USD", "reference": "fan-1"}); err != nil {
		t.Fatal(err)
	}
	m, err := pos.ReadUntil(kit.Ctx(t), "paymentResponse")
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.Response
	_ = json.Unmarshal(m.Raw, &r)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the added observer saw no transaction")
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
	mu.Lock()
	defer mu.Unlock()
	if got[0] != string(protocol.StatusPending) || r.Transaction == nil {
		t.Fatalf("observer saw %v", got)
	}
}
