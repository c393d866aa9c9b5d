package apidocs

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/ops"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/webhook"
)

const (
	asyncAPIFile = "docs/asyncapi.yaml"
	openAPIFile  = "docs/openapi.yaml"
	protocolFile = "docs/protocol.md"
	opsFile      = "docs/ops.md" // written separately; checked when present
)

// ---- the action → Go type table ----

// message is one WebSocket message the code defines.
type message struct {
	channel string // the asyncapi channel: pos, terminal or ops
	inbound bool   // a client sends it (the hub's receive); else the hub sends it
	action  string
	typ     reflect.Type
	// unused are omitempty fields of typ that this action never carries
	// (typ is shared by several actions).
	unused []string
}

// The request type of every client action. DecodePOS and DecodeTerminal have
// the same tables (protocol/decode.go); TestRequestTypesMatchDecoder keeps
// them in step.
var (
	posRequestTypes = map[string]reflect.Type{
		protocol.ActionPayment:               reflect.TypeFor[protocol.PaymentRequest](),
		protocol.ActionCancel:                reflect.TypeFor[protocol.CancelRequest](),
		protocol.ActionRefund:                reflect.TypeFor[protocol.RefundRequest](),
		protocol.ActionVoid:                  reflect.TypeFor[protocol.VoidRequest](),
		protocol.ActionCapture:               reflect.TypeFor[protocol.CaptureRequest](),
		protocol.ActionSignatureVerification: reflect.TypeFor[protocol.SignatureVerificationRequest](),
		protocol.ActionGetTransactionStatus:  reflect.TypeFor[protocol.GetTransactionStatusRequest](),
		protocol.ActionListTerminals:         reflect.TypeFor[protocol.ListTerminalsRequest](),
		protocol.ActionAck:                   reflect.TypeFor[protocol.AckRequest](),
	}
	terminalMessageTypes = map[string]reflect.Type{
		protocol.ActionCommandReceived:   reflect.TypeFor[protocol.CommandReceived](),
		protocol.ActionPaymentProgress:   reflect.TypeFor[protocol.PaymentProgress](),
		protocol.ActionSignatureRequired: reflect.TypeFor[protocol.SignatureRequiredEvent](),
		protocol.ActionPaymentResult:     reflect.TypeFor[protocol.PaymentResult](),
		protocol.ActionVoidResult:        reflect.TypeFor[protocol.VoidResult](),
		protocol.ActionCaptureResult:     reflect.TypeFor[protocol.CaptureResult](),
	}
)

// voidOnly are the POSEvent fields only paymentVoided carries.
var voidOnly = []string{"reasonCode", "reason", "originalPaymentResponse"}

// messages is every message of the three WebSockets with its Go type.
func messages(t *testing.T) []message {
	t.Helper()
	var out []message
	for _, a := range protocol.POSActions {
		typ, ok := posRequestTypes[a]
		if !ok {
			t.Errorf("POS action %q has no request type in posRequestTypes (apidocs_test.go): add it so that its schema is checked", a)
			continue
		}
		out = append(out, message{channel: "pos", inbound: true, action: a, typ: typ})
	}
	for _, a := range protocol.TerminalActions {
		typ, ok := terminalMessageTypes[a]
		if !ok {
			t.Errorf("terminal action %q has no type in terminalMessageTypes (apidocs_test.go): add it so that its schema is checked", a)
			continue
		}
		out = append(out, message{channel: "terminal", inbound: true, action: a, typ: typ})
	}

	out = append(out, message{channel: "pos", action: protocol.ActionConnected, typ: reflect.TypeFor[protocol.POSConnected]()})
	for _, a := range protocol.POSActions {
		if a == protocol.ActionAck {
			continue // no reply unless it fails
		}
		m := message{channel: "pos", action: protocol.ResponseAction(a), typ: reflect.TypeFor[protocol.Response]()}
		switch a {
		case protocol.ActionListTerminals:
			m.typ = reflect.TypeFor[protocol.TerminalsReply]()
		case protocol.ActionPayment:
		default:
			m.unused = []string{"created"} // hub/ws.go sets created for payment only
		}
		out = append(out, m)
	}
	posEvent := reflect.TypeFor[protocol.POSEvent]()
	command := reflect.TypeFor[protocol.TerminalCommand]()
	errorReply := reflect.TypeFor[protocol.ErrorReply]()
	forceDisconnect := reflect.TypeFor[protocol.ForceDisconnect]()
	out = append(out,
		message{channel: "pos", action: protocol.ActionError, typ: errorReply},
		message{channel: "pos", action: protocol.ActionForceDisconnect, typ: forceDisconnect},
		message{channel: "pos", action: protocol.ActionTerminalStatusUpdate, typ: reflect.TypeFor[protocol.TerminalStatusUpdate]()},
		message{channel: "pos", action: protocol.ActionPaymentStatusUpdate, typ: posEvent, unused: voidOnly},
		message{channel: "pos", action: protocol.ActionSignatureRequired, typ: posEvent, unused: voidOnly},
		message{channel: "pos", action: protocol.ActionPaymentComplete, typ: posEvent, unused: voidOnly},
		message{channel: "pos", action: protocol.ActionPaymentVoided, typ: posEvent},

		message{channel: "terminal", action: protocol.ActionConnected, typ: reflect.TypeFor[protocol.TerminalConnected]()},
		message{channel: "terminal", action: protocol.ActionStartPayment, typ: reflect.TypeFor[protocol.StartPayment]()},
		message{channel: "terminal", action: protocol.ActionCancelPayment, typ: command, unused: []string{"reason", "amountMinor", "accepted"}},
		message{channel: "terminal", action: protocol.ActionVoidPayment, typ: command, unused: []string{"amountMinor", "accepted"}},
		message{channel: "terminal", action: protocol.ActionCapturePayment, typ: command, unused: []string{"reason", "accepted"}},
		message{channel: "terminal", action: protocol.ActionSignatureVerified, typ: command, unused: []string{"reason", "amountMinor"}},
		message{channel: "terminal", action: protocol.ActionResultAck, typ: command, unused: []string{"reason", "amountMinor", "accepted"}},
		message{channel: "terminal", action: protocol.ActionError, typ: errorReply},
		message{channel: "terminal", action: protocol.ActionForceDisconnect, typ: forceDisconnect},

		message{channel: "ops", action: ops.ActionSnapshot, typ: reflect.TypeFor[ops.Snapshot]()},
		message{channel: "ops", action: protocol.ActionTerminalStatusUpdate, typ: reflect.TypeFor[ops.StatusUpdate]()},
		message{channel: "ops", action: ops.ActionConnectionUpdate, typ: reflect.TypeFor[hub.ConnectionUpdate]()},
		message{channel: "ops", action: ops.ActionTransactionUpdate, typ: reflect.TypeFor[ops.TransactionUpdate]()},
		message{channel: "ops", action: ops.ActionHeartbeats, typ: reflect.TypeFor[ops.Heartbeats]()},
		message{channel: "ops", action: ops.ActionConflicts, typ: reflect.TypeFor[ops.Conflicts]()},
	)
	return out
}

