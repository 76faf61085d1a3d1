// The publisher: records a source with MediaRecorder and sends it over the two
// publisher sockets of docs/protocol.md, reconnecting when one drops, and says when the
// upload falls behind.
//
// Generations. Each MediaRecorder run is one generation: a complete WebM or fragmented
// MP4 file whose timestamps start at 0. Its first piece (the blob, with the header:
// EBML + Tracks, or ftyp + moov) goes on the
// blob socket at offset 0; the following pieces go on the chunk socket at their running
// offset. Generation numbers start from Date.now() and always grow.

import { encodeFrame, socketUrl, isToken, describeClose } from './protocol.js';
import { openCaptureSource, describeMediaError } from './capture-sources.js';
import { publishSession, forgetPublishSession } from './publish-session.js';
import { MIME_CANDIDATES, pickMime, supportedMimes, containerOf, probePreferredMime } from './record-formats.js';

export { MIME_CANDIDATES, pickMime };

export const DEFAULTS = {
  stream: 'live',
  source: 'camera',
  /** A LATENCY_PRESETS name, or '' for chunk_time as given. */
  latency: '',
  chunk_time: 1000,
  restart: 30,
  duration: '',
  keyframe: 1,
  mime: '',
  name_prefix: '',
  width: 1280,
  height: 720,
  fps: 30,
  bitrate: '',
  key: '',
  token: '',
};

/**
 * The recorder page's "Latency" choice: the MediaRecorder timeslice (ms) each preset
 * records with. Chromium cuts pieces on its 60 ms Opus frames: 50 ms comes out every
 * 60 ms, 100 ms every 120 ms, 250 ms every 300 ms (docs/performance.md). The viewer's
 * live-edge controller measures what arrives, so the presets need not know that.
 */
export const LATENCY_PRESETS = {
  lowest: 50,
  low: 100,
  normal: 250,
  relaxed: 1000,
};

/** The timeslice (ms) for options `o`: the latency preset's, else chunk_time. */
export function chunkTimeFor(o) {
  const preset = LATENCY_PRESETS[o.latency];
  if (preset) return preset;
  return Math.max(10, Number(o.chunk_time) || DEFAULTS.chunk_time);
}

/**
 * Bytes waiting in the browser's socket buffers before we say the upload lags: about
 * BACKPRESSURE_SECONDS of media at the rate we produce it, and never less than
 * BACKPRESSURE_MIN_BYTES.
 */
const BACKPRESSURE_SECONDS = 2;
const BACKPRESSURE_MIN_BYTES = 256 * 1024;
/** Reconnect delays, ms: grows to the last value and stays there. */
const BACKOFF = [250, 500, 1000, 2000, 4000, 8000];

export class Publisher {
  constructor(options, events = {}) {
    this.o = options;
    this.events = events;
    this.session = null;
    this.state = 'stopped';
    /** The open source ({ stream, stop }), and its MediaStream. */
    this.source = null;
    this.media = null;
    this.mime = null;
    this.sockets = { blob: null, chunk: null };
    this.backoff = { blob: 0, chunk: 0 };
    this.reconnectTimers = {};
    /** Recorders whose data is still to be sent, oldest first: only the head sends. */
    this.recorders = [];
    this.current = null;
    this.lastGeneration = 0;
    this.generation = null;
    this.generations = 0;
    this.bytesSent = 0;
    this.framesSent = 0;
    /** The newest generation a frame was sent of, and how many bytes of it: the stop names them. */
    this.sent = null;
    this.startedAt = null;
    this.pumping = false;
    this.backpressure = false;
    this.maxBuffered = 0;
    this.errors = [];
    this.log = [];
  }

  emit() {
    this.events.onChange?.(this);
  }

  note(text) {
    this.log.push({ t: Date.now(), text });
    if (this.log.length > 200) this.log.shift();
  }

  fail(text) {
    this.errors.push(text);
    this.events.onError?.(text);
    this.note(`error: ${text}`);
  }

