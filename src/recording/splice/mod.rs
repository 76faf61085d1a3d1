//! The splicing writer's pure core: turns the generations of one publish session, fed
//! in order as they arrive, into the bytes of ONE continuous WebM, and says how to
//! finalize it. No I/O here; `writer` puts the pieces on disk.
//!
//! The first generation's init segment becomes the file's head: its EBML header, a
//! Segment of unknown size (an 8-byte size, patched at the end), a Void reserving room
//! for the SeekHead, our own Info (TimecodeScale, DateUTC, and a Void where the Duration
//! goes) and its Tracks. Later generations lose their init segment. Every Cluster header
//! is rewritten (unknown size, 8-byte Timecode) so that each generation's timecodes
//! follow the previous one's last block by one frame. Everything else in a Cluster is
//! copied through untouched once complete (shared `Bytes`, or gathered with its
//! neighbours when tiny): the file on disk always ends at an element boundary, so a
//! crash leaves a WebM that plays to its last block.
//!
//! Finalizing appends Cues (one per Cluster whose first video block is a keyframe) and
//! patches the head in place: SeekHead, Duration, Segment and Cluster sizes.
//!
//! Here: the Splicer's state and its life cycle (generations begun, fed, ended, and a
//! file cut back after a failed write). The input window and how bytes go out are
//! `window`, what each scanner event does to the output is `events`, the file head and
//! the finish step that patches it are `finish`.

mod events;
mod finish;
mod window;

use crate::sink::Sink;
use crate::webm::Scanner;
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Range;
use std::time::SystemTime;
use window::Out;

/// A run of output bytes. `boundary`: the file ends at an element boundary after it.
#[derive(Debug, Clone)]
pub struct Piece {
    pub bytes: Bytes,
    pub boundary: bool,
}

/// Why a generation cannot go on in the current file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    /// Start a new file for this session and feed it this generation again.
    #[error("{0}")]
    Incompatible(String),
    /// Nothing can be recorded from this generation as a file head (not WebM, say).
    #[error("{0}")]
    Unrecordable(String),
    /// The media's timecodes leave the range of the file's timeline (a hostile Cluster
    /// Timecode near 2^63): the recording cannot go on.
    #[error("{0}")]
    Timeline(String),
}

/// How to finish the file: append `append` at `append_at`, then write each patch.
#[derive(Debug)]
pub struct Finish {
    pub append_at: u64,
    pub append: Vec<u8>,
    pub patches: Vec<(u64, Vec<u8>)>,
}

/// Where the head put what `finish` patches, as output offsets.
#[derive(Debug, Clone, Copy)]
struct Layout {
    segment: u64,
    segment_data: u64,
    info: u64,
    duration: u64,
    tracks: u64,
}

/// A Cluster written, kept until the file is finalized to patch its size.
#[derive(Debug, Clone, Copy)]
struct ClusterOut {
    offset: u64,
    max_time: i64,
}

/// The Cluster the open generation is in, as written to the output.
#[derive(Debug, Clone, Copy)]
struct OpenCluster {
    out_offset: u64,
    timecode: i64,
    cue_checked: bool,
}

/// One generation being spliced: its input window (`window`) and what its events
/// have decided so far (`events`).
#[derive(Debug)]
struct Generation {
    id: u64,
    /// The first generation of the file: its init segment becomes the head.
    first: bool,
    scanner: Scanner,
    /// Received payloads not yet wholly consumed, with their generation offsets.
    frames: VecDeque<(u64, Bytes)>,
    received: u64,
    /// Input offset up to which the output is decided.
    consumed: u64,
    ebml: Option<Range<u64>>,
    tracks: Option<Vec<u8>>,
    init_done: bool,
    base: Option<i64>,
    cluster: Option<OpenCluster>,
    last_video: Option<i64>,
    prev_video: Option<i64>,
    broken: bool,
}

/// See the module docs. One per output file.
#[derive(Debug)]
pub struct Splicer {
    started: SystemTime,
    out_len: u64,
    layout: Option<Layout>,
    timecode_scale: u64,
    fingerprint: Option<Vec<u8>>,
    description: String,
    video_track: Option<u64>,
    /// The track whose keyframes get Cues: video, else the first track.
    cue_track: Option<u64>,
    clusters: Vec<ClusterOut>,
    cues: Vec<(u64, u64)>,
    last_time: Option<i64>,
    /// One frame, in timecode units: the space left between generations.
    gap: i64,
    generation: Option<Generation>,
    generations: u32,
    notices: Vec<String>,
}

