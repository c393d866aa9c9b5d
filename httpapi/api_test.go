package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/httpapi"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/redisx"
)

// testAPI is a hub with no engine and the HTTP API, served on one mux as
// package app serves them.
type testAPI struct {
	*hub.Hub
	srv *httptest.Server
}

// newTestAPI starts a testAPI whose /readyz reports health (nil: none).
func newTestAPI(t *testing.T, health httpapi.Health) *testAPI {
	t.Helper()
	h := hub.New(hub.Options{Logger: zerolog.Nop()})
	api := httpapi.New(httpapi.Options{Hub: h, Health: health, Logger: zerolog.Nop()})
	mux := http.NewServeMux()
	h.Register(mux)
	api.Register(mux)
	srv := httptest.NewServer(api.Timed(mux))
	t.Cleanup(srv.Close)
	return &testAPI{Hub: h, srv: srv}
}

// get sends a GET with header and returns the status and body.
func (th *testAPI) get(t *testing.T, path string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, th.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := th.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// drain drains the hub.
func (th *testAPI) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := th.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func decodeMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return m
}

// downHealth is a Redis probe that has found Redis down since noon.
type downHealth struct{}

func (downHealth) Ready() <-chan struct{} { return make(chan struct{}) }
func (downHealth) Status() redisx.HealthStatus {
	return redisx.HealthStatus{Since: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC), Error: "dial tcp: connection refused"}
}

func TestHealthAndReadiness(t *testing.T) {
	th := newTestAPI(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, body := th.get(t, path, nil); status != http.StatusOK {
			t.Errorf("%s: HTTP %d %s, want 200", path, status, body)
		}
	}
	th.drain(t)
	if status, body := th.get(t, "/readyz", nil); status != http.StatusServiceUnavailable || decodeMap(t, body)["status"] != "draining" {
		t.Errorf("/readyz after Drain: HTTP %d %s, want 503 draining", status, body)
	}
	if status, body := th.get(t, "/healthz", nil); status != http.StatusOK {
		t.Errorf("/healthz after Drain: HTTP %d %s, want 200 (alive while draining)", status, body)
	}

	t.Run("store unreachable", func(t *testing.T) {
		th := newTestAPI(t, downHealth{})
		status, body := th.get(t, "/readyz", nil)
		m := decodeMap(t, body)
		redis, _ := m["redis"].(map[string]any)
		if status != http.StatusServiceUnavailable || m["status"] != "redis unreachable" || redis["up"] != false ||
			redis["error"] != "dial tcp: connection refused" || redis["since"] != "2026-12-06T12:00:00Z" {
			t.Errorf("/readyz with the store down: HTTP %d %s, want 503 redis unreachable with the probe's error and since", status, body)
		}
		if status, _ := th.get(t, "/healthz", nil); status != http.StatusOK {
			t.Errorf("/healthz with the store down: HTTP %d, want 200", status)
		}
	})
}
