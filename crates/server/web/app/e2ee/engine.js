// End-to-end encrypted conversations in the browser (issue 14,
// docs/protocol.md "End-to-end encryption"): this device's KeyPackages,
// one MLS group per encrypted conversation, its messages applied strictly
// in seq order (a per-conversation Web Lock, so two tabs never fork the
// state), sending with retry on `epoch_conflict`, membership kept in step
// with the conversation (commits with Welcome), encrypted attachments,
// safety numbers and search over what was decrypted.
//
// The UI asks `view(convId, message)` for what to show in place of an
// `encrypted` message; this module calls `changed(convId)` when that moves.

import { api, ApiError, mediaBlob, upload as uploadWhole } from '../api.js';
import { uploadResumable } from '../tus.js';
import * as db from './db.js';
import * as mls from './mls.js';

const KP_TARGET = 20; // the stock kept on the server
const KP_REFILL_BELOW = 10;
const PAGE = 100;
const MAX_RETRIES = 8;
const ENCRYPTED_MIME = 'application/x-confab-encrypted';

let me = null; // {userId, deviceId, key}
let changed = () => {};
let notice = () => {};
const cache = new Map(); // convId -> Map seq -> view (loaded from IndexedDB)
const loaded = new Map(); // convId -> promise of the cache being filled
const status = new Map(); // convId -> {state, text}
const pumps = new Map(); // convId -> {running, again}
const display = new Map(); // "conv:seq" -> {src, view, out}

// ---- device key and login ----------------------------------------------------------

/** Whether this browser can do E2EE (WebCrypto Ed25519 + X25519). */
export async function supported() {
  try {
    await crypto.subtle.generateKey('Ed25519', false, ['sign']);
    await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
    return true;
  } catch {
    return false;
  }
}

/** A new device key for a login: {key, publicKey: base64 for `device_public_key`}, or null. */
export async function keyForLogin() {
  if (!(await supported())) return null;
  const key = await mls.newDeviceKey();
  return { key, publicKey: mls.b64(key.publicKey) };
}

/** Keeps the key of a device that just logged in. */
export function bindDeviceKey(deviceId, key) {
  return db.put('devices', deviceId, key);
}

/**
 * Starts E2EE for the signed-in device: loads (or makes, for a session
 * older than E2EE) its key and refills its KeyPackages.
 * `onChange(convId)` is told when what to show changed, `onNotice(text)`
 * gets messages for the user.
 */
export async function start(userId, deviceId, onChange, onNotice) {
  changed = onChange;
  notice = onNotice;
  if (!(await supported())) return false;
  db.useDevice(deviceId);
  let key = await db.get('devices', deviceId);
  if (!key) {
    key = await mls.newDeviceKey();
    await db.put('devices', deviceId, key);
  }
  me = { userId, deviceId, key };
  refillSoon();
  return true;
}

/** Refills now, and again a little later should it fail (a device without KeyPackages cannot be added). */
function refillSoon(attempt = 0) {
  const who = me;
  refillKeyPackages().catch((e) => {
    console.warn('KeyPackage refill failed', e);
    if (attempt < 5) setTimeout(() => { if (me === who) refillSoon(attempt + 1); }, 5000 * 2 ** attempt);
  });
}

/** This device signs out: its keys, group states and decrypted history are deleted. */
export async function forget(deviceId) {
  stop();
  await db.forgetDevice(deviceId).catch((e) => console.warn('could not delete the E2EE data', e));
}

export function stop() {
  me = null;
  cache.clear();
  loaded.clear();
  status.clear();
  pumps.clear();
  display.clear();
}

export const ready = () => me != null;

