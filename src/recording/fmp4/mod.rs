//! The MP4 counterpart of `splice`: turns the generations of one publish session of
//! fragmented MP4 (Safari's and Chrome's MediaRecorder, ffmpeg's `empty_moov`), fed in
//! order as they arrive, into the bytes of ONE fragmented MP4, and says how to finalize
//! it. No I/O here; `writer` puts the pieces on disk.
//!
//! The first generation's init segment (`ftyp` + `moov`) becomes the file's head, its
//! `moov` given a `mehd` if it had none. Every later generation must have the same
//! tracks (ids, handlers, timescales, `stsd`: codec, size, codec settings), else the
//! session goes on in a new file (`SpliceError::Incompatible`); its init segment is
//! dropped. Each fragment (`moof` and its `mdat`) is held until its `mdat` is wholly
//! received, so the file on disk always ends at a whole box (a crash leaves an MP4 that
//! plays to its last fragment). It then goes out as a copy of the `moof`, with its
//! `mfhd` sequence number continued, each `tfdt` moved onto the file's timeline (the
//! generation starts where the file's longest track ended, each track keeping its
//! offset from the generation's earliest decode time) and any explicit `tfhd` base data
//! offset moved with it, followed by the `mdat` as the received bytes themselves. A run
//! without a `tfdt` is left as it is: it starts, for players as here, where its track's
//! previous run ended. Any other top-level box (`sidx`, `mfra`, `free`...) is dropped.
//!
//! Finishing patches the durations in place (`mvhd`, `mehd`, `tkhd`, `mdhd`) and
//! appends an `mfra`: a `tfra` of the fragments whose video run starts on a sync
//! sample, and the `mfro` players look for at the end of the file.

mod boxes;
mod finish;
mod moof;
mod moov;

use super::splice::{Piece, SpliceError};
use crate::mp4::{Event, Scanner, Track, TrackFragment, TrackKind};
use crate::sink::Sink;
use boxes::Field;
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Range;

/// Fragments one file may hold; past it, the rest of each generation is not recorded.
/// Each costs about 64 bytes kept until the file is finalized (its offset and track
/// ends, and its `tfra` entry): 32 MiB at most. At Chrome's and Safari's one fragment
/// per timeslice (1 s on the recorder page) that is six days of one session.
pub(super) const MAX_FRAGMENTS: usize = 1 << 19;

/// The largest fragment held in memory until its `mdat` is whole: what `--max-buffer`
/// allows a stream by default. A fragment is a second or so of media, a few MB at most.
pub(super) const MAX_FRAGMENT_BYTES: u64 = 64 << 20;

/// How far back from the last byte received a `moof` the scanner is still reading may
/// start: the largest it buffers, and a 64-bit box header.
const MOOF_LOOKBACK: u64 = crate::mp4::Limits::DEFAULT_MAX_BUFFERED_BOX as u64 + 16;

/// A track of the file, from the first generation's `moov`.
#[derive(Debug, Clone)]
struct FileTrack {
    id: u32,
    timescale: u32,
    default_duration: u32,
    /// Where its last fragment written ends, in its timescale.
    end: u64,
    /// Where its durations sit in the file.
    tkhd: Field,
    mdhd: Field,
}

/// Where the head put what `finish` patches, as output offsets.
#[derive(Debug, Clone, Copy)]
struct Layout {
    end: u64,
    movie_timescale: u32,
    mvhd: Field,
    mehd: Field,
}

/// A fragment written: where it is and where each of its tracks ends.
#[derive(Debug)]
struct Written {
    end: u64,
    ends: Vec<(usize, u64)>,
}

/// One generation being spliced: its received bytes not yet written, and what its
/// events have decided so far.
#[derive(Debug)]
struct Generation {
    id: u64,
    first: bool,
    scanner: Scanner,
    frames: VecDeque<(u64, Bytes)>,
    received: u64,
    /// Input offset before which nothing is needed any more.
    consumed: u64,
    ftyp: Option<Range<u64>>,
    moov: Option<(Range<u64>, Vec<Track>)>,
    init_done: bool,
    /// Per file track: where this generation's first fragment of it starts, and once
    /// that fragment came, what is added to each of its decode times.
    targets: Vec<u64>,
    shifts: Vec<Option<i128>>,
    /// Its first fragment's earliest decode time, and that track's timescale.
    origin: Option<(u64, u32)>,
    /// The `moof` waiting for its `mdat`, and the `mdat`'s end once its header came.
    moof: Option<(Range<u64>, Vec<TrackFragment>)>,
    mdat_end: Option<u64>,
    broken: bool,
}

