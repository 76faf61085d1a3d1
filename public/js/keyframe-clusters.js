// Re-clusters a live WebM stream so that every Cluster opens with a video keyframe,
// for Firefox's MediaSource. No DOM here: node tests it.
//
// Why: Firefox's MSE WebM demuxer needs a random access point at the start of every
// Cluster. It drops the video frames of a cluster that opens with an inter frame (and
// with them everything up to the next cluster that opens with a keyframe). MediaRecorder
// does not cut clusters at keyframes: Chromium starts a new cluster every ~0.4 s and
// keyframes come every second, and Firefox's recorder makes one keyframe per file and a
// cluster per second. So a Firefox viewer kept only the keyframe-led pieces: the audio
// clock ran on while the picture froze (16 frames in 8 s of Chromium's VP9, 1 frame of
// Firefox's own VP8). Chromium's MSE and every browser's whole-file playback take such
// files as they are.
//
// What it does: drops each input Cluster's header and Timecode, and opens an output
// Cluster (unknown size, as MediaRecorder writes them) at every video keyframe, with
// the block's absolute time as its Timecode; each block's 16-bit relative timecode is
// rewritten against it. A cluster would overflow the 16-bit range after 32.767 s: a new
// one is opened then, keyframe or not. The Segment's size becomes unknown (the byte
// count changes). Position, PrevSize, Void and CRC-32 inside clusters are dropped; every
// other element passes unchanged. Bytes it cannot parse are passed through from then on,
// untouched, so the demuxer reports them as before.

const ID = {
  EBML: 0x1a45dfa3,
  Segment: 0x18538067,
  Cluster: 0x1f43b675,
  Tracks: 0x1654ae6b,
  TrackEntry: 0xae,
  TrackNumber: 0xd7,
  TrackType: 0x83,
  Timecode: 0xe7,
  SimpleBlock: 0xa3,
  BlockGroup: 0xa0,
  Block: 0xa1,
  ReferenceBlock: 0xfb,
};

/** Level-1 elements: one of these ends a cluster of unknown size. */
const TOP_LEVEL = new Set([0x1f43b675, 0x1c53bb6b, 0x1254c367, 0x114d9b74, 0x1549a966, 0x1654ae6b, 0x1043a770, 0x1941a469]);
/** Cluster children that name byte positions or fill space: meaningless once re-cut. */
const DROPPED_IN_CLUSTER = new Set([0xa7, 0xab, 0xec, 0xbf]);
/** No element this stream carries comes near this; a larger size means bytes out of step. */
const MAX_ELEMENT = 64 * 1024 * 1024;

const UNKNOWN_SIZE = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/** An EBML variable-length integer at `i`: { length, value, unknown }, null if incomplete, 'bad' if invalid. */
function vint(buf, i, isId) {
  if (i >= buf.length) return null;
  const first = buf[i];
  let length = 1;
  let mask = 0x80;
  while (length <= 8 && !(first & mask)) {
    length++;
    mask >>= 1;
  }
  if (length > 8 || (isId && length > 4)) return 'bad';
  if (i + length > buf.length) return null;
  let value = isId ? first : first & (mask - 1);
  let allOnes = (first & (mask - 1)) === mask - 1;
  for (let k = 1; k < length; k++) {
    value = value * 256 + buf[i + k];
    if (buf[i + k] !== 0xff) allOnes = false;
  }
  return { length, value, unknown: !isId && allOnes };
}

function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function uintBytes(v) {
  const bytes = [];
  do {
    bytes.unshift(v % 256);
    v = Math.floor(v / 256);
  } while (v > 0);
  return bytes;
}

function readUint(buf, from, to) {
  let v = 0;
  for (let k = from; k < to; k++) v = v * 256 + buf[k];
  return v;
}

/** The children of a master element's body: [{ id, start, body, end }]. */
function children(buf, from, to) {
  const out = [];
  let i = from;
  while (i < to) {
    const id = vint(buf, i, true);
    if (!id || id === 'bad') break;
    const size = vint(buf, i + id.length, false);
    if (!size || size === 'bad') break;
    const body = i + id.length + size.length;
    const end = Math.min(to, size.unknown ? to : body + size.value);
    out.push({ id: id.value, start: i, body, end });
    i = end;
  }
  return out;
}

export class KeyframeClusters {
  constructor() {
    this.buf = new Uint8Array(0);
    /** Bytes of the input consumed so far (for clusters of known size). */
    this.pos = 0;
    this.inCluster = false;
    this.clusterEnd = null;
    this.inTimecode = 0;
    this.outTimecode = null;
    this.videoTrack = null;
    this.passThrough = false;
    this.clustersOut = 0;
  }

  /**
   * An intended jump in the input (a live-edge join: from the init segment's end to a
   * cluster that opens with a keyframe): whatever partial element was held is dropped.
   */
  jump() {
    this.buf = new Uint8Array(0);
    this.inCluster = false;
    this.clusterEnd = null;
  }

