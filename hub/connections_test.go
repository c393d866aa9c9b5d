package hub_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/protocol"
)

const (
	displacedByKey    = "Connection displaced by new connection with same API key"
	displacedByDevice = "Connection displaced by new connection of the same device"
)

func TestPOSGreeting(t *testing.T) {
	th := newTestHub(t)
	u1 := th.terminal(t, "U1") // another merchant's terminal, online
	t1 := th.terminal(t, "T1")

	p := th.pos(t, "pk1")
	g := decodeMap(t, p.Greeting().Raw)
	id, _ := g["connectionId"].(string)
	if !connIDPattern.MatchString(id) || id != p.ID() {
		t.Errorf("connectionId %q, want conn_ and 24 hex digits", id)
	}
	for _, other := range []string{t1.ID(), u1.ID()} {
		if id == other {
			t.Errorf("connectionId %s reused", id)
		}
	}
	now := th.clock.Now().Format(time.RFC3339Nano)
	want := map[string]any{
		"action": "connected", "connectionId": id, "merchantId": "m1", "apiKeyId": "pk1", "serverTime": now,
		"terminals": []any{
			map[string]any{"terminalId": "T1", "merchantId": "m1", "label": "Front counter", "status": "online",
				"connectionId": t1.ID(), "lastHeartbeat": now, "currentTransactionId": ""},
			map[string]any{"terminalId": "T2", "merchantId": "m1", "label": "Back counter", "status": "offline",
				"connectionId": "", "lastHeartbeat": nil, "currentTransactionId": ""},
		},
	}
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("POS greeting\n got %s\nwant %s", p.Greeting().Raw, mustJSON(t, want))
	}

	p2 := th.pos(t, "pk2")
	var g2 protocol.POSConnected
	if err := p2.Greeting().Decode(&g2); err != nil {
		t.Fatal(err)
	}
	if g2.MerchantID != "m2" || len(g2.Terminals) != 1 || g2.Terminals[0].TerminalID != "U1" ||
		g2.Terminals[0].Status != protocol.TerminalOnline || g2.Terminals[0].ConnectionID != u1.ID() {
		t.Fatalf("m2 greeting %s, want U1 online only", p2.Greeting().Raw)
	}
}

func TestTerminalGreeting(t *testing.T) {
	th := newTestHub(t)
	p := th.terminal(t, "T1")
	g := decodeMap(t, p.Greeting().Raw)
	id, _ := g["connectionId"].(string)
	if !connIDPattern.MatchString(id) {
		t.Errorf("connectionId %q, want conn_ and 24 hex digits", id)
	}
	want := map[string]any{
		"action": "connected", "connectionId": id, "deviceId": "T1",
		"serverTime": th.clock.Now().Format(time.RFC3339Nano), "heartbeatInterval": float64(15),
	}
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("terminal greeting\n got %s\nwant %s", p.Greeting().Raw, mustJSON(t, want))
	}
	if s := th.TerminalStatus("T1"); s != protocol.TerminalOnline {
		t.Errorf("T1 status %q, want online", s)
	}
}

func TestPOSDisplacement(t *testing.T) {
	th := newTestHub(t)
	first := th.pos(t, "pk1")
	sibling := th.pos(t, "pk1b") // another key of the same merchant

	second := th.pos(t, "pk1")
	if second.ID() == first.ID() {
		t.Fatalf("new connection reuses id %s", first.ID())
	}
	first.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, true, int(protocol.CloseDisplaced))

	// The newcomer is served, the sibling key untouched.
	if rows := second.barrier(t); len(rows) != 2 {
		t.Errorf("listTerminals on the new connection: %d rows, want 2", len(rows))
	}
	sibling.barrier(t)
	if !sibling.alive() {
		t.Fatal("the other key of the merchant was disconnected")
	}
	eventually(t, "the displaced connection to be gone", func() bool {
		ids := th.connectionIDs()
		want := []string{second.ID(), sibling.ID()}
		sort.Strings(want)
		return reflect.DeepEqual(ids, want)
	})
	if c := th.ops(t).Conflicts; len(c) != 0 {
		t.Errorf("one displacement reported as a conflict: %+v", c)
	}
}

