package sim

import (
	"strings"
	"time"
)

// EventKind says what happened to a simulated terminal.
type EventKind string

// Event kinds.
const (
	EventConnected    EventKind = "connected"    // a connection was established; Detail is the connectionId
	EventDisconnected EventKind = "disconnected" // a connection ended or a dial failed; Detail says why
	EventReceived     EventKind = "received"     // a message from the hub
	EventSent         EventKind = "sent"         // a message to the hub (told just before the write; a failed write is followed by EventError)
	EventDropped      EventKind = "dropped"      // the simulator cut its own connection (DropAndReturn, Drop)
	EventIgnored      EventKind = "ignored"      // a startPayment deliberately left unanswered (NoAnswer)
	EventError        EventKind = "error"        // an error reply from the hub, or a send that failed
)

// Event is one thing a Terminal did or saw, for logs (`termhub sim` prints
// one line per event) and for tests that wait for a step.
type Event struct {
	Time          time.Time
	DeviceID      string
	Kind          EventKind
	Action        string // protocol action, for received, sent and error
	TransactionID string
	Detail        string
}

// String renders the event on one line without its time, e.g.
// "TERM-001 → paymentResult txn_1 approved 00".
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.DeviceID)
	switch e.Kind {
	case EventReceived:
		b.WriteString(" ← ")
	case EventSent:
		b.WriteString(" → ")
	default:
		b.WriteString(" ")
		b.WriteString(string(e.Kind))
		if e.Action != "" {
			b.WriteString(" ")
		}
	}
	b.WriteString(e.Action)
	if e.TransactionID != "" {
		b.WriteString(" ")
		b.WriteString(e.TransactionID)
	}
	if e.Detail != "" {
		b.WriteString(" ")
		b.WriteString(e.Detail)
	}
	return b.String()
}
