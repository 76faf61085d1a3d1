//! The two halves of the output past the head: each fragment written with its `moof`
//! rewritten in place (sequence number, decode times, base data offsets), and the finish
//! step that patches the durations the head holds and appends the `mfra` index.

use super::boxes::{self, boxed, Field};
use super::{moof, Generation, Splicer, Written, MAX_FRAGMENTS};
use crate::mp4::TrackFragment;
use crate::recording::splice::{Finish, Piece, SpliceError};
use crate::sink::Sink;
use bytes::Bytes;
use std::ops::Range;

/// A decode time a `traf` gets in the file.
struct Moved {
    track: usize,
    /// None: the run has no tfdt and starts where the track's previous one ended.
    tfdt: Option<Field>,
    value: u64,
    shift: i128,
    end: u64,
    base_data_offset: Option<(usize, u64)>,
    number: u32,
    sync: bool,
}

impl Splicer {
    /// Writes one fragment: `moof` (input range) rewritten, then the input up to `end`
    /// (its `mdat`) as it came.
    pub(super) fn write_fragment(
        &mut self,
        g: &mut Generation,
        moof: Range<u64>,
        runs: &[TrackFragment],
        end: u64,
        out: &mut dyn Sink<Piece>,
    ) -> Result<(), SpliceError> {
        if self.written.len() >= MAX_FRAGMENTS {
            self.break_generation(
                g,
                format!(
                    "the file holds {MAX_FRAGMENTS} fragments, as many as one may; \
                     the rest of this generation is not recorded"
                ),
            );
            return Ok(());
        }
        let mut copy = g.copy(moof.clone());
        let out_offset = self.out_len;
        let moved = match self.moved(g, &copy, moof.start, out_offset, runs) {
            Ok(moved) => moved?,
            Err(why) => {
                let at = moof.start;
                self.break_generation(g, format!("the fragment at byte {at}: {why}"));
                return Ok(());
            }
        };
        let fragment_sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.checked_add(1).unwrap_or(1);
        if let Some(at) = moved.1 {
            boxes::write(&mut copy, at, 4, u64::from(fragment_sequence));
        }
        let mut ends = Vec::with_capacity(moved.0.len());
        for m in moved.0 {
            if let Some(tfdt) = m.tfdt {
                boxes::write(&mut copy, tfdt.at as usize, tfdt.width.into(), m.value);
            }
            if let Some((at, value)) = m.base_data_offset {
                boxes::write(&mut copy, at, 8, value);
            }
            let track = &mut self.tracks[m.track];
            track.end = track.end.max(m.end);
            ends.push((m.track, m.end));
            if m.track == self.cue_track && m.sync {
                self.tfra.push((m.value, out_offset, m.number));
            }
        }
        let moof_len = copy.len() as u64;
        self.out_len += moof_len + (end - moof.end);
        out.put(Piece {
            bytes: Bytes::from(copy),
            boundary: moof.end == end,
        });
        {
            let mut parts = g.parts(moof.end..end).peekable();
            while let Some((bytes, part)) = parts.next() {
                out.put(Piece {
                    bytes: bytes.slice(part),
                    boundary: parts.peek().is_none(),
                });
            }
        }
        g.consumed = end;
        self.written.push(Written {
            end: self.out_len,
            ends,
        });
        Ok(())
    }

