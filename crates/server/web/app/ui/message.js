// Renders one message (or system notice) as a DOM element: bubble with
// text/image/voice/file (@mentions marked, messages mentioning me
// highlighted), reply quote, time, edited mark, ticks, reactions, and the
// per-message actions (reply, react, edit, delete).

import { h, linkify, formatTime, formatSize, formatDuration, messagePreview, systemText, iconButton } from './dom.js';
import { mediaObjectUrl } from '../api.js';
import { icon } from './icons.js';
import * as store from '../store.js';
import { confirmDialog, imageViewer } from './dialogs.js';

export const QUICK_EMOJI = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const TICKS = { sending: '◷', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };
const STATUS_LABEL = { sending: 'Sending', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent' };

export function renderNotice(m) {
  return h('div.notice', { testid: 'notice', dataset: { seq: String(m.seq) }, role: 'note' },
    h('span', { text: systemText(m, (id) => store.displayName(id)) }));
}

const escapeRe = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A text body as nodes: links, and the `@username`s it mentions marked. */
function richText(text, m) {
  const users = (Array.isArray(m.body.mentions) ? m.body.mentions : []).map((id) => store.state.users.get(id)).filter(Boolean);
  if (!users.length) return linkify(text);
  const alternatives = users.map((u) => escapeRe(u.username)).sort((a, b) => b.length - a.length).join('|');
  const re = new RegExp(`(?<![\\w.-])@(${alternatives})(?![\\w]|[.-]\\w)`, 'gi');
  const me = store.state.me.username.toLowerCase();
  return linkify(text, (part) => {
    const out = [];
    let last = 0;
    for (const hit of part.matchAll(re)) {
      if (hit.index > last) out.push(document.createTextNode(part.slice(last, hit.index)));
      out.push(h(`span.at${hit[1].toLowerCase() === me ? '.at-me' : ''}`, { text: hit[0] }));
      last = hit.index + hit[0].length;
    }
    if (last < part.length) out.push(document.createTextNode(part.slice(last)));
    return out;
  });
}

/** A blob: URL of a message's media: decrypted here for end-to-end encrypted ones. */
function mediaUrl(m, thumbnail = false) {
  return m.e2ee ? store.e2eeMediaUrl(m.body || {}) : mediaObjectUrl((m.body || {}).media_id, thumbnail);
}

function content(m) {
  const b = m.body || {};
  if (m.deleted) return h('p.deleted', { testid: 'message-text', text: 'This message was deleted' });
  switch (m.kind) {
    case 'text':
      return h('p.text', { testid: 'message-text' }, richText(b.text || '', m));
    case 'image': {
      // Fit in 280 px; small images are shown at least 120 px wide or tall.
      const w = b.width || 200;
      const hgt = b.height || 200;
      const scale = Math.min(280 / w, 280 / hgt, Math.max(1, 120 / Math.max(w, hgt)));
      const img = h('img', {
        testid: 'message-image', alt: b.caption || 'Photo', loading: 'lazy', decoding: 'async',
        width: String(Math.round(w * scale)),
        height: String(Math.round(hgt * scale)),
      });
      // The thumbnail is made in the background: brand-new images load in
      // full, and so does one whose thumbnail is not there (yet).
      const thumb = Boolean(m.seq && Date.now() - (m.ts || 0) > 15000);
      (m.e2ee ? mediaUrl(m) : mediaObjectUrl(b.media_id, thumb).catch(() => mediaObjectUrl(b.media_id)))
        .then((url) => { img.src = url; }, (e) => { img.alt = `Photo (could not be loaded${m.e2ee ? `: ${e.message}` : ''})`; });
      const open = () => mediaUrl(m).then((url) => imageViewer(url, b.caption), () => {});
      return [h('button.image-btn', { type: 'button', 'aria-label': 'Open photo full size', on: { click: open } }, img),
        b.caption ? h('p.text', { testid: 'message-text' }, linkify(b.caption)) : null];
    }
    case 'voice': {
      const audio = h('audio', { testid: 'message-voice', controls: true, preload: 'metadata', 'aria-label': 'Voice message' });
      mediaUrl(m).then((url) => { audio.src = url; }, () => {});
      return h('div.voice', {}, audio, h('span.muted', { text: formatDuration(b.duration_ms) }));
    }
    case 'file': {
      // Fetched with the token in a header, then saved from a blob: URL.
      const save = (e) => {
        e.preventDefault();
        mediaUrl(m).then((url) => {
          const a = h('a', { href: url, download: b.name || 'file', rel: 'noopener' });
          document.body.append(a);
          a.click();
          a.remove();
        }, () => {});
      };
      return h('a.file', {
        testid: 'message-file', href: '#', download: b.name || 'file', rel: 'noopener',
        'data-media-id': b.media_id, on: { click: save },
      },
        h('span.file-icon', {}, icon('file')),
        h('span.file-name', { text: b.name || 'File' }), h('span.muted', { text: ` ${formatSize(b.size || 0)}` }));
    }
    case 'encrypted':
      // Not decrypted (yet): say why, never show nothing.
      return [h(`p.e2ee-undecrypted.${m.e2eeState || 'pending'}`, {
        testid: 'message-undecrypted', dataset: { state: m.e2eeState || 'pending' },
        text: m.e2eeText || 'Decrypting…',
      }), m.e2eeState === 'failed' && m.seq ? h('button.link', {
        type: 'button', testid: 'message-retry-decrypt', text: 'Try again',
        on: { click: () => store.retryDecrypt(m.conversation_id, m.seq) },
      }) : null];
    default:
      return h('p.deleted', { text: `Unsupported message (${m.kind})` });
  }
}

/**
 * m: the message (or a pending entry shaped like one); opts: {conv, status,
 * pendingId, error, follows (same sender as the one above: no name),
 * actions: {reply, edit, jump}}.
 */
export function renderMessage(m, opts) {
  const { conv, status, actions } = opts;
  const mine = m.sender_id === store.state.me.id;
  const mentioned = !mine && !m.deleted && store.mentionsMe(m);
  const el = h(`div.msg${mine ? '.mine' : ''}${mentioned ? '.mentioned' : ''}${opts.follows ? '.follows' : ''}`, {
    testid: 'message', id: m.seq ? `msg-${m.seq}` : null, tabindex: '-1',
    dataset: {
      mine: String(mine), kind: m.kind, ...(m.seq ? { seq: String(m.seq) } : {}), ...(mine ? { status } : {}),
      ...(mentioned ? { mentioned: 'true' } : {}),
    },
  });
  const bubble = h('div.bubble');
  if (!mine && conv.kind === 'group' && !opts.follows) bubble.append(h('div.sender', { text: store.displayName(m.sender_id) }));
  const replyTo = m.body && m.body.reply_to;
  if (replyTo && !m.deleted) {
    const target = store.threadOf(conv.id).bySeq.get(replyTo);
    bubble.append(h('button.quote', { type: 'button', testid: 'message-quote', 'aria-label': 'Show the message replied to', on: { click: () => actions.jump(replyTo) } },
      h('span.sender', { text: target ? store.displayName(target.sender_id) : 'Reply' }),
      h('span.quote-text', { text: target ? messagePreview(target) : `Message #${replyTo}` })));
  }
  bubble.append(...[content(m)].flat().filter(Boolean));
  const meta = h('div.meta', {},
    m.edited_at && !m.deleted ? h('span.edited', { testid: 'message-edited', title: `Edited ${formatTime(m.edited_at)}`, text: 'edited ·' }) : null,
    h('time', { datetime: new Date(m.ts || Date.now()).toISOString(), text: m.ts ? formatTime(m.ts) : '' }));
  if (mine) {
    meta.append(h(`span.ticks.${status}`, { 'aria-label': STATUS_LABEL[status], title: STATUS_LABEL[status], text: ` ${TICKS[status]}` }));
  }
  bubble.append(meta);
  el.append(bubble);

  if (opts.pendingId) {
    if (status === 'failed') {
      el.append(h('div.failed', { role: 'alert' }, h('span', { text: `Not sent: ${opts.error || 'refused'}` }),
        h('button.link', { type: 'button', text: 'Retry', on: { click: () => store.retryPending(opts.pendingId) } }),
        h('button.link', { type: 'button', text: 'Discard', on: { click: () => store.discardPending(opts.pendingId) } })));
    }
    return el;
  }

  const reactions = Object.entries(m.reactions || {});
  if (reactions.length) {
    el.append(h('div.reactions', {}, reactions.map(([emoji, ids]) => {
      const minePressed = ids.includes(store.state.me.id);
      return h('button.chip', {
        type: 'button', testid: 'reaction', dataset: { emoji }, 'aria-pressed': String(minePressed), title: ids.map((id) => store.displayName(id)).join(', '),
        'aria-label': `${emoji} ${ids.length}${minePressed ? ', including you' : ''}`,
        on: { click: () => store.react(conv.id, m.seq, emoji, !minePressed) },
      }, `${emoji} ${ids.length}`);
    })));
  }
  if (!m.deleted) el.append(actionBar(m, conv, mine, actions));
  return el;
}

function actionBar(m, conv, mine, actions) {
  const picker = h('div.picker', { role: 'group', 'aria-label': 'Pick a reaction', hidden: true },
    QUICK_EMOJI.map((emoji) => h('button.emoji', {
      type: 'button', testid: 'react-option', dataset: { emoji }, 'aria-label': `React ${emoji}`, title: `React ${emoji}`, text: emoji,
      on: { click: () => { picker.hidden = true; store.react(conv.id, m.seq, emoji, true); } },
    })));
  picker.addEventListener('keydown', (e) => { if (e.key === 'Escape') { e.stopPropagation(); picker.hidden = true; } });
  const me = (conv.members || []).find((x) => x.user_id === store.state.me.id);
  // Encrypted conversations: the server refuses edits and reactions (it
  // cannot read them); deletion drops the ciphertext; replies travel inside it.
  const plain = !conv.encrypted;
  const canDelete = mine || (conv.kind === 'group' && me && me.role !== 'member');
  // Action buttons join the Tab order only while their message has focus
  // (see the message list's keyboard handling in chat.js).
  const bar = h('div.actions', { role: 'toolbar', 'aria-label': 'Message actions' },
    iconButton('Reply', 'reply', () => actions.reply(m), { testid: 'message-reply' }),
    plain ? iconButton('React', 'smile', () => { picker.hidden = !picker.hidden; if (!picker.hidden) picker.querySelector('button').focus(); }, { testid: 'message-react' }) : null,
    plain && mine && m.kind === 'text' ? iconButton('Edit', 'edit', () => actions.edit(m), { testid: 'message-edit' }) : null,
    canDelete ? iconButton('Delete', 'trash', () => {
      confirmDialog('Delete message?', 'It will be deleted for everyone in this chat.', 'Delete')
        .then((ok) => { if (ok) store.deleteMessage(conv.id, m.seq); });
    }, { testid: 'message-delete' }) : null,
    picker);
  bar.querySelectorAll('button').forEach((btn) => { btn.tabIndex = -1; });
  return bar;
}
