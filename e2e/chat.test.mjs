// End-to-end test of the Confab web app in headless Chromium: two users in
// two browser contexts sign up, befriend, chat both ways, send an image and
// a voice message, see typing and read receipts, survive going offline
// (outbox resent once, in order) and a reload, reply, react and search.
// Screenshots go to $E2E_OUT.
//
// Run from the repo root against a running server:
//   CONFAB_URL=http://127.0.0.1:18080 E2E_OUT=/tmp/shots node --test e2e/chat.test.mjs

import { test, after } from 'node:test';
import { createHash, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  BASE, TIMEOUT, launch, messages, newContext, runSuffix, send, shot, signUp, stepper, tid, waitFor, watch,
} from './helpers.mjs';

// A valid 24x16 RGB PNG (it must decode: the server checks images).
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAABgAAAAQCAIAAACDRijCAAACk0lEQVR42g3MkQLFIABA0XiSjONJMo4nyTieJON4kozjSTKOJ8nleJLsO947H3CEEAyCUaAEk2AWGMEiWAVOsAl2QRAcglOQBJfgFhTBI0DQBK/gEwghGSSjREkmySwxkkWySpxkk+ySIDkkpyRJLsktKZJHgqRJXskn/5FiUIwKpZgUs8IoFsWqcIpNsSuC4lCciqS4FLeiKB4FiqZ4FZ/6R5pBM2qUZtLMGqNZNKvGaTbNrgmaQ3NqkubS3JqieTRomubVfPofGQbDaFCGyTAbjGExrAZn2Ay7IRgOw2lIhstwG4rhMWBohtfwmX9kGSyjRVkmy2wxlsWyWpxls+yWYDkspyVZLsttKZbHgqVZXstn/5FjcIwO5Zgcs8M4FsfqcI7NsTuC43CcjuS4HLejOB4HjuZ4HZ/7R57BM3qUZ/LMHuNZPKvHeTbP7gmew3N6kufy3J7ieTx4muf1fP4fBYbAGFCBKTAHTGAJrAEX2AJ7IASOwBlIgStwB0rgCRBogTfwhX8UGSJjREWmyBwxkSWyRlxki+yREDkiZyRFrsgdKZEnQqRF3sgX/1FiSIwJlZgSc8IklsSacIktsSdC4kiciZS4EneiJJ4EiZZ4E1/6R5khM2ZUZsrMGZNZMmvGZbbMngmZI3NmUubK3JmSeTJkWubNfPkfFYbCWFCFqTAXTGEprAVX2Ap7IRSOwllIhatwF0rhKVBohbfwlX9UGSpjRVWmylwxlaWyVlxlq+yVUDkqZyVVrspdKZWnQqVV3spX/1FjaIwN1Zgac8M0lsbacI2tsTdC42icjdS4GnejNJ4GjdZ4G1/7R52hM3ZUZ+rMHdNZOmvHdbbO3gmdo3N2Uufq3J3SeTp0WuftfJ0f6NuBX8MWRq8AAAAASUVORK5CYII=',
  'base64',
);

const suffix = runSuffix();
const USER_A = `ann_${suffix}`;
const USER_B = `bob_${suffix}`;

let browser;
after(async () => {
  if (browser) await browser.close();
});

