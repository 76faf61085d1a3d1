//! What a generation's media says, learned as its bytes arrive: whether it is WebM or
//! MP4, where the init segment ends, the newest cluster or fragment a live joiner may
//! start at, and the codecs and picture size for the API; and whether that agrees with
//! the mime the publisher declared. The relay does not care which container it holds.
//!
//! The container is told by the first bytes: the EBML magic (WebM, Matroska) or an
//! `ftyp` box (MP4). Anything else is relayed just the same, only without an index; so
//! is the rest of a generation whose media broke its scanner.
//!
//! An index costs the same few hundred bytes whatever it is fed: the scanner's events are
//! looked at the moment they are found and only the newest join point is kept, so a frame
//! packed with millions of tiny clusters, blocks or boxes costs time, not memory. And only
//! so much time: a feed runs under the stream's buffer lock on a runtime worker, so one
//! frame may hold [`MAX_ELEMENTS_PER_FEED`] elements (WebM) or top-level boxes (MP4);
//! past that the generation is relayed without an index (as if its media broke the
//! scanner), and a live joiner gets the whole generation, never a join point the index
//! did not check.

use crate::mp4::{self, Mp4Error};
use crate::sink::Sink;
use crate::webm::{self, AudioStream, StreamInfo, VideoStream, WebmError};

/// Elements one feed (one publisher frame) may make the scanner report. The scanner
/// takes about 20 ns an element (ten times that in a debug build), so this bounds a feed
/// to a fraction of a millisecond of the lock and of a worker; a 16 MiB frame of 5-byte
/// Clusters has 3.4 million, 60 ms, a stall for every stream sharing the two workers.
/// Real frames are far below it: a MediaRecorder timeslice holds about a hundred
/// elements a second of media, so this is more than a minute of it in one frame.
pub const MAX_ELEMENTS_PER_FEED: u64 = 1 << 13;

/// Bytes handed to the scanner at a time, so that the budget is checked that often: a
/// slice of the tiniest elements is 1.6 thousand of them.
const FEED_SLICE: usize = 8 * 1024;

/// The longest prefix needed to tell the container: an MP4 box header.
const SNIFF_LEN: usize = 8;

/// Why a generation has no index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("the payload starts with neither the EBML magic (WebM) nor an ftyp box (MP4)")]
    UnknownContainer,
    #[error("WebM: {0}")]
    Webm(#[from] WebmError),
    #[error("MP4: {0}")]
    Mp4(#[from] Mp4Error),
    /// A replica's generation went on past a hole, and the scanner could not carry on
    /// where it said.
    #[error("cannot go on scanning at byte {at}, after the bytes this node skipped")]
    Resync { at: u64 },
    /// What the index reports when a frame holds more elements than it will look at
    /// under the stream's lock.
    #[error("more than {limit} elements in one frame (by byte {offset}), too many to index")]
    TooManyElements { offset: u64, limit: u64 },
}

/// The containers the index reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// WebM or Matroska: EBML.
    Webm,
    /// Fragmented ISO-BMFF.
    Mp4,
}

impl Container {
    fn name(self) -> &'static str {
        match self {
            Container::Webm => "WebM",
            Container::Mp4 => "MP4",
        }
    }
}

#[derive(Debug)]
enum Reader {
    /// The first bytes, until they tell the container.
    Sniffing(Vec<u8>),
    Webm(webm::Scanner),
    Mp4(mp4::Scanner),
    /// Not media we read, or its scanner failed.
    Off,
}

#[derive(Debug)]
pub struct MediaIndex {
    reader: Reader,
    facts: Facts,
    problem: Option<IndexError>,
}

/// Where a live joiner may start and what the tracks are, updated event by event while
/// the scanner runs (never from the scanner's state after a push, which may be a later
/// file's: the answer must not depend on where the pieces were cut).
#[derive(Debug, Default)]
struct Facts {
    /// End of the init segment of the file that starts the generation.
    init_end: Option<u64>,
    /// The track whose first block in a cluster (or first sample in a fragment) decides
    /// whether a joiner may start there: the video track; with no video, the audio track
    /// (every Opus, Vorbis or AAC frame decodes on its own, so any cluster will do).
    lead_track: Option<u64>,
    /// Whether the lead track is audio.
    lead_is_audio: bool,
    /// The cluster whose first lead-track block we are still waiting for (WebM).
    open_cluster: Option<u64>,
    /// The newest cluster or fragment that opens with a lead-track sync sample.
    newest_join_point: Option<u64>,
    /// A second file (EBML header, ftyp) came: no live join for the rest of this
    /// generation.
    second_file: bool,
    /// The DocType of the WebM file being read.
    doc_type: String,
    /// What the newest Tracks element or moov said.
    info: Option<StreamInfo>,
    /// Tracks or a moov were parsed during the current `feed`.
    tracks_arrived: bool,
    /// Elements reported during the current `feed`.
    elements: u64,
}