/// See the module docs. One per output file.
#[derive(Debug)]
pub struct Splicer {
    out_len: u64,
    layout: Option<Layout>,
    tracks: Vec<FileTrack>,
    fingerprint: Vec<u8>,
    description: String,
    /// The track whose sync fragments go in the `tfra`: video, else the first.
    cue_track: usize,
    /// (decode time, `moof` offset, `traf` number) of the cue track's sync fragments.
    tfra: Vec<(u64, u64, u32)>,
    written: Vec<Written>,
    next_sequence: u32,
    generation: Option<Generation>,
    generations: u32,
    notices: Vec<String>,
}

impl Default for Splicer {
    fn default() -> Self {
        Splicer::new()
    }
}

impl Splicer {
    pub fn new() -> Splicer {
        Splicer {
            out_len: 0,
            layout: None,
            tracks: Vec::new(),
            fingerprint: Vec::new(),
            description: String::new(),
            cue_track: 0,
            tfra: Vec::new(),
            written: Vec::new(),
            next_sequence: 1,
            generation: None,
            generations: 0,
            notices: Vec::new(),
        }
    }

    pub fn out_len(&self) -> u64 {
        self.out_len
    }

    pub fn has_head(&self) -> bool {
        self.layout.is_some()
    }

    pub fn generations(&self) -> u32 {
        self.generations
    }

    /// What the tracks are, e.g. `avc1.42c00d 640x480, mp4a 48000 Hz 2 ch`.
    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Seconds of media so far: where the longest track ends.
    pub fn duration_secs(&self) -> f64 {
        self.tracks
            .iter()
            .map(|t| t.end as f64 / f64::from(t.timescale))
            .fold(0.0, f64::max)
    }

    /// Where the file ends, in `timescale` units, rounded up.
    fn end_in(&self, timescale: u32) -> u64 {
        self.tracks
            .iter()
            .map(|t| {
                let scaled = u128::from(t.end) * u128::from(timescale);
                scaled.div_ceil(u128::from(t.timescale)) as u64
            })
            .max()
            .unwrap_or(0)
    }

    pub fn begin(&mut self, id: u64) {
        debug_assert!(self.generation.is_none());
        self.generations += 1;
        let targets: Vec<u64> = self
            .tracks
            .iter()
            .map(|t| self.end_in(t.timescale).max(t.end))
            .collect();
        self.generation = Some(Generation {
            id,
            first: self.layout.is_none(),
            scanner: Scanner::new(),
            frames: VecDeque::new(),
            received: 0,
            consumed: 0,
            ftyp: None,
            moov: None,
            init_done: false,
            shifts: vec![None; targets.len()],
            targets,
            origin: None,
            moof: None,
            mdat_end: None,
            broken: false,
        });
    }

    pub fn current(&self) -> Option<u64> {
        self.generation.as_ref().map(|g| g.id)
    }

    pub fn received(&self) -> u64 {
        self.generation.as_ref().map_or(0, |g| g.received)
    }

    /// The open generation's bytes, to feed to a new file after `Incompatible`.
    pub fn take_generation(&mut self) -> Option<(u64, Vec<Bytes>)> {
        let generation = self.generation.take()?;
        self.generations -= 1;
        Some((
            generation.id,
            generation.frames.into_iter().map(|(_, b)| b).collect(),
        ))
    }

    /// Feeds the open generation's next bytes, handing finished output to `out`.
    pub fn push(&mut self, payload: Bytes, out: &mut impl Sink<Piece>) -> Result<(), SpliceError> {
        let Some(mut generation) = self.generation.take() else {
            return Ok(());
        };
        let result = self.push_into(&mut generation, payload, out);
        generation.trim();
        self.generation = Some(generation);
        result
    }

    fn push_into(
        &mut self,
        g: &mut Generation,
        payload: Bytes,
        out: &mut dyn Sink<Piece>,
    ) -> Result<(), SpliceError> {
        let start = g.received;
        g.received += payload.len() as u64;
        if g.broken {
            g.consumed = g.received;
            return Ok(());
        }
        g.frames.push_back((start, payload.clone()));
        // As in `splice`: each event handled as the scanner finds it, the scanner out of
        // `g` meanwhile; once a handler fails, the later events are ignored.
        let mut scanner = std::mem::take(&mut g.scanner);
        let mut handled = Ok(());
        let scanned = scanner.push(&payload, &mut |event| {
            if handled.is_ok() && !g.broken {
                handled = self.on_event(g, event, out);
            }
        });
        g.scanner = scanner;
        handled?;
        if g.broken {
            return Ok(());
        }
        if let Err(err) = scanned {
            if g.first && !g.init_done {
                return Err(SpliceError::Unrecordable(format!(
                    "not an MP4 we can record: {err}"
                )));
            }
            self.break_generation(g, format!("MP4 error, rest of it not recorded: {err}"));
            return Ok(());
        }
        self.flush(g, out)?;
        self.bound(g);
        Ok(())
    }

