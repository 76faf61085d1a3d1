//! One generation in a stream's buffer: its frames as the publisher sent them (each
//! with its WebSocket header, encoded once), its media index, and the pin that counts
//! its bytes in the buffered-bytes gauge for as long as anyone holds it.

use super::index::{Learned, MediaIndex};
use crate::protocol::{FrameHeader, OutFrame, HEADER_LEN};
use crate::ws_head::WsHead;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
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

#[derive(Debug)]
pub(super) struct Generation {
    pub(super) id: u64,
    pub(super) frames: Vec<Frame>,
    pub(super) len: u64,
    pub(super) index: MediaIndex,
    pub(super) pin: Arc<GenerationPin>,
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
    pub(super) fn push(&mut self, frame: Frame, end: u64) -> Learned {
        let learned = self.index.feed(&frame.bytes[HEADER_LEN..]);
        self.pin.grow(end - self.len);
        self.frames.push(frame);
        self.len = end;
        learned
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
        for frame in &self.frames[first..] {
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
        self.frames[0].end()
    }
}
