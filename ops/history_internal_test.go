package ops

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// A terminal's list keeps its StatusEventsKept newest changes, in the order
// they were made, and every change queued before StopHistory is written;
// none after.
func TestStatusEventsCapped(t *testing.T) {
	r := redistest.New(t)
	s := New(Options{Hub: hub.New(hub.Options{}), Redis: r.Client, Keys: keys.Space{Prefix: r.Prefix}, Token: "t"})
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	const n = StatusEventsKept + 30
	for i := range n {
		s.recordStatus("m1", protocol.TerminalStatusUpdate{TerminalID: "T1", ConnectionID: fmt.Sprintf("conn_%03d", i),
			Status: protocol.TerminalOnline, PreviousStatus: protocol.TerminalOffline, Timestamp: at.Add(time.Duration(i) * time.Second)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.StopHistory(ctx); err != nil {
		t.Fatalf("StopHistory did not wait for the writer: %v", err)
	}
	evs, err := s.StatusEvents(ctx, "m1", "T1", StatusEventsKept+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != StatusEventsKept {
		t.Fatalf("%d events kept, want %d", len(evs), StatusEventsKept)
	}
	for i, ev := range evs {
		if want := fmt.Sprintf("conn_%03d", n-1-i); ev.ConnectionID != want || !ev.At.Equal(at.Add(time.Duration(n-1-i)*time.Second)) {
			t.Fatalf("event %d = %+v, want %s", i, ev, want)
		}
	}
	s.recordStatus("m1", protocol.TerminalStatusUpdate{TerminalID: "T2", ConnectionID: "conn_late", Status: protocol.TerminalOnline, Timestamp: at})
	if err := s.StopHistory(ctx); err != nil {
		t.Fatal(err)
	}
	if other, _ := s.StatusEvents(ctx, "m1", "T2", 10); len(other) != 0 {
		t.Fatalf("T2: %+v", other)
	}
}