  async start() {
    if (this.state !== 'stopped') return;
    const o = this.o;
    if (!isToken(o.stream)) {
      this.fail('The stream name must be 1-64 characters of letters, digits, "_" or "-".');
      return;
    }
    if (typeof MediaRecorder === 'undefined') {
      this.fail('This browser has no MediaRecorder; it cannot publish.');
      return;
    }
    const canRecord = (m) => MediaRecorder.isTypeSupported(m);
    this.mime = pickMime(o.mime, canRecord);
    if (!this.mime) {
      this.fail(o.mime ? `This browser cannot record ${o.mime}.` : 'This browser can record none of: ' + MIME_CANDIDATES.join(', '));
      return;
    }
    this.state = 'starting';
    this.errors = [];
    this.session = publishSession(o.stream);
    this.emit();
    try {
      this.source = await openCaptureSource(o, (text) => this.note(text));
      this.media = this.source.stream;
    } catch (err) {
      this.state = 'stopped';
      this.fail(describeMediaError(err, o.source));
      this.emit();
      return;
    }
    if (this.state !== 'starting') {
      // Stopped while the permission prompt was up.
      this.releaseMedia();
      return;
    }
    for (const track of this.media.getVideoTracks()) {
      track.addEventListener('ended', () => {
        if (this.state !== 'stopped' && this.state !== 'stopping') {
          this.note('the source ended');
          this.stop();
        }
      });
    }
    if (!o.mime && new Set(supportedMimes(canRecord).map(containerOf)).size > 1) {
      // Both WebM and MP4 on offer: the one the browser picks by itself (Safari: MP4).
      this.preferredMime = await probePreferredMime(this.media);
      this.mime = pickMime('', canRecord, this.preferredMime);
      if (this.state !== 'starting') {
        this.releaseMedia();
        return;
      }
    }
    if (!this.media.getAudioTracks().length && /,\s*(opus|mp4a[.\w]*)/i.test(this.mime)) {
      // No sound to record: Firefox's MediaRecorder asked for an audio codec with no
      // audio track delivers nothing until it stops (it waits for audio to mux).
      const videoOnly = this.mime.replace(/,\s*(opus|mp4a[.\w]*)/i, '');
      if (MediaRecorder.isTypeSupported(videoOnly)) this.mime = videoOnly;
    }
    this.events.onMedia?.(this.media);
    this.startedAt = Date.now();
    this.bytesSent = 0;
    this.generations = 0;
    this.openSocket('blob');
    this.openSocket('chunk');
    if (Number(o.duration) > 0) {
      this.durationTimer = setTimeout(() => this.stop(), Number(o.duration) * 1000);
    }
    this.statusTimer = setInterval(() => {
      this.checkBackpressure();
      this.emit();
    }, 500);
    this.pollTimer = setInterval(() => this.pollServer(), 2000);
    this.emit();
  }

  recorderOptions() {
    const o = this.o;
    const opts = { mimeType: this.mime };
    if (Number(o.bitrate) > 0) opts.videoBitsPerSecond = Number(o.bitrate);
    // Chrome honours this (ms) since M121; other browsers ignore unknown options.
    if (Number(o.keyframe) > 0) opts.videoKeyFrameIntervalDuration = Math.round(Number(o.keyframe) * 1000);
    return opts;
  }

  // ---- sockets ----------------------------------------------------------------

  openSocket(kind) {
    const o = this.o;
    const params = { session: this.session, key: o.key, token: o.token };
    if (kind === 'blob') params.name_prefix = o.name_prefix;
    const ws = new WebSocket(socketUrl(`/ws/publish/${o.stream}/${kind}`, params));
    ws.binaryType = 'arraybuffer';
    this.sockets[kind] = ws;
    ws.onopen = () => {
      if (this.sockets[kind] !== ws) return;
      if (kind === 'blob') this.announce(ws, this.announced || this.mime);
      ws.openedAt = Date.now();
      this.note(`${kind} socket open`);
      this.socketsChanged();
    };
    ws.onclose = (ev) => this.socketClosed(kind, ws, ev);
  }

  bothOpen() {
    return (
      this.sockets.blob?.readyState === WebSocket.OPEN &&
      this.sockets.chunk?.readyState === WebSocket.OPEN
    );
  }

