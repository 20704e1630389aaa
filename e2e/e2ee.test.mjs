// End-to-end encrypted conversations (MLS, issue 14) in headless Chromium:
// two users chat in an encrypted direct chat (text in Chinese, an image),
// the server's history holds only ciphertext, safety numbers agree on both
// sides, a reload keeps everything readable (keys and state in IndexedDB),
// search finds decrypted text; then an encrypted group of three.
//
// With CONFAB_CLI (the `confab` binary) set, the interop part runs too: an
// encrypted group made by the Rust client (openmls) that a browser user
// joins and chats in both ways, and one made in the browser that the Rust
// client joins.
//
//   CONFAB_URL=http://127.0.0.1:18080 [CONFAB_CLI=target/debug/confab] node --test e2e/e2ee.test.mjs

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  BASE, OUT, PASSWORD, TIMEOUT, launch, messages, newContext, runSuffix, send, shot, signUp, stepper, tid, waitFor, watch,
} from './helpers.mjs';
import { cli } from './cli.mjs';

// A valid 24x16 PNG (the same as chat.test.mjs).
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAABgAAAAQCAIAAACDRijCAAACk0lEQVR42g3MkQLFIABA0XiSjONJMo4nyTieJON4kozjSTKOJ8nleJLsO947H3CEEAyCUaAEk2AWGMEiWAVOsAl2QRAcglOQBJfgFhTBI0DQBK/gEwghGSSjREkmySwxkkWySpxkk+ySIDkkpyRJLsktKZJHgqRJXskn/5FiUIwKpZgUs8IoFsWqcIpNsSuC4lCciqS4FLeiKB4FiqZ4FZ/6R5pBM2qUZtLMGqNZNKvGaTbNrgmaQ3NqkubS3JqieTRomubVfPofGQbDaFCGyTAbjGExrAZn2Ay7IRgOw2lIhstwG4rhMWBohtfwmX9kGSyjRVkmy2wxlsWyWpxls+yWYDkspyVZLsttKZbHgqVZXstn/5FjcIwO5Zgcs8M4FsfqcI7NsTuC43CcjuS4HLejOB4HjuZ4HZ/7R57BM3qUZ/LMHuNZPKvHeTbP7gmew3N6kufy3J7ieTx4muf1fP4fBYbAGFCBKTAHTGAJrAEX2AJ7IASOwBlIgStwB0rgCRBogTfwhX8UGSJjREWmyBwxkSWyRlxki+yREDkiZyRFrsgdKZEnQqRF3sgX/1FiSIwJlZgSc8IklsSacIktsSdC4kiciZS4EneiJJ4EiZZ4E1/6R5khM2ZUZsrMGZNZMmvGZbbMngmZI3NmUubK3JmSeTJkWubNfPkfFYbCWFCFqTAXTGEprAVX2Ap7IRSOwllIhatwF0rhKVBohbfwlX9UGSpjRVWmylwxlaWyVlxlq+yVUDkqZyVVrspdKZWnQqVV3spX/1FjaIwN1Zgac8M0lsbacI2tsTdC42icjdS4GnejNJ4GjdZ4G1/7R52hM3ZUZ+rMHdNZOmvHdbbO3gmdo3N2Uufq3J3SeTp0WuftfJ0f6NuBX8MWRq8AAAAASUVORK5CYII=',
  'base64',
);

const suffix = runSuffix();
const ANN = `ann_${suffix}`;
const BOB = `bob_${suffix}`;
const CAT = `cat_${suffix}`;

// What only the members may read (sent in encrypted conversations), and
// what the server is meant to see (the groups' titles). The Rust launcher
// (crates/confab/tests/it/browser.rs) scans the server's database, files
// and debug log for both after this test: none of the first, all of the second.
const b64 = (text) => Buffer.from(text).toString('base64');
writeFileSync(path.join(OUT, 'e2ee-plaintexts.json'), JSON.stringify({
  secret: [
    '你好，鲍勃！这是加密的。', '收到了 ✓', '换了新钥匙', '刷新之后还能读吗？', '新设备也能读', '新设备回复',
    // What bob searches for (his browser also asks the server, which searches plain conversations only).
    '刷新', '大家好', '我是猫', '猫走了以后', '像素.png',
    'hello from openmls 你好', 'hello from ts-mls 浏览器', 'made in the browser 你好', 'openmls joined 加入了',
    'from-browser.png', 'from-rust.png',
  ].map(b64).concat([PNG.toString('base64')]),
  visible: ['密友', '铁锈群', '浏览器群'].map(b64),
  // (the PNG above is also sent by the CLI as from-rust.png, a name the server does not see either)
}));

