// A viewer's copy of the stream's current generation, rebuilt from the frames of both
// sockets exactly as docs/protocol.md "Joining without a gap" step 3 says. No DOM here:
// the browser tests run it in node too.
//
// Frames from the blob and the chunk socket are treated alike, except that only a blob
// socket frame (G, 0) of another generation starts that generation. Within the current
// generation a frame is dropped if already held, partly appended if it overlaps the
// end, held if it starts past the end (a gap, until it is filled). A frame of a newer
// generation waits for that generation's blob; a frame of an older one is dropped.
//
// Epochs: two publish sessions may both number a generation 1, so a generation is
// (epoch, generation), the epoch being the publish session's number from the hello (and
// from the chunk socket's {"type":"epoch"}). A frame's epoch is null when the socket has
// not named one yet (an older server, or chunks that came before the hello): it is then
// taken to be the held one. Epochs grow, like generations within one.
//
// Live-edge join: when the hello said "join":"live" for generation G, the blob socket
// sends the init segment (G, 0) and then a frame (G, K) that starts at a keyframe
// cluster. The jump from the init's end to K is intended: length becomes K, and the
// consumer is told (onJump) so it can treat the bytes after K as a new cluster run.

import { decodeFrame } from './protocol.js';

const MAX_AHEAD_FRAMES = 512;
const MAX_FUTURE_FRAMES = 256;

