// Resumable uploads for big files: tus 1.0 at /v1/media/uploads/ (see
// docs/protocol.md). The file goes up in chunks; when the connection drops
// or the server restarts, the upload asks the server how far it got (HEAD)
// and goes on from there, with backoff, instead of starting over.

import { ApiError, rawRequest } from './api.js';

/** Bytes per PATCH: progress is smooth within one, a failure costs at most one. */
const CHUNK = 4 * 1024 * 1024;
/** Consecutive failures (network or 5xx) before giving up; the user can retry. */
const MAX_FAILURES = 6;

/** Uploads `file` resumably; resolves to the media answer (like POST /v1/media). */
export async function uploadResumable(file, onProgress) {
  const created = await request('POST', '/v1/media/uploads/', {
    'Upload-Length': String(file.size),
    'Upload-Metadata': file.type ? `filetype ${btoa(file.type)}` : '',
  });
  const location = created.getResponseHeader('Location');
  if (!location) throw new ApiError(500, 'internal', 'The server did not say where to upload.');
  let offset = 0;
  let failures = 0;
  // The upload's id is the media id once it is complete (the last PATCH,
  // or a HEAD after a lost answer to it, says so in Confab-Media-Id).
  let mediaId = null;
  while (offset < file.size) {
    try {
      const end = Math.min(file.size, offset + CHUNK);
      const res = await request('PATCH', location, {
        'Content-Type': 'application/offset+octet-stream',
        'Upload-Offset': String(offset),
      }, file.slice(offset, end), (sent) => onProgress((offset + sent) / file.size));
      offset = Number(res.getResponseHeader('Upload-Offset'));
      mediaId = res.getResponseHeader('Confab-Media-Id');
      failures = 0;
      onProgress(offset / file.size);
    } catch (e) {
      // 4xx: the server refused the file or the upload is gone; retrying
      // would not help (409 means our offset was stale: ask again).
      const retryable = !(e instanceof ApiError) || e.status === 0 || e.status >= 500 || e.status === 409 || e.status === 423;
      failures += 1;
      if (!retryable || failures > MAX_FAILURES) throw e;
      await new Promise((r) => setTimeout(r, Math.min(8000, 250 * 2 ** failures) * (0.5 + Math.random() / 2)));
      try {
        const head = await request('HEAD', location, {});
        offset = Number(head.getResponseHeader('Upload-Offset'));
        mediaId = head.getResponseHeader('Confab-Media-Id');
      } catch (h) {
        if (h instanceof ApiError && h.status === 404) throw h; // the upload is gone
      }
    }
  }
  const id = mediaId || location.split('/').pop();
  return JSON.parse((await request('GET', `/v1/media/${encodeURIComponent(id)}/info`)).responseText);
}

/** One tus request (every one carries the protocol version). */
function request(method, url, headers = {}, body = undefined, onSent = null) {
  return rawRequest(method, url, { 'Tus-Resumable': '1.0.0', ...headers }, body, onSent);
}
