// The outbox: messages sent but not yet acked, in send order, persisted in
// localStorage per user so a reload or a lost connection never loses one.
// Entries: {client_msg_id, conversation_id, kind, body, created, failed?}.

export class Outbox {
  constructor(userId) {
    this.key = `confab.outbox.${userId}`;
    try {
      this.entries = JSON.parse(localStorage.getItem(this.key) || '[]');
    } catch {
      this.entries = [];
    }
  }

  save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.entries));
    } catch (e) {
      console.warn('could not persist the outbox', e);
    }
  }

  add(entry) {
    if (this.get(entry.client_msg_id)) return;
    this.entries.push(entry);
    this.save();
  }

  get(id) {
    return this.entries.find((e) => e.client_msg_id === id);
  }

  /** Removes and returns an entry (on ack or discard). */
  take(id) {
    const i = this.entries.findIndex((e) => e.client_msg_id === id);
    if (i < 0) return null;
    const [entry] = this.entries.splice(i, 1);
    this.save();
    return entry;
  }

  /** Marks an entry refused for good (kept so the text is not lost). */
  fail(id, message) {
    const e = this.get(id);
    if (e) {
      e.failed = message;
      this.save();
    }
  }

  /** Clears a failure so the entry is sent again. */
  retry(id) {
    const e = this.get(id);
    if (e) {
      delete e.failed;
      this.save();
    }
    return e;
  }

  /** Entries to (re)send, in order. */
  pending() {
    return this.entries.filter((e) => !e.failed);
  }
}
