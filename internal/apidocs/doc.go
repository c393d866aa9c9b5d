// Package apidocs exists to check the API documents against the code. It
// has no code of its own: its tests read docs/asyncapi.yaml (the WebSocket
// protocols), docs/openapi.yaml (the HTTP API) and docs/protocol.md and fail
// when they drift from what the code defines or serves:
//
//   - every action constant of package protocol (found by parsing
//     protocol/actions.go, so a new constant is caught without touching the
//     tests) and every ops feed action is a message of asyncapi.yaml and is
//     mentioned in protocol.md;
//   - every message's payload schema has exactly the JSON fields of its Go
//     type, marks as required every field the type always sends, and every
//     documented enum matches the constants or the validation of the code;
//   - every example validates against its schema and decodes into its Go
//     type (inbound examples pass the hub's own decoder);
//   - every route registered on the hub's mux is documented, and every
//     documented route is served by a hub built with app.New;
//   - frames captured from a live hub validate against the documented
//     schemas;
//   - no one-line schema has a description cut at an unquoted ", " (the rest
//     would become a key of the schema, which AsyncAPI's parser accepts).
//
// Run `go test ./internal/apidocs/` after changing a wire type, a route or a
// document. Whether the documents are valid OpenAPI and AsyncAPI for other
// tools is checked by `make doccheck` (tools/doccheck), with the ecosystems'
// own validators.
package apidocs
