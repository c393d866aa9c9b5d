package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// Defaults of Options.
const (
	DefaultCardDelay   = 300 * time.Millisecond
	DefaultReturnDelay = 5 * time.Second
	// SlowCardFactor multiplies the card delay of a SlowCard terminal.
	SlowCardFactor = 10
)

// keepFinished is how many acknowledged payments a Terminal remembers, so
// that a late repeated startPayment or cancelPayment is still recognised.
const keepFinished = 1024

// sendTimeout bounds one write to the hub.
const sendTimeout = 10 * time.Second

// ErrUnauthorized is returned by Run when the hub refuses the terminal's
// credentials on the very first connection: retrying would never succeed,
// so a human has to fix the device id or secret.
var ErrUnauthorized = errors.New("sim: hub refused the terminal's credentials")

// ErrDisplaced is returned by Run when another connection with the same
// device id displaced this one (forceDisconnect device_connected_elsewhere).
var ErrDisplaced = errors.New("sim: another connection took over the device")

// Options configure a Terminal. DeviceID, Secret and Client.BaseURL are
// required; every other zero value means the default.
type Options struct {
	// Client says where the hub is (BaseURL) and how to reach it; tests set
	// Now to sign with a fake clock.
	Client client.Options
	// DeviceID and Secret are the terminal's credentials from the hub's
	// configuration.
	DeviceID string
	Secret   string

	// CardDelay is the time between commandReceived, paymentProgress and the
	// result. 0 means DefaultCardDelay; a negative value means no delay.
	CardDelay time.Duration
	// SlowCard multiplies the card delay by SlowCardFactor and reports the
	// extra stages pin_entry and processing, like a chip card with a PIN.
	SlowCard bool
	// ReturnDelay is how long a DropAndReturn payment (or Drop) keeps the
	// terminal away before it reconnects. 0 means DefaultReturnDelay; a
	// negative value means it redials at once.
	ReturnDelay time.Duration

	// Script decides each new startPayment; nil means DefaultScript.
	Script func(protocol.StartPayment) Behavior

	// Sleep waits d or until ctx ends (returning ctx's error then). Every
	// wait of the simulator goes through it: card delays, the
	// DropAndReturn absence, the reconnect backoff and the wait (about a
	// second) before re-sending a message the hub answered unavailable.
	// nil means a timer.
	Sleep func(ctx context.Context, d time.Duration) error

	// OnEvent is told everything the terminal does, from several
	// goroutines; it must be safe for concurrent use and return quickly.
	OnEvent func(Event)

	// ReconnectDelay and MaxReconnectDelay bound the reconnect backoff;
	// zero means the client package's defaults.
	ReconnectDelay    time.Duration
	MaxReconnectDelay time.Duration
}

// Terminal is one simulated card terminal. Create it with New and run it
// with Run; its other methods may be called from any goroutine.
type Terminal struct {
	opts Options

	mu       sync.Mutex
	running  bool                // guarded by mu
	stopRun  func(error)         // guarded by mu; ends the current Run with a cause
	conn     *client.Conn        // guarded by mu; nil while disconnected
	gen      uint64              // guarded by mu; bumped on every connection
	live     bool                // guarded by mu; a connection is being served
	away     time.Duration       // guarded by mu; the next dial waits this long first
	payments map[string]*payment // guarded by mu
	finished []string            // guarded by mu; acked payment ids, oldest first
	seq      uint64              // guarded by mu; orders results for re-sending
	sent     sentLog             // guarded by mu; latest body per requestId, results aside
	resends  map[string]*resend  // guarded by mu; re-sends due, by requestId
	queue    []*resend           // guarded by mu; re-sends in due order (stale ones skipped)
	wake     chan struct{}       // tells the resender that queue has grown
	wg       sync.WaitGroup      // payment goroutines and the resender
}

