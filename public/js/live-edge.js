// The MSE viewer's live-edge controller: where to play, and how fast. A pure function of
// what the video element reports (buffered ranges, current time, paused, frames decoded)
// and of when chunks arrived; it touches no element, so node can test it. The MSE player
// asks it a few times a second and carries out its decisions.
//
// Like a WebRTC jitter buffer, it measures how media actually arrives: for each arrival,
// the wall-clock time against the newest media time held just before it and just after
// it. Playing `offset` seconds of wall clock behind media time never runs dry while the
// offset exceeds the latest an arrival has come (relative to the media it brought), so
// the target is that envelope plus a small margin: the chunk interval and the network's
// jitter both show up in it, and nothing is a fixed multiple of anything. It steers
// there with small playbackRate changes, seeks only out of a stall (a hole, a frozen
// picture) or a large excess, and widens the margin after each stall, narrowing it again
// slowly.

/** Arrivals older than this (s) no longer count toward the envelope. */
export const ARRIVAL_WINDOW = 8;
/** Arrivals needed before the envelope is trusted. */
const MIN_ARRIVALS = 6;
/** Later than the usual arrival by this much is an outage: 0.3 s + 2 chunks of media. */
const OUTAGE_MIN = 0.3;
const OUTAGE_CHUNKS = 2;
/** The share of arrivals the envelope covers; stalls widen the margin for the rest. */
const ENVELOPE_QUANTILE = 0.95;
/**
 * Headroom over the envelope: MARGIN s plus RENDER_FRAMES of the source's frame
 * intervals. Chrome's video renderer goes to "waiting" with 3-4 frames still buffered
 * (seen at 160-190 ms ahead at 20 fps), and once dry it waits for more than that before
 * it plays again (a stall costs 0.3-0.7 s on a loaded machine): running closer does
 * not pay. The frame interval is measured; 30 fps is assumed until it is.
 */
const MARGIN = 0.03;
const RENDER_FRAMES = 3;
const ASSUMED_FRAME_INTERVAL = 1 / 30;
/** Added to the margin at each stall (a wait for data, see waitIsShortage), s, up to
 *  MAX_WIDEN; it drains at NARROW_RATE s/s. */
const STALL_WIDEN = 0.15;
const MAX_WIDEN = 0.6;
const NARROW_RATE = 0.003;
/**
 * Stuck with data: Chrome's video decoder sometimes stops at a wait and does not start
 * again when data comes (seen here every ~12 s in some sessions: 'waiting', no frame
 * decoded for 0.2-0.7 s while 0.3-0.5 s stay buffered and the audio decodes on; dash.js
 * and hls.js meet it too, and nudge currentTime). Waiting this long (s), no frame
 * decoded, with this much buffered ahead (s, and at least STUCK_FRAMES frame
 * intervals: Chrome's own wait for data starts with 3-4 frames ahead) is that, and a
 * seek to where playback stands restarts the decoder at once (7 ms here, the data
 * being there). Not again within STUCK_AGAIN s.
 */
const STUCK_WAIT = 0.12;
const STUCK_AHEAD = 0.2;
const STUCK_FRAMES = 4;
const STUCK_AGAIN = 1.0;
/** playbackRate bounds: enough to steer, too little to bend the audio audibly. */
export const MIN_RATE = 0.95;
export const MAX_RATE = 1.1;
/** Rate change per second of excess, and the dead band around the target, s. */
const GAIN = 0.5;
const DEAD_BAND = 0.015;

/**
 * The arrival envelope: `arrivals` is [{ wall, end }, ...] oldest first, the wall-clock
 * time (s) each appended chunk became playable and the buffered end (media s) after it.
 * Returns null until enough arrivals are known, else { late, base, spread }: `late`,
 * wall minus the media end held just before an arrival, at its 95th percentile (the
 * least wall-to-media offset that does not run dry); `base`, the same just after an
 * arrival, at its median; and `spread` = late - base, the lag the arrivals need right
 * after a typical arrival (about one chunk interval, plus the jitter).
 */
