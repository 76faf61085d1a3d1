// What the browser tests and the latency benchmark share: the server binary on an
// ephemeral port, Chromium with a throw-away profile (killed by its own pid and process
// group, always), Firefox over WebDriver BiDi (the same), a tiny test runner, and page
// helpers.

import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { inflateSync } from 'node:zlib';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = join(ROOT, 'integration/browser/artifacts');
export const BIN = resolve(ROOT, process.env.BLOBCAST_BIN || 'target/debug/blobcast');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';

/** Firefox's counterparts of CHROMIUM_ARGS: fake devices, no prompts, autoplay allowed. */
export const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Background tabs keep their timers and their video (the recorder sits in one).
  'dom.min_background_timeout_value': 4,
  'dom.timeout.enable_budget_timer_throttling': false,
  'media.suspend-background-video.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
};

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // The recorder tab sits in the background through most tests: its test pattern's
  // setInterval, its MediaRecorder and its sockets must run at full rate there.
  // (Playwright passes these too, today; the tests should not hang on its defaults.)
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  '--autoplay-policy=no-user-gesture-required',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the server -------------------------------------------------------------------

export async function startServer(extraArgs = []) {
  if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run cargo build (or set BLOBCAST_BIN)`);
  // Recordings of test runs go to a temporary folder, removed when the server stops.
  const recordDir = mkdtempSync(join(tmpdir(), 'blobcast-rec-'));
  const args = ['--listen', '127.0.0.1:0', '--public-dir', join(ROOT, 'public'), '--record-dir', recordDir];
  const proc = spawn(BIN, [...args, ...extraArgs], {
    cwd: ROOT,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  proc.stderr.on('data', (d) => {
    for (const line of String(d).split('\n')) if (line) log.push(line);
    if (log.length > 2000) log.splice(0, log.length - 2000);
    if (process.env.SERVER_LOG) process.stderr.write(d);
  });
  const url = await new Promise((resolveUrl, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server printed no address in 10 s: ${out}`)), 10000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /blobcast listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${log.slice(-5).join(' | ')}`));
    });
  });
  return {
    url,
    proc,
    log,
    async stop() {
      if (proc.exitCode === null && !proc.signalCode) {
        proc.kill('SIGTERM');
        const exited = await Promise.race([new Promise((r) => proc.once('exit', () => r(true))), sleep(3000).then(() => false)]);
        if (!exited) proc.kill('SIGKILL');
      }
      rmSync(recordDir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP proxy in front of `url` whose browser-to-server direction carries at most
 * `bytesPerSecond`: a slow uplink, for the backpressure test. Resolves to
 * { url, close() }.
 */
export async function slowUplink(url, bytesPerSecond) {
  const target = new URL(url);
  const sockets = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    upstream.pipe(client);
    client.on('data', (chunk) => {
      upstream.write(chunk);
      client.pause();
      setTimeout(() => client.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
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

/**
 * A TCP proxy in front of `url` whose current connections can be frozen: `freeze()`
 * stops forwarding on every connection open now, without closing it (a laptop asleep,
 * a stalled NAT); connections made later pass. Resolves to { url, freeze(), close() }.
 */
export async function freezableProxy(url) {
  const target = new URL(url);
  const sockets = new Set();
  const live = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    const pair = { frozen: false };
    live.add(pair);
    sockets.add(client).add(upstream);
    client.on('data', (d) => pair.frozen || upstream.write(d));
    upstream.on('data', (d) => pair.frozen || client.write(d));
    const end = () => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    freeze() {
      for (const pair of live) pair.frozen = true;
    },
    close() {
      for (const s of sockets) s.destroy();
      proxy.close();
    },
  };
}

/** A PNG from page.screenshot() as { width, height, rgba } (8-bit RGB/RGBA, not interlaced). */
export function decodePng(buf) {
  const width = buf.readUInt32BE(16);
  const height = buf.readUInt32BE(20);
  const colorType = buf[25];
  const channels = colorType === 6 ? 4 : colorType === 2 ? 3 : null;
  if (buf[24] !== 8 || !channels || buf[28] !== 0) throw new Error('decodePng: only 8-bit RGB(A), non-interlaced');
  const idat = [];
  for (let i = 8; i < buf.length; ) {
    const len = buf.readUInt32BE(i);
    const type = buf.toString('latin1', i + 4, i + 8);
    if (type === 'IDAT') idat.push(buf.subarray(i + 8, i + 8 + len));
    i += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = new Uint8Array(width * height * 4);
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const cur = new Uint8Array(stride);
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? cur[x - channels] : 0;
      const b = prev[x];
      const c = x >= channels ? prev[x - channels] : 0;
      let v = line[x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[x] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      out.set([cur[x * channels], cur[x * channels + 1], cur[x * channels + 2], 255], (y * width + x) * 4);
    }
    prev = cur;
  }
  return { width, height, rgba: out };
}

// ---- the browser ------------------------------------------------------------------

/** Finds the browser process (not a helper: no --type=) that uses `profile`. */
function browserPid(profile) {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (cmdline.some((a) => a === `--user-data-dir=${profile}`) && !cmdline.some((a) => a.startsWith('--type='))) {
      return Number(entry);
    }
  }
  return null;
}

function killGroup(pid) {
  if (!pid) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // ESRCH: gone already, or not a group leader.
    }
  }
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM=/path/to/chromium)`);
  }
  const profile = mkdtempSync(join(tmpdir(), 'blobcast-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1100, height: 760 },
    });
  } catch (err) {
    killGroup(browserPid(profile));
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  const pid = browserPid(profile);
  if (!pid) {
    // Without its pid the browser could not be killed for sure at the end: its
    // helpers would outlive the run. Better to stop here.
    await Promise.race([context.close().catch(() => {}), sleep(3000)]);
    rmSync(profile, { recursive: true, force: true });
    throw new Error(`Chromium started but no process with --user-data-dir=${profile} (and no --type=) is in /proc`);
  }
  for (const p of context.pages()) await p.close().catch(() => {});
  return {
    context,
    pid,
    profile,
    async close() {
      await Promise.race([context.close().catch(() => {}), sleep(3000)]);
      killGroup(pid);
      killGroup(browserPid(profile));
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * The same page API the tests use with Playwright, on a Puppeteer page: addInitScript,
 * waitForFunction(fn, arg, { timeout, polling }), click, isVisible, textContent.
 */
function playwrightLike(page) {
  const waitForFunction = page.waitForFunction.bind(page);
  return Object.assign(page, {
    addInitScript: (script) => page.evaluateOnNewDocument(script),
    waitForFunction: (fn, arg, { timeout = 15000, polling = 100 } = {}) => waitForFunction(fn, { timeout, polling }, arg),
    isVisible: (selector) =>
      page.evaluate((sel) => {
        const el = document.querySelector(sel);
        return !!el && !el.closest('[hidden]') && el.getClientRects().length > 0;
      }, selector),
    textContent: (selector) => page.evaluate((sel) => document.querySelector(sel)?.textContent ?? null, selector),
  });
}

/** Firefox ESR over WebDriver BiDi, with a throw-away profile; `newPage()` as in Chromium's context. */
export async function launchFirefox() {
  if (!existsSync(FIREFOX)) {
    throw new Error(`Firefox not found at ${FIREFOX}: apt-get install firefox-esr (or set FIREFOX=/path/to/firefox)`);
  }
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    extraPrefsFirefox: FIREFOX_PREFS,
    defaultViewport: { width: 1100, height: 760 },
  });
  const pid = browser.process()?.pid ?? null;
  return {
    browser,
    pid,
    context: { newPage: async () => playwrightLike(await browser.newPage()) },
    async close() {
      await Promise.race([browser.close().catch(() => {}), sleep(3000)]);
      killGroup(pid);
    },
  };
}

// ---- a tiny runner ----------------------------------------------------------------

export function runner({ onFail } = {}) {
  const tests = [];
  const results = [];
  return {
    // ONLY=text runs the tests whose name contains it (while working on one).
    test(name, fn, { timeout = 60000 } = {}) {
      if (process.env.ONLY && !process.env.ONLY.split('|').some((part) => name.includes(part))) return;
      tests.push({ name, fn, timeout });
    },
    async run() {
      for (const t of tests) {
        const started = Date.now();
        let timer;
        try {
          await Promise.race([
            t.fn(),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`timed out after ${t.timeout / 1000} s`)), t.timeout);
            }),
          ]);
          results.push({ name: t.name, ok: true });
          console.log(`ok   ${t.name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
        } catch (err) {
          results.push({ name: t.name, ok: false, err });
          console.log(`FAIL ${t.name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
          console.log(`     ${String(err && err.stack ? err.stack : err).split('\n').join('\n     ')}`);
          onFail?.(t.name);
        } finally {
          clearTimeout(timer);
        }
      }
      return results;
    },
  };
}

