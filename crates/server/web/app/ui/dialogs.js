// Dialogs and panels: a generic modal (role=dialog, Esc closes, focus kept
// inside and restored), and the friends, new chat, new group, members and
// confirmation dialogs built on it.

import { h, iconButton, toast, avatar } from './dom.js';
import { api, findUser, getSession, oidcBegin, oidcIdentities, oidcProviders, setSession } from '../api.js';
import * as store from '../store.js';

let openDialogs = [];

/** Opens a modal; returns {el, body, close}. */
export function modal(title, build, { testid, onClose } = {}) {
  const previous = document.activeElement;
  const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
  const body = h('div.dialog-body');
  const dialog = h('section.dialog', { role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': titleId, testid },
    // A div, not a <header>: outside the page's landmarks that would count as a second banner.
    h('div.dialog-head', h('h2', { id: titleId, text: title }), iconButton('Close', 'close', () => close())),
    body);
  const backdrop = h('div.backdrop', { on: { mousedown: (e) => { if (e.target === backdrop) close(); } } }, dialog);
  let closed = false;
  function close() {
    if (closed) return;
    closed = true;
    backdrop.remove();
    openDialogs = openDialogs.filter((d) => d !== api2);
    if (onClose) onClose();
    if (previous && previous.focus) previous.focus();
  }
  dialog.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.stopPropagation(); close(); }
    if (e.key === 'Tab') {
      const f = [...dialog.querySelectorAll('button, input, textarea, select, a[href], [tabindex="0"]')]
        .filter((x) => !x.disabled && x.offsetParent !== null);
      if (!f.length) return;
      if (e.shiftKey && document.activeElement === f[0]) { e.preventDefault(); f[f.length - 1].focus(); }
      else if (!e.shiftKey && document.activeElement === f[f.length - 1]) { e.preventDefault(); f[0].focus(); }
    }
  });
  const api2 = { el: dialog, body, close };
  build(body, api2);
  document.body.append(backdrop);
  openDialogs.push(api2);
  const first = [...dialog.querySelectorAll('input, textarea, .dialog-body button')].find((x) => x.offsetParent !== null);
  (first || dialog.querySelector('button')).focus();
  return api2;
}

export function closeTopDialog() {
  const d = openDialogs[openDialogs.length - 1];
  if (d) { d.close(); return true; }
  return false;
}