/** Tops the server's stock of this device's KeyPackages up (and the last-resort one). */
export async function refillKeyPackages() {
  if (!me) return;
  const { stock, last_resort: hasLastResort } = await api('GET', '/v1/keys/packages');
  if (stock >= KP_REFILL_BELOW && hasLastResort) return;
  const fresh = [];
  for (let i = stock; i < KP_TARGET; i++) fresh.push(await mls.newKeyPackage(me.userId, me.deviceId, me.key));
  const last = hasLastResort ? null : await mls.newKeyPackage(me.userId, me.deviceId, me.key);
  // Private halves first: a Welcome may come for a package as soon as it is up.
  await db.tx(['packages'], 'readwrite', (s) => {
    for (const p of fresh) s.packages.put(p.stored, p.ref);
    if (last) s.packages.put({ ...last.stored, lastResort: true }, last.ref);
  });
  const body = { key_packages: fresh.map((p) => p.wire) };
  if (last) body.last_resort = last.wire;
  if (body.key_packages.length || last) await api('POST', '/v1/keys/packages', body);
}

// ---- what to show ------------------------------------------------------------------------

/** The encryption state of a conversation: {state: 'ready'|'waiting'|'removed'|'error'|'unsupported', text}. */
export function conversationStatus(convId) {
  if (!me) return { state: 'unsupported', text: 'This browser cannot use end-to-end encryption (it lacks WebCrypto Ed25519/X25519).' };
  return status.get(convId) || { state: 'loading', text: 'Loading encryption keys…' };
}

function setStatus(convId, st) {
  const old = status.get(convId);
  if (old && old.state === st.state && old.text === st.text) return;
  status.set(convId, st);
  changed(convId);
}

function threadCache(convId) {
  let c = cache.get(convId);
  if (!c) cache.set(convId, (c = new Map()));
  if (!loaded.has(convId)) {
    loaded.set(convId, db.byPrefix('plain', `${convId}:`).then((rows) => {
      for (const r of rows) if (!c.has(r.seq)) c.set(r.seq, r);
      changed(convId);
    }).catch(() => {}));
  }
  return c;
}

/**
 * What to show for message `m` of an encrypted conversation: a message
 * object (the decrypted kind and body, `e2ee: true`), or one of kind
 * `encrypted` carrying `e2eeState` ('pending' | 'failed' | 'before') and a
 * readable `e2eeText`, or null for MLS handshake messages (not shown).
 */
export function view(convId, m) {
  if (m.kind !== 'encrypted') return m;
  const v = threadCache(convId).get(m.seq);
  if (m.deleted) {
    // Deleted for everyone: forget the decrypted copy too (search, reloads).
    if (v && !v.deleted) {
      const row = { conv: convId, seq: m.seq, deleted: true };
      threadCache(convId).set(m.seq, row);
      db.put('plain', `${convId}:${m.seq}`, row).catch(() => {});
    }
    return m;
  }
  const key = `${convId}:${m.seq}`;
  const d = display.get(key);
  if (d && d.src === m && d.view === v) return d.out;
  let out;
  if (!v) {
    const st = conversationStatus(convId);
    const text = st.state === 'waiting' ? 'Waiting for the keys to decrypt this message…'
      : st.state === 'unsupported' ? st.text : 'Decrypting…';
    out = { ...m, e2eeState: 'pending', e2eeText: text };
    pump(convId);
  } else if (v.hidden) {
    out = null;
  } else if (v.error) {
    out = { ...m, e2eeState: 'failed', e2eeText: v.error };
  } else if (v.before) {
    out = { ...m, e2eeState: 'before', e2eeText: 'Sent before this device joined the encrypted conversation, so it cannot be decrypted here.' };
  } else {
    out = { ...m, kind: v.kind, body: v.body, e2ee: true };
  }
  display.set(key, { src: m, view: v, out });
  return out;
}

// ---- processing, in seq order --------------------------------------------------------------

function lock(convId, fn) {
  if (navigator.locks) return navigator.locks.request(`confab.e2ee.${convId}`, fn);
  return fn();
}

/** Applies every message after the cursor, in order (coalesced: one run at a time per conversation). */
export function pump(convId) {
  if (!me) return Promise.resolve();
  let p = pumps.get(convId);
  if (!p) pumps.set(convId, (p = { running: null, again: false }));
  if (p.running) { p.again = true; return p.running; }
  p.running = (async () => {
    do {
      p.again = false;
      try {
        await lock(convId, () => pumpLocked(convId));
      } catch (e) {
        console.warn('e2ee pump', convId, e);
        if (!(e instanceof ApiError && (e.status === 403 || e.status === 404))) {
          setStatus(convId, { state: 'error', text: `Could not load the encrypted messages: ${e.message}. Retrying…` });
          setTimeout(() => pump(convId), 3000);
        }
      }
    } while (p.again);
    p.running = null;
  })();
  return p.running;
}

