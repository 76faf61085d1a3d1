// The watch page: joins a stream over the two viewer sockets of docs/protocol.md,
// rebuilds the current generation (reassembly.js) and plays it, either through
// MediaSource ("mse": one SourceBuffer fed generation after generation) or by gluing
// the generation's bytes into a Blob and swapping video.src ("blob").

import { socketUrl, describeClose, formatBits, isToken } from './protocol.js';
import { Reassembler } from './reassembly.js';
import { WebmScanner } from './webm.js';
import { decodeClock, clockStrip } from './testpattern.js';

const BACKOFF = [200, 500, 1000, 2000, 4000, 8000];
/** A gap that a resume might heal, after this long (ms). */
const GAP_PATIENCE = 3000;
/** Blob mode: at most one src swap per this many ms. */
const BLOB_SWAP_MS = 2500;
/** MSE back buffer: trim when more than BACK_MAX s behind currentTime, down to BACK_KEEP. */
const BACK_MAX = 30;
const BACK_KEEP = 15;

function mediaSourceClass() {
  return window.ManagedMediaSource || window.MediaSource || null;
}

export function mseSupports(mime) {
  const MS = mediaSourceClass();
  return !!(MS && mime && MS.isTypeSupported(mime));
}

// ---- arrival-interval estimate -------------------------------------------------

/** Estimates the publisher's chunk interval from when bytes arrive. */
class ChunkClock {
  constructor() {
    this.last = null;
    this.intervals = [];
  }

  arrived(now = performance.now()) {
    if (this.last !== null) {
      const d = now - this.last;
      // Bursts (a snapshot, a resume) are not the publisher's rhythm.
      if (d > 25) {
        this.intervals.push(d);
        if (this.intervals.length > 15) this.intervals.shift();
      }
    }
    this.last = now;
  }

  get known() {
    return this.intervals.length >= 3;
  }

  /** Seconds; 1 s until known. */
  get interval() {
    if (this.intervals.length < 3) return 1.0;
    const sorted = [...this.intervals].sort((a, b) => a - b);
    return Math.min(5, sorted[Math.floor(sorted.length / 2)] / 1000);
  }
}

// ---- poster overlay ------------------------------------------------------------

/** A canvas over the video that holds the last decoded frame across a source switch. */
class Poster {
  constructor(video, canvas) {
    this.video = video;
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.visible = false;
    this.shownAt = null;
    this.shows = 0;
  }

  /** Draws the video's current frame; false if there is none to draw. */
  capture() {
    const v = this.video;
    if (v.readyState < 2 || !v.videoWidth) return false;
    if (this.canvas.width !== v.videoWidth || this.canvas.height !== v.videoHeight) {
      this.canvas.width = v.videoWidth;
      this.canvas.height = v.videoHeight;
    }
    try {
      this.ctx.drawImage(v, 0, 0, v.videoWidth, v.videoHeight);
      this.captured = true;
      return true;
    } catch {
      return false;
    }
  }

  show() {
    if (!this.captured) return false;
    if (!this.visible) {
      this.visible = true;
      this.shownAt = performance.now();
      this.shows++;
      this.canvas.hidden = false;
    }
    return true;
  }

  hide() {
    if (!this.visible) return;
    this.visible = false;
    this.canvas.hidden = true;
  }
}

// ---- the two sockets -------------------------------------------------------------

export class ViewerConnection {
  constructor(stream, reassembler, events) {
    this.stream = stream;
    this.reassembler = reassembler;
    this.events = events;
    this.joinLive = false;
    this.chunk = null;
    this.blob = null;
    this.attempt = 0;
    this.closed = false;
    this.connects = 0;
    this.hellos = [];
    this.lastClose = null;
  }

  connect() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    const resume = this.reassembler.resumePoint();
    const params = resume ? { gen: resume.gen, offset: resume.offset } : {};
    if (this.token) params.token = this.token;
    this.connects++;
    // The chunk socket first: the server records our position before answering its
    // upgrade, so the blob socket's snapshot and these chunks meet without a gap.
    const chunk = new WebSocket(socketUrl(`/ws/watch/${this.stream}/chunk`, params));
    chunk.binaryType = 'arraybuffer';
    this.chunk = chunk;
    chunk.onmessage = (e) => {
      if (typeof e.data !== 'string') this.events.onFrame(e.data, false);
    };
    chunk.onclose = (e) => this.lost(chunk, e);
    chunk.onopen = () => {
      if (this.chunk !== chunk) return;
      // Either socket may be the first to close: both carry the time they opened, so
      // a connection that lived long resets the backoff whichever of them goes first.
      chunk.openedAt = Date.now();
      const blobParams = { ...params };
      if (this.joinLive) blobParams.join = 'live';
      const blob = new WebSocket(socketUrl(`/ws/watch/${this.stream}/blob`, blobParams));
      blob.binaryType = 'arraybuffer';
      this.blob = blob;
      blob.onmessage = (e) => {
        if (typeof e.data === 'string') this.control(e.data);
        else this.events.onFrame(e.data, true);
      };
      blob.onopen = () => {
        blob.openedAt = Date.now();
      };
      blob.onclose = (e) => this.lost(blob, e);
    };
  }

  control(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === 'stream') {
      this.hellos.push(msg);
      if (this.hellos.length > 50) this.hellos.shift();
      // The viewer learns the mime here, and with it whether it plays with MSE: it
      // turns joinLive off for blob mode, which needs whole generations.
      this.events.onHello(msg);
      if (msg.live && msg.join === 'live' && !msg.resumed) {
        if (this.joinLive) {
          this.reassembler.expectLiveJoin(msg.generation);
        } else {
          // We asked for the live edge before the mime was known. Nothing of this join
          // has been taken yet (the hello comes first): ask again, for the whole thing.
          this.reconnectNow();
        }
      }
    } else if (msg.type === 'end') {
      this.reassembler.ended();
      this.events.onEnd();
    }
  }

  lost(ws, e) {
    if (ws !== this.chunk && ws !== this.blob) return;
    this.lastClose = describeClose(e.code, e.reason);
    const lived = ws.openedAt ? Date.now() - ws.openedAt : 0;
    this.drop();
    if (this.closed) return;
    if (lived > 10000) this.attempt = 0;
    const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)] * (e.code === 4429 ? 4 : 1);
    this.attempt++;
    this.events.onLost(this.lastClose, delay);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Closes both sockets (without reconnecting by itself). */
  drop() {
    for (const ws of [this.chunk, this.blob]) {
      if (!ws) continue;
      ws.onclose = null;
      ws.onmessage = null;
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000, 'viewer reconnecting');
    }
    this.chunk = null;
    this.blob = null;
  }

  /** For tests and for gaps: drop both sockets and resume. */
  reconnectNow() {
    this.drop();
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.drop();
  }
}

