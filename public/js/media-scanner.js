// The container-neutral face of the two scanners: which container a generation's first
// bytes (or a mime) are, and the scanner for it. The blob player and the viewer ask
// this, never webm.js or mp4.js by name. No DOM here.

import { WebmScanner } from './webm.js';
import { Mp4Scanner } from './mp4.js';

/** 'webm', 'mp4' or null, from the first bytes of a generation (EBML magic, or a box). */
export function containerOfBytes(bytes) {
  if (!bytes || bytes.length < 8) return null;
  if (bytes[0] === 0x1a && bytes[1] === 0x45 && bytes[2] === 0xdf && bytes[3] === 0xa3) return 'webm';
  const type = String.fromCharCode(bytes[4], bytes[5], bytes[6], bytes[7]);
  if (['ftyp', 'styp', 'moov', 'moof', 'free', 'skip'].includes(type)) return 'mp4';
  return null;
}

/** 'webm', 'mp4' or null, from a mime such as `video/mp4;codecs=avc1.42E01E,opus`. */
export function containerOfMime(mime) {
  if (/^\s*(video|audio)\/webm\b/i.test(mime || '')) return 'webm';
  if (/^\s*(video|audio)\/mp4\b/i.test(mime || '')) return 'mp4';
  return null;
}

/**
 * A scanner for the generation that starts with `firstBytes` (the bytes decide; the mime
 * only where they cannot), not yet fed. Both have the same face: push(bytes),
 * jumpTo(offset), lastTime, firstTime (seconds), clusters ([{ offset, keyframe }]),
 * codecsParameter(), broken, container.
 */
export function scannerFor(firstBytes, mime) {
  const container = containerOfBytes(firstBytes) ?? containerOfMime(mime) ?? 'webm';
  return container === 'mp4' ? new Mp4Scanner() : new WebmScanner();
}

/**
 * A mime with codecs for a stream whose declared mime has none (`video/webm`,
 * `video/mp4`): the container from the first bytes, the codecs from its header. Null if
 * the header does not tell.
 */
export function mimeFromHeader(firstBytes, declared) {
  const scan = scannerFor(firstBytes, declared);
  scan.push(firstBytes);
  const codecs = scan.codecsParameter();
  if (!codecs) return null;
  return `video/${scan instanceof Mp4Scanner ? 'mp4' : 'webm'};codecs=${codecs}`;
}
