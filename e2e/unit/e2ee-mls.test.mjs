// Unit tests of the browser app's MLS layer (app/e2ee/mls.js over the
// vendored ts-mls), in Node's WebCrypto: the safety number against an
// independent computation and the test vector in docs/protocol.md, key
// packages that carry the device's identity and key, and a group of three
// where a removed device cannot read what follows.
// Run: node --test e2e/unit/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

const mls = await import('../../crates/server/web/app/e2ee/mls.js');

/** The safety number as docs/protocol.md words it, with node:crypto. */
function reference(publicKey) {
  const d = createHash('sha512').update(Buffer.from('confab-safety-number-v1:')).update(publicKey).digest();
  const groups = [];
  for (let i = 0; i < 30; i += 5) groups.push(String(d.readUIntBE(i, 5) % 100000).padStart(5, '0'));
  return groups.join(' ');
}

test('safety numbers: the documented derivation, the test vector', async () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  assert.equal(await mls.safetyNumber(key), reference(key));
  assert.equal(await mls.safetyNumber(key), '25547 52162 87685 43012 64846 08754');
  for (let n = 0; n < 20; n++) {
    const k = crypto.getRandomValues(new Uint8Array(32));
    const s = await mls.safetyNumber(k);
    assert.equal(s, reference(k));
    assert.match(s, /^\d{5}( \d{5}){5}$/);
  }
});

test('base64 is standard and padded, both ways', () => {
  const bytes = Uint8Array.from([0, 250, 251, 252, 253, 254, 255]);
  assert.equal(mls.b64(bytes), Buffer.from(bytes).toString('base64'));
  assert.deepEqual([...mls.unb64(mls.b64(bytes))], [...bytes]);
  assert.equal(mls.b64(new Uint8Array(32)).length, 44);
});

test('a KeyPackage names the device and carries its key; a group of three; removal', async () => {
  const keys = await Promise.all([1, 2, 3].map(() => mls.newDeviceKey()));
  const kps = await Promise.all(keys.map((k, i) => mls.newKeyPackage(i + 1, (i + 1) * 10, k)));
  const decoded = mls.decodeKeyPackage(kps[1].wire);
  assert.deepEqual(mls.parseIdentity(decoded.leafNode.credential), { userId: 2, deviceId: 20 });
  assert.deepEqual([...decoded.leafNode.signaturePublicKey], [...keys[1].publicKey]);
  assert.equal(decoded.cipherSuite, mls.SUITE);
  // The server hands packages out bare (the TLS KeyPackage, no MLSMessage around it).
  const bare = mls.unb64(kps[1].wire).subarray(4);
  assert.deepEqual(mls.decodeKeyPackage(mls.b64(bare)), decoded);
  assert.throws(() => mls.decodeKeyPackage(mls.b64(Uint8Array.from([...bare, 0]))), /not a KeyPackage/);
  assert.throws(() => mls.decodeKeyPackage(mls.b64(bare.subarray(0, 40))), /not a KeyPackage/);

  let a = await mls.createGroup(mls.groupIdOf(7), kps[0].stored);
  assert.equal(mls.fromUtf8(a.groupContext.groupId), 'confab:7');
  const c = await mls.commit(a, { add: [decoded, mls.decodeKeyPackage(kps[2].wire)] });
  a = c.state;
  const { welcome, refs } = mls.welcomeRefs(c.welcome);
  assert.deepEqual(refs.sort(), [kps[1].ref, kps[2].ref].sort());
  let b = mls.loadState(mls.saveState(await mls.join(welcome, kps[1].stored)));
  let cat = await mls.join(welcome, kps[2].stored);
  assert.deepEqual([mls.epochOf(a), mls.epochOf(b), mls.epochOf(cat)], [1, 1, 1]);
  assert.deepEqual(mls.members(b).map((m) => [m.userId, m.deviceId]), [[1, 10], [2, 20], [3, 30]]);

  const hello = await mls.encrypt(a, mls.utf8('你好'));
  a = hello.state;
  // Another user's message passed off as one's own is refused before it is processed.
  await assert.rejects(mls.process(b, hello.ciphertext, 3), /signed by user 1, but the server says user 3/);
  const got = await mls.process(b, hello.ciphertext, 1);
  b = got.state;
  assert.equal(got.kind, 'application');
  assert.equal(mls.fromUtf8(got.bytes), '你好');
  assert.deepEqual(got.sender, { leafIndex: 0, userId: 1, deviceId: 10 });

  const rm = await mls.commit(b, { remove: [2] });
  b = rm.state;
  const seen = await mls.process(a, rm.commit, 2);
  assert.deepEqual([seen.kind, seen.sender.userId, seen.sender.deviceId], ['handshake', 2, 20]);
  a = seen.state;
  cat = (await mls.process(cat, rm.commit)).state;
  assert.ok(mls.isRemoved(cat));
  const after = await mls.encrypt(a, mls.utf8('猫看不到'));
  await assert.rejects(mls.process(cat, after.ciphertext));
  assert.equal(mls.fromUtf8((await mls.process(b, after.ciphertext)).bytes), '猫看不到');
  // A forged message (one byte flipped) is refused.
  const raw = mls.unb64(after.ciphertext);
  raw[raw.length - 5] ^= 1;
  await assert.rejects(mls.process(b, mls.b64(raw)));
});
