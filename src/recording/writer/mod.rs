//! One recording's writer task: takes the stream's accepted frames, in order, from a
//! bounded channel, puts each generation in its place (a late tail of the previous one
//! first, a newer one held until the older is done), splices them into the file through
//! [`Splicer`], and finalizes the file when the publish session ends. File I/O runs on
//! the blocking pool, one batch at a time, never on the publisher's task or under a lock.

use super::names;
use super::splice::{Piece, SpliceError, Splicer};
use super::{Recorder, RecordingInfo, State};
use crate::protocol::{FrameHeader, HEADER_LEN};
use crate::sink::Sink;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Frames one recording may have queued before it is stopped as too slow.
pub(super) const QUEUE_FRAMES: usize = 1024;
/// Bytes one recording may have queued before it is stopped as too slow.
pub(super) const QUEUE_BYTES: u64 = 64 << 20;
/// How often written data is flushed to the disk itself (a kill loses nothing anyway).
const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Frames handed to one blocking write batch.
const BATCH: usize = 64;
/// Names tried for one file (`…Z`, `…Z-2`, …) before giving up.
const NAME_ATTEMPTS: u32 = 1000;

/// What the stream side and the writer task both see.
#[derive(Debug, Default)]
pub(super) struct Shared {
    queued_bytes: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl Shared {
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
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        let frames = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        writer = match tokio::task::spawn_blocking(move || {
            writer.frames(frames);
            writer
        })
        .await
        {
            Ok(writer) => writer,
            Err(err) => {
                log::error!("recording writer failed: {err}");
                recorder.recent.ended(&stream, session, Instant::now());
                return;
            }
        };
    }
    // The session is over from here: the time a reconnect is measured from.
    recorder.recent.ended(&stream, session, Instant::now());
    if let Err(err) = tokio::task::spawn_blocking(move || writer.close()).await {
        log::error!("recording writer failed while finalizing: {err}");
    }
}

/// The file being written.
pub(super) struct Output {
    id: String,
    splicer: Splicer,
    /// Apart from the splicer, so that the splicer can write each piece as it makes it.
    disk: Disk,
    last_sync: Instant,
}

