// Unit tests of the browser app's outbox: unacked sends survive a reload
// (localStorage), keep their order, and a refused one is kept, not lost.
// Run: node --test e2e/unit/

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

// The smallest localStorage: what the module uses of it.
const storage = new Map();
globalThis.localStorage = {
  getItem: (k) => (storage.has(k) ? storage.get(k) : null),
  setItem: (k, v) => storage.set(k, String(v)),
  removeItem: (k) => storage.delete(k),
};
const { Outbox } = await import('../../crates/server/web/app/outbox.js');

const entry = (id, text) => ({ client_msg_id: id, conversation_id: 1, kind: 'text', body: { text } });

beforeEach(() => storage.clear());

test('entries survive a reload, in send order, once each', () => {
  const a = new Outbox(5);
  a.add(entry('a', 'one'));
  a.add(entry('b', 'two'));
  a.add(entry('a', 'one again')); // same client_msg_id: not a second send
  const reloaded = new Outbox(5);
  assert.deepEqual(reloaded.pending().map((e) => e.body.text), ['one', 'two']);
  assert.equal(new Outbox(6).pending().length, 0, 'another user has their own outbox');
});

test('an ack takes the entry out for good', () => {
  const a = new Outbox(5);
  a.add(entry('a', 'one'));
  a.add(entry('b', 'two'));
  assert.equal(a.take('a').body.text, 'one');
  assert.equal(a.take('a'), null);
  assert.deepEqual(new Outbox(5).pending().map((e) => e.client_msg_id), ['b']);
});

test('a refused entry is kept (not resent) until retried', () => {
  const a = new Outbox(5);
  a.add(entry('a', 'one'));
  a.fail('a', 'blocked');
  assert.equal(a.pending().length, 0);
  assert.equal(new Outbox(5).get('a').failed, 'blocked');
  a.retry('a');
  assert.deepEqual(new Outbox(5).pending().map((e) => e.client_msg_id), ['a']);
});

test('a corrupt stored outbox starts empty instead of breaking the app', () => {
  storage.set('confab.outbox.5', '{not json');
  assert.deepEqual(new Outbox(5).pending(), []);
});
