// The MSE player's SourceBuffer queue: appends, removes and calls, one at a time, since
// a SourceBuffer takes no new operation while it is updating. It frees the back buffer
// when the browser's quota runs out, and keeps it trimmed on its own.

/** Back buffer: trim when more than BACK_MAX s behind currentTime, down to BACK_KEEP. */
const BACK_MAX = 30;
const BACK_KEEP = 15;

export class SourceBufferQueue {
  /** `failed(reason)`: an operation threw; the SourceBuffer cannot be trusted any more. */
  constructor(video, { note, failed }) {
    this.video = video;
    this.note = note;
    this.failed = failed;
    this.ops = [];
    this.ms = null;
    this.sb = null;
    this.held = false;
    /** False while a ManagedMediaSource does not want data (endstreaming). */
    this.appendAllowed = true;
  }

  /** ManagedMediaSource's startstreaming (true) and endstreaming (false). */
  setAppendAllowed(allowed) {
    this.appendAllowed = allowed;
    if (allowed) this.pump();
  }

  get attached() {
    return this.sb !== null;
  }

  /** The SourceBuffer of an open MediaSource: the queue starts feeding it. */
  attach(ms, sb) {
    this.ms = ms;
    this.sb = sb;
    sb.addEventListener('updateend', () => this.pump());
    this.pump();
  }

  /** A new MediaSource is on its way: nothing goes out until it is attached. */
  detach() {
    this.ms = null;
    this.sb = null;
  }

  /** Stops feeding the SourceBuffer (its MediaSource is about to be replaced). */
  hold() {
    this.held = true;
  }

  /** Forgets every queued operation, and feeds again once attached. */
  restart() {
    this.held = false;
    this.ops = [];
  }

  append(bytes) {
    this.push({ kind: 'append', bytes });
  }

  /** Runs `fn(sourceBuffer)` once everything queued before it is done. */
  call(fn) {
    this.push({ kind: 'call', fn });
  }

  push(op) {
    this.ops.push(op);
    this.pump();
  }

  pump() {
    const sb = this.sb;
    if (!sb || this.held || !this.appendAllowed || this.ms.readyState !== 'open') return;
    while (this.ops.length && !sb.updating) {
      const op = this.ops[0];
      try {
        if (op.kind === 'append') {
          sb.appendBuffer(op.bytes);
          this.ops.shift();
          return;
        }
        if (op.kind === 'remove') {
          this.ops.shift();
          if (op.end > op.start) {
            sb.remove(op.start, op.end);
            return;
          }
          continue;
        }
        this.ops.shift();
        if (op.kind === 'call') op.fn(sb);
      } catch (err) {
        if (err.name === 'QuotaExceededError') {
          this.note('quota exceeded: trimming the back buffer');
          const t = this.video.currentTime;
          const start = sb.buffered.length ? sb.buffered.start(0) : 0;
          if (t - 2 > start) {
            this.ops.unshift({ kind: 'remove', start: 0, end: t - 2 });
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
  trimBackBuffer() {
    const sb = this.sb;
    if (!sb || !sb.buffered.length) return;
    const t = this.video.currentTime;
    if (t - sb.buffered.start(0) > BACK_MAX) {
      this.push({ kind: 'remove', start: 0, end: t - BACK_KEEP });
    }
  }

  destroy() {
    this.ops = [];
    clearTimeout(this.quotaTimer);
    this.detach();
  }
}