async function loadGroup(convId) {
  const g = await db.get('groups', convId);
  if (!g) return { state: null, cursor: 0 };
  return { ...g, state: g.state ? mls.loadState(g.state) : null };
}

function saveGroup(convId, g, extra = []) {
  return db.tx(['groups', 'plain', 'packages'], 'readwrite', (s) => {
    s.groups.put({ ...g, state: g.state ? mls.saveState(g.state) : null }, convId);
    for (const op of extra) op(s);
  });
}

function describeStatus(convId, g) {
  if (g.removed) return { state: 'removed', text: 'This device is no longer in the encrypted conversation.' };
  if (!g.state) {
    return {
      state: 'waiting',
      text: 'Waiting for keys: another member’s device has to add this device to the encrypted conversation. That happens when one of them next opens this conversation or sends in it.',
    };
  }
  const missing = g.missing && g.missing.length ? g.missing : null;
  return missing
    ? { state: 'partial', text: `Waiting for keys from ${missing.length} device(s) that have not published any yet; they are added when they do.`, missing }
    : { state: 'ready', text: 'End-to-end encrypted.' };
}

async function pumpLocked(convId) {
  const g = await loadGroup(convId);
  const c = threadCache(convId);
  // Another tab of this device may have got further: take what it decrypted.
  const known = c.size ? Math.max(...c.keys()) : 0;
  if (g.cursor > known) {
    for (const r of await db.byPrefix('plain', `${convId}:`)) if (!c.has(r.seq)) c.set(r.seq, r);
    changed(convId);
  }
  for (;;) {
    const page = await api('GET', `/v1/conversations/${convId}/messages?after_seq=${g.cursor}&limit=${PAGE}`);
    for (const m of page.messages) {
      if (m.seq <= g.cursor) continue;
      const extra = [];
      let v = null;
      if (m.kind === 'encrypted' && m.deleted) {
        v = { deleted: true };
      } else if (m.kind === 'encrypted') {
        v = await apply(convId, g, m, extra);
        v = { conv: convId, seq: m.seq, ...v };
        const row = v;
        extra.push((s) => s.plain.put(row, `${convId}:${m.seq}`));
      }
      g.cursor = m.seq;
      await saveGroup(convId, g, extra);
      if (v) { c.set(m.seq, v); changed(convId); }
    }
    if (!page.has_more || !page.messages.length) break;
  }
  setStatus(convId, describeStatus(convId, g));
  return g;
}