func TestFightingKeys(t *testing.T) {
	// No heartbeats in the way of the minute-long steps of the clock.
	th := newTestHub(t, withHeartbeat(time.Hour))
	sibling := th.pos(t, "pk1b")

	a := th.pos(t, "pk1")
	b := th.pos(t, "pk1") // 1st displacement, at t0
	a.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, true, int(protocol.CloseDisplaced))

	th.clock.Advance(10 * time.Second)
	c := th.pos(t, "pk1") // 2nd, at t0+10s
	b.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, true, int(protocol.CloseDisplaced))
	if conflicts := th.ops(t).Conflicts; len(conflicts) != 0 {
		t.Fatalf("conflict after two displacements: %+v", conflicts)
	}

	th.clock.Advance(10 * time.Second)
	third := th.clock.Now()
	d := th.pos(t, "pk1") // 3rd, at t0+20s: the displaced one must stop
	c.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, false, int(protocol.CloseDisplaced))
	d.barrier(t) // the newcomer is kept and served

	want := []hub.KeyConflict{{APIKeyID: "pk1", MerchantID: "m1", Displacements: 3, LastAt: third}}
	if got := th.ops(t).Conflicts; !reflect.DeepEqual(got, want) {
		t.Fatalf("ops conflicts %+v, want %+v", got, want)
	}
	if !th.logged(map[string]any{"level": "warn", "apiKeyId": "pk1", "merchantId": "m1", "displacements": float64(3)}) {
		t.Errorf("no warning naming pk1 and its 3 displacements in the hub log:\n%s", th.logs.String())
	}

	e := th.pos(t, "pk1") // 4th, still inside the minute
	d.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, false, int(protocol.CloseDisplaced))
	if got := th.ops(t).Conflicts; len(got) != 1 || got[0].Displacements != 4 {
		t.Errorf("ops conflicts after the 4th displacement %+v, want 4 displacements", got)
	}

	// Past 60 s since the last displacement the count starts again.
	th.clock.Advance(61 * time.Second)
	f := th.pos(t, "pk1")
	e.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, true, int(protocol.CloseDisplaced))
	f.barrier(t)

	sibling.barrier(t)
	if !sibling.alive() {
		t.Fatal("the fight of pk1 disconnected pk1b")
	}
}

func TestDisplacementsSpreadOverMoreThanAMinuteAreNoConflict(t *testing.T) {
	th := newTestHub(t, withHeartbeat(time.Hour))
	prev := th.pos(t, "pk1")
	// Displacements at t0, +35 s, +70 s, +105 s: at most two ever fall
	// within 60 s of each other.
	for _, step := range []time.Duration{0, 35 * time.Second, 35 * time.Second, 35 * time.Second} {
		th.clock.Advance(step)
		next := th.pos(t, "pk1")
		prev.expectForceDisconnect(t, protocol.ReasonAPIKeyUsedElsewhere, displacedByKey, true, int(protocol.CloseDisplaced))
		prev = next
	}
	if c := th.ops(t).Conflicts; len(c) != 0 {
		t.Errorf("conflicts %+v, want none", c)
	}
}

