package hub

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/termhub/termhub/protocol"
)

// principal is who a request authenticated as.
type principal struct {
	merchantID string
	keyID      string // POS
	deviceID   string // terminal
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
// signature or a secret.
func (h *Hub) authenticate(r *http.Request, body []byte, idHeader, idQuery string,
	lookup func(id string) (secret, merchantID string, ok bool)) (string, string, *protocol.Error) {
	c, e := readCredentials(r, idHeader, idQuery)
	if e != nil {
		return "", "", e
	}
	// Name the part the way the client sent it: header or query parameter.
	idName, tsName, sigName := idHeader, protocol.HeaderTimestamp, protocol.HeaderSignature
	if c.queryForm {
		idName, tsName, sigName = idQuery, protocol.QueryTimestamp, protocol.QuerySignature
	}
	if ok, problem := protocol.CheckTimestamp(c.ts, h.now()); !ok {
		return "", "", protocol.Errorf(protocol.CodeUnauthorized, tsName, "%s", problem)
	}
	secret, merchantID, ok := lookup(c.id)
	if !ok {
		return "", "", protocol.Errorf(protocol.CodeUnauthorized, idName, "unknown %s", idName)
	}
	if !protocol.VerifySignature(secret, r.Method, protocol.SignedPath(r.URL, c.queryForm), c.ts, body, c.sig) {
		return "", "", protocol.Errorf(protocol.CodeUnauthorized, sigName, "bad signature")
	}
	return c.id, merchantID, nil
}

func (h *Hub) authPOS(r *http.Request, body []byte) (principal, *protocol.Error) {
	dir := h.Directory()
	id, m, e := h.authenticate(r, body, protocol.HeaderAPIKey, protocol.QueryAPIKey, func(id string) (string, string, bool) {
		k, ok := dir.Key(id)
		return k.Secret, k.MerchantID, ok
	})
	return principal{merchantID: m, keyID: id}, e
}

func (h *Hub) authTerminal(r *http.Request) (principal, *protocol.Error) {
	dir := h.Directory()
	id, m, e := h.authenticate(r, nil, protocol.HeaderDeviceID, protocol.QueryDeviceID, func(id string) (string, string, bool) {
		t, ok := dir.Terminal(id)
		return t.Secret, t.MerchantID, ok
	})
	return principal{merchantID: m, deviceID: id}, e
}

// OpsAuthorized reports whether r carries the ops token as a bearer token or
// in the dashboard's session cookie.
func (h *Hub) OpsAuthorized(r *http.Request, token string) bool {
	got := ""
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		got = a[7:]
	} else if ck, err := r.Cookie(OpsCookie); err == nil {
		got = ck.Value
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// OpsCookie is the dashboard session cookie's name.
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
		w.Header().Set("Retry-After", "1")
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
		body, e := readBody(r)
		if e != nil {
			writeError(w, e)
			return
		}
		p, e := h.authPOS(r, body)
		if e != nil {
			h.log.Info().Str("path", r.URL.Path).Str("problem", e.Message).Msg("unauthorized request")
			writeError(w, e)
			return
		}
		// Every request is answered within request_timeout (CONTRACT
		// §7.1); a long poll's own wait comes on top (handleEvents).
		ctx, cancel := context.WithTimeout(r.Context(), h.opts.RequestTimeout+requestExtra(r))
		defer cancel()
		next(w, r.WithContext(ctx), p, body)
	}
}
