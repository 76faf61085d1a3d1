// The recordings page: what the server keeps on disk (/api/recordings), each playable
// in a <video> whose seek bar works (the server answers byte ranges, and finished
// files carry Cues and a Duration), downloadable, and deletable with the publish key.

import { formatBytes, formatDuration } from './protocol.js';

const REFRESH_MS = 5000;

function describe(rec) {
  const bits = [];
  if (rec.started) bits.push(new Date(rec.started).toLocaleString());
  if (rec.duration != null) bits.push(formatDuration(rec.duration * 1000));
  bits.push(formatBytes(rec.bytes || 0));
  if (rec.tracks) bits.push(rec.tracks);
  if (rec.generations > 1) bits.push(`${rec.generations} recorder restarts spliced`);
  return bits.join(' · ');
}

async function deleteRecording(rec, showError) {
  let key = sessionStorage.getItem('blobcast-key') || '';
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const query = key ? `?key=${encodeURIComponent(key)}` : '';
    const res = await fetch(`/api/recordings/${encodeURIComponent(rec.id)}${query}`, { method: 'DELETE' });
    if (res.ok) return true;
    const body = await res.json().catch(() => ({}));
    if ((res.status === 401 || res.status === 403) && attempt === 0) {
      key = prompt('Publish key, to delete recordings:') || '';
      if (!key) return false;
      sessionStorage.setItem('blobcast-key', key);
      continue;
    }
    showError(`Could not delete ${rec.file}: ${body.error || `HTTP ${res.status}`}`);
    return false;
  }
  return false;
}

export function initRecordingsPage() {
  const list = document.getElementById('recordings');
  const summary = document.getElementById('summary');
  const errors = document.getElementById('errors');
  const box = document.getElementById('player-box');
  const video = document.getElementById('player');
  const nowPlaying = document.getElementById('now-playing');
  let playing = null;
  let latest = [];

  const showError = (text) => {
    errors.textContent = text;
    errors.hidden = !text;
  };

  const play = (rec) => {
    playing = rec.id;
    box.hidden = false;
    nowPlaying.hidden = false;
    nowPlaying.textContent = `${rec.stream} — ${rec.file}`;
    video.src = rec.url;
    video.play().catch(() => {});
    render(latest);
    box.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  };

  video.addEventListener('error', () => {
    if (video.src) showError(`The browser cannot play this recording (${video.error?.message || 'media error'}).`);
  });

  function render(recordings) {
    latest = recordings;
    summary.textContent = recordings.length
      ? `${recordings.length} recording${recordings.length === 1 ? '' : 's'}`
      : 'No recordings yet: everything published is recorded here.';
    list.replaceChildren(
      ...recordings.map((rec) => {
        const li = document.createElement('li');
        li.dataset.id = rec.id;
        if (rec.id === playing) li.setAttribute('aria-current', 'true');
        const name = document.createElement('strong');
        name.textContent = rec.stream;
        const badge = document.createElement('span');
        badge.className = `badge state-${rec.state}`;
        badge.textContent = rec.state;
        const meta = document.createElement('span');
        meta.className = 'muted';
        meta.textContent = `${rec.name_prefix} · ${describe(rec)}`;
        const actions = document.createElement('span');
        actions.className = 'actions';
        const playButton = document.createElement('button');
        playButton.type = 'button';
        playButton.textContent = 'Play';
        playButton.disabled = !rec.bytes;
        playButton.addEventListener('click', () => play(rec));
        const download = document.createElement('a');
        download.className = 'button';
        download.href = rec.url;
        download.download = rec.file;
        download.textContent = 'Download';
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.className = 'danger';
        remove.textContent = 'Delete';
        remove.disabled = rec.state === 'recording';
        remove.title = rec.state === 'recording' ? 'Still recording' : '';
        remove.addEventListener('click', async () => {
          if (!confirm(`Delete ${rec.file}?`)) return;
          if (await deleteRecording(rec, showError)) {
            if (playing === rec.id) {
              video.removeAttribute('src');
              video.load();
              box.hidden = true;
              nowPlaying.hidden = true;
              playing = null;
            }
            refresh();
          }
        });
        actions.append(playButton, download, remove);
        li.append(name, ' ', badge, ' ', meta, actions);
        const notes = [rec.error, rec.split_reason && `new file: ${rec.split_reason}`].filter(Boolean);
        if (notes.length) {
          const note = document.createElement('span');
          note.className = 'error-text';
          note.textContent = notes.join(' — ');
          li.append(note);
        }
        return li;
      }),
    );
  }

  async function refresh() {
    try {
      const res = await fetch('/api/recordings', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      render(await res.json());
    } catch (err) {
      summary.textContent = `Could not load the recordings (${err.message}); retrying…`;
    }
  }

  const wanted = new URLSearchParams(location.search).get('play');
  refresh().then(() => {
    const rec = wanted && latest.find((r) => r.id === wanted);
    if (rec) play(rec);
  });
  setInterval(refresh, REFRESH_MS);
}
