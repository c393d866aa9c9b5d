package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	kaSecret = "sk_demo"
	kaBody   = `{"terminalId":"TERM-001","amountMinor":1250,"currency":"USD","reference":"order-1"}`
	kaTS     = "1700000000"
	// Computed outside Go with:
	//   printf 'POST\n/v1/payments\n1700000000\n%s' "$(printf '%s' "$BODY" | sha256sum | cut -d' ' -f1)" |
	//     openssl dgst -sha256 -hmac sk_demo
	kaBodyHash = "aea43bb977ff1a8b84e64fcd198a822ff80f5a0315b8facff0467e1040dc1b0b"
	kaSig      = "43f43cc8a4d4b8c171ea6bec247cbeb05de43ba6b40088c22edd582f0b04f9fe"
	// The same for GET /v1/pos/ws?client=desk with an empty body.
	kaEmptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	kaGetSig    = "c629bf5404c010dd2882862fa48b332b6518505ee4bec9cb620ff6e52b118442"
)

// independentSign computes the contract's signature without any code of the
// package under test.
func independentSign(secret, method, path, ts string, body []byte) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(method + "\n" + path + "\n" + ts + "\n" + hex.EncodeToString(sum[:])))
	return hex.EncodeToString(m.Sum(nil))
}

func TestSignKnownAnswer(t *testing.T) {
	tests := []struct {
		name, method, path string
		body               []byte
		wantHash, wantSig  string
	}{
		{"post with body", "POST", "/v1/payments", []byte(kaBody), kaBodyHash, kaSig},
		{"get nil body", "GET", "/v1/pos/ws?client=desk", nil, kaEmptyHash, kaGetSig},
		{"get empty body", "GET", "/v1/pos/ws?client=desk", []byte{}, kaEmptyHash, kaGetSig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantSTS := tt.method + "\n" + tt.path + "\n" + kaTS + "\n" + tt.wantHash
			if got := StringToSign(tt.method, tt.path, kaTS, tt.body); got != wantSTS {
				t.Errorf("StringToSign = %q, want %q", got, wantSTS)
			}
			if got := Sign(kaSecret, tt.method, tt.path, kaTS, tt.body); got != tt.wantSig {
				t.Errorf("Sign = %s, want %s", got, tt.wantSig)
			}
			if got := independentSign(kaSecret, tt.method, tt.path, kaTS, tt.body); got != tt.wantSig {
				t.Errorf("independent signature = %s, want %s", got, tt.wantSig)
			}
			if !VerifySignature(kaSecret, tt.method, tt.path, kaTS, tt.body, tt.wantSig) {
				t.Error("VerifySignature refused the known answer")
			}
		})
	}
}

