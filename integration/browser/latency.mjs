// Glass-to-glass latency of the browser pages (not part of the test run):
//   node integration/browser/latency.mjs [seconds-per-case]
//   (ONLY=mse, ONLY=blob, ONLY=floor or ONLY=jitter runs one kind of case;
//    CHUNKS=250,100 picks the chunk times)
//
// The recorder's test pattern paints Date.now() as clock cells into every frame; the
// viewer (?clock=1) decodes them from each frame it presents (requestVideoFrameCallback)
// and compares with the frame's expected display time. Reported for chunk_time 1000,
// 250, 100 and 50 ms in both modes, plus the floor: the same recorder feeding a
// MediaSource player in one page (the viewer's own player), with no server and no
// network; and "mse + jitter": the viewer behind a TCP proxy that holds each piece the
// server sends it for a random 0-50 ms (in order), at 100 ms chunks.
//
// Per case: glass-to-glass p50/p95, how old the newest media held was, the stall ratio
// (time without a new frame for over 150 ms: waiting or frozen, over wall time), and
// the live-edge controller's target lag over time (mse only).

import { createServer, connect } from 'node:net';
import { launchBrowser, startServer, sleep } from './harness.mjs';
import { stallTime } from './stalls.mjs';

const SECONDS = Number(process.argv[2] || 12);
const WARMUP_MS = 4000;
const CHUNKS = (process.env.CHUNKS || '1000,250,100,50').split(',').map(Number);
const JITTER_MS = 50;
const SOURCE = { source: 'test', width: 640, height: 360, fps: 30, mime: 'video/webm;codecs=vp8,opus', keyframe: 1, restart: 30 };

function percentile(values, p) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summarize(samples, from, to) {
  const stall = stallTime(samples, from, to);
  const latencies = samples.map((s) => s.latency);
  // How old the newest media held was when each frame was shown: glass-to-glass minus
  // the player's lag behind it. The live-edge control leaves the lag anywhere in a
  // 300 ms band, so this, not glass-to-glass, shows what the server and network add.
  const ages = samples.filter((s) => s.lag !== null).map((s) => s.latency - s.lag * 1000);
  return { n: latencies.length, p50: percentile(latencies, 50), p95: percentile(latencies, 95), age: percentile(ages, 50), stall: stall.ratio };
}

/**
 * A TCP proxy in front of `url` that holds each piece the server writes toward the page
 * for a random 0-`maxMs` ms, keeping their order: network jitter on the way to a viewer.
 * The page-to-server direction passes at once. Resolves to { url, close() }.
 */
