//! Incremental fragmented-MP4 (ISO-BMFF) indexing, the counterpart of `webm` for the
//! MP4 that Safari's MediaRecorder (and Chrome's, when asked) writes: the public face of
//! the scanner, its events, errors, limits and the "is this MP4 at all?" sniff.
//!
//! The relay feeds each generation's bytes to a [`Scanner`] exactly as they arrive; it
//! reports [`Event`]s at absolute offsets (file type, movie with its tracks, end of the
//! init segment, fragments with whether each track's run starts on a sync sample, media
//! data) without copying media payloads. Anything it cannot trust is an [`Mp4Error`],
//! after which it stays errored: the caller keeps relaying bytes, just without an index.

mod boxes;
mod scanner;

pub use boxes::{FourCc, Track, TrackFragment, TrackKind};
pub use scanner::{Event, Scanner};

/// What the first bytes of a payload say about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Starts with an `ftyp` box.
    Mp4,
    /// Cannot be an MP4 that starts with `ftyp`.
    NotMp4,
    /// Fewer than 8 bytes, all consistent with an `ftyp` box so far.
    NeedMore,
}

/// Tells an MP4 (a box of at least 8 bytes whose type is `ftyp`) from anything else.
pub fn sniff(data: &[u8]) -> Sniff {
    let n = data.len().min(8);
    if n > 4 && data[4..n] != b"ftyp"[..n - 4] {
        return Sniff::NotMp4;
    }
    if n < 8 {
        return Sniff::NeedMore;
    }
    let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    // 1: a 64-bit size follows; otherwise it must hold at least the header.
    if size == 1 || size >= 8 {
        Sniff::Mp4
    } else {
        Sniff::NotMp4
    }
}

/// Bounds on what a [`Scanner`] holds, so hostile input costs at most this much memory.
/// Box headers need no knob: they are 8 or 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest box the scanner buffers whole to parse it: `moov` and `moof`. Real ones
    /// are a few hundred bytes to a few KiB.
    pub max_buffered_box: usize,
    /// Deepest nesting of boxes inside a buffered one (moov > trak > mdia > minf > stbl
    /// > stsd > avc1 > avcC is 8).
    pub max_depth: usize,
    /// Most `traf`s in one `moof`, and `trak`s in one `moov`.
    pub max_tracks: usize,
}

impl Limits {
    /// `max_buffered_box` by default.
    pub const DEFAULT_MAX_BUFFERED_BOX: usize = 1 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffered_box: Limits::DEFAULT_MAX_BUFFERED_BOX,
            max_depth: 12,
            max_tracks: 16,
        }
    }
}

/// Why the scanner gave up. Offsets are absolute in the stream fed so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mp4Error {
    #[error("not MP4: the stream does not start with an ftyp box")]
    NotMp4,
    #[error("box at byte {offset} has a type that is not printable ASCII")]
    InvalidType { offset: u64 },
    #[error("box {fourcc} at byte {offset} claims {size} bytes, less than its header")]
    TooSmall {
        offset: u64,
        fourcc: FourCc,
        size: u64,
    },
    #[error("box {fourcc} at byte {offset} runs to the end of the file, which only mdat may")]
    UnknownSize { offset: u64, fourcc: FourCc },
    #[error(
        "box {fourcc} at byte {offset} ends at byte {end}, past its parent's end at {parent_end}"
    )]
    OverflowsParent {
        offset: u64,
        fourcc: FourCc,
        end: u64,
        parent_end: u64,
    },
    #[error("box {fourcc} at byte {offset} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        offset: u64,
        fourcc: FourCc,
        size: u64,
        limit: u64,
    },
    #[error("box {fourcc} at byte {offset} would nest deeper than {limit} levels")]
    TooDeep {
        offset: u64,
        fourcc: FourCc,
        limit: usize,
    },
    #[error("box {fourcc} at byte {offset} holds more than {limit} tracks")]
    TooManyTracks {
        offset: u64,
        fourcc: FourCc,
        limit: usize,
    },
    #[error("malformed box {fourcc} at byte {offset}: {reason}")]
    Malformed {
        offset: u64,
        fourcc: FourCc,
        reason: &'static str,
    },
    #[error("box {fourcc} at byte {offset} is not allowed here")]
    Unexpected { offset: u64, fourcc: FourCc },
    #[error("stream offsets overflow 64 bits")]
    Overflow,
}

#[cfg(test)]
pub(crate) mod tests;