// New checks opts and returns a Terminal that is not yet connected.
func New(opts Options) (*Terminal, error) {
	switch {
	case opts.DeviceID == "":
		return nil, errors.New("sim: Options.DeviceID is required")
	case opts.Secret == "":
		return nil, errors.New("sim: Options.Secret is required")
	case opts.Client.BaseURL == "":
		return nil, errors.New("sim: Options.Client.BaseURL is required")
	}
	switch {
	case opts.CardDelay == 0:
		opts.CardDelay = DefaultCardDelay
	case opts.CardDelay < 0:
		opts.CardDelay = 0
	}
	if opts.SlowCard {
		opts.CardDelay *= SlowCardFactor
	}
	switch {
	case opts.ReturnDelay == 0:
		opts.ReturnDelay = DefaultReturnDelay
	case opts.ReturnDelay < 0:
		opts.ReturnDelay = 0
	}
	if opts.Script == nil {
		opts.Script = DefaultScript
	}
	if opts.Sleep == nil {
		opts.Sleep = client.SleepContext
	}
	return &Terminal{opts: opts, payments: map[string]*payment{}, resends: map[string]*resend{}, wake: make(chan struct{}, 1)}, nil
}

// DeviceID is the terminal's device id.
func (t *Terminal) DeviceID() string { return t.opts.DeviceID }

// ConnectionID is the hub's id of the current connection, "" while
// disconnected.
func (t *Terminal) ConnectionID() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return ""
	}
	return t.conn.ConnectionID()
}

// Unacked lists the transactions whose result the hub has not acknowledged
// yet, in the order the results were made.
func (t *Terminal) Unacked() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, p := range t.unackedLocked() {
		out = append(out, p.start.TransactionID)
	}
	return out
}

// Drop cuts the current connection without a close handshake, the way a
// terminal loses its network, and keeps the terminal away for d before it
// redials (d ≤ 0: the reconnect backoff only).
func (t *Terminal) Drop(d time.Duration) {
	t.mu.Lock()
	c := t.conn
	t.conn = nil
	t.away = max(d, 0)
	t.mu.Unlock()
	t.emit(Event{Kind: EventDropped, Detail: fmt.Sprintf("connection cut; back in %s", max(d, 0))})
	if c != nil {
		_ = c.CloseNow()
	}
}

