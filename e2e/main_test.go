package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them.
//
// Ignored: the read and write loops of an idle keep-alive connection of an
// HTTP client (http.DefaultClient's transport, which several tests use to
// reach a hub, keeps its connections open after the response is read, by
// design, until it closes them idle).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