// ---- the AsyncAPI document's structure ----

// channel is one asyncapi channel with its messages by key (= action).
type channel struct {
	key, address string
	messages     map[string]map[string]any // resolved Message Objects
	hubSends     map[string]bool           // message keys of send operations and of receive operations' replies
	hubReceives  map[string]bool
}

func channels(t *testing.T, d *document) map[string]*channel {
	t.Helper()
	out := map[string]*channel{}
	for key, v := range d.get("channels") {
		c := &channel{key: key, messages: map[string]map[string]any{}, hubSends: map[string]bool{}, hubReceives: map[string]bool{}}
		m := d.deref(v)
		c.address, _ = m["address"].(string)
		msgs, _ := m["messages"].(map[string]any)
		for k, mv := range msgs {
			msg := d.deref(mv)
			c.messages[k] = msg
			if name, _ := msg["name"].(string); name != k {
				t.Errorf("%s: channel %s: message key %q has name %q; the key must be the action (= name)", d.name, key, k, name)
			}
		}
		out[key] = c
	}
	refKey := func(op string, ref any) (string, string) {
		r, _ := d.deref0(ref)["$ref"].(string)
		ch, msg, ok := strings.Cut(strings.TrimPrefix(r, "#/channels/"), "/messages/")
		if !strings.HasPrefix(r, "#/channels/") || !ok {
			t.Errorf("%s: operation %s: message reference %q does not point into a channel's messages", d.name, op, r)
		}
		return ch, msg
	}
	chanOf := func(op string, ref any) *channel {
		r, _ := d.deref0(ref)["$ref"].(string)
		c := out[strings.TrimPrefix(r, "#/channels/")]
		if c == nil {
			t.Errorf("%s: operation %s: channel reference %q is not a channel", d.name, op, r)
		}
		return c
	}
	for name, v := range d.get("operations") {
		op := d.deref(v)
		c := chanOf(name, op["channel"])
		if c == nil {
			continue
		}
		sends := op["action"] == "send"
		if !sends && op["action"] != "receive" {
			t.Errorf("%s: operation %s: action %v, want send or receive", d.name, name, op["action"])
		}
		if len(list(op["security"])) == 0 {
			t.Errorf("%s: operation %s has no security", d.name, name)
		}
		mark := func(ch *channel, refs []any, hubSends bool) {
			for _, r := range refs {
				cn, k := refKey(name, r)
				if cn != ch.key {
					t.Errorf("%s: operation %s refers to message %s of channel %s, not of its own channel %s", d.name, name, k, cn, ch.key)
					continue
				}
				if _, ok := ch.messages[k]; !ok {
					t.Errorf("%s: operation %s refers to message %q that channel %s does not have", d.name, name, k, ch.key)
				}
				if hubSends {
					ch.hubSends[k] = true
				} else {
					ch.hubReceives[k] = true
				}
			}
		}
		mark(c, list(op["messages"]), sends)
		if reply, ok := op["reply"].(map[string]any); ok {
			rc := c
			if reply["channel"] != nil {
				rc = chanOf(name, reply["channel"])
			}
			if rc != nil {
				mark(rc, list(reply["messages"]), !sends)
			}
		}
	}
	for _, c := range out {
		for k := range c.messages {
			if !c.hubSends[k] && !c.hubReceives[k] {
				t.Errorf("%s: message %s of channel %s is in no operation", d.name, k, c.key)
			}
		}
	}
	return out
}

