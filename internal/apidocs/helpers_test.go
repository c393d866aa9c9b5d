package apidocs

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
)

// ---- the repository ----

var (
	rootOnce sync.Once
	rootDir  string
)

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return
			}
			dir = parent
		}
	})
	if rootDir == "" {
		t.Fatal("go.mod not found above the working directory")
	}
	return rootDir
}

func repoPath(t testing.TB, rel string) string {
	return filepath.Join(repoRoot(t), filepath.FromSlash(rel))
}

func readRepoFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

// fileExists reports whether the repository has rel.
func fileExists(t testing.TB, rel string) bool {
	_, err := os.Stat(repoPath(t, rel))
	return err == nil
}

// ---- YAML documents ----

// document is a parsed OpenAPI or AsyncAPI document.
type document struct {
	name string
	root map[string]any
}

func loadDoc(t testing.TB, rel string) *document {
	t.Helper()
	var root map[string]any
	if err := yaml.Unmarshal([]byte(readRepoFile(t, rel)), &root); err != nil {
		t.Fatalf("%s is not valid YAML: %v", rel, err)
	}
	// Round-trip through JSON so that values have the types a JSON decoder
	// gives (float64 numbers, map[string]any objects), as on the wire.
	b, err := json.Marshal(root)
	if err != nil {
		t.Fatalf("%s cannot be expressed as JSON: %v", rel, err)
	}
	root = nil
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	return &document{name: rel, root: root}
}

// pointer returns the node at a JSON pointer such as "#/components/schemas/X".
func (d *document) pointer(ref string) (any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("%s: only local references are supported, got %q", d.name, ref)
	}
	var node any = d.root
	for _, part := range strings.Split(ref[2:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := node.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: %q does not resolve (at %q)", d.name, ref, part)
		}
		if node, ok = m[part]; !ok {
			return nil, fmt.Errorf("%s: %q does not resolve (no %q)", d.name, ref, part)
		}
	}
	return node, nil
}

// get walks object keys from the root.
func (d *document) get(keys ...string) map[string]any {
	var node any = d.root
	for _, k := range keys {
		m, _ := node.(map[string]any)
		node = m[k]
	}
	m, _ := node.(map[string]any)
	return m
}

// deref follows $ref until it reaches a node that is not a reference.
func (d *document) deref(node any) map[string]any {
	for i := 0; i < 32; i++ {
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		next, err := d.pointer(ref)
		if err != nil {
			panic(err)
		}
		node = next
	}
	panic(d.name + ": reference cycle")
}

// props returns the properties of a schema, through $ref and allOf. A
// property declared twice (a base schema and a refinement) keeps both
// schemas.
func (d *document) props(schema any) map[string][]any {
	out := map[string][]any{}
	var walk func(s any)
	walk = func(s any) {
		m := d.deref(s)
		if m == nil {
			return
		}
		if p, ok := m["properties"].(map[string]any); ok {
			for k, v := range p {
				out[k] = append(out[k], v)
			}
		}
		for _, sub := range list(m["allOf"]) {
			walk(sub)
		}
	}
	walk(schema)
	return out
}

// required returns the required properties of a schema, through $ref and allOf.
func (d *document) required(schema any) map[string]bool {
	out := map[string]bool{}
	var walk func(s any)
	walk = func(s any) {
		m := d.deref(s)
		if m == nil {
			return
		}
		for _, r := range list(m["required"]) {
			if s, ok := r.(string); ok {
				out[s] = true
			}
		}
		for _, sub := range list(m["allOf"]) {
			walk(sub)
		}
	}
	walk(schema)
	return out
}

