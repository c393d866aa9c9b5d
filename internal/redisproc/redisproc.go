// Package redisproc runs private redis-server processes for fault tests:
// tests that must stall Redis (SIGSTOP), kill it outright (SIGKILL) and
// bring it back on the same port and directory, with its data when the
// append-only file is on. An embedded Redis cannot be stalled or killed
// from outside, so these tests need the real binary.
package redisproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNotRunning is returned by the methods that signal the process when
// there is no live process to signal.
var ErrNotRunning = errors.New("redisproc: the server is not running")

// killTimeout bounds the wait for a killed process to be reaped; a process
// blocked in the kernel (an fsync on a slow disk) exits only when that returns.
const killTimeout = 10 * time.Second

// Options configure a server. The zero value is a server that keeps
// nothing across restarts.
type Options struct {
	// AppendOnly turns the append-only file on, so that a server that is
	// killed and restarted comes back with the writes it acknowledged.
	// Without it nothing is kept: RDB snapshots are off either way.
	AppendOnly bool
	// Fsync is appendfsync when AppendOnly is set: "always" (the default
	// when empty), "everysec" or "no". With anything but "always" a write
	// can be acknowledged before it is on disk.
	Fsync string
}

// withDefaults fills the defaults and rejects what redis-server would.
func (o Options) withDefaults() (Options, error) {
	switch o.Fsync {
	case "":
		o.Fsync = "always"
	case "always", "everysec", "no":
	default:
		return o, fmt.Errorf("redisproc: Fsync %q: want always, everysec or no", o.Fsync)
	}
	return o, nil
}

// Available reports whether a redis-server binary is on PATH.
func Available() bool {
	_, err := exec.LookPath(binary)
	return err == nil
}

// Start runs a private redis-server for t on a free port, in a directory
// of t.TempDir(), and returns once it answers PING. The server is stopped
// when t ends, resumed first if it is stalled.
//
// Without redis-server on PATH the test is skipped, unless the environment
// variable CI is set: CI must run these tests, so there it fails.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if !Available() {
		if os.Getenv("CI") != "" {
			t.Fatal("redisproc: redis-server is not on PATH, and CI must run the tests that need it")
		}
		t.Skip("redisproc: redis-server is not on PATH")
	}
	s, err := start(opts, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// New runs a private redis-server for a program that is not a test (a
// chaos harness): like Start, in a temporary directory of its own that
// Close removes.
func New(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "redisproc-")
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	s, err := start(opts, dir, true)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Server is one private redis-server. Its address and directory stay the
// same across Kill and Restart. Its methods may be called from any
// goroutine; they take effect one at a time.
type Server struct {
	// Addr is "127.0.0.1:port".
	Addr string
	// Dir is the server's working directory: the append-only files and
	// the server's log, redis.log.
	Dir string

	bin    string
	port   int
	opts   Options
	ownDir bool // New made Dir, so Close removes it

	mu      sync.Mutex
	proc    *process // guarded by mu; the current or last process
	stalled bool     // guarded by mu; SIGSTOP sent and not undone
}

// start runs a server in dir, on a fresh port for each attempt, since a
// port found free can be taken before redis-server binds it.
func start(opts Options, dir string, ownDir bool) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	s := &Server{Dir: dir, bin: bin, opts: opts, ownDir: ownDir}
	const attempts = 5
	for i := 0; ; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := s.launch()
		if err == nil {
			s.proc = p
			return s, nil
		}
		if !errors.Is(err, errPortTaken) || i+1 == attempts {
			return nil, err
		}
	}
}

// URL is the server's address as a redis URL on database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// PID is the process id of the current redis-server, or of the last one
// once it has been killed.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.cmd.Process.Pid
}

// Running reports whether the redis-server process is alive. A stalled
// server is alive: it is running, but not answering.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.alive()
}

// Stall stops the process with SIGSTOP and returns once the kernel has
// stopped it. The server stops answering but its connections stay open:
// what clients send waits in the socket buffers and is executed on Resume.
func (s *Server) Stall() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.proc.alive() {
		return ErrNotRunning
	}
	if s.stalled {
		return nil
	}
	if err := s.signalLocked(syscall.SIGSTOP); err != nil {
		return err
	}
	s.stalled = true
	return waitState(s.proc, true)
}

// Resume continues a stalled process with SIGCONT; it is a no-op when the
// server is not stalled.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.proc.alive() {
		return ErrNotRunning
	}
	if !s.stalled {
		return nil
	}
	if err := s.signalLocked(syscall.SIGCONT); err != nil {
		return err
	}
	s.stalled = false
	return waitState(s.proc, false)
}

// Kill kills the process with SIGKILL, as it is (a stalled process is not
// resumed first, so it gets no chance to run), and waits for it to exit.
// What reached the append-only file survives for Restart.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.proc.alive() {
		return ErrNotRunning
	}
	s.stalled = false
	return s.proc.kill()
}

// Restart starts the server again on the same port and directory with the
// same options, and returns once it answers PING with PONG, which is after
// it has loaded its append-only file. The server must not be running.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc.alive() {
		return errors.New("redisproc: Restart: the server is still running; Kill it first")
	}
	// The kernel can take a moment to let go of the port of a killed
	// process, and says nothing when it does: retry the bind briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := s.launch()
		if err == nil {
			s.proc = p
			s.stalled = false
			return nil
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close kills the process, waits for it to exit and, for a server made by
// New, removes its directory. The server cannot be restarted afterwards.
func (s *Server) Close() {
	s.stop()
	if s.ownDir {
		_ = os.RemoveAll(s.Dir)
	}
}

// stop ends the process if it is alive. A stalled one is resumed first so
// that it dies like a running one would.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.proc.alive() {
		return
	}
	if s.stalled {
		_ = s.signalLocked(syscall.SIGCONT)
		s.stalled = false
	}
	_ = s.proc.kill()
}

func (s *Server) signalLocked(sig syscall.Signal) error {
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("redisproc: %v to pid %d: %w", sig, s.proc.cmd.Process.Pid, err)
	}
	return nil
}