// deref0 is the node itself as an object (no reference followed).
func (d *document) deref0(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// mentioned reports whether a Markdown text names an action: in backquotes
// or as the action of a JSON example.
func mentioned(md, action string) bool {
	if strings.Contains(md, "`"+action+"`") {
		return true
	}
	return regexp.MustCompile(`"action"\s*:\s*"` + regexp.QuoteMeta(action) + `"`).MatchString(md)
}

// ---- (a) every action is documented ----

func TestEveryActionIsDocumented(t *testing.T) {
	d := loadDoc(t, asyncAPIFile)
	chans := channels(t, d)
	md := readRepoFile(t, protocolFile)

	names := map[string]bool{}
	for _, c := range chans {
		for k := range c.messages {
			names[k] = true
		}
	}

	// Every Action* string constant of protocol/actions.go, whatever list it
	// is in: a constant added without documentation fails here.
	var consts []constant
	for _, c := range stringConstants(parseFile(t, "protocol/actions.go")) {
		if strings.HasPrefix(c.name, "Action") {
			consts = append(consts, c)
		}
	}
	if len(consts) < 20 {
		t.Fatalf("found only %d Action* constants in protocol/actions.go; has the file moved?", len(consts))
	}
	for _, c := range consts {
		if !names[c.value] {
			t.Errorf("protocol.%s = %q is not a message of %s", c.name, c.value, asyncAPIFile)
		}
		if !mentioned(md, c.value) {
			t.Errorf("protocol.%s = %q is not mentioned (as `%s`) in %s", c.name, c.value, c.value, protocolFile)
		}
	}

	// The lists the hub decodes with, and the reply of each POS action.
	for _, a := range protocol.POSActions {
		if !chans["pos"].hubReceives[a] {
			t.Errorf("POS action %q is not a message the hub receives on channel pos", a)
		}
		if a == protocol.ActionAck {
			continue
		}
		r := protocol.ResponseAction(a)
		if !chans["pos"].hubSends[r] {
			t.Errorf("%q, the reply to %q, is not a message the hub sends on channel pos", r, a)
		}
		if !mentioned(md, r) {
			t.Errorf("%q, the reply to %q, is not mentioned in %s", r, a, protocolFile)
		}
	}
	for _, a := range protocol.TerminalActions {
		if !chans["terminal"].hubReceives[a] {
			t.Errorf("terminal action %q is not a message the hub receives on channel terminal", a)
		}
	}

	// The ops feed's own actions (package ops).
	var opsMD string
	if fileExists(t, opsFile) {
		opsMD = readRepoFile(t, opsFile)
	}
	for _, c := range stringConstants(parsePackage(t, "ops")...) {
		if !strings.HasPrefix(c.name, "Action") {
			continue
		}
		if !chans["ops"].hubSends[c.value] {
			t.Errorf("ops.%s = %q is not a message the hub sends on channel ops", c.name, c.value)
		}
		if opsMD != "" && !mentioned(opsMD, c.value) {
			t.Errorf("ops.%s = %q is not mentioned in %s", c.name, c.value, opsFile)
		}
	}

	// The table of this test covers every constant, and every documented
	// message is one the code has, in the documented direction.
	rows := messages(t)
	inTable := map[string]bool{}
	byChannel := map[string]bool{}
	for _, m := range rows {
		inTable[m.action] = true
		byChannel[m.channel+"/"+m.action] = true
		c := chans[m.channel]
		if c == nil {
			t.Fatalf("%s has no channel %q", asyncAPIFile, m.channel)
		}
		if m.inbound && !c.hubReceives[m.action] {
			t.Errorf("channel %s: %q (%s) is not a message the hub receives", m.channel, m.action, typeName(m.typ))
		}
		if !m.inbound && !c.hubSends[m.action] {
			t.Errorf("channel %s: %q (%s) is not a message the hub sends", m.channel, m.action, typeName(m.typ))
		}
	}
	for _, c := range consts {
		if !inTable[c.value] {
			t.Errorf("protocol.%s = %q has no row in messages() (apidocs_test.go): add its Go type so that its schema is checked", c.name, c.value)
		}
	}
	for _, c := range chans {
		for k := range c.messages {
			if !byChannel[c.key+"/"+k] {
				t.Errorf("%s documents %q on channel %s, but the code has no such message there", asyncAPIFile, k, c.key)
			}
		}
	}
}

// TestRequestTypesMatchDecoder checks the table above against the maps
// protocol.DecodePOS and DecodeTerminal use (protocol/decode.go).
func TestRequestTypesMatchDecoder(t *testing.T) {
	f := parseFile(t, "protocol/decode.go")
	values := map[string]string{}
	for _, c := range stringConstants(parsePackage(t, "protocol")...) {
		values[c.name] = c.value
	}
	for mapName, want := range map[string]map[string]reflect.Type{"posTypes": posRequestTypes, "terminalTypes": terminalMessageTypes} {
		got := map[string]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok || len(vs.Names) != 1 || vs.Names[0].Name != mapName || len(vs.Values) != 1 {
				return true
			}
			lit, _ := vs.Values[0].(*ast.CompositeLit)
			if lit == nil {
				return false
			}
			for _, e := range lit.Elts {
				kv := e.(*ast.KeyValueExpr)
				key, _ := kv.Key.(*ast.Ident)
				var typ string
				ast.Inspect(kv.Value, func(n ast.Node) bool {
					if call, ok := n.(*ast.CallExpr); ok {
						if fn, ok := call.Fun.(*ast.Ident); ok && fn.Name == "new" && len(call.Args) == 1 {
							if id, ok := call.Args[0].(*ast.Ident); ok {
								typ = "protocol." + id.Name
							}
						}
					}
					return typ == ""
				})
				if key != nil {
					got[values[key.Name]] = typ
				}
			}
			return false
		})
		if len(got) == 0 {
			t.Fatalf("protocol/decode.go: map %s not found", mapName)
		}
		for a, typ := range got {
			if w, ok := want[a]; !ok || typeName(w) != typ {
				t.Errorf("protocol/decode.go %s decodes %q into %s; this test's table says %v", mapName, a, typ, w)
			}
		}
		for a := range want {
			if _, ok := got[a]; !ok {
				t.Errorf("this test's table has %q, which protocol/decode.go %s does not decode", a, mapName)
			}
		}
	}
}