// ---- pages --------------------------------------------------------------------------

export function recorderUrl(base, params) {
  const q = new URLSearchParams({ autostart: '1', ...params });
  return `${base}/record?${q}`;
}

export async function recorderState(page) {
  return page.evaluate(() => {
    const h = window.blobcastRecorder;
    return {
      state: h.state,
      generation: h.generation,
      generations: h.generations,
      bytesSent: h.bytesSent,
      errors: [...h.errors],
      mime: h.mime,
      backpressure: h.backpressure,
    };
  });
}

export async function viewerState(page) {
  return page.evaluate(() => {
    const h = window.blobcastViewer;
    const v = document.getElementById('video');
    return {
      state: h.state,
      mode: h.mode,
      generation: h.generation,
      length: h.length,
      frames: h.framesDecoded(),
      currentTime: v.currentTime,
      played: h.played(),
      paused: v.paused,
      lag: h.lag,
      errors: [...h.errors],
      recoveries: h.recoveries.length,
      switches: h.switches.map((s) => ({ ...s })),
      hello: h.hello,
      log: h.log.slice(-15).map((l) => l.text),
      // For the failure message only: what the media element itself says.
      media: (() => {
        const q = v.getVideoPlaybackQuality?.();
        const ranges = [];
        for (let i = 0; i < v.buffered.length; i++) ranges.push(`${v.buffered.start(i).toFixed(2)}-${v.buffered.end(i).toFixed(2)}`);
        return {
          readyState: v.readyState,
          visibility: document.visibilityState,
          decoded: v.webkitDecodedFrameCount,
          dropped: q?.droppedVideoFrames,
          size: `${v.videoWidth}x${v.videoHeight}`,
          buffered: ranges.join(' '),
          rate: v.playbackRate,
        };
      })(),
    };
  });
}

