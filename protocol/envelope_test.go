package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

var envelopeSeeds = []string{
	`{"action":"payment","requestId":"r1","amount":"12.50"}`,
	`{"requestId":7,"action":"ack","messageId":"1-0"}`,
	` { "ACTION" : "ack" , "RequestId" : {"a":[1,"}"]} } `,
	`{"action":"a","action":"b"}`,
	`{"act\u0069on":"payment"}`,
	`{"action":"pay\u006dent"}`,
	`{"action":null,"requestId":null}`,
	`{"action":12}`,
	`{}`,
	`[]`,
	`"x"`,
	`{"x":[{"y":"\\\""}],"action":"ack"}`,
	`{"requestId":-1.5e3,"action":"x"}`,
	`{"requestId":true}`,
}

// sameEnvelope checks scanEnvelope against json.Unmarshal, which it
// stands in for: whenever it answers, it answers what json.Unmarshal does.
func sameEnvelope(t *testing.T, data []byte) {
	t.Helper()
	if !json.Valid(data) {
		return // decode rejects it before
	}
	trimmed := bytes.TrimSpace(data)
	got, ok := scanEnvelope(trimmed)
	var want envelope
	err := json.Unmarshal(trimmed, &want)
	if !ok {
		if err == nil && len(trimmed) > 0 && trimmed[0] == '{' && !bytes.Contains(trimmed, []byte(`\`)) {
			t.Fatalf("scanEnvelope gave up on the object %s", data)
		}
		return
	}
	if err != nil {
		t.Fatalf("scanEnvelope read %s, which json.Unmarshal refuses: %v", data, err)
	}
	if !bytes.Equal(got.Action, want.Action) || !bytes.Equal(got.RequestID, want.RequestID) {
		t.Fatalf("%s: scanEnvelope {%s %s}, json.Unmarshal {%s %s}", data, got.Action, got.RequestID, want.Action, want.RequestID)
	}
	if len(got.Action) > 0 {
		s, sok := actionString(got.Action)
		var ws string
		werr := json.Unmarshal(got.Action, &ws)
		if sok != (werr == nil) || s != ws {
			t.Fatalf("action %s: actionString %q %v, json.Unmarshal %q %v", got.Action, s, sok, ws, werr)
		}
	}
}

func TestScanEnvelope(t *testing.T) {
	for _, s := range envelopeSeeds {
		sameEnvelope(t, []byte(s))
	}
	env, ok := scanEnvelope([]byte(` { "ACTION" : "ack" , "RequestId" : {"a":[1,"}"]} } `))
	if !ok || string(env.Action) != `"ack"` || string(env.RequestID) != `{"a":[1,"}"]}` {
		t.Fatalf("got %s %s %v", env.Action, env.RequestID, ok)
	}
	if _, ok := scanEnvelope([]byte(`{"act\u0069on":"payment"}`)); ok {
		t.Fatal("a key with an escape must be left to json.Unmarshal")
	}
}

func FuzzScanEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds {
		f.Add([]byte(s))
	}
	for _, s := range posSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { sameEnvelope(t, data) })
}
