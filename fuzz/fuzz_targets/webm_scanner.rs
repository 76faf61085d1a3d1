//! Fuzzes the WebM scanner the way a publisher feeds it: one stream cut into pieces at
//! fuzzer-chosen points. Besides "no panic, no hang", it checks that the pieces change
//! nothing (same events, same error as one whole push) and that memory stays in bounds;
//! and the same of the relay's media index built on it (same join point, same facts).
//!
//! Input layout: `stream ++ lengths ++ [n]`. The last byte gives how many bytes before it
//! (at most 31) are piece lengths, cycled until the stream is used up; the rest is the
//! stream. The cut spec sits at the end so a real WebM file is a useful seed as it is;
//! from the repository root:
//!
//! ```sh
//! mkdir -p fuzz/corpus/webm_scanner
//! RUSTC_BOOTSTRAP=1 cargo fuzz run webm_scanner fuzz/corpus/webm_scanner src/webm/testdata
//! ```

#![no_main]

use blobcast::stream::index::{IndexError, MediaIndex};
use blobcast::webm::{Event, Limits, Scanner, StreamInfo, WebmError};
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer can reach the limit, large enough for real headers.
const LIMITS: Limits = Limits {
    max_buffered_element: 4096,
    max_depth: 8,
};

fn scan<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Event>, Option<WebmError>, u64) {
    let mut scanner = Scanner::with_limits(LIMITS);
    let mut events = Vec::new();
    let mut error = None;
    for piece in pieces {
        let result = scanner.push(piece, &mut events);
        assert!(scanner.buffered_bytes() <= LIMITS.max_buffered_element);
        match (result, &error) {
            (Ok(()), None) => {}
            (Err(e), None) => error = Some(e),
            // Once errored, every push must return the same error.
            (result, Some(first)) => assert_eq!(result.as_ref(), Err(first)),
        }
    }
    (events, error, scanner.position())
}

/// What the relay's index made of the pieces: join point, stream facts, failure.
fn index<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
) -> (Option<(u64, u64)>, Option<StreamInfo>, Option<IndexError>) {
    let mut index = MediaIndex::new();
    for piece in pieces {
        index.feed(piece);
    }
    (
        index.live_start(),
        index.info().cloned(),
        index.problem().cloned(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_last() else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len());
    let (stream, lengths) = rest.split_at(rest.len() - n);

    // Zero lengths are empty pushes; if all are zero, fall back to one byte at a time
    // so the cutting always advances.
    let all_zero = lengths.iter().all(|&l| l == 0);
    let mut cut_pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let len = if all_zero {
            1
        } else {
            usize::from(lengths[i % lengths.len()])
        };
        let end = (at + len).min(stream.len());
        cut_pieces.push(&stream[at..end]);
        at = end;
        i += 1;
    }

    let whole = scan(std::iter::once(stream));
    let cut = scan(cut_pieces.iter().copied());
    assert_eq!(whole.2, stream.len() as u64);
    assert_eq!(cut, whole);

    // Every offset reported lies within what was pushed.
    for event in &whole.0 {
        let offset = match event {
            Event::EbmlHeader { end, .. } => *end,
            Event::SegmentStart { data_offset, .. } => *data_offset,
            Event::Info { range, .. } | Event::Tracks { range, .. } => range.end,
            Event::InitSegment { range } => range.end,
            Event::ClusterStart { data_offset, .. } => *data_offset,
            Event::Block { offset, .. } => *offset,
        };
        assert!(offset <= whole.2, "{event:?} beyond {}", whole.2);
    }

    let indexed = index(std::iter::once(stream));
    // The index bounds its work per feed (MAX_ELEMENTS_PER_FEED): a whole stream past it
    // is given up on where its pieces need not be.
    if !matches!(indexed.2, Some(IndexError::TooManyElements { .. })) {
        assert_eq!(index(cut_pieces.into_iter()), indexed);
    }
    if let Some((init_end, keyframe_cluster)) = indexed.0 {
        assert!(init_end <= keyframe_cluster && keyframe_cluster < whole.2);
    }
});
