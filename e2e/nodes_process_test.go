package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
)

// Several nodes as separate processes (docs/cluster.md): three real binaries
// on the real Redis of REDIS_URL, one key_prefix, each on its own port.
// Unlike nodes_test.go (in-process nodes, a fake clock, a node "dying" by
// ceasing to heartbeat), a node here dies by SIGKILL, so its sockets really
// close and its timers really stop, and drains by SIGTERM; the wall clock
// runs, so the tests keep node_timeout and grace periods short.

// procNodesConfig is the merchant of these tests: m1 with two API keys (a
// POS and an observer), two terminals and a webhook_url (%q: the
// receiver's URL, then the secret). Heartbeats are a day apart as in
// kit.Config: a test client answers pings only while it reads, and a killed
// node's sockets close at once anyway.
const procNodesConfig = `
payment_timeout: 180s
heartbeat_interval: 24h
signature_timeout: 60s
webhook_retry_base: 1s
ops_token: ` + kit.OpsToken + `
merchants:
  - id: m1
    name: Shop One
    webhook_url: %q
    webhook_secret: %q
    api_keys:
      - {id: pk1, secret: sk1}
      - {id: pk1b, secret: sk1b}
    terminals:
      - {device_id: T1, secret: dt1, label: Front}
      - {device_id: T2, secret: dt2, label: Back}
`

// procNodes is a hub of node processes and the webhook receiver of its
// merchant.
type procNodes struct {
	nodes []*hubProcess
	ids   []string // node_id of each node
	hooks *whReceiver
}

// startProcNodes runs n binaries sharing REDIS_URL and one fresh
// key_prefix; env adds TERMHUB_* settings (grace_period, node_timeout) to
// every node. Node i is named "<prefix>-<i>", so that its registry entry can
// be told from any other test's.
func startProcNodes(t *testing.T, n int, env ...string) *procNodes {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("needs a real Redis (REDIS_URL): separate node processes share nothing else")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "nodes-" + hex.EncodeToString(b)
	c := &procNodes{hooks: newWHReceiver(t)}
	cfg := filepath.Join(t.TempDir(), "termhub.yaml")
	text := fmt.Sprintf("redis_url: %q\nkey_prefix: %q\nlog_level: warn\n", url, prefix+":") +
		fmt.Sprintf(procNodesConfig, c.hooks.srv.URL+"/termhub", whSecret)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		p := &hubProcess{t: t, bin: buildBinary(t), config: cfg, addr: kit.FreeAddr(t)}
		p.env = append([]string{"TERMHUB_LISTEN=" + p.addr, "TERMHUB_NODE_ID=" + id}, env...)
		t.Cleanup(func() {
			if p.cmd != nil && p.cmd.Process != nil {
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		})
		p.start()
		c.nodes = append(c.nodes, p)
		c.ids = append(c.ids, id)
	}
	return c
}

// rest is a signed REST client of key pk1 on node p.
func procREST(p *hubProcess) *client.HTTP {
	return client.NewHTTP(p.opts(), "pk1", kit.Secrets["pk1"])
}

// procTxn reads transaction id through node p.
func procTxn(t *testing.T, p *hubProcess, id string) protocol.Transaction {
	t.Helper()
	resp, err := procREST(p).Do(kit.Ctx(t), "GET", "/v1/transactions/"+id, nil, nil)
	var b txnBody
	if err != nil || resp.Status != http.StatusOK || resp.Decode(&b) != nil || b.Transaction == nil {
		t.Fatalf("GET /v1/transactions/%s on %s: %v %v", id, p.addr, resp, err)
	}
	return *b.Transaction
}

// agreeOn checks that every node of live reads transaction id the same,
// with status want, and returns it.
func agreeOn(t *testing.T, live []*hubProcess, id string, want protocol.Status) protocol.Transaction {
	t.Helper()
	first := procTxn(t, live[0], id)
	if first.Status != want {
		t.Fatalf("%s is %s on %s, want %s", id, first.Status, live[0].addr, want)
	}
	for _, p := range live[1:] {
		if got := procTxn(t, p, id); !reflect.DeepEqual(got, first) {
			t.Fatalf("%s on %s:\n%+v\non %s:\n%+v", id, live[0].addr, first, p.addr, got)
		}
	}
	return first
}

