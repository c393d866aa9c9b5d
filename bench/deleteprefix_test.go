package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redistest"
)

// fill writes n keys under prefix, one per merchant tag (so, on a cluster,
// spread over the slots), and one key outside it.
func fill(t *testing.T, rdb redis.UniversalClient, prefix string, n int) string {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if err := rdb.Set(ctx, fmt.Sprintf("%stxn:{m%d}:1", prefix, i), "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	other := prefix[:len(prefix)-1] + "-other:{m0}"
	if err := rdb.Set(ctx, other, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), other) })
	return other
}

func testDeletePrefix(t *testing.T, rdb redis.UniversalClient, prefix string) {
	other := fill(t, rdb, prefix, 50)
	n, err := DeletePrefix(context.Background(), rdb, prefix, 10*time.Second)
	if err != nil || n != 50 {
		t.Fatalf("DeletePrefix: %d, %v; want 50 keys", n, err)
	}
	ctx := context.Background()
	for i := range 50 {
		if c, _ := rdb.Exists(ctx, fmt.Sprintf("%stxn:{m%d}:1", prefix, i)).Result(); c != 0 {
			t.Fatalf("key %d is still there", i)
		}
	}
	if c, _ := rdb.Exists(ctx, other).Result(); c != 1 {
		t.Errorf("a key outside the prefix was deleted")
	}
}

func TestDeletePrefix(t *testing.T) {
	r := redistest.New(t)
	testDeletePrefix(t, r.Client, r.Prefix)
}

// On a cluster every master's keys go, although keys of different slots
// cannot share one UNLINK.
func TestDeletePrefixOnCluster(t *testing.T) {
	r := redistest.Cluster(t)
	testDeletePrefix(t, r.Client, r.Prefix)
}
