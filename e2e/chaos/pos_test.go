package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// answerTimeout is how long a request waits for its answer before it is
// taken as lost and sent again.
const answerTimeout = 10 * time.Second

// convergeTimeout bounds the retries of one payment: past it the payment is
// reported as never answered.
const convergeTimeout = 3 * time.Minute

// posClient is one POS app of one API key: a WebSocket kept open across
// drops that records and acks every durable message as it arrives, plus
// signed REST. It creates payments over both, alternately.
type posClient struct {
	key, secret string
	opts        client.Options
	rest        *client.HTTP
	led         *ledger
	faults      *faultClock

	mu       sync.Mutex
	conn     *client.Conn                   // guarded by mu; nil while disconnected
	gone     chan struct{}                  // guarded by mu; closed when conn ends
	up       chan struct{}                  // guarded by mu; closed while conn is up
	waiting  map[string]chan client.Message // guarded by mu; requestId → its reply
	signed   map[string]bool                // guarded by mu; transactions whose signature prompt was handled
	connects int                            // guarded by mu
}

func newPOS(opts client.Options, cred credential, led *ledger, faults *faultClock) *posClient {
	return &posClient{
		key: cred.id, secret: cred.secret, opts: opts,
		rest: client.NewHTTP(opts, cred.id, cred.secret),
		led:  led, faults: faults,
		up:      make(chan struct{}),
		waiting: map[string]chan client.Message{},
		signed:  map[string]bool{},
	}
}

// run keeps the WebSocket connected until ctx ends.
func (p *posClient) run(ctx context.Context) {
	r := &client.Reconnector{
		BaseDelay: 100 * time.Millisecond,
		MaxDelay:  2 * time.Second,
		OnConnect: func(c *client.Conn) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.conn, p.gone = c, make(chan struct{})
			p.connects++
			close(p.up)
		},
		OnDisconnect: func(error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.conn != nil {
				close(p.gone)
				p.conn, p.up = nil, make(chan struct{})
				p.led.dropped(p.key)
			}
		},
	}
	dial := func(ctx context.Context) (*client.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, answerTimeout)
		defer cancel()
		return client.DialPOS(dctx, p.opts, p.key, p.secret)
	}
	for ctx.Err() == nil {
		// Run returns early only if the hub forbids reconnecting: a finding,
		// but the POS is still needed.
		if err := r.Run(ctx, dial, p.handle); err != nil {
			p.led.note(fmt.Sprintf("%s POS %s: %v (connecting again)", clockTime(time.Now()), p.key, err))
			r.OnDisconnect(err)
			_ = client.SleepContext(ctx, time.Second) // a pause before connecting again
		}
	}
}

// handle serves one message: a durable one is recorded and acked at once
// (acks are cumulative, so this acks exactly what arrived), a reply goes to
// the request waiting for it.
func (p *posClient) handle(_ context.Context, c *client.Conn, m client.Message) error {
	if id := m.MessageID(); id != "" {
		var ev protocol.POSEvent
		if err := m.Decode(&ev); err != nil {
			p.led.note(fmt.Sprintf("POS %s: undecodable durable message %.200s: %v", p.key, m.Raw, err))
		}
		msg := posMessage{
			at: time.Now(), key: p.key, messageID: id, action: m.Action,
			txnID: ev.TransactionID, version: ev.Version, reasonCode: ev.ReasonCode,
		}
		if ev.Transaction != nil {
			msg.status = ev.Transaction.Status
		}
		p.led.addPOS(msg)
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Ack(actx, id); err != nil {
			return err
		}
		if m.Action == protocol.ActionSignatureRequired {
			go p.answerSignature(c, ev.TransactionID)
		}
		return nil
	}
	var env struct {
		RequestID string `json:"requestId"`
	}
	_ = json.Unmarshal(m.Raw, &env)
	if env.RequestID == "" {
		return nil
	}
	p.mu.Lock()
	ch := p.waiting[env.RequestID]
	delete(p.waiting, env.RequestID)
	p.mu.Unlock()
	if ch != nil {
		ch <- m
	}
	return nil
}

