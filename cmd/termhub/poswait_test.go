package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// TestPOSSignatureAnswersBinary answers a signature prompt (amount ending
// in 55) both ways through the built binary and checks the words printed:
// "signature accepted" and "signature declined" (once "declineed").
func TestPOSSignatureAnswersBinary(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	for answer, want := range map[string][]string{
		"accept":  {"signature accepted\n", "\nCOMPLETED  txn_"},
		"decline": {"signature declined\n", "\nDECLINED  txn_"},
	} {
		out, errOut, code := runTermhub(t, bin, h.url, "pos", "pay", "--terminal", "T1", "--amount", "1.55", "--wait", "--signature", answer)
		if code != 0 || strings.Contains(out, "declineed") {
			t.Fatalf("--signature %s: exit %d\n%s%s", answer, code, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("--signature %s: output lacks %q:\n%s", answer, w, out)
			}
		}
	}
}

// runningTermhub is a termhub process started by startTermhub, whose
// stdout and stderr are collected as it runs.
type runningTermhub struct {
	cmd      *exec.Cmd
	out, err *kit.LogBuffer // written by the process while the test reads
	done     chan struct{}  // closed when it has exited
	code     int            // its exit status, once done
}

// startTermhub starts bin with args as key pk1 of the hub at hubURL (like
// runTermhub) without waiting for it; it is killed at the end of the test
// if still running.
func startTermhub(t *testing.T, bin, hubURL string, args ...string) *runningTermhub {
	t.Helper()
	r := &runningTermhub{cmd: exec.Command(bin, args...), out: &kit.LogBuffer{}, err: &kit.LogBuffer{}, done: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), "TERMHUB_URL="+hubURL, "TERMHUB_KEY=pk1", "TERMHUB_SECRET=sk1")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.err
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting termhub %q: %v", args, err)
	}
	go func() {
		err := r.cmd.Wait()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			r.code = exit.ExitCode()
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// waitOutput waits until the process's stdout matches ok, for up to d.
func (r *runningTermhub) waitOutput(t *testing.T, what string, d time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out := r.out.String()
		if ok(out) {
			return out
		}
		select {
		case <-r.done:
			t.Fatalf("termhub exited (status %d) before %s:\nstdout:\n%s\nstderr:\n%s", r.code, what, out, r.err.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s:\nstdout:\n%s\nstderr:\n%s", what, d, out, r.err.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the process to exit, for up to d, and returns its status.
func (r *runningTermhub) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(d):
		t.Fatalf("termhub still running after %s:\nstdout:\n%s\nstderr:\n%s", d, r.out.String(), r.err.String())
		return 0
	}
}

// TestPOSPayWaitInterrupted sends SIGINT, as Ctrl-C does, to `pos pay
// --wait` while it waits for a payment the terminal never answers (amount
// ending in 99): it exits 130 with a message that names the transaction,
// not "context canceled", and the payment is left running.
func TestPOSPayWaitInterrupted(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	r := startTermhub(t, bin, h.url, "pos", "pay", "--terminal", "T1", "--amount", "1.99", "--wait")
	out := r.waitOutput(t, "the created payment", 10*time.Second, func(s string) bool { return strings.HasPrefix(s, "PENDING  txn_") && strings.Contains(s, "\n") })
	id := strings.Fields(out)[1]
	if !strings.HasPrefix(id, "txn_") {
		t.Fatalf("no transaction id in\n%s", out)
	}
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, 10*time.Second); code != exitInterrupted {
		t.Fatalf("exit status %d, want %d\nstderr:\n%s", code, exitInterrupted, r.err.String())
	}
	errOut := r.err.String()
	if strings.Contains(errOut, "context canceled") || !strings.Contains(errOut, "interrupted: the payment goes on") ||
		!strings.Contains(errOut, "termhub pos status "+id) {
		t.Fatalf("stderr:\n%s", errOut)
	}
	st, errOut, code := runTermhub(t, bin, h.url, "pos", "status", id)
	if f := strings.Fields(st); code != 0 || len(f) < 2 || f[1] != id || protocol.Status(f[0]).Final() {
		t.Fatalf("status after the interrupt: exit %d\n%s%s", code, st, errOut)
	}
}

// TestPOSCaptureVoidWaitBinary: capture and void answer with the sale as it
// was (the hub only asks the terminal); with --wait they print it after
// the terminal's answer. Also through the binary: pay --timeout reaches
// the transaction, and status shows the refunded amount.
func TestPOSCaptureVoidWaitBinary(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := runTermhub(t, bin, h.url, append([]string{"pos"}, args...)...)
		if code != 0 {
			t.Fatalf("pos %q: exit %d\n%s%s", args, code, out, errOut)
		}
		return out
	}
	idOf := func(out string) string {
		t.Helper()
		f := strings.Fields(out)
		if len(f) < 2 || !strings.HasPrefix(f[1], "txn_") {
			t.Fatalf("no transaction id in\n%s", out)
		}
		return f[1]
	}

	// A manual sale with its own timeout, authorized.
	out := run("pay", "--terminal", "T1", "--amount", "20.00", "--capture", "manual", "--timeout", "30", "--wait")
	if !strings.Contains(out, "\nAUTHORIZED  txn_") {
		t.Fatalf("manual pay:\n%s", out)
	}
	sale := idOf(out)
	if js := run("status", sale, "--json"); !strings.Contains(js, `"timeoutSeconds":30`) {
		t.Fatalf("pay --timeout 30 did not reach the transaction:\n%s", js)
	}

	// capture --wait: the answer (still AUTHORIZED), then the sale captured.
	out = run("capture", sale, "--amount", "15.00", "--wait")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "AUTHORIZED  "+sale) || !strings.Contains(out, "\nCOMPLETED  "+sale+"  15.00 USD") {
		t.Fatalf("capture --wait:\n%s", out)
	}

	// status shows what was refunded, formatted like the amount.
	run("refund", sale, "--amount", "5.00", "--wait")
	if out = run("status", sale); !strings.HasPrefix(out, "COMPLETED  "+sale) || !strings.Contains(out, "refunded: 5.00 USD") {
		t.Fatalf("status after a refund:\n%s", out)
	}

	// void without --wait: the sale as it was, and what happens next.
	other := idOf(run("pay", "--terminal", "T1", "--amount", "3.00", "--wait"))
	out = run("void", other)
	if !strings.HasPrefix(out, "COMPLETED  "+other) || !strings.Contains(out, "sent to the terminal: it is VOIDED once the terminal agrees") {
		t.Fatalf("void:\n%s", out)
	}
	// void --wait: the sale voided (a repeat while the void is open waits
	// for the same answer; once voided it answers VOIDED at once).
	third := idOf(run("pay", "--terminal", "T1", "--amount", "4.00", "--wait"))
	out = run("void", third, "--reason", "wrong amount", "--wait")
	if !strings.HasPrefix(out, "COMPLETED  "+third) || !strings.Contains(out, "\nVOIDED  "+third) {
		t.Fatalf("void --wait:\n%s", out)
	}
	if out = run("void", third, "--wait"); !strings.HasPrefix(out, "VOIDED  "+third) || strings.Count(out, third) != 1 {
		t.Fatalf("repeated void --wait:\n%s", out)
	}
}

