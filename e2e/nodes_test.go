package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// Several nodes on one Redis are one hub (docs/cluster.md): these tests
// spread clients across in-process nodes sharing a Redis (miniredis, or
// REDIS_URL) and a fake clock.

// nodeEnvs starts n nodes of kit.OpsConfig.
func nodeEnvs(t *testing.T, n int) []*env {
	t.Helper()
	var out []*env
	for _, h := range apptest.StartNodes(t, kit.OpsConfig, n) {
		out = append(out, envFrom(t, h))
	}
	return out
}

// onlineEverywhere waits until every node sees device online on conn.
func onlineEverywhere(t *testing.T, es []*env, device string, conn *client.Conn) {
	t.Helper()
	for _, e := range es {
		apptest.WaitOnline(t, e.App, device, conn)
	}
}

func TestNodesPaymentAcrossNodes(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	pos := es[0].pos("pk1")

	// POS on node 0, terminal on node 1: the command goes over, the
	// terminal's answer comes back, in order, and the final is acked.
	id := completedSale(t, pos, term, "T1", 1250, "nodes-1")
	if got := es[1].get(t, "pk1", id); got.Status != protocol.StatusCompleted {
		t.Fatalf("node 1 reads %s", got.Status)
	}
	// A REST refund through node 1 of the sale made through node 0.
	resp := es[1].do(t, "pk1", "POST", "/v1/transactions/"+id+"/refund", map[string]any{"amountMinor": 250}, nil)
	var rb txnBody
	if resp.Status != 200 && resp.Status != 201 || resp.Decode(&rb) != nil || rb.Transaction == nil {
		t.Fatalf("refund: %d %s", resp.Status, resp.Body)
	}
	refundID := rb.Transaction.ID
	startPayment(t, term, refundID)
	termSend(t, term, "paymentResult", refundID, map[string]any{"outcome": "approved", "authCode": "R1"})
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, refundID); ev.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("refund ended %s", ev.Transaction.Status)
	}
}

