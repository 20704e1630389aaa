// Unit tests of the browser app's @mention text rules: which "@query" the
// autocomplete completes, and which members a text still mentions.
// Run: node --test e2e/unit/

import { test } from 'node:test';
import assert from 'node:assert/strict';

const { typedMention, hasMention } = await import('../../crates/server/web/app/mentiontext.js');

test('the mention being typed starts the text or follows whitespace', () => {
  assert.deepEqual(typedMention('@'), { at: 0, query: '' });
  assert.deepEqual(typedMention('Hey @Bo'), { at: 4, query: 'bo' });
  assert.deepEqual(typedMention('line\n@ann.l'), { at: 5, query: 'ann.l' });
  assert.equal(typedMention('mail me at ann@example'), null, 'not inside a word');
  assert.equal(typedMention('@ann '), null, 'finished by a space');
  assert.equal(typedMention('no mention'), null);
});

test('a text mentions a username only as a whole word', () => {
  assert.ok(hasMention('Hey @bob', 'bob'));
  assert.ok(hasMention('@BOB, lunch?', 'bob'), 'case-insensitive, punctuation after');
  assert.ok(hasMention('ask @bob.', 'bob'), 'a trailing dot is punctuation');
  assert.ok(hasMention('@bob.smith and @bob', 'bob'), 'a later whole match counts');
  assert.ok(!hasMention('@bobby', 'bob'));
  assert.ok(!hasMention('@bob.smith', 'bob'), 'a longer username');
  assert.ok(!hasMention('bob@bob', 'bob'), 'inside a word');
  assert.ok(!hasMention('hey bob', 'bob'), 'no @');
  assert.ok(hasMention('@bob.smith.', 'bob.smith'));
});
