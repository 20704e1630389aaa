// The MLS primitives of the browser app (issue 14), over the vendored
// ts-mls: ciphersuite 0x0001 (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519),
// BasicCredential "<user_id>:<device_id>" signed with the device's Ed25519
// key, base64 wire forms, group state (de)serialisation, safety numbers.
// No server calls and no storage here (see engine.js and db.js).

import * as M from '../../vendor/ts-mls.js';

export const SUITE = 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519';
const enc = new TextEncoder();
const dec = new TextDecoder();

let implP = null;
/** The ciphersuite implementation (WebCrypto + @hpke/core), made once. */
export function impl() {
  if (!implP) implP = M.getCiphersuiteImpl(M.getCiphersuiteFromName(SUITE));
  return implP;
}

// ---- bytes -----------------------------------------------------------------

/** Standard, padded base64 of bytes. */
export function b64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Bytes of standard base64 (throws on anything else). */
export function unb64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
export const utf8 = (text) => enc.encode(text);
export const fromUtf8 = (bytes) => dec.decode(bytes);

// ---- the device key ------------------------------------------------------------

/**
 * A new Ed25519 key pair: {signKey (PKCS#8, what ts-mls signs with),
 * publicKey (32 raw bytes, sent as `device_public_key`)}.
 */
export async function newDeviceKey() {
  const pair = await crypto.subtle.generateKey('Ed25519', true, ['sign', 'verify']);
  return {
    signKey: new Uint8Array(await crypto.subtle.exportKey('pkcs8', pair.privateKey)),
    publicKey: new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey)),
  };
}

/** The BasicCredential of a device. */
export function credential(userId, deviceId) {
  return { credentialType: 'basic', identity: utf8(`${userId}:${deviceId}`) };
}

/** `{userId, deviceId}` of a credential's identity, or null if it is not one of ours. */
export function parseIdentity(cred) {
  if (!cred || cred.credentialType !== 'basic') return null;
  const m = /^(\d+):(\d+)$/.exec(fromUtf8(cred.identity));
  return m ? { userId: Number(m[1]), deviceId: Number(m[2]) } : null;
}

// ---- key packages ------------------------------------------------------------------

/**
 * A KeyPackage's validity: from an hour ago (clock skew) to 83 days on.
 * openmls refuses leaf nodes whose lifetime spans more than about three
 * months (ts-mls's default spans forever).
 */
function lifetime() {
  const now = BigInt(Math.floor(Date.now() / 1000));
  return { notBefore: now - 3600n, notAfter: now + 83n * 86400n };
}

/**
 * A KeyPackage of this device: {ref (hex), wire (base64 MLSMessage),
 * stored (what to keep to join with it later)}.
 */
export async function newKeyPackage(userId, deviceId, deviceKey) {
  const cs = await impl();
  const { publicPackage, privatePackage } = await M.generateKeyPackageWithKey(
    credential(userId, deviceId), M.defaultCapabilities(), lifetime(), [], deviceKey, cs);
  const ref = hex(await M.makeKeyPackageRef(publicPackage, cs.hash));
  const wire = M.encodeMlsMessage({ keyPackage: publicPackage, wireformat: 'mls_key_package', version: 'mls10' });
  return { ref, wire: b64(wire), stored: { ref, publicPackage: M.encodeKeyPackage(publicPackage), privatePackage } };
}

/**
 * A KeyPackage from the wire: base64 of a bare TLS KeyPackage (what the
 * server hands out) or of an MLSMessage wrapping one; throws if it is
 * neither, or has bytes left over.
 */
export function decodeKeyPackage(wire) {
  let bytes;
  try {
    bytes = unb64(wire);
  } catch {
    throw new Error('a KeyPackage must be base64');
  }
  const whole = (out) => out && out[1] === bytes.length;
  let out;
  try {
    out = M.decodeMlsMessage(bytes, 0);
  } catch {
    out = undefined;
  }
  if (whole(out)) {
    if (out[0].wireformat !== 'mls_key_package') throw new Error('not a KeyPackage');
    return out[0].keyPackage;
  }
  try {
    out = M.decodeKeyPackage(bytes, 0);
  } catch {
    out = undefined;
  }
  if (!whole(out)) throw new Error('not a KeyPackage');
  return out[0];
}

