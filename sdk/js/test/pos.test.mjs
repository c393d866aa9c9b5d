// The SDK against the real hub (embedded Redis, or REDIS_URL) and `termhub sim`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosClient, TermhubError } from '../dist/esm/index.js';
import { Hub, KEYS, waitFor } from './hub.mjs';

let hub;
const clients = [];
before(async () => {
  hub = new Hub();
  await hub.start();
  await hub.startSim();
});
after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await hub?.stop();
});

let ref = 0;
const reference = (what) => `${what}-${process.pid}-${++ref}`;

function client(i, extra = {}) {
  const c = new PosClient({ baseUrl: hub.baseUrl, ...KEYS[i], reconnect: { minDelayMs: 50, maxDelayMs: 500 }, ...extra });
  clients.push(c);
  return c;
}

/** Resolves with the first transaction event whose predicate holds. */
function nextTransaction(pos, pred) {
  return new Promise((resolve) => {
    const h = (t) => { if (pred(t)) { pos.off('transaction', h); resolve(t); } };
    pos.on('transaction', h);
  });
}

async function rejects(promise, code) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof TermhubError, `not a TermhubError: ${e}`);
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`resolved; expected ${code}`);
}

test('happy path: pay resolves with the final transaction, updates and events on the way', async () => {
  const pos = client(0);
  const greeting = await pos.connect();
  assert.equal(greeting.action, 'connected');
  assert.equal(greeting.apiKeyId, 'pk_t0');
  assert.ok(greeting.terminals.some((t) => t.terminalId === 'T0' && t.status === 'online'));
  const events = [];
  pos.on('transaction', (t) => { events.push(`${t.status}@${t.version}`); });
  const updates = [];
  const ref0 = reference('happy');
  const txn = await pos.pay({ terminalId: 'T0', amount: '12.50', currency: 'usd', reference: ref0 },
    { idempotencyKey: `k-${ref0}`, onUpdate: (t) => { updates.push(t.status); } });
  assert.equal(txn.status, 'COMPLETED');
  assert.equal(txn.amountMinor, 1250);
  assert.equal(txn.currency, 'USD');
  assert.equal(txn.reference, ref0);
  assert.match(txn.authCode, /^[0-9]{6}$/);
  assert.deepEqual(updates, ['PENDING', 'DISPATCHED', 'IN_PROGRESS', 'COMPLETED']);
  assert.deepEqual(events.map((e) => e.split('@')[0]), ['DISPATCHED', 'IN_PROGRESS', 'COMPLETED']);

  const again = await pos.getTransaction(txn.id);
  assert.equal(again.status, 'COMPLETED');
  assert.equal(again.version, txn.version);
  const page = await pos.listTransactions({ terminalId: 'T0', status: 'COMPLETED', limit: 5 });
  assert.ok(page.data.some((t) => t.id === txn.id));
  assert.equal(typeof page.hasMore, 'boolean');
  const terms = await pos.terminals();
  assert.ok(terms.some((t) => t.terminalId === 'T0' && t.status === 'online'));
  assert.ok(terms.some((t) => t.terminalId === 'OFFLINE-1' && t.status === 'offline'));
  await pos.close();
});

test('every error the SDK surfaces is a TermhubError with the contract code, field and status', async () => {
  const pos = client(1);
  await pos.connect();
  let e = await rejects(pos.pay({ terminalId: 'T1', amount: '12.505', currency: 'USD', reference: reference('bad') }), 'invalid_request');
  assert.equal(e.field, 'amount');
  assert.equal(e.httpStatus, 400);
  e = await rejects(pos.pay({ terminalId: 'T1', amount: '1.00', currency: 'USD', reference: '' }), 'invalid_request');
  assert.equal(e.field, 'reference');
  e = await rejects(pos.pay({ terminalId: 'OFFLINE-1', amount: '1.00', currency: 'USD', reference: reference('off') }), 'terminal_offline');
  assert.equal(e.httpStatus, 422);
  assert.equal(e.field, 'terminalId');
  e = await rejects(pos.pay({ terminalId: 'NOPE', amount: '1.00', currency: 'USD', reference: reference('nope') }), 'terminal_not_found');
  assert.equal(e.httpStatus, 404);
  e = await rejects(pos.getTransaction('txn_000000000000000000000000'), 'transaction_not_found');
  assert.equal(e.httpStatus, 404);
  e = await rejects(pos.cancel('txn_000000000000000000000000'), 'transaction_not_found');

  // The same Idempotency-Key for a different request.
  const key = `k-${reference('idem')}`;
  const first = await pos.pay({ terminalId: 'T1', amount: '2.00', currency: 'USD', reference: reference('idem1') }, { idempotencyKey: key });
  assert.equal(first.status, 'COMPLETED');
  e = await rejects(pos.pay({ terminalId: 'T1', amount: '3.00', currency: 'USD', reference: reference('idem2') }, { idempotencyKey: key }), 'idempotency_key_reused');
  assert.equal(e.httpStatus, 422);
  // The same key and request again converges on the one transaction.
  const same = await pos.pay({ terminalId: 'T1', amount: '2.00', currency: 'USD', reference: first.reference }, { idempotencyKey: key });
  assert.equal(same.id, first.id);
  e = await rejects(pos.refund(first.id, { amount: '5.00' }), 'refund_exceeds_amount');
  e = await rejects(pos.capture(first.id, { amountMinor: 100 }), 'invalid_state');
  assert.equal(e.httpStatus, 409);

  // Wrong secret: the upgrade and REST calls are refused with 401.
  const bad = client(2, { secret: 'wrong' });
  e = await rejects(bad.connect(), 'unauthorized');
  assert.equal(e.httpStatus, 401);
  assert.equal(e.field, 'X-Signature');
  e = await rejects(bad.terminals(), 'unauthorized');
  assert.equal(e.httpStatus, 401);
  await pos.close();
});

