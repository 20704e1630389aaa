// Voice and video calls (WebRTC): placing a call from a chat, the incoming
// call screen with a ring, and the in-call view (video tiles, mute, camera,
// timer, hang-up). Signalling goes through the WebSocket as `call` frames
// (docs/protocol.md, "Calls"); the server rings every device, stops the
// others when one answers, and writes the history line. A group call is a
// mesh: one RTCPeerConnection per pair. To the server it is one call per
// invited member (leg ids `<base>-<user id>`); the caller tells each member
// who answers which legs are already up, and the newcomer offers to those
// members on their leg ids, so every pair connects.

import { avatar, h, toast } from './dom.js';
import { api } from '../api.js';
import * as store from '../store.js';
import { callLength } from '../text.js';

/** Groups up to this many members (me included) can call. */
export const MAX_CALL_MEMBERS = 6;

/** A random base for a call's leg ids (16 hex digits). */
const newCallBase = () => [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, '0')).join('');

/** What a failed getUserMedia means, in words. */
function mediaError(e, video) {
  const what = video ? 'camera and microphone' : 'microphone';
  if (e && (e.name === 'NotAllowedError' || e.name === 'SecurityError')) {
    return `Permission to use the ${what} was refused: allow it in the browser's site settings to call.`;
  }
  if (e && e.name === 'NotFoundError') return `No ${what} found.`;
  return `Could not open the ${what}: ${(e && e.message) || e}`;
}

/** A ring tone from an oscillator (no audio file to fetch), until stopped. */
function ringTone() {
  let ctx = null;
  let timer = null;
  try {
    ctx = new AudioContext();
    const beep = () => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = 440;
      gain.gain.value = 0.08;
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.8);
    };
    beep();
    timer = setInterval(beep, 2000);
  } catch { /* no audio output: ring silently */ }
  return () => {
    clearInterval(timer);
    if (ctx) ctx.close().catch(() => {});
  };
}