/// The file on disk and how far it is written.
struct Disk {
    path: PathBuf,
    file: File,
    written: u64,
    /// The file ends at an element boundary here.
    good: u64,
    io_error: Option<String>,
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
        if !self.open_generation(g) {
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

    fn open_generation(&mut self, g: u64) -> bool {
        self.newest = Some(g);
        if self.out.is_none() && !self.create(None) {
            return false;
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
            Err(SpliceError::Unrecordable(why)) => self.stop(State::Failed, Some(why)),
        }
    }

    /// The open generation cannot continue this file: finish it, start the next file of
    /// the session, and feed it the generation from its start.
    fn split(&mut self, why: String) {
        let Some(out) = &mut self.out else { return };
        let Some((g, frames)) = out.splicer.take_generation() else {
            return;
        };
        log::info!("recording of {}: new file: {why}", self.subject.stream);
        self.finalize(State::Finished, None);
        if !self.create(Some(why)) {
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

    /// Opens a new file for the session, named after its start, and catalogs it. The
    /// first file of a session that follows closely on the stream's previous session
    /// says that it continues that one's last file (`sessions`).
    fn create(&mut self, split_reason: Option<String>) -> bool {
        let started = SystemTime::now();
        let (continues, split_reason) = match split_reason {
            Some(why) => (self.previous_file.clone(), Some(why)),
            None => match self.recorder.recent.continued(
                &self.subject.stream,
                &self.subject.prefix,
                self.subject.session,
                Instant::now(),
            ) {
                Some((file, since)) => (
                    Some(file),
                    Some(format!(
                        "the publisher reconnected: a new publish session {:.1} s after the previous one ended",
                        since.as_secs_f64()
                    )),
                ),
                None => (None, None),
            },
        };
        let info = RecordingInfo {
            id: String::new(),
            stream: self.subject.stream.clone(),
            name_prefix: self.subject.prefix.clone(),
            file: String::new(),
            mime: self.subject.mime.clone(),
            started: names::rfc3339(started),
            ended: None,
            duration: None,
            bytes: 0,
            state: State::Recording,
            error: None,
            split_reason,
            continues,
            generations: 0,
            tracks: None,
        };
        let Some((id, path, opened)) = self.claim_file(info, started) else {
            let why = format!("no free file name after {NAME_ATTEMPTS} tries");
            log::error!("recording of {} failed: {why}", self.subject.stream);
            self.shared.fail(why);
            self.stopped = true;
            return false;
        };
        let file = match opened {
            Ok(file) => file,
            Err(why) => {
                // The entry keeps the id it claimed, which no other recording can have,
                // and names no file that exists: deleting it removes nothing else.
                log::error!("recording of {} failed: {why}", self.subject.stream);
                self.recorder.update(&id, |info| {
                    info.state = State::Failed;
                    info.ended = Some(info.started.clone());
                    info.error = Some(why.clone());
                });
                self.shared.fail(why);
                self.stopped = true;
                return false;
            }
        };
        log::info!("recording {} to {}", self.subject.stream, path.display());
        self.recorder.recent.opened(
            &self.subject.stream,
            &self.subject.prefix,
            self.subject.session,
            &id,
            Instant::now(),
        );
        if let Err(err) = self.recorder.persist(&id) {
            // A sidecar we cannot write is a disk we cannot trust.
            self.out = Some(Output::new(id, path, file, started));
            self.stop(State::Failed, Some(err.to_string()));
            return false;
        }
        self.previous_file = Some(id.clone());
        self.out = Some(Output::new(id, path, file, started));
        true
    }

    /// Claims the first free id for a file started at `started` and creates its file.
    /// Returns the claimed id and the file, or why it could not be created (the id
    /// stays claimed, for the failed entry); None when every name was taken.
    fn claim_file(
        &self,
        mut info: RecordingInfo,
        started: SystemTime,
    ) -> Option<(String, PathBuf, Result<File, String>)> {
        let dir = self.recorder.dir().to_owned();
        let dir_error = std::fs::create_dir_all(&dir)
            .err()
            .map(|err| format!("cannot create {}: {err}", dir.display()));
        for n in 1..=NAME_ATTEMPTS {
            let id = names::stem(&self.subject.prefix, &self.subject.stream, started, n);
            info.id.clone_from(&id);
            info.file = format!("{id}.webm");
            let path = dir.join(&info.file);
            if !self.recorder.claim(info.clone()) {
                continue;
            }
            let opened = match &dir_error {
                // Nothing can be created; still, the failed entry must not name a file
                // that is there.
                Some(_) if path.symlink_metadata().is_ok() => None,
                Some(why) => Some(Err(why.clone())),
                None => match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(file) => Some(Ok(file)),
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => None,
                    Err(err) => Some(Err(format!("cannot create {}: {err}", path.display()))),
                },
            };
            match opened {
                Some(opened) => return Some((id, path, opened)),
                None => self.recorder.release(&id),
            }
        }
        None
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
            self.shared.fail(why.clone());
        }
        self.finalize(state, why);
        self.pending.clear();
        self.stopped = true;
    }

    /// The session ended: every generation in, then the file finalized.
    fn close(mut self) {
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
        log::info!(
            "recording {id} {}: {duration:.1} s, {bytes} bytes{}",
            state.as_str(),
            error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
}

/// Appends each piece; the first failure is kept in `io_error` and stops writing.
impl Sink<Piece> for Disk {
    fn put(&mut self, piece: Piece) {
        if self.io_error.is_some() {
            return;
        }
        match self.file.write_all(&piece.bytes) {
            Ok(()) => {
                self.written += piece.bytes.len() as u64;
                if piece.boundary {
                    self.good = self.written;
                }
            }
            Err(err) => {
                self.io_error = Some(format!("cannot write {}: {err}", self.path.display()));
            }
        }
    }
}

impl Output {
    pub(super) fn new(id: String, path: PathBuf, file: File, started: SystemTime) -> Output {
        Output {
            id,
            splicer: Splicer::new(started),
            disk: Disk {
                path,
                file,
                written: 0,
                good: 0,
                io_error: None,
            },
            last_sync: Instant::now(),
        }
    }

    pub(super) fn splicer(&mut self) -> &mut Splicer {
        &mut self.splicer
    }

    /// Appends `pieces`.
    pub(super) fn write(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            self.disk.put(piece);
        }
    }

    pub(super) fn io_error(&self) -> Option<&str> {
        self.disk.io_error.as_deref()
    }

    fn notices(&mut self) {
        for notice in self.splicer.take_notices() {
            log::warn!("recording {}: {notice}", self.id);
        }
    }
}

/// Cuts the file back to its last whole element if a write failed, then appends the
/// Cues and patches the head. Returns the final length. A disk too full for the Cues
/// still gets its Duration and sizes: only the index is missing then.
pub(super) fn finish_file(out: &mut Output) -> Result<u64, String> {
    let disk = &mut out.disk;
    let path = disk.path.display().to_string();
    if disk.io_error.is_some() || disk.written != disk.good {
        disk.file
            .set_len(disk.good)
            .map_err(|e| format!("cannot truncate {path}: {e}"))?;
        out.splicer.truncate(disk.good);
        disk.written = disk.good;
    }
    let Some(finish) = out.splicer.finish() else {
        return Ok(disk.good);
    };
    let mut len = finish.append_at;
    let mut patches = finish.patches;
    let appended = (|| {
        disk.file.seek(SeekFrom::Start(finish.append_at))?;
        disk.file.write_all(&finish.append)
    })();
    match appended {
        Ok(()) => len += finish.append.len() as u64,
        Err(err) => {
            log::warn!("{path}: no room for the Cues ({err}); finalizing without them");
            disk.file
                .set_len(finish.append_at)
                .map_err(|e| format!("cannot truncate {path}: {e}"))?;
            patches = out
                .splicer
                .finish_without_cues()
                .map(|f| f.patches)
                .unwrap_or_default();
        }
    }
    for (at, bytes) in patches {
        disk.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| disk.file.write_all(&bytes))
            .map_err(|e| format!("cannot finalize {path}: {e}"))?;
    }
    disk.file
        .sync_all()
        .map_err(|e| format!("cannot sync {path}: {e}"))?;
    Ok(len)
}
