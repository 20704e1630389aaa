// End-to-end test of groups in the Confab web app, in headless Chromium:
// three users (A, B, C) in three browser contexts. A makes a group with B
// (B sees it appear live), adds C from the members panel (C sees the group
// and the join notice), C mentions B through the @ autocomplete (B, with
// the group closed, gets the mention marker and unread badge, live and
// after a reload, which clear when B opens it), A mentions C with a mouse pick, edits one message and
// deletes another (B and C see both live), then removes C (C sees the
// notice and can no longer send). Screenshots go to $E2E_OUT.
//
// Run from the repo root against a running server:
//   CONFAB_URL=http://127.0.0.1:18080 E2E_OUT=/tmp/shots node --test e2e/groups.test.mjs

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  TIMEOUT, launch, messages, newContext, runSuffix, send, shot, signUp, stepper, tid, waitFor, watch,
} from './helpers.mjs';

const suffix = runSuffix();
const A = { username: `ann_${suffix}`, name: 'Ann Archer' };
const B = { username: `bob_${suffix}`, name: 'Bob Baker' };
const C = { username: `cat_${suffix}`, name: 'Cat Cole' };
const GROUP = `Trip planning ${suffix}`;

let browser;
after(async () => {
  if (browser) await browser.close();
});

/** The group's row in a page's conversation list. */
const groupItem = (page) => page.locator(tid('conversation-item')).filter({ hasText: GROUP });

/** Text of the open chat's notices. */
const notices = (page) => page.$$eval(tid('notice'), (els) => els.map((el) => el.textContent));

