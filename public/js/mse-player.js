// The MSE player: one MediaSource whose single SourceBuffer is fed generation after
// generation, laid end to end on one timeline. It recovers from a demuxer error with a
// fresh MediaSource, hides each generation switch under the poster, and carries out the
// live-edge controller's seeks and rates (live-edge.js). WebM goes through
// KeyframeClusters first, so every cluster opens with a keyframe (Firefox needs that).
// MP4 goes through Mp4Gaps (fragments end to end, or MSE drops whole fragments), in
// "segments" mode at an offset read from its first `moof` (below).

import { SourceBufferQueue } from './source-buffer-queue.js';
import { KeyframeClusters } from './keyframe-clusters.js';
import { Mp4Scanner } from './mp4.js';
import { Mp4Gaps } from './mp4-gaps.js';
import { ARRIVAL_WINDOW, freshLiveEdgeMemory, steerToLiveEdge, waitIsShortage } from './live-edge.js';
import { choosePlayback, browserPlayback, mayAppend } from './playback-choice.js';

/** A `waiting` this soon after a seek is the seek's, not a stall (ms). */
const SEEK_SETTLE_MS = 1000;
/** When to look again at a wait that may be a stuck decoder (ms; live-edge.js STUCK_WAIT). */
const STUCK_LOOK_MS = 150;
/** Controller targets kept for the page and the latency benchmark. */
const TARGETS_KEPT = 600;

/** The MediaSource class to play `mime` with (ManagedMediaSource first), or null. */
export function mediaSourceClass(mime = null) {
  const { source } = choosePlayback({ forced: null, mime, ...browserPlayback(window) });
  return source ? window[source] : null;
}

export function mseSupports(mime) {
  return !!mime && mediaSourceClass(mime) !== null;
}

export class MsePlayer {
  constructor(viewer, mime) {
    this.viewer = viewer;
    this.video = viewer.video;
    this.mime = mime;
    this.kind = 'mse';
    this.queue = new SourceBufferQueue(this.video, {
      note: (text) => viewer.note(text),
      failed: (reason) => this.failed(reason),
    });
    this.ms = null;
    this.url = null;
    this.recovering = false;
    this.pendingSwitches = [];
    this.lastTrim = 0;
    this.edge = freshLiveEdgeMemory();
    // Any seek, ours or the user's, starts over both the watch for a gap played across
    // and the watch for a frozen picture.
    this.onSeeking = () => {
      this.edge = { ...this.edge, lastPlayhead: null, frameWatch: null };
      this.seekedAt = performance.now();
    };
    this.seekedAt = -Infinity;
    this.video.addEventListener('seeking', this.onSeeking);
    /** When chunks became playable, against the media they brought (live-edge.js). */
    this.arrivals = [];
    /** Stalls: playback waiting for data, not for a seek (Chrome may wait a moment
     *  after the seek is done, while it decodes up to the new position), nor with data
     *  in hand (a stuck decoder, re-seeked by the controller: no reason to lag more). */
    this.stalls = 0;
    this.onWaiting = () => {
      const v = this.video;
      const b = v.buffered;
      const ahead = b.length ? b.end(b.length - 1) - v.currentTime : 0;
      if (!v.seeking && performance.now() - this.seekedAt > SEEK_SETTLE_MS && waitIsShortage(ahead, this.edge)) this.stalls++;
      // A wait with data ahead may be Chrome's stuck video decoder (live-edge.js): the
      // controller looks now, and again once it has lasted long enough to act on.
      this.tick();
      clearTimeout(this.stuckTimer);
      this.stuckTimer = setTimeout(() => this.ms && this.tick(), STUCK_LOOK_MS);
    };
    this.video.addEventListener('waiting', this.onWaiting);
    /** [{ at: Date.now(), lag, targetLag }] once per tick, for the page and the benchmark. */
    this.targets = [];
    this.open();
  }

  open() {
    const MS = mediaSourceClass(this.mime);
    const ms = new MS();
    this.ms = ms;
    this.queue.detach();
    const managed = !!window.ManagedMediaSource && ms instanceof window.ManagedMediaSource;
    this.sourceKind = managed ? 'ManagedMediaSource' : 'MediaSource';
    if (managed) {
      // Without this (or an AirPlay source alternative) Safari does not play a
      // ManagedMediaSource at all.
      this.video.disableRemotePlayback = true;
      // The browser says when it wants data (it saves power on a phone): appends wait
      // in the queue meanwhile.
      const streaming = (wanted) => () => {
        if (this.ms !== ms) return;
        this.viewer.note(wanted ? 'ManagedMediaSource: startstreaming' : 'ManagedMediaSource: endstreaming');
        this.queue.setAppendAllowed(mayAppend(true, wanted));
      };
      ms.addEventListener('startstreaming', streaming(true));
      ms.addEventListener('endstreaming', streaming(false));
    }
    const old = this.url;
    // A fresh MediaSource starts a fresh timeline.
    this.arrivals = [];
    this.url = URL.createObjectURL(ms);
    this.viewer.srcChanging();
    this.video.src = this.url;
    if (old) URL.revokeObjectURL(old);
    ms.addEventListener('sourceopen', () => {
      if (this.ms !== ms) return;
      let sb;
      try {
        sb = ms.addSourceBuffer(this.mime);
        // Every generation restarts its timestamps at 0: "sequence" lays each one
        // right after the previous one on a single timeline. Not for MP4: Chromium's
        // sequence mode left a hole of one fragment (1 s) after every fragment of
        // MediaRecorder's MP4 joined at the live edge (its audio run starts 25 ms
        // before its video run); "segments" with an offset per generation has none.
        sb.mode = this.mp4 ? 'segments' : 'sequence';
        sb.addEventListener('error', () => this.failed('SourceBuffer error (the demuxer refused the bytes)'));
      } catch (err) {
        this.viewer.error(`MediaSource cannot play ${this.mime}: ${err.message}`);
        return;
      }
      this.queue.setAppendAllowed(mayAppend(managed, ms.streaming));
      this.queue.attach(ms, sb);
    }, { once: true });
  }

