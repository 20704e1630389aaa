// Accessibility checks of the web app in headless Chromium.
//
// 1. axe-core on the main screens (sign-in; conversation list with an open
//    chat; friends panel; new-chat and new-group dialogs; members panel;
//    @mention suggestions; the chat and friends panel in the dark theme; the
//    list and the chat at 360x740; an encrypted chat: the toggle, the lock,
//    the key status banner and the safety numbers, light and dark). Violations of impact "serious" or
//    "critical" fail; no rule is disabled.
// 2. Keyboard only: sign in, start a chat from the new-chat dialog, Shift+Enter
//    for a new line, Enter to send, Esc to close a panel with focus going back
//    to its opener, and a visible focus style on every control Tab reaches.
//
// The fixtures (users, friendship, a direct chat with messages, a group) are
// made through the HTTP API (docs/protocol.md) so the test stays fast.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import {
  BASE, PASSWORD, TIMEOUT, launch, newContext, watch, waitFor, tid, shot, runSuffix, stepper, messages,
} from './helpers.mjs';

const require = createRequire(import.meta.url);
const AXE_PATH = require.resolve('axe-core');

const suffix = runSuffix();
const A = { username: `ally_${suffix}`, display: 'Ally Axe' };
const B = { username: `bert_${suffix}`, display: 'Bert Bee' };
const K = { username: `kay_${suffix}`, display: 'Kay Board' };

async function http(method, path, body, token) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function register(u) {
  await http('POST', '/v1/auth/register', { username: u.username, password: PASSWORD, display_name: u.display });
  const login = await http('POST', '/v1/auth/login', { username: u.username, password: PASSWORD });
  u.id = login.user.id;
  u.token = login.access_token;
}

async function befriend(x, y) {
  await http('POST', '/v1/friends/requests', { user_id: y.id }, x.token);
  const { requests } = await http('GET', '/v1/friends/requests?direction=incoming', null, y.token);
  const req = requests.find((r) => r.from_user.id === x.id);
  await http('POST', `/v1/friends/requests/${req.id}/accept`, null, y.token);
}

const post = (u, convId, text) => http('POST', `/v1/conversations/${convId}/messages`,
  { client_msg_id: crypto.randomUUID(), kind: 'text', body: { text } }, u.token);

let browser;
let dmId;
let groupId;

before(async () => {
  for (const u of [A, B, K]) await register(u);
  await befriend(A, B);
  await befriend(K, B);
  const dm = await http('POST', '/v1/conversations', { kind: 'direct', user_id: B.id }, A.token);
  dmId = dm.id;
  await post(B, dmId, 'Hi Ally! Lunch at https://example.com/menu later?');
  await post(A, dmId, 'Sounds good.\nSee you at noon.');
  const last = await post(B, dmId, 'Great 👍');
  await http('POST', `/v1/conversations/${dmId}/read`, { seq: last.seq }, B.token); // A's message shows as read
  const group = await http('POST', '/v1/conversations', { kind: 'group', title: 'Book club', member_ids: [B.id] }, A.token);
  groupId = group.id;
  await post(A, groupId, 'Welcome to the book club');
  browser = await launch();
});

after(async () => { await browser?.close(); });

