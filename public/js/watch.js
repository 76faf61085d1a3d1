// The watch page: reads the stream name and options from the address, wires the Viewer
// to the page's video, badges and buttons, polls the stream's API entry for the viewer
// count, and exposes window.blobcastViewer for the browser tests.

import { formatBits, isToken, generationText } from './protocol.js';
import { Viewer } from './viewer.js';
import { mountDiagnostics, socketState, rangesText, droppedFramesText, logLines } from './diagnostics.js';
import { wirePlayerControls } from './player-controls.js';

export function initWatchPage() {
  const $ = (id) => document.getElementById(id);
  const parts = location.pathname.split('/').filter(Boolean);
  const stream = decodeURIComponent(parts[parts.length - 1] || '');
  const params = new URLSearchParams(location.search);
  // ?token= rides on the sockets and API calls, and leaves the address bar and history.
  const token = params.get('token') || '';
  if (params.has('token')) {
    params.delete('token');
    history.replaceState(null, '', `${location.pathname}${params.toString() ? '?' + params : ''}`);
  }
  $('stream-name').textContent = stream;
  document.title = `Blobcast · ${stream}`;
  if (!isToken(stream)) {
    $('message').textContent = 'This is not a valid stream name (1-64 letters, digits, "_" or "-").';
    $('message').hidden = false;
    return;
  }
  const video = $('video');
  video.muted = true; // autoplay is allowed muted; the button unmutes
  const viewer = new Viewer({
    stream,
    video,
    posterCanvas: $('poster'),
    mode: params.get('mode'),
    clock: params.get('clock') === '1',
    pauseGraceMs: Number(params.get('pause_grace')) > 0 ? Number(params.get('pause_grace')) * 1000 : undefined,
  });
  viewer.conn.token = token;
  let viewers = null;
  let apiInfo = null;

  const hook = {
    get state() {
      return viewer.state;
    },
    get mode() {
      return viewer.mode;
    },
    get generation() {
      return viewer.reassembler.generation;
    },
    get length() {
      return viewer.reassembler.length;
    },
    get lag() {
      return viewer.lag();
    },
    get hello() {
      return viewer.hello;
    },
    framesDecoded: () => viewer.framesDecoded(),
    framesPresented: () => viewer.framesPresented,
    played: () => viewer.played,
    errors: viewer.errors,
    recoveries: viewer.recoveries,
    switches: viewer.switches,
    log: viewer.log,
    viewer,
    reconnect: () => viewer.conn.reconnectNow(),
    get autoplayBlocked() {
      return viewer.autoplayBlocked;
    },
    get released() {
      return viewer.pauseRelease.released;
    },
    get userSeekedBack() {
      return viewer.userSeekedBack;
    },
    get notice() {
      return viewer.notice;
    },
    get mediaSource() {
      return viewer.player?.sourceKind ?? null;
    },
    get silences() {
      return viewer.silences;
    },
    clockSamples: () => viewer.clockProbe?.samples ?? [],
  };
  window.blobcastViewer = hook;

  const render = () => {
    const state = viewer.state;
    const badge = $('state');
    const shown = state === 'connecting' ? 'connecting' : state;
    badge.textContent = shown;
    badge.className = `badge state-${shown}`;
    const msg = $('message');
    const texts = {
      connecting: 'Connecting…',
      waiting: 'Waiting for the stream to start…',
      ended: 'The stream has ended. This page will pick it up again if it restarts.',
      reconnecting: `Connection lost${viewer.lostText ? ` (${viewer.lostText})` : ''}; reconnecting…`,
    };
    const refusedText = {
      4401: token ? 'This token is not valid (expired?): ask for a fresh link.' : 'This stream needs a token: open it with the link (…?token=…) you were given.',
      4403: 'Your token does not allow watching this stream.',
    }[viewer.conn.lastClose?.code];
    if (refusedText) {
      // Refused for want of a token, or with one that may not watch: retrying cannot help.
      viewer.conn.close();
      badge.textContent = 'refused';
    }
    const text = refusedText
      || (viewer.autoplayBlocked && (state === 'live' || state === 'waiting') ? 'Click the video to start playback.' : texts[state] || '');
    // Written only when it changes: a live region re-read every 500 ms would chatter.
    if (msg.textContent !== text) msg.textContent = text;
    msg.hidden = !text;
    const lag = viewer.lag();
    $('latency').textContent = lag === null || state !== 'live' ? '—' : `${lag.toFixed(2)} s`;
    $('bitrate').textContent = formatBits(viewer.bitrate());
    $('viewers').textContent = viewers === null ? '—' : String(viewers);
    $('mode').textContent = viewer.mode;
    $('generation').textContent = generationText(viewer.reassembler.generation);
    const behind = state === 'live' && lag !== null && (viewer.userPaused || lag > viewer.targetLag() + 2);
    $('golive').hidden = !behind;
    $('mute').textContent = video.muted ? 'Unmute' : 'Mute';
    $('mute').setAttribute('aria-pressed', String(video.muted));
    const playing = !video.paused && !viewer.pausedByUser;
    $('playpause').textContent = playing ? 'Pause' : 'Play';
    $('playpause').setAttribute('aria-label', playing ? 'Pause' : 'Play');
    // Why this player (blob mode where there is no usable MediaSource), in plain words.
    if ($('notice').textContent !== (viewer.notice ?? '')) $('notice').textContent = viewer.notice ?? '';
    $('notice').hidden = !viewer.notice;
    $('errors').hidden = !viewer.errors.length;
    $('errors').textContent = viewer.errors.slice(-3).join(' · ');
    if (apiInfo && apiInfo.ingest_bits_per_second) {
      $('ingest').textContent = formatBits(apiInfo.ingest_bits_per_second);
    }
  };
  viewer.onChange = render;
  viewer.onError = render;
  setInterval(render, 500);

  const poll = async () => {
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch(`/api/streams/${encodeURIComponent(stream)}`, { cache: 'no-store', headers });
      if (res.ok) {
        apiInfo = await res.json();
        viewers = apiInfo.viewers;
      } else if (res.status === 404) {
        viewers = 0;
      }
    } catch {}
    render();
  };
  poll();
  setInterval(poll, 3000);

  wirePlayerControls({ viewer, video, box: video.closest('.player'), render });
  $('golive').addEventListener('click', () => viewer.goLive());
  video.addEventListener('click', () => {
    if (video.paused) viewer.goLive();
  });
  mountDiagnostics(document.querySelector('main'), () => {
    const conn = viewer.conn;
    const close = conn.lastClose;
    const lag = viewer.lag();
    const last = viewer.recoveries[viewer.recoveries.length - 1];
    return {
      fields: [
        ['State', viewer.state],
        ['Sockets', `chunk ${socketState(conn.chunk)}, blob ${socketState(conn.blob)}; ${conn.connects} connect(s)${close ? `; last close ${close.code} ${close.reason || ''}` : ''}`],
        ['Mime and codecs', viewer.mime || 'not known yet'],
        ['Player', viewer.mode],
        ['Buffered (s)', rangesText(video.buffered)],
        ['Position (s)', `${video.currentTime.toFixed(2)}${video.paused ? ', paused' : ''}${viewer.userSeekedBack ? ', seeked back by the viewer' : ''}`],
        ['Dropped frames', droppedFramesText(video)],
        ['Lag behind newest media', lag === null ? 'no media yet' : `${lag.toFixed(2)} s (target ${viewer.targetLag().toFixed(2)} s)`],
        ['Recoveries', `${viewer.recoveries.length}${last ? ` (last: ${last.reason})` : ''}`],
        ['Stalls and silences', `${viewer.stalls || 0} waiting, ${viewer.silences} silent connection(s)`],
      ],
      log: logLines(viewer.log),
    };
  });
  video.addEventListener('play', render);
  video.addEventListener('pause', render);
  viewer.connect();
  render();
}
