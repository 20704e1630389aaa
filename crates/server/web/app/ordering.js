// Per-conversation reordering and deduplication (a port of the Rust SDK's
// ordering.rs): at-least-once, possibly out-of-order `message` frames in;
// exactly-once, in-order, gapless messages out.

const MAX_BUFFERED = 10000;

export class Ordering {
  /** cursors: {conversationId: lastSeqSeen}. */
  constructor(cursors = {}) {
    this.convs = new Map();
    for (const [id, seq] of Object.entries(cursors)) this.conv(Number(id)).cursor = Math.max(0, seq);
  }

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = { cursor: 0, buffer: new Map() };
      this.convs.set(id, c);
    }
    return c;
  }

  /**
   * Takes one message. Returns {kind: 'duplicate'|'ready'|'buffered'|'overflowed', ready?: [msg]}.
   * A duplicate that is waiting in the buffer is replaced by the newer copy.
   */
  push(msg) {
    const c = this.conv(msg.conversation_id);
    const seq = msg.seq;
    if (seq <= c.cursor) return { kind: 'duplicate' };
    if (c.buffer.has(seq)) {
      c.buffer.set(seq, msg);
      return { kind: 'duplicate' };
    }
    if (seq === c.cursor + 1) {
      c.cursor = seq;
      const ready = [msg];
      this.release(c, ready);
      return { kind: 'ready', ready };
    }
    if (c.buffer.size >= MAX_BUFFERED) {
      c.buffer.clear();
      return { kind: 'overflowed' };
    }
    c.buffer.set(seq, msg);
    return { kind: 'buffered' };
  }

  release(c, ready) {
    while (c.buffer.has(c.cursor + 1)) {
      const next = c.buffer.get(c.cursor + 1);
      c.buffer.delete(c.cursor + 1);
      c.cursor = next.seq;
      ready.push(next);
    }
  }

  /** Skips up to `seq` (a join point) and returns what waited behind it. */
  advance(id, seq) {
    const c = this.conv(id);
    if (seq <= c.cursor) return [];
    c.cursor = seq;
    for (const s of [...c.buffer.keys()]) if (s <= seq) c.buffer.delete(s);
    const ready = [];
    this.release(c, ready);
    return ready;
  }

  cursor(id) {
    const c = this.convs.get(id);
    return c ? c.cursor : 0;
  }

  /** Every known cursor, for a `sync`. */
  cursors() {
    const out = {};
    for (const [id, c] of this.convs) out[id] = c.cursor;
    return out;
  }

  hasGaps() {
    for (const c of this.convs.values()) if (c.buffer.size) return true;
    return false;
  }
}
