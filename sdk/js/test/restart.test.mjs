// kill -9 of the hub mid-payment: the pay() promise stays pending and resolves
// once the restarted hub (same Redis) has the terminal's result.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosClient } from '../dist/esm/index.js';
import { Hub, KEYS } from './hub.mjs';

const redisUrl = process.env.REDIS_URL;
let hub;
after(async () => { await hub?.stop(); });

test('pay() survives a kill -9 of the hub mid-payment', {
  skip: redisUrl ? false : 'needs REDIS_URL: the embedded Redis does not survive a restart of the hub',
}, async () => {
  hub = new Hub({ redisUrl });
  await hub.start();
  // A slow card leaves time to kill the hub between DISPATCHED and the result.
  await hub.startSim(['--card-delay', '700ms']);
  const pos = new PosClient({ baseUrl: hub.baseUrl, ...KEYS[0], reconnect: { minDelayMs: 100, maxDelayMs: 1000 } });
  const disconnected = [];
  pos.on('disconnected', (i) => disconnected.push(i));
  let reconnected = 0;
  pos.on('reconnected', () => { reconnected++; });
  let restarted;
  const updates = [];
  const txn = await pos.pay({ terminalId: 'T0', amount: '6.00', currency: 'USD', reference: `restart-${process.pid}` }, {
    onUpdate: (t) => {
      updates.push(t.status);
      if (t.status === 'DISPATCHED' && !restarted) restarted = hub.kill9().then(() => hub.start());
    },
  });
  await restarted;
  assert.equal(txn.status, 'COMPLETED');
  assert.ok(updates.includes('DISPATCHED'));
  assert.ok(disconnected.length >= 1, 'the SDK saw the connection drop');
  assert.ok(disconnected.every((d) => d.willReconnect));
  assert.ok(reconnected >= 1);
  assert.equal((await pos.getTransaction(txn.id)).status, 'COMPLETED');
  await pos.close();
});
