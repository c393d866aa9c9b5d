package hub

// White-box tests of what the black-box tests cannot order: a replay that
// asks to send before the greeting is queued.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/wsconn"
	"github.com/termhub/termhub/protocol"
)

// within polls cond until it holds, failing the test after five seconds
// (the black-box tests' eventually, which this package cannot see).
func within(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// wsPair returns the hub's end of a real WebSocket, upgraded the way
// serveConn upgrades (the handler returns right after), and the client's.
func wsPair(t *testing.T) (server, client *websocket.Conn) {
	t.Helper()
	accepted := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(&wsconn.ResponseWriter{ResponseWriter: w, WriteBuffer: wsWriteBuffer}, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		accepted <- ws
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = client.CloseNow() })
	server = <-accepted
	t.Cleanup(func() { _ = server.CloseNow() })
	return server, client
}

// newTestConn returns a terminal conn of a fresh hub over a real WebSocket,
// and the client's end.
func newTestConn(t *testing.T) (*conn, *websocket.Conn) {
	t.Helper()
	h := New(Options{Logger: zerolog.Nop()})
	t.Cleanup(h.stop)
	server, client := wsPair(t)
	return h.newConn(server, KindTerminal, "m1", "", "T1"), client
}

// waitingForRoom reports whether a replay waits in queueReplay.
func (c *conn) waitingForRoom() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.room != nil
}

func TestReplayWaitsForTheGreeting(t *testing.T) {
	c, client := newTestConn(t)
	queued := make(chan bool, 1)
	go func() { queued <- c.queueReplay([]byte(`{"action":"resent"}`)) }()
	within(t, "the replay to wait for the greeting", c.waitingForRoom)

	c.enqueue([]byte(`{"action":"connected"}`))
	if !<-queued {
		t.Fatal("queueReplay gave up on a live connection")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, want := range []string{`{"action":"connected"}`, `{"action":"resent"}`} {
		_, got, err := client.Read(ctx)
		if err != nil || string(got) != want {
			t.Fatalf("read %s, %v; want %s", got, err, want)
		}
	}
}

func TestDisconnectReleasesAWaitingReplay(t *testing.T) {
	// terminalUp waits in queueReplay holding the device's lock, which the
	// writer needs to act on a disconnect (leave): the wait must end with
	// the disconnect, not with the connection.
	c, client := newTestConn(t)
	queued := make(chan bool, 1)
	go func() { queued <- c.queueReplay([]byte(`{"action":"resent"}`)) }()
	within(t, "the replay to wait for the greeting", c.waitingForRoom)

	c.disconnect(&protocol.Disconnect{Code: protocol.CloseAdmin, Reason: protocol.ReasonAdmin, Message: "bye"})
	select {
	case ok := <-queued:
		if ok {
			t.Fatal("a replay was queued after the disconnect")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the replay still waits after the disconnect")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, got, err := client.Read(ctx)
	if err != nil || !strings.Contains(string(got), protocol.ActionForceDisconnect) {
		t.Fatalf("read %s, %v; want the forceDisconnect", got, err)
	}
	_, _, err = client.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusCode(protocol.CloseAdmin) {
		t.Fatalf("close code %d (%v), want %d", code, err, protocol.CloseAdmin)
	}
	c.waitWritten()
}
