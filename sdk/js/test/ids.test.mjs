// The ids the SDK makes up itself (Idempotency-Keys): the hub refuses text
// that holds what looks like a card number, so an id never holds 13 decimal
// digits in a row.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomId } from '../dist/esm/env.js';

test('randomId never holds 13 decimal digits in a row', () => {
  const seen = new Set();
  // Enough draws that a missing redraw shows many times over.
  for (let i = 0; i < 20000; i++) {
    const id = randomId('idem_');
    assert.match(id, /^idem_[0-9a-f]{24}$/);
    assert.doesNotMatch(id, /[0-9]{13}/, `id ${id}`);
    assert.ok(!seen.has(id), `id ${id} drawn twice`);
    seen.add(id);
  }
});
