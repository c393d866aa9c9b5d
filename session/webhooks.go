package session

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/termhub/termhub/protocol"
)

// WebhookEvent is a webhook body (docs/webhooks.md).
type WebhookEvent struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	CreatedAt time.Time   `json:"createdAt"`
	Data      WebhookData `json:"data"`
}

// WebhookData carries the transaction of a webhook event.
type WebhookData struct {
	Transaction *protocol.Transaction `json:"transaction"`
}

// stageWebhook adds to c the webhook event of step s of t, when the step
// queued one and t's merchant takes webhooks: in the same commit as the
// state, so that a final state is never stored without its event.
func (e *Engine) stageWebhook(c *commit, t *Txn, s step, saved savedTxn) error {
	if s.fx.Webhook == "" || !e.opts.Webhooks(t.MerchantID) {
		return nil
	}
	wire := s.hook
	if wire == nil {
		wire = t.Wire()
	}
	evt, err := json.Marshal(WebhookEvent{ID: "evt_" + newTxnID()[4:], Type: s.fx.Webhook, CreatedAt: e.now(), Data: WebhookData{Transaction: wire}})
	if err != nil {
		return err
	}
	c.appendEntry(e.store.keys.Webhooks(t.MerchantID), evt, saved)
	return nil
}

// WebhookType is the webhook event type for a transaction reaching status:
// "payment." and the final status in lower case; for a refund
// "refund.completed", "refund.voided" or, for any other end,
// "refund.failed". AUTHORIZED and the statuses on the way have none.
func WebhookType(txnType string, s protocol.Status) string {
	if !s.Final() || s == protocol.StatusAuthorized {
		return ""
	}
	if txnType != protocol.TypeRefund {
		return "payment." + strings.ToLower(string(s))
	}
	if s == protocol.StatusCompleted || s == protocol.StatusVoided {
		return "refund." + strings.ToLower(string(s))
	}
	return "refund.failed"
}
