// The viewer: joins a stream (viewer-connection.js), rebuilds the current generation
// (reassembly.js) and hands it to a player, either MediaSource ("mse": mse-player.js)
// or a Blob swapped into video.src ("blob": blob-player.js). It picks the player and
// switches between them, and keeps the statistics the page and the tests read.

import { Reassembler } from './reassembly.js';
import { mimeFromHeader } from './media-scanner.js';
import { decodeClock, clockStrip } from './testpattern.js';
import { ViewerConnection } from './viewer-connection.js';
import { MsePlayer, mseSupports } from './mse-player.js';
import { BlobPlayer, blobTargetLag } from './blob-player.js';
import { mseTargetLag } from './live-edge.js';
import { choosePlayback, browserPlayback } from './playback-choice.js';
import { Poster } from './poster.js';
import { PauseRelease } from './pause-release.js';

/** A gap that a resume might heal, after this long (ms). */
const GAP_PATIENCE = 3000;

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

export class Viewer {
  constructor({ stream, video, posterCanvas, mode, clock, pauseGraceMs }) {
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
    /** Paused with the page's Pause button (or the space key). */
    this.pausedByUser = false;
    /**
     * The person seeked back in time (the back key or button): the live-edge control
     * leaves the position alone until "Go live", or until playback is back at the edge.
     */
    this.userSeekedBack = false;
    /** play() was refused (autoplay policy): only a person's click may try again. */
    this.autoplayBlocked = false;
    this.seekedToEdge = false;
    this.silences = 0;
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
      onFrame: (data, fromBlob, epoch) => this.onFrame(data, fromBlob, epoch),
      onNewEpoch: (epoch) => this.note(`a new publish session (epoch ${epoch}): starting afresh`),
      onHello: (msg) => this.onHello(msg),
      onEnd: () => this.onEnd(),
      onLost: (close, delay) => this.onLost(close, delay),
    });
    // Before the hello, the mime is unknown: ask for the live edge if MSE is likely,
    // and take that back in onHello if the stream's codecs need blob mode.
    this.conn.joinLive = this.plannedMode() === 'mse';
    // pausedByUser is set by the page's Pause button only: the browser pauses on its own
    // too (a src swap, the end of a blob, muted autoplay scrolled off screen), and
    // those pauses must not stop the live-edge control from resuming playback.
    video.addEventListener('play', () => (this.pausedByUser = false));
    video.addEventListener('playing', () => {
      // For the join-time figures (and tests): when playback first started.
      this.firstPlayingAt ??= Date.now();
      if (this.autoplayBlocked) {
        this.autoplayBlocked = false;
        this.onChange?.();
      }
    });
    this.pauseRelease = new PauseRelease(this, pauseGraceMs);
    // Seconds actually played (src swaps and seeks excluded), for the page and tests.
    this.played = 0;
    let lastTime = 0;
    const hasFrameCallback = 'requestVideoFrameCallback' in video;
    video.addEventListener('timeupdate', () => {
      const d = video.currentTime - lastTime;
      if (d > 0 && d < 0.6 && !video.seeking) {
        this.played += d;
        // Without requestVideoFrameCallback, time moving on is the sign that frames are
        // shown: the player may hide its poster then (else it could cover the video for good).
        if (!hasFrameCallback) this.player?.onFrame(video.currentTime);
      }
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

  /**
   * What the live-edge control must leave alone: a pause, or a seek back, that the person
   * made. (live-edge.js reads this as `userPaused`: it has no input of its own for a
   * seek back yet; see docs/browser.md.)
   */
  get userPaused() {
    return this.pausedByUser || this.userSeekedBack;
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
    return this.playbackChoice(mime).mode;
  }

  /** playback-choice.js on this browser: { mode, source, note }. */
  playbackChoice(mime) {
    return choosePlayback({ forced: this.forcedMode, mime: mime || null, ...browserPlayback(window) });
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
    if (msg.live) this.liveHelloAt ??= Date.now();
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
      // A mime without codecs: find them in the WebM Tracks or the MP4 `stsd`.
      mime = mimeFromHeader(firstBytes, mime) ?? mime;
    }
    this.mime = mime || 'video/webm';
    const mode = this.plannedMode(this.mime);
    if (mode === 'mse' && !mseSupports(this.mime)) {
      this.error(`This browser's MediaSource cannot play ${this.mime}; using blob mode.`);
    }
    this.player = mode === 'mse' && mseSupports(this.mime) ? new MsePlayer(this, this.mime) : new BlobPlayer(this, this.mime);
    // Blob mode not asked for: say why, in plain words (no MediaSource on this iPhone…).
    this.notice = this.player.kind === 'blob' && !this.forcedMode ? this.playbackChoice(this.mime).note : null;
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

  onFrame(data, fromBlob, epoch) {
    this.rates.push({ t: performance.now(), n: data.byteLength });
    this.reassembler.push(data, fromBlob, epoch);
  }

  onStart(generation, bytes) {
    this.note(`generation ${generation}`);
    if (this.state !== 'live') this.setState('live');
    const player = this.ensurePlayer(bytes);
    player.start(generation, bytes);
    if (player.kind === 'blob' && this.reassembler.liveJoin === generation) {
      // Only the header (WebM Tracks, MP4 stsd) told us MSE cannot play this: the
      // live-edge jump is still to come. A resume from the header's end gets the rest
      // of the generation.
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
    if (this.player?.kind === 'blob') return blobTargetLag(chunk);
    // The controller's, once it has measured arrivals.
    return this.player?.edge?.target?.lag ?? mseTargetLag(chunk);
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

  /**
   * Starts playback. Once the browser refused it (autoplay policy), only a person's
   * click (`byUser`) tries again: retrying from the 250 ms tick would make the prompt
   * flicker and achieve nothing.
   */
  play(byUser = false) {
    if (this.autoplayBlocked && !byUser) return;
    const p = this.video.play();
    if (p && p.catch) {
      p.catch((err) => {
        if (err.name !== 'NotAllowedError') return;
        const was = this.autoplayBlocked;
        this.autoplayBlocked = true;
        if (!was) {
          this.note('autoplay refused: waiting for a click');
          this.onChange?.();
        }
      });
    }
  }

  pause() {
    this.pausedByUser = true;
    this.video.pause();
    this.pauseRelease.paused();
    this.onChange?.();
  }

  goLive() {
    this.pausedByUser = false;
    if (this.userSeekedBack) this.note('go live: back to the live edge');
    this.userSeekedBack = false;
    this.pauseRelease.resumed();
    const lag = this.lag();
    if (lag !== null) {
      const end = this.video.currentTime + lag;
      this.video.currentTime = Math.max(0, end - this.targetLag());
    }
    this.play(true);
    this.onChange?.();
  }

  /**
   * A seek the person asked for (the arrow keys, the back button): `seconds` back
   * (negative) or forward. Back, it is respected until "Go live"; forward to within the
   * target lag of the edge, the live-edge control takes over again.
   */
  seekBy(seconds) {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const start = b.start(0);
    const end = b.end(b.length - 1);
    const to = Math.min(Math.max(start, v.currentTime + seconds), end);
    this.userSeekedBack = end - to > this.targetLag() + 0.5;
    // The control may have left playback faster or slower to catch up: a person's
    // seek plays at normal speed.
    if (this.userSeekedBack) v.playbackRate = 1;
    this.note(`seek by the viewer to ${to.toFixed(2)} (edge ${end.toFixed(2)})${this.userSeekedBack ? ': held until "Go live"' : ''}`);
    v.currentTime = to;
    this.onChange?.();
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
    // Played forward (or fast-forwarded) to the edge after a seek back: live again.
    const lag = this.userSeekedBack && !this.video.seeking ? this.lag() : null;
    if (lag !== null && lag <= this.targetLag()) {
      this.userSeekedBack = false;
      this.note('caught up with the live edge after a seek back');
    }
    this.player?.tick();
    if (this.state === 'live' && !this.pauseRelease.released && this.conn.checkSilence(this.chunkClock.interval)) {
      this.silences++;
      this.note('nothing arrived for too long: reconnecting (resume)');
    }
    const gap = this.reassembler.gapSince();
    if (gap !== null && Date.now() - gap > GAP_PATIENCE) {
      this.note('a gap did not fill; resuming from what we hold');
      this.reassembler.aheadSince = Date.now();
      this.conn.reconnectNow();
    }
  }
}
