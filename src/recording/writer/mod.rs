//! One recording's writer task: takes the stream's accepted frames, in order, from a
//! bounded channel, puts each generation in its place (a late tail of the previous one
//! first, a newer one held until the older is done), splices them into the file through
//! the splicer of its container (WebM or MP4), and finalizes the file when the publish session ends. File I/O runs on
//! the blocking pool, one batch at a time, never on the publisher's task or under a lock.
//!
//! Here: the stream's end of the queue and the task that orders generations. Opening
//! each file of the session is `create`; the file on disk and its finish are `output`.

mod create;
mod output;

use super::container::Container;
use super::splice::SpliceError;
use super::{names, Recorder, State};
use crate::metrics::Metrics;
use crate::protocol::{FrameHeader, HEADER_LEN};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

pub(super) use output::{finish_file, Output};

/// Frames one recording may have queued before it is stopped as too slow.
pub(super) const QUEUE_FRAMES: usize = 1024;
/// Bytes one recording may have queued before it is stopped as too slow.
pub(super) const QUEUE_BYTES: u64 = 64 << 20;
/// How often written data is flushed to the disk itself (a kill loses nothing anyway).
const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Frames handed to one blocking write batch.
const BATCH: usize = 64;

/// What the stream side and the writer task both see.
#[derive(Debug, Default)]
pub(super) struct Shared {
    queued_bytes: AtomicU64,
    failure: Mutex<Option<String>>,
    /// The catalog entry of the file being written, from its claim to its finalizing:
    /// what to mark failed if the writer is lost to a panic, and what a cluster node
    /// says it is recording.
    open_entry: Mutex<Option<String>>,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Shared {
        Shared {
            metrics: Some(metrics),
            ..Shared::default()
        }
    }

    /// Frames waiting for the writer grew (or, negative, shrank) by `bytes`.
    fn queued(&self, bytes: i64) {
        if let Some(metrics) = &self.metrics {
            metrics.recording_queue(bytes);
        }
    }

    /// Stops the recording with `why`, unless it already stopped.
    pub fn fail(&self, why: String) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            *failure = Some(why);
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}

/// The stream's end of a recording: frames go in, never blocking.
#[derive(Debug)]
pub struct Session {
    pub(super) tx: mpsc::Sender<Bytes>,
    pub(super) shared: Arc<Shared>,
}

impl Session {
    /// The id of the file being written now (none between a split's two files).
    pub fn file(&self) -> Option<String> {
        self.shared.open_entry.lock().clone()
    }

    /// Queues one accepted frame (the relay's own shared bytes). False means the
    /// recording has stopped (disk error, or the disk is too slow): drop the session.
    pub fn send(&self, frame: Bytes) -> bool {
        if self.shared.failure.lock().is_some() {
            return false;
        }
        let len = frame.len() as u64;
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        let full = if queued > QUEUE_BYTES {
            true
        } else {
            match self.tx.try_send(frame) {
                Ok(()) => false,
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        };
        if !full {
            self.shared.queued(len as i64);
        }
        if full {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.shared.fail(format!(
                "the disk is too slow: {} MiB of media waited to be written; recording stopped, the live stream goes on",
                queued >> 20
            ));
            return false;
        }
        true
    }
}

/// Who is being recorded.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    pub stream: String,
    pub prefix: String,
    pub mime: Option<String>,
    /// This publish session's number (`sessions::Recent`).
    pub session: u64,
    /// Another node's file the session's first file continues (a cluster publisher
    /// that moved here).
    pub continues: Option<super::ContinuedFrom>,
}

/// Runs until the stream drops its `Session` (the publish session ended) and the file
/// is finalized.
pub(super) async fn run(
    _active: super::ActiveGuard,
    recorder: Arc<Recorder>,
    subject: Subject,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let (stream, session) = (subject.stream.clone(), subject.session);
    let mut writer = Writer {
        recorder: recorder.clone(),
        shared,
        subject,
        out: None,
        pending: BTreeMap::new(),
        newest: None,
        previous_file: None,
        stopped: false,
    };
    let shared = writer.shared.clone();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        let frames = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        writer = match on_blocking_pool(writer, |w| w.frames(frames)).await {
            Some(writer) => writer,
            None => {
                lost(&recorder, &shared);
                recorder.recent.ended(&stream, session, Instant::now());
                return;
            }
        };
    }
    // The session is over from here: the time a reconnect is measured from.
    recorder.recent.ended(&stream, session, Instant::now());
    if on_blocking_pool(writer, Writer::close).await.is_none() {
        lost(&recorder, &shared);
    }
}

