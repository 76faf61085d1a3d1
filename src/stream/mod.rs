//! One live stream: its `Buffer` behind a short-held lock, the signals that wake its
//! viewers, and who is attached to it. `registry` owns the set of streams.

pub mod buffer;
pub mod clock;
mod generation;
pub mod index;
pub mod registry;
mod snapshot;
pub mod tap;
pub mod viewers;

use crate::metrics::Metrics;
use crate::protocol::{OutFrame, StreamName};
use crate::recording::{ContinuedFrom, Recorder, Slot};
use buffer::{Accepted, Buffer, BufferLimits, ChunkCursor, FrameError, Lagging, LogReader, Resume};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};

pub use registry::{Refusal, Registry};
pub use snapshot::Snapshot;
pub use tap::Tap;

/// What blob viewers follow: they are woken when it changes, not for every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// The publish session (see `Buffer::epoch`): a generation is only the same one
    /// within the same epoch.
    pub epoch: u64,
    /// Generations started on this stream so far (see `Buffer::generations_started`).
    pub generations_started: u64,
    pub live: bool,
    pub generation: Option<u64>,
    pub mime: Option<String>,
}

/// The publisher session holding a stream, and how many of its two sockets are open.
#[derive(Debug, Clone)]
pub(crate) struct PublisherSession {
    pub id: String,
    pub sockets: u8,
    pub since: SystemTime,
}

/// Attachment counts; changed only under the registry lock so that a stream is dropped
/// exactly when its last user leaves.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    pub publisher: Option<PublisherSession>,
    pub chunk_viewers: usize,
    pub blob_viewers: usize,
    /// A cluster replica feeding the stream from NATS (src/cluster) keeps it, unseen.
    pub replicas: usize,
}

impl Presence {
    fn is_idle(&self) -> bool {
        self.publisher.is_none()
            && self.chunk_viewers == 0
            && self.blob_viewers == 0
            && self.replicas == 0
    }

    pub(crate) fn has_viewers(&self) -> bool {
        self.chunk_viewers > 0 || self.blob_viewers > 0
    }
}

/// Ingest rate over the last few seconds, for the API.
#[derive(Debug)]
struct RateMeter {
    window_start: Instant,
    window_bytes: u64,
    last_rate: f64,
}

const RATE_WINDOW_SECS: f64 = 5.0;

impl RateMeter {
    fn new() -> RateMeter {
        RateMeter {
            window_start: Instant::now(),
            window_bytes: 0,
            last_rate: 0.0,
        }
    }

    fn add(&mut self, bytes: u64) {
        self.roll();
        self.window_bytes += bytes;
    }

    fn roll(&mut self) {
        let elapsed = self.window_start.elapsed().as_secs_f64();
        if elapsed >= RATE_WINDOW_SECS {
            self.last_rate = self.window_bytes as f64 * 8.0 / elapsed;
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
    }

    fn bits_per_second(&mut self) -> f64 {
        self.roll();
        let elapsed = self.window_start.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            self.window_bytes as f64 * 8.0 / elapsed
        } else {
            self.last_rate
        }
    }
}

pub struct Stream {
    name: StreamName,
    /// Written by the publisher's frames; read by every viewer at once (a read lock: the
    /// viewers woken by one chunk do not queue behind each other).
    buffer: RwLock<Buffer>,
    /// Bumped on every change to the media; chunk viewers wait on it.
    media_changed: watch::Sender<u64>,
    status: watch::Sender<Status>,
    pub(crate) presence: Mutex<Presence>,
    ingest: Mutex<RateMeter>,
    metrics: Arc<Metrics>,
    /// Set when recording is on: each publish session becomes a recording.
    recorder: Option<Arc<Recorder>>,
    /// Locked only inside the buffer lock, so frames reach the recording in order.
    recording: Mutex<Slot>,
    /// Why the publish session ended, once it has (for the `publish_end` event).
    end_reason: Mutex<Option<String>>,
    /// Set when an admin kicks the publisher; its sockets close on it.
    kicked: watch::Sender<bool>,
    /// The open publisher socket of each kind (blob, chunk), told when a newer socket
    /// of its session takes its place: a reloaded page's old sockets may be half-open.
    publisher_sockets: Mutex<[Option<Arc<Notify>>; 2]>,
    /// Set while a cluster node publishes this stream to NATS; locked inside the buffer
    /// lock, so the tap sees frames in the buffer's order.
    tap: Mutex<Option<Arc<dyn Tap>>>,
    /// False while a cluster replica feeds the stream: the publisher's node records it.
    records: AtomicBool,
    /// Set inside the buffer lock, so a viewer's read and its arrival time agree.
    clock: clock::StreamClock,
    /// Each viewer socket's figures, for the stats API.
    viewers: Arc<viewers::ViewerTable>,
}

