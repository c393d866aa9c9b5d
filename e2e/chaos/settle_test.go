package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// quietPeriod is how long everything must stay settled before the checks
// are final: long enough for a late result, auto-void or replay in flight
// to land.
const quietPeriod = 5 * time.Second

// hubView is every transaction as the hub's API reports it at one moment.
type hubView struct {
	txns    map[string]*protocol.Transaction
	missing map[string]bool // ids the clients know of that the hub answers 404 for
}

// fetchView lists every transaction of the merchant (GET /v1/transactions,
// page by page) and asks for each id the clients know of that the list
// lacks (GET /v1/transactions/{id}). On an error the view is empty.
func fetchView(ctx context.Context, api *client.HTTP, known map[string]bool) (hubView, error) {
	v := hubView{txns: map[string]*protocol.Transaction{}, missing: map[string]bool{}}
	after := ""
	for {
		path := "/v1/transactions?limit=100"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		var page struct {
			Data       []*protocol.Transaction `json:"data"`
			HasMore    bool                    `json:"hasMore"`
			NextCursor *string                 `json:"nextCursor"`
		}
		if _, err := getJSON(ctx, api, path, &page); err != nil {
			return hubView{missing: map[string]bool{}}, err
		}
		for _, t := range page.Data {
			v.txns[t.ID] = t
		}
		if !page.HasMore || page.NextCursor == nil {
			break
		}
		after = *page.NextCursor
	}
	for id := range known {
		if v.txns[id] != nil {
			continue
		}
		var body struct {
			Transaction *protocol.Transaction `json:"transaction"`
		}
		status, err := getJSON(ctx, api, "/v1/transactions/"+url.PathEscape(id), &body)
		switch {
		case status == http.StatusNotFound:
			v.missing[id] = true
		case err != nil:
			return hubView{missing: map[string]bool{}}, err
		default:
			v.txns[id] = body.Transaction
		}
	}
	return v, nil
}

// getJSON GETs path and decodes a 200 answer into out, retrying an answer
// that is not final (503, 500, no answer) for up to 30 s. A 404 is returned
// as its status with an error.
func getJSON(ctx context.Context, api *client.HTTP, path string, out any) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, answerTimeout)
		resp, err := api.Do(rctx, http.MethodGet, path, nil, nil)
		cancel()
		switch {
		case err == nil && resp.Status == http.StatusOK:
			return resp.Status, resp.Decode(out)
		case err == nil && resp.Status == http.StatusNotFound:
			return resp.Status, fmt.Errorf("GET %s: %v", path, resp.Err())
		case err == nil && resp.Status < 500:
			return resp.Status, fmt.Errorf("GET %s: %v", path, resp.Err())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = resp.Err()
			}
			return 0, fmt.Errorf("GET %s: %v", path, err)
		}
		_ = client.SleepContext(ctx, 500*time.Millisecond) // the retry's pace
	}
}

// settle waits, with the clients still connected, until everything has
// ended: every transaction final, every terminal result acknowledged and
// every check passing, for quietPeriod in a row; or until deadline. It
// returns the last view and what the clients saw then, or, if the hub's
// API did not answer in full at the end, an empty view and its error.
func settle(ctx context.Context, api *client.HTTP, led *ledger, fleet *terminalFleet, deadline time.Time) (hubView, seen, verdict, error) {
	var quietSince time.Time
	for {
		s := led.snapshot()
		view, err := fetchView(ctx, api, s.txnIDs())
		if err != nil {
			// The hub cannot say where things stand: check nothing, wait.
			quietSince = time.Time{}
			if time.Now().After(deadline) || client.SleepContext(ctx, time.Second) != nil { // polling the hub
				return view, s, check(view, s), err
			}
			continue
		}
		v := check(view, s)
		if v.settled() && len(fleet.unacked()) == 0 {
			if quietSince.IsZero() {
				quietSince = time.Now()
			} else if time.Since(quietSince) >= quietPeriod {
				return view, s, v, nil
			}
		} else {
			quietSince = time.Time{}
		}
		if time.Now().After(deadline) {
			return view, s, v, nil
		}
		if client.SleepContext(ctx, time.Second) != nil { // polling the hub
			return view, s, v, ctx.Err()
		}
	}
}
