// The browser path in headless Chromium: the ESM build loaded by a page, native
// WebSocket with query-parameter credentials, and a `sign` callback answered by
// this test acting as the app's backend (the secret never reaches the page).
// The test's server is the page's origin and passes /v1/ (REST and the
// WebSocket upgrade) through to the hub unchanged, as a same-origin deployment would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hmacSha256Hex, signatureText } from '../dist/esm/index.js';
import { Hub, KEYS } from './hub.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'esm');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const key = KEYS[11];

let hub, server, browser;
before(async () => {
  hub = new Hub();
  await hub.start();
  await hub.startSim();
});
after(async () => {
  browser?.kill('SIGKILL');
  server?.close();
  await hub?.stop();
});

test('a page pays with the native WebSocket, query credentials and a sign callback', {
  skip: existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}`,
}, async () => {
  const signed = [];
  const upgrades = [];
  let report;
  const result = new Promise((r) => { report = r; });
  const page = `<!doctype html><meta charset="utf-8"><script type="module">
import { PosClient } from '/sdk/index.js';
const send = (r) => fetch('/result', { method: 'POST', body: JSON.stringify(r) });
try {
  const pos = new PosClient({
    baseUrl: location.origin, apiKey: ${JSON.stringify(key.apiKey)},
    sign: async (method, pathWithQuery, timestamp, bodySha256Hex) =>
      (await fetch('/sign', { method: 'POST', body: JSON.stringify({ method, pathWithQuery, timestamp, bodySha256Hex }) })).text(),
  });
  const g = await pos.connect();
  const updates = [];
  const t = await pos.pay({ terminalId: 'T11', amount: '8.00', currency: 'USD', reference: 'browser-' + Date.now().toString(36) /* base 36: a run of 13 decimal digits may pass as a card number, which the hub refuses in a reference */ },
    { onUpdate: (u) => { updates.push(u.status); } });
  let code;
  try { await pos.getTransaction('txn_000000000000000000000000'); } catch (e) { code = e.code + ' ' + e.httpStatus + ' ' + (e instanceof Error); }
  await pos.close();
  await send({ ok: true, apiKeyId: g.apiKeyId, status: t.status, updates, code });
} catch (e) {
  await send({ ok: false, error: String(e && e.stack || e), code: e && e.code });
}
</script>`;
  server = createServer(async (req, res) => {
    const body = await new Promise((r) => { let b = ''; req.on('data', (c) => { b += c; }); req.on('end', () => r(b)); });
    if (req.url === '/') { res.writeHead(200, { 'content-type': 'text/html' }).end(page); return; }
    if (req.url.startsWith('/sdk/')) {
      const f = normalize(join(dist, req.url.slice(5)));
      if (!f.startsWith(dist) || !existsSync(f)) { res.writeHead(404).end(); return; }
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(f));
      return;
    }
    if (req.url === '/sign') {
      const a = JSON.parse(body);
      signed.push(`${a.method} ${a.pathWithQuery}`);
      res.writeHead(200).end(await hmacSha256Hex(key.secret, signatureText(a.method, a.pathWithQuery, a.timestamp, a.bodySha256Hex)));
      return;
    }
    if (req.url === '/result') { report(JSON.parse(body)); res.writeHead(204).end(); return; }
    if (req.url.startsWith('/v1/')) {
      const headers = {};
      for (const h of ['content-type', 'idempotency-key', 'x-api-key', 'x-timestamp', 'x-signature']) if (req.headers[h]) headers[h] = req.headers[h];
      const r = await fetch(hub.baseUrl + req.url, { method: req.method, headers, body: body || undefined });
      res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'text/plain' }).end(await r.text());
      return;
    }
    res.writeHead(404).end();
  });
  server.on('upgrade', (req, sock, head) => {
    upgrades.push({ url: req.url, headerKey: req.headers['x-api-key'] });
    const up = connect(hub.port, '127.0.0.1', () => {
      up.write(`${req.method} ${req.url} HTTP/1.1\r\n` +
        Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n') + '\r\n\r\n');
      up.write(head);
      sock.pipe(up).pipe(sock);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}/`;
  browser = spawn(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    `--user-data-dir=${mkdtempSync(join(tmpdir(), 'sdk-chromium-'))}`, url], { stdio: 'ignore' });
  const timeout = new Promise((_, rej) => setTimeout(() => rej(new Error('no result from the page within 30 s')), 30000).unref());
  const r = await Promise.race([result, timeout]);
  assert.equal(r.ok, true, r.error);
  assert.equal(r.apiKeyId, key.apiKey);
  assert.equal(r.status, 'COMPLETED');
  assert.deepEqual(r.updates, ['PENDING', 'DISPATCHED', 'IN_PROGRESS', 'COMPLETED']);
  assert.equal(r.code, 'transaction_not_found 404 true');
  // The native WebSocket sent its credentials in the query, signed without them.
  assert.ok(upgrades.length >= 1);
  assert.match(upgrades[0].url, /^\/v1\/pos\/ws\?apiKey=pk_t11&timestamp=[0-9]+&signature=[0-9a-f]{64}$/);
  assert.equal(upgrades[0].headerKey, undefined);
  assert.ok(signed.includes('GET /v1/pos/ws'), signed.join(', '));
  assert.ok(signed.includes('POST /v1/payments'), signed.join(', '));
});