// envelopeFields are the JSON fields every client frame has besides its body
// (protocol/decode.go, type envelope).
func envelopeFields(t *testing.T) []string {
	t.Helper()
	var out []string
	ast.Inspect(parseFile(t, "protocol/decode.go"), func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "envelope" {
			return true
		}
		for _, f := range ts.Type.(*ast.StructType).Fields.List {
			if f.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(f.Tag.Value)
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
			out = append(out, name)
		}
		return false
	})
	if !slices.Contains(out, "action") {
		t.Fatalf("protocol/decode.go: type envelope with an action field not found (got %v)", out)
	}
	return out
}

// ---- (b) every message's schema has the fields of its Go type ----

// checkFields compares a schema with the JSON fields of typ (plus the
// envelope fields of a client frame). Properties and fields must be the same
// set, less the unused ones; required properties must be fields; a field the
// hub always sends (no omitempty) must be required.
func checkFields(t *testing.T, d *document, label string, schema any, typ reflect.Type, unused, envelope []string, inbound bool) {
	t.Helper()
	fields := map[string]goField{}
	for _, f := range jsonFields(typ) {
		fields[f.name] = f
	}
	for _, e := range envelope {
		if _, ok := fields[e]; !ok {
			fields[e] = goField{name: e, omitempty: e != "action"}
		}
	}
	props := d.props(schema)
	req := d.required(schema)
	if len(props) == 0 {
		t.Errorf("%s: %s: the schema has no properties", d.name, label)
		return
	}
	skip := map[string]bool{}
	for _, u := range unused {
		skip[u] = true
		f, ok := fields[u]
		switch {
		case !ok:
			t.Errorf("%s: this test lists %q as unused, but %s has no such field", label, u, typeName(typ))
		case !f.omitempty:
			t.Errorf("%s: %s.%s has no omitempty, so it is always sent: it cannot be unused", label, typeName(typ), u)
		}
		if _, ok := props[u]; ok {
			t.Errorf("%s: %s: property %q is documented, but this message never carries it", d.name, label, u)
		}
	}
	for _, name := range keys(fields) {
		if skip[name] {
			continue
		}
		if _, ok := props[name]; !ok {
			t.Errorf("%s: %s: JSON field %q of %s is not a property of the schema", d.name, label, name, typeName(typ))
		}
		if !inbound && !fields[name].omitempty && !req[name] {
			t.Errorf("%s: %s: %s.%s is always sent (no omitempty) but the schema does not require it", d.name, label, typeName(typ), name)
		}
	}
	for _, p := range keys(props) {
		if _, ok := fields[p]; !ok {
			t.Errorf("%s: %s: property %q is not a JSON field of %s", d.name, label, p, typeName(typ))
		}
	}
	for _, r := range keys(req) {
		if _, ok := fields[r]; !ok {
			t.Errorf("%s: %s: required property %q is not a JSON field of %s", d.name, label, r, typeName(typ))
		}
	}
	if inbound && !req["action"] {
		t.Errorf("%s: %s: action must be required", d.name, label)
	}
}

func TestMessageSchemasMatchGoTypes(t *testing.T) {
	d := loadDoc(t, asyncAPIFile)
	chans := channels(t, d)
	env := envelopeFields(t)
	for _, m := range messages(t) {
		msg := chans[m.channel].messages[m.action]
		if msg == nil {
			continue // reported by TestEveryActionIsDocumented
		}
		label := "channel " + m.channel + ", message " + m.action
		var envelope []string
		if m.inbound {
			envelope = env
		}
		checkFields(t, d, label, msg["payload"], m.typ, m.unused, envelope, m.inbound)
		if c := d.constOf(d.props(msg["payload"])["action"]); c != m.action {
			t.Errorf("%s: %s: property action has const %q, want %q", d.name, label, c, m.action)
		}
	}
}

