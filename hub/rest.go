package hub

import (
	"net/http"

	"github.com/termhub/termhub/protocol"
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

// opsHTTP guards an ops endpoint with the ops token.
func (h *Hub) opsHTTP(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.OpsAuthorized(r, h.opts.OpsToken) {
			writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Authorization", "missing or wrong ops token"))
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
