// The front page: the streams the server holds, refreshed every few seconds.

import { formatBits, formatDuration } from './protocol.js';

const REFRESH_MS = 3000;

export function initIndexPage() {
  const list = document.getElementById('streams');
  const summary = document.getElementById('summary');

  const render = (streams) => {
    const live = streams.filter((s) => s.live);
    summary.textContent = live.length
      ? `${live.length} live stream${live.length === 1 ? '' : 's'}`
      : 'Nothing is live right now.';
    list.replaceChildren(
      ...streams.map((s) => {
        const li = document.createElement('li');
        li.className = s.live ? 'live' : 'idle';
        li.dataset.stream = s.name;
        const a = document.createElement('a');
        a.href = `/watch/${encodeURIComponent(s.name)}`;
        a.textContent = s.name;
        const badge = document.createElement('span');
        badge.className = `badge state-${s.live ? 'live' : 'waiting'}`;
        badge.textContent = s.live ? 'live' : 'not live';
        const meta = document.createElement('span');
        meta.className = 'muted';
        const bits = [`${s.viewers} viewer${s.viewers === 1 ? '' : 's'}`];
        if (s.live && s.ingest_bits_per_second) bits.push(formatBits(s.ingest_bits_per_second));
        if (s.publisher_connected_since) {
          bits.push(`for ${formatDuration(Date.now() - s.publisher_connected_since * 1000)}`);
        }
        meta.textContent = bits.join(' · ');
        li.append(a, ' ', badge, ' ', meta);
        return li;
      }),
    );
  };

  const refresh = async () => {
    try {
      const res = await fetch('/api/streams', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      render(await res.json());
    } catch (err) {
      summary.textContent = `Could not load the stream list (${err.message}); retrying…`;
    }
  };
  refresh();
  setInterval(refresh, REFRESH_MS);
}
