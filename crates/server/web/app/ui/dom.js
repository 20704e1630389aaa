import { icon } from './icons.js';

// Message words live beside the state (text.js); the views use them from here too.
export { formatDuration, messagePreview, systemText } from '../text.js';

// DOM helpers: element builder, toasts, safe text rendering (links,
// search snippets), time and size formatting, message previews.

/** h('div.cls', {attrs, on: {click}}, ...children): builds an element. */
export function h(tag, props = {}, ...children) {
  if (props instanceof Node || Array.isArray(props) || typeof props === 'string') {
    children.unshift(props);
    props = {};
  }
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'class') el.className += (el.className ? ' ' : '') + v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An icon button with an accessible label. */
export function iconButton(label, name, onClick, props = {}) {
  return h('button.icon-btn', { type: 'button', 'aria-label': label, title: label, on: { click: onClick }, ...props },
    icon(name) || h('span', { 'aria-hidden': 'true', text: name }));
}

/** Relabels an icon-only button: its accessible name and its tooltip. */
export function setLabel(button, label) {
  button.setAttribute('aria-label', label);
  button.title = label;
}

/** Swaps the icon inside an icon button. */
export function setIcon(button, name) {
  button.replaceChildren(...[icon(name), ...[...button.children].filter((c) => c.tagName !== 'svg')].filter(Boolean));
}

function initials(name) {
  return (name || '?').split(/\s+/).map((w) => w[0]).join('').slice(0, 2).toUpperCase();
}

/** A round avatar with initials, coloured by a stable seed. */
export function avatar(name, seed) {
  const hue = (Number(seed) * 47) % 360;
  const el = h('span.avatar', { 'aria-hidden': 'true', text: initials(name) });
  // Dark enough for white initials at 4.5:1 whatever the hue (WCAG AA).
  el.style.backgroundColor = `hsl(${hue} 45% 32%)`;
  return el;
}

export function toast(message, kind = 'error') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = h(`div.toast.${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, h('span', { text: message }),
    iconButton('Dismiss', 'close', () => el.remove()));
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}]/gi;

/**
 * Text with http(s) links turned into safe anchors; text nodes only. The
 * text between links goes through `plain` (string -> nodes), if given.
 */
export function linkify(text, plain = (t) => [document.createTextNode(t)]) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    if (m.index > last) out.push(...plain(text.slice(last, m.index)));
    let url;
    try { url = new URL(m[0]); } catch { url = null; }
    if (url && (url.protocol === 'http:' || url.protocol === 'https:')) {
      out.push(h('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer nofollow', text: m[0] }));
    } else {
      out.push(document.createTextNode(m[0]));
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(...plain(text.slice(last)));
  return out;
}

const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" };
const unescapeHtml = (s) => s.replace(/&(amp|lt|gt|quot|#39);/g, (e) => ENTITIES[e]);

/** A server search snippet (escaped text with <mark>) as nodes, no innerHTML. */
export function snippetNodes(snippet) {
  const out = [];
  const parts = snippet.split(/(<mark>|<\/mark>)/);
  let marked = false;
  for (const p of parts) {
    if (p === '<mark>') marked = true;
    else if (p === '</mark>') marked = false;
    else if (p) out.push(marked ? h('mark', { text: unescapeHtml(p) }) : document.createTextNode(unescapeHtml(p)));
  }
  return out;
}

export function formatTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const days = (now - d) / 86400000;
  if (days < 6) return d.toLocaleDateString([], { weekday: 'short' });
  return d.toLocaleDateString([], { day: 'numeric', month: 'short' });
}

export function formatDay(ts) {
  const d = new Date(ts);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return 'Today';
  if (d.toDateString() === new Date(now - 86400000).toDateString()) return 'Yesterday';
  return d.toLocaleDateString([], { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
}

export function formatSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