// TestPOSWatchAndPayWaitBinary is the README's flow: `pos watch` in one
// shell, `pos pay --wait` with the same key in another. The pay completes,
// and the watch stays connected (pay --wait opens no WebSocket of the key
// to displace it) and prints the payment's updates.
func TestPOSWatchAndPayWaitBinary(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	watch := startTermhub(t, bin, h.url, "pos", "watch")
	watch.waitOutput(t, "the watch's greeting", 10*time.Second, func(s string) bool { return strings.Contains(s, " connected conn_") })

	for _, amount := range []string{"2.00", "2.05", "1.55"} {
		out, errOut, code := runTermhub(t, bin, h.url, "pos", "pay", "--terminal", "T1", "--amount", amount, "--wait", "--signature", "accept")
		if code != 0 {
			t.Fatalf("pay %s --wait: exit %d\n%s%s", amount, code, out, errOut)
		}
		id := strings.Fields(out)[1]
		if !strings.Contains(out, "\nCOMPLETED  "+id) && !strings.Contains(out, "\nDECLINED  "+id) {
			t.Fatalf("pay %s --wait did not print the outcome:\n%s", amount, out)
		}
		watch.waitOutput(t, "the watch's paymentComplete for "+id, 10*time.Second, func(s string) bool {
			return strings.Contains(s, "paymentComplete  ") && strings.Contains(s, "  "+id+"  ")
		})
	}
	select {
	case <-watch.done:
		t.Fatalf("the watch ended (status %d):\n%s\n%s", watch.code, watch.out.String(), watch.err.String())
	default:
	}
	if out := watch.out.String(); strings.Contains(out, "api_key_used_elsewhere") || strings.Count(out, " connected conn_") != 1 {
		t.Fatalf("the watch was displaced or reconnected:\n%s", out)
	}
	if err := watch.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := watch.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("watch after Ctrl-C: exit %d\n%s", code, watch.err.String())
	}
}

// TestHelpCitesRepositoryDocs: the help texts send a reader to the
// repository's own docs, not to a specification outside it.
func TestHelpCitesRepositoryDocs(t *testing.T) {
	bin := buildTermhub(t)
	for _, args := range [][]string{{"help"}, {"pos", "-h"}, {"sim", "-h"}, {"bench", "-h"}} {
		out, errOut, _ := runTermhub(t, bin, "http://127.0.0.1:1", args...)
		if text := out + errOut; strings.Contains(text, "CONTRACT") || strings.Contains(text, "../shared") {
			t.Errorf("termhub %q cites a document outside the repository:\n%s", args, text)
		}
	}
	out, errOut, _ := runTermhub(t, bin, "http://127.0.0.1:1", "pos", "-h")
	if !strings.Contains(out+errOut, "docs/protocol.md") {
		t.Errorf("pos -h does not point to docs/protocol.md:\n%s%s", out, errOut)
	}
}