// ---- MSE player ------------------------------------------------------------------

class MsePlayer {
  constructor(viewer, mime) {
    this.viewer = viewer;
    this.video = viewer.video;
    this.mime = mime;
    this.kind = 'mse';
    this.queue = [];
    this.ms = null;
    this.sb = null;
    this.url = null;
    this.recovering = false;
    this.pendingSwitches = [];
    this.lastTrim = 0;
    // Where the previous tick found playback, for noticing a gap played across.
    this.lastT = null;
    // Any seek, ours or the user's, starts both watches over.
    this.onSeeking = () => {
      this.lastT = null;
      this.stall = null;
    };
    this.video.addEventListener('seeking', this.onSeeking);
    this.open();
  }

  open() {
    const MS = mediaSourceClass();
    const ms = new MS();
    this.ms = ms;
    this.sb = null;
    if (window.ManagedMediaSource && ms instanceof window.ManagedMediaSource) {
      this.video.disableRemotePlayback = true;
    }
    const old = this.url;
    this.url = URL.createObjectURL(ms);
    this.viewer.srcChanging();
    this.video.src = this.url;
    if (old) URL.revokeObjectURL(old);
    ms.addEventListener('sourceopen', () => {
      if (this.ms !== ms) return;
      try {
        const sb = ms.addSourceBuffer(this.mime);
        // Every generation restarts its timestamps at 0: "sequence" lays each one
        // right after the previous one on a single timeline.
        sb.mode = 'sequence';
        sb.addEventListener('updateend', () => this.pump());
        sb.addEventListener('error', () => this.failed('SourceBuffer error (the demuxer refused the bytes)'));
        this.sb = sb;
      } catch (err) {
        this.viewer.error(`MediaSource cannot play ${this.mime}: ${err.message}`);
        return;
      }
      this.pump();
    }, { once: true });
  }

  enqueue(op) {
    this.queue.push(op);
    this.pump();
  }

  start(generation, bytes) {
    const sw = this.viewer.recordSwitch({ generation, kind: 'generation', boundary: null });
    // The boundary in media time where the new generation begins: the buffered end
    // once everything before it is appended.
    this.enqueue({
      kind: 'call',
      fn: () => {
        const sb = this.sb;
        const b = sb.buffered;
        sw.boundary = b.length ? b.end(b.length - 1) : 0;
        // Resets the parser: bytes of an unfinished element of the old generation
        // are dropped and the new init segment is expected.
        sb.abort();
        if (sw.boundary > 0) {
          // In sequence mode this sets the group start: the new generation (whose
          // timestamps restart at 0) begins where the buffered media ends. Left to
          // itself, sequence mode would start it at the end of the longest track,
          // leaving a hole of a few tens of ms in the shorter one.
          sb.timestampOffset = sw.boundary;
          this.pendingSwitches.push(sw);
        }
      },
    });
    this.enqueue({ kind: 'append', bytes });
  }

  append(generation, bytes) {
    this.enqueue({ kind: 'append', bytes });
  }

  jump() {
    // A live-edge join: the bytes continue at a cluster; for the parser that is just
    // the next cluster, so nothing to do.
  }

  pump() {
    const sb = this.sb;
    if (!sb || this.recovering || this.ms.readyState !== 'open') return;
    while (this.queue.length && !sb.updating) {
      const op = this.queue[0];
      try {
        if (op.kind === 'append') {
          sb.appendBuffer(op.bytes);
          this.queue.shift();
          return;
        }
        if (op.kind === 'remove') {
          this.queue.shift();
          if (op.end > op.start) {
            sb.remove(op.start, op.end);
            return;
          }
          continue;
        }
        this.queue.shift();
        if (op.kind === 'call') op.fn();
      } catch (err) {
        if (err.name === 'QuotaExceededError') {
          this.viewer.note('quota exceeded: trimming the back buffer');
          const t = this.video.currentTime;
          const start = sb.buffered.length ? sb.buffered.start(0) : 0;
          if (t - 2 > start) {
            this.queue.unshift({ kind: 'remove', start: 0, end: t - 2 });
            continue;
          }
          // Nothing behind us to free: wait for playback to move on.
          clearTimeout(this.quotaTimer);
          this.quotaTimer = setTimeout(() => this.pump(), 500);
          return;
        }
        this.failed(`${op.kind} failed: ${err.name}: ${err.message}`);
        return;
      }
    }
  }

