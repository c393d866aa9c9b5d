package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// clusterFlows are the tests of this package that run again, unchanged, on
// a Redis Cluster (TestCluster): the essential flows of the contract, whose
// every script, MULTI and multi-key command must stay in one hash slot.
// Tests that reach into the single Redis client (e.Redis.Client) are not
// among them.
var clusterFlows = []struct {
	name string
	run  func(*testing.T)
}{
	{"PaymentHappyPath", TestPaymentHappyPath},
	{"SaleAckedOnCluster", testSaleAckedOnCluster},
	{"POSReplayAndAck", TestPOSGetsMissedResultsInOrderAndAckStopsReplay},
	{"Refunds", TestRefunds},
	{"Void", TestVoid},
	{"ManualCapture", TestManualCapture},
	{"IdempotencyKeyREST", TestRESTIdempotencyKeyPayments},
	{"IdempotencyKeyLifecycle", TestRESTIdempotencyKeyLifecycle},
	{"IdempotencyKeyWS", TestIdempotencyKeyWS},
	{"ReferenceREST", TestRESTReferenceIdempotency},
	{"ReferenceWS", TestReferenceIdempotencyWS},
	{"SupersedePendingSale", TestSupersedePendingSale},
	{"DeviceBusy", TestDeviceBusy},
	{"CancelBeforeCard", TestCancelBeforeCard},
	{"TerminalDropGraceReconnect", TestReconnectInsideGraceDeliversCachedResult},
	{"ReconnectingTerminalTakesPayment", TestReconnectingTerminalTakesPaymentOnReturn},
	{"PaymentTimeout", TestPaymentTimeoutTerminal},
	{"Webhooks", TestWebhooksForEveryFinalState},
	{"SignedRequestReplayGuard", TestReplayedSignedRequestMovesNoMoney},
	{"HTTPEventSessions", TestHTTPEventSessionPollAndAck},
	{"OpsLogin", TestOpsTokenGuessesAreLimited},
	{"ListTransactions", TestRESTListTransactions},
	{"MerchantIsolation", TestMerchantIsolation},
	// Several nodes on the cluster (node channels sharded).
	{"NodesPaymentAcrossNodes", TestNodesPaymentAcrossNodes},
	{"NodesTerminalStatus", TestNodesTerminalStatusIsOneTruth},
	{"NodesDisplacement", TestNodesDisplacementAcrossNodes},
	{"NodesOps", TestNodesOpsSeeTheWholeHub},
	{"NodesNodeDeath", TestNodesNodeDeathMidPayment},
	{"NodesNodeDeathNoReturn", TestNodesNodeDeathTerminalNeverReturns},
	{"NodesLongPoll", TestNodesLongPollWokenByAnotherNode},
}

// TestCluster runs the essential flows on the Redis Cluster of
// REDIS_CLUSTER (.ci/run starts one), each on a hub whose Redis client is a
// cluster client, and checks that each left its data in the cluster.
func TestCluster(t *testing.T) {
	redistest.Cluster(t) // skips, saying how to run it, without REDIS_CLUSTER
	for _, f := range clusterFlows {
		t.Run(f.name, func(t *testing.T) {
			c := apptest.ClusterFor(t)
			f.run(t)
			if t.Failed() {
				return
			}
			if n := clusterKeys(t, c); n == 0 {
				t.Errorf("no key under %s on any master: the hub did not run on the cluster", c.Prefix)
			}
		})
	}
}

