// Package config loads termhub's YAML configuration (docs/configuration.md): scalar
// settings with TERMHUB_<FIELD> environment overrides and defaults, and the
// merchants with their API keys and terminals. A bad file is refused with a
// message naming the field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/termhub/termhub/protocol"
)

// Duration is a time.Duration written in Go syntax ("60s", "3m").
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return &nodeError{line: n.Line, col: n.Column, msg: "must be a duration such as \"60s\""}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &nodeError{line: n.Line, col: n.Column, msg: fmt.Sprintf("must be a duration such as \"60s\", got %q", s)}
	}
	*d = Duration(v)
	return nil
}

// nodeError is a decoding problem of the value at line:col, which Parse
// turns into a message naming the field.
type nodeError struct {
	line, col int
	msg       string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// decodeError names the field at fault in a YAML decoding error: yaml.v3
// itself only gives line numbers.
func decodeError(data []byte, err error) error {
	var ne *nodeError
	if errors.As(err, &ne) {
		if f := fieldAt(data, ne.line, ne.col); f != "" {
			return fmt.Errorf("config: %s: %s", f, ne.msg)
		}
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			var line int
			if _, serr := fmt.Sscanf(m, "line %d:", &line); serr == nil {
				if f := fieldAt(data, line, 0); f != "" {
					m = f + ": " + m
				}
			}
			msgs[i] = m
		}
		return fmt.Errorf("config: %s", strings.Join(msgs, "; "))
	}
	return fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
}

// fieldAt returns the path ("merchants[0].api_keys[1].secret") of the
// deepest mapping entry whose value is at line (and col, when col > 0), or
// whose key is on line, or "" if there is none.
func fieldAt(data []byte, line, col int) string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return ""
	}
	var walk func(n *yaml.Node, path string) string
	walk = func(n *yaml.Node, path string) string {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if p := walk(c, path); p != "" {
					return p
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if p := walk(c, fmt.Sprintf("%s[%d]", path, i)); p != "" {
					return p
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if q := walk(v, p); q != "" {
					return q
				}
				if (v.Line == line && (col == 0 || v.Column == col)) || (col == 0 && k.Line == line) {
					return p
				}
			}
		}
		return ""
	}
	return walk(&root, "")
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is the whole configuration.
type Config struct {
	Listen            string   `yaml:"listen"`
	RedisURL          string   `yaml:"redis_url"`
	KeyPrefix         string   `yaml:"key_prefix"` // prefix of every Redis key; lets several hubs or tests share one Redis
	GracePeriod       Duration `yaml:"grace_period"`
	PaymentTimeout    Duration `yaml:"payment_timeout"`
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	SignatureTimeout  Duration `yaml:"signature_timeout"`
	WebhookRetryBase  Duration `yaml:"webhook_retry_base"`
	OutboxRetention   Duration `yaml:"outbox_retention"`
	RequestTimeout    Duration `yaml:"request_timeout"` // every request is answered within it (docs/ops.md#when-redis-stalls-restarts-or-fails-over)
	// NodeID names this node among several on one Redis (docs/cluster.md);
	// empty: a unique id made at start-up.
	NodeID string `yaml:"node_id"`
	// NodeTimeout is how long a node may go unheard before the others
	// treat it as dead and release its connections.
	NodeTimeout Duration `yaml:"node_timeout"`
	OpsToken    string   `yaml:"ops_token"`
	// RedisCluster is the seed host:port addresses of a Redis Cluster,
	// comma-separated; exclusive with RedisURL (cluster.go).
	RedisCluster string `yaml:"redis_cluster"`
	// OpsCookieSecure marks the ops session cookie Secure although the hub
	// itself serves plain HTTP (a TLS-terminating proxy in front). With
	// TLSCertFile the cookie is Secure anyway.
	OpsCookieSecure bool `yaml:"ops_cookie_secure"`
	// TLSCertFile and TLSKeyFile (PEM) make the one listener serve HTTPS
	// and WSS; both or neither.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// MemoryLimit is a soft limit on the memory the Go runtime uses (as
	// GOMEMLIMIT), which the garbage collector's tuning never goes past;
	// 0: none.
	MemoryLimit ByteSize   `yaml:"memory_limit"`
	RateLimit   RateLimit  `yaml:"rate_limit"`
	LogLevel    string     `yaml:"log_level"`
	Merchants   []Merchant `yaml:"merchants"`
}

