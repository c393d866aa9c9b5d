package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a server the bench started as a child process: the hub (`termhub
// serve`) or the floor relay. A child has its own open-file limit and its
// own /proc entry, so its memory and CPU are its own.
type Proc struct {
	Cmd     *exec.Cmd // nil for a process the bench did not start
	LogPath string
	pid     int
	done    chan struct{}
	err     error
}

// ExistingProc stands for a server the bench did not start (--hub-pid): its
// RSS and CPU time can be read, and Stop does nothing.
func ExistingProc(pid int) *Proc { return &Proc{pid: pid} }

// StartProc starts exe with args, its output to logPath, and waits until
// url+"/readyz" answers 200 (at most 60 s: a hub with 15,000 terminals
// checks each for work in flight at start-up).
func StartProc(ctx context.Context, exe string, args []string, env []string, logPath, url string) (*Proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = logf, logf, env
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{Cmd: cmd, LogPath: logPath, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("bench: %s exited before it was ready (%v); its log:\n%s", exe, p.err, tail(logPath, 2000))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("bench: %s not ready within 60 s; its log:\n%s", exe, tail(logPath, 2000))
		}
	}
}

// Stop asks the process to drain (SIGTERM) and kills it if it has not
// exited within 20 s.
func (p *Proc) Stop() {
	if p.Cmd == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// PID is the process id.
func (p *Proc) PID() int { return p.pid }

// Signal sends s to the process.
func (p *Proc) Signal(s os.Signal) error {
	pr, err := os.FindProcess(p.pid)
	if err != nil {
		return err
	}
	return pr.Signal(s)
}

// RSS is the process's resident set size in bytes (VmRSS).
func (p *Proc) RSS() (int64, error) { return ProcRSS(p.PID()) }

// CPU is the CPU time (user + system) the process has used so far.
func (p *Proc) CPU() (time.Duration, error) { return ProcCPU(p.PID()) }

// ProcRSS reads VmRSS of pid from /proc/<pid>/status, in bytes.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("bench: no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// clockTicks is USER_HZ, 100 on every Linux the bench targets.
const clockTicks = 100

// ProcCPU reads utime+stime of pid from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it start
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bench: unreadable /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: unreadable /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// SelfCPU is the CPU time this process (the load generator) has used.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FreeAddr returns a free 127.0.0.1 port for a child to listen on.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail returns at most the last n bytes of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// childEnv is the environment of a child: this process's, without the
// variables that would override the generated configuration.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "REDIS_URL=") || strings.HasPrefix(kv, "TERMHUB_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// MachineBusy is the busy time of every core so far (/proc/stat: all but
// idle, iowait and steal) and, apart, the time the hypervisor ran something
// else on this machine's virtual cores (steal): on a shared host that is
// what makes two runs minutes apart differ, and no process here used it.
// Both are 0 when unreadable.
func MachineBusy() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	var n [7]int64 // user nice system idle iowait irq softirq
	for i := range n {
		n[i], _ = strconv.ParseInt(f[1+i], 10, 64)
	}
	var st int64
	if len(f) > 8 {
		st, _ = strconv.ParseInt(f[8], 10, 64)
	}
	// Guest time is already in user.
	busyTicks := n[0] + n[1] + n[2] + n[5] + n[6]
	return time.Duration(busyTicks) * time.Second / clockTicks, time.Duration(st) * time.Second / clockTicks
}

// CPUModel is the processor's model as /proc/cpuinfo names it ("" when
// unreadable or not named): the same code's figures differ between the
// hosts a virtual machine may land on, so a report says which it ran on.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	return cpuModel(b)
}

// cpuModel is the first "model name" in the text of /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return ""
}

// LoadAvg is the first field of /proc/loadavg ("" when unreadable).
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
