// Package faultproxy puts an in-process toxiproxy between a test's client
// and its Redis, to delay, lose or reset the traffic of connections that
// stay in place, or to cut the path altogether: faults of the network,
// which stalling or killing the server cannot show.
package faultproxy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// restoreTimeout bounds Restore's retries of the bind on the proxy's port.
const restoreTimeout = 5 * time.Second

// Proxy forwards TCP connections from Addr to a Redis and applies the
// faults its methods switch on; each applies to the connections already
// open and to new ones. Its methods report failures with t.Fatal, so call
// them from the test's goroutine.
type Proxy struct {
	// Addr is "127.0.0.1:port"; it stays the same across Cut and Restore.
	Addr string

	t     testing.TB
	mu    sync.Mutex // serialises changes to the toxics and the listener
	proxy *toxiproxy.Proxy
	set   map[string]string // guarded by mu; each toxic's JSON, by name
}

// Start runs a proxy for t on a free port of 127.0.0.1, forwarding to
// upstream (host:port), and stops it when t ends. Upstream need not be
// up yet: a connection is dialled upstream when a client connects.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	// The API server is only the holder of the logger and metrics the
	// proxy reports to; its HTTP API is never started.
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	tp := toxiproxy.NewProxy(server, "faultproxy", "127.0.0.1:0", upstream)
	if err := tp.Start(); err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	// Start has set Listen to the port the kernel chose, so a Restore
	// after Cut binds the same one.
	p := &Proxy{Addr: tp.Listen, t: t, proxy: tp, set: make(map[string]string)}
	t.Cleanup(tp.Stop)
	return p
}

// URL is the proxy's address as a redis URL on database 0.
func (p *Proxy) URL() string { return "redis://" + p.Addr + "/0" }

// Cut stops the proxy: its open connections are closed (on both sides)
// and new ones are refused until Restore. Toxics stay in place.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
}

// Restore listens again on Addr after Cut; it does nothing if the proxy
// is not cut.
func (p *Proxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	deadline := time.Now().Add(restoreTimeout)
	for {
		err := p.proxy.Start()
		if err == nil || errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("faultproxy: Restore on %s: %v", p.Addr, err)
		}
		// Another socket holds the port, and nothing says when it lets go.
		time.Sleep(20 * time.Millisecond)
	}
}

// Clear removes every toxic. Connections that DropReplies was holding are
// closed by the removal (toxiproxy's timeout toxic closes its connection
// when removed); the others carry on unharmed.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Toxics.ResetToxics(context.Background())
	clear(p.set)
}
