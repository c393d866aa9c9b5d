package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// The real binary with the embedded Redis: reload and drain need no state.

func TestSIGHUPReloadsKeysAndKeepsOtherConnections(t *testing.T) {
	p := startProcessHubOn(t, "", kit.Config)
	keep := dialPOS(t, p, "pk1")
	gone := dialPOS(t, p, "pk1b")
	term := dialTerminal(t, p, "T1")

	// pk1b and T2 are removed, pk1c is added.
	next := strings.Replace(kit.Config, "      - {id: pk1b, secret: sk1b}\n", "      - {id: pk1c, secret: sk1c}\n", 1)
	next = strings.Replace(next, "      - {device_id: T2, secret: dt2, label: Back}\n", "", 1)
	if next == kit.Config {
		t.Fatal("test config did not change")
	}
	data, err := os.ReadFile(p.config)
	if err != nil {
		t.Fatal(err)
	}
	head := string(data[:strings.Index(string(data), "grace_period:")])
	if err := os.WriteFile(p.config, []byte(head+next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	var fd protocol.ForceDisconnect
	if err := read(t, gone, "forceDisconnect").Decode(&fd); err != nil || fd.ReconnectAllowed {
		t.Fatalf("removed key: %+v %v", fd, err)
	}
	if _, err := gone.Read(kit.Ctx(t)); client.CloseCode(err) != int(protocol.ClosePolicy) {
		t.Fatalf("removed key closed with %v, want 1008", err)
	}
	// The others stay up and work.
	send(t, keep, "listTerminals", map[string]any{"requestId": "r"})
	var rows protocol.TerminalsReply
	if err := read(t, keep, "terminals").Decode(&rows); err != nil || len(rows.Terminals) != 1 || rows.Terminals[0].TerminalID != "T1" {
		t.Fatalf("after reload: %+v %v", rows, err)
	}
	pay(t, keep, "T1", 100, "after-reload")
	read(t, term, "startPayment")
	// The new key is accepted; the removed one is refused.
	if _, err := client.DialPOS(kit.Ctx(t), p.opts(), "pk1c", "sk1c"); err != nil {
		t.Fatalf("added key: %v", err)
	}
	_, err = client.DialPOS(kit.Ctx(t), p.opts(), "pk1b", "sk1b")
	if he, ok := err.(*client.HandshakeError); !ok || he.StatusCode != 401 {
		t.Fatalf("removed key dial: %v", err)
	}
}

func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	p := startProcessHubOn(t, "", kit.Config)
	pos := dialPOS(t, p, "pk1")
	term := dialTerminal(t, p, "T1")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{pos, term} {
		var fd protocol.ForceDisconnect
		if err := read(t, c, "forceDisconnect").Decode(&fd); err != nil || fd.Reason != "server_shutdown" || !fd.ReconnectAllowed {
			t.Fatalf("drain message: %+v %v", fd, err)
		}
		if _, err := c.Read(kit.Ctx(t)); client.CloseCode(err) != int(protocol.CloseShutdown) {
			t.Fatalf("drain close: %v, want 4004", err)
		}
	}
	<-p.exited
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	p.cmd = nil
}
