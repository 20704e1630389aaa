// HTTP API client: the session (tokens in localStorage), JSON requests with
// one refresh-and-retry on 401, uploads with progress, and media URLs.

import { keyForLogin, bindDeviceKey, forget } from './e2ee/engine.js';

const SESSION_KEY = 'confab.session';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let session = readSession();
let refreshing = null;
let loggedOutHandler = () => {};

function readSession() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
  } catch {
    return null;
  }
}

/** The current session: {access_token, refresh_token, user, device_id} or null. */
export function getSession() {
  return session;
}

export function setSession(s) {
  session = s;
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
  return shareSession(s);
}

// The session as every tab sees it at once. localStorage is read
// synchronously at start-up, but Chromium syncs it between tabs' processes
// a little later; IndexedDB transactions are ordered across all tabs of
// the origin, so a tab that takes the refresh lock reads the pair the
// previous holder wrote, never the one it spent.
let sessionDb = null;

function openSessionDb() {
  if (!sessionDb) {
    sessionDb = new Promise((resolve, reject) => {
      const req = indexedDB.open('confab', 1);
      req.onupgradeneeded = () => req.result.createObjectStore('kv');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    sessionDb.catch(() => { sessionDb = null; });
  }
  return sessionDb;
}

async function sessionTx(mode, fn) {
  const db = await openSessionDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction('kv', mode);
    const req = fn(tx.objectStore('kv'));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** Writes the shared copy; resolves once other tabs can read it. */
async function shareSession(s) {
  if (typeof indexedDB === 'undefined') return;
  try {
    await sessionTx('readwrite', (kv) => kv.put(s, SESSION_KEY));
  } catch (e) {
    console.warn('could not share the session with other tabs', e);
  }
}

/** The newest session any tab wrote (falls back to localStorage). */
async function sharedSession() {
  if (typeof indexedDB !== 'undefined') {
    try {
      const s = await sessionTx('readonly', (kv) => kv.get(SESSION_KEY));
      if (s !== undefined) return s;
    } catch { /* fall back below */ }
  }
  return readSession();
}

/** Called once the session is gone for good (refresh refused). */
export function onLoggedOut(fn) {
  loggedOutHandler = fn;
}

function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge'
    : /Chrom(e|ium)\//.test(ua) ? 'Chromium' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS'
    : /Windows/.test(ua) ? 'Windows' : /Linux/.test(ua) ? 'Linux' : 'unknown OS';
  return `${browser} on ${os}`;
}

async function errorFrom(res) {
  let code = 'http_' + res.status;
  let message = `The server answered ${res.status} ${res.statusText}`.trim();
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch { /* not JSON: keep the status text */ }
  return new ApiError(res.status, code, message);
}

const networkError = () =>
  new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');

/**
 * Gets a new token pair; single flight in this tab, and one tab at a time
 * (Web Locks, where the browser has them): refresh tokens rotate, and a
 * second tab presenting the one just spent would make the server revoke
 * the device, signing every tab out. Resolves true when refreshed.
 */
export function refresh(failedToken) {
  if (!refreshing) {
    const run = () => refreshOnce(failedToken);
    refreshing = (navigator.locks ? navigator.locks.request('confab.refresh', run) : run())
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

/**
 * When to stop trusting a pair's access token (ms, by this clock): a quarter
 * of its life (at most 30 s) early, as the server's clock started it before
 * the answer reached us.
 */
function expiresAt(pair) {
  const ttl = (pair.expires_in || 0) * 1000;
  return Date.now() + ttl - Math.min(30000, ttl / 4);
}

async function refreshOnce(failedToken) {
  // Another tab may have rotated the tokens already: always continue from
  // the newest pair (presenting a spent refresh token revokes the device),
  // and use its access token unless that has run out too (a tab that slept
  // for hours).
  const stored = await sharedSession();
  if (stored && (!session || stored.refresh_token !== session.refresh_token)) session = stored;
  if (!session) return false;
  const fresh = !session.expires_at || session.expires_at > Date.now();
  if (session.access_token !== failedToken && fresh) return true;
  let res;
  try {
    res = await fetch('/v1/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: session.refresh_token }),
    });
  } catch {
    throw networkError();
  }
  if (res.status === 401) {
    await setSession(null);
    loggedOutHandler('Your session has ended. Please sign in again.');
    return false;
  }
  if (!res.ok) throw await errorFrom(res);
  const pair = await res.json();
  // Shared before the lock is released: the next tab in line reads it.
  await setSession({ ...session, access_token: pair.access_token, refresh_token: pair.refresh_token, expires_at: expiresAt(pair) });
  return true;
}

/** A JSON request; refreshes the session once on 401 `unauthorized`. */
export async function api(method, path, body, { auth = true, retried = false } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const token = session && session.access_token;
  if (auth && token) headers.Authorization = 'Bearer ' + token;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw networkError();
  }
  if (res.status === 401 && auth && !retried) {
    if (await refresh(token)) return api(method, path, body, { auth, retried: true });
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  return res.json();
}

export async function signIn(username, password) {
  // Each login is a new device with a new Ed25519 key (its E2EE identity,
  // kept in IndexedDB); browsers without WebCrypto Ed25519 log in without one.
  const deviceKey = await keyForLogin().catch(() => null);
  const body = { username, password, device_name: deviceName() };
  if (deviceKey) body.device_public_key = deviceKey.publicKey;
  const out = await api('POST', '/v1/auth/login', body, { auth: false });
  if (deviceKey) await bindDeviceKey(out.device_id, deviceKey.key);
  await setSession({
    access_token: out.access_token, refresh_token: out.refresh_token, expires_at: expiresAt(out),
    user: out.user, device_id: out.device_id,
  });
  return out.user;
}

/** Registers (display name optional) and signs in. */
export async function signUp(username, password, displayName) {
  const body = { username, password };
  if (displayName) body.display_name = displayName;
  await api('POST', '/v1/auth/register', body, { auth: false });
  return signIn(username, password);
}

// --- Sign-in with an OpenID Connect provider -------------------------------
// The start answer's `flow` secret stays in this tab (sessionStorage) while
// the browser visits the provider; the server's callback brings the browser
// back to `/#oidc_code=…`, and only this tab can exchange that code.

const OIDC_FLOW_KEY = 'confab.oidc_flow';

/** The providers the server offers ([] when none, or on error). */
export async function oidcProviders() {
  try {
    const out = await api('GET', '/v1/auth/oidc/providers', undefined, { auth: false });
    return out.providers || [];
  } catch {
    return [];
  }
}

/** Sends the browser to the provider, to sign in or (`link`) to link it. */
export async function oidcBegin(providerId, link = false) {
  const path = `/v1/auth/oidc/${encodeURIComponent(providerId)}/${link ? 'link' : 'start'}`;
  const out = await api('POST', path, { client: 'web' }, { auth: link });
  sessionStorage.setItem(OIDC_FLOW_KEY, out.flow);
  location.assign(out.authorization_url);
}

async function adoptTokens(out) {
  await setSession({
    access_token: out.access_token, refresh_token: out.refresh_token, expires_at: expiresAt(out),
    user: out.user, device_id: out.device_id,
  });
  return out.user;
}

/**
 * Exchanges the callback's one-time code: {status: 'signed_in', user},
 * {status: 'signup_required', signup_token, suggested_username,
 * display_name} or {status: 'linked', provider, user}.
 */
export async function oidcExchange(code) {
  const flow = sessionStorage.getItem(OIDC_FLOW_KEY) || '';
  sessionStorage.removeItem(OIDC_FLOW_KEY);
  const out = await api('POST', '/v1/auth/oidc/exchange', { code, flow, device_name: deviceName() }, { auth: false });
  if (out.status === 'signed_in') return { status: out.status, user: await adoptTokens(out) };
  return out;
}

/** A first sign-in takes its username; signs in. */
export async function oidcSignup(signupToken, username, displayName) {
  const body = { signup_token: signupToken, username, device_name: deviceName() };
  if (displayName) body.display_name = displayName;
  return adoptTokens(await api('POST', '/v1/auth/oidc/signup', body, { auth: false }));
}

/** The provider accounts linked to mine. */
export async function oidcIdentities() {
  return (await api('GET', '/v1/auth/oidc/identities')).identities || [];
}

export async function signOut() {
  const deviceId = session && session.device_id;
  try {
    await api('POST', '/v1/auth/logout');
  } finally {
    setSession(null);
    // The device is revoked: its MLS keys and decrypted history go too.
    if (deviceId != null) await forget(deviceId);
  }
}

/** Uploads a file in one request with progress; resolves to the media answer. */
export async function upload(file, onProgress) {
  const form = new FormData();
  form.append('file', file, file.name || 'upload');
  const xhr = await rawRequest('POST', '/v1/media', {}, form, (loaded, total) => onProgress(loaded / total));
  return JSON.parse(xhr.responseText);
}

/**
 * A request whose body or answer is not JSON (uploads: XMLHttpRequest, for
 * upload progress), with the session's token, refreshed once on 401.
 * Resolves to the finished XMLHttpRequest; rejects with an ApiError.
 */
export function rawRequest(method, url, headers = {}, body = undefined, onSent = null, retried = false) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const token = session && session.access_token;
    xhr.open(method, url);
    xhr.setRequestHeader('Authorization', 'Bearer ' + token);
    for (const [k, v] of Object.entries(headers)) if (v) xhr.setRequestHeader(k, v);
    if (onSent) xhr.upload.onprogress = (e) => { if (e.lengthComputable) onSent(e.loaded, e.total); };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'The connection dropped during the upload.'));
    xhr.onload = async () => {
      if (xhr.status === 401 && !retried) {
        try {
          if (await refresh(token)) return resolve(await rawRequest(method, url, headers, body, onSent, true));
        } catch (e) {
          return reject(e);
        }
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr);
      let err = null;
      try { err = JSON.parse(xhr.responseText).error; } catch { /* no JSON body (HEAD) */ }
      reject(new ApiError(xhr.status, err ? err.code : `http_${xhr.status}`,
        err ? err.message : `Upload failed (${xhr.status})`));
    };
    xhr.send(body === undefined ? null : body);
  });
}

