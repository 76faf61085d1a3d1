// Stall time of a viewer, from the frames it presented (the clock probe's samples, one
// per frame shown, with its media time): shared by the latency benchmark and the
// browser suite's stall test.
//
// Between two frames shown more than FROZEN_GAP_MS apart, the playback either halted
// (waiting for data: media time moved less than wall time) or went on while frames
// were dropped (a busy machine: media time moved as much as wall time). The first is a
// stall, as is any picture frozen for over LONG_FREEZE_MS whatever the playhead did.
// Dropped frames alone are counted apart (`gapMs`): they are the machine's, not the
// player's.

export const FROZEN_GAP_MS = 150;
export const LONG_FREEZE_MS = 500;

/**
 * `samples`: [{ shown (ms since the epoch), mediaTime (s) }]; the window [from, to].
 * Returns { stalledMs, ratio: stalledMs over the window, gapMs: all time in gaps over
 * FROZEN_GAP_MS, gaps, frames }.
 */
export function stallTime(samples, from, to) {
  const shown = samples.filter((s) => s.shown >= from && s.shown <= to).sort((a, b) => a.shown - b.shown);
  let stalled = 0;
  let gapMs = 0;
  let gaps = 0;
  // The window's edges count as frames that held the picture.
  const points = [
    { shown: from, mediaTime: null },
    ...shown,
    { shown: to, mediaTime: null },
  ];
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1];
    const b = points[i];
    const wall = b.shown - a.shown;
    if (wall <= FROZEN_GAP_MS) continue;
    gaps++;
    gapMs += wall;
    const media = a.mediaTime === null || b.mediaTime === null ? 0 : (b.mediaTime - a.mediaTime) * 1000;
    stalled += wall > LONG_FREEZE_MS ? wall : Math.max(0, wall - Math.max(0, media));
  }
  const window = Math.max(1, to - from);
  return { stalledMs: stalled, ratio: stalled / window, gapMs, gaps, frames: shown.length };
}