impl Splicer {
    pub fn new(started: SystemTime) -> Splicer {
        Splicer {
            started,
            out_len: 0,
            layout: None,
            timecode_scale: 1_000_000,
            fingerprint: None,
            description: String::new(),
            video_track: None,
            cue_track: None,
            clusters: Vec::new(),
            cues: Vec::new(),
            last_time: None,
            gap: 33,
            generation: None,
            generations: 0,
            notices: Vec::new(),
        }
    }

    /// Bytes of output produced so far.
    pub fn out_len(&self) -> u64 {
        self.out_len
    }

    pub fn has_head(&self) -> bool {
        self.layout.is_some()
    }

    /// Generations spliced into this file (begun).
    pub fn generations(&self) -> u32 {
        self.generations
    }

    /// What the tracks are, e.g. `V_VP8 640x480, A_OPUS 48000 Hz 2 ch`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Things worth a log line (bytes dropped, a generation that broke), for the caller.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Seconds of media so far: the last block's time plus one frame.
    pub fn duration_secs(&self) -> f64 {
        self.duration_ticks() as f64 * self.timecode_scale as f64 / 1e9
    }

    fn duration_ticks(&self) -> i64 {
        self.last_time.map_or(0, |t| t.saturating_add(self.gap))
    }

    /// At least one tick, whatever TimecodeScale the publisher's Info said.
    fn ms_to_ticks(&self, ms: i64) -> i64 {
        let ticks = (ms as u64 * 1_000_000) / self.timecode_scale.max(1);
        (ticks as i64).max(1)
    }

    /// Starts generation `id`; the previous one must have been ended.
    pub fn begin(&mut self, id: u64) {
        debug_assert!(self.generation.is_none());
        self.generations += 1;
        self.generation = Some(Generation {
            id,
            first: self.layout.is_none(),
            scanner: Scanner::new(),
            frames: VecDeque::new(),
            received: 0,
            consumed: 0,
            ebml: None,
            tracks: None,
            init_done: false,
            base: None,
            cluster: None,
            last_video: None,
            prev_video: None,
            broken: false,
        });
    }

    /// The open generation's id.
    pub fn current(&self) -> Option<u64> {
        self.generation.as_ref().map(|g| g.id)
    }

    /// Bytes of the open generation received so far.
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
        let result = self.push_into(&mut generation, payload, &mut Out::new(out));
        generation.trim();
        self.generation = Some(generation);
        result
    }

    fn push_into(
        &mut self,
        g: &mut Generation,
        payload: Bytes,
        out: &mut Out,
    ) -> Result<(), SpliceError> {
        let start = g.received;
        g.received += payload.len() as u64;
        if g.broken {
            g.consumed = g.received;
            return Ok(());
        }
        g.frames.push_back((start, payload.clone()));
        // Each event is handled as the scanner finds it: a frame of tiny elements makes
        // millions, too many to hold. The scanner is taken out of `g` meanwhile, which
        // the handler needs whole; once a handler fails, the later events are ignored.
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
                // An MP4 session goes to the MP4 splicer (`container`): this is neither.
                return Err(SpliceError::Unrecordable(format!(
                    "not a WebM we can record: {err}"
                )));
            }
            self.break_generation(g, format!("WebM error, rest of it not recorded: {err}"));
            return Ok(());
        }
        if g.init_done {
            self.flush(g, out);
        }
        Ok(())
    }

    fn break_generation(&mut self, g: &mut Generation, why: String) {
        self.notices.push(format!("generation {}: {why}", g.id));
        g.broken = true;
        g.consumed = g.received;
        g.frames.clear();
    }

    /// Ends the open generation: what is complete of its tail goes out, the rest (an
    /// element cut short by a publisher that vanished) is dropped.
    pub fn end_generation(&mut self, out: &mut impl Sink<Piece>) {
        let Some(mut g) = self.generation.take() else {
            return;
        };
        let out = &mut Out::new(out);
        if g.broken {
            return;
        }
        if g.init_done {
            self.flush(&mut g, out);
        }
        if g.consumed < g.received && g.init_done {
            self.notices.push(format!(
                "generation {}: dropped its last {} bytes, an incomplete element",
                g.id,
                g.received - g.consumed
            ));
        }
        if let (Some(last), Some(prev)) = (g.last_video, g.prev_video) {
            self.gap = last
                .saturating_sub(prev)
                .clamp(self.ms_to_ticks(1), self.ms_to_ticks(250));
        }
    }

    /// Forgets output past `len` (a failed write was truncated there): Clusters and
    /// Cues that start beyond it go, and the duration follows what is left.
    pub fn truncate(&mut self, len: u64) {
        self.out_len = len;
        let layout_end = self.layout.map(|l| l.tracks);
        if layout_end.is_some_and(|end| end >= len) {
            self.layout = None;
        }
        self.clusters.retain(|c| c.offset + 22 <= len);
        if let Some(layout) = self.layout {
            self.cues
                .retain(|&(_, pos)| layout.segment_data + pos + 22 <= len);
        } else {
            self.cues.clear();
        }
        self.last_time = self.clusters.iter().map(|c| c.max_time).max();
        self.generation = None;
    }
}

