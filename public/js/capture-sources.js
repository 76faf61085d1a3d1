// The recorder's sources: the camera (with its microphone if there is one), a shared
// screen, window or tab, or the built-in test pattern, opened at the requested size and
// frame rate; and plain words for why one could not be opened.

import { startTestPattern } from './testpattern.js';

/** Plain words for getUserMedia / getDisplayMedia failures. */
export function describeMediaError(err, source) {
  const what = source === 'screen' ? 'screen sharing' : 'the camera or microphone';
  switch (err && err.name) {
    case 'NotAllowedError':
      return source === 'screen'
        ? 'Screen sharing was cancelled or is not allowed. Click Start and pick a screen, window or tab to share.'
        : 'Permission to use the camera or microphone was denied. Allow it (the camera icon in the address bar) and press Start again.';
    case 'NotFoundError':
      return source === 'screen'
        ? 'This browser has nothing to share (no screen capture available).'
        : 'No camera or microphone was found. Plug one in, or use the test pattern or screen source.';
    case 'NotReadableError':
    case 'AbortError':
      return `Could not open ${what}: it may be in use by another application.`;
    case 'OverconstrainedError':
      return `${what} cannot provide the requested size or frame rate; try other width/height/fps values.`;
    case 'SecurityError':
      return `The browser blocked ${what}; this page must be served over HTTPS (or from localhost).`;
    case 'TypeError':
      return `Could not start ${what}: ${err.message}`;
    default:
      return `Could not start ${what}: ${(err && (err.message || err.name)) || err}`;
  }
}

/**
 * Opens the source `o.source` names ('camera', 'screen' or 'test') as `{ stream, stop }`:
 * stop() ends every track, and the test pattern's drawing and tone with them. Throws
 * what getUserMedia / getDisplayMedia throw (describeMediaError words it).
 */
export async function openCaptureSource(o, note) {
  const width = Number(o.width) || undefined;
  const height = Number(o.height) || undefined;
  const fps = Number(o.fps) || undefined;
  if (o.source === 'test') {
    const pattern = startTestPattern({ width: width || 640, height: height || 360, fps: fps || 30 });
    await withoutSilentAudio(pattern, note);
    return captured(pattern.stream, pattern);
  }
  if (!navigator.mediaDevices) {
    const err = new Error('no mediaDevices');
    err.name = 'SecurityError';
    throw err;
  }
  const video = {};
  if (width) video.width = { ideal: width };
  if (height) video.height = { ideal: height };
  if (fps) video.frameRate = { ideal: fps };
  if (o.source === 'screen') {
    if (!navigator.mediaDevices.getDisplayMedia) {
      const err = new Error('no getDisplayMedia');
      err.name = 'NotFoundError';
      throw err;
    }
    // audio: true offers tab/system audio where the browser can share it.
    return captured(await navigator.mediaDevices.getDisplayMedia({ video, audio: true, systemAudio: 'include' }));
  }
  try {
    return captured(await navigator.mediaDevices.getUserMedia({ video, audio: true }));
  } catch (err) {
    if (err.name !== 'NotFoundError' && err.name !== 'NotReadableError') throw err;
    // A camera with no microphone is still worth publishing.
    note(`no microphone (${err.name}); publishing video only`);
    return captured(await navigator.mediaDevices.getUserMedia({ video, audio: false }));
  }
}

/**
 * The tone's AudioContext stays suspended where the browser lets no sound start without
 * a click (Firefox, for a page opened with autostart=1). Its track then carries no
 * samples, and Firefox's MediaRecorder holds back every piece until the recording stops,
 * waiting for audio to mux. A pattern without sound is better than none at all.
 */
async function withoutSilentAudio(pattern, note) {
  const ctx = pattern.audioContext;
  if (!ctx || ctx.state === 'running') return;
  await Promise.race([ctx.resume().catch(() => {}), new Promise((r) => setTimeout(r, 300))]);
  if (ctx.state === 'running') return;
  note('test pattern without sound: this browser lets no audio start without a click');
  for (const track of pattern.stream.getAudioTracks()) {
    pattern.stream.removeTrack(track);
    track.stop();
  }
}

function captured(stream, pattern = null) {
  return {
    stream,
    stop() {
      pattern?.stop();
      for (const track of stream.getTracks()) track.stop();
    },
  };
}