async function jitterProxy(url, maxMs) {
  const target = new URL(url);
  const sockets = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.on('data', (d) => upstream.write(d));
    let releaseAt = 0;
    upstream.on('data', (d) => {
      // Never before the previous piece: in order, as TCP would deliver it.
      releaseAt = Math.max(releaseAt, Date.now() + Math.random() * maxMs);
      setTimeout(() => client.destroyed || client.write(d), releaseAt - Date.now());
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    // The server's last pieces may still be held: close after them.
    upstream.on('error', end).on('close', () => setTimeout(() => client.end(), Math.max(0, releaseAt - Date.now()) + 1));
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    close() {
      for (const s of sockets) s.destroy();
      proxy.close();
    },
  };
}

/** The controller's target lag over the case: one figure per second (ms). */
function targetSeries(targets, from) {
  const series = [];
  for (const t of targets) {
    if (t.at < from || t.targetLag === null) continue;
    const second = Math.floor((t.at - from) / 1000);
    if (series[second] === undefined) series[second] = Math.round(t.targetLag * 1000);
  }
  return series.filter((v) => v !== undefined);
}

async function measureRelay(browser, server, chunk, mode, viewerBase = server.url) {
  const stream = `lat-${mode}-${chunk}-${Date.now()}`;
  const q = new URLSearchParams({ stream, chunk_time: chunk, autostart: '1', ...SOURCE });
  const rec = await browser.context.newPage();
  const viewer = await browser.context.newPage();
  try {
    await rec.goto(`${server.url}/record?${q}`);
    await rec.waitForFunction(() => window.blobcastRecorder.state === 'live' && window.blobcastRecorder.bytesSent > 0, null, { timeout: 15000 });
    await viewer.goto(`${viewerBase}/watch/${stream}?mode=${mode}&clock=1`);
    // Headless Chromium presents video frames at full rate in the front tab only.
    await viewer.bringToFront();
    await sleep(WARMUP_MS);
    const from = Date.now();
    await sleep(SECONDS * 1000);
    const to = Date.now();
    const samples = await viewer.evaluate((from) => window.blobcastViewer.clockSamples().filter((s) => s.shown >= from), from);
    const errors = await viewer.evaluate(() => window.blobcastViewer.errors);
    const targets = await viewer.evaluate(() => window.blobcastViewer.viewer.player?.targets ?? []);
    return { ...summarize(samples, from, to), targets: targetSeries(targets, from), errors };
  } finally {
    await viewer.close();
    await rec.close();
  }
}

/**
 * The floor: the same recorder pieces fed straight into the viewer's own player (the
 * Viewer class: reassembly, MSE player, live-edge control, clock probe) in one page:
 * no server, no sockets.
 */
async function measureFloor(browser, server, chunk) {
  const page = await browser.context.newPage();
  try {
    await page.goto(`${server.url}/record`);
    await page.bringToFront();
    await page.evaluate(
      async ({ chunk, source }) => {
        const { startTestPattern } = await import('/js/testpattern.js');
        const { Viewer } = await import('/js/viewer.js');
        const { encodeFrame } = await import('/js/protocol.js');
        const pattern = startTestPattern({ width: source.width, height: source.height, fps: source.fps });
        const box = document.createElement('div');
        box.style.cssText = 'position:fixed;inset:0;z-index:10;background:#000';
        const video = document.createElement('video');
        video.muted = true;
        video.style.cssText = 'width:640px;height:360px';
        const poster = document.createElement('canvas');
        poster.hidden = true;
        box.append(video, poster);
        document.body.append(box);
        const viewer = new Viewer({ stream: 'floor', video, posterCanvas: poster, mode: 'mse', clock: true });
        viewer.mime = source.mime;
        setInterval(() => viewer.tick(), 250); // what connect() starts, minus the sockets
        const generation = Date.now();
        let offset = 0;
        let chain = Promise.resolve();
        const rec = new MediaRecorder(pattern.stream, { mimeType: source.mime, videoKeyFrameIntervalDuration: 1000 });
        rec.ondataavailable = (e) => {
          chain = chain.then(async () => {
            if (!e.data.size) return;
            const bytes = new Uint8Array(await e.data.arrayBuffer());
            viewer.onFrame(encodeFrame(generation, offset, bytes).buffer, offset === 0);
            offset += bytes.length;
          });
        };
        rec.start(chunk);
        window.floorViewer = viewer;
      },
      { chunk, source: SOURCE },
    );
    await sleep(WARMUP_MS);
    const from = Date.now();
    await sleep(SECONDS * 1000);
    const to = Date.now();
    const samples = await page.evaluate((from) => window.floorViewer.clockProbe.samples.filter((s) => s.shown >= from), from);
    const errors = await page.evaluate(() => window.floorViewer.errors);
    const targets = await page.evaluate(() => window.floorViewer.player?.targets ?? []);
    return { ...summarize(samples, from, to), targets: targetSeries(targets, from), errors };
  } finally {
    await page.close();
  }
}

const server = await startServer();
const browser = await launchBrowser();
const jitter = await jitterProxy(server.url, JITTER_MS);
const rows = [];
try {
  console.log(`chromium pid ${browser.pid}; ${SECONDS} s per case after ${WARMUP_MS / 1000} s warm-up`);
  for (const chunk of CHUNKS) {
    for (const [label, run] of [
      ['mse', () => measureRelay(browser, server, chunk, 'mse')],
      [`jitter 0-${JITTER_MS} ms, mse`, () => measureRelay(browser, server, chunk, 'mse', jitter.url), chunk === 100],
      ['blob', () => measureRelay(browser, server, chunk, 'blob')],
      ['floor (no server, MSE)', () => measureFloor(browser, server, chunk)],
    ].filter(([label, , when = true]) => when && (!process.env.ONLY || label.startsWith(process.env.ONLY)))) {
      const result = await run();
      rows.push({ chunk, label, ...result });
      console.log(
        `  chunk_time ${chunk} ms, ${label}: p50 ${result.p50.toFixed(0)} ms, p95 ${result.p95.toFixed(0)} ms, ` +
          `newest media ${result.age.toFixed(0)} ms old, stalled ${(result.stall * 100).toFixed(1)} % (${result.n} frames)` +
          `${result.targets.length ? `; target lag by second (ms): ${result.targets.join(' ')}` : ''}` +
          `${result.errors.length ? ` errors: ${result.errors}` : ''}`,
      );
    }
  }
} finally {
  jitter.close();
  await browser.close();
  await server.stop();
}

const fmt = (v) => (Number.isFinite(v) ? `${Math.round(v)}` : '—');
const range = (v) => (v.length ? `${Math.min(...v)}–${Math.max(...v)}` : '—');
console.log('\n| chunk_time | mode | p50 (ms) | p95 (ms) | newest media age p50 (ms) | stalled | target lag (ms) | frames |');
console.log('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(`| ${r.chunk} ms | ${r.label} | ${fmt(r.p50)} | ${fmt(r.p95)} | ${fmt(r.age)} | ${(r.stall * 100).toFixed(1)} % | ${range(r.targets)} | ${r.n} |`);
}