test('two users chat in the browser', { timeout: 90_000 }, async (t) => {
  browser = await launch();
  const ctxA = await newContext(browser);
  const ctxB = await newContext(browser);
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  const step = stepper(t);
  watch(a, 'A');
  watch(b, 'B');
  // The Sec-WebSocket-Extensions the server answered each page's sockets
  // with (issue 15: Chromium offers permessage-deflate, the server agrees).
  const extensions = { A: [], B: [] };
  for (const [page, name] of [[a, 'A'], [b, 'B']]) {
    const cdp = await page.context().newCDPSession(page);
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
      const headers = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), v]));
      extensions[name].push(headers['sec-websocket-extensions'] || '');
    });
    await cdp.send('Network.enable');
  }

  await step('both sign up and are signed in', async () => {
    await a.goto(BASE);
    await a.locator(tid('sign-in')).waitFor({ timeout: TIMEOUT });
    await shot(a, '01-sign-in');
    await signUp(a, USER_A);
    await signUp(b, USER_B);
  });

  await step('A befriends B by username, B accepts', async () => {
    await a.locator(tid('friends')).click();
    await a.locator(tid('friend-username')).fill(USER_B);
    await a.locator(tid('friend-request-send')).click();
    await a.getByText('pending', { exact: true }).waitFor({ timeout: TIMEOUT });
    await a.keyboard.press('Escape');

    await b.locator(tid('friends')).click();
    const request = b.locator(`${tid('friend-request')}[data-username="${USER_A}"]`);
    await request.waitFor({ timeout: TIMEOUT });
    await request.locator(tid('friend-accept')).click();
    await b.locator(`${tid('friend')}[data-username="${USER_A}"]`).waitFor({ timeout: TIMEOUT });
    await b.keyboard.press('Escape');
    await b.locator(tid('friends-panel')).waitFor({ state: 'detached', timeout: TIMEOUT });
  });

  let convId;
  await step('A starts a direct chat with B and they chat both ways', async () => {
    await a.locator(tid('new-chat')).click();
    await a.locator(tid('new-chat-username')).fill(USER_B);
    await a.locator(tid('new-chat-start')).click();
    await waitFor('the chat title', async () => (await a.locator(tid('conversation-title')).textContent()) === USER_B);
    const item = a.locator(tid('conversation-item')).first();
    convId = await item.getAttribute('data-conversation-id');
    assert.ok(convId, 'the conversation is listed');

    await send(a, 'Hello Bob! https://example.com');
    const bItem = b.locator(`${tid('conversation-item')}[data-conversation-id="${convId}"]`);
    await bItem.waitFor({ timeout: TIMEOUT });
    await waitFor('B\'s unread badge', async () => (await bItem.locator(tid('unread-badge')).textContent()) === '1');
    assert.match(await bItem.locator(tid('last-message')).textContent(), /Hello Bob/);
    await bItem.click();
    await waitFor('B to see A\'s message', async () => (await messages(b)).some((m) => !m.mine && m.text.startsWith('Hello Bob')));
    // Links are anchors that open safely.
    const link = b.locator(`${tid('message-text')} a`).first();
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer nofollow');

    // B types: A sees the typing indicator; then B's reply arrives.
    await b.locator(tid('composer')).pressSequentially('Hi Ann', { delay: 20 });
    await a.locator(tid('typing-indicator')).waitFor({ state: 'visible', timeout: TIMEOUT });
    assert.match(await a.locator(tid('typing-indicator')).textContent(), new RegExp(`${USER_B} is typing`));
    await b.locator(tid('composer')).press('Enter');
    await waitFor('A to get B\'s reply', async () => (await messages(a)).some((m) => !m.mine && m.text === 'Hi Ann'));
    await a.locator(tid('typing-indicator')).waitFor({ state: 'hidden', timeout: TIMEOUT });

    // B has the chat open, so A's message is read.
    await waitFor('a read tick on A\'s message', async () => (await messages(a)).find((m) => m.mine).status === 'read');
    // Presence: each sees the other online.
    await a.locator(`${tid('presence-dot')}[data-status="online"]`).first().waitFor({ timeout: TIMEOUT });
    await shot(a, '02-desktop-list-and-chat');
  });

  await step('the sockets are compressed and a 10 KB text arrives intact', async () => {
    assert.ok(extensions.A.length > 0 && extensions.B.length > 0, 'both pages opened a WebSocket');
    for (const name of ['A', 'B']) {
      for (const value of extensions[name]) assert.match(value, /^permessage-deflate/, `${name}'s socket: ${value}`);
    }
    // About 10 KB of UTF-8, mostly Chinese: compressed on the wire both ways.
    let big = '';
    for (let i = 0; Buffer.byteLength(big) < 10_000; i += 1) big += `第${i}段：压缩的消息应该完整到达。 `;
    big = big.trim();
    await send(a, big);
    await waitFor('B to get the 10 KB text', async () => (await messages(b)).some((m) => !m.mine && m.text === big));
  });

  await step('A sends an image and a voice message, B sees both', async () => {
    await a.locator(tid('attach-input')).setInputFiles({ name: 'pixels.png', mimeType: 'image/png', buffer: PNG });
    await a.locator(tid('image-send')).click();
    const img = b.locator(tid('message-image')).first();
    await img.waitFor({ timeout: TIMEOUT });
    await waitFor('the image to decode on B', () => img.evaluate((el) => el.complete && el.naturalWidth > 0));

    await a.locator(tid('record-voice')).click();
    await a.locator(`${tid('record-voice')}[data-recording="true"]`).waitFor({ timeout: TIMEOUT });
    await a.getByText('● 0:01').waitFor({ timeout: TIMEOUT }); // record about a second of fake audio
    await a.locator(tid('record-voice')).click();
    await b.locator(tid('message-voice')).first().waitFor({ timeout: 15_000 });
    await a.locator(tid('message-voice')).first().waitFor({ timeout: TIMEOUT });
    // Media is fetched with the token in a header and shown from a blob: URL.
    await waitFor('B\'s voice note to load', async () =>
      ((await b.locator(tid('message-voice')).first().getAttribute('src')) || '').startsWith('blob:'));
    await waitFor('A\'s image to show', () => a.locator(tid('message-image')).first().evaluate((el) => el.complete && el.naturalWidth > 0));
    await shot(a, '03-chat-image-voice');
    await shot(b, '03b-chat-image-voice-receiver');
  });

  await step('a big file goes up resumably through a dropped connection, B gets it intact', async () => {
    const big = randomBytes(9 * 1024 * 1024); // three 4 MiB chunks
    const want = createHash('sha256').update(big).digest('hex');
    let patches = 0;
    let dropped = false;
    await a.route('**/v1/media/uploads/**', (route) => {
      if (route.request().method() === 'PATCH' && ++patches === 2) {
        dropped = true;
        return route.abort('connectionreset');
      }
      return route.continue();
    });
    await a.locator(tid('attach-input')).setInputFiles({ name: 'big.bin', mimeType: 'application/octet-stream', buffer: big });
    const link = b.locator(tid('message-file')).filter({ hasText: 'big.bin' });
    await link.waitFor({ timeout: 30_000 });
    await a.unroute('**/v1/media/uploads/**');
    assert.ok(dropped, 'the second chunk was cut off');
    assert.ok(patches >= 4, `the cut chunk was sent again (${patches} PATCHes)`);
    assert.ok(!(await link.getAttribute('href')).includes('token'), 'no token in the link');
    const [download] = await Promise.all([b.waitForEvent('download', { timeout: 30_000 }), link.click()]);
    const saved = await readFile(await download.path());
    const got = createHash('sha256').update(saved).digest('hex');
    assert.equal(got, want, 'B downloads exactly what A sent');
  });

  let before;
  await step('B goes offline, writes two messages, they are delivered once and in order', async () => {
    await ctxB.setOffline(true);
    const banner = b.locator(tid('connection-status'));
    await banner.waitFor({ state: 'visible', timeout: TIMEOUT });
    assert.equal(await banner.getAttribute('data-state'), 'offline');
    await send(b, 'Offline one');
    await send(b, 'Offline two');
    await waitFor('two sending messages', async () =>
      (await messages(b)).filter((m) => m.status === 'sending').map((m) => m.text).join('|') === 'Offline one|Offline two');
    await shot(b, '04-offline-sending');

    await ctxB.setOffline(false);
    await banner.waitFor({ state: 'hidden', timeout: 15_000 });
    await waitFor('B\'s messages to be sent', async () => {
      const mine = (await messages(b)).filter((m) => m.text.startsWith('Offline'));
      return mine.length === 2 && mine.every((m) => m.seq && m.status !== 'sending');
    }, 15_000);
    const got = await waitFor('A to get both', async () => {
      const list = (await messages(a)).filter((m) => m.text.startsWith('Offline'));
      return list.length >= 2 && list;
    });
    assert.deepEqual(got.map((m) => m.text), ['Offline one', 'Offline two'], 'each once, in order');
    assert.equal(got[1].seq, got[0].seq + 1, 'consecutive seqs');
    const all = await messages(a);
    assert.equal(new Set(all.map((m) => m.seq)).size, all.length, 'no duplicates on A');
    before = await messages(b);
  });

  await step('B reloads: history restored without duplicates', async () => {
    await b.reload();
    await b.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    await b.locator(`${tid('conversation-item')}[data-conversation-id="${convId}"]`).click();
    const after = await waitFor('history after reload', async () => {
      const list = await messages(b);
      return list.length >= before.length && list;
    });
    const strip = (list) => list.map(({ seq, mine, kind, text }) => ({ seq, mine, kind, text }));
    assert.deepEqual(strip(after), strip(before));
    assert.equal(new Set(after.map((m) => m.seq)).size, after.length, 'no duplicates after reload');
    await shot(b, '05-after-reload');
  });

  await step('reply, react and search with jump to the message', async () => {
    const hello = b.locator(tid('message')).filter({ hasText: 'Hello Bob' });
    await hello.hover();
    await hello.locator(tid('message-reply')).click();
    await send(b, 'Replying to your hello');
    const reply = a.locator(`${tid('message')}[data-mine="false"]`).filter({ hasText: 'Replying to your hello' });
    await reply.waitFor({ timeout: TIMEOUT });
    assert.match(await reply.locator(tid('message-quote')).textContent(), /Hello Bob/);

    await reply.hover();
    await reply.locator(tid('message-react')).click();
    await reply.locator(`${tid('react-option')}[data-emoji="👍"]`).click();
    await b.locator(`${tid('reaction')}[data-emoji="👍"]`).waitFor({ timeout: TIMEOUT });
    assert.match(await b.locator(`${tid('reaction')}[data-emoji="👍"]`).textContent(), /1/);

    await a.locator(tid('search-input')).fill('offline');
    const hit = a.locator(tid('search-hit')).first();
    await hit.waitFor({ timeout: TIMEOUT });
    await waitFor('two search hits', async () => (await a.locator(tid('search-hit')).count()) === 2);
    const seq = await hit.getAttribute('data-seq');
    await hit.click();
    await a.locator(`${tid('message')}[data-seq="${seq}"].highlight`).waitFor({ timeout: TIMEOUT });
    await a.locator(tid('search-input')).fill('');
  });

  await step('phone layout at 360 px', async () => {
    await b.setViewportSize({ width: 360, height: 740 });
    await b.locator(tid('back')).waitFor({ state: 'visible', timeout: TIMEOUT });
    await b.mouse.move(180, 30); // no hover toolbar over a message in the picture
    await shot(b, '06-phone-chat');
    await b.locator(tid('back')).click();
    await b.locator(tid('conversation-list')).waitFor({ state: 'visible', timeout: TIMEOUT });
    await shot(b, '07-phone-list');
  });

  await step('desktop notifications while the tab is hidden, none when muted', async () => {
    await b.setViewportSize({ width: 1280, height: 800 });
    await b.locator(`${tid('conversation-item')}[data-conversation-id="${convId}"]`).click();
    // Headless Chromium shows no notifications and never hides a tab: the
    // page's Notification is replaced by a recorder (granted), and the tab
    // is made to look hidden; the app's own logic decides what to show.
    await b.evaluate(() => {
      window.__notes = [];
      window.Notification = class {
        static permission = 'granted';
        static requestPermission() { return Promise.resolve('granted'); }
        constructor(title, opts) { window.__notes.push({ title, body: opts && opts.body }); }
        close() {}
      };
    });
    await b.locator(tid('notifications-toggle')).click();
    await waitFor('notifications on', async () => (await b.locator(tid('notifications-toggle')).getAttribute('aria-pressed')) === 'true');
    const setHidden = (hidden) => b.evaluate((h) => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    const notes = () => b.evaluate(() => window.__notes);
    const lastMessage = () => b.locator(`${tid('conversation-item')}[data-conversation-id="${convId}"] ${tid('last-message')}`).textContent();

    await setHidden(true);
    await send(a, 'Are you around?');
    const got = await waitFor('a notification', async () => {
      const list = await notes();
      return list.length === 1 && list;
    });
    assert.equal(got[0].title, USER_A);
    assert.match(got[0].body, /Are you around\?/);

    await setHidden(false);
    await b.locator(tid('mute-toggle')).click();
    await waitFor('muted', async () => (await b.locator(tid('mute-toggle')).getAttribute('aria-pressed')) === 'true');
    await setHidden(true);
    await send(a, 'Muted chat message');
    await waitFor('the muted message to arrive', async () => /Muted chat message/.test(await lastMessage()));
    assert.equal((await notes()).length, 1, 'no notification for a muted conversation');
    await setHidden(false);
  });
});
