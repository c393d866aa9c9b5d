package hub_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// credentialCase is one way of getting a signed upgrade wrong.
type credentialCase struct {
	name    string
	header  func(now time.Time) http.Header
	field   string // the part the 401 must name
	msgPart string
}

func runCredentialCases(t *testing.T, th *testHub, path string, cases []credentialCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header(th.clock.Now())
			status, body := th.refused(t, path, h)
			forbidden := append(allSecrets(), h.Get(protocol.HeaderSignature))
			assertError(t, status, body, http.StatusUnauthorized, protocol.CodeUnauthorized, tc.field, tc.msgPart, forbidden...)
			if n := len(th.Connections()); n != 0 {
				t.Errorf("%d connections registered after a refused upgrade", n)
			}
		})
	}
}

// without returns h without the named header.
func without(h http.Header, name string) http.Header {
	h.Del(name)
	return h
}

func TestPOSCredentialsRefused(t *testing.T) {
	th := newTestHub(t)
	path := client.POSPath
	good := func(now time.Time) http.Header {
		return signedHeader(protocol.HeaderAPIKey, "pk1", secrets["pk1"], path, now)
	}
	runCredentialCases(t, th, path, []credentialCase{
		{"missing X-Api-Key", func(now time.Time) http.Header { return without(good(now), protocol.HeaderAPIKey) },
			protocol.HeaderAPIKey, "missing X-Api-Key"},
		{"missing X-Timestamp", func(now time.Time) http.Header { return without(good(now), protocol.HeaderTimestamp) },
			protocol.HeaderTimestamp, "missing X-Timestamp"},
		{"missing X-Signature", func(now time.Time) http.Header { return without(good(now), protocol.HeaderSignature) },
			protocol.HeaderSignature, "missing X-Signature"},
		{"no credentials at all", func(time.Time) http.Header { return http.Header{} },
			protocol.HeaderAPIKey, "missing X-Api-Key"},
		{"unknown key", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderAPIKey, "pk_nope", secrets["pk1"], path, now)
		}, protocol.HeaderAPIKey, "unknown X-Api-Key"},
		{"bad signature", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderAPIKey, "pk1", "not-the-secret", path, now)
		}, protocol.HeaderSignature, "bad signature"},
		{"another key's secret", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderAPIKey, "pk1", secrets["pk1b"], path, now)
		}, protocol.HeaderSignature, "bad signature"},
		{"signed over another path", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderAPIKey, "pk1", secrets["pk1"], client.TerminalPath, now)
		}, protocol.HeaderSignature, "bad signature"},
		{"signature of another timestamp", func(now time.Time) http.Header {
			h := good(now.Add(-time.Second))
			h.Set(protocol.HeaderTimestamp, protocol.Timestamp(now))
			return h
		}, protocol.HeaderSignature, "bad signature"},
		{"timestamp 301 s behind", func(now time.Time) http.Header { return good(now.Add(-301 * time.Second)) },
			protocol.HeaderTimestamp, "stale timestamp"},
		{"timestamp 301 s ahead", func(now time.Time) http.Header { return good(now.Add(301 * time.Second)) },
			protocol.HeaderTimestamp, "stale timestamp"},
		{"timestamp not unix seconds", func(now time.Time) http.Header {
			h := good(now)
			h.Set(protocol.HeaderTimestamp, now.Format(time.RFC3339))
			return h
		}, protocol.HeaderTimestamp, "timestamp"},
	})
}

func TestPOSTimestampSkewAccepted(t *testing.T) {
	th := newTestHub(t)
	for _, skew := range []time.Duration{-299 * time.Second, 299 * time.Second, -300 * time.Second, 300 * time.Second} {
		p := th.posWith(t, th.skewed(skew), "pk1")
		if p.Greeting().Action != protocol.ActionConnected {
			t.Fatalf("skew %s: greeting %s", skew, p.Greeting().Raw)
		}
		_ = p.conn.Close()
		p.waitEnded(t)
	}
	for _, skew := range []time.Duration{-301 * time.Second, 301 * time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		_, err := client.DialPOS(ctx, th.skewed(skew), "pk1", secrets["pk1"])
		cancel()
		var he *client.HandshakeError
		if !errors.As(err, &he) {
			t.Fatalf("skew %s: dial error %v, want a refused handshake", skew, err)
		}
		assertError(t, he.StatusCode, []byte(he.Body), http.StatusUnauthorized, protocol.CodeUnauthorized,
			protocol.HeaderTimestamp, "stale timestamp", allSecrets()...)
	}
}

