//! What each scanner event does to the output: the init segment checked against the
//! file's (TimecodeScale, Tracks), every Cluster header rewritten onto the session's
//! timeline so generations follow one another, and the Cue points noted from blocks.

use super::window::Out;
use super::{ClusterOut, Generation, OpenCluster, SpliceError, Splicer};
use crate::recording::ebml;
use crate::webm::ebml::id;
use crate::webm::{Event, StreamInfo};

/// Clusters one file may hold; past it, the rest of each generation is not recorded.
/// Every Cluster costs 32 bytes kept until the file is finalized (its offset and time,
/// and its Cue), so this bounds that at 64 MiB a file, what `--max-buffer` allows a
/// stream by default, however tiny the Clusters a publisher makes (a 5-byte empty one
/// is enough). Chrome starts a Cluster about every 300 ms and at each keyframe (its
/// fixture has 25 in 6 s), about 4 a second: this is six days of one unbroken session,
/// and weeks at the one a second other muxers write.
pub(super) const MAX_CLUSTERS: usize = 1 << 21;

impl Splicer {
    pub(super) fn on_event(
        &mut self,
        g: &mut Generation,
        event: Event,
        out: &mut Out,
    ) -> Result<(), SpliceError> {
        match event {
            Event::EbmlHeader { offset: 0, end, .. } => g.ebml = Some(0..end),
            Event::EbmlHeader { offset, .. } => {
                self.break_generation(g, format!("a second WebM file starts at byte {offset}"));
            }
            Event::SegmentStart { .. } => {}
            Event::Info { timecode_scale, .. } => {
                if g.first {
                    self.timecode_scale = timecode_scale;
                    self.gap = self.ms_to_ticks(33);
                } else if timecode_scale != self.timecode_scale {
                    return Err(SpliceError::Incompatible(format!(
                        "TimecodeScale changed from {} to {timecode_scale}",
                        self.timecode_scale
                    )));
                }
            }
            Event::Tracks { range, tracks } => {
                let raw = g.copy(range);
                let fingerprint = ebml::tracks_fingerprint(&raw);
                let description = describe(&StreamInfo::from_tracks("webm", &tracks));
                if g.first {
                    self.fingerprint = Some(fingerprint);
                    self.description = description;
                    self.video_track = tracks
                        .iter()
                        .find(|t| t.kind == crate::webm::TrackKind::Video)
                        .map(|t| t.number);
                    self.cue_track = self.video_track.or(tracks.first().map(|t| t.number));
                    g.tracks = Some(raw);
                } else if self.fingerprint.as_ref() != Some(&fingerprint) {
                    return Err(SpliceError::Incompatible(
                        if description == self.description {
                            format!("the tracks changed ({description}: codec settings differ)")
                        } else {
                            format!(
                                "the tracks changed from {} to {description}",
                                self.description
                            )
                        },
                    ));
                } else {
                    g.tracks = Some(raw);
                }
            }
            Event::InitSegment { range } => {
                if g.tracks.is_none() {
                    if g.first {
                        return Err(SpliceError::Unrecordable(
                            "the WebM has no Tracks before its first Cluster".into(),
                        ));
                    }
                    return Err(SpliceError::Incompatible(
                        "a generation came without Tracks".into(),
                    ));
                }
                if g.first {
                    let head = self.head(g);
                    self.emit(out, |out| out.extend_from_slice(&head));
                }
                g.consumed = range.end;
                g.init_done = true;
            }
            Event::ClusterStart {
                offset,
                data_offset,
                timecode,
                ..
            } => {
                if !g.init_done {
                    return Ok(());
                }
                self.flush(g, out);
                if g.broken {
                    return Ok(());
                }
                if self.clusters.len() >= MAX_CLUSTERS {
                    self.break_generation(
                        g,
                        format!(
                            "the file holds {MAX_CLUSTERS} Clusters, as many as one may; \
                             the rest of this generation is not recorded"
                        ),
                    );
                    return Ok(());
                }
                if g.consumed < offset {
                    self.notices.push(format!(
                        "generation {}: dropped {} bytes before the Cluster at byte {offset}",
                        g.id,
                        offset - g.consumed
                    ));
                }
                // Checked: the timecode is the publisher's, any u64 at all.
                let value = timecode.map_or(0, |t| t.value);
                let timecode_out = i64::try_from(value).ok().and_then(|value| {
                    let base = match g.base {
                        Some(base) => base,
                        None => match self.last_time {
                            Some(last) => last.checked_add(self.gap)?.checked_sub(value)?,
                            None => value.checked_neg()?,
                        },
                    };
                    g.base = Some(base);
                    value.checked_add(base)
                });
                let Some(timecode_out) = timecode_out else {
                    return Err(self.timeline_overflow(
                        g,
                        format!("the Cluster at byte {offset} has Timecode {value}"),
                    ));
                };
                let timecode_out = timecode_out.max(0);
                let out_offset = self.out_len;
                self.emit(out, |header| {
                    ebml::put_id(id::CLUSTER, header);
                    header.extend_from_slice(&ebml::UNKNOWN_SIZE);
                    ebml::uint8(id::TIMECODE, timecode_out as u64, header);
                });
                self.clusters.push(ClusterOut {
                    offset: out_offset,
                    max_time: timecode_out,
                });
                g.cluster = Some(OpenCluster {
                    out_offset,
                    timecode: timecode_out,
                    cue_checked: false,
                });
                g.consumed =
                    timecode.map_or(data_offset, |t| t.value_offset + u64::from(t.value_len));
            }
            Event::Block {
                track,
                relative_timecode,
                keyframe,
                ..
            } => {
                let Some(cluster) = g.cluster.as_mut() else {
                    return Ok(());
                };
                let Some(time) = cluster.timecode.checked_add(i64::from(relative_timecode)) else {
                    let at = cluster.timecode;
                    return Err(self.timeline_overflow(
                        g,
                        format!("a block {relative_timecode} after the Cluster time {at}"),
                    ));
                };
                self.last_time = Some(self.last_time.map_or(time, |t| t.max(time)));
                if let Some(c) = self.clusters.last_mut() {
                    c.max_time = c.max_time.max(time);
                }
                if Some(track) == self.video_track {
                    g.prev_video = g.last_video;
                    g.last_video = Some(time);
                }
                if Some(track) == self.cue_track && !cluster.cue_checked {
                    cluster.cue_checked = true;
                    if keyframe {
                        let layout = self.layout.expect("a head before any Cluster");
                        self.cues
                            .push((time.max(0) as u64, cluster.out_offset - layout.segment_data));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Splicer {
    /// A time past what an i64 of ticks holds: nothing later in the session can be put
    /// on the file's timeline, so the generation stops here and the recording with it.
    fn timeline_overflow(&mut self, g: &mut Generation, what: String) -> SpliceError {
        let why = format!(
            "generation {}: {what}, past the range of a recording's timeline; recording stopped, the live stream goes on",
            g.id
        );
        self.break_generation(g, why.clone());
        SpliceError::Timeline(why)
    }
}

fn describe(info: &StreamInfo) -> String {
    let video = info
        .video
        .as_ref()
        .map(|v| format!("{} {}x{}", v.codec_id, v.width, v.height));
    let audio = info.audio.as_ref().map(|a| {
        format!(
            "{} {} Hz {} ch",
            a.codec_id, a.sampling_frequency, a.channels
        )
    });
    let parts: Vec<String> = [video, audio].into_iter().flatten().collect();
    if parts.is_empty() {
        "no audio or video track".into()
    } else {
        parts.join(", ")
    }
}
