//! A stream's media state: the current generation's frames (blob first, then chunks),
//! the previous generation kept open for a late tail, and chunks held until their blob
//! arrives. Pure and synchronous: the caller holds the lock, nothing here awaits.
//!
//! Frames are stored as the publisher's whole wire frames (header included), so what a
//! viewer is sent is the very `Bytes` the publisher sent, shared, never copied; a frame
//! cut for a resume or a live join is a new header over slices of those same bytes.

mod hole;

use super::generation::{Frame, Generation};
pub use super::generation::{GenerationPin, LogReader};
use super::index::MediaNotices;
use crate::protocol::{FrameHeader, OutFrame, HEADER_LEN};
use crate::webm::StreamInfo;
use bytes::Bytes;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Chunks that may wait for their generation's blob (the two publisher sockets race).
const MAX_HELD_FRAMES: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    /// Media bytes one generation may hold.
    pub max_generation_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("gap: chunk starts at offset {got} but generation {generation} has {expected} bytes")]
    Gap {
        generation: u64,
        expected: u64,
        got: u64,
    },
    #[error("chunk at offset {got} overlaps generation {generation}, which has {expected} bytes")]
    Overlap {
        generation: u64,
        expected: u64,
        got: u64,
    },
    #[error("generation {generation} would exceed the {limit}-byte buffer limit; start a new generation (restart the recorder)")]
    BufferFull { generation: u64, limit: u64 },
    #[error("the publish session has stopped; start a new session to publish again")]
    Stopped,
}

/// What became of a publisher frame that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A blob that started a new generation; `held_applied` earlier chunks joined it.
    NewGeneration { held_applied: usize },
    /// A chunk appended to the current (or, as a late tail, the previous) generation.
    Appended,
    /// A chunk waiting for its generation's blob.
    Held,
    /// A frame the buffer already has, or of a generation that is over.
    Dropped,
}

/// Where a viewer's chunk socket is: the next media byte it is owed, in which publish
/// session (its epoch: two sessions may both number a generation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCursor {
    epoch: u64,
    generation: Option<u64>,
    offset: u64,
}

impl ChunkCursor {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// Where a reconnecting viewer says it is: `?gen=&offset=`, and `&epoch=` from the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub generation: u64,
    pub offset: u64,
    pub epoch: Option<u64>,
}

/// A publish session's epoch: the same on every node of a cluster (a viewer resumes on
/// another node, a publisher moves to one), and another for another session id, so a
/// resume point or chunk cursor of one session is never taken for a point in another.
/// 53 bits (FNV-1a), so that a browser holds it exactly as a number; 0 is a buffer that
/// no session has published to yet.
pub fn session_epoch(stream: &str, session: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.bytes().chain([0]).chain(session.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash & ((1 << 53) - 1)).max(1)
}

/// Where a frame's media ends in its generation. Saturating: a hostile offset near
/// u64::MAX is a gap, not an overflow.
fn media_end(header: &FrameHeader, frame: &Bytes) -> u64 {
    header
        .offset
        .saturating_add((frame.len() - HEADER_LEN) as u64)
}

/// A frame that starts past what `current` holds.
fn gap(current: &Generation, got: u64) -> FrameError {
    FrameError::Gap {
        generation: current.id,
        expected: current.len,
        got,
    }
}

/// A lagging chunk viewer was moved ahead: it carries on at `offset` of `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    pub generation: u64,
    pub offset: u64,
}

/// A chunk viewer is this many bytes behind the live edge, past its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagging {
    pub behind: u64,
}

#[derive(Debug)]
pub struct Buffer {
    limits: BufferLimits,
    /// The buffered-bytes gauge this buffer's generations count themselves in.
    gauge: Arc<AtomicU64>,
    /// The publish session's number: cursors and resume points of another are stale.
    epoch: u64,
    current: Option<Generation>,
    previous: Option<Generation>,
    /// The newest generation this publisher session has started: blobs must exceed it.
    last_generation: Option<u64>,
    /// The newest generation any earlier session on this stream started. A resume that
    /// names no epoch is only believed for generations above it, which no earlier
    /// session can have used.
    earlier_sessions_reached: Option<u64>,
    /// Generations this buffer has started, over every session: a clock that viewers
    /// measure their own lag in.
    generations_started: u64,
    /// This session has stopped: whatever it sends now is refused, so that a frame that
    /// lagged behind the stop cannot bring the stream back to life.
    stopped: bool,
    /// A stop waiting for the generation and length it named.
    stop_at: Option<(u64, u64)>,
    held: Vec<(FrameHeader, Bytes)>,
    mime: Option<String>,
    /// Something about the media worth a log line, for the caller to take.
    notice: Option<String>,
    /// Which kinds of notice this publish session has been given already.
    notices: MediaNotices,
}

impl Buffer {
    pub fn new(limits: BufferLimits) -> Buffer {
        Buffer::with_gauge(limits, Arc::default())
    }