// procOps sends an ops GET to node p and decodes the answer into v.
func procOps(t *testing.T, p *hubProcess, path string, v any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(kit.Ctx(t), "GET", p.baseURL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+kit.OpsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, p.addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, v) != nil {
		t.Fatalf("GET %s on %s: %d %s", path, p.addr, resp.StatusCode, body)
	}
}

// liveNodeIDs lists the node ids GET /v1/ops/nodes on p names.
func liveNodeIDs(t *testing.T, p *hubProcess) []string {
	t.Helper()
	var body struct{ Data []nodes.Info }
	procOps(t, p, "/v1/ops/nodes", &body)
	var out []string
	for _, n := range body.Data {
		out = append(out, n.ID)
	}
	slices.Sort(out)
	return out
}

// untilClosed reads c until its socket fails, as a client notices that its
// node has gone, and fails the test if it stays up.
func untilClosed(t *testing.T, c *client.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		if _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("connection %s still up: %v", c.ConnectionID(), err)
			}
			return
		}
	}
}

// finals counts the final states a POS is told of: per transaction, the
// distinct messageIds (a replayed message keeps its id, docs/protocol.md#messageid-ack-and-replay) that
// carry each final status. It is how "exactly one final per transaction"
// is checked across reconnects and nodes.
type finals map[string]map[protocol.Status]map[string]bool

// note records m if it is a durable message about a final state.
func (f finals) note(t *testing.T, m client.Message) {
	t.Helper()
	if m.MessageID() == "" {
		return
	}
	ev := event(t, m)
	if ev.Transaction == nil || !ev.Transaction.Status.Final() {
		return
	}
	st := ev.Transaction.Status
	if f[ev.TransactionID] == nil {
		f[ev.TransactionID] = map[protocol.Status]map[string]bool{}
	}
	if f[ev.TransactionID][st] == nil {
		f[ev.TransactionID][st] = map[string]bool{}
	}
	f[ev.TransactionID][st][m.MessageID()] = true
}

// await reads pos (the messages the harness's helpers buffered first) and
// acks every durable message, as a POS does, until one tells that id
// reached status, and returns it. The wait is generous: the nodes are
// processes on a possibly loaded machine.
func (f finals) await(t *testing.T, pos *client.Conn, id string, status protocol.Status) protocol.POSEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	buf := buffered(pos)
	for {
		var m client.Message
		if len(*buf) > 0 {
			m, *buf = (*buf)[0], (*buf)[1:]
		} else {
			var err error
			if m, err = pos.Read(ctx); err != nil {
				t.Fatalf("waiting for %s of %s: %v", status, id, err)
			}
		}
		f.note(t, m)
		if m.MessageID() == "" {
			continue
		}
		if err := pos.Ack(ctx, m.MessageID()); err != nil {
			t.Fatalf("ack: %v", err)
		}
		if ev := event(t, m); ev.TransactionID == id && ev.Transaction != nil && ev.Transaction.Status == status {
			return ev
		}
	}
}

// exactlyOne checks that the POS was told of one final state of id, want,
// by one message (the auto-voided case passes FAILED and VOIDED).
func (f finals) exactlyOne(t *testing.T, id string, want ...protocol.Status) {
	t.Helper()
	got := f[id]
	if len(got) != len(want) {
		t.Fatalf("%s: the POS was told of finals %v, want %v", id, got, want)
	}
	for _, st := range want {
		if len(got[st]) != 1 {
			t.Fatalf("%s: %d different messages told the POS of %s, want 1: %v", id, len(got[st]), st, got[st])
		}
	}
}