  /** Every few seconds: keep BACK_KEEP s behind currentTime once more than BACK_MAX. */
  trim() {
    const sb = this.sb;
    if (!sb || !sb.buffered.length) return;
    const t = this.video.currentTime;
    if (t - sb.buffered.start(0) > BACK_MAX) {
      this.enqueue({ kind: 'remove', start: 0, end: t - BACK_KEEP });
    }
  }

  /**
   * The demuxer gave up (it closes the MediaSource): a fresh MediaSource, and the held
   * bytes of the current generation from its init segment on. The poster hides the
   * switch.
   */
  failed(reason) {
    if (this.recovering) return;
    const v = this.viewer;
    v.recoveries.push({ at: Date.now(), reason, generation: v.reassembler.generation });
    v.note(`recovering: ${reason}`);
    const recent = v.recoveries.filter((r) => Date.now() - r.at < 20000).length;
    if (recent > 4) {
      v.error(`Playback keeps failing (${reason}); giving up on MediaSource, switching to blob mode.`);
      v.switchMode('blob');
      return;
    }
    this.recovering = true;
    v.poster.capture();
    v.poster.show();
    setTimeout(() => this.rebuild(), recent > 1 ? 500 * recent : 0);
  }

  rebuild() {
    this.recovering = false;
    this.queue = [];
    this.pendingSwitches = [];
    this.open();
    const r = this.viewer.reassembler;
    if (r.generation !== null) {
      for (const piece of r.pieces) this.queue.push({ kind: 'append', bytes: piece.bytes });
    }
    this.viewer.seekedToEdge = false;
  }

  /** rVFC: show the poster over the last frames before a generation boundary. */
  onFrame(mediaTime) {
    const poster = this.viewer.poster;
    while (this.pendingSwitches.length) {
      const sw = this.pendingSwitches[0];
      if (mediaTime >= sw.boundary - 0.001) {
        sw.presentedAt = Date.now();
        sw.firstMediaTime = mediaTime;
        sw.lastMediaTimeBefore = this.lastMediaTime ?? null;
        this.pendingSwitches.shift();
        poster.hide();
        continue;
      }
      if (sw.boundary - mediaTime < 0.25) {
        // The last frames of the old generation: the poster mirrors them, so if the
        // new generation's first frame is late, the picture holds instead of going black.
        poster.capture();
        if (poster.show()) sw.overlayShown = true;
      }
      break;
    }
    if (!this.pendingSwitches.length && poster.visible && !this.recovering) poster.hide();
    this.lastMediaTime = mediaTime;
  }

  /** Seconds the video is behind the newest buffered media. */
  lag() {
    const b = this.video.buffered;
    if (!b.length) return null;
    return b.end(b.length - 1) - this.video.currentTime;
  }