    /// Where each `traf` of a `moof` copy goes on the file's timeline, and where its
    /// `mfhd` sequence number is. The outer error breaks the generation (a fragment we
    /// cannot read); the inner one stops the recording (a timeline out of range).
    #[allow(clippy::type_complexity)]
    fn moved(
        &self,
        g: &mut Generation,
        copy: &[u8],
        in_offset: u64,
        out_offset: u64,
        runs: &[TrackFragment],
    ) -> Result<Result<(Vec<Moved>, Option<usize>), SpliceError>, String> {
        let fragment = moof::parse(copy, |id| {
            self.tracks
                .iter()
                .find(|t| t.id == id)
                .map_or(0, |t| t.default_duration)
        })?;
        let mut found = Vec::with_capacity(fragment.trafs.len());
        for traf in &fragment.trafs {
            let track = self
                .tracks
                .iter()
                .position(|t| t.id == traf.track_id)
                .ok_or_else(|| format!("track {} is not in the file", traf.track_id))?;
            // Without a tfdt a run starts where its track's previous run ended: where
            // the file's track ends, whichever generation it is in.
            let value = traf.tfdt.map_or(self.tracks[track].end, |tfdt| {
                boxes::read(copy, tfdt.at as usize, tfdt.width.into())
            });
            found.push((track, traf.tfdt, value));
        }
        // The generation's origin: the earliest start of its first fragment's runs.
        let origin = g.origin.or_else(|| {
            found
                .iter()
                .filter(|(_, tfdt, _)| tfdt.is_some())
                .map(|&(track, _, value)| (value, self.tracks[track].timescale))
                .min_by_key(|&(value, timescale)| Ratio(value, timescale))
        });
        let mut moved = Vec::with_capacity(fragment.trafs.len());
        for (traf, (track, tfdt, value)) in fragment.trafs.iter().zip(found) {
            let shift = match g.shifts[track] {
                _ if tfdt.is_none() => 0,
                Some(shift) => shift,
                None if g.first => 0,
                None => {
                    // The generation starts at the file's end; each track keeps its
                    // offset from the generation's origin (A/V sync within it).
                    let (origin, origin_scale) = origin.expect("a traf was found");
                    let scale = self.tracks[track].timescale;
                    let origin = u128::from(origin) * u128::from(scale) / u128::from(origin_scale);
                    let offset = (i128::from(value) - origin as i128).max(0);
                    i128::from(g.targets[track]) + offset - i128::from(value)
                }
            };
            let new = i128::from(value) + shift;
            if new < 0 {
                return Err(format!(
                    "track {}'s decode time goes back before the generation's start",
                    traf.track_id
                ));
            }
            let width = tfdt.map_or(8, |t| t.width);
            let limit = if width == 4 {
                i128::from(u32::MAX)
            } else {
                i128::from(i64::MAX)
            };
            if new + i128::from(traf.duration) > limit {
                return Ok(Err(SpliceError::Timeline(format!(
                    "track {}'s decode times leave the range of its {}-byte tfdt; recording stopped",
                    traf.track_id, width
                ))));
            }
            let base_data_offset = match traf.base_data_offset {
                Some(at) => {
                    let old = boxes::read(copy, at, 8);
                    let value = i128::from(old) - i128::from(in_offset) + i128::from(out_offset);
                    let value = u64::try_from(value)
                        .map_err(|_| "its base data offset is before the file".to_string())?;
                    Some((at, value))
                }
                None => None,
            };
            moved.push(Moved {
                track,
                tfdt,
                value: new as u64,
                shift,
                end: (new + i128::from(traf.duration)) as u64,
                base_data_offset,
                number: traf.number,
                sync: runs
                    .iter()
                    .any(|r| r.track_id == traf.track_id && r.first_sample_sync == Some(true)),
            });
        }
        // Only now, so that a fragment that breaks the generation decides nothing.
        g.origin = origin;
        for m in moved.iter().filter(|m| m.tfdt.is_some()) {
            g.shifts[m.track].get_or_insert(m.shift);
        }
        Ok(Ok((moved, fragment.sequence)))
    }

    /// How to make the file seekable, given it holds exactly `out_len` bytes. None when
    /// no head was ever written.
    pub fn finish(&self) -> Option<Finish> {
        self.finish_with(true)
    }

    /// As [`Splicer::finish`], for a disk with no room left for the `mfra`.
    pub fn finish_without_cues(&self) -> Option<Finish> {
        self.finish_with(false)
    }

    fn finish_with(&self, with_index: bool) -> Option<Finish> {
        let layout = self.layout?;
        let movie_duration = self.end_in(layout.movie_timescale);
        let mut patches = vec![
            (layout.mvhd.at, layout.mvhd.bytes(movie_duration)),
            (layout.mehd.at, layout.mehd.bytes(movie_duration)),
        ];
        for track in &self.tracks {
            let in_movie = (u128::from(track.end) * u128::from(layout.movie_timescale))
                .div_ceil(u128::from(track.timescale)) as u64;
            patches.push((track.tkhd.at, track.tkhd.bytes(in_movie)));
            patches.push((track.mdhd.at, track.mdhd.bytes(track.end)));
        }
        let mut append = Vec::new();
        if with_index && !self.tfra.is_empty() {
            append = self.mfra();
        }
        Some(Finish {
            append_at: self.out_len,
            append,
            patches,
        })
    }

    /// `mfra`: one `tfra` (version 1, 1-byte traf/trun/sample numbers) and the `mfro`.
    fn mfra(&self) -> Vec<u8> {
        let mut tfra = Vec::with_capacity(16 + self.tfra.len() * 19);
        tfra.extend_from_slice(&[1, 0, 0, 0]);
        tfra.extend_from_slice(&self.tracks[self.cue_track].id.to_be_bytes());
        tfra.extend_from_slice(&0u32.to_be_bytes());
        tfra.extend_from_slice(&(self.tfra.len() as u32).to_be_bytes());
        for &(time, offset, traf) in &self.tfra {
            tfra.extend_from_slice(&time.to_be_bytes());
            tfra.extend_from_slice(&offset.to_be_bytes());
            // traf number (1-byte field), trun 1, sample 1.
            tfra.extend_from_slice(&[traf.min(255) as u8, 1, 1]);
        }
        let mut body = Vec::with_capacity(tfra.len() + 24);
        boxed(b"tfra", &tfra, &mut body);
        let total = 8 + body.len() + 16;
        let mut mfro = vec![0, 0, 0, 0];
        mfro.extend_from_slice(&(total as u32).to_be_bytes());
        boxed(b"mfro", &mfro, &mut body);
        let mut mfra = Vec::with_capacity(total);
        boxed(b"mfra", &body, &mut mfra);
        mfra
    }
}

/// A time as (value, timescale), ordered by the time it is.
#[derive(PartialEq, Eq)]
struct Ratio(u64, u32);

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (u128::from(self.0) * u128::from(other.1)).cmp(&(u128::from(other.0) * u128::from(self.1)))
    }
}
