package client

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/termhub/termhub/protocol"
)

// echoed is what the fake hub's REST handler reports back.
type echoed struct {
	RequestURI  string `json:"requestUri"`
	Body        string `json:"body"`
	ContentType string `json:"contentType"`
	IdemKey     string `json:"idemKey"`
}

func restHub(t *testing.T) *fakeHub {
	return newFakeHub(t, func(h *fakeHub) {
		h.rest = func(w http.ResponseWriter, r *http.Request, body []byte) {
			switch {
			case strings.HasPrefix(r.URL.Path, "/v1/transactions/txn_missing"):
				writeError(w, http.StatusNotFound, protocol.CodeTransactionNotFound, "no such transaction")
			case r.URL.Path == "/v1/broken":
				w.WriteHeader(http.StatusBadGateway)
				w.Write([]byte("<html>bad gateway</html>"))
			default:
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				json.NewEncoder(w).Encode(echoed{
					RequestURI: r.URL.RequestURI(), Body: string(body),
					ContentType: r.Header.Get("Content-Type"), IdemKey: r.Header.Get(protocol.HeaderIdemKey),
				})
			}
		}
	})
}

func TestHTTPDoSignsBodyAndQuery(t *testing.T) {
	ctx := testCtx(t)
	h := restHub(t)
	c := NewHTTP(h.opts(), "pk_test", "sk_test")

	amt := int64(500)
	req := protocol.PaymentRequest{TerminalID: "TERM-001", AmountMinor: &amt, Currency: "USD", Reference: "o-1"}
	path := "/v1/payments?b=2&a=x%20y&a=z"
	resp, err := c.Do(ctx, http.MethodPost, path, req, http.Header{protocol.HeaderIdemKey: {"k1"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusCreated || resp.Err() != nil {
		t.Fatalf("status %d body %s", resp.Status, resp.Body)
	}
	if rec := <-h.auths; rec.Path != path || !rec.HeaderSigs || rec.ID != "pk_test" {
		t.Fatalf("hub verified %+v, want path %s as sent", rec, path)
	}
	var got echoed
	if err := resp.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(req)
	if got.RequestURI != path || got.Body != string(want) || got.ContentType != "application/json" || got.IdemKey != "k1" {
		t.Fatalf("hub received %+v", got)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("response header %v", resp.Header)
	}
}

func TestHTTPDoEmptyAndRawBodies(t *testing.T) {
	ctx := testCtx(t)
	h := restHub(t)
	c := NewHTTP(h.opts(), "pk_test", "sk_test")

	resp, err := c.Do(ctx, http.MethodGet, "/v1/transactions?status=COMPLETED&limit=10", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got echoed
	if err := resp.Decode(&got); err != nil || resp.Err() != nil {
		t.Fatalf("%v %v %s", err, resp.Err(), resp.Body)
	}
	if got.Body != "" || got.ContentType != "" {
		t.Fatalf("nil body sent as %+v", got)
	}
	<-h.auths

	for _, tc := range []struct {
		body any
		want string
	}{{[]byte(`{"bad"`), `{"bad"`}, {json.RawMessage(`{"raw":1}`), `{"raw":1}`}} {
		body := tc.body
		resp, err := c.Do(ctx, http.MethodPost, "/v1/payments", body, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := resp.Decode(&got); err != nil || resp.Err() != nil {
			t.Fatalf("%v %v %s", err, resp.Err(), resp.Body)
		}
		if got.Body != tc.want {
			t.Fatalf("raw body sent as %q", got.Body)
		}
		<-h.auths
	}
}

func TestHTTPErrors(t *testing.T) {
	ctx := testCtx(t)
	h := restHub(t)
	good := NewHTTP(h.opts(), "pk_test", "sk_test")

	resp, err := good.Do(ctx, http.MethodGet, "/v1/transactions/txn_missing", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.Err(); resp.Status != 404 || e == nil || e.Code != protocol.CodeTransactionNotFound {
		t.Fatalf("%d %v", resp.Status, e)
	}

	resp, err = good.Do(ctx, http.MethodGet, "/v1/broken", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.Err(); e == nil || e.Code != protocol.CodeInternal || !strings.Contains(e.Message, "502") {
		t.Fatalf("non-contract error body gave %v", e)
	}
	if resp.Decode(&struct{}{}) == nil {
		t.Fatal("Decode of HTML succeeded")
	}

	bad := NewHTTP(h.opts(), "pk_test", "wrong")
	resp, err = bad.Do(ctx, http.MethodPost, "/v1/payments", map[string]string{"a": "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.Err(); resp.Status != 401 || e == nil || e.Code != protocol.CodeUnauthorized || e.Message != "bad signature" {
		t.Fatalf("%d %v", resp.Status, e)
	}

	// Caller headers replace the credentials, so tests can forge them.
	resp, err = good.Do(ctx, http.MethodGet, "/v1/terminals", nil, http.Header{protocol.HeaderSignature: {"00"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 401 {
		t.Fatalf("forged signature: %d %s", resp.Status, resp.Body)
	}

	if _, err := good.Do(ctx, http.MethodPost, "/v1/payments", func() {}, nil); err == nil {
		t.Fatal("unencodable body accepted")
	}
}
