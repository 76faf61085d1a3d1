// The watch page's player bar and keyboard shortcuts: play/pause (space), mute (m) and
// volume, fullscreen (f), picture-in-picture (p, where the browser has it), and 10 s
// back/forward (arrow keys). A bar of our own rather than native `controls`: the native
// seek bar and click-to-pause would fight the live-edge control, which must know a
// person's pause or seek back from the browser's own (see Viewer.userPaused).

const SEEK_STEP = 10;

/** True when a key typed here belongs to a form field (or a focused button's own space). */
function keyBelongsToTarget(e) {
  const t = e.target;
  if (!t || !t.tagName) return false;
  if (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName)) return true;
  // Space or Enter on a focused button clicks it: handling them again would undo that.
  return (t.tagName === 'BUTTON' || t.tagName === 'SUMMARY' || t.tagName === 'A') && (e.key === ' ' || e.key === 'Enter');
}

export function wirePlayerControls({ viewer, video, box, render }) {
  const $ = (id) => document.getElementById(id);

  const togglePlay = () => {
    if (video.paused || viewer.pausedByUser) viewer.goLive();
    else viewer.pause();
  };
  const toggleMute = () => {
    video.muted = !video.muted;
    // Unmuted at volume 0 would still be silent.
    if (!video.muted && video.volume === 0) video.volume = 0.5;
    render();
  };
  // The whole player box goes fullscreen, so the poster canvas (blob swaps) and the
  // messages stay over the video.
  const toggleFullscreen = () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else box.requestFullscreen?.().catch((err) => viewer.note(`fullscreen refused: ${err.message}`));
  };
  const pipAvailable = !!(document.pictureInPictureEnabled && video.requestPictureInPicture);
  const togglePip = () => {
    if (!pipAvailable) return;
    if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
    else video.requestPictureInPicture().catch((err) => viewer.note(`picture-in-picture refused: ${err.message}`));
  };

  $('playpause').addEventListener('click', togglePlay);
  $('mute').addEventListener('click', toggleMute);
  $('back').addEventListener('click', () => viewer.seekBy(-SEEK_STEP));
  $('fullscreen').addEventListener('click', toggleFullscreen);
  $('pip').hidden = !pipAvailable;
  $('pip').addEventListener('click', togglePip);
  const volume = $('volume');
  volume.addEventListener('input', () => {
    video.volume = Number(volume.value);
    video.muted = video.volume === 0;
    render();
  });
  video.addEventListener('volumechange', () => {
    const shown = video.muted ? 0 : video.volume;
    if (Number(volume.value) !== shown) volume.value = String(shown);
    volume.setAttribute('aria-valuetext', video.muted ? 'muted' : `${Math.round(video.volume * 100)}%`);
  });
  const reflect = () => {
    $('fullscreen').setAttribute('aria-pressed', String(!!document.fullscreenElement));
    $('fullscreen').textContent = document.fullscreenElement ? 'Exit fullscreen' : 'Fullscreen';
    $('pip').setAttribute('aria-pressed', String(!!document.pictureInPictureElement));
  };
  document.addEventListener('fullscreenchange', reflect);
  video.addEventListener('enterpictureinpicture', reflect);
  video.addEventListener('leavepictureinpicture', reflect);

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || keyBelongsToTarget(e)) return;
    const actions = {
      ' ': togglePlay,
      k: togglePlay,
      f: toggleFullscreen,
      m: toggleMute,
      p: togglePip,
      ArrowLeft: () => viewer.seekBy(-SEEK_STEP),
      ArrowRight: () => viewer.seekBy(SEEK_STEP),
    };
    const action = actions[e.key.length === 1 ? e.key.toLowerCase() : e.key];
    if (!action) return;
    e.preventDefault(); // space would scroll the page
    action();
    render();
  });
}
