// MP4 in the pages (issue 16 parts 4-6), in Chromium, whose MediaRecorder writes
// `video/mp4;codecs=avc1.42E01E,opus` and whose MediaSource plays it: the recorder page
// picks MP4 by itself where the browser has nothing else (Safari, stood in for by
// hiding the WebM formats), an mse viewer joins mid-generation at the live edge, a blob
// viewer plays across restarts with no blank picture; and a browser with no MediaSource
// at all (an iPhone before iOS 17.1, stood in for by deleting it) plays in blob mode
// and says why. run.mjs registers them.

import assert from 'node:assert/strict';
import { recorderUrl, recorderState, viewerState, waitUntil, assertPlays, sleep } from './harness.mjs';
import { recordSession, checkRecordingsPage } from './recordings-check.mjs';

/** A Safari-like recorder: MediaRecorder records MP4 only. */
const MP4_ONLY = `
  const canRecord = MediaRecorder.isTypeSupported.bind(MediaRecorder);
  MediaRecorder.isTypeSupported = (type) => /^video\\/mp4/i.test(type) && canRecord(type);`;

/**
 * A stand-in for Safari's ManagedMediaSource (not Safari: Chromium's MediaSource under
 * that name), which wants data only between its startstreaming and endstreaming
 * events: it starts not streaming, streams from 0.4 s to 2 s after its sourceopen, and
 * again from 3 s. Every appendBuffer made while it does not stream is counted.
 */
const MANAGED_MEDIA_SOURCE = `
  window.mmsLog = { appendsWhileNotStreaming: 0, appends: 0, events: [] };
  window.ManagedMediaSource = class extends MediaSource {
    constructor() {
      super();
      this.streaming = false;
      const set = (on) => {
        this.streaming = on;
        window.mmsLog.events.push(on ? 'startstreaming' : 'endstreaming');
        this.dispatchEvent(new Event(on ? 'startstreaming' : 'endstreaming'));
      };
      this.addEventListener('sourceopen', () => {
        setTimeout(() => set(true), 400);
        setTimeout(() => set(false), 2000);
        setTimeout(() => set(true), 3000);
      }, { once: true });
    }
    addSourceBuffer(type) {
      const sb = super.addSourceBuffer(type);
      const append = sb.appendBuffer.bind(sb);
      sb.appendBuffer = (data) => {
        window.mmsLog.appends++;
        if (!this.streaming) window.mmsLog.appendsWhileNotStreaming++;
        return append(data);
      };
      return sb;
    }
  };`;

/** A browser with no MediaSource of any kind. */
const NO_MEDIA_SOURCE = `
  delete window.MediaSource;
  delete window.ManagedMediaSource;
  delete window.WebKitMediaSource;`;

/**
 * One buffered range and no hole skipped: each fragment landed right after the last
 * (without mp4-gaps.js, MSE dropped the video of whole fragments at random).
 */
async function assertNoHoles(page) {
  const media = await page.evaluate(() => ({
    ranges: document.getElementById('video').buffered.length,
    holes: window.blobcastViewer.log.filter((l) => /^hole at/.test(l.text)).map((l) => l.text),
  }));
  assert.deepEqual(media, { ranges: 1, holes: [] }, `${page.label}: the MP4 fragments are laid end to end`);
}

