// A small streaming WebM (EBML) scanner for the viewer: fed the bytes of one
// generation in order, in pieces cut anywhere, it learns the timecode scale, the video
// track, where clusters start and the newest block timestamp. The blob player uses it to
// find the live edge of a growing file whose duration the browser does not know, and
// the tests use it to check the recorder's output. No DOM here.

const ID = {
  EBML: 0x1a45dfa3,
  Segment: 0x18538067,
  Info: 0x1549a966,
  TimecodeScale: 0x2ad7b1,
  Tracks: 0x1654ae6b,
  TrackEntry: 0xae,
  TrackNumber: 0xd7,
  TrackType: 0x83,
  CodecID: 0x86,
  Cluster: 0x1f43b675,
  Timecode: 0xe7,
  SimpleBlock: 0xa3,
  BlockGroup: 0xa0,
  Block: 0xa1,
};

/** Master elements whose children we read; every other element is skipped whole. */
const DESCEND = new Set([ID.Segment, ID.Info, ID.Tracks, ID.TrackEntry, ID.Cluster, ID.BlockGroup]);
/** Small elements whose value we need. */
const VALUE = new Set([ID.TimecodeScale, ID.TrackNumber, ID.TrackType, ID.Timecode]);
const STRING = new Set([ID.CodecID]);
const BLOCK = new Set([ID.SimpleBlock, ID.Block]);

/** Reads an EBML variable-length integer at `i`: { length, value, unknown } or null. */
function readVint(buf, i, keepMarker) {
  if (i >= buf.length) return null;
  const first = buf[i];
  if (first === 0) return { invalid: true };
  let length = 1;
  while (!(first & (0x80 >> (length - 1)))) length++;
  if (i + length > buf.length) return null;
  let value = keepMarker ? first : first & (0xff >> length);
  let allOnes = value === (0xff >> length);
  for (let k = 1; k < length; k++) {
    value = value * 256 + buf[i + k];
    if (buf[i + k] !== 0xff) allOnes = false;
  }
  return { length, value, unknown: !keepMarker && allOnes };
}

function readUint(buf, i, n) {
  let v = 0;
  for (let k = 0; k < n; k++) v = v * 256 + buf[i + k];
  return v;
}

export class WebmScanner {
  constructor() {
    this.container = 'webm';
    this.buf = new Uint8Array(0);
    /** Absolute offset (in the generation) of buf[0]. */
    this.pos = 0;
    this.skip = 0;
    this.timecodeScale = 1000000;
    this.videoTrack = null;
    /** Codec ids of the tracks, e.g. ['V_VP8', 'A_OPUS']. */
    this.codecIds = [];
    this.track = { number: null, type: null };
    this.clusterTimecode = null;
    /** Newest block timestamp seen, in timecode units (ms with the default scale). */
    this.lastTimecode = null;
    this.firstTimecode = null;
    /** [{ offset, timecode, keyframe }] for each cluster (keyframe: its first video block). */
    this.clusters = [];
    this.blocks = 0;
    /** Blocks of the video track: frames (the tests' measure of the source's frame rate). */
    this.videoFrames = 0;
    this.keyframes = 0;
    this.broken = null;
    this.sawHeader = false;
  }

  /** Seconds of media up to the newest block seen (null before the first block). */
  get lastTime() {
    return this.lastTimecode === null ? null : (this.lastTimecode * this.timecodeScale) / 1e9;
  }

  get firstTime() {
    return this.firstTimecode === null ? null : (this.firstTimecode * this.timecodeScale) / 1e9;
  }