export function arrivalEnvelope(arrivals, now) {
  const before = [];
  const after = [];
  const brought = [];
  for (let i = 1; i < arrivals.length; i++) {
    const a = arrivals[i];
    const prev = arrivals[i - 1];
    if (now - a.wall > ARRIVAL_WINDOW || a.end < prev.end) continue;
    before.push(a.wall - prev.end);
    after.push(a.wall - a.end);
    brought.push(a.end - prev.end);
  }
  if (before.length < MIN_ARRIVALS) return null;
  // An outage (a silent connection, then a resume's burst) is not jitter: a buffer that
  // covered it would hold every viewer seconds behind for the whole window. The stall
  // it causes widens the margin instead, and a seek makes up the time lost. Late is
  // measured from the most timely of the newest arrivals: after an outage most of the
  // window may be the burst, and after a jump (a rejoin at the live edge) the older
  // arrivals belong to another relation between wall clock and media time.
  const timely = Math.min(...after.slice(-MIN_ARRIVALS));
  const outage = OUTAGE_MIN + OUTAGE_CHUNKS * quantile(brought, 0.5);
  const kept = before.map((_, i) => i).filter((i) => before[i] - timely <= outage);
  const use = kept.length >= MIN_ARRIVALS ? kept : before.map((_, i) => i);
  const late = quantile(use.map((i) => before[i]), ENVELOPE_QUANTILE);
  const base = quantile(use.map((i) => after[i]), 0.5);
  return { late, base, spread: late - base };
}

