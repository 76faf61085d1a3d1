// The wire protocol v1 (docs/protocol.md), as the pages speak it: the 16-byte frame
// header, socket URLs, and close codes in plain words. No DOM here: node imports it too.

export const HEADER_LEN = 16;

/** Builds a binary frame: generation u64 BE, offset u64 BE, then the payload bytes. */
export function encodeFrame(generation, offset, payload) {
  const bytes = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
  const frame = new Uint8Array(HEADER_LEN + bytes.byteLength);
  const view = new DataView(frame.buffer);
  view.setBigUint64(0, BigInt(generation));
  view.setBigUint64(8, BigInt(offset));
  frame.set(bytes, HEADER_LEN);
  return frame;
}

/**
 * Splits a binary frame (ArrayBuffer or Uint8Array) into its header and payload.
 * Generations are Date.now()-based, offsets are bounded by the server's buffer limit:
 * both fit a JS number exactly. Returns null for a frame shorter than the header.
 */
export function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength < HEADER_LEN) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    generation: Number(view.getBigUint64(0)),
    offset: Number(view.getBigUint64(8)),
    payload: bytes.subarray(HEADER_LEN),
  };
}

/** ws:// or wss:// URL for a path on this page's server, with the non-empty params. */
export function socketUrl(path, params = {}, base = globalThis.location) {
  const url = new URL(path, base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  return url.toString();
}

/** 1-64 of [A-Za-z0-9_-]: stream names and publisher session ids. */
export function isToken(s) {
  return typeof s === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(s);
}

export function randomToken(len = 16) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const rnd = crypto.getRandomValues(new Uint8Array(len));
  return Array.from(rnd, (b) => alphabet[b % alphabet.length]).join('');
}

/** Close codes from docs/protocol.md: what to tell a person, and whether retrying helps. */
const CLOSE_CODES = {
  1000: { text: 'closed normally', retry: false },
  1001: { text: 'the server is shutting down', retry: true },
  1006: { text: 'the connection was lost', retry: true },
  1009: { text: 'a piece of video was larger than the server accepts (try a shorter chunk time or a lower bitrate)', retry: false },
  4400: { text: 'the server refused a malformed message (a bug in this page)', retry: false },
  4401: { text: 'wrong or missing publish key or token', retry: false },
  4403: { text: 'this token does not allow it on this stream', retry: false },
  4408: { text: 'this connection was too slow to keep up', retry: true },
  4409: { text: 'another publisher is already live on this stream', retry: false },
  4410: { text: 'an admin ended this publish session', retry: false },
  4413: { text: 'the recording grew past the server\'s buffer limit; starting a new one', retry: true },
  4422: { text: 'the server missed part of the recording; starting a new one', retry: true },
  4429: { text: 'the server is full (too many streams or viewers)', retry: true },
  4503: { text: 'the server could not check your access (auth service unavailable)', retry: true },
};

/** Whether a close reason adds nothing to our own words for the code. */
function saysTheSame(reason, text) {
  const words = (t) => t.toLowerCase().replace(/\(.*?\)/g, '').replace(/[^a-z0-9 ]/g, ' ').split(/\s+/).filter(Boolean).join(' ');
  const r = words(reason);
  const t = words(text);
  return r === t || t.includes(r) || r.includes(t);
}

/** A close event in plain words: { code, reason, text, retry }. */
export function describeClose(code, reason) {
  const known = CLOSE_CODES[code];
  const text = known ? known.text : `connection closed (code ${code})`;
  return {
    code,
    reason: reason || '',
    // The server's reason, unless it only says what the text already says.
    text: reason && code !== 1006 && !saysTheSame(reason, text) ? `${text} — server said: “${reason}”` : text,
    retry: known ? known.retry : true,
  };
}

/** Formats a byte count like 1.2 MB. */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

export function formatBits(bps) {
  if (!Number.isFinite(bps) || bps <= 0) return '—';
  if (bps < 1e6) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${(bps / 1e6).toFixed(2)} Mbit/s`;
}

export function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, '0');
  return `${h ? h + ':' : ''}${mm}:${String(sec).padStart(2, '0')}`;
}

/**
 * A generation number as people read it: the time it started (the recorder numbers
 * generations from Date.now()), with the number itself when it is not a time.
 */
export function generationText(generation) {
  if (generation === null || generation === undefined) return '—';
  // 2001-09-09 .. 2286: a Date.now()-based number; anything else is just a number.
  if (generation < 1e12 || generation > 1e13) return `#${generation}`;
  const d = new Date(generation);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `started ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