func TestTerminalDisplacement(t *testing.T) {
	th := newTestHub(t)
	log := recordStatus(th.Hub)
	pos := th.pos(t, "pk1")

	old := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", old.ID(), protocol.TerminalOffline, protocol.TerminalOnline)

	fresh := th.terminal(t, "T1") // the same device after a network change
	old.expectForceDisconnect(t, protocol.ReasonDeviceElsewhere, displacedByDevice, true, int(protocol.CloseDisplaced))
	pos.expectStatus(t, th.clock.Now(), "T1", fresh.ID(), protocol.TerminalOnline, protocol.TerminalOnline)

	if s := th.TerminalStatus("T1"); s != protocol.TerminalOnline {
		t.Errorf("T1 status %q, want online", s)
	}
	rows := pos.barrier(t)
	if rows[0].TerminalID != "T1" || rows[0].Status != protocol.TerminalOnline || rows[0].ConnectionID != fresh.ID() {
		t.Errorf("listTerminals row %+v, want T1 online on %s", rows[0], fresh.ID())
	}

	// Once every connection has finished, the whole story must be: online,
	// online on the new connection, and (from the drain) reconnecting. The
	// old connection's end must not have made the terminal "reconnecting".
	th.drain(t)
	want := []string{
		"T1 " + old.ID() + " offline→online",
		"T1 " + fresh.ID() + " online→online",
		"T1 " + fresh.ID() + " online→reconnecting",
	}
	if got := log.summary(); !reflect.DeepEqual(got, want) {
		t.Fatalf("status updates\n got %q\nwant %q", got, want)
	}
}

func TestBadFrames(t *testing.T) {
	t.Run("unknown action", func(t *testing.T) {
		th := newTestHub(t)
		p := th.pos(t, "pk1")
		p.sendRaw(t, websocket.MessageText, []byte(`{"action":"teleport","requestId":"req-1"}`))
		m := decodeMap(t, p.expect(t, protocol.ActionError).Raw)
		if m["requestId"] != "req-1" || m["code"] != "unknown_action" || m["field"] != "action" || m["message"] == "" || len(m) != 5 {
			t.Fatalf("reply %v, want error unknown_action on field action for req-1", m)
		}
		// A numeric requestId is echoed as sent.
		p.sendRaw(t, websocket.MessageText, []byte(`{"action":"teleport","requestId":42}`))
		if m := decodeMap(t, p.expect(t, protocol.ActionError).Raw); m["requestId"] != float64(42) || m["code"] != "unknown_action" {
			t.Fatalf("reply %v, want unknown_action for requestId 42", m)
		}
		p.barrier(t) // the connection is kept
	})

	t.Run("unknown action from a terminal", func(t *testing.T) {
		th := newTestHub(t)
		p := th.terminal(t, "T1")
		p.sendRaw(t, websocket.MessageText, []byte(`{"action":"selfDestruct","requestId":"t-1"}`))
		m := decodeMap(t, p.expect(t, protocol.ActionError).Raw)
		if m["requestId"] != "t-1" || m["code"] != "unknown_action" || m["field"] != "action" {
			t.Fatalf("reply %v, want unknown_action for t-1", m)
		}
		if !p.alive() {
			t.Fatal("terminal disconnected for an unknown action")
		}
	})

	t.Run("invalid requests keep the connection", func(t *testing.T) {
		th := newTestHub(t)
		p := th.pos(t, "pk1")
		for _, tc := range []struct {
			frame string
			field string
		}{
			{`{"action":"payment","requestId":"req-2","amountMinor":1000,"currency":"EUR","reference":"order-1"}`, "terminalId"},
			{`{"action":"payment","requestId":"req-2","terminalId":"T1","currency":"EUR","reference":"order-1"}`, "amountMinor"},
			{`{"action":"payment","requestId":"req-2","terminalId":"T1","amountMinor":1000,"currency":"XXX1","reference":"order-1"}`, "currency"},
			{`{"action":"payment","requestId":"req-2","terminalId":"T1","amountMinor":"1000","currency":"EUR","reference":"order-1"}`, "amountMinor"},
			{`{"requestId":"req-2"}`, "action"},
			{`{"action":7,"requestId":"req-2"}`, "action"},
		} {
			p.sendRaw(t, websocket.MessageText, []byte(tc.frame))
			m := decodeMap(t, p.expect(t, protocol.ActionError).Raw)
			if m["requestId"] != "req-2" || m["code"] != "invalid_request" || m["field"] != tc.field {
				t.Errorf("%s: reply %v, want invalid_request on field %s", tc.frame, m, tc.field)
			}
		}
		for _, frame := range []string{`[1,2,3]`, `"listTerminals"`, `null`} {
			p.sendRaw(t, websocket.MessageText, []byte(frame))
			if m := decodeMap(t, p.expect(t, protocol.ActionError).Raw); m["code"] != "invalid_request" {
				t.Errorf("%s: reply %v, want invalid_request", frame, m)
			}
		}
		p.barrier(t)
	})

	closing := []struct {
		name  string
		typ   websocket.MessageType
		frame func(t *testing.T) []byte
	}{
		{"binary frame", websocket.MessageBinary, func(*testing.T) []byte { return []byte(`{"action":"listTerminals"}`) }},
		{"non-JSON text", websocket.MessageText, func(*testing.T) []byte { return []byte("hello hub") }},
		{"truncated JSON", websocket.MessageText, func(*testing.T) []byte { return []byte(`{"action":"listTerminals"`) }},
		{"70 KiB of valid JSON", websocket.MessageText, func(t *testing.T) []byte { return jsonFrame(t, "big", 70<<10) }},
		{"64 KiB + 1 of valid JSON", websocket.MessageText, func(t *testing.T) []byte { return jsonFrame(t, "big", 64<<10+1) }},
	}
	for _, tc := range closing {
		t.Run(tc.name+" closes with 4400", func(t *testing.T) {
			th := newTestHub(t)
			p := th.pos(t, "pk1")
			p.sendRaw(t, tc.typ, tc.frame(t))
			p.expectClosed(t, int(protocol.CloseProtocolError))
			eventually(t, "the connection to be unregistered", func() bool { return len(th.Connections()) == 0 })
		})
	}

	t.Run("terminal non-JSON closes with 4400", func(t *testing.T) {
		th := newTestHub(t)
		p := th.terminal(t, "T1")
		p.sendRaw(t, websocket.MessageText, []byte("}{"))
		p.expectClosed(t, int(protocol.CloseProtocolError))
	})

	for _, size := range []int{60 << 10, 64 << 10} {
		t.Run("a frame of exactly "+strconv.Itoa(size>>10)+" KiB is answered", func(t *testing.T) {
			th := newTestHub(t)
			p := th.pos(t, "pk1")
			p.sendRaw(t, websocket.MessageText, jsonFrame(t, "sized", size))
			m := decodeMap(t, p.expect(t, protocol.ActionTerminals).Raw)
			if m["requestId"] != "sized" {
				t.Fatalf("reply %v, want the terminals reply to \"sized\"", m)
			}
			p.barrier(t)
		})
	}
}

