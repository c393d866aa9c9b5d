package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/termhub/termhub/protocol"
)

// posDialTimeout bounds each dial of a POSStream, the first one included.
const posDialTimeout = 15 * time.Second

// posAckTimeout bounds the writes of an ack and the wait for its
// confirmation.
const posAckTimeout = 10 * time.Second

// ErrKeyTaken ends a POSStream whose connection another client of the same
// API key displaced: reconnecting would only displace that client in turn.
var ErrKeyTaken = errors.New("pos: another connection with this API key took over (api_key_used_elsewhere); not reconnecting so as not to fight over the key")

// POSStream is a POS WebSocket kept open across drops: its messages, and
// the `connected` greeting of every (re)connection, arrive through Next in
// order. It redials after drops and hub restarts (the hub replays unacked
// messages), but not after a displacement by another client of the key
// (ErrKeyTaken). Next, Ack and AckStored may be called from different
// goroutines; Close ends it.
type POSStream struct {
	msgs chan Message
	done chan struct{} // closed when the stream has ended
	err  error         // why it ended; set before done is closed
	stop context.CancelCauseFunc

	mu   sync.Mutex
	conn *Conn // guarded by mu
}

// OpenPOSStream dials once, so that bad credentials or an unreachable hub
// fail at once (with the DialPOS error, a *HandshakeError for a refused
// upgrade), and keeps the connection in a Reconnector from then on, until
// ctx ends or Close is called.
func OpenPOSStream(ctx context.Context, opts Options, key, secret string) (*POSStream, error) {
	dctx, cancel := context.WithTimeout(ctx, posDialTimeout)
	first, err := DialPOS(dctx, opts, key, secret)
	cancel()
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancelCause(ctx)
	s := &POSStream{msgs: make(chan Message, 1024), done: make(chan struct{}), stop: stop}
	dial := func(ctx context.Context) (*Conn, error) {
		if c := first; c != nil {
			first = nil
			return c, nil
		}
		dctx, cancel := context.WithTimeout(ctx, posDialTimeout)
		defer cancel()
		return DialPOS(dctx, opts, key, secret)
	}
	go s.run(rctx, dial)
	return s, nil
}

// run keeps the stream connected until rctx ends, then records why.
func (s *POSStream) run(rctx context.Context, dial func(context.Context) (*Conn, error)) {
	push := func(m Message) {
		select {
		case s.msgs <- m:
		case <-rctx.Done():
		}
	}
	r := &Reconnector{
		OnConnect: func(c *Conn) {
			s.setConn(c)
			push(c.Greeting)
		},
		OnDisconnect: func(error) { s.setConn(nil) },
	}
	err := r.Run(rctx, dial, func(_ context.Context, _ *Conn, m Message) error {
		push(m)
		if m.Action == protocol.ActionForceDisconnect {
			var fd protocol.ForceDisconnect
			if m.Decode(&fd) == nil && fd.Reason == protocol.ReasonAPIKeyUsedElsewhere {
				s.stop(ErrKeyTaken)
			}
		}
		return nil
	})
	if err == nil {
		if cause := context.Cause(rctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
	}
	s.err = err
	close(s.done)
}

func (s *POSStream) setConn(c *Conn) {
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
}

func (s *POSStream) current() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// Next returns the next message, or why the stream ended (ErrKeyTaken, the
// Reconnector's error, or ctx's). Messages received before the end are
// all returned first.
func (s *POSStream) Next(ctx context.Context) (Message, error) {
	select {
	case m := <-s.msgs:
		return m, nil
	default:
	}
	select {
	case m := <-s.msgs:
		return m, nil
	case <-s.done:
		select {
		case m := <-s.msgs:
			return m, nil
		default:
		}
		if s.err != nil {
			return Message{}, s.err
		}
		return Message{}, errors.New("pos: the WebSocket closed")
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Ack acknowledges messageID on the current connection. It takes no
// context: a write whose context ends closes the WebSocket, so the write
// has a timeout of its own instead.
func (s *POSStream) Ack(messageID string) error {
	c := s.current()
	if c == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), posAckTimeout)
	defer cancel()
	return c.Ack(ctx, messageID)
}

// AckStored acknowledges messageID and returns once the hub has stored the
// ack, so that a program that exits right after cannot leave it in flight.
// The hub applies an ack beside the frames after it but answers those only
// once it is stored (docs/protocol.md), so the reply to a listTerminals
// sent on the same connection right after is the confirmation; an error
// reply to the ack (an unknown id, a failed store) comes before it.
// Messages read meanwhile are consumed: call it when nothing else reads
// the stream.
func (s *POSStream) AckStored(ctx context.Context, messageID string) error {
	c := s.current()
	if c == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, posAckTimeout)
	defer cancel()
	// Writes use a context of their own: one that ends closes the WebSocket.
	wctx, wcancel := context.WithTimeout(context.Background(), posAckTimeout)
	defer wcancel()
	confirm := "ack-" + messageID
	if err := c.Ack(wctx, messageID); err != nil {
		return err
	}
	if err := c.SendAction(wctx, protocol.ActionListTerminals, confirm, struct{}{}); err != nil {
		return err
	}
	for {
		m, err := s.Next(ctx)
		if err != nil {
			return fmt.Errorf("not confirmed (it may be replayed): %w", err)
		}
		var r struct {
			RequestID string `json:"requestId"`
		}
		_ = m.Decode(&r)
		switch {
		case m.Action == protocol.ActionError && r.RequestID == "": // the ack's own error reply
			if e := m.Err(); e != nil {
				return e
			}
			return errors.New("the hub refused the ack")
		case m.Action == protocol.ActionTerminals && r.RequestID == confirm:
			return nil
		}
	}
}

// Close ends the stream (the Reconnector closes the connection normally)
// and waits for it to have ended.
func (s *POSStream) Close() {
	s.stop(context.Canceled)
	<-s.done
}