// answerSignature answers a signature prompt once per transaction: mostly
// accepted, sometimes declined, sometimes left to the signature timeout.
// It is not retried: an answer lost to a fault ends the same way as an
// ignored prompt.
func (p *posClient) answerSignature(c *client.Conn, txnID string) {
	p.mu.Lock()
	done := p.signed[txnID]
	p.signed[txnID] = true
	p.mu.Unlock()
	if done {
		return
	}
	roll := rand.IntN(100)
	if roll >= 85 {
		return
	}
	accepted := roll < 70
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.SendAction(ctx, protocol.ActionSignatureVerification, "sig-"+txnID,
		protocol.SignatureVerificationRequest{TransactionID: txnID, Accepted: &accepted})
}

// makePayments creates a sale every 300–700 ms on a random terminal,
// alternately over the WebSocket and REST, until stop ends; each is retried
// with ctx until it gets a normal answer.
func (p *posClient) makePayments(ctx, stop context.Context, runID string, terminals []string) {
	for i := 1; ; i++ {
		if client.SleepContext(stop, time.Duration(300+rand.IntN(401))*time.Millisecond) != nil {
			return
		}
		via := "ws"
		if i%2 == 0 {
			via = "rest"
		}
		p.createPayment(ctx, &payment{
			reference: fmt.Sprintf("%s-%s-%05d", runID, p.key, i),
			key:       p.key,
			terminal:  terminals[rand.IntN(len(terminals))],
			amount:    randomAmount(),
			via:       via,
		})
	}
}

// randomAmount picks a sale amount in USD cents: about one in ten ends in
// 05 (declined), one in sixteen in 55 (signature), the rest approve.
func randomAmount() int64 {
	base := int64(1+rand.IntN(200)) * 100
	switch r := rand.IntN(100); {
	case r < 10:
		return base + 5
	case r < 16:
		return base + 55
	}
	for {
		// Endings with a behaviour of their own (sim.BehaviorForAmount) are
		// left out: 51 and 91 fail, 99 never answers, 77 drops the terminal.
		switch c := int64(rand.IntN(100)); c {
		case 5, 51, 55, 77, 91, 99:
		default:
			return base + c
		}
	}
}

// createPayment sends one sale until it gets a normal answer: an answer
// that leaves the outcome unknown (503, 500, no answer, a dropped
// connection) is retried with the same reference (and, over REST, the same
// Idempotency-Key), which converges on the one transaction.
func (p *posClient) createPayment(ctx context.Context, pay *payment) {
	p.led.newPayment(pay)
	req := protocol.PaymentRequest{TerminalID: pay.terminal, AmountMinor: &pay.amount, Currency: "USD", Reference: pay.reference}
	deadline := time.Now().Add(convergeTimeout)
	for attempt := 1; ; attempt++ {
		r := request{reference: pay.reference, via: pay.via}
		var (
			id    string
			pause time.Duration
			sent  = true
		)
		if pay.via == "ws" {
			// The clock starts once there is a connection to send on.
			if c, gone := p.waitConn(ctx); c != nil {
				r.sentAt, r.duringFault = time.Now(), p.faults.active()
				r.outcome, id, r.detail = p.payWS(ctx, c, gone, req, attempt)
			} else {
				sent, r.outcome, r.detail = false, outcomeTransport, "no WebSocket within "+answerTimeout.String()
			}
		} else {
			r.sentAt, r.duringFault = time.Now(), p.faults.active()
			r.outcome, id, r.detail, pause = p.payREST(ctx, req)
		}
		if sent {
			r.took = time.Since(r.sentAt)
			p.led.addRequest(r)
			p.led.answered(pay.reference, r.outcome, id)
			if r.outcome == outcomeOther {
				p.led.note(fmt.Sprintf("%s payment %s (%s) refused: %s", clockTime(r.sentAt), pay.reference, pay.via, r.detail))
			}
			if !retried(r.outcome) {
				return
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			p.led.note(fmt.Sprintf("%s payment %s (%s) never answered normally; last: %s %s", clockTime(time.Now()), pay.reference, pay.via, r.outcome, r.detail))
			return
		}
		if pause <= 0 {
			pause = 300 * time.Millisecond
		}
		_ = client.SleepContext(ctx, min(pause, 2*time.Second)) // the retry's pace
	}
}

// payWS sends one payment attempt on connection c, whose gone channel is
// closed when it ends, and waits for the reply.
func (p *posClient) payWS(ctx context.Context, c *client.Conn, gone chan struct{}, req protocol.PaymentRequest, attempt int) (outcome, txnID, detail string) {
	reqID := fmt.Sprintf("pay-%s-%d", req.Reference, attempt)
	reply := make(chan client.Message, 1)
	p.mu.Lock()
	p.waiting[reqID] = reply
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, reqID)
		p.mu.Unlock()
	}()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := c.SendAction(sctx, protocol.ActionPayment, reqID, req)
	cancel()
	if err != nil {
		return outcomeTransport, "", err.Error()
	}
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	select {
	case m := <-reply:
		if e := m.Err(); e != nil {
			return classify(e.Code), "", string(e.Code) + ": " + e.Message
		}
		var resp protocol.Response
		if err := m.Decode(&resp); err != nil || resp.Transaction == nil {
			return outcomeOther, "", fmt.Sprintf("undecodable %s: %.200s", m.Action, m.Raw)
		}
		if resp.Created != nil && *resp.Created {
			return outcomeCreated, resp.Transaction.ID, ""
		}
		return outcomeExisting, resp.Transaction.ID, ""
	case <-gone:
		return outcomeTransport, "", "connection ended before the answer"
	case <-timer.C:
		return outcomeNoAnswer, "", "no answer within " + answerTimeout.String()
	case <-ctx.Done():
		return outcomeTransport, "", "run ended"
	}
}