// Run connects and serves the hub until ctx ends (it then returns nil),
// reconnecting after every drop. It stops early with an error wrapping
// ErrUnauthorized if the first connection is refused with 401, ErrDisplaced
// if another connection took the device, or client.ErrReconnectForbidden if
// the hub forbids reconnecting.
// Run may be called again after it returned; what the terminal remembers
// (unacknowledged results) is kept.
func (t *Terminal) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	t.mu.Lock()
	if t.running {
		t.mu.Unlock()
		return errors.New("sim: Terminal.Run is already running")
	}
	t.running, t.stopRun = true, stop
	t.wg.Add(1)
	t.mu.Unlock()
	go t.resender(runCtx)
	defer func() {
		stop(nil)
		t.wg.Wait()
		t.mu.Lock()
		t.running, t.conn = false, nil
		// A card flow cut short by the end of Run left no result: forget it,
		// so that the startPayment the hub re-sends to the next Run starts
		// it again instead of being taken for a repeat.
		for id, p := range t.payments {
			if p.result == nil && p.cancel != nil {
				delete(t.payments, id)
				t.forgetFlowLocked(id)
			}
		}
		// The next Run starts on a new connection, where unacknowledged
		// results are re-sent anyway.
		clear(t.resends)
		t.queue = nil
		t.mu.Unlock()
	}()

	connected := false
	r := &client.Reconnector{
		BaseDelay: t.opts.ReconnectDelay,
		MaxDelay:  t.opts.MaxReconnectDelay,
		Sleep:     t.opts.Sleep,
		OnConnect: func(c *client.Conn) {
			connected = true
			t.connected(runCtx, c)
		},
		OnDisconnect: func(err error) {
			t.mu.Lock()
			t.conn = nil
			live := t.live
			t.live = false
			t.mu.Unlock()
			if live {
				t.emit(Event{Kind: EventDisconnected, Detail: "connection ended: " + errText(err)})
			} else {
				t.emit(Event{Kind: EventDisconnected, Detail: "could not connect (retrying): " + errText(err)})
			}
		},
	}
	err := r.Run(runCtx, func(ctx context.Context) (*client.Conn, error) {
		t.mu.Lock()
		away := t.away
		t.away = 0
		t.mu.Unlock()
		if away > 0 {
			if err := t.opts.Sleep(ctx, away); err != nil {
				return nil, err
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := client.DialTerminal(dctx, t.opts.Client, t.opts.DeviceID, t.opts.Secret)
		var he *client.HandshakeError
		if !connected && errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized {
			msg := he.Body
			if e := he.Err(); e != nil {
				msg = e.Message
			}
			stop(fmt.Errorf("%w: %s: %s", ErrUnauthorized, t.opts.DeviceID, msg))
		}
		return c, err
	}, t.handle)
	if err != nil {
		return err
	}
	if cause := context.Cause(runCtx); errors.Is(cause, ErrUnauthorized) || errors.Is(cause, ErrDisplaced) {
		return cause
	}
	return nil
}

// connected publishes a new connection and re-sends every result the hub
// has not acknowledged, oldest first (docs/protocol.md#terminal-protocol). It runs before the
// first message of the connection is read, so the hub has these results
// before the startPayment it re-sends, which then finds them already sent.
func (t *Terminal) connected(ctx context.Context, c *client.Conn) {
	t.mu.Lock()
	t.conn, t.live = c, true
	t.gen++
	gen := t.gen
	var resend []protocol.PaymentResult
	for _, p := range t.unackedLocked() {
		p.sentGen = gen
		resend = append(resend, *p.result)
	}
	t.mu.Unlock()
	t.emit(Event{Kind: EventConnected, Detail: c.ConnectionID()})
	for _, r := range resend {
		t.send(ctx, protocol.ActionPaymentResult, r.TransactionID, r, describeResult(r)+" (re-sent, not acknowledged yet)")
	}
}

func (t *Terminal) unackedLocked() []*payment {
	var ps []*payment
	for _, p := range t.payments {
		if p.result != nil && !p.acked {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].seq < ps[j].seq })
	return ps
}

// handle serves one message from the hub. It runs on the connection's read
// goroutine and never blocks on a card flow: those run in their own
// goroutines.
func (t *Terminal) handle(ctx context.Context, _ *client.Conn, m client.Message) error {
	switch m.Action {
	case protocol.ActionStartPayment:
		var sp protocol.StartPayment
		if err := m.Decode(&sp); err != nil || sp.TransactionID == "" {
			t.emit(Event{Kind: EventError, Action: m.Action, Detail: fmt.Sprintf("undecodable startPayment: %v", err)})
			return nil
		}
		t.startPayment(ctx, sp)
		return nil
	case protocol.ActionCancelPayment, protocol.ActionVoidPayment, protocol.ActionCapturePayment,
		protocol.ActionSignatureVerified, protocol.ActionResultAck:
		var cmd protocol.TerminalCommand
		if err := m.Decode(&cmd); err != nil || cmd.TransactionID == "" {
			t.emit(Event{Kind: EventError, Action: m.Action, Detail: fmt.Sprintf("undecodable command: %v", err)})
			return nil
		}
		t.command(ctx, cmd)
		return nil
	case protocol.ActionError:
		t.hubError(m)
		return nil
	case protocol.ActionForceDisconnect:
		var fd protocol.ForceDisconnect
		_ = m.Decode(&fd)
		t.emit(Event{Kind: EventReceived, Action: m.Action, Detail: fmt.Sprintf("%s: %s (reconnectAllowed %v)", fd.Reason, fd.Message, fd.ReconnectAllowed)})
		if fd.Reason == protocol.ReasonDeviceElsewhere {
			// Only another live process with this device id can displace a
			// connection that is still reading: redialing would make the
			// two fight for the device forever.
			t.mu.Lock()
			stop := t.stopRun
			t.mu.Unlock()
			stop(fmt.Errorf("%w: %s", ErrDisplaced, t.opts.DeviceID))
		}
		return nil
	}
	t.emit(Event{Kind: EventReceived, Action: m.Action, Detail: "(ignored)"})
	return nil
}

