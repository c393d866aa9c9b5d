package client

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

// readAction reads one frame from the client and returns its action and
// the raw frame.
func readAction(t *testing.T, sc *serverConn) (string, []byte) {
	t.Helper()
	_, b, err := sc.ws.Read(context.Background())
	if err != nil {
		return "", nil
	}
	var env struct {
		Action string `json:"action"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Errorf("frame %s: %v", b, err)
	}
	return env.Action, b
}

func nextMessage(t *testing.T, s *POSStream) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return m
}

func TestPOSStreamRefusedHandshake(t *testing.T) {
	h := newFakeHub(t, nil)
	_, err := OpenPOSStream(context.Background(), h.opts(), "pk_test", "wrong")
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 401 || he.Err() == nil || he.Err().Code != protocol.CodeUnauthorized {
		t.Fatalf("err = %v, want a 401 HandshakeError", err)
	}
}

func TestPOSStreamRedialsAndDeliversInOrder(t *testing.T) {
	firstRead := make(chan struct{}) // the stream handed over message 1-0
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			ctx := context.Background()
			if sc.id == "conn_1" { // one durable message, then a drop once it was read
				sc.send(ctx, map[string]any{"action": protocol.ActionPaymentComplete, "messageId": "1-0"})
				select {
				case <-firstRead:
				case <-time.After(10 * time.Second):
					t.Error("message 1-0 was not read")
				}
				return
			}
			sc.send(ctx, map[string]any{"action": protocol.ActionPaymentComplete, "messageId": "2-0"})
			for {
				if a, _ := readAction(t, sc); a == "" {
					return
				}
			}
		}
	})
	s, err := OpenPOSStream(context.Background(), h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for len(got) < 4 {
		m := nextMessage(t, s)
		if m.Action == protocol.ActionConnected {
			var g struct {
				ConnectionID string `json:"connectionId"`
			}
			_ = m.Decode(&g)
			got = append(got, "connected "+g.ConnectionID)
		} else {
			got = append(got, m.Action+" "+m.MessageID())
			if m.MessageID() == "1-0" {
				close(firstRead)
			}
		}
	}
	want := []string{"connected conn_1", "paymentComplete 1-0", "connected conn_2", "paymentComplete 2-0"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("messages %q, want %q", got, want)
		}
	}
}

func TestPOSStreamStopsWhenKeyTaken(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			if sc.id != "conn_1" {
				t.Errorf("redialed as %s after a displacement", sc.id)
				return
			}
			forceDisconnect(sc, protocol.CloseDisplaced, protocol.ReasonAPIKeyUsedElsewhere, true)
		}
	})
	s, err := OpenPOSStream(context.Background(), h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m := nextMessage(t, s); m.Action != protocol.ActionConnected {
		t.Fatalf("first message %s", m.Raw)
	}
	if m := nextMessage(t, s); m.Action != protocol.ActionForceDisconnect {
		t.Fatalf("second message %s", m.Raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.Next(ctx); !errors.Is(err, ErrKeyTaken) {
		t.Fatalf("Next after the displacement: %v, want ErrKeyTaken", err)
	}
	if err := s.Ack("1-0"); err == nil {
		t.Error("Ack on an ended stream succeeded")
	}
}

func TestPOSStreamAckStored(t *testing.T) {
	acks := make(chan string, 4)
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			ctx := context.Background()
			for {
				a, b := readAction(t, sc)
				switch a {
				case "":
					return
				case protocol.ActionAck:
					var ack struct {
						MessageID string `json:"messageId"`
					}
					_ = json.Unmarshal(b, &ack)
					acks <- ack.MessageID
					if ack.MessageID == "bad" {
						sc.send(ctx, protocol.ErrorReply{Action: protocol.ActionError, Code: protocol.CodeInvalidRequest, Message: "unknown message"})
					}
				case protocol.ActionListTerminals:
					var req struct {
						RequestID string `json:"requestId"`
					}
					_ = json.Unmarshal(b, &req)
					// An unrelated message first: AckStored reads past it.
					sc.send(ctx, map[string]any{"action": protocol.ActionTerminalStatusUpdate, "terminalId": "T1", "status": "online"})
					sc.send(ctx, map[string]any{"action": protocol.ActionTerminals, "requestId": req.RequestID, "data": []any{}})
				}
			}
		}
	})
	s, err := OpenPOSStream(context.Background(), h.opts(), "pk_test", "sk_test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	nextMessage(t, s) // the greeting: the connection is published

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.AckStored(ctx, "1-0"); err != nil {
		t.Fatalf("AckStored: %v", err)
	}
	if id := <-acks; id != "1-0" {
		t.Fatalf("hub saw an ack of %q", id)
	}
	err = s.AckStored(ctx, "bad")
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeInvalidRequest {
		t.Fatalf("AckStored of a refused ack: %v", err)
	}
	<-acks
	if err := s.Ack("2-0"); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if id := <-acks; id != "2-0" {
		t.Fatalf("hub saw an ack of %q", id)
	}
}
