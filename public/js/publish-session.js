// The recorder page's publish session id, kept in sessionStorage per stream: a page
// reloaded while live connects again with the same `?session=`, and the server lets it
// take its stream over at once instead of refusing it (4409) until the old, half-open
// sockets time out. A deliberate Stop forgets it, so the next Start is a new session.

import { randomToken } from './protocol.js';

const key = (stream) => `blobcast-session:${stream}`;

function storage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    // Storage can be off (privacy settings, sandboxed frames): a fresh id each time.
    return null;
  }
}

/** The session id this tab publishes `stream` with: the remembered one, or a new one. */
export function publishSession(stream) {
  const store = storage();
  let id = null;
  try {
    id = store?.getItem(key(stream)) ?? null;
  } catch {}
  if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    id = randomToken(16);
    try {
      store?.setItem(key(stream), id);
    } catch {}
  }
  return id;
}

/** The session ended on purpose: the next Start of `stream` in this tab is a new one. */
export function forgetPublishSession(stream) {
  try {
    storage()?.removeItem(key(stream));
  } catch {}
}