/** A labelled input row. */
function field(label, props) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const input = h('input', { id, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', ...props });
  return { input, row: h('div.field', h('label', { for: id, text: label }), input) };
}

function inlineError() {
  return h('p.inline-error', { role: 'alert', hidden: true });
}

function showError(el, e) {
  el.textContent = e.message;
  el.hidden = false;
}

/**
 * A form (`selector`, then its children) whose submit runs the async
 * `action` with its buttons disabled meanwhile; a failure shows in `err`.
 */
function actionForm(selector, err, action, ...children) {
  const form = h(selector, {
    on: {
      submit: async (e) => {
        e.preventDefault();
        const buttons = form.querySelectorAll('button');
        buttons.forEach((b) => { b.disabled = true; });
        err.hidden = true;
        try {
          await action();
        } catch (ex) {
          showError(err, ex);
        } finally {
          buttons.forEach((b) => { b.disabled = false; });
        }
      },
    },
  }, ...children);
  return form;
}

/** The "end-to-end encrypted" checkbox of the new chat and new group dialogs. */
function encryptedToggle(testid) {
  const id = `${testid}-input`;
  const input = h('input', { id, type: 'checkbox', testid });
  const row = h('div.check-row', {}, input, h('label', { for: id },
    h('span', { text: 'End-to-end encrypted' }),
    h('span.muted.small', { text: ' · only the members’ devices can read it; it stays encrypted' })));
  return { input, row };
}

/**
 * Every device of an encrypted conversation with its safety number: the
 * same digits on both phones (or on a phone and a terminal) mean nobody
 * sits in between.
 */
export function safetyNumbersDialog(convId) {
  modal('Safety numbers', (body) => {
    const list = h('ul.plain.safety-list');
    body.append(h('p.muted', { text: 'Compare these numbers in person with each member: if they match on both devices, your messages reach those devices and nobody else.' }), list);
    store.safetyNumbers(convId).then((devices) => {
      list.replaceChildren(...devices.map((d) => h('li.row', { testid: 'safety-device', dataset: { userId: String(d.userId), deviceId: String(d.deviceId) } },
        h('span.grow', {}, h('span.name', { text: d.me ? 'This device' : store.displayName(d.userId) }), h('span.muted', { text: ` · device ${d.deviceId}` })),
        h('code.safety-number', { testid: 'safety-number', text: d.number }))));
      if (!devices.length) list.append(h('li.muted', { text: 'No devices yet: waiting for keys.' }));
    }, (e) => list.replaceChildren(h('li.inline-error', { role: 'alert', text: e.message })));
  }, { testid: 'safety-numbers-dialog' });
}

export function newChatDialog() {
  modal('New chat', (body, dlg) => {
    const { input, row } = field('Username', { testid: 'new-chat-username', required: true, placeholder: 'e.g. ann' });
    const enc = encryptedToggle('new-chat-encrypted');
    const err = inlineError();
    const form = actionForm('form.stack', err, async () => {
      const u = await findUser(input.value);
      store.rememberUser(u);
      const conv = await store.createConversation({ kind: 'direct', user_id: u.id }, enc.input.checked);
      dlg.close();
      store.setActive(conv.id);
    }, row, enc.row, err, h('button.primary', { type: 'submit', testid: 'new-chat-start', text: 'Start chat' }));
    body.append(form);
  }, { testid: 'new-chat-dialog' });
}

export function newGroupDialog() {
  modal('New group', (body, dlg) => {
    const title = field('Group name', { testid: 'group-title', required: true, maxlength: '200' });
    const members = field('Members (usernames, separated by commas or spaces)', { testid: 'group-members', placeholder: 'ann, bob' });
    const enc = encryptedToggle('new-group-encrypted');
    const err = inlineError();
    const form = actionForm('form.stack', err, async () => {
      const names = members.input.value.split(/[\s,]+/).filter(Boolean);
      const users = await Promise.all(names.map(findUser));
      users.forEach(store.rememberUser);
      const conv = await store.createConversation({
        kind: 'group', title: title.input.value.trim(), member_ids: users.map((u) => u.id),
      }, enc.input.checked);
      dlg.close();
      store.setActive(conv.id);
    }, title.row, members.row, enc.row, err, h('button.primary', { type: 'submit', testid: 'group-create', text: 'Create group' }));
    body.append(form);
  }, { testid: 'new-group-dialog' });
}

function userLabel(u) {
  return [h('span.name', { text: u.display_name || u.username }), h('span.muted', { text: ` @${u.username}` })];
}

export function friendsDialog() {
  let unsubscribe = () => {};
  modal('Friends', (body) => {
    const { input, row } = field('Add a friend by username', { testid: 'friend-username', required: true });
    const err = inlineError();
    const form = actionForm('form.inline-form', err, async () => {
      const u = await findUser(input.value);
      const out = await api('POST', '/v1/friends/requests', { user_id: u.id });
      input.value = '';
      toast(out.status === 'accepted' ? `You and ${u.username} are now friends` : `Friend request sent to ${u.username}`, 'info');
      await store.loadFriends();
    }, row, h('button.primary', { type: 'submit', testid: 'friend-request-send', text: 'Send request' }), err);
    const lists = h('div.friend-lists');
    body.append(form, lists);

    const answer = (req, verb) => async (e) => {
      e.target.disabled = true;
      try {
        await api('POST', `/v1/friends/requests/${req.id}/${verb}`);
        await store.loadFriends();
      } catch (ex) {
        toast(ex.message);
        e.target.disabled = false;
      }
    };
    const chatWith = (u) => async () => {
      try {
        const conv = await api('POST', '/v1/conversations', { kind: 'direct', user_id: u.id });
        await store.refreshConversation(conv.id);
        store.setActive(conv.id);
        closeTopDialog();
      } catch (ex) {
        toast(ex.message);
      }
    };
    const render = () => {
      const s = store.state;
      lists.replaceChildren(...[
        h('h3', { text: `Requests (${s.incoming.length})` }),
        s.incoming.length ? h('ul.plain', {}, s.incoming.map((r) => h('li.row', { testid: 'friend-request', dataset: { username: r.from_user.username } },
          h('span.grow', {}, userLabel(r.from_user)),
          h('button.primary.small', { type: 'button', testid: 'friend-accept', text: 'Accept', 'aria-label': `Accept ${r.from_user.username}`, on: { click: answer(r, 'accept') } }),
          h('button.secondary.small', { type: 'button', testid: 'friend-decline', text: 'Decline', 'aria-label': `Decline ${r.from_user.username}`, on: { click: answer(r, 'decline') } }))))
          : h('p.muted', { text: 'No pending requests.' }),
        s.outgoing.length ? h('h3', { text: 'Sent' }) : null,
        s.outgoing.length ? h('ul.plain', {}, s.outgoing.map((r) => h('li.row', {},
          h('span.grow', {}, userLabel(r.to_user)), h('span.muted', { text: 'pending' })))) : null,
        h('h3', { text: `Friends (${s.friends.length})` }),
        s.friends.length ? h('ul.plain', {}, s.friends.map((f) => {
          const status = s.presence.get(f.user.id) || f.status;
          return h('li.row', { testid: 'friend', dataset: { username: f.user.username } },
            h('span.dot', { dataset: { status }, title: status, 'aria-label': status, role: 'img' }),
            h('span.grow', {}, userLabel(f.user)),
            h('button.secondary.small', { type: 'button', text: 'Message', 'aria-label': `Message ${f.user.username}`, on: { click: chatWith(f.user) } }));
        })) : h('p.muted', { text: 'No friends yet. Add someone by their username.' }),
      ].filter(Boolean));
    };
    render();
    unsubscribe = store.subscribe((topic) => { if (topic === 'friends') render(); });
  }, { testid: 'friends-panel', onClose: () => unsubscribe() });
}

export function membersDialog(convId) {
  let unsubscribe = () => {};
  modal('Group settings', (body) => {
    const rank = { owner: 2, admin: 1, member: 0 };
    const { input, row } = field('Add by username', { testid: 'member-add-username', required: true });
    const err = inlineError();
    const loadErr = inlineError();
    const heading = h('h3', { text: 'Members' });
    const list = h('ul.plain.member-list');
    let loads = 0;
    // Forms the server would refuse are not offered: renaming needs an owner
    // or admin; adding too, unless the group lets every member add.
    const allow = (me) => {
      const conv = store.state.conversations.get(convId);
      const role = me ? rank[me.role] : 0;
      renameForm.hidden = role === 0;
      form.hidden = role === 0 && !(conv && conv.members_can_add);
    };
    const load = async () => {
      const mine = ++loads;
      try {
        const { members } = await api('GET', `/v1/conversations/${convId}/members`);
        if (mine !== loads) return; // a newer load is on its way
        loadErr.hidden = true;
        const me = members.find((m) => m.user_id === store.state.me.id);
        allow(me);
        heading.textContent = `Members (${members.length})`;
        const sorted = [...members].sort((x, y) => rank[y.role] - rank[x.role]
          || store.displayName(x.user_id).localeCompare(store.displayName(y.user_id)));
        list.replaceChildren(...sorted.map((m) => {
          const u = store.user(m.user_id);
          const name = store.displayName(m.user_id);
          const isMe = m.user_id === store.state.me.id;
          const canRemove = isMe || (me && rank[me.role] > 0 && rank[me.role] > rank[m.role]);
          return h('li.row', { testid: 'member', dataset: { userId: String(m.user_id), username: u ? u.username : '' } },
            avatar(u ? u.display_name || u.username : name, m.user_id),
            h('span.grow', {}, h('span.name', { text: name }), u ? h('span.muted', { text: ` @${u.username}` }) : null),
            m.role !== 'member' ? h('span.badge-soft', { text: m.role }) : null,
            canRemove ? h('button.secondary.small', {
              type: 'button', testid: 'member-remove', text: isMe ? 'Leave' : 'Remove',
              'aria-label': isMe ? 'Leave the group' : `Remove ${name}`,
              on: {
                click: async (e) => {
                  if (isMe && !(await confirmDialog('Leave the group?', 'You will stop getting its messages, and you cannot see them again unless someone adds you back.', 'Leave'))) return;
                  e.target.disabled = true;
                  try {
                    await store.removeMember(convId, m.user_id);
                    if (isMe) { closeTopDialog(); store.setActive(null); await store.refreshConversation(convId); } else load();
                  } catch (ex) {
                    toast(ex.message);
                    e.target.disabled = false;
                  }
                },
              },
            }) : null);
        }));
      } catch (e) {
        showError(loadErr, e);
      }
    };
    const form = actionForm('form.inline-form', err, async () => {
      const u = await findUser(input.value);
      await api('POST', `/v1/conversations/${convId}/members`, { user_id: u.id });
      store.rememberUser(u);
      input.value = '';
      await load();
      // Encrypted groups: the commit adding their devices (with a Welcome).
      await store.reconcileEncrypted(convId);
    }, row, h('button.primary', { type: 'submit', testid: 'member-add', text: 'Add' }), err);
    const conv = store.state.conversations.get(convId);
    const rename = field('Group name', { testid: 'group-rename', required: true, maxlength: '200', value: conv ? conv.title || '' : '' });
    const renameErr = inlineError();
    const renameForm = actionForm('form.inline-form', renameErr, async () => {
      await api('PATCH', `/v1/conversations/${convId}`, { title: rename.input.value.trim() });
      await store.refreshConversation(convId);
      toast('Group renamed', 'info');
    }, rename.row, h('button.secondary', { type: 'submit', testid: 'group-rename-save', text: 'Rename' }), renameErr);
    allow(conv && (conv.members || []).find((m) => m.user_id === store.state.me.id));
    body.append(renameForm, heading, form, loadErr, list);
    load();
    unsubscribe = store.subscribe((topic, id) => { if (topic === 'users' || (topic === 'members' && id === convId)) load(); });
  }, { testid: 'members-panel', onClose: () => unsubscribe() });
}

/** Asks before something that cannot be undone; resolves true to go ahead. */
export function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    let ok = false;
    modal(title, (body, dlg) => {
      body.append(h('div.stack', {}, h('p', { text }),
        h('div.actions',
          h('button.secondary', { type: 'button', testid: 'confirm-cancel', text: 'Cancel', on: { click: () => dlg.close() } }),
          h('button.danger', { type: 'button', testid: 'confirm-ok', text: action, on: { click: () => { ok = true; dlg.close(); } } }))));
    }, { testid: 'confirm-dialog', onClose: () => resolve(ok) });
  });
}

