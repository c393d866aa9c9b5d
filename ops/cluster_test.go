package ops_test

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/redistest"
)

// TestClusterSessions runs the ops session tests on a hub whose Redis is
// the Redis Cluster of REDIS_CLUSTER: login, the session checked on every
// request and feed, logout revoking it; and the terminal status history
// (pipelined pushes and trims of lists in merchants' slots) and the paging
// across merchants.
func TestClusterSessions(t *testing.T) {
	redistest.Cluster(t) // skips, saying how to run it, without REDIS_CLUSTER
	for _, f := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"Login", TestLogin},
		{"LogoutRevokesSession", TestLogoutRevokesSession},
		{"TokenCookieRefused", TestTokenCookieRefused},
		{"SessionCookieIsRandomID", TestSessionCookieIsRandomID},
		{"TerminalStatusEvents", TestTerminalStatusEvents},
		{"OpsTransactionsPaging", TestOpsTransactionsPaging},
	} {
		t.Run(f.name, func(t *testing.T) {
			c := apptest.ClusterFor(t)
			f.run(t)
			if t.Failed() {
				return
			}
			// The hub's Redis marker, at least, is under the test's prefix.
			var mu sync.Mutex
			n := 0
			err := c.Client.ForEachMaster(t.Context(), func(ctx context.Context, m *redis.Client) error {
				ks, err := m.Keys(ctx, c.Prefix+"*").Result()
				mu.Lock()
				n += len(ks)
				mu.Unlock()
				return err
			})
			if err != nil || n == 0 {
				t.Errorf("%d keys under %s on the masters (%v): the hub did not run on the cluster", n, c.Prefix, err)
			}
		})
	}
}
