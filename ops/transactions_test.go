package ops_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/ops"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// sale creates a sale on terminal through the engine and returns its id.
func (e *env) sale(merchant, key, terminal, ref string) string {
	e.t.Helper()
	amount := int64(100)
	res, err := e.App.Engine.Create(kit.Ctx(e.t), session.CreateInput{MerchantID: merchant, APIKeyID: key,
		Req: &protocol.PaymentRequest{TerminalID: terminal, AmountMinor: &amount, Currency: "EUR", Reference: ref}})
	if err != nil {
		e.t.Fatalf("sale %s on %s: %v", ref, terminal, err)
	}
	return res.Txn.ID
}

// opsPage reads one page of GET /v1/ops/transactions.
func (e *env) opsPage(query url.Values) ops.TransactionsPage {
	e.t.Helper()
	resp := e.get("/v1/ops/transactions?"+query.Encode(), bearer())
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /v1/ops/transactions?%s: HTTP %d", query.Encode(), resp.StatusCode)
	}
	var p ops.TransactionsPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// GET /v1/ops/transactions pages through every merchant's transactions
// newest first, with nothing left out or listed twice, and filters by
// merchant and terminal; the snapshot carries the first page's cursor.
func TestOpsTransactionsPaging(t *testing.T) {
	e := newEnv(t)
	e.terminal("T1")
	e.terminal("U1")
	var want []string // newest first
	for i := range 11 {
		m, key, term := "m1", "pk1", "T1"
		if i%3 == 1 {
			m, key, term = "m2", "pk2", "U1"
		}
		want = slices.Insert(want, 0, e.sale(m, key, term, "page-"+strconv.Itoa(i)))
		e.Clock.Advance(time.Second)
	}

	var got []string
	q := url.Values{"limit": {"3"}}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p := e.opsPage(q)
		for _, tx := range p.Data {
			got = append(got, tx.ID)
		}
		if !p.HasMore {
			if p.NextCursor != nil {
				t.Fatalf("last page has nextCursor %q", *p.NextCursor)
			}
			break
		}
		if len(p.Data) != 3 || p.NextCursor == nil {
			t.Fatalf("page %d: %d transactions, cursor %v", pages, len(p.Data), p.NextCursor)
		}
		q.Set("after", *p.NextCursor)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged\n %v\nwant\n %v", got, want)
	}

	if p := e.opsPage(url.Values{"merchantId": {"m2"}}); len(p.Data) != 4 || p.HasMore {
		t.Fatalf("merchantId=m2: %d transactions (hasMore %v), want 4", len(p.Data), p.HasMore)
	}
	p := e.opsPage(url.Values{"terminalId": {"T1"}, "limit": {"100"}})
	if len(p.Data) != 7 {
		t.Fatalf("terminalId=T1: %d transactions, want 7", len(p.Data))
	}
	for _, tx := range p.Data {
		if tx.TerminalID != "T1" {
			t.Fatalf("terminalId=T1 lists %s of %s", tx.ID, tx.TerminalID)
		}
	}
	if p := e.opsPage(url.Values{"reference": {"page-4"}}); len(p.Data) != 1 || p.Data[0].ID != want[len(want)-5] {
		t.Fatalf("reference=page-4: %+v", p.Data)
	}

	// The snapshot's transactions are the first page, and its cursor
	// continues where they end.
	f := e.mustFeed(bearer())
	var snap ops.Snapshot
	f.until(ops.ActionSnapshot, nil).decode(t, &snap)
	if len(snap.Transactions) != 11 || snap.TransactionsCursor != nil {
		t.Fatalf("snapshot: %d transactions, cursor %v; want 11 and none", len(snap.Transactions), snap.TransactionsCursor)
	}
	if !slices.Equal(snap.Merchants, []ops.MerchantInfo{{ID: "m1", Name: "Shop One"}, {ID: "m2", Name: "Shop Two"}}) {
		t.Fatalf("snapshot merchants = %+v", snap.Merchants)
	}
}

// Bad input is a 400 naming the field; without the token, 401; the
// dashboard's session cookie is accepted.
func TestOpsTransactionsInput(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ query, field string }{
		{"merchantId=m9", "merchantId"},
		{"terminalId=NOPE", "terminalId"},
		{"terminalId=U1&merchantId=m1", "terminalId"},
		{"limit=0", "limit"},
		{"limit=101", "limit"},
		{"limit=x", "limit"},
		{"after=%21%21", "after"},
		{"reference=4111111111111111", "reference"},
		{"reference=%01", "reference"},
	} {
		resp := e.get("/v1/ops/transactions?"+c.query, bearer())
		var b protocol.ErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest || b.Error == nil || b.Error.Field != c.field {
			t.Errorf("%s: HTTP %d %+v, want 400 naming %s", c.query, resp.StatusCode, b.Error, c.field)
		}
	}
	if resp := e.get("/v1/ops/transactions", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: HTTP %d", resp.StatusCode)
	}
	if resp := e.get("/v1/ops/transactions", cookieHeader(e.login())); resp.StatusCode != http.StatusOK {
		t.Fatalf("with the session cookie: HTTP %d", resp.StatusCode)
	}
}