test('three users in a group', { timeout: 90_000 }, async (t) => {
  browser = await launch();
  const [a, b, c] = await Promise.all([A, B, C].map(async () => (await newContext(browser)).newPage()));
  const step = stepper(t);
  watch(a, 'A');
  watch(b, 'B');
  watch(c, 'C');

  await step('all three sign up with display names', async () => {
    await Promise.all([[a, A], [b, B], [c, C]].map(([page, u]) => signUp(page, u.username, u.name)));
    assert.match(await a.locator(tid('profile')).textContent(), /Ann Archer/);
  });

  await step('A creates a group with B; B sees it appear live', async () => {
    await a.locator(tid('new-group')).click();
    await a.locator(tid('group-title')).fill(GROUP);
    await a.locator(tid('group-members')).fill(B.username);
    await a.locator(tid('group-create')).click();
    await waitFor('the group to open on A', async () => (await a.locator(tid('conversation-title')).textContent()) === GROUP);
    await groupItem(b).waitFor({ timeout: TIMEOUT });
    assert.match(await groupItem(b).locator(tid('last-message')).textContent(), /Ann Archer created the group/);
  });

  await step('A adds C from the members panel; C sees the group and the join notice', async () => {
    await a.locator(tid('members')).click();
    const panel = a.locator(tid('members-panel'));
    await panel.waitFor({ timeout: TIMEOUT });
    await panel.locator(tid('member-add-username')).fill(C.username);
    await panel.locator(tid('member-add')).click();
    await panel.locator(`${tid('member')}[data-username="${C.username}"]`).waitFor({ timeout: TIMEOUT });
    await waitFor('three members listed', async () => (await panel.locator(tid('member')).count()) === 3);
    await shot(a, '10-group-members-panel');
    await a.keyboard.press('Escape');
    await panel.waitFor({ state: 'detached', timeout: TIMEOUT });
    await waitFor('A\'s header to count three members', async () => /3 members/.test(await a.locator('.chat-subtitle').textContent()));

    await send(a, 'Lunch at noon?');
    await send(a, 'Wrong chat, sorry');

    await groupItem(c).waitFor({ timeout: TIMEOUT });
    await groupItem(c).click();
    await waitFor('the join notice on C', async () => (await notices(c)).some((n) => n === 'Ann Archer added you'));
    await waitFor('A\'s messages on C', async () => (await messages(c)).filter((m) => !m.mine).length === 2);
  });

  await step('C mentions B with the autocomplete (keyboard)', async () => {
    const composer = c.locator(tid('composer'));
    const list = c.locator(tid('mention-suggestions'));
    await composer.click();
    // Esc closes the list and nothing else.
    await composer.pressSequentially('@');
    await list.waitFor({ state: 'visible', timeout: TIMEOUT });
    await c.keyboard.press('Escape');
    await list.waitFor({ state: 'hidden', timeout: TIMEOUT });
    assert.equal(await c.locator(tid('conversation-title')).textContent(), GROUP, 'the chat stays open');
    await composer.fill('');

    await composer.pressSequentially('Hey @');
    await list.waitFor({ state: 'visible', timeout: TIMEOUT });
    const options = await list.locator(tid('mention-option')).evaluateAll((els) => els.map((el) => el.dataset.username));
    assert.deepEqual(options, [A.username, B.username], 'the other members, by name, without me');
    await composer.pressSequentially('b');
    await waitFor('only Bob to match "b"', async () => (await list.locator(tid('mention-option')).count()) === 1);
    await composer.press('Backspace');
    await waitFor('both to match again', async () => (await list.locator(tid('mention-option')).count()) === 2);
    await composer.press('ArrowDown');
    await waitFor('Bob to be selected', async () =>
      (await list.locator(`${tid('mention-option')}[aria-selected="true"]`).getAttribute('data-username')) === B.username);
    assert.equal(await composer.getAttribute('aria-expanded'), 'true');
    await c.mouse.move(900, 300); // no hover highlight in the picture
    await shot(c, '11-mention-autocomplete');
    await composer.press('Enter');
    await list.waitFor({ state: 'hidden', timeout: TIMEOUT });
    assert.equal(await composer.inputValue(), `Hey @${B.username} `);
    await composer.pressSequentially('can you book the table?');
    await composer.press('Enter');
    await waitFor('C\'s mention to be sent', async () =>
      (await messages(c)).some((m) => m.mine && m.seq && m.text.startsWith('Hey @')));
    assert.equal(await c.locator(`${tid('message')}[data-mine="true"] .at`).last().textContent(), `@${B.username}`);
  });

  await step('B, with the group closed, gets the mention marker and unread badge; opening clears them', async () => {
    const item = groupItem(b);
    await item.locator(tid('mention-marker')).waitFor({ timeout: TIMEOUT });
    await waitFor('B\'s unread badge to count 3', async () => (await item.locator(tid('unread-badge')).textContent()) === '3');
    // The server counts the same after a reload.
    await b.reload();
    await b.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    await item.locator(tid('mention-marker')).waitFor({ timeout: TIMEOUT });
    assert.equal(await item.locator(tid('unread-badge')).textContent(), '3');
    await item.click();
    await waitFor('the mention to show on B', async () => (await messages(b)).some((m) => m.text.startsWith('Hey @')));
    const mention = b.locator(`${tid('message')}[data-mentioned="true"]`);
    assert.match(await mention.textContent(), /can you book the table/);
    assert.equal(await mention.locator('.at-me').textContent(), `@${B.username}`);
    await b.locator(tid('new-messages-divider')).waitFor({ timeout: TIMEOUT });
    await item.locator(tid('mention-marker')).waitFor({ state: 'detached', timeout: TIMEOUT });
    await item.locator(tid('unread-badge')).waitFor({ state: 'detached', timeout: TIMEOUT });
  });

  await step('A mentions C with a mouse pick; C sees it highlighted', async () => {
    const composer = a.locator(tid('composer'));
    await composer.click();
    await composer.pressSequentially('Thanks @ca');
    const option = a.locator(`${tid('mention-option')}[data-username="${C.username}"]`);
    await option.waitFor({ timeout: TIMEOUT });
    await option.click();
    assert.equal(await composer.inputValue(), `Thanks @${C.username} `);
    await composer.pressSequentially('see you there');
    await composer.press('Enter');
    const mine = c.locator(`${tid('message')}[data-mentioned="true"]`).filter({ hasText: 'see you there' });
    await mine.waitFor({ timeout: TIMEOUT });
  });

  await step('A edits one message and deletes another; B and C see both live', async () => {
    const lunch = a.locator(tid('message')).filter({ hasText: 'Lunch at noon?' });
    await lunch.hover();
    await lunch.locator(tid('message-edit')).click();
    assert.equal(await a.locator(tid('composer')).inputValue(), 'Lunch at noon?');
    await send(a, 'Lunch at 1 pm?');

    const wrong = a.locator(tid('message')).filter({ hasText: 'Wrong chat, sorry' });
    await wrong.hover();
    await wrong.locator(tid('message-delete')).click();
    await a.locator(tid('confirm-dialog')).waitFor({ timeout: TIMEOUT });
    await shot(a, '12b-confirm-delete');
    await a.locator(tid('confirm-ok')).click();

    for (const [name, page] of [['B', b], ['C', c]]) {
      const edited = page.locator(tid('message')).filter({ hasText: 'Lunch at 1 pm?' });
      await edited.locator(tid('message-edited')).waitFor({ timeout: TIMEOUT });
      await waitFor(`the deletion on ${name}`, async () => {
        const list = await messages(page);
        return !list.some((m) => m.text === 'Wrong chat, sorry') && list.some((m) => m.text === 'This message was deleted');
      });
      assert.ok(!(await messages(page)).some((m) => m.text === 'Lunch at noon?'), `the old text is gone on ${name}`);
    }
    await b.mouse.move(900, 30);
    await shot(b, '12-group-chat-desktop');

    // Every icon-only button has a tooltip (its accessible name, or a longer hint).
    const untitled = await a.$$eval('button', (els) => els
      .filter((el) => !el.textContent.trim() && (!el.title || !el.getAttribute('aria-label')))
      .map((el) => el.outerHTML.slice(0, 80)));
    assert.deepEqual(untitled, []);
  });

  await step('A removes C; C sees the notice and can no longer send', async () => {
    await a.locator(tid('members')).click();
    const row = a.locator(`${tid('member')}[data-username="${C.username}"]`);
    await row.locator(tid('member-remove')).click();
    await row.waitFor({ state: 'detached', timeout: TIMEOUT });
    await a.keyboard.press('Escape');

    await waitFor('the removal notice on C', async () => (await notices(c)).some((n) => n === 'Ann Archer removed you'));
    await c.locator(tid('composer-closed')).waitFor({ state: 'visible', timeout: TIMEOUT });
    assert.match(await c.locator(tid('composer-closed')).textContent(), /Ann Archer removed you/);
    assert.ok(await c.locator(tid('composer')).isDisabled(), 'the composer is disabled');
    assert.ok(await c.locator(tid('members')).isHidden(), 'no members panel for a former member');
    await waitFor('B to see the removal', async () => (await notices(b)).some((n) => n === 'Ann Archer removed Cat Cole'));
    await shot(c, '13-group-removed');
  });
});
