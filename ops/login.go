package ops

import (
	"embed"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/protocol"
)

//go:embed static
var staticFiles embed.FS

// contentSecurityPolicy allows the page its own script, style and feed and
// nothing else (no CDN, no inline code, no framing).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// staticHandler serves the dashboard's embedded files under /ops/. The page
// itself holds no data, so it needs no credentials; everything it shows comes
// over the authenticated feed.
func (s *Server) staticHandler() http.Handler {
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	files := http.StripPrefix("/ops/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// loginRequest is the body of POST /ops/login.
type loginRequest struct {
	Token string `json:"token"`
}

// handleLogin opens a dashboard session for the ops token: 204 with a
// Set-Cookie holding a new random session id when the token is right, 401
// otherwise, 503 when Redis cannot store the session.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Origin", "cross-origin request refused"))
		return
	}
	if e := s.hub.AddrBlocked(r); e != nil {
		writeError(w, e)
		return
	}
	var req loginRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeError(w, protocol.Invalid("token", `body must be {"token":"<ops token>"}`))
		return
	}
	if !s.tokenMatches(req.Token) {
		// Logged (rate-limited) and counted by the hub's limits.
		writeError(w, s.hub.AuthFailed(r, string(hub.KindOps), "", protocol.Errorf(protocol.CodeUnauthorized, "token", "wrong ops token")))
		return
	}
	id, err := s.newSession(r.Context(), r)
	if err != nil {
		s.log.Warn().Err(err).Str("remote", s.hub.ClientAddr(r)).Msg("ops login failed: could not store the session")
		writeError(w, errSessionUnavailable())
		return
	}
	http.SetCookie(w, s.sessionCookie(r, id, 0))
	s.log.Info().Str("remote", s.hub.ClientAddr(r)).Msg("ops login")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleLogout ends the session named by the cookie at once (its Redis
// key is deleted and this hub's feeds opened with it are closed) and
// clears the cookie. When Redis cannot delete it the answer is 503 and the
// cookie stays, so the operator can try again. A cookie naming no session
// counts as a failed authentication, so that logout cannot be used to try
// session ids or to fill the log.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Origin", "cross-origin request refused"))
		return
	}
	if e := s.hub.AddrBlocked(r); e != nil {
		writeError(w, e)
		return
	}
	if key, ok := s.requestSession(r); ok {
		ended, err := s.endSession(r.Context(), key)
		if err != nil {
			s.log.Warn().Err(err).Str("remote", s.hub.ClientAddr(r)).Msg("ops logout failed: could not delete the session")
			writeError(w, protocol.Errorf(protocol.CodeUnavailable, "",
				"the ops session could not be ended (Redis does not answer); sign out again shortly"))
			return
		}
		if !ended {
			// Signed out already, or expired: answered like a logout
			// unless the address has failed too often.
			e := s.hub.AuthFailed(r, string(hub.KindOps), "", protocol.Errorf(protocol.CodeUnauthorized, hub.OpsCookie, "no such session"))
			if e.Code == protocol.CodeRateLimited {
				writeError(w, e)
				return
			}
		} else {
			s.log.Info().Str("remote", s.hub.ClientAddr(r)).Msg("ops logout")
		}
	}
	http.SetCookie(w, s.sessionCookie(r, "", -1))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleSession answers 204 when the request carries valid ops credentials
// (and so refreshes the session's idle expiry), 401 otherwise, so the page
// knows whether to show the login form (a browser cannot see why a
// WebSocket upgrade failed), and 503 when Redis cannot tell.
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	if _, e := s.authenticate(r, "not signed in"); e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// sameOrigin refuses a browser request made by another site's page: a
// present Origin header must name this host. Requests without Origin (curl,
// Go clients, same-origin navigations) pass; their credentials decide. This
// backs up SameSite=Strict for the state-changing POSTs. A reverse proxy in
// front of the hub must pass the Host header through unchanged.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}
