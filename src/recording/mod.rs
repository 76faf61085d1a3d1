//! Recordings: every published stream kept on disk as one seekable file per publish
//! session, WebM or MP4 as it was published. This module is the catalog — what the
//! record directory holds, one sidecar JSON per recording (written atomically), rebuilt
//! from the directory at start-up — and the stream's handle on it ([`Slot`]). The
//! splicing lives in `splice` (WebM) and `fmp4` (fragmented MP4), behind one face in
//! `container`; the file writing in `writer`, crash recovery in `recover`, names in `names`, the link between
//! a dropped session and the next one in `sessions`; its HTTP face is `api::recordings`.

pub mod container;
mod disk;
mod ebml;
mod fmp4;
pub mod names;
mod recover;
mod sessions;
pub mod splice;
mod writer;

use crate::events::{Event, Events};
use crate::metrics::Metrics;
use bytes::Bytes;
use container::Container;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use sessions::{ContinuedFrom, RECONNECT_WINDOW};
pub use writer::Session;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("no recording {0:?}")]
    NotFound(String),
    #[error("recording {0:?} is still being written; stop its stream first")]
    StillRecording(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RecordingError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecordingError {
        let path = path.to_owned();
        move |source| RecordingError::Io { what, path, source }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being written now.
    Recording,
    /// Ended with its session and finalized.
    Finished,
    /// The server died while writing it; finalized at the next start.
    Interrupted,
    /// Stopped by an error (disk full, permission, a disk too slow); `error` says which.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Recording => "recording",
            State::Finished => "finished",
            State::Interrupted => "interrupted",
            State::Failed => "failed",
        }
    }
}

/// One recording: its sidecar's content and its `/api/recordings` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// The file name without its extension (`.webm`, `.mp4`).
    pub id: String,
    pub stream: String,
    pub name_prefix: String,
    pub file: String,
    #[serde(default)]
    pub mime: Option<String>,
    /// RFC 3339, UTC.
    pub started: String,
    #[serde(default)]
    pub ended: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub bytes: u64,
    pub state: State,
    #[serde(default)]
    pub error: Option<String>,
    /// Why the session's previous file could not go on and this one was started.
    #[serde(default)]
    pub split_reason: Option<String>,
    /// The id of the session's previous file, when this one continues it.
    #[serde(default)]
    pub continues: Option<String>,
    /// The node whose record folder holds `continues`, when it is another node's (a
    /// cluster publisher that moved here); null when the file is in this catalog.
    #[serde(default)]
    pub continues_node: Option<String>,
    /// Recorder generations spliced into the file.
    #[serde(default)]
    pub generations: u32,
    /// What its Tracks say, e.g. `V_VP8 640x480, A_OPUS 48000 Hz 2 ch`.
    #[serde(default)]
    pub tracks: Option<String>,
}

#[derive(Debug)]
struct Entry {
    info: RecordingInfo,
    /// Being finalized after a crash: not to be deleted yet.
    recovering: bool,
}

/// The catalog of the record directory, and the factory of recording sessions.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Each stream's last session, so that a publisher's reconnect is linked to it.
    recent: sessions::Recent,
    /// Writer and recovery tasks alive, for a clean shutdown.
    active: watch::Sender<usize>,
    /// Recordings finishing or failing.
    events: Events,
    /// `--min-free-disk`, and the recording metrics.
    disk: disk::DiskWatch,
}

/// Counts one writer or recovery task as alive until dropped.
pub(crate) struct ActiveGuard(Arc<Recorder>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n -= 1);
    }
}

impl Recorder {
    /// Reads the catalog from `dir` (which need not exist yet) and starts finalizing, in
    /// the background, every file a crash left open.
    pub fn open(dir: PathBuf) -> Arc<Recorder> {
        Recorder::open_with(dir, 0, Arc::new(Metrics::new()))
    }