  /** Feeds input bytes; returns the output bytes that are ready (maybe none). */
  push(bytes) {
    if (this.passThrough) return bytes;
    this.buf = this.buf.length ? concat([this.buf, bytes]) : bytes;
    const out = [];
    let i = 0;
    for (;;) {
      if (this.inCluster && this.clusterEnd !== null && this.pos + i >= this.clusterEnd) {
        this.inCluster = false;
        this.clusterEnd = null;
      }
      const id = vint(this.buf, i, true);
      if (id === null) break;
      const size = id === 'bad' ? 'bad' : vint(this.buf, i + id.length, false);
      if (size === null) break;
      if (id === 'bad' || size === 'bad' || (!size.unknown && size.value > MAX_ELEMENT)) {
        // Out of step: from here on the bytes go through as they are.
        this.passThrough = true;
        out.push(this.buf.subarray(i));
        i = this.buf.length;
        break;
      }
      const header = id.length + size.length;
      const start = i;
      if (id.value === ID.Segment) {
        // Descend; its size changes with the re-cut, so it becomes unknown.
        out.push(this.buf.subarray(start, start + id.length), Uint8Array.from(UNKNOWN_SIZE));
        i += header;
        continue;
      }
      if (id.value === ID.Cluster) {
        this.inCluster = true;
        this.clusterEnd = size.unknown ? null : this.pos + start + header + size.value;
        this.inTimecode = 0;
        i += header;
        continue;
      }
      if (this.inCluster && TOP_LEVEL.has(id.value)) {
        this.inCluster = false;
        this.clusterEnd = null;
      }
      if (size.unknown) {
        // An unknown-size element other than Segment/Cluster: nothing to re-cut inside.
        this.passThrough = true;
        out.push(this.buf.subarray(i));
        i = this.buf.length;
        break;
      }
      const end = start + header + size.value;
      if (end > this.buf.length) break; // wait for the whole element
      const body = start + header;
      if (!this.inCluster) {
        if (id.value === ID.Tracks) this.readTracks(body, end);
        out.push(this.buf.subarray(start, end));
      } else if (id.value === ID.Timecode) {
        this.inTimecode = readUint(this.buf, body, end);
      } else if (id.value === ID.SimpleBlock || id.value === ID.BlockGroup) {
        out.push(...this.block(id.value, start, body, end));
      } else if (!DROPPED_IN_CLUSTER.has(id.value)) {
        out.push(this.buf.subarray(start, end));
      }
      i = end;
    }
    this.pos += i;
    // Keep the unconsumed tail (a copy, so the caller's buffer can go).
    this.buf = i >= this.buf.length ? new Uint8Array(0) : this.buf.slice(i);
    return out.length === 1 ? out[0] : concat(out);
  }

  readTracks(from, to) {
    for (const entry of children(this.buf, from, to)) {
      if (entry.id !== ID.TrackEntry) continue;
      let number = null;
      let type = null;
      for (const c of children(this.buf, entry.body, entry.end)) {
        if (c.id === ID.TrackNumber) number = readUint(this.buf, c.body, c.end);
        if (c.id === ID.TrackType) type = readUint(this.buf, c.body, c.end);
      }
      if (type === 1 && number !== null && this.videoTrack === null) this.videoTrack = number;
    }
  }

  /** A SimpleBlock or BlockGroup: maybe a new cluster before it, and its timecode rewritten. */
  block(kind, start, body, end) {
    const buf = this.buf;
    let blockBody = body;
    let keyframe;
    if (kind === ID.SimpleBlock) {
      const track = vint(buf, body, false);
      if (!track || track === 'bad' || body + track.length + 3 > end) return [buf.subarray(start, end)];
      keyframe = (buf[body + track.length + 2] & 0x80) !== 0;
    } else {
      const kids = children(buf, body, end);
      const block = kids.find((c) => c.id === ID.Block);
      if (!block) return [buf.subarray(start, end)];
      blockBody = block.body;
      keyframe = !kids.some((c) => c.id === ID.ReferenceBlock);
    }
    const track = vint(buf, blockBody, false);
    if (!track || track === 'bad' || blockBody + track.length + 3 > end) return [buf.subarray(start, end)];
    const at = blockBody + track.length;
    const relative = (buf[at] << 24) >> 16 | buf[at + 1]; // signed 16-bit
    const time = this.inTimecode + relative;
    const video = track.value === this.videoTrack;
    const parts = [];
    const offset = this.outTimecode === null ? null : time - this.outTimecode;
    if ((video && keyframe) || offset === null || offset > 32767 || offset < -32768) {
      const tc = uintBytes(Math.max(0, time));
      parts.push(Uint8Array.from([0x1f, 0x43, 0xb6, 0x75, ...UNKNOWN_SIZE, ID.Timecode, 0x80 | tc.length, ...tc]));
      this.outTimecode = Math.max(0, time);
      this.clustersOut++;
    }
    const rewritten = time - this.outTimecode;
    const copy = buf.slice(start, end);
    copy[at - start] = (rewritten >> 8) & 0xff;
    copy[at - start + 1] = rewritten & 0xff;
    parts.push(copy);
    return parts;
  }
}
