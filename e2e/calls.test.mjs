// Voice and video calls in the browser: a video call between two users
// (fake camera and microphone) connects and carries audio and video both
// ways (getStats), hang-up ends it on both sides and leaves one "call
// ended" line with its duration; decline; a missed call after the ring
// timeout; busy; a callee with two tabs (both ring, one answers, the other
// stops). Media relayed through a real coturn (iceTransportPolicy "relay"),
// and a server with the wrong TURN secret shows a clear message.
//
// Run by crates/confab/tests/it/browser.rs, which starts coturn and two
// servers: CONFAB_URL (right secret; an 8 s ring timeout, long enough for a
// loaded CI machine to click accept, short enough for the missed-call step)
// and CONFAB_URL_BAD (wrong secret).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE, TIMEOUT, launch, runSuffix, shot, signUp, stepper, tid, waitFor, watch,
} from './helpers.mjs';

const BAD = (process.env.CONFAB_URL_BAD || '').replace(/\/$/, '');
const suffix = runSuffix();
const ANN = `ann_${suffix}`;
const BOB = `bob_${suffix}`;
const CARL = `carl_${suffix}`;

let browser;
after(async () => {
  if (browser) await browser.close();
});

async function context(base = BASE) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  await ctx.grantPermissions(['microphone', 'camera'], { origin: base });
  return ctx;
}

/** Opens (or creates) the direct chat with `username`. */
async function openChat(page, username) {
  await page.locator(tid('new-chat')).click();
  await page.locator(tid('new-chat-username')).fill(username);
  await page.locator(tid('new-chat-start')).click();
  await waitFor(`the chat with ${username}`, async () => (await page.locator(tid('conversation-title')).textContent()) === username);
}

const status = (page) => page.locator(tid('call-status')).getAttribute('data-state', { timeout: 1000 }).catch(() => null);
const waitState = (page, state, what, timeout = TIMEOUT) => waitFor(`${what}: call ${state}`, async () => (await status(page)) === state, timeout);
/** Closes the "call ended" screen if it is still up. */
async function closeCall(page) {
  const close = page.locator(tid('call-close'));
  if (await close.isVisible()) await close.click().catch(() => {});
}
const stats = (page) => page.evaluate(() => window.confabCallStats());

/** Inbound audio and video bytes grow on `page`. */
async function mediaFlows(page, what) {
  const first = await stats(page);
  await waitFor(`${what}: inbound audio and video bytes grow`, async () => {
    const now = await stats(page);
    return now.audio > first.audio && now.video > first.video && now.video > 0;
  }, 20_000);
  return stats(page);
}

async function systemTexts(page) {
  return page.$$eval(tid('notice'), (els) => els.map((el) => el.textContent));
}

