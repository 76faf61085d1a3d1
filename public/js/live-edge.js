// The MSE viewer's live-edge controller: where to play, and how fast. A pure function of
// what the video element reports (buffered ranges, current time, paused, frames decoded)
// and the publisher's chunk interval; it touches no element, so node can test it. The
// MSE player asks it a few times a second and carries out its decisions.

/** How far behind the newest buffered media MSE playback aims to be, seconds. */
export function mseTargetLag(chunkInterval) {
  // The lag just after a chunk arrives. Never closer to the edge than one chunk interval,
  // or playback stalls between arrivals; plus a margin for jitter.
  return Math.max(0.3, 1.3 * chunkInterval + 0.2);
}

/** What a controller remembers between ticks, before its first one. */
export function freshLiveEdgeMemory() {
  return {
    /** Whether the join seek (one target lag behind the newest media) has been made. */
    joined: false,
    /** The lag, smoothed over ticks: null right after a seek. */
    lagAvg: null,
    /** Whether the first reliable chunk interval has been used to correct the join. */
    sawKnownInterval: false,
    /** currentTime at the previous tick, unless a seek came between. */
    lastPlayhead: null,
    /** Frames decoded against playback time, for noticing a frozen picture. */
    frameWatch: null,
  };
}

/**
 * Decides one tick.
 *
 * `at`: {
 *   ranges: [[start, end], ...] the video's buffered ranges, in order,
 *   currentTime, paused, seeking, readyState: as the video element has them,
 *   userPaused: paused with the page's Pause button (the browser pauses on its own too:
 *     those pauses must not stop the controller from resuming playback),
 *   chunkInterval: seconds between the publisher's chunks, chunkIntervalKnown: whether
 *     that is measured yet (1 s is assumed until it is),
 *   frames: { decoded, hasPicture, visible }: video frames decoded so far, whether the
 *     video has a picture size, whether the tab is visible,
 * }
 * `memory`: what the previous tick returned (freshLiveEdgeMemory() at first).
 *
 * Returns { seekTo, rate, play, note, memory }: a currentTime to seek to, a playbackRate
 * to set (null: leave either as it is), whether to call play(), a line for the viewer's
 * log, and the memory for the next tick.
 */
