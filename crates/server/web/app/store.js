// Application state and the logic around it: conversations, messages
// (per conversation, by seq), the outbox's pending messages, users,
// presence, friends, typing, receipts. UI modules read `state` and
// subscribe to change topics; every server interaction lives here.

import { api, getSession, upload as uploadWhole } from './api.js';
import * as e2ee from './e2ee/engine.js';
import { uploadResumable } from './tus.js';
import { Connection } from './connection.js';
import { Outbox } from './outbox.js';
import { hasMention } from './mentiontext.js';
import { messagePreview } from './text.js';

export const state = {
  me: null,
  conversations: new Map(),
  threads: new Map(), // convId -> {bySeq: Map, loaded, hasMoreBefore, hasMoreAfter, loading}
  pending: new Map(), // client_msg_id -> {entry, status: 'sending'|'sent'|'failed', error?}
  users: new Map(),
  presence: new Map(),
  lastSeen: new Map(),
  friends: [],
  incoming: [],
  outgoing: [],
  typing: new Map(), // convId -> Map userId -> timer
  // The server's settings, from `hello`: groups up to receiptsMaxGroup members get live read receipts; a typing start lasts typingTimeoutMs.
  settings: { receiptsMaxGroup: 100, typingTimeoutMs: 6000 },
  activeId: null,
  unreadFrom: null, // read cursor of the open chat when it was opened with unread messages
  highlight: null, // seq to scroll to and flash once shown
  connection: { state: 'connecting' },
  notify: localStorage.getItem('confab.notify') === 'on',
};

const HIDDEN_EVENTS = new Set(['message_edited', 'message_deleted', 'reaction_changed']);
const listeners = new Set();
let conn = null;
let outbox = null;
const userFetches = new Set(); // ids asked for (fetched or on their way)
const userQueue = new Set(); // ids waiting for the next batched fetch
let userFlush = null;

/**
 * Subscribes to change topics: 'conversations', 'thread', 'friends',
 * 'connection', 'typing', 'members' (a group's membership changed),
 * 'notice' (a message for the user: {message, kind}).
 */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(topic, id) {
  for (const fn of listeners) fn(topic, id);
}

/**
 * Something to tell the user: the UI shows it (topic 'notice', with
 * {message, kind}); the state module never touches the DOM itself.
 */
function toast(message, kind = 'error') {
  emit('notice', { message, kind });
}

// ---- users ----------------------------------------------------------------

export function rememberUser(u) {
  if (u && u.id != null) state.users.set(u.id, u);
}

/**
 * The user if known; otherwise fetched in the background (emits 'users').
 * Unknown ids asked for in one turn of the event loop are fetched together,
 * a hundred per request (`GET /v1/users?ids=`), then redrawn once.
 */
export function user(id) {
  const u = state.users.get(id);
  if (u) return u;
  if (!userFetches.has(id)) {
    userFetches.add(id);
    userQueue.add(id);
    if (!userFlush) userFlush = setTimeout(fetchQueuedUsers, 0);
  }
  return null;
}

async function fetchQueuedUsers() {
  userFlush = null;
  const ids = [...userQueue];
  userQueue.clear();
  for (let i = 0; i < ids.length; i += 100) {
    const chunk = ids.slice(i, i + 100);
    try {
      const { users } = await api('GET', `/v1/users?ids=${chunk.join(',')}`);
      users.forEach(rememberUser);
    } catch {
      for (const id of chunk) userFetches.delete(id); // asked again on the next draw
    }
  }
  emit('users');
  emit('conversations');
  emit('thread', null);
}

/** My profile changed (saved in the profile dialog). */
export function updateMe(user) {
  state.me = user;
  rememberUser(user);
  emit('users');
}

export function displayName(id) {
  if (id == null) return 'Someone';
  if (state.me && id === state.me.id) return 'You';
  const u = user(id);
  return u ? (u.display_name || u.username) : `User ${id}`;
}

// ---- conversations ----------------------------------------------------------

export function otherMember(conv) {
  if (conv.kind !== 'direct') return null;
  const m = (conv.members || []).find((x) => x.user_id !== state.me.id);
  return m ? m.user_id : null;
}

