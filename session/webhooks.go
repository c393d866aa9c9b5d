package session

import (
	"encoding/json"
	"time"

	"github.com/termhub/termhub/protocol"
)

// WebhookEvent is a webhook body (CONTRACT §10).
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
func (e *Engine) stageWebhook(c *commit, t *Txn, s step) error {
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
	c.appendEntry(e.store.keys.Webhooks(t.MerchantID), evt)
	return nil
}

// WebhookType is the webhook event type for a transaction reaching status.
func WebhookType(txnType string, s protocol.Status) string {
	prefix := "payment."
	if txnType == protocol.TypeRefund {
		prefix = "refund."
		switch s {
		case protocol.StatusCompleted:
			return "refund.completed"
		case protocol.StatusVoided:
			return "refund.voided"
		case protocol.StatusDeclined, protocol.StatusFailed, protocol.StatusTimedOut, protocol.StatusCancelled, protocol.StatusSuperseded:
			return "refund.failed"
		}
		return ""
	}
	switch s {
	case protocol.StatusCompleted:
		return prefix + "completed"
	case protocol.StatusDeclined:
		return prefix + "declined"
	case protocol.StatusFailed:
		return prefix + "failed"
	case protocol.StatusCancelled:
		return prefix + "cancelled"
	case protocol.StatusTimedOut:
		return prefix + "timed_out"
	case protocol.StatusSuperseded:
		return prefix + "superseded"
	case protocol.StatusVoided:
		return prefix + "voided"
	}
	return ""
}
