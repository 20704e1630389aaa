// What the web app uses of ts-mls, bundled by scripts/vendor-ts-mls into
// crates/server/web/vendor/ts-mls.js (one ES module, no bare imports, so it
// loads under the app's CSP without an import map). Deep imports on
// purpose: the package index also pulls in the @noble crypto provider,
// which ciphersuite 0x0001 does not need (WebCrypto does X25519, Ed25519,
// AES-GCM and SHA-256; @hpke/core does HPKE on top of it).
export {
  createGroup, joinGroup, encodeGroupState, decodeGroupState, getGroupMembers, getOwnLeafNode,
} from 'ts-mls/clientState.js';
export { generateKeyPackageWithKey, encodeKeyPackage, decodeKeyPackage } from 'ts-mls/keyPackage.js';
export { createCommit } from 'ts-mls/createCommit.js';
export { createApplicationMessage } from 'ts-mls/createMessage.js';
export { processMessage } from 'ts-mls/processMessages.js';
export { encodeMlsMessage, decodeMlsMessage } from 'ts-mls/message.js';
export { decryptSenderData } from 'ts-mls/privateMessage.js';
export { getCiphersuiteImpl } from 'ts-mls/crypto/getCiphersuiteImpl.js';
export { getCiphersuiteFromName, ciphersuites } from 'ts-mls/crypto/ciphersuite.js';
export { defaultCapabilities } from 'ts-mls/defaultCapabilities.js';
export { defaultLifetime } from 'ts-mls/lifetime.js';
export { emptyPskIndex } from 'ts-mls/pskIndex.js';
export { acceptAll } from 'ts-mls/incomingMessageAction.js';
export { makeKeyPackageRef } from 'ts-mls/keyPackage.js';
export { defaultClientConfig } from 'ts-mls/clientConfig.js';