export function conversationTitle(conv) {
  if (conv.kind === 'group') return conv.title || 'Untitled group';
  const other = otherMember(conv);
  return other == null ? 'Just you' : displayName(other);
}

function lastActivity(conv) {
  return (conv.last_message && conv.last_message.ts) || conv.created_at || 0;
}

export function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) => lastActivity(b) - lastActivity(a));
}

function putConversation(conv) {
  const old = state.conversations.get(conv.id);
  conv.memberRead = new Map((conv.members || []).map((m) => [m.user_id, m.read_seq || 0]));
  conv.peerDelivered = old ? old.peerDelivered : 0;
  if (old && old.memberRead) {
    for (const [id, seq] of old.memberRead) conv.memberRead.set(id, Math.max(seq, conv.memberRead.get(id) || 0));
  }
  if (old && old.last_message && (!conv.last_message || old.last_message.seq > conv.last_message.seq)) {
    conv.last_message = old.last_message;
  }
  state.conversations.set(conv.id, conv);
  // A conversation first seen now: what it holds so far comes from history
  // pages, so a later sync need not send it again.
  if (conn && !conn.ordering.convs.has(conv.id)) conn.ordering.advance(conv.id, conv.last_seq || 0);
  for (const m of conv.members || []) user(m.user_id);
}

export async function refreshConversation(id) {
  try {
    putConversation(await api('GET', `/v1/conversations/${id}`));
    if (state.activeId === id) markRead(id);
  } catch (e) {
    if (e.status === 403 || e.status === 404) {
      state.conversations.delete(id);
      if (state.activeId === id) state.activeId = null;
    } else {
      toast(e.message);
    }
  }
  emit('conversations');
  emit('thread', id);
}

function thread(id) {
  let t = state.threads.get(id);
  if (!t) {
    t = { bySeq: new Map(), loaded: false, hasMoreBefore: true, hasMoreAfter: false, loading: false };
    state.threads.set(id, t);
  }
  return t;
}

export function threadOf(id) {
  return thread(id);
}

// ---- start and stop -----------------------------------------------------------

export async function start(me) {
  state.me = me;
  rememberUser(me);
  const [{ conversations }] = await Promise.all([
    api('GET', '/v1/conversations'),
    loadFriends().catch((e) => toast(e.message)),
    api('GET', '/v1/users/me').then(updateMe).catch(() => {}), // profile changed elsewhere
  ]);
  const cursors = {};
  for (const c of conversations) {
    putConversation(c);
    cursors[c.id] = c.last_seq || 0;
  }
  const session = getSession();
  await e2ee.start(me.id, session && session.device_id, (id) => { emit('thread', id); emit('conversations'); }, (text) => toast(text)).catch((e) => console.warn('E2EE unavailable', e));
  for (const c of conversations) if (c.encrypted) e2ee.pump(c.id);
  outbox = new Outbox(me.id);
  for (const e of outbox.entries) {
    state.pending.set(e.client_msg_id, { entry: e, status: e.failed ? 'failed' : 'sending', error: e.failed });
  }
  conn = new Connection({
    cursors,
    outbox,
    on: {
      state: (s, info) => {
        state.connection = { state: s, ...info };
        // Presence is only known while connected; a new connection gets it again after hello.
        if (s !== 'online') state.presence.clear();
        emit('connection');
      },
      messages: onMessages,
      update: onUpdate,
      frame: onFrame,
      acked: (entry, ack) => {
        const p = state.pending.get(entry.client_msg_id);
        if (p) { p.status = 'sent'; p.seq = ack.seq; }
        emit('thread', entry.conversation_id);
      },
      refused: (entry, err) => {
        const p = state.pending.get(entry.client_msg_id);
        if (p) { p.status = 'failed'; p.error = err.message; }
        toast(`Message not sent: ${err.message}`);
        emit('thread', entry.conversation_id);
      },
    },
  });
  document.addEventListener('visibilitychange', onVisible);
  const saved = Number(sessionStorage.getItem('confab.active'));
  if (saved && state.conversations.has(saved)) setActive(saved);
  emit('conversations');
}

