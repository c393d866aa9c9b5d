// Package browser_test drives the ops dashboard in a real headless Chromium
// (docs/ops.md: "It must work in a real browser"). It lives in its own
// package so that the rest of the suite never needs a browser.
//
// It needs /usr/bin/chromium (Debian: apt-get install -y chromium). Without
// it the test skips, unless CI is set: then a missing browser fails.
package browser_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/sim"
)

const (
	chromiumPath = "/usr/bin/chromium"
	opsToken     = "browser-ops-token"
	// screenshotPath is where the test leaves a picture of the dashboard.
	screenshotPath = "/tmp/ops-dashboard.png"
	loginShotPath  = "/tmp/ops-login.png"
	// cardDelay marks the simulator's card waits, which the test releases
	// one by one so that every state stays on screen long enough to check.
	cardDelay = 1234 * time.Millisecond
)

const testConfig = `
grace_period: 60s
payment_timeout: 180s
heartbeat_interval: 24h
ops_token: "browser-ops-token"
merchants:
  - id: m_demo
    name: Demo Store
    api_keys:
      - {id: pk_demo, secret: sk_demo}
    terminals:
      - {device_id: TERM-001, secret: dk1, label: Front counter}
      - {device_id: TERM-002, secret: dk2, label: Back office}
  - id: m_cafe
    name: Corner Cafe
    api_keys:
      - {id: pk_cafe, secret: sk_cafe}
    terminals:
      - {device_id: CAFE-01, secret: dc1, label: Till}
`

func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s is missing: install it with `apt-get update && apt-get install -y chromium`", chromiumPath)
		}
		t.Skipf("%s not found: skipping the browser test (apt-get install -y chromium to run it; with CI set it fails instead)", chromiumPath)
	}
	return chromiumPath
}

// step runs actions with their own deadline, so a missing element fails
// the test quickly instead of hanging.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// nodeID is the id the hub lists itself under.
func nodeID(h *apptest.Env) string {
	if h.App.Node == nil {
		return "local"
	}
	return h.App.Node.ID()
}