#[cfg(test)]
mod tests {
    use super::events::MAX_CLUSTERS;
    use super::window::GATHER_LIMIT;
    use super::*;
    use crate::webm::ebml::{id, parse_header};
    use crate::webm::testutil::{
        ebml_header, el, el_unknown, heap_use, id_bytes, info, simple_block, timecode,
        tiny_clusters_and_blocks, vp8_opus_tracks, HeapUse, UNKNOWN,
    };
    use crate::webm::{Event, Scanner};

    const CHROME: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");
    const PIECES: &str = include_str!("../../../integration/fixtures/chrome-vp8-opus.pieces.json");
    /// ffmpeg's muxer: known sizes everywhere, a SeekHead, Cues; 160x120.
    const FFMPEG: &[u8] = include_bytes!("../../webm/testdata/ffmpeg-vp8-opus.webm");

    fn chrome_pieces() -> Vec<Bytes> {
        let lengths: Vec<usize> = serde_json::from_str(PIECES).unwrap();
        let mut start = 0;
        lengths
            .iter()
            .map(|len| {
                let piece = Bytes::copy_from_slice(&CHROME[start..start + len]);
                start += len;
                piece
            })
            .collect()
    }

    fn cut(data: &[u8], size: usize) -> Vec<Bytes> {
        data.chunks(size).map(Bytes::copy_from_slice).collect()
    }

    /// Splices generations; returns the output and where each piece ended (boundaries).
    fn splice(generations: &[Vec<Bytes>]) -> (Splicer, Vec<u8>, Vec<usize>) {
        splice_started(SystemTime::now(), generations)
    }

    fn splice_started(
        started: SystemTime,
        generations: &[Vec<Bytes>],
    ) -> (Splicer, Vec<u8>, Vec<usize>) {
        let mut splicer = Splicer::new(started);
        let mut out = Vec::new();
        let mut boundaries = Vec::new();
        let mut take = |pieces: Vec<Piece>, out: &mut Vec<u8>| {
            for piece in pieces {
                out.extend_from_slice(&piece.bytes);
                if piece.boundary {
                    boundaries.push(out.len());
                }
            }
        };
        for (g, pieces) in generations.iter().enumerate() {
            splicer.begin(g as u64 + 1);
            for piece in pieces {
                let mut produced = Vec::new();
                splicer.push(piece.clone(), &mut produced).unwrap();
                take(produced, &mut out);
            }
            let mut produced = Vec::new();
            splicer.end_generation(&mut produced);
            take(produced, &mut out);
        }
        assert_eq!(splicer.out_len(), out.len() as u64);
        (splicer, out, boundaries)
    }

