package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"testing"

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
func redialThrough(t *testing.T, lb *hubProcess, dial func() (*client.Conn, error)) *client.Conn {
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

// TestHAProxyNodeKill: three nodes behind haproxy (docs/deploy/haproxy.cfg);
// the POS, the terminals and the REST calls all go through it. A payment
// completes; a second is DISPATCHED when the node holding its terminal is
// killed with SIGKILL. Every client of that node reconnects through
// haproxy to a live node; the terminals are online again on every node, the
// payment completes, and each transaction has one final (POS and webhooks).
func TestHAProxyNodeKill(t *testing.T) {
	haproxyBin(t) // skip before starting the nodes
	c := startProcNodes(t, 3, "TERMHUB_GRACE_PERIOD=30s", "TERMHUB_NODE_TIMEOUT=2s")
	lb := startHAProxy(t, c.nodes)
	f := finals{}
	terms := map[string]*client.Conn{"T1": dialTerminal(t, lb, "T1"), "T2": dialTerminal(t, lb, "T2")}
	pos := dialPOS(t, lb, "pk1")

	// A sale over REST through haproxy, completed.
	resp, err := procREST(lb).Do(kit.Ctx(t), "POST", "/v1/payments", sale("T1", 1500, "lb-1"), nil)
	var created txnBody
	if err != nil || resp.Status != http.StatusCreated || resp.Decode(&created) != nil || created.Transaction == nil {
		t.Fatalf("POST /v1/payments through haproxy: %v %v", resp, err)
	}
	first := created.Transaction.ID
	startPayment(t, terms["T1"], first)
	termSend(t, terms["T1"], "commandReceived", first, nil)
	approve(t, terms["T1"], first)
	f.await(t, pos, first, protocol.StatusCompleted)
	if got := procTxn(t, lb, first); got.Status != protocol.StatusCompleted {
		t.Fatalf("GET through haproxy: %s", got.Status)
	}
	// Its webhook is sent before the kill, so no node that dies holds it.
	c.webhooksExactly(t, first, "payment.completed")

	// A second sale in flight, and the node holding T1 killed.
	second := dispatched(t, pos, terms["T1"], "T1", 2500, "lb-2")
	held := map[string]string{} // connection id → node id, before the kill
	for _, conn := range []*client.Conn{pos, terms["T1"], terms["T2"]} {
		held[conn.ConnectionID()] = procConnNode(t, lb, conn.ConnectionID())
	}
	victim := c.nodeOf(t, held[terms["T1"].ConnectionID()])
	t.Logf("before the kill of %s: connections on nodes %v", c.ids[victim], held)
	c.nodes[victim].kill9()
	live := c.without(victim)

	for dev, conn := range terms {
		if held[conn.ConnectionID()] != c.ids[victim] {
			continue
		}
		untilClosed(t, conn)
		terms[dev] = redialThrough(t, lb, func() (*client.Conn, error) {
			return client.DialTerminal(kit.Ctx(t), lb.opts(), dev, kit.Secrets[dev])
		})
	}
	if held[pos.ConnectionID()] == c.ids[victim] {
		untilClosed(t, pos)
		pos = redialThrough(t, lb, func() (*client.Conn, error) {
			return client.DialPOS(kit.Ctx(t), lb.opts(), "pk1", kit.Secrets["pk1"])
		})
	}
	for _, conn := range append([]*client.Conn{pos}, terms["T1"], terms["T2"]) {
		if n := procConnNode(t, live[0], conn.ConnectionID()); n == c.ids[victim] {
			t.Fatalf("connection %s is on %q after the kill of %s", conn.ConnectionID(), n, c.ids[victim])
		}
	}

	startPayment(t, terms["T1"], second)
	approve(t, terms["T1"], second)
	f.await(t, pos, second, protocol.StatusCompleted)

	// Converged: one final each, the same on every live node, every
	// terminal online on every live node, the dead node gone from the
	// registry.
	for _, id := range []string{first, second} {
		f.exactlyOne(t, id, protocol.StatusCompleted)
		agreeOn(t, live, id, protocol.StatusCompleted)
	}
	c.webhooksExactly(t, second, "payment.completed")
	for _, p := range live {
		kit.Eventually(t, "T1 and T2 online on "+p.addr, func() bool {
			r, err := procREST(p).Do(kit.Ctx(t), "GET", "/v1/terminals", nil, nil)
			var list struct{ Data []protocol.TerminalInfo }
			if err != nil || r.Status != http.StatusOK || r.Decode(&list) != nil || len(list.Data) != 2 {
				return false
			}
			for _, ti := range list.Data {
				if ti.Status != protocol.TerminalOnline || ti.ConnectionID != terms[ti.TerminalID].ConnectionID() {
					return false
				}
			}
			return true
		})
	}
	want := slices.Delete(slices.Clone(c.ids), victim, victim+1)
	kit.Eventually(t, "the killed node leaves the registry (node_timeout)", func() bool {
		return reflect.DeepEqual(liveNodeIDs(t, lb), want)
	})
}
