package hub_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// rawTerminal opens a terminal WebSocket by hand over TCP and reads its
// greeting, so that a test can then do to the socket what package client
// never does.
func rawTerminal(t *testing.T, th *testHub, deviceID string) (*net.TCPConn, *bufio.Reader, string) {
	t.Helper()
	addr := strings.TrimPrefix(th.srv.URL, "http://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	var req bytes.Buffer
	req.WriteString("GET " + client.TerminalPath + " HTTP/1.1\r\nHost: " + addr + "\r\n")
	req.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	if err := signedHeader(protocol.HeaderDeviceID, deviceID, secrets[deviceID], client.TerminalPath, th.clock.Now()).Write(&req); err != nil {
		t.Fatal(err)
	}
	req.WriteString("\r\n")
	if _, err := nc.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d, want 101", resp.StatusCode)
	}
	// The greeting: a server's frames are not masked (RFC 6455 §5.1).
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		t.Fatal("greeting longer than 64 KiB")
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	if h[0] != 0x81 || !bytes.Contains(payload, []byte(`"connected"`)) {
		t.Fatalf("first frame %#x %s, want a text frame with the connected greeting", h[0], payload)
	}
	var greet struct {
		ConnectionID string `json:"connectionId"`
	}
	if err := json.Unmarshal(payload, &greet); err != nil || greet.ConnectionID == "" {
		t.Fatalf("greeting %s: no connectionId (%v)", payload, err)
	}
	return nc.(*net.TCPConn), br, greet.ConnectionID
}

// A peer whose connection ended without a close frame (its side of the
// TCP connection closed: gone, or dropped by a network) cannot answer a
// close handshake. The hub closes the socket without writing a close
// frame and waiting up to 5 s for an answer that never comes: in a
// reconnect storm that handshake was a sixth of the hub's CPU.
func TestPeerGoneWithoutCloseFrameGetsNone(t *testing.T) {
	peerGoneGetsNone(t, nil)
}

// The same when the peer's side ends in the middle of a frame (a network
// that dropped the rest): the read ends with an unexpected EOF, and the
// hub writes nothing more either.
func TestPeerGoneMidFrameGetsNone(t *testing.T) {
	// A masked text frame announcing 5 bytes, of which only the header,
	// the mask and 2 bytes arrive.
	peerGoneGetsNone(t, []byte{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2})
}

// peerGoneGetsNone connects a raw terminal that writes last and then closes
// its side of the TCP connection, and checks that the hub writes nothing
// more before it closes, and that the terminal turns reconnecting.
func peerGoneGetsNone(t *testing.T, last []byte) {
	t.Helper()
	th := newTestHub(t)
	nc, br, connID := rawTerminal(t, th, "T1")
	pos := th.pos(t, "pk1")
	if len(last) > 0 {
		if _, err := nc.Write(last); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading until the hub closes: %v", err)
	}
	if len(rest) > 0 {
		t.Fatalf("the hub wrote %d bytes (% x) to a peer whose side had closed; want none", len(rest), rest[:min(len(rest), 8)])
	}
	pos.expectStatus(t, th.clock.Now(), "T1", connID, protocol.TerminalOnline, protocol.TerminalReconnecting)
}

// The hub's own handler holds the 101 back: it leaves in the same write as
// the terminal's greeting.
func TestHubSendsUpgradeResponseWithGreeting(t *testing.T) {
	th := newTestHub(t)
	first := make(chan []byte, 1)
	srv := httptest.NewUnstartedServer(th.Handler())
	srv.Listener = kit.WriteLogListener{Listener: srv.Listener, Writes: first}
	srv.Start()
	defer srv.Close()
	opts := th.options()
	opts.BaseURL, opts.HTTPClient = srv.URL, srv.Client()
	term := th.terminalWith(t, opts, "T1")
	defer term.conn.Close()
	got := <-first
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101 Switching Protocols\r\n")) || !bytes.Contains(got, []byte(`"connected"`)) {
		t.Fatalf("first write %q, want the 101 response and the greeting together", got)
	}
}
