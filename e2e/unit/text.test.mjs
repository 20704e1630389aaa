// Messages in words (app/text.js): previews and system notices, with CJK
// names and titles. The state module uses these without any DOM.
import { test } from 'node:test';
import assert from 'node:assert/strict';

const { messagePreview, systemText, formatDuration } = await import('../../crates/server/web/app/text.js');

test('previews say what a message is', () => {
  assert.equal(messagePreview({ kind: 'text', body: { text: '我们明天开会' } }), '我们明天开会');
  assert.equal(messagePreview({ kind: 'image', body: { caption: '猫' } }), 'Photo: 猫');
  assert.equal(messagePreview({ kind: 'voice', body: { duration_ms: 61_000 } }), 'Voice message (1:01)');
  assert.equal(messagePreview({ kind: 'text', deleted: true, body: {} }), 'Message deleted');
  assert.equal(formatDuration(0), '0:00');
});

test('system notices read as sentences', () => {
  const names = { 1: '王小明', 2: 'You', 3: 'Bob' };
  const name = (id) => names[id];
  const m = (body) => ({ kind: 'system', body });
  assert.equal(systemText(m({ event: 'group_created', by_user_id: 1, title: '分布式系统' }), name), '王小明 created the group “分布式系统”');
  assert.equal(systemText(m({ event: 'member_joined', by_user_id: 1, user_ids: [2, 3] }), name), '王小明 added you, Bob');
  assert.equal(systemText(m({ event: 'member_left', by_user_id: 3, user_id: 3, reason: 'left' }), name), 'Bob left');
});

test('call history lines say how the call ended', () => {
  const name = (id) => ({ 1: '王小明', 2: 'You' })[id];
  const call = (body) => ({ kind: 'system', sender_id: 1, body: { event: 'call_ended', call_id: 'c', ...body } });
  assert.equal(systemText(call({ outcome: 'answered', media: 'video', duration_ms: 65_000 }), name), 'Video call ended · 1:05');
  assert.equal(systemText(call({ outcome: 'missed', media: 'audio', duration_ms: 0 }), name), 'Missed call from 王小明');
  assert.equal(systemText(call({ outcome: 'declined', media: 'video', duration_ms: 0 }), name), 'You declined a video call from 王小明');
  assert.equal(systemText({ ...call({ outcome: 'missed', media: 'audio' }), sender_id: 2 }, name), 'Call not answered');
});