test('decline resolves pay with DECLINED', async () => {
  const pos = client(3);
  const txn = await pos.pay({ terminalId: 'T3', amount: '12.05', currency: 'USD', reference: reference('decline') });
  assert.equal(txn.status, 'DECLINED');
  assert.equal(txn.errorCode, 'declined');
  assert.equal(txn.responseCode, '05');
  await pos.close();
});

test('signature: signatureRequired is answered with signature(id, true)', async () => {
  const pos = client(4);
  const asked = [];
  pos.on('signatureRequired', async (m) => {
    asked.push(m.transactionId);
    const t = await pos.signature(m.transactionId, true);
    assert.equal(t.status, 'IN_PROGRESS');
  });
  const txn = await pos.pay({ terminalId: 'T4', amount: '12.55', currency: 'USD', reference: reference('sig') });
  assert.equal(txn.status, 'COMPLETED');
  assert.deepEqual(asked, [txn.id]);
  assert.ok(txn.history.some((h) => h.status === 'AWAITING_SIGNATURE'));
  await pos.close();
});

test('cancel: a payment the terminal never answers resolves CANCELLED', async () => {
  const pos = client(5);
  let id;
  const paying = pos.pay({ terminalId: 'T5', amount: '12.99', currency: 'USD', reference: reference('cancel') },
    { onUpdate: (t) => { id = t.id; } });
  await waitFor('the sale to be created', () => id);
  const c = await pos.cancel(id);
  assert.equal(c.status, 'CANCELLED');
  const txn = await paying;
  assert.equal(txn.status, 'CANCELLED');
  assert.equal(txn.id, id);
  const done = await pos.pay({ terminalId: 'T5', amount: '1.00', currency: 'USD', reference: reference('done') });
  const e = await rejects(pos.cancel(done.id), 'invalid_state');
  assert.equal(e.httpStatus, 409);
  await pos.close();
});

test('refund, void and capture', async () => {
  const pos = client(6);
  const sale = await pos.pay({ terminalId: 'T6', amount: '20.00', currency: 'USD', reference: reference('sale') });
  assert.equal(sale.status, 'COMPLETED');
  const refundDone = nextTransaction(pos, (t) => t.type === 'refund' && t.parentId === sale.id && t.status === 'COMPLETED');
  const refund = await pos.refund(sale.id, { amount: '5.00' });
  assert.equal(refund.type, 'refund');
  assert.equal(refund.amountMinor, 500);
  assert.equal((await refundDone).id, refund.id);
  assert.equal((await pos.getTransaction(sale.id)).refundedAmountMinor, 500);

  const sale2 = await pos.pay({ terminalId: 'T6', amount: '7.00', currency: 'USD', reference: reference('void') });
  const voided = new Promise((r) => pos.on('paymentVoided', r));
  const v = await pos.void(sale2.id, { reason: 'customer changed mind' });
  assert.equal(v.status, 'COMPLETED'); // unchanged until the terminal confirms
  const m = await voided;
  assert.equal(m.transactionId, sale2.id);
  assert.equal(m.reasonCode, 'requested');
  assert.equal(m.transaction.status, 'VOIDED');

  const auth = await pos.pay({ terminalId: 'T6', amount: '9.00', currency: 'USD', reference: reference('manual'), captureMode: 'manual' });
  assert.equal(auth.status, 'AUTHORIZED');
  const captured = nextTransaction(pos, (t) => t.id === auth.id && t.status === 'COMPLETED');
  await pos.capture(auth.id, { amountMinor: 800 });
  assert.equal((await captured).amountMinor, 800);
  await pos.close();
});

test('displacement: a second client with the same key makes the first emit displaced and stop', async () => {
  const first = client(7);
  await first.connect();
  const displaced = new Promise((r) => first.on('displaced', r));
  const disconnected = new Promise((r) => first.on('disconnected', r));
  const second = client(7);
  await second.connect();
  const d = await displaced;
  assert.equal(d.reason, 'api_key_used_elsewhere');
  assert.equal(d.reconnectAllowed, true);
  const info = await disconnected;
  assert.equal(info.code, 4001);
  assert.equal(info.willReconnect, false);
  // The second keeps the key: it can still pay.
  const t = await second.pay({ terminalId: 'T7', amount: '1.00', currency: 'USD', reference: reference('disp') });
  assert.equal(t.status, 'COMPLETED');
  await second.close();
});