// waitConn returns the live connection, waiting up to answerTimeout for one.
func (p *posClient) waitConn(ctx context.Context) (*client.Conn, chan struct{}) {
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		c, gone, up := p.conn, p.gone, p.up
		p.mu.Unlock()
		if c != nil {
			return c, gone
		}
		select {
		case <-up:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// payREST sends one payment attempt as POST /v1/payments. pause is the
// Retry-After of a 503.
func (p *posClient) payREST(ctx context.Context, req protocol.PaymentRequest) (outcome, txnID, detail string, pause time.Duration) {
	h := http.Header{"Idempotency-Key": {"idem-" + req.Reference}}
	rctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	resp, err := p.rest.Do(rctx, http.MethodPost, "/v1/payments", req, h)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return outcomeNoAnswer, "", err.Error(), 0
		}
		return outcomeTransport, "", err.Error(), 0
	}
	if e := resp.Err(); e != nil {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			pause = time.Duration(s) * time.Second
		}
		out := classify(e.Code)
		if resp.Status == http.StatusServiceUnavailable {
			out = outcomeUnavailable
		}
		return out, "", fmt.Sprintf("HTTP %d %s: %s", resp.Status, e.Code, e.Message), pause
	}
	var body struct {
		Transaction *protocol.Transaction `json:"transaction"`
		Created     bool                  `json:"created"`
	}
	if err := resp.Decode(&body); err != nil || body.Transaction == nil {
		return outcomeOther, "", fmt.Sprintf("HTTP %d undecodable: %.200s", resp.Status, resp.Body), 0
	}
	if resp.Status == http.StatusCreated || body.Created {
		return outcomeCreated, body.Transaction.ID, "", 0
	}
	return outcomeExisting, body.Transaction.ID, "", 0
}

// classify maps an error code to an answer class.
func classify(code protocol.Code) string {
	switch code {
	case protocol.CodeUnavailable:
		return outcomeUnavailable
	case protocol.CodeInternal:
		return outcomeInternal
	case protocol.CodeDeviceBusy:
		return outcomeBusy
	case protocol.CodeTerminalOffline:
		return outcomeOffline
	}
	return outcomeOther
}

// connections reports how many times the WebSocket connected.
func (p *posClient) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connects
}
