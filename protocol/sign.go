package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Credential header and query parameter names (docs/protocol.md#credentials).
const (
	HeaderAPIKey    = "X-Api-Key"
	HeaderDeviceID  = "X-Device-Id"
	HeaderTimestamp = "X-Timestamp"
	HeaderSignature = "X-Signature"
	HeaderSession   = "X-Session-Id"
	HeaderIdemKey   = "Idempotency-Key"

	QueryAPIKey    = "apiKey"
	QueryDeviceID  = "deviceId"
	QueryTimestamp = "timestamp"
	QuerySignature = "signature"

	// MaxClockSkew is how far a request's timestamp may be from the hub's clock.
	MaxClockSkew = 300 * time.Second
)

var emptyBodyHash = sha256.Sum256(nil)

// StringToSign is the canonical text a request signature covers:
// METHOD "\n" PATH_WITH_QUERY "\n" TIMESTAMP "\n" hex(SHA256(body)).
func StringToSign(method, pathWithQuery, timestamp string, body []byte) string {
	sum := emptyBodyHash
	if len(body) > 0 {
		sum = sha256.Sum256(body)
	}
	return method + "\n" + pathWithQuery + "\n" + timestamp + "\n" + hex.EncodeToString(sum[:])
}

// Sign returns hex(HMAC-SHA256(secret, StringToSign(...))).
func Sign(secret, method, pathWithQuery, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(StringToSign(method, pathWithQuery, timestamp, body)))
	return hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports, in constant time, whether sig is the signature of
// the request under secret.
func VerifySignature(secret, method, pathWithQuery, timestamp string, body []byte, sig string) bool {
	want := Sign(secret, method, pathWithQuery, timestamp, body)
	return hmac.Equal([]byte(want), []byte(strings.ToLower(sig)))
}

// Timestamp formats t as the unix seconds the X-Timestamp header carries.
func Timestamp(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// CheckTimestamp parses ts and checks it is within MaxClockSkew of now.
// The returned string says what is wrong, for the 401 body.
func CheckTimestamp(ts string, now time.Time) (ok bool, problem string) {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false, "timestamp is not unix seconds"
	}
	d := now.Sub(time.Unix(sec, 0))
	if d > MaxClockSkew || d < -MaxClockSkew {
		return false, "stale timestamp: more than 300 s from the server clock"
	}
	return true, ""
}

// SignedPath is the PATH_WITH_QUERY a request is signed over. With header
// credentials it is the escaped path plus the raw query as sent. With query
// credentials (queryForm) the three credential parameters are removed and
// the remaining parameters keep their order as sent.
func SignedPath(u *url.URL, queryForm bool) string {
	p := u.EscapedPath()
	q := u.RawQuery
	if queryForm {
		q = stripCredentialParams(q)
	}
	if q != "" {
		p += "?" + q
	}
	return p
}

func stripCredentialParams(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, part := range parts {
		k, _, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		switch k {
		case QueryAPIKey, QueryDeviceID, QueryTimestamp, QuerySignature:
			continue
		}
		kept = append(kept, part)
	}
	return strings.Join(kept, "&")
}

// SignURL adds query-form credentials to u (for clients that cannot set
// headers on a WebSocket upgrade). idParam is QueryAPIKey or QueryDeviceID.
func SignURL(u *url.URL, idParam, id, secret string, now time.Time) {
	ts := Timestamp(now)
	sig := Sign(secret, "GET", SignedPath(u, true), ts, nil)
	extra := url.Values{idParam: {id}, QueryTimestamp: {ts}, QuerySignature: {sig}}.Encode()
	if u.RawQuery == "" {
		u.RawQuery = extra
	} else {
		u.RawQuery += "&" + extra
	}
}