// webhooksExactly waits until the receiver has the webhook events of
// types for transaction id, and checks that no other event (no other event
// id) came for it: each final state is sent once, however many nodes there
// are and whichever died (retries keep their id).
func (c *procNodes) webhooksExactly(t *testing.T, id string, types ...string) {
	t.Helper()
	byType := func() map[string][]string {
		c.hooks.mu.Lock()
		defer c.hooks.mu.Unlock()
		out := map[string][]string{}
		for evID, ev := range c.hooks.events {
			if ev.Txn.ID == id {
				out[ev.Type] = append(out[ev.Type], evID)
			}
		}
		return out
	}
	kit.Eventually(t, fmt.Sprintf("webhooks %v of %s", types, id), func() bool {
		got := byType()
		for _, typ := range types {
			if len(got[typ]) == 0 {
				return false
			}
		}
		return true
	})
	got := byType()
	if len(got) != len(types) {
		t.Fatalf("%s: webhook events %v, want only %v", id, got, types)
	}
	for _, typ := range types {
		if len(got[typ]) != 1 {
			t.Fatalf("%s: %d %s webhook events %v, want 1", id, len(got[typ]), typ, got[typ])
		}
	}
}

// TestNodesProcessKill9MidPayment: POS on node A, terminal on node B, the
// payment DISPATCHED; B is killed with SIGKILL; the terminal, its socket
// dead, reconnects to node C well within the grace period. The payment
// resumes there and completes; the POS on A gets one final, every live node
// reads the same transaction, one webhook is sent.
func TestNodesProcessKill9MidPayment(t *testing.T) {
	c := startProcNodes(t, 3, "TERMHUB_GRACE_PERIOD=30s", "TERMHUB_NODE_TIMEOUT=2s")
	a, b, cn := c.nodes[0], c.nodes[1], c.nodes[2]
	f := finals{}
	term := dialTerminal(t, b, "T1")
	pos := dialPOS(t, a, "pk1")
	id := dispatched(t, pos, term, "T1", 4200, "proc-kill-1")

	b.kill9()
	untilClosed(t, term)
	back := dialTerminal(t, cn, "T1")
	if sp := startPayment(t, back, id); sp.AmountMinor != 4200 {
		t.Fatalf("resent startPayment: %+v", sp)
	}
	approve(t, back, id)
	if ev := f.await(t, pos, id, protocol.StatusCompleted); ev.Action != protocol.ActionPaymentComplete {
		t.Fatalf("final came as %s", ev.Action)
	}
	f.exactlyOne(t, id, protocol.StatusCompleted)
	if got := agreeOn(t, []*hubProcess{a, cn}, id, protocol.StatusCompleted); got.AuthCode != "A"+id[len(id)-4:] {
		t.Fatalf("authCode %q", got.AuthCode)
	}
	c.webhooksExactly(t, id, "payment.completed")
}

// TestNodesProcessKill9TerminalNeverReturns: the terminal of a killed node
// stays away. Once the others find the node dead (node_timeout) they give
// the terminal its grace period, after which the payment FAILs with
// terminal_disconnected; the terminal's late approval, on another node, is
// voided (voidPayment to it, paymentVoided to the POS).
func TestNodesProcessKill9TerminalNeverReturns(t *testing.T) {
	const grace, nodeTimeout = 3 * time.Second, 2 * time.Second
	c := startProcNodes(t, 3, "TERMHUB_GRACE_PERIOD=3s", "TERMHUB_NODE_TIMEOUT=2s")
	a, b, cn := c.nodes[0], c.nodes[1], c.nodes[2]
	f := finals{}
	term := dialTerminal(t, b, "T1")
	pos := dialPOS(t, a, "pk1")
	id := dispatched(t, pos, term, "T1", 900, "proc-kill-2")

	killed := time.Now()
	b.kill9()
	ev := f.await(t, pos, id, protocol.StatusFailed)
	if ev.Action != protocol.ActionPaymentComplete || ev.Transaction.ErrorCode != "terminal_disconnected" {
		t.Fatalf("final: %s %s", ev.Action, ev.Transaction.ErrorCode)
	}
	// Not before a grace period (which starts no earlier than the node is
	// found dead), nor long after node_timeout and a grace period: the
	// bound is loose because the machine may be loaded.
	if ev.Transaction.CompletedAt == nil {
		t.Fatal("FAILED without completedAt")
	}
	if took := ev.Transaction.CompletedAt.Sub(killed); took < grace || took > nodeTimeout+grace+10*time.Second {
		t.Fatalf("FAILED %v after the kill; node_timeout %v, grace %v", took, nodeTimeout, grace)
	}

	late := dialTerminal(t, cn, "T1")
	approve(t, late, id)
	command(t, late, protocol.ActionVoidPayment, id)
	if ev := f.await(t, pos, id, protocol.StatusVoided); ev.Action != protocol.ActionPaymentVoided {
		t.Fatalf("void came as %s", ev.Action)
	}
	f.exactlyOne(t, id, protocol.StatusFailed, protocol.StatusVoided)
	agreeOn(t, []*hubProcess{a, cn}, id, protocol.StatusVoided)
	c.webhooksExactly(t, id, "payment.failed", "payment.voided")
}