function onVisible() {
  if (state.activeId != null) markRead(state.activeId);
}

export function stop() {
  document.removeEventListener('visibilitychange', onVisible);
  sessionStorage.removeItem('confab.active');
  if (conn) conn.close();
  conn = null;
  e2ee.stop();
  userFetches.clear();
  userQueue.clear();
  clearTimeout(userFlush);
  userFlush = null;
  for (const set of state.typing.values()) for (const t of set.values()) clearTimeout(t);
  Object.assign(state, {
    me: null, activeId: null, friends: [], incoming: [], outgoing: [],
  });
  for (const key of ['conversations', 'threads', 'pending', 'users', 'presence', 'lastSeen', 'typing']) state[key].clear();
}

export function reconnectNow() {
  if (conn) conn.reconnectNow();
}

// ---- incoming -----------------------------------------------------------------

function isShownSystem(m) {
  return m.kind !== 'system' || !HIDDEN_EVENTS.has(m.body && m.body.event);
}

function onMessages(list) {
  const touched = new Set();
  for (const m of list) {
    const conv = state.conversations.get(m.conversation_id);
    if (!conv) {
      refreshConversation(m.conversation_id);
    }
    const t = thread(m.conversation_id);
    t.bySeq.set(m.seq, m);
    touched.add(m.conversation_id);
    if (m.kind === 'encrypted') e2ee.pump(m.conversation_id);
    if (!conv) continue;
    conv.last_seq = Math.max(conv.last_seq || 0, m.seq);
    // MLS commits and proposals are not messages anyone reads.
    const handshake = m.kind === 'encrypted' && m.body && m.body.mls !== 'application';
    if (isShownSystem(m) && !handshake) conv.last_message = m;
    const fromOther = m.sender_id !== state.me.id;
    if (fromOther && m.kind !== 'system' && !handshake) {
      stopTyping(m.conversation_id, m.sender_id);
      if (m.seq > (conv.read_seq || 0)) {
        conv.unread_count = (conv.unread_count || 0) + 1;
        if (mentionsMe(m)) conv.unread_mentions = (conv.unread_mentions || 0) + 1;
        maybeNotify(conv, m);
      }
    }
    if (!fromOther && m.client_msg_id) state.pending.delete(m.client_msg_id);
  }
  for (const id of touched) {
    if (id === state.activeId) markRead(id);
    emit('thread', id);
  }
  emit('conversations');
}

/** Whether a message mentions me (text bodies may carry `mentions`). */
export function mentionsMe(m) {
  return !!(m.body && Array.isArray(m.body.mentions) && state.me && m.body.mentions.includes(state.me.id));
}

function mergeMessage(old, m) {
  const out = { ...old, ...m };
  for (const k of ['edited_at', 'deleted', 'reactions', 'read_by']) if (!(k in m) && k in old) out[k] = old[k];
  return out;
}

function onUpdate(m) {
  const t = state.threads.get(m.conversation_id);
  const old = t && t.bySeq.get(m.seq);
  if (!old) return;
  t.bySeq.set(m.seq, mergeMessage(old, m));
  emit('thread', m.conversation_id);
}

/** A message in its full current state (absent fields are empty). */
function replaceMessage(m) {
  const t = state.threads.get(m.conversation_id);
  if (!t || !t.bySeq.has(m.seq)) return;
  t.bySeq.set(m.seq, m);
  emit('thread', m.conversation_id);
}

function onFrame(f) {
  switch (f.type) {
    case 'receipt': return onReceipt(f);
    case 'typing': return onTyping(f);
    case 'presence':
      state.presence.set(f.user_id, f.status);
      if (f.last_seen) state.lastSeen.set(f.user_id, f.last_seen);
      emit('conversations');
      emit('friends');
      emit('thread', null);
      return;
    case 'event': return onEvent(f);
    case 'call': if (callListener) callListener(f); return;
    case 'settings':
      state.settings = { receiptsMaxGroup: f.receiptsMaxGroup, typingTimeoutMs: f.typingTimeoutMs };
      return;
    case 'error': toast(f.message || f.code); return;
    default:
  }
}