    /// As `open`, stopping recordings when free space falls under `min_free` bytes and
    /// counting them in `metrics`.
    pub fn open_with(dir: PathBuf, min_free: u64, metrics: Arc<Metrics>) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder {
            disk: disk::DiskWatch::new(dir.clone(), min_free, metrics),
            dir,
            entries: Mutex::new(BTreeMap::new()),
            recent: sessions::Recent::default(),
            active: watch::Sender::new(0),
            events: Events::default(),
        });
        let to_recover = recorder.load();
        for id in to_recover {
            recover::spawn(&recorder, id);
        }
        recorder
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free bytes on the record directory's filesystem (also set in its gauge).
    pub fn free_bytes(&self) -> Option<u64> {
        self.disk.free()
    }

    /// How many recordings the catalog holds in each state, for `/metrics`.
    pub fn count_by_state(&self) -> [(State, usize); 4] {
        let mut counts = [
            (State::Recording, 0),
            (State::Finished, 0),
            (State::Interrupted, 0),
            (State::Failed, 0),
        ];
        for entry in self.entries.lock().values() {
            if let Some(count) = counts.iter_mut().find(|(s, _)| *s == entry.info.state) {
                count.1 += 1;
            }
        }
        counts
    }

    /// Every sidecar and every `.webm` or `.mp4` without one; returns the ids to recover.
    fn load(&self) -> Vec<String> {
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(err) => {
                log::error!(
                    "cannot read the record directory {}: {err}",
                    self.dir.display()
                );
                return Vec::new();
            }
        };
        let mut media = Vec::new();
        let mut infos = BTreeMap::new();
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A sidecar or recovery cut short by a crash.
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(id) = name.strip_suffix(".json") {
                match read_sidecar(&entry.path()) {
                    Ok(info) if info.id == id && names::is_safe_id(id) => {
                        infos.insert(id.to_owned(), info);
                    }
                    Ok(_) => log::warn!("ignoring {}: its id does not match", name),
                    Err(err) => log::warn!("ignoring {name}: {err}"),
                }
            } else if let Some((id, container)) = Container::ALL.into_iter().find_map(|c| {
                let id = name.strip_suffix(c.extension())?.strip_suffix('.')?;
                Some((id, c))
            }) {
                if names::is_safe_id(id) {
                    media.push((id.to_owned(), container));
                }
            }
        }
        for (id, container) in media {
            infos
                .entry(id.clone())
                .or_insert_with(|| orphan(&self.dir, &id, container));
        }
        let mut to_recover = Vec::new();
        let mut entries = self.entries.lock();
        for (id, mut info) in infos {
            // Only `{id}.webm` or `{id}.mp4`: a sidecar names no other file.
            let container = Container::of_file(&info.file).unwrap_or(Container::WebM);
            info.file = format!("{id}.{}", container.extension());
            let recovering = info.state == State::Recording;
            if recovering {
                info.state = State::Interrupted;
                to_recover.push(id.clone());
            }
            entries.insert(id, Entry { info, recovering });
        }
        to_recover
    }

    /// A new recording session for a stream whose publisher starts publishing (its
    /// first file continuing `continues`, another node's, if given). Cheap and
    /// non-blocking (the file is opened by the writer task); None outside a runtime.
    pub fn begin(
        self: &Arc<Self>,
        stream: &str,
        prefix: Option<&str>,
        mime: Option<&str>,
        continues: Option<ContinuedFrom>,
    ) -> Option<Session> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(writer::QUEUE_FRAMES);
        let shared = Arc::new(writer::Shared::new(self.disk.metrics().clone()));
        let subject = writer::Subject {
            stream: stream.to_owned(),
            prefix: names::sanitize_prefix(prefix),
            mime: mime.map(str::to_owned),
            session: self.recent.new_session(),
            continues,
        };
        // Counted from now, not from when the task first runs: a shutdown right after
        // waits for it too.
        let active = self.active_guard();
        runtime.spawn(writer::run(
            active,
            self.clone(),
            subject,
            shared.clone(),
            rx,
        ));
        Some(Session { tx, shared })
    }

    pub(crate) fn active_guard(self: &Arc<Self>) -> ActiveGuard {
        self.active.send_modify(|n| *n += 1);
        ActiveGuard(self.clone())
    }

    /// Waits (up to `timeout`) until every recording is finalized: for shutdown.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let mut active = self.active.subscribe();
        let drained = tokio::time::timeout(timeout, active.wait_for(|n| *n == 0)).await;
        drained.is_ok()
    }

    /// Adds a recording to the catalog unless its id is taken (its sidecar is written
    /// by `persist`). A writer claims an id before it creates the file of that name,
    /// so no two recordings, finished, failed or in progress, ever share one.
    pub(crate) fn claim(&self, info: RecordingInfo) -> bool {
        match self.entries.lock().entry(info.id.clone()) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(vacant) => {
                vacant.insert(Entry {
                    info,
                    recovering: false,
                });
                true
            }
        }
    }

    /// Gives back a claimed id whose file could not be had (the name was taken on disk).
    pub(crate) fn release(&self, id: &str) {
        self.entries.lock().remove(id);
    }

    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut RecordingInfo)) {
        let ended = {
            let mut entries = self.entries.lock();
            let Some(entry) = entries.get_mut(id) else {
                return;
            };
            let was = entry.info.state;
            change(&mut entry.info);
            (was == State::Recording && entry.info.state != State::Recording)
                .then(|| entry.info.clone())
        };
        if let Some(info) = ended {
            self.events.emit(|| recording_event(info));
        }
    }

    /// Where `recording_finished` and `recording_failed` go.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Writes the sidecar of `id` atomically: a temporary file, fsync, rename, fsync of
    /// the directory.
    pub(crate) fn persist(&self, id: &str) -> Result<(), RecordingError> {
        let Some(info) = self.get(id) else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(&info).expect("recording info serializes");
        let path = self.dir.join(format!("{id}.json"));
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(RecordingError::io("write", &path))
    }

    pub fn get(&self, id: &str) -> Option<RecordingInfo> {
        self.entries.lock().get(id).map(|e| e.info.clone())
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RecordingInfo> {
        let mut list: Vec<_> = self
            .entries
            .lock()
            .values()
            .map(|e| e.info.clone())
            .collect();
        list.sort_by(|a, b| b.started.cmp(&a.started).then(b.id.cmp(&a.id)));
        list
    }

    /// The file of a cataloged recording; ids never reach the filesystem otherwise.
    pub fn file_path(&self, id: &str) -> Option<PathBuf> {
        let entries = self.entries.lock();
        let entry = entries.get(id)?;
        Some(self.dir.join(&entry.info.file))
    }

    /// Removes a finished, interrupted or failed recording: file and sidecar.
    pub fn delete(&self, id: &str) -> Result<RecordingInfo, RecordingError> {
        let info = {
            let entries = self.entries.lock();
            let entry = entries
                .get(id)
                .ok_or_else(|| RecordingError::NotFound(id.to_owned()))?;
            if entry.recovering || entry.info.state == State::Recording {
                return Err(RecordingError::StillRecording(id.to_owned()));
            }
            entry.info.clone()
        };
        for path in [
            self.dir.join(&info.file),
            self.dir.join(format!("{id}.json")),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RecordingError::Io {
                        what: "delete",
                        path,
                        source,
                    })
                }
            }
        }
        self.entries.lock().remove(id);
        log::info!("recording {id} deleted");
        Ok(info)
    }

    fn recovered(&self, id: &str, info: RecordingInfo) {
        if let Some(entry) = self.entries.lock().get_mut(id) {
            entry.info = info;
            entry.recovering = false;
        }
    }
}

