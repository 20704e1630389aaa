// @mention autocomplete for the composer of a group: typing "@" (at the
// start or after a space) lists the group's other members matching what
// follows; Up/Down move, Enter/Tab pick, Esc closes, a click picks. The pick
// is inserted as "@username "; Enter after a name typed out in full sends.
// The textarea drives a listbox (aria-expanded, aria-activedescendant).

import { h, avatar } from './dom.js';
import * as store from '../store.js';
import { typedMention } from '../mentiontext.js';

const MAX_SHOWN = 8;

/** Wires the autocomplete to `input`; returns {el, onKeyDown(e) → handled, close}. */
export function createMentions(input, getConvId) {
  const listId = `mentions-${Math.random().toString(36).slice(2)}`;
  const list = h('ul.mention-list', { id: listId, role: 'listbox', testid: 'mention-suggestions', 'aria-label': 'Members to mention', hidden: true });
  let matches = [];
  let active = 0;
  let start = -1; // index of the "@" being completed
  let dismissed = -1; // the "@" whose list was closed with Esc

  // aria-expanded is only allowed on a combobox, so the textarea takes that
  // role (ARIA 1.2 editable combobox; it keeps its textarea behaviour).
  input.setAttribute('role', 'combobox');
  input.setAttribute('aria-autocomplete', 'list');
  input.setAttribute('aria-controls', listId);
  input.setAttribute('aria-expanded', 'false');

  function close() {
    list.hidden = true;
    matches = [];
    start = -1;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
  }

  /** The "@query" right before the caret, if any. */
  function token() {
    if (input.selectionStart !== input.selectionEnd) return null;
    return typedMention(input.value.slice(0, input.selectionStart));
  }

  function update() {
    const convId = getConvId();
    const tok = convId == null ? null : token();
    if (!tok || tok.at === dismissed) { close(); return; }
    dismissed = -1;
    const q = tok.query;
    matches = store.mentionable(convId).filter((u) => u.username.toLowerCase().startsWith(q)
      || (u.display_name || '').toLowerCase().split(/\s+/).some((w) => w.startsWith(q))).slice(0, MAX_SHOWN);
    if (!matches.length) { close(); return; }
    if (start !== tok.at) active = 0;
    start = tok.at;
    active = Math.min(active, matches.length - 1);
    render();
  }

  function render() {
    list.replaceChildren(...matches.map((u, i) => h('li.mention-option', {
      id: `${listId}-${i}`, role: 'option', testid: 'mention-option',
      dataset: { username: u.username }, 'aria-selected': String(i === active),
      on: {
        mousedown: (e) => e.preventDefault(), // keep the focus in the composer
        click: () => pick(i),
      },
    }, avatar(u.display_name || u.username, u.id),
    h('span.mention-name', { text: u.display_name || u.username }), h('span.muted', { text: `@${u.username}` }))));
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    input.setAttribute('aria-activedescendant', `${listId}-${active}`);
    list.children[active].scrollIntoView({ block: 'nearest' });
  }

  function pick(i) {
    const u = matches[i];
    if (!u || start < 0) return;
    const end = input.selectionStart;
    const insert = `@${u.username} `;
    input.value = input.value.slice(0, start) + insert + input.value.slice(end).replace(/^ /, '');
    const caret = start + insert.length;
    input.setSelectionRange(caret, caret);
    close();
    input.dispatchEvent(new Event('input')); // draft, typing, size
    input.focus();
  }

  /** Whether what follows the "@" is already the highlighted member's whole username. */
  function complete() {
    const tok = token();
    return !!tok && tok.query === matches[active].username.toLowerCase();
  }

  input.addEventListener('input', update);
  input.addEventListener('click', update);
  input.addEventListener('keyup', (e) => { if (/^(ArrowLeft|ArrowRight|Home|End)$/.test(e.key)) update(); });
  input.addEventListener('blur', close);

  return {
    el: list,
    close,
    /** Keys while the list is open; true when the key was used here. */
    onKeyDown(e) {
      if (list.hidden || e.isComposing) return false;
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        active = (active + (e.key === 'ArrowDown' ? 1 : matches.length - 1)) % matches.length;
        render();
      } else if (e.key === 'Enter' && !e.shiftKey && complete()) {
        close(); // the name is typed out already: Enter sends
        return false;
      } else if ((e.key === 'Enter' && !e.shiftKey) || e.key === 'Tab') {
        pick(active);
      } else if (e.key === 'Escape') {
        dismissed = start;
        close();
        e.stopPropagation();
      } else {
        return false;
      }
      e.preventDefault();
      return true;
    },
  };
}
