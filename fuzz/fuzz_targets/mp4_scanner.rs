//! Fuzzes the MP4 box scanner the way a publisher feeds it: one stream cut into pieces
//! at fuzzer-chosen points. Besides "no panic, no hang", it checks that the pieces change
//! nothing (same events, same error as one whole push), that every offset lies within
//! what was pushed, and the same of the relay's media index built on it.
//!
//! Input layout as for `webm_scanner`: `stream ++ lengths ++ [n]`. From the repository
//! root:
//!
//! ```sh
//! mkdir -p fuzz/corpus/mp4_scanner
//! RUSTC_BOOTSTRAP=1 cargo fuzz run mp4_scanner fuzz/corpus/mp4_scanner src/mp4/testdata
//! ```

#![no_main]

use blobcast::mp4::{Event, Limits, Mp4Error, Scanner};
use blobcast::stream::index::{IndexError, MediaIndex};
use blobcast::webm::StreamInfo;
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer can reach the limits, large enough for real boxes.
const LIMITS: Limits = Limits {
    max_buffered_box: 4096,
    max_depth: 12,
    max_tracks: 4,
};

fn scan<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Event>, Option<Mp4Error>, u64) {
    let mut scanner = Scanner::with_limits(LIMITS);
    let mut events = Vec::new();
    let mut error = None;
    for piece in pieces {
        let result = scanner.push(piece, &mut events);
        match (result, &error) {
            (Ok(()), None) => {}
            (Err(e), None) => error = Some(e),
            (result, Some(first)) => assert_eq!(result.as_ref(), Err(first)),
        }
    }
    (events, error, scanner.position())
}

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
    let all_zero = lengths.iter().all(|&l| l == 0);
    let mut cut_pieces = Vec::new();
    let (mut at, mut i) = (0, 0);
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
    assert_eq!(cut, whole);
    for event in &whole.0 {
        let end = match event {
            Event::FileType { range }
            | Event::Movie { range, .. }
            | Event::InitSegment { range }
            | Event::Fragment { range, .. } => range.end,
            Event::MediaData { offset, .. } => *offset,
        };
        assert!(
            end <= stream.len() as u64,
            "{event:?} beyond {}",
            stream.len()
        );
    }

    let indexed = index(std::iter::once(stream));
    if !matches!(indexed.2, Some(IndexError::TooManyElements { .. })) {
        assert_eq!(index(cut_pieces.into_iter()), indexed);
    }
    if let Some((init_end, fragment)) = indexed.0 {
        assert!(init_end <= fragment && fragment < stream.len() as u64);
    }
});