export function mp4Tests(test, ctx) {
  test('mp4: the recorder page picks MP4 where it is all there is; an mse viewer joins mid-generation (join=live) and plays within 1 s; a blob viewer plays across two restarts with nothing blank', async () => {
    const stream = 'mp4';
    const opened = [];
    try {
      // The blob viewer first: it sees every generation switch from the start.
      const blob = await ctx.open(ctx.viewerUrl(stream, 'blob'), 'mp4 blob viewer');
      opened.push(blob);
      await ctx.sampleWhatIsSeen(blob);
      // No mime asked for (PATTERN's VP8 taken out): the page decides.
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, mime: '', restart: 5 }), 'MP4-only recorder', MP4_ONLY);
      opened.push(rec);
      await blob.bringToFront(); // frames are composited in the front tab only
      const started = await ctx.waitLive(rec);
      assert.match(started.mime, /^video\/mp4;codecs=avc1\.[0-9a-f]{6},opus$/i, 'the page recorded MP4');
      const formats = await rec.evaluate(() => ({
        text: document.getElementById('formats').textContent,
        options: [...document.querySelectorAll('#mimes option')].map((o) => o.value),
      }));
      assert.ok(formats.options.length > 0 && formats.options.every((m) => m.startsWith('video/mp4')), `the format list: ${formats.options}`);
      assert.match(formats.text, /records MP4 \(H\.264 \+ Opus\)/);
      assert.doesNotMatch(formats.text, /WebM/);
      const info = await (await fetch(`${ctx.server.url}/api/streams/${stream}`)).json();
      assert.equal(info.media?.container, 'mp4', JSON.stringify(info));

      // The mse viewer: 2-3.5 s into a generation (keyframes every 1 s), so the newest
      // sync-led fragment is past the first one and a live join must jump.
      await waitUntil(rec, () => {
        const age = Date.now() - window.blobcastRecorder.generation;
        return age >= 2000 && age <= 3500;
      }, null, 10000, 'a generation 2-3.5 s old');
      const mse = await ctx.open(ctx.viewerUrl(stream, 'mse'), 'mp4 mse viewer joining mid-generation');
      opened.push(mse);
      await waitUntil(mse, () => window.blobcastViewer.viewer.firstPlayingAt && window.blobcastViewer.framesDecoded() > 0, null, 8000, 'playing');
      const join = await mse.evaluate(() => {
        const v = window.blobcastViewer.viewer;
        return { hello: v.conn.hellos.find((h) => h.live), jumps: v.reassembler.jumps, helloAt: v.liveHelloAt, playingAt: v.firstPlayingAt, mode: v.mode, mime: v.mime };
      });
      const toPlay = join.playingAt - join.helloAt;
      console.log(`     mp4 mse viewer: join "${join.hello.join}", ${join.jumps.length} jump(s), playing ${toPlay} ms after the hello`);
      assert.equal(join.mode, 'mse');
      assert.match(join.mime, /^video\/mp4/);
      assert.equal(join.hello.join, 'live', 'the server joined the viewer at the live edge');
      assert.equal(join.jumps.length, 1, 'one jump to the newest sync-led fragment');
      assert.ok(join.jumps[0].to > join.jumps[0].from, 'the jump goes forward');
      assert.ok(toPlay <= 1000, `playing ${toPlay} ms after joining`);
      await assertPlays(mse, { ms: 2500, fps: 'source' });
      await assertNoHoles(mse);

      // The blob viewer: two generation switches (not the first join) played through.
      await waitUntil(blob, () => {
        const done = window.blobcastViewer.switches.filter((s) => s.kind === 'generation' && s.from !== null && s.presentedAt);
        return done.length >= 2 && Date.now() > done[1].presentedAt + 1000;
      }, null, 25000, 'two generation switches played through');
      const { switches, samples } = await blob.evaluate(() => ({
        switches: window.blobcastViewer.switches.filter((s) => s.kind === 'generation' && s.from !== null),
        samples: window.samples,
      }));
      assert.equal((await viewerState(blob)).mode, 'blob');
      for (const sw of switches.slice(0, 2)) assert.ok(sw.overlayShown, `poster not shown at the switch to generation ${sw.generation}`);
      const from = switches[0].at - 1000;
      const watched = samples.filter((s) => s.t >= from);
      assert.ok(watched.length >= 100, `${watched.length} samples`);
      for (const s of watched) {
        assert.ok(s.seen.lit > 0.6 && s.seen.sd > 12, `blank-looking picture ${s.t - switches[0].at} ms from the first switch (poster ${s.posterShown ? 'shown' : 'hidden'}): ${JSON.stringify(s.seen)}`);
      }
      await assertPlays(blob, { ms: 2500, fps: 'source' });
      assert.equal((await recorderState(rec)).state, 'live');
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('mp4 on iPhones: ManagedMediaSource (a stand-in) is used and fed only while it streams; with no MediaSource, blob mode and a note', async () => {
    const stream = 'mp4-nomse';
    const opened = [];
    try {
      const rec = await ctx.open(recorderUrl(ctx.server.url, { stream, ...ctx.PATTERN, mime: 'video/mp4;codecs=avc1.42E01E,opus', restart: 60 }), 'MP4 recorder');
      opened.push(rec);
      await ctx.waitLive(rec);
      const viewer = await ctx.open(ctx.viewerUrl(stream), 'viewer without MediaSource (auto mode)', NO_MEDIA_SOURCE);
      opened.push(viewer);
      await ctx.waitFrames(viewer);
      const s = await viewerState(viewer);
      assert.equal(s.mode, 'blob');
      assert.equal(s.hello.join, 'start', 'blob mode asks for the whole generation from the first join');
      assert.ok(await viewer.isVisible('#notice'), 'the note is shown');
      assert.match(await viewer.textContent('#notice'), /no MediaSource.*blob mode/);
      await assertPlays(viewer, { ms: 2500, fps: 'source' });

      const managed = await ctx.open(ctx.viewerUrl(stream), 'viewer with a ManagedMediaSource', MANAGED_MEDIA_SOURCE);
      opened.push(managed);
      await ctx.waitFrames(managed);
      await waitUntil(managed, () => window.mmsLog.events.length >= 3, null, 8000, 'start, end and start of streaming');
      const m = await managed.evaluate(() => ({
        log: window.mmsLog,
        source: window.blobcastViewer.mediaSource,
        remote: document.getElementById('video').disableRemotePlayback,
        notice: window.blobcastViewer.notice ?? null,
      }));
      assert.equal(m.source, 'ManagedMediaSource');
      assert.equal(m.remote, true, 'disableRemotePlayback is set');
      assert.equal(m.notice, null);
      assert.ok(m.log.appends > 3, `${m.log.appends} appends`);
      assert.equal(m.log.appendsWhileNotStreaming, 0, `appends while the ManagedMediaSource did not want data: ${JSON.stringify(m.log)}`);
      // Playing on once the data flows again (what was held back arrives in a burst).
      await sleep(1500);
      await assertPlays(managed, { ms: 2000, fps: 'source' });
      await assertNoHoles(managed);
    } finally {
      await ctx.closeAll(opened);
    }
  });

  test('mp4: the recordings page plays an MP4 session spliced from restarts, and seeks to its middle', async () => {
    const opened = [];
    try {
      const entry = await recordSession(ctx, 'mp4-recorded', opened, 'video/mp4;codecs=avc1.42E01E,opus');
      assert.match(entry.file ?? entry.id, /\.mp4$/, `an MP4 file: ${JSON.stringify(entry)}`);
      const page = await ctx.open(`${ctx.server.url}/recordings`, 'recordings page (MP4)');
      opened.push(page);
      await checkRecordingsPage(page, entry, 150);
    } finally {
      await ctx.closeAll(opened);
    }
  });
}
