// Browser tests of the recorder and viewer pages in real Chromium, against the real
// server binary. Run from the repo root: `node integration/browser/run.mjs` (or through
// `cargo test --test browser`). Env: BLOBCAST_BIN (default target/debug/blobcast),
// CHROMIUM (default /usr/bin/chromium), SERVER_LOG=1 to echo the server's log.
//
// Chrome's MediaRecorder output is what is tested: pieces cut mid-element, timestamps
// restarting at 0 on every recorder restart.

import assert from 'node:assert/strict';
import { mkdirSync, statSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT,
  ARTIFACTS,
  startServer,
  launchBrowser,
  runner,
  recorderUrl,
  recorderState,
  viewerState,
  waitUntil,
  assertPlays,
  sleep,
  slowUplink,
} from './harness.mjs';
import { unitTests } from './unit.mjs';

const VP8 = 'video/webm;codecs=vp8,opus';
/** Small and light: 2 cores run the encoder and up to six decoders at once. */
const PATTERN = { source: 'test', width: 320, height: 240, fps: 20, chunk_time: 300, mime: VP8 };

const started = Date.now();
const r = runner({
  onFail: () => {
    if (server && !process.env.SERVER_LOG) {
      console.log('     server log (last 15 lines):');
      for (const line of server.log.slice(-15)) console.log(`       ${line}`);
    }
  },
});
await unitTests(ROOT, r.test);

let server = null;
let browser = null;
const pages = new Set();

