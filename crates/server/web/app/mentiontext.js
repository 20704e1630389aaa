// @mentions in message text, as pure functions (unit-tested without a
// browser): the "@query" being typed before the caret, and whether a text
// still names `@username`.

const NAME_CHAR = /[a-z0-9_.-]/;

/**
 * The mention being typed at the end of `before` (the text before the
 * caret): {at, query} with the index of the "@" and what follows it,
 * lower-cased; null unless the "@" starts the text or follows whitespace.
 */
export function typedMention(before) {
  const m = /(^|\s)@([A-Za-z0-9_.-]*)$/.exec(before);
  return m ? { at: before.length - m[2].length - 1, query: m[2].toLowerCase() } : null;
}

/**
 * Whether `text` has `@username` as a whole word, case-insensitively;
 * dots or dashes right after it are punctuation ("@ann." names ann).
 */
export function hasMention(text, username) {
  const lower = text.toLowerCase();
  const at = `@${username.toLowerCase()}`;
  for (let i = lower.indexOf(at); i >= 0; i = lower.indexOf(at, i + 1)) {
    const before = i === 0 ? '' : lower[i - 1];
    const next = lower.slice(i + at.length).replace(/^[.-]+(?=$|[^a-z0-9_.-])/, '')[0] || '';
    if (!NAME_CHAR.test(before) && !NAME_CHAR.test(next)) return true;
  }
  return false;
}
