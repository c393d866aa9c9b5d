package hub

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/protocol"
)

// principal is who a request authenticated as.
type principal struct {
	merchantID string
	keyID      string // POS
	deviceID   string // terminal
	canWrite   bool   // POS: the key has terminal:write
	canRead    bool   // POS: the key has terminal:read
	ts, sig    string // the request's X-Timestamp and X-Signature
}

// maxBody bounds an HTTP request body; it is read whole to check its hash.
const maxBody = 1 << 20

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

// authPOS authenticates a POS request. On failure the principal holds only
// the key id the request claimed.
func (h *Hub) authPOS(r *http.Request, body []byte) (principal, *protocol.Error) {
	dir := h.Directory()
	var key config.KeyEntry
	c, m, e := h.authenticate(r, body, protocol.HeaderAPIKey, protocol.QueryAPIKey, func(id string) (string, string, bool) {
		k, ok := dir.Key(id)
		key = k
		return k.Secret, k.MerchantID, ok
	})
	if e != nil {
		return principal{keyID: c.id}, e
	}
	return principal{merchantID: m, keyID: c.id, canWrite: key.CanWrite, canRead: key.CanRead, ts: c.ts, sig: c.sig}, nil
}

// authTerminal authenticates a terminal's upgrade. On failure the
// principal holds only the device id the request claimed.
func (h *Hub) authTerminal(r *http.Request) (principal, *protocol.Error) {
	dir := h.Directory()
	c, m, e := h.authenticate(r, nil, protocol.HeaderDeviceID, protocol.QueryDeviceID, func(id string) (string, string, bool) {
		t, ok := dir.Terminal(id)
		return t.Secret, t.MerchantID, ok
	})
	if e != nil {
		return principal{deviceID: c.id}, e
	}
	return principal{merchantID: m, deviceID: c.id, ts: c.ts, sig: c.sig}, nil
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

// OpsCookie is the name of the dashboard's session cookie (package ops),
// which holds a random session id.
const OpsCookie = "termhub_ops"

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the one HTTP error body.
func writeError(w http.ResponseWriter, e *protocol.Error) {
	if (e.Code == protocol.CodeRateLimited || e.Code == protocol.CodeUnavailable) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", strconv.Itoa(max(e.RetryAfter, 1)))
	}
	writeJSON(w, e.Code.HTTPStatus(), protocol.ErrorBody{Error: e})
}

// readBody reads a request body of at most maxBody bytes.
func readBody(r *http.Request) ([]byte, *protocol.Error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, protocol.Invalid("", "could not read the request body")
	}
	if len(b) > maxBody {
		return nil, protocol.Invalid("", "request body exceeds 1 MiB")
	}
	return b, nil
}

// posHTTP wraps a POS REST handler with body reading and authentication.
func (h *Hub) posHTTP(next func(w http.ResponseWriter, r *http.Request, p principal, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := h.addrBlocked(r); e != nil {
			writeError(w, e)
			return
		}
		body, e := readBody(r)
		if e != nil {
			writeError(w, e)
			return
		}
		p, e := h.authPOS(r, body)
		if e != nil {
			writeError(w, h.AuthFailed(r, "pos", p.keyID, e))
			return
		}
		if e := h.allowKey(p.keyID); e != nil {
			writeError(w, e)
			return
		}
		// Every request is answered within request_timeout (CONTRACT
		// §7.1); a long poll's own wait comes on top (handleEvents).
		ctx, cancel := context.WithTimeout(r.Context(), h.opts.RequestTimeout+requestExtra(r))
		defer cancel()
		if e := h.firstUse(ctx, r, p); e != nil {
			writeError(w, e)
			return
		}
		next(w, r.WithContext(ctx), p, body)
	}
}