export async function waitUntil(page, fn, arg, timeout = 15000, what = 'condition') {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (err) {
    throw new Error(`${page.label || 'page'}: ${what} not met within ${timeout / 1000} s`);
  }
}

/** What every assertPlays call measured, for the summary at the end of a run. */
export const playFigures = [];

/**
 * Asserts that a viewer is live and really playing over `ms`, as a healthy viewer does
 * even on a loaded 2-core machine. It plays at least `minPlayed` of the wall time: an
 * mse viewer plays 0.85-1.1x (the live-edge control nudges the rate; seen once at 0.77
 * at load 1.7, a chunk late after a restart), a blob viewer 0.7-1.0x (every src swap
 * stalls for a few hundred ms). It decodes at least `minFrames` of the frames the
 * source makes at `fps` (seen: 0.76-1.4x; blob mode decodes some twice), stays within
 * `maxLag` s of the newest media it holds (seen: mse up to 1.05 s, blob up to 4.1 s,
 * aiming at 3.3), has no media error and no MSE recovery beyond
 * `allowRecoveries` (a demuxer error at every restart would otherwise go unnoticed: the
 * player recovers behind its poster).
 */
export async function assertPlays(page, { ms = 2000, fps = 20, minPlayed, minFrames = 0.6, maxLag, allowRecoveries = 0 } = {}) {
  // 'source': the frame rate the publisher really delivered, counted in the stream the
  // viewer holds, not the rate asked for (a loaded machine's encoder drops frames).
  // Measured before and after the window: a generation just started has too little.
  const before = fps === 'source' ? await sourceFps(page) : null;
  const a = await viewerState(page);
  await sleep(ms);
  const b = await viewerState(page);
  const measured = fps === 'source' ? (await sourceFps(page)) ?? before : null;
  if (fps === 'source') fps = measured ?? 20;
  const advance = b.played - a.played;
  const frames = b.frames - a.frames;
  const expectedFrames = (fps * ms) / 1000;
  const blob = b.mode === 'blob';
  const lagBound = maxLag ?? (blob ? 6 : 2.5);
  const playedBound = minPlayed ?? (blob ? 0.5 : 0.7);
  playFigures.push({ label: page.label, mode: b.mode, played: advance / (ms / 1000), frames: frames / expectedFrames, lag: b.lag, ...(measured ? { sourceFps: +measured.toFixed(1) } : {}) });
  if (process.env.FIGURES) console.log(`     ${page.label}: ${JSON.stringify(playFigures.at(-1))}`);
  const where = `${page.label}: state ${b.state}, mode ${b.mode}, currentTime ${a.currentTime.toFixed(2)} -> ${b.currentTime.toFixed(2)}, frames ${a.frames} -> ${b.frames}, lag ${b.lag?.toFixed(2)} s, errors ${JSON.stringify(b.errors)}, recoveries ${b.recoveries}, media ${JSON.stringify(a.media)} -> ${JSON.stringify(b.media)}, log ${JSON.stringify(b.log)}`;
  if (b.state !== 'live') throw new Error(`not live: ${where}`);
  if (b.errors.length) throw new Error(`media errors: ${where}`);
  if (b.recoveries > allowRecoveries) throw new Error(`${b.recoveries} MSE recoveries (allowed ${allowRecoveries}): ${where}`);
  if (frames < minFrames * expectedFrames) {
    throw new Error(`only ${frames} frames decoded in ${ms} ms (want ${Math.ceil(minFrames * expectedFrames)} of ~${expectedFrames}): ${where}`);
  }
  // Played time, not currentTime: a blob-mode swap to a new generation restarts its clock.
  if (advance < (playedBound * ms) / 1000) {
    throw new Error(`played ${advance.toFixed(2)} s of video in ${ms} ms: ${where}`);
  }
  if (b.lag === null || !(b.lag <= lagBound)) throw new Error(`${b.lag?.toFixed(2)} s behind the newest media (bound ${lagBound} s): ${where}`);
  if (page.problems.length) throw new Error(`${page.label}: ${page.problems.join('; ')}`);
  return { advance, frames, state: b };
}

