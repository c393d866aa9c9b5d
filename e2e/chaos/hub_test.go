package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
)

// Hub timers: short, so that every transaction can end within the settle
// wait, yet long enough that a fault of a few seconds does not by itself
// time every payment out.
const (
	gracePeriod      = 8 * time.Second
	paymentTimeout   = 20 * time.Second
	heartbeat        = 2 * time.Second
	signatureTimeout = 10 * time.Second
	requestTimeout   = 2 * time.Second // TERMHUB_REQUEST_TIMEOUT
)

// readyTimeout bounds one (re)start of the hub, retries included.
const readyTimeout = 60 * time.Second

// hubProcess is the real termhub binary, (re)started on one address and one
// configuration for the whole run. Its stderr goes to one log file, every
// start marked in it.
type hubProcess struct {
	t       *testing.T
	bin     string
	config  string
	addr    string
	logPath string
	env     []string

	// life serialises starts and kills: the fault rounds and the restart of
	// a hub that died by itself must not interleave.
	life sync.Mutex
	// died receives a process that exited by itself after it was ready.
	died chan *hubRun

	mu           sync.Mutex
	cur          *hubRun  // guarded by mu; the latest process
	starts       int      // guarded by mu; processes launched
	failedStarts int      // guarded by mu; processes that exited before they were ready
	unexpected   []string // guarded by mu; exits of ready hubs the harness did not cause
}

// hubRun is one hub process.
type hubRun struct {
	n      int
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	killed atomic.Bool   // the harness killed it
	ready  atomic.Bool   // /readyz answered 200 once
}

// buildHub compiles ./cmd/termhub once into dir.
func buildHub(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "termhub")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/termhub/termhub/cmd/termhub")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/termhub: %v\n%s", err, out)
	}
	return bin
}

// hubConfig is the YAML of the one merchant, its keys and terminals.
func hubConfig(addr, redisURL string, keys []credential, terminals []credential) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\nredis_url: %q\nkey_prefix: \"chaos-%s:\"\n", addr, redisURL, randomHex(6))
	fmt.Fprintf(&b, "grace_period: %s\npayment_timeout: %s\nheartbeat_interval: %s\nsignature_timeout: %s\n",
		gracePeriod, paymentTimeout, heartbeat, signatureTimeout)
	b.WriteString("log_level: warn\nops_token: chaos-ops\nmerchants:\n  - id: m_chaos\n    name: Chaos Store\n    api_keys:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "      - {id: %s, secret: %s}\n", k.id, k.secret)
	}
	b.WriteString("    terminals:\n")
	for _, d := range terminals {
		fmt.Fprintf(&b, "      - {device_id: %s, secret: %s, label: %s}\n", d.id, d.secret, d.id)
	}
	return b.String()
}

// newHub writes the configuration and starts the hub; it is killed when the
// test ends.
func newHub(t *testing.T, bin, redisURL string, keys, terminals []credential) *hubProcess {
	t.Helper()
	dir := t.TempDir()
	p := &hubProcess{
		t: t, bin: bin, addr: kit.FreeAddr(t),
		config:  filepath.Join(dir, "termhub.yaml"),
		logPath: filepath.Join(dir, "termhub.log"),
		env:     []string{"TERMHUB_REQUEST_TIMEOUT=" + requestTimeout.String()},
		died:    make(chan *hubRun, 1),
	}
	if err := os.WriteFile(p.config, []byte(hubConfig(p.addr, redisURL, keys, terminals)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("hub log: %s", p.logPath)
	t.Cleanup(p.kill9)
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// hubEnviron is this process's environment without the variables that
// would override the hub's configuration (TERMHUB_*, REDIS_URL): a
// REDIS_URL exported for `make test` must not point the hub away from its
// private Redis.
func hubEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TERMHUB_") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *hubProcess) baseURL() string { return "http://" + p.addr }

func (p *hubProcess) opts() client.Options {
	return client.Options{BaseURL: p.baseURL(), HTTPClient: &http.Client{Timeout: answerTimeout}}
}

// start launches the hub and waits until /readyz answers 200, launching it
// again whenever it exits first (a hub may refuse to start while Redis is
// down), for at most readyTimeout.
func (p *hubProcess) start() error {
	p.life.Lock()
	defer p.life.Unlock()
	return p.startLocked()
}

func (p *hubProcess) startLocked() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		run, err := p.launch()
		if err != nil {
			return err
		}
		if p.readyOrExited(run, deadline) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hub not ready within %s (log %s)", readyTimeout, p.logPath)
		}
		time.Sleep(300 * time.Millisecond) // a pause before launching it again
	}
}