/// A snapshot of one stream for `/api/streams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    pub name: StreamName,
    pub live: bool,
    pub mime: Option<String>,
    pub generation: Option<u64>,
    pub buffered_bytes: u64,
    pub viewers: usize,
    pub publisher_connected_since: Option<u64>,
    pub ingest_bits_per_second: u64,
    /// What the media itself says, once its WebM Tracks or MP4 moov have arrived.
    pub media: Option<MediaInfo>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MediaInfo {
    /// `webm`, `matroska` or `mp4`.
    pub container: String,
    /// A Matroska CodecID (`V_VP8`) or an MP4 sample entry (`avc1.42e01e`, `hvc1`).
    pub video_codec: Option<String>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub audio_codec: Option<String>,
    pub audio_sample_rate: Option<f64>,
    pub audio_channels: Option<u64>,
}

impl From<&crate::webm::StreamInfo> for MediaInfo {
    fn from(info: &crate::webm::StreamInfo) -> MediaInfo {
        MediaInfo {
            container: info.doc_type.clone(),
            video_codec: info.video.as_ref().map(|v| v.codec_id.clone()),
            width: info.video.as_ref().map(|v| v.width),
            height: info.video.as_ref().map(|v| v.height),
            audio_codec: info.audio.as_ref().map(|a| a.codec_id.clone()),
            audio_sample_rate: info.audio.as_ref().map(|a| a.sampling_frequency),
            audio_channels: info.audio.as_ref().map(|a| a.channels),
        }
    }
}

/// What a joining blob viewer is sent first.
#[derive(Debug)]
/// What a chunk viewer's read brought besides frames.
pub struct ChunksRead {
    /// When the newest frame read arrived (for the fan-out latency: the batch's other
    /// frames are older still).
    pub arrived: Option<Instant>,
    /// The viewer lagged and was moved ahead.
    pub jumped: Option<buffer::Jump>,
}

impl Stream {
    pub(crate) fn new(
        name: StreamName,
        limits: BufferLimits,
        metrics: Arc<Metrics>,
        recorder: Option<Arc<Recorder>>,
    ) -> Stream {
        let buffer = Buffer::with_gauge(limits, metrics.buffered_bytes_gauge());
        let status = Status {
            epoch: buffer.epoch(),
            ..Status::default()
        };
        Stream {
            name,
            buffer: RwLock::new(buffer),
            media_changed: watch::Sender::new(0),
            status: watch::Sender::new(status),
            presence: Mutex::new(Presence::default()),
            ingest: Mutex::new(RateMeter::new()),
            metrics,
            recorder,
            recording: Mutex::new(Slot::default()),
            end_reason: Mutex::new(None),
            kicked: watch::Sender::new(false),
            publisher_sockets: Mutex::default(),
            tap: Mutex::new(None),
            records: AtomicBool::new(true),
            clock: clock::StreamClock::default(),
            viewers: Arc::default(),
        }
    }

    /// Whether frames accepted from now on are recorded on this node.
    pub fn set_records(&self, on: bool) {
        self.records.store(on, Ordering::Relaxed);
    }

    /// Copies this stream's publisher input to `tap` from now on (None: stop).
    pub fn set_tap(&self, tap: Option<Arc<dyn Tap>>) {
        let _buffer = self.buffer.write();
        *self.tap.lock() = tap;
    }

