// Node-side checks of the pages' pure modules (public/js/reassembly.js, webm.js,
// testpattern.js clock cells): the reassembly rules of docs/protocol.md, frame by frame.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export async function unitTests(root, test) {
  const js = (name) => import(pathToFileURL(join(root, 'public/js', name)).href);
  const { encodeFrame, decodeFrame, describeClose } = await js('protocol.js');
  const { Reassembler } = await js('reassembly.js');
  const { WebmScanner } = await js('webm.js');
  const { clockBits, decodeClock, clockStrip } = await js('testpattern.js');

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
}
