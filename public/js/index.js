// The front page: the streams the server holds, refreshed every few seconds in place
// (rows are updated, not rebuilt, so keyboard focus stays on the link it was on).

import { formatBits, formatDuration } from './protocol.js';

const REFRESH_MS = 3000;

export function initIndexPage() {
  const list = document.getElementById('streams');
  const params = new URLSearchParams(location.search);
  // On a server with --watch-auth token the list needs a token, and shows the streams
  // it may watch: ?token= rides on the API call and on to the watch links, and leaves
  // the address bar and history.
  const token = params.get('token') || '';
  if (params.has('token')) {
    params.delete('token');
    history.replaceState(null, '', `${location.pathname}${params.toString() ? '?' + params : ''}`);
  }
  const summary = document.getElementById('summary');

  /** One row per stream, made once: refreshes update it in place, so focus stays put. */
  const rows = new Map();
  let refreshes = 0;
  window.blobcastIndex = { refreshes: () => refreshes };
  const makeRow = (name) => {
    const li = document.createElement('li');
    li.dataset.stream = name;
    const a = document.createElement('a');
    a.href = `/watch/${encodeURIComponent(name)}${token ? `?token=${encodeURIComponent(token)}` : ''}`;
    a.textContent = name;
    const badge = document.createElement('span');
    const meta = document.createElement('span');
    meta.className = 'muted';
    li.append(a, ' ', badge, ' ', meta);
    return { li, badge, meta };
  };
  const setText = (el, text) => {
    if (el.textContent !== text) el.textContent = text;
  };
  const updateRow = ({ li, badge, meta }, s) => {
    li.className = s.live ? 'live' : 'idle';
    badge.className = `badge state-${s.live ? 'live' : 'waiting'}`;
    setText(badge, s.live ? 'live' : 'not live');
    const bits = [`${s.viewers} viewer${s.viewers === 1 ? '' : 's'}`];
    if (s.live && s.ingest_bits_per_second) bits.push(formatBits(s.ingest_bits_per_second));
    if (s.publisher_connected_since) {
      bits.push(`for ${formatDuration(Date.now() - s.publisher_connected_since * 1000)}`);
    }
    setText(meta, bits.join(' · '));
  };

  const render = (streams) => {
    const live = streams.filter((s) => s.live);
    summary.textContent = live.length
      ? `${live.length} live stream${live.length === 1 ? '' : 's'}`
      : 'Nothing is live right now.';
    const wanted = new Set(streams.map((s) => s.name));
    for (const [name, row] of rows) {
      if (!wanted.has(name)) {
        row.li.remove();
        rows.delete(name);
      }
    }
    // In order, moving only rows out of place: a moved element loses keyboard focus.
    let at = list.firstElementChild;
    for (const s of streams) {
      let row = rows.get(s.name);
      if (!row) {
        row = makeRow(s.name);
        rows.set(s.name, row);
      }
      updateRow(row, s);
      if (row.li === at) at = at.nextElementSibling;
      else list.insertBefore(row.li, at);
    }
    refreshes += 1;
  };

  const refresh = async () => {
    try {
      const res = await fetch('/api/streams', { cache: 'no-store', headers: token ? { Authorization: `Bearer ${token}` } : {} });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        summary.textContent = token
          ? `This token may not list the streams (${body.error || `HTTP ${res.status}`}): ask for a fresh link.`
          : 'This server needs a token to list its streams: open this page with the link (…?token=…) you were given.';
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      render(await res.json());
    } catch (err) {
      summary.textContent = `Could not load the stream list (${err.message}); retrying…`;
    }
  };
  refresh();
  setInterval(refresh, REFRESH_MS);
}