// constOf returns the const value of a property, "" if it has none.
func (d *document) constOf(schemas []any) string {
	for _, s := range schemas {
		m := d.deref(s)
		if c, ok := m["const"].(string); ok {
			return c
		}
	}
	return ""
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- a small JSON Schema validator ----
//
// It covers the keywords the documents use: $ref, allOf, oneOf, anyOf, not,
// type, const, enum, required, properties, items, pattern, format
// date-time, minimum, maximum, exclusiveMinimum, minLength, maxLength.
// Objects are closed: a key that no schema of the object declares is an
// error, so a misspelt field in an example or a live frame is caught.

func (d *document) validate(path string, v any, schema any) []string {
	return d.check(path, v, schema, true)
}

func (d *document) check(path string, v any, schema any, closed bool) []string {
	s := d.deref(schema)
	if s == nil {
		return nil
	}
	var errs []string
	fail := func(format string, args ...any) {
		errs = append(errs, path+": "+fmt.Sprintf(format, args...))
	}
	for _, sub := range list(s["allOf"]) {
		errs = append(errs, d.check(path, v, sub, false)...)
	}
	if alts := list(s["oneOf"]); len(alts) > 0 {
		n := 0
		for _, sub := range alts {
			if len(d.check(path, v, sub, closed)) == 0 {
				n++
			}
		}
		if n != 1 {
			fail("matches %d of the oneOf alternatives, want exactly 1", n)
		}
	}
	if alts := list(s["anyOf"]); len(alts) > 0 {
		ok := false
		for _, sub := range alts {
			ok = ok || len(d.check(path, v, sub, closed)) == 0
		}
		if !ok {
			fail("matches none of the anyOf alternatives")
		}
	}
	if not, ok := s["not"]; ok && len(d.check(path, v, not, false)) == 0 {
		fail("matches the schema under not")
	}
	if c, ok := s["const"]; ok && !jsonEqual(c, v) {
		fail("is %s, want the const %s", show(v), show(c))
	}
	if e, ok := s["enum"]; ok && !slices.ContainsFunc(list(e), func(x any) bool { return jsonEqual(x, v) }) {
		fail("%s is not one of %s", show(v), show(e))
	}
	if typ, ok := s["type"]; ok {
		var want []string
		switch t := typ.(type) {
		case string:
			want = []string{t}
		case []any:
			for _, x := range t {
				want = append(want, fmt.Sprint(x))
			}
		}
		if !slices.ContainsFunc(want, func(w string) bool { return isType(v, w) }) {
			fail("is %s, want type %s", show(v), strings.Join(want, " or "))
			return errs
		}
	}
	switch x := v.(type) {
	case map[string]any:
		for _, r := range list(s["required"]) {
			if _, ok := x[r.(string)]; !ok {
				fail("required property %q is missing", r)
			}
		}
		if p, ok := s["properties"].(map[string]any); ok {
			for _, k := range keys(x) {
				if ps, ok := p[k]; ok {
					errs = append(errs, d.check(path+"."+k, x[k], ps, true)...)
				}
			}
		}
		if closed {
			declared := d.props(s)
			if len(declared) > 0 {
				for _, k := range keys(x) {
					if _, ok := declared[k]; !ok {
						fail("property %q is not in the schema", k)
					}
				}
			}
		}
	case []any:
		if items, ok := s["items"]; ok {
			for i, e := range x {
				errs = append(errs, d.check(fmt.Sprintf("%s[%d]", path, i), e, items, true)...)
			}
		}
	case string:
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(x) {
			fail("%q does not match %s", x, p)
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
				fail("%q is not an RFC 3339 date-time", x)
			}
		}
		if n, ok := s["minLength"].(float64); ok && float64(len([]rune(x))) < n {
			fail("%q is shorter than %v", x, n)
		}
		if n, ok := s["maxLength"].(float64); ok && float64(len([]rune(x))) > n {
			fail("%q is longer than %v", x, n)
		}
	case float64:
		if n, ok := s["minimum"].(float64); ok && x < n {
			fail("%v is below the minimum %v", x, n)
		}
		if n, ok := s["maximum"].(float64); ok && x > n {
			fail("%v is above the maximum %v", x, n)
		}
		if n, ok := s["exclusiveMinimum"].(float64); ok && x <= n {
			fail("%v is not above %v", x, n)
		}
	}
	return errs
}

func isType(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "array":
		_, ok := v.([]any)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func show(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

// ---- Go types ----

// goField is one JSON field of a Go struct.
type goField struct {
	name      string
	omitempty bool
}

// jsonFields lists the JSON fields encoding/json writes for t, with the
// fields of untagged embedded structs promoted.
func jsonFields(t reflect.Type) []goField {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []goField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, goField{name: name, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty")})
	}
	return out
}

func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.String()
}

// ---- Go source ----

// parsePackage parses the non-test Go files of a repository directory.
func parsePackage(t testing.TB, rel string) []*ast.File {
	t.Helper()
	dir := repoPath(t, rel)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		files = append(files, parseFile(t, filepath.Join(rel, e.Name())))
	}
	return files
}

func parseFile(t testing.TB, rel string) *ast.File {
	t.Helper()
	return parseFileSet(t, token.NewFileSet(), rel)
}

func parseFileSet(t testing.TB, fset *token.FileSet, rel string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(fset, repoPath(t, rel), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	return f
}

// constant is a string constant declared in Go source.
type constant struct {
	name, value, typ string
}

// stringConstants lists the string-literal constants of files, in order.
func stringConstants(files ...*ast.File) []constant {
	var out []constant
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				typ := ""
				if id, ok := vs.Type.(*ast.Ident); ok {
					typ = id.Name
				}
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err == nil {
						out = append(out, constant{name: n.Name, value: v, typ: typ})
					}
				}
			}
		}
	}
	return out
}

// constValues returns the values of the constants select picks, sorted.
func constValues(cs []constant, pick func(c constant) bool) []string {
	var out []string
	for _, c := range cs {
		if pick(c) {
			out = append(out, c.value)
		}
	}
	sort.Strings(out)
	return out
}

// ---- a running hub ----

// hubEnv is an App on miniredis (or REDIS_URL) behind an httptest server.
type hubEnv struct {
	App   *app.App
	Clock *clock.Fake
	Srv   *httptest.Server
}

func startHub(t *testing.T) *hubEnv {
	t.Helper()
	h := apptest.Start(t, kit.OpsConfig)
	return &hubEnv{App: h.App, Clock: h.Clock, Srv: h.Srv}
}