// TestSharedSchemasMatchGoTypes checks the named object schemas of both
// documents against the Go types they describe.
func TestSharedSchemasMatchGoTypes(t *testing.T) {
	type named struct {
		schema string
		typ    reflect.Type
		unused []string
	}
	common := []named{
		{"Transaction", reflect.TypeFor[protocol.Transaction](), nil},
		{"TerminalInfo", reflect.TypeFor[protocol.TerminalInfo](), nil},
		{"HistoryEntry", reflect.TypeFor[protocol.HistoryEntry](), nil},
		{"Receipts", reflect.TypeFor[protocol.Receipts](), nil},
		{"ConnInfo", reflect.TypeFor[hub.ConnInfo](), nil},
		{"KeyConflict", reflect.TypeFor[hub.KeyConflict](), nil},
	}
	docs := map[string][]named{
		openAPIFile: append(slices.Clone(common),
			named{"PosMessage", reflect.TypeFor[protocol.POSEvent](), nil},
			named{"WebhookStatus", reflect.TypeFor[webhook.MerchantStatus](), nil},
			named{"WebhookDelivery", reflect.TypeFor[webhook.Delivery](), nil},
			named{"TerminalStatusEvent", reflect.TypeFor[ops.StatusEvent](), nil},
		),
		asyncAPIFile: append(slices.Clone(common),
			named{"PosEvent", reflect.TypeFor[protocol.POSEvent](), voidOnly},
			named{"PaymentResultBody", reflect.TypeFor[protocol.PaymentResult](), nil},
			named{"TerminalRow", reflect.TypeFor[ops.TerminalRow](), nil},
			named{"TerminalHeartbeat", reflect.TypeFor[ops.TerminalHeartbeat](), nil},
			named{"ConnectionSeen", reflect.TypeFor[ops.ConnectionSeen](), nil},
		),
	}
	for file, list := range docs {
		d := loadDoc(t, file)
		schemas := d.get("components", "schemas")
		for _, n := range list {
			s, ok := schemas[n.schema]
			if !ok {
				t.Errorf("%s: components.schemas.%s is missing", file, n.schema)
				continue
			}
			checkFields(t, d, "schema "+n.schema, s, n.typ, n.unused, nil, false)
		}
	}
}

// ---- (d) the Transaction schema of openapi.yaml ----

func TestOpenAPITransactionSchema(t *testing.T) {
	d := loadDoc(t, openAPIFile)
	s := d.get("components", "schemas", "Transaction")
	if s == nil {
		t.Fatalf("%s: components.schemas.Transaction is missing", openAPIFile)
	}
	var fields, always []string
	for _, f := range jsonFields(reflect.TypeFor[protocol.Transaction]()) {
		fields = append(fields, f.name)
		if !f.omitempty {
			always = append(always, f.name)
		}
	}
	slices.Sort(fields)
	slices.Sort(always)
	if got := keys(d.props(s)); !slices.Equal(got, fields) {
		t.Errorf("%s: Transaction properties\n got %v\nwant %v (the json fields of protocol.Transaction)", openAPIFile, got, fields)
	}
	if got := keys(d.required(s)); !slices.Equal(got, always) {
		t.Errorf("%s: Transaction required\n got %v\nwant %v (every field is always sent)", openAPIFile, got, always)
	}
}

// ---- examples ----

func TestExamplesMatchSchemasAndCode(t *testing.T) {
	d := loadDoc(t, asyncAPIFile)
	chans := channels(t, d)
	for _, m := range messages(t) {
		msg := chans[m.channel].messages[m.action]
		if msg == nil {
			continue
		}
		label := m.channel + "/" + m.action
		examples := list(msg["examples"])
		reported := map[string]bool{} // required properties found not to be required
		if len(examples) == 0 {
			t.Errorf("%s: %s has no example", asyncAPIFile, label)
		}
		for i, ex := range examples {
			payload, ok := d.deref0(ex)["payload"].(map[string]any)
			if !ok {
				t.Errorf("%s: %s example %d has no object payload", asyncAPIFile, label, i)
				continue
			}
			where := label + " example " + strconv.Itoa(i)
			for _, e := range d.validate(where, payload, msg["payload"]) {
				t.Errorf("%s: %s", asyncAPIFile, e)
			}
			if payload["action"] != m.action {
				t.Errorf("%s: %s has action %v", asyncAPIFile, where, payload["action"])
			}
			// The example is made of the Go type's fields only.
			body := map[string]any{}
			for k, v := range payload {
				if m.inbound && (k == "action" || k == "requestId") {
					continue
				}
				body[k] = v
			}
			b, _ := json.Marshal(body)
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(reflect.New(m.typ).Interface()); err != nil {
				t.Errorf("%s: %s does not decode into %s: %v", asyncAPIFile, where, typeName(m.typ), err)
			}
			if !m.inbound {
				continue
			}
			// The hub's own decoder accepts the example, and refuses it
			// without any one of its required properties.
			decode := protocol.DecodePOS
			if m.channel == "terminal" {
				decode = protocol.DecodeTerminal
			}
			full, _ := json.Marshal(payload)
			if _, err := decode(full); err != nil {
				t.Errorf("%s: %s is refused by the hub: %v", asyncAPIFile, where, err)
			}
			for r := range d.required(msg["payload"]) {
				if reported[r] {
					continue
				}
				cut := map[string]any{}
				for k, v := range payload {
					if k != r {
						cut[k] = v
					}
				}
				b, _ := json.Marshal(cut)
				if _, err := decode(b); err == nil {
					reported[r] = true
					t.Errorf("%s: %s: %q is documented as required, but the hub accepts the example without it", asyncAPIFile, label, r)
				}
			}
		}
	}
}

// ---- enums ----

