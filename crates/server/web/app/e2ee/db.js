// What an encrypting device keeps in IndexedDB (database `confab-e2ee`),
// so it survives reloads and restarts:
//   devices  device_id -> {signKey, publicKey}        the device key
//   packages ref (hex) -> {ref, publicPackage, privatePackage, lastResort?}
//   groups   conversation_id -> {state (bytes), cursor, joinedSeq, removed?}
//   plain    "conv:seq" -> {conv, seq, kind, body} | {conv, seq, hidden} | {conv, seq, error}
//   sent     client_msg_id -> {conv, kind, body}    what this device sent (MLS cannot decrypt its own)
// MLS secrets are used once: what was decrypted is kept here, never decrypted again.

const DB = 'confab-e2ee';
const STORES = ['devices', 'packages', 'groups', 'plain', 'sent'];
let dbp = null;

function open() {
  if (!dbp) {
    dbp = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => {
        for (const s of STORES) if (!req.result.objectStoreNames.contains(s)) req.result.createObjectStore(s);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    dbp.catch(() => { dbp = null; });
  }
  return dbp;
}

/** Runs fn(stores) in one transaction over `names`; resolves with fn's result once committed. */
export async function tx(names, mode, fn) {
  const db = await open();
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
