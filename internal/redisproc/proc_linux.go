//go:build linux

package redisproc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// sysProcAttr has the kernel kill the server if the test binary dies
// without cleaning up, so that no redis-server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// waitState waits until the kernel reports p stopped (or no longer
// stopped): a signal is delivered asynchronously, and a test that sends a
// command right after Stall must find the server already frozen.
func waitState(p *process, stopped bool) error {
	pid := p.cmd.Process.Pid
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("redisproc: state of pid %d: %w", pid, err)
		}
		// The state follows the command name, which is in parentheses
		// and may itself hold ") ".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return fmt.Errorf("redisproc: unexpected %s: %q", path, b)
		}
		state := b[i+2]
		if (state == 'T' || state == 't') == stopped {
			return nil
		}
		if !p.alive() || state == 'Z' {
			return ErrNotRunning
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: pid %d still in state %c", pid, state)
		}
		// The stop is reported only through waitpid, which the goroutine
		// reaping the process owns: poll the state instead.
		time.Sleep(time.Millisecond)
	}
}