  /** The bytes continue at `offset` at an element boundary (a live-edge join's jump). */
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
    while (i < data.length && !this.broken) {
      const id = readVint(data, i, true);
      if (!id) break;
      if (id.invalid) {
        this.broken = `invalid element id at offset ${this.pos + i}`;
        break;
      }
      const size = readVint(data, i + id.length, false);
      if (!size) break;
      if (size.invalid) {
        this.broken = `invalid element size at offset ${this.pos + i}`;
        break;
      }
      const head = id.length + size.length;
      const start = this.pos + i;
      if (DESCEND.has(id.value) || (size.unknown && id.value !== ID.SimpleBlock)) {
        this.enter(id.value, start);
        i += head;
        continue;
      }
      if (VALUE.has(id.value)) {
        if (i + head + size.value > data.length) break;
        this.value(id.value, readUint(data, i + head, size.value));
        i += head + size.value;
        continue;
      }
      if (STRING.has(id.value)) {
        if (i + head + size.value > data.length) break;
        this.string(id.value, data.subarray(i + head, i + head + size.value));
        i += head + size.value;
        continue;
      }
      if (BLOCK.has(id.value)) {
        const need = Math.min(size.value, 12);
        if (i + head + need > data.length) break;
        this.block(data, i + head, size.value);
      } else if (id.value === ID.EBML) {
        this.sawHeader = true;
      }
      // Skip the body, possibly past what we have.
      const bodyEnd = i + head + size.value;
      if (bodyEnd <= data.length) {
        i = bodyEnd;
      } else {
        this.skip = bodyEnd - data.length;
        this.pos += data.length;
        this.buf = new Uint8Array(0);
        return;
      }
    }
    this.pos += i;
    this.buf = data.slice(i);
  }

  enter(id, start) {
    if (id === ID.TrackEntry) this.track = { number: null, type: null };
    if (id === ID.Cluster) {
      this.clusterTimecode = null;
      this.clusters.push({ offset: start, timecode: null, keyframe: null });
      if (this.clusters.length > 4096) this.clusters.splice(0, 1024);
    }
  }

  value(id, v) {
    switch (id) {
      case ID.TimecodeScale:
        this.timecodeScale = v;
        break;
      case ID.TrackNumber:
        this.track.number = v;
        if (this.track.type === 1) this.videoTrack = v;
        break;
      case ID.TrackType:
        this.track.type = v;
        if (v === 1 && this.track.number !== null) this.videoTrack = this.track.number;
        break;
      case ID.Timecode: {
        this.clusterTimecode = v;
        const c = this.clusters[this.clusters.length - 1];
        if (c && c.timecode === null) c.timecode = v;
        break;
      }
    }
  }

  string(id, bytes) {
    const text = String.fromCharCode(...bytes).replace(/\0+$/, '');
    if (id === ID.CodecID && !this.codecIds.includes(text)) this.codecIds.push(text);
  }

  /** A `codecs=` value for MediaSource from the track codec ids, or null. */
  codecsParameter() {
    const names = {
      V_VP8: 'vp8',
      V_VP9: 'vp9',
      V_AV1: 'av01.0.04M.08',
      'V_MPEG4/ISO/AVC': 'avc1.42E01F',
      A_OPUS: 'opus',
      A_VORBIS: 'vorbis',
    };
    const codecs = this.codecIds.map((c) => names[c]).filter(Boolean);
    return codecs.length ? codecs.join(',') : null;
  }

  block(data, i, size) {
    const track = readVint(data, i, false);
    if (!track || track.invalid || track.length + 3 > size) return;
    const rel = (data[i + track.length] << 8) | data[i + track.length + 1];
    const relative = rel & 0x8000 ? rel - 0x10000 : rel;
    const flags = data[i + track.length + 2];
    const time = (this.clusterTimecode ?? 0) + relative;
    this.blocks++;
    if (this.firstTimecode === null) this.firstTimecode = time;
    if (this.lastTimecode === null || time > this.lastTimecode) this.lastTimecode = time;
    if (track.value === this.videoTrack || this.videoTrack === null) {
      this.videoFrames++;
      const key = (flags & 0x80) !== 0;
      if (key) this.keyframes++;
      const c = this.clusters[this.clusters.length - 1];
      if (c && c.keyframe === null) c.keyframe = key;
    }
  }
}
