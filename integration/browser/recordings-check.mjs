// The recordings-page check, shared by Chromium (run.mjs) and Firefox (firefox.mjs): a
// session restarting every 2 s, stopped after 6 s, is one finished file spliced from its
// generations; the page plays it with a finite duration, seeks to its middle, and the
// test pattern's clock there is as far from the first frame's as the media time is.

import assert from 'node:assert/strict';
import { recorderUrl, recorderState, waitUntil, sleep } from './harness.mjs';

/** Publishes a 6 s session (from Chromium) and waits for its finished recording entry. */
export async function recordSession(ctx, stream, opened, mime = ctx.PATTERN.mime) {
  // Restarts every 2 s, stops by itself after 6 s: one file spliced from 3 generations.
  const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, mime, restart: 2, duration: 6, name_prefix: 'browsertest' }), 'recorder');
  opened.push(rec);
  await ctx.waitLive(rec);
  await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 15000, 'stopped after duration=6');
  assert.ok((await recorderState(rec)).generations >= 3, 'the recorder restarted');
  let entry = null;
  const until = Date.now() + 10000;
  while (Date.now() < until) {
    const list = await (await fetch(`${ctx.server.url}/api/recordings`)).json();
    entry = list.find((x) => x.stream === stream);
    if (entry?.state === 'finished') break;
    await sleep(200);
  }
  assert.equal(entry?.state, 'finished', `the recording: ${JSON.stringify(entry)}`);
  assert.equal(entry.name_prefix, 'browsertest');
  assert.ok(entry.generations >= 2, `${entry.generations} generations spliced`);
  assert.ok(entry.duration > 4 && entry.duration < 7, `duration ${entry.duration} s for a 6 s session`);
  return entry;
}

/** Plays `entry` on the recordings `page`, checks duration, seekable and a seek to the middle. */
export async function checkRecordingsPage(page, entry, maxMissingMs) {
  const item = `li[data-id="${entry.id}"]`;
  await page.waitForSelector(`${item} .badge.state-finished`, { timeout: 8000 });
  await page.bringToFront(); // video frames are presented in the front tab only
  await page.click(`${item} .actions button`); // Play, the first of the row's buttons
  await waitUntil(page, () => {
    const v = document.getElementById('player');
    return v.readyState >= 2 && Number.isFinite(v.duration) && v.duration > 0;
  }, null, 8000, 'the recording loaded with a finite duration');
  // Capture time against media time, read from the clock cells of the frame shown:
  // the first frame here, one after the seek below.
  const readFrame = (page, minMediaTime) =>
    page.evaluate(async (minMediaTime) => {
      const { decodeClock } = await import('/js/testpattern.js');
      const v = document.getElementById('player');
      const c = document.createElement('canvas');
      return new Promise((resolve) => {
        const seen = [];
        const onFrame = (now, meta) => {
          if (meta.mediaTime >= minMediaTime) {
            c.width = v.videoWidth;
            c.height = v.videoHeight;
            const ctx = c.getContext('2d', { willReadFrequently: true });
            ctx.drawImage(v, 0, 0);
            seen.push({ mediaTime: meta.mediaTime, captured: decodeClock(ctx.getImageData(0, 0, c.width, c.height)) });
          }
          if (seen.length >= 10) resolve(seen);
          else v.requestVideoFrameCallback(onFrame);
        };
        v.requestVideoFrameCallback(onFrame);
        setTimeout(() => resolve(seen), 5000);
      });
    }, minMediaTime);
  const start = (await readFrame(page, 0)).find((f) => f.captured !== null);
  assert.ok(start, 'the test pattern clock is readable in the recording');
  const media = await page.evaluate(() => {
    const v = document.getElementById('player');
    const ranges = [];
    for (let i = 0; i < v.seekable.length; i++) ranges.push([v.seekable.start(i), v.seekable.end(i)]);
    return { duration: v.duration, seekable: ranges, error: v.error?.message ?? null };
  });
  assert.equal(media.error, null);
  assert.ok(Math.abs(media.duration - entry.duration) < 0.5, `video.duration ${media.duration} s, the recording's ${entry.duration} s`);
  assert.equal(media.seekable.length, 1, `seekable ${JSON.stringify(media.seekable)}`);
  assert.ok(media.seekable[0][0] <= 0.05 && media.seekable[0][1] >= media.duration - 0.05, `seekable ${JSON.stringify(media.seekable)} of ${media.duration} s`);

  // The seek bar: to the middle, past a splice.
  const target = media.duration / 2;
  const seek = await page.evaluate((target) => {
    const v = document.getElementById('player');
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve({ seeked: false, currentTime: v.currentTime }), 5000);
      v.addEventListener('seeked', () => {
        clearTimeout(timer);
        resolve({ seeked: true, currentTime: v.currentTime });
      }, { once: true });
      v.currentTime = target;
    });
  }, target);
  assert.ok(seek.seeked, `no seeked event (currentTime ${seek.currentTime})`);
  assert.ok(Math.abs(seek.currentTime - target) < 0.25, `seeked to ${seek.currentTime} s, wanted ${target} s`);
  const after = await readFrame(page, target - 0.05);
  assert.ok(after.length >= 10, `only ${after.length} frames presented after the seek`);
  const mid = after.find((f) => f.captured !== null);
  assert.ok(mid, 'the clock is readable after the seek');
  // The splices lose no media either: from the first frame to the middle, the capture
  // clock moved as far as the recording's timeline.
  const missing = mid.captured - start.captured - (mid.mediaTime - start.mediaTime) * 1000;
  console.log(`     recording ${entry.duration.toFixed(2)} s, ${entry.generations} generations; capture clock vs media time from the start to ${mid.mediaTime.toFixed(2)} s: ${missing.toFixed(0)} ms`);
  assert.ok(Math.abs(missing) < 2 * maxMissingMs, `${missing.toFixed(0)} ms of capture missing (or repeated, if negative) between the start and the middle`);
  assert.deepEqual(page.problems, []);
  assert.ok(!(await page.isVisible('#errors')), await page.textContent('#errors'));
}
