// The `confab` CLI (Rust SDK + openmls) as a second client in the browser
// tests: each user gets a session file of their own in a temp folder and
// runs commands with the server and password in the environment.
// CONFAB_CLI names the binary (the Rust test passes its own build).

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { BASE, PASSWORD } from './helpers.mjs';

const BIN = process.env.CONFAB_CLI;

/** Runs the CLI; resolves to stdout, rejects with its stderr. */
function run(args, env) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { env: { ...process.env, ...env }, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`confab ${args.join(' ')} failed (${err.code}): ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** JSON lines of a command's output. */
const jsonLines = (out) => out.split('\n').filter((l) => l.trim().startsWith('{')).map((l) => JSON.parse(l));

export const cli = {
  /** Registers and logs in a CLI user (their device publishes KeyPackages at login). */
  async signUp(username) {
    const dir = mkdtempSync(path.join(tmpdir(), 'confab-cli-'));
    const env = { CONFAB_SERVER: BASE, CONFAB_SESSION: path.join(dir, 'session.json'), CONFAB_PASSWORD: PASSWORD, CONFAB_LOG: 'warn' };
    await run(['register', username], env);
    await run(['login', username], env);
    await run(['e2ee', 'publish-keys'], env);
    return {
      username,
      /** Creates an encrypted group with these usernames; resolves to its id. */
      async createEncryptedGroup(title, members) {
        const out = await run(['group', 'create', title, '--members', members.join(','), '--encrypted', '--json'], env);
        const [conv] = jsonLines(out);
        return conv.id;
      },
      /** Sends a text (encrypted when the conversation is). */
      send(convId, text) {
        return run(['e2ee', 'send', String(convId), text], env);
      },
      /** The decrypted texts of a conversation, oldest first (joining by Welcome when one is there). */
      async history(convId) {
        return (await this.messages(convId)).filter((m) => m.content.kind === 'text').map((m) => m.content.body.text);
      },
      /** The decrypted messages of a conversation: [{seq, sender_id, ts, content: {type: 'message', kind, body}}]. */
      async messages(convId) {
        const out = await run(['e2ee', 'history', String(convId), '--json'], env);
        return jsonLines(out).filter((m) => m.content && m.content.type === 'message');
      },
      /** Encrypts and sends a file as an image. */
      sendImage(convId, file) {
        return run(['e2ee', 'send-file', String(convId), file, '--image'], env);
      },
      /** The decrypted bytes of message `seq`'s attachment. */
      async download(convId, seq) {
        const out = path.join(dir, `download-${seq}`);
        await run(['e2ee', 'download', String(convId), String(seq), out], env);
        return readFileSync(out);
      },
      /** This device's safety number. */
      async safetyNumber() {
        return (await run(['e2ee', 'safety-number'], env)).trim();
      },
    };
  },
};
