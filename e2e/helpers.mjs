// Shared helpers of the browser end-to-end tests: configuration from the
// environment (CONFAB_URL, E2E_OUT, CHROMIUM), launching headless Chromium
// and its contexts, polling, sequential steps, screenshots, and the common
// user actions (sign up, send a message, read the open chat's messages).

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';

export const BASE = (process.env.CONFAB_URL || 'http://127.0.0.1:18080').replace(/\/$/, '');
export const OUT = process.env.E2E_OUT || path.join(tmpdir(), 'confab-e2e');
// Generous: a CI machine with two cores runs these beside the rest of the
// suite (clusters, a 2,000-member fan-out); a wait only ends early on success.
export const TIMEOUT = 20_000;
export const PASSWORD = 'correct horse battery';

mkdirSync(OUT, { recursive: true });

/** A short random suffix that makes usernames unique per run. */
export const runSuffix = () => Math.random().toString(36).slice(2, 8);

/** Polls `fn` until it returns something truthy; fails after `timeout` ms. */
export async function waitFor(what, fn, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const tid = (id) => `[data-testid="${id}"]`;
export const shot = (page, name) => page.screenshot({ path: path.join(OUT, `${name}.png`) });

/** Headless Chromium with a fake microphone. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
  });
}

/** A desktop-sized browser context with the microphone allowed. */
export async function newContext(browser) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.grantPermissions(['microphone'], { origin: BASE });
  return ctx;
}

/** Prints the page's uncaught errors and console errors, labelled. */
export function watch(page, name) {
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[${name}] console:`, m.text()); });
}

/** Subtests that run in order; once one fails the rest are skipped. */
export function stepper(t) {
  let failed = false;
  return (name, fn) => t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
    try {
      await fn();
    } catch (e) {
      failed = true;
      throw e;
    }
  });
}

/** [{seq, mine, status, kind, text}] of the open chat's messages. */
export function messages(page) {
  return page.$$eval(tid('message'), (els) => els.map((el) => ({
    seq: el.dataset.seq ? Number(el.dataset.seq) : null,
    mine: el.dataset.mine === 'true',
    status: el.dataset.status || null,
    kind: el.dataset.kind,
    text: (el.querySelector('[data-testid="message-text"]') || {}).textContent || '',
  })));
}

/** Creates an account (with an optional display name) and waits until online. */
export async function signUp(page, username, displayName) {
  await page.goto(BASE);
  await page.locator(tid('username')).fill(username);
  await page.locator(tid('password')).fill(PASSWORD);
  if (displayName) await page.locator(tid('display-name')).fill(displayName);
  await page.locator(tid('sign-up')).click();
  await page.locator(tid('conversation-list')).waitFor({ state: 'attached', timeout: TIMEOUT });
  await page.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
}

export async function send(page, text) {
  await page.locator(tid('composer')).fill(text);
  await page.locator(tid('composer')).press('Enter');
}