// statusEvents reads GET /v1/ops/terminals/{id}/events.
func (e *env) statusEvents(id string) []ops.StatusEvent {
	e.t.Helper()
	resp := e.get("/v1/ops/terminals/"+id+"/events", bearer())
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("events of %s: HTTP %d", id, resp.StatusCode)
	}
	var b struct {
		Data []ops.StatusEvent `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		e.t.Fatal(err)
	}
	return b.Data
}

// A terminal's status changes are recorded in Redis and listed newest
// first with their connections and times.
func TestTerminalStatusEvents(t *testing.T) {
	e := newEnv(t)
	if evs := e.statusEvents("T1"); len(evs) != 0 {
		t.Fatalf("events before any change: %+v", evs)
	}
	term := e.terminal("T1")
	connID := term.ConnectionID()
	online := e.Clock.Now().UTC()
	kit.Eventually(t, "the online change is recorded", func() bool { return len(e.statusEvents("T1")) == 1 })
	_ = term.CloseNow()
	kit.Eventually(t, "the drop is recorded", func() bool { return len(e.statusEvents("T1")) == 2 })
	e.Clock.Advance(61 * time.Second) // the grace period ends
	kit.Eventually(t, "the end of the grace period is recorded", func() bool { return len(e.statusEvents("T1")) == 3 })

	evs := e.statusEvents("T1")
	got := []string{evs[0].Status, evs[1].Status, evs[2].Status}
	if !slices.Equal(got, []string{protocol.TerminalOffline, protocol.TerminalReconnecting, protocol.TerminalOnline}) {
		t.Fatalf("statuses newest first = %v", got)
	}
	if evs[2].ConnectionID != connID || evs[2].PreviousStatus != protocol.TerminalOffline || !evs[2].At.Equal(online) {
		t.Fatalf("online event = %+v, want connection %s at %v", evs[2], connID, online)
	}
	if !evs[0].At.After(evs[1].At) || evs[1].PreviousStatus != protocol.TerminalOnline {
		t.Fatalf("events = %+v", evs)
	}
	if other := e.statusEvents("T2"); len(other) != 0 {
		t.Fatalf("T2 has events of its own: %+v", other)
	}

	if resp := e.get("/v1/ops/terminals/NOPE/events", bearer()); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown terminal: HTTP %d", resp.StatusCode)
	}
	if resp := e.get("/v1/ops/terminals/T1/events?limit=101", bearer()); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("limit=101: HTTP %d", resp.StatusCode)
	}
	if resp := e.get("/v1/ops/terminals/T1/events", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: HTTP %d", resp.StatusCode)
	}
}

// With several nodes each change is recorded once, by the node that makes
// it, and every node lists it.
func TestTerminalStatusEventsSeveralNodes(t *testing.T) {
	envs := apptest.StartNodes(t, kit.OpsConfig, 2)
	e0 := &env{t: t, App: envs[0].App, Clock: envs[0].Clock, Srv: envs[0].Srv, opts: envs[0].ClientOptions()}
	e1 := &env{t: t, App: envs[1].App, Clock: envs[1].Clock, Srv: envs[1].Srv, opts: envs[1].ClientOptions()}
	term := apptest.DialTerminal(t, e0.opts, "T1", kit.Secrets["T1"])
	apptest.WaitOnline(t, e0.App, "T1", term)
	kit.Eventually(t, "the other node lists the change", func() bool { return len(e1.statusEvents("T1")) == 1 })
	_ = term.CloseNow()
	// A node writes its changes in order, so once the drop is listed every
	// earlier write of that node (a repeat of the online, say) is too.
	kit.Eventually(t, "the drop is recorded", func() bool {
		evs := e1.statusEvents("T1")
		return len(evs) >= 2 && evs[0].Status == protocol.TerminalReconnecting
	})
	evs := e0.statusEvents("T1")
	got := make([]string, len(evs))
	for i, ev := range evs {
		got[i] = ev.Status + " " + ev.ConnectionID
	}
	if want := []string{protocol.TerminalReconnecting + " " + term.ConnectionID(), protocol.TerminalOnline + " " + term.ConnectionID()}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v (each change once)", got, want)
	}
}