func TestTerminalCredentialsRefused(t *testing.T) {
	th := newTestHub(t)
	path := client.TerminalPath
	good := func(now time.Time) http.Header {
		return signedHeader(protocol.HeaderDeviceID, "T1", secrets["T1"], path, now)
	}
	runCredentialCases(t, th, path, []credentialCase{
		{"missing X-Device-Id", func(now time.Time) http.Header { return without(good(now), protocol.HeaderDeviceID) },
			protocol.HeaderDeviceID, "missing X-Device-Id"},
		{"missing X-Timestamp", func(now time.Time) http.Header { return without(good(now), protocol.HeaderTimestamp) },
			protocol.HeaderTimestamp, "missing X-Timestamp"},
		{"missing X-Signature", func(now time.Time) http.Header { return without(good(now), protocol.HeaderSignature) },
			protocol.HeaderSignature, "missing X-Signature"},
		{"unknown device", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderDeviceID, "T9", secrets["T1"], path, now)
		}, protocol.HeaderDeviceID, "unknown X-Device-Id"},
		{"bad signature", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderDeviceID, "T1", secrets["T2"], path, now)
		}, protocol.HeaderSignature, "bad signature"},
		{"an API key is no device", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderDeviceID, "pk1", secrets["pk1"], path, now)
		}, protocol.HeaderDeviceID, "unknown X-Device-Id"},
		{"POS headers on the terminal endpoint", func(now time.Time) http.Header {
			return signedHeader(protocol.HeaderAPIKey, "pk1", secrets["pk1"], path, now)
		}, protocol.HeaderDeviceID, "missing X-Device-Id"},
		{"timestamp 301 s behind", func(now time.Time) http.Header { return good(now.Add(-301 * time.Second)) },
			protocol.HeaderTimestamp, "stale timestamp"},
	})

	t.Run("accepted at 299 s skew", func(t *testing.T) {
		p := th.terminalWith(t, th.skewed(-299*time.Second), "T1")
		if p.Greeting().Action != protocol.ActionConnected {
			t.Fatalf("greeting %s", p.Greeting().Raw)
		}
	})
}

func TestQueryParameterCredentials(t *testing.T) {
	th := newTestHub(t)
	opts := th.options()
	opts.QueryAuth = true

	pos := th.posWith(t, opts, "pk1")
	if got := decodeMap(t, pos.Greeting().Raw)["merchantId"]; got != "m1" {
		t.Errorf("POS greeting merchantId %v, want m1", got)
	}
	term := th.terminalWith(t, opts, "T1")
	if got := decodeMap(t, term.Greeting().Raw)["deviceId"]; got != "T1" {
		t.Errorf("terminal greeting deviceId %v, want T1", got)
	}
	pos.expectStatus(t, th.clock.Now(), "T1", term.ID(), protocol.TerminalOffline, protocol.TerminalOnline)

	// The query form fails the same way the headers do, naming the parameter.
	signed := func(path, idParam, id, secret string) url.Values {
		u := &url.URL{Path: path}
		protocol.SignURL(u, idParam, id, secret, th.clock.Now())
		return u.Query()
	}
	tests := []struct {
		name    string
		path    string
		query   func() url.Values
		field   string
		msgPart string
	}{
		{"POS bad signature", client.POSPath, func() url.Values {
			q := signed(client.POSPath, protocol.QueryAPIKey, "pk1", secrets["pk1b"])
			return q
		}, protocol.QuerySignature, "bad signature"},
		{"POS missing timestamp", client.POSPath, func() url.Values {
			q := signed(client.POSPath, protocol.QueryAPIKey, "pk1", secrets["pk1"])
			q.Del(protocol.QueryTimestamp)
			return q
		}, protocol.QueryTimestamp, "missing timestamp query parameter"},
		{"POS missing signature", client.POSPath, func() url.Values {
			q := signed(client.POSPath, protocol.QueryAPIKey, "pk1", secrets["pk1"])
			q.Del(protocol.QuerySignature)
			return q
		}, protocol.QuerySignature, "missing signature query parameter"},
		{"POS stale", client.POSPath, func() url.Values {
			u := &url.URL{Path: client.POSPath}
			protocol.SignURL(u, protocol.QueryAPIKey, "pk1", secrets["pk1"], th.clock.Now().Add(-301*time.Second))
			return u.Query()
		}, protocol.QueryTimestamp, "stale timestamp"},
		{"terminal unknown device", client.TerminalPath, func() url.Values {
			return signed(client.TerminalPath, protocol.QueryDeviceID, "T9", secrets["T1"])
		}, protocol.QueryDeviceID, "unknown deviceId"},
		{"terminal bad signature", client.TerminalPath, func() url.Values {
			return signed(client.TerminalPath, protocol.QueryDeviceID, "T1", secrets["U1"])
		}, protocol.QuerySignature, "bad signature"},
		{"terminal signed with extra parameter it does not send", client.TerminalPath, func() url.Values {
			u := &url.URL{Path: client.TerminalPath, RawQuery: "v=2"}
			protocol.SignURL(u, protocol.QueryDeviceID, "T1", secrets["T1"], th.clock.Now())
			q := u.Query()
			q.Del("v")
			return q
		}, protocol.QuerySignature, "bad signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.query()
			status, body := th.refused(t, tc.path+"?"+q.Encode(), nil)
			assertError(t, status, body, http.StatusUnauthorized, protocol.CodeUnauthorized, tc.field, tc.msgPart,
				append(allSecrets(), q.Get(protocol.QuerySignature))...)
		})
	}

	t.Run("other parameters are signed too", func(t *testing.T) {
		u := &url.URL{Path: client.POSPath, RawQuery: "lang=en"}
		protocol.SignURL(u, protocol.QueryAPIKey, "pk1b", secrets["pk1b"], th.clock.Now())
		ws, _, err := th.dialWS(t, u.String(), nil)
		if err != nil {
			t.Fatalf("dial with query credentials and another parameter: %v", err)
		}
		_ = ws.CloseNow()
	})
}

