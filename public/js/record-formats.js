// What the recorder page records: the formats this browser's MediaRecorder offers, and
// the one it picks. WebM and MP4 are equals on the server (relay, live join, blob mode);
// the page follows the browser: MP4 where the browser prefers it or has nothing else
// (Safari), WebM otherwise. The decision is pure (node tests it); `probePreferredMime`
// asks the browser.

/** The formats the page knows, in the order tried within each container. */
export const WEBM_CANDIDATES = ['video/webm;codecs=vp9,opus', 'video/webm;codecs=vp8,opus', 'video/webm;codecs=h264,opus'];
export const MP4_CANDIDATES = [
  // Chrome (since M126) records this, and its MediaSource plays it.
  'video/mp4;codecs=avc1.42E01E,opus',
  // Safari: H.264 and AAC.
  'video/mp4;codecs=avc1,mp4a.40.2',
  'video/mp4;codecs=avc1.42E01E,mp4a.40.2',
  'video/mp4',
];
export const MIME_CANDIDATES = [...WEBM_CANDIDATES, ...MP4_CANDIDATES];

/** 'webm', 'mp4' or null. */
export function containerOf(mime) {
  const m = /^\s*video\/(webm|mp4)\b/i.exec(mime || '');
  return m ? m[1].toLowerCase() : null;
}

/**
 * The mime to record: the one asked for if the browser can record it (else null);
 * with none asked, the first supported format of the container the browser prefers
 * (`preferred`: the mime its MediaRecorder picks by itself, '' or null if unknown),
 * else the first supported WebM, else the first supported MP4.
 */
export function pickMime(wanted, isTypeSupported, preferred = null) {
  if (wanted) return isTypeSupported(wanted) ? wanted : null;
  const supported = MIME_CANDIDATES.filter((m) => isTypeSupported(m));
  const first = containerOf(preferred);
  return supported.find((m) => containerOf(m) === first) ?? supported[0] ?? null;
}

/** The formats of MIME_CANDIDATES this browser records, for the page's format list. */
export function supportedMimes(isTypeSupported) {
  return MIME_CANDIDATES.filter((m) => isTypeSupported(m));
}

/** One line for people: "WebM (VP9, VP8) and MP4 (H.264 + Opus)". */
export function describeFormats(mimes) {
  const names = { vp9: 'VP9', vp8: 'VP8', h264: 'H.264', avc1: 'H.264', 'avc1.42e01e': 'H.264', opus: 'Opus', 'mp4a.40.2': 'AAC' };
  const parts = [];
  for (const container of ['webm', 'mp4']) {
    const kinds = mimes
      .filter((m) => containerOf(m) === container)
      .map((m) => {
        const codecs = /codecs=([^;]+)/i.exec(m)?.[1].split(',').map((c) => names[c.trim().toLowerCase()] ?? c.trim());
        return codecs ? (container === 'webm' ? codecs[0] : codecs.join(' + ')) : null;
      })
      .filter(Boolean);
    if (mimes.some((m) => containerOf(m) === container)) {
      parts.push(`${container === 'webm' ? 'WebM' : 'MP4'}${kinds.length ? ` (${[...new Set(kinds)].join(', ')})` : ''}`);
    }
  }
  return parts.join(' and ');
}

/**
 * The mime this browser's MediaRecorder chooses when asked for nothing: Safari says MP4,
 * Chromium and Firefox WebM. Known only once a recorder has started (Chromium leaves
 * `mimeType` empty until then), so a throw-away recorder runs for a moment on `stream`.
 * '' if the browser does not tell within 500 ms.
 */
export async function probePreferredMime(stream) {
  try {
    const rec = new MediaRecorder(stream);
    if (rec.mimeType) return rec.mimeType;
    const started = new Promise((resolve) => {
      rec.onstart = resolve;
      setTimeout(resolve, 500);
    });
    rec.start();
    await started;
    const mime = rec.mimeType;
    rec.stop();
    return mime || '';
  } catch {
    return '';
  }
}