let browser;
after(async () => {
  if (browser) await browser.close();
});

/** The decrypted texts of the open chat, in order. */
async function texts(page) {
  return (await messages(page)).map((m) => m.text);
}

/** Opens the conversation titled `title` from the list. */
async function open(page, title) {
  const item = page.locator(tid('conversation-item')).filter({ hasText: title }).first();
  await item.waitFor({ timeout: TIMEOUT });
  await item.click();
  await waitFor(`the chat “${title}”`, async () => (await page.locator(tid('conversation-title')).textContent()) === title);
}

/** Waits until the open encrypted chat has its keys (no status banner). */
async function keysReady(page, timeout = 20_000) {
  const banner = page.locator(tid('e2ee-status'));
  try {
    await waitFor('the encrypted chat to have its keys', async () => !(await banner.isVisible()), timeout);
  } catch (e) {
    const text = await banner.textContent().catch(() => null);
    throw new Error(`${e.message} (the banner says: ${JSON.stringify(text)})`);
  }
}

/** GET on the API with the page's session, from inside the page. */
function apiGet(page, path) {
  return page.evaluate(async (p) => {
    const s = JSON.parse(localStorage.getItem('confab.session'));
    const res = await fetch(p, { headers: { Authorization: `Bearer ${s.access_token}` } });
    return { status: res.status, body: await res.json() };
  }, path);
}

