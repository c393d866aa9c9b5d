package e2e

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

const testConfig = `
grace_period: 60s
payment_timeout: 180s
# Long enough that clock jumps of minutes never look like missed pongs;
# heartbeats have their own tests in package hub.
heartbeat_interval: 24h
signature_timeout: 60s
merchants:
  - id: m1
    name: Shop One
    api_keys:
      - {id: pk1, secret: sk1}
      - {id: pk1b, secret: sk1b}
    terminals:
      - {device_id: T1, secret: dt1, label: Front}
      - {device_id: T2, secret: dt2, label: Back}
  - id: m2
    name: Shop Two
    api_keys:
      - {id: pk2, secret: sk2}
    terminals:
      - {device_id: U1, secret: du1, label: Till}
`

var secrets = map[string]string{"pk1": "sk1", "pk1b": "sk1b", "pk2": "sk2", "T1": "dt1", "T2": "dt2", "U1": "du1"}

// env is one running hub for a test.
type env struct {
	t     *testing.T
	App   *app.App
	Clock *clock.Fake
	Srv   *httptest.Server
	Redis *redistest.Redis
	opts  client.Options

	mu      sync.Mutex
	clients map[string]*client.HTTP // one per API key, as one POS process has
}

// newEnv starts a hub. A log is written to the test output when TERMHUB_TEST_LOG is set.
func newEnv(t *testing.T) *env {
	t.Helper()
	return envFrom(t, apptest.Start(t, testConfig))
}

// envFrom wraps a started hub in the harness.
func envFrom(t *testing.T, h *apptest.Env) *env {
	return &env{t: t, App: h.App, Clock: h.Clock, Srv: h.Srv, Redis: h.Redis, opts: client.Options{BaseURL: h.Srv.URL, Now: h.Clock.Now}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// pos connects a POS with key id.
func (e *env) pos(id string) *client.Conn {
	e.t.Helper()
	c, err := client.DialPOS(ctx(e.t), e.opts, id, secrets[id])
	if err != nil {
		e.t.Fatalf("dial POS %s: %v", id, err)
	}
	e.t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// terminal connects a terminal and waits until the hub has it online.
func (e *env) terminal(id string) *client.Conn {
	e.t.Helper()
	c, err := client.DialTerminal(ctx(e.t), e.opts, id, secrets[id])
	if err != nil {
		e.t.Fatalf("dial terminal %s: %v", id, err)
	}
	e.t.Cleanup(func() { _ = c.CloseNow() })
	eventually(e.t, func() bool { s, cid, _ := e.App.Hub.TerminalLive(id); return s == "online" && cid == c.ConnectionID() })
	return c
}

// http returns a signed REST client for key id.
// http is the REST client of API key id. It is the same client each time,
// as in a POS process: it signs a repeat of an identical request for the
// next second, so the hub does not take it for a replay.
func (e *env) http(id string) *client.HTTP {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients == nil {
		e.clients = map[string]*client.HTTP{}
	}
	if e.clients[id] == nil {
		e.clients[id] = client.NewHTTP(e.opts, id, secrets[id])
	}
	return e.clients[id]
}

// eventually polls cond until it holds or 5 s pass (no sleeping on a guess).
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// read reads the next message of the given action, skipping others.
func read(t *testing.T, c *client.Conn, action string) client.Message {
	t.Helper()
	m, err := c.ReadUntil(ctx(t), action)
	if err != nil {
		t.Fatalf("waiting for %s: %v", action, err)
	}
	return m
}

// event decodes a durable POS message.
func event(t *testing.T, m client.Message) protocol.POSEvent {
	t.Helper()
	var ev protocol.POSEvent
	if err := m.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// send sends a client action with fields.
func send(t *testing.T, c *client.Conn, action string, fields map[string]any) {
	t.Helper()
	msg := map[string]any{"action": action}
	for k, v := range fields {
		msg[k] = v
	}
	if err := c.Send(ctx(t), msg); err != nil {
		t.Fatalf("send %s: %v", action, err)
	}
}

// reply reads the reply to action (or an error) and decodes it.
func reply(t *testing.T, c *client.Conn, action string) (protocol.Response, *protocol.Error) {
	t.Helper()
	for {
		m, err := c.Read(ctx(t))
		if err != nil {
			t.Fatalf("waiting for %sResponse: %v", action, err)
		}
		if m.Action == protocol.ActionError {
			return protocol.Response{}, m.Err()
		}
		if m.Action == protocol.ResponseAction(action) {
			var r protocol.Response
			if err := json.Unmarshal(m.Raw, &r); err != nil {
				t.Fatal(err)
			}
			return r, nil
		}
	}
}

// pay sends a payment and returns the reply.
func pay(t *testing.T, c *client.Conn, terminal string, minor int64, ref string) protocol.Response {
	t.Helper()
	send(t, c, "payment", map[string]any{"terminalId": terminal, "amountMinor": minor, "currency": "USD", "reference": ref})
	r, e := reply(t, c, "payment")
	if e != nil {
		t.Fatalf("payment refused: %v", e)
	}
	return r
}
