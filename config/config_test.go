package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const demoPath = "../testdata/demo.yaml"

// env is a fake getenv backed by a map.
func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

var noEnv = env(nil)

func mustParse(t *testing.T, src string, getenv func(string) string) Config {
	t.Helper()
	cfg, err := Parse([]byte(src), getenv)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return cfg
}

func TestLoadDemo(t *testing.T) {
	cfg, err := Load(demoPath, noEnv)
	if err != nil {
		t.Fatalf("Load(%s): %v", demoPath, err)
	}
	want := Defaults()
	want.Merchants = []Merchant{
		{
			ID: "m_demo", Name: "Demo Store",
			APIKeys: []APIKey{{ID: "pk_demo", Secret: "sk_demo"}, {ID: "pk_demo2", Secret: "sk_demo2"}},
			Terminals: []Terminal{
				{DeviceID: "TERM-001", Secret: "dk_term001", Label: "Front counter"},
				{DeviceID: "TERM-002", Secret: "dk_term002", Label: "Back counter"},
				{DeviceID: "TERM-003", Secret: "dk_term003", Label: "Patio"},
			},
		},
		{
			ID: "m_other", Name: "Other Shop",
			APIKeys:   []APIKey{{ID: "pk_other", Secret: "sk_other"}},
			Terminals: []Terminal{{DeviceID: "OTHER-001", Secret: "dk_other001", Label: "Till"}},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("demo config\n got %+v\nwant %+v", cfg, want)
	}
	// The file's header comment says what is in it: keep it in step.
	raw, err := os.ReadFile(demoPath)
	if err != nil {
		t.Fatal(err)
	}
	if header := string(raw[:bytes.Index(raw, []byte("\nlisten:"))]); !strings.Contains(header, "two merchants") ||
		!strings.Contains(header, "m_demo has two POS keys") || !strings.Contains(header, "three terminals; m_other has one key and one terminal") {
		t.Errorf("the demo config's header comment does not describe it:\n%s", header)
	}
	if cfg.RedisURL != "" {
		t.Errorf("demo redis_url = %q, want empty (embedded store)", cfg.RedisURL)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
			t.Fatalf("Load(missing) = %v, want an error naming the file", err)
		}
	})
	t.Run("bad file names field", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(p, []byte("grace_period: soon\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, noEnv)
		if err == nil || !strings.Contains(err.Error(), "grace_period") {
			t.Fatalf("Load(bad) = %v, want an error naming grace_period", err)
		}
	})
	t.Run("nil getenv uses the process environment", func(t *testing.T) {
		t.Setenv("TERMHUB_LISTEN", "0.0.0.0:9999")
		t.Setenv("TERMHUB_REDIS_URL", "")
		t.Setenv("REDIS_URL", "")
		cfg, err := Load(demoPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Listen != "0.0.0.0:9999" {
			t.Errorf("Listen = %q, want the TERMHUB_LISTEN value", cfg.Listen)
		}
	})
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", d.Listen, "127.0.0.1:8080"},
		{"redis_url", d.RedisURL, ""},
		{"key_prefix", d.KeyPrefix, "termhub:"},
		{"grace_period", d.GracePeriod.D(), 60 * time.Second},
		{"payment_timeout", d.PaymentTimeout.D(), 180 * time.Second},
		{"heartbeat_interval", d.HeartbeatInterval.D(), 15 * time.Second},
		{"signature_timeout", d.SignatureTimeout.D(), 60 * time.Second},
		{"webhook_retry_base", d.WebhookRetryBase.D(), 5 * time.Second},
		{"outbox_retention", d.OutboxRetention.D(), 168 * time.Hour},
		{"ops_token", d.OpsToken, "change-me"},
		{"log_level", d.LogLevel, "info"},
		{"merchants", len(d.Merchants), 0},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
			}
		})
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Defaults().Validate() = %v", err)
	}
}

