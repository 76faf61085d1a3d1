//! What a generation's WebM says, learned as its bytes arrive: where the init segment
//! ends, which clusters open with a video keyframe (a live joiner may start there), and
//! the codecs and picture size for the API. Payloads that are not WebM (MP4 from Safari)
//! are relayed just the same, only without an index.

use crate::webm::{Event, Scanner, StreamInfo};
use std::collections::VecDeque;

/// Keyframe-led clusters remembered per generation; a joiner only needs the newest.
const KEPT_KEYFRAME_CLUSTERS: usize = 4;

#[derive(Debug)]
pub struct MediaIndex {
    /// None once the bytes turned out not to be WebM, or broke the scanner.
    scanner: Option<Scanner>,
    events: Vec<Event>,
    init_end: Option<u64>,
    video_track: Option<u64>,
    /// The cluster whose first video block we are still waiting for.
    open_cluster: Option<u64>,
    keyframe_clusters: VecDeque<u64>,
    info: Option<StreamInfo>,
    problem: Option<String>,
}

/// What one `feed` learned that the caller may want to act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Learned {
    pub tracks: bool,
    pub problem: Option<String>,
}

impl MediaIndex {
    pub fn new() -> MediaIndex {
        MediaIndex {
            scanner: Some(Scanner::new()),
            events: Vec::new(),
            init_end: None,
            video_track: None,
            open_cluster: None,
            keyframe_clusters: VecDeque::new(),
            info: None,
            problem: None,
        }
    }

    /// Feeds the generation's next bytes (exactly in order, nothing skipped).
    pub fn feed(&mut self, payload: &[u8]) -> Learned {
        let mut learned = Learned::default();
        let Some(scanner) = &mut self.scanner else {
            return learned;
        };
        self.events.clear();
        let result = scanner.push(payload, &mut self.events);
        for event in self.events.drain(..) {
            match event {
                Event::EbmlHeader { offset, .. } if offset > 0 => {
                    // A second file inside one generation: its init is not at offset 0,
                    // so a live joiner could not start from it. Forget the old one.
                    self.init_end = None;
                    self.keyframe_clusters.clear();
                    self.open_cluster = None;
                }
                Event::InitSegment { range } if range.start == 0 => self.init_end = Some(range.end),
                Event::Tracks { .. } => {
                    self.info = scanner.stream_info().cloned();
                    self.video_track = self
                        .info
                        .as_ref()
                        .and_then(|i| i.video.as_ref())
                        .map(|v| v.track);
                    learned.tracks = true;
                }
                Event::ClusterStart { offset, .. } => self.open_cluster = Some(offset),
                Event::Block {
                    cluster_offset,
                    track,
                    keyframe,
                    ..
                } if Some(track) == self.video_track
                    && self.open_cluster == Some(cluster_offset) =>
                {
                    // Chrome often opens a cluster with an audio block: what matters is
                    // the first *video* block.
                    self.open_cluster = None;
                    if keyframe && self.init_end.is_some() {
                        if self.keyframe_clusters.len() == KEPT_KEYFRAME_CLUSTERS {
                            self.keyframe_clusters.pop_front();
                        }
                        self.keyframe_clusters.push_back(cluster_offset);
                    }
                }
                _ => {}
            }
        }
        if let Err(err) = result {
            let problem = err.to_string();
            self.problem = Some(problem.clone());
            learned.problem = Some(problem);
            self.scanner = None;
        }
        learned
    }

    /// Where a live joiner starts: (end of the init segment, newest keyframe cluster).
    pub fn live_start(&self) -> Option<(u64, u64)> {
        Some((self.init_end?, *self.keyframe_clusters.back()?))
    }

    pub fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }

    /// Why there is no index, if there is none.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

impl Default for MediaIndex {
    fn default() -> Self {
        MediaIndex::new()
    }
}

/// Whether the codecs the publisher declared in its mime type are the ones its WebM
/// carries. Only codecs both sides name are compared; an unknown name proves nothing.
pub fn mime_matches(mime: &str, info: &StreamInfo) -> bool {
    let Some((_, codecs)) = mime.split_once("codecs=") else {
        return true;
    };
    let carried: Vec<&str> = [
        info.video.as_ref().map(|v| v.codec_id.as_str()),
        info.audio.as_ref().map(|a| a.codec_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    codecs
        .trim_matches('"')
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter_map(|c| codec_id_for(&c))
        .all(|id| carried.iter().any(|carried| carried.starts_with(id)))
}

fn codec_id_for(mime_codec: &str) -> Option<&'static str> {
    let family = mime_codec.split('.').next().unwrap_or_default();
    Some(match family {
        "vp8" => "V_VP8",
        "vp9" | "vp09" => "V_VP9",
        "av1" | "av01" => "V_AV1",
        "h264" | "avc1" => "V_MPEG4/ISO/AVC",
        "opus" => "A_OPUS",
        "vorbis" => "A_VORBIS",
        "pcm" => "A_PCM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &[u8] = include_bytes!("../../integration/fixtures/chrome-vp8-opus.webm");

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
    fn non_webm_is_relayed_without_an_index() {
        let mut index = MediaIndex::new();
        let learned = index.feed(b"\0\0\0\x20ftypiso5 an mp4 from safari");
        assert!(learned.problem.is_some());
        assert!(index.live_start().is_none());
        assert_eq!(index.feed(b"more"), Learned::default());
    }

    #[test]
    fn declared_codecs_are_checked_against_the_tracks() {
        let mut index = MediaIndex::new();
        index.feed(CHROME);
        let info = index.info().unwrap();
        assert!(mime_matches("video/webm;codecs=vp8,opus", info));
        assert!(mime_matches("video/webm", info));
        assert!(mime_matches("video/webm;codecs=\"vp8.0, opus\"", info));
        assert!(!mime_matches("video/webm;codecs=vp9,opus", info));
        assert!(!mime_matches("video/webm;codecs=h264", info));
    }
}
