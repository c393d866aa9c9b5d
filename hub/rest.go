package hub

import (
	"net/http"
	"strconv"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

func (h *Hub) handleListTerminals(w http.ResponseWriter, r *http.Request, p principal, _ []byte) {
	writeJSON(w, http.StatusOK, map[string]any{"data": h.Terminals(p.merchantID)})
}

func (h *Hub) handleGetTerminal(w http.ResponseWriter, r *http.Request, p principal, _ []byte) {
	device, ok := h.ResolveTerminal(p.merchantID, r.PathValue("id"))
	if !ok {
		writeError(w, protocol.Errorf(protocol.CodeTerminalNotFound, "id", "no such terminal"))
		return
	}
	for _, t := range h.Terminals(p.merchantID) {
		if t.TerminalID == device {
			writeJSON(w, http.StatusOK, map[string]any{"terminal": t})
			return
		}
	}
	writeError(w, protocol.Errorf(protocol.CodeTerminalNotFound, "id", "no such terminal"))
}

// OpsHTTP guards an ops endpoint with the ops token (a bearer token), its
// failures counted and limited as every failed authentication is.
func (h *Hub) OpsHTTP(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := h.addrBlocked(r); e != nil {
			writeError(w, e)
			return
		}
		if !h.OpsAuthorized(r, h.opts.OpsToken) {
			writeError(w, h.AuthFailed(r, string(KindOps), "", protocol.Errorf(protocol.CodeUnauthorized, "Authorization", "missing or wrong ops token")))
			return
		}
		next(w, r)
	}
}

func (h *Hub) handleOpsTerminals(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"data":        h.AllTerminals(),
		"connections": h.Connections(),
		"conflicts":   h.Conflicts(),
	})
}

// ---- transactions over signed HTTP (CONTRACT §2, §7) ----

// idempotencyHeader reads and checks the Idempotency-Key header.
func idempotencyHeader(r *http.Request) (string, *protocol.Error) {
	k := r.Header.Get(protocol.HeaderIdemKey)
	if e := protocol.CheckID(protocol.HeaderIdemKey, k); e != nil {
		return "", e
	}
	return k, nil
}

func (h *Hub) handleCreatePayment(w http.ResponseWriter, r *http.Request, p principal, body []byte) {
	req := new(protocol.PaymentRequest)
	if e := protocol.DecodeBody(body, req); e != nil {
		writeError(w, e)
		return
	}
	h.respond(w, r, p, req, true)
}

// lifecycleTypes maps POST /v1/transactions/{id}/<action> to its request.
var lifecycleTypes = map[string]func(id string) protocol.Validator{
	"cancel":    func(id string) protocol.Validator { return &protocol.CancelRequest{TransactionID: id} },
	"refund":    func(id string) protocol.Validator { return &protocol.RefundRequest{TransactionID: id} },
	"void":      func(id string) protocol.Validator { return &protocol.VoidRequest{TransactionID: id} },
	"capture":   func(id string) protocol.Validator { return &protocol.CaptureRequest{TransactionID: id} },
	"signature": func(id string) protocol.Validator { return &protocol.SignatureVerificationRequest{TransactionID: id} },
}

func (h *Hub) handleLifecycle(w http.ResponseWriter, r *http.Request, p principal, body []byte) {
	newReq, ok := lifecycleTypes[r.PathValue("action")]
	if !ok {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "", "no such endpoint"))
		return
	}
	id := r.PathValue("id")
	req := newReq(id)
	if e := protocol.DecodeBody(body, req); e != nil {
		writeError(w, e)
		return
	}
	if e := sameID(req, id); e != nil {
		writeError(w, e)
		return
	}
	h.respond(w, r, p, req, false)
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
func (h *Hub) respond(w http.ResponseWriter, r *http.Request, p principal, req any, withCreated bool) {
	key, e := idempotencyHeader(r)
	if e != nil {
		writeError(w, e)
		return
	}
	res, err := h.perform(r.Context(), p, req, key)
	if err != nil {
		writeError(w, h.clientError(err, h.log))
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
	writeJSON(w, status, out)
}

func (h *Hub) handleGetTransaction(w http.ResponseWriter, r *http.Request, p principal, _ []byte) {
	res, err := h.perform(r.Context(), p, &protocol.GetTransactionStatusRequest{TransactionID: r.PathValue("id")}, "")
	if err != nil {
		writeError(w, h.clientError(err, h.log))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"transaction": res.Txn})
}

var validStatuses = map[protocol.Status]bool{
	protocol.StatusPending: true, protocol.StatusDispatched: true, protocol.StatusInProgress: true,
	protocol.StatusAwaitingSignature: true, protocol.StatusAwaitingReconnect: true, protocol.StatusAuthorized: true,
	protocol.StatusCompleted: true, protocol.StatusDeclined: true, protocol.StatusFailed: true,
	protocol.StatusCancelled: true, protocol.StatusTimedOut: true, protocol.StatusSuperseded: true, protocol.StatusVoided: true,
}

func (h *Hub) handleListTransactions(w http.ResponseWriter, r *http.Request, p principal, _ []byte) {
	if h.opts.Engine == nil {
		writeError(w, errUnavailable)
		return
	}
	q := r.URL.Query()
	f := session.Filter{Status: protocol.Status(q.Get("status")), Reference: q.Get("reference"), Type: q.Get("type"), After: q.Get("after")}
	if t := q.Get("terminalId"); t != "" {
		device, ok := h.ResolveTerminal(p.merchantID, t)
		if !ok {
			writeJSON(w, http.StatusOK, session.Page{Data: []*protocol.Transaction{}})
			return
		}
		f.TerminalID = device
	}
	if f.Status != "" && !validStatuses[f.Status] {
		writeError(w, protocol.Invalid("status", "unknown status %q", q.Get("status")))
		return
	}
	if f.Type != "" && f.Type != protocol.TypeSale && f.Type != protocol.TypeRefund {
		writeError(w, protocol.Invalid("type", "must be sale or refund"))
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			writeError(w, protocol.Invalid("limit", "must be a whole number from 1 to 100"))
			return
		}
		f.Limit = n
	}
	page, err := h.opts.Engine.List(r.Context(), p.merchantID, f)
	if err != nil {
		writeError(w, h.clientError(err, h.log))
		return
	}
	writeJSON(w, http.StatusOK, page)
}