    /// Lets go of received bytes no fragment can need: boxes other than `moof` and
    /// `mdat` are skipped, but only the scanner knows where a `moof` it is still
    /// reading starts, at most `MOOF_LOOKBACK` back. Between a `moof` and its `mdat`,
    /// other boxes count towards the fragment's limit.
    fn bound(&mut self, g: &mut Generation) {
        if !g.init_done || g.broken {
            return;
        }
        match (&g.moof, g.mdat_end) {
            (None, _) => g.consumed = g.consumed.max(g.received.saturating_sub(MOOF_LOOKBACK)),
            (Some((moof, _)), None) if g.received - moof.start > MAX_FRAGMENT_BYTES => {
                let at = moof.start;
                self.break_generation(
                    g,
                    format!("the fragment at byte {at} has no mdat in its first {MAX_FRAGMENT_BYTES} bytes"),
                );
            }
            _ => {}
        }
    }

    fn break_generation(&mut self, g: &mut Generation, why: String) {
        self.notices.push(format!("generation {}: {why}", g.id));
        g.broken = true;
        g.consumed = g.received;
        g.frames.clear();
        g.moof = None;
    }

    fn on_event(
        &mut self,
        g: &mut Generation,
        event: Event,
        out: &mut dyn Sink<Piece>,
    ) -> Result<(), SpliceError> {
        match event {
            Event::FileType { range } if range.start == 0 => g.ftyp = Some(range),
            Event::FileType { range } => {
                let at = range.start;
                self.break_generation(g, format!("a second MP4 file starts at byte {at}"));
            }
            Event::Movie { range, tracks } if !g.init_done => g.moov = Some((range, tracks)),
            Event::Movie { range, .. } => {
                let at = range.start;
                self.break_generation(g, format!("a second moov at byte {at}"));
            }
            Event::InitSegment { range } => self.init(g, range, out)?,
            Event::Fragment { range, tracks, .. } => {
                self.flush(g, out)?;
                if g.broken {
                    return Ok(());
                }
                if !g.init_done {
                    let at = range.start;
                    self.break_generation(g, format!("a fragment at byte {at} before any moov"));
                    return Ok(());
                }
                if let Some((dropped, _)) = g.moof.take() {
                    self.notices.push(format!(
                        "generation {}: the fragment at byte {} has no mdat; dropped",
                        g.id, dropped.start
                    ));
                }
                g.consumed = g.consumed.max(range.start);
                g.moof = Some((range, tracks));
                g.mdat_end = None;
            }
            Event::MediaData { offset, end } => {
                self.flush(g, out)?;
                let Some((moof, _)) = &g.moof else {
                    // An mdat of no fragment: nothing of it is needed.
                    g.consumed = g.consumed.max(end.unwrap_or(0));
                    if end.is_none() {
                        // Nothing after it can be a box: no more fragments.
                        self.break_generation(
                            g,
                            format!("an mdat without a size at byte {offset}"),
                        );
                    }
                    return Ok(());
                };
                match end {
                    Some(end) if end - moof.start <= MAX_FRAGMENT_BYTES => g.mdat_end = Some(end),
                    Some(end) => {
                        let size = end - moof.start;
                        self.break_generation(
                            g,
                            format!("a fragment of {size} bytes at byte {offset}, over the {MAX_FRAGMENT_BYTES}-byte limit"),
                        );
                    }
                    None => self.break_generation(
                        g,
                        format!("an mdat without a size at byte {offset} cannot be spliced"),
                    ),
                }
            }
        }
        Ok(())
    }