/** One encrypted message against the group `g` (updated in place); returns its view. */
async function apply(convId, g, m, extra) {
  const b = m.body || {};
  const sent = m.client_msg_id ? await db.get('sent', m.client_msg_id) : null;
  if (sent && sent.conv === convId && m.sender_id === me.userId) {
    // Mine: MLS cannot decrypt what this device sent. My commit's resulting
    // state was kept with it and is adopted here, in seq order.
    if (sent.mls !== 'commit') return { kind: sent.kind, body: sent.body };
    if (g.state && !g.removed && mls.epochOf(g.state) === sent.epoch) {
      g.state = mls.loadState(sent.nextState);
      if (sent.selfUpdate) g.keysAt = Date.now();
    }
    return { hidden: true };
  }
  const mineWelcome = b.welcome && Array.isArray(b.welcome_devices) && b.welcome_devices.includes(me.deviceId);
  // A Welcome replaces a state only when there is none, or when this device
  // was removed (added back), or made the group at the same time as
  // another device whose first commit won (mine never had a member). It is
  // opened first: one this device cannot open leaves the group as it was.
  const replaceable = !g.state || g.removed || (g.creator && mls.epochOf(g.state) === 0);
  if (mineWelcome && replaceable) {
    try {
      const { welcome, refs } = mls.welcomeRefs(b.welcome);
      let stored = null;
      for (const ref of refs) {
        stored = await db.get('packages', ref);
        if (stored) break;
      }
      if (!stored) {
        if (g.state) return { hidden: true, note: 'a Welcome for none of this device’s KeyPackages' };
        return { error: 'An invitation to this encrypted conversation was for none of this device’s keys, so it cannot be opened here.' };
      }
      const joined = await mls.join(welcome, stored);
      if (mls.fromUtf8(joined.groupContext.groupId) !== mls.groupIdOf(convId)) throw new Error('it is for another conversation');
      g.state = joined;
      g.creator = false;
      g.removed = false;
      g.joinedSeq = m.seq;
      g.keysAt = Date.now();
      if (!stored.lastResort) extra.push((s) => s.packages.delete(stored.ref));
      refillSoon();
      return { hidden: true };
    } catch (e) {
      return { error: `An invitation to this encrypted conversation could not be opened (${e.message || e}); ${g.state ? 'the keys this device had are kept' : 'this device still waits for one'}.` };
    }
  }
  if (!g.state) return b.mls === 'application' ? { before: true } : { hidden: true };
  if (g.removed) return { error: 'This device had been removed from the encrypted conversation when this was sent.' };
  const epoch = mls.epochOf(g.state);
  if (b.mls === 'commit' && Number(b.epoch) !== epoch) return { hidden: true }; // not for this epoch (e.g. the one that added me)
  try {
    // The signer must be who the server says sent it: a member cannot
    // replay or pass off another member's message (docs/protocol.md).
    const out = await mls.process(g.state, b.ciphertext, m.sender_id);
    g.state = out.state;
    if (mls.isRemoved(g.state)) g.removed = true;
    if (out.kind !== 'application') return { hidden: true };
    let payload;
    try {
      payload = JSON.parse(mls.fromUtf8(out.bytes));
    } catch {
      return { error: 'Decrypted, but the content is not a message this app understands.' };
    }
    if (!payload || typeof payload.kind !== 'string' || typeof payload.body !== 'object') {
      return { error: 'Decrypted, but the content is not a message this app understands.' };
    }
    return { kind: payload.kind, body: payload.body || {} };
  } catch (e) {
    if (b.mls === 'commit') {
      // Refused (forged, or not for this group): the group stays as it was.
      return { error: `A change to this conversation’s encryption keys was refused (${e.message || e}); later messages that depend on it cannot be read here.` };
    }
    if (b.mls !== 'application') return { hidden: true, note: String(e.message || e) };
    if (m.sender_id === me.userId && !sent) {
      return { error: 'Sent by you, from this device before its local data was cleared or from a device that was not in the group yet; it cannot be decrypted here.' };
    }
    return { error: `Could not decrypt (${e.message || e}). Ask the sender to send it again.` };
  }
}

/**
 * Tries a message that failed to decrypt once more with the current state
 * (the failure may have been passing: a commit applied since, a
 * connection lost mid-way). Resolves to whether it now reads.
 */
export async function retryDecrypt(convId, seq) {
  if (!me) return false;
  return lock(convId, async () => {
    const g = await loadGroup(convId);
    if (!g.state) return false;
    const page = await api('GET', `/v1/conversations/${convId}/messages?after_seq=${seq - 1}&limit=1`);
    const m = page.messages.find((x) => x.seq === seq);
    if (!m || m.kind !== 'encrypted') return false;
    const extra = [];
    const saved = g.cursor;
    const v = { conv: convId, seq, ...(await apply(convId, g, m, extra)) };
    g.cursor = saved;
    if (v.error) { changed(convId); return false; }
    extra.push((s) => s.plain.put(v, `${convId}:${seq}`));
    await saveGroup(convId, g, extra);
    threadCache(convId).set(seq, v);
    changed(convId);
    return true;
  });
}

// ---- sending ------------------------------------------------------------------------------------

/**
 * Posts an encrypted message built by `build(g)` -> {body, state} under the
 * conversation's lock, catching up and rebuilding on `epoch_conflict`.
 * Resolves to the stored seq.
 */
