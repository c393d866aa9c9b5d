package hub

// White-box tests of what the black-box tests cannot order: a replay that
// asks to send before the greeting is queued, and the bytes a client sends
// behind its upgrade request.

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

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
		ws, err := websocket.Accept(hijackWriter{ResponseWriter: w, writeBuffer: wsWriteBuffer}, r, nil)
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

// fakeHijacker is a ResponseWriter whose Hijack hands out buffers holding
// early bytes, as net/http's does when a client sends a frame right behind
// its upgrade request.
type fakeHijacker struct {
	http.ResponseWriter
	conn     net.Conn
	buffered string // in the reader
	pending  string // in the writer, not yet flushed
}

func (f *fakeHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	br := bufio.NewReader(io.MultiReader(strings.NewReader(f.buffered), f.conn))
	if _, err := br.Peek(len(f.buffered)); err != nil {
		return nil, nil, err
	}
	bw := bufio.NewWriter(f.conn)
	bw.WriteString(f.pending)
	return f.conn, bufio.NewReadWriter(br, bw), nil
}

func TestHijackWriterKeepsEarlyBytes(t *testing.T) {
	hubEnd, peer := net.Pipe()
	defer hubEnd.Close()
	defer peer.Close()
	early := strings.Repeat("e", 3000) // more than the new reader's 1 KiB
	// Wrapped once more, as a middleware would: found through Unwrap.
	w := hijackWriter{ResponseWriter: unwrapper{&fakeHijacker{
		ResponseWriter: httptest.NewRecorder(), conn: hubEnd, buffered: early, pending: "HTTP/1.1 101\r\n\r\n",
	}}, writeBuffer: wsWriteBuffer}

	flushed := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := peer.Read(b)
		flushed <- string(b[:n])
	}()
	nc, brw, err := w.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	if got := <-flushed; got != "HTTP/1.1 101\r\n\r\n" {
		t.Fatalf("the peer got %q, want what the writer held flushed", got)
	}
	if brw.Writer.Size() != wsWriteBuffer || brw.Writer.Buffered() != 0 {
		t.Errorf("writer of %d bytes holding %d, want a fresh one of %d", brw.Writer.Size(), brw.Writer.Buffered(), wsWriteBuffer)
	}
	// What coder/websocket does with the reader: take the buffered bytes,
	// then read on from the connection.
	n := brw.Reader.Buffered()
	b, _ := brw.Reader.Peek(n)
	if string(b) != early {
		t.Fatalf("buffered %d bytes, want the %d early ones", n, len(early))
	}
	brw.Reader.Reset(io.MultiReader(bytes.NewReader(b), nc))
	go func() { _, _ = peer.Write([]byte("later")) }()
	got := make([]byte, len(early)+len("later"))
	if _, err := io.ReadFull(brw.Reader, got); err != nil || string(got) != early+"later" {
		t.Fatalf("read %.20q… (%v), want the early bytes then the connection's", got, err)
	}
}

// unwrapper hides the Hijacker of the writer it wraps, like a middleware's
// writer that only offers Unwrap.
type unwrapper struct{ w http.ResponseWriter }

func (u unwrapper) Header() http.Header         { return u.w.Header() }
func (u unwrapper) Write(b []byte) (int, error) { return u.w.Write(b) }
func (u unwrapper) WriteHeader(code int)        { u.w.WriteHeader(code) }
func (u unwrapper) Unwrap() http.ResponseWriter { return u.w }

// writeLog is a net.Conn that records each Write it is given, as long as
// its channel has room (later writes go unrecorded, never blocked).
type writeLog struct {
	net.Conn
	writes chan []byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	select {
	case w.writes <- bytes.Clone(p):
	default:
	}
	return w.Conn.Write(p)
}

// WriteLogListener hands out connections that record their writes on
// Writes. Exported for the black-box tests of package hub_test.
type WriteLogListener struct {
	net.Listener
	Writes chan []byte
}

// Accept wraps the accepted connection in a writeLog.
func (l WriteLogListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeLog{Conn: c, writes: l.Writes}, nil
}

// The 101 response is held back until the first frame and leaves with it,
// in one write to the socket, and the client reads both as usual.
func TestSwitchingResponseLeavesWithTheFirstFrame(t *testing.T) {
	writes := make(chan []byte, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := hijackWriter{ResponseWriter: w, writeBuffer: wsTerminalWriteBuffer, switching: new(bool)}
		ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		_ = ws.Write(r.Context(), websocket.MessageText, []byte(`{"action":"connected"}`))
	}))
	srv.Listener = WriteLogListener{Listener: srv.Listener, Writes: writes}
	srv.Start()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") == "" {
		t.Fatalf("response %d %v, want 101 with Sec-WebSocket-Accept", resp.StatusCode, resp.Header)
	}
	_, msg, err := ws.Read(ctx)
	if err != nil || string(msg) != `{"action":"connected"}` {
		t.Fatalf("read %q, %v; want the first frame", msg, err)
	}
	first := <-writes
	if !bytes.HasPrefix(first, []byte("HTTP/1.1 101 Switching Protocols\r\n")) || !bytes.Contains(first, []byte(`{"action":"connected"}`)) {
		t.Fatalf("first write to the socket %q, want the 101 response and the first frame together", first)
	}
}