fn recording_event(info: RecordingInfo) -> Event {
    match info.state {
        State::Finished => Event::RecordingFinished {
            stream: info.stream,
            id: info.id,
            file: info.file,
            duration: info.duration,
            bytes: info.bytes,
        },
        _ => Event::RecordingFailed {
            stream: info.stream,
            id: info.id,
            file: info.file,
            duration: info.duration,
            bytes: info.bytes,
            error: info.error,
        },
    }
}

fn read_sidecar(path: &Path) -> Result<RecordingInfo, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// A media file with no sidecar: the server died right after creating it.
fn orphan(dir: &Path, id: &str, container: Container) -> RecordingInfo {
    let file = format!("{id}.{}", container.extension());
    let modified = std::fs::metadata(dir.join(&file))
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    // `{prefix}-{stream}-{time}`: prefixes and streams may hold '-', so this is a guess.
    let mut parts = id.splitn(3, '-');
    let prefix = parts.next().unwrap_or(names::DEFAULT_PREFIX).to_owned();
    let stream = parts.next().unwrap_or("unknown").to_owned();
    RecordingInfo {
        id: id.to_owned(),
        stream,
        name_prefix: prefix,
        file,
        mime: None,
        started: names::rfc3339(modified),
        ended: None,
        duration: None,
        bytes: 0,
        state: State::Recording,
        error: None,
        split_reason: None,
        continues: None,
        continues_node: None,
        generations: 0,
        tracks: None,
    }
}

/// What a stream holds for recording: the publisher's `?name_prefix=` and the session
/// of the publish session in progress. Lives under the stream's lock; never blocks.
#[derive(Debug, Default)]
pub struct Slot {
    prefix: Option<String>,
    session: Option<Session>,
    /// The session's recording stopped on an error: no new file until it ends.
    stopped: bool,
    /// The file the session's first file continues, recorded on another node.
    continues: Option<ContinuedFrom>,
}