  /** Keeps playback near the live edge; called a few times a second. */
  tick() {
    const v = this.video;
    const viewer = this.viewer;
    if (this.sb && Date.now() - this.lastTrim > 5000) {
      this.lastTrim = Date.now();
      this.trim();
    }
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    const target = viewer.targetLag();
    const t = v.currentTime;
    let inside = false;
    let rangeStart = null;
    for (let i = 0; i < b.length; i++) {
      if (t >= b.start(i) && t < b.end(i)) {
        inside = true;
        rangeStart = b.start(i);
      }
    }
    const lag = end - t;
    const atEdge = t >= end - 0.05;
    const lastT = this.lastT;
    let frozen = 0;
    if (!viewer.seekedToEdge) {
      // Joining (or after a recovery): start one target lag behind the newest media.
      const to = Math.max(b.start(b.length - 1), end - target);
      v.currentTime = to;
      this.lagAvg = null;
      viewer.seekedToEdge = true;
      viewer.note(`join: seek to ${to.toFixed(2)} (edge ${end.toFixed(2)})`);
    } else if (!inside && !atEdge && !v.seeking) {
      // Stuck in a hole between buffered ranges: on to the next range (or the edge).
      let to = end - target;
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) > t) {
          to = Math.max(b.start(i), Math.min(to, b.end(i) - 0.05));
          break;
        }
      }
      if (to < t) to = end - target;
      v.currentTime = to;
      viewer.note(`hole at ${t.toFixed(2)}: seek to ${to.toFixed(2)}`);
    } else if (inside && !v.paused && (frozen = this.videoStalledSince(t)) > 0.6) {
      // Any other way the video starves while the audio plays on (the picture frozen,
      // currentTime moving): the same cure.
      v.currentTime = t;
      viewer.note(`video frozen for ${frozen.toFixed(2)} s of playback: re-seek at ${t.toFixed(2)}`);
    } else if (inside && lastT !== null && lastT < rangeStart && t > lastT && !v.paused) {
      // The audio clock carried playback across a gap in the video (the publisher
      // skipped frames: a busy tab, a camera dropping frames) between two ticks. The
      // video decoder does not step from one buffered range into the next by itself:
      // the picture stays frozen at the gap until a seek, for up to the ~3 s Chrome
      // lets audio run on alone. A seek to where we are restarts it at the keyframe
      // that follows the gap.
      v.currentTime = t;
      viewer.note(`played across a gap (${lastT.toFixed(2)} -> ${rangeStart.toFixed(2)}): re-seek at ${t.toFixed(2)}`);
    } else if (!viewer.userPaused) {
      // The lag is a sawtooth: it jumps by one chunk at each arrival and drains until
      // the next one. The target is its peak, just after an arrival (one chunk plus a
      // margin), so on target it averages target - chunk/2 and never drains below the
      // margin. Steer on its average.
      const chunk = viewer.chunkClock.interval;
      this.lagAvg = this.lagAvg == null ? lag : this.lagAvg + 0.2 * (lag - this.lagAvg);
      const excess = this.lagAvg - (target - chunk / 2);
      const far = Math.max(1.0, 2 * chunk);
      const firstEstimate = viewer.chunkClock.known && !this.rejoined;
      if (firstEstimate) this.rejoined = true;
      if ((firstEstimate && excess > 0.3) || (lag - target > far + chunk && excess > far)) {
        // Far behind (a stall, a slow tab), or joined before the chunk interval was
        // known (the target assumed 1 s): a skip is better than a long fast-forward.
        v.currentTime = end - target;
        this.lagAvg = null;
        viewer.note(`far behind (${lag.toFixed(2)} s, target ${target.toFixed(2)}): seek to the edge`);
      } else if (excess > 0.5) {
        v.playbackRate = 1.1;
      } else if (excess > 0.1) {
        v.playbackRate = 1.05;
      } else if (excess < -0.2 && v.readyState >= 3) {
        // Closer to the edge than one chunk interval allows: ease off before it stalls.
        v.playbackRate = 0.97;
      } else {
        v.playbackRate = 1.0;
      }
    }
    if (v.paused && !viewer.userPaused && lag > 0.1) viewer.play();
    this.lastT = v.seeking ? null : t;
  }

  /**
   * Seconds of playback since the last newly decoded video frame, once frames were
   * flowing (five since the last seek, ours or the user's): a screen share of a still
   * page sends no frames, and must not be re-seeked again and again. Zero until three
   * of the source's own frame intervals have passed, without video, or in a hidden tab
   * (where Chrome may turn the video track off).
   */
  videoStalledSince(t) {
    const v = this.video;
    const frames = this.viewer.framesDecoded();
    const s = this.stall;
    if (!s || v.seeking || !v.videoWidth || document.visibilityState !== 'visible' || frames < s.frames || t < s.t) {
      this.stall = { frames, t, flowing: 0, interval: null };
      return 0;
    }
    if (frames > s.frames) {
      const each = (t - s.t) / (frames - s.frames);
      const interval = s.interval == null ? each : 0.7 * s.interval + 0.3 * each;
      this.stall = { frames, t, flowing: s.flowing + frames - s.frames, interval };
      return 0;
    }
    // A slow source (a screen share at a frame or two a second) is frozen only when a
    // few of its own frame intervals pass without one.
    const frozen = t - s.t;
    return s.flowing >= 5 && frozen > 3 * (s.interval ?? 0) ? frozen : 0;
  }

  destroy() {
    this.video.removeEventListener('seeking', this.onSeeking);
    this.queue = [];
    clearTimeout(this.quotaTimer);
    if (this.url) URL.revokeObjectURL(this.url);
    this.ms = null;
    this.sb = null;
  }
}

// ---- blob player -------------------------------------------------------------

/**
 * The classic glue: the bytes of a generation as one Blob, played from an object URL
 * that is swapped for a longer one every BLOB_SWAP_MS. The browser cannot tell where
 * the live edge of such a file is (MediaRecorder writes no duration), so a WebmScanner
 * follows the block timestamps. When a generation ends, the old one is first played
 * to its tail if the new one has little media yet.
 */
class BlobPlayer {
  constructor(viewer, mime) {
    this.viewer = viewer;
    this.video = viewer.video;
    this.mime = mime;
    this.kind = 'blob';
    /** generation -> { generation, parts, scanner }: the newest, and the one shown. */
    this.gens = new Map();
    this.cur = null;
    this.shown = null; // { generation, url, lastTime }
    this.lastSwap = -Infinity;
    this.swapping = null;
  }

  start(generation, bytes) {
    const g = { generation, parts: [bytes], scanner: new WebmScanner() };
    g.scanner.push(bytes);
    this.gens.set(generation, g);
    this.cur = g;
    for (const key of [...this.gens.keys()]) {
      if (key !== generation && key !== this.shown?.generation) this.gens.delete(key);
    }
  }

  append(generation, bytes) {
    const g = this.gens.get(generation);
    if (!g) return;
    g.parts.push(bytes);
    g.scanner.push(bytes);
  }

  jump(generation, from, to) {
    this.gens.get(generation)?.scanner.jumpTo(to);
  }

  span(g) {
    const s = g.scanner;
    return s.lastTime === null ? 0 : s.lastTime - s.firstTime;
  }