function onReceipt(f) {
  const conv = state.conversations.get(f.conversation_id);
  if (!conv) return;
  if (f.user_id === state.me.id) {
    if (f.kind === 'read' && f.seq > (conv.read_seq || 0)) {
      conv.read_seq = f.seq;
      if (f.seq >= (conv.last_seq || 0)) conv.unread_count = conv.unread_mentions = 0;
      emit('conversations');
    }
    return;
  }
  if (f.kind === 'read') conv.memberRead.set(f.user_id, Math.max(f.seq, conv.memberRead.get(f.user_id) || 0));
  else conv.peerDelivered = Math.max(conv.peerDelivered || 0, f.seq);
  emit('thread', f.conversation_id);
}

function onTyping(f) {
  if (f.user_id === state.me.id) return;
  if (f.state === 'start') {
    let set = state.typing.get(f.conversation_id);
    if (!set) state.typing.set(f.conversation_id, (set = new Map()));
    clearTimeout(set.get(f.user_id));
    // The server sends `stop` after its timeout; this is the fallback
    // should that frame be lost with a connection.
    const fallback = state.settings.typingTimeoutMs + 2000;
    set.set(f.user_id, setTimeout(() => stopTyping(f.conversation_id, f.user_id), fallback));
    emit('typing', f.conversation_id);
  } else {
    stopTyping(f.conversation_id, f.user_id);
  }
}

function stopTyping(convId, userId) {
  const set = state.typing.get(convId);
  if (!set || !set.has(userId)) return;
  clearTimeout(set.get(userId));
  set.delete(userId);
  emit('typing', convId);
}

export function typingUsers(convId) {
  const set = state.typing.get(convId);
  return set ? [...set.keys()] : [];
}

function onEvent(f) {
  // Edits, deletions and reactions carry the target in its current state.
  if (f.message && f.message.seq && HIDDEN_EVENTS.has(f.event)) {
    replaceMessage({ conversation_id: f.conversation_id, ...f.message });
    return;
  }
  const t = f.conversation_id && state.threads.get(f.conversation_id);
  const target = t && f.target_seq != null ? t.bySeq.get(f.target_seq) : null;
  switch (f.event) {
    case 'friend_request':
    case 'friend_accepted':
    case 'friend_removed':
      if (f.event === 'friend_accepted' && f.friend) {
        rememberUser(f.friend.user);
        state.presence.set(f.friend.user.id, f.friend.status);
      }
      loadFriends().catch((e) => toast(e.message));
      if (f.event === 'friend_request' && f.request && f.request.to_user.id === state.me.id) {
        toast(`${f.request.from_user.display_name || f.request.from_user.username} sent you a friend request`, 'info');
      }
      return;
    case 'conversation_added':
    case 'conversation_updated':
      refreshConversation(f.conversation_id);
      return;
    case 'member_joined':
    case 'role_changed':
      refreshConversation(f.conversation_id).then(() => emit('members', f.conversation_id));
      return;
    case 'member_left':
      if (f.user_id !== state.me.id) {
        refreshConversation(f.conversation_id).then(() => emit('members', f.conversation_id));
      } else if (f.reason === 'removed') {
        removedFrom(f);
      } else {
        state.conversations.delete(f.conversation_id);
        if (state.activeId === f.conversation_id) setActive(null);
        emit('conversations');
      }
      return;
    case 'message_deleted':
      if (target) t.bySeq.set(f.target_seq, { ...target, deleted: true, body: {}, reactions: {} });
      break;
    case 'message_edited':
      if (target) t.bySeq.set(f.target_seq, { ...target, edited_at: f.edited_at });
      break;
    case 'reaction_changed':
      if (target) {
        const reactions = {};
        for (const [emoji, ids] of Object.entries(target.reactions || {})) {
          const rest = ids.filter((id) => id !== f.user_id);
          if (rest.length) reactions[emoji] = rest;
        }
        if (f.emoji) reactions[f.emoji] = [...(reactions[f.emoji] || []), f.user_id].sort((a, b) => a - b);
        t.bySeq.set(f.target_seq, { ...target, reactions });
      }
      break;
    default:
      return;
  }
  emit('thread', f.conversation_id);
}

