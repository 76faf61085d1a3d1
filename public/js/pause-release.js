// A paused viewer lets go: after a grace period on the Pause button, the MSE viewer
// closes its sockets, so it neither downloads nor buffers what it will skip anyway
// (playing again goes to the live edge). Playing again rejoins with join=live. Blob mode
// keeps its connection: it plays whole generations and resumes where it paused.

/** How long a pause may last before the sockets go, ms (`?pause_grace=` seconds overrides). */
export const PAUSE_GRACE_MS = 10000;

export class PauseRelease {
  constructor(viewer, graceMs = PAUSE_GRACE_MS) {
    this.viewer = viewer;
    this.graceMs = graceMs;
    this.timer = null;
    this.released = false;
    this.releases = 0;
  }

  /** The person paused. */
  paused() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.release(), this.graceMs);
  }

  release() {
    const v = this.viewer;
    if (!v.pausedByUser || v.mode !== 'mse' || this.released) return;
    this.released = true;
    this.releases++;
    v.note(`paused for ${Math.round(this.graceMs / 1000)} s: closing the connection until play`);
    v.conn.close();
  }

  /** The person plays again: back to the live edge. */
  resumed() {
    clearTimeout(this.timer);
    if (!this.released) return;
    this.released = false;
    const v = this.viewer;
    v.note('playing again: rejoining at the live edge');
    v.reassembler.forget();
    v.conn.joinLive = v.playerKind(v.mime) === 'mse';
    v.seekedToEdge = false;
    v.conn.reopen();
  }
}