impl Sink<webm::Event> for Facts {
    fn put(&mut self, event: webm::Event) {
        use webm::Event;
        self.elements += 1;
        match event {
            Event::EbmlHeader {
                offset, doc_type, ..
            } => {
                self.doc_type = doc_type;
                if offset > 0 {
                    self.second_file();
                }
            }
            Event::InitSegment { range } if range.start == 0 => self.init_end = Some(range.end),
            Event::Tracks { tracks, .. } => {
                self.set_info(StreamInfo::from_tracks(&self.doc_type, &tracks));
            }
            Event::ClusterStart { offset, .. } => self.open_cluster = Some(offset),
            Event::Block {
                cluster_offset,
                track,
                keyframe,
                ..
            } if Some(track) == self.lead_track && self.open_cluster == Some(cluster_offset) => {
                // Chrome often opens a cluster with an audio block: what matters is the
                // first *video* block.
                self.open_cluster = None;
                if keyframe {
                    self.join_point(cluster_offset);
                }
            }
            _ => {}
        }
    }
}

impl Sink<mp4::Event> for Facts {
    fn put(&mut self, event: mp4::Event) {
        use mp4::Event;
        match event {
            Event::FileType { range } if range.start > 0 => self.second_file(),
            Event::InitSegment { range } if range.start == 0 => self.init_end = Some(range.end),
            Event::Movie { tracks, .. } => self.set_info(info_of_mp4(&tracks)),
            Event::Fragment { range, tracks, .. } => {
                let lead = tracks
                    .iter()
                    .find(|t| Some(t.track_id as u64) == self.lead_track);
                // Audio samples decode on their own unless the flags say otherwise;
                // video needs a sync sample said in so many words.
                let joinable = lead.is_some_and(|t| match t.first_sample_sync {
                    Some(sync) => sync,
                    None => self.lead_is_audio && t.samples > 0,
                });
                if joinable {
                    self.join_point(range.start);
                }
            }
            _ => {}
        }
    }
}

/// The moov's first video and first audio track, in the relay's terms: the codec is the
/// sample entry's name (`avc1.42e01e`, `hvc1`, `vp09`, `av01`, `mp4a`, `Opus`).
fn info_of_mp4(tracks: &[mp4::Track]) -> StreamInfo {
    let video = tracks
        .iter()
        .find(|t| t.kind == mp4::TrackKind::Video)
        .map(|t| VideoStream {
            track: t.id as u64,
            codec_id: t.codec.clone(),
            width: t.width as u64,
            height: t.height as u64,
        });
    let audio = tracks
        .iter()
        .find(|t| t.kind == mp4::TrackKind::Audio)
        .map(|t| AudioStream {
            track: t.id as u64,
            codec_id: t.codec.clone(),
            sampling_frequency: t.sample_rate as f64,
            channels: t.channels as u64,
        });
    StreamInfo {
        doc_type: "mp4".to_owned(),
        video,
        audio,
    }
}

impl Facts {
    fn set_info(&mut self, info: StreamInfo) {
        self.lead_track = info
            .video
            .as_ref()
            .map(|v| v.track)
            .or(info.audio.as_ref().map(|a| a.track));
        self.lead_is_audio = info.video.is_none() && info.audio.is_some();
        self.info = Some(info);
        self.tracks_arrived = true;
    }

    fn join_point(&mut self, offset: u64) {
        if self.init_end.is_some() && !self.second_file {
            self.newest_join_point = Some(offset);
        }
    }

    /// A second file inside one generation (a recorder that restarted without a new
    /// generation). Its init does not start at offset 0, where a joiner begins, and the
    /// old file's init may not decode the new clusters: no more live joins until the next
    /// generation.
    fn second_file(&mut self) {
        self.second_file = true;
        self.init_end = None;
        self.newest_join_point = None;
        self.open_cluster = None;
    }
}

/// What one `feed` learned that the caller may want to act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// The first bytes told the container during this feed.
    pub container: Option<Container>,
    /// Tracks (WebM) or a moov (MP4) were parsed: `info()` may have changed.
    pub tracks: bool,
    /// The scanner gave up here (or the payload is neither): no index from now on.
    pub problem: Option<IndexError>,
}

impl MediaIndex {
    pub fn new() -> MediaIndex {
        MediaIndex {
            reader: Reader::Sniffing(Vec::with_capacity(SNIFF_LEN)),
            facts: Facts::default(),
            problem: None,
        }
    }