// RateLimit is how fast clients may go (docs/protocol.md#credentials). Rates are per
// second; a burst is how many may come at once before the rate applies.
type RateLimit struct {
	// KeyRate and KeyBurst limit the requests of one API key, REST and
	// WebSocket together (acks are not requests: they are never limited).
	KeyRate  float64 `yaml:"key_rate"`
	KeyBurst int     `yaml:"key_burst"`
	// TerminalRate and TerminalBurst limit the messages of one terminal;
	// its results (paymentResult, voidResult, captureResult) are never
	// limited.
	TerminalRate  float64 `yaml:"terminal_rate"`
	TerminalBurst int     `yaml:"terminal_burst"`
	// AuthFailureRate and AuthFailureBurst limit failed authentications,
	// per source address and per key id (an API key, a device, the ops
	// token): past them, every attempt from that address, or for that
	// id, is refused until the rate allows one again.
	AuthFailureRate  float64 `yaml:"auth_failure_rate"`
	AuthFailureBurst int     `yaml:"auth_failure_burst"`
	// TrustedProxies are the addresses or CIDR ranges of reverse proxies
	// in front of the hub. A request whose peer is one of them is counted
	// (and logged) under the address its X-Forwarded-For names, taken
	// from the right and skipping other trusted proxies; without it every
	// client behind the proxy would share the proxy's failure budget.
	TrustedProxies []string `yaml:"trusted_proxies,omitempty"`
}

// ByteSize is a number of bytes written with an optional unit: B, KiB,
// MiB, GiB, TiB (as GOMEMLIMIT), or KB, MB, GB, TB (powers of 1000).
type ByteSize int64

// UnmarshalYAML parses a byte size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return &nodeError{line: n.Line, col: n.Column, msg: "must be a size such as \"512MiB\""}
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return &nodeError{line: n.Line, col: n.Column, msg: err.Error()}
	}
	*b = v
	return nil
}

// ParseByteSize parses "512MiB", "1GiB", "1500000000" and the like.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("must be a size such as \"512MiB\" or \"2GiB\", got %q", s)
	}
	return ByteSize(n * mult), nil
}

// MarshalYAML writes the size in bytes.
func (b ByteSize) MarshalYAML() (any, error) { return strconv.FormatInt(int64(b), 10), nil }

// Merchant is one merchant with its keys and terminals.
type Merchant struct {
	ID            string     `yaml:"id"`
	Name          string     `yaml:"name"`
	WebhookURL    string     `yaml:"webhook_url"`
	WebhookSecret string     `yaml:"webhook_secret"`
	APIKeys       []APIKey   `yaml:"api_keys"`
	Terminals     []Terminal `yaml:"terminals"`
}

// APIKey is a POS credential: a public id and its HMAC secret, and what it
// may do (Scopes: ScopeRead, ScopeWrite; both when omitted).
type APIKey struct {
	ID     string   `yaml:"id"`
	Secret string   `yaml:"secret"`
	Scopes []string `yaml:"scopes,omitempty"`
}

// Key scopes (docs/protocol.md#credentials).
const (
	// ScopeRead lets a key read transactions and terminals, connect and
	// receive (and acknowledge) its messages.
	ScopeRead = "terminal:read"
	// ScopeWrite lets a key create and change transactions.
	ScopeWrite = "terminal:write"
)

// Terminal is a registered card terminal.
type Terminal struct {
	DeviceID string `yaml:"device_id"`
	Secret   string `yaml:"secret"`
	Label    string `yaml:"label"`
}

// Defaults returns the configuration with every default of docs/configuration.md and
// no merchants.
func Defaults() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		KeyPrefix:         "termhub:",
		GracePeriod:       Duration(60 * time.Second),
		PaymentTimeout:    Duration(180 * time.Second),
		HeartbeatInterval: Duration(15 * time.Second),
		SignatureTimeout:  Duration(60 * time.Second),
		WebhookRetryBase:  Duration(5 * time.Second),
		OutboxRetention:   Duration(168 * time.Hour),
		RequestTimeout:    Duration(5 * time.Second),
		NodeTimeout:       Duration(10 * time.Second),
		OpsToken:          "change-me",
		LogLevel:          "info",
		RateLimit: RateLimit{
			KeyRate: 200, KeyBurst: 1000,
			TerminalRate: 20, TerminalBurst: 100,
			AuthFailureRate: 10, AuthFailureBurst: 100,
		},
	}
}

// Load reads the file at path, applies environment overrides from getenv
// (os.Getenv when nil) and validates the result.
func Load(path string, getenv func(string) string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(data, getenv)
}

