package session

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

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
		id, err := e.store.get(ctx, e.store.keys.Ref(merchantID, f.Reference))
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
	idx := e.store.keys.Txns(merchantID)
	start := int64(0)
	if f.After != "" {
		rank, err := e.store.rdb.ZRevRank(ctx, idx, f.After).Result()
		if errors.Is(err, redis.Nil) {
			return page, protocol.Invalid("after", "unknown cursor")
		}
		if err != nil {
			return page, err
		}
		start = rank + 1
	}
	const batch = 200
	for {
		ids, err := e.store.rdb.ZRevRange(ctx, idx, start, start+batch-1).Result()
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