async function post(convId, clientMsgId, build) {
  for (let attempt = 0; attempt < MAX_RETRIES; attempt++) {
    const outcome = await lock(convId, async () => {
      const g = await pumpLocked(convId);
      if (g.removed) throw new ApiError(403, 'forbidden', 'This device is no longer in the encrypted conversation.');
      if (!g.state) throw new ApiError(409, 'waiting_for_keys', 'This device has no keys for this conversation yet (waiting for another member to add it).');
      const built = await build(g);
      if (!built) return { done: true, seq: null };
      if (built.body.mls === 'commit') {
        // Adopted when the pump reaches it (in seq order), should the server take it.
        await db.put('sent', clientMsgId, {
          conv: convId, mls: 'commit', epoch: built.body.epoch, nextState: mls.saveState(built.state), selfUpdate: !!built.selfUpdate,
        });
      } else {
        // Secrets used for this message are spent: keep the new state before it leaves.
        g.state = built.state;
        await saveGroup(convId, g);
      }
      try {
        const ack = await api('POST', `/v1/conversations/${convId}/messages`, { client_msg_id: clientMsgId, kind: 'encrypted', body: built.body });
        return { done: true, seq: ack.seq };
      } catch (e) {
        if (e.code === 'epoch_conflict') return { done: false };
        throw e;
      }
    });
    if (outcome.done) { pump(convId); return outcome.seq; }
  }
  throw new ApiError(409, 'epoch_conflict', 'The group kept changing while sending; try again.');
}

function uuid() {
  return crypto.randomUUID();
}

/**
 * Sends {kind, body} encrypted. `clientMsgId` lets a failed send be retried
 * as the same message. Resolves to the seq.
 */
export async function sendPayload(convId, kind, body, clientMsgId = uuid(), media = null) {
  await db.put('sent', clientMsgId, { conv: convId, kind, body });
  // A member's new device should read this too.
  await reconcileIfDue(convId);
  await updateKeysIfDue(convId);
  const bytes = mls.utf8(JSON.stringify({ kind, body }));
  return post(convId, clientMsgId, async (g) => {
    const out = await mls.encrypt(g.state, bytes);
    const outer = { ciphertext: out.ciphertext, mls: 'application', epoch: mls.epochOf(g.state) };
    if (media) outer.media_id = media;
    return { body: outer, state: out.state, keepBeforeSend: true };
  });
}

// ---- groups and members ---------------------------------------------------------------------

/** Creates the MLS group of a conversation I just created (epoch 0), then adds everyone. */
export async function createGroup(conv) {
  await lock(conv.id, async () => {
    const existing = await db.get('groups', conv.id);
    if (existing && existing.state) return;
    const kp = await mls.newKeyPackage(me.userId, me.deviceId, me.key);
    const state = await mls.createGroup(mls.groupIdOf(conv.id), kp.stored);
    await saveGroup(conv.id, { state, cursor: 0, joinedSeq: 0, creator: true, keysAt: Date.now() });
  });
  await reconcile(conv.id);
}

/** A user's live devices with their registered keys: Map deviceId -> public key bytes (or null). */
async function devicesOf(userId) {
  const { devices } = await api('GET', `/v1/users/${userId}/devices`);
  return new Map(devices.map((d) => [d.device_id, d.public_key ? mls.unb64(d.public_key) : null]));
}

const sameBytes = (a, b) => a && b && a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Brings the MLS group in line with the conversation: adds the devices of
 * members that are not in it yet (those with KeyPackages), removes leaves
 * of users who are no longer members (and `alsoRemove`). One commit;
 * retried after catching up when another member committed first.
 */