func TestEnumsMatchCode(t *testing.T) {
	async := loadDoc(t, asyncAPIFile)
	open := loadDoc(t, openAPIFile)
	cs := stringConstants(parsePackage(t, "protocol")...)
	prefixed := func(p string) []string {
		return constValues(cs, func(c constant) bool { return strings.HasPrefix(c.name, p) })
	}
	typed := func(typ string) []string {
		return constValues(cs, func(c constant) bool { return c.typ == typ })
	}
	enumOf := func(d *document, path ...string) []string {
		var out []string
		for _, v := range list(d.deref(d.get(path...))["enum"]) {
			out = append(out, v.(string))
		}
		slices.Sort(out)
		return out
	}
	check := func(d *document, want []string, what string, path ...string) {
		t.Helper()
		if got := enumOf(d, path...); !slices.Equal(got, want) {
			t.Errorf("%s: %s enum\n got %v\nwant %v (%s)", d.name, strings.Join(path, "."), got, want, what)
		}
	}
	s := func(name string) []string { return []string{"components", "schemas", name} }

	check(async, typed("Status"), "constants of type protocol.Status", s("Status")...)
	check(open, typed("Status"), "constants of type protocol.Status", s("Status")...)
	check(async, typed("Code"), "constants of type protocol.Code", s("ErrorCode")...)
	check(open, typed("Code"), "constants of type protocol.Code", s("ErrorCode")...)
	check(async, prefixed("Outcome"), "protocol.Outcome*", s("Outcome")...)
	check(async, prefixed("Void"), "protocol.Void* (auto-void reason codes)", s("VoidReasonCode")...)
	check(open, prefixed("Void"), "protocol.Void* (auto-void reason codes)", "components", "schemas", "PosMessage", "properties", "reasonCode")
	check(async, prefixed("Reason"), "protocol.Reason* (forceDisconnect reasons)", s("DisconnectReason")...)
	check(async, prefixed("Capture"), "protocol.Capture*", s("CaptureMode")...)
	check(async, prefixed("Type"), "protocol.Type*", s("TransactionType")...)
	check(async, prefixed("Terminal"), "protocol.Terminal* statuses", s("TerminalStatus")...)
	check(open, prefixed("Terminal"), "protocol.Terminal* statuses", "components", "schemas", "TerminalInfo", "properties", "status")
	kinds := []string{string(hub.KindPOS), string(hub.KindTerminal)}
	slices.Sort(kinds)
	check(async, kinds, "hub.KindPOS, hub.KindTerminal", "components", "schemas", "ConnInfo", "properties", "kind")
	check(open, kinds, "hub.KindPOS, hub.KindTerminal", "components", "schemas", "ConnInfo", "properties", "kind")

	// Stage and entry mode exist only in validation: every documented value
	// is accepted and a value outside the enum is refused.
	stages := enumOf(async, s("Stage")...)
	for _, v := range append(stages, "bogus") {
		err := (&protocol.PaymentProgress{TransactionID: "txn_1", Stage: v}).Validate()
		if ok := slices.Contains(stages, v); ok != (err == nil) {
			t.Errorf("stage %q: documented %v, accepted by PaymentProgress.Validate %v", v, ok, err == nil)
		}
	}
	modes := enumOf(async, s("EntryMode")...)
	for _, v := range append(modes, "bogus") {
		err := (&protocol.PaymentResult{TransactionID: "txn_1", Outcome: protocol.OutcomeApproved, EntryMode: v}).Validate()
		if ok := slices.Contains(modes, v); ok != (err == nil) {
			t.Errorf("entryMode %q: documented %v, accepted by PaymentResult.Validate %v", v, ok, err == nil)
		}
	}
	txnModes := append([]string{""}, modes...)
	slices.Sort(txnModes)
	check(async, txnModes, `"" and the EntryMode enum`, "components", "schemas", "Transaction", "properties", "entryMode")
	check(open, txnModes, `"" and the EntryMode enum`, "components", "schemas", "Transaction", "properties", "entryMode")

	// connectionUpdate.event: the literals hub/registry.go publishes.
	var events []string
	ast.Inspect(parseFile(t, "hub/registry.go"), func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 2 {
			return true
		}
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "publishConnLocked" {
			if lit, ok := call.Args[1].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				v, _ := strconv.Unquote(lit.Value)
				if !slices.Contains(events, v) {
					events = append(events, v)
				}
			}
		}
		return true
	})
	slices.Sort(events)
	if len(events) == 0 {
		t.Error("hub/registry.go: no publishConnLocked calls with a literal event found")
	}
	check(async, events, "the events hub/registry.go publishes", "components", "messages", "connectionUpdate", "payload", "properties", "event")
}

// ---- security ----

