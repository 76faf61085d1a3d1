// The poster: a canvas over the video that holds the last decoded frame while the
// picture underneath changes source (a blob swap, an MSE generation switch or recovery),
// so the viewer sees a still frame instead of black.

/** A canvas over the video that holds the last decoded frame across a source switch. */
export class Poster {
  constructor(video, canvas) {
    this.video = video;
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.visible = false;
    this.shownAt = null;
    this.shows = 0;
  }

  /** Draws the video's current frame; false if there is none to draw. */
  capture() {
    const v = this.video;
    if (v.readyState < 2 || !v.videoWidth) return false;
    if (this.canvas.width !== v.videoWidth || this.canvas.height !== v.videoHeight) {
      this.canvas.width = v.videoWidth;
      this.canvas.height = v.videoHeight;
    }
    try {
      this.ctx.drawImage(v, 0, 0, v.videoWidth, v.videoHeight);
      this.captured = true;
      return true;
    } catch {
      return false;
    }
  }

  show() {
    if (!this.captured) return false;
    if (!this.visible) {
      this.visible = true;
      this.shownAt = performance.now();
      this.shows++;
      this.canvas.hidden = false;
    }
    return true;
  }

  hide() {
    if (!this.visible) return;
    this.visible = false;
    this.canvas.hidden = true;
  }
}