impl Slot {
    pub fn set_prefix(&mut self, prefix: Option<String>) {
        self.prefix = prefix;
    }

    /// The session was recorded on another node before it moved here: its first file
    /// here says it continues that node's file.
    pub fn continue_from(&mut self, from: ContinuedFrom) {
        self.continues = Some(from);
    }

    /// The id of the file the session is being recorded into now, if one is open.
    pub fn file(&self) -> Option<String> {
        self.session.as_ref().and_then(Session::file)
    }

    /// Hands accepted frames, in the order the buffer took them, to the recording;
    /// `starts` (a new generation) begins one if none is running.
    pub fn record(
        &mut self,
        recorder: &Arc<Recorder>,
        stream: &str,
        mime: Option<&str>,
        starts: bool,
        frames: Vec<Bytes>,
    ) {
        if self.session.is_none() {
            if !starts || self.stopped {
                return;
            }
            let continues = self.continues.take();
            self.session = recorder.begin(stream, self.prefix.as_deref(), mime, continues);
        }
        let Some(session) = &self.session else { return };
        for frame in frames {
            if !session.send(frame) {
                log::error!(
                    "recording of {stream} stopped: {}",
                    session
                        .shared
                        .failure()
                        .unwrap_or_else(|| "its writer is gone".into())
                );
                self.session = None;
                self.stopped = true;
                return;
            }
        }
    }

    /// The publish session ended: the recording is finalized (its writer sees the
    /// channel close once it has written everything queued).
    pub fn end(&mut self) {
        self.session = None;
        self.stopped = false;
    }

