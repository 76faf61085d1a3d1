// A small streaming fragmented-MP4 (ISO-BMFF) scanner for the viewer, the counterpart of
// webm.js with the same face: fed the bytes of one generation in order, in pieces cut
// anywhere, it learns the tracks (from `moov`: timescales, the video track, the `stsd`
// codecs) and, per `moof`, where the fragment starts, whether its video run opens on a
// sync sample, and the newest sample time. The blob player uses it to find the live edge
// of a growing file whose duration the browser does not know. No DOM here.
//
// Only `moov` and `moof` are held whole (they are small: a few KB); `mdat` and every
// other box are skipped without being kept, so memory stays bounded.

/** A `moov` or `moof` larger than this is not something MediaRecorder wrote. */
const MAX_HELD_BOX = 8 * 1024 * 1024;
/** ISO-BMFF sample flags: sample_is_non_sync_sample. */
const NON_SYNC = 0x00010000;

function u32(b, i) {
  return b[i] * 0x1000000 + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
}

function u64(b, i) {
  return u32(b, i) * 0x100000000 + u32(b, i + 4);
}

function fourcc(b, i) {
  return String.fromCharCode(b[i], b[i + 1], b[i + 2], b[i + 3]);
}

/** The child boxes of `b[from..to)`: [{ type, start (of the body), end }]. */
function children(b, from, to) {
  const out = [];
  let i = from;
  while (i + 8 <= to) {
    let size = u32(b, i);
    let head = 8;
    if (size === 1) {
      if (i + 16 > to) break;
      size = u64(b, i + 8);
      head = 16;
    } else if (size === 0) {
      size = to - i;
    }
    if (size < head || i + size > to) break;
    out.push({ type: fourcc(b, i + 4), start: i + head, end: i + size });
    i += size;
  }
  return out;
}

function child(b, box, type) {
  return children(b, box.start, box.end).find((c) => c.type === type) ?? null;
}

const hex2 = (n) => n.toString(16).padStart(2, '0').toUpperCase();

export class Mp4Scanner {
  constructor() {
    this.container = 'mp4';
    this.buf = new Uint8Array(0);
    /** Absolute offset (in the generation) of buf[0]. */
    this.pos = 0;
    this.skip = 0;
    /** track id -> { id, kind: 'video'|'audio'|..., timescale, codec, trex, next } */
    this.tracks = new Map();
    this.videoTrack = null;
    /** MediaSource codec names of the tracks, e.g. ['avc1.42E01E', 'opus']. */
    this.codecs = [];
    /** Newest sample start seen, seconds. */
    this.lastTime = null;
    this.firstTime = null;
    /** [{ offset, time, keyframe }] per `moof` (keyframe: its video run opens on a sync sample). */
    this.fragments = [];
    this.samples = 0;
    /** Samples of the video track: frames (the tests' measure of the source's frame rate). */
    this.videoFrames = 0;
    this.keyframes = 0;
    this.broken = null;
    this.sawHeader = false;
    this.sawInit = false;
  }

  /** WebmScanner's name for the fragments, so callers need not care which they hold. */
  get clusters() {
    return this.fragments;
  }

  /** The bytes continue at `offset` at a box boundary (a live-edge join's jump). */
  jumpTo(offset) {
    this.buf = new Uint8Array(0);
    this.skip = 0;
    this.pos = offset;
  }

  push(bytes) {
    if (this.broken) return;
    let data = bytes;
    if (this.skip > 0) {
      const n = Math.min(this.skip, data.length);
      this.skip -= n;
      this.pos += n;
      data = data.subarray(n);
      if (!data.length) return;
    }
    if (this.buf.length) {
      const joined = new Uint8Array(this.buf.length + data.length);
      joined.set(this.buf);
      joined.set(data, this.buf.length);
      data = joined;
    }
    let i = 0;
    while (i + 8 <= data.length && !this.broken) {
      let size = u32(data, i);
      const type = fourcc(data, i + 4);
      let head = 8;
      if (size === 1) {
        if (i + 16 > data.length) break;
        size = u64(data, i + 8);
        head = 16;
      }
      if (!/^[\x20-\x7e]{4}$/.test(type) || (size !== 0 && size < head)) {
        this.broken = `not an MP4 box at offset ${this.pos + i}`;
        break;
      }
      const start = this.pos + i;
      if (type === 'moov' || type === 'moof') {
        if (size === 0 || size > MAX_HELD_BOX) {
          this.broken = `a ${type} of ${size} bytes at offset ${start}`;
          break;
        }
        if (i + size > data.length) break; // wait for the whole box
        const box = { type, start: i + head, end: i + size };
        if (type === 'moov') this.moov(data, box);
        else this.moof(data, box, start);
        i += size;
        continue;
      }
      if (type === 'ftyp') this.sawHeader = true;
      if (size === 0) {
        // To the end of the file: nothing after it to find.
        this.skip = Infinity;
        this.pos += data.length;
        this.buf = new Uint8Array(0);
        return;
      }
      if (i + size <= data.length) {
        i += size;
      } else {
        this.skip = i + size - data.length;
        this.pos += data.length;
        this.buf = new Uint8Array(0);
        return;
      }
    }
    this.pos += i;
    this.buf = data.slice(i);
  }