// TestNodesProcessDrain: SIGTERM to the node holding the POS and both
// terminals, each with a payment in flight. Every client is told to
// reconnect (server_shutdown, reconnectAllowed) and does, to the other
// nodes; no terminal goes offline (an observer POS on another node hears
// every status), both payments complete with one final each, the drained
// process exits 0 and has left the registry when it exits. node_timeout is
// the default 10 s here: the node must leave, not be found dead.
func TestNodesProcessDrain(t *testing.T) {
	c := startProcNodes(t, 3, "TERMHUB_GRACE_PERIOD=30s")
	a, b, cn := c.nodes[0], c.nodes[1], c.nodes[2]
	f := finals{}
	observer := dialPOS(t, b, "pk1b")
	t1 := dialTerminal(t, a, "T1")
	t2 := dialTerminal(t, a, "T2")
	pos := dialPOS(t, a, "pk1")
	id1 := dispatched(t, pos, t1, "T1", 1100, "proc-drain-1")
	id2 := dispatched(t, pos, t2, "T2", 2200, "proc-drain-2")

	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*client.Conn{pos, t1, t2} {
		var fd protocol.ForceDisconnect
		if err := read(t, conn, protocol.ActionForceDisconnect).Decode(&fd); err != nil || fd.Reason != protocol.ReasonShutdown || !fd.ReconnectAllowed {
			t.Fatalf("drain message: %+v %v", fd, err)
		}
		untilClosed(t, conn)
	}
	back1 := dialTerminal(t, cn, "T1")
	back2 := dialTerminal(t, b, "T2")
	pos2 := dialPOS(t, b, "pk1")

	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the drained node did not exit")
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	// It left the registry before it exited: well before node_timeout.
	for _, p := range []*hubProcess{b, cn} {
		if got, want := liveNodeIDs(t, p), []string{c.ids[1], c.ids[2]}; !reflect.DeepEqual(got, want) {
			t.Fatalf("GET /v1/ops/nodes on %s right after the drain: %v, want %v", p.addr, got, want)
		}
	}

	for _, run := range []struct {
		term *client.Conn
		id   string
	}{{back1, id1}, {back2, id2}} {
		startPayment(t, run.term, run.id)
		approve(t, run.term, run.id)
	}
	for _, id := range []string{id1, id2} {
		f.await(t, pos2, id, protocol.StatusCompleted)
		f.exactlyOne(t, id, protocol.StatusCompleted)
		agreeOn(t, []*hubProcess{b, cn}, id, protocol.StatusCompleted)
		c.webhooksExactly(t, id, "payment.completed")
	}
	noneOffline(t, observer, "T1", "T2")
}

