// Browser tests of the pages as people use them (issue 17 and the page halves of issue
// 12): stop right after a restart, a reloaded recorder keeping its session, black frames
// at blob swaps, banners that clear, autoplay blocked, a paused viewer that lets go of
// its sockets, a dead connection, the player's controls, diagnostics and accessibility.
// run.mjs registers them with its runner and its helpers (`ctx`).

import assert from 'node:assert/strict';
import { recorderUrl, recorderState, viewerState, waitUntil, assertPlays, sleep, freezableProxy } from './harness.mjs';
import { watchScreen, pictureBox } from './screencast.mjs';

const generationSwitches = (page) => page.evaluate(() => window.blobcastViewer.switches.filter((s) => s.kind === 'generation' && s.from !== null && s.presentedAt).length);

/**
 * Makes play() refuse (NotAllowedError) until the page has had a person's click: a
 * browser's autoplay policy. (A real trusted click, not navigator.userActivation, which
 * the automation may have set already.)
 */
const AUTOPLAY_BLOCKED = `
  const play = HTMLMediaElement.prototype.play;
  window.refusedPlays = 0;
  window.clicked = false;
  addEventListener('pointerdown', (e) => { if (e.isTrusted) window.clicked = true; }, true);
  HTMLMediaElement.prototype.play = function () {
    if (!window.clicked) {
      window.refusedPlays++;
      return Promise.reject(new DOMException('play() needs a click', 'NotAllowedError'));
    }
    return play.call(this);
  };`;

/** Records every WebSocket send and open of the page in window.wsLog (and the URLs). */
export const RECORD_SOCKETS = `
  window.wsLog = [];
  window.socketUrls = [];
  window.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const path = new URL(String(url)).pathname;
      window.socketUrls.push(String(url));
      window.wsLog.push({ t: Date.now(), path, open: String(url) });
    }
    send(data) {
      const path = new URL(this.url).pathname;
      if (typeof data === 'string') {
        window.wsLog.push({ t: Date.now(), path, text: data });
      } else {
        const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer ?? data);
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        window.wsLog.push({ t: Date.now(), path, generation: Number(view.getBigUint64(0)), offset: Number(view.getBigUint64(8)), length: bytes.byteLength - 16 });
      }
      return super.send(data);
    }
  };`;