func TestStaleConnectionIsClosed(t *testing.T) {
	th := newTestHub(t)
	ws := th.rawPOS(t, "pk1") // reads its greeting, then never again: no pongs
	th.waitTimers(t, 1)
	// Each tick runs the heartbeat inside Advance; a stale connection's is
	// not armed again. A tick while the hub is still busy with the
	// connection (registering it: the greeting leaves before registration
	// ends) counts as a sign of life, so the connection goes stale at the
	// third tick at the earliest, never sooner, and later when the first
	// ticks fall in that window: past the second, the clock steps on until
	// it does.
	for tick := 1; tick <= 2; tick++ {
		th.clock.Advance(15 * time.Second)
		if th.clock.Pending() == 0 {
			t.Fatalf("stale at heartbeat %d, want the third at the earliest (a sign of life, then two misses)", tick)
		}
	}
	eventually(t, "the connection to go stale", func() bool {
		th.clock.Advance(15 * time.Second)
		return th.clock.Pending() == 0
	})

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("reading after three missed heartbeats: %v (close code %d), want forceDisconnect first", err, client.CloseCode(err))
	}
	want := map[string]any{"action": "forceDisconnect", "reason": protocol.ReasonStale,
		"message": "No heartbeat answered within two intervals", "reconnectAllowed": true}
	if got := decodeMap(t, data); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %s, want %s", data, mustJSON(t, want))
	}
	_, data, err = ws.Read(ctx)
	if code := client.CloseCode(err); code != int(protocol.CloseStale) {
		t.Fatalf("after forceDisconnect: %q, %v (close code %d), want close code 4002", data, err, code)
	}
	eventually(t, "the stale connection to be unregistered", func() bool { return len(th.Connections()) == 0 })
}