test('reconnect: pay survives an operator kicking the connection mid-payment', async () => {
  const pos = client(8);
  const g = await pos.connect();
  const disc = [];
  pos.on('disconnected', (i) => disc.push(i));
  let reconnected = 0;
  pos.on('reconnected', () => { reconnected++; });
  let kicked = false;
  const txn = await pos.pay({ terminalId: 'T8', amount: '3.00', currency: 'USD', reference: reference('kick') }, {
    onUpdate: async (t) => {
      if (t.status === 'DISPATCHED' && !kicked) { kicked = true; await hub.kick(g.connectionId); }
    },
  });
  assert.equal(txn.status, 'COMPLETED');
  assert.ok(kicked);
  assert.equal(disc[0].code, 4003);
  assert.equal(disc[0].forceDisconnect.reason, 'admin_action');
  assert.equal(disc[0].willReconnect, true);
  assert.ok(reconnected >= 1);
  await pos.close();
});

test('replay: a message is acked only after its handler resolved', async () => {
  // A handler that never finishes: its message must come again on the next connection.
  const a = client(9);
  let release;
  const seenA = [];
  a.on('message', (m) => { seenA.push(m); if (m.action === 'paymentComplete') return new Promise((r) => { release = r; }); });
  await a.connect();
  let id;
  a.pay({ terminalId: 'T9', amount: '4.00', currency: 'USD', reference: reference('replay') }, { onUpdate: (t) => { id = t.id; } }).catch(() => {});
  await waitFor('paymentComplete to reach the slow handler', () => release);
  const complete = seenA.find((m) => m.action === 'paymentComplete');
  await a.close();

  const saved = [];
  const b = client(9, { store: { load: async () => null, save: async (mid) => { saved.push(mid); } } });
  const replayed = new Promise((r) => b.on('message', (m) => { if (m.action === 'paymentComplete') r(m); }));
  await b.connect();
  const m = await replayed;
  assert.equal(m.messageId, complete.messageId);
  assert.equal(m.transactionId, id);
  await waitFor('the ack cursor to be saved', () => saved.includes(m.messageId));
  await b.close();

  // Handled and acked by b: a third connection does not get it again; the
  // first durable message it sees is about a new payment (replay comes before live).
  const c = client(9);
  const firstMsg = new Promise((r) => c.on('message', r));
  await c.connect();
  const t2 = await c.pay({ terminalId: 'T9', amount: '4.10', currency: 'USD', reference: reference('after') });
  assert.equal((await firstMsg).transactionId, t2.id);
  await c.close();
});

test('store: messages up to the loaded cursor are dropped, newer ones are handled', async () => {
  const a = client(10);
  const msgs = [];
  let block = true;
  a.on('message', (m) => { msgs.push(m); if (block && m.action === 'paymentComplete') return new Promise(() => {}); });
  await a.connect();
  a.pay({ terminalId: 'T10', amount: '5.00', currency: 'USD', reference: reference('store') }).catch(() => {});
  await waitFor('paymentComplete', () => msgs.find((m) => m.action === 'paymentComplete'));
  await a.close();
  // The app processed everything up to paymentComplete (its own store says so), but the ack never left.
  const cursor = msgs.find((m) => m.action === 'paymentComplete').messageId;
  const b = client(10, { store: { load: async () => cursor, save: async () => {} } });
  const seen = [];
  b.on('message', (m) => { seen.push(m.messageId); });
  await b.connect();
  const t = await b.pay({ terminalId: 'T10', amount: '5.10', currency: 'USD', reference: reference('store2') });
  assert.equal(t.status, 'COMPLETED');
  assert.ok(seen.length >= 1);
  for (const mid of msgs.map((m) => m.messageId)) assert.ok(!seen.includes(mid), `${mid} was handled again`);
  await b.close();
});

test('503 unavailable: the payment is retried with the same Idempotency-Key and converges on one sale', async () => {
  // The hub really creates the sale; the answer is replaced by the 503 a stalled
  // Redis would give (outcome unknown), so the SDK must retry, not report it.
  const keys = [];
  let answered503 = 0;
  const fetch503 = async (url, init) => {
    const res = await fetch(url, init);
    if (init.method === 'POST' && url.endsWith('/v1/payments')) {
      keys.push(init.headers['Idempotency-Key']);
      if (answered503++ === 0) {
        return new Response(JSON.stringify({ error: { code: 'unavailable', message: 'the store is unavailable' } }),
          { status: 503, headers: { 'Retry-After': '0' } });
      }
    }
    return res;
  };
  const pos = client(12, { fetch: fetch503 });
  const ref12 = reference('unavail');
  const txn = await pos.pay({ terminalId: 'T12', amount: '2.50', currency: 'USD', reference: ref12 });
  assert.equal(txn.status, 'COMPLETED');
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1]);
  const page = await pos.listTransactions({ terminalId: 'T12' });
  assert.equal(page.data.filter((t) => t.reference === ref12).length, 1);
  await pos.close();
});