  /** Called from tick(): decides whether to swap now, and to what. */
  maybeSwap() {
    const v = this.video;
    const cur = this.cur;
    if (!cur || this.swapping || this.destroyed || cur.scanner.lastTime === null) return;
    const shown = this.shown;
    const target = this.viewer.targetLag();
    if (!shown) {
      this.swap(cur, Math.max(cur.scanner.firstTime, cur.scanner.lastTime - target), true);
      return;
    }
    const starved = v.ended || (v.readyState < 3 && v.currentTime >= shown.lastTime - 0.25);
    if (performance.now() - this.lastSwap < BLOB_SWAP_MS && !starved) return;
    const samePos = (g) => {
      const pos = v.currentTime;
      const lag = g.scanner.lastTime - pos;
      return lag > target + 3 && !this.viewer.userPaused ? g.scanner.lastTime - target : pos;
    };
    if (shown.generation === cur.generation) {
      if (cur.scanner.lastTime > shown.lastTime + 0.05) this.swap(cur, samePos(cur), false);
      return;
    }
    // A newer generation is here. Play it once it has enough media to last until the
    // next swap; until then, let the old one play out to its tail.
    const old = this.gens.get(shown.generation);
    const enough = this.span(cur) >= Math.min(target, 2);
    const oldHasMore = old && old.scanner.lastTime > shown.lastTime + 0.05;
    if (enough || (starved && !oldHasMore)) {
      this.swap(cur, Math.max(cur.scanner.firstTime, cur.scanner.lastTime - target), true);
    } else if (oldHasMore) {
      this.swap(old, samePos(old), false);
    }
  }

  swap(g, pos, newGeneration) {
    const v = this.video;
    const viewer = this.viewer;
    const url = URL.createObjectURL(new Blob(g.parts, { type: this.mime }));
    const previous = this.shown;
    const lastTime = g.scanner.lastTime;
    this.shown = { generation: g.generation, url, lastTime };
    this.lastSwap = performance.now();
    const sw = viewer.recordSwitch({ generation: g.generation, from: previous?.generation ?? null, kind: newGeneration ? 'generation' : 'swap', pos });
    // Poster: the last decoded frame covers the video while the new source loads.
    viewer.poster.capture();
    sw.overlayShown = viewer.poster.show();
    const requested = performance.now();
    const wasPaused = viewer.userPaused;
    const token = {};
    this.swapping = token;
    viewer.srcChanging();
    v.src = url;
    const done = (why) => {
      if (this.swapping !== token) return;
      this.swapping = null;
      sw.presentedAt = Date.now();
      sw.how = why;
      viewer.poster.hide();
      if (previous) URL.revokeObjectURL(previous.url);
    };
    v.addEventListener('loadedmetadata', () => {
      if (this.swapping !== token) return;
      const elapsed = wasPaused ? 0 : (performance.now() - requested) / 1000;
      const to = Math.min(pos + elapsed, Math.max(pos, lastTime - 0.2));
      if (to > 0.01) v.currentTime = to;
      if (!wasPaused) viewer.play();
      const frameShown = () => {
        if ('requestVideoFrameCallback' in v) v.requestVideoFrameCallback(() => done('frame'));
        else v.addEventListener('playing', () => done('playing'), { once: true });
        // rVFC is slow in background tabs: a decoded frame is good enough there.
        v.addEventListener('playing', () => setTimeout(() => done('playing'), 100), { once: true });
      };
      if (to > 0.01) v.addEventListener('seeked', frameShown, { once: true });
      else frameShown();
    }, { once: true });
    // Whatever happens, never leave the poster up or the swaps stuck.
    setTimeout(() => {
      if (this.swapping === token) {
        viewer.note('blob swap: no frame within 4 s');
        done('timeout');
      }
    }, 4000);
  }

  lag() {
    if (!this.shown) return null;
    const shownGen = this.gens.get(this.shown.generation);
    if (!shownGen || shownGen.scanner.lastTime === null) return null;
    let lag = shownGen.scanner.lastTime - this.video.currentTime;
    if (this.cur && this.cur !== shownGen) lag += this.span(this.cur);
    return lag;
  }

  onFrame() {}

  tick() {
    this.maybeSwap();
    const v = this.video;
    if (v.paused && !v.ended && !this.viewer.userPaused && !this.swapping && this.shown) this.viewer.play();
  }

  destroy() {
    this.destroyed = true;
    if (this.shown) URL.revokeObjectURL(this.shown.url);
  }
}

// ---- the viewer --------------------------------------------------------------------