    pub fn name(&self) -> &StreamName {
        &self.name
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn watch_media(&self) -> watch::Receiver<u64> {
        self.media_changed.subscribe()
    }

    pub fn start(&self, mime: String) {
        {
            let mut buffer = self.buffer.write();
            buffer.set_mime(mime.clone());
            if let Some(tap) = &*self.tap.lock() {
                tap.started(&mime);
            }
        }
        self.status.send_if_modified(|s| {
            let changed = s.mime.as_deref() != Some(&mime);
            s.mime = Some(mime);
            changed
        });
    }

    /// The publisher's stop: the session ends once the buffer holds the generation and
    /// length it names (at once, without them).
    pub fn stop(&self, at: Option<(u64, u64)>) {
        let now = self.buffer.write().request_stop(at);
        if now {
            self.end();
        }
    }

    /// Ends the stream as [`Stream::end`] does, saying why (the session's end reason).
    pub fn end_with(&self, reason: &str) {
        *self.end_reason.lock() = Some(reason.to_owned());
        self.end();
    }

    /// An admin ends the publish session: the stream ends, and the publisher's sockets
    /// close with `close::KICKED`.
    pub fn kick(&self) {
        self.end_with("kicked by admin");
        self.kicked.send_replace(true);
    }

    /// Makes the caller the publisher socket of its kind (0: blob, 1: chunk); whoever
    /// held that place is told through its `Notify`, and closes.
    pub fn take_publisher_socket(&self, kind: usize) -> Arc<Notify> {
        let mine = Arc::new(Notify::new());
        let previous = self.publisher_sockets.lock()[kind].replace(mine.clone());
        if let Some(previous) = previous {
            // A permit, not a wake-up: the old socket may be busy with a frame just now.
            previous.notify_one();
        }
        mine
    }

    /// Resolves once the publisher has been kicked from the current session.
    pub fn watch_kick(&self) -> watch::Receiver<bool> {
        self.kicked.subscribe()
    }

    pub(crate) fn take_end_reason(&self) -> Option<String> {
        self.end_reason.lock().take()
    }

    /// The publisher stopped or is gone: viewers are told the stream ended.
    pub fn end(&self) {
        self.end_reason
            .lock()
            .get_or_insert_with(|| "publisher stopped".into());
        {
            let mut buffer = self.buffer.write();
            buffer.stop();
            self.clock.ended();
            self.recording.lock().end();
            if let Some(tap) = &*self.tap.lock() {
                tap.ended();
            }
        }
        self.media_changed.send_modify(|v| *v += 1);
        self.status.send_if_modified(|s| {
            let was_live = s.live;
            s.live = false;
            s.generation = None;
            was_live
        });
    }

    /// A new publish session, `session` its id.
    pub(crate) fn reset_session(&self, session: &str) {
        *self.end_reason.lock() = None;
        self.kicked.send_replace(false);
        {
            let mut buffer = self.buffer.write();
            buffer.reset_session(buffer::session_epoch(self.name.as_str(), session));
            self.recording.lock().reset();
            // Hellos name the new session from now on, live or not yet.
            self.status.send_modify(|s| s.epoch = buffer.epoch());
        }
        *self.ingest.lock() = RateMeter::new();
    }

    /// This session was recorded into `file` on `node` before it moved here (a cluster
    /// publisher whose node died): its recording here says it continues that file.
    pub fn continue_recording(&self, node: &str, file: &str, reason: String) {
        self.recording.lock().continue_from(ContinuedFrom {
            node: node.to_owned(),
            file: file.to_owned(),
            reason,
        });
    }

    /// The id of the file this node is recording the session into now, if any.
    pub fn recording_file(&self) -> Option<String> {
        self.recording.lock().file()
    }

    /// The publisher's `?name_prefix=`, for the file name of its next recording.
    pub fn set_name_prefix(&self, prefix: Option<String>) {
        self.recording.lock().set_prefix(prefix);
    }

    pub fn accept_blob(&self, frame: Bytes) -> Result<Accepted, FrameError> {
        self.accept(frame, true, None)
    }

    pub fn accept_chunk(&self, frame: Bytes) -> Result<Accepted, FrameError> {
        self.accept(frame, false, None)
    }

    /// A chunk that starts past the current generation's end, its bytes from `join_at`
    /// on a keyframe-led cluster: a replica joining the log at the live edge (see
    /// `Buffer::accept_after_hole`).
    pub fn accept_after_hole(&self, frame: Bytes, join_at: u64) -> Result<Accepted, FrameError> {
        self.accept(frame, false, Some(join_at))
    }

    /// Whether the current generation is `generation` and holds its init segment.
    pub fn holds_init_of(&self, generation: u64) -> bool {
        self.buffer.read().holds_init_of(generation)
    }

    /// The current generation's hole, if a replica left one: (generation, from, to).
    pub fn hole(&self) -> Option<(u64, u64, u64)> {
        self.buffer.read().hole()
    }

    /// Fills the current generation's hole with its frames from the start (see
    /// `Buffer::fill_hole`); viewers waiting for it are told.
    pub fn fill_hole(&self, head: Vec<Bytes>) -> bool {
        let filled = self.buffer.write().fill_hole(head);
        if filled {
            self.media_changed.send_modify(|v| *v += 1);
        }
        filled
    }

    fn accept(
        &self,
        frame: Bytes,
        is_blob: bool,
        after_hole: Option<u64>,
    ) -> Result<Accepted, FrameError> {
        let len = frame.len() as u64;
        let (accepted, epoch, generations_started, generation, mime, notice, stop) = {
            let mut buffer = self.buffer.write();
            let records = self.records.load(Ordering::Relaxed);
            let recorded = self
                .recorder
                .as_ref()
                .filter(|_| records)
                .map(|_| frame.clone());
            let tapped = self.tap.lock().clone().map(|tap| (tap, frame.clone()));
            let accepted = match after_hole {
                _ if is_blob => buffer.accept_blob(frame)?,
                Some(join_at) => buffer.accept_after_hole(frame, join_at)?,
                None => buffer.accept_chunk(frame)?,
            };
            match accepted {
                Accepted::NewGeneration { .. } => self.clock.frame_arrived(true),
                Accepted::Appended => self.clock.frame_arrived(false),
                Accepted::Held | Accepted::Dropped => {}
            }
            if let Some((tap, frame)) = tapped.filter(|_| accepted != Accepted::Dropped) {
                tap.accepted(&frame, is_blob, accepted);
            }
            if let (Some(recorder), Some(frame)) = (&self.recorder, recorded) {
                // Under the buffer lock: the recording gets frames in the buffer's order.
                let (starts, frames) = match accepted {
                    Accepted::NewGeneration { .. } => (true, buffer.snapshot()),
                    Accepted::Appended => (false, vec![frame]),
                    Accepted::Held | Accepted::Dropped => (false, Vec::new()),
                };
                if !frames.is_empty() {
                    self.recording.lock().record(
                        recorder,
                        self.name.as_str(),
                        buffer.mime(),
                        starts,
                        frames,
                    );
                }
            }
            (
                accepted,
                buffer.epoch(),
                buffer.generations_started(),
                buffer.generation(),
                buffer.mime().map(str::to_owned),
                buffer.take_notice(),
                buffer.stop_reached(),
            )
        };
        if let Some(notice) = notice {
            log::warn!("stream {}: {notice}", self.name);
        }
        self.metrics.frame_in(len, accepted == Accepted::Dropped);
        match accepted {
            Accepted::NewGeneration { .. } => {
                self.ingest.lock().add(len);
                self.media_changed.send_modify(|v| *v += 1);
                self.status.send_replace(Status {
                    epoch,
                    generations_started,
                    live: true,
                    generation,
                    mime,
                });
            }
            Accepted::Appended => {
                self.ingest.lock().add(len);
                self.media_changed.send_modify(|v| *v += 1);
            }
            Accepted::Held | Accepted::Dropped => {}
        }
        if stop {
            self.end();
        }
        Ok(accepted)
    }

    /// The current generation's epoch, number and blob.
    pub fn current_blob(&self) -> Option<(u64, u64, OutFrame)> {
        let buffer = self.buffer.read();
        let (generation, blob) = buffer.current_blob()?;
        Some((buffer.epoch(), generation, blob))
    }

    pub fn chunk_cursor(&self, resume: Option<Resume>) -> ChunkCursor {
        self.buffer.read().cursor(resume)
    }

    /// Reads what `cursor` is owed into `out` (moving a lagging viewer that `may_jump`
    /// to the newest keyframe cluster, see `Buffer::read_chunks`).
    ///
    /// `reader` is the viewer's place in the current generation: while it is there,
    /// what was appended since is read without the stream's lock (see
    /// `buffer::read_appended`); anything else goes through the buffer, which sets it.
    pub fn read_chunks(
        &self,
        cursor: &mut ChunkCursor,
        reader: &mut Option<LogReader>,
        max_behind: u64,
        may_jump: bool,
        out: &mut Vec<OutFrame>,
    ) -> Result<ChunksRead, Lagging> {
        let unlocked = reader
            .as_mut()
            .is_some_and(|r| buffer::read_appended(r, cursor, max_behind, out));
        let jumped = if unlocked {
            None
        } else {
            let buffer = self.buffer.read();
            let jumped = buffer.read_chunks(cursor, max_behind, may_jump, out)?;
            *reader = buffer.log_reader(cursor);
            jumped
        };
        Ok(ChunksRead {
            arrived: self.clock.last_arrival().filter(|_| !out.is_empty()),
            jumped,
        })
    }

    /// The stats slots of this stream's viewer sockets.
    pub fn viewers(&self) -> &Arc<viewers::ViewerTable> {
        &self.viewers
    }

    /// The figures `/metrics` shows for this stream.
    pub fn figures(&self) -> (usize, usize, f64, Option<Duration>, u64) {
        let buffered = self.buffer.read().len();
        let (blob, chunk) = {
            let presence = self.presence.lock();
            (presence.blob_viewers, presence.chunk_viewers)
        };
        let rate = self.ingest.lock().bits_per_second();
        (blob, chunk, rate, self.clock.generation_age(), buffered)
    }

    pub fn info(&self) -> StreamInfo {
        let (generation, buffered_bytes, mime, media) = {
            let b = self.buffer.read();
            let media = b.media_info().map(MediaInfo::from);
            (b.generation(), b.len(), b.mime().map(str::to_owned), media)
        };
        let presence = self.presence.lock();
        StreamInfo {
            name: self.name.clone(),
            live: self.status.borrow().live,
            mime,
            generation,
            buffered_bytes,
            viewers: presence.chunk_viewers.max(presence.blob_viewers),
            publisher_connected_since: presence.publisher.as_ref().map(|p| {
                p.since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
            ingest_bits_per_second: self.ingest.lock().bits_per_second() as u64,
            media,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameHeader;
    use std::sync::mpsc;

    #[test]
    fn a_viewer_at_the_live_edge_is_not_held_up_by_the_publishers_lock() {
        let stream = Arc::new(Stream::new(
            StreamName::parse("s").unwrap(),
            BufferLimits {
                max_generation_bytes: 1 << 20,
            },
            Arc::new(Metrics::new()),
            None,
        ));
        let frame = |offset, payload: &[u8]| {
            FrameHeader {
                generation: 1,
                offset,
            }
            .frame(payload)
        };
        stream.accept_blob(frame(0, b"blob")).unwrap();
        let mut cursor = stream.chunk_cursor(None);
        let mut reader = None;
        let mut out = Vec::new();
        stream
            .read_chunks(&mut cursor, &mut reader, u64::MAX, false, &mut out)
            .unwrap();
        assert!(out.is_empty() && reader.is_some());
        stream.accept_chunk(frame(4, b"chunk")).unwrap();
        // The publisher's path holds the lock (appending the next chunk): the viewer,
        // woken by the last one, reads it meanwhile.
        let publisher = stream.buffer.write();
        let (done, read) = mpsc::channel();
        let viewer = {
            let stream = stream.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                stream
                    .read_chunks(&mut cursor, &mut reader, u64::MAX, false, &mut out)
                    .unwrap();
                done.send(out.len()).unwrap();
            })
        };
        let got = read.recv_timeout(Duration::from_secs(5));
        drop(publisher);
        viewer.join().unwrap();
        assert_eq!(got, Ok(1), "the viewer waited for the publisher's lock");
    }
}
