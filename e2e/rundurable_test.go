package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
)

// make run-durable (scripts/run-durable.sh): the demo hub on a private,
// append-only local Redis that stops with the hub. These tests run the script
// itself, as a user would.

const runDurableScript = "../scripts/run-durable.sh"

// Without redis-server the script says how to get one and fails, before it
// builds or starts anything.
func TestRunDurableWithoutRedisServer(t *testing.T) {
	var out bytes.Buffer
	cmd := exec.Command("/bin/bash", runDurableScript)
	cmd.Env = []string{"PATH=/nonexistent", "HOME=" + t.TempDir(), "RUN_DIR=" + t.TempDir()}
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("exit: %v, want a non-zero exit\n%s", err, out.String())
	}
	for _, want := range []string{"redis-server is not installed", "apt-get install redis-server", "brew install redis", "make run"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("message lacks %q:\n%s", want, out.String())
		}
	}
}

// durableRun is one run of the script.
type durableRun struct {
	cmd    *exec.Cmd
	out    *kit.LogBuffer
	exited chan struct{}
	once   sync.Once
}

// startRunDurable runs the script with the demo config, the hub on listen
// and Redis on redisPort with its data in dir, and waits for /readyz.
func startRunDurable(t *testing.T, dir, listen string, redisPort int) *durableRun {
	t.Helper()
	r := &durableRun{cmd: exec.Command("/bin/bash", runDurableScript), out: &kit.LogBuffer{}, exited: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), "TERMHUB_BIN="+buildBinary(t), "TERMHUB_LISTEN="+listen,
		"RUN_DIR="+dir, fmt.Sprintf("REDIS_PORT=%d", redisPort), "TERMHUB_LOG_LEVEL=warn")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() { r.stop(t) })
	kit.Eventually(t, "the hub of run-durable ready", func() bool {
		select {
		case <-r.exited:
			t.Fatalf("run-durable exited at start-up (%v):\n%s", r.cmd.ProcessState, r.out.String())
		default:
		}
		resp, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return r
}

// stop sends SIGTERM, as Ctrl-C would end it, and waits for the script:
// the hub drains, then Redis is shut down.
func (r *durableRun) stop(t *testing.T) {
	r.once.Do(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
			t.Errorf("run-durable did not stop on SIGTERM:\n%s", r.out.String())
		}
	})
}

func TestRunDurableKeepsTransactionsAcrossARestart(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("needs redis-server on PATH (what make run-durable runs)")
	}
	dir, listen := t.TempDir(), kit.FreeAddr(t)
	_, portText, _ := net.SplitHostPort(kit.FreeAddr(t))
	var redisPort int
	fmt.Sscan(portText, &redisPort)
	opts := client.Options{BaseURL: "http://" + listen}

	first := startRunDurable(t, dir, listen, redisPort)
	term, err := client.DialTerminal(kit.Ctx(t), opts, "TERM-001", "dk_term001")
	if err != nil {
		t.Fatal(err)
	}
	pos := client.NewHTTP(opts, "pk_demo", "sk_demo")
	resp, err := pos.Do(kit.Ctx(t), http.MethodPost, "/v1/payments",
		map[string]any{"terminalId": "TERM-001", "amountMinor": 1250, "currency": "USD", "reference": "durable-1"}, nil)
	if err != nil || resp.Status != http.StatusCreated && resp.Status != http.StatusOK {
		t.Fatalf("payment: %v %+v", err, resp)
	}
	var created txnBody
	if err := resp.Decode(&created); err != nil || created.Transaction == nil {
		t.Fatalf("payment body %s: %v", resp.Body, err)
	}
	_ = term.CloseNow()

	first.stop(t)
	if st := first.cmd.ProcessState; st == nil || !st.Success() {
		t.Fatalf("run-durable after SIGTERM: %v\n%s", st, first.out.String())
	}
	// Redis went with the hub: its port is free again.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", redisPort)); err == nil {
		c.Close()
		t.Fatalf("Redis still answers on %d after the hub exited:\n%s", redisPort, first.out.String())
	}

	startRunDurable(t, dir, listen, redisPort)
	got, err := pos.Do(kit.Ctx(t), http.MethodGet, "/v1/transactions/"+created.Transaction.ID, nil, nil)
	if err != nil || got.Status != http.StatusOK {
		t.Fatalf("after the restart: %v %+v", err, got)
	}
	var again txnBody
	if err := got.Decode(&again); err != nil || again.Transaction == nil || again.Transaction.ID != created.Transaction.ID ||
		again.Transaction.Reference != "durable-1" || again.Transaction.Status == "" {
		t.Fatalf("after the restart: %s (%v)", got.Body, err)
	}
}
