// Unit tests of the browser app's delivery logic (pure modules, no DOM):
// the reorder/dedup buffer must turn an at-least-once, shuffled stream into
// each message exactly once, in seq order, like the Rust SDK's ordering.rs.
// Run: node --test e2e/unit/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ordering } from '../../crates/server/web/app/ordering.js';

/** A small seeded PRNG so a failure can be replayed. */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const msg = (conversation_id, seq) => ({ conversation_id, seq, body: { text: `m${seq}` } });

test('shuffled, duplicated deliveries come out once each, in order', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const rand = rng(seed);
    const o = new Ordering();
    const n = 1 + Math.floor(rand() * 60);
    const stream = [];
    for (const conv of [1, 2]) {
      for (let seq = 1; seq <= n; seq++) {
        stream.push(msg(conv, seq));
        if (rand() < 0.3) stream.push(msg(conv, seq)); // a repeat
      }
    }
    for (let i = stream.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [stream[i], stream[j]] = [stream[j], stream[i]];
    }
    const out = { 1: [], 2: [] };
    for (const m of stream) {
      const r = o.push(m);
      if (r.kind === 'ready') for (const x of r.ready) out[x.conversation_id].push(x.seq);
    }
    const want = Array.from({ length: n }, (_, i) => i + 1);
    assert.deepEqual(out[1], want, `seed ${seed}`);
    assert.deepEqual(out[2], want, `seed ${seed}`);
    assert.equal(o.hasGaps(), false);
  }
});

test('a cursor from before drops what was already seen', () => {
  const o = new Ordering({ 7: 10 });
  assert.equal(o.push(msg(7, 9)).kind, 'duplicate');
  assert.equal(o.push(msg(7, 10)).kind, 'duplicate');
  const r = o.push(msg(7, 11));
  assert.equal(r.kind, 'ready');
  assert.deepEqual(r.ready.map((m) => m.seq), [11]);
  assert.deepEqual(o.cursors(), { 7: 11 });
});

test('a gap holds later messages until it is filled', () => {
  const o = new Ordering();
  assert.equal(o.push(msg(1, 2)).kind, 'buffered');
  assert.equal(o.push(msg(1, 3)).kind, 'buffered');
  assert.equal(o.hasGaps(), true);
  assert.equal(o.cursor(1), 0);
  const r = o.push(msg(1, 1));
  assert.deepEqual(r.ready.map((m) => m.seq), [1, 2, 3]);
  assert.equal(o.hasGaps(), false);
});

test('a join floor skips seqs that will never come and releases what waited', () => {
  const o = new Ordering();
  assert.equal(o.push(msg(3, 42)).kind, 'buffered');
  assert.equal(o.push(msg(3, 44)).kind, 'buffered');
  const ready = o.advance(3, 41);
  assert.deepEqual(ready.map((m) => m.seq), [42]);
  assert.equal(o.cursor(3), 42);
  assert.deepEqual(o.advance(3, 10), [], 'a floor below the cursor changes nothing');
  assert.deepEqual(o.push(msg(3, 43)).ready.map((m) => m.seq), [43, 44]);
});

test('a repeat of a held message keeps the newer copy', () => {
  const o = new Ordering();
  o.push(msg(1, 2));
  o.push({ ...msg(1, 2), body: { text: 'edited' } });
  const r = o.push(msg(1, 1));
  assert.equal(r.ready[1].body.text, 'edited');
});