/**
 * Someone removed me from a group: it stays listed, read-only, for the rest
 * of the session (the server answers `forbidden` from now on), with the
 * notice in its history even if that message never reaches me.
 */
function removedFrom(f) {
  const conv = state.conversations.get(f.conversation_id);
  if (!conv) return;
  conv.removed = { by: f.by_user_id };
  conv.unread_count = conv.unread_mentions = 0;
  const notice = {
    conversation_id: f.conversation_id, seq: f.seq, sender_id: f.by_user_id, kind: 'system', ts: Date.now(),
    body: { event: 'member_left', user_id: f.user_id, by_user_id: f.by_user_id, reason: f.reason },
  };
  const t = thread(f.conversation_id);
  if (f.seq != null && !t.bySeq.has(f.seq)) t.bySeq.set(f.seq, notice);
  if (!conv.last_message || conv.last_message.seq < f.seq) conv.last_message = notice;
  emit('conversations');
  emit('thread', f.conversation_id);
  emit('members', f.conversation_id);
}

function maybeNotify(conv, m) {
  // A mention gets through even when the chat is muted.
  if (!state.notify || (conv.muted && !mentionsMe(m)) || !document.hidden) return;
  if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
  const n = new Notification(conversationTitle(conv), {
    body: `${conv.kind === 'group' ? displayName(m.sender_id) + ': ' : ''}${messagePreview(m)}`,
    tag: `conv-${conv.id}`,
    icon: '/app/icon.svg',
  });
  n.onclick = () => { window.focus(); setActive(conv.id); n.close(); };
}

export async function setNotify(on) {
  if (on && typeof Notification === 'undefined') {
    toast('This browser does not support notifications.');
    return;
  }
  if (on && Notification.permission !== 'granted') {
    const p = await Notification.requestPermission();
    if (p !== 'granted') {
      toast('Notifications are blocked for this site. Allow them in the browser settings.');
      on = false;
    }
  }
  state.notify = on;
  localStorage.setItem('confab.notify', on ? 'on' : 'off');
  emit('connection');
}

// ---- friends ---------------------------------------------------------------------

export async function loadFriends() {
  const [f, inc, out] = await Promise.all([
    api('GET', '/v1/friends'),
    api('GET', '/v1/friends/requests?direction=incoming'),
    api('GET', '/v1/friends/requests?direction=outgoing'),
  ]);
  state.friends = f.friends;
  state.incoming = inc.requests;
  state.outgoing = out.requests;
  for (const fr of f.friends) {
    rememberUser(fr.user);
    if (!state.presence.has(fr.user.id)) state.presence.set(fr.user.id, fr.status);
    if (fr.last_seen && !state.lastSeen.has(fr.user.id)) state.lastSeen.set(fr.user.id, fr.last_seen);
  }
  for (const r of [...inc.requests, ...out.requests]) { rememberUser(r.from_user); rememberUser(r.to_user); }
  emit('friends');
  emit('conversations');
}

// ---- opening, paging, reading ---------------------------------------------------------

export function setActive(id) {
  const conv = id == null ? null : state.conversations.get(id);
  // Remembered before reading: the chat shows "New messages" above the first unread.
  state.unreadFrom = conv && conv.unread_count ? conv.read_seq || 0 : null;
  state.activeId = id;
  sessionStorage.setItem('confab.active', id == null ? '' : String(id));
  emit('active');
  if (id != null) {
    const t = thread(id);
    if (!t.loaded) loadLatest(id);
    markRead(id);
    if (conv && conv.encrypted) e2ee.opened(id);
  }
}

function mergePage(id, messages) {
  const t = thread(id);
  for (const m of messages) {
    const old = t.bySeq.get(m.seq);
    t.bySeq.set(m.seq, old ? mergeMessage(old, m) : m);
    if (m.sender_id === state.me.id && m.client_msg_id) state.pending.delete(m.client_msg_id);
  }
  return t;
}

