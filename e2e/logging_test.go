package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// TestLogsNeverCarrySecretsSignaturesOrCardNumbers runs a busy session at
// debug level and searches everything logged.
func TestLogsNeverCarrySecretsSignaturesOrCardNumbers(t *testing.T) {
	var logs kit.LogBuffer
	e := envFrom(t, apptest.Start(t, kit.Config, apptest.Logger(zerolog.New(&logs).Level(zerolog.DebugLevel))))
	fc, srv := e.Clock, e.Srv

	var signatures []string
	// Refused credentials: a wrong secret, a stale timestamp.
	bad := client.NewHTTP(e.opts, "pk1", "not-the-secret")
	if resp, err := bad.Do(kit.Ctx(t), "GET", "/v1/terminals", nil, nil); err != nil || resp.Status != 401 {
		t.Fatalf("bad secret: %v %v", resp, err)
	}
	ts := protocol.Timestamp(fc.Now())
	sig := protocol.Sign("sk1", "GET", "/v1/terminals", ts, nil)
	signatures = append(signatures, sig, protocol.Sign("not-the-secret", "GET", "/v1/terminals", ts, nil))
	req, _ := http.NewRequest("GET", srv.URL+"/v1/terminals", nil)
	req.Header.Set(protocol.HeaderAPIKey, "pk1")
	req.Header.Set(protocol.HeaderTimestamp, protocol.Timestamp(fc.Now().Add(-time.Hour)))
	req.Header.Set(protocol.HeaderSignature, sig)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	// A card number where an id goes: as the claimed key id, and in the
	// path of a failed request. The failure is logged, the number is not.
	req, _ = http.NewRequest("GET", srv.URL+"/v1/transactions/5500000000000004", nil)
	req.Header.Set(protocol.HeaderAPIKey, "4012888888881881")
	req.Header.Set(protocol.HeaderTimestamp, protocol.Timestamp(fc.Now()))
	req.Header.Set(protocol.HeaderSignature, sig)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	// A payment whose terminal first sends a full card number, then a masked one.
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := pay(t, pos, "T1", 990, "log-1").Transaction.ID
	read(t, term, "startPayment")
	send(t, term, "paymentResult", map[string]any{"transactionId": id, "outcome": "approved", "maskedPan": "4111111111111111", "authCode": "Z9"})
	if m := read(t, term, "error"); m.Err().Field != "maskedPan" {
		t.Fatalf("full PAN: %+v", m.Err())
	}
	send(t, term, "paymentResult", map[string]any{"transactionId": id, "outcome": "approved", "maskedPan": "411111******1111", "authCode": "Z9"})
	read(t, term, "resultAck")
	statusOf(t, pos, id, protocol.StatusCompleted)

	// The engine logs "transaction created" after the reply and the
	// terminal's command are out, so the payment can finish first.
	kit.Eventually(t, `"transaction created" logged`, func() bool { return strings.Contains(logs.String(), "transaction created") })
	out := logs.String()
	if !strings.Contains(out, "authentication failed") || !strings.Contains(out, "transaction created") {
		t.Fatalf("the log does not show the session at all:\n%s", out)
	}
	forbidden := append([]string{"sk1", "sk1b", "sk2", "dt1", "dt2", "du1", "not-the-secret", "4111111111111111", "411111******1111", "4012888888881881", "5500000000000004"}, signatures...)
	for _, f := range forbidden {
		if strings.Contains(out, f) {
			t.Errorf("the log contains %q", f)
		}
	}
}
