package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// NodeLauncher starts several hub processes ("nodes") on one Redis and one
// key prefix, which makes them one hub (docs/cluster.md). The multi-node
// scenarios need it; a launcher without it (--hub-url) cannot run them.
type NodeLauncher interface {
	// Nodes starts n nodes with distinct node ids and listeners; stop ends
	// every node still running and removes what they wrote to Redis.
	Nodes(ctx context.Context, name string, n int, nodeTimeout time.Duration, profile bool) (eps []Endpoint, stop func(), err error)
}

// Nodes starts n hubs as children, sharing the key prefix of name. With
// profile each runs under --serve-hub and profiles its CPU into
// ProfilePath(CPUProfile, name+"-node<i>") between SIGUSR1 and SIGUSR2.
func (l *ChildLauncher) Nodes(ctx context.Context, name string, n int, nodeTimeout time.Duration, profile bool) ([]Endpoint, func(), error) {
	if l.RedisURL == "" {
		return nil, nil, fmt.Errorf("bench: several nodes need a shared Redis (--redis): the embedded one is always alone")
	}
	prefix := l.prefix(name)
	var (
		mu    sync.Mutex
		procs []*Proc
	)
	stop := func() {
		// Every node drains at once: one at a time would hand each
		// node's clients to the next and take n drains.
		var wg sync.WaitGroup
		mu.Lock()
		for _, p := range procs {
			wg.Go(p.Stop)
		}
		mu.Unlock()
		wg.Wait()
		l.cleanup(prefix)
	}
	eps := make([]Endpoint, n)
	for i := range n {
		ep, p, err := l.node(ctx, name, prefix, i, nodeTimeout, profile)
		if err != nil {
			stop()
			return nil, nil, err
		}
		mu.Lock()
		procs = append(procs, p)
		mu.Unlock()
		eps[i] = ep
	}
	return eps, stop, nil
}

// node starts node i of name.
func (l *ChildLauncher) node(ctx context.Context, name, prefix string, i int, nodeTimeout time.Duration, profile bool) (Endpoint, *Proc, error) {
	addr, err := FreeAddr()
	if err != nil {
		return Endpoint{}, nil, err
	}
	id := fmt.Sprintf("bench-%s-%s-n%d", l.Tag, name, i)
	extra := fmt.Sprintf("node_id: %q\nnode_timeout: %s\n", id, nodeTimeout)
	path := filepath.Join(l.Dir, fmt.Sprintf("hub-%s-n%d.yaml", name, i))
	if err := os.WriteFile(path, l.Fleet.configYAML(addr, l.RedisURL, prefix, l.LogLevel, extra), 0o600); err != nil {
		return Endpoint{}, nil, err
	}
	args := []string{"serve", "--config", path}
	if profile {
		args = []string{"bench", "--serve-hub", path, "--cpuprofile", ProfilePath(l.CPUProfile, fmt.Sprintf("%s-node%d", name, i))}
	}
	url := "http://" + addr
	start := time.Now()
	p, err := StartProc(ctx, l.Exe, args, childEnv(), filepath.Join(l.Dir, fmt.Sprintf("hub-%s-n%d.log", name, i)), url)
	if err != nil {
		return Endpoint{}, nil, err
	}
	fmt.Fprintf(l.Log, "bench: node %s: pid %d on %s, ready in %s, log %s\n", id, p.PID(), addr, time.Since(start).Round(time.Millisecond), p.LogPath)
	return Endpoint{Name: "hub", URL: url, Fleet: l.Fleet, Proc: p, OpsToken: opsToken(prefix), NodeID: id}, p, nil
}

// Kill ends the process at once (SIGKILL, as `kill -9`: no drain, no
// goodbye to anyone) and waits until it has exited.
func (p *Proc) Kill() {
	if p.Cmd == nil {
		return
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
}
