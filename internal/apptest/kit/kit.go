// Package kit holds the parts of the test harness that need nothing of
// termhub: the test configuration as YAML text, its secrets, a bounded
// context and Eventually. It imports only the standard library, so that any
// test, an in-package test of hub or session included, can use it without
// an import cycle; package apptest adds what needs a running App.
package kit

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Config is the YAML text of the test configuration: merchant m1 (API keys
// pk1 and pk1b; terminals T1 "Front" and T2 "Back") and merchant m2 (key
// pk2; terminal U1 "Till"), a 60 s grace period, a 180 s payment timeout and
// a 60 s signature timeout. Heartbeats are a day apart, so that clock jumps
// of minutes never look like missed pongs (heartbeats have their own tests
// in package hub). It sets no ops token (OpsConfig does); a test may append
// top-level settings of its own, as the text ends with a newline.
const Config = `
grace_period: 60s
payment_timeout: 180s
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

// OpsToken is the ops token of OpsConfig.
const OpsToken = "test-ops-token"

// OpsConfig is Config with the ops routes on, behind OpsToken.
const OpsConfig = Config + "ops_token: " + OpsToken + "\n"

// Secrets are the secrets of Config, by API key id or device id.
var Secrets = map[string]string{"pk1": "sk1", "pk1b": "sk1b", "pk2": "sk2", "T1": "dt1", "T2": "dt2", "U1": "du1"}

// Wait bounds every wait of Ctx and Eventually.
const Wait = 10 * time.Second

// Ctx is a context that ends after Wait or when the test ends.
func Ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return c
}

// EventuallyWithin is how long Eventually polls.
const EventuallyWithin = 5 * time.Second

// Eventually polls cond every millisecond until it holds, and fails the test
// with what if it does not within 5 s. Tests poll state this way instead of
// sleeping on a guess.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(EventuallyWithin)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, EventuallyWithin)
		}
		time.Sleep(time.Millisecond)
	}
}

// LogBuffer collects a log written from many goroutines, for a test to
// search: a bytes.Buffer behind a mutex. Its zero value is ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddr returns a loopback address ("127.0.0.1:port") that was free a
// moment ago, for a server the test starts in another process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TCPPair returns both ends of a loopback TCP connection, closed when the
// test ends.
func TCPPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// WriteLogListener hands out connections that record each Write they are
// given on Writes, as long as it has room (later writes go unrecorded,
// never blocked): a test sees how a server's bytes were split into writes.
type WriteLogListener struct {
	net.Listener
	Writes chan []byte
}

// Accept wraps the accepted connection so that its writes are recorded.
func (l WriteLogListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeLog{Conn: c, writes: l.Writes}, nil
}

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

// Fill writes 64 KiB chunks of a pattern to w until full() holds, and
// appends what it wrote to want. It is for a socket whose peer does not
// read and whose writes never wait (were one to, the test would hang), to
// fill it until bytes are left over; past 256 MiB, far more than loopback's
// buffers hold, the test fails.
func Fill(t *testing.T, w io.Writer, full func() bool, want *bytes.Buffer) {
	t.Helper()
	chunk := make([]byte, 64<<10)
	for i := 0; !full(); i++ {
		if i == 4096 {
			t.Fatal("the socket never filled")
		}
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		n, err := w.Write(chunk)
		if err != nil || n != len(chunk) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		want.Write(chunk)
	}
}
