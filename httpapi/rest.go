package httpapi

import (
	"net/http"
	"strconv"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

func (s *Server) handleListTerminals(w http.ResponseWriter, r *http.Request, p hub.Principal, _ []byte) {
	hub.WriteJSON(w, http.StatusOK, map[string]any{"data": s.hub.Terminals(p.MerchantID)})
}

func (s *Server) handleGetTerminal(w http.ResponseWriter, r *http.Request, p hub.Principal, _ []byte) {
	device, ok := s.hub.ResolveTerminal(p.MerchantID, r.PathValue("id"))
	if !ok {
		hub.WriteError(w, protocol.Errorf(protocol.CodeTerminalNotFound, "id", "no such terminal"))
		return
	}
	for _, t := range s.hub.Terminals(p.MerchantID) {
		if t.TerminalID == device {
			hub.WriteJSON(w, http.StatusOK, map[string]any{"terminal": t})
			return
		}
	}
	hub.WriteError(w, protocol.Errorf(protocol.CodeTerminalNotFound, "id", "no such terminal"))
}

func (s *Server) handleOpsTerminals(w http.ResponseWriter, r *http.Request) {
	hub.WriteJSON(w, http.StatusOK, map[string]any{
		"data":        s.hub.OpsTerminals(),
		"connections": s.hub.Connections(),
		"conflicts":   s.hub.Conflicts(),
	})
}

// ---- transactions over signed HTTP (docs/protocol.md#endpoints, docs/protocol.md#transactions) ----

// idempotencyHeader reads and checks the Idempotency-Key header.
func idempotencyHeader(r *http.Request) (string, *protocol.Error) {
	k := r.Header.Get(protocol.HeaderIdemKey)
	if e := protocol.CheckID(protocol.HeaderIdemKey, k); e != nil {
		return "", e
	}
	return k, nil
}

func (s *Server) handleCreatePayment(w http.ResponseWriter, r *http.Request, p hub.Principal, body []byte) {
	req := new(protocol.PaymentRequest)
	if e := protocol.DecodeBody(body, req); e != nil {
		hub.WriteError(w, e)
		return
	}
	s.respond(w, r, p, req, true)
}

// lifecycleTypes maps POST /v1/transactions/{id}/<action> to its request.
var lifecycleTypes = map[string]func(id string) protocol.Validator{
	"cancel":    func(id string) protocol.Validator { return &protocol.CancelRequest{TransactionID: id} },
	"refund":    func(id string) protocol.Validator { return &protocol.RefundRequest{TransactionID: id} },
	"void":      func(id string) protocol.Validator { return &protocol.VoidRequest{TransactionID: id} },
	"capture":   func(id string) protocol.Validator { return &protocol.CaptureRequest{TransactionID: id} },
	"signature": func(id string) protocol.Validator { return &protocol.SignatureVerificationRequest{TransactionID: id} },
}

func (s *Server) handleLifecycle(w http.ResponseWriter, r *http.Request, p hub.Principal, body []byte) {
	newReq, ok := lifecycleTypes[r.PathValue("action")]
	if !ok {
		hub.WriteError(w, protocol.Errorf(protocol.CodeNotFound, "", "no such endpoint"))
		return
	}
	id := r.PathValue("id")
	req := newReq(id)
	if e := protocol.DecodeBody(body, req); e != nil {
		hub.WriteError(w, e)
		return
	}
	if e := sameID(req, id); e != nil {
		hub.WriteError(w, e)
		return
	}
	s.respond(w, r, p, req, false)
}

// sameID refuses a body whose transactionId contradicts the path.
func sameID(req protocol.Validator, id string) *protocol.Error {
	var got string
	switch x := req.(type) {
	case *protocol.CancelRequest:
		got = x.TransactionID
	case *protocol.RefundRequest:
		got = x.TransactionID
	case *protocol.VoidRequest:
		got = x.TransactionID
	case *protocol.CaptureRequest:
		got = x.TransactionID
	case *protocol.SignatureVerificationRequest:
		got = x.TransactionID
	}
	if got != id {
		return protocol.Invalid("transactionId", "does not match the transaction in the path")
	}
	return nil
}

// respond performs a request and writes {"transaction"[, "created"]}.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, p hub.Principal, req any, withCreated bool) {
	key, e := idempotencyHeader(r)
	if e != nil {
		hub.WriteError(w, e)
		return
	}
	res, err := s.hub.Perform(r.Context(), p, req, key)
	if err != nil {
		hub.WriteError(w, s.hub.ClientError(err, s.log))
		return
	}
	out := map[string]any{"transaction": res.Txn}
	if withCreated {
		out["created"] = res.Created
	}
	status := res.Status
	if status == 0 {
		status = http.StatusOK
	}
	hub.WriteJSON(w, status, out)
}

func (s *Server) handleGetTransaction(w http.ResponseWriter, r *http.Request, p hub.Principal, _ []byte) {
	res, err := s.hub.Perform(r.Context(), p, &protocol.GetTransactionStatusRequest{TransactionID: r.PathValue("id")}, "")
	if err != nil {
		hub.WriteError(w, s.hub.ClientError(err, s.log))
		return
	}
	hub.WriteJSON(w, http.StatusOK, map[string]any{"transaction": res.Txn})
}

var validStatuses = map[protocol.Status]bool{
	protocol.StatusPending: true, protocol.StatusDispatched: true, protocol.StatusInProgress: true,
	protocol.StatusAwaitingSignature: true, protocol.StatusAwaitingReconnect: true, protocol.StatusAuthorized: true,
	protocol.StatusCompleted: true, protocol.StatusDeclined: true, protocol.StatusFailed: true,
	protocol.StatusCancelled: true, protocol.StatusTimedOut: true, protocol.StatusSuperseded: true, protocol.StatusVoided: true,
}

func (s *Server) handleListTransactions(w http.ResponseWriter, r *http.Request, p hub.Principal, _ []byte) {
	if s.opts.Engine == nil {
		hub.WriteError(w, hub.ErrNoEngine)
		return
	}
	q := r.URL.Query()
	f := session.Filter{Status: protocol.Status(q.Get("status")), Reference: q.Get("reference"), Type: q.Get("type"), After: q.Get("after")}
	if t := q.Get("terminalId"); t != "" {
		device, ok := s.hub.ResolveTerminal(p.MerchantID, t)
		if !ok {
			hub.WriteJSON(w, http.StatusOK, session.Page{Data: []*protocol.Transaction{}})
			return
		}
		f.TerminalID = device
	}
	if f.Status != "" && !validStatuses[f.Status] {
		hub.WriteError(w, protocol.Invalid("status", "unknown status %q", q.Get("status")))
		return
	}
	if f.Type != "" && f.Type != protocol.TypeSale && f.Type != protocol.TypeRefund {
		hub.WriteError(w, protocol.Invalid("type", "must be sale or refund"))
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			hub.WriteError(w, protocol.Invalid("limit", "must be a whole number from 1 to 100"))
			return
		}
		f.Limit = n
	}
	page, err := s.opts.Engine.List(r.Context(), p.MerchantID, f)
	if err != nil {
		hub.WriteError(w, s.hub.ClientError(err, s.log))
		return
	}
	hub.WriteJSON(w, http.StatusOK, page)
}