    /// Feeds the generation's next bytes (exactly in order, nothing skipped).
    pub fn feed(&mut self, payload: &[u8]) -> Learned {
        let mut learned = Learned::default();
        self.facts.tracks_arrived = false;
        self.facts.elements = 0;
        let result = match &mut self.reader {
            Reader::Off => return learned,
            Reader::Sniffing(head) => {
                let take = (SNIFF_LEN - head.len()).min(payload.len());
                head.extend_from_slice(&payload[..take]);
                match (webm::sniff(head), mp4::sniff(head)) {
                    (webm::Sniff::WebM, _) => {
                        let head = std::mem::take(head);
                        self.reader = Reader::Webm(webm::Scanner::new());
                        learned.container = Some(Container::Webm);
                        self.feed_scanner(&head)
                            .and_then(|()| self.feed_scanner(&payload[take..]))
                    }
                    (_, mp4::Sniff::Mp4) => {
                        let head = std::mem::take(head);
                        self.reader = Reader::Mp4(mp4::Scanner::new());
                        learned.container = Some(Container::Mp4);
                        self.feed_scanner(&head)
                            .and_then(|()| self.feed_scanner(&payload[take..]))
                    }
                    (webm::Sniff::NotWebM, mp4::Sniff::NotMp4) => Err(IndexError::UnknownContainer),
                    _ => Ok(()),
                }
            }
            _ => self.feed_scanner(payload),
        };
        learned.tracks = self.facts.tracks_arrived;
        if let Err(err) = result {
            self.problem = Some(err.clone());
            learned.problem = Some(err);
            self.reader = Reader::Off;
        }
        learned
    }

    /// Pushes `payload` to the scanner a slice at a time, within the element budget.
    fn feed_scanner(&mut self, payload: &[u8]) -> Result<(), IndexError> {
        for slice in payload.chunks(FEED_SLICE) {
            let offset = match &mut self.reader {
                Reader::Webm(scanner) => {
                    scanner.push(slice, &mut self.facts)?;
                    scanner.position()
                }
                Reader::Mp4(scanner) => {
                    let before = scanner.boxes();
                    scanner.push(slice, &mut self.facts)?;
                    self.facts.elements += scanner.boxes() - before;
                    scanner.position()
                }
                Reader::Sniffing(_) | Reader::Off => return Ok(()),
            };
            if self.facts.elements > MAX_ELEMENTS_PER_FEED {
                return Err(IndexError::TooManyElements {
                    offset,
                    limit: MAX_ELEMENTS_PER_FEED,
                });
            }
        }
        Ok(())
    }

    /// The generation's bytes continue at `at` (the caller skipped those between), where
    /// a cluster or fragment that opens with a keyframe of the lead track starts, as the
    /// publisher's index found: a replica joining at the live edge. It becomes the join
    /// point at once (its first video block may come in a later frame), and the next
    /// `feed` must start at `at`. Without an init segment (or on a scanner that cannot
    /// carry on there) the generation loses its index, as after any scanner failure.
    pub fn resync_at_join_point(&mut self, at: u64) -> bool {
        let resynced = self.facts.init_end.is_some_and(|end| end <= at)
            && !self.facts.second_file
            && match &mut self.reader {
                Reader::Webm(scanner) => scanner.resync(at),
                Reader::Mp4(scanner) => scanner.resync(at),
                Reader::Sniffing(_) | Reader::Off => false,
            };
        if resynced {
            self.facts.open_cluster = None;
            self.facts.newest_join_point = Some(at);
        } else {
            self.problem = Some(IndexError::Resync { at });
            self.reader = Reader::Off;
        }
        resynced
    }

    /// Where a live joiner starts: (end of the init segment, newest cluster or fragment
    /// that opens with a sync sample of the lead track).
    ///
    /// None until there is such a cluster, and for good once the scanner has failed: the
    /// newest cluster it knew would grow stale and a joiner would be sent everything
    /// since, so the whole generation (`join=start`) is the honest answer.
    pub fn live_start(&self) -> Option<(u64, u64)> {
        if !matches!(self.reader, Reader::Webm(_) | Reader::Mp4(_)) {
            return None;
        }
        Some((self.facts.init_end?, self.facts.newest_join_point?))
    }

    /// Where the init segment that starts the generation ends, once it has.
    pub fn init_end(&self) -> Option<u64> {
        self.facts
            .init_end
            .filter(|_| !matches!(self.reader, Reader::Off))
    }

    /// What the newest Tracks element or moov said.
    pub fn info(&self) -> Option<&StreamInfo> {
        self.facts.info.as_ref()
    }

    /// Why there is no index, if there is none.
    pub fn problem(&self) -> Option<&IndexError> {
        self.problem.as_ref()
    }
}

impl Default for MediaIndex {
    fn default() -> Self {
        MediaIndex::new()
    }
}

/// The container a mime type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// `video/webm`, `audio/webm`, `video/x-matroska`...: EBML.
    Webm,
    /// `video/mp4`, `audio/mp4`: ISO-BMFF.
    Mp4,
    /// Another audio or video container: `audio/ogg`...
    Other,
    /// No audio or video type at all (empty, `application/octet-stream`): no claim.
    Unstated,
}