// ---- messages -------------------------------------------------------------------

/** Decodes a base64 MLSMessage; throws a readable error. */
export function decodeMessage(wire) {
  let out;
  try {
    out = M.decodeMlsMessage(unb64(wire), 0);
  } catch {
    out = undefined;
  }
  if (!out) throw new Error('not an MLS message');
  return out[0];
}

export function encodeWelcome(welcome) {
  return b64(M.encodeMlsMessage({ welcome, wireformat: 'mls_welcome', version: 'mls10' }));
}

export function encodeMessage(msg) {
  return b64(M.encodeMlsMessage(msg));
}

// ---- groups --------------------------------------------------------------------------

/** The group state as bytes (to keep in IndexedDB), and back. */
export function saveState(state) {
  return M.encodeGroupState(state);
}

export function loadState(bytes) {
  const out = M.decodeGroupState(bytes, 0);
  if (!out) throw new Error('stored group state is unreadable');
  return { ...out[0], clientConfig: M.defaultClientConfig };
}

export function epochOf(state) {
  return Number(state.groupContext.epoch);
}

/** The group's members: [{leafIndex, userId, deviceId, publicKey}]. */
export function members(state) {
  const out = [];
  state.ratchetTree.forEach((node, i) => {
    if (i % 2 !== 0 || !node || node.nodeType !== 'leaf') return;
    const id = parseIdentity(node.leaf.credential);
    out.push({ leafIndex: i / 2, userId: id ? id.userId : null, deviceId: id ? id.deviceId : null, publicKey: node.leaf.signaturePublicKey });
  });
  return out;
}

/** The MLS group id of a conversation. */
export const groupIdOf = (convId) => `confab:${convId}`;

export async function createGroup(groupId, stored) {
  const cs = await impl();
  const kp = M.decodeKeyPackage(stored.publicPackage, 0)[0];
  return M.createGroup(utf8(groupId), kp, stored.privatePackage, [], cs);
}

/**
 * A commit adding key packages and removing leaves:
 * {state (to adopt once the server took it), commit (base64), welcome (base64 or null)}.
 */
export async function commit(state, { add = [], remove = [] } = {}) {
  const cs = await impl();
  const proposals = [
    ...remove.map((removed) => ({ proposalType: 'remove', remove: { removed } })),
    ...add.map((keyPackage) => ({ proposalType: 'add', add: { keyPackage } })),
  ];
  const out = await M.createCommit({ state, cipherSuite: cs }, { extraProposals: proposals, ratchetTreeExtension: true });
  return { state: out.newState, commit: encodeMessage(out.commit), welcome: out.welcome ? encodeWelcome(out.welcome) : null };
}

/** The KeyPackage refs (hex) a Welcome has secrets for. */
export function welcomeRefs(wire) {
  const msg = decodeMessage(wire);
  if (msg.wireformat !== 'mls_welcome') throw new Error('not a Welcome');
  return { welcome: msg.welcome, refs: msg.welcome.secrets.map((s) => hex(s.newMember)) };
}

export async function join(welcome, stored) {
  const cs = await impl();
  const kp = M.decodeKeyPackage(stored.publicPackage, 0)[0];
  return M.joinGroup(welcome, kp, stored.privatePackage, M.emptyPskIndex, cs);
}

/** Encrypts application bytes: {state, ciphertext (base64)}. */
export async function encrypt(state, bytes) {
  const cs = await impl();
  const out = await M.createApplicationMessage(state, bytes, cs);
  return {
    state: out.newState,
    ciphertext: encodeMessage({ privateMessage: out.privateMessage, wireformat: 'mls_private_message', version: 'mls10' }),
  };
}

