package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// The rules of docs/protocol.md#transactions under concurrent requests: idempotency,
// superseding and the per-device lock must hold when many requests race.

const racers = 50

// race sends n requests at once (released together) and returns the answers
// in request order. body(i) is the i-th request's body; keys alternate
// between the merchant's two API keys.
func (e *env) race(t *testing.T, n int, path string, body func(i int) any, headers func(i int) http.Header) []*client.Response {
	t.Helper()
	out := make([]*client.Response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "pk1"
			if i%2 == 1 {
				key = "pk1b"
			}
			var h http.Header
			if headers != nil {
				h = headers(i)
			}
			// Each racer is a till of its own, with its own client and a
			// clock of its own (up to 24 s apart, inside the ±300 s window):
			// one client sends identical requests only as fast as its clock
			// lets it sign them afresh, and the fake clock does not move.
			opts := e.opts
			opts.Now = func() time.Time { return e.Clock.Now().Add(time.Duration(i/2) * time.Second) }
			c := client.NewHTTP(opts, key, kit.Secrets[key])
			<-start
			out[i], errs[i] = c.Do(kit.Ctx(t), "POST", path, body(i), h)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return out
}

func TestConcurrentSameReference(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")

	resps := e.race(t, racers, "/v1/payments", func(int) any { return sale("T1", 4200, "same-ref") }, nil)
	var created, ok int
	txnIDs := map[string]int{}
	for i, r := range resps {
		var b txnBody
		if err := r.Decode(&b); err != nil || b.Transaction == nil || b.Created == nil {
			t.Errorf("request %d: HTTP %d %s", i, r.Status, r.Body)
			continue
		}
		txnIDs[b.Transaction.ID]++
		switch {
		case r.Status == http.StatusCreated && *b.Created:
			created++
		case r.Status == http.StatusOK && !*b.Created:
			ok++
		default:
			t.Errorf("request %d: HTTP %d created=%v", i, r.Status, *b.Created)
		}
	}
	if created != 1 || ok != racers-1 || len(txnIDs) != 1 {
		t.Fatalf("%d × 201, %d × 200, transactions %v; want 1 × 201, %d × 200, one transaction", created, ok, txnIDs, racers-1)
	}
	var id string
	for k := range txnIDs {
		id = k
	}
	startPayment(t, term, id)
	if p, _ := e.list(t, "pk1", "?limit=100"); len(p.Data) != 1 || p.Data[0].ID != id || p.Data[0].Status != protocol.StatusPending {
		t.Fatalf("transactions: %v", ids(p.Data))
	}
}

// The same Idempotency-Key sent by racing clients: every one of them gets
// the first response (201, created:true), byte for byte.
func TestConcurrentSameIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	e.terminal("T1")

	resps := e.race(t, racers, "/v1/payments", func(int) any { return sale("T1", 4200, "same-key") },
		func(int) http.Header { return idem("race-key") })
	var first *client.Response
	for _, r := range resps {
		if r.Status == http.StatusCreated {
			first = r
			break
		}
	}
	if first == nil {
		t.Fatalf("no 201 among %d answers", len(resps))
	}
	bad := 0
	for i, r := range resps {
		if r.Status != first.Status || !bytes.Equal(r.Body, first.Body) {
			if bad < 3 {
				t.Errorf("request %d: HTTP %d %.200s\nwant the first response HTTP %d %.200s", i, r.Status, r.Body, first.Status, first.Body)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d requests with one Idempotency-Key did not get the first response", bad, racers)
	}
}

func TestConcurrentSalesSupersede(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	resps := e.race(t, racers, "/v1/payments", func(i int) any { return sale("T1", int64(100+i), fmt.Sprintf("sup-%02d", i)) }, nil)
	createdIDs := map[string]bool{}
	for i, r := range resps {
		var b txnBody
		if r.Status != http.StatusCreated || r.Decode(&b) != nil || b.Transaction == nil || !*b.Created {
			t.Errorf("sale %d: HTTP %d %s, want 201", i, r.Status, r.Body)
			continue
		}
		createdIDs[b.Transaction.ID] = true
	}
	if t.Failed() {
		t.FailNow()
	}

	p, _ := e.list(t, "pk1", "?terminalId=T1&limit=100")
	var pending []string
	superseded := map[string]bool{}
	for _, x := range p.Data {
		switch x.Status {
		case protocol.StatusPending:
			pending = append(pending, x.ID)
		case protocol.StatusSuperseded:
			superseded[x.ID] = true
		default:
			t.Errorf("%s is %s", x.ID, x.Status)
		}
		if !createdIDs[x.ID] {
			t.Errorf("%s listed but not created", x.ID)
		}
	}
	if len(p.Data) != racers || len(pending) != 1 || len(superseded) != racers-1 {
		t.Fatalf("%d transactions: %d PENDING %v, %d SUPERSEDED; want %d: 1 PENDING, %d SUPERSEDED", len(p.Data), len(pending), pending, len(superseded), racers, racers-1)
	}
	// The survivor is the terminal's current sale: the next sale supersedes it.
	if r := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 1, "sup-next"), nil, http.StatusCreated); r.Transaction.Status != protocol.StatusPending {
		t.Fatalf("next sale: %+v", r.Transaction)
	}
	if got := e.get(t, "pk1", pending[0]); got.Status != protocol.StatusSuperseded {
		t.Fatalf("the survivor after the next sale: %s, want SUPERSEDED", got.Status)
	}

	// The terminal was told to start every sale and to drop every
	// superseded one, never the drop before the start.
	started, cancelled := map[string]int{}, map[string]int{}
	for n := 0; n < racers+1+racers; n++ { // 51 startPayment, 50 cancelPayment
		m := next(t, term)
		var cmd struct {
			TransactionID string `json:"transactionId"`
		}
		_ = m.Decode(&cmd)
		switch m.Action {
		case protocol.ActionStartPayment:
			if _, ok := cancelled[cmd.TransactionID]; ok {
				t.Errorf("startPayment of %s after its cancelPayment", cmd.TransactionID)
			}
			started[cmd.TransactionID] = n
		case protocol.ActionCancelPayment:
			cancelled[cmd.TransactionID] = n
		default:
			t.Fatalf("terminal got %s", m.Raw)
		}
	}
	for id := range createdIDs {
		if _, ok := started[id]; !ok {
			t.Errorf("no startPayment for %s", id)
		}
		if _, ok := cancelled[id]; !ok {
			t.Errorf("no cancelPayment for superseded %s", id)
		}
	}
	// pk1's POS hears of each of its own superseded sales (pk1b's go to pk1b).
	n := 0
	for i, r := range resps {
		if i%2 == 1 {
			continue
		}
		var b txnBody
		_ = r.Decode(&b)
		if superseded[b.Transaction.ID] || b.Transaction.ID == pending[0] {
			ev := posEvent(t, pos, protocol.ActionPaymentComplete, b.Transaction.ID)
			if ev.Transaction.Status != protocol.StatusSuperseded {
				t.Errorf("paymentComplete of %s: %s", b.Transaction.ID, ev.Transaction.Status)
			}
			n++
		}
	}
	if n != racers/2 {
		t.Errorf("pk1 heard of %d superseded sales, want %d", n, racers/2)
	}
}

func TestConcurrentSalesOnBusyTerminal(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	busy := dispatched(t, pos, term, "T1", 100, "busy")

	resps := e.race(t, racers, "/v1/payments", func(i int) any { return sale("T1", int64(100+i), fmt.Sprintf("busy-%02d", i)) }, nil)
	for i, r := range resps {
		checkErr(t, fmt.Sprintf("sale %d", i), r, http.StatusConflict, protocol.CodeDeviceBusy, "terminalId")
	}
	p, _ := e.list(t, "pk1", "?limit=100")
	if len(p.Data) != 1 || p.Data[0].ID != busy || p.Data[0].Status != protocol.StatusDispatched {
		t.Fatalf("transactions after the refused sales: %v", ids(p.Data))
	}
}
