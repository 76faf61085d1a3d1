// The blob player: each generation's bytes glued into one Blob and played from an
// object URL, swapped for a longer one every few seconds, with the poster covering each
// swap. For codecs MediaSource cannot play, and browsers with no MediaSource at all.
// WebM and fragmented MP4 alike: media-scanner.js picks the scanner.

import { scannerFor } from './media-scanner.js';

/** Blob mode: at most one src swap per this many ms. */
const BLOB_SWAP_MS = 2500;
/** A seek in a new src not done after this long never will be (Firefox, WebM without Cues). */
const SEEK_PATIENCE_MS = 1500;

/** How far behind the newest media blob playback aims to be, seconds. */
export function blobTargetLag(chunkInterval) {
  return BLOB_SWAP_MS / 1000 + chunkInterval + 0.5;
}

/**
 * The classic glue: the bytes of a generation as one Blob, played from an object URL
 * that is swapped for a longer one every BLOB_SWAP_MS. The browser cannot tell where
 * the live edge of such a file is (MediaRecorder writes no duration), so a scanner
 * follows the newest sample time (WebM blocks, MP4 `trun` samples). When a generation ends, the old one is first played
 * to its tail if the new one has little media yet.
 */
export class BlobPlayer {
  constructor(viewer, mime) {
    this.viewer = viewer;
    this.video = viewer.video;
    this.mime = mime;
    this.kind = 'blob';
    /**
     * The newest generation, and the one shown: { generation, parts, scanner }. Compared
     * as objects, never by number: two publish sessions may both have a generation 1.
     */
    this.cur = null;
    this.shown = null; // { gen, generation, url, lastTime }
    this.lastSwap = -Infinity;
    this.swapping = null;
  }

  start(generation, bytes) {
    const g = { generation, parts: [bytes], scanner: scannerFor(bytes, this.mime) };
    g.scanner.push(bytes);
    this.cur = g;
  }

  /** The reassembler appends to its current generation only: ours is `cur`. */
  append(generation, bytes) {
    const g = this.cur;
    if (!g || g.generation !== generation) return;
    g.parts.push(bytes);
    g.scanner.push(bytes);
  }

  jump(generation, from, to) {
    if (this.cur?.generation === generation) this.cur.scanner.jumpTo(to);
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
    const starved = v.ended || (v.readyState < 3 && this.mediaTime() >= shown.lastTime - 0.25);
    if (performance.now() - this.lastSwap < BLOB_SWAP_MS && !starved) return;
    const samePos = (g) => {
      const pos = this.mediaTime();
      const lag = g.scanner.lastTime - pos;
      return lag > target + 3 && !this.viewer.userPaused ? g.scanner.lastTime - target : pos;
    };
    if (shown.gen === cur) {
      if (cur.scanner.lastTime > shown.lastTime + 0.05) this.swap(cur, samePos(cur), false);
      return;
    }
    // A newer generation is here. Play it once it has enough media to last until the
    // next swap; until then, let the old one play out to its tail.
    const old = shown.gen;
    const enough = this.span(cur) >= Math.min(target, 2);
    const oldHasMore = old && old.scanner.lastTime > shown.lastTime + 0.05;
    if (enough || (starved && !oldHasMore)) {
      this.swap(cur, Math.max(cur.scanner.firstTime, cur.scanner.lastTime - target), true);
    } else if (oldHasMore) {
      this.swap(old, samePos(old), false);
    }
  }

  /** Where playback is in the generation's own media time (a slice starts later). */
  mediaTime() {
    return this.video.currentTime + (this.shown?.base ?? 0);
  }

  /**
   * The generation from its newest keyframe-led cluster at or before `pos` on, behind
   * its header: { parts, start (s) }, or null if there is none to cut at.
   */
  slice(g, pos) {
    const s = g.scanner;
    if (s.container !== 'webm' || !s.clusters.length) return null;
    const scale = s.timecodeScale / 1e9;
    const at = s.clusters.filter((c) => c.keyframe && c.timecode !== null && c.timecode * scale <= pos + 0.001).at(-1);
    if (!at || at.offset === s.clusters[0].offset) return null;
    const whole = new Blob(g.parts);
    return { parts: [whole.slice(0, s.clusters[0].offset), whole.slice(at.offset)], start: at.timecode * scale };
  }

