// The recorder page: the options form (filled from the address, which then holds a
// shareable link without the key), the Start/Stop button, the preview and the status
// lines, and window.blobcastRecorder for the browser tests.

import { formatBytes, formatBits, formatDuration, generationText } from './protocol.js';
import { Publisher, DEFAULTS } from './publisher.js';
import { supportedMimes, describeFormats } from './record-formats.js';
import { mountDiagnostics, socketState, droppedFramesText, logLines } from './diagnostics.js';

function $(id) {
  return document.getElementById(id);
}

function readForm(form) {
  const o = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    const field = form.elements[key];
    if (field) o[key] = field.value.trim();
  }
  return o;
}

function fillForm(form, params) {
  for (const key of Object.keys(DEFAULTS)) {
    const field = form.elements[key];
    if (!field) continue;
    field.value = params.has(key) ? params.get(key) : String(DEFAULTS[key]);
  }
}

/**
 * The format list: what this browser's MediaRecorder records (WebM, MP4 or both), as the
 * Format field's suggestions and one line of text. "auto" follows the browser.
 */
function showFormats() {
  const mimes = typeof MediaRecorder === 'undefined' ? [] : supportedMimes((m) => MediaRecorder.isTypeSupported(m));
  $('mimes').replaceChildren(...mimes.map((m) => Object.assign(document.createElement('option'), { value: m })));
  $('formats').textContent = mimes.length
    ? `This browser records ${describeFormats(mimes)}. Leave Format empty ("auto") for the one it prefers.`
    : 'This browser cannot record video here (no MediaRecorder format it supports).';
}

export function initRecorderPage() {
  const form = $('options');
  const params = new URLSearchParams(location.search);
  fillForm(form, params);
  // A key or token in the link goes into the form, and out of the address bar and history.
  if (params.has('key') || params.has('token')) {
    params.delete('key');
    params.delete('token');
    history.replaceState(null, '', `${location.pathname}${params.toString() ? '?' + params : ''}`);
  }
  showFormats();
  const toggle = $('toggle');
  const preview = $('preview');
  const hook = {
    state: 'stopped',
    generation: null,
    bytesSent: 0,
    generations: 0,
    mime: null,
    backpressure: false,
    errors: [],
    warnings: [],
    publisher: null,
    dropSocket: (kind) => publisher?.dropSocket(kind),
  };
  window.blobcastRecorder = hook;
  let publisher = null;
  let clock = null;

  const render = () => {
    const p = publisher;
    const state = p ? p.state : 'stopped';
    Object.assign(hook, {
      state,
      generation: p?.generation ?? null,
      bytesSent: p?.bytesSent ?? 0,
      generations: p?.generations ?? 0,
      mime: p?.mime ?? null,
      backpressure: p?.backpressure ?? false,
      errors: p?.errors ?? hook.errors,
      publisher: p,
    });
    const badge = $('state');
    badge.textContent = state;
    badge.className = `badge state-${state}`;
    toggle.textContent = state === 'stopped' ? 'Start' : 'Stop';
    toggle.classList.toggle('danger', state !== 'stopped');
    $('bytes').textContent = formatBytes(hook.bytesSent);
    $('generation').textContent = generationText(hook.generation);
    $('generations').textContent = String(hook.generations);
    $('mime-used').textContent = hook.mime ?? '—';
    $('elapsed').textContent = p?.startedAt && state !== 'stopped' ? formatDuration(Date.now() - p.startedAt) : '—';
    const rate = p?.startedAt ? (hook.bytesSent * 8) / Math.max(1, (Date.now() - p.startedAt) / 1000) : 0;
    $('rate').textContent = formatBits(rate);
    const bp = $('backpressure');
    bp.hidden = !hook.backpressure;
    if (hook.backpressure) {
      bp.textContent = `The upload is falling behind: ${formatBytes(p.backlog())} sent but not yet at the server. Nothing is dropped, but viewers are getting delayed; lower the bitrate or resolution.`;
    }
    form.querySelectorAll('input, select').forEach((el) => (el.disabled = state !== 'stopped'));
  };

  const showError = (text) => {
    const box = $('errors');
    box.hidden = false;
    const p = document.createElement('p');
    p.textContent = text;
    box.append(p);
    render();
  };

  /** A warning, or null when what it warned of is over (a reconnect that worked). */
  const showWarning = (text) => {
    const box = $('warning');
    if (text === null) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    hook.warnings.push(text);
    box.hidden = false;
    box.textContent = text;
  };

  const updateLink = () => {
    const stream = form.elements.stream.value.trim() || DEFAULTS.stream;
    const url = new URL(`/watch/${encodeURIComponent(stream)}`, location.href).toString();
    const a = $('viewer-link');
    a.href = url;
    a.textContent = url;
  };
  form.elements.stream.addEventListener('input', updateLink);
  updateLink();

  const start = async () => {
    $('errors').hidden = true;
    $('errors').textContent = '';
    $('warning').hidden = true;
    const o = readForm(form);
    // The address bar then holds a shareable recorder link (never the key).
    const shown = new URLSearchParams();
    for (const [k, v] of Object.entries(o)) {
      if (k !== 'key' && k !== 'token' && v !== '' && String(DEFAULTS[k]) !== v) shown.set(k, v);
    }
    history.replaceState(null, '', `${location.pathname}${shown.toString() ? '?' + shown : ''}`);
    publisher = new Publisher(o, {
      onChange: render,
      onError: showError,
      onWarning: showWarning,
      onMedia: (media) => {
        preview.srcObject = media;
        preview.play().catch(() => {});
      },
    });
    hook.publisher = publisher;
    clearInterval(clock);
    clock = setInterval(render, 1000);
    await publisher.start();
    render();
  };

  toggle.addEventListener('click', () => {
    if (!publisher || publisher.state === 'stopped') start();
    else publisher.stop().then(() => {
      preview.srcObject = null;
      $('warning').hidden = true;
    });
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    toggle.click();
  });
  render();
  mountDiagnostics(document.querySelector('main .stage'), () => {
    const p = publisher;
    if (!p) return { fields: [['State', 'stopped: nothing published yet']], log: [] };
    const tracks = p.media?.getTracks?.().map((t) => `${t.kind} ${t.readyState}${t.muted ? ' (muted)' : ''}`) ?? [];
    return {
      fields: [
        ['State', p.state],
        ['Sockets', `chunk ${socketState(p.sockets.chunk)}, blob ${socketState(p.sockets.blob)}`],
        ['Mime and codecs', p.mime || 'not chosen yet'],
        ['Tracks', tracks.join(', ') || 'none'],
        ['Recorder', p.current?.rec ? `${p.current.rec.state}, generation ${generationText(p.current.generation)}` : 'none'],
        ['Not yet at the server', formatBytes(p.backlog())],
        ['Most ever queued', formatBytes(p.maxBuffered)],
        ['Preview dropped frames', droppedFramesText(preview)],
        ['Recoveries', `${Math.max(0, p.generations - 1)} new generation(s), ${(p.recorderErrors || []).length} recorder error(s) in the last 10 s`],
      ],
      log: logLines(p.log),
    };
  });
  if (params.get('autostart') === '1') start();
}
