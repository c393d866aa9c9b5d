package browser_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/ops"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// troubleConfig has a terminal in each state the dashboard orders by
// (TERM-002 never connects: offline; TERM-003 drops: reconnecting;
// TERM-001 has a payment in flight: busy; TERM-004 and CAFE-01 idle), and
// grace and payment timeouts long enough that the fake clock can make a
// payment stuck without ending it.
const troubleConfig = `
grace_period: 600s
payment_timeout: 600s
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
      - {device_id: TERM-003, secret: dk3, label: Drive-through}
      - {device_id: TERM-004, secret: dk4, label: Terrace}
  - id: m_cafe
    name: Corner Cafe
    api_keys:
      - {id: pk_cafe, secret: sk_cafe}
    terminals:
      - {device_id: CAFE-01, secret: dc1, label: Till}
`

// historySales is how many sales TERM-003 gets before the others: more
// than the snapshot's 50, so that the oldest need "Load older".
const historySales = 60

// screenshotDir is where the test leaves the pictures docs/ops.md shows.
var screenshotDir = filepath.Join("..", "..", "docs", "img")

// TestDashboardTroubleFirst drives the dashboard at the two screen sizes
// docs/ops.md promises: nothing overflows (measured in the page), the
// terminals come trouble first, the search and the merchant filter find
// terminals, transaction ids and references, both drill-downs show their
// timelines, live changes arrive without a reload, unfinished payments
// show their age and turn stuck, and "Load older transactions" pages back
// through GET /v1/ops/transactions.
func TestDashboardTroubleFirst(t *testing.T) {
	exe := chromium(t)
	for _, size := range []struct{ w, h int64 }{{1280, 800}, {1920, 1080}} {
		t.Run(fmt.Sprintf("%dx%d", size.w, size.h), func(t *testing.T) {
			troubleFirst(t, exe, size.w, size.h)
		})
	}
}

// dash is one run's hub and browser.
type dash struct {
	t    *testing.T
	h    *apptest.Env
	bctx context.Context
	ctx  context.Context
}

// sale creates a sale through the engine, as a POS would, and returns it.
func (d *dash) sale(merchant, key, terminal, ref string) *protocol.Transaction {
	d.t.Helper()
	amount := int64(1250)
	res, err := d.h.App.Engine.Create(d.ctx, session.CreateInput{MerchantID: merchant, APIKeyID: key,
		Req: &protocol.PaymentRequest{TerminalID: terminal, AmountMinor: &amount, Currency: "EUR", Reference: ref}})
	if err != nil {
		d.t.Fatalf("sale %s on %s: %v", ref, terminal, err)
	}
	return res.Txn
}

// terminal connects a raw terminal (the test answers its commands) and
// waits until the hub has it online.
func (d *dash) terminal(id, secret string) *client.Conn {
	d.t.Helper()
	c := apptest.DialTerminal(d.t, d.h.ClientOptions(), id, secret)
	apptest.WaitOnline(d.t, d.h.App, id, c)
	return c
}

// answer reads the terminal's next startPayment and answers it with msgs
// (each an action and its fields besides transactionId).
func (d *dash) answer(term *client.Conn, msgs ...map[string]any) string {
	d.t.Helper()
	m, err := term.ReadUntil(d.ctx, protocol.ActionStartPayment)
	if err != nil {
		d.t.Fatalf("waiting for startPayment: %v", err)
	}
	var sp protocol.StartPayment
	if err := m.Decode(&sp); err != nil {
		d.t.Fatal(err)
	}
	for _, msg := range msgs {
		msg["transactionId"] = sp.TransactionID
		if err := term.Send(d.ctx, msg); err != nil {
			d.t.Fatal(err)
		}
	}
	return sp.TransactionID
}

