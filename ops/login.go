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

// handleLogin turns the ops token into the dashboard's session cookie:
// 204 with Set-Cookie when it is right, 401 otherwise.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Origin", "cross-origin request refused"))
		return
	}
	var req loginRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeError(w, protocol.Invalid("token", `body must be {"token":"<ops token>"}`))
		return
	}
	if !s.tokenMatches(req.Token) {
		s.log.Info().Str("remote", r.RemoteAddr).Msg("ops login refused: wrong token")
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "token", "wrong ops token"))
		return
	}
	if !s.cookieOK {
		writeError(w, protocol.Errorf(protocol.CodeInternal, "token",
			"the ops token has characters a cookie cannot carry; use Authorization: Bearer or choose another token"))
		return
	}
	http.SetCookie(w, sessionCookie(r, s.opts.Token, 0))
	s.log.Info().Str("remote", r.RemoteAddr).Msg("ops login")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleLogout clears the session cookie.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Origin", "cross-origin request refused"))
		return
	}
	http.SetCookie(w, sessionCookie(r, "", -1))
	w.WriteHeader(http.StatusNoContent)
}

// handleSession answers 204 when the request carries valid ops credentials
// and 401 otherwise, so the page knows whether to show the login form (a
// browser cannot see why a WebSocket upgrade failed).
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Authorization", "not signed in"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// sessionCookie is the dashboard cookie: HttpOnly (page scripts never see
// the token), SameSite=Strict (no other site's request carries it), Secure
// when the request came over TLS (directly or through a proxy that says so).
// It lasts for the browser session; maxAge < 0 deletes it.
func sessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: hub.OpsCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
	}
}

// validCookieValue reports whether v is made only of RFC 6265 cookie-octets,
// so that it reaches the browser and comes back unchanged.
func validCookieValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b < 0x21 || b > 0x7e || b == '"' || b == ',' || b == ';' || b == '\\' {
			return false
		}
	}
	return true
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
