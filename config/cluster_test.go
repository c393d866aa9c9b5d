package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestRedisCluster(t *testing.T) {
	noEnv := func(string) string { return "" }
	cfg, err := Parse([]byte("redis_cluster: \"10.0.0.5:7001, 10.0.0.6:7001,[::1]:7002\"\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.5:7001", "10.0.0.6:7001", "[::1]:7002"}
	if got := cfg.ClusterSeeds(); !reflect.DeepEqual(got, want) {
		t.Errorf("seeds = %q, want %q", got, want)
	}
	if d := Defaults(); d.RedisCluster != "" || d.ClusterSeeds() != nil {
		t.Errorf("default redis_cluster = %q, want empty", d.RedisCluster)
	}

	env := map[string]string{"TERMHUB_REDIS_CLUSTER": "h1:1,h2:2"}
	cfg, err = Parse(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ClusterSeeds(); !reflect.DeepEqual(got, []string{"h1:1", "h2:2"}) {
		t.Errorf("seeds from TERMHUB_REDIS_CLUSTER = %q", got)
	}
}

func TestRedisClusterErrors(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		env        map[string]string
		want       []string // every one must be in the error
	}{
		{"both in the file", "redis_url: redis://h:6379\nredis_cluster: h:7001\n", nil, []string{"redis_url", "redis_cluster"}},
		{"url from the environment", "redis_cluster: h:7001\n", map[string]string{"REDIS_URL": "redis://h:6379"}, []string{"redis_url", "redis_cluster"}},
		{"cluster from the environment", "redis_url: redis://h:6379\n", map[string]string{"TERMHUB_REDIS_CLUSTER": "h:7001"}, []string{"redis_url", "redis_cluster"}},
		{"no port", "redis_cluster: h1:7001,h2\n", nil, []string{"redis_cluster", "seed 2", `"h2"`}},
		{"no host", "redis_cluster: \":7001\"\n", nil, []string{"redis_cluster", "seed 1"}},
		{"bad port", "redis_cluster: h:70001\n", nil, []string{"redis_cluster", "port"}},
		{"empty seed", "redis_cluster: \"h:7001,,h:7002\"\n", nil, []string{"redis_cluster", "seed 2"}},
		{"url given", "redis_cluster: redis://h:7001\n", nil, []string{"redis_cluster", "host:port"}},
		{"brace in the prefix", "redis_cluster: h:7001\nkey_prefix: \"{th}:\"\n", nil, []string{"key_prefix"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), func(k string) string { return c.env[k] })
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}