async function cleanup() {
  for (const p of pages) await p.close().catch(() => {});
  pages.clear();
  await browser?.close().catch((e) => console.error('closing the browser:', e));
  browser = null;
  await server?.stop().catch((e) => console.error('stopping the server:', e));
  server = null;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.log(`\n${signal}: cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

async function open(url, label, init) {
  const page = await browser.context.newPage();
  page.label = label;
  page.problems = [];
  page.consoleLog = [];
  page.on('pageerror', (err) => page.problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    page.consoleLog.push(`${msg.type()}: ${msg.text()}`);
    if (page.consoleLog.length > 200) page.consoleLog.shift();
  });
  if (init) await page.addInitScript(init);
  pages.add(page);
  await page.goto(url);
  return page;
}

async function closeAll(list) {
  for (const p of list) {
    pages.delete(p);
    await p.close().catch(() => {});
  }
}

const viewerUrl = (stream, mode) => `${server.url}/watch/${stream}${mode ? `?mode=${mode}` : ''}`;

async function waitLive(recorder, timeout = 15000) {
  await waitUntil(
    recorder,
    () => {
      const h = window.blobcastRecorder;
      if (h.errors.length) return true;
      return h.state === 'live' && h.bytesSent > 0;
    },
    null,
    timeout,
    'recorder live',
  );
  const s = await recorderState(recorder);
  assert.deepEqual(s.errors, [], `recorder errors: ${s.errors}`);
  assert.equal(s.state, 'live');
  return s;
}

async function waitFrames(viewer, min = 5, timeout = 15000) {
  await waitUntil(
    viewer,
    (min) => window.blobcastViewer?.state === 'live' && window.blobcastViewer.framesDecoded() >= min,
    min,
    timeout,
    `live with ${min} frames decoded`,
  );
}

// ---- tests ------------------------------------------------------------------------

r.test('test pattern: mse and blob viewers joining before start, mid-stream and after a restart all play', async () => {
  const stream = 'pattern';
  const opened = [];
  try {
    const early = {
      mse: await open(viewerUrl(stream, 'mse'), 'early mse viewer'),
      blob: await open(viewerUrl(stream, 'blob'), 'early blob viewer'),
    };
    opened.push(early.mse, early.blob);
    for (const v of Object.values(early)) {
      await waitUntil(v, () => window.blobcastViewer?.state === 'waiting', null, 5000, 'state "waiting" before the stream is live');
    }
    const rec = await open(recorderUrl(server.url, { stream, ...PATTERN, restart: 5 }), 'recorder');
    opened.push(rec);
    const first = await waitLive(rec);
    for (const v of Object.values(early)) await waitFrames(v);
    await sleep(1500);
    const mid = {
      mse: await open(viewerUrl(stream, 'mse'), 'mid-stream mse viewer'),
      blob: await open(viewerUrl(stream, 'blob'), 'mid-stream blob viewer'),
    };
    opened.push(mid.mse, mid.blob);
    await waitUntil(rec, (g) => window.blobcastRecorder.generation > g, first.generation, 10000, 'a recorder restart');
    const restarted = await recorderState(rec);
    assert.ok(restarted.generation > first.generation, 'generations grow');
    await sleep(600);
    const late = {
      mse: await open(viewerUrl(stream, 'mse'), 'after-restart mse viewer'),
      blob: await open(viewerUrl(stream, 'blob'), 'after-restart blob viewer'),
    };
    opened.push(late.mse, late.blob);
    const viewers = [early, mid, late].flatMap((g) => [g.mse, g.blob]);
    for (const v of viewers) await waitFrames(v);
    for (const [mode, v] of [['mse', early.mse], ['blob', early.blob], ['mse', late.mse], ['blob', late.blob]]) {
      assert.equal((await viewerState(v)).mode, mode, `${v.label} mode`);
    }
    const lateState = await viewerState(late.mse);
    assert.ok(lateState.generation >= restarted.generation, 'the late viewer joined a restarted generation');
    // MSE viewers ask for join=live. A server that honours it says so in the hello and
    // sends the init then a keyframe cluster: exactly one intended jump. One that does
    // not sends the whole generation: no jump. Both must play.
    for (const v of [mid.mse, late.mse]) {
      const { first, jumps } = await v.evaluate(() => ({
        first: window.blobcastViewer.viewer.conn.hellos.find((h) => h.live),
        jumps: window.blobcastViewer.viewer.reassembler.jumps.length,
      }));
      console.log(`     ${v.label}: server join "${first.join}", ${jumps} jump(s)`);
      assert.equal(jumps, first.join === 'live' ? (jumps ? 1 : 0) : 0, `${v.label}: jumps vs join ${first.join}`);
    }
    for (const v of [mid.blob, late.blob]) {
      const first = await v.evaluate(() => window.blobcastViewer.viewer.conn.hellos.find((h) => h.live));
      assert.equal(first.join, 'start', 'blob mode asks for the whole generation');
    }
    await Promise.all(viewers.map((v) => assertPlays(v, { ms: 2500, minFrames: 15, minAdvance: 1.0 })));
    // Every viewer went through at least one generation switch or joined after one.
    const earlyState = await viewerState(early.mse);
    assert.ok(earlyState.switches.filter((s) => s.kind === 'generation').length >= 2, 'the early viewer saw a restart');
    assert.equal((await recorderState(rec)).state, 'live');
    await rec.screenshot({ path: join(ARTIFACTS, 'recorder.png') });
    await early.mse.bringToFront();
    await early.mse.screenshot({ path: join(ARTIFACTS, 'viewer-mse.png') });
    await early.blob.bringToFront();
    await early.blob.screenshot({ path: join(ARTIFACTS, 'viewer-blob.png') });
    for (const p of opened) if (p.problems.length) throw new Error(`${p.label}: ${p.problems.join('; ')}`);
  } finally {
    await closeAll(opened);
  }
});

r.test('mse viewer keeps playing across restarts with no blank frame, poster shown at each switch', async () => {
  const stream = 'switches';
  const opened = [];
  try {
    const viewer = await open(viewerUrl(stream, 'mse'), 'sampled mse viewer');
    opened.push(viewer);
    // What the person sees, every 50 ms: the poster canvas while it is shown, else the
    // video; and the raw video frame too.
    await viewer.evaluate(() => {
      const video = document.getElementById('video');
      const poster = document.getElementById('poster');
      const c = document.createElement('canvas');
      c.width = 64;
      c.height = 48;
      const ctx = c.getContext('2d', { willReadFrequently: true });
      const measure = (source) => {
        ctx.clearRect(0, 0, 64, 48);
        ctx.drawImage(source, 0, 0, 64, 48);
        const d = ctx.getImageData(0, 0, 64, 48).data;
        let sum = 0;
        let sq = 0;
        let lit = 0;
        const n = d.length / 4;
        for (let i = 0; i < d.length; i += 4) {
          const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
          sum += y;
          sq += y * y;
          if (y > 30) lit++;
        }
        const mean = sum / n;
        return { mean, sd: Math.sqrt(Math.max(0, sq / n - mean * mean)), lit: lit / n };
      };
      window.samples = [];
      setInterval(() => {
        const posterShown = !poster.hidden;
        const raw = video.readyState >= 2 ? measure(video) : { mean: 0, sd: 0, lit: 0, noFrame: true };
        const seen = posterShown ? measure(poster) : raw;
        window.samples.push({ t: Date.now(), ct: video.currentTime, posterShown, raw, seen });
      }, 50);
    });
    const rec = await open(recorderUrl(server.url, { stream, ...PATTERN, restart: 3 }), 'recorder');
    opened.push(rec);
    await viewer.bringToFront(); // headless Chromium composites video frames for the front tab only
    await waitLive(rec);
    await waitFrames(viewer);
    // Two generation switches played through, plus 1.5 s after the second.
    await waitUntil(
      viewer,
      () => {
        const done = window.blobcastViewer.switches.filter((s) => s.kind === 'generation' && s.boundary > 0 && s.presentedAt);
        return done.length >= 2 && Date.now() > done[1].presentedAt + 1600;
      },
      null,
      20000,
      'two generation switches played through',
    );
    const { switches, samples } = await viewer.evaluate(() => ({
      switches: window.blobcastViewer.switches.filter((s) => s.kind === 'generation' && s.boundary > 0 && s.presentedAt),
      samples: window.samples,
    }));
    for (const sw of switches.slice(0, 2)) {
      const window_ = samples.filter((s) => s.t >= sw.presentedAt - 1000 && s.t <= sw.presentedAt + 1500);
      assert.ok(window_.length >= 30, `only ${window_.length} samples around the switch at ${sw.boundary}`);
      for (const s of window_) {
        const at = `${s.t - sw.presentedAt} ms from the switch (boundary ${sw.boundary.toFixed(2)} s, currentTime ${s.ct.toFixed(2)})`;
        assert.ok(!s.raw.noFrame, `the video had no frame ${at}`);
        for (const [what, m] of [['video', s.raw], ['what is seen', s.seen]]) {
          assert.ok(m.lit > 0.6 && m.sd > 12, `blank-looking ${what} ${at}: ${JSON.stringify(m)}`);
        }
      }
      assert.ok(sw.overlayShown, `poster not shown at the switch to generation ${sw.generation}`);
      // Seamless: the last frame before the boundary and the first after it are close.
      assert.ok(sw.firstMediaTime - sw.lastMediaTimeBefore < 0.5, `a jump in media time at the switch: ${sw.lastMediaTimeBefore} -> ${sw.firstMediaTime}`);
    }
    await assertPlays(viewer, { ms: 1500, minFrames: 10, minAdvance: 0.8 });
  } finally {
    await closeAll(opened);
  }
});

r.test('camera (fake device) publishes with the default format; a viewer plays, pauses, goes live', async () => {
  const stream = 'camera';
  const opened = [];
  try {
    const rec = await open(recorderUrl(server.url, { stream, source: 'camera', width: 320, height: 240, fps: 15, chunk_time: 400, restart: 5 }), 'camera recorder');
    opened.push(rec);
    const s = await waitLive(rec);
    assert.match(s.mime, /^video\/webm;codecs=vp[89],opus$/i);
    const viewer = await open(viewerUrl(stream), 'camera viewer (auto mode)');
    opened.push(viewer);
    await waitFrames(viewer);
    assert.equal((await viewerState(viewer)).mode, 'mse', 'auto mode picks MediaSource in Chromium');
    await assertPlays(viewer, { ms: 2500, minFrames: 12, minAdvance: 1.0 });
    await viewer.bringToFront();
    await sleep(300);
    await viewer.screenshot({ path: join(ARTIFACTS, 'viewer-camera.png') });
    assert.ok(!(await viewer.isVisible('#golive')), '"Go live" hidden while at the live edge');
    // Pause: playback stays paused (no live-edge control) and "Go live" appears.
    await viewer.click('#playpause');
    await sleep(2500);
    assert.ok(await viewer.evaluate(() => document.getElementById('video').paused), 'stays paused');
    await viewer.waitForSelector('#golive', { state: 'visible', timeout: 3000 });
    await viewer.click('#golive');
    await waitUntil(viewer, () => !document.getElementById('video').paused && window.blobcastViewer.lag < 2, null, 5000, 'back at the live edge');
    await viewer.waitForSelector('#golive', { state: 'hidden', timeout: 3000 });
    await assertPlays(viewer, { ms: 1500, minFrames: 8, minAdvance: 0.7 });
  } finally {
    await closeAll(opened);
  }
});

r.test('screen (the fake picker) publishes and a viewer plays it', async () => {
  const stream = 'screen';
  const opened = [];
  try {
    const rec = await open(recorderUrl(server.url, { stream, source: 'screen', width: 320, height: 240, fps: 15, chunk_time: 400, restart: 5 }), 'screen recorder');
    opened.push(rec);
    await waitLive(rec);
    const viewer = await open(viewerUrl(stream), 'screen viewer (auto mode)');
    opened.push(viewer);
    await waitFrames(viewer, 3);
    await assertPlays(viewer, { ms: 2000, minFrames: 5, minAdvance: 0.8 });
  } finally {
    await closeAll(opened);
  }
});

r.test('resume: a viewer blip resumes without a snapshot; a publisher blip continues with a new generation', async () => {
  const stream = 'blips';
  const opened = [];
  try {
    const rec = await open(recorderUrl(server.url, { stream, ...PATTERN, restart: 60 }), 'recorder');
    opened.push(rec);
    const before = await waitLive(rec);
    const viewer = await open(viewerUrl(stream, 'mse'), 'mse viewer');
    opened.push(viewer);
    await waitFrames(viewer);
    const held = await viewerState(viewer);
    await viewer.evaluate(() => window.blobcastViewer.reconnect());
    await waitUntil(viewer, () => window.blobcastViewer.viewer.conn.connects >= 2 && window.blobcastViewer.hello?.resumed === true, null, 5000, 'a resumed hello');
    const resumed = await viewerState(viewer);
    assert.equal(resumed.generation, held.generation);
    assert.ok(resumed.length >= held.length);
    await assertPlays(viewer, { ms: 1500, minFrames: 10, minAdvance: 0.7 });
    const stats = await viewer.evaluate(() => window.blobcastViewer.viewer.reassembler.stats);
    assert.equal(stats.starts, 1, 'no snapshot after the resume');

    await rec.evaluate(() => window.blobcastRecorder.dropSocket('chunk'));
    await waitUntil(rec, (g) => window.blobcastRecorder.state === 'live' && window.blobcastRecorder.generation > g, before.generation, 10000, 'recorder back live on a new generation');
    const after = await recorderState(rec);
    assert.deepEqual(after.errors, []);
    await waitUntil(viewer, (g) => window.blobcastViewer.generation === g, after.generation, 10000, 'viewer on the new generation');
    await sleep(500);
    await assertPlays(viewer, { ms: 2000, minFrames: 12, minAdvance: 0.9 });
  } finally {
    await closeAll(opened);
  }
});

r.test('mse viewer recovers from a demuxer error with a fresh MediaSource', async () => {
  const stream = 'recover';
  const opened = [];
  try {
    const rec = await open(recorderUrl(server.url, { stream, ...PATTERN, restart: 60 }), 'recorder');
    opened.push(rec);
    await waitLive(rec);
    const viewer = await open(viewerUrl(stream, 'mse'), 'mse viewer');
    opened.push(viewer);
    await waitFrames(viewer);
    await viewer.bringToFront();
    // Bytes no WebM parser accepts, straight into the SourceBuffer's queue.
    await viewer.evaluate(() => window.blobcastViewer.viewer.player.enqueue({ kind: 'append', bytes: new Uint8Array(4096).fill(0x42) }));
    await waitUntil(viewer, () => window.blobcastViewer.recoveries.length >= 1, null, 5000, 'a recovery');
    await sleep(1000);
    const st = await assertPlays(viewer, { ms: 2000, minFrames: 12, minAdvance: 0.9 });
    assert.equal(st.state.recoveries, 1, 'one recovery');
    assert.deepEqual(st.state.errors, []);
  } finally {
    await closeAll(opened);
  }
});

r.test('backpressure: a slow upload is reported, nothing is dropped; Stop stops', async () => {
  const stream = 'slow';
  const opened = [];
  const uplink = await slowUplink(server.url, 20000);
  try {
    const rec = await open(`${uplink.url}/record?${new URLSearchParams({ stream, source: 'test', width: 640, height: 360, fps: 20, chunk_time: 300, bitrate: 1500000 })}`, 'recorder on a 20 KB/s uplink');
    opened.push(rec);
    await rec.click('#toggle'); // the Start button
    await waitUntil(rec, () => window.blobcastRecorder.backpressure === true, null, 15000, 'the backpressure warning');
    assert.ok(await rec.isVisible('#backpressure'));
    assert.match(await rec.textContent('#backpressure'), /falling behind/);
    const s = await recorderState(rec);
    assert.equal(s.state, 'live');
    assert.deepEqual(s.errors, []);
    await rec.click('#toggle'); // Stop
    await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 8000, 'stopped');
    assert.equal(await rec.textContent('#toggle'), 'Start');
  } finally {
    await closeAll(opened);
    uplink.close();
  }
});

r.test('errors in plain words: wrong key (4401), busy stream (4409), camera denied or missing', async () => {
  const opened = [];
  let keyed = null;
  try {
    keyed = await startServer(['--publish-key', 's3cret']);
    const wrong = await open(recorderUrl(keyed.url, { stream: 'k', ...PATTERN, key: 'nope' }), 'wrong-key recorder');
    opened.push(wrong);
    await waitUntil(wrong, () => window.blobcastRecorder.errors.length > 0, null, 8000, 'an error');
    let s = await recorderState(wrong);
    assert.equal(s.state, 'stopped');
    assert.match(s.errors[0], /wrong or missing publish key/);
    assert.match(await wrong.textContent('#errors'), /publish key/);
    const right = await open(recorderUrl(keyed.url, { stream: 'k', ...PATTERN, key: 's3cret' }), 'right-key recorder');
    opened.push(right);
    await waitLive(right);

    const first = await open(recorderUrl(server.url, { stream: 'busy', ...PATTERN }), 'first recorder');
    opened.push(first);
    await waitLive(first);
    const second = await open(recorderUrl(server.url, { stream: 'busy', ...PATTERN }), 'second recorder');
    opened.push(second);
    await waitUntil(second, () => window.blobcastRecorder.errors.length > 0, null, 8000, 'an error');
    s = await recorderState(second);
    assert.equal(s.state, 'stopped');
    assert.match(s.errors[0], /another publisher/);
    assert.equal((await recorderState(first)).state, 'live', 'the first publisher is untouched');

    for (const [name, pattern] of [
      ['NotAllowedError', /denied/],
      ['NotFoundError', /No camera or microphone was found/],
    ]) {
      const page = await open(
        recorderUrl(server.url, { stream: 'cam', source: 'camera' }),
        `${name} recorder`,
        `navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('test', '${name}'));`,
      );
      opened.push(page);
      await waitUntil(page, () => window.blobcastRecorder.errors.length > 0, null, 5000, 'an error');
      s = await recorderState(page);
      assert.equal(s.state, 'stopped');
      assert.match(s.errors[0], pattern);
    }
  } finally {
    await closeAll(opened);
    await keyed?.stop();
  }
});

r.test('front page lists the live stream; duration= stops it, viewers see "ended", then play a restart', async () => {
  const opened = [];
  try {
    // duration=5: the recorder stops by itself, sending {"type":"stop"}.
    const rec = await open(recorderUrl(server.url, { stream: 'listed', ...PATTERN, duration: 5 }), 'recorder');
    opened.push(rec);
    await waitLive(rec);
    const viewer = await open(viewerUrl('listed', 'mse'), 'viewer');
    opened.push(viewer);
    const index = await open(`${server.url}/`, 'front page');
    opened.push(index);
    await index.waitForSelector('li[data-stream="listed"].live a[href="/watch/listed"]', { timeout: 8000 });
    assert.ok(await index.$('a[href="/record"]'));
    await index.screenshot({ path: join(ARTIFACTS, 'index.png') });
    await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 8000, 'stopped after duration=5');
    await waitUntil(viewer, () => window.blobcastViewer.state === 'ended', null, 5000, 'viewer state "ended"');
    // Auto-refresh: the stream is no longer live once its publisher stopped.
    await index.waitForSelector('li[data-stream="listed"].live', { state: 'detached', timeout: 8000 });
    // Start again (a new publisher session, no time limit this time): the same viewer
    // page picks it up.
    await rec.evaluate(() => (document.querySelector('input[name="duration"]').value = ''));
    await rec.click('#toggle');
    await waitLive(rec);
    await waitUntil(viewer, () => window.blobcastViewer.state === 'live', null, 8000, 'viewer live again');
    await sleep(1500);
    await assertPlays(viewer, { ms: 1500, minFrames: 8, minAdvance: 0.6 });
  } finally {
    await closeAll(opened);
  }
});

r.test('screenshots of the recorder and viewer pages are in the artifacts folder', async () => {
  for (const name of ['recorder.png', 'viewer-mse.png', 'viewer-blob.png', 'viewer-camera.png', 'index.png']) {
    const size = statSync(join(ARTIFACTS, name)).size;
    assert.ok(size > 5000, `${name} is only ${size} bytes`);
  }
});

// ---- run ------------------------------------------------------------------------------

let results = [];
let setupFailed = null;
console.log(`screenshots: ${ARTIFACTS}`);
try {
  rmSync(ARTIFACTS, { recursive: true, force: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  try {
    server = await startServer();
    browser = await launchBrowser();
    console.log(`server ${server.url}, chromium pid ${browser.pid}`);
  } catch (err) {
    setupFailed = err;
  }
  if (setupFailed) {
    console.log(`FAIL setup: ${setupFailed.message}`);
  } else {
    results = await r.run();
  }
} finally {
  await cleanup();
}
const failures = results.filter((x) => !x.ok);
console.log(`screenshots: ${ARTIFACTS}`);
console.log(`took ${((Date.now() - started) / 1000).toFixed(1)} s`);
const passed = results.length - failures.length;
const failed = failures.length + (setupFailed ? 1 : 0);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