test('encrypted conversations in the browser', { timeout: 180_000 }, async (t) => {
  browser = await launch();
  const [ctxA, ctxB, ctxC] = await Promise.all([newContext(browser), newContext(browser), newContext(browser)]);
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  const c = await ctxC.newPage();
  for (const [page, name] of [[a, 'ann'], [b, 'bob'], [c, 'cat']]) {
    watch(page, name);
    // The E2EE layer reports refused KeyPackages, failed pumps and commits as warnings.
    page.on('console', (m) => { if (m.type() === 'warning') console.error(`[${name}] console warning:`, m.text()); });
    page.on('response', (r) => {
      if (r.status() >= 400 && new URL(r.url()).pathname.startsWith('/v1/')) console.error(`[${name}] ${r.request().method()} ${new URL(r.url()).pathname} -> ${r.status()}`);
    });
  }
  const step = stepper(t);

  await step('three users sign up; ann and bob become friends', async () => {
    await signUp(a, ANN);
    await signUp(b, BOB);
    await signUp(c, CAT);
    // Each login registered the device's Ed25519 key and published KeyPackages.
    await waitFor('ann\'s KeyPackages on the server', async () => {
      const r = await apiGet(a, '/v1/keys/packages');
      return r.status === 200 && r.body.stock >= 10 && r.body.last_resort;
    });
    const me = await apiGet(a, '/v1/users/me');
    const devices = await apiGet(a, `/v1/users/${me.body.id}/devices`);
    assert.equal(devices.status, 200);
    assert.ok(devices.body.devices.every((d) => typeof d.public_key === 'string' && d.public_key.length === 44),
      'the device key was sent at sign-up (32 bytes, base64)');

    await a.locator(tid('friends')).click();
    await a.locator(tid('friend-username')).fill(BOB);
    await a.locator(tid('friend-request-send')).click();
    await a.getByText('pending', { exact: true }).waitFor({ timeout: TIMEOUT });
    await a.keyboard.press('Escape');
    await b.locator(tid('friends')).click();
    const request = b.locator(`${tid('friend-request')}[data-username="${ANN}"]`);
    await request.waitFor({ timeout: TIMEOUT });
    await request.locator(tid('friend-accept')).click();
    await b.locator(`${tid('friend')}[data-username="${ANN}"]`).waitFor({ timeout: TIMEOUT });
    await b.keyboard.press('Escape');
  });

  let convId;
  await step('ann starts an encrypted direct chat; both see the lock and chat in Chinese', async () => {
    await a.locator(tid('new-chat')).click();
    await a.locator(tid('new-chat-username')).fill(BOB);
    await a.locator(tid('new-chat-encrypted')).check();
    await a.locator(tid('new-chat-start')).click();
    await waitFor('the chat title', async () => (await a.locator(tid('conversation-title')).textContent()) === BOB);
    await a.locator(`.chat-head ${tid('encrypted-badge')}`).waitFor({ state: 'visible', timeout: TIMEOUT });
    convId = await a.locator(`${tid('conversation-item')}[aria-current="true"]`).getAttribute('data-conversation-id');
    await keysReady(a);
    await send(a, '你好，鲍勃！这是加密的。');

    const bItem = b.locator(`${tid('conversation-item')}[data-conversation-id="${convId}"]`);
    await bItem.waitFor({ timeout: TIMEOUT });
    await bItem.locator(tid('encrypted-badge')).waitFor({ timeout: TIMEOUT });
    await bItem.click();
    await waitFor('bob to decrypt ann\'s message', async () => (await texts(b)).includes('你好，鲍勃！这是加密的。'), 20_000);
    await keysReady(b);
    await send(b, '收到了 ✓');
    await waitFor('ann to decrypt bob\'s reply', async () => (await texts(a)).includes('收到了 ✓'), 20_000);
    await shot(a, 'e2ee-01-direct-chat');
  });

  await step('the server holds only ciphertext', async () => {
    const r = await apiGet(a, `/v1/conversations/${convId}/messages?limit=100`);
    assert.equal(r.status, 200);
    const user = r.body.messages.filter((m) => m.kind !== 'system');
    assert.ok(user.length >= 3, 'a commit and two messages');
    for (const m of user) {
      assert.equal(m.kind, 'encrypted');
      assert.ok(typeof m.body.ciphertext === 'string' && m.body.ciphertext.length > 0);
    }
    const raw = JSON.stringify(r.body);
    assert.ok(!raw.includes('鲍勃') && !raw.includes('收到了'), 'no plaintext in the history the server serves');
    // Writing a plain message into it is refused.
    const refused = await a.evaluate(async (id) => {
      const s = JSON.parse(localStorage.getItem('confab.session'));
      const res = await fetch(`/v1/conversations/${id}/messages`, {
        method: 'POST', headers: { Authorization: `Bearer ${s.access_token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ client_msg_id: crypto.randomUUID(), kind: 'text', body: { text: 'plain' } }),
      });
      return { status: res.status, body: await res.json() };
    }, convId);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.code, 'encryption_required');
  });

  await step('an encrypted image: ciphertext uploaded, shown decrypted on both sides', async () => {
    await a.locator(tid('attach-input')).setInputFiles({ name: '像素.png', mimeType: 'image/png', buffer: PNG });
    await a.locator(tid('image-send')).click();
    for (const page of [b, a]) {
      const img = page.locator(tid('message-image')).first();
      await img.waitFor({ timeout: 20_000 });
      await waitFor('the image to decrypt and decode', () => img.evaluate((el) => el.complete && el.naturalWidth === 24 && el.src.startsWith('blob:')), 20_000);
    }
    // What the server stored is not the PNG.
    const r = await apiGet(b, `/v1/conversations/${convId}/messages?limit=100`);
    const withMedia = r.body.messages.filter((m) => m.body && m.body.media_id);
    assert.equal(withMedia.length, 1, 'the encrypted message names its upload');
    const stored = await b.evaluate(async (id) => {
      const s = JSON.parse(localStorage.getItem('confab.session'));
      const res = await fetch(`/v1/media/${id}`, { headers: { Authorization: `Bearer ${s.access_token}` } });
      const bytes = new Uint8Array(await res.arrayBuffer());
      return { type: res.headers.get('content-type'), head: [...bytes.slice(0, 8)], len: bytes.length };
    }, withMedia[0].body.media_id);
    assert.notDeepEqual(stored.head, [...PNG.subarray(0, 8)], 'the upload is not the plain PNG');
    assert.equal(stored.len, PNG.length + 16, 'AES-GCM ciphertext: the PNG plus a 16-byte tag');
    await shot(b, 'e2ee-02-image');
  });

  await step('keys are updated on a schedule: a self-update commit goes before the next send', async () => {
    const commits = async () => (await apiGet(a, `/v1/conversations/${convId}/messages?limit=100`)).body.messages
      .filter((m) => m.kind === 'encrypted' && m.body.mls === 'commit').length;
    const before = await commits();
    // Due at once (the schedule is a week).
    await a.evaluate(() => localStorage.setItem('confab.keyUpdateEveryMs', '0'));
    await send(a, '换了新钥匙');
    await waitFor('bob to decrypt what ann sent with her new keys', async () => (await texts(b)).includes('换了新钥匙'), 20_000);
    await a.evaluate(() => localStorage.removeItem('confab.keyUpdateEveryMs'));
    assert.equal(await commits(), before + 1, 'one self-update commit');
    await waitFor('ann to show her own message', async () => (await texts(a)).includes('换了新钥匙'), 20_000);
  });

  await step('safety numbers agree on both sides', async () => {
    const numbers = async (page) => {
      await page.locator(tid('safety-numbers')).click();
      await page.locator(tid('safety-number')).first().waitFor({ timeout: TIMEOUT });
      await waitFor('both devices listed', async () => (await page.locator(tid('safety-device')).count()) === 2);
      const out = await page.$$eval(tid('safety-device'), (els) => els.map((el) => ({
        device: el.dataset.deviceId, number: el.querySelector('[data-testid="safety-number"]').textContent,
      })));
      await page.keyboard.press('Escape');
      return Object.fromEntries(out.map((d) => [d.device, d.number]));
    };
    const onA = await numbers(a);
    const onB = await numbers(b);
    assert.deepEqual(onA, onB, 'each device has the same number on both sides');
    for (const n of Object.values(onA)) assert.match(n, /^\d{5}( \d{5}){5}$/);
    assert.notEqual(Object.values(onA)[0], Object.values(onA)[1]);
  });

  await step('after a reload, history is still readable and new messages decrypt', async () => {
    await b.reload();
    await b.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    await open(b, ANN);
    await waitFor('the old messages from IndexedDB', async () => {
      const all = await texts(b);
      return all.includes('你好，鲍勃！这是加密的。') && all.includes('收到了 ✓');
    }, 20_000);
    await send(a, '刷新之后还能读吗？');
    await waitFor('bob to decrypt a new message after the reload', async () => (await texts(b)).includes('刷新之后还能读吗？'), 20_000);
    await send(b, '能！');
    await waitFor('ann to read bob\'s answer', async () => (await texts(a)).includes('能！'), 20_000);
  });

  await step('search finds decrypted text (the server cannot)', async () => {
    await b.locator(tid('search-input')).fill('刷新');
    const hit = b.locator(`${tid('search-hit')}[data-conversation-id="${convId}"]`).first();
    await hit.waitFor({ timeout: TIMEOUT });
    await hit.click();
    await waitFor('the hit opened', async () => (await texts(b)).includes('刷新之后还能读吗？'));
    await b.locator(tid('search-input')).fill('');
  });

  await step('bob signs in again (a new device): the chat waits for keys until ann’s device adds it', async () => {
    await b.locator(tid('sign-out')).click();
    await b.locator(tid('sign-in')).waitFor({ timeout: TIMEOUT });
    await b.locator(tid('username')).fill(BOB);
    await b.locator(tid('password')).fill(PASSWORD);
    await b.locator(tid('sign-in')).click();
    await b.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    await open(b, ANN);
    const banner = b.locator(tid('e2ee-status'));
    await waitFor('the “waiting for keys” banner', async () => (await banner.getAttribute('data-state')) === 'waiting');
    assert.match(await banner.textContent(), /^Waiting for keys/);
    // What was sent before this device existed says so (and is not an error).
    await waitFor('the earlier messages marked as sent before this device joined', async () => {
      const states = await b.$$eval(tid('message-undecrypted'), (els) => els.map((el) => el.dataset.state));
      return states.length >= 4 && states.every((st) => st === 'before');
    });
    await shot(b, 'e2ee-03-waiting-for-keys');
    // Ann's device adds it the next time it compares the group with the
    // members: when a page opens the chat for the first time (here after a
    // reload), or every 5 minutes before sending.
    await a.reload();
    await a.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    await open(a, BOB);
    await keysReady(b, 30_000);
    await send(a, '新设备也能读');
    await waitFor('bob\'s new device decrypts', async () => (await texts(b)).includes('新设备也能读'), 20_000);
    await send(b, '新设备回复');
    await waitFor('ann reads the new device', async () => (await texts(a)).includes('新设备回复'), 20_000);
  });

  await step('an encrypted group of three: everyone reads everyone', async () => {
    await a.locator(tid('new-group')).click();
    await a.locator(tid('group-title')).fill('密友');
    await a.locator(tid('group-members')).fill(`${BOB}, ${CAT}`);
    await a.locator(tid('new-group-encrypted')).check();
    await a.locator(tid('group-create')).click();
    await waitFor('the group open', async () => (await a.locator(tid('conversation-title')).textContent()) === '密友');
    await keysReady(a);
    await send(a, '大家好');
    for (const page of [b, c]) {
      await open(page, '密友');
      await page.locator(`.chat-head ${tid('encrypted-badge')}`).waitFor({ state: 'visible', timeout: TIMEOUT });
      await waitFor('the group message', async () => (await texts(page)).includes('大家好'), 20_000);
    }
    await send(c, '我是猫');
    await waitFor('ann reads cat', async () => (await texts(a)).includes('我是猫'), 20_000);
    await waitFor('bob reads cat', async () => (await texts(b)).includes('我是猫'), 20_000);
    // Bob posts cat's ciphertext again as his own: the MLS signer (cat's
    // leaf) is not the sender the server names (bob), so it is refused and
    // says why, instead of reading as bob saying “我是猫”.
    const replayed = await b.evaluate(async (title) => {
      const s = JSON.parse(localStorage.getItem('confab.session'));
      const headers = { Authorization: `Bearer ${s.access_token}`, 'Content-Type': 'application/json' };
      const { conversations } = await (await fetch('/v1/conversations', { headers })).json();
      const conv = conversations.find((x) => x.title === title);
      const { messages: list } = await (await fetch(`/v1/conversations/${conv.id}/messages?limit=100`, { headers })).json();
      const original = list.filter((m) => m.kind === 'encrypted' && m.body.mls === 'application' && m.sender_id !== s.user.id).pop();
      const res = await fetch(`/v1/conversations/${conv.id}/messages`, {
        method: 'POST', headers,
        body: JSON.stringify({ client_msg_id: crypto.randomUUID(), kind: 'encrypted', body: { ciphertext: original.body.ciphertext, mls: 'application', epoch: original.body.epoch } }),
      });
      return { status: res.status, seq: (await res.json()).seq };
    }, '密友');
    assert.equal(replayed.status, 201, 'the server cannot tell (it stores it)');
    await waitFor('ann refuses the replayed message', async () => {
      const el = a.locator(`${tid('message')}[data-seq="${replayed.seq}"] ${tid('message-undecrypted')}`);
      return (await el.count()) === 1 && (await el.getAttribute('data-state')) === 'failed'
        && /the server says user/.test(await el.textContent());
    }, 20_000);
    assert.equal((await texts(a)).filter((x) => x === '我是猫').length, 1, 'cat’s message reads once, from cat');
    await c.locator(tid('attach-input')).setInputFiles({ name: 'cat.png', mimeType: 'image/png', buffer: PNG });
    await c.locator(tid('image-send')).click();
    for (const page of [a, b]) {
      const img = page.locator(tid('message-image')).first();
      await img.waitFor({ timeout: 20_000 });
      await waitFor('the group image', () => img.evaluate((el) => el.complete && el.naturalWidth === 24), 20_000);
    }
    await shot(a, 'e2ee-04-group');
  });

  await step('removing a member: the commit goes first, later messages are not theirs to read', async () => {
    await a.locator(tid('members')).click();
    const row = a.locator(`${tid('member')}[data-username="${CAT}"]`);
    await row.waitFor({ timeout: TIMEOUT });
    await row.locator(tid('member-remove')).click();
    await row.waitFor({ state: 'detached', timeout: 20_000 });
    await a.keyboard.press('Escape');
    await send(a, '猫走了以后');
    await waitFor('bob reads it', async () => (await texts(b)).includes('猫走了以后'), 20_000);
    // Cat's device was removed from the MLS group before the message was sent.
    await c.waitForTimeout(1000);
    assert.ok(!(await texts(c)).includes('猫走了以后'), 'the removed member does not read later messages');
  });

  const interopStep = 'the Rust client (openmls) and the browser (ts-mls) share encrypted groups';
  if (process.env.CONFAB_CLI) await step(interopStep, () => interop(a));
  else await t.test(interopStep, { skip: 'CONFAB_CLI not set' }, () => {});
});

/**
 * Interop through the `confab` CLI (openmls): a group made by the CLI that
 * ann's browser joins, messages both ways; and a group made by ann in the
 * browser that the CLI joins and reads, messages both ways.
 */
async function interop(a) {
  const rust = await cli.signUp(`rusty_${suffix}`);
  // A group made by the Rust side, with ann in it.
  const fromRust = await rust.createEncryptedGroup('铁锈群', [ANN]);
  await rust.send(fromRust, 'hello from openmls 你好');
  await open(a, '铁锈群');
  await waitFor('ann decrypts the Rust client\'s message', async () => (await texts(a)).includes('hello from openmls 你好'), 30_000);
  await keysReady(a);
  await send(a, 'hello from ts-mls 浏览器');
  await waitFor('the Rust client decrypts ann\'s message', async () => (await rust.history(fromRust)).includes('hello from ts-mls 浏览器'), 30_000);

  // A group made in the browser that the Rust side joins.
  await a.locator(tid('new-group')).click();
  await a.locator(tid('group-title')).fill('浏览器群');
  await a.locator(tid('group-members')).fill(rust.username);
  await a.locator(tid('new-group-encrypted')).check();
  await a.locator(tid('group-create')).click();
  await waitFor('the group open', async () => (await a.locator(tid('conversation-title')).textContent()) === '浏览器群');
  await keysReady(a);
  const convId = Number(await a.locator(`${tid('conversation-item')}[aria-current="true"]`).getAttribute('data-conversation-id'));
  await send(a, 'made in the browser 你好');
  await waitFor('the Rust client joins and decrypts', async () => (await rust.history(convId)).includes('made in the browser 你好'), 30_000);
  await rust.send(convId, 'openmls joined 加入了');
  await waitFor('ann decrypts the Rust client in her group', async () => (await texts(a)).includes('openmls joined 加入了'), 30_000);

  // Encrypted attachments both ways (AES-256-GCM, the key inside MLS).
  await a.locator(tid('attach-input')).setInputFiles({ name: 'from-browser.png', mimeType: 'image/png', buffer: PNG });
  await a.locator(tid('image-send')).click();
  const image = await waitFor('the Rust client sees the browser\'s image', async () => (await rust.messages(convId))
    .find((m) => m.content.kind === 'image' && m.content.body.name === 'from-browser.png'), 30_000);
  assert.deepEqual(await rust.download(convId, image.seq), PNG, 'the Rust client decrypts the browser\'s attachment byte for byte');
  const file = path.join(OUT, 'from-rust.png');
  writeFileSync(file, PNG);
  await rust.sendImage(convId, file);
  await waitFor('ann decrypts the Rust client\'s image', async () => {
    const imgs = a.locator(tid('message-image'));
    const n = await imgs.count();
    for (let i = 0; i < n; i++) {
      const ok = await imgs.nth(i).evaluate((el) => el.complete && el.naturalWidth === 24 && el.src.startsWith('blob:'));
      if (!ok) return false;
    }
    return n === 2;
  }, 30_000);

  // The same safety number for the Rust device in the browser and in the CLI.
  const rustNumber = await rust.safetyNumber();
  assert.match(rustNumber, /^\d{5}( \d{5}){5}$/);
  await a.locator(tid('safety-numbers')).click();
  await waitFor('the Rust device in ann\'s safety numbers', async () => {
    const numbers = await a.$$eval(tid('safety-number'), (els) => els.map((el) => el.textContent));
    return numbers.length === 2 && numbers.includes(rustNumber);
  });
  await a.keyboard.press('Escape');
  await shot(a, 'e2ee-05-interop');
}