func TestNodesTerminalStatusIsOneTruth(t *testing.T) {
	es := nodeEnvs(t, 2)
	pos := es[0].pos("pk1")
	term := es[1].terminal("T1")
	var u protocol.TerminalStatusUpdate
	if err := read(t, pos, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil || u.TerminalID != "T1" || u.Status != protocol.TerminalOnline {
		t.Fatalf("status on node 0's POS: %+v %v", u, err)
	}
	// Node 0 answers for the terminal greeted by node 1, at once.
	var list struct{ Data []protocol.TerminalInfo }
	if resp := es[0].do(t, "pk1", "GET", "/v1/terminals", nil, nil); resp.Decode(&list) != nil || list.Data[0].Status != protocol.TerminalOnline || list.Data[0].ConnectionID != term.ConnectionID() {
		t.Fatalf("node 0 lists %+v", list.Data)
	}

	_ = term.CloseNow()
	if err := read(t, pos, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil || u.Status != protocol.TerminalReconnecting {
		t.Fatalf("after the drop: %+v %v", u, err)
	}
	es[0].advance(t, 61*time.Second, pos)
	if err := read(t, pos, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil || u.Status != protocol.TerminalOffline {
		t.Fatalf("after the grace period: %+v %v", u, err)
	}
	for _, e := range es {
		kit.Eventually(t, "offline on every node", func() bool {
			s, _, _ := e.App.Hub.TerminalLive("T1")
			return s == protocol.TerminalOffline
		})
	}
	// Exactly one offline update reached the POS (one node claimed the
	// expiry): the next status update is the terminal coming back.
	back := es[0].terminal("T1")
	if err := read(t, pos, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil || u.Status != protocol.TerminalOnline || u.ConnectionID != back.ConnectionID() {
		t.Fatalf("after coming back: %+v %v", u, err)
	}
}

func TestNodesDisplacementAcrossNodes(t *testing.T) {
	es := nodeEnvs(t, 2)
	old := es[0].terminal("T1")
	now := apptest.DialTerminal(t, es[1].opts, "T1", kit.Secrets["T1"])
	var fd protocol.ForceDisconnect
	if err := read(t, old, "forceDisconnect").Decode(&fd); err != nil || fd.Reason != protocol.ReasonDeviceElsewhere || !fd.ReconnectAllowed {
		t.Fatalf("old terminal told %+v %v", fd, err)
	}
	onlineEverywhere(t, es, "T1", now)

	// A copied API key on two nodes: the third displacement within a
	// minute tells the loser not to come back, whichever node counts it.
	a := es[0].pos("pk1")
	b := es[1].pos("pk1")
	if err := read(t, a, "forceDisconnect").Decode(&fd); err != nil || fd.Reason != protocol.ReasonAPIKeyUsedElsewhere || !fd.ReconnectAllowed {
		t.Fatalf("first displacement: %+v %v", fd, err)
	}
	c := es[0].pos("pk1")
	if err := read(t, b, "forceDisconnect").Decode(&fd); err != nil || !fd.ReconnectAllowed {
		t.Fatalf("second displacement: %+v %v", fd, err)
	}
	es[1].pos("pk1")
	if err := read(t, c, "forceDisconnect").Decode(&fd); err != nil || fd.ReconnectAllowed {
		t.Fatalf("third displacement: %+v %v", fd, err)
	}
	kit.Eventually(t, "the conflict known on both nodes", func() bool {
		return len(es[0].App.Hub.Conflicts()) == 1 && len(es[1].App.Hub.Conflicts()) == 1
	})
}

// opsDo sends an ops request with the bearer token.
func opsDo(t *testing.T, e *env, method, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(kit.Ctx(t), method, e.Srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+kit.OpsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestNodesOpsSeeTheWholeHub(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	es[0].pos("pk1")
	var body struct {
		Connections []struct {
			ConnectionID, Kind, Node string
		}
	}
	kit.Eventually(t, "node 0 lists node 1's terminal with its node", func() bool {
		_, b := opsDo(t, es[0], "GET", "/v1/ops/terminals")
		if json.Unmarshal(b, &body) != nil {
			return false
		}
		for _, c := range body.Connections {
			if c.ConnectionID == term.ConnectionID() {
				return c.Node == "node-1"
			}
		}
		return false
	})
	var ns struct{ Data []nodes.Info }
	if code, b := opsDo(t, es[0], "GET", "/v1/ops/nodes"); code != 200 || json.Unmarshal(b, &ns) != nil || len(ns.Data) != 2 ||
		ns.Data[0].ID != "node-0" || ns.Data[1].ID != "node-1" {
		t.Fatalf("nodes: %d %s", code, b)
	}
	// Kicked through node 0, on node 1.
	if code, b := opsDo(t, es[0], "POST", "/v1/ops/connections/"+term.ConnectionID()+"/disconnect"); code != 204 {
		t.Fatalf("disconnect: %d %s", code, b)
	}
	var fd protocol.ForceDisconnect
	if err := read(t, term, "forceDisconnect").Decode(&fd); err != nil || fd.Reason != protocol.ReasonAdmin {
		t.Fatalf("kicked terminal told %+v %v", fd, err)
	}
	if code, _ := opsDo(t, es[0], "POST", "/v1/ops/connections/conn_000000000000000000000000/disconnect"); code != 404 {
		t.Fatalf("unknown connection: %d", code)
	}
}

// TestNodesNodeDeathMidPayment: the node holding a terminal dies with a
// payment in flight. Within node_timeout the other node releases the
// terminal (reconnecting, the payment AWAITING_RECONNECT); the terminal
// resumes on it and the result reaches the POS. The dead node's own end of
// the connection, handled late, changes nothing (fencing).
func TestNodesNodeDeathMidPayment(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	pos := es[0].pos("pk1")
	id := dispatched(t, pos, term, "T1", 900, "death-1")

	es[1].App.Node.Close() // node 1 stops heartbeating: dead to the others
	es[0].advance(t, 14*time.Second, pos)
	var u protocol.TerminalStatusUpdate
	if err := read(t, pos, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil || u.Status != protocol.TerminalReconnecting {
		t.Fatalf("after node 1 died: %+v %v", u, err)
	}
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id); ev.Transaction.Status != protocol.StatusAwaitingReconnect {
		t.Fatalf("payment is %s", ev.Transaction.Status)
	}
	_ = term.CloseNow() // node 1 handles the end late: the record is no longer its own

	back := es[0].terminal("T1")
	if err := read(t, pos, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil || u.Status != protocol.TerminalOnline {
		t.Fatalf("after the terminal came back: %+v %v", u, err)
	}
	startPayment(t, back, id)
	approve(t, back, id)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, id); ev.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("payment ended %s", ev.Transaction.Status)
	}
	if s, cid, _ := es[0].App.Hub.TerminalLive("T1"); s != protocol.TerminalOnline || cid != back.ConnectionID() {
		t.Fatalf("T1 is %s on %s after node 1's late drop", s, cid)
	}
}

// TestNodesNodeDeathTerminalNeverReturns: the payment fails after the
// grace period, and a late approval is voided (docs/protocol.md#auto-void-reason-codes).
func TestNodesNodeDeathTerminalNeverReturns(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	pos := es[0].pos("pk1")
	id := dispatched(t, pos, term, "T1", 900, "death-2")
	es[1].App.Node.Close()
	es[0].advance(t, 14*time.Second, pos)
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id) // AWAITING_RECONNECT
	es[0].advance(t, 61*time.Second, pos)
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusFailed || ev.Transaction.ErrorCode != "terminal_disconnected" {
		t.Fatalf("payment ended %s %s", ev.Transaction.Status, ev.Transaction.ErrorCode)
	}
	_ = term.CloseNow()
	late := es[0].terminal("T1")
	approve(t, late, id)
	command(t, late, protocol.ActionVoidPayment, id)
	if ev := posEvent(t, pos, protocol.ActionPaymentVoided, id); ev.TransactionID != id {
		t.Fatalf("voided %+v", ev)
	}
}

// TestNodesLongPollWokenByAnotherNode: an HTTP event session polled on one
// node is woken by a commit on another.
func TestNodesLongPollWokenByAnotherNode(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[0].terminal("T1")
	rest1 := client.NewHTTP(es[1].opts, "pk1", kit.Secrets["pk1"])
	resp, err := rest1.Do(kit.Ctx(t), "POST", "/v1/sessions", nil, nil)
	var sess struct{ SessionID string }
	if err != nil || resp.Status != 201 || resp.Decode(&sess) != nil {
		t.Fatalf("open session: %v %v", resp, err)
	}
	hdr := http.Header{protocol.HeaderSession: {sess.SessionID}}
	polled := make(chan []protocol.POSEvent, 1)
	go func() {
		r, err := rest1.Do(kit.Ctx(t), "GET", "/v1/events?wait=30s", nil, hdr)
		var p struct{ Data []protocol.POSEvent }
		if err == nil {
			_ = r.Decode(&p)
		}
		polled <- p.Data
	}()
	kit.Eventually(t, "the long poll waits on node 1", func() bool { return es[1].App.Hub.Waiting("pk1") })
	id := es[0].doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 700, "poll-1"), nil, 201).Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	if got := <-polled; len(got) == 0 || got[0].TransactionID != id {
		t.Fatalf("long poll woke with %+v", got)
	}
}

// TestNodesReconnectsAreNotFights: a POS that closes its connection and
// connects again, to one node then another, displaces nothing and is never
// told not to come back (its key's record is released when it goes).
func TestNodesReconnectsAreNotFights(t *testing.T) {
	es := nodeEnvs(t, 2)
	for i := range 5 {
		e := es[i%2]
		c := e.pos("pk1")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		kit.Eventually(t, "the key released", func() bool {
			for _, e := range es {
				for _, ci := range e.App.Hub.Connections() {
					if ci.APIKeyID == "pk1" {
						return false
					}
				}
			}
			return true
		})
	}
	last := es[0].pos("pk1")
	term := es[1].terminal("T1")
	completedSale(t, last, term, "T1", 100, "after-reconnects")
	for _, e := range es {
		if n := len(e.App.Hub.Conflicts()); n != 0 {
			t.Fatalf("conflicts after plain reconnects: %+v", e.App.Hub.Conflicts())
		}
	}
}

// TestNodesOpsFeedSeesOtherNodesTransactions: a feed on node 0 sees a
// payment committed on node 1 live.
func TestNodesOpsFeedSeesOtherNodesTransactions(t *testing.T) {
	es := nodeEnvs(t, 2)
	ws, _, err := websocket.Dial(kit.Ctx(t), strings.Replace(es[0].Srv.URL, "http", "ws", 1)+"/v1/ops/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + kit.OpsToken}}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(8 << 20)
	defer ws.CloseNow()
	kit.Eventually(t, "node 1 knows node 0 watches", func() bool { return es[1].App.OpsRelayWatched() })
	term := es[1].terminal("T1")
	pos := es[1].pos("pk1")
	id := completedSale(t, pos, term, "T1", 300, "feed-1")
	for {
		_, b, err := ws.Read(kit.Ctx(t))
		if err != nil {
			t.Fatalf("no COMPLETED update of %s on node 0's feed: %v", id, err)
		}
		var u struct {
			Action      string
			Transaction protocol.Transaction
		}
		if json.Unmarshal(b, &u) == nil && u.Action == "transactionUpdate" && u.Transaction.ID == id && u.Transaction.Status == protocol.StatusCompleted {
			return
		}
	}
}

// TestNodesStartingNodeLeavesOthersTerminals: a node that starts while a
// terminal with a payment in flight is online on another node demotes
// nothing (a lone hub's restart marks such terminals reconnecting).
func TestNodesStartingNodeLeavesOthersTerminals(t *testing.T) {
	hs := apptest.StartNodes(t, kit.OpsConfig, 1)
	first := envFrom(t, hs[0])
	term := first.terminal("T1")
	pos := first.pos("pk1")
	id := dispatched(t, pos, term, "T1", 500, "start-1")

	joined := envFrom(t, apptest.JoinNode(t, hs[0], "node-late"))
	apptest.WaitOnline(t, joined.App, "T1", term)
	if got := joined.get(t, "pk1", id); got.Status != protocol.StatusDispatched {
		t.Fatalf("payment is %s after another node started", got.Status)
	}
	// The payment goes on through the new node.
	approve(t, term, id)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, id); ev.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("payment ended %s", ev.Transaction.Status)
	}
	for _, m := range *buffered(pos) {
		if m.Action == protocol.ActionTerminalStatusUpdate {
			var u protocol.TerminalStatusUpdate
			_ = json.Unmarshal(m.Raw, &u)
			if u.Status != protocol.TerminalOnline {
				t.Fatalf("the POS heard %s for %s", u.Status, u.TerminalID)
			}
		}
	}
}

// TestNodesDrainMovesClients: a draining node's terminal and POS reconnect
// to another node; the payment in flight completes, the terminal never
// goes offline, and the drained node leaves the registry.
func TestNodesDrainMovesClients(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	pos := es[1].pos("pk1")
	id := dispatched(t, pos, term, "T1", 600, "drain-1")
	watch := es[0].pos("pk1b") // another key of the merchant hears every status change

	drained := make(chan error, 1)
	go func() { drained <- es[1].App.Drain(kit.Ctx(t)) }()
	for _, c := range []*client.Conn{term, pos} {
		var fd protocol.ForceDisconnect
		if err := read(t, c, "forceDisconnect").Decode(&fd); err != nil || fd.Reason != protocol.ReasonShutdown || !fd.ReconnectAllowed {
			t.Fatalf("told %+v %v", fd, err)
		}
		_ = c.CloseNow()
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	back := es[0].terminal("T1")
	pos2 := es[0].pos("pk1")
	startPayment(t, back, id)
	approve(t, back, id)
	if ev := posEvent(t, pos2, protocol.ActionPaymentComplete, id); ev.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("payment ended %s", ev.Transaction.Status)
	}
	for {
		var u protocol.TerminalStatusUpdate
		if err := read(t, watch, protocol.ActionTerminalStatusUpdate).Decode(&u); err != nil {
			t.Fatal(err)
		}
		if u.Status == protocol.TerminalOffline {
			t.Fatal("the terminal went offline during the drain")
		}
		if u.Status == protocol.TerminalOnline && u.ConnectionID == back.ConnectionID() {
			break
		}
	}
	if list, err := es[0].App.Nodes(kit.Ctx(t)); err != nil || len(list) != 1 || list[0].ID != "node-0" {
		t.Fatalf("nodes after the drain: %+v %v", list, err)
	}
}

// TestNodesTakenForDeadLetsGo: a node the others took for dead (its
// heartbeat late) closes its connections as soon as it hears its terminal
// was released (or at its next heartbeat, which finds it out of the
// registry) and joins again; its terminal comes back elsewhere and nothing
// it does late changes the record.
func TestNodesTakenForDeadLetsGo(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	// As node 0 does when node 1 is late past node_timeout.
	if err := es[0].App.Redis.HDel(kit.Ctx(t), es[0].App.Node.Keys().Nodes(), "node-1").Err(); err != nil {
		t.Fatal(err)
	}
	es[0].App.Hub.NodeDead("node-1")
	kit.Eventually(t, "T1 reconnecting on node 0", func() bool {
		s, _, _ := es[0].App.Hub.TerminalLive("T1")
		return s == protocol.TerminalReconnecting
	})
	es[0].advance(t, 4*time.Second) // node 1's next heartbeat
	var fd protocol.ForceDisconnect
	if err := read(t, term, "forceDisconnect").Decode(&fd); err != nil || fd.Reason != protocol.ReasonShutdown || !fd.ReconnectAllowed {
		t.Fatalf("told %+v %v", fd, err)
	}
	_ = term.CloseNow()
	back := es[0].terminal("T1")
	onlineEverywhere(t, es, "T1", back)
	if list, _ := es[0].App.Nodes(kit.Ctx(t)); len(list) != 2 {
		t.Fatalf("node 1 did not join again: %+v", list)
	}
}

// TestNodesResyncResendsOpenCommands: after its bus connection was lost,
// a node sends its terminals their open commands again from what is
// committed (a command sent on the bus meanwhile may be lost).
func TestNodesResyncResendsOpenCommands(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	pos := es[0].pos("pk1")
	id := sell(t, pos, "T1", 700, "resync-1").Transaction.ID
	startPayment(t, term, id)
	es[1].App.Hub.Resync()
	startPayment(t, term, id)
}

// TestNodesOrphanedRecordsAreTaken: a node that left the registry without
// releasing its terminal (a drain cut short) leaves a record naming a node
// that is gone; the others take it at their next heartbeat.
func TestNodesOrphanedRecordsAreTaken(t *testing.T) {
	es := nodeEnvs(t, 2)
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	pos := es[0].pos("pk1")
	id := dispatched(t, pos, term, "T1", 800, "orphan-1")
	if err := es[1].App.Node.Leave(kit.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	es[0].advance(t, 4*time.Second, pos)
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id); ev.Transaction.Status != protocol.StatusAwaitingReconnect {
		t.Fatalf("payment is %s", ev.Transaction.Status)
	}
	if s, _, _ := es[0].App.Hub.TerminalLive("T1"); s != protocol.TerminalReconnecting {
		t.Fatalf("T1 is %s", s)
	}
}

// TestNodesNoTakeOverFromANodeJustJoined: a node whose copy of the
// registry is from before another node joined (its last heartbeat) takes
// nothing from it: neither its sweep for orphans nor a start-up take-over
// demotes a terminal online on the new node.
func TestNodesNoTakeOverFromANodeJustJoined(t *testing.T) {
	es := nodeEnvs(t, 2) // node-0 read the registry when it started, before node-1 joined
	term := es[1].terminal("T1")
	onlineEverywhere(t, es, "T1", term)
	es[0].App.Hub.Tick()
	for _, busy := range []bool{false, true} {
		if _, err := es[0].App.Hub.TakeOver(kit.Ctx(t), "m1", []string{"T1"}, map[string]bool{"T1": busy}); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := es[0].App.Node.Devices(kit.Ctx(t), []nodes.DeviceRef{{Merchant: "m1", Device: "T1"}})
	if err != nil || recs[0].Status != protocol.TerminalOnline || recs[0].Node != "node-1" || recs[0].Conn != term.ConnectionID() {
		t.Fatalf("T1's record: %+v %v", recs, err)
	}
	if s, _, _ := es[0].App.Hub.TerminalLive("T1"); s != protocol.TerminalOnline {
		t.Fatalf("node 0 sees T1 %s", s)
	}
	pos := es[1].pos("pk1")
	startPayment(t, term, sell(t, pos, "T1", 200, "just-joined").Transaction.ID)
}

// reloadsSeen counts the pipelines that read every device's record (the
// heartbeat's reload: hmget of more than one dev key); its see is a
// redistest.SeeHook.
type reloadsSeen struct{ n atomic.Int64 }

func (r *reloadsSeen) see(cmds ...redis.Cmder) {
	devs := 0
	for _, c := range cmds {
		if c.Name() == "hmget" && strings.Contains(fmt.Sprint(c.Args()[1]), ":dev:") {
			devs++
		}
	}
	if devs > 1 {
		r.n.Add(1)
	}
}

// TestNodesAloneReloadsRarely: a node alone in the registry reads every
// device's record at its first heartbeat alone, then only every 10th;
// once another node is alive, at every heartbeat again.
func TestNodesAloneReloadsRarely(t *testing.T) {
	hs := apptest.StartNodes(t, kit.OpsConfig, 1)
	h := hs[0]
	seen := &reloadsSeen{}
	h.App.Redis.AddHook(redistest.SeeHook(seen.see))
	// The node's own first heartbeat may or may not have had its sweep
	// yet: 20 heartbeats alone from here hold the 10th and 20th, and
	// perhaps the first.
	for range 20 {
		h.App.Hub.Tick()
	}
	if got := seen.n.Load(); got < 2 || got > 3 {
		t.Fatalf("%d reloads in 20 heartbeats alone, want 2 or 3 (the 10th, the 20th, perhaps the 1st)", got)
	}
	apptest.JoinNode(t, h, "node-late")
	// node-0 learns of node-late at its own next heartbeat.
	h.Clock.Advance(h.App.Node.Timeout())
	kit.Eventually(t, "node-0 sees node-late", func() bool { return h.App.Node.LiveIDs()["node-late"] })
	base := seen.n.Load()
	for range 3 {
		h.App.Hub.Tick()
	}
	if got := seen.n.Load() - base; got < 3 {
		t.Fatalf("%d reloads in 3 heartbeats with another node alive, want one each", got)
	}
}

// holdDeviceDown holds a node's record of a terminal's drop (the down
// script: two keys, the device's connection id as its third argument)
// until release is closed, and notes when a grace period's claim (the
// expire script: two keys, two arguments) is sent; its see is a
// redistest.SeeHook.
type holdDeviceDown struct {
	held, claimed, release chan struct{}
	heldOnce, claimOnce    sync.Once
}

func (h *holdDeviceDown) see(cmds ...redis.Cmder) {
	for _, c := range cmds {
		args := c.Args()
		if (c.Name() != "evalsha" && c.Name() != "eval") || len(args) < 7 || fmt.Sprint(args[2]) != "2" ||
			!strings.Contains(fmt.Sprint(args[4]), "grace") {
			continue
		}
		switch {
		case len(args) == 10 && strings.HasPrefix(fmt.Sprint(args[7]), "conn_"):
			h.heldOnce.Do(func() { close(h.held) })
			<-h.release
		case len(args) == 7:
			h.claimOnce.Do(func() { close(h.claimed) })
		}
	}
}

// A grace period that ends while the terminal's drop is still on its way
// to Redis (the timer's claim finds nothing to claim) ends as soon as the
// drop lands, not at the next heartbeat's sweep (which this test's clock
// never reaches).
func TestNodesGraceEndsWhenTheDropLandsLate(t *testing.T) {
	e := nodeEnvs(t, 1)[0]
	hold := &holdDeviceDown{held: make(chan struct{}), claimed: make(chan struct{}), release: make(chan struct{})}
	e.App.Redis.AddHook(redistest.SeeHook(hold.see))
	term := e.terminal("T1")
	_ = term.CloseNow()
	select {
	case <-hold.held:
	case <-time.After(kit.EventuallyWithin):
		t.Fatal("the drop was not recorded in Redis")
	}
	kit.Eventually(t, "T1 reconnecting", func() bool {
		s, _, _ := e.App.Hub.TerminalLive("T1")
		return s == protocol.TerminalReconnecting
	})
	e.Clock.Advance(61 * time.Second) // past kit.OpsConfig's 60 s grace period
	select {
	case <-hold.claimed:
	case <-time.After(kit.EventuallyWithin):
		close(hold.release)
		t.Fatal("the grace timer made no claim")
	}
	close(hold.release)
	kit.Eventually(t, "T1 offline once its drop is in Redis", func() bool {
		s, _, _ := e.App.Hub.TerminalLive("T1")
		return s == protocol.TerminalOffline
	})
}
