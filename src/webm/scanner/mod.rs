//! The push-style scanner: turns a WebM byte stream, fed in pieces cut anywhere, into
//! [`Event`]s at absolute offsets, holding only element headers and the few small
//! elements it reads. Media payloads are counted past, never copied.
//!
//! This file is the byte-level driver: it reassembles headers, small bodies and block
//! heads across pushes. What a whole element means where it stands is `elements`.

mod elements;

use crate::sink::Sink;
use std::ops::Range;

use super::ebml::{self, EBML_MAGIC, MAX_HEADER_LEN};
use super::tracks::{StreamInfo, Track};
use super::{Limits, WebmError};
use elements::{File, Frame};

/// Whether a block came as a SimpleBlock or inside a BlockGroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Simple,
    Group,
}

/// A Cluster's Timecode and where its value bytes sit, so a recorder splicing
/// generations can rewrite it in place (same length, big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTimecode {
    /// In TimecodeScale units (milliseconds by default).
    pub value: u64,
    /// Absolute offset of the first value byte (after the Timecode ID and size).
    pub value_offset: u64,
    /// 0 to 8; 0 means an empty element (value 0) that cannot be rewritten in place.
    pub value_len: u8,
}

/// What the scanner found. Offsets are absolute in the stream pushed so far; ranges are
/// whole elements, from the first byte of the ID to the end of the data.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An EBML header: a file starts at `offset`. Seen again mid-stream, a new file starts
    /// and everything before it is closed.
    EbmlHeader {
        offset: u64,
        end: u64,
        /// `webm` or `matroska`.
        doc_type: String,
    },
    SegmentStart {
        offset: u64,
        data_offset: u64,
        /// `None`: unknown size, as MediaRecorder writes it.
        size: Option<u64>,
    },
    Info {
        range: Range<u64>,
        /// Nanoseconds per timecode unit; 1_000_000 when the file does not say.
        timecode_scale: u64,
        /// In timecode units, when the muxer knew it (live recorders do not).
        duration: Option<f64>,
    },
    Tracks {
        range: Range<u64>,
        tracks: Vec<Track>,
    },
    /// The init segment is complete: `range` runs from the EBML header to the first
    /// Cluster (EBML header, Segment header, SeekHead, Info, Tracks, Void...). Once per file.
    InitSegment { range: Range<u64> },
    /// A Cluster, reported once its Timecode is read, or with `timecode: None` when a
    /// block or the Cluster's end comes first; always before the Cluster's blocks.
    ClusterStart {
        offset: u64,
        data_offset: u64,
        /// `None`: unknown size; the Cluster ends where the next level-1 element or EBML
        /// header starts.
        size: Option<u64>,
        timecode: Option<ClusterTimecode>,
    },
    /// A SimpleBlock, reported as soon as its track, timecode and flags are in; or a
    /// BlockGroup, reported when the group ends, because whether it is a keyframe depends
    /// on children after its Block.
    Block {
        /// Offset of the SimpleBlock or BlockGroup ID.
        offset: u64,
        cluster_offset: u64,
        track: u64,
        /// Relative to the Cluster's Timecode.
        relative_timecode: i16,
        /// SimpleBlock: its keyframe flag. BlockGroup: no ReferenceBlock in the group.
        keyframe: bool,
        kind: BlockKind,
    },
}