test('calls in the browser', { timeout: 150_000 }, async (t) => {
  browser = await launch();
  const step = stepper(t);
  const a = await (await context()).newPage();
  const ctxB = await context();
  const b1 = await ctxB.newPage();
  const c = await (await context()).newPage();
  watch(a, 'ann');
  watch(b1, 'bob');
  watch(c, 'carl');
  let b2;

  await step('three users sign up; ann and carl open chats with bob', async () => {
    await signUp(b1, BOB);
    await signUp(a, ANN);
    await signUp(c, CARL);
    await openChat(a, BOB);
    await openChat(c, BOB);
    b2 = await ctxB.newPage();
    watch(b2, 'bob-tab-2');
    await b2.goto(BASE);
    await b2.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
  });

  await step('a video call rings both of bob\'s tabs; one answers, the other stops', async () => {
    await a.locator(tid('call-video')).click();
    await waitState(a, 'ringing', 'ann');
    for (const b of [b1, b2]) {
      const incoming = b.locator(tid('call-incoming'));
      await incoming.waitFor({ timeout: TIMEOUT });
      assert.match(await incoming.textContent(), new RegExp(ANN));
    }
    await shot(b1, 'call-01-incoming');
    await b1.locator(tid('call-accept')).click();
    await b2.locator(tid('call-incoming')).waitFor({ state: 'detached', timeout: TIMEOUT });
    await waitState(a, 'connected', 'ann', 20_000);
    await waitState(b1, 'connected', 'bob', 20_000);
  });

  await step('audio and video flow both ways; mute and camera toggle', async () => {
    await a.locator(tid('remote-video')).first().waitFor({ timeout: TIMEOUT });
    await b1.locator(tid('remote-video')).first().waitFor({ timeout: TIMEOUT });
    for (const [p, who] of [[a, 'ann'], [b1, 'bob']]) {
      await waitFor(`${who}: the remote video plays frames`, () => p.locator(tid('remote-video')).first()
        .evaluate((v) => !v.paused && v.videoWidth > 0 && v.readyState >= 2));
    }
    const sa = await mediaFlows(a, 'ann');
    const sb = await mediaFlows(b1, 'bob');
    console.log(`inbound bytes: ann audio ${sa.audio} video ${sa.video}; bob audio ${sb.audio} video ${sb.video}`);
    await a.locator(tid('call-mute')).click();
    assert.equal(await a.locator(tid('call-mute')).getAttribute('aria-pressed'), 'true');
    await a.locator(tid('call-mute')).click();
    await a.locator(tid('call-camera')).click();
    assert.equal(await a.locator(tid('call-camera')).getAttribute('aria-pressed'), 'true');
    await a.locator(tid('call-camera')).click();
    await waitFor('the timer runs', async () => /\d+:\d\d/.test(await a.locator(tid('call-timer')).textContent()));
    await shot(a, 'call-02-in-call');
  });

  await step('ann switches microphone and camera mid-call; bob still gets both', async () => {
    await a.locator(tid('call-devices')).click();
    await a.locator(tid('call-devices-panel')).waitFor({ timeout: TIMEOUT });
    for (const kind of ['audioinput', 'videoinput']) {
      const select = a.locator(tid(`call-device-${kind}`));
      await select.waitFor({ timeout: TIMEOUT });
      const values = await select.locator('option').evaluateAll((os) => os.map((o) => o.value));
      assert.ok(values.length >= 1, `${kind}: devices listed`);
      // The last one listed: another device where the browser has several.
      await select.selectOption(values[values.length - 1]);
    }
    await waitFor('the new tracks are live', () => a.evaluate(() => {
      const v = document.querySelector('[data-testid="local-video"]');
      const tracks = v && v.srcObject ? v.srcObject.getTracks() : [];
      return tracks.length === 2 && tracks.every((t) => t.readyState === 'live');
    }));
    await mediaFlows(b1, 'bob after the switch');
    await shot(a, 'call-02b-devices');
    await a.locator(tid('call-devices')).click();
  });

  await step('hang-up ends it on both sides and leaves one line with the duration', async () => {
    await a.locator(tid('call-hangup')).click();
    await waitState(a, 'ended', 'ann');
    await waitState(b1, 'ended', 'bob');
    await waitFor('one call-ended line', async () => (await systemTexts(a)).filter((x) => /Video call ended · \d+:\d\d/.test(x)).length === 1);
    await shot(a, 'call-03-history');
  });

  await step('decline', async () => {
    for (const p of [a, b1]) await closeCall(p);
    await a.locator(tid('call-voice')).click();
    await b1.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await b1.locator(tid('call-decline')).click();
    await waitState(a, 'ended', 'ann');
    assert.match(await a.locator(tid('call-status')).textContent(), /Declined/);
    await b2.locator(tid('call-incoming')).waitFor({ state: 'detached', timeout: TIMEOUT });
    await waitFor('the declined line', async () => (await systemTexts(a)).some((x) => x.includes('Call declined')));
  });

  await step('missed after the ring timeout', async () => {
    await closeCall(a);
    await a.locator(tid('call-voice')).click();
    await b1.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await waitState(a, 'ended', 'ann', 15_000);
    assert.match(await a.locator(tid('call-status')).textContent(), /No answer/);
    await b1.locator(tid('call-incoming')).waitFor({ state: 'detached', timeout: TIMEOUT });
    await waitFor('the missed line', async () => (await systemTexts(a)).some((x) => x.includes('Call not answered')));
  });

  await step('busy: carl rings bob while bob is in a call', async () => {
    await closeCall(a);
    await closeCall(b1);
    await a.locator(tid('call-voice')).click();
    await b1.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await b1.locator(tid('call-accept')).click();
    await waitState(b1, 'connected', 'bob', 20_000);
    await c.locator(tid('call-voice')).click();
    await waitState(c, 'ended', 'carl');
    assert.match(await c.locator(tid('call-status')).textContent(), /Busy/);
    await a.locator(tid('call-hangup')).click();
    await waitState(b1, 'ended', 'bob');
  });

  await step('a three-person group call: media between every pair (mesh)', async () => {
    for (const p of [a, b1, c]) await closeCall(p);
    const GROUP = `calls ${suffix}`;
    await a.locator(tid('new-group')).click();
    await a.locator(tid('group-title')).fill(GROUP);
    await a.locator(tid('group-members')).fill(`${BOB} ${CARL}`);
    await a.locator(tid('group-create')).click();
    await waitFor('the group opens', async () => (await a.locator(tid('conversation-title')).textContent()) === GROUP);
    // Ring only once both members have the group in their lists.
    for (const p of [b1, c]) {
      await p.locator(tid('conversation-item')).filter({ hasText: GROUP }).waitFor({ timeout: TIMEOUT });
    }
    await a.locator(tid('call-video')).click();
    await b1.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await b1.locator(tid('call-accept')).click();
    await waitState(b1, 'connected', 'bob', 20_000);
    await c.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await c.locator(tid('call-accept')).click();
    for (const [p, who] of [[a, 'ann'], [b1, 'bob'], [c, 'carl']]) {
      await waitFor(`${who}: two remote videos play`, async () => {
        const playing = await p.locator(tid('remote-video')).evaluateAll((vs) => vs.filter((v) => !v.paused && v.videoWidth > 0).length);
        return playing === 2;
      }, 20_000);
      await mediaFlows(p, `${who} (group)`);
    }
    await shot(c, 'call-05-group');
    // ann leaves; bob and carl keep talking to each other.
    await a.locator(tid('call-hangup')).click();
    await waitFor('bob still sees carl', async () => (await b1.locator(tid('remote-video')).count()) === 1);
    assert.equal(await status(c), 'connected');
    await b1.locator(tid('call-hangup')).click();
    await waitState(c, 'ended', 'carl');
  });

  await step('TURN: with relay only, media still flows through coturn', async () => {
    for (const p of [a, b1]) {
      await closeCall(p);
      await p.evaluate(() => localStorage.setItem('confab.iceTransportPolicy', 'relay'));
    }
    // A call with bob alone (the group from the step before is still open).
    await openChat(a, BOB);
    await a.locator(tid('call-video')).click();
    await b1.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await b1.locator(tid('call-accept')).click();
    await waitState(a, 'connected', 'ann', 20_000);
    await mediaFlows(a, 'ann (relay)');
    await mediaFlows(b1, 'bob (relay)');
    // The answering side may report its pair as nominated a moment after
    // media flows: wait for both sides' succeeded, nominated pair.
    let last;
    await waitFor('both sides on a relay candidate', async () => {
      last = [await stats(a), await stats(b1)];
      return last.every((s) => s.relay);
    }).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(last)}`); });
    await a.locator(tid('call-hangup')).click();
    await waitState(b1, 'ended', 'bob');
  });

  await step('the other side closing its tab ends the call', async () => {
    for (const p of [a, b1, b2]) await closeCall(p);
    await openChat(a, BOB);
    await a.locator(tid('call-voice')).click();
    await b2.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await b2.locator(tid('call-accept')).click();
    await waitState(a, 'connected', 'ann', 20_000);
    await b2.close();
    await waitState(a, 'ended', 'ann');
  });

  await step('a refused microphone permission is explained', async () => {
    await closeCall(a);
    await a.evaluate(() => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    });
    await a.locator(tid('call-voice')).click();
    await waitState(a, 'ended', 'ann');
    assert.match(await a.locator(tid('call-status')).textContent(), /Permission to use the microphone was refused/);
  });

  await step('a server with the wrong TURN secret: a clear message', async () => {
    assert.ok(BAD, 'CONFAB_URL_BAD is set');
    const x = await (await context(BAD)).newPage();
    const y = await (await context(BAD)).newPage();
    watch(x, 'x');
    watch(y, 'y');
    const X = `xena_${suffix}`;
    const Y = `yuri_${suffix}`;
    await signUpAt(y, BAD, Y);
    await signUpAt(x, BAD, X);
    await openChat(x, Y);
    for (const p of [x, y]) await p.evaluate(() => localStorage.setItem('confab.iceTransportPolicy', 'relay'));
    await x.locator(tid('call-voice')).click();
    await y.locator(tid('call-incoming')).waitFor({ timeout: TIMEOUT });
    await y.locator(tid('call-accept')).click();
    // Whichever side sees the relay's 401 first explains it and hangs up;
    // the other may then end on that hang-up ("Call ended") before its own
    // 401 arrives. Each side's text is read as soon as it ends (the ended
    // screen hides after 4 s).
    const seen = new Map();
    const refused = (t) => /TURN relay refused/.test(t || '');
    await waitFor('a call ended by the TURN refusal', async () => {
      for (const [name, page] of [['xena', x], ['yuri', y]]) {
        if (!seen.has(name) && (await status(page)) === 'ended') {
          const t = await page.locator(tid('call-status')).textContent({ timeout: 1000 }).catch(() => null);
          if (t !== null) seen.set(name, t);
        }
      }
      return [...seen.values()].some(refused) || seen.size === 2;
    }, 30_000);
    assert.ok([...seen.values()].some(refused), `neither side explained the refusal: ${JSON.stringify([...seen])}`);
    await shot(refused(seen.get('xena')) ? x : y, 'call-04-wrong-turn-secret');
  });
});

async function signUpAt(page, base, username) {
  await page.goto(base);
  await page.locator(tid('username')).fill(username);
  await page.locator(tid('password')).fill('correct horse battery');
  await page.locator(tid('sign-up')).click();
  await page.locator(`${tid('connection-status')}[data-state="online"]`).waitFor({ state: 'attached', timeout: TIMEOUT });
}
