// What the browser tests and the latency benchmark share: the server binary on an
// ephemeral port, Chromium with a throw-away profile (killed by its own pid and process
// group, always), a tiny test runner, and page helpers.

import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = join(ROOT, 'integration/browser/artifacts');
export const BIN = resolve(ROOT, process.env.BLOBCAST_BIN || 'target/debug/blobcast');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
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

// ---- a tiny runner ----------------------------------------------------------------

export function runner({ onFail } = {}) {
  const tests = [];
  const results = [];
  return {
    test(name, fn, { timeout = 60000 } = {}) {
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

/** Asserts that a viewer is live and really playing over `ms`: time and frames advance. */
export async function assertPlays(page, { ms = 2000, minFrames = 12, minAdvance = 0.8 } = {}) {
  const a = await viewerState(page);
  await sleep(ms);
  const b = await viewerState(page);
  const advance = b.played - a.played;
  const frames = b.frames - a.frames;
  const where = `${page.label}: state ${b.state}, mode ${b.mode}, currentTime ${a.currentTime.toFixed(2)} -> ${b.currentTime.toFixed(2)}, frames ${a.frames} -> ${b.frames}, errors ${JSON.stringify(b.errors)}, log ${JSON.stringify(b.log)}`;
  if (b.state !== 'live') throw new Error(`not live: ${where}`);
  if (b.errors.length) throw new Error(`media errors: ${where}`);
  if (frames < minFrames) throw new Error(`only ${frames} frames decoded in ${ms} ms: ${where}`);
  // Played time, not currentTime: a blob-mode swap to a new generation restarts its clock.
  if (advance < minAdvance) {
    throw new Error(`played ${advance.toFixed(2)} s of video in ${ms} ms: ${where}`);
  }
  if (page.problems.length) throw new Error(`${page.label}: ${page.problems.join('; ')}`);
  return { advance, frames, state: b };
}