/** Media bytes, fetched with the session's token in the Authorization header (never in a URL). */
export function mediaBlob(id) {
  return fetchMedia(`/v1/media/${encodeURIComponent(id)}`);
}

async function fetchMedia(path, retried = false) {
  const token = session && session.access_token;
  let res;
  try {
    res = await fetch(path, { headers: token ? { Authorization: 'Bearer ' + token } : {} });
  } catch {
    throw networkError();
  }
  if (res.status === 401 && !retried && await refresh(token)) return fetchMedia(path, true);
  if (!res.ok) throw await errorFrom(res);
  return res.blob();
}

/** Object URLs of fetched media, most recently used last; the oldest are revoked past MEDIA_CACHE_MAX. */
const mediaCache = new Map();
const MEDIA_CACHE_MAX = 300;

/**
 * A promise of an object URL (blob:) for media `id` (or its thumbnail) that
 * works in <img>/<audio>/<a download>; fetched once and cached.
 */
export function mediaObjectUrl(id, thumbnail = false) {
  const key = thumbnail ? `${id}/thumbnail` : id;
  let url = mediaCache.get(key);
  if (url) {
    mediaCache.delete(key);
    mediaCache.set(key, url);
    return url;
  }
  url = fetchMedia(`/v1/media/${encodeURIComponent(id)}${thumbnail ? '/thumbnail' : ''}`)
    .then((blob) => URL.createObjectURL(blob));
  url.catch(() => mediaCache.delete(key));
  mediaCache.set(key, url);
  while (mediaCache.size > MEDIA_CACHE_MAX) {
    const [oldest, old] = mediaCache.entries().next().value;
    mediaCache.delete(oldest);
    old.then((u) => URL.revokeObjectURL(u), () => {});
  }
  return url;
}

/** Finds a user by exact username (case-insensitive), or throws. */
export async function findUser(username) {
  const name = username.trim().replace(/^@/, '');
  if (!name) throw new ApiError(400, 'bad_request', 'Enter a username.');
  const { users } = await api('GET', `/v1/users?q=${encodeURIComponent(name)}&limit=50`);
  const user = users.find((u) => u.username.toLowerCase() === name.toLowerCase());
  if (!user) throw new ApiError(404, 'not_found', `No user named “${name}”.`);
  return user;
}