async function loadPage(id, query, apply) {
  const t = thread(id);
  if (t.loading) return;
  const conv = state.conversations.get(id);
  if (conv && conv.removed) {
    // A former member may read nothing more: keep what is here.
    Object.assign(t, { loaded: true, hasMoreBefore: false, hasMoreAfter: false });
    emit('thread', id);
    return;
  }
  t.loading = true;
  emit('thread', id);
  try {
    const page = await api('GET', `/v1/conversations/${id}/messages?${query}`);
    apply(t, page);
    mergePage(id, page.messages);
    t.loaded = true;
    t.error = null;
  } catch (e) {
    t.error = e.message;
    toast(`Could not load messages: ${e.message}`);
  } finally {
    t.loading = false;
    emit('thread', id);
  }
}

export function loadLatest(id) {
  return loadPage(id, 'limit=50', (t, page) => {
    t.hasMoreBefore = page.has_more;
    t.hasMoreAfter = false;
  });
}

export function loadOlder(id) {
  const t = thread(id);
  if (!t.hasMoreBefore || t.loading) return null;
  const oldest = Math.min(...t.bySeq.keys());
  if (!Number.isFinite(oldest)) return loadLatest(id);
  return loadPage(id, `before_seq=${oldest}&limit=50`, (tt, page) => { tt.hasMoreBefore = page.has_more; });
}

export function loadNewer(id) {
  const t = thread(id);
  if (!t.hasMoreAfter || t.loading || !t.bySeq.size) return null;
  // Page on from the end of the contiguous run (live messages may sit past a gap).
  let newest = Math.min(...t.bySeq.keys());
  while (t.bySeq.has(newest + 1)) newest += 1;
  return loadPage(id, `after_seq=${newest}&limit=50`, (tt, page) => { tt.hasMoreAfter = page.has_more; });
}

/** Drops a thread's loaded window and loads the newest page again. */
export function loadLatestFresh(id) {
  const t = thread(id);
  t.bySeq.clear();
  t.loaded = false;
  return loadLatest(id);
}

/** Opens a conversation centred on a seq (search hit). */
export async function openAround(id, seq) {
  state.activeId = id;
  state.unreadFrom = null;
  state.highlight = seq;
  const t = thread(id);
  t.bySeq.clear();
  t.loaded = false;
  emit('active');
  await loadPage(id, `around_seq=${seq}&limit=50`, (tt, page) => {
    tt.hasMoreBefore = page.has_more_before;
    tt.hasMoreAfter = page.has_more;
  });
  markRead(id);
}

export function markRead(id) {
  const conv = state.conversations.get(id);
  if (!conv || conv.removed || document.visibilityState !== 'visible' || state.activeId !== id) return;
  const last = conv.last_seq || 0;
  if (last > (conv.read_seq || 0) || conv.unread_count || conv.unread_mentions) {
    conv.read_seq = Math.max(conv.read_seq || 0, last);
    conv.unread_count = 0;
    conv.unread_mentions = 0;
    if (conn && last > 0) conn.read(id, last);
    emit('conversations');
  }
}

/** Status of my own stored message: 'sent' | 'delivered' | 'read'. */
export function receiptStatus(conv, m) {
  const others = (conv.members || []).filter((x) => x.user_id !== state.me.id).map((x) => x.user_id);
  if (!others.length) return 'sent';
  // Groups: read_by (history pages) counts the other members who read it.
  if (conv.kind === 'group' && m.read_by != null && m.read_by >= conv.member_count - 1) return 'read';
  if (conv.kind === 'group' && conv.member_count > state.settings.receiptsMaxGroup) return 'sent';
  const minRead = Math.min(...others.map((u) => conv.memberRead.get(u) || 0));
  if (minRead >= m.seq) return 'read';
  if (conv.kind === 'direct' && Math.max(conv.peerDelivered || 0) >= m.seq) return 'delivered';
  return 'sent';
}

// ---- sending ---------------------------------------------------------------------------

/** A UUID v4 (crypto.randomUUID needs a secure context; this does not). */
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export function send(convId, kind, body) {
  const entry = { client_msg_id: uuid(), conversation_id: convId, kind, body, created: Date.now() };
  state.pending.set(entry.client_msg_id, { entry, status: 'sending' });
  if (isEncrypted(convId)) sendEncrypted(entry);
  else conn.send(entry);
  emit('thread', convId);
}

