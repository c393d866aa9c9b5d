package hub

import (
	"context"
	"errors"
	"net/http"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/protocol"
)

// servePOS upgrades an authenticated POS to a WebSocket and serves it.
func (h *Hub) servePOS(w http.ResponseWriter, r *http.Request) {
	p, ok := h.admit(w, r, h.authPOS)
	if !ok {
		return
	}
	h.serveConn(w, r, KindPOS, p, h.registerPOS, h.unregisterPOS, h.handlePOSFrame)
}

// serveTerminal upgrades an authenticated terminal and serves it.
func (h *Hub) serveTerminal(w http.ResponseWriter, r *http.Request) {
	p, ok := h.admit(w, r, func(r *http.Request, _ []byte) (principal, *protocol.Error) { return h.authTerminal(r) })
	if !ok {
		return
	}
	h.serveConn(w, r, KindTerminal, p, h.registerTerminal, func(c *conn) { h.unregisterTerminal(c) }, h.handleTerminalFrame)
}

// admit refuses upgrades while draining and checks credentials (401 before
// the upgrade, so a client sees why).
func (h *Hub) admit(w http.ResponseWriter, r *http.Request, auth func(*http.Request, []byte) (principal, *protocol.Error)) (principal, bool) {
	if h.draining.Load() {
		writeError(w, protocol.Errorf(protocol.CodeUnavailable, "", "server is shutting down; reconnect shortly"))
		return principal{}, false
	}
	p, e := auth(r, nil)
	if e != nil {
		h.log.Info().Str("path", r.URL.Path).Str("problem", e.Message).Msg("unauthorized connection")
		writeError(w, e)
		return principal{}, false
	}
	return p, true
}

// serveConn runs one connection from upgrade to cleanup.
func (h *Hub) serveConn(w http.ResponseWriter, r *http.Request, kind Kind, p principal,
	register, unregister func(*conn), handle func(*conn, []byte) error) {
	c := h.newConn(nil, kind, p.merchantID, p.keyID, p.deviceID)
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Credentials are HMAC signatures, not cookies, so a cross-origin
		// page gains nothing it could not sign itself.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
		OnPongReceived:     func(context.Context, []byte) { c.touch() },
	})
	if err != nil {
		c.log.Info().Err(err).Msg("upgrade failed")
		return
	}
	ws.SetReadLimit(-1) // readLoop enforces 64 KiB itself, to close with 4400
	c.ws = ws
	h.conns.Add(1)
	defer h.conns.Done()

	register(c)
	go c.writeLoop()
	c.startHeartbeat()
	c.readLoop(func(data []byte) error { return handle(c, data) })

	c.stopHeartbeat()
	unregister(c)
	c.disconnect(&protocol.Disconnect{Code: protocol.CloseCode(websocket.StatusNormalClosure)})
	<-c.done
	c.cancel()
}

// handlePOSFrame decodes and serves one POS frame.
func (h *Hub) handlePOSFrame(c *conn, data []byte) error {
	in, err := protocol.DecodePOS(data)
	if err != nil {
		return h.replyDecodeError(c, in, err)
	}
	switch body := in.Body.(type) {
	case *protocol.ListTerminalsRequest:
		c.sendJSON(protocol.TerminalsReply{Action: protocol.ActionTerminals, RequestID: in.RequestID, Terminals: h.Terminals(c.merchantID)})
	case *protocol.AckRequest:
		_ = body // the outbox takes acks (durable delivery)
	default:
		c.sendJSON(protocol.NewErrorReply(in.RequestID, protocol.Errorf(protocol.CodeUnavailable, "action", "%s is not available on this hub yet", in.Action)))
	}
	return nil
}

// handleTerminalFrame decodes and serves one terminal frame.
func (h *Hub) handleTerminalFrame(c *conn, data []byte) error {
	in, err := protocol.DecodeTerminal(data)
	if err != nil {
		return h.replyDecodeError(c, in, err)
	}
	c.sendJSON(protocol.NewErrorReply(in.RequestID, protocol.Errorf(protocol.CodeUnavailable, "action", "%s is not available on this hub yet", in.Action)))
	return nil
}

// replyDecodeError answers a frame that failed to decode; only ErrNotJSON is
// passed up, to close the connection.
func (h *Hub) replyDecodeError(c *conn, in protocol.Inbound, err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		c.log.Debug().Str("code", string(pe.Code)).Str("field", pe.Field).Msg("bad request")
		c.sendJSON(protocol.NewErrorReply(in.RequestID, pe))
		return nil
	}
	return err
}