    /// A new publisher session: no prefix until it says one, nothing it continues
    /// until the cluster says so.
    pub fn reset(&mut self) {
        self.end();
        self.prefix = None;
        self.continues = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameHeader;

    const CHROME: &[u8] = include_bytes!("../../integration/fixtures/chrome-vp8-opus.webm");

    fn frames(generation: u64, cuts: &[usize]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&CHROME.len()]) {
            let header = FrameHeader {
                generation,
                offset: start as u64,
            };
            out.push(header.frame(&CHROME[start..end]));
            start = end;
        }
        out
    }

    fn temp_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("blobcast-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_late_tail_and_a_blob_that_overtakes_it_still_make_one_file() {
        let dir = temp_dir("order");
        let recorder = Recorder::open(dir.clone());
        let mut slot = Slot::default();
        slot.set_prefix(Some("../x".into()));
        let one = frames(1, &[5000, 90_000]);
        let two = frames(2, &[7000, 100_000]);
        let three = frames(3, &[6000]);
        // Generation 2's blob overtakes 1's tail; 3's blob arrives while 2 has no chunk.
        let order = [
            (true, one[0].clone()),
            (false, one[1].clone()),
            (true, two[0].clone()),
            (false, one[2].clone()),
            (false, two[1].clone()),
            (false, two[2].clone()),
            (true, three[0].clone()),
            (false, three[1].clone()),
        ];
        for (starts, frame) in order {
            slot.record(&recorder, "cam", Some("video/webm"), starts, vec![frame]);
        }
        slot.end();
        assert!(recorder.drain(Duration::from_secs(10)).await);
        let list = recorder.list();
        assert_eq!(list.len(), 1, "{list:#?}");
        let info = &list[0];
        assert_eq!(info.state, State::Finished, "{info:#?}");
        assert_eq!(info.generations, 3);
        assert!(info.file.starts_with("x-cam-"), "{}", info.file);
        assert!(
            (info.duration.unwrap() - 3.0 * 6.010).abs() < 1e-6,
            "{info:#?}"
        );
        let file = std::fs::read(dir.join(&info.file)).unwrap();
        assert_eq!(info.bytes, file.len() as u64);
        let sidecar = read_sidecar(&dir.join(format!("{}.json", info.id))).unwrap();
        assert_eq!(&sidecar, info);

        // A new catalog reads the same, and deletes it.
        let again = Recorder::open(dir.clone());
        assert_eq!(again.list(), list);
        again.delete(&info.id).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_stops_the_recording_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(2);
        let session = Session {
            tx,
            shared: Arc::new(writer::Shared::default()),
        };
        let frame = Bytes::from_static(&[0; 32]);
        assert!(session.send(frame.clone()) && session.send(frame.clone()));
        assert!(!session.send(frame.clone()), "the disk is too slow");
        assert!(session.shared.failure().unwrap().contains("too slow"));
        assert!(!session.send(frame), "and it stays stopped");
    }

    #[tokio::test]
    async fn a_recording_that_cannot_create_its_file_fails_visibly() {
        let dir = temp_dir("denied");
        std::fs::write(&dir, b"a file where the directory should be").unwrap();
        let recorder = Recorder::open(dir.clone());
        let mut slot = Slot::default();
        slot.record(&recorder, "cam", None, true, frames(1, &[]));
        let list = loop {
            let list = recorder.list();
            if !list.is_empty() {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(list[0].state, State::Failed);
        assert!(
            list[0].error.as_deref().unwrap().contains("cannot create"),
            "{list:#?}"
        );
        // The stream side notices at its next frame, and starts no other file this
        // session; the writer then ends.
        slot.record(&recorder, "cam", None, true, frames(2, &[]));
        assert!(slot.session.is_none() && slot.stopped);
        assert!(recorder.drain(Duration::from_secs(10)).await);
        assert_eq!(recorder.list().len(), 1);
        let _ = std::fs::remove_file(&dir);
    }

    /// Polls the catalog until `done` holds.
    async fn until(recorder: &Recorder, done: impl Fn(&[RecordingInfo]) -> bool) {
        for _ in 0..2000 {
            if done(&recorder.list()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the catalog never got there: {:#?}", recorder.list());
    }

    #[tokio::test]
    async fn a_failed_recording_never_takes_the_id_of_a_good_one() {
        let dir = temp_dir("clash");
        let moved = dir.with_extension("moved");
        // Both recordings should start within one second, when they want the same name:
        // start early in a second (the test still checks the rest if it is slower).
        let millis = names::rfc3339(std::time::SystemTime::now())[20..23]
            .parse::<u64>()
            .unwrap();
        if millis > 200 {
            tokio::time::sleep(Duration::from_millis(1000 - millis)).await;
        }
        let recorder = Recorder::open(dir.clone());
        let mut good = Slot::default();
        good.record(&recorder, "cam", None, true, frames(1, &[]));
        until(&recorder, |list| list.len() == 1 && list[0].bytes > 0).await;
        let good_id = recorder.list()[0].id.clone();

        // Now the directory cannot be created: the next recording fails at once.
        std::fs::rename(&dir, &moved).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        let mut failing = Slot::default();
        failing.record(&recorder, "cam", None, true, frames(2, &[]));
        until(&recorder, |list| {
            list.iter().any(|r| r.state == State::Failed)
        })
        .await;
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&moved, &dir).unwrap();
        good.end();
        failing.end();
        assert!(recorder.drain(Duration::from_secs(10)).await);

        let list = recorder.list();
        assert_eq!(list.len(), 2, "{list:#?}");
        let good_info = recorder
            .get(&good_id)
            .expect("the good one is still listed");
        assert_eq!(good_info.state, State::Finished, "{list:#?}");
        let failed = list.iter().find(|r| r.state == State::Failed).unwrap();
        assert_ne!(failed.id, good_id);
        assert!(names::is_safe_id(&failed.id));
        assert!(failed.error.as_deref().unwrap().contains("cannot create"));
        // Deleting the failed entry leaves the good recording and its file alone.
        recorder.delete(&failed.id).unwrap();
        assert_eq!(recorder.list(), vec![good_info.clone()]);
        let file = std::fs::read(dir.join(&good_info.file)).unwrap();
        assert_eq!(file.len() as u64, good_info.bytes);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// ffmpeg's fragmented MP4 (`frag_keyframe+empty_moov+default_base_moof`), 3 s.
    const MP4: &[u8] = include_bytes!("../mp4/testdata/ffmpeg-h264-aac-frag-keyframe.mp4");

    #[tokio::test]
    async fn a_session_that_turns_from_webm_to_mp4_goes_on_in_an_mp4_file() {
        let dir = temp_dir("container");
        let recorder = Recorder::open(dir.clone());
        let mut slot = Slot::default();
        slot.record(
            &recorder,
            "cam",
            Some("video/webm"),
            true,
            frames(1, &[5000]),
        );
        let mp4 = FrameHeader {
            generation: 2,
            offset: 0,
        }
        .frame(MP4);
        slot.record(&recorder, "cam", Some("video/webm"), true, vec![mp4]);
        slot.end();
        assert!(recorder.drain(Duration::from_secs(10)).await);
        let list = recorder.list();
        assert_eq!(list.len(), 2, "{list:#?}");
        let webm = list.iter().find(|r| r.file.ends_with(".webm")).unwrap();
        let mp4 = list.iter().find(|r| r.file.ends_with(".mp4")).unwrap();
        for info in [webm, mp4] {
            assert_eq!(info.state, State::Finished, "{info:#?}");
            assert_eq!(info.generations, 1, "{info:#?}");
        }
        assert_eq!(
            mp4.split_reason.as_deref(),
            Some("the container changed from WebM to MP4")
        );
        assert_eq!(mp4.continues.as_deref(), Some(webm.id.as_str()));
        assert_eq!(
            mp4.tracks.as_deref(),
            Some("avc1.42c00c 160x120, mp4a 48000 Hz 2 ch")
        );
        assert!((mp4.duration.unwrap() - 3.0213).abs() < 0.01, "{mp4:#?}");
        let file = std::fs::read(dir.join(&mp4.file)).unwrap();
        assert_eq!(file.len() as u64, mp4.bytes);
        assert_eq!(&file[file.len() - 12..file.len() - 8], b"mfro");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_mp4_left_without_a_sidecar_is_found_and_finalized() {
        let dir = temp_dir("recover-mp4");
        std::fs::create_dir_all(&dir).unwrap();
        let id = "noname-phone-20251122T031502Z";
        // Cut mid-fragment, as a kill -9 cannot leave ours but another writer might.
        std::fs::write(dir.join(format!("{id}.mp4")), &MP4[..MP4.len() - 1000]).unwrap();
        let recorder = Recorder::open(dir.clone());
        assert!(recorder.drain(Duration::from_secs(10)).await);
        let info = recorder.get(id).unwrap();
        assert_eq!(info.state, State::Interrupted, "{info:#?}");
        assert_eq!(info.file, format!("{id}.mp4"));
        assert_eq!(info.mime.as_deref(), Some("video/mp4"));
        assert_eq!(
            info.tracks.as_deref(),
            Some("avc1.42c00c 160x120, mp4a 48000 Hz 2 ch")
        );
        let duration = info.duration.unwrap();
        assert!(duration > 2.0 && duration < 3.0, "{info:#?}");
        let file = std::fs::read(dir.join(&info.file)).unwrap();
        assert_eq!(info.bytes, file.len() as u64);
        assert_eq!(&file[file.len() - 12..file.len() - 8], b"mfro");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn recovery_fills_in_what_the_file_tells() {
        let dir = temp_dir("recover");
        std::fs::create_dir_all(&dir).unwrap();
        // A sidecar as a crash leaves it after two generations, and a file with none:
        // both hold MediaRecorder's own unfinalized WebM.
        let crashed = "show-cam-20251122T031500Z";
        let orphan = "noname-mic-20251122T031501Z";
        let sidecar = serde_json::json!({
            "id": crashed, "stream": "cam", "name_prefix": "show",
            "file": format!("{crashed}.webm"), "mime": "video/webm;codecs=vp8,opus",
            "started": "2025-11-22T03:15:00.000Z", "state": "recording",
            "generations": 2, "tracks": null,
        });
        std::fs::write(dir.join(format!("{crashed}.json")), sidecar.to_string()).unwrap();
        for id in [crashed, orphan] {
            std::fs::write(dir.join(format!("{id}.webm")), CHROME).unwrap();
        }

        let recorder = Recorder::open(dir.clone());
        assert!(recorder.drain(Duration::from_secs(10)).await);
        let tracks = "V_VP8 192x144, A_OPUS 48000 Hz 2 ch";
        for (id, generations, mime) in [
            (crashed, 2, "video/webm;codecs=vp8,opus"),
            (orphan, 1, "video/webm"),
        ] {
            let info = recorder.get(id).unwrap();
            assert_eq!(info.state, State::Interrupted, "{info:#?}");
            assert_eq!(info.generations, generations, "{info:#?}");
            assert_eq!(info.tracks.as_deref(), Some(tracks), "{info:#?}");
            assert_eq!(info.mime.as_deref(), Some(mime), "{info:#?}");
            assert!(
                info.duration.unwrap() > 5.0 && info.ended.is_some(),
                "{info:#?}"
            );
            let file = std::fs::read(dir.join(&info.file)).unwrap();
            assert_eq!(info.bytes, file.len() as u64);
            let sidecar = read_sidecar(&dir.join(format!("{id}.json"))).unwrap();
            assert_eq!(sidecar, info, "the sidecar says the same");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
