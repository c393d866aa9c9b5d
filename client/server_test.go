package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/protocol"
)

// A fake hub: just enough of docs/protocol.md to check what the client puts on
// the wire. It verifies credentials exactly as the contract says, greets,
// and hands each accepted connection to the running test's script.

var testNow = time.Unix(1_750_000_000, 0)

var testSecrets = map[string]string{
	"pk_test":  "sk_test",  // POS key
	"TERM-001": "dk_term1", // terminal
}

// authRecord is what the fake hub saw of one request's credentials.
type authRecord struct {
	Path       string // path the signature was checked over
	QueryForm  bool
	ID         string
	HeaderSigs bool // credential headers were present
}

// serverConn is one accepted WebSocket on the fake hub.
type serverConn struct {
	ws   *websocket.Conn
	id   string
	auth authRecord
}

func (sc *serverConn) send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return sc.ws.Write(ctx, websocket.MessageText, b)
}

type fakeHub struct {
	*httptest.Server
	t *testing.T

	// script runs for every accepted WebSocket after the greeting; when it
	// returns the connection is dropped (CloseNow). nil waits for the peer.
	script func(sc *serverConn)
	// greeting, if set, replaces the default connected message.
	greeting func(sc *serverConn) any
	// rest answers signed REST requests; nil answers 404.
	rest func(w http.ResponseWriter, r *http.Request, body []byte)

	auths chan authRecord // every successfully authenticated request
	seq   atomic.Int64
	wg    sync.WaitGroup
}

// newFakeHub starts a hub configured by setup. Configuration happens before
// the server starts so its goroutines see it without further locking.
func newFakeHub(t *testing.T, setup func(h *fakeHub)) *fakeHub {
	h := &fakeHub{t: t, auths: make(chan authRecord, 64)}
	if setup != nil {
		setup(h)
	}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serveHTTP))
	t.Cleanup(func() {
		h.Server.CloseClientConnections()
		h.Server.Close()
		h.wg.Wait()
	})
	return h
}

func (h *fakeHub) opts() Options {
	return Options{BaseURL: h.URL, Now: func() time.Time { return testNow }, HTTPClient: h.Client()}
}

func writeError(w http.ResponseWriter, status int, code protocol.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(protocol.ErrorBody{Error: &protocol.Error{Code: code, Message: msg}})
}

// authenticate checks credentials the way docs/protocol.md#credentials says and returns the
// record, or writes the 401 and returns false.
func (h *fakeHub) authenticate(w http.ResponseWriter, r *http.Request, body []byte, idHeader, idParam string) (authRecord, bool) {
	rec := authRecord{}
	id, ts, sig := r.Header.Get(idHeader), r.Header.Get(protocol.HeaderTimestamp), r.Header.Get(protocol.HeaderSignature)
	if id != "" || ts != "" || sig != "" {
		rec.HeaderSigs = true
	} else if q := r.URL.Query(); q.Get(protocol.QuerySignature) != "" {
		rec.QueryForm = true
		id, ts, sig = q.Get(idParam), q.Get(protocol.QueryTimestamp), q.Get(protocol.QuerySignature)
	}
	if id == "" || ts == "" || sig == "" {
		writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "missing credentials")
		return rec, false
	}
	if ok, problem := protocol.CheckTimestamp(ts, testNow); !ok {
		writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, problem)
		return rec, false
	}
	secret, ok := testSecrets[id]
	rec.ID = id
	rec.Path = protocol.SignedPath(r.URL, rec.QueryForm)
	if !ok || !protocol.VerifySignature(secret, r.Method, rec.Path, ts, body, sig) {
		writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "bad signature")
		return rec, false
	}
	return rec, true
}

func (h *fakeHub) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case POSPath:
		h.serveWS(w, r, protocol.HeaderAPIKey, protocol.QueryAPIKey)
	case TerminalPath:
		h.serveWS(w, r, protocol.HeaderDeviceID, protocol.QueryDeviceID)
	default:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
			return
		}
		rec, ok := h.authenticate(w, r, body, protocol.HeaderAPIKey, protocol.QueryAPIKey)
		if !ok {
			return
		}
		h.auths <- rec
		if h.rest == nil {
			writeError(w, http.StatusNotFound, protocol.CodeNotFound, "no such route")
			return
		}
		h.rest(w, r, body)
	}
}

func (h *fakeHub) serveWS(w http.ResponseWriter, r *http.Request, idHeader, idParam string) {
	rec, ok := h.authenticate(w, r, nil, idHeader, idParam)
	if !ok {
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		h.t.Errorf("accept: %v", err)
		return
	}
	h.wg.Add(1)
	defer h.wg.Done()
	defer ws.CloseNow()
	sc := &serverConn{ws: ws, id: fmt.Sprintf("conn_%d", h.seq.Add(1)), auth: rec}
	ctx := context.Background()
	var greet any = map[string]any{"action": protocol.ActionConnected, "connectionId": sc.id, "serverTime": testNow}
	if h.greeting != nil {
		greet = h.greeting(sc)
	}
	if err := sc.send(ctx, greet); err != nil {
		h.t.Errorf("greeting: %v", err)
		return
	}
	h.auths <- rec
	if h.script != nil {
		h.script(sc)
		return
	}
	// No script: keep the connection until the client goes.
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			return
		}
	}
}
