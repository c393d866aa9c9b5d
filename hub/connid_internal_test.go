package hub

import (
	"regexp"
	"testing"

	"github.com/termhub/termhub/protocol"
)

// TestNewConnectionIDNoCardNumber: a connection id, which a POS may send as
// terminalId, never holds what the text rules read as a card number (about
// one random draw in 900 would).
func TestNewConnectionIDNoCardNumber(t *testing.T) {
	form := regexp.MustCompile(`^conn_[0-9a-f]{24}$`)
	for range 20000 {
		id := newConnectionID()
		if !form.MatchString(id) || protocol.ContainsCardNumber(id) {
			t.Fatalf("connection id %q: want conn_ and 24 hex digits, no card number", id)
		}
	}
}
