package hub_test

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

func TestTerminalStatusTransitions(t *testing.T) {
	// Heartbeats every hour, so that minute-long clock steps test the grace
	// timer alone.
	th := newTestHub(t, withHeartbeat(time.Hour))
	pos := th.pos(t, "pk1")
	other := th.pos(t, "pk2") // another merchant: must hear nothing of T1

	term := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOffline, protocol.TerminalOnline)

	// The terminal loses its network.
	if err := term.conn.CloseNow(); err != nil {
		t.Fatal(err)
	}
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOnline, protocol.TerminalReconnecting)
	dropped := th.clock.Now()

	th.clock.Advance(59 * time.Second)
	if rows := pos.barrier(t); rows[0].Status != protocol.TerminalReconnecting || rows[0].ConnectionID != term.ID() {
		t.Fatalf("T1 59 s into the grace period: %+v, want reconnecting on %s", rows[0], term.ID())
	}
	th.clock.Advance(time.Second)
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalReconnecting, protocol.TerminalOffline)
	if s := th.TerminalStatus("T1"); s != protocol.TerminalOffline {
		t.Errorf("TerminalStatus(T1) %q, want offline", s)
	}
	rows := pos.barrier(t)
	if rows[0].Status != protocol.TerminalOffline || rows[0].ConnectionID != "" ||
		rows[0].LastHeartbeat == nil || !rows[0].LastHeartbeat.Equal(dropped) {
		t.Errorf("T1 after the grace period: %+v, want offline, no connection, last heartbeat %s", rows[0], dropped)
	}

	// Back after the grace period: online from offline.
	back := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", back.ID(), protocol.TerminalOffline, protocol.TerminalOnline)

	// A clean close is a drop too; back inside the grace period: online
	// from reconnecting, and the stopped grace timer never fires.
	if err := back.conn.Close(); err != nil {
		t.Fatal(err)
	}
	pos.expectStatus(t, th.clock.Now(), "T1", back.ID(), protocol.TerminalOnline, protocol.TerminalReconnecting)
	th.clock.Advance(30 * time.Second)
	again := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", again.ID(), protocol.TerminalReconnecting, protocol.TerminalOnline)
	th.clock.Advance(2 * time.Minute)
	if rows := pos.barrier(t); rows[0].Status != protocol.TerminalOnline || rows[0].ConnectionID != again.ID() {
		t.Fatalf("T1 %+v, want online on %s", rows[0], again.ID())
	}

	// Merchant isolation: m2's POS heard nothing of all this.
	rows = other.barrier(t)
	if len(rows) != 1 || rows[0].TerminalID != "U1" {
		t.Fatalf("m2 terminals %+v, want U1 only", rows)
	}
	// ...and m2's own terminal is told to m2, not to m1.
	u1 := th.terminal(t, "U1")
	other.expectStatus(t, th.clock.Now(), "U1", u1.ID(), protocol.TerminalOffline, protocol.TerminalOnline)
	pos.barrier(t)
}

func TestTerminalStatusNotPushedToOtherMerchant(t *testing.T) {
	th := newTestHub(t, withHeartbeat(time.Hour))
	other := th.pos(t, "pk2")
	pos := th.pos(t, "pk1")
	sibling := th.pos(t, "pk1b") // every POS of the merchant hears it

	term := th.terminal(t, "T1")
	for _, p := range []*peer{pos, sibling} {
		p.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOffline, protocol.TerminalOnline)
	}
	_ = term.conn.CloseNow()
	for _, p := range []*peer{pos, sibling} {
		p.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOnline, protocol.TerminalReconnecting)
	}
	th.clock.Advance(time.Minute)
	for _, p := range []*peer{pos, sibling} {
		p.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalReconnecting, protocol.TerminalOffline)
	}

	// Every update was published (and queued in order) before the replies
	// below, so a stray one would arrive first.
	other.barrier(t)

	// And nothing comes in a while after either.
	quiet := time.NewTimer(100 * time.Millisecond)
	defer quiet.Stop()
	select {
	case m := <-other.msgs:
		t.Fatalf("m2 POS received %s", m.Raw)
	case <-quiet.C:
	}
}

