package ops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// MaxTransactionsPage is the largest limit of GET /v1/ops/transactions, as
// for a merchant's own GET /v1/transactions.
const MaxTransactionsPage = 100

// TransactionsPage is one page of GET /v1/ops/transactions: transactions of
// every merchant in scope, newest first, and the cursor of the next page.
type TransactionsPage struct {
	Data       []*protocol.Transaction `json:"data"`
	HasMore    bool                    `json:"hasMore"`
	NextCursor *string                 `json:"nextCursor"`
}

// MerchantInfo names a merchant for the dashboard.
type MerchantInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// opsCursor is where a page across merchants stopped: per merchant, the id
// of the last transaction listed (the engine's own per-merchant cursor),
// and the merchants with nothing older. A merchant in neither list starts
// from its newest. It travels base64url-encoded, opaque to clients.
type opsCursor struct {
	After map[string]string `json:"a,omitempty"`
	Done  []string          `json:"d,omitempty"`
}

func (c opsCursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (opsCursor, *protocol.Error) {
	var c opsCursor
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil {
		return c, protocol.Invalid("after", "not a nextCursor of this endpoint")
	}
	return c, nil
}

// listAcross pages through the transactions of merchants, newest first:
// each merchant's next limit transactions are read (newest first, in the
// engine's order) and merged by always taking the newest of the merchants'
// next ones, so that what is taken of each merchant is a prefix of its own
// list and what was read but not taken is read again by the next page.
func (s *Server) listAcross(ctx context.Context, merchants []string, f session.Filter, cur opsCursor) (TransactionsPage, error) {
	page := TransactionsPage{Data: []*protocol.Transaction{}}
	if s.opts.Engine == nil {
		return page, nil
	}
	done := map[string]bool{}
	for _, m := range cur.Done {
		done[m] = true
	}
	type part struct {
		m     string
		page  session.Page
		taken int
	}
	var parts []*part
	for _, m := range merchants {
		if done[m] {
			continue
		}
		mf := f
		mf.After = cur.After[m]
		p, err := s.opts.Engine.List(ctx, m, mf)
		if err != nil {
			return page, err
		}
		parts = append(parts, &part{m: m, page: p})
	}
	for len(page.Data) < f.Limit {
		var best *part
		for _, p := range parts {
			if p.taken < len(p.page.Data) && (best == nil || newer(p.page.Data[p.taken], best.page.Data[best.taken])) {
				best = p
			}
		}
		if best == nil {
			break
		}
		page.Data = append(page.Data, best.page.Data[best.taken])
		best.taken++
	}
	next := opsCursor{After: map[string]string{}, Done: append([]string(nil), cur.Done...)}
	for m, id := range cur.After {
		next.After[m] = id
	}
	for _, p := range parts {
		if p.taken == len(p.page.Data) && !p.page.HasMore {
			next.Done = append(next.Done, p.m)
			delete(next.After, p.m)
			continue
		}
		page.HasMore = true
		if p.taken > 0 {
			next.After[p.m] = p.page.Data[p.taken-1].ID
		}
	}
	if page.HasMore {
		sort.Strings(next.Done)
		c := next.encode()
		page.NextCursor = &c
	}
	return page, nil
}

// newer orders transactions newest first: by creation, then by id.
func newer(a, b *protocol.Transaction) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

// merchants lists every configured merchant with its name, by id.
func (s *Server) merchants() []MerchantInfo {
	dir := s.hub.Directory()
	ids := dir.MerchantIDs()
	sort.Strings(ids)
	out := make([]MerchantInfo, 0, len(ids))
	for _, id := range ids {
		mi := MerchantInfo{ID: id}
		if m, ok := dir.Merchant(id); ok {
			mi.Name = m.Name
		}
		out = append(out, mi)
	}
	return out
}

// handleTransactions serves GET /v1/ops/transactions: the transactions of
// every merchant (or of one merchant, or of one terminal), newest first, a
// page at a time, for the dashboard's "load more" and terminal view.
func (s *Server) handleTransactions(w http.ResponseWriter, r *http.Request) {
	if _, e := s.authenticate(r, "missing or wrong ops token"); e != nil {
		writeError(w, e)
		return
	}
	q := r.URL.Query()
	dir := s.hub.Directory()
	merchants := dir.MerchantIDs()
	sort.Strings(merchants)
	if m := q.Get("merchantId"); m != "" {
		if _, ok := dir.Merchant(m); !ok {
			writeError(w, protocol.Invalid("merchantId", "unknown merchant %q", m))
			return
		}
		merchants = []string{m}
	}
	f := session.Filter{Reference: q.Get("reference")}
	if e := protocol.CheckText("reference", f.Reference, false); e != nil {
		writeError(w, e) // a card number typed into the search box is refused, never looked up or logged
		return
	}
	if id := q.Get("terminalId"); id != "" {
		t, ok := dir.Terminal(id)
		if !ok {
			writeError(w, protocol.Invalid("terminalId", "unknown terminal %q", id))
			return
		}
		f.TerminalID = id
		if m := q.Get("merchantId"); m != "" && m != t.MerchantID {
			writeError(w, protocol.Invalid("terminalId", "terminal %q is not merchant %q's", id, m))
			return
		}
		merchants = []string{t.MerchantID}
	}
	limit, e := queryLimit(r, 50, MaxTransactionsPage)
	if e != nil {
		writeError(w, e)
		return
	}
	f.Limit = limit
	cur, e := decodeCursor(q.Get("after"))
	if e != nil {
		writeError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*s.opts.RequestTimeout)
	defer cancel()
	page, err := s.listAcross(ctx, merchants, f, cur)
	if err != nil {
		writeError(w, s.hub.ClientError(err, s.log))
		return
	}
	writeJSON(w, http.StatusOK, page)
}
