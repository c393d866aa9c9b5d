package session

import (
	"time"

	"github.com/termhub/termhub/protocol"
)

// pending collects what one commit produces for the world. A commit
// touches one or two API keys and terminals, so they are kept in short
// slices (index-aligned) rather than maps.
type pending struct {
	order    []string            // api keys in first-use order
	msgs     [][]Message         // messages of order[i] (ids filled after exec)
	devOrder []string            // devices in first-use order
	terminal [][]TerminalCommand // commands for devOrder[i]
	arm      []*Txn
	revs     []revChange // of arm[i], index-aligned
	current  []curChange // in staging order
	entered  []protocol.Status
	autoVoid int
}

func newPending() *pending { return &pending{} }

// revChange is the rev a commit expects a transaction at and the one it
// writes.
type revChange struct{ prev, next int64 }

// addPOS queues a durable message for an API key.
func (p *pending) addPOS(apiKey string, m Message) {
	for i, k := range p.order {
		if k == apiKey {
			p.msgs[i] = append(p.msgs[i], m)
			return
		}
	}
	p.order = append(p.order, apiKey)
	p.msgs = append(p.msgs, []Message{m})
}

func (p *pending) addTerminal(device string, cmds []TerminalCommand) {
	if len(cmds) == 0 {
		return
	}
	for i, d := range p.devOrder {
		if d == device {
			p.terminal[i] = append(p.terminal[i], cmds...)
			return
		}
	}
	p.devOrder = append(p.devOrder, device)
	p.terminal = append(p.terminal, cmds[:len(cmds):len(cmds)]) // a later add copies instead of writing into the caller's array
}

// stage adds t's save and the messages and webhook of fx to c.
func (e *Engine) stage(c *commit, p *pending, t *Txn, prev map[string]time.Time, wasOpen, wasActive bool, fx Effects) error {
	return e.stageSteps(c, p, t, prev, wasOpen, wasActive, step{fx: fx})
}

// step is what one event of a run did to a transaction (update): its
// effects and, when it queued a webhook, the transaction as that event left
// it, since a later event of the run changes t before it is staged.
type step struct {
	fx   Effects
	hook *protocol.Transaction // nil: t as staged
}

// stageSteps adds t's save to c, once, and the messages and webhooks of
// every step, in order.
func (e *Engine) stageSteps(c *commit, p *pending, t *Txn, prev map[string]time.Time, wasOpen, wasActive bool, steps ...step) error {
	prevRev := t.Rev
	saved, err := e.store.saveTxn(c, t, prev)
	if err != nil {
		return err
	}
	ks := e.store.keys
	switch open := t.HasOpenCommands(); {
	case open && !wasOpen:
		c.sadd(ks.Open(t.MerchantID, t.TerminalID), t.ID)
	case !open && wasOpen:
		c.srem(ks.Open(t.MerchantID, t.TerminalID), t.ID)
	}
	if wasActive && !t.Active() {
		c.delIfEq(ks.Current(t.MerchantID, t.TerminalID), t.ID)
		p.current = append(p.current, curChange{merchantID: t.MerchantID, deviceID: t.TerminalID, id: t.ID, clear: true})
	}
	for _, s := range steps {
		fx := s.fx
		for _, ev := range fx.POS {
			data, err := ev.AppendJSON(make([]byte, 0, 1280))
			if err != nil {
				return err
			}
			c.xadd(ks.Outbox(t.MerchantID, t.APIKeyID), ks.OutboxSeq(t.MerchantID, t.APIKeyID), data, saved)
			p.addPOS(t.APIKeyID, Message{Data: data})
		}
		if err := e.stageWebhook(c, t, s, saved); err != nil {
			return err
		}
		p.addTerminal(t.TerminalID, fx.Terminal)
		p.entered = append(p.entered, fx.Entered...)
		if fx.AutoVoid {
			p.autoVoid++
		}
	}
	p.arm = append(p.arm, t)
	p.revs = append(p.revs, revChange{prev: prevRev, next: t.Rev})
	return nil
}
