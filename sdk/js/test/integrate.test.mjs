// The code examples of docs/integrate.md, run against the real hub so that
// the guide cannot drift from the SDK. Each example is a ```ts block after a
// `<!-- example: NAME -->` comment; it is transpiled by TypeScript and run
// with the hub's address and a test key in place of the guide's, and with
// `fetch` of the app's backend answered by this test (which holds the secret,
// as the backend would).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import ts from 'typescript';
import { PosClient, hmacSha256Hex, signatureText } from '../dist/esm/index.js';
import { Hub, KEYS } from './hub.mjs';

const doc = readFileSync(new URL('../../../docs/integrate.md', import.meta.url), 'utf8');
const examples = [...doc.matchAll(/<!-- example: ([\w-]+)[^>]*-->\n```ts\n([\s\S]*?)```/g)]
  .map((m) => ({ name: m[1], code: m[2] }));
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const key = KEYS[12];

let hub;
before(async () => {
  hub = new Hub();
  await hub.start();
  await hub.startSim();
});
after(async () => { await hub?.stop(); });

test('docs/integrate.md has its examples', () => {
  assert.deepEqual(examples.map((e) => e.name), ['backend-sign']);
});

for (const ex of examples) {
  test(`docs/integrate.md example ${ex.name} pays through the real hub`, async () => {
    const js = ts.transpileModule(ex.code, {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    }).outputText
      .replaceAll("'https://hub.example.com'", JSON.stringify(hub.baseUrl))
      .replaceAll("'pk_front_counter'", JSON.stringify(key.apiKey));
    assert.ok(js.includes(hub.baseUrl) && js.includes(key.apiKey), 'the example names the hub and the key to replace');
    const signed = [];
    // The app's backend: it signs what the page asks, with the secret only it holds.
    const backendFetch = async (url, init) => {
      assert.equal(url, '/api/termhub-sign');
      const a = JSON.parse(init.body);
      signed.push(`${a.method} ${a.pathWithQuery}`);
      const signature = await hmacSha256Hex(key.secret, signatureText(a.method, a.pathWithQuery, a.timestamp, a.bodySha256Hex));
      return new Response(JSON.stringify({ signature }), { headers: { 'content-type': 'application/json' } });
    };
    const pos = await new AsyncFunction('PosClient', 'fetch', `${js}\nreturn pos;`)(PosClient, backendFetch);
    await pos.connect();
    const t = await pos.pay({ terminalId: 'T12', amount: '3.00', currency: 'USD', reference: `doc-${Date.now().toString(36) /* base 36: a run of 13 decimal digits may pass as a card number, which the hub refuses in a reference */}` });
    await pos.close();
    assert.equal(t.status, 'COMPLETED');
    assert.ok(signed.some((s) => s.startsWith('POST /v1/payments')), `the backend signed the payment: ${signed}`);
  });
}