  start(generation, bytes) {
    const sw = this.viewer.recordSwitch({ generation, kind: 'generation', boundary: null });
    // The boundary in media time where the new generation begins: the buffered end
    // once everything before it is appended.
    this.queue.call((sb) => {
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
        if (!this.mp4) sb.timestampOffset = sw.boundary;
        this.pendingSwitches.push(sw);
      }
      this.groupStart = sw.boundary;
    });
    this.startFeed();
    this.feed(bytes);
  }

  /** A generation's bytes start over (a new one, or all of it again after a rebuild). */
  startFeed() {
    this.clusters = this.mp4 ? new Mp4Gaps() : this.reclusters ? new KeyframeClusters() : null;
    // MP4: held until the first moof says where the generation's media starts.
    this.mp4Start = this.mp4 ? { scanner: new Mp4Scanner(), held: [] } : null;
  }

  get mp4() {
    return /^video\/mp4/i.test(this.mime);
  }

  append(generation, bytes) {
    if (this.feed(bytes)) {
      // Once the bytes are appended: when they became playable, and how far they reach.
      this.queue.call((sb) => {
        const b = sb.buffered;
        if (!b.length) return;
        const wall = performance.now() / 1000;
        this.arrivals.push({ wall, end: b.end(b.length - 1) });
        while (this.arrivals.length && wall - this.arrivals[0].wall > ARRIVAL_WINDOW) this.arrivals.shift();
      });
    }
  }

  /** Bytes of the current generation: WebM re-cut at keyframes, MP4 with its gaps closed. */
  feed(bytes) {
    const gate = this.mp4Start;
    if (gate) {
      // Segments mode keeps the media's own times (tfdt): the offset puts the first
      // fragment (after a live join: the one joined at) at the generation's start.
      const out = this.clusters.push(bytes);
      gate.scanner.push(out);
      gate.held.push(out);
      const first = gate.scanner.fragments[0];
      if (!first && !gate.scanner.broken) return false;
      this.mp4Start = null;
      this.queue.call((sb) => {
        sb.timestampOffset = (this.groupStart ?? 0) - (first?.time ?? 0);
      });
      for (const b of gate.held) if (b.length) this.queue.append(b);
      return true;
    }
    const out = this.clusters ? this.clusters.push(bytes) : bytes;
    if (out.length) this.queue.append(out);
    return out.length > 0;
  }

  get reclusters() {
    return /webm/i.test(this.mime);
  }

  jump(generation, from, to) {
    this.mp4Start?.scanner.jumpTo(to);
    // A live-edge join: the bytes continue at a cluster that opens with a keyframe;
    // for the parser that is just the next cluster.
    this.clusters?.jump();
    // The media now continues from a later moment: earlier arrivals no longer say how
    // late media comes.
    this.arrivals = [];
    // And playback is to go on there (a viewer moved ahead mid-play): the controller
    // makes its join seek again, one target lag behind the newest media.
    this.viewer.seekedToEdge = false;
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
    this.queue.hold();
    v.poster.capture();
    v.poster.show();
    setTimeout(() => this.rebuild(), recent > 1 ? 500 * recent : 0);
  }

  rebuild() {
    this.recovering = false;
    this.queue.restart();
    this.pendingSwitches = [];
    this.open();
    const r = this.viewer.reassembler;
    if (r.generation !== null) {
      this.groupStart = 0;
      this.startFeed();
      for (const piece of r.pieces) this.feed(piece.bytes);
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
    if (this.queue.attached && Date.now() - this.lastTrim > 5000) {
      this.lastTrim = Date.now();
      this.queue.trimBackBuffer();
    }
    const b = v.buffered;
    const ranges = [];
    for (let i = 0; i < b.length; i++) ranges.push([b.start(i), b.end(i)]);
    const decision = steerToLiveEdge(
      {
        ranges,
        currentTime: v.currentTime,
        paused: v.paused,
        seeking: v.seeking,
        readyState: v.readyState,
        userPaused: viewer.userPaused,
        chunkInterval: viewer.chunkClock.interval,
        chunkIntervalKnown: viewer.chunkClock.known,
        frames: {
          decoded: viewer.framesDecoded(),
          hasPicture: !!v.videoWidth,
          visible: document.visibilityState === 'visible',
        },
        now: performance.now() / 1000,
        arrivals: this.arrivals,
        stalls: this.stalls,
      },
      // Whether the join seek was made is the viewer's: a player made for a new format
      // takes over a playback that has joined already.
      { ...this.edge, joined: viewer.seekedToEdge },
    );
    this.edge = decision.memory;
    viewer.seekedToEdge = decision.memory.joined;
    if (decision.seekTo !== null) v.currentTime = decision.seekTo;
    if (decision.rate !== null) v.playbackRate = decision.rate;
    if (decision.note) viewer.note(decision.note);
    if (decision.play) viewer.play();
    const lag = b.length ? b.end(b.length - 1) - v.currentTime : null;
    this.targets.push({ at: Date.now(), lag, targetLag: decision.memory.target?.lag ?? null, rate: v.playbackRate });
    if (this.targets.length > TARGETS_KEPT) this.targets.shift();
  }

  destroy() {
    this.video.removeEventListener('seeking', this.onSeeking);
    this.video.removeEventListener('waiting', this.onWaiting);
    clearTimeout(this.stuckTimer);
    this.queue.destroy();
    if (this.url) URL.revokeObjectURL(this.url);
    this.ms = null;
  }
}
