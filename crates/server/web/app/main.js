// Entry point: shows the sign-in screen or the app shell (sidebar + chat +
// connection banner), routes store changes to the views, global keys.

import { h, toast } from './ui/dom.js';
import { getSession, oidcExchange, onLoggedOut, signOut } from './api.js';
import * as store from './store.js';
import { authView, oidcSignupView } from './ui/auth.js';
import { createSidebar } from './ui/sidebar.js';
import { createChat } from './ui/chat.js';
import { createCalls } from './ui/call.js';
import { closeTopDialog } from './ui/dialogs.js';

const root = document.getElementById('app');
let unsubscribe = null;
let escapeHandler = null;

function showAuth(notice) {
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
  document.removeEventListener('keydown', escapeHandler);
  store.stop();
  document.querySelectorAll('.backdrop').forEach((b) => b.remove());
  root.replaceChildren(authView(showApp, notice));
  document.title = 'Confab — sign in';
}

function banner() {
  const text = h('span');
  const retry = h('button.link', { type: 'button', text: 'Retry now', on: { click: () => store.reconnectNow() } });
  const el = h('div.connection-status', { testid: 'connection-status', role: 'status', 'aria-live': 'polite' }, text, retry);
  let countdown = null;
  function render() {
    const c = store.state.connection;
    el.dataset.state = c.state;
    el.hidden = c.state === 'online';
    retry.hidden = c.state !== 'reconnecting' || !!c.connecting;
    clearInterval(countdown);
    const say = () => {
      if (c.state === 'offline') text.textContent = 'You are offline. Messages you write will be sent when you are back online.';
      else if (c.state === 'connecting') text.textContent = 'Connecting…';
      else if (c.connecting) text.textContent = 'Reconnecting…';
      else {
        const s = Math.max(0, Math.ceil(((c.retryAt || 0) - Date.now()) / 1000));
        text.textContent = `Connection lost. Reconnecting in ${s} s…`;
      }
    };
    say();
    if (c.state === 'reconnecting' && !c.connecting) countdown = setInterval(say, 1000);
  }
  return { el, render };
}

async function showApp(me) {
  const sidebar = createSidebar({
    onSignOut: async () => {
      try {
        await signOut();
      } catch (e) {
        toast(`Signed out here, but the server did not answer: ${e.message}`);
      }
      showAuth();
    },
  });
  const calls = createCalls();
  const chat = createChat({ onCall: (conv, media) => calls.start(conv, media) });
  const status = banner();
  // The page's h1 (in a banner landmark, as all content sits in landmarks),
  // for screen-reader heading navigation; the panes have h2s. Not shown.
  const heading = h('header.sr-only', {}, h('h1', { text: 'Confab' }));
  const shell = h('div.shell', { dataset: { view: 'list' } }, heading, status.el, h('div.panes', {}, sidebar.el, chat.el), calls.el);
  root.replaceChildren(shell);

  let scheduled = new Set();
  const flush = () => {
    const topics = scheduled;
    scheduled = new Set();
    shell.dataset.view = store.state.activeId == null ? 'list' : 'chat';
    // Opening a chat is a history entry, so the browser's Back returns to the list.
    const open = store.state.activeId;
    if (topics.has('active') && open != null && !(history.state && history.state.chat === open)) {
      history.pushState({ chat: open }, '');
    }
    if (topics.has('connection')) status.render();
    if (['conversations', 'friends', 'users', 'active', 'connection'].some((t) => topics.has(t))) sidebar.render();
    const full = [...topics].some((t) => !t.startsWith('typing:') && t !== 'friends' && t !== 'members'
      && (!t.startsWith('thread:') || t === `thread:${open}` || t === 'thread:null'));
    if (full) chat.render('all');
    else if (topics.has(`typing:${open}`)) chat.render('typing');
    const unread = [...store.state.conversations.values()].reduce((n, c) => n + (c.muted ? 0 : c.unread_count || 0), 0);
    document.title = unread ? `(${unread}) Confab` : 'Confab';
  };
  unsubscribe = store.subscribe((topic, id) => {
    if (topic === 'notice') { toast(id.message, id.kind); return; }
    if (!scheduled.size) queueMicrotask(flush);
    scheduled.add(topic === 'thread' || topic === 'typing' ? `${topic}:${id}` : topic);
  });
  escapeHandler = (e) => {
    if (e.key !== 'Escape' || e.defaultPrevented) return;
    if (closeTopDialog()) return;
    const picker = document.querySelector('.picker:not([hidden])');
    if (picker) { picker.hidden = true; return; }
    if (chat.cancelMode()) return;
    if (store.state.activeId != null && matchMedia('(max-width: 720px)').matches) store.setActive(null);
  };
  document.addEventListener('keydown', escapeHandler);
  try {
    await store.start(me);
  } catch (e) {
    if (!getSession()) return;
    root.replaceChildren(h('main.auth-view', {}, h('div.auth-card', {},
      h('h1', { text: 'Could not load Confab' }), h('p.inline-error', { role: 'alert', text: e.message }),
      h('button.primary', { type: 'button', text: 'Try again', on: { click: () => location.reload() } }))));
    return;
  }
  status.render();
  sidebar.render();
  chat.render('all');
}


window.addEventListener('popstate', (e) => {
  if (!store.state.me) return;
  const id = e.state && e.state.chat;
  store.setActive(id != null && store.state.conversations.has(id) ? id : null);
});

const OIDC_ERRORS = {
  oidc_failed: 'The sign-in provider did not confirm who you are. Please try again.',
  oidc_state_invalid: 'That sign-in had expired. Please try again.',
  unavailable: 'The sign-in provider cannot be reached right now. Please try again later.',
};

/**
 * Back from a sign-in provider: the callback put a one-time code (or an
 * error code) in the URL fragment. It is removed from the address bar and
 * history at once, then exchanged.
 */
async function finishOidc(fragment) {
  history.replaceState(history.state, '', location.pathname + location.search);
  const session = getSession();
  const signedIn = session && session.user;
  if (fragment.has('oidc_error')) {
    const why = OIDC_ERRORS[fragment.get('oidc_error')] || OIDC_ERRORS.oidc_failed;
    if (signedIn) { showApp(session.user); toast(why, 'error'); } else showAuth(why);
    return;
  }
  try {
    const out = await oidcExchange(fragment.get('oidc_code') || '');
    if (out.status === 'signed_in') showApp(out.user);
    else if (out.status === 'linked') {
      showApp(signedIn ? session.user : out.user);
      toast(`You can now sign in with ${out.provider} too.`, 'info');
    } else {
      root.replaceChildren(oidcSignupView(out, showApp, () => showAuth()));
      document.title = 'Confab — choose a username';
    }
  } catch (e) {
    const why = e.code === 'oidc_code_invalid' ? 'That sign-in had expired. Please try again.' : e.message;
    if (signedIn) { showApp(session.user); toast(why, 'error'); } else showAuth(why);
  }
}

onLoggedOut((why) => showAuth(why));
const fragment = new URLSearchParams(location.hash.slice(1));
const session = getSession();
if (fragment.has('oidc_code') || fragment.has('oidc_error')) finishOidc(fragment);
else if (session && session.user) showApp(session.user);
else showAuth();
