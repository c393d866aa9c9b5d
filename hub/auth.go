package hub

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/protocol"
)

// Principal is who a signed request authenticated as.
type Principal struct {
	MerchantID string
	KeyID      string // POS
	DeviceID   string // terminal
	CanWrite   bool   // POS: the key has terminal:write
	CanRead    bool   // POS: the key has terminal:read
	TS, Sig    string // the request's X-Timestamp and X-Signature
}

// credentials are the three signed values, from headers or the query.
type credentials struct {
	id, ts, sig string
	queryForm   bool
}

func readCredentials(r *http.Request, idHeader, idQuery string) (credentials, *protocol.Error) {
	c := credentials{id: r.Header.Get(idHeader), ts: r.Header.Get(protocol.HeaderTimestamp), sig: r.Header.Get(protocol.HeaderSignature)}
	if c.id == "" && c.ts == "" && c.sig == "" {
		q := r.URL.Query()
		if q.Has(idQuery) || q.Has(protocol.QuerySignature) {
			c = credentials{id: q.Get(idQuery), ts: q.Get(protocol.QueryTimestamp), sig: q.Get(protocol.QuerySignature), queryForm: true}
		}
	}
	missing := func(header, param string) *protocol.Error {
		if c.queryForm {
			return protocol.Errorf(protocol.CodeUnauthorized, param, "missing %s query parameter", param)
		}
		return protocol.Errorf(protocol.CodeUnauthorized, header, "missing %s header", header)
	}
	switch {
	case c.id == "":
		return c, missing(idHeader, idQuery)
	case c.ts == "":
		return c, missing(protocol.HeaderTimestamp, protocol.QueryTimestamp)
	case c.sig == "":
		return c, missing(protocol.HeaderSignature, protocol.QuerySignature)
	}
	return c, nil
}

// authenticate checks a signed request. lookup maps the credential id to its
// secret and merchant. The error says which part failed and never echoes the
// signature or a secret; the credentials come back either way (a failure is
// counted under the id it claimed).
func (h *Hub) authenticate(r *http.Request, body []byte, idHeader, idQuery string,
	lookup func(id string) (secret, merchantID string, ok bool)) (credentials, string, *protocol.Error) {
	c, e := readCredentials(r, idHeader, idQuery)
	if e != nil {
		return c, "", e
	}
	// Name the part the way the client sent it: header or query parameter.
	idName, tsName, sigName := idHeader, protocol.HeaderTimestamp, protocol.HeaderSignature
	if c.queryForm {
		idName, tsName, sigName = idQuery, protocol.QueryTimestamp, protocol.QuerySignature
	}
	if ok, problem := protocol.CheckTimestamp(c.ts, h.now()); !ok {
		return c, "", protocol.Errorf(protocol.CodeUnauthorized, tsName, "%s", problem)
	}
	secret, merchantID, ok := lookup(c.id)
	if !ok {
		return c, "", protocol.Errorf(protocol.CodeUnauthorized, idName, "unknown %s", idName)
	}
	if !protocol.VerifySignature(secret, r.Method, protocol.SignedPath(r.URL, c.queryForm), c.ts, body, c.sig) {
		return c, "", protocol.Errorf(protocol.CodeUnauthorized, sigName, "bad signature")
	}
	return c, merchantID, nil
}

// authPOS authenticates a POS request. On failure the Principal holds only
// the key id the request claimed.
func (h *Hub) authPOS(r *http.Request, body []byte) (Principal, *protocol.Error) {
	dir := h.Directory()
	var key config.KeyEntry
	c, m, e := h.authenticate(r, body, protocol.HeaderAPIKey, protocol.QueryAPIKey, func(id string) (string, string, bool) {
		k, ok := dir.Key(id)
		key = k
		return k.Secret, k.MerchantID, ok
	})
	if e != nil {
		return Principal{KeyID: c.id}, e
	}
	return Principal{MerchantID: m, KeyID: c.id, CanWrite: key.CanWrite, CanRead: key.CanRead, TS: c.ts, Sig: c.sig}, nil
}

// authTerminal authenticates a terminal's upgrade. On failure the
// Principal holds only the device id the request claimed.
func (h *Hub) authTerminal(r *http.Request) (Principal, *protocol.Error) {
	dir := h.Directory()
	c, m, e := h.authenticate(r, nil, protocol.HeaderDeviceID, protocol.QueryDeviceID, func(id string) (string, string, bool) {
		t, ok := dir.Terminal(id)
		return t.Secret, t.MerchantID, ok
	})
	if e != nil {
		return Principal{DeviceID: c.id}, e
	}
	return Principal{MerchantID: m, DeviceID: c.id, TS: c.ts, Sig: c.sig}, nil
}

// OpsAuthorized reports whether r carries token as `Authorization: Bearer
// <token>`. It never reads the dashboard's cookie: that holds a session id,
// not the token, and package ops checks it against Redis on its own routes.
func (h *Hub) OpsAuthorized(r *http.Request, token string) bool {
	got := ""
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		got = a[7:]
	}
	return got != "" && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// OpsHTTP guards an ops endpoint with the ops token (a bearer token), its
// failures counted and limited as every failed authentication is.
func (h *Hub) OpsHTTP(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := h.addrBlocked(r); e != nil {
			WriteError(w, e)
			return
		}
		if !h.OpsAuthorized(r, h.opts.OpsToken) {
			WriteError(w, h.AuthFailed(r, string(KindOps), "", protocol.Errorf(protocol.CodeUnauthorized, "Authorization", "missing or wrong ops token")))
			return
		}
		next(w, r)
	}
}

// OpsCookie is the name of the dashboard's session cookie (package ops),
// which holds a random session id.
const OpsCookie = "termhub_ops"

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes the one HTTP error body, the same for a refused
// upgrade and for every answer of the HTTP API (package httpapi), with
// Retry-After when a retry should wait.
func WriteError(w http.ResponseWriter, e *protocol.Error) {
	if (e.Code == protocol.CodeRateLimited || e.Code == protocol.CodeUnavailable) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", strconv.Itoa(max(e.RetryAfter, 1)))
	}
	WriteJSON(w, e.Code.HTTPStatus(), protocol.ErrorBody{Error: e})
}

// AuthenticatePOS authenticates a POS's signed HTTP request, body read
// whole, as the upgrade of its WebSocket is: a failure is counted against
// the client address and the key it claimed (AuthFailed), and a success
// takes one request of the key's budget. The refusal is the error to
// answer.
func (h *Hub) AuthenticatePOS(r *http.Request, body []byte) (Principal, *protocol.Error) {
	p, e := h.authPOS(r, body)
	if e != nil {
		return p, h.AuthFailed(r, "pos", p.KeyID, e)
	}
	if e := h.allowKey(p.KeyID); e != nil {
		return p, e
	}
	return p, nil
}