func TestStaleTerminalGoesReconnecting(t *testing.T) {
	th := newTestHub(t)
	pos := th.pos(t, "pk1") // answers every ping
	ws := th.rawTerminal(t, "T1")
	termID := pos.expect(t, protocol.ActionTerminalStatusUpdate)
	var online protocol.TerminalStatusUpdate
	if err := termID.Decode(&online); err != nil || online.Status != protocol.TerminalOnline {
		t.Fatalf("got %s, want T1 online", termID.Raw)
	}
	th.waitTimers(t, 2)

	// Two ticks: the first finds the greeting's sign of life, the second
	// counts one miss. The terminal is still online.
	for range 2 {
		th.clock.Advance(15 * time.Second)
		th.waitSeen(t, pos.ID())
	}
	if rows := pos.barrier(t); rows[0].Status != protocol.TerminalOnline {
		t.Fatalf("T1 %s after one missed heartbeat, want online", rows[0].Status)
	}

	// The third tick is the second miss in a row.
	th.clock.Advance(15 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, data, err := ws.Read(ctx)
	if err != nil || decodeMap(t, data)["reason"] != protocol.ReasonStale {
		t.Fatalf("terminal read %q, %v; want forceDisconnect stale_connection_timeout", data, err)
	}
	// Reading the close answers it, which ends the hub's close handshake
	// (the hub waits up to 5 s for it before it unregisters the terminal).
	if _, _, err := ws.Read(ctx); client.CloseCode(err) != int(protocol.CloseStale) {
		t.Fatalf("terminal: %v, want close code 4002", err)
	}
	pos.expectStatus(t, th.clock.Now(), "T1", online.ConnectionID, protocol.TerminalOnline, protocol.TerminalReconnecting)
	if !pos.alive() {
		t.Fatal("the POS that answered every ping was closed")
	}
}

func TestHeartbeatKeepsLiveClients(t *testing.T) {
	th := newTestHub(t)
	pos := th.pos(t, "pk1")
	term := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOffline, protocol.TerminalOnline)
	th.waitTimers(t, 2)

	for range 6 { // 90 s: six heartbeats, each answered before the next
		th.clock.Advance(15 * time.Second)
		th.waitSeen(t, pos.ID(), term.ID())
	}
	rows := pos.barrier(t) // nothing was pushed meanwhile: no status change
	if rows[0].Status != protocol.TerminalOnline || rows[0].ConnectionID != term.ID() {
		t.Errorf("T1 %+v, want online on %s", rows[0], term.ID())
	}
	if rows[0].LastHeartbeat == nil || !rows[0].LastHeartbeat.Equal(th.clock.Now()) {
		t.Errorf("T1 lastHeartbeat %v, want %s", rows[0].LastHeartbeat, th.clock.Now())
	}
	if !pos.alive() || !term.alive() {
		t.Fatal("a client answering every ping was disconnected")
	}
}

func TestDrain(t *testing.T) {
	th := newTestHub(t)
	peers := []*peer{th.pos(t, "pk1"), th.pos(t, "pk2"), th.terminal(t, "T1"), th.terminal(t, "U1")}

	th.drain(t)
	for _, p := range peers {
		// A POS may first hear that a terminal is going away too.
		m := p.nextSkipping(t, protocol.ActionTerminalStatusUpdate)
		want := map[string]any{"action": "forceDisconnect", "reason": protocol.ReasonShutdown,
			"message": "Server is shutting down; reconnect", "reconnectAllowed": true}
		if got := decodeMap(t, m.Raw); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %s, want %s", p.name, m.Raw, mustJSON(t, want))
		}
		p.expectClosed(t, int(protocol.CloseShutdown))
	}
	if ids := th.connectionIDs(); len(ids) != 0 {
		t.Errorf("connections left after Drain: %v", ids)
	}

	// New upgrades are refused with 503 while draining.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, dial := range []func() error{
		func() error { _, err := client.DialPOS(ctx, th.options(), "pk1", secrets["pk1"]); return err },
		func() error { _, err := client.DialTerminal(ctx, th.options(), "T1", secrets["T1"]); return err },
	} {
		var he *client.HandshakeError
		if err := dial(); !errors.As(err, &he) {
			t.Fatalf("dial while draining: %v, want a refused handshake", err)
		}
		assertError(t, he.StatusCode, []byte(he.Body), http.StatusServiceUnavailable, protocol.CodeUnavailable, "", "shutting down")
	}
	if status, body := th.get(t, "/readyz", nil); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: HTTP %d %s, want 503", status, body)
	}
}