export class Reassembler {
  /**
   * @param {object} handlers
   *   onStart(generation, bytes)        a new generation, with its first bytes (the blob)
   *   onAppend(generation, bytes, at)   contiguous bytes appended at offset `at`
   *   onJump(generation, from, to)      an intended live-edge jump (join=live)
   */
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.generation = null;
    /** The publish session the held generation belongs to (null: not told). */
    this.epoch = null;
    this.length = 0;
    /** What is held of the current generation: [{ offset, bytes }], in order. */
    this.pieces = [];
    /** Same-generation frames that start past the end, sorted by offset. */
    this.ahead = [];
    /** "epoch/generation" -> { epoch, generation, frames } waiting for that generation's blob. */
    this.future = new Map();
    this.liveJoin = null;
    /** A {"type":"jump"} for a generation whose blob has not come yet. */
    this.pendingSkip = null;
    this.jumps = [];
    /** What is held of the current generation skips from its init to the live edge. */
    this.joinedAtLiveEdge = false;
    this.stats = { frames: 0, bytes: 0, dropped: 0, partial: 0, held: 0, starts: 0 };
    this.aheadSince = null;
  }

  /** The hello announced a live-edge join for `generation` (or null to cancel). */
  expectLiveJoin(generation) {
    this.liveJoin = generation;
  }


  /** Drops everything held: the next connect takes a fresh snapshot. */
  forget() {
    this.generation = null;
    this.epoch = null;
    this.joinedAtLiveEdge = false;
    this.length = 0;
    this.pieces = [];
    this.ended();
  }

  /** `?gen=&offset=&epoch=` for a resuming reconnect, or null when nothing is held. */
  resumePoint() {
    if (this.generation === null) return null;
    return { gen: this.generation, offset: this.length, ...(this.epoch !== null ? { epoch: this.epoch } : {}) };
  }

  /**
   * A hello named `epoch`: if it is not the held one, a new publish session has begun.
   * What is held stays viewable, but nothing pending of the old session is kept, and
   * the next (G, 0) starts afresh even if G is the number held.
   */
  newEpoch(epoch) {
    if (epoch === null || epoch === undefined || this.epoch === null || epoch === this.epoch) return false;
    this.ahead = [];
    this.aheadSince = null;
    this.liveJoin = null;
    for (const [key, entry] of [...this.future]) {
      if (entry.epoch !== epoch) this.future.delete(key);
    }
    this.stale = true;
    return true;
  }

  /** Whether a frame of (epoch, generation) is of the held generation. */
  holds(epoch, generation) {
    if (generation !== this.generation || this.generation === null) return false;
    if (this.stale && epoch === null) return false;
    return epoch === null || this.epoch === null || epoch === this.epoch;
  }

  /** Whether (epoch, generation) comes after the held generation. */
  isNewer(epoch, generation) {
    if (this.generation === null) return true;
    if (epoch !== null && this.epoch !== null && epoch !== this.epoch) return epoch > this.epoch;
    if (this.stale) return true;
    return generation > this.generation;
  }

  /** The publisher stopped: what we hold stays viewable, nothing pending is useful. */
  ended() {
    this.ahead = [];
    this.future.clear();
    this.aheadSince = null;
    this.liveJoin = null;
  }

  /** Whether a gap has been waiting to be filled, and since when (ms clock). */
  gapSince() {
    return this.ahead.length ? this.aheadSince : null;
  }

  /** One binary frame. Returns what became of it (for tests and logs). */
  push(data, fromBlobSocket, epoch = null) {
    const frame = decodeFrame(data);
    if (!frame) return 'malformed';
    frame.epoch = epoch ?? null;
    this.stats.frames++;
    this.stats.bytes += frame.payload.byteLength;
    return this.accept(frame, fromBlobSocket);
  }

  accept(frame, fromBlobSocket) {
    const { generation, offset } = frame;
    if (frame.epoch === undefined) frame.epoch = null;
    if (!this.holds(frame.epoch, generation)) {
      if (fromBlobSocket && offset === 0) {
        this.start(frame);
        return 'start';
      }
      if (this.isNewer(frame.epoch, generation)) {
        this.holdFuture(frame);
        return 'held';
      }
      this.stats.dropped++;
      return 'dropped';
    }
    if (
      fromBlobSocket &&
      this.liveJoin === generation &&
      offset > this.length &&
      this.pieces.length === 1
    ) {
      // The intended jump of a live-edge join: from the init segment's end to a
      // keyframe cluster at `offset`.
      const from = this.length;
      this.liveJoin = null;
      this.joinedAtLiveEdge = true;
      this.length = offset;
      this.jumps.push({ generation, from, to: offset });
      this.handlers.onJump?.(generation, from, offset);
      const result = this.applySame(frame);
      this.drainAhead();
      return result === 'appended' ? 'jump' : result;
    }
    const result = this.applySame(frame);
    if (result === 'appended' || result === 'partial') this.drainAhead();
    return result;
  }

  /**
   * The server moved this viewer, which fell too far behind, to a newer keyframe
   * cluster: the chunk socket's frames go on at `offset` of `generation`
   * ({"type":"jump"}). Taken now if that generation is held, else when its blob starts it.
   */
  skipTo(epoch, generation, offset) {
    if (this.holds(epoch ?? null, generation)) this.applySkip(generation, offset);
    else this.pendingSkip = { epoch: epoch ?? null, generation, offset };
  }

  applySkip(generation, offset) {
    if (offset <= this.length) return 'dropped';
    const from = this.length;
    this.length = offset;
    this.joinedAtLiveEdge = true;
    this.ahead = this.ahead.filter((f) => f.offset + f.payload.byteLength > offset);
    this.jumps.push({ generation, from, to: offset });
    this.handlers.onJump?.(generation, from, offset);
    this.drainAhead();
    return 'jump';
  }

  start(frame) {
    this.generation = frame.generation;
    this.epoch = frame.epoch ?? null;
    this.stale = false;
    this.joinedAtLiveEdge = false;
    this.length = 0;
    this.pieces = [];
    this.ahead = [];
    this.aheadSince = null;
    this.stats.starts++;
    if (this.liveJoin !== null && this.liveJoin !== frame.generation) this.liveJoin = null;
    this.length = frame.payload.byteLength;
    this.pieces.push({ offset: 0, bytes: frame.payload });
    this.handlers.onStart?.(frame.generation, frame.payload);
    const skip = this.pendingSkip;
    this.pendingSkip = null;
    if (skip && this.holds(skip.epoch, skip.generation)) this.applySkip(skip.generation, skip.offset);
    // Chunks of this generation that came before its blob (of this epoch, or not told).
    const waiting = [];
    for (const [key, entry] of [...this.future]) {
      if (this.holds(entry.epoch, entry.generation)) {
        waiting.push(...entry.frames);
        this.future.delete(key);
      } else if (!this.isNewer(entry.epoch, entry.generation)) {
        this.future.delete(key);
      }
    }
    waiting.sort((a, b) => a.offset - b.offset);
    for (const f of waiting) this.insertAhead(f);
    this.drainAhead();
  }

  /** A frame of the current generation. */
  applySame(frame) {
    const { offset, payload } = frame;
    const end = offset + payload.byteLength;
    if (end <= this.length) {
      this.stats.dropped++;
      return 'dropped';
    }
    if (offset > this.length) {
      this.insertAhead(frame);
      return 'held';
    }
    let bytes = payload;
    let result = 'appended';
    if (offset < this.length) {
      bytes = payload.subarray(this.length - offset);
      this.stats.partial++;
      result = 'partial';
    }
    const at = this.length;
    this.pieces.push({ offset: at, bytes });
    this.length = end;
    this.handlers.onAppend?.(this.generation, bytes, at);
    return result;
  }

  insertAhead(frame) {
    this.stats.held++;
    if (!this.ahead.length) this.aheadSince = Date.now();
    let i = this.ahead.length;
    while (i > 0 && this.ahead[i - 1].offset > frame.offset) i--;
    this.ahead.splice(i, 0, frame);
    if (this.ahead.length > MAX_AHEAD_FRAMES) this.ahead.pop();
  }

  drainAhead() {
    while (this.ahead.length && this.ahead[0].offset <= this.length) {
      const frame = this.ahead.shift();
      this.applySame(frame);
    }
    if (!this.ahead.length) this.aheadSince = null;
  }

  holdFuture(frame) {
    this.stats.held++;
    const key = `${frame.epoch}/${frame.generation}`;
    let entry = this.future.get(key);
    if (!entry) this.future.set(key, (entry = { epoch: frame.epoch, generation: frame.generation, frames: [] }));
    entry.frames.push(frame);
    let total = 0;
    for (const e of this.future.values()) total += e.frames.length;
    if (total > MAX_FUTURE_FRAMES) {
      // The oldest generation loses a frame.
      const [oldestKey, oldest] = [...this.future].reduce((a, b) =>
        (b[1].epoch ?? 0) < (a[1].epoch ?? 0) || ((b[1].epoch ?? 0) === (a[1].epoch ?? 0) && b[1].generation < a[1].generation) ? b : a,
      );
      oldest.frames.shift();
      if (!oldest.frames.length) this.future.delete(oldestKey);
    }
  }

  /** The held bytes of the current generation as Blob parts, in order. */
  blobParts() {
    return this.pieces.map((p) => p.bytes);
  }
}