/// Runs `work` on the writer in the blocking pool. A panic there (a bug: no media may
/// cause one, but a file left `recording` could never be deleted) stops the recording
/// as failed, and the live stream goes on; the writer comes back to take no more.
async fn on_blocking_pool(
    mut writer: Writer,
    work: impl FnOnce(&mut Writer) + Send + 'static,
) -> Option<Writer> {
    let done = tokio::task::spawn_blocking(move || {
        let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut writer)));
        if let Err(panic) = worked {
            writer.crashed(panic_message(&*panic));
        }
        writer
    });
    match done.await {
        Ok(writer) => Some(writer),
        Err(err) => {
            log::error!("recording writer lost: {err}");
            None
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or(panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// The writer itself is gone (it panicked while handling a panic): its open entry, if
/// any, is marked failed all the same.
fn lost(recorder: &Recorder, shared: &Shared) {
    let why = "the recording writer was lost; recording stopped".to_owned();
    shared.fail(why.clone());
    if let Some(id) = shared.open_entry.lock().take() {
        mark_failed(recorder, &id, None, why);
    }
}

/// Ends the catalog entry `id` as failed with `why`, without touching its file.
fn mark_failed(recorder: &Recorder, id: &str, bytes: Option<u64>, why: String) {
    recorder.update(id, |info| {
        info.state = State::Failed;
        info.ended = Some(names::rfc3339(SystemTime::now()));
        info.bytes = bytes.unwrap_or(info.bytes);
        info.error = Some(why);
    });
    if let Err(err) = recorder.persist(id) {
        log::error!("recording {id}: {err}");
    }
}

struct Writer {
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    subject: Subject,
    out: Option<Output>,
    /// Frames of generations newer than the open one, waiting their turn.
    pending: BTreeMap<u64, Vec<(u64, Bytes)>>,
    /// The newest generation opened: anything older is over.
    newest: Option<u64>,
    previous_file: Option<String>,
    stopped: bool,
}

impl Writer {
    fn frames(&mut self, frames: Vec<Bytes>) {
        let batch: u64 = frames.iter().map(|f| f.len() as u64).sum();
        self.shared.queued(-(batch as i64));
        if !self.stopped {
            if let Some(why) = self.recorder.disk.refuses(batch) {
                self.recorder.disk.metrics().recording_stopped_low_disk();
                self.stop(State::Failed, Some(why));
            }
        }
        let written_before = self.out.as_ref().map_or(0, |o| o.disk.good);
        for frame in frames {
            self.shared
                .queued_bytes
                .fetch_sub(frame.len() as u64, Ordering::Relaxed);
            let Ok(header) = FrameHeader::parse(&frame) else {
                continue;
            };
            if !self.stopped {
                self.frame(header, frame.slice(HEADER_LEN..));
            }
        }
        if self.stopped {
            return;
        }
        if let Some(why) = self.shared.failure() {
            // The stream gave up on us (too slow): finish what is written.
            self.stop(State::Failed, Some(why));
            return;
        }
        if let Some(out) = &mut self.out {
            let written = out.disk.good.saturating_sub(written_before);
            self.recorder.disk.metrics().recording_written(written);
            if out.last_sync.elapsed() >= SYNC_EVERY {
                out.last_sync = Instant::now();
                let disk = &mut out.disk;
                if let Err(err) = disk.file.sync_data() {
                    disk.io_error = Some(format!("cannot sync {}: {err}", disk.path.display()));
                }
            }
            let (bytes, duration) = (out.disk.good, out.splicer.duration_secs());
            self.recorder.update(&out.id, |info| {
                info.bytes = bytes;
                info.duration = Some(duration);
            });
            if let Some(why) = out.disk.io_error.clone() {
                self.stop(State::Failed, Some(why));
            }
        }
    }

    fn current(&self) -> Option<u64> {
        self.out.as_ref().and_then(|o| o.splicer.current())
    }

    fn frame(&mut self, header: FrameHeader, payload: Bytes) {
        let g = header.generation;
        let current = self.current();
        if current == Some(g) {
            self.push_current(header.offset, payload);
            return;
        }
        if self.newest.is_some_and(|newest| g <= newest) {
            log::info!(
                "recording of {}: a late frame of generation {g} (offset {}) came after it was closed; not recorded",
                self.subject.stream,
                header.offset
            );
            return;
        }
        self.pending
            .entry(g)
            .or_default()
            .push((header.offset, payload));
        if current.is_none() {
            self.advance();
        } else if header.offset > 0 {
            // A chunk of a newer generation: the publisher's chunk socket has moved on,
            // so the open generation's tail is all in.
            while !self.stopped && self.current().is_some_and(|c| c < g) {
                self.advance();
            }
        }
        // A blob of a generation newer than one already waiting: the open one can get
        // no more late tail (the relay only keeps one previous generation).
        while !self.stopped && self.pending.len() >= 2 {
            self.advance();
        }
    }

    /// Closes the open generation and opens the oldest waiting one.
    fn advance(&mut self) {
        self.end_generation();
        let Some((g, mut frames)) = self.pending.pop_first() else {
            return;
        };
        frames.sort_by_key(|(offset, _)| *offset);
        let head = frames.first().filter(|(offset, _)| *offset == 0);
        let container = head.and_then(|(_, payload)| Container::of_head(payload));
        if !self.open_generation(g, container) {
            return;
        }
        for (offset, payload) in frames {
            if self.stopped {
                return;
            }
            self.push_current(offset, payload);
        }
    }

    fn end_generation(&mut self) {
        if let Some(out) = &mut self.out {
            out.splicer.end_generation(&mut out.disk);
        }
        self.notices();
    }

    /// Opens generation `g` in the open file, or a new one when there is none or the
    /// generation's `container` (None: its head has not come) is not the file's.
    fn open_generation(&mut self, g: u64, container: Option<Container>) -> bool {
        self.newest = Some(g);
        let current = self.out.as_ref().map(|o| o.splicer.container());
        if let (Some(current), Some(container)) = (current, container) {
            if current != container {
                let why = format!(
                    "the container changed from {} to {}",
                    current.name(),
                    container.name()
                );
                log::info!("recording of {}: new file: {why}", self.subject.stream);
                self.finalize(State::Finished, None);
                if !self.create(Some(why), container) {
                    return false;
                }
            }
        }
        if self.out.is_none() {
            let container =
                container.unwrap_or_else(|| Container::of_mime(self.subject.mime.as_deref()));
            if !self.create(None, container) {
                return false;
            }
        }
        let out = self.out.as_mut().expect("created above");
        out.splicer.begin(g);
        let tracks = Some(out.splicer.description().to_owned()).filter(|d| !d.is_empty());
        self.recorder.update(&out.id, |info| {
            info.generations = out.splicer.generations();
            info.tracks = tracks;
        });
        // Once per generation, so that after a crash the sidecar still knows how many
        // went in (the file does not say).
        if let Err(err) = self.recorder.persist(&out.id) {
            log::warn!("recording {}: {err}", out.id);
        }
        true
    }

    fn push_current(&mut self, offset: u64, payload: Bytes) {
        let Some(out) = &mut self.out else { return };
        let received = out.splicer.received();
        let end = offset + payload.len() as u64;
        if end <= received {
            return;
        }
        if offset > received {
            log::warn!(
                "recording of {}: generation {:?} has a gap (bytes {received}..{offset} never came); the rest of it is not recorded",
                self.subject.stream,
                out.splicer.current()
            );
            return;
        }
        let payload = payload.slice((received - offset) as usize..);
        let result = out.splicer.push(payload, &mut out.disk);
        self.notices();
        match result {
            Ok(()) => {}
            Err(SpliceError::Incompatible(why)) => self.split(why),
            Err(SpliceError::Unrecordable(why) | SpliceError::Timeline(why)) => {
                self.stop(State::Failed, Some(why))
            }
        }
    }

    /// The open generation cannot continue this file: finish it, start the next file of
    /// the session, and feed it the generation from its start.
    fn split(&mut self, why: String) {
        let Some(out) = &mut self.out else { return };
        let Some((g, frames)) = out.splicer.take_generation() else {
            return;
        };
        let container = frames
            .first()
            .and_then(|head| Container::of_head(head))
            .unwrap_or(out.splicer.container());
        log::info!("recording of {}: new file: {why}", self.subject.stream);
        self.finalize(State::Finished, None);
        if !self.create(Some(why), container) {
            return;
        }
        let out = self.out.as_mut().expect("created above");
        out.splicer.begin(g);
        let mut result = Ok(());
        for payload in frames {
            result = out.splicer.push(payload, &mut out.disk);
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => {}
            Err(err) => self.stop(State::Failed, Some(err.to_string())),
        }
    }

    fn notices(&mut self) {
        if let Some(out) = &mut self.out {
            out.notices();
        }
    }

    /// Stops recording for the rest of the session, finalizing what is on disk.
    fn stop(&mut self, state: State, why: Option<String>) {
        if let Some(why) = &why {
            log::error!("recording of {} stopped: {why}", self.subject.stream);
            self.recorder
                .disk
                .metrics()
                .recording_failed(failure_reason(why));
            self.shared.fail(why.clone());
        }
        self.finalize(state, why);
        self.pending.clear();
        self.stopped = true;
    }

    /// A panic in the middle of writing: the splicer's state is not to be trusted, so
    /// the file is only cut back to its last whole element (it plays that far, without
    /// Cues) and its entry marked failed. Nothing more is written for this session.
    fn crashed(&mut self, panic: &str) {
        let why = format!(
            "the recording writer failed ({panic}); recording stopped, the live stream goes on"
        );
        log::error!("recording of {}: {why}", self.subject.stream);
        self.shared.fail(why.clone());
        self.stopped = true;
        self.pending.clear();
        let bytes = self.out.take().map(|out| {
            let _ = out.disk.file.set_len(out.disk.good);
            out.disk.good
        });
        if let Some(id) = self.shared.open_entry.lock().take() {
            mark_failed(&self.recorder, &id, bytes, why);
        }
    }

    /// The session ended: every generation in, then the file finalized.
    fn close(&mut self) {
        if self.stopped {
            return;
        }
        while !self.stopped && (self.current().is_some() || !self.pending.is_empty()) {
            self.advance();
        }
        match self.shared.failure() {
            Some(why) => self.stop(State::Failed, Some(why)),
            None => {
                let error = self.out.as_ref().and_then(|o| o.disk.io_error.clone());
                let state = if error.is_some() {
                    State::Failed
                } else {
                    State::Finished
                };
                self.finalize(state, error);
            }
        }
    }

    /// Makes the open file seekable (Cues, Duration, sizes) and records its end.
    fn finalize(&mut self, state: State, why: Option<String>) {
        let Some(mut out) = self.out.take() else {
            return;
        };
        out.splicer.end_generation(&mut out.disk);
        out.notices();
        let finished = finish_file(&mut out);
        let mut error = why.or(out.disk.io_error.clone());
        if let Err(err) = &finished {
            log::error!("recording {}: {err}", out.id);
            error.get_or_insert_with(|| err.clone());
        }
        let state = if error.is_some() && state == State::Finished {
            State::Failed
        } else {
            state
        };
        let bytes = finished.unwrap_or(out.disk.good);
        let duration = out.splicer.duration_secs();
        let tracks = Some(out.splicer.description().to_owned()).filter(|d| !d.is_empty());
        let id = out.id.clone();
        self.recorder.update(&id, |info| {
            info.state = state;
            info.ended = Some(names::rfc3339(SystemTime::now()));
            info.bytes = bytes;
            info.duration = Some(duration);
            info.error = error.clone();
            info.generations = out.splicer.generations();
            info.tracks = tracks.clone();
        });
        if let Err(err) = self.recorder.persist(&id) {
            log::error!("recording {id}: {err}");
        }
        self.shared.open_entry.lock().take();
        log::info!(
            "recording {id} {}: {duration:.1} s, {bytes} bytes{}",
            state.as_str(),
            error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
}

/// The `reason` label of `blobcast_recording_failures_total` for a stop's message.
fn failure_reason(why: &str) -> &'static str {
    if why.contains("--min-free-disk") {
        "low_disk"
    } else if why.contains("too slow") {
        "disk_too_slow"
    } else if why.starts_with("cannot ") || why.contains("No space") {
        "io"
    } else {
        "media"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::RecordingInfo;

    const CHROME: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");

    fn only(recorder: &Recorder) -> RecordingInfo {
        let list = recorder.list();
        assert_eq!(list.len(), 1, "{list:#?}");
        list[0].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_the_writer_fails_its_recording_instead_of_leaving_it_recording() {
        let dir = std::env::temp_dir().join(format!("blobcast-panic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = Recorder::open(dir.clone());
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            recorder: recorder.clone(),
            shared: shared.clone(),
            subject: Subject {
                stream: "cam".into(),
                prefix: names::sanitize_prefix(None),
                mime: None,
                session: 1,
                continues: None,
            },
            out: None,
            pending: BTreeMap::new(),
            newest: None,
            previous_file: None,
            stopped: false,
        };
        let blob = FrameHeader {
            generation: 1,
            offset: 0,
        }
        .frame(CHROME);
        let writer = on_blocking_pool(writer, |w| w.frames(vec![blob]))
            .await
            .unwrap();
        let info = only(&recorder);
        assert_eq!(info.state, State::Recording);
        assert!(info.bytes > 0);

        let mut writer = on_blocking_pool(writer, |_| panic!("a bug in the splicer"))
            .await
            .expect("the writer comes back");
        let info = only(&recorder);
        assert_eq!(info.state, State::Failed, "{info:#?}");
        assert!(info.ended.is_some());
        let error = info.error.as_deref().unwrap();
        assert!(error.contains("a bug in the splicer"), "{error}");
        // The stream side stops sending, and nothing more is written.
        assert!(shared.failure().is_some());
        writer.close();
        assert_eq!(only(&recorder), info);
        // The sidecar says so too, and the entry can be deleted.
        let sidecar: RecordingInfo =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{}.json", info.id))).unwrap())
                .unwrap();
        assert_eq!(sidecar.state, State::Failed);
        recorder.delete(&info.id).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