/// Track number vint (at most 8 bytes), relative timecode (2), flags (1).
const BLOCK_HEAD_MAX: usize = 8 + 2 + 1;
/// A collect buffer larger than this is freed after use rather than kept per stream.
const KEEP_BODY_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Small {
    EbmlHeader,
    Info,
    Tracks,
    Timecode,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// At an element boundary, or inside a header split across pushes (`head` holds it).
    Header,
    /// Counting past bytes nobody needs, up to absolute `end`.
    Skip { end: u64 },
    /// Buffering a small element's body, to parse it whole at `end`.
    Collect {
        what: Small,
        offset: u64,
        data_offset: u64,
        end: u64,
    },
    /// Reading the first bytes of a SimpleBlock or Block (into `head`), then skipping it.
    BlockHead {
        offset: u64,
        data_offset: u64,
        end: u64,
        in_group: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct BlockHead {
    track: u64,
    relative_timecode: i16,
    flags: u8,
}

/// Incremental WebM indexer for one byte stream (one generation). See the module docs.
#[derive(Debug)]
pub struct Scanner {
    limits: Limits,
    /// Bytes given to `push`, including any after an error.
    pushed: u64,
    /// Bytes consumed by the parser; equals `pushed` unless errored.
    pos: u64,
    state: State,
    stack: Vec<Frame>,
    /// The part of an element header (or block head) seen so far.
    head: [u8; MAX_HEADER_LEN],
    head_len: usize,
    /// Body of the small element being collected, when it spans pushes.
    body: Vec<u8>,
    file: Option<File>,
    stream_info: Option<StreamInfo>,
    error: Option<WebmError>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Scanner {
        Scanner {
            limits,
            pushed: 0,
            pos: 0,
            state: State::Header,
            stack: Vec::new(),
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            body: Vec::new(),
            file: None,
            stream_info: None,
            error: None,
        }
    }

    /// Total bytes pushed so far: the offset the next pushed byte will have.
    pub fn position(&self) -> u64 {
        self.pushed
    }

    /// The error that stopped the scanner, if any.
    pub fn error(&self) -> Option<&WebmError> {
        self.error.as_ref()
    }

    /// Codecs and dimensions of the current file, once its Tracks element is parsed.
    pub fn stream_info(&self) -> Option<&StreamInfo> {
        self.stream_info.as_ref()
    }

    /// Heap bytes held for parsing: bounded by `Limits::max_buffered_element` whatever the
    /// input. (The stack of open elements is at most `max_depth` small frames.)
    pub fn buffered_bytes(&self) -> usize {
        self.body.capacity()
    }

    /// Carries on at absolute offset `at`, where a level-1 element (a Cluster) of the
    /// current Segment starts, as though the bytes before it had been scanned. A replica
    /// that joins a generation at a keyframe holds the init segment and then clusters
    /// from `at` on; what was open inside the Segment is dropped without events (it is
    /// not ours to finish). False, and nothing changed, unless the scanner is healthy,
    /// inside a Segment whose init segment is complete, and not past `at`.
    pub fn resync(&mut self, at: u64) -> bool {
        let inside_segment = self.file.as_ref().is_some_and(|f| f.is_inited())
            && self
                .stack
                .first()
                .is_some_and(|f| f.is_segment_reaching(at));
        if self.error.is_some() || !inside_segment || at < self.pushed {
            return false;
        }
        self.stack.truncate(1);
        self.state = State::Header;
        self.head_len = 0;
        self.body.clear();
        self.pos = at;
        self.pushed = at;
        true
    }

    /// Feeds the next bytes of the stream and hands what they complete to `out`, one event
    /// at a time, as it is found.
    ///
    /// Events are not bounded by the input's size the way the scanner's own buffers are: a
    /// 5-byte empty Cluster or a 6-byte SimpleBlock each make one, so a 16 MiB push can make
    /// millions. A `Vec<Event>` collects them all, which suits tests and trusted files; the
    /// relay passes a sink that keeps only what it needs, so a push costs no memory per
    /// event.
    ///
    /// On error, `out` has had the events found before it, and every later push returns
    /// the same error: the caller relays on without an index.
    pub fn push(&mut self, data: &[u8], out: &mut impl Sink<Event>) -> Result<(), WebmError> {
        self.pushed = self.pushed.saturating_add(data.len() as u64);
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.run(data, out);
        if let Err(e) = &result {
            self.error = Some(e.clone());
            self.body = Vec::new();
            self.stack = Vec::new();
        }
        result
    }

    fn run(&mut self, mut input: &[u8], out: &mut dyn Sink<Event>) -> Result<(), WebmError> {
        // Every pass consumes input, finishes an element, or closes frames (at most
        // `max_depth`), so this ends.
        loop {
            match self.state {
                State::Header => {
                    if self.head_len == 0 {
                        self.close_finished(out);
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let offset = self.pos - self.head_len as u64;
                    let old = self.head_len;
                    let take = input.len().min(MAX_HEADER_LEN - old);
                    self.head[old..old + take].copy_from_slice(&input[..take]);
                    let seen = &self.head[..old + take];
                    // Check the magic byte by byte, so an MP4 is named as such rather
                    // than as a bad vint.
                    if offset == 0 {
                        let n = seen.len().min(EBML_MAGIC.len());
                        if seen[..n] != EBML_MAGIC[..n] {
                            return Err(WebmError::NotWebm);
                        }
                    }
                    match ebml::parse_header(seen, offset)? {
                        Some(header) => {
                            let used = usize::from(header.len) - old;
                            self.head_len = 0;
                            self.advance(&mut input, used);
                            self.on_header(header, offset, out)?;
                        }
                        None => {
                            self.head_len = old + take;
                            self.advance(&mut input, take);
                        }
                    }
                }
                State::Skip { end } => {
                    if self.pos == end {
                        self.state = State::Header;
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let n = (end - self.pos).min(input.len() as u64) as usize;
                    self.advance(&mut input, n);
                }
                State::Collect {
                    what,
                    offset,
                    data_offset,
                    end,
                } => {
                    // Collected sizes are checked against the limit, so this fits usize.
                    let need = (end - self.pos) as usize;
                    if self.body.is_empty() && input.len() >= need {
                        // The whole body is in this piece (the usual case for a
                        // generation's first blob): parse it where it lies.
                        self.finish_small(what, offset, data_offset, end, &input[..need], out)?;
                        self.advance(&mut input, need);
                        self.state = State::Header;
                    } else if input.len() >= need {
                        self.body.extend_from_slice(&input[..need]);
                        self.advance(&mut input, need);
                        let body = std::mem::take(&mut self.body);
                        let result = self.finish_small(what, offset, data_offset, end, &body, out);
                        self.recycle_body(body);
                        result?;
                        self.state = State::Header;
                    } else {
                        // Reserve the exact size once, so amortized growth never takes
                        // the buffer past the limit the size was checked against.
                        let total = (end - data_offset) as usize;
                        if self.body.capacity() < total {
                            self.body.reserve_exact(total - self.body.len());
                        }
                        self.body.extend_from_slice(input);
                        let n = input.len();
                        self.advance(&mut input, n);
                        return Ok(());
                    }
                }
                State::BlockHead {
                    offset,
                    data_offset,
                    end,
                    in_group,
                } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let old = self.head_len;
                    let left = (end - self.pos).min(input.len() as u64) as usize;
                    let take = left.min(BLOCK_HEAD_MAX - old);
                    self.head[old..old + take].copy_from_slice(&input[..take]);
                    let size = end - data_offset;
                    match parse_block_head(&self.head[..old + take], data_offset, size)? {
                        Some((head, used)) => {
                            self.head_len = 0;
                            self.advance(&mut input, used - old);
                            self.on_block_head(head, offset, in_group, out);
                            self.state = State::Skip { end };
                        }
                        None => {
                            self.head_len = old + take;
                            self.advance(&mut input, take);
                        }
                    }
                }
            }
        }
    }

    fn advance(&mut self, input: &mut &[u8], n: usize) {
        *input = &input[n..];
        self.pos += n as u64;
    }

    fn recycle_body(&mut self, mut body: Vec<u8>) {
        if body.capacity() <= KEEP_BODY_CAPACITY.min(self.limits.max_buffered_element) {
            body.clear();
            self.body = body;
        }
    }
}

/// Parses the start of a (Simple)Block body of `size` bytes at `offset`: track number
/// vint, 16-bit relative timecode, flags. `Ok(None)` until enough bytes are in `buf`.
fn parse_block_head(
    buf: &[u8],
    offset: u64,
    size: u64,
) -> Result<Option<(BlockHead, usize)>, WebmError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let track_len = ebml::vint_len(first).ok_or(WebmError::InvalidVint { offset })?;
    let need = track_len + 3;
    if (need as u64) > size {
        return Err(WebmError::Malformed {
            offset,
            reason: "block shorter than its header",
        });
    }
    let Some(head) = buf.get(..need) else {
        return Ok(None);
    };
    let Some((track, _)) = ebml::read_vint(head, offset)? else {
        return Ok(None);
    };
    Ok(Some((
        BlockHead {
            track,
            relative_timecode: i16::from_be_bytes([head[track_len], head[track_len + 1]]),
            flags: head[track_len + 2],
        },
        need,
    )))
}

#[cfg(test)]
mod tests;