// Parse is Load for bytes already read.
func Parse(data []byte, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file (io.EOF) means "all defaults".
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, decodeError(data, err)
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyEnv applies TERMHUB_<FIELD> overrides to the scalar fields;
// TERMHUB_REDIS_URL wins over REDIS_URL.
func applyEnv(cfg *Config, getenv func(string) string) error {
	str := func(field string, dst *string) {
		if v := getenv("TERMHUB_" + strings.ToUpper(field)); v != "" {
			*dst = v
		}
	}
	dur := func(field string, dst *Duration) error {
		name := "TERMHUB_" + strings.ToUpper(field)
		v := getenv(name)
		if v == "" {
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("config: %s (from %s): must be a duration such as \"60s\", got %q", field, name, v)
		}
		*dst = Duration(d)
		return nil
	}
	if v := getenv("REDIS_URL"); v != "" {
		cfg.RedisURL = v
	}
	str("listen", &cfg.Listen)
	str("redis_url", &cfg.RedisURL)
	str("redis_cluster", &cfg.RedisCluster)
	str("key_prefix", &cfg.KeyPrefix)
	str("node_id", &cfg.NodeID)
	str("ops_token", &cfg.OpsToken)
	str("log_level", &cfg.LogLevel)
	str("tls_cert_file", &cfg.TLSCertFile)
	str("tls_key_file", &cfg.TLSKeyFile)
	if v := getenv("TERMHUB_OPS_COOKIE_SECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("config: ops_cookie_secure (from TERMHUB_OPS_COOKIE_SECURE): must be true or false, got %q", v)
		}
		cfg.OpsCookieSecure = b
	}
	if v := getenv("TERMHUB_MEMORY_LIMIT"); v != "" {
		b, err := ParseByteSize(v)
		if err != nil {
			return fmt.Errorf("config: memory_limit (from TERMHUB_MEMORY_LIMIT): %v", err)
		}
		cfg.MemoryLimit = b
	}
	// In a fixed order, so that of several bad ones the same is named.
	rl := &cfg.RateLimit
	parseFloat := func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }
	for _, err := range []error{
		rateLimitFromEnv(getenv, "key_rate", &rl.KeyRate, parseFloat, "a number"),
		rateLimitFromEnv(getenv, "terminal_rate", &rl.TerminalRate, parseFloat, "a number"),
		rateLimitFromEnv(getenv, "auth_failure_rate", &rl.AuthFailureRate, parseFloat, "a number"),
		rateLimitFromEnv(getenv, "key_burst", &rl.KeyBurst, strconv.Atoi, "a whole number"),
		rateLimitFromEnv(getenv, "terminal_burst", &rl.TerminalBurst, strconv.Atoi, "a whole number"),
		rateLimitFromEnv(getenv, "auth_failure_burst", &rl.AuthFailureBurst, strconv.Atoi, "a whole number"),
	} {
		if err != nil {
			return err
		}
	}
	for _, d := range []struct {
		name string
		dst  *Duration
	}{
		{"grace_period", &cfg.GracePeriod}, {"payment_timeout", &cfg.PaymentTimeout},
		{"heartbeat_interval", &cfg.HeartbeatInterval}, {"signature_timeout", &cfg.SignatureTimeout},
		{"webhook_retry_base", &cfg.WebhookRetryBase}, {"outbox_retention", &cfg.OutboxRetention},
		{"request_timeout", &cfg.RequestTimeout}, {"node_timeout", &cfg.NodeTimeout},
	} {
		if err := dur(d.name, d.dst); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks every field and names the first one at fault.
func (c *Config) Validate() error {
	if err := c.validateServer(); err != nil {
		return err
	}
	if err := c.validateRateLimit(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", "must be debug, info, warn or error")
	}
	seen := ids{merchants: map[string]bool{}, keys: map[string]bool{}, devices: map[string]bool{}}
	for i, m := range c.Merchants {
		if err := seen.validateMerchant(i, m); err != nil {
			return err
		}
	}
	return nil
}

// bad is the error for a field at fault.
func bad(field, format string, args ...any) error {
	return fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...))
}

// validateKey checks one API key, at kat.
func (seen ids) validateKey(kat string, k APIKey) error {
	switch {
	case k.ID == "":
		return bad(kat+".id", "is required")
	case seen.keys[k.ID]:
		return bad(kat+".id", "%q is used by another key (key ids are global)", k.ID)
	case k.Secret == "":
		return bad(kat+".secret", "is required")
	}
	if k.Scopes != nil && len(k.Scopes) == 0 {
		return bad(kat+".scopes", "lists no scope: name %s and/or %s, or leave it out for both", ScopeRead, ScopeWrite)
	}
	for n, sc := range k.Scopes {
		if sc != ScopeRead && sc != ScopeWrite {
			return bad(fmt.Sprintf("%s.scopes[%d]", kat, n), "must be %s or %s, got %q", ScopeRead, ScopeWrite, sc)
		}
	}
	seen.keys[k.ID] = true
	return nil
}

// validateTerminal checks one terminal, at tat.
func (seen ids) validateTerminal(tat string, t Terminal) error {
	switch {
	case t.DeviceID == "":
		return bad(tat+".device_id", "is required")
	case seen.devices[t.DeviceID]:
		return bad(tat+".device_id", "%q is registered twice (device ids are global)", t.DeviceID)
	case protocol.ContainsCardNumber(t.DeviceID):
		// It is the terminalId of every message about the device,
		// where such a number is refused as a card number.
		return bad(tat+".device_id", "holds a 13–19-digit number that passes the Luhn check (an IMEI does): messages refuse it as a card number; choose another id")
	case t.Secret == "":
		return bad(tat+".secret", "is required")
	}
	seen.devices[t.DeviceID] = true
	return nil
}

