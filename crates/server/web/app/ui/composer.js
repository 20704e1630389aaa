// The composer: textarea (Enter sends, Shift+Enter new line), per-chat
// drafts, reply/edit mode, @mention autocomplete in groups (mentions.js),
// typing start/stop, attachments (picker, drag and drop, paste) with upload
// progress, voice recording, and a read-only notice where I cannot send.

import { h, iconButton, setIcon, setLabel, toast, messagePreview, formatDuration } from './dom.js';
import { icon } from './icons.js';
import * as store from '../store.js';
import { imagePreviewDialog } from './dialogs.js';
import { createMentions } from './mentions.js';

const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);
/** A typing start is refreshed at half the server's timeout (from hello). */
const typingRefresh = () => store.state.settings.typingTimeoutMs / 2;
const TYPING_IDLE = 4000;

export function createComposer() {
  let convId = null;
  let mode = null; // {kind: 'reply'|'edit', message}
  let typingSentAt = 0;
  let idleTimer = null;
  let recorder = null;

  const input = h('textarea.composer-input', {
    testid: 'composer', rows: '1', placeholder: 'Write a message…', 'aria-label': 'Message', maxlength: '16000',
  });
  const fileInput = h('input', { type: 'file', testid: 'attach-input', hidden: true, 'aria-label': 'Choose a file to send' });
  const attach = iconButton('Attach a photo or file', 'attach', () => fileInput.click(), { testid: 'attach' });
  const recordBtn = iconButton('Record a voice message', 'mic', () => toggleRecording(), { testid: 'record-voice', dataset: { recording: 'false' } });
  const recTime = h('span.rec-time', { 'aria-live': 'off', hidden: true });
  const sendBtn = h('button.send', { type: 'submit', testid: 'send', 'aria-label': 'Send', title: 'Send (Enter)' },
    icon('send'));
  const modeBar = h('div.mode-bar', { hidden: true });
  const uploads = h('div.uploads');
  const form = h('form.composer', { on: { submit: (e) => { e.preventDefault(); submit(); } } },
    attach, fileInput, input, recTime, recordBtn, sendBtn);
  const mentions = createMentions(input, () => convId);
  const closedNote = h('p.composer-closed', { testid: 'composer-closed', role: 'status', hidden: true });
  const root = h('div.composer-wrap', {}, mentions.el, uploads, modeBar, form, closedNote);

  const draftKey = () => `confab.draft.${store.state.me.id}.${convId}`;

  function autosize() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  }

  function stopTyping() {
    clearTimeout(idleTimer);
    if (typingSentAt && convId != null) store.sendTyping(convId, 'stop');
    typingSentAt = 0;
  }

  input.addEventListener('input', () => {
    autosize();
    if (mode && mode.kind === 'edit') return;
    localStorage.setItem(draftKey(), input.value);
    if (!input.value.trim()) { stopTyping(); return; }
    if (Date.now() - typingSentAt > typingRefresh()) {
      store.sendTyping(convId, 'start');
      typingSentAt = Date.now();
    }
    clearTimeout(idleTimer);
    idleTimer = setTimeout(stopTyping, TYPING_IDLE);
  });
  input.addEventListener('blur', stopTyping);
  input.addEventListener('keydown', (e) => {
    if (mentions.onKeyDown(e)) return;
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === 'ArrowUp' && !input.value && !mode && convId != null) {
      // Up in an empty composer edits my last text message.
      const t = store.threadOf(convId);
      const last = [...t.bySeq.values()].filter((m) => m.sender_id === store.state.me.id && m.kind === 'text' && !m.deleted)
        .sort((x, y) => y.seq - x.seq)[0];
      if (last) { e.preventDefault(); setMode({ kind: 'edit', message: last }); }
    } else if (e.key === 'Escape' && mode) {
      e.stopPropagation();
      setMode(null);
    }
  });
  input.addEventListener('paste', (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])];
    if (files.length) { e.preventDefault(); files.forEach(sendFile); }
  });
  fileInput.addEventListener('change', () => {
    const files = [...fileInput.files];
    fileInput.value = '';
    files.forEach(sendFile);
  });

  function setMode(next) {
    if (mode && mode.kind === 'edit') {
      input.value = localStorage.getItem(draftKey()) || '';
    }
    mode = next;
    modeBar.hidden = !mode;
    if (mode) {
      const m = mode.message;
      modeBar.replaceChildren(
        h('div.mode-text', {}, h('strong', { text: mode.kind === 'reply' ? `Replying to ${store.displayName(m.sender_id)}` : 'Editing message' }),
          h('span.muted', { text: messagePreview(m) })),
        iconButton(mode.kind === 'reply' ? 'Cancel reply' : 'Cancel editing', 'close', () => setMode(null), { testid: 'mode-cancel' }));
      if (mode.kind === 'edit') input.value = m.body.text || '';
    }
    autosize();
    input.focus();
  }

  async function submit() {
    const text = input.value.trim();
    if (!text || convId == null) return;
    if (mode && mode.kind === 'edit') {
      const m = mode.message;
      if (text !== m.body.text && !(await store.editMessage(convId, m.seq, text))) return;
      setMode(null);
      return;
    }
    const body = { text };
    if (mode && mode.kind === 'reply') body.reply_to = mode.message.seq;
    const mentions = store.mentionsIn(convId, text);
    if (mentions.length) body.mentions = mentions;
    store.send(convId, 'text', body);
    input.value = '';
    localStorage.removeItem(draftKey());
    stopTyping();
    if (mode) setMode(null);
    autosize();
    input.focus();
  }

  async function sendFile(file) {
    const target = convId;
    if (target == null) return;
    let caption = '';
    if (IMAGE_TYPES.has(file.type)) {
      caption = await imagePreviewDialog(file);
      if (caption === null) return;
    }
    await upload(target, file, { caption });
  }

  /** Uploads and sends; a failure keeps the file with Retry / Discard so nothing is lost. */
  async function upload(target, file, opts) {
    const bar = h('progress', { max: '1', value: '0', 'aria-label': `Uploading ${file.name || 'file'}` });
    const row = h('div.upload', { testid: 'upload-progress' }, h('span.upload-name', { text: file.name || 'Voice message' }), bar);
    uploads.append(row);
    try {
      await store.sendFile(target, file, { ...opts, onProgress: (p) => { bar.value = p; } });
      row.remove();
    } catch (e) {
      row.replaceWith(h('div.upload.failed', { role: 'alert' },
        h('span.upload-name', { text: `${file.name || 'File'} was not sent: ${e.message}` }),
        h('button.link', { type: 'button', text: 'Retry', on: { click: (ev) => { ev.target.closest('.upload').remove(); upload(target, file, opts); } } }),
        h('button.link', { type: 'button', text: 'Discard', on: { click: (ev) => ev.target.closest('.upload').remove() } })));
    }
  }

  async function toggleRecording() {
    if (recorder) { recorder.stop(); return; }
    if (convId == null) return;
    if (!navigator.mediaDevices || typeof MediaRecorder === 'undefined') {
      toast('Voice messages are not supported in this browser.');
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      toast(`Microphone unavailable: ${e.message}`);
      return;
    }
    const mimeType = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm'].find((t) => MediaRecorder.isTypeSupported(t)) || '';
    const rec = new MediaRecorder(stream, mimeType ? { mimeType } : {});
    const chunks = [];
    const started = performance.now();
    const target = convId;
    const tick = setInterval(() => { recTime.textContent = `● ${formatDuration(performance.now() - started)}`; }, 250);
    rec.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    rec.onstop = () => {
      clearInterval(tick);
      stream.getTracks().forEach((t) => t.stop());
      recorder = null;
      recordBtn.dataset.recording = 'false';
      setLabel(recordBtn, 'Record a voice message');
      setIcon(recordBtn, 'mic');
      recTime.hidden = true;
      const durationMs = Math.round(performance.now() - started);
      const type = (rec.mimeType || mimeType || 'audio/webm').split(';')[0];
      const blob = new Blob(chunks, { type });
      if (durationMs < 300 || !blob.size) { toast('Recording too short.'); return; }
      const ext = type.includes('ogg') ? 'ogg' : 'webm';
      upload(target, new File([blob], `voice-message.${ext}`, { type }), { durationMs });
    };
    rec.start(250);
    recorder = rec;
    recordBtn.dataset.recording = 'true';
    setLabel(recordBtn, 'Stop recording and send');
    setIcon(recordBtn, 'stop');
    recTime.textContent = '● 0:00';
    recTime.hidden = false;
  }

  return {
    el: root,
    input,
    setConversation(id) {
      if (id === convId) return;
      stopTyping();
      if (recorder) recorder.stop();
      mode = null;
      modeBar.hidden = true;
      convId = id;
      mentions.close();
      input.value = id == null ? '' : localStorage.getItem(draftKey()) || '';
      autosize();
    },
    /** Shows `reason` instead of the form (null: sending is allowed). */
    setReadOnly(reason) {
      const readOnly = !!reason;
      if (readOnly && !form.hidden) { stopTyping(); mentions.close(); if (recorder) recorder.stop(); }
      form.hidden = readOnly;
      input.disabled = readOnly;
      closedNote.hidden = !readOnly;
      closedNote.textContent = reason || '';
      if (readOnly) { mode = null; modeBar.hidden = true; }
    },
    reply(m) { setMode({ kind: 'reply', message: m }); },
    edit(m) { setMode({ kind: 'edit', message: m }); },
    cancelMode() { if (mode) { setMode(null); return true; } return false; },
    sendFiles(files) { [...files].forEach(sendFile); },
  };
}