export function isEncrypted(convId) {
  const conv = state.conversations.get(convId);
  return !!(conv && conv.encrypted);
}

/**
 * An encrypted conversation's message goes out over HTTP (not the
 * outbox): it is encrypted for the group's current epoch, and built again
 * after catching up when the server answers `epoch_conflict`.
 */
function sendEncrypted(entry, send = () => e2ee.sendPayload(entry.conversation_id, entry.kind, entry.body, entry.client_msg_id)) {
  const p = state.pending.get(entry.client_msg_id);
  send().then((seq) => {
    if (p) { p.status = 'sent'; p.seq = seq; }
    emit('thread', entry.conversation_id);
  }, (err) => {
    if (p) { p.status = 'failed'; p.error = err.message; p.encrypted = true; }
    toast(`Message not sent: ${err.message}`);
    emit('thread', entry.conversation_id);
  });
}

export function retryPending(id) {
  const p = state.pending.get(id);
  if (!p) return;
  p.status = 'sending';
  delete p.error;
  if (p.encrypted) sendEncrypted(p.entry);
  else conn.retry(id);
  emit('thread', p.entry.conversation_id);
}

/** Creates a conversation (`body` as POST /v1/conversations), encrypted when asked: its MLS group too. */
export async function createConversation(body, encrypted) {
  if (encrypted && !e2ee.ready()) {
    throw new Error('This browser cannot use end-to-end encryption (it lacks WebCrypto Ed25519/X25519).');
  }
  const conv = await api('POST', '/v1/conversations', encrypted ? { ...body, encrypted: true } : body);
  if (conv.encrypted) {
    putConversation(conv);
    try {
      // A new one (epoch 0) gets its MLS group from me; an existing one
      // (an encrypted direct chat started before) is joined by Welcome.
      if (!conv.mls_epoch) await e2ee.createGroup(conv);
      else e2ee.pump(conv.id);
    } catch (e) {
      toast(`The encrypted conversation was made, but adding its members failed: ${e.message}. Open it to try again.`);
    }
  }
  await refreshConversation(conv.id);
  return conv;
}

/** The encryption state of a conversation (for the chat's banner). */
export const encryptionStatus = (convId) => e2ee.conversationStatus(convId);
/** What to show for a message of an encrypted conversation (see e2ee/engine.js `view`). */
export const decrypted = (convId, m) => e2ee.view(convId, m);
export const safetyNumbers = (convId) => e2ee.safetyNumbers(convId);
export const e2eeMediaUrl = (body) => e2ee.mediaUrl(body);
export const searchDecrypted = (q) => e2ee.search(q);
/** Tries to decrypt a message that failed once more; tells the user when it still does not. */
export async function retryDecrypt(convId, seq) {
  const ok = await e2ee.retryDecrypt(convId, seq).catch(() => false);
  if (!ok) toast('Still unreadable on this device. Ask the sender to send it again.', 'info');
}

/** Brings an encrypted group's MLS members in line with the conversation's (after adding someone). */
export function reconcileEncrypted(convId) {
  if (!isEncrypted(convId)) return Promise.resolve();
  return e2ee.reconcile(convId).catch((e) => toast(`Could not update the encryption keys: ${e.message}`));
}

/** Removes a member; in an encrypted group the commit removing their devices goes first. */
export function removeMember(convId, userId) {
  // Leaving: the others' devices commit my devices' removal (MLS lets no one remove itself).
  if (isEncrypted(convId) && userId !== state.me.id) return e2ee.removeMember(convId, userId);
  return api('DELETE', `/v1/conversations/${convId}/members/${userId}`);
}

export function discardPending(id) {
  const p = state.pending.get(id);
  if (!p) return;
  outbox.take(id);
  state.pending.delete(id);
  emit('thread', p.entry.conversation_id);
}

/** The group's other members that I know (for @mentions), by name. */
export function mentionable(convId) {
  const conv = state.conversations.get(convId);
  if (!conv || conv.kind !== 'group' || conv.removed) return [];
  return (conv.members || []).map((m) => state.users.get(m.user_id))
    .filter((u) => u && u.id !== state.me.id)
    .sort((a, b) => (a.display_name || a.username).localeCompare(b.display_name || b.username));
}