    pub fn with_gauge(limits: BufferLimits, gauge: Arc<AtomicU64>) -> Buffer {
        Buffer {
            limits,
            gauge,
            epoch: 0,
            current: None,
            previous: None,
            last_generation: None,
            earlier_sessions_reached: None,
            generations_started: 0,
            stopped: false,
            stop_at: None,
            held: Vec::new(),
            mime: None,
            notice: None,
            notices: MediaNotices::default(),
        }
    }

    pub fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }

    fn learned(&mut self, learned: super::index::Learned) {
        let info = self.current.as_ref().and_then(|g| g.index.info());
        if let Some(notice) = self.notices.check(self.mime.as_deref(), &learned, info) {
            self.notice = Some(notice);
        }
    }

    /// The codecs and sizes of the current generation, once its Tracks arrived.
    pub fn media_info(&self) -> Option<&StreamInfo> {
        self.current.as_ref().and_then(|g| g.index.info())
    }

    pub fn generations_started(&self) -> u64 {
        self.generations_started
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn generation(&self) -> Option<u64> {
        self.current.as_ref().map(|g| g.id)
    }

    /// Media bytes of the current generation.
    pub fn len(&self) -> u64 {
        self.current.as_ref().map_or(0, |g| g.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn mime(&self) -> Option<&str> {
        self.mime.as_deref()
    }

    pub fn set_mime(&mut self, mime: String) {
        self.mime = Some(mime);
    }

    /// The publisher stopped: chunks held for a blob will never get one. The media stays
    /// until a new generation or session replaces it, so that chunk viewers still get
    /// the last chunks they were owed (a stop can reach us before they were sent), and
    /// generations must still grow after it.
    pub fn stop(&mut self) {
        self.held.clear();
        self.stopped = true;
        self.stop_at = None;
    }

    /// A publisher's stop that names the newest generation and length it sent: whether
    /// this buffer holds them now. If not, the stop waits for them (`stop_reached`).
    pub fn request_stop(&mut self, at: Option<(u64, u64)>) -> bool {
        match at {
            Some(at) if !self.holds(at) => {
                self.stop_at = Some(at);
                false
            }
            _ => true,
        }
    }

    /// Whether a waiting stop's generation and length have now arrived.
    pub fn stop_reached(&self) -> bool {
        self.stop_at.is_some_and(|at| self.holds(at))
    }

    /// Whether `generation` has reached `length` bytes, or a newer one has started.
    fn holds(&self, (generation, length): (u64, u64)) -> bool {
        match &self.current {
            Some(current) if current.id == generation => current.len >= length,
            Some(current) => current.id > generation,
            None => false,
        }
    }

    /// A new publish session, of epoch `epoch` ([`session_epoch`]): it may number its
    /// generations from anywhere.
    pub fn reset_session(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.earlier_sessions_reached = self.earlier_sessions_reached.max(self.last_generation);
        self.take_current();
        self.previous = None;
        self.held.clear();
        self.stopped = false;
        self.stop_at = None;
        self.last_generation = None;
        self.mime = None;
        self.notices = MediaNotices::default();
    }

    pub fn accept_blob(&mut self, frame: Bytes) -> Result<Accepted, FrameError> {
        if self.stopped {
            return Err(FrameError::Stopped);
        }
        let header = FrameHeader::parse(&frame).expect("caller checked the header");
        if self
            .last_generation
            .is_some_and(|last| header.generation <= last)
        {
            return Ok(Accepted::Dropped);
        }
        let len = (frame.len() - HEADER_LEN) as u64;
        if len > self.limits.max_generation_bytes {
            return Err(FrameError::BufferFull {
                generation: header.generation,
                limit: self.limits.max_generation_bytes,
            });
        }
        self.last_generation = Some(header.generation);
        self.generations_started += 1;
        self.previous = self.take_current();
        let mut generation = Generation::new(header.generation, self.gauge.clone());
        let learned = generation.push(Frame::new(0, frame), len);
        self.current = Some(generation);
        self.learned(learned);

        let mut held: Vec<_> = std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(h, _)| h.generation >= header.generation)
            .collect();
        held.sort_by_key(|(h, _)| (h.generation, h.offset));
        let mut held_applied = 0;
        for (h, bytes) in held {
            if h.generation > header.generation {
                self.held.push((h, bytes));
            } else if self.append_current(h, bytes) == Ok(Accepted::Appended) {
                held_applied += 1;
            }
            // A held chunk that no longer fits is dropped: the publisher's next chunk on
            // its own socket then meets the gap and is told so.
        }
        Ok(Accepted::NewGeneration { held_applied })
    }

    pub fn accept_chunk(&mut self, frame: Bytes) -> Result<Accepted, FrameError> {
        if self.stopped {
            return Err(FrameError::Stopped);
        }
        let header = FrameHeader::parse(&frame).expect("caller checked the header");
        match (&self.current, &self.previous) {
            (Some(current), _) if header.generation == current.id => {
                self.append_current(header, frame)
            }
            (Some(_), Some(previous)) if header.generation == previous.id => {
                Ok(self.append_late_tail(header, frame))
            }
            _ if self
                .last_generation
                .is_none_or(|last| header.generation > last) =>
            {
                Ok(self.hold(header, frame))
            }
            _ => Ok(Accepted::Dropped),
        }
    }

    fn append_current(
        &mut self,
        header: FrameHeader,
        frame: Bytes,
    ) -> Result<Accepted, FrameError> {
        let limit = self.limits.max_generation_bytes;
        let current = self
            .current
            .as_mut()
            .expect("caller matched the generation");
        let end = media_end(&header, &frame);
        if end <= current.len {
            return Ok(Accepted::Dropped);
        }
        if header.offset < current.len {
            return Err(FrameError::Overlap {
                generation: current.id,
                expected: current.len,
                got: header.offset,
            });
        }
        if header.offset > current.len {
            return Err(gap(current, header.offset));
        }
        if end > limit {
            return Err(FrameError::BufferFull {
                generation: current.id,
                limit,
            });
        }
        let learned = current.push(Frame::new(header.offset, frame), end);
        self.learned(learned);
        Ok(Accepted::Appended)
    }

    /// The old recorder's last piece may reach us after the new recorder's blob.
    fn append_late_tail(&mut self, header: FrameHeader, frame: Bytes) -> Accepted {
        let previous = self
            .previous
            .as_mut()
            .expect("caller matched the generation");
        let end = media_end(&header, &frame);
        if header.offset != previous.len || end > self.limits.max_generation_bytes {
            return Accepted::Dropped;
        }
        previous.push(Frame::new(header.offset, frame), end);
        Accepted::Appended
    }

    fn hold(&mut self, header: FrameHeader, frame: Bytes) -> Accepted {
        let payload = |b: &Bytes| (b.len() - HEADER_LEN) as u64;
        let held_bytes: u64 = self.held.iter().map(|(_, b)| payload(b)).sum();
        if self.held.len() >= MAX_HELD_FRAMES
            || held_bytes + payload(&frame) > self.limits.max_generation_bytes
        {
            return Accepted::Dropped;
        }
        self.held.push((header, frame));
        Accepted::Held
    }

    /// The current generation's frames for a joining viewer, as they go out.
    pub fn snapshot_frames(&self) -> Vec<OutFrame> {
        self.current
            .as_ref()
            .map(|g| g.frames.iter().map(Frame::out).collect())
            .unwrap_or_default()
    }

    /// The current generation's frames: cheap clones of shared bytes.
    pub fn snapshot(&self) -> Vec<Bytes> {
        self.current
            .as_ref()
            .map(|g| g.frames.iter().map(|f| f.bytes.clone()).collect())
            .unwrap_or_default()
    }

    /// A live-edge join: the init segment as frame (G, 0), then the buffered bytes from
    /// the newest WebM cluster or MP4 fragment that opens with a video keyframe, at their
    /// true offset. None until the generation has one (or is neither WebM nor MP4).
    pub fn live_snapshot(&self) -> Option<Vec<OutFrame>> {
        let current = self.current.as_ref()?;
        let (init_end, start) = current.index.live_start()?;
        let init = FrameHeader {
            generation: current.id,
            offset: 0,
        };
        let mut out = vec![OutFrame::cut(init, current.head(init_end))];
        current.frames_from(start, &mut out);
        Some(out)
    }

    /// The hold a joining viewer keeps on the current generation while it sends its
    /// snapshot, so that the gauge counts what that viewer pins.
    pub fn pin(&self) -> Option<Arc<GenerationPin>> {
        self.current.as_ref().map(|g| g.pin.clone())
    }

    /// The blob of the current generation, for blob viewers following a restart.
    pub fn current_blob(&self) -> Option<(u64, OutFrame)> {
        self.current.as_ref().map(|g| (g.id, g.frames.get(0).out()))
    }

    /// Whether a viewer holding a generation up to an offset can carry on from there:
    /// the same session's current generation, and no further than it reaches.
    pub fn can_resume(&self, resume: Resume) -> bool {
        let same_session = match resume.epoch {
            Some(epoch) => epoch == self.epoch,
            None => self
                .earlier_sessions_reached
                .is_none_or(|reached| resume.generation > reached),
        };
        same_session
            && self.current.as_ref().is_some_and(|g| {
                g.id == resume.generation
                    && resume.offset <= g.len
                    && g.hole.is_none_or(|(_, end)| resume.offset >= end)
            })
    }

    /// A chunk viewer joining now: owed everything appended from this moment on, or
    /// from `resume` when that is still buffered.
    pub fn cursor(&self, resume: Option<Resume>) -> ChunkCursor {
        let epoch = self.epoch;
        match (resume, &self.current) {
            (Some(resume), _) if self.can_resume(resume) => ChunkCursor {
                epoch,
                generation: Some(resume.generation),
                offset: resume.offset,
            },
            (_, Some(current)) => ChunkCursor {
                epoch,
                generation: Some(current.id),
                offset: current.len,
            },
            (_, None) => ChunkCursor {
                epoch,
                generation: None,
                offset: 0,
            },
        }
    }

    /// Moves `cursor` to the live edge, pushing the frames it passes onto `out`. A viewer
    /// more than `max_behind` bytes behind is, if it `may_jump` (it plays from a keyframe,
    /// not a whole file), moved to the newest keyframe-led cluster or fragment of the
    /// current generation when that leaves it within bounds; else refused (pushing
    /// nothing).
    pub fn read_chunks(
        &self,
        cursor: &mut ChunkCursor,
        max_behind: u64,
        may_jump: bool,
        out: &mut Vec<OutFrame>,
    ) -> Result<Option<Jump>, Lagging> {
        let Some(current) = &self.current else {
            return Ok(None);
        };
        if cursor.epoch != self.epoch {
            // Another publish session: nothing this viewer was owed exists any more, and
            // its generation numbers may repeat. It starts afresh, as a new viewer would.
            *cursor = ChunkCursor {
                epoch: self.epoch,
                generation: None,
                offset: 0,
            };
        }
        let in_previous = self
            .previous
            .as_ref()
            .filter(|p| cursor.generation == Some(p.id));
        // Leave the previous generation only once the new one has a chunk: the
        // publisher's chunk socket is ordered, so the old tail has arrived by then.
        let moving_on = current.frames.len() > 1;
        let behind = match in_previous {
            Some(previous) if !moving_on => previous.len - cursor.offset,
            Some(previous) => previous.len - cursor.offset + current.len - current.chunks_start(),
            None if cursor.generation == Some(current.id) => current.len - cursor.offset,
            None => current.len - current.chunks_start(),
        };
        if behind > max_behind {
            return match self.jump_target(cursor, max_behind).filter(|_| may_jump) {
                Some(to) => {
                    *cursor = ChunkCursor {
                        epoch: self.epoch,
                        generation: Some(current.id),
                        offset: to,
                    };
                    current.frames_from(to, out);
                    cursor.offset = current.len;
                    Ok(Some(Jump {
                        generation: current.id,
                        offset: to,
                    }))
                }
                None => Err(Lagging { behind }),
            };
        }
        if let Some(previous) = in_previous {
            previous.frames_from(cursor.offset, out);
            cursor.offset = previous.len;
            if !moving_on {
                return Ok(None);
            }
        }
        if cursor.generation != Some(current.id) {
            // A new generation; its blob goes out on the viewer's blob socket.
            *cursor = ChunkCursor {
                epoch: self.epoch,
                generation: Some(current.id),
                offset: current.chunks_start(),
            };
        }
        current.frames_from(cursor.offset, out);
        cursor.offset = current.len;
        Ok(None)
    }

    /// The current generation, no longer current: its readers are sent back here.
    fn take_current(&mut self) -> Option<Generation> {
        let generation = self.current.take();
        if let Some(g) = &generation {
            g.frames.close();
        }
        generation
    }

    /// A reader for a viewer whose `cursor` is at the end of the current generation (as
    /// [`Buffer::read_chunks`] leaves it), to read what comes next with
    /// [`read_appended`]; None elsewhere.
    pub fn log_reader(&self, cursor: &ChunkCursor) -> Option<LogReader> {
        let current = self.current.as_ref()?;
        (cursor.epoch == self.epoch
            && cursor.generation == Some(current.id)
            && cursor.offset == current.len)
            .then(|| current.reader_at_end())
    }

    /// Where a lagging viewer at `cursor` could carry on within `max_behind` of the live
    /// edge: the newest keyframe-led cluster of the current generation, if it is ahead
    /// of the viewer (past the blob, which a viewer new to the generation is sent on its
    /// blob socket).
    fn jump_target(&self, cursor: &ChunkCursor, max_behind: u64) -> Option<u64> {
        let current = self.current.as_ref()?;
        let (_, keyframe) = current.index.live_start()?;
        let floor = match cursor.generation {
            Some(g) if g == current.id => cursor.offset,
            _ => current.chunks_start(),
        };
        let to = keyframe.max(floor);
        (to > floor || cursor.generation != Some(current.id))
            .then_some(to)
            .filter(|&to| current.len - to <= max_behind)
    }
}

/// Reads what was appended to the current generation since `reader`'s last read, with
/// no lock: the viewer's wake-up after each chunk. False when the buffer has to answer
/// instead (the generation is over, or the viewer is past `max_behind`), and then
/// nothing was read.
pub fn read_appended(
    reader: &mut LogReader,
    cursor: &mut ChunkCursor,
    max_behind: u64,
    out: &mut Vec<OutFrame>,
) -> bool {
    let log = &reader.log;
    if log.is_closed() || cursor.generation != Some(reader.generation) {
        return false;
    }
    let published = log.len();
    if published == reader.next {
        return true;
    }
    let end = log.get(published - 1).end();
    if end - cursor.offset > max_behind {
        return false;
    }
    out.extend((reader.next..published).map(|i| log.get(i).out()));
    reader.next = published;
    cursor.offset = end;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn at(generation: u64, offset: u64) -> Resume {
        Resume {
            generation,
            offset,
            epoch: None,
        }
    }

    const LIMITS: BufferLimits = BufferLimits {
        max_generation_bytes: 1000,
    };

    pub(super) fn frame(generation: u64, offset: u64, payload: &[u8]) -> Bytes {
        FrameHeader { generation, offset }.frame(payload)
    }

    pub(super) fn payloads(frames: &[Bytes]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| f[HEADER_LEN..].to_vec())
            .collect()
    }

    pub(super) fn read(buffer: &Buffer, cursor: &mut ChunkCursor) -> Vec<Bytes> {
        let mut out = Vec::new();
        buffer
            .read_chunks(cursor, u64::MAX, false, &mut out)
            .unwrap();
        out.iter().map(OutFrame::to_bytes).collect()
    }

    #[test]
    fn blob_then_contiguous_chunks_append_and_snapshot_is_the_same_bytes() {
        let mut b = Buffer::new(LIMITS);
        let blob = frame(5, 0, b"head");
        assert_eq!(
            b.accept_blob(blob.clone()),
            Ok(Accepted::NewGeneration { held_applied: 0 })
        );
        assert_eq!(b.accept_chunk(frame(5, 4, b"ab")), Ok(Accepted::Appended));
        assert_eq!(b.accept_chunk(frame(5, 6, b"cd")), Ok(Accepted::Appended));
        let snapshot = b.snapshot();
        assert_eq!(payloads(&snapshot), b"headabcd");
        assert_eq!(snapshot[0].as_ptr(), blob.as_ptr(), "shared, not copied");
        assert_eq!(b.len(), 8);
    }

    #[test]
    fn an_offset_near_the_end_of_u64_is_a_gap_not_an_overflow() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(5, 0, b"head")).unwrap();
        assert_eq!(
            b.accept_chunk(frame(5, u64::MAX - 1, b"abc")),
            Err(FrameError::Gap {
                generation: 5,
                expected: 4,
                got: u64::MAX - 1
            })
        );
        b.accept_blob(frame(6, 0, b"next")).unwrap();
        assert_eq!(
            b.accept_chunk(frame(5, u64::MAX, b"late tail")),
            Ok(Accepted::Dropped)
        );
    }

    #[test]
    fn duplicates_and_stale_frames_are_dropped_gaps_and_overlaps_refused() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(5, 0, b"head")).unwrap();
        b.accept_chunk(frame(5, 4, b"ab")).unwrap();
        assert_eq!(b.accept_chunk(frame(5, 4, b"ab")), Ok(Accepted::Dropped));
        assert_eq!(b.accept_blob(frame(5, 0, b"head")), Ok(Accepted::Dropped));
        assert_eq!(b.accept_blob(frame(4, 0, b"old")), Ok(Accepted::Dropped));
        assert_eq!(b.accept_chunk(frame(3, 9, b"old")), Ok(Accepted::Dropped));
        assert_eq!(
            b.accept_chunk(frame(5, 9, b"x")),
            Err(FrameError::Gap {
                generation: 5,
                expected: 6,
                got: 9
            })
        );
        assert_eq!(
            b.accept_chunk(frame(5, 5, b"xyz")),
            Err(FrameError::Overlap {
                generation: 5,
                expected: 6,
                got: 5
            })
        );
        assert_eq!(payloads(&b.snapshot()), b"headab");
    }

    #[test]
    fn chunks_that_beat_their_blob_are_held_then_applied_in_order() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(1, 0, b"one")).unwrap();
        assert_eq!(b.accept_chunk(frame(2, 6, b"gh")), Ok(Accepted::Held));
        assert_eq!(b.accept_chunk(frame(2, 4, b"ef")), Ok(Accepted::Held));
        assert_eq!(
            b.accept_blob(frame(2, 0, b"abcd")),
            Ok(Accepted::NewGeneration { held_applied: 2 })
        );
        assert_eq!(payloads(&b.snapshot()), b"abcdefgh");
    }

    #[test]
    fn held_chunks_are_bounded() {
        let mut b = Buffer::new(LIMITS);
        for i in 0..MAX_HELD_FRAMES as u64 {
            assert_eq!(b.accept_chunk(frame(1, 10 + i, b"x")), Ok(Accepted::Held));
        }
        assert_eq!(b.accept_chunk(frame(1, 999, b"x")), Ok(Accepted::Dropped));
        let big = vec![0u8; 990];
        let mut b = Buffer::new(LIMITS);
        assert_eq!(b.accept_chunk(frame(1, 10, &big)), Ok(Accepted::Held));
        assert_eq!(b.accept_chunk(frame(1, 1000, &big)), Ok(Accepted::Dropped));
    }

    #[test]
    fn generation_limit_is_enforced() {
        let mut b = Buffer::new(LIMITS);
        assert!(matches!(
            b.accept_blob(frame(1, 0, &[0; 1001])),
            Err(FrameError::BufferFull { limit: 1000, .. })
        ));
        b.accept_blob(frame(1, 0, &[0; 600])).unwrap();
        assert!(matches!(
            b.accept_chunk(frame(1, 600, &[0; 401])),
            Err(FrameError::BufferFull { .. })
        ));
        assert_eq!(
            b.accept_chunk(frame(1, 600, &[0; 400])),
            Ok(Accepted::Appended)
        );
    }

    #[test]
    fn a_joining_chunk_viewer_gets_only_what_comes_after_it() {
        let mut b = Buffer::new(LIMITS);
        let mut early = b.cursor(None);
        b.accept_blob(frame(7, 0, b"head")).unwrap();
        b.accept_chunk(frame(7, 4, b"c1")).unwrap();
        let mut late = b.cursor(None);
        b.accept_chunk(frame(7, 6, b"c2")).unwrap();
        assert_eq!(
            payloads(&read(&b, &mut early)),
            b"c1c2",
            "blob goes on the blob socket"
        );
        assert_eq!(payloads(&read(&b, &mut late)), b"c2");
        assert!(read(&b, &mut late).is_empty());
    }

    #[test]
    fn resume_from_the_middle_of_a_frame_cuts_it() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(7, 0, b"head")).unwrap();
        b.accept_chunk(frame(7, 4, b"abcdef")).unwrap();
        b.accept_chunk(frame(7, 10, b"gh")).unwrap();
        assert!(b.can_resume(at(7, 10)) && !b.can_resume(at(7, 13)) && !b.can_resume(at(6, 0)));
        let mut cursor = b.cursor(Some(at(7, 6)));
        let frames = read(&b, &mut cursor);
        assert_eq!(FrameHeader::parse(&frames[0]).unwrap().offset, 6);
        assert_eq!(payloads(&frames), b"cdefgh");
        let mut stale = b.cursor(Some(at(6, 2)));
        assert!(
            read(&b, &mut stale).is_empty(),
            "unknown generation: live only"
        );
    }

    #[test]
    fn a_viewer_drains_the_previous_generation_including_its_late_tail() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(1, 0, b"one")).unwrap();
        let mut cursor = b.cursor(None);
        b.accept_chunk(frame(1, 3, b"-a")).unwrap();
        b.accept_blob(frame(2, 0, b"two")).unwrap();
        assert_eq!(payloads(&read(&b, &mut cursor)), b"-a");
        assert_eq!(b.accept_chunk(frame(1, 5, b"-z")), Ok(Accepted::Appended));
        assert_eq!(b.accept_chunk(frame(1, 9, b"-?")), Ok(Accepted::Dropped));
        b.accept_chunk(frame(2, 3, b"-b")).unwrap();
        let frames = read(&b, &mut cursor);
        assert_eq!(payloads(&frames), b"-z-b");
        assert_eq!(FrameHeader::parse(&frames[1]).unwrap().generation, 2);
    }

    #[test]
    fn a_viewer_too_far_behind_is_refused_and_sent_nothing() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(1, 0, b"head")).unwrap();
        let mut cursor = b.cursor(None);
        b.accept_chunk(frame(1, 4, &[0; 100])).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            b.read_chunks(&mut cursor, 99, false, &mut out),
            Err(Lagging { behind: 100 })
        );
        assert!(out.is_empty());
        assert!(b.read_chunks(&mut cursor, 100, false, &mut out).is_ok());
    }

    #[test]
    fn a_live_snapshot_is_the_init_then_the_newest_keyframe_cluster_onwards() {
        const CHROME: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");
        let mut b = Buffer::new(BufferLimits {
            max_generation_bytes: 1 << 20,
        });
        assert!(b.live_snapshot().is_none());
        // A blob shorter than the init segment: the init is cut from two frames.
        let mut buffered = vec![frame(3, 0, &CHROME[..50])];
        let mut offset = 50;
        for piece in CHROME[50..].chunks(7000) {
            buffered.push(frame(3, offset, piece));
            offset += piece.len() as u64;
        }
        b.accept_blob(buffered[0].clone()).unwrap();
        for chunk in &buffered[1..] {
            b.accept_chunk(chunk.clone()).unwrap();
        }
        let cut = b.live_snapshot().expect("a keyframe cluster");
        // Every media byte sent is a slice of a buffered frame: a joiner copies nothing.
        let within = |part: &Bytes| {
            buffered.iter().any(|f| {
                let range = f.as_ptr_range();
                range.contains(&part.as_ptr()) && part.len() <= f.len()
            })
        };
        for frame in &cut {
            assert!(frame.parts()[1..].iter().all(within), "{frame:?}");
        }
        let frames: Vec<Bytes> = cut.iter().map(OutFrame::to_bytes).collect();
        let init = FrameHeader::parse(&frames[0]).unwrap();
        assert_eq!(init.offset, 0);
        let init_len = frames[0].len() - HEADER_LEN;
        let jump = FrameHeader::parse(&frames[1]).unwrap().offset;
        assert!(jump > init_len as u64);
        assert_eq!(&frames[0][HEADER_LEN..], &CHROME[..init_len]);
        assert_eq!(payloads(&frames[1..]), &CHROME[jump as usize..]);
        assert!(b.media_info().unwrap().video.is_some());
        assert!(b.take_notice().is_none());
    }

    #[test]
    fn a_lagging_viewer_that_may_jump_carries_on_at_the_newest_keyframe_cluster() {
        const CHROME: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");
        let mut b = Buffer::new(BufferLimits {
            max_generation_bytes: 1 << 20,
        });
        b.accept_blob(frame(3, 0, &CHROME[..4000])).unwrap();
        let mut cursor = b.cursor(None);
        let mut offset = 4000;
        for piece in CHROME[4000..].chunks(5000) {
            b.accept_chunk(frame(3, offset, piece)).unwrap();
            offset += piece.len() as u64;
        }
        let (_, keyframe) = b.current.as_ref().unwrap().index.live_start().unwrap();
        let tail = CHROME.len() as u64 - keyframe;
        let behind = CHROME.len() as u64 - 4000;
        assert!(
            tail < behind,
            "the newest keyframe cluster is past the cursor"
        );

        // A blob-mode viewer may not skip: it is refused, as before.
        let mut out = Vec::new();
        let mut stuck = cursor;
        assert_eq!(
            b.read_chunks(&mut stuck, tail, false, &mut out),
            Err(Lagging { behind })
        );
        // Nor may one for which even the newest keyframe cluster is too far behind.
        assert_eq!(
            b.read_chunks(&mut stuck, tail - 1, true, &mut out),
            Err(Lagging { behind })
        );
        assert!(out.is_empty());
        // A live-edge viewer is moved to the cluster, at its true offset.
        let jumped = b.read_chunks(&mut cursor, tail, true, &mut out).unwrap();
        assert_eq!(
            jumped,
            Some(Jump {
                generation: 3,
                offset: keyframe
            })
        );
        let frames: Vec<Bytes> = out.iter().map(OutFrame::to_bytes).collect();
        assert_eq!(FrameHeader::parse(&frames[0]).unwrap().offset, keyframe);
        assert_eq!(payloads(&frames), &CHROME[keyframe as usize..]);
        // And carries on from the live edge like anyone else.
        out.clear();
        assert_eq!(b.read_chunks(&mut cursor, tail, true, &mut out), Ok(None));
        assert!(out.is_empty());
    }

    #[test]
    fn a_mime_that_contradicts_the_tracks_is_noticed_once() {
        const CHROME: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");
        let mut b = Buffer::new(BufferLimits {
            max_generation_bytes: 1 << 20,
        });
        b.set_mime("video/webm;codecs=vp9,opus".into());
        b.accept_blob(frame(1, 0, &CHROME[..5000])).unwrap();
        let notice = b.take_notice().expect("a notice");
        assert!(notice.contains("V_VP8"), "{notice}");
        b.accept_chunk(frame(1, 5000, &CHROME[5000..6000])).unwrap();
        assert_eq!(b.take_notice(), None);
        // Nor again when the recorder restarts: once per publish session.
        b.accept_blob(frame(2, 0, &CHROME[..5000])).unwrap();
        assert_eq!(b.take_notice(), None);
        b.reset_session(2);
        b.set_mime("video/webm;codecs=vp9,opus".into());
        b.accept_blob(frame(1, 0, &CHROME[..5000])).unwrap();
        assert!(b.take_notice().is_some(), "a new session is told again");
    }

    #[test]
    fn a_stop_leaves_chunk_viewers_the_tail_they_were_owed() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(4, 0, b"head")).unwrap();
        let mut cursor = b.cursor(None);
        b.accept_chunk(frame(4, 4, b"tail")).unwrap();
        assert_eq!(b.accept_chunk(frame(5, 9, b"never")), Ok(Accepted::Held));
        b.stop();
        assert_eq!(payloads(&read(&b, &mut cursor)), b"tail");
        assert!(b.held.is_empty());
    }

    #[test]
    fn a_new_session_may_restart_generation_numbers() {
        let mut b = Buffer::new(LIMITS);
        b.accept_blob(frame(9, 0, b"x")).unwrap();
        assert_eq!(b.accept_blob(frame(3, 0, b"y")), Ok(Accepted::Dropped));
        b.stop();
        // Nothing after a stop, not even a newer generation: it would revive the stream.
        assert_eq!(b.accept_blob(frame(10, 0, b"z")), Err(FrameError::Stopped));
        assert_eq!(b.accept_chunk(frame(9, 1, b"z")), Err(FrameError::Stopped));
        b.reset_session(2);
        assert!(matches!(
            b.accept_blob(frame(3, 0, b"y")),
            Ok(Accepted::NewGeneration { .. })
        ));
    }

    fn read_unlocked(
        reader: &mut LogReader,
        cursor: &mut ChunkCursor,
        max: u64,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        read_appended(reader, cursor, max, &mut out).then(|| {
            let frames: Vec<Bytes> = out.iter().map(OutFrame::to_bytes).collect();
            payloads(&frames)
        })
    }

    #[test]
    fn a_viewer_at_the_live_edge_reads_what_is_appended_while_the_publisher_holds_the_lock() {
        let big = BufferLimits {
            max_generation_bytes: u64::MAX,
        };
        let buffer = Arc::new(parking_lot::RwLock::new(Buffer::new(big)));
        buffer.write().accept_blob(frame(1, 0, b"blob")).unwrap();
        let (mut cursor, mut reader) = {
            let b = buffer.read();
            let cursor = b.cursor(None);
            (
                cursor,
                b.log_reader(&cursor).expect("at the end of generation 1"),
            )
        };
        // The publisher appends 3000 chunks, each under the write lock; the viewer reads
        // them as they come, never taking the lock: every byte, in order, once.
        const CHUNKS: usize = 3000;
        let publisher = {
            let buffer = buffer.clone();
            std::thread::spawn(move || {
                let mut offset = 4;
                for i in 0..CHUNKS {
                    let payload = format!("<{i}>");
                    buffer
                        .write()
                        .accept_chunk(frame(1, offset, payload.as_bytes()))
                        .unwrap();
                    offset += payload.len() as u64;
                }
            })
        };
        let expected: Vec<u8> = (0..CHUNKS)
            .flat_map(|i| format!("<{i}>").into_bytes())
            .collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.extend(read_unlocked(&mut reader, &mut cursor, u64::MAX).expect("still current"));
        }
        publisher.join().unwrap();
        assert_eq!(got, expected);
        // And with the lock held by the publisher, what it appended before is read.
        let mut held = buffer.write();
        held.accept_chunk(frame(1, 4 + expected.len() as u64, b"more"))
            .unwrap();
        assert_eq!(
            read_unlocked(&mut reader, &mut cursor, u64::MAX),
            Some(b"more".to_vec())
        );
        drop(held);
        assert_eq!(cursor, buffer.read().cursor(None));
    }

    #[test]
    fn a_log_reader_sends_the_viewer_back_to_the_buffer_for_a_new_generation_a_session_or_a_jump() {
        let big = BufferLimits {
            max_generation_bytes: 10_000,
        };
        let mut b = Buffer::new(big);
        b.accept_blob(frame(1, 0, b"one")).unwrap();
        let mut cursor = b.cursor(None);
        let mut reader = b.log_reader(&cursor).unwrap();
        b.accept_chunk(frame(1, 3, b"-a")).unwrap();
        assert_eq!(
            read_unlocked(&mut reader, &mut cursor, 100),
            Some(b"-a".to_vec())
        );
        // Past max_behind: nothing read, the buffer decides (a jump, or a refusal).
        b.accept_chunk(frame(1, 5, &[7; 200])).unwrap();
        let before = cursor;
        assert_eq!(read_unlocked(&mut reader, &mut cursor, 100), None);
        assert_eq!(cursor, before);
        assert_eq!(payloads(&read(&b, &mut cursor)), vec![7; 200]);
        let mut reader = b.log_reader(&cursor).unwrap();
        // A new generation, then the old one's late tail: the reader of generation 1 is
        // done; the buffer hands over the tail, then generation 2's chunks.
        b.accept_blob(frame(2, 0, b"two")).unwrap();
        b.accept_chunk(frame(1, 205, b"-tail")).unwrap();
        assert_eq!(read_unlocked(&mut reader, &mut cursor, u64::MAX), None);
        b.accept_chunk(frame(2, 3, b"-b")).unwrap();
        assert_eq!(payloads(&read(&b, &mut cursor)), b"-tail-b");
        let mut reader = b.log_reader(&cursor).expect("at the end of generation 2");
        b.accept_chunk(frame(2, 5, b"-c")).unwrap();
        assert_eq!(
            read_unlocked(&mut reader, &mut cursor, u64::MAX),
            Some(b"-c".to_vec())
        );
        // A new publish session: the reader is done.
        b.reset_session(7);
        b.accept_blob(frame(2, 0, b"new")).unwrap();
        assert_eq!(read_unlocked(&mut reader, &mut cursor, u64::MAX), None);
        // Not at the end of the generation (a resume from its middle): no reader.
        let middle = Resume {
            epoch: Some(7),
            ..at(2, 1)
        };
        assert_eq!(b.cursor(Some(middle)).offset, 1);
        assert!(b.log_reader(&b.cursor(Some(middle))).is_none());
    }
}