export function steerToLiveEdge(at, memory) {
  const decision = { seekTo: null, rate: null, play: false, note: null, memory };
  const b = at.ranges;
  if (!b.length) return decision;
  const m = { ...memory };
  decision.memory = m;
  const t = at.currentTime;
  const end = b[b.length - 1][1];
  const target = mseTargetLag(at.chunkInterval);
  let inside = false;
  let rangeStart = null;
  for (const [start, stop] of b) {
    if (t >= start && t < stop) {
      inside = true;
      rangeStart = start;
    }
  }
  const lag = end - t;
  const atEdge = t >= end - 0.05;
  const lastPlayhead = m.lastPlayhead;
  let frozen = 0;
  if (!m.joined) {
    // Joining (or after a recovery): start one target lag behind the newest media.
    const to = Math.max(b[b.length - 1][0], end - target);
    decision.seekTo = to;
    m.lagAvg = null;
    m.joined = true;
    decision.note = `join: seek to ${to.toFixed(2)} (edge ${end.toFixed(2)})`;
  } else if (!inside && !atEdge && !at.seeking) {
    // Stuck in a hole between buffered ranges: on to the next range (or the edge).
    let to = end - target;
    for (const [start, stop] of b) {
      if (start > t) {
        to = Math.max(start, Math.min(to, stop - 0.05));
        break;
      }
    }
    if (to < t) to = end - target;
    decision.seekTo = to;
    decision.note = `hole at ${t.toFixed(2)}: seek to ${to.toFixed(2)}`;
  } else if (inside && !at.paused && (frozen = watchFrames(m, t, at)) > 0.6) {
    // Any other way the video starves while the audio plays on (the picture frozen,
    // currentTime moving): the same cure.
    decision.seekTo = t;
    decision.note = `video frozen for ${frozen.toFixed(2)} s of playback: re-seek at ${t.toFixed(2)}`;
  } else if (inside && lastPlayhead !== null && lastPlayhead < rangeStart && t > lastPlayhead && !at.paused) {
    // The audio clock carried playback across a gap in the video (the publisher
    // skipped frames: a busy tab, a camera dropping frames) between two ticks. The
    // video decoder does not step from one buffered range into the next by itself:
    // the picture stays frozen at the gap until a seek, for up to the ~3 s Chrome
    // lets audio run on alone. A seek to where we are restarts it at the keyframe
    // that follows the gap.
    decision.seekTo = t;
    decision.note = `played across a gap (${lastPlayhead.toFixed(2)} -> ${rangeStart.toFixed(2)}): re-seek at ${t.toFixed(2)}`;
  } else if (!at.userPaused) {
    // The lag is a sawtooth: it jumps by one chunk at each arrival and drains until
    // the next one. The target is its peak, just after an arrival (one chunk plus a
    // margin), so on target it averages target - chunk/2 and never drains below the
    // margin. Steer on its average.
    const chunk = at.chunkInterval;
    m.lagAvg = m.lagAvg == null ? lag : m.lagAvg + 0.2 * (lag - m.lagAvg);
    const excess = m.lagAvg - (target - chunk / 2);
    const far = Math.max(1.0, 2 * chunk);
    const firstEstimate = at.chunkIntervalKnown && !m.sawKnownInterval;
    if (firstEstimate) m.sawKnownInterval = true;
    if ((firstEstimate && excess > 0.3) || (lag - target > far + chunk && excess > far)) {
      // Far behind (a stall, a slow tab), or joined before the chunk interval was
      // known (the target assumed 1 s): a skip is better than a long fast-forward.
      decision.seekTo = end - target;
      m.lagAvg = null;
      decision.note = `far behind (${lag.toFixed(2)} s, target ${target.toFixed(2)}): seek to the edge`;
    } else if (excess > 0.5) {
      decision.rate = 1.1;
    } else if (excess > 0.1) {
      decision.rate = 1.05;
    } else if (excess < -0.2 && at.readyState >= 3) {
      // Closer to the edge than one chunk interval allows: ease off before it stalls.
      decision.rate = 0.97;
    } else {
      decision.rate = 1.0;
    }
  }
  decision.play = at.paused && !at.userPaused && lag > 0.1;
  // A seek (ours included: setting currentTime starts one at once) breaks the line
  // from the last playhead to this one.
  m.lastPlayhead = at.seeking || decision.seekTo !== null ? null : t;
  return decision;
}

/**
 * Seconds of playback since the last newly decoded video frame, once frames were
 * flowing (five since the last seek, ours or the user's): a screen share of a still
 * page sends no frames, and must not be re-seeked again and again. Zero until three
 * of the source's own frame intervals have passed, without video, or in a hidden tab
 * (where Chrome may turn the video track off). Updates m.frameWatch.
 */
function watchFrames(m, t, at) {
  const frames = at.frames.decoded;
  const s = m.frameWatch;
  if (!s || at.seeking || !at.frames.hasPicture || !at.frames.visible || frames < s.frames || t < s.t) {
    m.frameWatch = { frames, t, flowing: 0, interval: null };
    return 0;
  }
  if (frames > s.frames) {
    const each = (t - s.t) / (frames - s.frames);
    const interval = s.interval == null ? each : 0.7 * s.interval + 0.3 * each;
    m.frameWatch = { frames, t, flowing: s.flowing + frames - s.frames, interval };
    return 0;
  }
  // A slow source (a screen share at a frame or two a second) is frozen only when a
  // few of its own frame intervals pass without one.
  const frozen = t - s.t;
  return s.flowing >= 5 && frozen > 3 * (s.interval ?? 0) ? frozen : 0;
}
