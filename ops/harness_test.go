package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/httpapi"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/ops"
)

// env is one running hub with its ops server, on a fake clock.
type env struct {
	t     *testing.T
	App   *app.App
	Clock *clock.Fake
	Srv   *httptest.Server
	opts  client.Options
}

func newEnv(t *testing.T) *env {
	t.Helper()
	h := apptest.Start(t, kit.OpsConfig)
	return &env{t: t, App: h.App, Clock: h.Clock, Srv: h.Srv, opts: h.ClientOptions()}
}

// post sends a POST with an optional JSON body and headers.
func (e *env) post(path string, body any, header http.Header) *http.Response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(kit.Ctx(e.t), http.MethodPost, e.Srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// login returns the session cookie POST /ops/login sets.
func (e *env) login() *http.Cookie {
	e.t.Helper()
	resp := e.post("/ops/login", map[string]string{"token": kit.OpsToken}, nil)
	if resp.StatusCode != http.StatusNoContent {
		e.t.Fatalf("login: HTTP %d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == hub.OpsCookie {
			return c
		}
	}
	e.t.Fatal("login set no session cookie")
	return nil
}

func bearer() http.Header { return http.Header{"Authorization": {"Bearer " + kit.OpsToken}} }

func cookieHeader(c *http.Cookie) http.Header {
	return http.Header{"Cookie": {c.Name + "=" + c.Value}}
}

// errorCode decodes {"error":{"code"}}.
func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatalf("error body: %v", err)
	}
	return b.Error.Code
}

// feed is a test's /v1/ops/ws connection.
type feed struct {
	t  *testing.T
	ws *websocket.Conn
}

// dialFeed opens the ops feed with header; on refusal it returns the HTTP status.
func (e *env) dialFeed(header http.Header) (*feed, int, error) {
	ws, resp, err := websocket.Dial(kit.Ctx(e.t), strings.Replace(e.Srv.URL, "http", "ws", 1)+"/v1/ops/ws",
		&websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return nil, code, err
	}
	ws.SetReadLimit(8 << 20)
	e.t.Cleanup(func() { _ = ws.CloseNow() })
	return &feed{t: e.t, ws: ws}, 0, nil
}

func (e *env) mustFeed(header http.Header) *feed {
	e.t.Helper()
	f, code, err := e.dialFeed(header)
	if err != nil {
		e.t.Fatalf("dial ops feed: HTTP %d: %v", code, err)
	}
	return f
}

type frame struct {
	Action string
	Raw    json.RawMessage
}

func (f frame) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(f.Raw, v); err != nil {
		t.Fatalf("decode %s: %v", f.Action, err)
	}
}

func (f *feed) read() (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := f.ws.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var env struct {
		Action string `json:"action"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return frame{}, err
	}
	return frame{Action: env.Action, Raw: b}, nil
}

// until reads frames until one has the action and satisfies match.
func (f *feed) until(action string, match func(frame) bool) frame {
	f.t.Helper()
	for {
		m, err := f.read()
		if err != nil {
			f.t.Fatalf("waiting for %s: %v", action, err)
		}
		if m.Action == action && (match == nil || match(m)) {
			return m
		}
	}
}

// closeStatus reads until the feed ends and returns its close status.
func (f *feed) closeStatus() websocket.StatusCode {
	f.t.Helper()
	for {
		_, err := f.read()
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			f.t.Fatalf("feed ended without a close frame: %v", err)
		}
	}
}

// pos connects a POS with API key id of kit.Config.
func (e *env) pos(id string) *client.Conn {
	e.t.Helper()
	return apptest.DialPOS(e.t, e.opts, id, kit.Secrets[id])
}

// terminal connects terminal id of kit.Config.
func (e *env) terminal(id string) *client.Conn {
	e.t.Helper()
	return apptest.DialTerminal(e.t, e.opts, id, kit.Secrets[id])
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// nodeHandler serves h, its HTTP API and the ops server s on one mux, as
// app.Routes wires a node.
func nodeHandler(h *hub.Hub, s *ops.Server) http.Handler {
	api := httpapi.New(httpapi.Options{Hub: h, Logger: zerolog.New(io.Discard)})
	mux := http.NewServeMux()
	h.Register(mux)
	api.Register(mux)
	s.Register(mux)
	return api.Timed(mux)
}