func TestDefaultsApplyWhenMissing(t *testing.T) {
	tests := []struct {
		name string
		src  string
		edit func(*Config) // what differs from Defaults()
	}{
		{"empty file", "", func(*Config) {}},
		{"only comments", "# nothing here\n", func(*Config) {}},
		{"empty object", "{}", func(*Config) {}},
		{"only listen", "listen: \":9000\"\n", func(c *Config) { c.Listen = ":9000" }},
		{"only grace period", "grace_period: 2s\n", func(c *Config) { c.GracePeriod = Duration(2 * time.Second) }},
		{"short timers", "grace_period: 50ms\npayment_timeout: 1s\nheartbeat_interval: 20ms\nsignature_timeout: 300ms\nwebhook_retry_base: 10ms\noutbox_retention: 1m\n",
			func(c *Config) {
				c.GracePeriod = Duration(50 * time.Millisecond)
				c.PaymentTimeout = Duration(time.Second)
				c.HeartbeatInterval = Duration(20 * time.Millisecond)
				c.SignatureTimeout = Duration(300 * time.Millisecond)
				c.WebhookRetryBase = Duration(10 * time.Millisecond)
				c.OutboxRetention = Duration(time.Minute)
			}},
		{"compound duration", "payment_timeout: 1h2m3s\n", func(c *Config) { c.PaymentTimeout = Duration(time.Hour + 2*time.Minute + 3*time.Second) }},
		{"merchant without keys or terminals", "merchants:\n  - id: m1\n", func(c *Config) { c.Merchants = []Merchant{{ID: "m1"}} }},
		{"null merchants", "merchants:\n", func(*Config) {}},
		{"null duration keeps default", "grace_period:\n", func(*Config) {}},
		{"json is yaml", `{"listen":":7000","log_level":"debug","merchants":[{"id":"m","api_keys":[{"id":"k","secret":"s"}]}]}`,
			func(c *Config) {
				c.Listen, c.LogLevel = ":7000", "debug"
				c.Merchants = []Merchant{{ID: "m", APIKeys: []APIKey{{ID: "k", Secret: "s"}}}}
			}},
		{"webhook with secret", "merchants:\n  - id: m\n    webhook_url: https://example.test/hook\n    webhook_secret: whsec\n",
			func(c *Config) {
				c.Merchants = []Merchant{{ID: "m", WebhookURL: "https://example.test/hook", WebhookSecret: "whsec"}}
			}},
		{"redis url", "redis_url: redis://localhost:6379/0\n", func(c *Config) { c.RedisURL = "redis://localhost:6379/0" }},
		{"rediss url", "redis_url: rediss://h:6380\n", func(c *Config) { c.RedisURL = "rediss://h:6380" }},
		{"unix url", "redis_url: unix:///tmp/redis.sock\n", func(c *Config) { c.RedisURL = "unix:///tmp/redis.sock" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustParse(t, tt.src, noEnv)
			want := Defaults()
			tt.edit(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	const file = "listen: \"127.0.0.1:1111\"\nredis_url: redis://file:6379\ngrace_period: 60s\nlog_level: warn\n"
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{"no env keeps file", nil, func(t *testing.T, c Config) {
			if c.Listen != "127.0.0.1:1111" || c.RedisURL != "redis://file:6379" || c.GracePeriod.D() != time.Minute || c.LogLevel != "warn" {
				t.Errorf("file values lost: %+v", c)
			}
		}},
		{"grace period", map[string]string{"TERMHUB_GRACE_PERIOD": "5s"}, func(t *testing.T, c Config) {
			if c.GracePeriod.D() != 5*time.Second {
				t.Errorf("GracePeriod = %v, want 5s", c.GracePeriod.D())
			}
		}},
		{"listen", map[string]string{"TERMHUB_LISTEN": "0.0.0.0:8443"}, func(t *testing.T, c Config) {
			if c.Listen != "0.0.0.0:8443" {
				t.Errorf("Listen = %q", c.Listen)
			}
		}},
		{"termhub redis url wins over redis url", map[string]string{"TERMHUB_REDIS_URL": "redis://termhub:1/0", "REDIS_URL": "redis://plain:2/0"}, func(t *testing.T, c Config) {
			if c.RedisURL != "redis://termhub:1/0" {
				t.Errorf("RedisURL = %q, want the TERMHUB_REDIS_URL value", c.RedisURL)
			}
		}},
		{"redis url alone", map[string]string{"REDIS_URL": "redis://plain:2/0"}, func(t *testing.T, c Config) {
			if c.RedisURL != "redis://plain:2/0" {
				t.Errorf("RedisURL = %q, want the REDIS_URL value", c.RedisURL)
			}
		}},
		{"termhub redis url alone", map[string]string{"TERMHUB_REDIS_URL": "rediss://t:3"}, func(t *testing.T, c Config) {
			if c.RedisURL != "rediss://t:3" {
				t.Errorf("RedisURL = %q", c.RedisURL)
			}
		}},
		{"empty env value does not override", map[string]string{"TERMHUB_LISTEN": "", "TERMHUB_GRACE_PERIOD": ""}, func(t *testing.T, c Config) {
			if c.Listen != "127.0.0.1:1111" || c.GracePeriod.D() != time.Minute {
				t.Errorf("empty variables overrode the file: %+v", c)
			}
		}},
		{"every scalar", map[string]string{
			"TERMHUB_KEY_PREFIX":         "t1:",
			"TERMHUB_OPS_TOKEN":          "tok",
			"TERMHUB_LOG_LEVEL":          "debug",
			"TERMHUB_PAYMENT_TIMEOUT":    "2s",
			"TERMHUB_HEARTBEAT_INTERVAL": "100ms",
			"TERMHUB_SIGNATURE_TIMEOUT":  "3s",
			"TERMHUB_WEBHOOK_RETRY_BASE": "10ms",
			"TERMHUB_OUTBOX_RETENTION":   "1h",
		}, func(t *testing.T, c Config) {
			got := []any{c.KeyPrefix, c.OpsToken, c.LogLevel, c.PaymentTimeout.D(), c.HeartbeatInterval.D(),
				c.SignatureTimeout.D(), c.WebhookRetryBase.D(), c.OutboxRetention.D()}
			want := []any{"t1:", "tok", "debug", 2 * time.Second, 100 * time.Millisecond,
				3 * time.Second, 10 * time.Millisecond, time.Hour}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustParse(t, file, env(tt.env)))
		})
	}
}

func TestEnvOverrideErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // substrings of the error
	}{
		{"bad grace period", map[string]string{"TERMHUB_GRACE_PERIOD": "5 seconds"}, []string{"TERMHUB_GRACE_PERIOD", "grace_period", "5 seconds"}},
		{"bad payment timeout", map[string]string{"TERMHUB_PAYMENT_TIMEOUT": "180"}, []string{"TERMHUB_PAYMENT_TIMEOUT", "payment_timeout"}},
		{"bad outbox retention", map[string]string{"TERMHUB_OUTBOX_RETENTION": "7d"}, []string{"TERMHUB_OUTBOX_RETENTION"}},
		{"negative duration", map[string]string{"TERMHUB_HEARTBEAT_INTERVAL": "-1s"}, []string{"heartbeat_interval", "positive"}},
		{"bad log level", map[string]string{"TERMHUB_LOG_LEVEL": "verbose"}, []string{"log_level"}},
		{"bad termhub redis url", map[string]string{"TERMHUB_REDIS_URL": "localhost:6379"}, []string{"redis_url"}},
		{"bad redis url", map[string]string{"REDIS_URL": "http://localhost:6379"}, []string{"redis_url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(nil, env(tt.env))
			if err == nil {
				t.Fatalf("Parse with %v succeeded, want an error", tt.env)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// secret is written into the bad files below; no error may echo it.
const secret = "s3cr3t-value"

func TestBadFilesNameTheField(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		field string // must appear in the error
		also  string // a further substring, if any
	}{
		{"unknown top-level field (typo)", "grace_perod: 5s\n", "grace_perod", "not found"},
		{"unknown merchant field", "merchants:\n  - id: m\n    nmae: Shop\n", "nmae", ""},
		{"unknown key field", "merchants:\n  - id: m\n    api_keys:\n      - id: k\n        secert: " + secret + "\n", "secert", ""},
		{"bad duration", "grace_period: soon\n", "grace_period", "soon"},
		{"duration without unit", "payment_timeout: 180\n", "payment_timeout", "duration"},
		{"duration as a list", "heartbeat_interval: [1s]\n", "heartbeat_interval", "duration"},
		{"duration as a map", "signature_timeout: {a: 1}\n", "signature_timeout", "duration"},
		{"bad duration after others", "listen: \":1\"\ngrace_period: 1s\noutbox_retention: 7d\n", "outbox_retention", "7d"},
		{"zero duration", "signature_timeout: 0s\n", "signature_timeout", "positive"},
		{"negative duration", "webhook_retry_base: -5s\n", "webhook_retry_base", "positive"},
		{"listen not a string", "listen: [1, 2]\n", "listen", ""},
		{"listen empty", "listen: \"\"\n", "listen", "required"},
		{"ops token empty", "ops_token: \"\"\n", "ops_token", "required"},
		{"bad redis url", "redis_url: localhost:6379\n", "redis_url", ""},
		{"http redis url", "redis_url: http://localhost:6379\n", "redis_url", ""},
		{"bad log level", "log_level: verbose\n", "log_level", ""},
		{"upper-case log level", "log_level: INFO\n", "log_level", ""},
		{"merchants not a list", "merchants: everyone\n", "merchants", ""},
		{"merchant id missing", "merchants:\n  - name: Shop\n", "merchants[0].id", "required"},
		{"duplicate merchant id", "merchants:\n  - id: m\n  - id: m\n", "merchants[1].id", ""},
		{"missing api key secret", "merchants:\n  - id: m\n    api_keys:\n      - id: pk\n", "merchants[0].api_keys[0].secret", "required"},
		{"empty api key secret", "merchants:\n  - id: m\n    api_keys:\n      - id: pk\n        secret: \"\"\n", "merchants[0].api_keys[0].secret", "required"},
		{"missing api key id", "merchants:\n  - id: m\n    api_keys:\n      - secret: " + secret + "\n", "merchants[0].api_keys[0].id", "required"},
		{"duplicate api key id in merchant", "merchants:\n  - id: m\n    api_keys:\n      - {id: pk, secret: " + secret + "}\n      - {id: pk, secret: other}\n",
			"merchants[0].api_keys[1].id", "pk"},
		{"duplicate api key id across merchants", "merchants:\n  - id: m1\n    api_keys: [{id: pk, secret: " + secret + "}]\n  - id: m2\n    api_keys: [{id: pk, secret: x}]\n",
			"merchants[1].api_keys[0].id", ""},
		{"duplicate device id", "merchants:\n  - id: m\n    terminals:\n      - {device_id: T1, secret: " + secret + "}\n      - {device_id: T1, secret: b}\n",
			"merchants[0].terminals[1].device_id", "T1"},
		{"duplicate device id across merchants", "merchants:\n  - id: m1\n    terminals: [{device_id: T1, secret: " + secret + "}]\n  - id: m2\n    terminals: [{device_id: T1, secret: b}]\n",
			"merchants[1].terminals[0].device_id", "T1"},
		{"device id that reads as a card number (an IMEI)", "merchants:\n  - id: m\n    terminals:\n      - {device_id: \"IMEI-490154203237518\", secret: " + secret + "}\n",
			"merchants[0].terminals[0].device_id", "Luhn"},
		{"terminal device id missing", "merchants:\n  - id: m\n    terminals:\n      - secret: " + secret + "\n", "merchants[0].terminals[0].device_id", "required"},
		{"terminal secret missing", "merchants:\n  - id: m\n    terminals:\n      - device_id: T1\n", "merchants[0].terminals[0].secret", "required"},
		{"webhook url without secret", "merchants:\n  - id: m\n    webhook_url: https://example.test/hook\n", "merchants[0].webhook_secret", "webhook_url"},
		{"webhook url not http", "merchants:\n  - id: m\n    webhook_url: ftp://example.test\n    webhook_secret: " + secret + "\n", "merchants[0].webhook_url", ""},
		{"second merchant at fault", "merchants:\n  - id: ok\n  - id: bad\n    api_keys:\n      - id: k2\n", "merchants[1].api_keys[0].secret", ""},
		{"terminal field wrong type", "merchants:\n  - id: m\n    terminals:\n      - device_id: T1\n        secret: " + secret + "\n        label: [a, b]\n", "merchants[0].terminals[0].label", ""},
		{"not yaml", "listen: [unclosed\n", "", ""},
		{"top level list", "- a\n- b\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), noEnv)
			if err == nil {
				t.Fatalf("Parse succeeded, want an error for\n%s", tt.src)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config: ") {
				t.Errorf("error %q does not start with \"config: \"", msg)
			}
			if !strings.Contains(msg, tt.field) {
				t.Errorf("error %q does not name field %q", msg, tt.field)
			}
			if tt.also != "" && !strings.Contains(msg, tt.also) {
				t.Errorf("error %q does not mention %q", msg, tt.also)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error %q echoes a secret", msg)
			}
		})
	}
}

func TestFieldNamedFirst(t *testing.T) {
	// Validation errors have the form "config: <field>: <problem>".
	tests := []struct{ src, prefix string }{
		{"grace_period: soon\n", "config: grace_period: "},
		{"merchants:\n  - id: m\n    api_keys:\n      - id: pk\n", "config: merchants[0].api_keys[0].secret: "},
		{"log_level: loud\n", "config: log_level: "},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), noEnv)
			if err == nil || !strings.HasPrefix(err.Error(), tt.prefix) {
				t.Errorf("Parse = %v, want prefix %q", err, tt.prefix)
			}
		})
	}
}

