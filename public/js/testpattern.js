// The built-in test source: a colourful canvas animation with a running clock, a tone,
// and the current Date.now() painted as a strip of black/white cells, so a viewer can
// decode the capture time of each frame and measure glass-to-glass latency.

/** Clock cells: 44 bits of Date.now() then a 4-bit check, in CLOCK_ROWS rows. */
export const CLOCK_BITS = 44;
export const CLOCK_CHECK_BITS = 4;
export const CLOCK_COLS = 24;
export const CLOCK_ROWS = 2;

function checkOf(bits) {
  let ones = 0;
  for (const b of bits) ones += b;
  return ones % 16;
}

/** The 48 cell values (0/1) for a millisecond timestamp, most significant bit first. */
export function clockBits(ms) {
  const bits = [];
  let v = Math.floor(ms);
  for (let i = CLOCK_BITS - 1; i >= 0; i--) {
    const p = 2 ** i;
    const bit = v >= p ? 1 : 0;
    if (bit) v -= p;
    bits.push(bit);
  }
  const check = checkOf(bits);
  for (let i = CLOCK_CHECK_BITS - 1; i >= 0; i--) bits.push((check >> i) & 1);
  return bits;
}

/** Geometry of the clock strip on a width x height frame. */
export function clockStrip(width, height) {
  const cell = Math.floor(width / CLOCK_COLS);
  const stripHeight = cell * CLOCK_ROWS;
  const x0 = Math.floor((width - cell * CLOCK_COLS) / 2);
  const y0 = height - stripHeight;
  return { cell, x0, y0, stripHeight };
}

export function drawClock(ctx, width, height, ms) {
  const { cell, x0, y0 } = clockStrip(width, height);
  const bits = clockBits(ms);
  for (let i = 0; i < bits.length; i++) {
    const col = i % CLOCK_COLS;
    const row = Math.floor(i / CLOCK_COLS);
    ctx.fillStyle = bits[i] ? '#fff' : '#000';
    ctx.fillRect(x0 + col * cell, y0 + row * cell, cell, cell);
  }
}

/**
 * Reads the clock back from RGBA pixels of a whole frame (ImageData-like: data, width,
 * height). Returns the timestamp in ms, or null if the cells do not pass the check.
 */
export function decodeClock(image) {
  const { width, height, data } = image;
  const { cell, x0, y0 } = clockStrip(width, height);
  if (cell < 4) return null;
  const bits = [];
  const inset = Math.max(1, Math.floor(cell / 4));
  for (let i = 0; i < CLOCK_BITS + CLOCK_CHECK_BITS; i++) {
    const col = i % CLOCK_COLS;
    const row = Math.floor(i / CLOCK_COLS);
    let sum = 0;
    let n = 0;
    for (let y = y0 + row * cell + inset; y < y0 + (row + 1) * cell - inset; y++) {
      for (let x = x0 + col * cell + inset; x < x0 + (col + 1) * cell - inset; x++) {
        const k = (y * width + x) * 4;
        sum += 0.299 * data[k] + 0.587 * data[k + 1] + 0.114 * data[k + 2];
        n++;
      }
    }
    const luma = sum / n;
    if (luma > 80 && luma < 175) return null; // neither black nor white: not our strip
    bits.push(luma >= 128 ? 1 : 0);
  }
  const value = bits.slice(0, CLOCK_BITS).reduce((v, b) => v * 2 + b, 0);
  const check = bits.slice(CLOCK_BITS).reduce((v, b) => v * 2 + b, 0);
  return checkOf(bits.slice(0, CLOCK_BITS)) === check ? value : null;
}

function pad(n, w = 2) {
  return String(n).padStart(w, '0');
}

/**
 * Starts the test pattern: { stream, canvas, stop() }. Drawing runs on a setInterval
 * timer, not requestAnimationFrame, which headless and background tabs throttle.
 */
export function startTestPattern({ width = 640, height = 360, fps = 30 } = {}) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  // Opaque: a canvas with alpha makes Chromium record VP9 with an alpha plane (BlockAdditions),
  // at whose generation switches Firefox's MediaSource reports decode errors.
  const ctx = canvas.getContext('2d', { alpha: false });
  const started = performance.now();
  let frame = 0;

  const draw = () => {
    const now = Date.now();
    const t = (performance.now() - started) / 1000;
    // Eight moving colour bars: never black, so a blank frame is easy to tell apart.
    const bars = 8;
    const shift = (t * 40) % 360;
    for (let i = 0; i < bars; i++) {
      ctx.fillStyle = `hsl(${(i * 45 + shift) % 360} 85% 55%)`;
      ctx.fillRect(Math.floor((i * width) / bars), 0, Math.ceil(width / bars), height);
    }
    // A bouncing square.
    const size = Math.floor(height / 5);
    const x = Math.floor(((Math.sin(t * 1.7) + 1) / 2) * (width - size));
    const y = Math.floor(((Math.cos(t * 1.3) + 1) / 2) * (height * 0.55 - size));
    ctx.fillStyle = '#fff';
    ctx.fillRect(x, y, size, size);
    ctx.fillStyle = '#222';
    ctx.fillRect(x + size / 4, y + size / 4, size / 2, size / 2);
    // The running clock.
    const d = new Date(now);
    const text = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
    const fontPx = Math.max(12, Math.floor(height / 7));
    ctx.font = `bold ${fontPx}px monospace`;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'center';
    const { stripHeight } = clockStrip(width, height);
    const ty = height - stripHeight - fontPx;
    ctx.fillStyle = 'rgba(0,0,0,0.55)';
    ctx.fillRect(0, ty - fontPx * 0.7, width, fontPx * 1.4 + Math.floor(fontPx / 2));
    ctx.fillStyle = '#fff';
    ctx.fillText(text, width / 2, ty);
    ctx.font = `${Math.max(10, Math.floor(fontPx / 2.5))}px monospace`;
    ctx.fillText(`blobcast test pattern · frame ${frame}`, width / 2, ty + fontPx * 0.75);
    drawClock(ctx, width, height, now);
    frame++;
  };
  draw();
  const timer = setInterval(draw, Math.max(5, Math.round(1000 / fps)));
  const video = canvas.captureStream(fps);

  // A tone, with a short higher beep at every whole second (useful for A/V sync).
  let audioCtx = null;
  let beepTimer = null;
  const tracks = [...video.getVideoTracks()];
  try {
    audioCtx = new AudioContext();
    const osc = audioCtx.createOscillator();
    const gain = audioCtx.createGain();
    const dest = audioCtx.createMediaStreamDestination();
    osc.frequency.value = 440;
    gain.gain.value = 0.05;
    osc.connect(gain).connect(dest);
    osc.start();
    audioCtx.resume?.().catch(() => {});
    beepTimer = setInterval(() => {
      const at = audioCtx.currentTime;
      osc.frequency.setValueAtTime(880, at);
      osc.frequency.setValueAtTime(440, at + 0.1);
    }, 1000);
    tracks.push(...dest.stream.getAudioTracks());
  } catch (err) {
    console.warn('test pattern: no audio', err);
  }
  const stream = new MediaStream(tracks);
  return {
    stream,
    canvas,
    audioContext: audioCtx,
    stop() {
      clearInterval(timer);
      if (beepTimer) clearInterval(beepTimer);
      for (const track of stream.getTracks()) track.stop();
      audioCtx?.close().catch(() => {});
    },
  };
}