/** Shows an image before sending; resolves with the caption, or null if cancelled. */
export function imagePreviewDialog(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    let result = null;
    modal('Send photo', (body, dlg) => {
      const caption = field('Caption (optional)', { testid: 'image-caption', maxlength: '1000' });
      const form = h('form.stack', {
        on: { submit: (e) => { e.preventDefault(); result = caption.input.value.trim(); dlg.close(); } },
      },
      h('img.photo-preview', { src: url, alt: 'Preview of the photo to send' }),
      caption.row,
      h('div.actions', h('button.secondary', { type: 'button', text: 'Cancel', on: { click: () => dlg.close() } }),
        h('button.primary', { type: 'submit', testid: 'image-send', text: 'Send photo' })));
      body.append(form);
    }, {
      testid: 'image-preview',
      onClose: () => { URL.revokeObjectURL(url); resolve(result); },
    });
  });
}

/** Full-size image viewer. */
export function imageViewer(src, alt) {
  modal(alt || 'Photo', (body) => {
    body.append(h('img.full', { src, alt: alt || 'Photo' }),
      h('a.secondary.button-link', { href: src, target: '_blank', rel: 'noopener noreferrer', text: 'Open original' }));
  }, { testid: 'image-viewer' });
}

/** My profile: display name, status line, hiding presence. */
export function profileDialog() {
  modal('Your profile', (body, dlg) => {
    const me = store.state.users.get(store.state.me.id) || store.state.me;
    const name = field('Display name', { testid: 'profile-display-name', required: true, maxlength: '64', value: me.display_name || me.username });
    const status = field('Status (optional)', { testid: 'profile-status', maxlength: '140', value: me.status_text || '' });
    const hideId = `f-${Math.random().toString(36).slice(2)}`;
    const hide = h('input', { id: hideId, type: 'checkbox', testid: 'profile-hide-presence', checked: !!me.hide_presence });
    const err = inlineError();
    const form = actionForm('form.stack', err, async () => {
      const user = await api('PATCH', '/v1/users/me', {
        display_name: name.input.value.trim(), status_text: status.input.value.trim() || null, hide_presence: hide.checked,
      });
      store.updateMe(user);
      setSession({ ...getSession(), user });
      dlg.close();
    }, h('p.muted', { text: `Signed in as @${me.username}` }), name.row, status.row,
    h('div.check', {}, hide, h('label', { for: hideId, text: 'Hide when I am online from friends' })),
    err, h('button.primary', { type: 'submit', testid: 'profile-save', text: 'Save' }));
    body.append(form);
    linkedSignIns(body);
  }, { testid: 'profile-dialog' });
}

/** The profile's "Sign-in providers": linked ones, and buttons to link more. */
async function linkedSignIns(body) {
  const providers = await oidcProviders();
  if (!providers.length) return;
  let linked = [];
  try {
    linked = await oidcIdentities();
  } catch { /* shown as none linked */ }
  const err = inlineError();
  const rows = providers.map((p) => {
    const isLinked = linked.some((i) => i.provider === p.id);
    return h('li', {}, h('span', { text: p.name }), ' ',
      isLinked
        ? h('span.muted', { testid: `oidc-linked-${p.id}`, text: '(linked)' })
        : h('button.secondary', {
          type: 'button', testid: `oidc-link-${p.id}`, text: `Link ${p.name}`,
          on: {
            click: async (e) => {
              e.target.disabled = true;
              try {
                await oidcBegin(p.id, true);
              } catch (x) {
                showError(err, x);
                e.target.disabled = false;
              }
            },
          },
        }));
  });
  body.append(h('section.stack', { 'aria-label': 'Sign-in providers' },
    h('h3', { text: 'Sign in with' }), h('ul.plain', {}, ...rows), err));
}