  socketsChanged() {
    if (!this.bothOpen() || (this.state !== 'starting' && this.state !== 'reconnecting')) return;
    const resumed = this.state === 'reconnecting';
    this.state = 'live';
    if (resumed) {
      this.note('reconnected; continuing with a new generation');
      this.events.onWarning?.(null);
    }
    // Whether first start or after a drop: a new generation, so a fresh WebM header.
    this.startGeneration();
    this.emit();
  }

  socketClosed(kind, ws, ev) {
    if (this.sockets[kind] !== ws) return;
    this.sockets[kind] = null;
    if (this.state === 'stopped' || this.state === 'stopping') return;
    const close = describeClose(ev.code, ev.reason);
    this.note(`${kind} socket closed: ${ev.code} ${ev.reason || ''}`);
    const lived = ws.openedAt ? Date.now() - ws.openedAt : 0;
    if (!close.retry) {
      this.fail(`Publishing stopped: ${close.text}.`);
      this.shutdown();
      return;
    }
    // Whatever the current recorders produce now cannot be delivered whole: drop them,
    // and continue with a new generation once both sockets are open again.
    this.abandonRecorders();
    if (this.state !== 'reconnecting') {
      this.events.onWarning?.(`Connection lost (${close.text}); reconnecting…`);
    }
    this.state = 'reconnecting';
    if (lived > 10000) this.backoff[kind] = 0;
    const delay = BACKOFF[Math.min(this.backoff[kind], BACKOFF.length - 1)];
    this.backoff[kind]++;
    clearTimeout(this.reconnectTimers[kind]);
    this.reconnectTimers[kind] = setTimeout(() => {
      if (this.state === 'reconnecting' && !this.sockets[kind]) this.openSocket(kind);
    }, delay);
    this.emit();
  }

  // ---- generations --------------------------------------------------------------

  nextGeneration() {
    this.lastGeneration = Math.max(Date.now(), this.lastGeneration + 1);
    return this.lastGeneration;
  }

  startGeneration() {
    clearTimeout(this.restartTimer);
    const previous = this.current;
    let entry;
    try {
      entry = this.newRecorder();
    } catch (err) {
      this.fail(`MediaRecorder could not start: ${err.message || err.name}`);
      this.shutdown();
      return;
    }
    // Why the new recorder starts BEFORE the old one stops: both record the same
    // MediaStream, so the new generation begins a few ms before the old one ends and no
    // media falls between them (stopping first would lose the frames captured while
    // the new recorder spins up). The old recorder's final dataavailable, fired just
    // before its `stop` event, is the tail of its generation: it must go out on the
    // chunk socket before the new generation's blob (docs/protocol.md, "Generation
    // switches"). pump() guarantees that: only the oldest recorder in `recorders` may
    // send, and it leaves the queue only after its `stop` event, so the new blob waits
    // in the queue until the old tail has been sent. Viewers see no stop at all: the
    // server switches them to the new generation, whose header comes with its blob.
    if (previous && previous.rec.state !== 'inactive') previous.rec.stop();
    const restart = Number(this.o.restart);
    if (restart > 0) {
      this.restartTimer = setTimeout(() => {
        if (this.state === 'live') this.startGeneration();
      }, restart * 1000);
    }
    this.emit();
    return entry;
  }

  newRecorder() {
    const rec = new MediaRecorder(this.media, this.recorderOptions());
    const entry = { generation: this.nextGeneration(), rec, offset: 0, pending: [], stopped: false, dead: false };
    rec.ondataavailable = (e) => {
      if (entry.dead) return;
      entry.pending.push(e.data);
      this.pump();
    };
    rec.onstop = () => {
      entry.stopped = true;
      this.pump();
    };
    rec.onerror = (e) => this.recorderFailed(entry, e.error?.message || e.error?.name || 'unknown error');
    rec.start(chunkTimeFor(this.o));
    this.recorders.push(entry);
    this.current = entry;
    this.generations++;
    this.note(`generation ${entry.generation} started`);
    return entry;
  }

