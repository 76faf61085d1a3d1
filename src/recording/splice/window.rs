//! The input window and the way out: a generation's received frames, held until the
//! output is decided up to them, and the complete Cluster children copied from them to
//! the output, as shared slices or gathered with their tiny neighbours.

use super::{Generation, Piece, Splicer};
use crate::sink::Sink;
use crate::webm::ebml::{id, parse_header};
use bytes::Bytes;
use std::ops::Range;

/// Cluster children shorter than this are copied into one gathered piece rather than
/// handed out as a shared slice each: a piece per 6-byte block would cost more memory
/// than the block (a hostile frame can hold millions). Video frames are longer and
/// still go out uncopied.
const COPY_BELOW: u64 = 4096;

/// Gathered bytes go out as a piece once they reach this.
pub(super) const GATHER_LIMIT: usize = 64 * 1024;

/// One call's output on its way to the sink: our own small elements (Cluster headers,
/// the file head) and copies of tiny input elements are gathered into one buffer, so
/// that millions of tiny elements make a few large pieces, not a piece each. The buffer
/// only ever holds whole elements, so each gathered piece ends at a boundary; what is
/// left goes out when the call ends (on drop, whichever way it returns).
pub(super) struct Out<'a> {
    sink: &'a mut dyn Sink<Piece>,
    gathered: Vec<u8>,
}

impl<'a> Out<'a> {
    pub(super) fn new(sink: &'a mut dyn Sink<Piece>) -> Out<'a> {
        Out {
            sink,
            gathered: Vec::new(),
        }
    }

    /// Whole elements to gather.
    fn gather(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.gathered.capacity() == 0 {
            // Room for GATHER_LIMIT and one more element, so a full piece does not hold
            // twice its length (as doubling would leave it).
            self.gathered
                .reserve_exact(GATHER_LIMIT + COPY_BELOW as usize);
        }
        write(&mut self.gathered);
        if self.gathered.len() >= GATHER_LIMIT {
            self.hand_out();
        }
    }

    /// A shared slice of the input, after what was gathered before it.
    fn shared(&mut self, bytes: Bytes, boundary: bool) {
        self.hand_out();
        self.sink.put(Piece { bytes, boundary });
    }

    fn hand_out(&mut self) {
        if !self.gathered.is_empty() {
            let bytes = Bytes::from(std::mem::take(&mut self.gathered));
            self.sink.put(Piece {
                bytes,
                boundary: true,
            });
        }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.hand_out();
    }
}

impl Generation {
    /// The received frames' parts that hold input bytes `range`, in order: each frame
    /// with the part of it that falls in the range.
    fn parts(&self, range: Range<u64>) -> impl Iterator<Item = (&Bytes, Range<usize>)> {
        self.frames
            .iter()
            .skip_while(move |(start, bytes)| start + bytes.len() as u64 <= range.start)
            .take_while(move |(start, _)| *start < range.end)
            .map(move |(start, bytes)| {
                let end = start + bytes.len() as u64;
                let from = range.start.max(*start) - start;
                let to = range.end.min(end) - start;
                (bytes, from as usize..to as usize)
            })
    }

    /// Appends input bytes `range` (all received and not yet trimmed) to `out`.
    fn copy_to(&self, range: Range<u64>, out: &mut Vec<u8>) {
        for (bytes, part) in self.parts(range) {
            out.extend_from_slice(&bytes[part]);
        }
    }

    /// Copies input bytes `range`.
    pub(super) fn copy(&self, range: Range<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        self.copy_to(range, &mut out);
        out
    }

    /// Reads the input bytes from `at` into `buf`, as many as were received; returns
    /// how many. Costs no allocation, as it runs once per element.
    fn read(&self, at: u64, buf: &mut [u8]) -> usize {
        let end = self.received.min(at + buf.len() as u64);
        let mut n = 0;
        for (bytes, part) in self.parts(at..end) {
            buf[n..n + part.len()].copy_from_slice(&bytes[part.clone()]);
            n += part.len();
        }
        n
    }

    pub(super) fn trim(&mut self) {
        // Until the init segment is done, everything is kept: a generation that turns
        // out not to fit this file is fed whole to the next one.
        if !self.init_done {
            return;
        }
        while let Some((start, bytes)) = self.frames.front() {
            if start + bytes.len() as u64 <= self.consumed {
                self.frames.pop_front();
            } else {
                break;
            }
        }
    }
}

impl Splicer {
    /// Gathers whole elements that `write` appends.
    pub(super) fn emit(&mut self, out: &mut Out, write: impl FnOnce(&mut Vec<u8>)) {
        out.gather(|gathered| {
            let before = gathered.len();
            write(gathered);
            self.out_len += (gathered.len() - before) as u64;
        });
    }

    /// Hands out input bytes `range`, one whole element: a copy when it is short,
    /// else shared slices of the frames that hold it.
    fn emit_input(&mut self, g: &Generation, range: Range<u64>, out: &mut Out) {
        if range.end - range.start < COPY_BELOW {
            self.emit(out, |gathered| g.copy_to(range, gathered));
            return;
        }
        self.out_len += range.end - range.start;
        let mut parts = g.parts(range).peekable();
        while let Some((bytes, part)) = parts.next() {
            out.shared(bytes.slice(part), parts.peek().is_none());
        }
    }

    /// Copies out every complete Cluster child from where the output stands, dropping
    /// the generation's own level-1 elements (Cues, Tags...), stopping at a Cluster
    /// (its event rewrites it) or at an element not wholly received.
    pub(super) fn flush(&mut self, g: &mut Generation, out: &mut Out) {
        if g.cluster.is_none() {
            return;
        }
        while g.consumed < g.received {
            let mut peek = [0; 12];
            let peeked = g.read(g.consumed, &mut peek);
            let header = match parse_header(&peek[..peeked], g.consumed) {
                Ok(None) => break,
                Err(_) => {
                    let at = g.consumed;
                    self.break_generation(g, format!("malformed element at byte {at}"));
                    break;
                }
                Ok(Some(header)) => header,
            };
            if matches!(header.id, id::CLUSTER | id::EBML | id::SEGMENT) {
                break;
            }
            let Some(size) = header.size else { break };
            let end = g.consumed + u64::from(header.len) + size;
            if end > g.received {
                break;
            }
            // A level-1 element here is not a Cluster (that stopped the loop above).
            if !id::is_level1(header.id) {
                self.emit_input(g, g.consumed..end, out);
            }
            g.consumed = end;
        }
    }
}
