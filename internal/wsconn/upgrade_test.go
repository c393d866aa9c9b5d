package wsconn

// Tests of the upgrade (the bytes a client sends behind its upgrade
// request, the 101 held back until the first frame) and of frame peeking.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/internal/apptest/kit"
)

// testWriteBuffer is the write buffer the upgrade tests ask for (a POS's).
const testWriteBuffer = 2 << 10

// maxFrame is the largest payload the hub accepts (protocol.MaxFrameBytes).
const maxFrame = 64 << 10

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
	w := &ResponseWriter{ResponseWriter: unwrapper{&fakeHijacker{
		ResponseWriter: httptest.NewRecorder(), conn: hubEnd, buffered: early, pending: "HTTP/1.1 101\r\n\r\n",
	}}, WriteBuffer: testWriteBuffer}

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
	if brw.Writer.Size() != testWriteBuffer || brw.Writer.Buffered() != 0 {
		t.Errorf("writer of %d bytes holding %d, want a fresh one of %d", brw.Writer.Size(), brw.Writer.Buffered(), testWriteBuffer)
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

// The 101 response is held back until the first frame and leaves with it,
// in one write to the socket, and the client reads both as usual.
func TestSwitchingResponseLeavesWithTheFirstFrame(t *testing.T) {
	writes := make(chan []byte, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &ResponseWriter{ResponseWriter: w, WriteBuffer: 1 << 10, HoldSwitch: true}
		ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		_ = ws.Write(r.Context(), websocket.MessageText, []byte(`{"action":"connected"}`))
	}))
	srv.Listener = kit.WriteLogListener{Listener: srv.Listener, Writes: writes}
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

// frame is a masked client frame: first byte b0, a payload of n bytes.
func frame(b0 byte, n int) []byte {
	var h []byte
	switch {
	case n < 126:
		h = []byte{b0, 0x80 | byte(n)}
	case n <= 0xffff:
		h = []byte{b0, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(h[2:], uint16(n))
	default:
		h = make([]byte, 10)
		h[0], h[1] = b0, 0x80|127
		binary.BigEndian.PutUint64(h[2:], uint64(n))
	}
	h = append(h, 1, 2, 3, 4) // mask key
	return append(h, bytes.Repeat([]byte{'x'}, n)...)
}

// Only a whole, unfragmented text frame of at most 64 KiB counts as one that
// can be read without waiting: a partial one would make the frames before it
// wait for the network, and control frames are coder/websocket's to handle.
func TestWholeTextFrame(t *testing.T) {
	small, mid, big := frame(0x81, 100), frame(0x81, 300), frame(0x81, maxFrame)
	over := frame(0x81, maxFrame+1)
	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"one byte", small[:1], false},
		{"small whole", small, true},
		{"small and more", append(append([]byte{}, small...), small[:3]...), true},
		{"small short by one", small[:len(small)-1], false},
		{"16-bit length whole", mid, true},
		{"16-bit length, header cut", mid[:3], false},
		{"16-bit length short by one", mid[:len(mid)-1], false},
		{"64 KiB whole", big, true},
		{"over 64 KiB", over, false},
		{"64-bit length, header cut", frame(0x81, 70000)[:9], false},
		{"absurd 64-bit length", append([]byte{0x81, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, 'x'), false},
		{"unmasked whole", []byte{0x81, 2, '{', '}'}, true},
		{"fragment (no FIN)", frame(0x01, 10), false},
		{"binary", frame(0x82, 10), false},
		{"ping", frame(0x89, 0), false},
		{"close", frame(0x88, 2), false},
		{"RSV bit set", frame(0xC1, 10), false},
	} {
		if got := wholeTextFrame(c.p, maxFrame); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