  moov(b, moov) {
    this.sawInit = true;
    for (const trak of children(b, moov.start, moov.end).filter((c) => c.type === 'trak')) {
      const tkhd = child(b, trak, 'tkhd');
      const mdia = child(b, trak, 'mdia');
      if (!tkhd || !mdia) continue;
      const id = u32(b, tkhd.start + (b[tkhd.start] === 1 ? 20 : 12));
      const mdhd = child(b, mdia, 'mdhd');
      const hdlr = child(b, mdia, 'hdlr');
      const timescale = mdhd ? u32(b, mdhd.start + (b[mdhd.start] === 1 ? 20 : 12)) : 0;
      const handler = hdlr ? fourcc(b, hdlr.start + 8) : '';
      const kind = handler === 'vide' ? 'video' : handler === 'soun' ? 'audio' : handler;
      const stbl = child(b, child(b, mdia, 'minf') ?? { start: 0, end: 0 }, 'stbl');
      const stsd = stbl && child(b, stbl, 'stsd');
      const codec = stsd ? this.sampleEntry(b, stsd, kind) : null;
      this.tracks.set(id, { id, kind, timescale: timescale || 1000, codec, trex: null, next: null });
      if (kind === 'video' && this.videoTrack === null) this.videoTrack = id;
      if (codec && !this.codecs.includes(codec)) this.codecs.push(codec);
    }
    const mvex = child(b, moov, 'mvex');
    for (const trex of mvex ? children(b, mvex.start, mvex.end).filter((c) => c.type === 'trex') : []) {
      const track = this.tracks.get(u32(b, trex.start + 4));
      if (track) track.trex = { duration: u32(b, trex.start + 12), flags: u32(b, trex.start + 20) };
    }
  }

  /** The MediaSource codec name of the first sample entry of an `stsd`. */
  sampleEntry(b, stsd, kind) {
    const entries = children(b, stsd.start + 8, stsd.end);
    const e = entries[0];
    if (!e) return null;
    const type = e.type;
    if (type === 'avc1' || type === 'avc3') {
      if (kind === 'video') {
        this.width = (b[e.start + 24] << 8) | b[e.start + 25];
        this.height = (b[e.start + 26] << 8) | b[e.start + 27];
      }
      const avcC = children(b, e.start + 78, e.end).find((c) => c.type === 'avcC');
      if (!avcC) return type;
      return `${type}.${hex2(b[avcC.start + 1])}${hex2(b[avcC.start + 2])}${hex2(b[avcC.start + 3])}`;
    }
    const names = { Opus: 'opus', mp4a: 'mp4a.40.2', vp09: 'vp09.00.10.08', av01: 'av01.0.04M.08', hvc1: 'hvc1.1.6.L93.B0', hev1: 'hev1.1.6.L93.B0' };
    return names[type] ?? type;
  }

  moof(b, moof, offset) {
    let fragmentTime = null;
    let keyframe = null;
    for (const traf of children(b, moof.start, moof.end).filter((c) => c.type === 'traf')) {
      const tfhd = child(b, traf, 'tfhd');
      if (!tfhd) continue;
      const flags = u32(b, tfhd.start) & 0xffffff;
      const track = this.tracks.get(u32(b, tfhd.start + 4)) ?? { kind: null, timescale: 1000, trex: null, next: null };
      let at = tfhd.start + 8;
      if (flags & 0x1) at += 8;
      if (flags & 0x2) at += 4;
      const defaultDuration = flags & 0x8 ? u32(b, at) : track.trex?.duration ?? 0;
      if (flags & 0x8) at += 4;
      if (flags & 0x10) at += 4;
      const defaultFlags = flags & 0x20 ? u32(b, at) : track.trex?.flags ?? 0;
      const tfdt = child(b, traf, 'tfdt');
      let decode = tfdt ? (b[tfdt.start] === 1 ? u64(b, tfdt.start + 4) : u32(b, tfdt.start + 4)) : track.next ?? 0;
      const trafStart = decode;
      let lastStart = null;
      let firstFlags = null;
      for (const trun of children(b, traf.start, traf.end).filter((c) => c.type === 'trun')) {
        const tf = u32(b, trun.start) & 0xffffff;
        const count = u32(b, trun.start + 4);
        let p = trun.start + 8;
        if (tf & 0x1) p += 4;
        let first = null;
        if (tf & 0x4) {
          first = u32(b, p);
          p += 4;
        }
        for (let s = 0; s < count && p <= trun.end; s++) {
          const duration = tf & 0x100 ? u32(b, p) : defaultDuration;
          if (tf & 0x100) p += 4;
          if (tf & 0x200) p += 4;
          const sampleFlags = tf & 0x400 ? u32(b, p) : s === 0 && first !== null ? first : defaultFlags;
          if (tf & 0x400) p += 4;
          if (tf & 0x800) p += 4;
          if (firstFlags === null) firstFlags = sampleFlags;
          lastStart = decode;
          decode += duration;
          this.samples++;
          if (track.kind === 'video') this.videoFrames++;
        }
      }
      track.next = decode;
      track.base = trafStart;
      const seconds = (v) => v / track.timescale;
      if (fragmentTime === null || seconds(trafStart) < fragmentTime) fragmentTime = seconds(trafStart);
      if (this.firstTime === null || seconds(trafStart) < this.firstTime) this.firstTime = seconds(trafStart);
      if (lastStart !== null && (this.lastTime === null || seconds(lastStart) > this.lastTime)) this.lastTime = seconds(lastStart);
      const isVideo = track.kind === 'video' || (this.videoTrack === null && keyframe === null);
      if (isVideo && firstFlags !== null) {
        keyframe = (firstFlags & NON_SYNC) === 0;
        if (keyframe) this.keyframes++;
      }
    }
    this.fragments.push({ offset, time: fragmentTime, keyframe });
    if (this.fragments.length > 4096) this.fragments.splice(0, 1024);
  }

  /** A `codecs=` value for MediaSource from the `stsd` sample entries, or null. */
  codecsParameter() {
    return this.codecs.length ? this.codecs.join(',') : null;
  }
}