func TestAdminDisconnect(t *testing.T) {
	th := newTestHub(t)
	pos := th.pos(t, "pk1")
	term := th.terminal(t, "T1")
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOffline, protocol.TerminalOnline)

	kick := &protocol.Disconnect{Code: protocol.CloseAdmin, Reason: protocol.ReasonAdmin,
		Message: "Disconnected by an operator", ReconnectAllowed: true}
	if !th.Disconnect(term.ID(), kick) {
		t.Fatalf("Disconnect(%s) found no connection", term.ID())
	}
	term.expectForceDisconnect(t, protocol.ReasonAdmin, "Disconnected by an operator", true, int(protocol.CloseAdmin))
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOnline, protocol.TerminalReconnecting)
	eventually(t, "the kicked terminal to be unregistered", func() bool {
		ids := th.connectionIDs()
		return len(ids) == 1 && ids[0] == pos.ID()
	})
	if th.Disconnect(term.ID(), kick) {
		t.Error("Disconnect of a finished connection reported it existed")
	}
	if th.Disconnect("conn_000000000000000000000000", kick) {
		t.Error("Disconnect of an unknown id reported it existed")
	}
	pos.barrier(t)
}

func TestReloadDropsRemovedCredentials(t *testing.T) {
	th := newTestHub(t)
	kept := th.pos(t, "pk1")
	removed := th.pos(t, "pk1b")
	t1 := th.terminal(t, "T1")
	t2 := th.terminal(t, "T2")
	u1 := th.terminal(t, "U1")

	cfg := parseTestConfig(t)
	m1 := &cfg.Merchants[0]
	m1.APIKeys = m1.APIKeys[:1]     // pk1b revoked
	m1.Terminals = m1.Terminals[:1] // T2 unregistered
	th.Reload(config.NewDirectory(cfg))

	removed.expectForceDisconnectSkipping(t, []string{protocol.ActionTerminalStatusUpdate},
		protocol.ReasonOther, "Credential no longer valid", false, int(protocol.ClosePolicy))
	t2.expectForceDisconnect(t, protocol.ReasonOther, "Credential no longer valid", false, int(protocol.ClosePolicy))
	for _, p := range []*peer{kept, t1, u1} {
		if !p.alive() {
			t.Errorf("%s was disconnected by a reload that kept its credential", p.name)
		}
	}
	for {
		// The merchant's POS heard T1 and T2 come online and T2 drop.
		m := kept.expect(t, protocol.ActionTerminalStatusUpdate)
		var u protocol.TerminalStatusUpdate
		if err := m.Decode(&u); err != nil {
			t.Fatal(err)
		}
		if u.TerminalID == "T2" && u.Status == protocol.TerminalReconnecting {
			break
		}
	}
	rows := kept.barrier(t)
	if len(rows) != 1 || rows[0].TerminalID != "T1" {
		t.Errorf("terminals after the reload %+v, want T1 only", rows)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := client.DialPOS(ctx, th.options(), "pk1b", secrets["pk1b"])
	var he *client.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("dial with a revoked key: %v, want 401", err)
	}
	assertError(t, he.StatusCode, []byte(he.Body), http.StatusUnauthorized, protocol.CodeUnauthorized,
		protocol.HeaderAPIKey, "unknown X-Api-Key", allSecrets()...)
}