func TestCredentialNames(t *testing.T) {
	async := loadDoc(t, asyncAPIFile)
	open := loadDoc(t, openAPIFile)
	binding := func(ch, part string) []string {
		return keys(async.get("channels", ch, "bindings", "ws", part, "properties"))
	}
	want := func(names ...string) []string { slices.Sort(names); return names }
	for _, c := range []struct {
		ch, part string
		want     []string
	}{
		{"pos", "headers", want(protocol.HeaderAPIKey, protocol.HeaderTimestamp, protocol.HeaderSignature)},
		{"pos", "query", want(protocol.QueryAPIKey, protocol.QueryTimestamp, protocol.QuerySignature)},
		{"terminal", "headers", want(protocol.HeaderDeviceID, protocol.HeaderTimestamp, protocol.HeaderSignature)},
		{"terminal", "query", want(protocol.QueryDeviceID, protocol.QueryTimestamp, protocol.QuerySignature)},
	} {
		if got := binding(c.ch, c.part); !slices.Equal(got, c.want) {
			t.Errorf("%s: channel %s ws binding %s: got %v, want %v", asyncAPIFile, c.ch, c.part, got, c.want)
		}
	}
	name := func(d *document, path ...string) string { s, _ := d.get(path...)["name"].(string); return s }
	for _, c := range []struct {
		d    *document
		path []string
		want string
	}{
		{open, []string{"components", "securitySchemes", "ApiKeyId"}, protocol.HeaderAPIKey},
		{open, []string{"components", "securitySchemes", "DeviceId"}, protocol.HeaderDeviceID},
		{open, []string{"components", "securitySchemes", "Timestamp"}, protocol.HeaderTimestamp},
		{open, []string{"components", "securitySchemes", "Signature"}, protocol.HeaderSignature},
		{open, []string{"components", "securitySchemes", "ApiKeyIdQuery"}, protocol.QueryAPIKey},
		{open, []string{"components", "securitySchemes", "DeviceIdQuery"}, protocol.QueryDeviceID},
		{open, []string{"components", "securitySchemes", "TimestampQuery"}, protocol.QueryTimestamp},
		{open, []string{"components", "securitySchemes", "SignatureQuery"}, protocol.QuerySignature},
		{open, []string{"components", "securitySchemes", "OpsCookie"}, hub.OpsCookie},
		{open, []string{"components", "parameters", "IdempotencyKey"}, protocol.HeaderIdemKey},
		{open, []string{"components", "parameters", "SessionId"}, protocol.HeaderSession},
		{async, []string{"components", "securitySchemes", "posHeaders"}, protocol.HeaderSignature},
		{async, []string{"components", "securitySchemes", "terminalHeaders"}, protocol.HeaderSignature},
		{async, []string{"components", "securitySchemes", "posQuery"}, protocol.QuerySignature},
		{async, []string{"components", "securitySchemes", "terminalQuery"}, protocol.QuerySignature},
		{async, []string{"components", "securitySchemes", "opsCookie"}, hub.OpsCookie},
	} {
		if got := name(c.d, c.path...); got != c.want {
			t.Errorf("%s: %s has name %q, want %q", c.d.name, strings.Join(c.path, "."), got, c.want)
		}
	}
	// Each channel's operations use that channel's credentials.
	schemes := map[string][]string{
		"pos":      {"#/components/securitySchemes/posHeaders", "#/components/securitySchemes/posQuery"},
		"terminal": {"#/components/securitySchemes/terminalHeaders", "#/components/securitySchemes/terminalQuery"},
		"ops":      {"#/components/securitySchemes/opsBearer", "#/components/securitySchemes/opsCookie"},
	}
	for name, v := range async.get("operations") {
		op := async.deref(v)
		ref, _ := async.deref0(op["channel"])["$ref"].(string)
		ch := strings.TrimPrefix(ref, "#/channels/")
		var got []string
		for _, s := range list(op["security"]) {
			r, _ := async.deref0(s)["$ref"].(string)
			got = append(got, r)
		}
		if !slices.Equal(got, schemes[ch]) {
			t.Errorf("%s: operation %s (channel %s) has security %v, want %v", asyncAPIFile, name, ch, got, schemes[ch])
		}
	}
}

// ---- (c) routes ----

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// fill turns a route pattern into a concrete path.
func fill(path string) string {
	return regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(path, "x")
}

