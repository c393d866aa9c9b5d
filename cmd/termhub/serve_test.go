package main

import (
	"bytes"
	stdlog "log"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestHTTPErrorLogLevels: what net/http logs reaches the hub's log, a
// recovered handler panic at error level (seen at the default info level),
// handshake noise at debug (not seen).
func TestHTTPErrorLogLevels(t *testing.T) {
	var out bytes.Buffer
	l := stdlog.New(httpErrorWriter{zerolog.New(&out).Level(zerolog.InfoLevel)}, "", 0)
	l.Print("http: TLS handshake error from 198.51.100.7:4711: EOF")
	if out.Len() != 0 {
		t.Fatalf("a handshake error at info level: %s", out.String())
	}
	l.Print("http: panic serving 127.0.0.1:5000: boom\ngoroutine 7 [running]:")
	if got := out.String(); !strings.Contains(got, `"level":"error"`) || !strings.Contains(got, "panic serving") || !strings.Contains(got, `"source":"net/http"`) {
		t.Fatalf("a handler panic: %q, want it at error level", got)
	}
}
