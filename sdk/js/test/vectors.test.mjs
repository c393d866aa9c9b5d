// The signing test vectors of docs/protocol.md ("Signing test vectors"),
// checked with the SDK's own signing code: every intermediate value and the
// final signature. The Go side checks the same blocks (protocol/sign_vector_test.go).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { sha256Hex, hmacSha256Hex, signatureText } from '../dist/esm/index.js';

const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');

// The main block of each vector: `<!-- signing-vector: NAME -->` then a
// fenced block of "field: value" lines.
const vectors = [...doc.matchAll(/<!-- signing-vector: ([\w-]+) -->\n```\n([\s\S]*?)```/g)].map((m) => {
  const v = { name: m[1] };
  for (const line of m[2].split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) v[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return v;
});

test('docs/protocol.md has its signing vectors', () => {
  assert.deepEqual(vectors.map((v) => v.name), ['post', 'get', 'ws-query']);
});

for (const v of vectors) {
  test(`signing vector ${v.name}: every value and the signature, by the SDK`, async () => {
    assert.equal(await sha256Hex(v.body ?? ''), v['body SHA-256']);
    const text = signatureText(v.method, v['path with query'], v.timestamp, v['body SHA-256']);
    assert.equal(JSON.stringify(text), v['string to sign']);
    assert.equal(await hmacSha256Hex(v.secret, text), v.signature);
  });
}
