// Which player a viewer uses, and whether it may append: a pure decision over what the
// browser has, so node can test it (the iPhone cases cannot run here).
//
// - ManagedMediaSource (Safari 17+, iOS 17.1+ on iPhone) is preferred where it exists:
//   on iPhone it is the only MediaSource there is. The browser says when it wants data
//   (`startstreaming`/`endstreaming`): appends wait while it does not, and the video
//   needs `disableRemotePlayback` (or an AirPlay alternative) for it to play at all.
// - MediaSource otherwise.
// - Neither (iPhone before iOS 17.1), or one that cannot play the stream's codecs: blob
//   mode, which needs only `<video src=blob:>`, and a note that says so.

/**
 * `have`: { forced: 'mse'|'blob'|null, mime (null while unknown), managed: bool (a
 * ManagedMediaSource class exists), mse: bool (a MediaSource class exists),
 * managedSupports(mime), mseSupports(mime) }.
 * Returns { mode: 'mse'|'blob', source: 'ManagedMediaSource'|'MediaSource'|null,
 * note: words for the person, or null }.
 */
export function choosePlayback(have) {
  const { forced, mime } = have;
  const canManaged = have.managed && (!mime || have.managedSupports(mime));
  const canMse = have.mse && (!mime || have.mseSupports(mime));
  const source = canManaged ? 'ManagedMediaSource' : canMse ? 'MediaSource' : null;
  if (forced === 'blob') return { mode: 'blob', source: null, note: null };
  if (source) return { mode: 'mse', source, note: null };
  if (!have.managed && !have.mse) {
    return {
      mode: 'blob',
      source: null,
      note: 'This browser has no MediaSource (on iPhone: iOS 17.1 or later has one), so the video plays in blob mode: a few seconds further behind live, with a still frame at each refresh.',
    };
  }
  return {
    mode: 'blob',
    source: null,
    note: `This browser's MediaSource cannot play ${mime}, so the video plays in blob mode: a few seconds further behind live.`,
  };
}

/**
 * Whether the MSE player may append now: always with MediaSource; with
 * ManagedMediaSource only while the browser wants data (`streaming`, set by
 * `startstreaming`, cleared by `endstreaming`; undefined counts as wanted).
 */
export function mayAppend(managed, streaming) {
  return !managed || streaming !== false;
}

/** What the browser has, from `window` (or a stand-in for tests). */
export function browserPlayback(win = globalThis) {
  const MMS = win.ManagedMediaSource;
  const MS = win.MediaSource;
  return {
    managed: typeof MMS === 'function',
    mse: typeof MS === 'function',
    managedSupports: (m) => !!MMS?.isTypeSupported?.(m),
    mseSupports: (m) => !!MS?.isTypeSupported?.(m),
  };
}