func TestSignedHTTPListTerminals(t *testing.T) {
	th := newTestHub(t)

	resp := th.restGet(t, "pk1", "/v1/terminals", nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /v1/terminals: HTTP %d %s", resp.Status, resp.Body)
	}
	var list struct {
		Data []protocol.TerminalInfo `json:"data"`
	}
	if err := resp.Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 2 || list.Data[0].TerminalID != "T1" || list.Data[1].TerminalID != "T2" {
		t.Fatalf("GET /v1/terminals of m1: %s, want T1 and T2 only", resp.Body)
	}

	now := th.clock.Now()
	tests := []struct {
		name    string
		key     string
		header  http.Header
		field   string
		msgPart string
	}{
		{"bad signature", "pk1", http.Header{protocol.HeaderSignature: {protocol.Sign(secrets["pk1"], "GET", "/v1/terminals/T1", protocol.Timestamp(now), nil)}},
			protocol.HeaderSignature, "bad signature"},
		{"signature of another method", "pk1", http.Header{protocol.HeaderSignature: {protocol.Sign(secrets["pk1"], "POST", "/v1/terminals", protocol.Timestamp(now), nil)}},
			protocol.HeaderSignature, "bad signature"},
		{"garbage signature", "pk1", http.Header{protocol.HeaderSignature: {"zz"}}, protocol.HeaderSignature, "bad signature"},
		{"missing signature", "pk1", http.Header{protocol.HeaderSignature: {""}}, protocol.HeaderSignature, "missing X-Signature"},
		{"unknown key", "pk_nope", nil, protocol.HeaderAPIKey, "unknown X-Api-Key"},
		{"stale timestamp", "pk1", http.Header{protocol.HeaderTimestamp: {protocol.Timestamp(now.Add(-301 * time.Second))}},
			protocol.HeaderTimestamp, "stale timestamp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := th.restGet(t, tc.key, "/v1/terminals", tc.header)
			assertError(t, resp.Status, resp.Body, http.StatusUnauthorized, protocol.CodeUnauthorized, tc.field, tc.msgPart,
				append(allSecrets(), tc.header.Get(protocol.HeaderSignature))...)
		})
	}

	t.Run("stale clock on the client side", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		resp, err := client.NewHTTP(th.skewed(301*time.Second), "pk1", secrets["pk1"]).Do(ctx, http.MethodGet, "/v1/terminals", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		assertError(t, resp.Status, resp.Body, http.StatusUnauthorized, protocol.CodeUnauthorized, protocol.HeaderTimestamp, "stale timestamp", allSecrets()...)
	})
}

func TestOpsAuthorization(t *testing.T) {
	th := newTestHub(t)
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"no credentials", nil},
		{"wrong bearer", http.Header{"Authorization": {"Bearer ops-secreT"}}},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}},
		{"token without Bearer", http.Header{"Authorization": {opsToken}}},
		{"basic auth", http.Header{"Authorization": {"Basic b3BzOm9wcy1zZWNyZXQ="}}},
		{"wrong cookie", http.Header{"Cookie": {"termhub_ops=nope"}}},
		// The cookie holds an ops session id (package ops), never the token.
		{"token as cookie", http.Header{"Cookie": {"termhub_ops=" + opsToken}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := th.get(t, "/v1/ops/terminals", tc.header)
			assertError(t, status, body, http.StatusUnauthorized, protocol.CodeUnauthorized, "Authorization", "ops token", opsToken)
		})
	}
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"bearer", http.Header{"Authorization": {"Bearer " + opsToken}}},
		{"bearer in lower case", http.Header{"Authorization": {"bearer " + opsToken}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := th.get(t, "/v1/ops/terminals", tc.header)
			if status != http.StatusOK {
				t.Fatalf("HTTP %d %s, want 200", status, body)
			}
		})
	}
}
