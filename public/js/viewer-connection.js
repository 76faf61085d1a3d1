// The viewer's connection: the chunk and blob sockets of docs/protocol.md, opened in
// the order that lets them meet without a gap, the hello and end control messages, and
// reconnecting (resuming from what the reassembler holds) with a backoff.
//
// Each socket knows which publish session (epoch) its frames belong to: the blob socket
// from its hellos, the chunk socket from its {"type":"epoch"} messages (or, until it gets
// one, from the hello). The reassembler keeps generations of two sessions apart by it.

import { socketUrl, describeClose } from './protocol.js';

/** Reconnect delays, ms: grows to the last value and stays there. */
const BACKOFF = [200, 500, 1000, 2000, 4000, 8000];
/** A connection with no byte for this long (ms) while live is dead, at least. */
const SILENCE_MIN_MS = 5000;

/** A delay spread over ±50 %: a thousand viewers of a restarted server come back spread out. */
export function withJitter(ms, random = Math.random) {
  return Math.round(ms * (0.5 + random()));
}

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
    /** When the last message came, on either socket (ms clock). */
    this.lastByteAt = Date.now();
    this.silences = 0;
  }

  /**
   * Called while the stream is live: a connection that has carried nothing for
   * max(3 chunk intervals, 5 s) is dead even if no close came (a sleeping laptop, a
   * dropped Wi-Fi, a proxy that stalls): reconnect, resuming from what is held.
   */
  checkSilence(chunkIntervalSeconds) {
    if (!this.chunk || !this.blob || this.closed) return false;
    const limit = Math.max(3 * chunkIntervalSeconds * 1000, SILENCE_MIN_MS);
    if (Date.now() - this.lastByteAt <= limit) return false;
    this.silences++;
    this.lastByteAt = Date.now();
    this.reconnectNow();
    return true;
  }

  connect() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    const resume = this.reassembler.resumePoint();
    const params = resume ? { gen: resume.gen, offset: resume.offset, epoch: resume.epoch } : {};
    if (this.token) params.token = this.token;
    this.connects++;
    // A resume names its epoch: chunks that come before any hello are of it.
    this.blobEpoch = resume?.epoch ?? null;
    this.chunkEpoch = resume?.epoch ?? null;
    this.chunkEpochTold = false;
    // The chunk socket first: the server records our position before answering its
    // upgrade, so the blob socket's snapshot and these chunks meet without a gap.
    // join=live on the chunk socket: this player starts at keyframes, so the server may
    // move it to the newest keyframe cluster if it falls behind instead of cutting it off.
    const chunkParams = this.joinLive ? { ...params, join: 'live' } : params;
    const chunk = new WebSocket(socketUrl(`/ws/watch/${this.stream}/chunk`, chunkParams));
    chunk.binaryType = 'arraybuffer';
    this.chunk = chunk;
    this.lastByteAt = Date.now();
    chunk.onmessage = (e) => {
      this.lastByteAt = Date.now();
      if (typeof e.data !== 'string') this.events.onFrame(e.data, false, this.chunkEpoch);
      else this.chunkControl(e.data);
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
        this.lastByteAt = Date.now();
        if (typeof e.data === 'string') this.control(e.data);
        else this.events.onFrame(e.data, true, this.blobEpoch);
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
      if (msg.epoch !== undefined && msg.epoch !== null) {
        this.blobEpoch = msg.epoch;
        if (!this.chunkEpochTold) this.chunkEpoch = msg.epoch;
        // Another publish session: what is held is not continued, whatever the numbers.
        if (this.reassembler.newEpoch(msg.epoch)) this.events.onNewEpoch?.(msg.epoch);
      }
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

  /**
   * Text on the chunk socket: {"type":"epoch"} before the frames of a new session, and
   * {"type":"jump"} when the server moved this lagging viewer to a newer keyframe cluster.
   */
  chunkControl(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === 'epoch' && msg.epoch !== undefined && msg.epoch !== null) {
      this.chunkEpoch = msg.epoch;
      this.chunkEpochTold = true;
    } else if (msg.type === 'jump') {
      this.reassembler.skipTo(this.chunkEpoch, msg.generation, msg.offset);
    }
  }

  lost(ws, e) {
    if (ws !== this.chunk && ws !== this.blob) return;
    this.lastClose = describeClose(e.code, e.reason);
    const lived = ws.openedAt ? Date.now() - ws.openedAt : 0;
    this.drop();
    if (this.closed) return;
    if (lived > 10000) this.attempt = 0;
    const delay = withJitter(BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)] * (e.code === 4429 ? 4 : 1));
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

  /** Connects again after close() (a paused viewer that plays again). */
  reopen() {
    this.closed = false;
    this.attempt = 0;
    this.connect();
  }
}
