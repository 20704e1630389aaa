// The sidebar: who I am, the action buttons (friends, new chat, new group,
// notifications, sign out), message search with jump-to-message, and the
// live conversation list (title, preview, time, unread, mentions, presence).

import { h, iconButton, setIcon, setLabel, avatar, formatTime, messagePreview, systemText, snippetNodes } from './dom.js';
import { icon } from './icons.js';
import { api } from '../api.js';
import * as store from '../store.js';
import { friendsDialog, newChatDialog, newGroupDialog, profileDialog } from './dialogs.js';

export function createSidebar({ onSignOut }) {
  // Named by the visible name (plus a screen-reader-only hint), not an aria-label that would hide it.
  const me = h('button.me', { type: 'button', testid: 'profile', title: 'Your profile', on: { click: profileDialog } });
  const friendsBadge = h('span.count', { hidden: true });
  const friendsBtn = h('button.icon-btn', { type: 'button', testid: 'friends', 'aria-label': 'Friends', title: 'Friends', on: { click: friendsDialog } },
    icon('userPlus'), friendsBadge);
  const notifyBtn = iconButton('Desktop notifications', 'bellOff', () => store.setNotify(!store.state.notify), { testid: 'notifications-toggle', 'aria-pressed': 'false' });
  const actions = h('div.side-actions', {},
    friendsBtn,
    iconButton('New chat', 'newChat', newChatDialog, { testid: 'new-chat' }),
    iconButton('New group', 'users', newGroupDialog, { testid: 'new-group' }),
    notifyBtn,
    iconButton('Sign out', 'signOut', onSignOut, { testid: 'sign-out' }));
  const search = h('input.search', { type: 'search', testid: 'search-input', placeholder: 'Search messages', 'aria-label': 'Search messages', autocomplete: 'off' });
  const results = h('ul.search-results', { hidden: true, 'aria-label': 'Search results' });
  const list = h('ul.conversation-list', { testid: 'conversation-list', 'aria-label': 'Conversations' });
  const emptyList = h('li.empty-list', {},
    h('p', { text: 'No conversations yet.' }),
    h('p.muted', { text: 'Add a friend with the person icon above, then start a chat.' }));
  const el = h('aside.sidebar', { 'aria-label': 'Conversations' },
    h('header.side-head', {}, me, actions),
    h('div.search-wrap', {}, search), results, list);

  let searchTimer = null;
  let searchSeq = 0;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 250);
  });
  search.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && search.value) { e.stopPropagation(); search.value = ''; runSearch(); }
  });

  async function runSearch() {
    const q = search.value.trim();
    const mine = ++searchSeq;
    if (!q) {
      results.hidden = true;
      list.hidden = false;
      render();
      return;
    }
    try {
      // The server searches plain conversations; this device searches what it decrypted.
      const [server, local] = await Promise.all([
        api('GET', `/v1/search/messages?q=${encodeURIComponent(q)}&limit=30`),
        store.searchDecrypted(q).catch(() => []),
      ]);
      if (mine !== searchSeq) return;
      const localHits = local.map((x) => {
        const m = store.threadOf(x.conversation_id).bySeq.get(x.seq);
        return { message: { conversation_id: x.conversation_id, seq: x.seq, ts: m ? m.ts : 0, sender_id: m ? m.sender_id : null }, text: x.text };
      });
      const hits = [...localHits, ...server.hits];
      results.replaceChildren(...(hits.length ? hits.map((hit) => {
        const m = hit.message;
        const conv = store.state.conversations.get(m.conversation_id);
        return h('li', {}, h('button.search-hit', {
          type: 'button', testid: 'search-hit', dataset: { conversationId: String(m.conversation_id), seq: String(m.seq) },
          on: { click: () => store.openAround(m.conversation_id, m.seq) },
        },
        h('span.row-top', {}, h('span.title', { text: conv ? store.conversationTitle(conv) : 'Conversation' }), h('time', { text: formatTime(m.ts) })),
        h('span.preview', {}, h('span.muted', { text: m.sender_id == null ? '' : `${store.displayName(m.sender_id)}: ` }),
          hit.text != null ? document.createTextNode(hit.text) : snippetNodes(hit.snippet || ''))));
      }) : [h('li.muted.pad', { text: 'No messages found.' })]));
    } catch (e) {
      results.replaceChildren(h('li.inline-error.pad', { role: 'alert', text: e.message }));
    }
    results.hidden = false;
    list.hidden = true;
  }

  function item(conv) {
    const name = store.conversationTitle(conv);
    const other = store.otherMember(conv);
    const presence = other != null ? store.state.presence.get(other) : null;
    // Encrypted conversations preview what this device decrypted.
    const raw = conv.last_message;
    const last = raw && conv.encrypted && raw.kind === 'encrypted' ? store.decrypted(conv.id, raw) || raw : raw;
    const mineLast = last && last.sender_id === store.state.me.id && last.kind !== 'system';
    const pic = h('span.avatar-wrap', {}, avatar(name, conv.id),
      conv.kind === 'direct' && presence ? h('span.dot', { testid: 'presence-dot', dataset: { status: presence }, role: 'img', 'aria-label': presence }) : null);
    const unread = conv.unread_count || 0;
    return h('li', {}, h('button.conversation-item', {
      type: 'button', testid: 'conversation-item', dataset: { conversationId: String(conv.id) },
      'aria-current': store.state.activeId === conv.id ? 'true' : null,
      // Named by its visible text (an aria-label would hide the preview and
      // time from speech input and screen readers); the states the eye gets
      // from icons and badges are spelled out in a screen-reader-only span.
      on: { click: () => store.setActive(conv.id) },
    }, pic,
    h('span.item-main', {},
      h('span.row-top', {}, h('span.title', { text: name }),
        conv.encrypted ? h('span.e2ee-badge', { testid: 'encrypted-badge', title: 'End-to-end encrypted', 'aria-hidden': 'true' }, icon('lock', 14)) : null,
        conv.muted ? h('span.muted.muted-icon', {}, icon('bellOff', 14)) : null,
        h('time', { text: last ? formatTime(last.ts) : '' })),
      h('span.row-bottom', {},
        h('span.preview', { testid: 'last-message', text: last ? `${mineLast ? 'You: ' : conv.kind === 'group' && last.kind !== 'system' ? `${store.displayName(last.sender_id)}: ` : ''}${last.kind === 'system' ? systemText(last, store.displayName) : messagePreview(last)}` : 'No messages yet' }),
        conv.unread_mentions ? h('span.mention', { testid: 'mention-marker', title: 'You were mentioned', 'aria-hidden': 'true', text: '@' }) : null,
        unread ? h('span.badge', { testid: 'unread-badge', 'aria-hidden': 'true', text: unread > 99 ? '99+' : String(unread) }) : null)),
    h('span.sr-only', { text: `${conv.encrypted ? ', end-to-end encrypted' : ''}${unread ? `, ${unread} unread` : ''}${conv.unread_mentions ? ', you were mentioned' : ''}${conv.muted ? ', muted' : ''}${conv.removed ? ', you are no longer a member' : ''}` })));
  }

  function render() {
    const s = store.state;
    if (!s.me) return;
    const u = s.users.get(s.me.id) || s.me;
    me.replaceChildren(avatar(u.display_name || u.username, u.id),
      h('span.me-name', {}, h('strong', { text: u.display_name || u.username }), h('span.muted', { text: `@${u.username}` })),
      h('span.sr-only', { text: ', your profile' }));
    friendsBadge.hidden = !s.incoming.length;
    friendsBadge.textContent = String(s.incoming.length);
    setLabel(friendsBtn, s.incoming.length ? `Friends, ${s.incoming.length} requests` : 'Friends');
    notifyBtn.setAttribute('aria-pressed', String(s.notify));
    setIcon(notifyBtn, s.notify ? 'bell' : 'bellOff');
    notifyBtn.title = s.notify ? 'Desktop notifications are on' : 'Turn on desktop notifications';
    if (!results.hidden) return;
    const convs = store.sortedConversations();
    const focusedId = document.activeElement && list.contains(document.activeElement) ? document.activeElement.dataset.conversationId : null;
    list.replaceChildren(...(convs.length ? convs.map(item) : [emptyList]));
    if (focusedId) {
      const again = list.querySelector(`[data-conversation-id="${focusedId}"]`);
      if (again) again.focus();
    }
  }

  return { el, render };
}