// readyOrExited polls /readyz until it answers 200 (true), the process
// exits or the deadline passes (false).
func (p *hubProcess) readyOrExited(run *hubRun, deadline time.Time) bool {
	for {
		if p.ready() {
			run.ready.Store(true)
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-run.exited:
			return false
		case <-time.After(100 * time.Millisecond): // polling /readyz
		}
	}
}

// launch runs one hub process with stdout and stderr appended to the log.
func (p *hubProcess) launch() (*hubRun, error) {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.starts++
	run := &hubRun{n: p.starts, exited: make(chan struct{})}
	p.mu.Unlock()
	fmt.Fprintf(log, "=== chaos harness: hub start #%d at %s\n", run.n, clockTime(time.Now()))
	run.cmd = exec.Command(p.bin, "serve", "--config", p.config)
	run.cmd.Stdout, run.cmd.Stderr = log, log
	run.cmd.Env = append(hubEnviron(), p.env...)
	if err := run.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting the hub: %w", err)
	}
	p.mu.Lock()
	p.cur = run
	p.mu.Unlock()
	go p.reap(run, log)
	return run, nil
}

// reap waits for run to exit and records an exit the harness did not cause.
func (p *hubProcess) reap(run *hubRun, log *os.File) {
	err := run.cmd.Wait()
	if !run.killed.Load() {
		fmt.Fprintf(log, "=== chaos harness: hub #%d exited by itself at %s: %v\n", run.n, clockTime(time.Now()), err)
	}
	log.Close()
	p.mu.Lock()
	switch {
	case run.killed.Load():
	case !run.ready.Load():
		p.failedStarts++
	default:
		p.unexpected = append(p.unexpected, fmt.Sprintf("%s hub #%d exited by itself: %v", clockTime(time.Now()), run.n, err))
	}
	p.mu.Unlock()
	close(run.exited)
	if run.ready.Load() && !run.killed.Load() {
		select {
		case p.died <- run:
		default:
		}
	}
}

// ready reports whether /readyz answers 200 now.
func (p *hubProcess) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(p.baseURL() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReady polls /readyz until it answers 200 or d passes.
func (p *hubProcess) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !p.ready() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond) // polling /readyz
	}
	return true
}

// kill9 kills the hub with SIGKILL and waits for it to be gone.
func (p *hubProcess) kill9() {
	p.life.Lock()
	defer p.life.Unlock()
	p.killLocked()
}

// restartAfter kills the hub with SIGKILL, leaves it dead for down and
// starts it again, returning when it was launched again and once it is
// ready.
func (p *hubProcess) restartAfter(down time.Duration) (time.Time, error) {
	p.life.Lock()
	defer p.life.Unlock()
	p.killLocked()
	time.Sleep(down) // the fault's schedule: how long the hub stays dead
	return time.Now(), p.startLocked()
}

func (p *hubProcess) killLocked() {
	p.mu.Lock()
	run := p.cur
	p.mu.Unlock()
	if run == nil {
		return
	}
	run.killed.Store(true)
	_ = run.cmd.Process.Signal(syscall.SIGKILL)
	<-run.exited
}

// supervise starts the hub again whenever a ready hub exits without the
// harness having killed it (a crash is a finding, not the end of the run),
// until ctx ends.
func (p *hubProcess) supervise(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case run := <-p.died:
			p.life.Lock()
			p.mu.Lock()
			current := p.cur == run
			p.mu.Unlock()
			if current && ctx.Err() == nil {
				p.t.Logf("%s hub #%d exited by itself: starting it again", clockTime(time.Now()), run.n)
				if err := p.startLocked(); err != nil {
					p.t.Errorf("starting again a hub that exited by itself: %v", err)
				}
			}
			p.life.Unlock()
		}
	}
}

// counts reports how many processes were launched and how many exited
// before they were ready.
func (p *hubProcess) counts() (starts, failedStarts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts, p.failedStarts
}

// unexpectedExits lists the hub exits the harness did not cause.
func (p *hubProcess) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// keepLog copies the hub's log out of the test's temporary directory,
// which is removed when the test ends, and returns the copy's path.
func (p *hubProcess) keepLog() (string, error) {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "termhub-chaos-*.log")
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = f.Write(data)
	return f.Name(), err
}

// logTail returns the last n lines of the hub's log.
func (p *hubProcess) logTail(n int) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		lines = append(lines, "(reading the log: "+err.Error()+")")
	}
	return strings.Join(lines, "\n")
}

// clockTime formats a wall-clock time for the run's log lines.
func clockTime(t time.Time) string { return t.Format("15:04:05.000") }
