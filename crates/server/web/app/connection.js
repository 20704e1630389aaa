// The reconnecting WebSocket: backoff with jitter, app-level ping/pong,
// browser online/offline events, sync with cursors (has_more, floors, gaps),
// outbox resend after every hello, acks turned into own messages, and
// coalesced `delivered` frames. Logic follows the Rust SDK (link.rs).

import { Ordering } from './ordering.js';
import { api, getSession } from './api.js';

const PING_EVERY = 20000;
const PONG_WITHIN = 10000;
const CONNECT_WITHIN = 10000;
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'internal']);

export class Connection {
  /**
   * cursors: initial {conversationId: seq}; outbox: an Outbox;
   * on: {state(state, info), messages([msg]), update(msg), frame(frame),
   *      acked(entry, ack), refused(entry, error)}.
   */
  constructor({ cursors, outbox, on }) {
    this.ordering = new Ordering(cursors);
    this.outbox = outbox;
    this.on = on;
    this.ws = null;
    this.hello = false;
    this.userId = null;
    this.attempt = 0;
    this.timers = {};
    this.pendingReads = new Map();
    this.pendingDelivered = new Map();
    this.closed = false;
    this.state = 'connecting';
    this.onOffline = () => this.lose('offline');
    this.onOnline = () => this.reconnectNow();
    window.addEventListener('offline', this.onOffline);
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  setState(state, info = {}) {
    this.state = state;
    this.on.state(state, info);
  }

  clearTimer(name) {
    clearTimeout(this.timers[name]);
    clearInterval(this.timers[name]);
    delete this.timers[name];
  }

  connect() {
    if (this.closed) return;
    this.clearTimer('retry');
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    const session = getSession();
    if (!session) return;
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting', { connecting: true });
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // The token goes as a subprotocol, not in the URL (URLs land in logs);
    // the server answers with confab.v1.
    const ws = new WebSocket(`${proto}//${location.host}/v1/ws`, ['confab.v1', `bearer.${session.access_token}`]);
    this.ws = ws;
    this.hello = false;
    this.syncsOutstanding = 0;
    this.more = false;
    this.gapPending = false;
    this.forceSync = false;
    this.timers.connect = setTimeout(() => this.lose('connect timed out'), CONNECT_WITHIN);
    ws.onmessage = (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        console.warn('unreadable frame', e.data);
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (e) => this.lose(e.reason || `closed (${e.code})`, e.code);
    ws.onerror = () => { /* onclose follows */ };
  }

  /** The socket is gone (or must go): drop it and schedule a reconnect. */
  lose(reason, code) {
    const ws = this.ws;
    const hadHello = this.hello;
    this.ws = null;
    this.hello = false;
    this.clearTimer('connect');
    this.clearTimer('ping');
    this.clearTimer('pong');
    this.clearTimer('delivered');
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = null;
      try { ws.close(); } catch { /* already closing */ }
    }
    if (this.closed) return;
    if (!navigator.onLine || reason === 'offline') {
      this.setState('offline');
      return;
    }
    if (!hadHello || code === 1008) {
      // Maybe the token expired or the device was revoked: a checked
      // request refreshes it, or ends the session (the app signs out).
      api('GET', '/v1/users/me').catch(() => {});
    }
    this.scheduleRetry(reason);
  }

  scheduleRetry(reason) {
    this.clearTimer('retry');
    const base = Math.min(30000, 500 * 2 ** Math.min(this.attempt, 6));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this.attempt += 1;
    this.setState('reconnecting', { reason, retryAt: Date.now() + delay });
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /** Reconnect at once (online event, "retry now" button). */
  reconnectNow() {
    if (this.closed || this.ws) return;
    this.attempt = Math.max(1, this.attempt);
    this.connect();
  }

  /** Ends the connection for good (sign out). */
  close() {
    this.closed = true;
    window.removeEventListener('offline', this.onOffline);
    window.removeEventListener('online', this.onOnline);
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = null;
      ws.close(1000, 'signed out');
    }
  }

  write(frame) {
    if (!this.ws || !this.hello) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  startPing() {
    this.timers.ping = setInterval(() => {
      if (!this.write({ type: 'ping', nonce: Date.now() })) return;
      if (!this.timers.pong) this.timers.pong = setTimeout(() => this.lose('no answer to ping'), PONG_WITHIN);
    }, PING_EVERY);
  }

  syncFrame() {
    this.syncsOutstanding += 1;
    return { type: 'sync', cursors: this.ordering.cursors() };
  }

  onFrame(f) {
    switch (f.type) {
      case 'hello': {
        if (this.hello) return;
        this.hello = true;
        this.userId = f.user_id;
        // The server's settings the app follows (older servers: defaults).
        this.on.frame({ type: 'settings', receiptsMaxGroup: f.receipts_max_group ?? 100, typingTimeoutMs: f.typing_timeout_ms ?? 6000 });
        this.attempt = 0;
        this.clearTimer('connect');
        this.startPing();
        this.setState('online');
        this.write(this.syncFrame());
        for (const [conversation_id, seq] of this.pendingReads) this.write({ type: 'read', conversation_id, seq });
        for (const [conversation_id, seq] of this.pendingDelivered) this.write({ type: 'delivered', conversation_id, seq });
        this.pendingReads.clear();
        this.pendingDelivered.clear();
        for (const e of this.outbox.pending()) this.write(sendFrame(e));
        break;
      }
      case 'message':
        this.deliver(f);
        break;
      case 'ack': {
        const entry = this.outbox.take(f.client_msg_id);
        if (!entry) break;
        this.on.acked(entry, f);
        this.deliver({
          conversation_id: f.conversation_id, seq: f.seq, sender_id: this.userId,
          client_msg_id: f.client_msg_id, kind: entry.kind, body: entry.body, ts: f.ts,
        }, true);
        break;
      }
      case 'error': {
        const entry = f.client_msg_id && this.outbox.get(f.client_msg_id);
        if (entry && RETRYABLE.has(f.code)) {
          setTimeout(() => { if (this.outbox.get(entry.client_msg_id) && !entry.failed) this.write(sendFrame(entry)); },
            1000 + Math.random() * 2000);
        } else if (entry) {
          this.outbox.fail(entry.client_msg_id, f.message);
          this.on.refused(entry, f);
        } else {
          this.on.frame(f);
        }
        break;
      }
      case 'sync_done': {
        const ready = [];
        for (const [id, floor] of Object.entries(f.floors || {})) ready.push(...this.ordering.advance(Number(id), floor));
        this.emitReady(ready);
        this.syncsOutstanding = Math.max(0, this.syncsOutstanding - 1);
        this.more = Object.values(f.has_more || {}).some(Boolean);
        this.on.frame(f);
        break;
      }
      case 'pong':
        this.clearTimer('pong');
        break;
      default:
        this.on.frame(f);
    }
    this.finish();
  }

  /** Puts a message through ordering; updates of seen messages go to `update`. */
  deliver(msg, own = false) {
    const out = this.ordering.push(msg);
    if (out.kind === 'ready') this.emitReady(out.ready);
    else if (out.kind === 'duplicate' && !own) this.on.update(msg);
    else if (out.kind === 'buffered') this.gapPending = true;
    else if (out.kind === 'overflowed') this.forceSync = true;
  }

  emitReady(ready) {
    if (!ready.length) return;
    for (const m of ready) {
      if (m.sender_id !== this.userId) {
        this.pendingDelivered.set(m.conversation_id, Math.max(m.seq, this.pendingDelivered.get(m.conversation_id) || 0));
      }
    }
    this.on.messages(ready);
  }

  /** After each frame: flush delivered (coalesced) and sync again if needed. */
  finish() {
    if (!this.hello) return;
    if (this.pendingDelivered.size && !this.timers.delivered) {
      this.timers.delivered = setTimeout(() => {
        delete this.timers.delivered;
        for (const [conversation_id, seq] of this.pendingDelivered) {
          if (this.write({ type: 'delivered', conversation_id, seq })) this.pendingDelivered.delete(conversation_id);
        }
      }, 100);
    }
    if (this.syncsOutstanding === 0) {
      const gaps = this.gapPending && this.ordering.hasGaps();
      if (this.more || gaps || this.forceSync) this.write(this.syncFrame());
      this.more = this.gapPending = this.forceSync = false;
    }
  }

  /** Queues a message in the outbox and sends it if connected. */
  send(entry) {
    this.outbox.add(entry);
    this.write(sendFrame(entry));
  }

  /** Sends a failed entry again. */
  retry(id) {
    const e = this.outbox.retry(id);
    if (e) this.write(sendFrame(e));
  }

  read(conversation_id, seq) {
    if (!this.write({ type: 'read', conversation_id, seq })) {
      this.pendingReads.set(conversation_id, Math.max(seq, this.pendingReads.get(conversation_id) || 0));
    }
  }

  /** Ephemeral frames (typing): dropped while offline. */
  ephemeral(frame) {
    this.write(frame);
  }
}

function sendFrame(e) {
  return { type: 'send', client_msg_id: e.client_msg_id, conversation_id: e.conversation_id, kind: e.kind, body: e.body };
}