export class Viewer {
  constructor({ stream, video, posterCanvas, mode, clock }) {
    this.stream = stream;
    this.video = video;
    this.poster = new Poster(video, posterCanvas);
    this.forcedMode = mode === 'mse' || mode === 'blob' ? mode : null;
    this.state = 'connecting';
    this.mime = null;
    this.player = null;
    this.errors = [];
    this.recoveries = [];
    this.switches = [];
    this.log = [];
    this.userPaused = false;
    this.seekedToEdge = false;
    this.chunkClock = new ChunkClock();
    this.framesBase = 0;
    this.framesPresented = 0;
    this.lastFrameAt = null;
    this.rates = [];
    this.clockProbe = clock ? { samples: [], canvas: document.createElement('canvas') } : null;
    this.reassembler = new Reassembler({
      onStart: (g, bytes) => this.onStart(g, bytes),
      onAppend: (g, bytes, at) => this.onAppend(g, bytes, at),
      onJump: (g, from, to) => this.player?.jump(g, from, to),
    });
    this.conn = new ViewerConnection(stream, this.reassembler, {
      onFrame: (data, fromBlob) => this.onFrame(data, fromBlob),
      onHello: (msg) => this.onHello(msg),
      onEnd: () => this.onEnd(),
      onLost: (close, delay) => this.onLost(close, delay),
    });
    // Before the hello, the mime is unknown: ask for the live edge if MSE is likely,
    // and take that back in onHello if the stream's codecs need blob mode.
    this.conn.joinLive = this.plannedMode() === 'mse';
    // userPaused is set by the page's Pause button only: the browser pauses on its own
    // too (a src swap, the end of a blob, muted autoplay scrolled off screen), and
    // those pauses must not stop the live-edge control from resuming playback.
    video.addEventListener('play', () => (this.userPaused = false));
    // Seconds actually played (src swaps and seeks excluded), for the page and tests.
    this.played = 0;
    let lastTime = 0;
    video.addEventListener('timeupdate', () => {
      const d = video.currentTime - lastTime;
      if (d > 0 && d < 0.6 && !video.seeking) this.played += d;
      lastTime = video.currentTime;
    });
    video.addEventListener('waiting', () => {
      const b = video.buffered;
      const ranges = [];
      for (let i = 0; i < b.length; i++) ranges.push(`${b.start(i).toFixed(2)}-${b.end(i).toFixed(2)}`);
      this.stalls = (this.stalls || 0) + 1;
      this.note(`waiting at ${video.currentTime.toFixed(2)} (buffered ${ranges.join(' ') || 'none'})`);
    });
    video.addEventListener('error', () => {
      const e = video.error;
      if (!e || !this.player) return;
      const text = `media error ${e.code}: ${e.message || ''}`;
      if (this.player.kind === 'mse') this.player.failed(text);
      else this.error(text);
    });
    this.startFrameLoop();
  }

  note(text) {
    this.log.push({ t: Date.now(), text });
    if (this.log.length > 300) this.log.shift();
  }

  error(text) {
    this.errors.push(text);
    this.note(`error: ${text}`);
    this.onError?.(text);
  }

  plannedMode(mime) {
    if (this.forcedMode) return this.forcedMode;
    if (!mediaSourceClass()) return 'blob';
    if (mime && !mseSupports(mime)) return 'blob';
    return 'mse';
  }

  get mode() {
    return this.player ? this.player.kind : this.plannedMode(this.mime);
  }

  /** The player kind ensurePlayer would create for `mime` (the current one if any). */
  playerKind(mime) {
    if (this.player) return this.player.kind;
    return this.plannedMode(mime) === 'mse' && mseSupports(mime) ? 'mse' : 'blob';
  }

  connect() {
    this.conn.connect();
    this.tickTimer = setInterval(() => this.tick(), 250);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.note(`state ${state}`);
    this.onChange?.();
  }

  onHello(msg) {
    this.hello = msg;
    if (msg.mime) this.setMime(msg.mime);
    if (this.mime) this.conn.joinLive = this.playerKind(this.mime) === 'mse';
    if (!msg.live) {
      this.setState(this.state === 'ended' ? 'ended' : 'waiting');
      return;
    }
    this.setState('live');
  }

  onEnd() {
    this.setState('ended');
  }

  onLost(close, delay) {
    this.note(`connection lost (${close.code} ${close.reason}); retrying in ${delay} ms`);
    this.lostText = close.text;
    this.setState('reconnecting');
  }

  setMime(mime) {
    if (this.mime === mime && this.player) return;
    const old = this.mime;
    this.mime = mime;
    if (old && old !== mime && this.player) {
      this.note(`format changed to ${mime}`);
      this.player.destroy();
      this.player = null;
    }
  }

  /** The player for this mime, created on first need. */
  ensurePlayer(firstBytes) {
    if (this.player) return this.player;
    let mime = this.mime;
    if (!mime || (!mseSupports(mime) && !/codecs=/.test(mime))) {
      // A mime without codecs: find them in the WebM header.
      const scan = new WebmScanner();
      scan.push(firstBytes);
      const codecs = scan.codecsParameter();
      if (codecs) mime = `video/webm;codecs=${codecs}`;
    }
    this.mime = mime || 'video/webm';
    const mode = this.plannedMode(this.mime);
    if (mode === 'mse' && !mseSupports(this.mime)) {
      this.error(`This browser's MediaSource cannot play ${this.mime}; using blob mode.`);
    }
    this.player = mode === 'mse' && mseSupports(this.mime) ? new MsePlayer(this, this.mime) : new BlobPlayer(this, this.mime);
    this.note(`player: ${this.player.kind} for ${this.mime}`);
    this.onChange?.();
    return this.player;
  }

  /**
   * Blob mode plays whole files: from now on every join asks for the whole generation
   * (join=start). True if what is held began at a live-edge jump and a fresh snapshot
   * has been asked for instead.
   */
  wholeGenerationsOnly() {
    const r = this.reassembler;
    this.conn.joinLive = false;
    r.expectLiveJoin(null);
    if (!r.joinedAtLiveEdge) return false;
    this.note('blob mode: the held generation starts at the live edge; fetching all of it');
    r.forget();
    this.conn.reconnectNow();
    return true;
  }