func TestDashboardInChromium(t *testing.T) {
	exe := chromium(t)
	start := time.Now()

	// ---- the hub, on the wall clock ----
	h := apptest.Start(t, testConfig, apptest.WallClock(), apptest.Logger(zerolog.New(io.Discard)))
	srv := h.Srv
	copts := client.Options{BaseURL: srv.URL}

	// ---- the browser ----
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bctx := startBrowser(t, ctx, exe, 1440, 1000)

	// ---- sign in ----
	step(t, bctx, "open the dashboard",
		chromedp.Navigate(srv.URL+"/ops/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
	)
	step(t, bctx, "a wrong token is refused",
		chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	)
	if msg := eval[string](t, bctx, `document.querySelector('#login-error').textContent`); !strings.Contains(msg, "Wrong ops token") {
		t.Fatalf("login error = %q", msg)
	}
	screenshot(t, bctx, chromedp.FullScreenshot(100), loginShotPath)
	eval[bool](t, bctx, `(document.querySelector('#token').value = '') === ''`)
	step(t, bctx, "the right token signs in and the feed goes live",
		chromedp.SendKeys(chromedp.CSS("#token"), opsToken),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#dashboard")),
		chromedp.WaitReady(chromedp.CSS(`#feed-state[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="TERM-001"][data-status="offline"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="CAFE-01"][data-merchant="m_cafe"]`)),
		// The nodes panel lists this hub ("local" alone, its node id on a
		// Redis it may share).
		chromedp.WaitVisible(chromedp.CSS(`#nodes tr[data-node="`+nodeID(h)+`"]`)),
	)
	if c := eval[string](t, bctx, `document.cookie`); c != "" {
		t.Fatalf("the session cookie is visible to scripts (not HttpOnly): %q", c)
	}
	if v := eval[string](t, bctx, `document.querySelector('#token').value`); v != "" {
		t.Fatal("the token stays in the form after sign-in")
	}

	// Record every status a transaction row takes, as the page renders it.
	// A batch of records carries each change's old value, in order; the
	// row's value now follows the last of them (reading it per record would
	// put a later status before an earlier one when a batch holds two).
	eval[bool](t, bctx, `(() => {
		window.__statuses = {};
		const add = (id, s) => {
			if (!id || !s) return;
			const seen = window.__statuses[id] = window.__statuses[id] || [];
			if (seen[seen.length - 1] !== s) seen.push(s);
		};
		new MutationObserver((records) => {
			const rows = new Set();
			for (const r of records) {
				add(r.target.dataset.transaction, r.oldValue);
				rows.add(r.target);
			}
			for (const tr of rows) add(tr.dataset.transaction, tr.dataset.status);
		}).observe(document.querySelector('#transactions tbody'),
			{ subtree: true, attributes: true, attributeFilter: ['data-status'], attributeOldValue: true });
		return true;
	})()`)

	// ---- a simulated terminal comes online ----
	release := make(chan struct{})
	term, err := sim.New(sim.Options{
		Client: copts, DeviceID: "TERM-001", Secret: "dk1", CardDelay: cardDelay,
		Sleep: func(ctx context.Context, d time.Duration) error {
			if d != cardDelay {
				return client.SleepContext(ctx, d) // reconnect backoff
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	termCtx, stopTerm := context.WithCancel(context.Background())
	termDone := make(chan error, 1)
	go func() { termDone <- term.Run(termCtx) }()
	defer func() {
		stopTerm()
		if err := <-termDone; err != nil {
			t.Errorf("simulated terminal: %v", err)
		}
	}()
	step(t, bctx, "the terminal row turns online",
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="TERM-001"][data-status="online"]`)),
	)
	if got := eval[string](t, bctx, `document.querySelector('#terminals tr[data-terminal="TERM-001"]').dataset.connection`); got == "" || got != term.ConnectionID() {
		t.Fatalf("terminal row connection %q, simulator has %q", got, term.ConnectionID())
	}

	// ---- POS connections, and a pair of fighting keys ----
	dialPOS := func(key, secret string) *client.Conn {
		c, err := client.DialPOS(ctx, copts, key, secret)
		if err != nil {
			t.Fatalf("dial POS %s: %v", key, err)
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		return c
	}
	for i := 0; i < 4; i++ {
		dialPOS("pk_cafe", "sk_cafe") // a copied key: each displaces the last
	}
	pos := dialPOS("pk_demo", "sk_demo")
	posRow := `#connections tr[data-connection="` + pos.ConnectionID() + `"]`
	step(t, bctx, "the POS connection and the key conflict show",
		chromedp.WaitVisible(chromedp.CSS(posRow+`[data-api-key="pk_demo"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#conflicts tr[data-conflict="pk_cafe"]`)),
	)

	// ---- a payment, step by step ----
	if err := pos.Send(ctx, map[string]any{"action": "payment", "terminalId": "TERM-001", "amount": "42.50", "currency": "EUR", "reference": "order-7731"}); err != nil {
		t.Fatal(err)
	}
	m, err := pos.ReadUntil(ctx, "paymentResponse")
	if err != nil {
		t.Fatal(err)
	}
	var resp protocol.Response
	if err := m.Decode(&resp); err != nil || resp.Transaction == nil {
		t.Fatalf("paymentResponse %s: %v", m.Raw, err)
	}
	id := resp.Transaction.ID
	row := `#transactions tr[data-transaction="` + id + `"]`
	// commandReceived goes out at once; the card wait holds it at DISPATCHED.
	step(t, bctx, "the payment shows as DISPATCHED on its row and on the terminal",
		chromedp.WaitVisible(chromedp.CSS(row+`[data-status="DISPATCHED"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="TERM-001"][data-transaction="`+id+`"][data-transaction-status="DISPATCHED"]`)),
	)
	next := func() {
		select {
		case release <- struct{}{}:
		case <-time.After(10 * time.Second):
			t.Fatal("the simulator never reached its next card wait")
		}
	}
	next() // card presented
	step(t, bctx, "IN_PROGRESS", chromedp.WaitVisible(chromedp.CSS(row+`[data-status="IN_PROGRESS"]`)))
	next() // approved
	step(t, bctx, "COMPLETED",
		chromedp.WaitVisible(chromedp.CSS(row+`[data-status="COMPLETED"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="TERM-001"][data-transaction-status="COMPLETED"]`)),
	)
	seen := eval[[]string](t, bctx, `window.__statuses[`+jsString(id)+`] || []`)
	if strings.Join(seen, ",") != "PENDING,DISPATCHED,IN_PROGRESS,COMPLETED" {
		t.Fatalf("the row went through %v, want PENDING → DISPATCHED → IN_PROGRESS → COMPLETED", seen)
	}
	if amount := eval[string](t, bctx, `document.querySelector('`+row+`').cells[5].textContent`); amount != "42.50 EUR" {
		t.Fatalf("amount cell %q", amount)
	}

	// ---- screenshot, while everything is on screen ----
	screenshot(t, bctx, chromedp.FullScreenshot(100), screenshotPath)

	// ---- Disconnect a POS from the page ----
	step(t, bctx, "press Disconnect on the POS row",
		chromedp.Click(chromedp.CSS(posRow+` button[data-action="disconnect"]`)),
	)
	fdMsg, err := pos.ReadUntil(ctx, protocol.ActionForceDisconnect)
	if err != nil {
		t.Fatalf("waiting for forceDisconnect: %v", err)
	}
	var fd protocol.ForceDisconnect
	if err := fdMsg.Decode(&fd); err != nil || fd.Reason != protocol.ReasonAdmin || !fd.ReconnectAllowed {
		t.Fatalf("forceDisconnect = %+v (%v)", fd, err)
	}
	_, err = pos.Read(ctx)
	if code := client.CloseCode(err); code != int(protocol.CloseAdmin) {
		t.Fatalf("POS closed with %d (%v), want 4003", code, err)
	}
	step(t, bctx, "the POS row disappears", chromedp.WaitNotPresent(chromedp.CSS(posRow)))

	// The terminal drops off: its row leaves "online".
	term.Drop(time.Hour)
	step(t, bctx, "the terminal row turns reconnecting",
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="TERM-001"][data-status="reconnecting"]`)),
	)

	// ---- sign out: the session ends on the server, not just in the page ----
	sessionKeys := func() []string {
		ks, err := h.Redis.Client.Keys(ctx, keys.Space{Prefix: h.Redis.Prefix}.OpsSession("*")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	if ks := sessionKeys(); len(ks) != 1 {
		t.Fatalf("ops sessions in Redis while signed in: %v, want one", ks)
	}
	step(t, bctx, "Sign out shows the login form",
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.WaitNotVisible(chromedp.CSS("#dashboard")),
	)
	if ks := sessionKeys(); len(ks) != 0 {
		t.Fatalf("ops sessions in Redis after Sign out: %v", ks)
	}
	step(t, bctx, "a reload stays signed out",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
	)
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// screenshot saves, as a PNG at path, what capture takes: the whole page
// (chromedp.FullScreenshot) or the viewport (chromedp.CaptureScreenshot).
func screenshot(t *testing.T, ctx context.Context, capture chromedp.Action[[]byte], path string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, capture)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
