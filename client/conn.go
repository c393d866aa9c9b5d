package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/protocol"
)

// Endpoint paths of the two WebSocket protocols (docs/protocol.md#endpoints).
const (
	POSPath      = "/v1/pos/ws"
	TerminalPath = "/v1/terminal/ws"
)

// ReadLimit is the largest message a Conn accepts. It is far above the 64 KiB
// a client may send because the hub's own messages are not bounded by that
// rule: a POS `connected` greeting lists every terminal of the merchant.
const ReadLimit = 1 << 20

// HandshakeError is a WebSocket upgrade the hub refused with an HTTP answer,
// typically 401 for bad credentials. It keeps the body because the contract
// makes the hub say there which part of the credentials failed.
type HandshakeError struct {
	StatusCode int
	Body       string // at most the first 1 KiB, all the WebSocket library keeps

	err error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("client: websocket handshake refused: HTTP %d: %s", e.StatusCode, e.Body)
}

// Unwrap exposes the WebSocket library's own error.
func (e *HandshakeError) Unwrap() error { return e.err }

// Err decodes the contract's {"error":{...}} body, so a test can assert on
// the code instead of matching text. It is nil when the body is not one.
func (e *HandshakeError) Err() *protocol.Error {
	var b protocol.ErrorBody
	if json.Unmarshal([]byte(e.Body), &b) != nil {
		return nil
	}
	return b.Error
}

// Message is one frame from the hub with its action already read, so callers
// can switch on Action and decode only the messages they care about into
// the matching protocol type.
type Message struct {
	Action string
	Raw    json.RawMessage
}

// Decode unmarshals the whole frame into v, typically a protocol type.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Raw, v) }

// MessageID returns the durable message's id (empty if it has none), which
// is what a POS must ack.
func (m Message) MessageID() string {
	var v struct {
		MessageID string `json:"messageId"`
	}
	_ = json.Unmarshal(m.Raw, &v)
	return v.MessageID
}

// Err returns the error an `error` reply carries, and nil for any other
// action, so a caller can check a reply in one line.
func (m Message) Err() *protocol.Error {
	if m.Action != protocol.ActionError {
		return nil
	}
	var r protocol.ErrorReply
	if err := m.Decode(&r); err != nil {
		return &protocol.Error{Code: protocol.CodeInternal, Message: "undecodable error reply: " + err.Error()}
	}
	return &protocol.Error{Code: r.Code, Message: r.Message, Field: r.Field}
}

// Conn is a signed, greeted WebSocket connection to the hub, POS or terminal
// side. Send, SendRaw and Close may be called from any goroutine while one
// goroutine reads; Read, ReadRaw and ReadUntil must not run concurrently.
//
// As with the underlying library, a Read whose ctx ends closes the
// connection: use a ctx that lives as long as the connection for the read
// loop, and a deadline only where a test expects a message soon.
type Conn struct {
	// Greeting is the `connected` message the hub sent first. Dial consumes it
	// so that every caller starts at the first real message, yet the
	// terminals snapshot (POS) and heartbeat interval (terminal) stay at hand.
	Greeting Message

	ws           *websocket.Conn
	connectionID string
}

// DialPOS connects a POS with API key keyID and its secret.
func DialPOS(ctx context.Context, opts Options, keyID, secret string) (*Conn, error) {
	return dial(ctx, opts, POSPath, protocol.HeaderAPIKey, protocol.QueryAPIKey, keyID, secret)
}

// DialTerminal connects a terminal with its device id and secret.
func DialTerminal(ctx context.Context, opts Options, deviceID, secret string) (*Conn, error) {
	return dial(ctx, opts, TerminalPath, protocol.HeaderDeviceID, protocol.QueryDeviceID, deviceID, secret)
}

func dial(ctx context.Context, opts Options, path, idHeader, idParam, id, secret string) (*Conn, error) {
	u, err := opts.HTTPURL(path)
	if err != nil {
		return nil, err
	}
	header := http.Header{}
	now := opts.now()
	if opts.QueryAuth {
		protocol.SignURL(u, idParam, id, secret, now)
	} else {
		ts := protocol.Timestamp(now)
		header.Set(idHeader, id)
		header.Set(protocol.HeaderTimestamp, ts)
		header.Set(protocol.HeaderSignature, protocol.Sign(secret, "GET", protocol.SignedPath(u, false), ts, nil))
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:      opts.HTTPClient,
		HTTPHeader:      header,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			he := &HandshakeError{StatusCode: resp.StatusCode, err: err}
			if resp.Body != nil {
				b, _ := io.ReadAll(resp.Body)
				he.Body = string(b)
			}
			return nil, he
		}
		return nil, err
	}
	ws.SetReadLimit(ReadLimit)
	c := &Conn{ws: ws}
	g, err := c.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: reading connected greeting: %w", err)
	}
	if g.Action != protocol.ActionConnected {
		ws.Close(websocket.StatusPolicyViolation, "expected connected")
		return nil, fmt.Errorf("client: first message is %q, want %q", g.Action, protocol.ActionConnected)
	}
	var greet struct {
		ConnectionID string `json:"connectionId"`
	}
	if err := g.Decode(&greet); err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: decoding connected greeting: %w", err)
	}
	c.Greeting = g
	c.connectionID = greet.ConnectionID
	return c, nil
}