  /** Drops the current player and plays the held generation with another one. */
  switchMode(mode) {
    this.forcedMode = mode;
    this.player?.destroy();
    this.player = null;
    if (mode === 'blob' && this.wholeGenerationsOnly()) return;
    const r = this.reassembler;
    if (r.generation === null) return;
    const player = this.ensurePlayer(r.pieces[0].bytes);
    player.start(r.generation, r.pieces[0].bytes);
    for (const p of r.pieces.slice(1)) player.append(r.generation, p.bytes, p.offset);
  }

  onFrame(data, fromBlob) {
    this.rates.push({ t: performance.now(), n: data.byteLength });
    this.reassembler.push(data, fromBlob);
  }

  onStart(generation, bytes) {
    this.note(`generation ${generation}`);
    if (this.state !== 'live') this.setState('live');
    const player = this.ensurePlayer(bytes);
    player.start(generation, bytes);
    if (player.kind === 'blob' && this.reassembler.liveJoin === generation) {
      // Only the WebM header told us MSE cannot play this: the live-edge jump is still
      // to come. A resume from the header's end gets the rest of the generation.
      this.note('blob mode: resuming after the header instead of jumping to the live edge');
      this.conn.joinLive = false;
      this.reassembler.expectLiveJoin(null);
      this.conn.reconnectNow();
    }
    this.onChange?.();
  }

  onAppend(generation, bytes, at) {
    this.chunkClock.arrived();
    this.player?.append(generation, bytes, at);
  }

  recordSwitch(sw) {
    const record = { at: Date.now(), overlayShown: false, presentedAt: null, ...sw };
    this.switches.push(record);
    if (this.switches.length > 100) this.switches.shift();
    return record;
  }

  /** How far behind the newest media we aim to play, seconds. */
  targetLag() {
    const chunk = this.chunkClock.interval;
    if (this.player?.kind === 'blob') return BLOB_SWAP_MS / 1000 + chunk + 0.5;
    // MSE: the lag just after a chunk arrives. Never closer to the edge than one chunk
    // interval, or playback stalls between arrivals; plus a margin for jitter.
    return Math.max(0.3, 1.3 * chunk + 0.2);
  }

  lag() {
    return this.player ? this.player.lag() : null;
  }

  bitrate() {
    const now = performance.now();
    while (this.rates.length && now - this.rates[0].t > 5000) this.rates.shift();
    if (!this.rates.length) return 0;
    const bytes = this.rates.reduce((s, r) => s + r.n, 0);
    const span = Math.max(1000, now - this.rates[0].t);
    return (bytes * 8) / (span / 1000);
  }

  play() {
    const p = this.video.play();
    if (p && p.catch) {
      p.catch((err) => {
        if (err.name === 'NotAllowedError') this.onAutoplayBlocked?.();
      });
    }
  }

  pause() {
    this.userPaused = true;
    this.video.pause();
  }

  goLive() {
    this.userPaused = false;
    const lag = this.lag();
    if (lag !== null) {
      const end = this.video.currentTime + lag;
      this.video.currentTime = Math.max(0, end - this.targetLag());
    }
    this.play();
  }

  /** A new src is about to be set: the frame counters start over with it. */
  srcChanging() {
    try {
      const q = this.video.getVideoPlaybackQuality();
      this.framesBase += q.totalVideoFrames;
    } catch {}
    this.startFrameLoop();
  }

  framesDecoded() {
    let current = 0;
    try {
      current = this.video.getVideoPlaybackQuality().totalVideoFrames;
    } catch {}
    return this.framesBase + current;
  }

  startFrameLoop() {
    const v = this.video;
    if (!('requestVideoFrameCallback' in v)) return;
    const token = (this.frameToken = {});
    const onFrame = (now, meta) => {
      if (this.frameToken !== token) return;
      this.framesPresented++;
      this.lastFrameAt = Date.now();
      this.player?.onFrame(meta.mediaTime);
      if (this.clockProbe) this.probeClock(meta);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }

  /** Reads the test pattern's clock cells from the frame about to be shown. */
  probeClock(meta) {
    const v = this.video;
    const probe = this.clockProbe;
    const w = v.videoWidth;
    const h = v.videoHeight;
    if (!w || !h) return;
    const c = probe.canvas;
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
      probe.ctx = c.getContext('2d', { willReadFrequently: true });
    }
    const { y0 } = clockStrip(w, h);
    probe.ctx.drawImage(v, 0, 0, w, h);
    const img = probe.ctx.getImageData(0, 0, w, h);
    const captured = decodeClock(img);
    if (captured === null) return;
    // expectedDisplayTime is on the performance clock of this page.
    const shown = performance.timeOrigin + meta.expectedDisplayTime;
    // mediaTime too: where the frame sits on the player's timeline, against when it was
    // captured, tells whether media is missing (or repeated) between two frames.
    // And the lag behind the newest media held: latency minus lag is how old that media
    // is, the pipeline's delay without the live-edge control's choice of where to play.
    probe.samples.push({ captured, shown, latency: shown - captured, mediaTime: meta.mediaTime, lag: this.lag(), y0 });
    if (probe.samples.length > 5000) probe.samples.shift();
  }

