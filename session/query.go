package session

import (
	"context"
	"errors"

	"github.com/termhub/termhub/protocol"
)

// Filter selects transactions for List.
type Filter struct {
	TerminalID string // device id
	Status     protocol.Status
	Reference  string
	Type       string
	Limit      int    // 1..100, default 20
	After      string // cursor: the id of the last transaction of the previous page
}

// Page is one page of List, newest first.
type Page struct {
	Data       []*protocol.Transaction `json:"data"`
	HasMore    bool                    `json:"hasMore"`
	NextCursor *string                 `json:"nextCursor"`
}

// List returns a merchant's transactions, newest first, filtered, from the
// cursor on. An unknown cursor is invalid_request naming "after".
func (e *Engine) List(ctx context.Context, merchantID string, f Filter) (Page, error) {
	if f.Limit <= 0 {
		f.Limit = 20
	}
	page := Page{Data: []*protocol.Transaction{}}
	if f.Reference != "" && f.After == "" {
		id, err := e.store.refID(ctx, merchantID, f.Reference)
		if err != nil || id == "" {
			return page, err
		}
		t, err := e.store.Load(ctx, merchantID, id)
		if errors.Is(err, ErrNotFound) {
			return page, nil
		}
		if err != nil {
			return page, err
		}
		if matches(t, f) {
			page.Data = append(page.Data, t.Wire())
		}
		return page, nil
	}
	start := int64(0)
	if f.After != "" {
		rank, found, err := e.store.txnRank(ctx, merchantID, f.After)
		if err != nil {
			return page, err
		}
		if !found {
			return page, protocol.Invalid("after", "unknown cursor")
		}
		start = rank + 1
	}
	const batch = 200
	for {
		ids, err := e.store.txnRange(ctx, merchantID, start, batch)
		if err != nil {
			return page, err
		}
		for _, id := range ids {
			t, err := e.store.Load(ctx, merchantID, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return page, err
			}
			if !matches(t, f) {
				continue
			}
			if len(page.Data) == f.Limit {
				page.HasMore = true
				last := page.Data[len(page.Data)-1].ID
				page.NextCursor = &last
				return page, nil
			}
			page.Data = append(page.Data, t.Wire())
		}
		if len(ids) < batch {
			return page, nil
		}
		start += batch
	}
}

func matches(t *Txn, f Filter) bool {
	return (f.TerminalID == "" || t.TerminalID == f.TerminalID) &&
		(f.Status == "" || t.Status == f.Status) &&
		(f.Reference == "" || t.Reference == f.Reference) &&
		(f.Type == "" || t.Type == f.Type)
}

// Get returns a transaction of the merchant.
func (e *Engine) Get(ctx context.Context, merchantID, id string) (*protocol.Transaction, error) {
	t, err := e.store.Load(ctx, merchantID, id)
	if ce := toClientErr(err); ce != nil {
		return nil, ce
	}
	if err != nil {
		return nil, err
	}
	return t.Wire(), nil
}

// Current returns the transaction occupying each device ("" for none).
func (e *Engine) Current(ctx context.Context, merchantID string, devices []string) (map[string]string, error) {
	out := make(map[string]string, len(devices))
	if len(devices) == 0 {
		return out, nil
	}
	if err := e.store.currents(ctx, merchantID, devices, out); err != nil {
		return nil, err
	}
	return out, nil
}

// CurrentKnown is Current as this process last committed it, without
// asking Redis: for answers that must not wait on a Redis that does not
// answer (a greeting, ops). A device this process knows nothing of, or
// knows free, is left out.
func (e *Engine) CurrentKnown(merchantID string, devices []string) map[string]string {
	out := make(map[string]string, len(devices))
	for _, d := range devices {
		if id, ok := e.store.cur.get(merchantID, d); ok && id != "" {
			out[d] = id
		}
	}
	return out
}
