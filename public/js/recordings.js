// The recordings page: what the server keeps on disk (/api/recordings), each playable
// in a <video> whose seek bar works (the server answers byte ranges, and finished
// files carry Cues and a Duration, or for MP4 an mfra and a mehd), downloadable, and
// deletable with the publish key.
// The list is refreshed every few seconds in place, so keyboard focus stays where it is.

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

async function deleteRecording(rec, showError, token) {
  let key = sessionStorage.getItem('blobcast-key') || '';
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const query = key ? `?key=${encodeURIComponent(key)}` : '';
    const res = await fetch(`/api/recordings/${encodeURIComponent(rec.id)}${query}`, { method: 'DELETE', headers: authHeaders(token) });
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

/** The page's token as an Authorization header (none without one). */
function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function initRecordingsPage() {
  const params = new URLSearchParams(location.search);
  // On a server with --watch-auth token the list and the files need a token: it comes as
  // ?token= in the link, rides on the API calls (Authorization) and the media URLs
  // (a <video> cannot send headers), and leaves the address bar and history.
  const token = params.get('token') || '';
  if (params.has('token')) {
    params.delete('token');
    history.replaceState(null, '', `${location.pathname}${params.toString() ? '?' + params : ''}`);
  }
  const mediaUrl = (rec) => (token ? `${rec.url}${rec.url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : rec.url);
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
    video.src = mediaUrl(rec);
    video.play().catch(() => {});
    render(latest);
    box.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  };

  video.addEventListener('error', () => {
    if (video.src) showError(`The browser cannot play this recording (${video.error?.message || 'media error'}).`);
  });

  /** One row per recording, made once: refreshes update it in place (focus stays put). */
  const rows = new Map();
  function makeRow(rec) {
    const li = document.createElement('li');
    li.dataset.id = rec.id;
    const name = document.createElement('strong');
    const badge = document.createElement('span');
    const meta = document.createElement('span');
    meta.className = 'muted';
    const actions = document.createElement('span');
    actions.className = 'actions';
    const playButton = document.createElement('button');
    playButton.type = 'button';
    playButton.textContent = 'Play';
    playButton.addEventListener('click', () => play(row.rec));
    const download = document.createElement('a');
    download.className = 'button';
    download.textContent = 'Download';
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'danger';
    remove.textContent = 'Delete';
    remove.addEventListener('click', async () => {
      const rec = row.rec;
      if (!confirm(`Delete ${rec.file}?`)) return;
      if (await deleteRecording(rec, showError, token)) {
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
    const note = document.createElement('span');
    note.className = 'error-text';
    actions.append(playButton, download, remove);
    li.append(name, ' ', badge, ' ', meta, actions, note);
    const row = { li, rec, name, badge, meta, playButton, download, remove, note };
    return row;
  }

  const setText = (el, text) => {
    if (el.textContent !== text) el.textContent = text;
  };

  function updateRow(row, rec) {
    row.rec = rec;
    setText(row.name, rec.stream);
    row.badge.className = `badge state-${rec.state}`;
    setText(row.badge, rec.state);
    setText(row.meta, `${rec.name_prefix} · ${describe(rec)}`);
    row.playButton.disabled = !rec.bytes;
    const href = mediaUrl(rec);
    if (row.download.getAttribute('href') !== href) row.download.href = href;
    row.download.download = rec.file;
    row.remove.disabled = rec.state === 'recording';
    row.remove.title = rec.state === 'recording' ? 'Still recording' : '';
    if (rec.id === playing) row.li.setAttribute('aria-current', 'true');
    else row.li.removeAttribute('aria-current');
    const notes = [rec.error, rec.split_reason && `new file: ${rec.split_reason}`].filter(Boolean);
    setText(row.note, notes.join(' — '));
    row.note.hidden = !notes.length;
  }

  function render(recordings) {
    latest = recordings;
    summary.textContent = recordings.length
      ? `${recordings.length} recording${recordings.length === 1 ? '' : 's'}`
      : 'No recordings yet: everything published is recorded here.';
    const wanted = new Set(recordings.map((r) => r.id));
    for (const [id, row] of rows) {
      if (!wanted.has(id)) {
        row.li.remove();
        rows.delete(id);
      }
    }
    // In order, moving only rows out of place: a moved element loses keyboard focus.
    let at = list.firstElementChild;
    for (const rec of recordings) {
      let row = rows.get(rec.id);
      if (!row) {
        row = makeRow(rec);
        rows.set(rec.id, row);
      }
      updateRow(row, rec);
      if (row.li === at) at = at.nextElementSibling;
      else list.insertBefore(row.li, at);
    }
  }

  let refreshes = 0;
  async function refresh() {
    refreshes += 1;
    try {
      const res = await fetch('/api/recordings', { cache: 'no-store', headers: authHeaders(token) });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        summary.textContent = token
          ? `This token may not list the recordings (${body.error || `HTTP ${res.status}`}): ask for a fresh link.`
          : 'This server needs a token to list recordings: open this page with the link (…?token=…) you were given.';
        summary.classList.add('error-text');
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      summary.classList.remove('error-text');
      render(await res.json());
    } catch (err) {
      summary.textContent = `Could not load the recordings (${err.message}); retrying…`;
    }
  }

  const wanted = params.get('play');
  refresh().then(() => {
    const rec = wanted && latest.find((r) => r.id === wanted);
    if (rec) play(rec);
  });
  setInterval(refresh, REFRESH_MS);
  window.blobcastRecordings = { refreshes: () => refreshes, mediaUrl };
}