  /**
   * A MediaRecorder error ends its recording: what it sent stays a whole generation, and
   * a new recorder takes over at once (whatever `restart` says). Three errors within
   * 10 s mean recording does not work here: publishing stops, and says why.
   */
  recorderFailed(entry, reason) {
    if (entry.failed || this.state === 'stopped' || this.state === 'stopping') return;
    entry.failed = true;
    const now = Date.now();
    this.recorderErrors = (this.recorderErrors || []).filter((t) => now - t < 10000);
    this.recorderErrors.push(now);
    if (this.recorderErrors.length >= 3) {
      this.fail(`Publishing stopped: the recorder keeps failing (${reason}).`);
      this.shutdown();
      return;
    }
    this.note(`the recorder failed (${reason}); starting a new generation`);
    this.events.onWarning?.(`The recorder failed (${reason}); recording again.`);
    if (entry.rec.state !== 'inactive') {
      try {
        entry.rec.stop();
      } catch {}
    }
    entry.stopped = true;
    if (this.state === 'live' && entry === this.current) this.startGeneration();
    this.pump();
  }

  abandonRecorders() {
    for (const entry of this.recorders) {
      entry.dead = true;
      entry.pending = [];
      if (entry.rec.state !== 'inactive') {
        try {
          entry.rec.stop();
        } catch {}
      }
    }
    this.recorders = [];
    this.current = null;
    clearTimeout(this.restartTimer);
  }