  tick() {
    this.player?.tick();
    const gap = this.reassembler.gapSince();
    if (gap !== null && Date.now() - gap > GAP_PATIENCE) {
      this.note('a gap did not fill; resuming from what we hold');
      this.reassembler.aheadSince = Date.now();
      this.conn.reconnectNow();
    }
  }
}

// ---- the page ---------------------------------------------------------------------

export function initWatchPage() {
  const $ = (id) => document.getElementById(id);
  const parts = location.pathname.split('/').filter(Boolean);
  const stream = decodeURIComponent(parts[parts.length - 1] || '');
  const params = new URLSearchParams(location.search);
  // ?token= rides on the sockets and API calls, and leaves the address bar and history.
  const token = params.get('token') || '';
  if (params.has('token')) {
    params.delete('token');
    history.replaceState(null, '', `${location.pathname}${params.toString() ? '?' + params : ''}`);
  }
  $('stream-name').textContent = stream;
  document.title = `Blobcast · ${stream}`;
  if (!isToken(stream)) {
    $('message').textContent = 'This is not a valid stream name (1-64 letters, digits, "_" or "-").';
    $('message').hidden = false;
    return;
  }
  const video = $('video');
  video.muted = true; // autoplay is allowed muted; the button unmutes
  const viewer = new Viewer({
    stream,
    video,
    posterCanvas: $('poster'),
    mode: params.get('mode'),
    clock: params.get('clock') === '1',
  });
  viewer.conn.token = token;
  let viewers = null;
  let apiInfo = null;

  const hook = {
    get state() {
      return viewer.state;
    },
    get mode() {
      return viewer.mode;
    },
    get generation() {
      return viewer.reassembler.generation;
    },
    get length() {
      return viewer.reassembler.length;
    },
    get lag() {
      return viewer.lag();
    },
    get hello() {
      return viewer.hello;
    },
    framesDecoded: () => viewer.framesDecoded(),
    framesPresented: () => viewer.framesPresented,
    played: () => viewer.played,
    errors: viewer.errors,
    recoveries: viewer.recoveries,
    switches: viewer.switches,
    log: viewer.log,
    viewer,
    reconnect: () => viewer.conn.reconnectNow(),
    clockSamples: () => viewer.clockProbe?.samples ?? [],
  };
  window.blobcastViewer = hook;

  const render = () => {
    const state = viewer.state;
    const badge = $('state');
    const shown = state === 'connecting' ? 'connecting' : state;
    badge.textContent = shown;
    badge.className = `badge state-${shown}`;
    const msg = $('message');
    const texts = {
      connecting: 'Connecting…',
      waiting: 'Waiting for the stream to start…',
      ended: 'The stream has ended. This page will pick it up again if it restarts.',
      reconnecting: `Connection lost${viewer.lostText ? ` (${viewer.lostText})` : ''}; reconnecting…`,
    };
    msg.hidden = !texts[state];
    msg.textContent = texts[state] || '';
    // Refused for want of a token, or with one that may not watch: retrying cannot help.
    const refused = {
      4401: token ? 'This token is not valid (expired?): ask for a fresh link.' : 'This stream needs a token: open it with the link (…?token=…) you were given.',
      4403: 'Your token does not allow watching this stream.',
    }[viewer.conn.lastClose?.code];
    if (refused) {
      viewer.conn.close();
      badge.textContent = 'refused';
      msg.hidden = false;
      msg.textContent = refused;
    }
    const lag = viewer.lag();
    $('latency').textContent = lag === null || state !== 'live' ? '—' : `${lag.toFixed(2)} s`;
    $('bitrate').textContent = formatBits(viewer.bitrate());
    $('viewers').textContent = viewers === null ? '—' : String(viewers);
    $('mode').textContent = viewer.mode;
    $('generation').textContent = viewer.reassembler.generation ?? '—';
    const behind = state === 'live' && lag !== null && (viewer.userPaused || lag > viewer.targetLag() + 2);
    $('golive').hidden = !behind;
    $('mute').textContent = video.muted ? 'Unmute' : 'Mute';
    $('errors').hidden = !viewer.errors.length;
    $('errors').textContent = viewer.errors.slice(-3).join(' · ');
    if (apiInfo && apiInfo.ingest_bits_per_second) {
      $('ingest').textContent = formatBits(apiInfo.ingest_bits_per_second);
    }
  };
  viewer.onChange = render;
  viewer.onError = render;
  viewer.onAutoplayBlocked = () => {
    $('message').hidden = false;
    $('message').textContent = 'Click the video to start playback.';
  };
  setInterval(render, 500);

  const poll = async () => {
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch(`/api/streams/${encodeURIComponent(stream)}`, { cache: 'no-store', headers });
      if (res.ok) {
        apiInfo = await res.json();
        viewers = apiInfo.viewers;
      } else if (res.status === 404) {
        viewers = 0;
      }
    } catch {}
    render();
  };
  poll();
  setInterval(poll, 3000);

  $('mute').addEventListener('click', () => {
    video.muted = !video.muted;
    render();
  });
  $('golive').addEventListener('click', () => viewer.goLive());
  $('playpause').addEventListener('click', () => {
    if (video.paused) viewer.goLive();
    else viewer.pause();
  });
  video.addEventListener('click', () => {
    if (video.paused) viewer.goLive();
  });
  viewer.connect();
  render();
}
