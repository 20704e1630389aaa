// Sign-in with an OpenID Connect provider in Chromium: the server offers
// the provider that crates/confab/tests/it/oidc.rs started
// (e2e/oidc-provider.mjs); a new person signs in with it, picks a username
// on the first sign-in (their Chinese name from the provider is the display
// name), chats with a password user, signs out and back in with the
// provider into the same account; the password user links the provider
// from the profile dialog.
//
// Run from crates/confab/tests/it/oidc.rs (it starts the provider and the
// server and sets CONFAB_URL).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE, TIMEOUT, launch, messages, newContext, runSuffix, send, shot, signUp, stepper, tid, waitFor, watch,
} from './helpers.mjs';

const suffix = runSuffix();
const MEIMEI = `meimei_${suffix}`;
const BOB = `bob_${suffix}`;
const ACCOUNT = `韩梅梅${suffix}`;

let browser;
after(async () => {
  if (browser) await browser.close();
});

/** On the provider's development pages: log in as `account`, then consent. */
async function atProvider(page, account) {
  const login = page.locator('input[name="login"]');
  await login.waitFor({ timeout: TIMEOUT });
  await login.fill(account);
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('button[type="submit"]').click();
  // The consent page, the first time this account meets this client.
  await waitFor('the consent page or Confab', async () => {
    const url = new URL(page.url());
    if (url.origin === new URL(BASE).origin) return true;
    if (url.pathname.startsWith('/interaction/') && await page.locator('input[name="login"]').count() === 0) {
      await page.locator('button[type="submit"]').click();
      return true;
    }
    return false;
  });
}

test('a person signs in with the provider and chats', { timeout: 120_000 }, async (t) => {
  browser = await launch();
  const ctxA = await newContext(browser);
  const ctxB = await newContext(browser);
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  const step = stepper(t);
  watch(a, 'A');
  watch(b, 'B');

  await step('the sign-in screen offers the provider', async () => {
    await a.goto(BASE);
    await a.locator(tid('oidc-local')).waitFor({ timeout: TIMEOUT });
    assert.equal(await a.locator(tid('oidc-local')).textContent(), 'Sign in with 本地身份');
    await shot(a, 'oidc-01-sign-in');
  });

  await step('a first sign-in asks for a username, then the app opens', async () => {
    await a.locator(tid('oidc-local')).click();
    await atProvider(a, ACCOUNT);
    const username = a.locator(tid('oidc-username'));
    await username.waitFor({ timeout: TIMEOUT });
    // The code came in the fragment and is gone from the address bar.
    assert.equal(new URL(a.url()).hash, '');
    assert.equal(await a.locator(tid('oidc-display-name')).inputValue(), ACCOUNT);
    await shot(a, 'oidc-02-choose-username');
    await username.fill(MEIMEI);
    await a.locator(tid('oidc-finish')).click();
    await a.locator(tid('conversation-list')).waitFor({ state: 'attached', timeout: TIMEOUT });
    await a.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
    assert.match(await a.locator(tid('profile')).textContent(), new RegExp(ACCOUNT));
  });

  await step('she chats with a password user', async () => {
    await signUp(b, BOB);
    await a.locator(tid('new-chat')).click();
    await a.locator(tid('new-chat-username')).fill(BOB);
    await a.locator(tid('new-chat-start')).click();
    await a.locator(tid('composer')).waitFor({ timeout: TIMEOUT });
    await send(a, '你好 Bob，我用身份提供方登录了');
    await waitFor('B to get her message', async () => {
      const item = b.locator(tid('conversation-item')).first();
      if (await item.count() === 0) return false;
      await item.click();
      return (await messages(b)).some((m) => !m.mine && m.text === '你好 Bob，我用身份提供方登录了');
    });
    await send(b, 'Welcome, 梅梅');
    await waitFor('A to get the answer', async () => (await messages(a)).some((m) => !m.mine && m.text === 'Welcome, 梅梅'));
    await shot(a, 'oidc-03-chat');
  });

  await step('signed out and in again with the provider: the same account', async () => {
    await a.locator(tid('sign-out')).click();
    await a.locator(tid('oidc-local')).click();
    // The provider remembers her session and consent: straight back.
    await waitFor('back at Confab', async () => new URL(a.url()).origin === new URL(BASE).origin
      && await a.locator(tid('conversation-list')).count() > 0);
    assert.equal(await a.locator(tid('oidc-username')).count(), 0, 'no second signup');
    await a.locator(tid('conversation-item')).first().click();
    await waitFor('the old chat', async () => (await messages(a)).some((m) => m.text === '你好 Bob，我用身份提供方登录了'));
  });

  await step('the password user links the provider in the profile dialog', async () => {
    await b.locator(tid('profile')).click();
    await b.locator(tid('oidc-link-local')).click();
    await atProvider(b, `bob-idp-${suffix}`);
    await b.locator(tid('conversation-list')).waitFor({ state: 'attached', timeout: TIMEOUT });
    await b.locator(tid('profile')).click();
    await b.locator(tid('oidc-linked-local')).waitFor({ timeout: TIMEOUT });
    await shot(b, 'oidc-04-linked');
  });
});