/** The calls controller: one call at a time; its overlay is `el`. */
export function createCalls() {
  const el = h('div.call-layer', { hidden: true });
  let call = null; // the current call, or null
  let ended = null; // timer that hides the "ended" screen

  store.onCall(onSignal);
  window.addEventListener('online', () => { for (const p of peers()) restartIce(p); });

  function peers() { return call ? [...call.peers.values()] : []; }

  /** Sends a signal to a peer of the call, on the leg the two share. */
  function send(peerId, signal, payload = null) {
    if (!call) return;
    const p = call.peers.get(peerId);
    const leg = (p && p.leg) || call.id;
    store.sendCall({ type: 'call', call_id: leg, conversation_id: call.convId, to_user_id: peerId, signal, payload });
  }

  function newPeer(id, leg, extra = {}) {
    return { id, leg, pc: null, pending: [], accepted: false, ended: false, offerer: false, ...extra };
  }

  /** The peer a frame is about: the sender, on a leg of this call. */
  function peerFor(f) {
    if (!call) return null;
    const p = call.peers.get(f.from_user_id);
    if (p && p.leg === f.call_id) return p;
    // A member who joined later offers on my leg: a new pair of the mesh.
    if (!p && f.signal === 'offer' && f.call_id === call.id && call.local && call.state !== 'ended') {
      const q = newPeer(f.from_user_id, call.id, { accepted: true });
      call.peers.set(q.id, q);
      return q;
    }
    return null;
  }

  /** Offers to a peer (who takes the answering side). */
  async function offerTo(p, extra = {}) {
    newPeerConnection(p);
    p.offerer = true;
    try {
      const offer = await p.pc.createOffer();
      await p.pc.setLocalDescription(offer);
      send(p.id, 'offer', { sdp: p.pc.localDescription.toJSON(), ...extra });
    } catch (e) { hangUp(`Could not start the call: ${e.message}`); }
  }

  function setState(s, message) {
    if (!call) return;
    call.state = s;
    if (message !== undefined) call.message = message;
    render();
  }

  async function iceConfig() {
    const policy = localStorage.getItem('confab.iceTransportPolicy') === 'relay' ? 'relay' : 'all';
    try {
      const r = await api('GET', '/v1/calls/ice-servers');
      return { iceServers: (r.ice_servers || []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })), iceTransportPolicy: policy };
    } catch {
      return { iceServers: [], iceTransportPolicy: policy };
    }
  }

  async function openMedia(video) {
    return navigator.mediaDevices.getUserMedia({ audio: true, video: video ? { width: 640, height: 360 } : false });
  }

  /** Starts a call from the open conversation. */
  async function start(conv, media) {
    if (call && call.state !== 'ended') { toast('You are already in a call.'); return; }
    clearTimeout(ended);
    const others = (conv.members || []).map((m) => m.user_id).filter((id) => id !== store.state.me.id);
    if (!others.length) return;
    const video = media === 'video';
    call = {
      id: newCallBase(), convId: conv.id, media, outgoing: true, state: 'ringing', peers: new Map(),
      title: store.conversationTitle(conv), local: null, muted: false, cameraOff: false, startedAt: null, message: 'Calling…',
    };
    render();
    try {
      call.local = await openMedia(video);
    } catch (e) {
      const msg = mediaError(e, video);
      call.state = 'ended';
      call.message = msg;
      render();
      toast(msg);
      finishLater();
      return;
    }
    call.config = await iceConfig();
    for (const id of others) {
      call.peers.set(id, newPeer(id, `${call.id}-${id}`));
      send(id, 'invite', { media });
    }
    render();
  }

  function newPeerConnection(p) {
    const pc = new RTCPeerConnection(call.config);
    p.pc = pc;
    for (const track of call.local.getTracks()) pc.addTrack(track, call.local);
    pc.onicecandidate = (e) => { if (e.candidate) send(p.id, 'ice', { candidate: e.candidate.toJSON() }); };
    pc.onicecandidateerror = (e) => {
      // 401: the TURN server refused our credentials (a wrong shared secret
      // on the server, or expired ones). With relay only, nothing can work.
      if (!call || e.errorCode !== 401) return;
      const msg = 'The TURN relay refused the call credentials (401): ask the server admin to check --turn-secret.';
      if (call.config.iceTransportPolicy === 'relay') hangUp(msg);
      else toast(msg);
    };
    pc.ontrack = (e) => { p.stream = e.streams[0] || new MediaStream([e.track]); render(); };
    pc.onconnectionstatechange = () => {
      if (!call || p.pc !== pc) return;
      const s = pc.connectionState;
      if (s === 'connected') {
        clearTimeout(p.failTimer);
        if (!call.startedAt) call.startedAt = Date.now();
        setState('connected', '');
      } else if (s === 'disconnected') {
        restartIce(p);
      } else if (s === 'failed') {
        if (call.state !== 'connected') {
          const relay = call.config.iceTransportPolicy === 'relay' || call.config.iceServers.some((x) => String(x.urls).includes('turn:'));
          hangUp(relay
            ? 'Could not connect the call: the TURN relay refused the credentials or cannot be reached. Ask the server admin to check the TURN settings.'
            : 'Could not connect the call: no network path between you (a TURN server may be needed).');
        } else restartIce(p);
      }
    };
    return pc;
  }

  /** A network change: the caller's side offers again with new candidates. */
  async function restartIce(p) {
    if (!call || !p.pc || !p.offerer || p.pc.signalingState !== 'stable') return;
    try {
      const offer = await p.pc.createOffer({ iceRestart: true });
      await p.pc.setLocalDescription(offer);
      send(p.id, 'offer', { sdp: p.pc.localDescription.toJSON() });
    } catch { /* the next change tries again */ }
  }

  async function onSignal(f) {
    const from = f.from_user_id;
    if (f.signal === 'invite') return incoming(f);
    if (call && !call.outgoing && call.state === 'ringing' && f.call_id === call.id
      && ['cancel', 'hangup'].includes(f.signal)) {
      // The ring stops: answered on another device (that cancel comes from
      // my own user), declined there, or the caller gave up.
      const reason = f.payload && f.payload.reason;
      end(reason === 'answered_elsewhere' ? 'Answered on another device' : reason === 'declined' ? 'Declined' : 'Missed call');
      return;
    }
    const p = peerFor(f);
    if (!p) return;
    // SDP and candidates reach every tab of mine: only the one in the call uses them.
    if (['offer', 'answer', 'ice'].includes(f.signal) && (call.state === 'ended' || !call.local)) return;
    switch (f.signal) {
      case 'ringing': if (call.outgoing) setState('ringing', 'Ringing…'); return;
      case 'accept': {
        if (p.accepted || !call.outgoing) return;
        p.accepted = true;
        if (call.state !== 'connected') setState('connecting', 'Connecting…');
        // The members already in the call, for the newcomer to connect to.
        const members = peers().filter((q) => q !== p && q.accepted && q.pc).map((q) => ({ user_id: q.id, call_id: q.leg }));
        await offerTo(p, { members });
        return;
      }
      case 'offer': case 'answer': {
        if (!p.pc) newPeerConnection(p);
        try {
          await p.pc.setRemoteDescription(f.payload.sdp);
          for (const c of p.pending.splice(0)) await p.pc.addIceCandidate(c).catch(() => {});
          if (f.signal === 'offer') {
            await p.pc.setLocalDescription(await p.pc.createAnswer());
            send(p.id, 'answer', { sdp: p.pc.localDescription.toJSON() });
            // A group call: connect to the members who were there first.
            for (const m of (f.payload && f.payload.members) || []) {
              if (call.peers.has(m.user_id) || m.user_id === store.state.me.id) continue;
              const q = newPeer(m.user_id, m.call_id, { accepted: true });
              call.peers.set(q.id, q);
              offerTo(q);
            }
          }
        } catch (e) { hangUp(`Could not connect the call: ${e.message}`); }
        return;
      }
      case 'ice':
        if (!f.payload || !f.payload.candidate) return;
        if (p.pc && p.pc.remoteDescription) p.pc.addIceCandidate(f.payload.candidate).catch(() => {});
        else p.pending.push(f.payload.candidate);
        return;
      case 'decline': case 'busy': case 'hangup': case 'cancel': {
        const reason = (f.payload && f.payload.reason) || f.signal;
        if (!call.outgoing && call.state === 'ringing') {
          // The ring stops: answered on another device, or the caller gave up.
          end(reason === 'answered_elsewhere' ? 'Answered on another device' : 'Missed call');
          return;
        }
        if (!call.outgoing && f.signal === 'cancel') return;
        p.ended = true;
        if (p.pc) p.pc.close();
        call.peers.delete(p.id);
        if (call.peers.size) { render(); return; }
        const words = { decline: 'Declined', busy: 'Busy', timeout: 'No answer', hangup: 'Call ended' };
        end(words[reason] || words[f.signal] || 'Call ended');
        return;
      }
      default:
    }
  }

  function incoming(f) {
    // The server answers busy once a call is accepted; a second ring
    // while this one still rings is ignored.
    if (call && call.state !== 'ended') return;
    clearTimeout(ended);
    const conv = store.state.conversations.get(f.conversation_id);
    call = {
      id: f.call_id, convId: f.conversation_id, media: (f.payload && f.payload.media) || 'audio', outgoing: false,
      state: 'ringing', peers: new Map([[f.from_user_id, newPeer(f.from_user_id, f.call_id, { accepted: true })]]),
      caller: f.from_user_id, title: conv ? store.conversationTitle(conv) : store.displayName(f.from_user_id),
      local: null, muted: false, cameraOff: false, startedAt: null, message: '',
    };
    call.stopRing = ringTone();
    send(f.from_user_id, 'ringing');
    render();
  }

  async function accept(video) {
    if (!call || call.outgoing || call.state !== 'ringing') return;
    if (call.stopRing) call.stopRing();
    setState('connecting', 'Connecting…');
    try {
      call.local = await openMedia(video);
    } catch (e) {
      const msg = mediaError(e, video);
      send(call.caller, 'decline', { reason: 'media' });
      end(msg);
      toast(msg);
      return;
    }
    call.config = await iceConfig();
    call.media = video ? 'video' : 'audio';
    send(call.caller, 'accept');
    render();
  }

  function decline() {
    if (!call || call.outgoing) return;
    send(call.caller, 'decline');
    end('Declined');
  }

  function hangUp(message = 'Call ended') {
    if (!call) return;
    for (const p of peers()) {
      if (call.outgoing && !p.accepted) send(p.id, 'cancel', { reason: 'cancelled' });
      else send(p.id, 'hangup');
    }
    end(message);
  }

  function end(message) {
    // Once ended, the reason shown stays: a late hang-up from the other
    // side (which may have ended for the same reason) does not replace it.
    if (!call || call.state === 'ended') return;
    if (call.stopRing) call.stopRing();
    for (const p of peers()) if (p.pc) p.pc.close();
    if (call.local) for (const t of call.local.getTracks()) t.stop();
    clearInterval(call.ticker);
    call.state = 'ended';
    call.message = message;
    render();
    finishLater();
  }

  function finishLater() {
    clearTimeout(ended);
    const was = call;
    ended = setTimeout(() => { if (call === was) { call = null; render(); } }, 4000);
  }

  function toggleMute() {
    if (!call || !call.local) return;
    call.muted = !call.muted;
    for (const t of call.local.getAudioTracks()) t.enabled = !call.muted;
    render();
  }

  function toggleCamera() {
    if (!call || !call.local) return;
    call.cameraOff = !call.cameraOff;
    for (const t of call.local.getVideoTracks()) t.enabled = !call.cameraOff;
    render();
  }

  /**
   * Devices: the microphone, camera and (where the browser can route
   * audio, setSinkId) speaker in use. A new microphone or camera replaces
   * the track on every peer connection without renegotiating.
   */
  async function listDevices() {
    try {
      return await navigator.mediaDevices.enumerateDevices();
    } catch {
      return [];
    }
  }

  async function useDevice(kind, deviceId) {
    if (!call || !call.local) return;
    if (kind === 'audiooutput') {
      call.speaker = deviceId;
      for (const v of document.querySelectorAll('.call-tile video')) {
        if (typeof v.setSinkId === 'function') v.setSinkId(deviceId).catch(() => {});
      }
      return;
    }
    const audio = kind === 'audioinput';
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(audio
        ? { audio: { deviceId: { exact: deviceId } } }
        : { video: { deviceId: { exact: deviceId }, width: 640, height: 360 } });
    } catch (e) {
      toast(mediaError(e, !audio));
      return;
    }
    const track = audio ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    if (!track || !call) return;
    const old = audio ? call.local.getAudioTracks()[0] : call.local.getVideoTracks()[0];
    track.enabled = audio ? !call.muted : !call.cameraOff;
    for (const p of peers()) {
      const sender = p.pc && p.pc.getSenders().find((x) => x.track && x.track.kind === track.kind);
      if (sender) await sender.replaceTrack(track).catch(() => {});
    }
    if (old) { call.local.removeTrack(old); old.stop(); }
    call.local.addTrack(track);
    render();
  }

  async function toggleDevices() {
    if (!call) return;
    call.showDevices = !call.showDevices;
    if (call.showDevices) call.devices = await listDevices();
    render();
  }

  function devicePanel() {
    if (!call.showDevices || !call.local) return null;
    const current = {
      audioinput: call.local.getAudioTracks()[0]?.getSettings().deviceId,
      videoinput: call.local.getVideoTracks()[0]?.getSettings().deviceId,
      audiooutput: call.speaker || 'default',
    };
    const canRoute = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
    const pick = (kind, label) => {
      const list = (call.devices || []).filter((d) => d.kind === kind);
      if (!list.length || (kind === 'videoinput' && !call.local.getVideoTracks().length)) return null;
      if (kind === 'audiooutput' && !canRoute) return null;
      const id = `call-${kind}`;
      const select = h('select', { id, testid: `call-device-${kind}`, on: { change: (e) => useDevice(kind, e.target.value) } },
        ...list.map((d, i) => h('option', { value: d.deviceId, text: d.label || `${label} ${i + 1}`, selected: d.deviceId === current[kind] })));
      return h('p.call-device', {}, h('label', { for: id, text: label }), select);
    };
    return h('div.call-devices', { testid: 'call-devices-panel' },
      pick('audioinput', 'Microphone'), pick('videoinput', 'Camera'), pick('audiooutput', 'Speaker'));
  }

  // One element per stream, kept across renders (a new one would restart
  // playback on every button press).
  const videos = new WeakMap();
  function video(stream, props) {
    let v = videos.get(stream);
    if (!v) {
      v = h('video', { autoplay: true, playsInline: true, ...props });
      v.srcObject = stream;
      if (call && call.speaker && typeof v.setSinkId === 'function') v.setSinkId(call.speaker).catch(() => {});
      videos.set(stream, v);
    }
    v.play().catch(() => {});
    return v;
  }

  function tile(stream, name, props, local = false) {
    const audioOnly = !stream.getVideoTracks().length;
    return h(`figure.call-tile${local ? '.local' : ''}${audioOnly ? '.audio-only' : ''}`, {},
      video(stream, props), audioOnly ? avatar(name, name.length) : null, h('figcaption', { text: name }));
  }

  function render() {
    el.hidden = !call;
    if (!call) { el.replaceChildren(); return; }
    const status = h('p.call-status', { testid: 'call-status', dataset: { state: call.state }, role: 'status', 'aria-live': 'polite' });
    const timer = h('span.call-timer', { testid: 'call-timer' });
    clearInterval(call.ticker);
    const tick = () => { timer.textContent = call && call.startedAt ? callLength(Date.now() - call.startedAt) : ''; };
    tick();
    if (call.state === 'connected') call.ticker = setInterval(tick, 1000);
    status.append(call.message || ({ ringing: 'Ringing…', connecting: 'Connecting…', connected: 'Connected', ended: 'Call ended' })[call.state], ' ', timer);
    if (!call.outgoing && call.state === 'ringing') {
      const who = store.displayName(call.caller);
      el.replaceChildren(h('div.call-card.incoming', { testid: 'call-incoming', role: 'alertdialog', 'aria-label': `Incoming call from ${who}` },
        h('h2', { text: who }),
        h('p.muted', { text: call.media === 'video' ? 'Incoming video call' : 'Incoming call' }),
        status,
        h('div.call-actions', {},
          h('button.primary', { type: 'button', testid: 'call-accept', text: 'Accept', on: { click: () => accept(call.media === 'video') } }),
          call.media === 'video' ? h('button', { type: 'button', testid: 'call-accept-voice', text: 'Accept without video', on: { click: () => accept(false) } }) : null,
          h('button.danger', { type: 'button', testid: 'call-decline', text: 'Decline', on: { click: decline } }))));
      return;
    }
    const tiles = h('div.call-tiles', {},
      ...peers().filter((p) => p.stream).map((p) => tile(p.stream, store.displayName(p.id), { testid: 'remote-video', dataset: { user: String(p.id) } })),
      call.local && call.local.getVideoTracks().length ? tile(call.local, 'You', { muted: true, testid: 'local-video' }, true) : null);
    const live = call.state !== 'ended';
    el.replaceChildren(h('div.call-card', { testid: 'call-view', role: 'dialog', 'aria-label': `Call with ${call.title}` },
      h('h2', { text: call.title }), status, tiles, devicePanel(),
      h('div.call-actions', {},
        h('button', { type: 'button', testid: 'call-mute', 'aria-pressed': String(call.muted), disabled: !live || !call.local, text: call.muted ? 'Unmute' : 'Mute', on: { click: toggleMute } }),
        h('button', { type: 'button', testid: 'call-camera', 'aria-pressed': String(call.cameraOff), disabled: !live || !call.local || !call.local.getVideoTracks().length, text: call.cameraOff ? 'Camera on' : 'Camera off', on: { click: toggleCamera } }),
        h('button', { type: 'button', testid: 'call-devices', 'aria-expanded': String(!!call.showDevices), disabled: !live || !call.local, text: 'Devices', on: { click: toggleDevices } }),
        live
          ? h('button.danger', { type: 'button', testid: 'call-hangup', text: 'Hang up', on: { click: () => hangUp() } })
          : h('button', { type: 'button', testid: 'call-close', text: 'Close', on: { click: () => { call = null; render(); } } }))));
  }

  /** Inbound bytes per kind over every peer connection (for tests and diagnostics). */
  async function stats() {
    const out = { audio: 0, video: 0, relay: false };
    for (const p of peers()) {
      if (!p.pc) continue;
      const report = await p.pc.getStats();
      const byId = new Map([...report.values()].map((r) => [r.id, r]));
      for (const r of report.values()) {
        if (r.type === 'inbound-rtp') out[r.kind] += r.bytesReceived || 0;
        if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
          const local = byId.get(r.localCandidateId);
          if (local && local.candidateType === 'relay') out.relay = true;
        }
      }
    }
    return out;
  }
  window.confabCallStats = stats;

  return { el, start, hangUp };
}