/**
 * The leaf that sent a group message, as the message itself says (the
 * sender data of a PrivateMessage, decrypted with the epoch's secret; the
 * sender of a PublicMessage), and that leaf's identity in the tree of that
 * epoch: {leafIndex, userId, deviceId} (ids null for a foreign
 * credential). ts-mls verifies the signature against this same leaf when
 * it processes the message, so once that succeeds this is who signed it.
 */
async function senderOf(state, msg, cs) {
  let leafIndex;
  let tree = state.ratchetTree;
  if (msg.wireformat === 'mls_public_message') {
    const sender = msg.publicMessage.content.sender;
    if (sender.senderType !== 'member') throw new Error(`a ${sender.senderType} sender is not accepted`);
    leafIndex = sender.leafIndex;
  } else {
    const pm = msg.privateMessage;
    let secret = state.keySchedule.senderDataSecret;
    if (pm.epoch < state.groupContext.epoch) {
      const old = state.historicalReceiverData.get(pm.epoch);
      if (!old) throw new Error('the message is from an epoch this device no longer has keys for');
      secret = old.senderDataSecret;
      tree = old.ratchetTree;
    }
    const data = await M.decryptSenderData(pm, secret, cs);
    if (!data) throw new Error('the sender data cannot be read');
    leafIndex = data.leafIndex;
  }
  const node = tree[leafIndex * 2];
  if (!node || node.nodeType !== 'leaf') throw new Error('the sender is not a member of the group');
  const id = parseIdentity(node.leaf.credential);
  return { leafIndex, userId: id ? id.userId : null, deviceId: id ? id.deviceId : null };
}

/**
 * Processes one message of the group: {state, kind: 'application', bytes,
 * sender} or {state, kind: 'handshake', sender}, where `sender` is
 * {leafIndex, userId, deviceId} of the signer. With `senderId` (the user
 * the server says sent it), a message from another user's leaf is refused
 * before anything else (a replayed or passed-off message). Throws when it
 * cannot be processed.
 */
export async function process(state, wire, senderId = null) {
  const cs = await impl();
  const msg = decodeMessage(wire);
  if (msg.wireformat !== 'mls_private_message' && msg.wireformat !== 'mls_public_message') {
    throw new Error(`unexpected ${msg.wireformat}`);
  }
  const sender = await senderOf(state, msg, cs);
  if (senderId != null && sender.userId !== senderId) {
    const who = sender.userId == null ? 'a device with a foreign identity' : `user ${sender.userId}`;
    throw new Error(`signed by ${who}, but the server says user ${senderId} sent it`);
  }
  const out = await M.processMessage(msg, state, M.emptyPskIndex, M.acceptAll, cs);
  if (out.kind === 'applicationMessage') return { state: out.newState, kind: 'application', bytes: out.message, sender };
  return { state: out.newState, kind: 'handshake', sender };
}

/** Whether this state was removed from its group by a commit it processed. */
export function isRemoved(state) {
  return !!state.groupActiveState && state.groupActiveState.kind === 'removedFromGroup';
}

// ---- safety numbers --------------------------------------------------------------------

/**
 * The safety number of a device's Ed25519 public key (docs/protocol.md,
 * "Identity and credentials"): SHA-512 of "confab-safety-number-v1:" and
 * the 32 key bytes; the digest's first 30 bytes as six 5-byte big-endian
 * integers, each mod 100000 as five digits, joined by spaces.
 */
export async function safetyNumber(publicKey) {
  const prefix = utf8('confab-safety-number-v1:');
  const input = new Uint8Array(prefix.length + publicKey.length);
  input.set(prefix);
  input.set(publicKey, prefix.length);
  const d = new Uint8Array(await crypto.subtle.digest('SHA-512', input));
  const groups = [];
  for (let i = 0; i < 30; i += 5) {
    let n = 0n;
    for (let j = 0; j < 5; j++) n = (n << 8n) | BigInt(d[i + j]);
    groups.push(String(n % 100000n).padStart(5, '0'));
  }
  return groups.join(' ');
}
