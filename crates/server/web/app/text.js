// Messages in words, for lists, notifications and system notices: plain
// strings, no DOM (the state module uses them too).

export function formatDuration(ms) {
  const s = Math.round((ms || 0) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** One line describing a message, for lists and notifications. */
export function messagePreview(m) {
  if (!m) return '';
  if (m.deleted) return 'Message deleted';
  const b = m.body || {};
  switch (m.kind) {
    case 'text': return b.text || '';
    case 'image': return b.caption ? `Photo: ${b.caption}` : 'Photo';
    case 'voice': return `Voice message (${formatDuration(b.duration_ms)})`;
    case 'file': return `File: ${b.name || 'file'}`;
    case 'encrypted': return 'Encrypted message';
    case 'system': return systemText(m, () => 'Someone');
    default: return '';
  }
}

/** A call's length as m:ss. */
export function callLength(ms) {
  const s = Math.floor((ms || 0) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** A `call_ended` notice in words; `caller` is the caller's name ("You" for me). */
function callText(b, caller) {
  const kind = b.media === 'video' ? 'Video call' : 'Call';
  const mine = caller === 'You';
  switch (b.outcome) {
    case 'answered': return `${kind} ended · ${callLength(b.duration_ms)}`;
    case 'declined': return mine ? `${kind} declined` : `You declined a ${kind.toLowerCase()} from ${caller}`;
    case 'busy': return mine ? `${kind} not answered: busy` : `Missed ${kind.toLowerCase()} from ${caller} (busy)`;
    default: return mine ? `${kind} not answered` : `Missed ${kind.toLowerCase()} from ${caller}`;
  }
}

/** A system notice in words; `name(id)` gives display names. */
export function systemText(m, name) {
  const b = m.body || {};
  const by = name(b.by_user_id);
  const object = (id) => { const n = name(id); return n === 'You' ? 'you' : n; }; // "Ann added you"
  switch (b.event) {
    case 'group_created': return `${by} created the group “${b.title || ''}”`;
    case 'member_joined': return `${by} added ${(b.user_ids || []).map(object).join(', ')}`;
    case 'member_left': return b.reason === 'removed' ? `${by} removed ${object(b.user_id)}` : `${name(b.user_id)} left`;
    case 'role_changed': return `${name(b.user_id)} is now ${b.role}`;
    case 'conversation_updated': return `${by} updated the group${b.title ? ` (“${b.title}”)` : ''}`;
    case 'message_edited': return `${by} edited a message`;
    case 'message_deleted': return `${by} deleted a message`;
    case 'reaction_changed': return b.emoji ? `${by} reacted ${b.emoji}` : `${by} removed a reaction`;
    case 'call_ended': return callText(b, name(m.sender_id));
    default: return b.event || 'Update';
  }
}