  /** Sends queued pieces in order: all of the oldest recorder, then the next. */
  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.recorders.length) {
        const head = this.recorders[0];
        if (head.dead) {
          this.recorders.shift();
          continue;
        }
        if (head.pending.length) {
          const piece = head.pending.shift();
          if (!piece.size) continue;
          const bytes = new Uint8Array(await piece.arrayBuffer());
          if (!head.dead) this.send(head, bytes);
          continue;
        }
        if (head.stopped) {
          this.recorders.shift();
          continue;
        }
        break;
      }
    } finally {
      this.pumping = false;
    }
  }

  /** {"type":"start"} with the format viewers need to set up their decoder. */
  announce(ws, mime) {
    ws.send(JSON.stringify({ type: 'start', mime }));
    this.announced = mime;
  }

  send(entry, bytes) {
    const kind = entry.offset === 0 ? 'blob' : 'chunk';
    const ws = this.sockets[kind];
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      // The socket is gone: its close handler abandons this generation.
      entry.dead = true;
      return;
    }
    // The recorder may name its format more precisely than we asked for it (e.g.
    // "video/webm" -> "video/webm;codecs=vp8,opus"): announce that before its blob.
    if (kind === 'blob' && entry.rec.mimeType && entry.rec.mimeType !== this.announced) {
      this.announce(ws, entry.rec.mimeType);
    }
    ws.send(encodeFrame(entry.generation, entry.offset, bytes));
    if (entry.offset === 0) this.generation = entry.generation;
    entry.offset += bytes.byteLength;
    this.sent = { generation: entry.generation, length: entry.offset };
    this.bytesSent += bytes.byteLength;
    this.framesSent++;
    this.checkBackpressure();
  }

  /**
   * Asks the server how much of the current generation it has. Chrome's bufferedAmount
   * only counts what has not reached its network service yet: megabytes can sit in
   * socket buffers while it reads 0. What we sent minus what the server holds is the
   * real backlog.
   */
  async pollServer() {
    if (this.state !== 'live' || this.polling) return;
    this.polling = true;
    try {
      const res = await fetch(`/api/streams/${encodeURIComponent(this.o.stream)}`, { cache: 'no-store' });
      if (!res.ok) return;
      const info = await res.json();
      const entry = this.recorders.find((e) => e.generation === info.generation) || this.current;
      if (!entry) return;
      if (info.generation === entry.generation) this.inflight = Math.max(0, entry.offset - info.buffered_bytes);
      else if (info.generation < entry.generation) this.inflight = entry.offset;
      this.checkBackpressure();
    } catch {
      // The API is only a hint.
    } finally {
      this.polling = false;
    }
  }

  /** Bytes sent that the server does not have yet, as far as we can tell. */
  backlog() {
    return Math.max(this.buffered(), this.inflight || 0);
  }

  buffered() {
    return (this.sockets.blob?.bufferedAmount || 0) + (this.sockets.chunk?.bufferedAmount || 0);
  }

  /** The browser queues what the network cannot take yet; we never drop it, we say so. */
  checkBackpressure() {
    const buffered = this.backlog();
    this.maxBuffered = Math.max(this.maxBuffered, buffered);
    const seconds = this.startedAt ? Math.max(1, (Date.now() - this.startedAt) / 1000) : 1;
    const bound = Math.max(BACKPRESSURE_MIN_BYTES, (BACKPRESSURE_SECONDS * this.bytesSent) / seconds);
    const was = this.backpressure;
    // Hysteresis: the warning goes away once the queue is down to half the bound.
    this.backpressure = was ? buffered > bound / 2 : buffered > bound;
    if (this.backpressure !== was) {
      this.note(this.backpressure ? `upload falling behind: ${buffered} bytes queued` : 'upload caught up');
      this.emit();
    }
  }

  // ---- stopping -----------------------------------------------------------------

  /**
   * Stops publishing: the last pieces go out, then {"type":"stop","generation":G,"length":L}
   * naming the newest generation sent and how many of its bytes, then the sockets close.
   * The server ends the session only once it holds (G, L), so a stop can never overtake
   * the blob of a generation that had just started (it travels on the other socket).
   */
  async stop() {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    const wasLive = this.state === 'live';
    this.state = 'stopping';
    this.emit();
    clearTimeout(this.restartTimer);
    clearTimeout(this.durationTimer);
    if (wasLive) {
      for (const entry of this.recorders) {
        if (entry.rec.state !== 'inactive') entry.rec.stop();
      }
      await this.until(() => this.recorders.length === 0 && !this.pumping, 3000);
      // A recorder that has not delivered its tail by now never will: nothing more is
      // sent, so the stop below names exactly what went out.
      for (const entry of this.recorders) {
        entry.dead = true;
        entry.pending = [];
      }
      await this.until(() => !this.pumping, 1000);
      // On the chunk socket, right behind the last chunk: on the blob socket (another TCP
      // connection) the stop could reach the server first, and the tail would be lost.
      const ws = [this.sockets.chunk, this.sockets.blob].find((w) => w?.readyState === WebSocket.OPEN);
      const stop = { type: 'stop', ...(this.sent ? { generation: this.sent.generation, length: this.sent.length } : {}) };
      ws?.send(JSON.stringify(stop));
      this.note(`stop sent: ${JSON.stringify(stop)}`);
      await this.until(() => this.buffered() === 0, 3000);
    }
    this.shutdown();
  }

  until(check, timeoutMs) {
    return new Promise((resolve) => {
      const started = Date.now();
      const tick = () => {
        if (check() || Date.now() - started > timeoutMs) resolve();
        else setTimeout(tick, 20);
      };
      tick();
    });
  }

  /** Closes everything at once (after stop(), or on a fatal error). */
  shutdown() {
    this.state = 'stopped';
    // Ended on purpose (or refused for good): the next Start is a new session.
    forgetPublishSession(this.o.stream);
    clearTimeout(this.restartTimer);
    clearTimeout(this.durationTimer);
    clearInterval(this.statusTimer);
    clearInterval(this.pollTimer);
    for (const t of Object.values(this.reconnectTimers)) clearTimeout(t);
    this.abandonRecorders();
    for (const kind of ['blob', 'chunk']) {
      const ws = this.sockets[kind];
      this.sockets[kind] = null;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'publisher stopped');
    }
    this.releaseMedia();
    this.emit();
  }

  releaseMedia() {
    this.source?.stop();
    this.source = null;
    this.media = null;
  }

  /** For tests: drop one socket as a network failure would. */
  dropSocket(kind) {
    const ws = this.sockets[kind];
    if (ws) ws.close(4000, 'test: simulated drop');
  }
}