    /// The init segment is whole: the head of the file, or checked against it.
    fn init(
        &mut self,
        g: &mut Generation,
        range: Range<u64>,
        out: &mut dyn Sink<Piece>,
    ) -> Result<(), SpliceError> {
        let Some((moov_range, tracks)) = g.moov.take() else {
            self.break_generation(g, "an init segment without moov".into());
            return Ok(());
        };
        let moov_bytes = g.copy(moov_range);
        let mut movie = match moov::parse(&moov_bytes) {
            Ok(movie) => movie,
            Err(why) if g.first => {
                return Err(SpliceError::Unrecordable(format!(
                    "not an MP4 we can record: {why}"
                )))
            }
            Err(why) => {
                // As a WebM generation that cannot be read: the file goes on without it.
                self.break_generation(g, format!("not recorded: {why}"));
                return Ok(());
            }
        };
        let description = describe(&tracks);
        if g.first {
            let mut head = g.copy(g.ftyp.clone().unwrap_or(0..0));
            let moov_at = self.out_len + head.len() as u64;
            head.extend_from_slice(&movie.with_mehd(&moov_bytes));
            let mehd = movie.mehd.expect("with_mehd puts one");
            self.layout = Some(Layout {
                end: self.out_len + head.len() as u64,
                movie_timescale: movie.timescale,
                mvhd: movie.mvhd_duration.moved(moov_at),
                mehd: mehd.moved(moov_at),
            });
            self.tracks = movie
                .tracks
                .iter()
                .map(|t| FileTrack {
                    id: t.id,
                    timescale: t.timescale,
                    default_duration: t.default_duration,
                    end: 0,
                    tkhd: t.tkhd_duration.moved(moov_at),
                    mdhd: t.mdhd_duration.moved(moov_at),
                })
                .collect();
            self.cue_track = movie
                .tracks
                .iter()
                .position(|t| &t.handler == b"vide")
                .unwrap_or(0);
            self.fingerprint = movie.fingerprint;
            self.description = description;
            g.targets = vec![0; self.tracks.len()];
            g.shifts = vec![None; self.tracks.len()];
            self.out_len += head.len() as u64;
            out.put(Piece {
                bytes: Bytes::from(head),
                boundary: true,
            });
        } else if movie.fingerprint != self.fingerprint {
            return Err(SpliceError::Incompatible(self.changed(&movie, description)));
        }
        g.consumed = range.end;
        g.init_done = true;
        Ok(())
    }

    /// Why a generation's tracks cannot join the file's.
    fn changed(&self, movie: &moov::Movie, description: String) -> String {
        if description != self.description {
            return format!(
                "the tracks changed from {} to {description}",
                self.description
            );
        }
        for (old, new) in self.tracks.iter().zip(&movie.tracks) {
            if old.id == new.id && old.timescale != new.timescale {
                return format!(
                    "the timescale of track {} changed from {} to {}",
                    old.id, old.timescale, new.timescale
                );
            }
        }
        format!("the tracks changed ({description}: codec settings differ)")
    }

    /// Writes the waiting fragment once its `mdat` is wholly received.
    fn flush(&mut self, g: &mut Generation, out: &mut dyn Sink<Piece>) -> Result<(), SpliceError> {
        match (g.mdat_end, &g.moof) {
            (Some(end), Some(_)) if end <= g.received => {}
            _ => return Ok(()),
        }
        let (moof, runs) = g.moof.take().expect("checked above");
        let end = g.mdat_end.take().expect("checked above");
        self.write_fragment(g, moof, &runs, end, out)
    }

    /// Ends the open generation: what is whole of its tail goes out, the rest (a
    /// fragment cut short by a publisher that vanished) is dropped.
    pub fn end_generation(&mut self, out: &mut impl Sink<Piece>) {
        let Some(mut g) = self.generation.take() else {
            return;
        };
        if g.broken {
            return;
        }
        if let Err(err) = self.flush(&mut g, out) {
            self.notices.push(format!("generation {}: {err}", g.id));
        }
        if let Some((moof, _)) = g.moof.take() {
            self.notices.push(format!(
                "generation {}: dropped its last {} bytes, an incomplete fragment",
                g.id,
                g.received.saturating_sub(moof.start)
            ));
        }
    }

    /// Forgets output past `len` (a failed write was truncated there): fragments that
    /// end beyond it go, and the tracks' ends follow what is left.
    pub fn truncate(&mut self, len: u64) {
        self.out_len = len;
        if self.layout.is_some_and(|l| l.end > len) {
            self.layout = None;
            self.tracks.clear();
        }
        self.written.retain(|w| w.end <= len);
        self.tfra.retain(|&(_, offset, _)| offset < len);
        for track in &mut self.tracks {
            track.end = 0;
        }
        for written in &self.written {
            for &(t, end) in &written.ends {
                self.tracks[t].end = self.tracks[t].end.max(end);
            }
        }
        self.generation = None;
    }
}

/// What the tracks are, as `RecordingInfo::tracks` says it for WebM.
fn describe(tracks: &[Track]) -> String {
    let parts: Vec<String> = tracks
        .iter()
        .filter_map(|t| match t.kind {
            TrackKind::Video => Some(format!("{} {}x{}", t.codec, t.width, t.height)),
            TrackKind::Audio => Some(format!(
                "{} {} Hz {} ch",
                t.codec, t.sample_rate, t.channels
            )),
            TrackKind::Other => None,
        })
        .collect();
    if parts.is_empty() {
        "no audio or video track".into()
    } else {
        parts.join(", ")
    }
}

impl Generation {
    /// The received frames' parts that hold input bytes `range`, in order.
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

    /// A copy of input bytes `range` (all received and not yet trimmed).
    fn copy(&self, range: Range<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for (bytes, part) in self.parts(range) {
            out.extend_from_slice(&bytes[part]);
        }
        out
    }

    fn trim(&mut self) {
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

#[cfg(test)]
mod tests;