func TestDurationYAMLRoundTrip(t *testing.T) {
	cfg, err := Load(demoPath, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GracePeriod = Duration(1500 * time.Millisecond)
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "grace_period: 1.5s") {
		t.Errorf("marshalled config lacks Go duration syntax:\n%s", out)
	}
	back := mustParse(t, string(out), noEnv)
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, cfg)
	}
}

func TestDirectory(t *testing.T) {
	cfg, err := Load(demoPath, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDirectory(cfg)

	t.Run("keys", func(t *testing.T) {
		tests := []struct {
			id   string
			want KeyEntry
			ok   bool
		}{
			{"pk_demo", KeyEntry{MerchantID: "m_demo", Secret: "sk_demo", CanWrite: true, CanRead: true}, true},
			{"pk_demo2", KeyEntry{MerchantID: "m_demo", Secret: "sk_demo2", CanWrite: true, CanRead: true}, true},
			{"pk_other", KeyEntry{MerchantID: "m_other", Secret: "sk_other", CanWrite: true, CanRead: true}, true},
			{"pk_nope", KeyEntry{}, false},
			{"", KeyEntry{}, false},
			{"PK_DEMO", KeyEntry{}, false},
		}
		for _, tt := range tests {
			t.Run(tt.id, func(t *testing.T) {
				got, ok := d.Key(tt.id)
				if ok != tt.ok || got != tt.want {
					t.Errorf("Key(%q) = %+v, %v; want %+v, %v", tt.id, got, ok, tt.want, tt.ok)
				}
			})
		}
	})
	t.Run("terminals", func(t *testing.T) {
		tests := []struct {
			id   string
			want TerminalEntry
			ok   bool
		}{
			{"TERM-001", TerminalEntry{MerchantID: "m_demo", DeviceID: "TERM-001", Secret: "dk_term001", Label: "Front counter"}, true},
			{"TERM-003", TerminalEntry{MerchantID: "m_demo", DeviceID: "TERM-003", Secret: "dk_term003", Label: "Patio"}, true},
			{"OTHER-001", TerminalEntry{MerchantID: "m_other", DeviceID: "OTHER-001", Secret: "dk_other001", Label: "Till"}, true},
			{"TERM-999", TerminalEntry{}, false},
			{"term-001", TerminalEntry{}, false},
		}
		for _, tt := range tests {
			t.Run(tt.id, func(t *testing.T) {
				got, ok := d.Terminal(tt.id)
				if ok != tt.ok || got != tt.want {
					t.Errorf("Terminal(%q) = %+v, %v; want %+v, %v", tt.id, got, ok, tt.want, tt.ok)
				}
			})
		}
	})
	t.Run("merchants", func(t *testing.T) {
		m, ok := d.Merchant("m_other")
		if !ok || m.Name != "Other Shop" || len(m.Terminals) != 1 {
			t.Errorf("Merchant(m_other) = %+v, %v", m, ok)
		}
		if _, ok := d.Merchant("m_nope"); ok {
			t.Error("Merchant(m_nope) found")
		}
		ids := d.MerchantIDs()
		slices.Sort(ids)
		if want := []string{"m_demo", "m_other"}; !slices.Equal(ids, want) {
			t.Errorf("MerchantIDs = %v, want %v", ids, want)
		}
	})
	t.Run("merchant terminals in file order", func(t *testing.T) {
		var got []string
		for _, e := range d.Terminals("m_demo") {
			if e.MerchantID != "m_demo" {
				t.Errorf("terminal %s has merchant %s", e.DeviceID, e.MerchantID)
			}
			got = append(got, e.DeviceID+"/"+e.Label)
		}
		want := []string{"TERM-001/Front counter", "TERM-002/Back counter", "TERM-003/Patio"}
		if !slices.Equal(got, want) {
			t.Errorf("Terminals(m_demo) = %v, want %v", got, want)
		}
		if got := d.Terminals("m_nope"); got != nil {
			t.Errorf("Terminals(m_nope) = %v, want nil", got)
		}
	})
	t.Run("key ids", func(t *testing.T) {
		if got, want := d.KeyIDs("m_demo"), []string{"pk_demo", "pk_demo2"}; !slices.Equal(got, want) {
			t.Errorf("KeyIDs(m_demo) = %v, want %v", got, want)
		}
		if got := d.KeyIDs("m_nope"); got != nil {
			t.Errorf("KeyIDs(m_nope) = %v, want nil", got)
		}
	})
	t.Run("empty config", func(t *testing.T) {
		e := NewDirectory(Defaults())
		if _, ok := e.Key("pk_demo"); ok {
			t.Error("empty directory knows pk_demo")
		}
		if ids := e.MerchantIDs(); len(ids) != 0 {
			t.Errorf("MerchantIDs = %v", ids)
		}
	})
}

// The security settings (docs/protocol.md#credentials): scopes, TLS files, the memory
// limit and the rate limits, from the file and the environment.
func TestSecuritySettings(t *testing.T) {
	const merchants = `
merchants:
  - id: m1
    api_keys:
      - {id: k_rw, secret: s1}
      - {id: k_ro, secret: s2, scopes: [terminal:read]}
      - {id: k_w, secret: s3, scopes: [terminal:write]}
`
	cfg, err := Parse([]byte("memory_limit: 512MiB\nops_cookie_secure: true\nrate_limit: {key_rate: 5, key_burst: 7, trusted_proxies: [10.0.0.0/8, 192.0.2.1]}\n"+merchants), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MemoryLimit != 512<<20 || !cfg.OpsCookieSecure || cfg.RateLimit.KeyRate != 5 || cfg.RateLimit.KeyBurst != 7 ||
		cfg.RateLimit.TerminalRate != 20 || cfg.RateLimit.AuthFailureBurst != 100 || len(cfg.RateLimit.TrustedProxies) != 2 {
		t.Fatalf("parsed %+v", cfg)
	}
	d := NewDirectory(cfg)
	for id, want := range map[string]bool{"k_rw": true, "k_ro": false, "k_w": true} {
		if k, _ := d.Key(id); k.CanWrite != want || k.CanRead != (id != "k_w") {
			t.Errorf("%s: CanWrite %v CanRead %v, want %v %v", id, k.CanWrite, k.CanRead, want, id != "k_w")
		}
	}
	env := map[string]string{"TERMHUB_MEMORY_LIMIT": "1GiB", "TERMHUB_RATE_LIMIT_TERMINAL_RATE": "2.5",
		"TERMHUB_RATE_LIMIT_AUTH_FAILURE_BURST": "3", "TERMHUB_OPS_COOKIE_SECURE": "false", "TERMHUB_TLS_CERT_FILE": "c.pem", "TERMHUB_TLS_KEY_FILE": "k.pem"}
	cfg, err = Parse([]byte("ops_cookie_secure: true\n"+merchants), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MemoryLimit != 1<<30 || cfg.RateLimit.TerminalRate != 2.5 || cfg.RateLimit.AuthFailureBurst != 3 || cfg.OpsCookieSecure ||
		cfg.TLSCertFile != "c.pem" || cfg.TLSKeyFile != "k.pem" {
		t.Fatalf("from the environment: %+v", cfg)
	}
	for _, c := range []struct{ yaml, field string }{
		{"tls_cert_file: c.pem\n", "tls_key_file"},
		{"tls_key_file: k.pem\n", "tls_cert_file"},
		{"memory_limit: 10MiB\n", "memory_limit"},
		{"memory_limit: lots\n", "memory_limit"},
		{"rate_limit: {key_rate: 0}\n", "rate_limit.key_rate"},
		{"rate_limit: {terminal_burst: 0}\n", "rate_limit.terminal_burst"},
		{"rate_limit: {trusted_proxies: [10.0.0.0/8, proxy.local]}\n", "rate_limit.trusted_proxies[1]"},
		{merchants + "      - {id: k_x, secret: s4, scopes: [terminal:admin]}\n", "merchants[0].api_keys[3].scopes[0]"},
		{merchants + "      - {id: k_x, secret: s4, scopes: []}\n", "merchants[0].api_keys[3].scopes"},
	} {
		_, err := Parse([]byte(c.yaml), noEnv)
		if err == nil || !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("%q: %v, want an error naming %s", c.yaml, err, c.field)
		}
	}
	if _, err := Parse(nil, func(k string) string { return map[string]string{"TERMHUB_RATE_LIMIT_KEY_BURST": "many"}[k] }); err == nil ||
		!strings.Contains(err.Error(), "rate_limit.key_burst") {
		t.Errorf("a bad TERMHUB_RATE_LIMIT_KEY_BURST: %v", err)
	}
}