func TestSignMatchesIndependent(t *testing.T) {
	tests := []struct{ secret, method, path, ts, body string }{
		{"s", "GET", "/", "0", ""},
		{"dk_term001", "GET", "/v1/terminal/ws", "1712345678", ""},
		{"sk_x", "POST", "/v1/transactions/txn_1/refund", "1712345678", `{"amountMinor":100}`},
		{"ключ", "DELETE", "/v1/a%2Fb?x=1&y=%20", "-5", "\x00\xff binary"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			got := Sign(tt.secret, tt.method, tt.path, tt.ts, []byte(tt.body))
			want := independentSign(tt.secret, tt.method, tt.path, tt.ts, []byte(tt.body))
			if got != want {
				t.Errorf("Sign = %s, want %s", got, want)
			}
			if len(got) != 64 || strings.ToLower(got) != got {
				t.Errorf("signature %q is not 64 lower-case hex digits", got)
			}
		})
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(kaBody)
	tests := []struct {
		name, secret, method, path, ts string
		body                           []byte
		sig                            string
		want                           bool
	}{
		{"valid", kaSecret, "POST", "/v1/payments", kaTS, body, kaSig, true},
		{"upper-case hex", kaSecret, "POST", "/v1/payments", kaTS, body, strings.ToUpper(kaSig), true},
		{"mixed-case hex", kaSecret, "POST", "/v1/payments", kaTS, body, strings.ToUpper(kaSig[:32]) + kaSig[32:], true},
		{"tampered method", kaSecret, "PUT", "/v1/payments", kaTS, body, kaSig, false},
		{"lower-case method", kaSecret, "post", "/v1/payments", kaTS, body, kaSig, false},
		{"tampered path", kaSecret, "POST", "/v1/payments/", kaTS, body, kaSig, false},
		{"added query", kaSecret, "POST", "/v1/payments?x=1", kaTS, body, kaSig, false},
		{"tampered body", kaSecret, "POST", "/v1/payments", kaTS, []byte(strings.Replace(kaBody, "1250", "1251", 1)), kaSig, false},
		{"empty body", kaSecret, "POST", "/v1/payments", kaTS, nil, kaSig, false},
		{"body with trailing newline", kaSecret, "POST", "/v1/payments", kaTS, append([]byte(kaBody), '\n'), kaSig, false},
		{"tampered timestamp", kaSecret, "POST", "/v1/payments", "1700000001", body, kaSig, false},
		{"wrong secret", "sk_other", "POST", "/v1/payments", kaTS, body, kaSig, false},
		{"empty signature", kaSecret, "POST", "/v1/payments", kaTS, body, "", false},
		{"truncated signature", kaSecret, "POST", "/v1/payments", kaTS, body, kaSig[:63], false},
		{"extended signature", kaSecret, "POST", "/v1/payments", kaTS, body, kaSig + "0", false},
		{"one digit flipped", kaSecret, "POST", "/v1/payments", kaTS, body, "53" + kaSig[2:], false},
		{"base64 not hex", kaSecret, "POST", "/v1/payments", kaTS, body, "Q/Q8yKTUuMFx6mvsJHy+sF3kO6a0AIjCLt1YLwsE+f4=", false},
		{"whitespace around", kaSecret, "POST", "/v1/payments", kaTS, body, " " + kaSig, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifySignature(tt.secret, tt.method, tt.path, tt.ts, tt.body, tt.sig); got != tt.want {
				t.Errorf("VerifySignature = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTimestamp(t *testing.T) {
	now := time.Unix(1700000000, 999_000_000)
	if got := Timestamp(now); got != "1700000000" {
		t.Errorf("Timestamp = %q, want unix seconds 1700000000", got)
	}
	if got := Timestamp(now.In(time.FixedZone("X", 5*3600))); got != "1700000000" {
		t.Errorf("Timestamp depends on the zone: %q", got)
	}
}

func TestCheckTimestamp(t *testing.T) {
	now := time.Unix(1700000000, 0)
	at := func(d int64) string { return strconv.FormatInt(now.Unix()+d, 10) }
	tests := []struct {
		name    string
		ts      string
		ok      bool
		problem string // substring of the problem when !ok
	}{
		{"now", at(0), true, ""},
		{"299 s ago", at(-299), true, ""},
		{"299 s ahead", at(299), true, ""},
		{"300 s ago", at(-300), true, ""},
		{"300 s ahead", at(300), true, ""},
		{"301 s ago", at(-301), false, "stale"},
		{"301 s ahead", at(301), false, "stale"},
		{"a day ago", at(-86400), false, "stale"},
		{"zero", "0", false, "stale"},
		{"max int64", "9223372036854775807", false, "stale"},
		{"min int64", "-9223372036854775808", false, "stale"},
		{"milliseconds", at(0) + "000", false, "stale"},
		{"empty", "", false, "unix seconds"},
		{"words", "yesterday", false, "unix seconds"},
		{"fraction", at(0) + ".5", false, "unix seconds"},
		{"leading space", " " + at(0), false, "unix seconds"},
		{"RFC 3339", now.UTC().Format(time.RFC3339), false, "unix seconds"},
		{"overflow", "99999999999999999999", false, "unix seconds"},
		{"hex", "0x6553f100", false, "unix seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, problem := CheckTimestamp(tt.ts, now)
			if ok != tt.ok {
				t.Fatalf("CheckTimestamp(%q) ok = %v (%q), want %v", tt.ts, ok, problem, tt.ok)
			}
			if ok && problem != "" {
				t.Errorf("ok with problem %q", problem)
			}
			if !ok && !strings.Contains(problem, tt.problem) {
				t.Errorf("problem = %q, want it to mention %q", problem, tt.problem)
			}
		})
	}
}

func TestSignedPath(t *testing.T) {
	tests := []struct {
		name      string
		rawURL    string
		queryForm bool
		want      string
	}{
		{"no query", "http://h/v1/pos/ws", false, "/v1/pos/ws"},
		{"no query, query form", "http://h/v1/pos/ws", true, "/v1/pos/ws"},
		{"header form keeps raw query", "http://h/v1/transactions?status=COMPLETED&limit=10", false, "/v1/transactions?status=COMPLETED&limit=10"},
		{"header form keeps credential names", "http://h/v1/pos/ws?apiKey=pk&x=1", false, "/v1/pos/ws?apiKey=pk&x=1"},
		{"header form keeps order and escapes", "http://h/v1/x?b=2&a=%20&c=x%2By", false, "/v1/x?b=2&a=%20&c=x%2By"},
		{"escaped path", "http://h/v1/a%2Fb/c", false, "/v1/a%2Fb/c"},
		{"only credentials", "http://h/v1/pos/ws?apiKey=pk&timestamp=1&signature=ab", true, "/v1/pos/ws"},
		{"terminal credentials", "http://h/v1/terminal/ws?deviceId=T1&timestamp=1&signature=ab", true, "/v1/terminal/ws"},
		{"keeps others in order", "http://h/v1/pos/ws?b=2&apiKey=pk&a=1&timestamp=1&z=3&signature=ab", true, "/v1/pos/ws?b=2&a=1&z=3"},
		{"credentials first", "http://h/v1/pos/ws?signature=ab&timestamp=1&apiKey=pk&client=desk&v=2", true, "/v1/pos/ws?client=desk&v=2"},
		{"keeps values escaped as sent", "http://h/v1/pos/ws?name=a%20b&apiKey=pk&q=x%2By", true, "/v1/pos/ws?name=a%20b&q=x%2By"},
		{"escaped credential name", "http://h/v1/pos/ws?api%4Bey=pk&x=1", true, "/v1/pos/ws?x=1"},
		{"credential without value", "http://h/v1/pos/ws?signature&x=1", true, "/v1/pos/ws?x=1"},
		{"repeated parameters", "http://h/v1/pos/ws?x=1&x=2&timestamp=1&x=3", true, "/v1/pos/ws?x=1&x=2&x=3"},
		{"similar names kept", "http://h/v1/pos/ws?apiKeys=1&Timestamp=2&sig=3", true, "/v1/pos/ws?apiKeys=1&Timestamp=2&sig=3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.rawURL)
			if err != nil {
				t.Fatal(err)
			}
			if got := SignedPath(u, tt.queryForm); got != tt.want {
				t.Errorf("SignedPath(%s, %v) = %q, want %q", tt.rawURL, tt.queryForm, got, tt.want)
			}
		})
	}
}

func TestSignURLVerifies(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name, rawURL, idParam, id, secret string
		wantPath                          string
	}{
		{"pos no query", "ws://h/v1/pos/ws", QueryAPIKey, "pk_demo", "sk_demo", "/v1/pos/ws"},
		{"pos with query", "ws://h/v1/pos/ws?client=desk&v=2", QueryAPIKey, "pk_demo", "sk_demo", "/v1/pos/ws?client=desk&v=2"},
		{"terminal", "wss://h/v1/terminal/ws", QueryDeviceID, "TERM-001", "dk_term001", "/v1/terminal/ws"},
		{"terminal with escaped query", "wss://h/v1/terminal/ws?fw=1.2%2Bb&x=a%20b", QueryDeviceID, "TERM 001/x", "dk", "/v1/terminal/ws?fw=1.2%2Bb&x=a%20b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.rawURL)
			if err != nil {
				t.Fatal(err)
			}
			SignURL(u, tt.idParam, tt.id, tt.secret, now)

			// What a hub sees: parse the URL as sent.
			got, err := url.Parse(u.String())
			if err != nil {
				t.Fatal(err)
			}
			q := got.Query()
			if q.Get(tt.idParam) != tt.id {
				t.Errorf("%s = %q, want %q", tt.idParam, q.Get(tt.idParam), tt.id)
			}
			ts, sig := q.Get(QueryTimestamp), q.Get(QuerySignature)
			if ts != "1700000000" {
				t.Errorf("timestamp = %q", ts)
			}
			if ok, problem := CheckTimestamp(ts, now.Add(10*time.Second)); !ok {
				t.Errorf("CheckTimestamp: %s", problem)
			}
			path := SignedPath(got, true)
			if path != tt.wantPath {
				t.Errorf("SignedPath = %q, want %q", path, tt.wantPath)
			}
			if !VerifySignature(tt.secret, "GET", path, ts, nil, sig) {
				t.Error("signature made by SignURL does not verify")
			}
			if want := independentSign(tt.secret, "GET", tt.wantPath, ts, nil); sig != want {
				t.Errorf("signature = %s, want %s", sig, want)
			}
			if VerifySignature(tt.secret+"x", "GET", path, ts, nil, sig) {
				t.Error("signature verifies under another secret")
			}
			if VerifySignature(tt.secret, "GET", path+"&extra=1", ts, nil, sig) {
				t.Error("signature verifies with an added parameter")
			}
			for k, vs := range q {
				for _, v := range vs {
					if v == tt.secret {
						t.Errorf("URL carries the secret in %s", k)
					}
				}
			}
		})
	}
}