// probe sends an unsigned request and reports whether the mux routed it:
// Go's own 404 (plain text) and 405 mean it did not; anything else (401,
// 400, a JSON 404 from a handler, 200 …) means a handler answered.
func probe(t *testing.T, base, method, path string) (bool, int) {
	t.Helper()
	req, err := http.NewRequest(method, base+fill(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed:
		return false, resp.StatusCode
	case resp.StatusCode == http.StatusNotFound && !strings.Contains(resp.Header.Get("Content-Type"), "json"):
		_ = body // "404 page not found"
		return false, resp.StatusCode
	}
	return true, resp.StatusCode
}

func TestDocumentedRoutesAreServed(t *testing.T) {
	e := startHub(t)
	open := loadDoc(t, openAPIFile)
	for _, path := range keys(open.get("paths")) {
		item := open.deref(open.get("paths")[path])
		for _, m := range httpMethods {
			op, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			method := strings.ToUpper(m)
			planned := op["x-termhub-status"] == "planned"
			served, status := probe(t, e.Srv.URL, method, path)
			switch {
			case planned && served:
				t.Errorf("%s: %s %s is marked x-termhub-status: planned but is served (HTTP %d): document it", openAPIFile, method, path, status)
			case !planned && !served:
				t.Errorf("%s: %s %s is documented but not served (HTTP %d from the mux)", openAPIFile, method, path, status)
			}
		}
	}
	async := loadDoc(t, asyncAPIFile)
	for _, c := range channels(t, async) {
		served, status := probe(t, e.Srv.URL, http.MethodGet, c.address)
		if !served {
			t.Errorf("%s: channel %s: GET %s is not served (HTTP %d)", asyncAPIFile, c.key, c.address, status)
		} else if status != http.StatusUnauthorized {
			t.Errorf("%s: channel %s: an unsigned GET %s answered HTTP %d, want 401", asyncAPIFile, c.key, c.address, status)
		}
	}
}

// codeRoute is a pattern registered with Handle or HandleFunc.
type codeRoute struct {
	method, path, file string
	line               int
}

var routePattern = regexp.MustCompile(`^(?:([A-Z]+) +)?(/\S*)$`)

// registeredRoutes finds every x.Handle("METHOD /path", …) and
// x.HandleFunc("METHOD /path", …) in the repository's non-test Go files.
func registeredRoutes(t *testing.T) []codeRoute {
	t.Helper()
	root := repoRoot(t)
	var out []codeRoute
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := de.Name()
		if de.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		fset := token.NewFileSet()
		f := parseFileSet(t, fset, filepath.ToSlash(rel))
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, _ := strconv.Unquote(lit.Value)
			m := routePattern.FindStringSubmatch(s)
			if m == nil {
				return true
			}
			out = append(out, codeRoute{method: m[1], path: m[2], file: filepath.ToSlash(rel), line: fset.Position(lit.Pos()).Line})
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// documentedIn reports whether openapi.yaml has an operation for the route:
// a wildcard of the code matches any segment of the document, a wildcard of
// the document only a wildcard.
func documentedIn(d *document, method, path string) bool {
	wild := func(s string) bool { return strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") }
	code := strings.Split(path, "/")
	for docPath, v := range d.get("paths") {
		item := d.deref(v)
		if method != "" {
			if _, ok := item[strings.ToLower(method)]; !ok {
				continue
			}
		}
		doc := strings.Split(docPath, "/")
		if len(doc) != len(code) {
			continue
		}
		match := true
		for i := range doc {
			if !(wild(code[i]) || doc[i] == code[i] || (wild(doc[i]) && wild(code[i]))) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func TestServedRoutesAreDocumented(t *testing.T) {
	e := startHub(t)
	open := loadDoc(t, openAPIFile)
	async := loadDoc(t, asyncAPIFile)
	addresses := map[string]bool{}
	for _, c := range channels(t, async) {
		addresses[c.address] = true
	}
	var opsMD string
	if fileExists(t, opsFile) {
		opsMD = readRepoFile(t, opsFile)
	}
	routes := registeredRoutes(t)
	fromHandler := 0
	for _, r := range routes {
		if r.file == "hub/hub.go" || r.file == "httpapi/api.go" {
			fromHandler++
		}
	}
	if fromHandler < 10 {
		t.Fatalf("found only %d routes in hub/hub.go and httpapi/api.go; have Hub.Register and Server.Register changed shape? (all: %v)", fromHandler, routes)
	}
	served := e.App.Routes()
	for _, r := range routes {
		where := r.file + ":" + strconv.Itoa(r.line)
		method := r.method
		if method == "" {
			method = http.MethodGet
		}
		// Only routes of the node's mux (App.Routes) are its API; a pattern
		// registered on another server (a simulator, say) is not.
		if _, pattern := served.Handler(httptest.NewRequest(method, fill(r.path), nil)); pattern == "" {
			t.Logf("%s: %s %s is not served by app.New's handler: not checked", where, r.method, r.path)
			continue
		}
		switch {
		case strings.HasSuffix(r.path, "/ws"):
			if !addresses[r.path] {
				t.Errorf("%s: WebSocket route %s %s is not a channel of %s", where, r.method, r.path, asyncAPIFile)
			}
			if r.method != http.MethodGet {
				t.Errorf("%s: WebSocket route %s %s: upgrades are GET", where, r.method, r.path)
			}
		case strings.HasPrefix(r.path, "/ops/"):
			if !documentedIn(open, r.method, r.path) && !strings.Contains(opsMD, r.path) {
				t.Errorf("%s: dashboard route %s %s is documented neither in %s nor in %s", where, r.method, r.path, openAPIFile, opsFile)
			}
		default:
			if !documentedIn(open, r.method, r.path) {
				t.Errorf("%s: route %s %s is not documented in %s", where, r.method, r.path, openAPIFile)
			}
		}
	}
}

// TestNoProseKeys catches a YAML trap of one-line schemas: in a flow mapping
// such as {type: string, description: The field, when one is.} the comma ends
// the description, and "when one is." becomes a key of the schema with a null
// value. JSON Schema allows unknown keywords, so AsyncAPI's parser accepts the
// corrupt schema without a word (Redocly only catches it in openapi.yaml); a
// key with a space in it and no value is that mistake, never a real field.
func TestNoProseKeys(t *testing.T) {
	for _, name := range []string{openAPIFile, asyncAPIFile} {
		d := loadDoc(t, name)
		var walk func(v any, at string)
		walk = func(v any, at string) {
			switch v := v.(type) {
			case map[string]any:
				for k, x := range v {
					if x == nil && strings.ContainsAny(k, " \t") {
						t.Errorf("%s: %s has the key %q with no value: a description with \", \" written unquoted in a {…} mapping? Quote it", name, at, k)
					}
					walk(x, at+"/"+k)
				}
			case []any:
				for i, x := range v {
					walk(x, at+"/"+strconv.Itoa(i))
				}
			}
		}
		walk(d.root, "#")
	}
}
