// Node-side checks of the pages' pure modules (public/js/reassembly.js, webm.js, mp4.js,
// mp4-gaps.js, playback-choice.js, record-formats.js, testpattern.js clock cells,
// live-edge.js, diagnostics.js formatting): the reassembly rules of docs/protocol.md,
// frame by frame, and the MSE viewer's live-edge decisions, tick by tick.
// run.mjs runs them first; `node integration/browser/unit.mjs` runs them alone.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export async function unitTests(root, test) {
  const js = (name) => import(pathToFileURL(join(root, 'public/js', name)).href);
  const { encodeFrame, decodeFrame, describeClose } = await js('protocol.js');
  const { Reassembler } = await js('reassembly.js');
  const { WebmScanner } = await js('webm.js');
  const { Mp4Scanner } = await js('mp4.js');
  const { containerOfBytes, scannerFor, mimeFromHeader } = await js('media-scanner.js');
  const { clockBits, decodeClock, clockStrip } = await js('testpattern.js');
  const { steerToLiveEdge, freshLiveEdgeMemory, mseTargetLag, arrivalEnvelope, waitIsShortage, MIN_RATE, MAX_RATE } = await js('live-edge.js');
  const { KeyframeClusters } = await js('keyframe-clusters.js');
  const { chunkTimeFor, LATENCY_PRESETS } = await js('publisher.js');

  const bytes = (from, to) => Uint8Array.from({ length: to - from }, (_, i) => (from + i) % 251);
  const frame = (g, from, to) => encodeFrame(g, from, bytes(from, to));
  const joined = (r) => {
    const out = [];
    for (const p of r.pieces) out.push(...p.bytes);
    return Uint8Array.from(out);
  };

  test('unit: frame header round-trips with 13-digit generations', () => {
    const f = encodeFrame(1732250000123, 987654, new Uint8Array([1, 2, 3]));
    assert.equal(f.length, 19);
    const d = decodeFrame(f.buffer);
    assert.equal(d.generation, 1732250000123);
    assert.equal(d.offset, 987654);
    assert.deepEqual([...d.payload], [1, 2, 3]);
    assert.equal(decodeFrame(new Uint8Array(15)), null);
    assert.match(describeClose(4401, 'wrong or missing publish key (?key=)').text, /publish key/);
    assert.equal(describeClose(4409, '').retry, false);
  });

  test('unit: diagnostics panel formats ranges, sockets, dropped frames and the last 20 log lines', async () => {
    const { rangesText, socketState, droppedFramesText, logLines } = await js('diagnostics.js');
    const ranges = (pairs) => ({ length: pairs.length, start: (i) => pairs[i][0], end: (i) => pairs[i][1] });
    assert.equal(rangesText(ranges([[0, 1.234], [2, 5.5]])), '0.00-1.23 2.00-5.50');
    assert.equal(rangesText(ranges([])), 'none');
    assert.deepEqual([null, { readyState: 0 }, { readyState: 1 }, { readyState: 3 }].map(socketState), ['none', 'connecting', 'open', 'closed']);
    assert.equal(droppedFramesText({ getVideoPlaybackQuality: () => ({ droppedVideoFrames: 2, totalVideoFrames: 90 }) }), '2 dropped of 90');
    assert.match(droppedFramesText({}), /not reported/);
    const log = Array.from({ length: 30 }, (_, i) => ({ t: Date.UTC(2026, 0, 1, 12, 0, i), text: `line ${i}` }));
    const lines = logLines(log);
    assert.equal(lines.length, 20);
    assert.equal(lines[0], '12:00:10.000 line 10');
    assert.equal(lines[19], '12:00:29.000 line 29');
  });

  test('unit: reassembly joins snapshot and chunk socket without gap or duplicate', () => {
    const r = new Reassembler();
    const G = 1000;
    // The chunk socket opened when the buffer had 300 bytes: it sees (G,300..) first.
    assert.equal(r.push(frame(G, 300, 400), false), 'held'); // no blob yet
    assert.equal(r.push(frame(G, 0, 100), true), 'start');
    assert.equal(r.length, 100);
    assert.equal(r.push(frame(G, 100, 300), true), 'appended'); // snapshot; then the held one drains
    assert.equal(r.length, 400);
    assert.equal(r.push(frame(G, 300, 400), true), 'dropped'); // snapshot repeats it
    assert.equal(r.push(frame(G, 350, 450), false), 'partial'); // overlapping cut
    assert.equal(r.length, 450);
    assert.equal(r.push(frame(G, 500, 600), false), 'held'); // a gap
    assert.equal(r.length, 450);
    assert.equal(r.push(frame(G, 450, 500), false), 'appended'); // fills it; 500.. drains
    assert.equal(r.length, 600);
    assert.deepEqual(joined(r), bytes(0, 600));
  });

  test('unit: reassembly switches generations only on a blob-socket (G,0)', () => {
    const r = new Reassembler();
    r.push(frame(5, 0, 50), true);
    assert.equal(r.push(frame(7, 40, 60), false), 'held'); // newer, no blob yet
    assert.equal(r.push(frame(7, 0, 40), false), 'held'); // (G,0) from the chunk socket does not start
    assert.equal(r.generation, 5);
    assert.equal(r.push(frame(3, 50, 60), false), 'dropped'); // older
    assert.equal(r.push(frame(5, 50, 70), false), 'appended'); // old generation's tail
    assert.equal(r.push(frame(7, 0, 40), true), 'start');
    assert.equal(r.generation, 7);
    assert.equal(r.length, 60);
    assert.deepEqual(joined(r), bytes(0, 60));
    assert.equal(r.push(frame(5, 70, 80), false), 'dropped');
    // Any other generation's blob starts it, even a smaller number (a new session).
    assert.equal(r.push(frame(2, 0, 10), true), 'start');
    assert.deepEqual(r.resumePoint(), { gen: 2, offset: 10 });
  });

  test('unit: reassembly keeps two publish sessions apart even when both number a generation 1', () => {
    const A = 1732250000000001;
    const B = 1732250000000002;
    const r = new Reassembler();
    assert.equal(r.push(frame(1, 0, 100), true, A), 'start');
    assert.equal(r.push(frame(1, 100, 200), false, A), 'appended');
    assert.deepEqual(r.resumePoint(), { gen: 1, offset: 200, epoch: A });
    // Session B's chunk at offset 200 of "its" generation 1, before its blob: not glued.
    assert.equal(r.push(frame(1, 200, 300), false, B), 'held');
    assert.equal(r.length, 200);
    // A hello for epoch B: what is held is of another session.
    assert.ok(r.newEpoch(B));
    assert.ok(!r.newEpoch(undefined));
    // Session B's blob (1, 0) is a new start, though the number is the one held.
    assert.equal(r.push(frame(1, 0, 200), true, B), 'start');
    assert.equal(r.epoch, B);
    assert.equal(r.length, 300, "B's early chunk joins B's generation, not A's");
    assert.deepEqual(joined(r), bytes(0, 300));
    // A late frame of session A is older: dropped.
    assert.equal(r.push(frame(1, 300, 400), false, A), 'dropped');
    assert.equal(r.push(frame(1, 300, 400), false, B), 'appended');
    // Without the hello's epoch (an older server), nothing changes.
    const plain = new Reassembler();
    plain.push(frame(1, 0, 100), true);
    assert.deepEqual(plain.resumePoint(), { gen: 1, offset: 100 });
    assert.equal(plain.push(frame(1, 100, 150), false), 'appended');
  });

  test('unit: reassembly takes a join=live jump from the init to a keyframe cluster', () => {
    const jumps = [];
    const r = new Reassembler({ onJump: (g, from, to) => jumps.push([g, from, to]) });
    r.expectLiveJoin(9);
    assert.equal(r.push(frame(9, 1000, 1100), false), 'held'); // live chunk before the snapshot
    assert.equal(r.push(frame(9, 0, 200), true), 'start'); // init segment
    assert.equal(r.push(frame(9, 800, 1000), true), 'jump'); // keyframe cluster at 800
    assert.deepEqual(jumps, [[9, 200, 800]]);
    assert.equal(r.length, 1100);
    assert.deepEqual(r.pieces.map((p) => p.offset), [0, 800, 1000]);
    // What blob mode checks before playing what is held: it has a hole, so forget it
    // and take a fresh snapshot (no resume point).
    assert.ok(r.joinedAtLiveEdge);
    r.forget();
    assert.equal(r.resumePoint(), null);
    assert.equal(r.push(frame(9, 0, 200), true), 'start');
    assert.ok(!r.joinedAtLiveEdge, 'a snapshot from the start holds it all');
    // Without the hello's join=live, the same frame is a gap, not a jump.
    const plain = new Reassembler();
    plain.push(frame(9, 0, 200), true);
    assert.equal(plain.push(frame(9, 800, 1000), true), 'held');
    assert.equal(plain.length, 200);
  });

  test('unit: reassembly follows the server when it moves a lagging viewer to a keyframe cluster', () => {
    const jumps = [];
    const r = new Reassembler({ onJump: (g, from, to) => jumps.push([g, from, to]) });
    assert.equal(r.push(frame(4, 0, 200), true), 'start');
    assert.equal(r.push(frame(4, 200, 300), false), 'appended');
    // {"type":"jump"} on the chunk socket, then frames from the keyframe cluster on.
    r.skipTo(null, 4, 900);
    assert.deepEqual(jumps, [[4, 300, 900]]);
    assert.equal(r.push(frame(4, 900, 1000), false), 'appended');
    assert.equal(r.length, 1000);
    // A jump into a generation whose blob has not come yet waits for it.
    r.skipTo(null, 5, 700);
    assert.equal(r.push(frame(5, 700, 800), false), 'held');
    assert.equal(r.push(frame(5, 0, 300), true), 'start');
    assert.deepEqual(jumps.at(-1), [5, 300, 700]);
    assert.equal(r.length, 800, 'the held frame at the jump is taken');
  });

  // A real WebM cut the way MediaRecorder cuts it: anywhere.
  const dir = mkdtempSync(join(tmpdir(), 'blobcast-unit-'));
  try {
    const webm = join(dir, 'clip.webm');
    let clip = null;
    try {
      execFileSync('ffmpeg', ['-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=25', '-f', 'lavfi', '-i', 'sine=f=440', '-t', '3', '-c:v', 'libvpx', '-g', '25', '-c:a', 'libopus', '-live', '1', '-y', webm]);
      if (existsSync(webm)) clip = new Uint8Array(readFileSync(webm));
    } catch {
      clip = null;
    }
    test('unit: WebM scanner follows a clip cut at arbitrary points', () => {
      if (!clip) {
        console.log('    (ffmpeg missing: scanner check skipped)');
        return;
      }
      const reference = new WebmScanner();
      reference.push(clip);
      assert.equal(reference.broken, null);
      assert.deepEqual(reference.codecIds, ['V_VP8', 'A_OPUS']);
      assert.ok(reference.lastTime > 2.8 && reference.lastTime < 3.1, `lastTime ${reference.lastTime}`);
      assert.ok(reference.clusters.length >= 3);
      for (const step of [1, 3, 17, 1000]) {
        const s = new WebmScanner();
        for (let i = 0; i < clip.length; i += step) s.push(clip.subarray(i, i + step));
        assert.equal(s.lastTime, reference.lastTime, `cut every ${step}`);
        assert.deepEqual(s.clusters, reference.clusters);
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // The server's MP4 scanner fixtures (src/mp4/testdata/README.md says how ffmpeg made them).
  const fixture = (name) => new Uint8Array(readFileSync(join(root, 'src/mp4/testdata', name)));
  test('unit: MP4 scanner reads codecs, sizes, fragment keyframes and the newest sample time, whatever the cuts', () => {
    const expected = {
      // A fragment per keyframe: every one opens on a sync sample (tfhd/trun first-sample flags).
      'ffmpeg-h264-aac-frag-keyframe.mp4': { codecs: ['avc1.42C00C', 'mp4a.40.2'], last: [2.9, 3.05], heads: [true, true, true] },
      // Per-sample flags only (trun 0x601): only the first fragment opens on a keyframe.
      'ffmpeg-h264-per-sample-flags.mp4': { codecs: ['avc1.42C00B'], last: [2.9, 2.95], heads: [true, false, false] },
      // A fragment per frame, Opus: audio-only fragments say nothing of keyframes.
      'ffmpeg-h264-opus-every-frame.mp4': { codecs: ['avc1.42C00C', 'opus'], last: [1.9, 2.05], heads: null },
    };
    for (const [name, want] of Object.entries(expected)) {
      const clip = fixture(name);
      const reference = new Mp4Scanner();
      reference.push(clip);
      assert.equal(reference.broken, null, name);
      assert.deepEqual(reference.codecs, want.codecs, name);
      assert.deepEqual([reference.width, reference.height], [160, 120], name);
      assert.equal(reference.firstTime, 0, name);
      assert.ok(reference.lastTime >= want.last[0] && reference.lastTime <= want.last[1], `${name}: lastTime ${reference.lastTime}`);
      if (want.heads) assert.deepEqual(reference.fragments.map((f) => f.keyframe), want.heads, name);
      assert.equal(new TextDecoder().decode(clip.subarray(reference.fragments[0].offset + 4, reference.fragments[0].offset + 8)), 'moof', name);
      assert.equal(mimeFromHeader(clip, 'video/mp4'), `video/mp4;codecs=${want.codecs.join(',')}`);
      for (const step of [1, 5, 333, 4096]) {
        const s = new Mp4Scanner();
        for (let i = 0; i < clip.length; i += step) s.push(clip.subarray(i, i + step));
        assert.equal(s.lastTime, reference.lastTime, `${name} cut every ${step}`);
        assert.deepEqual(s.fragments, reference.fragments, `${name} cut every ${step}`);
        assert.ok(s.buf.length <= 64 * 1024, `${name}: holds ${s.buf.length} bytes (mdat is skipped, not kept)`);
      }
      // A join=live jump: the init, then the bytes from the last fragment on.
      const last = reference.fragments.at(-1);
      const joined = new Mp4Scanner();
      joined.push(clip.subarray(0, reference.fragments[0].offset));
      joined.jumpTo(last.offset);
      joined.push(clip.subarray(last.offset));
      assert.equal(joined.lastTime, reference.lastTime, `${name}: after a jump`);
    }
    assert.equal(containerOfBytes(fixture('ffmpeg-h264-per-sample-flags.mp4')), 'mp4');
    assert.equal(containerOfBytes(Uint8Array.of(0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81)), 'webm');
    assert.ok(scannerFor(fixture('ffmpeg-h264-per-sample-flags.mp4'), 'video/webm') instanceof Mp4Scanner, 'the bytes decide, not the mime');
    assert.ok(scannerFor(new Uint8Array(2), 'video/mp4') instanceof Mp4Scanner, 'the mime where the bytes cannot');
    const garbage = new Mp4Scanner();
    garbage.push(Uint8Array.of(0, 0, 0, 4, 0x66, 0x74, 0x79, 0x70));
    assert.match(garbage.broken, /not an MP4 box/);
  });

  test('unit: MP4 fragments laid end to end for MSE: Chromium\'s 10-70 ms tfdt gaps closed, nothing else changed, whatever the cuts', async () => {
    const { Mp4Gaps } = await js('mp4-gaps.js');
    const run = (clip, step) => {
      const g = new Mp4Gaps();
      const parts = [];
      for (let i = 0; i < clip.length; i += step) parts.push(g.push(clip.subarray(i, i + step)));
      return { out: Uint8Array.from(parts.flatMap((p) => [...p])), closed: g.closed };
    };
    const chrome = new Uint8Array(readFileSync(join(root, 'integration/browser/fixtures/chrome-avc1-opus.mp4')));
    const whole = run(chrome, chrome.length);
    assert.equal(whole.out.length, chrome.length, 'rewritten in place');
    assert.ok(whole.closed.length >= 4, `${whole.closed.length} gaps closed`);
    const scanned = new Mp4Scanner();
    scanned.push(chrome);
    const timescale = (id) => scanned.tracks.get(id).timescale;
    for (const c of whole.closed) assert.ok(c.gap / timescale(c.track) < 0.1, `a gap of ${c.gap / timescale(c.track)} s`);
    // Laid end to end: a second pass finds nothing to close.
    assert.deepEqual(run(whole.out, whole.out.length).closed, []);
    // The media ends where it did; only the fragments' starts moved back.
    const after = new Mp4Scanner();
    after.push(whole.out);
    assert.equal(after.lastTime, scanned.lastTime);
    assert.equal(after.fragments.length, scanned.fragments.length);
    for (const step of [1, 7, 1000]) assert.deepEqual(run(chrome, step).out, whole.out, `cut every ${step}`);
    // ffmpeg's fragments already meet: unchanged.
    for (const name of ['ffmpeg-h264-aac-frag-keyframe.mp4', 'ffmpeg-h264-per-sample-flags.mp4', 'ffmpeg-h264-opus-every-frame.mp4']) {
      const clip = fixture(name);
      const r = run(clip, 333);
      assert.deepEqual(r.closed, [], name);
      assert.deepEqual(r.out, clip, name);
    }
  });

  test('unit: the player choice: ManagedMediaSource first (iPhone, iOS 17.1+), then MediaSource, else blob mode with a note', async () => {
    const { choosePlayback, mayAppend, browserPlayback } = await js('playback-choice.js');
    const H264 = 'video/mp4;codecs=avc1.42E01E,mp4a.40.2';
    const VP8 = 'video/webm;codecs=vp8,opus';
    const browser = (managed, mse, plays = () => true) => ({ managed, mse, managedSupports: plays, mseSupports: plays });
    // iPhone, iOS 17.1+: ManagedMediaSource only.
    assert.deepEqual(choosePlayback({ forced: null, mime: H264, ...browser(true, false) }), { mode: 'mse', source: 'ManagedMediaSource', note: null });
    // Before the hello (mime unknown): plan for it, so the first join asks for the live edge.
    assert.equal(choosePlayback({ forced: null, mime: null, ...browser(true, false) }).source, 'ManagedMediaSource');
    // Safari on a Mac: both; the managed one is preferred.
    assert.equal(choosePlayback({ forced: null, mime: H264, ...browser(true, true) }).source, 'ManagedMediaSource');
    // Chromium, Firefox: MediaSource.
    assert.deepEqual(choosePlayback({ forced: null, mime: VP8, ...browser(false, true) }), { mode: 'mse', source: 'MediaSource', note: null });
    // iPhone before 17.1 (and iPadOS-less WebViews): neither. Blob mode, and words that say why.
    const none = choosePlayback({ forced: null, mime: H264, ...browser(false, false) });
    assert.equal(none.mode, 'blob');
    assert.equal(none.source, null);
    assert.match(none.note, /no MediaSource.*iOS 17\.1.*blob mode/);
    assert.equal(choosePlayback({ forced: null, mime: null, ...browser(false, false) }).mode, 'blob');
    // A MediaSource that cannot play the codecs: blob mode, naming them.
    const refuses = choosePlayback({ forced: null, mime: VP8, ...browser(true, true, (m) => !/vp8/.test(m)) });
    assert.equal(refuses.mode, 'blob');
    assert.match(refuses.note, /cannot play video\/webm;codecs=vp8,opus/);
    // Only the managed one refuses: the plain one plays.
    const mixed = { forced: null, mime: VP8, managed: true, mse: true, managedSupports: () => false, mseSupports: () => true };
    assert.equal(choosePlayback(mixed).source, 'MediaSource');
    // ?mode=blob: blob mode, nothing to explain.
    assert.deepEqual(choosePlayback({ forced: 'blob', mime: H264, ...browser(true, true) }), { mode: 'blob', source: null, note: null });
    // Appends: MediaSource always; ManagedMediaSource only while it wants data.
    assert.equal(mayAppend(false, undefined), true);
    assert.equal(mayAppend(true, true), true);
    assert.equal(mayAppend(true, false), false);
    assert.equal(mayAppend(true, undefined), true);
    // What a window has.
    class MMS {
      static isTypeSupported(m) {
        return /mp4/.test(m);
      }
    }
    const have = browserPlayback({ ManagedMediaSource: MMS });
    assert.deepEqual([have.managed, have.mse, have.managedSupports(H264), have.managedSupports(VP8), have.mseSupports(H264)], [true, false, true, false, false]);
  });

  test('unit: the recorder picks MP4 where the browser prefers it or has nothing else, else WebM; the format list says what it records', async () => {
    const { pickMime, supportedMimes, describeFormats } = await js('record-formats.js');
    const chromium = (m) => ['video/webm;codecs=vp9,opus', 'video/webm;codecs=vp8,opus', 'video/webm;codecs=h264,opus', 'video/mp4;codecs=avc1.42E01E,opus', 'video/mp4'].includes(m);
    const firefox = (m) => m === 'video/webm;codecs=vp8,opus';
    const safariOld = (m) => ['video/mp4;codecs=avc1,mp4a.40.2', 'video/mp4'].includes(m);
    const safari184 = (m) => safariOld(m) || m === 'video/webm;codecs=vp8,opus';
    assert.equal(pickMime('', chromium, 'video/webm;codecs=vp8'), 'video/webm;codecs=vp9,opus');
    assert.equal(pickMime('', chromium, ''), 'video/webm;codecs=vp9,opus', 'preference unknown: WebM');
    assert.equal(pickMime('', chromium, 'video/mp4;codecs=avc1'), 'video/mp4;codecs=avc1.42E01E,opus', 'a browser that prefers MP4 gets MP4');
    assert.equal(pickMime('', firefox, 'video/webm'), 'video/webm;codecs=vp8,opus');
    assert.equal(pickMime('', safariOld, ''), 'video/mp4;codecs=avc1,mp4a.40.2', 'MP4 when it is all there is');
    assert.equal(pickMime('', safari184, 'video/mp4'), 'video/mp4;codecs=avc1,mp4a.40.2', 'Safari 18.4 records WebM too, but prefers MP4');
    assert.equal(pickMime('video/mp4;codecs=avc1.42E01E,opus', chromium), 'video/mp4;codecs=avc1.42E01E,opus');
    assert.equal(pickMime('video/mp4;codecs=avc1.42E01E,opus', firefox), null, 'asked for what it cannot record');
    assert.equal(pickMime('', () => false), null);
    assert.deepEqual(supportedMimes(safariOld), ['video/mp4;codecs=avc1,mp4a.40.2', 'video/mp4']);
    assert.equal(describeFormats(supportedMimes(chromium)), 'WebM (VP9, VP8, H.264) and MP4 (H.264 + Opus)');
    assert.equal(describeFormats(supportedMimes(safariOld)), 'MP4 (H.264 + AAC)');
    assert.equal(describeFormats(supportedMimes(firefox)), 'WebM (VP8)');
  });

  // A WebM laid out the way MediaRecorder lays it out: clusters (of unknown size) that
  // do not open with a keyframe, SimpleBlocks and a BlockGroup.
  const ebml = (id, body, unknown = false) => {
    const idBytes = [];
    for (let v = id; v > 0; v = Math.floor(v / 256)) idBytes.unshift(v % 256);
    const size = unknown ? [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : [0x40 | (body.length >> 8), body.length & 0xff];
    return [...idBytes, ...size, ...body];
  };
  const simpleBlock = (track, tc, key, n = 20) => ebml(0xa3, [0x80 | track, (tc >> 8) & 0xff, tc & 0xff, key ? 0x80 : 0, ...Array(n).fill(track * 16 + 1)]);
  const blockGroup = (track, tc, key) => ebml(0xa0, [...ebml(0xa1, [0x80 | track, (tc >> 8) & 0xff, tc & 0xff, 0, ...Array(30).fill(7)]), ...(key ? [] : ebml(0xfb, [0xff]))]);
  /** [(track, absolute time, keyframe)] of every block in a WebM, and each cluster's first video block. */
  const blocksOf = (bytes) => {
    const out = { blocks: [], clusterHeads: [] };
    const vint = (i) => {
      let len = 1;
      while (!(bytes[i] & (0x80 >> (len - 1)))) len++;
      let v = bytes[i] & (0xff >> len);
      let ones = v === 0xff >> len;
      for (let k = 1; k < len; k++) {
        v = v * 256 + bytes[i + k];
        if (bytes[i + k] !== 0xff) ones = false;
      }
      return { len, v, unknown: ones };
    };
    let i = 0;
    let clusterTc = 0;
    let newCluster = false;
    const ids = (i) => { const l = vint(i).len; let v = 0; for (let k = 0; k < l; k++) v = v * 256 + bytes[i + k]; return { l, v }; };
    while (i < bytes.length) {
      const id = ids(i);
      const size = vint(i + id.l);
      const body = i + id.l + size.len;
      if ([0x18538067, 0x1f43b675].includes(id.v)) {
        if (id.v === 0x1f43b675) newCluster = true;
        i = body;
        continue;
      }
      const end = body + size.v;
      if (id.v === 0xe7) clusterTc = bytes.subarray(body, end).reduce((a, b) => a * 256 + b, 0);
      if (id.v === 0xa3 || id.v === 0xa0) {
        const b = id.v === 0xa3 ? body : body + ids(body).l + vint(body + ids(body).l).len;
        const track = bytes[b] & 0x7f;
        const rel = ((bytes[b + 1] << 24) >> 16) | bytes[b + 2];
        const key = id.v === 0xa3 ? (bytes[b + 3] & 0x80) !== 0 : !bytes.subarray(body, end).includes(0xfb);
        out.blocks.push([track, clusterTc + rel, key]);
        if (newCluster && track === 1) {
          out.clusterHeads.push(key);
          newCluster = false;
        }
      }
      i = end;
    }
    return out;
  };

  test('unit: WebM re-cut so that every cluster opens with a video keyframe (Firefox MSE)', () => {
    const header = [
      ...ebml(0x1a45dfa3, ebml(0x4282, [...Buffer.from('webm')])),
      ...ebml(0x18538067, [], true),
      ...ebml(0x1654ae6b, [...ebml(0xae, [...ebml(0xd7, [1]), ...ebml(0x83, [1])]), ...ebml(0xae, [...ebml(0xd7, [2]), ...ebml(0x83, [2])])]),
    ];
    const cluster = (tc, blocks) => [...ebml(0x1f43b675, [], true), ...ebml(0xe7, [tc >> 8, tc & 0xff]), ...blocks.flat()];
    const input = Uint8Array.from([
      ...header,
      ...cluster(0, [simpleBlock(1, 0, true), simpleBlock(2, 10, false), blockGroup(1, 40, false)]),
      ...cluster(80, [simpleBlock(1, 0, false), simpleBlock(2, 5, false), simpleBlock(1, 40, true), ebml(0xec, [0, 0])]),
      ...cluster(200, [simpleBlock(2, 0, false), blockGroup(1, 20, false), blockGroup(1, 60, true)]),
      ...cluster(300, [simpleBlock(1, 0, false), simpleBlock(2, 30, false)]),
    ]);
    const before = blocksOf(input);
    assert.deepEqual(before.clusterHeads, [true, false, false, false], 'the input: clusters that open with inter frames');
    for (const step of [1, 7, 64, input.length]) {
      const k = new KeyframeClusters();
      const parts = [];
      for (let i = 0; i < input.length; i += step) parts.push(...k.push(input.subarray(i, i + step)));
      const after = blocksOf(Uint8Array.from(parts));
      assert.deepEqual(after.blocks, before.blocks, `every block at its time (pieces of ${step})`);
      assert.deepEqual(after.clusterHeads, [true, true, true], `a cluster at each keyframe, none elsewhere (pieces of ${step})`);
    }
    // Bytes out of step pass through untouched from there on.
    const k = new KeyframeClusters();
    k.push(Uint8Array.from(header));
    const junk = new Uint8Array(64).fill(0);
    assert.deepEqual([...k.push(junk)], [...junk]);
  });

  test('unit: clock cells encode and decode Date.now()', () => {
    const w = 320;
    const h = 240;
    const ms = 1795316720661;
    const { cell, x0, y0 } = clockStrip(w, h);
    const data = new Uint8ClampedArray(w * h * 4).fill(128);
    const bits = clockBits(ms);
    bits.forEach((b, i) => {
      const col = i % 24;
      const row = Math.floor(i / 24);
      for (let y = y0 + row * cell; y < y0 + (row + 1) * cell; y++) {
        for (let x = x0 + col * cell; x < x0 + (col + 1) * cell; x++) {
          data.fill(b ? 255 : 0, (y * w + x) * 4, (y * w + x) * 4 + 3);
        }
      }
    });
    assert.equal(decodeClock({ width: w, height: h, data }), ms);
    data.fill(128);
    assert.equal(decodeClock({ width: w, height: h, data }), null);
  });

  // ---- live-edge controller ----
  // A 0.3 s chunk interval: the target lag (the sawtooth's peak) is 0.59 s, its average
  // on target 0.44 s, and "far behind" starts at 1.89 s.
  const CHUNK = 0.3;
  const TARGET = mseTargetLag(CHUNK);
  const ON_TARGET = TARGET - CHUNK / 2;
  const tick = (over = {}) => ({
    ranges: [[0, 10]],
    currentTime: 10 - ON_TARGET,
    paused: false,
    seeking: false,
    readyState: 4,
    userPaused: false,
    chunkInterval: CHUNK,
    chunkIntervalKnown: true,
    frames: { decoded: 100, hasPicture: true, visible: true },
    ...over,
  });
  /** A controller past its join, its chunk interval long known. */
  const settled = (over = {}) => ({ ...freshLiveEdgeMemory(), joined: true, sawKnownInterval: true, ...over });
  const near = (a, b) => Math.abs(a - b) < 1e-9;

  test('unit: live edge: target lag follows the chunk interval, never under 0.3 s', () => {
    assert.ok(near(mseTargetLag(1), 1.5));
    assert.ok(near(TARGET, 0.59));
    assert.equal(mseTargetLag(0.01), 0.3);
  });

  test('unit: live edge: nothing buffered, nothing to do', () => {
    const memory = freshLiveEdgeMemory();
    const d = steerToLiveEdge(tick({ ranges: [], paused: true }), memory);
    assert.deepEqual({ ...d, memory: null }, { seekTo: null, rate: null, play: false, note: null, memory: null });
    assert.equal(d.memory, memory);
  });

  test('unit: live edge: the join seeks one target lag behind the newest media', () => {
    const memory = freshLiveEdgeMemory();
    const d = steerToLiveEdge(tick({ currentTime: 0, paused: true }), memory);
    assert.ok(near(d.seekTo, 10 - TARGET));
    assert.equal(d.rate, null);
    assert.ok(d.play, 'paused by the browser, not by the user: play');
    assert.match(d.note, /^join: seek to 9\.41/);
    assert.equal(d.memory.joined, true);
    assert.equal(d.memory.lastPlayhead, null, 'a seek breaks the line from the last playhead');
    assert.equal(memory.joined, false, 'the memory passed in is left alone');
    // Never before the start of the newest range.
    const short = steerToLiveEdge(tick({ ranges: [[0, 4], [9.8, 10]], currentTime: 0 }), memory);
    assert.equal(short.seekTo, 9.8);
  });

  test('unit: live edge: on target, playing at rate 1 is all', () => {
    const d = steerToLiveEdge(tick(), settled());
    assert.equal(d.seekTo, null);
    assert.equal(d.rate, 1.0);
    assert.equal(d.play, false);
    assert.equal(d.note, null);
    assert.ok(near(d.memory.lagAvg, ON_TARGET));
    assert.equal(d.memory.lastPlayhead, 10 - ON_TARGET);
    // At the very edge, out of buffered media, waiting for the next chunk: no seek.
    const edge = steerToLiveEdge(tick({ currentTime: 10 }), settled({ lagAvg: ON_TARGET }));
    assert.equal(edge.seekTo, null);
  });

  test('unit: live edge: a little behind speeds up, too close slows down', () => {
    const rate = (lag, over = {}) => steerToLiveEdge(tick({ currentTime: 10 - lag, ...over }), settled()).rate;
    assert.equal(rate(ON_TARGET + 0.05), 1.0);
    assert.equal(rate(ON_TARGET + 0.2), 1.05);
    assert.equal(rate(ON_TARGET + 0.8), 1.1);
    assert.equal(rate(ON_TARGET - 0.3), 0.97);
    assert.equal(rate(ON_TARGET - 0.3, { readyState: 2 }), 1.0, 'not while it has no data ahead');
    // The lag is smoothed: one tick far off the average moves it a fifth of the way.
    const d = steerToLiveEdge(tick({ currentTime: 10 - (ON_TARGET + 1) }), settled({ lagAvg: ON_TARGET }));
    assert.ok(near(d.memory.lagAvg, ON_TARGET + 0.2));
    assert.equal(d.rate, 1.05);
  });

  test('unit: live edge: far behind seeks to the edge instead of a long fast-forward', () => {
    const d = steerToLiveEdge(tick({ currentTime: 5 }), settled());
    assert.ok(near(d.seekTo, 10 - TARGET));
    assert.equal(d.rate, null);
    assert.match(d.note, /^far behind \(5\.00 s, target 0\.59\)/);
    assert.equal(d.memory.lagAvg, null);
    // Behind, but its smoothed lag not yet: speed up for now.
    const fresh = steerToLiveEdge(tick({ currentTime: 5 }), settled({ lagAvg: ON_TARGET }));
    assert.equal(fresh.seekTo, null);
    assert.equal(fresh.rate, 1.1);
  });

  test('unit: live edge: the first measured chunk interval corrects the join once', () => {
    // Joined while 1 s was assumed: 1.5 s behind, where 0.44 s would do.
    const memory = { ...freshLiveEdgeMemory(), joined: true };
    const unknown = steerToLiveEdge(tick({ currentTime: 8.5, chunkIntervalKnown: false }), memory);
    assert.equal(unknown.seekTo, null, 'not before the interval is known');
    assert.equal(unknown.memory.sawKnownInterval, false);
    const known = steerToLiveEdge(tick({ currentTime: 8.5 }), memory);
    assert.ok(near(known.seekTo, 10 - TARGET));
    assert.equal(known.memory.sawKnownInterval, true);
    const later = steerToLiveEdge(tick({ currentTime: 8.5 }), known.memory);
    assert.equal(later.seekTo, null, 'only once');
    assert.equal(later.rate, 1.1);
  });

  test('unit: live edge: a hole between buffered ranges is skipped', () => {
    const ranges = [[0, 9], [9.2, 10]];
    const d = steerToLiveEdge(tick({ ranges, currentTime: 9.05 }), settled());
    assert.ok(near(d.seekTo, 10 - TARGET), 'on to the target, in the next range');
    assert.match(d.note, /^hole at 9\.05: seek to 9\.41/);
    assert.equal(d.rate, null);
    // A short next range: into it, just before its end.
    const short = steerToLiveEdge(tick({ ranges: [[0, 9], [9.1, 9.2], [9.3, 10]], currentTime: 9.05 }), settled());
    assert.ok(near(short.seekTo, 9.15));
    // Not while a seek is under way: steering only.
    const seeking = steerToLiveEdge(tick({ ranges, currentTime: 9.05, seeking: true }), settled());
    assert.equal(seeking.seekTo, null);
    assert.equal(seeking.rate, 1.1);
  });

  test('unit: live edge: paused with the Pause button, nothing moves', () => {
    const d = steerToLiveEdge(tick({ currentTime: 2, paused: true, userPaused: true }), settled());
    assert.deepEqual([d.seekTo, d.rate, d.play, d.note], [null, null, false, null]);
    // Paused by the browser (a src change, autoplay rules): steer, and resume.
    const browser = steerToLiveEdge(tick({ paused: true }), settled());
    assert.equal(browser.rate, 1.0);
    assert.equal(browser.play, true);
    // ... unless right at the edge, with nothing to play.
    assert.equal(steerToLiveEdge(tick({ paused: true, currentTime: 9.95 }), settled()).play, false);
  });

  test('unit: live edge: playing across a gap in the video re-seeks where it is', () => {
    const ranges = [[0, 9], [9.3, 10]];
    const d = steerToLiveEdge(tick({ ranges, currentTime: 9.4 }), settled({ lastPlayhead: 8.9 }));
    assert.equal(d.seekTo, 9.4);
    assert.match(d.note, /^played across a gap \(8\.90 -> 9\.30\): re-seek at 9\.40/);
    // Within one range, with no previous playhead (a seek came between), or paused:
    // steering only.
    const steered = (over, memory) => steerToLiveEdge(tick({ ranges, currentTime: 9.4, ...over }), settled(memory));
    assert.deepEqual([steered({}, { lastPlayhead: 9.35 }).seekTo, steered({}, { lastPlayhead: 9.35 }).rate], [null, 1.05]);
    assert.equal(steered({}, {}).seekTo, null);
    assert.equal(steered({ paused: true }, { lastPlayhead: 8.9 }).seekTo, null);
  });

  test('unit: live edge: a picture frozen while the audio plays on is re-seeked', () => {
    // Ticks every 0.25 s, the newest media always on target ahead.
    const run = (frameCounts, frames = {}) => {
      let memory = settled();
      const decisions = frameCounts.map((decoded, i) => {
        const t = 1 + i * 0.25;
        const d = steerToLiveEdge(
          tick({ ranges: [[0, t + ON_TARGET]], currentTime: t, frames: { decoded, hasPicture: true, visible: true, ...frames } }),
          memory,
        );
        memory = d.memory;
        return d;
      });
      return decisions;
    };
    // 20 fps, then no new frame: frozen 0.25, 0.5, then 0.75 s > 0.6 s.
    const frozen = run([10, 15, 20, 20, 20, 20]);
    assert.deepEqual(frozen.map((d) => d.seekTo), [null, null, null, null, null, 2.25]);
    assert.match(frozen[5].note, /^video frozen for 0\.75 s of playback: re-seek at 2\.25/);
    // A source too slow to have shown five frames yet (a still screen share): no seek.
    assert.ok(run([10, 11, 12, 12, 12, 12, 12, 12]).every((d) => d.seekTo === null));
    // A hidden tab, where Chrome may turn the video track off: no seek either.
    assert.ok(run([10, 15, 20, 20, 20, 20], { visible: false }).every((d) => d.seekTo === null));
  });

  test('unit: live edge: waiting with data ahead and no frame decoded (Chrome\'s stuck decoder) is re-seeked where it stands', () => {
    // Looks at now = 100, 100.1, 100.25, ...: playback waiting (readyState 2) at t = 9.3.
    const run = (looks, memory = settled()) =>
      looks.map(({ at, decoded = 50, end = 9.7, t = 9.3, readyState = 2, visible = true }) => {
        const d = steerToLiveEdge(tick({ ranges: [[0, end]], currentTime: t, readyState, now: 100 + at, frames: { decoded, hasPicture: true, visible } }), memory);
        memory = d.memory;
        return d;
      });
    // 0.4 s buffered ahead, no new frame: nothing at first, a seek to 9.3 once 0.2 s have passed.
    const stuck = run([{ at: 0 }, { at: 0.1 }, { at: 0.25 }]);
    assert.deepEqual(stuck.map((d) => d.seekTo), [null, null, 9.3]);
    assert.match(stuck[2].note, /^waiting with 0\.40 s buffered: re-seek at 9\.30/);
    // The decoder at work (a frame decoded meanwhile): an ordinary wait, left to the browser.
    assert.ok(run([{ at: 0 }, { at: 0.1, decoded: 51 }, { at: 0.25, decoded: 52 }, { at: 0.4, decoded: 53 }]).every((d) => d.seekTo === null));
    // Out of data (Chrome waits with 3-4 frames ahead): left to the browser.
    assert.ok(run([{ at: 0, end: 9.45 }, { at: 0.25, end: 9.45 }, { at: 0.5, end: 9.5 }]).every((d) => d.seekTo === null));
    // Playing, or a hidden tab (Chrome may turn its video track off): nothing either.
    assert.ok(run([{ at: 0, readyState: 4 }, { at: 0.25, readyState: 4 }]).every((d) => d.seekTo === null));
    assert.ok(run([{ at: 0, visible: false }, { at: 0.25, visible: false }]).every((d) => d.seekTo === null));
    // Not again within a second of the last nudge; after that, yes.
    const again = run([{ at: 0 }, { at: 0.25 }, { at: 0.5 }, { at: 0.8 }, { at: 1.1 }, { at: 1.3 }]);
    assert.deepEqual(again.map((d) => d.seekTo), [null, 9.3, null, null, null, 9.3]);
    // Only a wait with little ahead is the data running short (and widens the margin):
    // 3-4 frames at 20 fps is; 0.4 s is not, unless the frames are 0.1 s apart.
    assert.equal(waitIsShortage(0.18, settled({ frameInterval: 0.05 })), true);
    assert.equal(waitIsShortage(0.4, settled({ frameInterval: 0.05 })), false);
    assert.equal(waitIsShortage(0.3, settled({ frameInterval: 0.1 })), true);
  });

  test('unit: recorder latency presets set the chunk time; without one, chunk_time rules', () => {
    assert.equal(chunkTimeFor({ latency: 'low', chunk_time: '1000' }), 100);
    assert.equal(chunkTimeFor({ latency: 'normal', chunk_time: '1000' }), 250);
    assert.equal(LATENCY_PRESETS.lowest, 50);
    assert.equal(chunkTimeFor({ latency: '', chunk_time: '500' }), 500);
    assert.equal(chunkTimeFor({ latency: 'nonsense', chunk_time: '' }), 1000);
    assert.equal(chunkTimeFor({ latency: '', chunk_time: '3' }), 10);
  });

  // ---- adaptive live edge: steering on measured arrivals ----
  /**
   * Arrivals every `every` s for 8 s up to wall time `now`, each bringing `every` s of
   * media and made playable `delay(i)` s late (media end = wall - 0.1 at no delay).
   */
  const arrivalsAt = (now, every, delay = () => 0) => {
    const out = [];
    const n = Math.round(8 / every);
    for (let i = 0; i < n; i++) {
      const nominal = now - (n - 1 - i) * every;
      out.push({ wall: nominal + delay(i), end: nominal - 0.1 });
    }
    // Delays keep their order: a late arrival holds back the next ones.
    for (let i = 1; i < out.length; i++) out[i].wall = Math.max(out[i].wall, out[i - 1].wall);
    return out;
  };
  /** A seeded pseudo-random sequence in [0, 1): reproducible jitter. */
  const seeded = (seed) => () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const NOW = 100;

  test('unit: live edge: the envelope is measured from arrivals, not from the chunk interval', () => {
    assert.equal(arrivalEnvelope(arrivalsAt(NOW, 0.1).slice(-5), NOW), null, 'too few arrivals');
    const even = arrivalEnvelope(arrivalsAt(NOW, 0.1), NOW);
    assert.ok(Math.abs(even.spread - 0.1) < 1e-6, `even 100 ms arrivals need one interval: ${even.spread}`);
    assert.ok(Math.abs(even.late - 0.2) < 1e-6 && Math.abs(even.base - 0.1) < 1e-6);
    // The same chunk interval, delayed by a random 0-50 ms: the jitter adds to the need.
    const rnd = seeded(7);
    const jittered = arrivalEnvelope(arrivalsAt(NOW, 0.1, () => 0.05 * rnd()), NOW);
    // The latest arrivals came ~47 ms later (the 95th percentile of 0-50 ms); the
    // typical one ~25 ms: the offset aimed at moves by the first, the lag after a
    // typical arrival by the difference.
    assert.ok(jittered.late - even.late > 0.04 && jittered.late - even.late < 0.05, `jittered: ${jittered.late}`);
    assert.ok(jittered.spread > 0.11 && jittered.spread < 0.13, `jittered: ${jittered.spread}`);
    // A 4 s outage, then the resume's burst (what the publisher made meanwhile, all at
    // once): not jitter, the envelope stays near the usual one.
    const outage = arrivalsAt(NOW, 0.1).map((a) => (a.wall > NOW - 5 && a.wall <= NOW - 1 ? { ...a, wall: NOW - 1 } : a));
    const afterOutage = arrivalEnvelope(outage, NOW);
    assert.ok(afterOutage.late < even.late + 0.5, `after an outage: ${afterOutage.late}`);
    // ... even when the burst is most of the window.
    const mostly = arrivalsAt(NOW, 0.1).map((a) => (a.wall > NOW - 7 && a.wall <= NOW - 1 ? { ...a, wall: NOW - 1 } : a));
    const afterLong = arrivalEnvelope(mostly, NOW);
    assert.ok(afterLong.late < even.late + 0.5 && Math.abs(afterLong.base - even.base) < 0.05, `after a long outage: ${JSON.stringify(afterLong)}`);
    // Media that continues from a later moment (a rejoin's jump, laid end to end):
    // the newest arrivals set the relation, not the older ones.
    const shifted = arrivalsAt(NOW, 0.1).map((a) => (a.wall > NOW - 3 ? { ...a, end: a.end - 2 } : a));
    const afterJump = arrivalEnvelope(shifted, NOW);
    assert.ok(Math.abs(afterJump.late - (even.late + 2)) < 1e-6, `after a jump: ${JSON.stringify(afterJump)}`);
    // Arrivals older than the window no longer count.
    assert.equal(arrivalEnvelope(arrivalsAt(NOW, 0.1), NOW + 9), null);
  });

  /** A tick of a player with measured arrivals, `offset` s of wall clock behind media. */
  const steady = (offset, over = {}) => {
    const arrivals = over.arrivals ?? arrivalsAt(NOW, 0.1);
    const end = arrivals[arrivals.length - 1].end;
    return tick({ ranges: [[0, end]], currentTime: NOW - offset, now: NOW, arrivals, stalls: 0, ...over });
  };
  // A 100 fps source: the renderer's 3 frames add 30 ms to the 30 ms margin.
  const adaptive = (over = {}) => settled({ sawEnvelope: true, stallsSeen: 0, widenAt: NOW, frameInterval: 0.01, ...over });

  test('unit: live edge: on measured arrivals the target is the envelope plus a small margin', () => {
    // Even 100 ms chunks: the offset aimed at is 0.2 s + 0.06 s, a lag of 0.16 s after each arrival.
    const d = steerToLiveEdge(steady(0.26), adaptive());
    assert.ok(Math.abs(d.memory.target.lag - 0.16) < 1e-6, `target lag ${d.memory.target.lag}`);
    assert.ok(Math.abs(d.memory.target.offset - 0.26) < 1e-6);
    assert.equal(d.seekTo, null);
    assert.equal(d.rate, 1.0);
    // The renderer's frames count: 20 fps wants 3 × 50 ms, where 100 fps wanted 3 × 10.
    const slow = steerToLiveEdge(steady(0.26), adaptive({ frameInterval: 0.05 }));
    assert.ok(Math.abs(slow.memory.target.lag - 0.28) < 1e-6, `20 fps: ${slow.memory.target.lag}`);
    assert.ok(slow.rate < 1, 'closer than 20 fps allows: slower');
    // The old rule would aim at 0.33 s after an arrival at 100 ms chunks.
    assert.ok(d.memory.target.lag < mseTargetLag(0.1) - 0.15);
  });

  test('unit: live edge: small excesses are steered with playbackRate within 0.95-1.10', () => {
    const rate = (offset, over) => steerToLiveEdge(steady(offset, over), adaptive()).rate;
    assert.equal(rate(0.27), 1.0, 'inside the dead band');
    assert.equal(rate(0.36), 1.05, '100 ms behind: 5 % faster');
    assert.equal(rate(0.22), 0.98, '40 ms ahead: 2 % slower');
    assert.equal(rate(0.22, { readyState: 2 }), 1.0, 'out of data: slowing would not help');
    for (const offset of [0.05, 0.0, 0.6, 1.0]) {
      const r = rate(offset);
      assert.ok(r >= MIN_RATE && r <= MAX_RATE, `rate ${r} at offset ${offset}`);
    }
    assert.equal(rate(0.05), MIN_RATE);
    assert.equal(rate(1.0), MAX_RATE, '0.74 s behind: full speed, still no seek');
    assert.equal(steerToLiveEdge(steady(1.0), adaptive()).seekTo, null);
  });

  test('unit: live edge: a large excess, or the first envelope after a far join, seeks', () => {
    const far = steerToLiveEdge(steady(3), adaptive());
    assert.ok(Math.abs(far.seekTo - (NOW - 0.26)) < 1e-6, `seek to ${far.seekTo}`);
    assert.match(far.note, /^far behind/);
    // Joined 1.5 s behind while arrivals were unmeasured: corrected once.
    const first = steerToLiveEdge(steady(1.0), adaptive({ sawEnvelope: false }));
    assert.ok(Math.abs(first.seekTo - (NOW - 0.26)) < 1e-6);
    assert.match(first.note, /^arrivals measured/);
    assert.equal(first.memory.sawEnvelope, true);
    assert.equal(steerToLiveEdge(steady(1.0), first.memory).seekTo, null, 'only once');
    // Never past the newest media.
    const late = arrivalsAt(NOW, 0.1).map((a) => ({ ...a, end: a.end - 1 }));
    const clamped = steerToLiveEdge(steady(3, { arrivals: late }), adaptive());
    assert.ok(clamped.seekTo <= late[late.length - 1].end - 0.02 + 1e-9);
  });

  test('unit: live edge: a stall widens the target, which narrows again slowly', () => {
    const base = steerToLiveEdge(steady(0.26), adaptive()).memory.target.lag;
    const stalled = steerToLiveEdge(steady(0.26, { stalls: 1 }), adaptive());
    const widened = stalled.memory.target.lag - base;
    assert.ok(widened > 0.05, `widened by ${widened}`);
    assert.equal(stalled.rate, 0.95, 'the playhead is now too close: ease off, no seek');
    assert.equal(stalled.seekTo, null);
    // Two more stalls: wider still.
    const again = steerToLiveEdge(steady(0.26, { stalls: 3 }), stalled.memory);
    assert.ok(again.memory.target.lag - base > 2.9 * widened);
    // 4 s without a stall narrows it a little, 160 s all the way back.
    const later = (s, memory) => steerToLiveEdge(steady(0.26, { now: NOW + s, currentTime: NOW + s - 0.26, stalls: 3, arrivals: arrivalsAt(NOW + s, 0.1) }), memory);
    const soon = later(4, again.memory).memory.target.lag - base;
    assert.ok(soon < 3 * widened && soon > 2.5 * widened, `after 4 s: ${soon}`);
    assert.ok(Math.abs(later(160, again.memory).memory.target.lag - base) < 1e-9);
  });

  test('unit: live edge: with measured arrivals, holes, frozen pictures and the Pause button still rule', () => {
    const holes = steerToLiveEdge(steady(0.4, { ranges: [[0, 99.5], [99.7, 99.9]] }), adaptive());
    assert.match(holes.note, /^hole at 99\.60/);
    const paused = steerToLiveEdge(steady(3, { paused: true, userPaused: true }), adaptive());
    assert.deepEqual([paused.seekTo, paused.rate, paused.play], [null, null, false]);
    let memory = adaptive({ frameInterval: null });
    const seeks = [10, 15, 20, 20, 20, 20].map((decoded, i) => {
      const now = NOW + i * 0.25;
      const at = { now, currentTime: now - 0.26, arrivals: arrivalsAt(now, 0.1), frames: { decoded, hasPicture: true, visible: true } };
      const d = steerToLiveEdge(steady(0.26, at), memory);
      memory = d.memory;
      return d.seekTo;
    });
    assert.equal(seeks.filter((s) => s !== null).length, 1);
    // 5 frames every 0.25 s of playback: the source's frame interval, measured.
    assert.ok(Math.abs(memory.frameInterval - 0.05) < 1e-9, `frame interval ${memory.frameInterval}`);
  });
}

// Alone: `node integration/browser/unit.mjs`.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { runner } = await import('./harness.mjs');
  const r = runner();
  await unitTests(resolve(dirname(fileURLToPath(import.meta.url)), '../..'), r.test);
  const results = await r.run();
  const failed = results.filter((t) => !t.ok).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}
