package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
)

// The toxics, named after the method that sets them so that calling it
// again replaces the toxic rather than adding a second one.
const (
	latencyUp   = "latency_up"
	latencyDown = "latency_down"
	dropReplies = "drop_replies"
	resetAfter  = "reset_after"
)

// toxiproxy's names for the two directions.
const (
	upstream   = "upstream"   // client to Redis
	downstream = "downstream" // Redis to client
)

// Latency delays the data toward Redis by up and the data toward the
// client by down, so a round trip takes at least up+down longer; 0 leaves
// that direction undelayed. Durations are rounded up to milliseconds.
func (p *Proxy) Latency(up, down time.Duration) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range []struct {
		name, stream string
		d            time.Duration
	}{{latencyUp, upstream, up}, {latencyDown, downstream, down}} {
		if l.d <= 0 {
			p.removeLocked(l.name)
			continue
		}
		p.setLocked(l.name, "latency", l.stream, map[string]int64{"latency": millis(l.d)})
	}
}

// DropReplies lets data toward Redis through, so commands are executed,
// and discards everything that comes back: the client's reads time out
// on connections that stay open. Clear undoes it.
func (p *Proxy) DropReplies() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	// A timeout toxic with timeout 0 drops data and never closes.
	p.setLocked(dropReplies, "timeout", downstream, map[string]int64{"timeout": 0})
}

// ResetAfter resets each connection d after the client first sends on it.
// The data that starts the clock, and all after it, is discarded, so the
// command that meets the reset is never executed: the client gets a
// connection error for a command Redis did not run (DropReplies is the
// case of a command that ran). Connections opened after the call are
// reset with a TCP RST (ECONNRESET); toxiproxy can set that up only when
// it accepts a connection, so connections already open are closed with
// a FIN instead (EOF).
func (p *Proxy) ResetAfter(d time.Duration) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(resetAfter, "reset_peer", upstream, map[string]int64{"timeout": millis(max(d, 0))})
}

// toxic is the JSON toxiproxy reads a toxic from; AddToxicJson is the
// only exported way to add one.
type toxic struct {
	Name       string           `json:"name"`
	Type       string           `json:"type"`
	Stream     string           `json:"stream"`
	Toxicity   float32          `json:"toxicity"`
	Attributes map[string]int64 `json:"attributes"`
}

// setLocked replaces the toxic called name, unless it is already set as
// asked: removing a timeout toxic closes its connections, so DropReplies
// called twice must leave the first one alone. (Updating a toxic in place
// is no way out: toxiproxy rewrites the attributes while the running
// toxics read them.)
func (p *Proxy) setLocked(name, typ, stream string, attrs map[string]int64) {
	p.t.Helper()
	body, err := json.Marshal(toxic{Name: name, Type: typ, Stream: stream, Toxicity: 1, Attributes: attrs})
	if err != nil {
		p.t.Fatalf("faultproxy: %s: %v", name, err)
	}
	if p.set[name] == string(body) {
		return
	}
	p.removeLocked(name)
	if _, err := p.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		p.t.Fatalf("faultproxy: add %s: %v", name, err)
	}
	p.set[name] = string(body)
}

// removeLocked removes the toxic called name if there is one.
func (p *Proxy) removeLocked(name string) {
	p.t.Helper()
	delete(p.set, name)
	err := p.proxy.Toxics.RemoveToxic(context.Background(), name)
	if err != nil && !errors.Is(err, toxiproxy.ErrToxicNotFound) {
		p.t.Fatalf("faultproxy: remove %s: %v", name, err)
	}
}

// millis is d in whole milliseconds, rounded up so that a short delay is
// not lost.
func millis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
