package redisproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// binary is the program looked up on PATH.
	binary = "redis-server"
	// logName is the server's log in Dir; stdioName catches what it
	// prints before the log is open (a bad option, say).
	logName   = "redis.log"
	stdioName = "redis.stdio"
	// readyTimeout bounds the wait for a new process to answer PONG,
	// loading its append-only file included.
	readyTimeout = 15 * time.Second
	// pollInterval paces the readiness probes: redis-server offers no
	// signal of its own that it is ready.
	pollInterval = 10 * time.Millisecond
	// logTailLines is how much of the log an error carries.
	logTailLines = 20
)

// errPortTaken marks a start that failed because the port was not ours.
var errPortTaken = errors.New("port already in use")

// process is one run of redis-server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

// alive reports whether p has been started and has not exited; nil is not alive.
func (p *process) alive() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be reaped.
func (p *process) kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("redisproc: kill pid %d: %w", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("redisproc: pid %d did not exit within %v of SIGKILL", p.cmd.Process.Pid, killTimeout)
	}
}

// freePort asks the kernel for a free port on 127.0.0.1. It is free when
// this returns; start retries if someone takes it before redis-server does.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redisproc: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// args is the command line: no config file, so nothing of the machine's
// /etc/redis applies.
func (s *Server) args() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.Dir,
		"--logfile", filepath.Join(s.Dir, logName),
		"--daemonize", "no",
		"--save", "",
	}
	if s.opts.AppendOnly {
		return append(a, "--appendonly", "yes", "--appendfsync", s.opts.Fsync)
	}
	return append(a, "--appendonly", "no")
}

// launch starts a process on s.port and waits until it answers. On
// failure the process is killed and the error carries the log's tail.
func (s *Server) launch() (*process, error) {
	logPath := filepath.Join(s.Dir, logName)
	stdioPath := filepath.Join(s.Dir, stdioName)
	logFrom, stdioFrom := fileSize(logPath), fileSize(stdioPath)

	stdio, err := os.OpenFile(stdioPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = stdio, stdio
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	_ = stdio.Close()
	if err != nil {
		return nil, fmt.Errorf("redisproc: start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()

	if err := s.waitReady(p); err != nil {
		_ = p.kill()
		out := tail(logPath, logFrom) + tail(stdioPath, stdioFrom)
		if strings.Contains(out, "Address already in use") {
			err = fmt.Errorf("%w: %v", errPortTaken, err)
		}
		return nil, fmt.Errorf("redisproc: start on %s (pid %d): %w\n%s", s.Addr, cmd.Process.Pid, err, out)
	}
	return p, nil
}

// waitReady polls until p answers PING with PONG (not LOADING), then
// checks that the answer came from p and not from another server that
// holds the port.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		pid, err := probe(s.Addr)
		switch {
		case err == nil && pid == p.cmd.Process.Pid:
			return nil
		case err == nil:
			return fmt.Errorf("%w: pid %d answers there", errPortTaken, pid)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %v", readyTimeout, last)
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.cmd.ProcessState)
		case <-time.After(pollInterval):
		}
	}
}

// probe sends PING and, on PONG, INFO server, and returns the process id
// of the server that answered.
func probe(addr string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(conn)

	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return 0, fmt.Errorf("PING: %s", line)
	}

	if _, err := io.WriteString(conn, "INFO server\r\n"); err != nil {
		return 0, err
	}
	head, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(head), "$"))
	if err != nil || !strings.HasPrefix(head, "$") {
		return 0, fmt.Errorf("INFO: %s", strings.TrimSpace(head))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO: no process_id")
}

// fileSize is the size of path, 0 when it does not exist yet.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tail returns the last lines written to path after offset, so that an
// error shows this start's failure, not an earlier run's.
func tail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return filepath.Base(path) + ":\n" + string(bytes.Join(lines, []byte("\n"))) + "\n"
}