// noneOffline reads every terminalStatusUpdate the observer was sent so far
// (a listTerminals round trip marks "so far": the hub sends in order) and
// fails the test if any said offline, if the observer heard nothing of one
// of devices (it connected before them: it must have heard them come
// online, so it was listening), or if one of devices is not online now.
func noneOffline(t *testing.T, observer *client.Conn, devices ...string) {
	t.Helper()
	send(t, observer, protocol.ActionListTerminals, map[string]any{"requestId": "none-offline"})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	heard := map[string]int{}
	for {
		m, err := observer.Read(ctx)
		if err != nil {
			t.Fatalf("observer: %v", err)
		}
		switch m.Action {
		case protocol.ActionTerminalStatusUpdate:
			var u protocol.TerminalStatusUpdate
			if err := m.Decode(&u); err != nil || u.Status == protocol.TerminalOffline {
				t.Fatalf("a terminal went offline: %s (%v)", m.Raw, err)
			}
			heard[u.TerminalID]++
		case protocol.ActionTerminals:
			var rows protocol.TerminalsReply
			if err := m.Decode(&rows); err != nil {
				t.Fatal(err)
			}
			online := map[string]bool{}
			for _, r := range rows.Terminals {
				online[r.TerminalID] = r.Status == protocol.TerminalOnline
			}
			for _, d := range devices {
				if heard[d] == 0 {
					t.Fatalf("the observer heard no status of %s", d)
				}
				if !online[d] {
					t.Fatalf("%s is not online at the end: %s", d, m.Raw)
				}
			}
			return
		}
	}
}

// procConnNode returns the node (id) that holds connection cid, as
// GET /v1/ops/terminals on p tells it. It waits for the connection to be
// listed: p may hear of a connection on another node a moment after the
// client has its greeting.
func procConnNode(t *testing.T, p *hubProcess, cid string) string {
	t.Helper()
	var node string
	kit.Eventually(t, "ops list connection "+cid, func() bool {
		var body struct {
			Connections []struct{ ConnectionID, Node string }
		}
		procOps(t, p, "/v1/ops/terminals", &body)
		for _, c := range body.Connections {
			if c.ConnectionID == cid {
				node = c.Node
				return true
			}
		}
		return false
	})
	return node
}

// nodeOf returns the index of the node named id.
func (c *procNodes) nodeOf(t *testing.T, id string) int {
	t.Helper()
	i := slices.Index(c.ids, id)
	if i < 0 {
		t.Fatalf("no node %q among %v", id, c.ids)
	}
	return i
}

// without returns the nodes but the i-th.
func (c *procNodes) without(i int) []*hubProcess {
	return slices.Delete(slices.Clone(c.nodes), i, i+1)
}

// TestNodesProcessDrainWebhooksPrompt: sales complete on node B, their
// webhooks queued, while node A drains and exits. Every webhook must reach
// the receiver promptly: the live nodes are there to send them.
//
// A's webhook reader may be blocked in XREADGROUP when Close comes; were
// the read cancelled after Redis had handed it an event, the event would
// sit in A's pending list, unscheduled, until a sweep claimed it a minute
// later. Close lets the read finish and schedules what it read, and with
// several nodes every worker looks at the shared schedule every 2 s.
func TestNodesProcessDrainWebhooksPrompt(t *testing.T) {
	c := startProcNodes(t, 3, "TERMHUB_GRACE_PERIOD=30s")
	a, b := c.nodes[0], c.nodes[1]
	term := dialTerminal(t, b, "T1")
	pos := dialPOS(t, b, "pk1")
	var ids []string
	sale := func() {
		ids = append(ids, completedSale(t, pos, term, "T1", int64(100+len(ids)), fmt.Sprintf("drain-wh-%d", len(ids))))
	}
	for range 5 {
		sale()
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Events keep coming while A drains and closes, so that one arrives as
	// its reader stops.
	for exited := false; !exited; {
		sale()
		select {
		case <-a.exited:
			exited = true
		default:
		}
	}
	sale()
	for _, id := range ids {
		c.webhooksExactly(t, id, "payment.completed")
	}
}