// clusterKeys counts the keys under c's prefix on every master.
func clusterKeys(t *testing.T, c *redistest.ClusterRedis) int {
	t.Helper()
	var mu sync.Mutex
	n := 0
	err := c.Client.ForEachMaster(kit.Ctx(t), func(ctx context.Context, m *redis.Client) error {
		ks, err := m.Keys(ctx, c.Prefix+"*").Result()
		mu.Lock()
		n += len(ks)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// testSaleAckedOnCluster: a sale approved on the terminal; the reply and
// paymentComplete reach the POS, whose ack moves the cursor in the cluster
// (the ack script's two keys share a slot) and ends the replay.
func testSaleAckedOnCluster(t *testing.T) {
	h := apptest.Start(t, kit.Config)
	if h.Cluster == nil {
		t.Fatal("the hub is not on a cluster")
	}
	e := envFrom(t, h)
	term, pos := e.terminal("T1"), e.pos("pk1")
	r := sell(t, pos, "T1", 1999, "cluster-sale")
	if r.Created == nil || !*r.Created || r.Transaction.Status != protocol.StatusPending {
		t.Fatalf("paymentResponse = %+v", r)
	}
	id := r.Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	approve(t, term, id)
	done := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if done.Transaction.Status != protocol.StatusCompleted || done.MessageID == "" {
		t.Fatalf("paymentComplete = %+v", done)
	}
	if err := pos.Ack(kit.Ctx(t), done.MessageID); err != nil {
		t.Fatal(err)
	}
	ks := keys.Space{Prefix: h.Cluster.Prefix}
	kit.Eventually(t, "the ack cursor in the cluster", func() bool {
		v, _ := h.Cluster.Client.Get(context.Background(), ks.Ack("m1", "pk1")).Result()
		return v == done.MessageID
	})
	if sa, so := slotOf(t, h.Cluster.Client, ks.Ack("m1", "pk1")), slotOf(t, h.Cluster.Client, ks.Outbox("m1", "pk1")); sa != so {
		t.Errorf("ack cursor in slot %d, outbox in slot %d", sa, so)
	}
	// Acked: a new connection gets nothing replayed.
	again := e.pos("pk1")
	send(t, again, "listTerminals", map[string]any{"requestId": "after-ack"})
	if m := next(t, again); m.Action != "terminals" {
		t.Fatalf("after the ack a new connection first got %q, want the terminals reply", m.Action)
	}
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusCompleted {
		t.Errorf("GET after the sale: %s, want COMPLETED", got.Status)
	}
}

// slotOf asks the cluster which hash slot key is in.
func slotOf(t *testing.T, c *redis.ClusterClient, key string) int64 {
	t.Helper()
	n, err := c.ClusterKeySlot(kit.Ctx(t), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestServeOnCluster: `termhub serve` with redis_cluster (here from
// TERMHUB_REDIS_CLUSTER) opens a cluster client: it becomes ready, a sale
// goes through, its transaction is in the cluster, and it is still there
// for the hub started again after a SIGKILL.
func TestServeOnCluster(t *testing.T) {
	c := redistest.Cluster(t)
	// REDIS_URL (which CI exports) would clash with redis_cluster: blank it.
	p := newProcessHub(t, "", kit.Config, "TERMHUB_REDIS_CLUSTER="+strings.Join(c.Seeds, ","), "REDIS_URL=",
		"TERMHUB_KEY_PREFIX="+c.Prefix)
	p.start()
	term, pos := dialTerminal(t, p, "T1"), dialPOS(t, p, "pk1")
	id := completedSale(t, pos, term, "T1", 700, "serve-cluster")
	ks := keys.Space{Prefix: c.Prefix}
	if rev, err := c.Client.HGet(kit.Ctx(t), ks.Txn("m1", id), "rev").Int64(); err != nil || rev < 1 {
		t.Fatalf("transaction %s in the cluster: rev %d, %v", id, rev, err)
	}

	p.kill9()
	p.start()
	resp, err := client.NewHTTP(p.opts(), "pk1", kit.Secrets["pk1"]).Do(kit.Ctx(t), "GET", "/v1/transactions/"+id, nil, nil)
	if err != nil || resp.Status != 200 {
		t.Fatalf("GET after the restart: %v %v", resp, err)
	}
	var got struct{ Transaction protocol.Transaction }
	if err := resp.Decode(&got); err != nil || got.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("after the restart the sale is %+v (%v), want COMPLETED", got.Transaction, err)
	}
}
