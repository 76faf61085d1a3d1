//! Incremental WebM (EBML/Matroska) indexing: the public face of the scanner, with its
//! errors, limits and the "is this WebM at all?" sniff. The parsing lives in the submodules.
//!
//! The relay feeds each generation's bytes to a [`Scanner`] exactly as they arrive; the
//! scanner reports [`Event`]s at absolute byte offsets (EBML header, Segment, Info, Tracks,
//! end of the init segment, cluster starts, blocks) without ever copying media payloads.
//! When it meets something it cannot trust it returns a [`WebmError`] and stays errored:
//! the caller keeps relaying bytes, just without an index.

/// Shared with `recording`, which reads back the EBML it writes with the same parser.
pub(crate) mod ebml;
mod scanner;
mod tracks;

#[cfg(test)]
pub(crate) mod testutil;

pub use scanner::{BlockKind, ClusterTimecode, Event, Scanner};
pub use tracks::{
    AudioSettings, AudioStream, StreamInfo, Track, TrackKind, VideoSettings, VideoStream,
};

/// What the first bytes of a payload say about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Starts with the EBML magic `1A 45 DF A3` (WebM or Matroska).
    WebM,
    /// Cannot be EBML (MP4 from Safari, say): do not index it.
    NotWebM,
    /// Fewer than 4 bytes, all consistent with the magic so far.
    NeedMore,
}

/// Tells WebM from anything else by the EBML magic, so a caller can skip indexing
/// (an MP4 starts with a box size and `ftyp`, never with `1A 45 DF A3`).
pub fn sniff(data: &[u8]) -> Sniff {
    let n = data.len().min(ebml::EBML_MAGIC.len());
    if data[..n] != ebml::EBML_MAGIC[..n] {
        Sniff::NotWebM
    } else if n < ebml::EBML_MAGIC.len() {
        Sniff::NeedMore
    } else {
        Sniff::WebM
    }
}

/// Bounds on what a [`Scanner`] holds, so hostile input costs at most this much memory.
///
/// Element headers need no knob: the format caps them at 12 bytes (ID ≤ 4, size ≤ 8),
/// and anything longer is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest element the scanner buffers whole to parse it: the EBML header, Info and
    /// Tracks. Real ones are a few hundred bytes; a bigger one is an error, not a reason
    /// to hold megabytes per stream.
    pub max_buffered_element: usize,
    /// Deepest nesting of open master elements (Segment > Cluster > BlockGroup is 3).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffered_element: 1 << 20,
            max_depth: 8,
        }
    }
}

/// Why the scanner gave up. Offsets are absolute in the stream fed so far; IDs are shown
/// with their length marker, as in the Matroska spec (`0x1F43B675` is Cluster).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebmError {
    #[error("not WebM: the stream does not start with the EBML magic 1A 45 DF A3")]
    NotWebm,
    #[error("EBML document type {doc_type:?} is neither webm nor matroska")]
    UnsupportedDocType { doc_type: String },
    #[error("element ID at byte {offset} is longer than 4 bytes")]
    IdTooLong { offset: u64 },
    #[error("element ID {id:#x} at byte {offset} is reserved (all data bits 0 or 1)")]
    InvalidId { offset: u64, id: u32 },
    #[error("element size at byte {offset} is longer than 8 bytes")]
    SizeTooLong { offset: u64 },
    #[error("invalid variable-length integer at byte {offset}")]
    InvalidVint { offset: u64 },
    #[error(
        "element {id:#x} at byte {offset} has an unknown size, which only Segment and Cluster may have"
    )]
    UnknownSize { offset: u64, id: u32 },
    #[error(
        "element {id:#x} at byte {offset} ends at byte {end}, past its parent's end at byte {parent_end}"
    )]
    OverflowsParent {
        offset: u64,
        id: u32,
        end: u64,
        parent_end: u64,
    },
    #[error("element {id:#x} at byte {offset} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        offset: u64,
        id: u32,
        size: u64,
        limit: u64,
    },
    #[error("element {id:#x} at byte {offset} would nest deeper than {limit} levels")]
    TooDeep { offset: u64, id: u32, limit: usize },
    #[error("element {id:#x} at byte {offset} is not allowed here")]
    Unexpected { offset: u64, id: u32 },
    #[error("malformed element at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: &'static str },
    #[error("stream offsets overflow 64 bits")]
    Overflow,
    /// Not the scanner's own: what a caller that bounds the work of one push (the
    /// relay's index, which runs under its stream's lock) reports when a payload holds
    /// more elements than that.
    #[error("more than {limit} elements in one frame (by byte {offset}), too many to index")]
    TooManyElements { offset: u64, limit: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_webm_from_mp4() {
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]), Sniff::WebM);
        assert_eq!(sniff(&[0x1A, 0x45]), Sniff::NeedMore);
        assert_eq!(sniff(&[]), Sniff::NeedMore);
        // An MP4 from Safari: box size, then "ftyp".
        assert_eq!(sniff(b"\0\0\0\x20ftypiso5"), Sniff::NotWebM);
        assert_eq!(sniff(&[0x1A, 0x46]), Sniff::NotWebM);
    }

    #[test]
    fn sniff_accepts_the_fixture() {
        let fixture = include_bytes!("testdata/ffmpeg-vp8-opus.webm");
        assert_eq!(sniff(fixture), Sniff::WebM);
    }
}