/** Ids of the group's members still mentioned as @username in a text. */
export function mentionsIn(convId, text) {
  return mentionable(convId).filter((u) => hasMention(text, u.username)).map((u) => u.id);
}

export function pendingFor(convId) {
  return [...state.pending.values()].filter((p) => p.entry.conversation_id === convId);
}

// ---- calls (ui/call.js keeps the call state; this only carries frames) ----

let callListener = null;

/** Hands every `call` frame to `fn`. */
export function onCall(fn) {
  callListener = fn;
}

/** Sends a `call` frame (dropped while offline: signalling is ephemeral). */
export function sendCall(frame) {
  if (conn) conn.ephemeral(frame);
}

export function sendTyping(convId, typingState) {
  if (conn) conn.ephemeral({ type: 'typing', conversation_id: convId, state: typingState });
}

/** Files above this go up resumably (tus), smaller ones in one request. */
const RESUMABLE_ABOVE = 4 * 1024 * 1024;

/** Uploads a file (progress 0..1 to onProgress) and sends it as image/voice/file. */
export async function sendFile(convId, file, { caption, durationMs, onProgress }) {
  if (isEncrypted(convId)) return sendEncryptedFile(convId, file, { caption, durationMs, onProgress });
  const media = file.size > RESUMABLE_ABOVE
    ? await uploadResumable(file, onProgress)
    : await uploadWhole(file, onProgress);
  if (media.kind === 'image') {
    const body = { media_id: media.media_id, width: media.width, height: media.height };
    if (caption) body.caption = caption;
    send(convId, 'image', body);
  } else if (media.kind === 'voice' && durationMs != null) {
    send(convId, 'voice', { media_id: media.media_id, duration_ms: media.duration_ms || durationMs });
  } else {
    send(convId, 'file', { media_id: media.media_id, name: file.name || 'file', size: media.size, mime: media.mime });
  }
}

/** Wraps a message action: applies the answer, shows errors. */
async function messageAction(convId, seq, method, suffix, body) {
  try {
    const m = await api(method, `/v1/conversations/${convId}/messages/${seq}${suffix}`, body);
    if (m && m.seq) replaceMessage({ conversation_id: convId, ...m });
    return true;
  } catch (e) {
    toast(e.message);
    return false;
  }
}

export function editMessage(convId, seq, text) {
  const body = { text };
  const mentions = mentionsIn(convId, text);
  if (mentions.length) body.mentions = mentions;
  return messageAction(convId, seq, 'PATCH', '', { body });
}
export const deleteMessage = (convId, seq) => messageAction(convId, seq, 'DELETE', '').then((ok) => {
  if (ok) onEvent({ event: 'message_deleted', conversation_id: convId, target_seq: seq });
  return ok;
});
export const react = (convId, seq, emoji, on) =>
  messageAction(convId, seq, on ? 'PUT' : 'DELETE', `/reactions/${encodeURIComponent(emoji)}`);

export async function setMuted(convId, muted) {
  try {
    const conv = await api('PATCH', `/v1/conversations/${convId}`, { muted });
    putConversation(conv);
    emit('conversations');
    emit('active');
  } catch (e) {
    toast(e.message);
  }
}


function imageSize(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => { resolve({ width: img.naturalWidth, height: img.naturalHeight }); URL.revokeObjectURL(url); };
    img.onerror = () => { resolve(null); URL.revokeObjectURL(url); };
    img.src = url;
  });
}

/**
 * An attachment of an encrypted conversation: encrypted here (AES-256-GCM),
 * the ciphertext uploaded, the key inside the MLS message.
 */
async function sendEncryptedFile(convId, file, { caption, durationMs, onProgress }) {
  const size = file.type.startsWith('image/') ? await imageSize(file) : null;
  const kind = size ? 'image' : durationMs != null ? 'voice' : 'file';
  // The composer shows the upload's progress and, on failure, Retry.
  await e2ee.sendFile(convId, file, { caption, durationMs, kind, onProgress, ...(size || {}) });
}