// hubError handles an error reply. Every message the simulator sends
// carries requestId "<action>:<transactionId>", so an error names what it
// refused. One answered unavailable may not be recorded: it is sent again
// after resendAfter (docs/protocol.md#terminal-protocol). A result for a transaction the hub does
// not know (a hub that lost its state, or another terminal's id) will never
// be acknowledged: it is forgotten instead of being re-sent on every
// reconnect.
func (t *Terminal) hubError(m client.Message) {
	var r protocol.ErrorReply
	_ = m.Decode(&r)
	var reqID string
	_ = json.Unmarshal(r.RequestID, &reqID)
	action, id, _ := strings.Cut(reqID, ":")
	t.emit(Event{Kind: EventError, Action: action, TransactionID: id, Detail: m.Err().Error()})
	if resendable[action] && id != "" {
		t.answered(action, id, r.Code)
	}
	if action != protocol.ActionPaymentResult || (r.Code != protocol.CodeTransactionNotFound && r.Code != protocol.CodeNotFound) {
		return
	}
	t.mu.Lock()
	p := t.payments[id]
	t.mu.Unlock()
	if p != nil {
		t.ack(id)
		t.emit(Event{Kind: EventError, Action: action, TransactionID: id, Detail: "the hub does not know the transaction: result dropped"})
	}
}

// send writes action with body on the current connection and reports the
// connection's generation. ctx must live as long as the Run: a write whose
// context ends closes the connection. A terminal that is offline loses progress
// messages (the hub resumes from its own state) but keeps results, which
// are re-sent on reconnect.
func (t *Terminal) send(ctx context.Context, action, txnID string, body any, detail string) (uint64, bool) {
	if action != protocol.ActionPaymentResult {
		// Kept before the write: the hub's unavailable answer can arrive
		// before the write call returns.
		t.mu.Lock()
		t.sent.put(sentMsg{requestID: requestID(action, txnID), body: body, detail: detail})
		t.mu.Unlock()
	}
	return t.transmit(ctx, action, txnID, body, detail)
}

// transmit is send without keeping the body, for a message sent again.
func (t *Terminal) transmit(ctx context.Context, action, txnID string, body any, detail string) (uint64, bool) {
	t.mu.Lock()
	c, gen := t.conn, t.gen
	t.mu.Unlock()
	if c == nil {
		t.emit(Event{Kind: EventError, Action: action, TransactionID: txnID, Detail: "not sent: offline"})
		return 0, false
	}
	// Told before the write so that logs keep the order of the wire: the
	// hub's answer (resultAck) can arrive before the write call returns.
	t.emit(Event{Kind: EventSent, Action: action, TransactionID: txnID, Detail: detail})
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if err := c.SendAction(sctx, action, requestID(action, txnID), body); err != nil {
		t.emit(Event{Kind: EventError, Action: action, TransactionID: txnID, Detail: "not sent: " + err.Error()})
		return 0, false
	}
	return gen, true
}

func (t *Terminal) emit(e Event) {
	if t.opts.OnEvent == nil {
		return
	}
	e.DeviceID = t.opts.DeviceID
	if t.opts.Client.Now != nil {
		e.Time = t.opts.Client.Now()
	} else {
		e.Time = time.Now()
	}
	t.opts.OnEvent(e)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