export async function reconcile(convId, { alsoRemove = [] } = {}) {
  if (!me) return;
  lastReconcile.set(convId, Date.now());
  const clientMsgId = uuid();
  let missing = [];
  await post(convId, clientMsgId, async (g) => {
    const { members } = await api('GET', `/v1/conversations/${convId}/members`);
    const memberIds = new Set(members.map((m) => m.user_id).filter((id) => !alsoRemove.includes(id)));
    const leaves = mls.members(g.state);
    const remove = leaves.filter((l) => l.userId == null || !memberIds.has(l.userId)).map((l) => l.leafIndex);
    const add = [];
    const welcomeDevices = [];
    missing = [];
    for (const userId of memberIds) {
      const devices = await devicesOf(userId);
      const inGroup = new Set(leaves.filter((l) => l.userId === userId).map((l) => l.deviceId));
      // Leaves of revoked devices go too.
      for (const l of leaves) if (l.userId === userId && !devices.has(l.deviceId) && l.deviceId !== me.deviceId) remove.push(l.leafIndex);
      const want = [...devices.keys()].filter((d) => !inGroup.has(d) && !(userId === me.userId && d === me.deviceId));
      if (!want.length) continue;
      const { key_packages: kps } = await api('GET', `/v1/users/${userId}/key-packages?device_ids=${want.join(',')}`);
      for (const { device_id: deviceId, key_package: wire } of kps) {
        try {
          const kp = mls.decodeKeyPackage(wire);
          const id = mls.parseIdentity(kp.leafNode.credential);
          const registered = devices.get(deviceId);
          if (!id || id.userId !== userId || id.deviceId !== deviceId) throw new Error('credential of another device');
          if (registered && !sameBytes(registered, kp.leafNode.signaturePublicKey)) throw new Error('signature key is not the registered device key');
          add.push(kp);
          welcomeDevices.push(deviceId);
        } catch (e) {
          console.warn(`refused KeyPackage of ${userId}:${deviceId}`, e);
        }
      }
      for (const d of want) if (!welcomeDevices.includes(d)) missing.push(`${userId}:${d}`);
    }
    g.missing = missing;
    await saveGroup(convId, g);
    if (!add.length && !remove.length) return null;
    const out = await mls.commit(g.state, { add, remove: [...new Set(remove)] });
    const body = { ciphertext: out.commit, mls: 'commit', epoch: mls.epochOf(g.state) };
    if (out.welcome && welcomeDevices.length) { body.welcome = out.welcome; body.welcome_devices = welcomeDevices; }
    return { body, state: out.state };
  });
  pump(convId);
}

/**
 * How often this device gives its leaf in each encrypted conversation fresh
 * keys (a self-update commit before its next send), so a key stolen from it
 * stops opening new messages: a week, as the Rust clients do.
 * `localStorage['confab.keyUpdateEveryMs']` overrides it (tests).
 */
const KEY_UPDATE_EVERY = 7 * 24 * 3600_000;

function keyUpdateEvery() {
  const set = localStorage.getItem('confab.keyUpdateEveryMs');
  const ms = set === null ? NaN : Number(set);
  return Number.isFinite(ms) && ms >= 0 ? ms : KEY_UPDATE_EVERY;
}

/** A self-update commit when this device's keys in `convId` are due (best effort). */
async function updateKeysIfDue(convId) {
  const due = (g) => g && g.state && !g.removed && Date.now() - (g.keysAt || 0) >= keyUpdateEvery();
  if (!due(await db.get('groups', convId))) return;
  try {
    await post(convId, uuid(), async (g) => {
      if (!due(g)) return null; // another tab of this device did it meanwhile
      const out = await mls.commit(g.state, {});
      return { body: { ciphertext: out.commit, mls: 'commit', epoch: mls.epochOf(g.state) }, state: out.state, selfUpdate: true };
    });
  } catch (e) {
    console.warn('e2ee key update', e);
  }
}

/** convId -> when this page last compared the group with the members (ms). */
const lastReconcile = new Map();
const RECONCILE_EVERY = 5 * 60_000;
const RECONCILE_PARTIAL_EVERY = 30_000;

/**
 * Compares the group with the conversation's members and devices when this
 * page has not for 5 minutes (30 s while some devices wait for keys): a
 * member's new device (every browser login is one) is added, a revoked
 * one removed. Nothing is sent when nothing changed.
 */
async function reconcileIfDue(convId) {
  const st = status.get(convId);
  if (!st || (st.state !== 'ready' && st.state !== 'partial')) return;
  const every = st.state === 'partial' ? RECONCILE_PARTIAL_EVERY : RECONCILE_EVERY;
  if (Date.now() - (lastReconcile.get(convId) || 0) < every) return;
  await reconcile(convId).catch((e) => console.warn('e2ee reconcile', e));
}

