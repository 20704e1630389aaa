// Two tabs of one signed-in browser share one session (localStorage). With
// access tokens that live two seconds (the Rust test starts this server with
// access_ttl_s = 2; ACCESS_TTL_S says otherwise), both tabs keep hitting expired tokens at the same
// moment and refreshing: refresh tokens rotate, and a spent one presented
// again revokes the device, so the tabs must take turns (Web Locks) and
// pick up each other's new pair instead of both signing out.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, TIMEOUT, tid, launch, newContext, watch, signUp, runSuffix } from './helpers.mjs';

const TTL_MS = Number(process.env.ACCESS_TTL_S || 2) * 1000;

let browser;
after(async () => {
  if (browser) await browser.close();
});

test('two tabs stay signed in through concurrent token refreshes', { timeout: 60_000 }, async () => {
  browser = await launch();
  const ctx = await newContext(browser);
  const one = await ctx.newPage();
  watch(one, 'tab 1');
  const name = `tab_${runSuffix()}`;
  await signUp(one, name);
  const two = await ctx.newPage();
  watch(two, 'tab 2');
  await two.goto(BASE);
  await two.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });

  // The app's own HTTP client (the same module instance the page uses).
  const whoAmI = (page) => page.evaluate(async () => {
    const { api } = await import('/app/api.js');
    const me = await api('GET', '/v1/users/me');
    return me.username;
  });
  const session = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('confab.session')));

  const tokens = new Set();
  for (let round = 0; round < 4; round++) {
    await new Promise((r) => setTimeout(r, TTL_MS + 200)); // let the access token expire
    const names = await Promise.all([whoAmI(one), whoAmI(two), whoAmI(one), whoAmI(two)]);
    assert.deepEqual(names, [name, name, name, name], `round ${round}`);
    const s = await session(one);
    assert.ok(s && s.refresh_token, `round ${round}: still signed in`);
    tokens.add(s.refresh_token);
  }
  assert.ok(tokens.size >= 2, 'the tokens were refreshed');

  // A reload connects the WebSocket with an expired token: the app renews
  // it and comes back online instead of signing out.
  await new Promise((r) => setTimeout(r, TTL_MS + 200));
  await two.reload();
  await two.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
  for (const page of [one, two]) {
    assert.equal(await page.locator(tid('sign-in')).count(), 0, 'no tab was signed out');
  }
});
