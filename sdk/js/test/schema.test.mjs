// The SDK's types against docs/asyncapi.yaml and docs/openapi.yaml: every
// message of the POS channel and every field of the objects the SDK handles
// must have a type in src/types.ts, and the SDK must type nothing the
// documents do not have. The interfaces are read with the TypeScript compiler.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import YAML from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const docs = join(here, '..', '..', '..', 'docs');
const asyncapi = YAML.parse(readFileSync(join(docs, 'asyncapi.yaml'), 'utf8'));
const openapi = YAML.parse(readFileSync(join(docs, 'openapi.yaml'), 'utf8'));

// ---- the SDK side ----
const file = join(here, '..', 'src', 'types.ts');
const program = ts.createProgram([file], { strict: true, noEmit: true, skipLibCheck: true });
const checker = program.getTypeChecker();
const source = program.getSourceFile(file);
const sdk = new Map(); // exported interface or type alias → {props?: Set, literals?: Set}
for (const sym of checker.getExportsOfModule(checker.getSymbolAtLocation(source))) {
  const decl = sym.declarations[0];
  if (ts.isInterfaceDeclaration(decl)) {
    sdk.set(sym.name, { props: new Set(checker.getDeclaredTypeOfSymbol(sym).getProperties().map((p) => p.name)) });
  } else if (ts.isTypeAliasDeclaration(decl)) {
    const t = checker.getDeclaredTypeOfSymbol(sym);
    const parts = t.isUnion() ? t.types : [t];
    if (parts.every((p) => p.isStringLiteral())) sdk.set(sym.name, { literals: new Set(parts.map((p) => p.value)) });
  }
}

// ---- the documents' side ----
function resolve(doc, node) {
  while (node && node.$ref) {
    node = node.$ref.replace(/^#\//, '').split('/').reduce((n, k) => n[k], doc);
  }
  return node;
}
/** The property names of a schema, through $ref and allOf. */
function props(doc, schema, out = new Set()) {
  schema = resolve(doc, schema);
  if (!schema) return out;
  for (const k of Object.keys(schema.properties ?? {})) out.add(k);
  for (const s of schema.allOf ?? []) props(doc, s, out);
  return out;
}
const cap = (s) => s[0].toUpperCase() + s.slice(1);

function sameSet(what, documented, typed) {
  const missing = [...documented].filter((x) => !typed.has(x)).sort();
  const extra = [...typed].filter((x) => !documented.has(x)).sort();
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] },
    `${what}: "missing" are in the documents but have no type in the SDK; "extra" are typed in the SDK but not documented`);
}

test('every POS channel message of asyncapi.yaml has an SDK type with the same fields, and no other', () => {
  const messages = asyncapi.channels.pos.messages;
  const names = new Set();
  for (const [key, ref] of Object.entries(messages)) {
    const name = `${cap(key)}Message`;
    names.add(name);
    const typed = sdk.get(name);
    assert.ok(typed && typed.props, `asyncapi channel pos message ${key} has no interface ${name} in src/types.ts`);
    sameSet(`message ${key} (${name})`, props(asyncapi, resolve(asyncapi, ref).payload), typed.props);
  }
  const sdkMessages = [...sdk.keys()].filter((n) => n.endsWith('Message'));
  sameSet('POS channel messages', names, new Set(sdkMessages));
  assert.ok(names.size >= 25, `only ${names.size} messages found: the walk of asyncapi.yaml is broken`);
});

test('the objects of both documents match the SDK interfaces', () => {
  for (const name of ['Transaction', 'TerminalInfo', 'HistoryEntry', 'Receipts']) {
    sameSet(`asyncapi ${name}`, props(asyncapi, asyncapi.components.schemas[name]), sdk.get(name).props);
  }
  const schemas = openapi.components.schemas;
  for (const name of ['Transaction', 'TerminalInfo', 'HistoryEntry', 'Receipts', 'PaymentRequest', 'RefundRequest',
    'VoidRequest', 'CaptureRequest', 'CancelRequest', 'SignatureRequest', 'PaymentReply', 'TransactionReply', 'TransactionPage']) {
    assert.ok(schemas[name], `openapi has no schema ${name}`);
    sameSet(`openapi ${name}`, props(openapi, schemas[name]), sdk.get(name).props);
  }
  sameSet('openapi ErrorBody.error', props(openapi, schemas.ErrorBody.properties.error), sdk.get('ErrorBody').props);
  assert.ok(sdk.get('Transaction').props.size >= 30);
});

test('the enumerations match', () => {
  const cases = [
    ['Status', openapi.components.schemas.Status],
    ['Status', asyncapi.components.schemas.Status],
    ['ErrorCode', openapi.components.schemas.ErrorCode],
    ['ErrorCode', asyncapi.components.schemas.ErrorCode],
    ['TerminalStatus', asyncapi.components.schemas.TerminalStatus],
    ['VoidReasonCode', asyncapi.components.schemas.VoidReasonCode],
    ['DisconnectReason', asyncapi.components.schemas.DisconnectReason],
    ['CaptureMode', asyncapi.components.schemas.CaptureMode],
    ['TransactionType', asyncapi.components.schemas.TransactionType],
    ['EntryMode', asyncapi.components.schemas.Transaction.properties.entryMode],
  ];
  for (const [name, schema] of cases) {
    const s = resolve(asyncapi, schema);
    assert.ok(Array.isArray(s.enum), `${name} has no enum in the documents`);
    sameSet(`enum ${name}`, new Set(s.enum), sdk.get(name).literals);
  }
});
