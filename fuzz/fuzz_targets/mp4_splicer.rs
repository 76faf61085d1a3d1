//! Fuzzes the MP4 recording splicer the way the writer drives it, as `splicer` does the
//! WebM one: generations of a publish session, each cut into pieces at fuzzer-chosen
//! points, a new file when a generation does not fit the open one. Besides "no panic,
//! no hang" (box sizes, sample counts, decode times and timescales come from the
//! publisher), it checks that the splicer counts exactly
//! the bytes it hands out, that finishing patches only bytes the file has, and that a
//! file cut back to a boundary (a failed write) still finishes.
//!
//! Input layout: `stream ++ lengths ++ [n]`, as the mp4_scanner target's, so a real
//! MP4 file is a useful seed as it is. The last byte gives how many bytes before it
//! (at most 31) are piece lengths, cycled until the stream is used up; a length of 0
//! ends the generation and begins the next (the same bytes go on, as a recorder
//! restarted mid-file would send). From the repository root:
//!
//! ```sh
//! mkdir -p fuzz/corpus/mp4_splicer
//! RUSTC_BOOTSTRAP=1 cargo fuzz run mp4_splicer fuzz/corpus/mp4_splicer src/mp4/testdata
//! ```

#![no_main]

use blobcast::recording::container::{Container, Splicer};
use blobcast::recording::splice::{Piece, SpliceError};
use blobcast::sink::Sink;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::time::SystemTime;

/// The file as the writer's disk would hold it.
#[derive(Default)]
struct File {
    bytes: Vec<u8>,
    /// Where the file ended at an element boundary, each time it did.
    boundaries: Vec<usize>,
}

impl Sink<Piece> for File {
    fn put(&mut self, piece: Piece) {
        self.bytes.extend_from_slice(&piece.bytes);
        if piece.boundary {
            self.boundaries.push(self.bytes.len());
        }
    }
}

/// Finishes `file` as `finish_file` does, checking every patch lies within it.
fn finish(splicer: &mut Splicer, file: &mut File) {
    assert_eq!(splicer.out_len(), file.bytes.len() as u64);
    assert!(splicer.duration_secs().is_finite());
    let Some(finish) = splicer.finish() else {
        return;
    };
    assert_eq!(finish.append_at, file.bytes.len() as u64);
    let mut finished = file.bytes.clone();
    finished.extend_from_slice(&finish.append);
    for (at, patch) in finish.patches {
        let at = at as usize;
        assert!(
            at + patch.len() <= finished.len(),
            "patch at {at} past the end"
        );
        finished[at..at + patch.len()].copy_from_slice(&patch);
    }
    if let Some(&cut) = file.boundaries.get(file.boundaries.len() / 2) {
        // A failed write cut the file back to a boundary: it still finishes.
        splicer.truncate(cut as u64);
        file.bytes.truncate(cut);
        let finish = splicer.finish_without_cues();
        if let Some(finish) = finish {
            assert_eq!(finish.append_at, cut as u64);
            for (at, patch) in finish.patches {
                assert!(at as usize + patch.len() <= cut, "patch at {at} past {cut}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_last() else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len());
    let (stream, lengths) = rest.split_at(rest.len() - n);
    let all_zero = lengths.iter().all(|&l| l == 0);

    let mut splicer = Splicer::new(Container::Mp4, SystemTime::UNIX_EPOCH);
    let mut file = File::default();
    let mut generation = 1;
    splicer.begin(generation);
    let (mut at, mut i) = (0, 0);
    while at < stream.len() {
        let len = if all_zero {
            stream.len()
        } else {
            usize::from(lengths[i % lengths.len()])
        };
        i += 1;
        if len == 0 {
            splicer.end_generation(&mut file);
            generation += 1;
            splicer.begin(generation);
            continue;
        }
        let end = (at + len).min(stream.len());
        let piece = Bytes::copy_from_slice(&stream[at..end]);
        at = end;
        match splicer.push(piece, &mut file) {
            Ok(()) => {}
            Err(SpliceError::Incompatible(_)) => {
                // As the writer splits: this file is finished, the generation goes
                // whole into the next one.
                let (g, frames) = splicer.take_generation().expect("a generation is open");
                finish(&mut splicer, &mut file);
                splicer = Splicer::new(Container::Mp4, SystemTime::UNIX_EPOCH);
                file = File::default();
                splicer.begin(g);
                for frame in frames {
                    if splicer.push(frame, &mut file).is_err() {
                        finish(&mut splicer, &mut file);
                        return;
                    }
                }
            }
            Err(SpliceError::Unrecordable(_) | SpliceError::Timeline(_)) => {
                // The writer stops the recording here and finishes what it has.
                splicer.end_generation(&mut file);
                finish(&mut splicer, &mut file);
                return;
            }
        }
        let _ = splicer.take_notices();
    }
    splicer.end_generation(&mut file);
    finish(&mut splicer, &mut file);
});
