// A js-libp2p node (TCP, Noise, Yamux, identify) that delivers one
// envelope it signed itself to a Confab peer over /confab/msg/1.
//
//   node deliver.mjs id KEYFILE              prints {"peer_id"} (makes the key once)
//   node deliver.mjs send KEYFILE MULTIADDR TEXT
//                                            dials MULTIADDR (…/p2p/<Confab PeerId>),
//                                            prints {"identified", "envelope", "ack"}
//
// The envelope format and its signed bytes are those of docs/protocol.md
// ("Peer to peer", "Envelopes").
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

// libp2p 3 uses Promise.withResolvers (Node 22); Debian's Node 20 lacks it.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

async function loadKey (file) {
  if (!existsSync(file)) {
    const key = await generateKeyPair('Ed25519')
    writeFileSync(file, privateKeyToProtobuf(key), { mode: 0o600 })
  }
  return privateKeyFromProtobuf(readFileSync(file))
}

// The direct conversation id both sides compute from the two PeerIds.
function directConversationId (a, b) {
  const [x, y] = a <= b ? [a, b] : [b, a]
  const digest = createHash('sha256').update(`${x}\n${y}`).digest()
  return 'dm-' + digest.subarray(0, 16).toString('hex')
}

// "confab-envelope-v1" then each field as a u32 big-endian length + UTF-8 bytes.
function signedBytes (env) {
  const fields = [env.conversation_id, env.sender, String(env.counter), env.client_msg_id,
    String(env.lamport), env.kind, env.body]
  const parts = [Buffer.from('confab-envelope-v1')]
  for (const f of fields) {
    const bytes = Buffer.from(f, 'utf8')
    const len = Buffer.alloc(4)
    len.writeUInt32BE(bytes.length)
    parts.push(len, bytes)
  }
  return Buffer.concat(parts)
}

const [cmd, keyFile, target, text] = process.argv.slice(2)
const key = await loadKey(keyFile)
const me = peerIdFromPrivateKey(key).toString()
if (cmd === 'id') {
  console.log(JSON.stringify({ peer_id: me }))
  process.exit(0)
}

const node = await createLibp2p({
  privateKey: key,
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify() }
})
const addr = multiaddr(target)
const remote = addr.getComponents().find(c => c.name === 'p2p').value
const identified = new Promise(resolve => {
  node.addEventListener('peer:identify', evt => {
    if (evt.detail.peerId.toString() === remote) resolve(evt.detail)
  })
})
const stream = await node.dialProtocol(addr, '/confab/msg/1')
const info = await Promise.race([identified, new Promise((_, reject) => setTimeout(() => reject(new Error('identify timed out')), 10000))])

const env = {
  v: 1,
  conversation_id: directConversationId(me, remote),
  sender: me,
  counter: 1,
  client_msg_id: randomUUID(),
  lamport: 1,
  kind: 'text',
  body: JSON.stringify({ text }),
  sig: ''
}
env.sig = Buffer.from(await key.sign(signedBytes(env))).toString('base64')
stream.send(new TextEncoder().encode(JSON.stringify(env)))
await stream.close()
const chunks = []
for await (const chunk of stream) {
  chunks.push(chunk.subarray ? chunk.subarray() : chunk)
}
const ack = JSON.parse(Buffer.concat(chunks.map(c => Buffer.from(c))).toString('utf8'))
console.log(JSON.stringify({
  identified: { agent: info.agentVersion, protocols: info.protocols },
  envelope: env,
  ack
}))
await node.stop()