impl Declared {
    fn by(mime: &str) -> Declared {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        let essence = essence.to_ascii_lowercase();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return Declared::Unstated;
        };
        match (kind, subtype) {
            ("video" | "audio", "webm" | "x-matroska" | "matroska") => Declared::Webm,
            ("video" | "audio", "mp4") => Declared::Mp4,
            ("video" | "audio", _) => Declared::Other,
            _ => Declared::Unstated,
        }
    }

    fn contradicts(self, carried: Container) -> bool {
        match self {
            Declared::Unstated => false,
            Declared::Webm => carried != Container::Webm,
            Declared::Mp4 => carried != Container::Mp4,
            Declared::Other => true,
        }
    }
}

fn carried_container(info: &StreamInfo) -> Container {
    if info.doc_type == "mp4" {
        Container::Mp4
    } else {
        Container::Webm
    }
}

/// Whether the publisher's declared mime type fits the media its Tracks or moov
/// describe: the container first (a `video/mp4` carrying WebM does not), then the codecs.
/// Only codecs both sides name are compared; an unknown name proves nothing.
pub fn mime_matches(mime: &str, info: &StreamInfo) -> bool {
    if Declared::by(mime).contradicts(carried_container(info)) {
        return false;
    }
    let Some((_, codecs)) = mime.split_once("codecs=") else {
        return true;
    };
    let carried: Vec<&str> = [
        info.video.as_ref().map(|v| v.codec_id.as_str()),
        info.audio.as_ref().map(|a| a.codec_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .filter_map(codec_family)
    .collect();
    codecs
        .trim_matches('"')
        .split(',')
        .filter_map(|c| codec_family(c.trim()))
        .all(|family| carried.contains(&family))
}

/// One name for a codec whether a mime `codecs=` parameter, a Matroska CodecID or an MP4
/// sample entry names it.
fn codec_family(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let head = name.split('.').next().unwrap_or_default();
    Some(match head {
        "vp8" | "v_vp8" => "vp8",
        "vp9" | "vp09" | "v_vp9" => "vp9",
        "av1" | "av01" | "v_av1" => "av1",
        "h264" | "avc1" | "avc3" | "v_mpeg4/iso/avc" => "h264",
        "h265" | "hvc1" | "hev1" | "v_mpegh/iso/hevc" => "h265",
        "opus" | "a_opus" => "opus",
        "vorbis" | "a_vorbis" => "vorbis",
        "mp4a" | "a_aac" => "aac",
        _ if head == "pcm" || head.starts_with("a_pcm") => "pcm",
        _ if head.starts_with("a_aac") => "aac",
        _ => return None,
    })
}

/// Turns what the indexes of a publish session learn into warnings, each kind at most
/// once per session: a recorder that restarts every 30 s with the same wrong mime must
/// not log the same line every 30 s. One per publish session; the caller logs them.
#[derive(Debug, Default)]
pub struct MediaNotices {
    mismatch_told: bool,
    unindexed_told: bool,
}

impl MediaNotices {
    /// What in `learned` (from the generation whose stream info is `info`) is worth a
    /// warning that has not been given yet, given the declared `mime`.
    pub fn check(
        &mut self,
        mime: Option<&str>,
        learned: &Learned,
        info: Option<&StreamInfo>,
    ) -> Option<String> {
        let declared = mime.map_or(Declared::Unstated, Declared::by);
        let said = mime.unwrap_or_default();
        let (told, notice) = match (&learned.problem, declared) {
            // Declared as something else and indeed neither: nothing to index, nothing
            // wrong.
            (Some(IndexError::UnknownContainer), Declared::Other) => return None,
            (Some(IndexError::UnknownContainer), Declared::Webm | Declared::Mp4) => (
                &mut self.mismatch_told,
                format!(
                    "declared mime {said:?} says {}, but the payload starts with neither \
                     the EBML magic nor an ftyp box; relaying it without a media index",
                    if declared == Declared::Webm {
                        "WebM"
                    } else {
                        "MP4"
                    }
                ),
            ),
            (Some(problem), _) => (
                &mut self.unindexed_told,
                format!("relaying without a media index: {problem}"),
            ),
            (None, _) => match learned.container {
                Some(carried) if declared.contradicts(carried) => (
                    &mut self.mismatch_told,
                    format!(
                        "declared mime {said:?} says {}, but the payload is {}",
                        match declared {
                            Declared::Webm => "WebM",
                            Declared::Mp4 => "MP4",
                            _ => "another container",
                        },
                        carried.name()
                    ),
                ),
                _ => {
                    let (mime, info) = (mime?, info?);
                    if !learned.tracks || mime_matches(mime, info) {
                        return None;
                    }
                    (
                        &mut self.mismatch_told,
                        format!(
                            "declared mime {mime:?} does not match what the payload carries \
                             ({}: {info})",
                            info.doc_type
                        ),
                    )
                }
            },
        };
        (!std::mem::replace(told, true)).then_some(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webm::ebml::id;
    use crate::webm::testutil::*;

    const CHROME: &[u8] = include_bytes!("../../integration/fixtures/chrome-vp8-opus.webm");

    /// EBML header, unknown-size Segment, Info and the given Tracks body: an init segment.
    fn init_with(tracks: &[u8]) -> Vec<u8> {
        [
            ebml_header("webm"),
            [id_bytes(id::SEGMENT), UNKNOWN.to_vec()].concat(),
            info(1_000_000, None),
            el(id::TRACKS, tracks),
        ]
        .concat()
    }

    /// Video on track 1, audio on track 2, as `vp8_opus_tracks`.
    fn vp8_opus_init() -> Vec<u8> {
        init_with(
            &[
                video_track(1, 11, "V_VP8", 320, 240),
                audio_track(2, 22, "A_OPUS", 48000.0, 2),
            ]
            .concat(),
        )
    }

    fn opus_only_init() -> Vec<u8> {
        init_with(&audio_track(1, 22, "A_OPUS", 48000.0, 2))
    }

    fn cluster(tc: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
        el_unknown(id::CLUSTER, &[timecode(tc), blocks.concat()].concat())
    }

    /// Indexes `init` followed by `clusters`, one feed each; returns the index and the
    /// offset of every cluster.
    fn index_of(init: &[u8], clusters: &[Vec<u8>]) -> (MediaIndex, Vec<u64>) {
        let mut index = MediaIndex::new();
        assert_eq!(index.feed(init).problem, None);
        let mut offsets = Vec::new();
        let mut at = init.len() as u64;
        for c in clusters {
            offsets.push(at);
            assert_eq!(index.feed(c).problem, None);
            at += c.len() as u64;
        }
        (index, offsets)
    }

    #[test]
    fn chrome_recording_yields_init_and_keyframe_clusters_whatever_the_cuts() {
        let mut whole = MediaIndex::new();
        whole.feed(CHROME);
        let (init_end, newest) = whole.live_start().expect("init and a keyframe cluster");
        assert!(init_end > 0 && init_end < 1000, "init ends at {init_end}");
        assert!(newest > init_end);
        // The newest keyframe cluster starts with a Cluster ID.
        assert_eq!(
            &CHROME[newest as usize..newest as usize + 4],
            &[0x1F, 0x43, 0xB6, 0x75]
        );
        let info = whole.info().unwrap();
        assert_eq!(info.video.as_ref().unwrap().codec_id, "V_VP8");
        assert_eq!(info.audio.as_ref().unwrap().codec_id, "A_OPUS");

        let mut bytewise = MediaIndex::new();
        for byte in CHROME.chunks(1) {
            bytewise.feed(byte);
        }
        assert_eq!(bytewise.live_start(), whole.live_start());
    }

    #[test]
    fn a_cluster_opening_with_audio_then_a_video_keyframe_is_keyframe_led() {
        let init = vp8_opus_init();
        let (index, at) = index_of(
            &init,
            &[cluster(
                0,
                &[
                    simple_block(2, 0, true, 40),
                    simple_block(2, 20, true, 40),
                    simple_block(1, 21, true, 500),
                    simple_block(1, 54, false, 100),
                ],
            )],
        );
        assert_eq!(index.live_start(), Some((init.len() as u64, at[0])));
    }

    #[test]
    fn a_cluster_whose_first_video_block_is_a_delta_frame_is_not() {
        let init = vp8_opus_init();
        let (index, at) = index_of(
            &init,
            &[
                cluster(0, &[simple_block(1, 0, true, 500)]),
                // Audio first, then a delta frame; a keyframe later in the same cluster
                // does not make it a place to start (the delta before it needs its past).
                cluster(
                    1000,
                    &[
                        simple_block(2, 0, true, 40),
                        simple_block(1, 1, false, 100),
                        simple_block(1, 34, true, 500),
                    ],
                ),
                // Audio only so far: undecided, and so not a join point either.
                cluster(2000, &[simple_block(2, 0, true, 40)]),
            ],
        );
        assert_eq!(index.live_start(), Some((init.len() as u64, at[0])));
    }

    #[test]
    fn block_groups_are_keyframes_without_a_reference_block() {
        let init = vp8_opus_init();
        let key_group = || block_group(1, 0, None, false, 300);
        let delta_group = || block_group(1, 0, Some(-33), false, 100);
        let (index, at) = index_of(
            &init,
            &[
                cluster(0, &[simple_block(2, 0, true, 40), key_group()]),
                cluster(1000, &[delta_group(), key_group()]),
            ],
        );
        assert_eq!(index.live_start(), Some((init.len() as u64, at[0])));
        // A group with BlockAdditions and no reference is still a keyframe.
        let (index, at) = index_of(
            &init,
            &[
                cluster(0, &[key_group()]),
                cluster(1000, &[block_group(1, 0, None, true, 300)]),
            ],
        );
        assert_eq!(index.live_start(), Some((init.len() as u64, at[1])));
    }

    #[test]
    fn in_an_audio_only_stream_every_cluster_is_a_join_point() {
        let init = opus_only_init();
        let opus = |tc| simple_block(1, tc, true, 60);
        let (index, at) = index_of(
            &init,
            &[
                cluster(0, &[opus(0), opus(20)]),
                cluster(1000, &[opus(0), opus(20)]),
                cluster(2000, &[opus(0)]),
            ],
        );
        assert_eq!(index.live_start(), Some((init.len() as u64, at[2])));
        assert!(index.info().unwrap().video.is_none());
        // A block marked as not decodable on its own is still respected.
        let (index, at) = index_of(
            &init,
            &[
                cluster(0, &[opus(0)]),
                cluster(1000, &[simple_block(1, 0, false, 60)]),
            ],
        );
        assert_eq!(index.live_start(), Some((init.len() as u64, at[0])));
        // Neither video nor audio: nothing to start on.
        let (index, _) = index_of(&init_with(&[]), &[cluster(0, &[opus(0)])]);
        assert_eq!(index.live_start(), None);
    }

    #[test]
    fn after_a_scanner_error_live_join_falls_back_to_the_whole_generation() {
        let init = vp8_opus_init();
        let (mut index, _) = index_of(&init, &[cluster(0, &[simple_block(1, 0, true, 500)])]);
        assert!(index.live_start().is_some());
        // At an element boundary, 0x00 cannot start an ID.
        let learned = index.feed(&[0x00, 1, 2, 3]);
        assert!(
            matches!(
                learned.problem,
                Some(IndexError::Webm(WebmError::IdTooLong { .. }))
            ),
            "{learned:?}"
        );
        assert_eq!(index.live_start(), None);
        assert!(index.problem().is_some());
        // Later keyframe clusters change nothing: the index is gone for this generation.
        assert_eq!(
            index.feed(&cluster(1000, &[simple_block(1, 0, true, 500)])),
            Learned::default()
        );
        assert_eq!(index.live_start(), None);
        assert!(index.info().is_some(), "what the Tracks said still stands");
    }

    #[test]
    fn a_second_file_in_one_generation_ends_live_joins_for_it() {
        let init = vp8_opus_init();
        let key_cluster = |tc| cluster(tc, &[simple_block(1, 0, true, 500)]);
        let (mut index, _) = index_of(&init, &[key_cluster(0)]);
        assert!(index.live_start().is_some());
        for piece in [init.clone(), key_cluster(0), key_cluster(1000)] {
            assert_eq!(index.feed(&piece).problem, None);
        }
        assert_eq!(index.live_start(), None);
    }

    #[test]
    fn what_the_index_says_does_not_depend_on_the_cuts() {
        // Found by the fuzz target: a second file's EBML header and an error arriving in
        // the same piece as the first file's Tracks once hid those Tracks.
        let data = [
            vp8_opus_init(),
            cluster(
                0,
                &[simple_block(2, 0, true, 30), simple_block(1, 1, true, 50)],
            ),
            ebml_header("webm"),
            el_unknown(id::CUES, &[]),
        ]
        .concat();
        let said = |cuts: &[usize]| {
            let mut index = MediaIndex::new();
            let mut start = 0;
            for &cut in cuts.iter().chain([&data.len()]) {
                index.feed(&data[start..cut]);
                start = cut;
            }
            (
                index.live_start(),
                index.info().cloned(),
                index.problem().cloned(),
            )
        };
        let whole = said(&[]);
        assert!(whole.1.is_some() && whole.2.is_some(), "{whole:?}");
        for cut in 0..=data.len() {
            assert_eq!(said(&[cut]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_frame_of_tiny_clusters_and_blocks_costs_no_memory_per_element() {
        // Frames of the smallest elements the scanner reports, 5-byte empty Clusters and
        // 6-byte SimpleBlocks, just under the budget. Held as events they would take
        // 80 bytes each.
        let unit = tiny_clusters_and_blocks();
        let frame = unit.repeat(MAX_ELEMENTS_PER_FEED as usize / 102);
        let mut index = MediaIndex::new();
        index.feed(&vp8_opus_init());
        for _ in 0..4 {
            let (learned, heap) = heap_use(|| index.feed(&frame));
            assert_eq!(learned, Learned::default());
            assert!(
                heap.peak < 16 * 1024 && heap.retained < 4 * 1024,
                "{heap:?}"
            );
        }
        assert!(index.live_start().is_some(), "the clusters were indexed");
    }

    #[test]
    fn a_frame_of_too_many_elements_ends_the_index_not_the_relay() {
        // 16 MiB, the largest frame a publisher may send, of tiny elements: 2.7 million
        // of them, 60 ms of scanning under the stream's lock.
        let unit = tiny_clusters_and_blocks();
        let frame = unit.repeat((16 << 20) / unit.len());
        let mut index = MediaIndex::new();
        index.feed(&vp8_opus_init());
        index.feed(&cluster(0, &[simple_block(1, 0, true, 500)]));
        assert!(index.live_start().is_some());
        let (learned, heap) = heap_use(|| index.feed(&frame));
        match learned.problem {
            Some(IndexError::TooManyElements { offset, limit }) => {
                assert_eq!(limit, MAX_ELEMENTS_PER_FEED);
                // Stopped a slice past the budget (6 bytes an element), far from the
                // frame's 16 MiB end.
                assert!(offset < limit * 6 + 2 * FEED_SLICE as u64, "{offset}");
            }
            other => panic!("{other:?}"),
        }
        assert!(heap.peak < 16 * 1024, "{heap:?}");
        // No live join for the rest of the generation (the whole of it is the honest
        // answer), and the rest of it costs nothing.
        assert_eq!(index.live_start(), None);
        assert!(index.info().is_some(), "what the Tracks said still stands");
        assert_eq!(index.feed(&frame), Learned::default());
        assert!(matches!(
            index.problem(),
            Some(IndexError::TooManyElements { .. })
        ));
    }

    #[test]
    fn neither_webm_nor_mp4_is_relayed_without_an_index() {
        let mut index = MediaIndex::new();
        let learned = index.feed(b"OggS\0\x02 an ogg file");
        assert_eq!(learned.problem, Some(IndexError::UnknownContainer));
        assert!(index.live_start().is_none());
        assert_eq!(index.feed(b"more"), Learned::default());
    }

    #[test]
    fn declared_codecs_and_container_are_checked_against_the_tracks() {
        let mut index = MediaIndex::new();
        index.feed(CHROME);
        let info = index.info().unwrap();
        assert!(mime_matches("video/webm;codecs=vp8,opus", info));
        assert!(mime_matches("video/webm", info));
        assert!(mime_matches("Video/WebM; codecs=\"vp8.0, opus\"", info));
        assert!(mime_matches("video/x-matroska;codecs=vp8", info));
        assert!(mime_matches("application/octet-stream", info));
        assert!(mime_matches("", info));
        assert!(!mime_matches("video/webm;codecs=vp9,opus", info));
        assert!(!mime_matches("video/webm;codecs=h264", info));
        assert!(!mime_matches("video/mp4", info));
        assert!(!mime_matches("video/mp4;codecs=vp8,opus", info));
    }

    /// One generation of a session: a fresh index fed `payload`, checked by `notices`.
    fn generation_notice(
        notices: &mut MediaNotices,
        mime: Option<&str>,
        payload: &[u8],
    ) -> Option<String> {
        let mut index = MediaIndex::new();
        let learned = index.feed(payload);
        notices.check(mime, &learned, index.info())
    }

    #[test]
    fn a_mismatch_is_told_once_per_session_not_per_generation() {
        let mp4 = b"\0\0\0\x20ftypiso5\0\0\0\x01";
        let cases: [(&str, &[u8], Option<&str>); 4] = [
            (
                "video/mp4",
                CHROME,
                Some("\"video/mp4\" says MP4, but the payload is WebM"),
            ),
            ("video/webm;codecs=vp9", CHROME, Some("(webm: V_VP8 ")),
            ("video/webm;codecs=vp8", mp4, Some("says WebM")),
            ("audio/mp4", mp4, None),
        ];
        for (mime, payload, want) in cases {
            let mut session = MediaNotices::default();
            let first = generation_notice(&mut session, Some(mime), payload);
            match want {
                Some(want) => assert!(
                    first.as_deref().is_some_and(|n| n.contains(want)),
                    "{mime}: {first:?}"
                ),
                None => assert_eq!(first, None, "{mime}"),
            }
            for _ in 0..3 {
                assert_eq!(generation_notice(&mut session, Some(mime), payload), None);
            }
            // The next publish session is told again.
            let mut next = MediaNotices::default();
            assert_eq!(generation_notice(&mut next, Some(mime), payload), first);
        }
        // A matching mime, or none, is nothing to tell; an undeclared non-WebM payload is.
        let mut session = MediaNotices::default();
        let webm = Some("video/webm;codecs=vp8,opus");
        assert_eq!(generation_notice(&mut session, webm, CHROME), None);
        assert_eq!(generation_notice(&mut session, None, CHROME), None);
        assert_eq!(generation_notice(&mut session, None, mp4), None);
        let ogg = b"OggS\0\x02";
        let unindexed = generation_notice(&mut session, None, ogg).unwrap();
        assert!(
            unindexed.starts_with("relaying without a media index"),
            "{unindexed}"
        );
    }

    const MP4_FRAG_KEYFRAME: &[u8] =
        include_bytes!("../mp4/testdata/ffmpeg-h264-aac-frag-keyframe.mp4");
    const MP4_PER_SAMPLE: &[u8] =
        include_bytes!("../mp4/testdata/ffmpeg-h264-per-sample-flags.mp4");

    /// Offsets of the `moof`s in an MP4 file, walking its top-level boxes.
    fn moofs(file: &[u8]) -> Vec<u64> {
        let mut at = 0;
        let mut out = Vec::new();
        while at + 8 <= file.len() {
            let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            if &file[at + 4..at + 8] == b"moof" {
                out.push(at as u64);
            }
            at += size;
        }
        out
    }

    #[test]
    fn an_mp4_yields_init_and_the_newest_sync_led_fragment_whatever_the_cuts() {
        let mut whole = MediaIndex::new();
        let learned = whole.feed(MP4_FRAG_KEYFRAME);
        assert_eq!(learned.container, Some(Container::Mp4));
        assert!(learned.tracks);
        let moofs = moofs(MP4_FRAG_KEYFRAME);
        let (init_end, newest) = whole.live_start().expect("init and a sync-led fragment");
        assert_eq!(
            init_end, moofs[0],
            "ftyp+moov end where the first moof starts"
        );
        assert_eq!(newest, *moofs.last().unwrap());
        let info = whole.info().unwrap();
        assert_eq!(info.doc_type, "mp4");
        let video = info.video.as_ref().unwrap();
        assert!(video.codec_id.starts_with("avc1."), "{info}");
        assert_eq!((video.width, video.height), (160, 120));
        let audio = info.audio.as_ref().unwrap();
        assert_eq!(
            (audio.codec_id.as_str(), audio.sampling_frequency),
            ("mp4a", 48000.0)
        );

        let mut bytewise = MediaIndex::new();
        for byte in MP4_FRAG_KEYFRAME.chunks(1) {
            bytewise.feed(byte);
        }
        assert_eq!(bytewise.live_start(), whole.live_start());
        assert_eq!(bytewise.info(), whole.info());
    }

    #[test]
    fn an_mp4_fragment_opening_on_a_delta_frame_is_no_join_point() {
        // Per-sample flags only; only the first of three fragments opens on a keyframe.
        let moofs = moofs(MP4_PER_SAMPLE);
        assert_eq!(moofs.len(), 3);
        let mut index = MediaIndex::new();
        index.feed(MP4_PER_SAMPLE);
        assert_eq!(index.live_start(), Some((moofs[0], moofs[0])));
    }

    #[test]
    fn a_second_ftyp_in_one_generation_ends_live_joins_for_it() {
        use crate::mp4::tests::{fragment, init};
        let sync = 0x0200_0000;
        let mut index = MediaIndex::new();
        index.feed(&init(sync));
        index.feed(&fragment(1, 1, &[sync], 0, &[]));
        assert!(index.live_start().is_some());
        index.feed(&init(sync));
        index.feed(&fragment(2, 1, &[sync], 0, &[]));
        assert_eq!(index.live_start(), None);
    }

    #[test]
    fn an_mp4_frame_of_too_many_boxes_ends_the_index_not_the_relay() {
        let mut index = MediaIndex::new();
        index.feed(MP4_FRAG_KEYFRAME);
        assert!(index.live_start().is_some());
        // 8-byte empty boxes: 2 million in a 16 MiB frame.
        let frame = b"\0\0\0\x08free".repeat((16 << 20) / 8);
        let learned = index.feed(&frame);
        assert!(
            matches!(learned.problem, Some(IndexError::TooManyElements { .. })),
            "{learned:?}"
        );
        assert_eq!(index.live_start(), None);
        assert_eq!(index.feed(&frame), Learned::default());
    }

    #[test]
    fn declared_mp4_codecs_are_checked_against_the_moov() {
        let mut index = MediaIndex::new();
        index.feed(MP4_FRAG_KEYFRAME);
        let info = index.info().unwrap();
        assert!(mime_matches("video/mp4", info));
        assert!(mime_matches("video/mp4;codecs=avc1.42E01E,mp4a.40.2", info));
        assert!(mime_matches("video/mp4;codecs=\"avc3, mp4a\"", info));
        assert!(mime_matches("application/octet-stream", info));
        assert!(!mime_matches("video/mp4;codecs=avc1,opus", info));
        assert!(!mime_matches("video/mp4;codecs=vp9", info));
        assert!(!mime_matches("video/webm", info));
        let mut session = MediaNotices::default();
        let notice = generation_notice(
            &mut session,
            Some("video/mp4;codecs=hvc1"),
            MP4_FRAG_KEYFRAME,
        );
        assert!(
            notice.as_deref().is_some_and(|n| n.contains("(mp4: avc1.")),
            "{notice:?}"
        );
    }
}
