package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// haproxyConfig is the configuration docs/cluster.md tells operators to use.
// The test runs that very file, with its addresses set through the
// environment variables the file reads, so what is documented is what is
// tested.
const haproxyConfig = "../docs/deploy/haproxy.cfg"

// haproxyBin finds haproxy on PATH, or where Debian's package puts it
// (/usr/sbin, which a user's PATH may lack). Without it the test skips,
// unless CI is set (as the browser test does): CI installs it, so a missing
// one there is a broken setup, not a reason to test less.
func haproxyBin(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("haproxy"); err == nil {
		return bin
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set but haproxy is missing: install it with `apt-get update && apt-get install -y haproxy`")
	}
	t.Skip("haproxy not found on PATH or in /usr/sbin: skipping the haproxy test (apt-get install -y haproxy to run it; with CI set it fails instead)")
	return ""
}

// startHAProxy runs haproxy in the foreground in front of the nodes and
// returns a hubProcess standing for it: only its address is used, so that
// dialPOS, dialTerminal and the REST helpers reach the hub through haproxy.
func startHAProxy(t *testing.T, nodes []*hubProcess) *hubProcess {
	t.Helper()
	bin := haproxyBin(t)
	if len(nodes) != 3 {
		t.Fatalf("%s names three nodes, got %d", haproxyConfig, len(nodes))
	}
	lb := &hubProcess{t: t, addr: kit.FreeAddr(t)}
	var log kit.LogBuffer
	cmd := exec.Command(bin, "-db", "-f", haproxyConfig)
	cmd.Env = append(os.Environ(), "TERMHUB_LB_LISTEN="+lb.addr,
		"TERMHUB_NODE1="+nodes[0].addr, "TERMHUB_NODE2="+nodes[1].addr, "TERMHUB_NODE3="+nodes[2].addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy's log:\n%s", log.String())
		}
	})
	kit.Eventually(t, "haproxy answers /readyz", func() bool {
		select {
		case <-exited:
			t.Fatalf("haproxy exited: %v\n%s", cmd.ProcessState, log.String())
		default:
		}
		resp, err := http.Get("http://" + lb.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return lb
}

// redialThrough dials again, through haproxy, a client whose node died,
// until a live node takes it: haproxy may still count the dead node up for
// a moment, and a dial it cannot place fails (a real client retries too).
func redialThrough(t *testing.T, dial func() (*client.Conn, error)) *client.Conn {
	t.Helper()
	var c *client.Conn
	kit.Eventually(t, "a reconnect through haproxy", func() bool {
		var err error
		c, err = dial()
		return err == nil
	})
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// lbScene is three nodes behind haproxy with a POS and both terminals
// connected through it.
type lbScene struct {
	c     *procNodes
	lb    *hubProcess
	f     finals
	pos   *client.Conn
	terms map[string]*client.Conn
}

// newLBScene starts the nodes (env as startProcNodes) and haproxy, and
// connects the clients through haproxy.
func newLBScene(t *testing.T, env ...string) *lbScene {
	t.Helper()
	haproxyBin(t) // skip before starting the nodes
	c := startProcNodes(t, 3, env...)
	lb := startHAProxy(t, c.nodes)
	return &lbScene{c: c, lb: lb, f: finals{}, pos: dialPOS(t, lb, "pk1"),
		terms: map[string]*client.Conn{"T1": dialTerminal(t, lb, "T1"), "T2": dialTerminal(t, lb, "T2")}}
}

// placed returns the node (id) holding each client's connection, by
// connection id, and the index of the node holding T1.
func (s *lbScene) placed(t *testing.T) (map[string]string, int) {
	t.Helper()
	held := map[string]string{}
	for _, conn := range []*client.Conn{s.pos, s.terms["T1"], s.terms["T2"]} {
		held[conn.ConnectionID()] = procConnNode(t, s.lb, conn.ConnectionID())
	}
	victim := s.c.nodeOf(t, held[s.terms["T1"].ConnectionID()])
	t.Logf("clients on nodes %v; T1's is %s", held, s.c.ids[victim])
	return held, victim
}

// reconnect replaces, through haproxy, each client whose connection was on
// node victim: gone waits for the old connection to end, redial makes the
// new one (dial is client.DialPOS or client.DialTerminal). Then it checks
// that none of the clients is on victim.
func (s *lbScene) reconnect(t *testing.T, held map[string]string, victim int, gone func(*client.Conn),
	redial func(dial func() (*client.Conn, error)) *client.Conn) {
	t.Helper()
	dialer := func(dial func(context.Context, client.Options, string, string) (*client.Conn, error), id string) func() (*client.Conn, error) {
		return func() (*client.Conn, error) { return dial(kit.Ctx(t), s.lb.opts(), id, kit.Secrets[id]) }
	}
	for dev, conn := range s.terms {
		if held[conn.ConnectionID()] == s.c.ids[victim] {
			gone(conn)
			s.terms[dev] = redial(dialer(client.DialTerminal, dev))
		}
	}
	if held[s.pos.ConnectionID()] == s.c.ids[victim] {
		gone(s.pos)
		s.pos = redial(dialer(client.DialPOS, "pk1"))
	}
	live := s.c.without(victim)
	for _, conn := range []*client.Conn{s.pos, s.terms["T1"], s.terms["T2"]} {
		if n := procConnNode(t, live[0], conn.ConnectionID()); n == s.c.ids[victim] {
			t.Fatalf("connection %s is on %s, which went away", conn.ConnectionID(), n)
		}
	}
}

// onlineOn waits until every node of live lists T1 and T2 online on the
// scene's current connections.
func (s *lbScene) onlineOn(t *testing.T, live []*hubProcess) {
	t.Helper()
	for _, p := range live {
		kit.Eventually(t, "T1 and T2 online on "+p.addr, func() bool {
			r, err := procREST(p).Do(kit.Ctx(t), "GET", "/v1/terminals", nil, nil)
			var list struct{ Data []protocol.TerminalInfo }
			if err != nil || r.Status != http.StatusOK || r.Decode(&list) != nil || len(list.Data) != 2 {
				return false
			}
			for _, ti := range list.Data {
				if ti.Status != protocol.TerminalOnline || ti.ConnectionID != s.terms[ti.TerminalID].ConnectionID() {
					return false
				}
			}
			return true
		})
	}
}

// TestHAProxyNodeKill: three nodes behind haproxy (docs/deploy/haproxy.cfg);
// the POS, the terminals and the REST calls all go through it. A payment
// completes; a second is DISPATCHED when the node holding its terminal is
// killed with SIGKILL. Every client of that node reconnects through
// haproxy to a live node; the terminals are online again on every node, the
// payment completes, each transaction has one final (POS and webhooks),
// and the dead node leaves the registry.
func TestHAProxyNodeKill(t *testing.T) {
	s := newLBScene(t, "TERMHUB_GRACE_PERIOD=30s", "TERMHUB_NODE_TIMEOUT=2s")
	c, lb := s.c, s.lb

	// A sale over REST through haproxy, completed.
	resp, err := procREST(lb).Do(kit.Ctx(t), "POST", "/v1/payments", sale("T1", 1500, "lb-1"), nil)
	var created txnBody
	if err != nil || resp.Status != http.StatusCreated || resp.Decode(&created) != nil || created.Transaction == nil {
		t.Fatalf("POST /v1/payments through haproxy: %v %v", resp, err)
	}
	first := created.Transaction.ID
	startPayment(t, s.terms["T1"], first)
	termSend(t, s.terms["T1"], "commandReceived", first, nil)
	approve(t, s.terms["T1"], first)
	s.f.await(t, s.pos, first, protocol.StatusCompleted)
	if got := procTxn(t, lb, first); got.Status != protocol.StatusCompleted {
		t.Fatalf("GET through haproxy: %s", got.Status)
	}
	// Its webhook is sent before the kill, so no node that dies holds it.
	c.webhooksExactly(t, first, "payment.completed")

	// A second sale in flight, and the node holding T1 killed. A client
	// may retry its dial (haproxy may not have noticed yet), as a real one
	// does.
	second := dispatched(t, s.pos, s.terms["T1"], "T1", 2500, "lb-2")
	held, victim := s.placed(t)
	c.nodes[victim].kill9()
	live := c.without(victim)
	s.reconnect(t, held, victim, func(conn *client.Conn) { untilClosed(t, conn) }, func(dial func() (*client.Conn, error)) *client.Conn {
		return redialThrough(t, dial)
	})

	startPayment(t, s.terms["T1"], second)
	approve(t, s.terms["T1"], second)
	s.f.await(t, s.pos, second, protocol.StatusCompleted)

	// Converged: one final each, the same on every live node, every
	// terminal online on every live node, the dead node gone from the
	// registry.
	for _, id := range []string{first, second} {
		s.f.exactlyOne(t, id, protocol.StatusCompleted)
		agreeOn(t, live, id, protocol.StatusCompleted)
	}
	c.webhooksExactly(t, second, "payment.completed")
	s.onlineOn(t, live)
	want := slices.Delete(slices.Clone(c.ids), victim, victim+1)
	kit.Eventually(t, "the killed node leaves the registry (node_timeout)", func() bool {
		return reflect.DeepEqual(liveNodeIDs(t, lb), want)
	})
}

// TestHAProxyDrain: SIGTERM to the node holding a terminal with a payment
// in flight, behind haproxy. Each of its clients is told to reconnect and
// dials through haproxy at once, once: haproxy has not yet seen the node's
// /readyz turn 503, and with leastconn sends the dial to that very node
// (it has just lost its connections), which refuses upgrades while it
// drains. The configuration's retry of a refused upgrade on another node is
// what lets every client in at the first try. The payment then completes
// with one final, the terminals are online on every other node, the node
// exits 0 and has left the registry.
func TestHAProxyDrain(t *testing.T) {
	s := newLBScene(t, "TERMHUB_GRACE_PERIOD=30s")
	c := s.c
	id := dispatched(t, s.pos, s.terms["T1"], "T1", 3100, "lb-drain")
	held, victim := s.placed(t)
	if err := c.nodes[victim].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.reconnect(t, held, victim, func(conn *client.Conn) {
		var fd protocol.ForceDisconnect
		if err := read(t, conn, protocol.ActionForceDisconnect).Decode(&fd); err != nil || fd.Reason != protocol.ReasonShutdown || !fd.ReconnectAllowed {
			t.Fatalf("drain message: %+v %v", fd, err)
		}
		untilClosed(t, conn)
	}, func(dial func() (*client.Conn, error)) *client.Conn {
		conn, err := dial()
		if err != nil {
			t.Fatalf("reconnect through haproxy during the drain: %v", err)
		}
		t.Cleanup(func() { _ = conn.CloseNow() })
		return conn
	})

	// The drained node is gone before the payment completes: a webhook
	// queued while a node closes can be held up for a minute (see
	// TestNodesProcessDrainWebhooksPrompt).
	select {
	case <-c.nodes[victim].exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the drained node did not exit")
	}
	if code := c.nodes[victim].cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if got, want := liveNodeIDs(t, s.lb), slices.Delete(slices.Clone(c.ids), victim, victim+1); !reflect.DeepEqual(got, want) {
		t.Fatalf("GET /v1/ops/nodes after the drain: %v, want %v", got, want)
	}

	startPayment(t, s.terms["T1"], id)
	approve(t, s.terms["T1"], id)
	s.f.await(t, s.pos, id, protocol.StatusCompleted)
	s.f.exactlyOne(t, id, protocol.StatusCompleted)
	c.webhooksExactly(t, id, "payment.completed")
	live := c.without(victim)
	agreeOn(t, live, id, protocol.StatusCompleted)
	s.onlineOn(t, live)
}
