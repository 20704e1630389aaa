// The chat pane: header (back, title, presence, mute, members), the message
// list (incremental rendering, day separators, a "New messages" divider,
// infinite scroll both ways, jump-to-message highlight), typing indicator
// and composer (read-only once I was removed from a group).

import { h, iconButton, setIcon, setLabel, avatar, formatDay, formatTime, systemText } from './dom.js';
import * as store from '../store.js';
import { renderMessage, renderNotice } from './message.js';
import { createComposer } from './composer.js';
import { membersDialog, safetyNumbersDialog } from './dialogs.js';
import { icon } from './icons.js';
import { MAX_CALL_MEMBERS } from './call.js';

const HIDDEN_EVENTS = new Set(['message_edited', 'message_deleted', 'reaction_changed']);
const RUN_GAP = 5 * 60 * 1000;

export function createChat({ onCall = () => {} } = {}) {
  const composer = createComposer();
  const title = h('h2.chat-title', { testid: 'conversation-title' });
  const subtitle = h('p.chat-subtitle.muted');
  const muteBtn = iconButton('Mute notifications', 'bell', () => {
    const conv = store.state.conversations.get(store.state.activeId);
    if (conv) store.setMuted(conv.id, !conv.muted);
  }, { testid: 'mute-toggle', 'aria-pressed': 'false' });
  const membersBtn = iconButton('Members', 'users', () => membersDialog(store.state.activeId), { testid: 'members' });
  const callStart = (media) => () => {
    const conv = store.state.conversations.get(store.state.activeId);
    if (conv) onCall(conv, media);
  };
  const voiceBtn = iconButton('Voice call', 'phone', callStart('audio'), { testid: 'call-voice' });
  const videoBtn = iconButton('Video call', 'video', callStart('video'), { testid: 'call-video' });
  const headAvatar = h('span.head-avatar');
  const lock = h('span.e2ee-badge', { testid: 'encrypted-badge', role: 'img', 'aria-label': 'End-to-end encrypted', title: 'End-to-end encrypted', hidden: true }, icon('lock'));
  const safetyBtn = iconButton('Safety numbers', 'shield', () => safetyNumbersDialog(store.state.activeId), { testid: 'safety-numbers' });
  const e2eeBanner = h('div.e2ee-status', { testid: 'e2ee-status', role: 'status', hidden: true });
  const header = h('header.chat-head', {},
    iconButton('Back to conversations', 'back', () => {
      if (history.state && history.state.chat != null) history.back();
      else store.setActive(null);
    }, { testid: 'back', class: 'back' }),
    headAvatar, h('div.chat-heading', {}, h('div.title-row', {}, title, lock), subtitle), safetyBtn, voiceBtn, videoBtn, muteBtn, membersBtn);
  const list = h('div.message-list', { testid: 'message-list', role: 'log', 'aria-label': 'Messages', 'aria-live': 'polite', tabindex: '0' });
  const status = h('div.list-status.muted');
  const typing = h('div.typing', { testid: 'typing-indicator', 'aria-live': 'polite', hidden: true });
  const jumpLatest = h('button.jump-latest', { type: 'button', hidden: true, text: 'Jump to latest ↓', on: { click: () => { store.loadLatestFresh(store.state.activeId); } } });
  const empty = h('div.empty-chat', {}, h('img', { src: '/app/icon.svg', alt: '', width: '64', height: '64' }),
    h('h2', { text: 'Welcome to Confab' }), h('p.muted', { text: 'Pick a conversation, or start a new chat.' }));
  const pane = h('main.chat', { 'aria-label': 'Chat' }, empty);
  const newBelow = h('button.jump-latest', {
    type: 'button', hidden: true, text: 'New messages ↓',
    on: { click: () => { list.scrollTop = list.scrollHeight; newBelow.hidden = true; } },
  });
  const active = h('div.chat-active', {}, header, e2eeBanner, status, list, jumpLatest, newBelow, typing, composer.el);

  const cache = new Map(); // key -> {sig, el}
  const ids = new WeakMap();
  let nextId = 1;
  const objId = (o) => { if (!ids.has(o)) ids.set(o, nextId++); return ids.get(o); };
  let renderedConv = null;
  let scrolledToDivider = false;

  const actions = {
    reply: (m) => composer.reply(m),
    edit: (m) => composer.edit(m),
    jump: (seq) => jumpTo(seq),
  };

  function jumpTo(seq) {
    const el = list.querySelector(`[data-seq="${seq}"]`);
    if (el) flash(el);
    else store.openAround(store.state.activeId, seq);
  }

  function flash(el) {
    el.scrollIntoView({ block: 'center' });
    el.classList.add('highlight');
    setTimeout(() => el.classList.remove('highlight'), 2500);
  }

  function renderHeader(conv) {
    title.textContent = store.conversationTitle(conv);
    headAvatar.replaceChildren(avatar(title.textContent, conv.id));
    const other = store.otherMember(conv);
    if (conv.kind === 'direct') {
      const st = other != null ? store.state.presence.get(other) : null;
      const seen = other != null ? store.state.lastSeen.get(other) : null;
      subtitle.textContent = st === 'online' ? 'online'
        : st === 'offline' ? (seen ? `last seen ${formatTime(seen)}` : 'offline') : 'direct chat';
    } else {
      subtitle.textContent = conv.removed ? 'You are no longer a member' : `${conv.member_count} members`;
    }
    membersBtn.hidden = conv.kind !== 'group' || !!conv.removed;
    lock.hidden = !conv.encrypted;
    safetyBtn.hidden = !conv.encrypted;
    if (conv.encrypted) {
      const st = store.encryptionStatus(conv.id);
      e2eeBanner.hidden = st.state === 'ready';
      e2eeBanner.dataset.state = st.state;
      e2eeBanner.textContent = st.text;
    } else {
      e2eeBanner.hidden = true;
    }
    const callable = !conv.removed && (conv.kind === 'direct' ? store.otherMember(conv) != null : (conv.member_count || 0) <= MAX_CALL_MEMBERS);
    voiceBtn.hidden = !callable;
    videoBtn.hidden = !callable;
    muteBtn.hidden = !!conv.removed;
    muteBtn.setAttribute('aria-pressed', String(!!conv.muted));
    setLabel(muteBtn, conv.muted ? 'Unmute notifications' : 'Mute notifications');
    setIcon(muteBtn, conv.muted ? 'bellOff' : 'bell');
  }

  function items(conv) {
    const t = store.threadOf(conv.id);
    const out = [];
    let lastDay = null;
    let prev = null; // the message just above, while nothing else is between
    const addDay = (ts) => {
      const day = formatDay(ts || Date.now());
      if (day !== lastDay) {
        lastDay = day;
        prev = null;
        out.push({ key: `d:${day}`, sig: day, build: () => h('div.day', { role: 'separator' }, h('span', { text: day })) });
      }
    };
    const seqs = [...t.bySeq.keys()].sort((a, b) => a - b);
    // "New messages" above the first message from someone else that was
    // unread when the chat was opened.
    const from = store.state.unreadFrom;
    const firstUnread = from == null ? null : seqs.find((seq) => {
      const m = t.bySeq.get(seq);
      return seq > from && m.kind !== 'system' && m.sender_id !== store.state.me.id;
    });
    for (const seq of seqs) {
      // Encrypted conversations: what this device decrypted (or why not); MLS handshakes are not shown.
      const m = conv.encrypted ? store.decrypted(conv.id, t.bySeq.get(seq)) : t.bySeq.get(seq);
      if (!m) continue;
      if (seq === firstUnread) {
        addDay(m.ts);
        prev = null;
        out.push({ key: 'unread', sig: '', build: () => h('div.unread-divider', { testid: 'new-messages-divider', role: 'separator' }, h('span', { text: 'New messages' })) });
      }
      if (m.kind === 'system') {
        if (HIDDEN_EVENTS.has(m.body && m.body.event)) continue;
        addDay(m.ts);
        prev = null;
        // Names in notices may arrive later than the notice: they are part of its signature.
        out.push({ key: `s:${seq}`, sig: systemText(m, store.displayName), build: () => renderNotice(m) });
        continue;
      }
      addDay(m.ts);
      const mine = m.sender_id === store.state.me.id;
      const status = mine ? store.receiptStatus(conv, m) : '';
      const replyTarget = m.body && m.body.reply_to ? t.bySeq.get(m.body.reply_to) : null;
      const knownMentions = ((m.body && m.body.mentions) || []).filter((id) => store.state.users.has(id)).length;
      // A run of messages from one sender within minutes shows the name once.
      const follows = !!prev && prev.sender_id === m.sender_id && (m.ts || 0) - (prev.ts || 0) < RUN_GAP;
      prev = m;
      const sig = [objId(m), status, store.displayName(m.sender_id), replyTarget ? objId(replyTarget) : 0, conv.kind, knownMentions, follows].join('|');
      out.push({ key: `s:${seq}`, sig, build: () => renderMessage(m, { conv, status, actions, follows }) });
    }
    if (!t.hasMoreAfter) {
      for (const p of store.pendingFor(conv.id)) {
        const m = { ...p.entry, sender_id: store.state.me.id, ts: p.entry.created, seq: null };
        if (p.seq && t.bySeq.has(p.seq)) continue;
        addDay(m.ts);
        const sig = `${p.status}|${p.error || ''}`;
        out.push({
          key: `p:${p.entry.client_msg_id}`, sig,
          build: () => renderMessage(m, { conv, status: p.status, pendingId: p.entry.client_msg_id, error: p.error, actions }),
        });
      }
    }
    return out;
  }

  function renderList(conv) {
    const t = store.threadOf(conv.id);
    const switched = renderedConv !== conv.id;
    if (switched) {
      cache.clear();
      list.replaceChildren();
      renderedConv = conv.id;
      scrolledToDivider = false;
    }
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    // Keep the first visible element where it is when content is added above.
    let anchor = null;
    let anchorTop = 0;
    for (const el of list.children) {
      if (el.classList.contains('day')) continue; // separators stay first when older messages arrive
      if (el.offsetTop + el.offsetHeight > list.scrollTop) { anchor = el; anchorTop = el.offsetTop - list.scrollTop; break; }
    }
    const want = items(conv);
    const keep = new Set(want.map((i) => i.key));
    for (const [key, entry] of cache) {
      if (!keep.has(key)) { entry.el.remove(); cache.delete(key); }
    }
    let prev = null;
    let addedMine = false;
    const lastBefore = list.lastElementChild;
    for (const item of want) {
      let entry = cache.get(item.key);
      if (!entry || entry.sig !== item.sig) {
        const el = item.build();
        if (entry) entry.el.replaceWith(el);
        else if (item.key.startsWith('p:')) addedMine = true;
        entry = { sig: item.sig, el };
        cache.set(item.key, entry);
      }
      const expected = prev ? prev.nextSibling : list.firstChild;
      if (entry.el !== expected) list.insertBefore(entry.el, expected);
      prev = entry.el;
    }
    const divider = cache.get('unread');
    if (divider && (switched || !scrolledToDivider)) {
      // Opened with unread messages: start at the divider, not at the end.
      scrolledToDivider = !t.loading;
      list.scrollTop = Math.max(0, divider.el.offsetTop - 48);
      newBelow.hidden = true;
    } else if (switched || ((atBottom || addedMine) && !t.hasMoreAfter)) {
      list.scrollTop = list.scrollHeight;
      newBelow.hidden = true;
    } else {
      if (anchor && anchor.isConnected) list.scrollTop = anchor.offsetTop - anchorTop;
      // Something arrived below while I read further up.
      if (list.lastElementChild !== lastBefore && !t.hasMoreAfter) newBelow.hidden = false;
    }
    status.textContent = t.loading ? 'Loading messages…' : t.error ? `Could not load messages: ${t.error}` : '';
    status.hidden = !status.textContent;
    jumpLatest.hidden = !t.hasMoreAfter;
    if (!t.bySeq.size && !t.loading && !store.pendingFor(conv.id).length) {
      status.textContent = 'No messages yet. Say hello!';
      status.hidden = false;
    }
    if (store.state.highlight != null && !t.loading) {
      const el = list.querySelector(`[data-seq="${store.state.highlight}"]`);
      if (el) { store.state.highlight = null; flash(el); }
    }
    // Fill the view: load more if there is no scrollbar yet.
    if (!t.loading && t.loaded && t.hasMoreBefore && list.scrollHeight <= list.clientHeight) store.loadOlder(conv.id);
  }

  function renderTyping(conv) {
    const names = store.typingUsers(conv.id).map((id) => store.displayName(id));
    typing.hidden = !names.length;
    typing.textContent = !names.length ? '' : names.length === 1 ? `${names[0]} is typing…`
      : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : 'Several people are typing…';
  }

  // Keyboard: the list is one Tab stop; arrows move between messages, and a
  // focused message's action buttons join the Tab order.
  const setActionsTabbable = (msg, on) => {
    msg.querySelectorAll('.actions button').forEach((btn) => { btn.tabIndex = on ? 0 : -1; });
  };
  list.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowUp' && e.key !== 'ArrowDown') return;
    const msgs = [...list.querySelectorAll('.msg')];
    if (!msgs.length) return;
    const current = document.activeElement && document.activeElement.closest('.msg');
    let i = current ? msgs.indexOf(current) : msgs.length;
    i = e.key === 'ArrowUp' ? Math.max(0, i - 1) : Math.min(msgs.length - 1, i + 1);
    e.preventDefault();
    msgs[i].focus();
  });
  list.addEventListener('focusin', (e) => {
    const msg = e.target.closest('.msg');
    if (msg) setActionsTabbable(msg, true);
  });
  list.addEventListener('focusout', (e) => {
    const msg = e.target.closest('.msg');
    if (msg && !msg.contains(e.relatedTarget)) setActionsTabbable(msg, false);
  });

  list.addEventListener('scroll', () => {
    const id = store.state.activeId;
    if (id == null) return;
    if (list.scrollTop < 120) store.loadOlder(id);
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 120) {
      newBelow.hidden = true;
      store.loadNewer(id);
    }
  });
  pane.addEventListener('dragover', (e) => {
    if (store.state.activeId == null || !e.dataTransfer.types.includes('Files')) return;
    e.preventDefault();
    pane.classList.add('dropping');
  });
  pane.addEventListener('dragleave', (e) => { if (e.target === pane || !pane.contains(e.relatedTarget)) pane.classList.remove('dropping'); });
  pane.addEventListener('drop', (e) => {
    pane.classList.remove('dropping');
    if (store.state.activeId == null || !e.dataTransfer.files.length) return;
    e.preventDefault();
    composer.sendFiles(e.dataTransfer.files);
  });

  /** Renders everything, or with topic 'typing' only the typing line. */
  function render(topic) {
    const conv = store.state.conversations.get(store.state.activeId);
    if (!conv) {
      if (pane.firstChild !== empty) pane.replaceChildren(empty);
      composer.setConversation(null);
      renderedConv = null;
      return;
    }
    if (pane.firstChild !== active) pane.replaceChildren(active);
    if (topic === 'typing' && renderedConv === conv.id) { renderTyping(conv); return; }
    const switching = renderedConv !== conv.id;
    composer.setConversation(conv.id);
    composer.setReadOnly(conv.removed
      ? `You can't send messages here: ${store.displayName(conv.removed.by)} removed you from this group.` : null);
    renderHeader(conv);
    renderList(conv);
    renderTyping(conv);
    if (switching && matchMedia('(pointer: fine)').matches) composer.input.focus();
  }

  return {
    el: pane,
    render,
    cancelMode: () => composer.cancelMode(),
  };
}