// wait polls a JavaScript condition in the page until it is true or 10 s
// pass, then fails with what.
func (d *dash) wait(what, js string) {
	d.t.Helper()
	sctx, cancel := context.WithTimeout(d.bctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Run(sctx, chromedp.Poll[bool](js)); err != nil {
		d.t.Fatalf("%s: %v (waited for %s)", what, err, js)
	}
}

// visible lists the ids (data-<attr>) of the shown rows of a table body.
func (d *dash) visible(tbody, attr string) []string {
	d.t.Helper()
	return eval[[]string](d.t, d.bctx, `Array.from(document.querySelectorAll('`+tbody+` tr')).filter(r => !r.hidden && r.offsetParent !== null).map(r => r.dataset.`+attr+`)`)
}

// search types q into the search box (cleared first) as a user would.
func (d *dash) search(q string) {
	d.t.Helper()
	eval[bool](d.t, d.bctx, `(() => { const s = document.querySelector('#search'); s.value = ''; s.dispatchEvent(new Event('input')); return true; })()`)
	if q != "" {
		step(d.t, d.bctx, "type "+q, chromedp.SendKeys(chromedp.CSS("#search"), q))
	}
}

// overflow lists what is wider than its box: the page, and every shown
// card, table wrapper and table; and any Disconnect button cut off.
const overflowJS = `(() => {
	const bad = [];
	const de = document.documentElement;
	if (de.scrollWidth > de.clientWidth) bad.push('page ' + de.scrollWidth + ' > ' + de.clientWidth);
	document.querySelectorAll('.card, .table-wrap, table, .drawer, .drawer-body').forEach(e => {
		if (e.offsetParent === null && getComputedStyle(e).position !== 'fixed') return;
		if (e.closest('[hidden]')) return;
		if (e.scrollWidth > e.clientWidth) bad.push((e.id || e.className) + ' ' + e.scrollWidth + ' > ' + e.clientWidth);
	});
	document.querySelectorAll('button[data-action="disconnect"]').forEach(b => {
		const r = b.getBoundingClientRect();
		const card = b.closest('.card').getBoundingClientRect();
		if (r.width > 0 && (r.right > card.right || r.right > de.clientWidth)) bad.push('Disconnect of ' + b.dataset.connection + ' cut off');
	});
	return bad;
})()`

func (d *dash) noOverflow(when string) {
	d.t.Helper()
	if bad := eval[[]string](d.t, d.bctx, overflowJS); len(bad) > 0 {
		d.t.Errorf("%s: overflow: %v", when, bad)
	}
}

func troubleFirst(t *testing.T, exe string, w, hgt int64) {
	h := apptest.Start(t, troubleConfig, apptest.Logger(zerolog.New(io.Discard)))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := &dash{t: t, h: h, ctx: ctx}

	// ---- the hub's state: one terminal in each condition ----
	term3 := d.terminal("TERM-003", "dk3")
	_ = term3.CloseNow()
	d.waitHub("TERM-003 reconnecting", func() bool {
		s, _, _ := h.App.Hub.TerminalLive("TERM-003")
		return s == protocol.TerminalReconnecting
	})
	var history []*protocol.Transaction // oldest first; each supersedes the one before
	for i := range historySales {
		history = append(history, d.sale("m_demo", "pk_demo", "TERM-003", fmt.Sprintf("hist-%02d", i+1)))
		h.Clock.Advance(time.Second)
	}
	term4 := d.terminal("TERM-004", "dk4")
	declined := d.sale("m_demo", "pk_demo", "TERM-004", "decl-1")
	d.answer(term4, map[string]any{"action": "commandReceived"},
		map[string]any{"action": "paymentResult", "outcome": "declined", "responseCode": "05"})
	d.waitHub("decl-1 DECLINED", func() bool { return d.status("m_demo", declined.ID) == protocol.StatusDeclined })
	h.Clock.Advance(time.Second)
	term1 := d.terminal("TERM-001", "dk1")
	busy := d.sale("m_demo", "pk_demo", "TERM-001", "busy-1")
	d.answer(term1, map[string]any{"action": "commandReceived"})
	d.waitHub("busy-1 DISPATCHED", func() bool { return d.status("m_demo", busy.ID) == protocol.StatusDispatched })
	cafe := d.terminal("CAFE-01", "dc1")
	// POS connections and a pair of fighting keys, so that their tables are
	// measured too.
	for range 4 {
		apptest.DialPOS(t, h.ClientOptions(), "pk_cafe", "sk_cafe")
	}
	pos := apptest.DialPOS(t, h.ClientOptions(), "pk_demo", "sk_demo")

	// ---- the browser, at the size under test ----
	d.bctx = startBrowser(t, ctx, exe, 1920, 1200)
	step(t, d.bctx, "set the viewport", chromedp.EmulateViewport(w, hgt))
	d.signIn(
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="CAFE-01"][data-status="online"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#connections tr[data-connection="`+pos.ConnectionID()+`"] button[data-action="disconnect"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#conflicts tr[data-conflict="pk_cafe"]`)),
	)
	if vw := eval[int](t, d.bctx, `window.innerWidth`); vw != int(w) {
		t.Fatalf("viewport is %d wide, want %d", vw, w)
	}

	// ---- trouble first ----
	order := d.visible("#terminals tbody", "terminal")
	if want := []string{"TERM-002", "TERM-003", "TERM-001", "CAFE-01", "TERM-004"}; !slices.Equal(order, want) {
		t.Fatalf("terminal order %v, want %v (offline, reconnecting, busy, then idle by merchant)", order, want)
	}
	health := eval[[]string](t, d.bctx, `Array.from(document.querySelectorAll('#terminals tbody tr')).map(r => r.dataset.health)`)
	if want := []string{"offline", "reconnecting", "busy", "idle", "idle"}; !slices.Equal(health, want) {
		t.Fatalf("health %v, want %v", health, want)
	}
	// Offline and reconnecting are told apart by colour, and neither is
	// the grey of a cancelled payment.
	colours := eval[[]string](t, d.bctx, `['offline', 'reconnecting'].map(s => getComputedStyle(document.querySelector('#terminals tr[data-status="' + s + '"] .badge.s-' + s)).color)`)
	grey := eval[string](t, d.bctx, `(() => { const b = document.createElement('span'); b.className = 'badge t-CANCELLED'; document.body.appendChild(b); const c = getComputedStyle(b).color; b.remove(); return c; })()`)
	if colours[0] == colours[1] || colours[0] == grey || colours[1] == grey {
		t.Fatalf("badge colours offline %s, reconnecting %s, cancelled %s: want three different", colours[0], colours[1], grey)
	}
	// A healthy terminal whose last sale was declined: health idle and
	// online (green), the outcome apart.
	t4 := `#terminals tr[data-terminal="TERM-004"]`
	if !eval[bool](t, d.bctx, `!!document.querySelector('`+t4+` td.status .badge.s-online') && !document.querySelector('`+t4+` td.status .badge.t-DECLINED') && !!document.querySelector('`+t4+` td:nth-child(4) .badge.t-DECLINED')`) {
		t.Fatalf("TERM-004: want an online health badge and the DECLINED outcome in its own column: %s",
			eval[string](t, d.bctx, `document.querySelector('`+t4+`').innerText`))
	}
	d.noOverflow("dashboard")

	// ---- the age of unfinished payments, and stuck ones ----
	busyRow := `#transactions tr[data-transaction="` + busy.ID + `"]`
	d.wait("busy-1 shows its age", `(e => !!e && /^\d+s$/.test(e.textContent))(document.querySelector('`+busyRow+` .txn-age'))`)
	if eval[string](t, d.bctx, `document.querySelector('`+busyRow+`').dataset.stuck`) == "true" {
		t.Fatal("a payment seconds old is marked stuck")
	}
	pendingRow := `#transactions tr[data-transaction="` + history[len(history)-1].ID + `"]`
	// The page learns the hub's time from the heartbeats refresh, which the
	// fake clock fires at its own deadlines inside an Advance: the last one
	// within 90 s may carry a time up to one interval short of it. One more
	// interval makes sure a refresh at or past 90 s reaches the page.
	h.Clock.Advance(90*time.Second + ops.DefaultRefreshInterval)
	d.wait("busy-1 turns stuck", `document.querySelector('`+busyRow+`').dataset.stuck === 'true'`)
	d.wait("the PENDING sale of TERM-003 is stuck", `document.querySelector('`+pendingRow+`').dataset.stuck === 'true'`)
	d.wait("busy-1 is at least 90 s old on the page", `(m => !!m && m[1]*60 + +m[2] >= 90)(/^(\d+)m (\d+)s$/.exec(document.querySelector('`+busyRow+` .txn-age').textContent))`)
	// 90 to 95 s on the hub's clock, plus the wall-clock time the page has
	// run since the refresh that told it so.
	age := eval[string](t, d.bctx, `document.querySelector('`+busyRow+` .txn-age').textContent`)
	var m, sec int
	if _, err := fmt.Sscanf(age, "%dm %ds", &m, &sec); err != nil || m*60+sec < 90 || m*60+sec >= 150 {
		t.Fatalf("busy-1 age %q, want 1m 30s or a little more", age)
	}
	if eval[string](t, d.bctx, `document.querySelector('#transactions tr[data-transaction="`+declined.ID+`"]').dataset.stuck || ''`) == "true" {
		t.Fatal("a final transaction is marked stuck")
	}
	if !eval[bool](t, d.bctx, `document.querySelector('#terminals tr[data-terminal="TERM-001"]').classList.contains('stuck')`) {
		t.Fatal("the terminal of a stuck payment is not marked")
	}
	d.noOverflow("with stuck payments")
	screenshot(t, d.bctx, chromedp.CaptureScreenshot(), filepath.Join(screenshotDir, fmt.Sprintf("ops-%dx%d.png", w, hgt)))

	// ---- search: a terminal, a transaction id, a reference ----
	d.search("TERM-004")
	if got := d.visible("#terminals tbody", "terminal"); !slices.Equal(got, []string{"TERM-004"}) {
		t.Fatalf("search TERM-004: terminals %v", got)
	}
	if got := d.visible("#transactions tbody", "transaction"); !slices.Equal(got, []string{declined.ID}) {
		t.Fatalf("search TERM-004: transactions %v, want [%s]", got, declined.ID)
	}
	d.search(busy.ID)
	if got := d.visible("#transactions tbody", "transaction"); !slices.Equal(got, []string{busy.ID}) {
		t.Fatalf("search %s: transactions %v", busy.ID, got)
	}
	if got := d.visible("#terminals tbody", "terminal"); !slices.Equal(got, []string{"TERM-001"}) {
		t.Fatalf("search %s: terminals %v, want the terminal it is on", busy.ID, got)
	}
	d.search("hist-55")
	if got := d.visible("#transactions tbody", "reference"); !slices.Equal(got, []string{"hist-55"}) {
		t.Fatalf("search hist-55: references %v", got)
	}
	// A reference beyond the loaded transactions is asked of the hub.
	if eval[bool](t, d.bctx, `!!document.querySelector('#transactions tr[data-reference="hist-02"]')`) {
		t.Fatal("hist-02 is loaded before it is searched for")
	}
	d.search("hist-02")
	d.wait("hist-02 found on the hub", `(r => !!r && !r.hidden)(document.querySelector('#transactions tr[data-reference="hist-02"]'))`)
	if got := d.visible("#transactions tbody", "transaction"); !slices.Equal(got, []string{history[1].ID}) {
		t.Fatalf("search hist-02: transactions %v, want [%s]", got, history[1].ID)
	}
	d.search("no-such-thing")
	d.wait("nothing matches", `!document.querySelector('#transactions-none').hidden && !document.querySelector('#terminals-none').hidden`)
	d.search("")
	if got := d.visible("#terminals tbody", "terminal"); len(got) != 5 {
		t.Fatalf("cleared search shows terminals %v", got)
	}
	// The merchant filter, by name.
	if name := eval[string](t, d.bctx, `document.querySelector('#merchant-filter option[value="m_cafe"]').textContent`); !strings.Contains(name, "Corner Cafe") {
		t.Fatalf("merchant filter option %q, want the merchant's name", name)
	}
	setMerchant := func(m string) {
		eval[bool](t, d.bctx, `(() => { const s = document.querySelector('#merchant-filter'); s.value = `+jsString(m)+`; s.dispatchEvent(new Event('change')); return true; })()`)
	}
	setMerchant("m_cafe")
	if got := d.visible("#terminals tbody", "terminal"); !slices.Equal(got, []string{"CAFE-01"}) {
		t.Fatalf("merchant m_cafe: terminals %v", got)
	}
	if got := d.visible("#transactions tbody", "transaction"); len(got) != 0 {
		t.Fatalf("merchant m_cafe: transactions %v, want none", got)
	}
	setMerchant("")
	if got := eval[string](t, d.bctx, `document.querySelector('#terminals tr[data-terminal="CAFE-01"] td:nth-child(2)').textContent`); got != "Corner Cafe" {
		t.Fatalf("merchant cell %q, want the name", got)
	}

	// ---- drill-down: a transaction's timeline ----
	step(t, d.bctx, "open the declined sale",
		chromedp.Click(chromedp.CSS(`#transactions tr[data-transaction="`+declined.ID+`"] td:first-child`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail[data-kind="transaction"][data-id="`+declined.ID+`"]`)),
	)
	timeline := `Array.from(document.querySelectorAll('#detail-timeline li')).map(li => li.dataset.status)`
	if got := eval[[]string](t, d.bctx, timeline); !slices.Equal(got, []string{"PENDING", "DISPATCHED", "DECLINED"}) {
		t.Fatalf("timeline %v, want PENDING, DISPATCHED, DECLINED", got)
	}
	if !eval[bool](t, d.bctx, `Array.from(document.querySelectorAll('#detail-timeline li')).every(li => li.querySelector('.at').textContent !== '' && li.querySelector('.cause').textContent !== '')`) {
		t.Fatalf("a timeline entry without its time or cause: %s", eval[string](t, d.bctx, `document.querySelector('#detail-timeline').innerText`))
	}
	d.noOverflow("transaction drawer")
	// The open timeline follows the transaction live.
	step(t, d.bctx, "open the busy sale", chromedp.Click(chromedp.CSS(busyRow+` td:first-child`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail[data-id="`+busy.ID+`"]`)))
	if err := term1.Send(ctx, map[string]any{"action": "paymentResult", "transactionId": busy.ID, "outcome": "approved", "authCode": "A1"}); err != nil {
		t.Fatal(err)
	}
	d.wait("the open timeline gains COMPLETED", timeline+`.join() === 'PENDING,DISPATCHED,COMPLETED'`)
	d.wait("busy-1 is no longer stuck", `document.querySelector('`+busyRow+`').dataset.stuck === 'false'`)
	d.wait("TERM-001 becomes idle and moves down", `Array.from(document.querySelectorAll('#terminals tbody tr')).map(r => r.dataset.terminal).join() === 'TERM-002,TERM-003,CAFE-01,TERM-001,TERM-004'`)

	// ---- drill-down: a terminal's transactions and status changes ----
	step(t, d.bctx, "open TERM-003",
		chromedp.Click(chromedp.CSS(`#terminals tr[data-terminal="TERM-003"] td:first-child`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail[data-kind="terminal"][data-id="TERM-003"]`)),
	)
	events := `Array.from(document.querySelectorAll('#detail-events li')).map(li => li.dataset.status).join()`
	d.wait("TERM-003's status changes", events+` === 'reconnecting,online'`)
	d.wait("TERM-003's recent transactions", `document.querySelectorAll('#detail-txns tbody tr').length === 20`)
	if first := eval[string](t, d.bctx, `document.querySelector('#detail-txns tbody tr').dataset.transaction`); first != history[len(history)-1].ID {
		t.Fatalf("the terminal's newest transaction is %s, want %s", first, history[len(history)-1].ID)
	}
	d.noOverflow("terminal drawer")
	// A status change shows in the open view without a reload.
	d.terminal("TERM-003", "dk3")
	d.wait("TERM-003 back online in its view", events+` === 'online,reconnecting,online'`)
	d.wait("TERM-003 back online in the table", `document.querySelector('#terminals tr[data-terminal="TERM-003"]').dataset.status === 'online'`)
	// A transaction of the terminal view opens its own timeline.
	step(t, d.bctx, "open a transaction from the terminal view",
		chromedp.Click(chromedp.CSS(`#detail-txns tbody tr:last-child td:first-child`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail[data-kind="transaction"]`)),
	)
	if got := eval[[]string](t, d.bctx, timeline); len(got) < 2 || got[0] != "PENDING" || got[len(got)-1] != "SUPERSEDED" {
		t.Fatalf("superseded sale's timeline %v", got)
	}
	step(t, d.bctx, "close the drawer", chromedp.Click(chromedp.CSS("#detail-close")), chromedp.WaitNotVisible(chromedp.CSS("#detail")))

	// ---- a new payment appears live ----
	live := d.sale("m_cafe", "pk_cafe", "CAFE-01", "live-1")
	step(t, d.bctx, "the new payment shows",
		chromedp.WaitVisible(chromedp.CSS(`#transactions tr[data-transaction="`+live.ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#terminals tr[data-terminal="CAFE-01"][data-health="busy"]`)),
	)
	if got := d.visible("#transactions tbody", "transaction"); len(got) == 0 || got[0] != live.ID {
		t.Fatalf("the new payment is not first: %v", got[:min(3, len(got))])
	}
	d.answer(cafe)

	// ---- load more: the oldest sales are beyond the snapshot (but for
	// hist-02, found by the search) ----
	oldest := `#transactions tr[data-reference="hist-01"]`
	if eval[bool](t, d.bctx, `!!document.querySelector('`+oldest+`')`) {
		t.Fatal("the oldest sale is in the first page")
	}
	before := eval[int](t, d.bctx, `document.querySelectorAll('#transactions tbody tr').length`)
	step(t, d.bctx, "load older transactions",
		chromedp.Click(chromedp.CSS("#load-more")),
		chromedp.WaitVisible(chromedp.CSS(oldest)),
	)
	total := historySales + 3
	if n := eval[int](t, d.bctx, `document.querySelectorAll('#transactions tbody tr').length`); n != total || n <= before {
		t.Fatalf("%d transaction rows after load more (%d before), want %d", n, before, total)
	}
	d.wait("no more to load", `document.querySelector('#load-more').hidden`)
	refs := eval[[]string](t, d.bctx, `Array.from(document.querySelectorAll('#transactions tbody tr')).slice(-3).map(r => r.dataset.reference)`)
	if !slices.Equal(refs, []string{"hist-03", "hist-02", "hist-01"}) {
		t.Fatalf("the last rows are %v, want the oldest sales newest first", refs)
	}
	d.noOverflow("after load more")
}

// signIn opens the dashboard, signs in with the ops token and waits for
// the live feed, then for what then.
func (d *dash) signIn(then ...chromedp.Action[chromedp.Void]) {
	d.t.Helper()
	step(d.t, d.bctx, "sign in", append([]chromedp.Action[chromedp.Void]{
		chromedp.Navigate(d.h.Srv.URL + "/ops/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#token"), opsToken),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitReady(chromedp.CSS(`#feed-state[data-state="live"]`)),
	}, then...)...)
}

// waitHub polls the hub's state (not the page) until cond holds.
func (d *dash) waitHub(what string, cond func() bool) {
	d.t.Helper()
	kit.Eventually(d.t, what, cond)
}

// status is a transaction's status as the engine has it.
func (d *dash) status(merchant, id string) protocol.Status {
	t, err := d.h.App.Engine.Get(d.ctx, merchant, id)
	if err != nil || t == nil {
		return ""
	}
	return t.Status
}

// startBrowser starts a headless Chromium with a w×h window for the test
// (on ctx, long-lived: a deadline of its own would stop the browser),
// failing the test on any uncaught exception or console.error of the page.
func startBrowser(t *testing.T, ctx context.Context, exe string, w, h int) context.Context {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", false),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(w, h),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("chromium exited: %v (%s)", err, ee.Stderr)
		}
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var errs []string
	consoleCtx, stop := context.WithCancel(bctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range chromedp.Console(consoleCtx) {
			if err != nil {
				return
			}
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source == "") {
				mu.Lock()
				errs = append(errs, m.String())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, e := range errs {
			t.Errorf("page error: %s", e)
		}
	})
	return bctx
}

// TestDashboardSearchKeepsWhatItFound: with the page holding as many
// transactions as it keeps (live ones past the snapshot's page make it
// drop its oldest rows), a reference the search looked up on the hub stays
// on the page, through further live payments too.
func TestDashboardSearchKeepsWhatItFound(t *testing.T) {
	exe := chromium(t)
	h := apptest.Start(t, troubleConfig, apptest.Logger(zerolog.New(io.Discard)))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := &dash{t: t, h: h, ctx: ctx}
	d.terminal("TERM-001", "dk1")
	d.terminal("CAFE-01", "dc1")
	deep := d.sale("m_demo", "pk_demo", "TERM-001", "deep-1") // each sale supersedes the one before
	for i := range 60 {
		h.Clock.Advance(time.Second)
		d.sale("m_demo", "pk_demo", "TERM-001", fmt.Sprintf("old-%02d", i))
	}
	d.bctx = startBrowser(t, ctx, exe, 1920, 1200)
	d.signIn()
	live := func(n int) {
		for i := range n {
			h.Clock.Advance(time.Second)
			d.sale("m_cafe", "pk_cafe", "CAFE-01", fmt.Sprintf("live-%03d", i))
		}
		d.wait("the page holds its 100 newest", `document.querySelectorAll('#transactions tbody tr').length >= 100 && !!document.querySelector('#transactions tr[data-reference="live-`+fmt.Sprintf("%03d", n-1)+`"]')`)
	}
	live(60)
	if eval[bool](t, d.bctx, `!!document.querySelector('#transactions tr[data-transaction="`+deep.ID+`"]')`) {
		t.Fatal("the oldest sale is on the page before the search")
	}
	d.search("deep-1")
	d.wait("the search found deep-1 on the hub", `(r => !!r && !r.hidden)(document.querySelector('#transactions tr[data-transaction="`+deep.ID+`"]'))`)
	d.search("")
	live(5)
	if !eval[bool](t, d.bctx, `!!document.querySelector('#transactions tr[data-transaction="`+deep.ID+`"]')`) {
		t.Fatal("the sale the search found was dropped by later live payments")
	}
}
