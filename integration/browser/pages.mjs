// Browser tests of the pages as people use them (issue 17 and the page halves of issue
// 12): stop right after a restart, a reloaded recorder keeping its session, black frames
// at blob swaps, banners that clear, autoplay blocked, a paused viewer that lets go of
// its sockets, a dead connection, the player's controls, diagnostics and accessibility.
// run.mjs registers them with its runner and its helpers (`ctx`).

import assert from 'node:assert/strict';
import { recorderUrl, recorderState, viewerState, waitUntil, assertPlays, sleep } from './harness.mjs';

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
}