/** A conversation was opened: catch up, then bring the members' devices in line if due. */
export async function opened(convId) {
  if (!me) return;
  await pump(convId);
  await reconcileIfDue(convId);
}

/** Removes a member: the commit that removes their devices first, then the conversation's member. */
export async function removeMember(convId, userId) {
  await reconcile(convId, { alsoRemove: [userId] });
  await api('DELETE', `/v1/conversations/${convId}/members/${userId}`);
}

/** The devices of the group with their safety numbers: [{userId, deviceId, number, me}]. */
export async function safetyNumbers(convId) {
  if (!me) return [];
  const g = await loadGroup(convId);
  const out = [];
  const leaves = g.state ? mls.members(g.state) : [];
  if (!leaves.some((l) => l.deviceId === me.deviceId)) leaves.unshift({ userId: me.userId, deviceId: me.deviceId, publicKey: me.key.publicKey });
  for (const l of leaves) {
    out.push({ userId: l.userId, deviceId: l.deviceId, number: await mls.safetyNumber(l.publicKey), me: l.deviceId === me.deviceId });
  }
  return out;
}

// ---- attachments ---------------------------------------------------------------------------------

const RESUMABLE_ABOVE = 4 * 1024 * 1024;

/** Encrypts and uploads a file, then sends it as image/voice/file with the key inside MLS. */
export async function sendFile(convId, file, { caption, durationMs, width, height, kind, onProgress }) {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const aes = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const plain = new Uint8Array(await file.arrayBuffer());
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce }, aes, plain));
  const sha256 = mls.hex(new Uint8Array(await crypto.subtle.digest('SHA-256', sealed)));
  const blob = new File([sealed], 'encrypted.bin', { type: ENCRYPTED_MIME });
  const media = blob.size > RESUMABLE_ABOVE ? await uploadResumable(blob, onProgress) : await uploadWhole(blob, onProgress);
  const body = {
    media_id: media.media_id, key: mls.b64(key), nonce: mls.b64(nonce), sha256,
    name: file.name || 'file', mime: file.type || 'application/octet-stream', size: file.size,
  };
  if (kind === 'image') { body.width = width; body.height = height; if (caption) body.caption = caption; }
  if (kind === 'voice') body.duration_ms = durationMs;
  return sendPayload(convId, kind, body, uuid(), media.media_id);
}

const mediaUrls = new Map();

/** A blob: URL of a decrypted attachment (checked against its hash first). */
export function mediaUrl(body) {
  let url = mediaUrls.get(body.media_id);
  if (url) return url;
  url = (async () => {
    const sealed = new Uint8Array(await (await mediaBlob(body.media_id)).arrayBuffer());
    const sha = mls.hex(new Uint8Array(await crypto.subtle.digest('SHA-256', sealed)));
    if (sha !== body.sha256) throw new Error('the attachment does not match its hash');
    const aes = await crypto.subtle.importKey('raw', mls.unb64(body.key), 'AES-GCM', false, ['decrypt']);
    const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: mls.unb64(body.nonce) }, aes, sealed);
    return URL.createObjectURL(new Blob([plain], { type: body.mime || 'application/octet-stream' }));
  })();
  url.catch(() => mediaUrls.delete(body.media_id));
  mediaUrls.set(body.media_id, url);
  return url;
}

// ---- search ----------------------------------------------------------------------------------------

/**
 * Searches what this device decrypted (the server cannot): case-insensitive
 * substring over text, captions and file names. [{conversation_id, seq, text}]
 */
export async function search(q, limit = 30) {
  if (!me || !q) return [];
  const needle = q.toLocaleLowerCase();
  const rows = await db.all('plain');
  const hits = [];
  for (const r of rows) {
    if (!r.body || r.hidden || r.error || r.deleted) continue;
    const text = r.kind === 'text' ? r.body.text : r.kind === 'image' ? r.body.caption : r.kind === 'file' ? r.body.name : null;
    if (typeof text === 'string' && text.toLocaleLowerCase().includes(needle)) hits.push({ conversation_id: r.conv, seq: r.seq, text });
  }
  hits.sort((a, b) => b.seq - a.seq);
  return hits.slice(0, limit);
}