// ConnectionID is the id the hub gave this connection in its greeting; ops
// and terminalStatusUpdate messages name connections by it.
func (c *Conn) ConnectionID() string { return c.connectionID }

// WebSocket exposes the underlying connection for what this type does not
// wrap, such as Ping or a close with a chosen status code.
func (c *Conn) WebSocket() *websocket.Conn { return c.ws }

// Send writes v as one JSON text frame. v must carry its own "action"; for
// the protocol request types, which do not, use SendAction.
func (c *Conn) Send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// SendAction sends v (a JSON object, e.g. protocol.PaymentRequest) with
// "action" and, if requestID is not empty, "requestId" added, because the
// protocol request types describe only the body and leave the envelope to
// the sender.
func (c *Conn) SendAction(ctx context.Context, action, requestID string, v any) error {
	b, err := withEnvelope(action, requestID, v)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// Ack acknowledges messageID and every earlier durable message, so the hub
// stops replaying them (docs/protocol.md#messageid-ack-and-replay).
func (c *Conn) Ack(ctx context.Context, messageID string) error {
	return c.SendAction(ctx, protocol.ActionAck, "", protocol.AckRequest{MessageID: messageID})
}

// SendRaw writes data unchanged with the given frame type, so tests can send
// what a well-behaved client never would: binary, non-JSON, oversized.
func (c *Conn) SendRaw(ctx context.Context, typ websocket.MessageType, data []byte) error {
	return c.ws.Write(ctx, typ, data)
}

// ReadRaw returns the next data frame as it arrived.
func (c *Conn) ReadRaw(ctx context.Context) ([]byte, error) {
	_, b, err := c.ws.Read(ctx)
	return b, err
}

// Read returns the next message. A frame that is not a JSON object with a
// string action is an error (the hub never sends one); the Message still
// carries the raw bytes for the error report.
func (c *Conn) Read(ctx context.Context) (Message, error) {
	b, err := c.ReadRaw(ctx)
	if err != nil {
		return Message{}, err
	}
	m := Message{Raw: b}
	var env struct {
		Action string `json:"action"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return m, fmt.Errorf("client: undecodable message %.200q: %w", b, err)
	}
	if env.Action == "" {
		return m, fmt.Errorf("client: message without action: %.200q", b)
	}
	m.Action = env.Action
	return m, nil
}

// ReadUntil reads and discards messages until one with the given action
// arrives. Pushes such as terminalStatusUpdate interleave freely with
// replies, so waiting for one specific message is the common case in tests.
func (c *Conn) ReadUntil(ctx context.Context, action string) (Message, error) {
	for {
		m, err := c.Read(ctx)
		if err != nil {
			return m, err
		}
		if m.Action == action {
			return m, nil
		}
	}
}

// Close ends the connection with a normal closure, so the hub can tell a
// client that left on purpose from one that dropped. Closing a connection
// that is already closed is not an error: after a hub-side close or a
// failed read there is nothing left to report.
func (c *Conn) Close() error {
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// CloseNow drops the connection without a close handshake, which is how a
// test simulates a terminal losing its network.
func (c *Conn) CloseNow() error { return c.ws.CloseNow() }

// CloseCode returns the WebSocket close status carried by err (from a read
// or write), or -1 when err is not a close, so callers can tell a
// displacement (4001) from a stale connection (4002) and so on.
func CloseCode(err error) int { return int(websocket.CloseStatus(err)) }

// withEnvelope marshals v and puts action (and requestId) in front of its
// fields, leaving v's own encoding untouched.
func withEnvelope(action, requestID string, v any) ([]byte, error) {
	body := []byte("{}")
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body = bytes.TrimSpace(b)
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("client: %s body must encode as a JSON object, got %.50q", action, body)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"action":`)
	a, _ := json.Marshal(action)
	buf.Write(a)
	if requestID != "" {
		r, _ := json.Marshal(requestID)
		buf.WriteString(`,"requestId":`)
		buf.Write(r)
	}
	rest := bytes.TrimSpace(body[1:])
	if len(rest) > 0 && rest[0] != '}' {
		buf.WriteByte(',')
	}
	buf.Write(rest)
	return buf.Bytes(), nil
}