    fn finalize(splicer: &Splicer, mut file: Vec<u8>) -> Vec<u8> {
        let finish = splicer.finish().unwrap();
        assert_eq!(finish.append_at, file.len() as u64);
        file.extend_from_slice(&finish.append);
        for (at, bytes) in finish.patches {
            file[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        file
    }

    fn events(data: &[u8]) -> Vec<Event> {
        let mut scanner = Scanner::new();
        let mut events = Vec::new();
        scanner.push(data, &mut events).expect("valid WebM");
        events
    }

    /// Walks the file as a player would: top level, Segment children, Cluster children.
    /// Returns where the last whole element ends (it must be the end of the data).
    fn walk(data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            let header = parse_header(&data[pos..], pos as u64).unwrap().unwrap();
            let header_len = usize::from(header.len);
            if matches!(header.id, id::SEGMENT | id::CLUSTER) {
                pos += header_len;
                continue;
            }
            let end = pos + header_len + header.size.unwrap() as usize;
            assert!(
                end <= data.len(),
                "element {:#x} at {pos} is cut short",
                header.id
            );
            pos = end;
        }
        pos
    }

    fn cluster_timecodes(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ClusterStart { timecode, .. } => timecode.map(|t| t.value),
                _ => None,
            })
            .collect()
    }

    fn blocks(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::Block { .. }))
            .count()
    }

    #[test]
    fn three_generations_become_one_file_with_rising_timecodes() {
        let g = chrome_pieces();
        let (splicer, file, _) = splice(&[g.clone(), g.clone(), g]);
        let original = events(CHROME);
        let spliced = events(&file);
        let kinds = |e: &[Event], f: fn(&Event) -> bool| e.iter().filter(|e| f(e)).count();
        assert_eq!(
            kinds(&spliced, |e| matches!(e, Event::EbmlHeader { .. })),
            1
        );
        assert_eq!(kinds(&spliced, |e| matches!(e, Event::Tracks { .. })), 1);
        assert_eq!(blocks(&spliced), 3 * blocks(&original));
        let timecodes = cluster_timecodes(&spliced);
        assert_eq!(timecodes.len(), 3 * cluster_timecodes(&original).len());
        assert!(timecodes.windows(2).all(|w| w[0] <= w[1]), "{timecodes:?}");
        // The second generation starts one frame after the first one's last block.
        let per_generation = cluster_timecodes(&original).len();
        assert_eq!(timecodes[per_generation], 5977 + 33);
        assert!((splicer.duration_secs() - 3.0 * 6.010).abs() < 1e-9);
        assert_eq!(walk(&file), file.len());

        let file = finalize(&splicer, file);
        assert_eq!(walk(&file), file.len());
        let events = events(&file);
        let duration = events.iter().find_map(|e| match e {
            Event::Info { duration, .. } => *duration,
            _ => None,
        });
        assert_eq!(duration, Some(18_030.0));
        assert!(matches!(
            events[1],
            Event::SegmentStart { size: Some(_), .. }
        ));
        assert!(events
            .iter()
            .all(|e| !matches!(e, Event::ClusterStart { size: None, .. })));
        assert_eq!(blocks(&events), 3 * blocks(&original));
    }

    #[test]
    fn the_file_always_ends_at_an_element_boundary() {
        let g = chrome_pieces();
        // Pieces cut anywhere, as Chrome does, and at every 997 bytes.
        let (_, file, boundaries) = splice(&[g, cut(CHROME, 997)]);
        assert!(boundaries.len() > 100);
        for end in boundaries {
            assert_eq!(walk(&file[..end]), end);
        }
    }

    #[test]
    fn new_track_uids_splice_but_a_new_picture_size_is_incompatible() {
        let mut renamed = CHROME.to_vec();
        // Chrome's first TrackUID: 73 C5 87 + 7 bytes.
        let at = renamed
            .windows(3)
            .position(|w| w == [0x73, 0xC5, 0x87])
            .unwrap();
        renamed[at + 3..at + 10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        let (splicer, _, _) = splice(&[chrome_pieces(), cut(&renamed, 4096)]);
        assert_eq!(splicer.generations(), 2);

        let (mut splicer, _, _) = splice(&[chrome_pieces()]);
        splicer.begin(2);
        let mut out = Vec::new();
        let err = splicer.push(Bytes::from_static(&FFMPEG[..3000]), &mut out);
        assert!(out.is_empty());
        match err {
            Err(SpliceError::Incompatible(why)) => {
                assert!(why.contains("192x144") && why.contains("160x120"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let (id, frames) = splicer.take_generation().unwrap();
        assert_eq!(id, 2);
        assert_eq!(frames.concat(), &FFMPEG[..3000]);
    }

    #[test]
    fn known_sizes_cues_and_seek_heads_of_a_generation_are_not_copied() {
        let (splicer, file, _) = splice(&[cut(FFMPEG, 1000), cut(FFMPEG, 777)]);
        let file = finalize(&splicer, file);
        assert_eq!(walk(&file), file.len());
        let original = events(FFMPEG);
        let spliced = events(&file);
        assert_eq!(blocks(&spliced), 2 * blocks(&original));
        let cues = file
            .windows(4)
            .filter(|w| *w == id::CUES.to_be_bytes())
            .count();
        // Our Cues and our SeekHead's entry for them; the generations' own (a Cues and
        // a SeekHead entry each) are gone.
        assert_eq!(cues, 2, "only our own Cues");
        let timecodes = cluster_timecodes(&spliced);
        assert!(timecodes.windows(2).all(|w| w[0] <= w[1]), "{timecodes:?}");
    }

    #[test]
    fn an_element_cut_short_at_a_generation_end_is_dropped() {
        let (mut splicer, file, _) = splice(&[cut(&CHROME[..100_000], 4096), chrome_pieces()]);
        assert_eq!(walk(&file), file.len());
        assert!(splicer
            .take_notices()
            .iter()
            .any(|n| n.contains("incomplete element")));
        let file = finalize(&splicer, file);
        assert_eq!(
            blocks(&events(&file)),
            blocks(&events(&CHROME[..100_000])) - 1 + blocks(&events(CHROME))
        );
    }

    #[test]
    fn what_is_not_webm_cannot_be_recorded() {
        let mut splicer = Splicer::new(SystemTime::now());
        splicer.begin(1);
        let result = splicer.push(
            Bytes::from_static(b"\0\0\0\x20ftypiso5...."),
            &mut Vec::new(),
        );
        assert!(
            matches!(result, Err(SpliceError::Unrecordable(_))),
            "{result:?}"
        );
        assert!(splicer.finish().is_none());
    }

    #[test]
    fn after_a_failed_write_the_file_is_finished_where_it_was_cut() {
        let (mut splicer, file, boundaries) = splice(&[chrome_pieces(), chrome_pieces()]);
        let cut_at = boundaries[boundaries.len() * 3 / 4];
        splicer.truncate(cut_at as u64);
        let file = finalize(&splicer, file[..cut_at].to_vec());
        assert_eq!(walk(&file), file.len());
        let duration = events(&file).iter().find_map(|e| match e {
            Event::Info { duration, .. } => *duration,
            _ => None,
        });
        assert!(duration.unwrap() > 6010.0 && duration.unwrap() < 12_020.0);
    }

    /// Output as a writer sees it, piece by piece, keeping nothing: its figures only.
    #[derive(Debug, Default)]
    struct Tally {
        pieces: usize,
        bytes: u64,
    }

    impl Sink<Piece> for Tally {
        fn put(&mut self, piece: Piece) {
            self.pieces += 1;
            self.bytes += piece.bytes.len() as u64;
        }
    }

    /// Chrome's generation, then one frame of `unit` repeated up to 16 MiB (the largest
    /// a publisher may send, `--max-frame`): what that frame cost and made (the
    /// sink's figures and the bytes the splicer counted).
    fn push_hostile_frame(splicer: &mut Splicer, unit: &[u8]) -> (Bytes, Tally, HeapUse, u64) {
        splicer.begin(1);
        splicer
            .push(Bytes::from_static(CHROME), &mut Tally::default())
            .unwrap();
        let frame = Bytes::from(unit.repeat((16 << 20) / unit.len()));
        let before = splicer.out_len();
        let mut tally = Tally::default();
        let (result, heap) = heap_use(|| splicer.push(frame.clone(), &mut tally));
        result.unwrap();
        (frame, tally, heap, splicer.out_len() - before)
    }

    #[test]
    fn a_frame_of_tiny_blocks_is_recorded_in_bounded_memory() {
        // 2.7 million 6-byte SimpleBlocks in 54 thousand tiny Clusters. Held as scanner
        // events and a piece per block, they took 439 MB.
        let unit = tiny_clusters_and_blocks();
        let mut splicer = Splicer::new(SystemTime::now());
        let (frame, tally, heap, made) = push_hostile_frame(&mut splicer, &unit);
        let units = frame.len() / unit.len();
        let clusters = 25 + 2 * units;
        assert_eq!(splicer.clusters.len(), clusters);
        // Every block went out (all whole), each Cluster with our 22-byte header.
        let blocks = 100 * 6 * units as u64;
        assert!(made >= blocks + 22 * 2 * units as u64, "{made}");
        // All of it handed out by the push's end, in pieces of about GATHER_LIMIT.
        assert_eq!(tally.bytes, made);
        assert!(
            tally.pieces <= made as usize / GATHER_LIMIT + 1,
            "{tally:?}"
        );
        // What the file keeps per Cluster (offset, time, Cue: 32 bytes each) and one
        // gathered piece, nothing per block.
        let kept = 32 * clusters.next_power_of_two();
        assert!(
            heap.peak < kept + 2 * GATHER_LIMIT && heap.retained < kept as isize,
            "{clusters} clusters: {heap:?}"
        );
        assert!(splicer.take_notices().is_empty());
    }

    #[test]
    fn a_file_holds_so_many_clusters_and_no_more() {
        // 3.4 million 5-byte empty Clusters: the file takes MAX_CLUSTERS of them, the
        // rest of the generation is not recorded. They took 577 MB in one push before.
        let mut splicer = Splicer::new(SystemTime::now());
        let (frame, tally, heap, made) = push_hostile_frame(&mut splicer, &el(id::CLUSTER, &[]));
        assert!(frame.len() / 5 > MAX_CLUSTERS);
        assert_eq!(splicer.clusters.len(), MAX_CLUSTERS);
        let notices = splicer.take_notices();
        assert!(
            notices.len() == 1 && notices[0].contains("Clusters, as many as one may"),
            "{notices:?}"
        );
        assert_eq!(made, 22 * (MAX_CLUSTERS as u64 - 25));
        assert_eq!(tally.bytes, made);
        assert!(
            tally.pieces <= made as usize / GATHER_LIMIT + 1,
            "{tally:?}"
        );
        let kept = MAX_CLUSTERS * std::mem::size_of::<ClusterOut>();
        assert!(heap.peak < kept + 2 * GATHER_LIMIT, "{heap:?}");

        // More of it, and later generations, cost nothing and add nothing: no new
        // file, no loop.
        let len = splicer.out_len();
        let mut tally = Tally::default();
        let ((), heap) = heap_use(|| {
            splicer.push(frame.clone(), &mut tally).unwrap();
            splicer.end_generation(&mut tally);
        });
        assert!(heap.peak < 1024, "{heap:?}");
        splicer.begin(2);
        for piece in chrome_pieces() {
            splicer.push(piece, &mut tally).unwrap();
        }
        splicer.end_generation(&mut tally);
        assert_eq!((tally.bytes, splicer.out_len()), (0, len));
        assert_eq!(splicer.generations(), 2);
        let notices = splicer.take_notices();
        assert!(
            notices.len() == 1 && notices[0].starts_with("generation 2: the file holds"),
            "{notices:?}"
        );
    }

    #[test]
    fn a_recording_is_the_same_however_its_pieces_are_cut() {
        let started = SystemTime::now();
        let g = chrome_pieces();
        let (_, whole, _) = splice_started(started, &[g.clone(), g.clone(), g]);
        for size in [1, 997, 65_536, CHROME.len()] {
            let g = cut(CHROME, size);
            let (_, file, _) = splice_started(started, &[g.clone(), g.clone(), g]);
            assert!(file == whole, "cut every {size} bytes");
        }
    }

    /// Chrome's generation, then `tail` in the same generation: what the splicer says.
    fn after_chrome(tail: &[u8]) -> (Splicer, Result<(), SpliceError>) {
        let mut splicer = Splicer::new(SystemTime::now());
        splicer.begin(1);
        splicer
            .push(Bytes::from_static(CHROME), &mut Vec::new())
            .unwrap();
        let result = splicer.push(Bytes::copy_from_slice(tail), &mut Vec::new());
        (splicer, result)
    }

    fn hostile_cluster(tc: u64, relative: i16) -> Vec<u8> {
        el_unknown(
            id::CLUSTER,
            &[timecode(tc), simple_block(1, relative, true, 10)].concat(),
        )
    }

    #[test]
    fn timecodes_past_the_timeline_fail_the_recording_instead_of_panicking() {
        // A Cluster Timecode of 2^63 once overflowed `-value` in the blocking writer.
        for (tc, relative) in [
            (1 << 63, 0),
            (u64::MAX, 0),
            // Fits, but a block after it does not.
            (i64::MAX as u64, 1),
        ] {
            let (mut splicer, result) = after_chrome(&hostile_cluster(tc, relative));
            match result {
                Err(SpliceError::Timeline(why)) => {
                    assert!(why.contains("past the range"), "{why}")
                }
                other => panic!("Timecode {tc}: {other:?}"),
            }
            // The rest of the generation is not recorded, and finishing still works.
            let len = splicer.out_len();
            splicer
                .push(Bytes::from(hostile_cluster(0, 0)), &mut Vec::new())
                .unwrap();
            splicer.end_generation(&mut Vec::new());
            assert_eq!(splicer.out_len(), len);
            assert!(splicer.finish().is_some());
        }
        // The next generation cannot follow a block at the end of the timeline either.
        let (mut splicer, result) = after_chrome(&hostile_cluster(i64::MAX as u64, 0));
        result.unwrap();
        splicer.end_generation(&mut Vec::new());
        splicer.begin(2);
        let mut result = Ok(());
        for piece in chrome_pieces() {
            result = result.and(splicer.push(piece, &mut Vec::new()));
        }
        assert!(
            matches!(result, Err(SpliceError::Timeline(_))),
            "{result:?}"
        );
        assert!(splicer.duration_secs().is_finite());
        assert!(splicer.finish().is_some());
    }

    #[test]
    fn a_hostile_timecode_scale_makes_no_overflow() {
        for scale in [u64::MAX, 1 << 63, 1] {
            let file = [
                ebml_header("webm"),
                [id_bytes(id::SEGMENT), UNKNOWN.to_vec()].concat(),
                info(scale, None),
                el(id::TRACKS, &vp8_opus_tracks()),
                hostile_cluster(5, 3),
                hostile_cluster(u64::MAX >> 2, 3),
            ]
            .concat();
            let mut splicer = Splicer::new(SystemTime::now());
            for (g, size) in [(1, 7), (2, 1000)] {
                splicer.begin(g);
                for piece in cut(&file, size) {
                    // The second generation's timeline overflows, which is an answer.
                    match splicer.push(piece, &mut Vec::new()) {
                        Ok(()) | Err(SpliceError::Timeline(_)) => {}
                        Err(other) => panic!("{other:?}"),
                    }
                }
                splicer.end_generation(&mut Vec::new());
            }
            assert!(splicer.duration_secs().is_finite());
            assert!(splicer.finish().is_some());
        }
    }

    #[test]
    fn large_blocks_go_out_as_slices_of_the_input() {
        let large = simple_block(1, 0, true, 20_000);
        let small = simple_block(2, 0, true, 100);
        let cluster = el_unknown(id::CLUSTER, &[large.clone(), small.clone()].concat());
        let input = Bytes::from(cluster);
        let mut splicer = Splicer::new(SystemTime::now());
        let mut pieces = Vec::new();
        splicer.begin(1);
        splicer
            .push(Bytes::from_static(CHROME), &mut Vec::new())
            .unwrap();
        splicer.push(input.clone(), &mut pieces).unwrap();
        splicer.end_generation(&mut pieces);
        // Our header for the Cluster, the large block uncopied, then the small one.
        let at = input.len() - small.len() - large.len();
        let lens: Vec<usize> = pieces.iter().map(|p| p.bytes.len()).collect();
        assert_eq!(lens, [22, large.len(), small.len()]);
        assert_eq!(pieces[1].bytes.as_ptr(), input[at..].as_ptr());
        assert!(pieces.iter().all(|p| p.boundary));
    }
}
