//! One generation in a stream's buffer: its frames as the publisher sent them (each
//! with its WebSocket header, encoded once), its media index, and the pin that counts
//! its bytes in the buffered-bytes gauge for as long as anyone holds it.
//!
//! The frames are an append-only log with a published count: a viewer already at the
//! end of the current generation reads what comes next through a [`LogReader`],
//! without the stream's lock, so a chunk's wake-up of every viewer never contends with
//! the publisher's next append. Only the publisher's path (holding the lock) appends.

use super::index::{Learned, MediaIndex};
use crate::protocol::{FrameHeader, OutFrame, HEADER_LEN};
use crate::ws_head::WsHead;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub(super) offset: u64,
    pub(super) bytes: Bytes,
    /// Its WebSocket header, encoded once for every viewer it is sent to.
    ws_head: WsHead,
}

impl Frame {
    pub(super) fn new(offset: u64, bytes: Bytes) -> Frame {
        Frame {
            offset,
            ws_head: WsHead::binary(bytes.len()),
            bytes,
        }
    }

    pub(super) fn out(&self) -> OutFrame {
        OutFrame::Whole(self.ws_head, self.bytes.clone())
    }

    pub(super) fn end(&self) -> u64 {
        self.offset + (self.bytes.len() - HEADER_LEN) as u64
    }
}

/// A generation's frames, append-only.
pub(super) struct FrameLog {
    frames: boxcar::Vec<Frame>,
    /// How many frames readers may read: raised (Release) after each append is whole.
    published: AtomicUsize,
    /// Set when the generation stops being the current one (a new generation, a new
    /// session): its readers go back through the buffer for what follows.
    closed: AtomicBool,
}

impl FrameLog {
    fn new() -> FrameLog {
        FrameLog {
            frames: boxcar::Vec::new(),
            published: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Only ever called by the one writer, the buffer behind its write lock.
    fn push(&self, frame: Frame) {
        self.frames.push(frame);
        self.published.fetch_add(1, Ordering::Release);
    }

    pub(super) fn len(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Frame `i`, which must be below a `len()` already read.
    pub(super) fn get(&self, i: usize) -> &Frame {
        self.frames.get(i).expect("a published frame is there")
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Frame> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// The first frame for which `pred` is false (frames in offset order, `pred` true
    /// for a prefix).
    fn partition_point(&self, pred: impl Fn(&Frame) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for FrameLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameLog")
            .field("published", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A chunk viewer's place in the current generation's frame log: the next frame it is
/// owed. Holds the generation's pin, so its bytes stay counted while it is held.
#[derive(Debug)]
pub struct LogReader {
    pub(super) generation: u64,
    pub(super) log: Arc<FrameLog>,
    pub(super) next: usize,
    _pin: Arc<GenerationPin>,
}

#[derive(Debug)]
pub(super) struct Generation {
    pub(super) id: u64,
    pub(super) frames: Arc<FrameLog>,
    pub(super) len: u64,
    pub(super) index: MediaIndex,
    pub(super) pin: Arc<GenerationPin>,
    /// Media bytes this buffer never received: a replica that joined the log at a
    /// keyframe holds the generation's first frames (its init segment) and the frames
    /// from the keyframe on, not what lies between.
    pub(super) hole: Option<(u64, u64)>,
}

/// Counts a generation's bytes in the buffered-bytes gauge for as long as anything
/// holds it: the buffer, or a viewer still sending the snapshot it took. When the
/// last holder lets go, so does the gauge.
#[derive(Debug)]
pub struct GenerationPin {
    bytes: AtomicU64,
    gauge: Arc<AtomicU64>,
}

impl GenerationPin {
    pub(super) fn new(gauge: Arc<AtomicU64>) -> Arc<GenerationPin> {
        Arc::new(GenerationPin {
            bytes: AtomicU64::new(0),
            gauge,
        })
    }

    fn grow(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.gauge.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for GenerationPin {
    fn drop(&mut self) {
        self.gauge
            .fetch_sub(*self.bytes.get_mut(), Ordering::Relaxed);
    }
}

impl Generation {
    pub(super) fn new(id: u64, gauge: Arc<AtomicU64>) -> Generation {
        Generation {
            id,
            frames: Arc::new(FrameLog::new()),
            len: 0,
            index: MediaIndex::new(),
            pin: GenerationPin::new(gauge),
            hole: None,
        }
    }

    /// A reader at the end of what the generation holds now.
    pub(super) fn reader_at_end(&self) -> LogReader {
        LogReader {
            generation: self.id,
            log: self.frames.clone(),
            next: self.frames.len(),
            _pin: self.pin.clone(),
        }
    }

    pub(super) fn push(&mut self, frame: Frame, end: u64) -> Learned {
        let learned = self.index.feed(&frame.bytes[HEADER_LEN..]);
        self.pin.grow(end - self.len);
        self.frames.push(frame);
        self.len = end;
        learned
    }

    /// Appends a frame that starts past the generation's end, leaving a hole; the index
    /// carries on at `join_at` (inside the frame), a keyframe-led cluster or fragment.
    /// Counts only the bytes held.
    pub(super) fn push_after_hole(&mut self, frame: Frame, end: u64, join_at: u64) -> Learned {
        self.hole = Some((self.len, frame.offset));
        let learned = if self.index.resync_at_join_point(join_at) {
            let skip = HEADER_LEN + (join_at - frame.offset) as usize;
            self.index.feed(&frame.bytes[skip..])
        } else {
            Learned {
                problem: self.index.problem().cloned(),
                ..Learned::default()
            }
        };
        self.pin.grow(end - frame.offset);
        self.frames.push(frame);
        self.len = end;
        learned
    }

    /// Whether the generation holds its whole init segment (where a hole may start).
    pub(super) fn holds_init(&self) -> bool {
        self.index.init_end().is_some_and(|init| init <= self.len)
    }

    /// Where the frames after the blob start: the blob's end, or past a hole.
    pub(super) fn chunks_start(&self) -> u64 {
        self.hole.map_or_else(|| self.blob_end(), |(_, end)| end)
    }

    /// Media bytes `0..end`, which lie in the first frames, as slices of them.
    pub(super) fn head(&self, end: u64) -> impl Iterator<Item = Bytes> + '_ {
        self.frames
            .iter()
            .take_while(move |frame| frame.offset < end)
            .map(move |frame| {
                let stop = HEADER_LEN + (end.min(frame.end()) - frame.offset) as usize;
                frame.bytes.slice(HEADER_LEN..stop)
            })
    }

    /// Appends the frames from media offset `from` on, cutting the first one if `from`
    /// falls inside it.
    pub(super) fn frames_from(&self, from: u64, out: &mut Vec<OutFrame>) {
        let first = self.frames.partition_point(|f| f.end() <= from);
        for frame in (first..self.frames.len()).map(|i| self.frames.get(i)) {
            if frame.offset < from {
                let skip = HEADER_LEN + (from - frame.offset) as usize;
                let header = FrameHeader {
                    generation: self.id,
                    offset: from,
                };
                out.push(OutFrame::cut(header, [frame.bytes.slice(skip..)]));
            } else {
                out.push(frame.out());
            }
        }
    }

    pub(super) fn blob_end(&self) -> u64 {
        self.frames.get(0).end()
    }
}