function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

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
    /** Whether the first arrival envelope has been used to correct the join. */
    sawEnvelope: false,
    /** Stalls counted so far (at.stalls), null before the first tick. */
    stallsSeen: null,
    /** Seconds of playback per decoded video frame, once measured. */
    frameInterval: null,
    /** Extra margin after stalls, s, and the wall time it was last updated. */
    widen: 0,
    widenAt: null,
    /** The latest target: { lag: the lag aimed at just after an arrival, offset: the
     *  wall-to-media offset aimed at }, or null while steering without arrivals. */
    target: null,
    /** Since when playback has waited with data ahead: { since, t, decoded }, or null. */
    stuck: null,
    /** When the last nudge out of such a wait was made (wall s), or null. */
    nudgedAt: null,
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
 *   now: wall-clock seconds (any origin, the one of `arrivals`),
 *   arrivals: [{ wall, end }, ...] recent arrivals, oldest first (see arrivalEnvelope);
 *     until enough are known, the target is the chunk-interval rule of mseTargetLag,
 *   stalls: how many times playback has stalled (waited for data) so far,
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
  const envelope = at.arrivals ? arrivalEnvelope(at.arrivals, at.now) : null;
  if (at.stalls !== undefined) noteStalls(m, at);
  const target = envelope ? envelope.spread + headroom(m) : mseTargetLag(at.chunkInterval);
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
  } else if (inside && stuckWithData(m, t, end, at) !== null) {
    decision.seekTo = t;
    m.stuck = null;
    m.nudgedAt = at.now;
    decision.note = `waiting with ${(end - t).toFixed(2)} s buffered: re-seek at ${t.toFixed(2)}`;
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
  } else if (!at.userPaused && envelope) {
    steerOnEnvelope(decision, at, m, envelope, lag, b[b.length - 1][0], end);
  } else if (!at.userPaused) {
    // Until arrivals are measured: the chunk-interval rule. The lag is a sawtooth: it jumps by one chunk at each arrival and drains until
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
 * Steering once arrivals are measured: the wall-to-media offset of the playhead
 * (now - currentTime) against the envelope's, plus the margin. The offset moves only
 * with the playback rate, so unlike the lag it needs no smoothing.
 */
function steerOnEnvelope(decision, at, m, envelope, lag, newestStart, end) {
  const margin = headroom(m);
  const offset = envelope.late + margin;
  m.target = { lag: envelope.spread + margin, offset };
  const excess = at.now - at.currentTime - offset;
  const firstEnvelope = !m.sawEnvelope;
  m.sawEnvelope = true;
  // A stall leaves the playhead as far behind as it lasted: the rate catches up a short
  // one; a seek (which itself makes Chrome wait for data) is for more than a second and
  // more than the target (an outage: a silent connection, a resume's burst).
  const large = Math.max(1.0, 1.5 * m.target.lag);
  if ((firstEnvelope && excess > 0.3) || excess > large) {
    // Joined before arrivals were measured, or far behind (a slow tab, a long stall):
    // a skip is better than a long fast-forward.
    const to = Math.max(newestStart, Math.min(end - 0.02, at.now - offset));
    decision.seekTo = to;
    m.lagAvg = null;
    decision.note = `${firstEnvelope ? 'arrivals measured' : 'far behind'} (${lag.toFixed(2)} s, target ${m.target.lag.toFixed(2)}): seek to ${to.toFixed(2)}`;
    return;
  }
  let rate = 1.0;
  if (Math.abs(excess) > DEAD_BAND) rate = Math.min(MAX_RATE, Math.max(MIN_RATE, 1 + GAIN * excess));
  // Out of data right now: slowing down would not help.
  if (rate < 1 && at.readyState < 3) rate = 1.0;
  decision.rate = Math.round(rate * 100) / 100;
}

/**
 * Whether a `waiting` with `ahead` seconds buffered past the playhead is the data
 * running short (which widens the margin) rather than a decoder that stopped with data
 * in hand (which a re-seek cures, see stuckWithData): the margin is for arrivals.
 */
export function waitIsShortage(ahead, memory) {
  return ahead < stuckAhead(memory);
}

function stuckAhead(m) {
  return Math.max(STUCK_AHEAD, STUCK_FRAMES * (m.frameInterval ?? ASSUMED_FRAME_INTERVAL));
}

/**
 * Seconds playback has waited with data ahead and no new frame decoded (see STUCK_WAIT),
 * once that is long enough to act on; else null. Updates m.stuck.
 */
function stuckWithData(m, t, end, at) {
  if (at.now === undefined) return null;
  const waiting = !at.paused && !at.seeking && !at.userPaused && at.readyState < 3 && at.frames.visible;
  const ahead = !waitIsShortage(end - t, m);
  const s = m.stuck;
  if (!waiting || !ahead) {
    m.stuck = null;
    return null;
  }
  if (!s || Math.abs(t - s.t) > 0.001 || at.frames.decoded !== s.decoded) {
    // The wait starts here, or playback or the decoder moved since the last look.
    m.stuck = { since: at.now, t, decoded: at.frames.decoded };
    return null;
  }
  const waited = at.now - s.since;
  if (waited < STUCK_WAIT || (m.nudgedAt !== null && at.now - m.nudgedAt < STUCK_AGAIN)) return null;
  return waited;
}

/** The margin over the arrival envelope, s (see MARGIN). */
export function headroom(m) {
  return MARGIN + RENDER_FRAMES * (m.frameInterval ?? ASSUMED_FRAME_INTERVAL) + m.widen;
}

/** Widens the margin at each new stall, and narrows it slowly otherwise. */
function noteStalls(m, at) {
  if (m.widenAt !== null && at.now > m.widenAt) {
    m.widen = Math.max(0, m.widen - NARROW_RATE * (at.now - m.widenAt));
  }
  m.widenAt = at.now;
  if (m.stallsSeen !== null && at.stalls > m.stallsSeen) {
    m.widen = Math.min(MAX_WIDEN, m.widen + STALL_WIDEN * (at.stalls - m.stallsSeen));
  }
  m.stallsSeen = at.stalls;
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
    // A stretch of playback that skipped no frames is not a frame interval.
    if (each < 0.5) m.frameInterval = m.frameInterval == null ? each : 0.9 * m.frameInterval + 0.1 * each;
    return 0;
  }
  // A slow source (a screen share at a frame or two a second) is frozen only when a
  // few of its own frame intervals pass without one.
  const frozen = t - s.t;
  return s.flowing >= 5 && frozen > 3 * (s.interval ?? 0) ? frozen : 0;
}