export function pageTests(test, ctx) {
  test('recorder: Stop right after a restart names the newest generation and its length, sent behind every frame of it', async () => {
    const opened = [];
    try {
      for (let round = 0; round < 3; round++) {
        const stream = `stopafter${round}`;
        const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, restart: 2 }), `recorder ${round + 1}`, RECORD_SOCKETS);
        opened.push(rec);
        const first = await ctx.waitLive(rec);
        // Just after a restart: the new generation's blob is queued behind the old tail.
        await waitUntil(rec, (g) => window.blobcastRecorder.publisher?.current?.generation > g, first.generation, 8000, 'a restart');
        await rec.evaluate(() => window.blobcastRecorder.publisher.stop());
        await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 8000, 'stopped');
        const log = await rec.evaluate(() => window.wsLog);
        const stops = log.filter((m) => m.text && JSON.parse(m.text).type === 'stop');
        assert.equal(stops.length, 1, `one stop: ${JSON.stringify(stops)}`);
        const stop = JSON.parse(stops[0].text);
        const frames = log.filter((m) => m.generation !== undefined);
        const newest = Math.max(...frames.map((f) => f.generation));
        const sentOfNewest = frames.filter((f) => f.generation === newest).reduce((n, f) => n + f.length, 0);
        assert.equal(stop.generation, newest, `the stop names the newest generation sent: ${stops[0].text}`);
        assert.equal(stop.length, sentOfNewest, `the stop names all the bytes of it that were sent: ${stops[0].text}`);
        assert.equal(stops[0].path.endsWith('/chunk'), true, 'on the chunk socket');
        const after = log.slice(log.indexOf(stops[0]) + 1).filter((m) => m.generation !== undefined);
        assert.deepEqual(after, [], 'nothing is sent after the stop');
        // The server ends the session: the stream is not live any more.
        const until = Date.now() + 5000;
        let info = null;
        while (Date.now() < until) {
          const res = await fetch(`${ctx.server.url}/api/streams/${stream}`);
          info = res.ok ? await res.json() : null;
          if (!info?.live) break;
          await sleep(200);
        }
        assert.ok(!info?.live, `the stream ended: ${JSON.stringify(info)}`);
        await ctx.closeAll([rec]);
      }
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('recorder: a reloaded page publishes with the same session id; Stop forgets it', async () => {
    const opened = [];
    try {
      const stream = 'reloaded';
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN }), 'recorder', RECORD_SOCKETS);
      opened.push(rec);
      await ctx.waitLive(rec);
      const sessionOf = () =>
        rec.evaluate(() => window.socketUrls.filter((u) => u.includes('/ws/publish/')).map((u) => new URL(u).searchParams.get('session')));
      const before = await sessionOf();
      assert.ok(before.length >= 2 && before.every((s) => s === before[0]), `both sockets, one session: ${before}`);
      await rec.reload();
      await rec.click('#toggle');
      await ctx.waitLive(rec);
      const reloaded = await sessionOf();
      assert.equal(reloaded[0], before[0], 'the reloaded page takes its stream over with the same session id');
      await rec.click('#toggle');
      await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 8000, 'stopped');
      await rec.click('#toggle');
      await ctx.waitLive(rec);
      const restarted = await sessionOf();
      assert.notEqual(restarted.at(-1), before[0], 'after Stop, Start is a new session');
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('recorder: the "Connection lost" warning clears once the reconnect works', async () => {
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream: 'warnclears', ...ctx.PATTERN }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      await rec.evaluate(() => window.blobcastRecorder.dropSocket('chunk'));
      await waitUntil(rec, () => !document.getElementById('warning').hidden, null, 3000, 'the warning');
      assert.match(await rec.textContent('#warning'), /Connection lost/);
      await waitUntil(rec, () => window.blobcastRecorder.publisher.state === 'live', null, 8000, 'live again');
      await waitUntil(rec, () => document.getElementById('warning').hidden, null, 3000, 'the warning gone');
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('recorder: a MediaRecorder error starts a new generation (restart=0 too); errors that keep coming stop publishing', async () => {
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream: 'recerror', ...ctx.PATTERN, restart: 0 }), 'recorder');
      opened.push(rec);
      const before = await ctx.waitLive(rec);
      await rec.evaluate(() => window.blobcastRecorder.publisher.current.rec.dispatchEvent(new Event('error')));
      await waitUntil(rec, (g) => window.blobcastRecorder.generation > g, before.generation, 8000, 'a new generation sent');
      let s = await recorderState(rec);
      assert.equal(s.state, 'live');
      assert.deepEqual(s.errors, []);
      for (let i = 0; i < 2; i++) {
        await rec.evaluate(() => window.blobcastRecorder.publisher.current.rec.dispatchEvent(new Event('error')));
        await sleep(300);
      }
      await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 5000, 'stopped after three errors');
      s = await recorderState(rec);
      assert.match(s.errors.join(' '), /keeps failing/);
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('viewer with autoplay refused: the prompt stays put (no flicker) until a click, and one click plays', async () => {
    const opened = [];
    try {
      const stream = 'autoplay';
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const viewer = await ctx.open(ctx.viewerUrl(stream), 'viewer, autoplay refused', AUTOPLAY_BLOCKED);
      opened.push(viewer);
      await waitUntil(viewer, () => window.blobcastViewer.autoplayBlocked, null, 10000, 'autoplay refused');
      // Watch the prompt for 2 s: it never hides, and play() is not retried by itself.
      const watched = await viewer.evaluate(async () => {
        const msg = document.getElementById('message');
        const seen = [];
        const refusedBefore = window.refusedPlays;
        for (let i = 0; i < 40; i++) {
          seen.push(msg.hidden ? 'hidden' : msg.textContent);
          await new Promise((r) => setTimeout(r, 50));
        }
        return { seen: [...new Set(seen)], retries: window.refusedPlays - refusedBefore, pointer: getComputedStyle(msg).pointerEvents };
      });
      assert.deepEqual(watched.seen, ['Click the video to start playback.'], `the prompt: ${JSON.stringify(watched.seen)}`);
      assert.equal(watched.retries, 0, 'no play() retries while waiting for a click');
      assert.equal(watched.pointer, 'none', 'a click on the words reaches the video');
      await viewer.bringToFront();
      await viewer.click('#message', { force: true });
      await waitUntil(viewer, () => !document.getElementById('video').paused && document.getElementById('message').hidden, null, 5000, 'playing after one click');
      await assertPlays(viewer, { ms: 1500 });
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('mse viewer without requestVideoFrameCallback: the poster does not cover the video after a recovery', async () => {
    const opened = [];
    try {
      const stream = 'norvfc';
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, restart: 60 }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const viewer = await ctx.open(ctx.viewerUrl(stream, 'mse'), 'mse viewer without rVFC', 'delete HTMLVideoElement.prototype.requestVideoFrameCallback;');
      opened.push(viewer);
      await viewer.bringToFront();
      await ctx.waitFrames(viewer);
      await viewer.evaluate(() => window.blobcastViewer.viewer.player.queue.append(new Uint8Array(4096).fill(0x42)));
      await waitUntil(viewer, () => window.blobcastViewer.recoveries.length >= 1, null, 5000, 'a recovery');
      await waitUntil(viewer, () => document.getElementById('poster').hidden, null, 5000, 'the poster hidden once playback moves on');
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('paused mse viewer lets go of its sockets after the grace period; Play rejoins at the live edge', async () => {
    const opened = [];
    try {
      const stream = 'pausedviewer';
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, restart: 60 }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const viewer = await ctx.open(ctx.viewerUrl(stream, 'mse', { pause_grace: 2 }), 'paused mse viewer', RECORD_SOCKETS);
      opened.push(viewer);
      await viewer.bringToFront();
      await ctx.waitFrames(viewer);
      assert.equal(await viewer.getAttribute('#playpause', 'aria-label'), 'Pause');
      await viewer.click('#playpause');
      assert.equal(await viewer.getAttribute('#playpause', 'aria-label'), 'Play');
      await waitUntil(viewer, () => window.blobcastViewer.released, null, 5000, 'sockets released');
      const held = await viewer.evaluate(() => ({ chunk: window.blobcastViewer.viewer.conn.chunk, blob: window.blobcastViewer.viewer.conn.blob, length: window.blobcastViewer.length }));
      assert.deepEqual([held.chunk, held.blob], [null, null]);
      const info = await (await fetch(`${ctx.server.url}/api/streams/${stream}`)).json();
      assert.equal(info.viewers, 0, `the server counts no viewer: ${JSON.stringify(info)}`);
      await sleep(1500);
      assert.equal(await viewer.evaluate(() => window.blobcastViewer.length), held.length, 'nothing downloaded while paused');
      await viewer.click('#playpause');
      await waitUntil(viewer, () => !window.blobcastViewer.released && window.blobcastViewer.hello?.join === 'live' && !document.getElementById('video').paused, null, 8000, 'rejoined at the live edge');
      await sleep(1500);
      await assertPlays(viewer, { ms: 2000, allowRecoveries: 0 });
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('viewer whose connection goes silent (no close) reconnects with a resume', async () => {
    const opened = [];
    const proxy = await freezableProxy(ctx.server.url);
    try {
      const stream = 'silent';
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, restart: 60 }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const viewer = await ctx.open(`${proxy.url}/watch/${stream}?mode=mse`, 'viewer behind a proxy that stalls');
      opened.push(viewer);
      await viewer.bringToFront();
      await ctx.waitFrames(viewer);
      proxy.freeze();
      const frozenAt = Date.now();
      await waitUntil(viewer, () => window.blobcastViewer.silences >= 1, null, 10000, 'the silence noticed');
      const waited = Date.now() - frozenAt;
      assert.ok(waited >= 4000, `reconnected after ${waited} ms: not before max(3 chunk intervals, 5 s)`);
      await waitUntil(viewer, () => window.blobcastViewer.hello?.resumed === true && window.blobcastViewer.state === 'live', null, 8000, 'a resumed hello');
      await sleep(1000);
      await assertPlays(viewer, { ms: 2000 });
    } finally {
      await ctx.closeAll(opened);
      proxy.close();
    }
  });

  test('blob viewer: every frame composited over restarts shows a picture, never black (and a black of two screencast frames is caught)', async () => {
    // Chromium's screencast hands over the frames its compositor makes for the tab, as
    // fast as they are acknowledged (screencast.mjs; ~20 a second here): a picture black
    // for two of its intervals is caught, where screenshots every 150 ms missed it. The
    // area measured is the picture above the test pattern's clock cells: bright colour
    // bars in every frame.
    const opened = [];
    try {
      const stream = 'noblack';
      const viewer = await ctx.open(ctx.viewerUrl(stream, 'blob'), 'screencast blob viewer');
      opened.push(viewer);
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, restart: 3 }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      await viewer.bringToFront();
      await ctx.waitFrames(viewer);
      const box = await pictureBox(viewer);
      const screen = await watchScreen(viewer, box);
      const started = Date.now();
      const switchesBefore = await generationSwitches(viewer);
      await waitUntil(viewer, (n) => window.blobcastViewer.switches.filter((s) => s.kind === 'generation' && s.from !== null && s.presentedAt).length >= n + 2, switchesBefore, 15000, 'two generation switches');
      await sleep(1000);
      // The detector, checked in the same run: the picture faded out for two of the
      // screencast's own frame intervals (at least 40 ms, and at least one frame the page
      // rendered) must show. The screencast hands over a frame only once the previous one
      // is acknowledged, so a black shorter than its interval can fall between two (one
      // 40 ms black was missed three times running on a quiet machine, at 50 ms a frame):
      // its resolution is its interval, printed below. Up to three tries, 500 ms apart.
      const gaps = (await screen.frames()).map((f, i, all) => (i ? f.t - all[i - 1].t : null)).filter((d) => d !== null).sort((a, b) => a - b);
      const interval = gaps.length ? gaps[gaps.length >> 1] : 50;
      const blackMs = Math.max(40, Math.round(2 * interval));
      const probeAt = Date.now();
      let caught = false;
      for (let i = 0; i < 3 && !caught; i++) {
        const tryAt = Date.now();
        await viewer.evaluate((blackMs) => new Promise((done) => {
          const v = document.getElementById('video');
          v.style.opacity = '0';
          const since = performance.now();
          const wait = () => requestAnimationFrame(() => requestAnimationFrame(() => {
            if (performance.now() - since < blackMs) return wait();
            v.style.opacity = '';
            done();
          }));
          wait();
        }), blackMs);
        await sleep(500);
        caught = (await screen.frames()).some((f) => f.t >= tryAt - 20 && f.lit < 0.5);
      }
      const frames = await screen.stop();
      const watched = frames.filter((f) => f.t < probeAt - 20);
      const probe = frames.filter((f) => f.t >= probeAt - 20);
      const swaps = (await viewer.evaluate(() => window.blobcastViewer.switches.filter((s) => s.at >= 0))).filter((s) => s.at >= started);
      console.log(`     ${watched.length} composited frames over ${swaps.length} src swaps (${(watched.length / ((probeAt - started) / 1000)).toFixed(1)} a second), darkest lit share ${Math.min(...watched.map((f) => f.lit)).toFixed(2)}; a ${blackMs} ms black (median frame interval ${Math.round(interval)} ms): lit share ${Math.min(...probe.map((f) => f.lit)).toFixed(2)}`);
      assert.ok(probe.some((f) => f.lit < 0.5), `the detector missed a ${blackMs} ms black: ${JSON.stringify(probe)}`);
      assert.ok(watched.length >= 8 * ((probeAt - started) / 1000), `only ${watched.length} frames composited`);
      assert.ok(swaps.length >= 3, `${swaps.length} src swaps watched`);
      const black = watched.filter((f) => f.lit < 0.5).map((f) => ({ ...f, sinceSwap: Math.min(...swaps.map((s) => f.t - s.at).filter((d) => d >= -50)) }));
      assert.deepEqual(black, [], `${black.length} of ${watched.length} composited frames black`);
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('pages: contrast of .primary and .state-live, live regions, generations shown as times', async () => {
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream: 'a11y', ...ctx.PATTERN }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const contrast = await rec.evaluate(() => {
        const lum = (rgb) => {
          const [r, g, b] = rgb.match(/\d+/g).slice(0, 3).map((v) => {
            const c = Number(v) / 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
          });
          return 0.2126 * r + 0.7152 * g + 0.0722 * b;
        };
        const ratio = (el) => {
          const s = getComputedStyle(el);
          const [a, b] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
          return (a + 0.05) / (b + 0.05);
        };
        const live = document.createElement('span');
        live.className = 'badge state-live';
        live.textContent = 'live';
        document.body.append(live);
        return { primary: ratio(document.querySelector('.primary, #toggle')), live: ratio(live), role: document.getElementById('state').getAttribute('role'), generation: document.getElementById('generation').textContent };
      });
      assert.ok(contrast.primary >= 4.5, `.primary contrast ${contrast.primary.toFixed(2)}:1`);
      assert.ok(contrast.live >= 4.5, `.state-live contrast ${contrast.live.toFixed(2)}:1`);
      assert.equal(contrast.role, 'status');
      assert.match(contrast.generation, /^started \d\d:\d\d:\d\d$/, `generation shown as "${contrast.generation}"`);
    } finally {
      await ctx.closeAll(opened);
    }
  });
}
