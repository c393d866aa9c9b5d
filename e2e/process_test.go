package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// These tests run the real termhub binary against the real Redis of
// REDIS_URL and kill it with SIGKILL: with the embedded Redis nothing would
// survive, which is the documented behaviour.

var builtBinary string

func buildBinary(t *testing.T) string {
	t.Helper()
	if builtBinary != "" {
		return builtBinary
	}
	dir, err := os.MkdirTemp("", "termhub-bin")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "termhub")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/termhub").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	builtBinary = bin
	return bin
}

type hubProcess struct {
	t      *testing.T
	bin    string
	config string
	addr   string
	env    []string
	cmd    *exec.Cmd
	exited chan struct{}
	// tls, when set, is the client that trusts the hub's certificate: the
	// hub serves HTTPS and WSS.
	tls *http.Client
}

// startProcessHub runs the binary with the test configuration; env adds
// TERMHUB_* overrides.
func startProcessHub(t *testing.T, env ...string) *hubProcess {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("needs a real Redis (REDIS_URL): the embedded one dies with the process")
	}
	return startProcessHubOn(t, url, kit.Config, env...)
}

// startProcessHubOn runs the binary on redisURL ("" = embedded) with the
// merchants of merchantsYAML.
func startProcessHubOn(t *testing.T, url, merchantsYAML string, env ...string) *hubProcess {
	t.Helper()
	p := newProcessHub(t, url, merchantsYAML, env...)
	p.start()
	return p
}

// newProcessHub is startProcessHubOn without the start.
func newProcessHub(t *testing.T, url, merchantsYAML string, env ...string) *hubProcess {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	p := &hubProcess{t: t, bin: buildBinary(t), addr: kit.FreeAddr(t), env: env}
	p.config = filepath.Join(t.TempDir(), "termhub.yaml")
	cfg := fmt.Sprintf("listen: %q\nredis_url: %q\nkey_prefix: \"proc-%s:\"\nlog_level: warn\n%s",
		p.addr, url, hex.EncodeToString(b), merchantsYAML)
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *hubProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "serve", "--config", p.config)
	p.cmd.Stderr = os.Stderr
	p.cmd.Env = append(os.Environ(), p.env...)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(p.cmd, p.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := p.httpClient().Get(p.baseURL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.exited:
			p.t.Fatalf("hub exited at start-up: %v", p.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("hub did not become ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a process we just started
	}
}

func (p *hubProcess) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	<-p.exited
}

func (p *hubProcess) opts() client.Options {
	return client.Options{BaseURL: p.baseURL(), HTTPClient: p.tls}
}

func (p *hubProcess) baseURL() string {
	if p.tls != nil {
		return "https://" + p.addr
	}
	return "http://" + p.addr
}

func (p *hubProcess) httpClient() *http.Client {
	if p.tls != nil {
		return p.tls
	}
	return http.DefaultClient
}

func dialPOS(t *testing.T, p *hubProcess, id string) *client.Conn {
	t.Helper()
	c, err := client.DialPOS(kit.Ctx(t), p.opts(), id, kit.Secrets[id])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func dialTerminal(t *testing.T, p *hubProcess, id string) *client.Conn {
	t.Helper()
	c, err := client.DialTerminal(kit.Ctx(t), p.opts(), id, kit.Secrets[id])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func TestSIGKILLMidPaymentStillDeliversTheResult(t *testing.T) {
	p := startProcessHub(t)
	term := dialTerminal(t, p, "T1")
	pos := dialPOS(t, p, "pk1")
	id := pay(t, pos, "T1", 4200, "kill-1").Transaction.ID
	startCard(t, term, pos, id)

	p.kill9()
	_ = term.CloseNow()
	_ = pos.CloseNow()
	p.start()

	// The terminal reconnects with its cached approval.
	term2 := dialTerminal(t, p, "T1")
	var sp protocol.StartPayment
	if err := read(t, term2, "startPayment").Decode(&sp); err != nil || sp.TransactionID != id {
		t.Fatalf("open startPayment after restart: %+v %v", sp, err)
	}
	approveWith(t, term2, id, "K9")
	read(t, term2, "resultAck")

	// The POS reconnects and gets the result from the outbox.
	pos2 := dialPOS(t, p, "pk1")
	done := statusOf(t, pos2, id, protocol.StatusCompleted)
	if done.Action != "paymentComplete" || done.Transaction.AuthCode != "K9" {
		t.Fatalf("after SIGKILL: %+v", done)
	}
}

func TestSIGKILLDuringGraceStillFailsOnTime(t *testing.T) {
	const grace = 3 * time.Second
	p := startProcessHub(t, "TERMHUB_GRACE_PERIOD=3s")
	term := dialTerminal(t, p, "T1")
	pos := dialPOS(t, p, "pk1")
	id := pay(t, pos, "T1", 5100, "kill-2").Transaction.ID
	startCard(t, term, pos, id)

	_ = term.CloseNow()
	waiting := statusOf(t, pos, id, protocol.StatusAwaitingReconnect)
	droppedAt := waiting.Transaction.UpdatedAt
	p.kill9()
	_ = pos.CloseNow()
	p.start()

	pos2 := dialPOS(t, p, "pk1")
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		m, err := pos2.Read(c)
		if err != nil {
			t.Fatalf("no FAILED after restart: %v", err)
		}
		if m.MessageID() == "" {
			continue
		}
		ev := event(t, m)
		if ev.TransactionID != id || ev.Transaction.Status != protocol.StatusFailed {
			continue
		}
		if ev.Transaction.ErrorCode != "terminal_disconnected" {
			t.Fatalf("errorCode = %s", ev.Transaction.ErrorCode)
		}
		// The grace deadline is taken when the hub sees the drop, a moment
		// before the transaction records it: allow that much earlier.
		late := ev.Transaction.CompletedAt.Sub(droppedAt.Add(grace))
		if late < -100*time.Millisecond || late > 2*time.Second {
			t.Fatalf("failed %v after the grace deadline (dropped %v, completed %v)", late, droppedAt, ev.Transaction.CompletedAt)
		}
		return
	}
}