/**
 * Video frames per second of media in what a viewer page holds of the current
 * generation (WebM blocks or MP4 samples of the video track), or null under 1 s of it.
 */
export async function sourceFps(page) {
  return page.evaluate(async () => {
    const { scannerFor } = await import('/js/media-scanner.js');
    const v = window.blobcastViewer.viewer;
    const pieces = v.reassembler.pieces;
    if (!pieces.length) return null;
    const scan = scannerFor(pieces[0].bytes, v.mime);
    for (const p of pieces) scan.push(p.bytes);
    const span = scan.lastTime - scan.firstTime;
    return span >= 1 ? scan.videoFrames / span : null;
  });
}

/** One line on how close the viewers came to assertPlays' bounds, per mode. */
export function playFiguresSummary() {
  if (!playFigures.length) return 'no playback measured';
  const parts = ['mse', 'blob'].map((mode) => {
    const f = playFigures.filter((x) => x.mode === mode);
    if (!f.length) return null;
    const min = (k) => Math.min(...f.map((x) => x[k])).toFixed(2);
    const lag = Math.max(...f.map((x) => x.lag ?? Infinity)).toFixed(2);
    return `${mode} (${f.length}): played >= ${min('played')}x wall time, frames >= ${min('frames')}x the source's, lag <= ${lag} s`;
  });
  return `playback checks: ${parts.filter(Boolean).join('; ')}`;
}
