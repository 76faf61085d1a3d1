// What is on screen, frame by frame: Chromium's screencast (CDP Page.startScreencast)
// hands over the frames its compositor produces for the page, each once the previous
// one is acknowledged (~20 a second here), so a picture black for two of its intervals
// is caught, where screenshots taken now and then (each ~100 ms apart) miss it. Used by
// the black-flash tests of blob mode. Chromium only.

import { decodePng } from './harness.mjs';

/** The share of a PNG's pixels whose luma is over 30 (a black picture: near 0). */
export function litShare(png) {
  const { rgba } = decodePng(png);
  let lit = 0;
  for (let i = 0; i < rgba.length; i += 4) if (0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2] > 30) lit++;
  return lit / (rgba.length / 4);
}

/**
 * Starts watching `page` (a Playwright page in front); `box` ({ x, y, width, height },
 * CSS pixels) is the part to measure. Each frame gets the share of its pixels in `box`
 * whose luma is over 30 (`lit`) and the time it was composited (ms, wall clock).
 * Returns { frames() -> the frames so far, stop() -> all frames }.
 */
export async function watchScreen(page, box, { scale = 0.25 } = {}) {
  const cdp = await page.context().newCDPSession(page);
  const viewport = page.viewportSize();
  const frames = [];
  let pending = Promise.resolve();
  cdp.on('Page.screencastFrame', (f) => {
    cdp.send('Page.screencastFrameAck', { sessionId: f.sessionId }).catch(() => {});
    const t = f.metadata.timestamp ? f.metadata.timestamp * 1000 : Date.now();
    pending = pending.then(() => {
      const { width, height, rgba } = decodePng(Buffer.from(f.data, 'base64'));
      // The frame may come scaled: measure the box at the frame's scale.
      const sx = width / f.metadata.deviceWidth;
      const sy = height / f.metadata.deviceHeight;
      const x0 = Math.max(0, Math.round(box.x * sx));
      const y0 = Math.max(0, Math.round((box.y - f.metadata.scrollOffsetY) * sy));
      const x1 = Math.min(width, Math.round((box.x + box.width) * sx));
      const y1 = Math.min(height, Math.round((box.y + box.height - f.metadata.scrollOffsetY) * sy));
      let lit = 0;
      let n = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const k = (y * width + x) * 4;
          if (0.299 * rgba[k] + 0.587 * rgba[k + 1] + 0.114 * rgba[k + 2] > 30) lit++;
          n++;
        }
      }
      frames.push({ t, lit: n ? lit / n : 0 });
    });
  });
  await cdp.send('Page.startScreencast', {
    format: 'png',
    maxWidth: Math.round(viewport.width * scale),
    maxHeight: Math.round(viewport.height * scale),
    everyNthFrame: 1,
  });
  return {
    async frames() {
      await pending;
      return frames.slice();
    },
    async stop() {
      await cdp.send('Page.stopScreencast').catch(() => {});
      await pending;
      await cdp.detach().catch(() => {});
      return frames;
    },
  };
}

/**
 * The picture inside the page's #video (object-fit: contain), its upper 70 %: the test
 * pattern's colour bars, above its clock cells. CSS pixels.
 */
export async function pictureBox(page) {
  return page.evaluate(() => {
    const video = document.getElementById('video');
    const r = video.getBoundingClientRect();
    const scale = Math.min(r.width / video.videoWidth, r.height / video.videoHeight);
    const w = video.videoWidth * scale;
    const h = video.videoHeight * scale;
    return { x: r.x + (r.width - w) / 2 + 4, y: r.y + (r.height - h) / 2 + 4, width: w - 8, height: h * 0.7 };
  });
}
