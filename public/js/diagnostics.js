// The "Diagnostics" panel of the watch and record pages: a collapsed <details> with what
// support asks for first (the last log lines, the sockets, mime and codecs, buffered
// ranges, dropped frames, lag, recoveries). The page says what to show through a
// `collect()` function; this module only lays it out, and only while the panel is open.

const LOG_LINES = 20;
const REFRESH_MS = 1000;

/** WebSocket.readyState in words; "none" when there is no socket. */
export function socketState(ws) {
  if (!ws) return 'none';
  return ['connecting', 'open', 'closing', 'closed'][ws.readyState] ?? String(ws.readyState);
}

/** A TimeRanges as "0.00-3.20 4.00-9.10" (or "none"). */
export function rangesText(ranges) {
  const out = [];
  for (let i = 0; i < (ranges?.length ?? 0); i++) out.push(`${ranges.start(i).toFixed(2)}-${ranges.end(i).toFixed(2)}`);
  return out.join(' ') || 'none';
}

/** Dropped of total video frames, from getVideoPlaybackQuality where the browser has it. */
export function droppedFramesText(video) {
  if (!video?.getVideoPlaybackQuality) return 'not reported by this browser';
  const q = video.getVideoPlaybackQuality();
  return `${q.droppedVideoFrames} dropped of ${q.totalVideoFrames}`;
}

/** Log entries ({t, text}) as "hh:mm:ss.mmm text" lines, the newest last. */
export function logLines(log, n = LOG_LINES) {
  return log.slice(-n).map((e) => `${new Date(e.t).toISOString().slice(11, 23)} ${e.text}`);
}

/**
 * Adds the panel to `parent`. `collect()` returns { fields: [[label, value], ...],
 * log: [line, ...] }; it is called when the panel opens and every second while it is open.
 */
export function mountDiagnostics(parent, collect) {
  const details = document.createElement('details');
  details.id = 'diagnostics';
  details.className = 'diagnostics';
  const summary = document.createElement('summary');
  summary.textContent = 'Diagnostics';
  const list = document.createElement('dl');
  list.className = 'stats';
  const logTitle = document.createElement('p');
  logTitle.className = 'muted';
  logTitle.textContent = `Last ${LOG_LINES} log lines`;
  const pre = document.createElement('pre');
  pre.id = 'diagnostics-log';
  details.append(summary, list, logTitle, pre);
  parent.append(details);

  /** Field rows, kept by label: updated in place, so a selection or a reader stays put. */
  const rows = new Map();
  const render = () => {
    if (!details.open) return;
    let data;
    try {
      data = collect();
    } catch (err) {
      data = { fields: [['Diagnostics', `could not be read: ${err.message}`]], log: [] };
    }
    for (const [label, value] of data.fields) {
      let row = rows.get(label);
      if (!row) {
        const dt = document.createElement('dt');
        dt.textContent = label;
        const dd = document.createElement('dd');
        dd.dataset.field = label;
        list.append(dt, dd);
        row = dd;
        rows.set(label, dd);
      }
      const text = value == null || value === '' ? '—' : String(value);
      if (row.textContent !== text) row.textContent = text;
    }
    const text = data.log.join('\n') || '(nothing logged yet)';
    if (pre.textContent !== text) pre.textContent = text;
  };
  details.addEventListener('toggle', render);
  setInterval(render, REFRESH_MS);
  return { element: details, render };
}
