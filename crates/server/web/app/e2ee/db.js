// What an encrypting device keeps in IndexedDB, so it survives reloads
// and restarts:
//   devices  device_id -> {signKey, publicKey}        the device key
//   packages ref (hex) -> {ref, publicPackage, privatePackage, lastResort?}
//   groups   conversation_id -> {state (bytes), cursor, joinedSeq, removed?}
//   plain    "conv:seq" -> {conv, seq, kind, body} | {conv, seq, hidden} | {conv, seq, error}
//   sent     client_msg_id -> {conv, kind, body}    what this device sent (MLS cannot decrypt its own)
// MLS secrets are used once: what was decrypted is kept here, never decrypted again.

// `devices` lives in the database `confab-e2ee` (a key is kept before its
// session exists); everything else in one database per device,
// `confab-e2ee-d<device_id>`, dropped when that device signs out.
const MAIN = 'confab-e2ee';
const PER_DEVICE = ['packages', 'groups', 'plain', 'sent'];
const handles = new Map(); // name -> promise of IDBDatabase
let deviceDb = null;

function open(name, stores) {
  let p = handles.get(name);
  if (!p) {
    p = new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => {
        for (const s of stores) if (!req.result.objectStoreNames.contains(s)) req.result.createObjectStore(s);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    p.catch(() => handles.delete(name));
    handles.set(name, p);
  }
  return p;
}

/** Selects the signed-in device's database. */
export function useDevice(deviceId) {
  deviceDb = `${MAIN}-d${deviceId}`;
}

/** Deletes a device's database and key (signing out: nothing decrypted stays behind). */
export async function forgetDevice(deviceId) {
  const name = `${MAIN}-d${deviceId}`;
  const h = handles.get(name);
  handles.delete(name);
  if (h) (await h.catch(() => null))?.close();
  await new Promise((resolve) => {
    const req = indexedDB.deleteDatabase(name);
    req.onsuccess = req.onerror = req.onblocked = () => resolve();
  });
  await del('devices', deviceId).catch(() => {});
}

/** Runs fn(stores) in one transaction over `names`; resolves with fn's result once committed. */
export async function tx(names, mode, fn) {
  const main = names.includes('devices');
  if (!main && !deviceDb) throw new Error('no device selected');
  const db = await (main ? open(MAIN, ['devices']) : open(deviceDb, PER_DEVICE));
  return new Promise((resolve, reject) => {
    const t = db.transaction(names, mode);
    const stores = Object.fromEntries(names.map((n) => [n, t.objectStore(n)]));
    let out;
    Promise.resolve(fn(stores)).then((v) => { out = v; }, (e) => { try { t.abort(); } catch { /* done */ } reject(e); });
    t.oncomplete = () => resolve(out);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error('IndexedDB transaction aborted'));
  });
}

/** A request's result as a promise (inside a tx callback). */
export function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export const get = (store, key) => tx([store], 'readonly', (s) => req(s[store].get(key)));
export const put = (store, key, value) => tx([store], 'readwrite', (s) => { s[store].put(value, key); });
export const del = (store, key) => tx([store], 'readwrite', (s) => { s[store].delete(key); });

/** Every value of a store whose key starts with `prefix` (string keys). */
export function byPrefix(store, prefix) {
  return tx([store], 'readonly', (s) => req(s[store].getAll(IDBKeyRange.bound(prefix, prefix + '\uffff'))));
}

export const all = (store) => tx([store], 'readonly', (s) => req(s[store].getAll()));