func TestListTerminalsAndLookup(t *testing.T) {
	th := newTestHub(t)
	pos := th.pos(t, "pk1")
	t1 := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", t1.ID(), protocol.TerminalOffline, protocol.TerminalOnline)
	u1 := th.terminal(t, "U1") // m2's

	now := th.clock.Now()
	wantRows := []protocol.TerminalInfo{
		{TerminalID: "T1", MerchantID: "m1", Label: "Front counter", Status: protocol.TerminalOnline, ConnectionID: t1.ID(), LastHeartbeat: &now},
		{TerminalID: "T2", MerchantID: "m1", Label: "Back counter", Status: protocol.TerminalOffline},
	}

	// WebSocket listTerminals: "terminals" with the requestId echoed.
	pos.send(t, protocol.ActionListTerminals, "lt-1", nil)
	m := pos.expect(t, protocol.ActionTerminals)
	raw := decodeMap(t, m.Raw)
	if len(raw) != 3 || raw["requestId"] != "lt-1" {
		t.Errorf("reply %s, want exactly action, requestId lt-1 and terminals", m.Raw)
	}
	var reply struct {
		Terminals []protocol.TerminalInfo `json:"terminals"`
	}
	if err := m.Decode(&reply); err != nil {
		t.Fatal(err)
	}
	assertRows(t, "listTerminals", reply.Terminals, wantRows)

	// REST: the same rows.
	resp := th.restGet(t, "pk1", "/v1/terminals", nil)
	var list struct {
		Data []protocol.TerminalInfo `json:"data"`
	}
	if resp.Status != http.StatusOK || resp.Decode(&list) != nil {
		t.Fatalf("GET /v1/terminals: HTTP %d %s", resp.Status, resp.Body)
	}
	assertRows(t, "GET /v1/terminals", list.Data, wantRows)

	// One terminal, by device id or (legacy) by its live connection id.
	for _, id := range []string{"T1", t1.ID()} {
		resp := th.restGet(t, "pk1", "/v1/terminals/"+id, nil)
		var one struct {
			Terminal protocol.TerminalInfo `json:"terminal"`
		}
		if resp.Status != http.StatusOK || resp.Decode(&one) != nil {
			t.Fatalf("GET /v1/terminals/%s: HTTP %d %s", id, resp.Status, resp.Body)
		}
		assertRows(t, "GET /v1/terminals/"+id, []protocol.TerminalInfo{one.Terminal}, wantRows[:1])
	}
	if resp := th.restGet(t, "pk1", "/v1/terminals/T2", nil); resp.Status != http.StatusOK {
		t.Errorf("GET /v1/terminals/T2 (offline): HTTP %d %s, want 200", resp.Status, resp.Body)
	}

	// Another merchant's device, its connection, a POS connection and an
	// unknown id are all answered as not existing, identically.
	missing := th.restGet(t, "pk1", "/v1/terminals/T9", nil)
	assertError(t, missing.Status, missing.Body, http.StatusNotFound, protocol.CodeTerminalNotFound, "id", "terminal")
	for _, id := range []string{"U1", u1.ID(), pos.ID()} {
		resp := th.restGet(t, "pk1", "/v1/terminals/"+id, nil)
		if resp.Status != missing.Status || string(resp.Body) != string(missing.Body) {
			t.Errorf("GET /v1/terminals/%s: HTTP %d %s, want it answered like an unknown id: HTTP %d %s",
				id, resp.Status, resp.Body, missing.Status, missing.Body)
		}
	}
	// The other merchant sees its own device.
	if resp := th.restGet(t, "pk2", "/v1/terminals/"+u1.ID(), nil); resp.Status != http.StatusOK {
		t.Errorf("m2 GET /v1/terminals/<U1's connection>: HTTP %d %s, want 200", resp.Status, resp.Body)
	}

	// Once the terminal is gone its old connection id resolves no more.
	_ = t1.conn.CloseNow()
	pos.expectStatus(t, th.clock.Now(), "T1", t1.ID(), protocol.TerminalOnline, protocol.TerminalReconnecting)
	if resp := th.restGet(t, "pk1", "/v1/terminals/"+t1.ID(), nil); resp.Status != http.StatusNotFound {
		t.Errorf("GET /v1/terminals/<closed connection>: HTTP %d %s, want 404", resp.Status, resp.Body)
	}
}

func assertRows(t *testing.T, what string, got, want []protocol.TerminalInfo) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows %+v, want %d", what, len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		gt, wt := g.LastHeartbeat, w.LastHeartbeat
		g.LastHeartbeat, w.LastHeartbeat = nil, nil
		if !reflect.DeepEqual(g, w) || (gt == nil) != (wt == nil) || (gt != nil && !gt.Equal(*wt)) {
			t.Errorf("%s row %d: %+v (lastHeartbeat %v), want %+v (lastHeartbeat %v)", what, i, got[i], gt, want[i], wt)
		}
	}
}
