// Closes the small gaps between the fragments of a live fragmented MP4, for MediaSource.
// No DOM here: node tests it.
//
// Why: Chromium's MediaRecorder MP4 stamps each fragment's `tfdt` with the capture
// time while its sample durations are nominal, so a track's next fragment starts 10-70 ms
// after the previous one ends (seen: video 13-66 ms, Opus audio 20-49 ms). MSE calls a
// jump of over twice the last frame's duration a discontinuity (two 20 ms Opus frames:
// 40 ms) and then drops every track's frames up to the next random access point: the
// video of that whole fragment (1 s) went missing from the buffered ranges, at random
// fragments. Whole-file playback (blob mode, the recordings) does not care.
//
// What it does: holds only a `moof` until it is whole (mdat and every other box pass
// through at once, untouched) and, per track, moves a fragment's `tfdt` back to where the
// track's previous fragment ended, adding the gap to its first sample's duration (so
// every later sample keeps its time, and the track's end is unchanged). Only gaps under
// half a second, only when the `trun` carries per-sample durations (Chromium's does);
// everything else passes unchanged. A `moof` it cannot read passes unchanged.

import { Mp4Scanner } from './mp4.js';

/** A gap this long (seconds) or longer is a real one: left alone. */
const MAX_GAP = 0.5;
const MAX_HELD_BOX = 8 * 1024 * 1024;

function u32(b, i) {
  return b[i] * 0x1000000 + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
}

function setU32(b, i, v) {
  b[i] = Math.floor(v / 0x1000000) & 0xff;
  b[i + 1] = (v >>> 16) & 0xff;
  b[i + 2] = (v >>> 8) & 0xff;
  b[i + 3] = v & 0xff;
}

function boxes(b, from, to) {
  const out = [];
  for (let i = from; i + 8 <= to; ) {
    const size = u32(b, i);
    if (size < 8 || i + size > to) break;
    out.push({ type: String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]), start: i + 8, end: i + size });
    i += size;
  }
  return out;
}

function concat(parts) {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export class Mp4Gaps {
  constructor() {
    this.buf = new Uint8Array(0);
    /** Bytes of a passed-through box still to come. */
    this.pass = 0;
    /** The tracks (ids, timescales, trex), from the moov. */
    this.header = new Mp4Scanner();
    /** track id -> where its last fragment ended (track timescale). */
    this.ends = new Map();
    /** [{ track, gap }] gaps closed, in track units (for the tests and the log). */
    this.closed = [];
  }

  /** A live-edge join: the bytes continue at another fragment; no end to close up to. */
  jump() {
    this.ends.clear();
  }

  /** Bytes in, bytes out (maybe fewer now: a moof is held until whole). */
  push(bytes) {
    const out = [];
    let data = bytes;
    if (this.buf.length) {
      data = concat([this.buf, bytes]);
      this.buf = new Uint8Array(0);
    }
    let i = 0;
    while (i < data.length) {
      if (this.pass > 0) {
        const n = Math.min(this.pass, data.length - i);
        out.push(data.subarray(i, i + n));
        this.pass -= n;
        i += n;
        continue;
      }
      if (i + 8 > data.length) break;
      let size = u32(data, i);
      const type = String.fromCharCode(data[i + 4], data[i + 5], data[i + 6], data[i + 7]);
      if (size === 1) {
        if (i + 16 > data.length) break;
        size = u32(data, i + 8) * 0x100000000 + u32(data, i + 12);
      }
      const held = (type === 'moov' || type === 'moof') && size >= 8 && size <= MAX_HELD_BOX;
      if (!held) {
        // Everything else passes at once; a size it cannot trust: the rest as it is.
        this.pass = size >= 8 ? size : Infinity;
        continue;
      }
      if (i + size > data.length) break;
      const box = data.slice(i, i + size);
      if (type === 'moov') this.header.push(box);
      else this.closeGaps(box);
      out.push(box);
      i += size;
    }
    if (i < data.length) this.buf = data.slice(i);
    return out.length ? concat(out) : new Uint8Array(0);
  }

  /** Rewrites one whole `moof` (its own copy) in place. */
  closeGaps(b) {
    for (const traf of boxes(b, 8, b.length).filter((x) => x.type === 'traf')) {
      const kids = boxes(b, traf.start, traf.end);
      const tfhd = kids.find((x) => x.type === 'tfhd');
      const tfdt = kids.find((x) => x.type === 'tfdt');
      if (!tfhd || !tfdt) continue;
      const id = u32(b, tfhd.start + 4);
      const track = this.header.tracks.get(id);
      if (!track) continue;
      const flags = u32(b, tfhd.start) & 0xffffff;
      let at = tfhd.start + 8 + (flags & 0x1 ? 8 : 0) + (flags & 0x2 ? 4 : 0);
      const defaultDuration = flags & 0x8 ? u32(b, at) : track.trex?.duration ?? 0;
      const v1 = b[tfdt.start] === 1;
      const base = v1 ? u32(b, tfdt.start + 4) * 0x100000000 + u32(b, tfdt.start + 8) : u32(b, tfdt.start + 4);
      let total = 0;
      let firstDuration = null; // byte position of the first sample's duration
      for (const trun of kids.filter((x) => x.type === 'trun')) {
        const tf = u32(b, trun.start) & 0xffffff;
        const count = u32(b, trun.start + 4);
        let p = trun.start + 8 + (tf & 0x1 ? 4 : 0) + (tf & 0x4 ? 4 : 0);
        for (let s = 0; s < count && p <= trun.end; s++) {
          if (tf & 0x100) {
            if (firstDuration === null && total === 0) firstDuration = p;
            total += u32(b, p);
            p += 4;
          } else {
            total += defaultDuration;
          }
          p += (tf & 0x200 ? 4 : 0) + (tf & 0x400 ? 4 : 0) + (tf & 0x800 ? 4 : 0);
        }
      }
      const end = this.ends.get(id);
      const gap = end === undefined ? 0 : base - end;
      if (gap > 0 && gap < MAX_GAP * track.timescale && firstDuration !== null && (v1 || end < 0x100000000)) {
        if (v1) {
          setU32(b, tfdt.start + 4, Math.floor(end / 0x100000000));
          setU32(b, tfdt.start + 8, end % 0x100000000);
        } else {
          setU32(b, tfdt.start + 4, end);
        }
        setU32(b, firstDuration, u32(b, firstDuration) + gap);
        this.closed.push({ track: id, gap });
        if (this.closed.length > 100) this.closed.shift();
      }
      this.ends.set(id, base + total);
    }
  }
}