// validateServer checks the listener, the store, the timings, the ops
// token, TLS and the memory limit.
func (c *Config) validateServer() error {
	if c.Listen == "" {
		return bad("listen", "is required (host:port)")
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") && !strings.HasPrefix(c.RedisURL, "unix://") {
		return bad("redis_url", "must start with redis://, rediss:// or unix://, or be empty for the embedded store")
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"grace_period", c.GracePeriod}, {"payment_timeout", c.PaymentTimeout},
		{"heartbeat_interval", c.HeartbeatInterval}, {"signature_timeout", c.SignatureTimeout},
		{"webhook_retry_base", c.WebhookRetryBase}, {"outbox_retention", c.OutboxRetention},
		{"request_timeout", c.RequestTimeout}, {"node_timeout", c.NodeTimeout},
	} {
		if d.v <= 0 {
			return bad(d.name, "must be a positive duration")
		}
	}
	if c.NodeID != "" && !validNodeID(c.NodeID) {
		return bad("node_id", "must be 1 to 64 letters, digits, '.', '_' or '-'")
	}
	if c.OpsToken == "" {
		return bad("ops_token", "is required")
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		return bad("tls_key_file", "is required when tls_cert_file is set")
	case c.TLSKeyFile != "" && c.TLSCertFile == "":
		return bad("tls_cert_file", "is required when tls_key_file is set")
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 64<<20 {
		return bad("memory_limit", "must be at least 64MiB (or 0 for none)")
	}
	return nil
}

// validNodeID reports whether id may name a node: it goes into Redis key
// names and channel names, and into logs.
func validNodeID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// validateRateLimit checks the rate limits and the trusted proxies.
func (c *Config) validateRateLimit() error {
	for _, r := range []struct {
		name  string
		rate  float64
		burst int
	}{
		{"key", c.RateLimit.KeyRate, c.RateLimit.KeyBurst},
		{"terminal", c.RateLimit.TerminalRate, c.RateLimit.TerminalBurst},
		{"auth_failure", c.RateLimit.AuthFailureRate, c.RateLimit.AuthFailureBurst},
	} {
		switch {
		case r.rate <= 0:
			return bad("rate_limit."+r.name+"_rate", "must be a positive number of requests per second")
		case r.burst < 1:
			return bad("rate_limit."+r.name+"_burst", "must be at least 1")
		}
	}
	for i, p := range c.RateLimit.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				return bad(fmt.Sprintf("rate_limit.trusted_proxies[%d]", i), "must be an IP address or CIDR range, got %q", p)
			}
		}
	}
	return nil
}

// ids are the merchant, API key and device ids met so far: key and device
// ids are global, not per merchant.
type ids struct{ merchants, keys, devices map[string]bool }

// validateMerchant checks merchants[i] with its keys and terminals.
func (seen ids) validateMerchant(i int, m Merchant) error {
	at := fmt.Sprintf("merchants[%d]", i)
	switch {
	case m.ID == "":
		return bad(at+".id", "is required")
	case seen.merchants[m.ID]:
		return bad(at+".id", "%q is used by another merchant", m.ID)
	case m.WebhookURL != "" && !strings.HasPrefix(m.WebhookURL, "http://") && !strings.HasPrefix(m.WebhookURL, "https://"):
		return bad(at+".webhook_url", "must be an http:// or https:// URL")
	case m.WebhookURL != "" && m.WebhookSecret == "":
		return bad(at+".webhook_secret", "is required when webhook_url is set")
	}
	seen.merchants[m.ID] = true
	for j, k := range m.APIKeys {
		if err := seen.validateKey(fmt.Sprintf("%s.api_keys[%d]", at, j), k); err != nil {
			return err
		}
	}
	for j, t := range m.Terminals {
		if err := seen.validateTerminal(fmt.Sprintf("%s.terminals[%d]", at, j), t); err != nil {
			return err
		}
	}
	return nil
}

// rateLimitFromEnv sets *dst from TERMHUB_RATE_LIMIT_<NAME> when that is
// set, parsed by parse; want says what it must be.
func rateLimitFromEnv[T int | float64](getenv func(string) string, name string, dst *T, parse func(string) (T, error), want string) error {
	env := "TERMHUB_RATE_LIMIT_" + strings.ToUpper(name)
	v := getenv(env)
	if v == "" {
		return nil
	}
	x, err := parse(v)
	if err != nil {
		return fmt.Errorf("config: rate_limit.%s (from %s): must be %s, got %q", name, env, want, v)
	}
	*dst = x
	return nil
}