  /** Whether the generation has a keyframe-led cluster past its first (WebM). */
  cuttable(g) {
    const s = g.scanner;
    return s.container === 'webm' && s.clusters.some((c) => c.keyframe && c.offset !== s.clusters[0].offset);
  }

  swap(g, pos, newGeneration) {
    const v = this.video;
    const viewer = this.viewer;
    // A browser that cannot seek in the growing file (Firefox, in a WebM without Cues:
    // the seek never completes) gets the file cut at a keyframe near `pos` instead, and
    // plays it from its start.
    // Before the first keyframe past the start: the whole file, from its start.
    const cut = this.slices ? this.slice(g, pos) ?? { parts: g.parts, start: 0 } : null;
    const url = URL.createObjectURL(new Blob(cut ? cut.parts : g.parts, { type: this.mime }));
    const previous = this.shown;
    const lastTime = g.scanner.lastTime;
    this.shown = { gen: g, generation: g.generation, url, lastTime, base: 0 };
    this.lastSwap = performance.now();
    const sw = viewer.recordSwitch({ generation: g.generation, from: previous?.generation ?? null, kind: newGeneration ? 'generation' : 'swap', pos });
    // Poster: the last decoded frame covers the video while the new source loads.
    viewer.poster.capture();
    sw.overlayShown = viewer.poster.show();
    const requested = performance.now();
    const wasPaused = viewer.pausedByUser;
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
    // The poster goes only once the new source has PRESENTED a frame: 'playing' or
    // readyState 4 come before the compositor has a picture, and hiding the poster
    // then showed black for a moment (seen in 2 of 26 screenshots at 2 Hz).
    const frameShown = () => {
      if ('requestVideoFrameCallback' in v) {
        v.requestVideoFrameCallback(() => done('frame'));
      } else {
        const from = v.currentTime;
        const moved = () => {
          if (v.currentTime <= from) return;
          v.removeEventListener('timeupdate', moved);
          done('timeupdate');
        };
        v.addEventListener('timeupdate', moved);
      }
      // A hidden tab presents no frames (rVFC waits): a decoded one will do there.
      v.addEventListener('playing', () => setTimeout(() => document.visibilityState === 'hidden' && done('playing'), 100), { once: true });
    };
    v.addEventListener('loadedmetadata', () => {
      if (this.swapping !== token) return;
      if (cut) {
        // Chromium keeps the cut file's timestamps, Firefox starts it at 0.
        this.shown.base = cut.start - v.currentTime;
        if (!wasPaused) viewer.play();
        frameShown();
        return;
      }
      const elapsed = wasPaused ? 0 : (performance.now() - requested) / 1000;
      const to = Math.min(pos + elapsed, Math.max(pos, lastTime - 0.2));
      if (to > 0.01) {
        v.currentTime = to;
        // A seek that never completes: this browser cannot seek in the growing file.
        const stuck = () => {
          if (this.swapping !== token || !v.seeking || this.slices) return;
          // Not where the file has no keyframe to cut at but the first (a Firefox
          // publisher's generation): a seek there is slow, and waited out. (Early in a
          // generation the next keyframe may still be on its way: looked for again.)
          if (!this.cuttable(g)) {
            if (performance.now() - requested < 3500) setTimeout(stuck, 500);
            return;
          }
          this.slices = true;
          viewer.note('blob swap: the seek does not complete here; cutting the file at keyframes from now on');
          sw.how = 'seek stuck';
          this.swapping = null;
          if (previous) URL.revokeObjectURL(previous.url);
          this.swap(g, to, newGeneration);
        };
        setTimeout(stuck, SEEK_PATIENCE_MS);
      }
      if (!wasPaused) viewer.play();
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
    const shownGen = this.shown.gen;
    if (!shownGen || shownGen.scanner.lastTime === null) return null;
    let lag = shownGen.scanner.lastTime - this.mediaTime();
    if (this.cur && this.cur !== shownGen) lag += this.span(this.cur);
    return lag;
  }

  onFrame() {}

  tick() {
    this.maybeSwap();
    const v = this.video;
    if (v.paused && !v.ended && !this.viewer.pausedByUser && !this.swapping && this.shown) this.viewer.play();
  }

  destroy() {
    this.destroyed = true;
    if (this.shown) URL.revokeObjectURL(this.shown.url);
  }
}
