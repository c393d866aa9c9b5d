package config

import (
	"net"
	"strconv"
	"strings"
)

// ClusterSeeds returns the seed addresses of redis_cluster, in order, with
// blanks around the commas dropped; nil when it is not set.
func (c *Config) ClusterSeeds() []string {
	if strings.TrimSpace(c.RedisCluster) == "" {
		return nil
	}
	parts := strings.Split(c.RedisCluster, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// validateCluster checks redis_cluster. It lives apart from
// validateServer so that the cluster's rules stay in one place.
func (c *Config) validateCluster() error {
	seeds := c.ClusterSeeds()
	if seeds == nil {
		return nil
	}
	if c.RedisURL != "" {
		// Both set is a mistake either way round: say which two fields
		// fight rather than silently preferring one.
		return bad("redis_url and redis_cluster", "are both set: set redis_url for one Redis server or redis_cluster for a Redis Cluster, not both")
	}
	for i, s := range seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return bad("redis_cluster", "seed %d must be host:port, got %q", i+1, s)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("redis_cluster", "seed %d must be host:port with a port from 1 to 65535, got %q", i+1, s)
		}
	}
	// Redis Cluster hashes only what is inside a key's first {…}: a brace
	// in the prefix would come first and could split a merchant's keys
	// over several slots (or put every key in one), breaking the
	// single-slot scripts (internal/keys).
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		return bad("key_prefix", "must not contain { or } with redis_cluster: Redis Cluster would hash the prefix's braces instead of the merchant's")
	}
	return nil
}
