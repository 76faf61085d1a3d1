// Browser tests of the watch page's player bar and keys (and a seek back that the
// live-edge control respects until "Go live"), the Diagnostics panels, lists that keep
// keyboard focus across refreshes, and the pages on a server with --watch-auth token
// (issue 13): the watch page with and without ?token=, the recordings page with one.
// run.mjs registers them with its runner and its helpers (`ctx`).

import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recorderUrl, startServer, waitUntil, sleep } from './harness.mjs';

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT as `blobcast token` mints one: exp, and the blobcast claim. */
export function mintToken(secret, permissions, ttlSeconds = 3600) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + ttlSeconds, blobcast: permissions }));
  const signature = createHmac('sha256', secret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/**
 * The viewer decodes `n` more frames while live: it plays. (Not assertPlays's rate checks:
 * what these tests are about is not playback speed, which a loaded machine bends.)
 */
async function decodesMore(page, n = 10, timeout = 10000) {
  const from = await page.evaluate(() => window.blobcastViewer.framesDecoded());
  await waitUntil(page, ([from, n]) => window.blobcastViewer.state === 'live' && window.blobcastViewer.framesDecoded() >= from + n, [from, n], timeout, `${n} more frames decoded`);
}

/** Counts the page's fetches (and their answers) by path, in window.fetched / window.answered. */
const COUNT_FETCHES = `
  window.fetched = {};
  window.answered = {};
  const realFetch = window.fetch;
  window.fetch = async (url, init) => {
    const path = new URL(String(url), location.href).pathname;
    window.fetched[path] = (window.fetched[path] ?? 0) + 1;
    const res = await realFetch(url, init);
    window.answered[path] = (window.answered[path] ?? 0) + 1;
    return res;
  };`;

/** The Diagnostics panel's fields, label -> text, and its log lines. */
async function diagnostics(page) {
  return page.evaluate(() => {
    const fields = {};
    for (const dd of document.querySelectorAll('#diagnostics dd')) fields[dd.dataset.field] = dd.textContent;
    const log = document.getElementById('diagnostics-log')?.textContent ?? '';
    return { open: document.getElementById('diagnostics')?.open ?? null, fields, log: log.split('\n').filter(Boolean) };
  });
}

export function controlsTests(test, ctx) {
  test('watch page keys: space pauses and plays, m mutes, f goes fullscreen; a seek back (←) is respected until "Go live"', async () => {
    const stream = 'keys';
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const v = await ctx.open(ctx.viewerUrl(stream, 'mse'), 'mse viewer');
      opened.push(v);
      await ctx.waitFrames(v);
      const at = () =>
        v.evaluate(() => {
          const h = window.blobcastViewer;
          const video = document.getElementById('video');
          return {
            paused: video.paused,
            pausedByUser: h.viewer.pausedByUser,
            muted: video.muted,
            fullscreen: !!document.fullscreenElement,
            lag: h.lag,
            target: h.viewer.targetLag(),
            seekedBack: h.userSeekedBack,
            currentTime: video.currentTime,
            goLiveShown: !document.getElementById('golive').hidden,
            playLabel: document.getElementById('playpause').textContent,
          };
        });
      // Keys go to the page, not to a focused control.
      await v.evaluate(() => document.activeElement?.blur());
      await v.keyboard.press('Space');
      await waitUntil(v, () => document.getElementById('video').paused && window.blobcastViewer.viewer.pausedByUser, null, 3000, 'paused by space');
      assert.equal((await at()).playLabel, 'Play');
      await v.keyboard.press('Space');
      await waitUntil(v, () => !document.getElementById('video').paused, null, 5000, 'playing again after space');
      assert.equal((await at()).muted, true, 'starts muted (autoplay)');
      await v.keyboard.press('m');
      assert.equal((await at()).muted, false, 'm unmutes');
      await v.keyboard.press('m');
      assert.equal((await at()).muted, true, 'm mutes again');
      await v.keyboard.press('f');
      await waitUntil(v, () => !!document.fullscreenElement, null, 3000, 'fullscreen after f');
      assert.equal(await v.evaluate(() => document.fullscreenElement.classList.contains('player')), true, 'the player box (video and poster) is fullscreen');
      await v.keyboard.press('f');
      await waitUntil(v, () => !document.fullscreenElement, null, 3000, 'out of fullscreen after f again');
      // The volume slider and picture-in-picture are there (PiP where the browser has it).
      assert.equal(await v.evaluate(() => !!document.getElementById('volume') && !document.getElementById('pip').hidden), true, 'volume slider and PiP button');

      // Seek back: needs a few seconds of media behind the playhead.
      await waitUntil(v, () => {
        const b = document.getElementById('video').buffered;
        return b.length && document.getElementById('video').currentTime - b.start(0) > 5;
      }, null, 15000, '5 s of media behind the playhead');
      await v.keyboard.press('ArrowLeft');
      await waitUntil(v, () => window.blobcastViewer.userSeekedBack && !document.getElementById('video').seeking, null, 3000, 'seeked back');
      const back = await at();
      assert.ok(back.lag > back.target + 3, `well behind the edge after ←: lag ${back.lag.toFixed(2)} s, target ${back.target.toFixed(2)} s`);
      // The live-edge control would be back at the edge within a tick or two (a far-behind
      // seek) or catch up at 1.1x: for 4 s the position must stay where the person put it.
      await sleep(4000);
      const held = await at();
      assert.ok(held.seekedBack, 'still seeked back');
      assert.ok(held.lag > back.lag - 1, `the seek back is respected: lag ${back.lag.toFixed(2)} -> ${held.lag.toFixed(2)} s`);
      assert.ok(held.currentTime > back.currentTime + 2, `and it plays on from there: ${back.currentTime.toFixed(2)} -> ${held.currentTime.toFixed(2)}`);
      assert.ok(held.goLiveShown, '"Go live" is offered');
      await v.click('#golive');
      await waitUntil(v, () => {
        const h = window.blobcastViewer;
        return !h.userSeekedBack && h.lag !== null && h.lag < h.viewer.targetLag() + 1;
      }, null, 5000, 'back at the live edge after "Go live"');
      await decodesMore(v);
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('diagnostics panels on the watch and record pages open with their fields filled', async () => {
    const stream = 'diag';
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const v = await ctx.open(ctx.viewerUrl(stream, 'mse'), 'mse viewer');
      opened.push(v);
      await ctx.waitFrames(v, 20);
      assert.equal((await diagnostics(v)).open, false, 'collapsed at first');
      await v.click('#diagnostics summary');
      await waitUntil(v, () => !!document.querySelector('#diagnostics dd[data-field="Buffered (s)"]'), null, 3000, 'fields shown');
      const d = await diagnostics(v);
      console.log(`     watch diagnostics: ${JSON.stringify(d.fields)}`);
      assert.match(d.fields['Sockets'], /chunk open, blob open/);
      assert.match(d.fields['Mime and codecs'], /vp8/);
      assert.match(d.fields['Buffered (s)'], /^\d+\.\d\d-\d+\.\d\d/);
      assert.match(d.fields['Dropped frames'], /^\d+ dropped of [1-9]\d*$/);
      assert.match(d.fields['Lag behind newest media'], /^\d+\.\d\d s \(target \d+\.\d\d s\)$/);
      assert.match(d.fields['Recoveries'], /^0$/);
      assert.ok(d.log.length >= 3 && d.log.length <= 20, `log lines: ${d.log.length}`);
      assert.ok(d.log.some((l) => /player: mse/.test(l)), `the log: ${d.log.join(' | ')}`);
      // A recovery shows up there.
      await v.evaluate(() => window.blobcastViewer.viewer.player.failed('test: a forced recovery'));
      await waitUntil(v, () => /^1 \(last: /.test(document.querySelector('#diagnostics dd[data-field="Recoveries"]').textContent), null, 5000, 'the recovery counted in the panel');

      await rec.click('#diagnostics summary');
      await waitUntil(rec, () => /chunk open, blob open/.test(document.querySelector('#diagnostics dd[data-field="Sockets"]')?.textContent ?? ''), null, 3000, 'recorder sockets shown');
      const r = await diagnostics(rec);
      console.log(`     record diagnostics: ${JSON.stringify(r.fields)}`);
      assert.match(r.fields['Mime and codecs'], /vp8/);
      assert.match(r.fields['Recorder'], /^recording, generation /);
      assert.ok(r.log.length >= 1 && r.log.length <= 20, `recorder log lines: ${r.log.length}`);
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('lists refreshed every few seconds keep keyboard focus (front page, recordings page)', async () => {
    const stream = 'focus';
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN }), 'recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      for (const { path, selector, api } of [
        { path: '/', selector: `li[data-stream="${stream}"] a`, api: '/api/streams' },
        { path: '/recordings', selector: '#recordings li a.button', api: '/api/recordings' },
      ]) {
        const page = await ctx.open(`${ctx.server.url}${path}`, `page ${path}`, COUNT_FETCHES);
        opened.push(page);
        await page.waitForSelector(selector, { timeout: 8000 });
        // Tab to it, as a keyboard user does.
        await page.evaluate((sel) => {
          const el = document.querySelector(sel);
          el.focus();
          window.focusedAt = { el };
        }, selector);
        assert.equal(await page.evaluate(() => document.activeElement === window.focusedAt.el), true, `${path}: focused`);
        const before = await page.evaluate((a) => window.fetched[a] ?? 0, api);
        // Two answered refreshes later (and a moment to render the second).
        await waitUntil(page, ([a, n]) => (window.answered[a] ?? 0) >= n + 2, [api, before], 15000, 'two refreshes');
        await sleep(300);
        const kept = await page.evaluate(() => document.activeElement === window.focusedAt.el && document.contains(window.focusedAt.el));
        assert.ok(kept, `${path}: focus stays on the focused item across refreshes (now on ${await page.evaluate(() => document.activeElement?.outerHTML?.slice(0, 80))})`);
      }
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('--watch-auth token: the watch page plays with ?token= (gone from the address), says a token is needed without one; the front and recordings pages list (and play) with ?token=', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blobcast-token-'));
    const secretFile = join(dir, 'secret');
    const secret = randomBytes(32).toString('hex');
    writeFileSync(secretFile, `${secret}\n`);
    const srv = await startServer(['--token-secret-file', secretFile, '--watch-auth', 'token']);
    const token = mintToken(secret, { publish: ['tok*'], watch: ['tok*'] });
    const stream = 'tokcam';
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(srv.url, { stream, ...ctx.PATTERN, token }), 'recorder with a token');
      opened.push(rec);
      await ctx.waitLive(rec);
      const v = await ctx.open(`${srv.url}/watch/${stream}?mode=mse&token=${token}`, 'viewer with ?token=');
      opened.push(v);
      await ctx.waitFrames(v);
      await decodesMore(v);
      const href = await v.evaluate(() => location.href);
      assert.ok(!href.includes('token') && href.includes('mode=mse'), `the token left the address bar (other options stay): ${href}`);

      // The front page lists it with the token, and its link carries the token on.
      const front = await ctx.open(`${srv.url}/?token=${token}`, 'front page with ?token=');
      opened.push(front);
      await front.waitForSelector(`li[data-stream="${stream}"] a`, { timeout: 8000 });
      const link = await front.evaluate((s) => ({ href: location.href, to: document.querySelector(`li[data-stream="${s}"] a`).getAttribute('href') }), stream);
      assert.ok(!link.href.includes('token'), `the token left the front page's address: ${link.href}`);
      assert.equal(link.to, `/watch/${stream}?token=${token}`);
      const frontBare = await ctx.open(`${srv.url}/`, 'front page without a token');
      opened.push(frontBare);
      await waitUntil(frontBare, () => /needs a token/.test(document.getElementById('summary').textContent), null, 8000, '"needs a token" on the front page');

      const bare = await ctx.open(`${srv.url}/watch/${stream}`, 'viewer without a token');
      opened.push(bare);
      await waitUntil(bare, () => /needs a token/.test(document.getElementById('message').textContent) && !document.getElementById('message').hidden, null, 8000, '"needs a token" shown');
      await sleep(2000);
      const shown = await bare.evaluate(() => ({
        message: document.getElementById('message').textContent,
        hidden: document.getElementById('message').hidden,
        badge: document.getElementById('state').textContent,
        connects: window.blobcastViewer.viewer.conn.connects,
      }));
      assert.match(shown.message, /This stream needs a token/, 'still the token message, not a spinner');
      assert.equal(shown.hidden, false);
      assert.equal(shown.badge, 'refused');
      assert.ok(shown.connects <= 2, `no retry loop: ${shown.connects} connects`);

      // A recording to list: stop the publisher.
      await rec.evaluate(() => window.blobcastRecorder.publisher.stop());
      await waitUntil(rec, () => window.blobcastRecorder.state === 'stopped', null, 8000, 'stopped');
      const list = await ctx.open(`${srv.url}/recordings?token=${token}`, 'recordings page with ?token=');
      opened.push(list);
      await list.waitForSelector('#recordings li button:not([disabled])', { timeout: 10000 });
      const listed = await list.evaluate(() => ({
        href: location.href,
        streams: [...document.querySelectorAll('#recordings li strong')].map((e) => e.textContent),
        download: document.querySelector('#recordings li a.button').getAttribute('href'),
      }));
      assert.ok(!listed.href.includes('token'), `the token left the address bar: ${listed.href}`);
      assert.ok(listed.streams.includes(stream), `listed: ${listed.streams}`);
      assert.match(listed.download, /\?token=/, 'the download link carries the token');
      await list.click('#recordings li button');
      await waitUntil(list, () => document.getElementById('player').currentTime > 1, null, 10000, 'the recording plays');
      assert.equal(await list.evaluate(() => document.getElementById('errors').hidden), true, 'no error shown');

      const refused = await ctx.open(`${srv.url}/recordings`, 'recordings page without a token');
      opened.push(refused);
      await waitUntil(refused, () => /needs a token/.test(document.getElementById('summary').textContent), null, 8000, '"needs a token" on the recordings page');
    } finally {
      await ctx.closeAll(opened);
      await srv.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