/** Runs axe on the page; fails on serious/critical violations, printing them. */
async function axeCheck(page, screen) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: AXE_PATH });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (process.env.AXE_VERBOSE) { // the minor and moderate ones too, without failing
    for (const v of result.violations.filter((x) => !bad.includes(x))) {
      console.log(`axe (${screen}) [${v.impact}] ${v.id}: ${v.help}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    }
  }
  const report = bad.map((v) => `  [${v.impact}] ${v.id}: ${v.help}\n${v.nodes.map((n) => `      ${n.target.join(' ')}${n.failureSummary ? `\n        ${n.failureSummary.replace(/\n/g, '\n        ')}` : ''}`).join('\n')}`).join('\n');
  assert.equal(bad.length, 0, `axe found ${bad.length} serious/critical violation(s) on ${screen}:\n${report}`);
}

async function signInUi(page, u) {
  await page.locator(tid('username')).fill(u.username);
  await page.locator(tid('password')).fill(PASSWORD);
  await page.locator(tid('sign-in')).click();
  await page.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
}

const openConversation = async (page, id) => {
  const item = page.locator(`${tid('conversation-item')}[data-conversation-id="${id}"]`);
  await item.click();
  await waitFor('the chat to open with its messages', async () =>
    (await item.getAttribute('aria-current')) === 'true' && (await messages(page)).length > 0);
};

test('axe: no serious or critical violations on the main screens', async (t) => {
  const step = stepper(t);
  // axe is injected as a <script> element; the app's CSP (script-src 'self')
  // refuses it, so this context bypasses CSP. Only in this file, only for
  // this test: the keyboard test below runs under the real CSP.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, bypassCSP: true });
  const page = await ctx.newPage();
  watch(page, 'axe');
  try {
    await step('sign-in screen', async () => {
      await page.goto(BASE);
      await page.locator(tid('username')).waitFor({ timeout: TIMEOUT });
      await axeCheck(page, 'sign-in');
    });
    await step('conversation list and an open chat (desktop)', async () => {
      await signInUi(page, A);
      await openConversation(page, dmId);
      await axeCheck(page, 'chat (desktop)');
      await shot(page, 'a11y-chat-desktop');
    });
    for (const [name, opener, panel] of [
      ['friends panel', 'friends', 'friends-panel'],
      ['new-chat dialog', 'new-chat', 'new-chat-dialog'],
      ['new-group dialog', 'new-group', 'new-group-dialog'],
    ]) {
      await step(name, async () => {
        await page.locator(tid(opener)).click();
        await page.locator(tid(panel)).waitFor({ timeout: TIMEOUT });
        if (panel === 'friends-panel') await page.locator(tid('friend')).first().waitFor({ timeout: TIMEOUT });
        await axeCheck(page, name);
        await page.keyboard.press('Escape');
        await page.locator(tid(panel)).waitFor({ state: 'detached', timeout: TIMEOUT });
      });
    }
    await step('members panel', async () => {
      await openConversation(page, groupId);
      await page.locator(tid('members')).click();
      const panel = page.locator(tid('members-panel'));
      await waitFor('two members listed', async () => (await panel.locator(tid('member')).count()) === 2);
      await axeCheck(page, 'members panel');
      await page.keyboard.press('Escape');
      await panel.waitFor({ state: 'detached', timeout: TIMEOUT });
    });
    await step('@mention suggestions open (combobox + listbox)', async () => {
      await page.locator(tid('composer')).fill('@');
      await page.locator(tid('mention-suggestions')).waitFor({ state: 'visible', timeout: TIMEOUT });
      await axeCheck(page, 'mention suggestions');
      await page.keyboard.press('Escape');
      await page.locator(tid('composer')).fill('');
    });
    await step('the dark theme (prefers-color-scheme: dark)', async () => {
      await page.emulateMedia({ colorScheme: 'dark' });
      await openConversation(page, dmId);
      await axeCheck(page, 'chat (desktop, dark)');
      await page.locator(tid('friends')).click(); // primary and secondary buttons, muted text
      await page.locator(tid('friend')).first().waitFor({ timeout: TIMEOUT });
      await axeCheck(page, 'friends panel (dark)');
      await page.keyboard.press('Escape');
      await page.locator(tid('friends-panel')).waitFor({ state: 'detached', timeout: TIMEOUT });
      await page.emulateMedia({ colorScheme: 'light' });
    });
    await step('chat at 360x740', async () => {
      // A new tab of the same session (a fresh history: Back in the old one
      // would return to the chat opened before, not to the list).
      const phone = await ctx.newPage();
      watch(phone, 'axe-phone');
      await phone.setViewportSize({ width: 360, height: 740 });
      await phone.goto(BASE);
      await phone.locator(tid('conversation-list')).waitFor({ state: 'visible', timeout: TIMEOUT });
      await axeCheck(phone, 'conversation list (360 px)');
      await openConversation(phone, dmId);
      await phone.locator(tid('back')).waitFor({ state: 'visible', timeout: TIMEOUT });
      await axeCheck(phone, 'chat (360 px)');
      assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth <= innerWidth), 'no sideways scrolling at 360 px');
      await shot(phone, 'a11y-chat-phone');
      await phone.close();
    });
    await step('an encrypted chat: the toggle, the lock, the key status banner, safety numbers (light and dark)', async () => {
      await page.locator(tid('new-chat')).click();
      await page.locator(tid('new-chat-username')).fill(B.username);
      await page.locator(tid('new-chat-encrypted')).check();
      await axeCheck(page, 'new-chat dialog (encrypted)');
      await page.locator(tid('new-chat-start')).click();
      await page.locator(`.chat-head ${tid('encrypted-badge')}`).waitFor({ state: 'visible', timeout: TIMEOUT });
      // Bert signed in through the API only: his device has no keys, so the banner says whom it waits for.
      await page.locator(tid('e2ee-status')).waitFor({ state: 'visible', timeout: TIMEOUT });
      await axeCheck(page, 'encrypted chat waiting for keys');
      await shot(page, 'a11y-encrypted-chat');
      await page.locator(tid('safety-numbers')).click();
      await page.locator(tid('safety-number')).first().waitFor({ timeout: TIMEOUT });
      await axeCheck(page, 'safety numbers');
      await page.emulateMedia({ colorScheme: 'dark' });
      await axeCheck(page, 'safety numbers (dark)');
      await page.keyboard.press('Escape');
      await page.locator(tid('safety-number')).first().waitFor({ state: 'detached', timeout: TIMEOUT });
      await axeCheck(page, 'encrypted chat (dark)');
      await page.emulateMedia({ colorScheme: 'light' });
    });
  } finally {
    await ctx.close();
  }
});

/** Data about the focused element: its test id, tag, and focus-ring styles. */
const focusedInfo = (page) => page.evaluate(() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  return {
    testid: el.dataset.testid || null,
    desc: `${el.tagName.toLowerCase()}${el.dataset.testid ? `[data-testid=${el.dataset.testid}]` : ''}${el.getAttribute('aria-label') ? `[aria-label="${el.getAttribute('aria-label')}"]` : ''}`,
    ring: `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor} | ${s.boxShadow} | ${s.borderColor}`,
  };
});

test('keyboard only: sign in, start a chat, multi-line message, Esc, focus rings', async (t) => {
  const step = stepper(t);
  const ctx = await newContext(browser); // the real CSP here
  const page = await ctx.newPage();
  watch(page, 'kbd');
  const checked = new Map(); // description -> focused ring, checked against unfocused

  /**
   * Presses Tab (Shift+Tab with `back`) once. The element that had focus
   * must look different focused and unfocused (outline, box-shadow or
   * border colour): a visible focus style.
   */
  async function tab(back = false) {
    const cur = await focusedInfo(page);
    const handle = await page.evaluateHandle(() => document.activeElement);
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
    if (cur) {
      const ringAfter = await handle.evaluate((el) => {
        if (!el.isConnected) return null; // re-rendered meanwhile
        const s = getComputedStyle(el);
        return `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor} | ${s.boxShadow} | ${s.borderColor}`;
      });
      if (ringAfter != null) {
        assert.notEqual(cur.ring, ringAfter, `no visible focus style on ${cur.desc}`);
        checked.set(cur.desc, cur.ring);
      }
    }
    await handle.dispose();
  }

  /** Tabs (or Shift+Tabs) until the element with test id `target` has focus. */
  async function tabTo(target, { back = false, max = 40 } = {}) {
    for (let i = 0; i < max; i++) {
      const cur = await focusedInfo(page);
      if (cur && cur.testid === target) return cur;
      await tab(back);
    }
    throw new Error(`Tab never reached ${target}`);
  }

  try {
    await step('sign in with the keyboard', async () => {
      await page.goto(BASE);
      await waitFor('the username field to have focus', async () => (await focusedInfo(page))?.testid === 'username');
      await page.keyboard.type(K.username);
      await tabTo('password');
      await page.keyboard.type(PASSWORD);
      await tabTo('sign-in');
      await page.keyboard.press('Enter');
      await page.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    });
    await step('open the new-chat dialog and start a chat by keyboard', async () => {
      await tabTo('new-chat');
      await page.keyboard.press('Enter');
      await page.locator(tid('new-chat-dialog')).waitFor({ timeout: TIMEOUT });
      assert.equal((await focusedInfo(page))?.testid, 'new-chat-username', 'focus moves into the dialog');
      await page.keyboard.type(B.username);
      await page.keyboard.press('Enter');
      await page.locator(tid('new-chat-dialog')).waitFor({ state: 'detached', timeout: TIMEOUT });
      await waitFor('the chat to open', async () => (await page.locator(tid('conversation-title')).textContent()) === B.display);
      await waitFor('focus in the composer of the new chat', async () => (await focusedInfo(page))?.testid === 'composer');
    });
    await step('Shift+Enter makes a new line, Enter sends one two-line message', async () => {
      await page.keyboard.type('first line');
      await page.keyboard.press('Shift+Enter');
      await page.keyboard.type('second line');
      assert.equal(await page.locator(tid('composer')).inputValue(), 'first line\nsecond line');
      assert.equal((await messages(page)).length, 0, 'nothing sent by Shift+Enter');
      await page.keyboard.press('Enter');
      await waitFor('the message to be sent', async () => {
        const ms = await messages(page);
        return ms.length === 1 && ms[0].seq != null;
      });
      const [m] = await messages(page);
      assert.equal(m.text, 'first line\nsecond line');
      assert.equal(await page.locator(tid('composer')).inputValue(), '', 'composer cleared');
    });
    for (const [opener, panel] of [['friends', 'friends-panel'], ['new-group', 'new-group-dialog']]) {
      await step(`Esc closes the ${panel} and focus returns to its button`, async () => {
        await tabTo(opener, { back: true });
        await page.keyboard.press('Enter');
        await page.locator(tid(panel)).waitFor({ timeout: TIMEOUT });
        // Walk through the dialog once (checks focus rings inside it too).
        for (let i = 0; i < 4; i++) await tab();
        assert.ok(await page.locator(tid(panel)).evaluate((d) => d.contains(document.activeElement)), 'Tab stays in the dialog');
        await page.keyboard.press('Escape');
        await page.locator(tid(panel)).waitFor({ state: 'detached', timeout: TIMEOUT });
        assert.equal((await focusedInfo(page))?.testid, opener, 'focus back on the opener');
      });
    }
    await step('every control Tab reached showed a focus style', async () => {
      for (const must of ['username', 'password', 'new-chat', 'composer', 'friends']) {
        assert.ok([...checked.keys()].some((d) => d.includes(`data-testid=${must}]`)), `focus style of ${must} was checked`);
      }
      assert.ok(checked.size >= 8, `checked ${checked.size} controls`);
      t.diagnostic(`focus style checked on ${checked.size} controls: ${[...checked.keys()].join(', ')}`);
    });
  } finally {
    await ctx.close();
  }
});
