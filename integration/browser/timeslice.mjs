// What Chromium's MediaRecorder does with short timeslices (not part of the test run):
//   node integration/browser/timeslice.mjs
// Records the fake camera (with its audio) and the recorder page's test pattern for 6 s
// each at 50, 100 and 250 ms timeslices (VP8 + Opus, 640x360 at 30 fps) and prints the
// intervals between `dataavailable` events. See docs/performance.md.

import { launchBrowser, startServer } from './harness.mjs';

const server = await startServer();
const browser = await launchBrowser();
try {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/record`);
  console.log('| source | timeslice | pieces in 6 s | interval p5 / p50 / p95 / max (ms) |');
  console.log('| --- | ---: | ---: | --- |');
  for (const source of ['camera', 'test']) {
    for (const slice of [50, 100, 250]) {
      const r = await page.evaluate(
        async ({ slice, source }) => {
          let stream;
          if (source === 'camera') {
            stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 30 }, audio: true });
          } else {
            const { startTestPattern } = await import('/js/testpattern.js');
            stream = startTestPattern({ width: 640, height: 360, fps: 30 }).stream;
          }
          const rec = new MediaRecorder(stream, { mimeType: 'video/webm;codecs=vp8,opus' });
          const times = [];
          rec.ondataavailable = () => times.push(performance.now());
          rec.start(slice);
          await new Promise((r) => setTimeout(r, 6000));
          rec.stop();
          stream.getTracks().forEach((t) => t.stop());
          // The first two pieces (the header, the start) are not the rhythm.
          const d = times.slice(2).map((t, i) => t - times[i + 1]).sort((a, b) => a - b);
          const q = (p) => Math.round(d[Math.min(d.length - 1, Math.floor(p * d.length))]);
          return { n: times.length, q: [q(0.05), q(0.5), q(0.95), Math.round(d[d.length - 1])] };
        },
        { slice, source },
      );
      console.log(`| ${source} | ${slice} ms | ${r.n} | ${r.q.join(' / ')} |`);
    }
  }
} finally {
  await browser.close();
  await server.stop();
}
