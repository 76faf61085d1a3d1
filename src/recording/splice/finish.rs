//! The file head and the finish step, two halves of one layout: the head reserves
//! room (a Void for the SeekHead, another for the Duration, an 8-byte Segment size)
//! that finishing fills in once the file's length, Clusters and Cues are known.

use super::{Finish, Generation, Layout, Splicer};
use crate::recording::ebml;
use crate::webm::ebml::id;
use std::time::UNIX_EPOCH;

/// Bytes reserved after the Segment header for the SeekHead (three entries take 68).
const SEEK_RESERVE: usize = 128;

/// A Duration element: 2-byte ID, 1-byte size, 8-byte float.
const DURATION_LEN: usize = 11;

/// Cluster ID (4) + unknown size (8).
const CLUSTER_HEADER_LEN: u64 = 12;

/// Nanoseconds from the Unix epoch to 2001-01-01, Matroska's DateUTC origin.
const MATROSKA_EPOCH_NS: i128 = 978_307_200_000_000_000;

impl Splicer {
    /// The file head, from the first generation's EBML header and Tracks.
    pub(super) fn head(&mut self, g: &Generation) -> Vec<u8> {
        let ebml_range = g.ebml.clone().unwrap_or(0..0);
        let mut head = g.copy(ebml_range);
        let segment = self.out_len + head.len() as u64;
        ebml::put_id(id::SEGMENT, &mut head);
        head.extend_from_slice(&ebml::UNKNOWN_SIZE);
        let segment_data = self.out_len + head.len() as u64;
        ebml::void(SEEK_RESERVE, &mut head);

        let mut info = Vec::new();
        ebml::uint8(id::TIMECODE_SCALE, self.timecode_scale, &mut info);
        ebml::element(id::MUXING_APP, b"blobcast", &mut info);
        let app = concat!("blobcast ", env!("CARGO_PKG_VERSION"));
        ebml::element(id::WRITING_APP, app.as_bytes(), &mut info);
        let since_epoch = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let date = (since_epoch - MATROSKA_EPOCH_NS) as i64;
        ebml::element(id::DATE_UTC, &date.to_be_bytes(), &mut info);
        let duration_in_info = info.len();
        ebml::void(DURATION_LEN, &mut info);
        let info_pos = self.out_len + head.len() as u64;
        let info_header_start = head.len();
        ebml::element(id::INFO, &info, &mut head);
        let info_header_len = head.len() - info_header_start - info.len();
        let tracks = self.out_len + head.len() as u64;
        head.extend_from_slice(g.tracks.as_deref().unwrap_or_default());
        self.layout = Some(Layout {
            segment,
            segment_data,
            info: info_pos,
            duration: info_pos + (info_header_len + duration_in_info) as u64,
            tracks,
        });
        head
    }

    /// How to make the file seekable, given it holds exactly `out_len` bytes. None when
    /// no head was ever written.
    pub fn finish(&self) -> Option<Finish> {
        self.finish_with(true)
    }

    /// As [`Splicer::finish`], for a disk with no room left for the Cues.
    pub fn finish_without_cues(&self) -> Option<Finish> {
        self.finish_with(false)
    }

    fn finish_with(&self, with_cues: bool) -> Option<Finish> {
        let layout = self.layout?;
        let end = self.out_len;
        let mut patches = Vec::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            let next = self.clusters.get(i + 1).map_or(end, |c| c.offset);
            let size = next - cluster.offset - CLUSTER_HEADER_LEN;
            patches.push((cluster.offset + 4, ebml::size8(size).to_vec()));
        }
        let mut append = Vec::new();
        if with_cues && !self.cues.is_empty() {
            let mut points = Vec::new();
            for &(time, position) in &self.cues {
                let mut positions = Vec::new();
                ebml::element(
                    id::CUE_TRACK,
                    &minimal(self.cue_track.unwrap_or(1)),
                    &mut positions,
                );
                ebml::element(id::CUE_CLUSTER_POSITION, &minimal(position), &mut positions);
                let mut point = Vec::new();
                ebml::element(id::CUE_TIME, &minimal(time), &mut point);
                ebml::element(id::CUE_TRACK_POSITIONS, &positions, &mut point);
                ebml::element(id::CUE_POINT, &point, &mut points);
            }
            ebml::element(id::CUES, &points, &mut append);
        }
        let relative = |pos: u64| pos - layout.segment_data;
        let mut seeks = vec![(id::INFO, layout.info), (id::TRACKS, layout.tracks)];
        if !append.is_empty() {
            seeks.push((id::CUES, end));
        }
        let mut entries = Vec::new();
        for (element_id, position) in seeks {
            let mut seek = Vec::new();
            let mut id_bytes = Vec::new();
            ebml::put_id(element_id, &mut id_bytes);
            ebml::element(id::SEEK_ID, &id_bytes, &mut seek);
            ebml::uint8(id::SEEK_POSITION, relative(position), &mut seek);
            ebml::element(id::SEEK, &seek, &mut entries);
        }
        let mut seek_head = Vec::with_capacity(SEEK_RESERVE);
        ebml::element(id::SEEK_HEAD, &entries, &mut seek_head);
        ebml::void(SEEK_RESERVE - seek_head.len(), &mut seek_head);
        patches.push((layout.segment_data, seek_head));
        if self.last_time.is_some() {
            let mut duration = Vec::with_capacity(DURATION_LEN);
            ebml::float8(id::DURATION, self.duration_ticks() as f64, &mut duration);
            patches.push((layout.duration, duration));
        }
        let total = end + append.len() as u64;
        patches.push((
            layout.segment + 4,
            ebml::size8(total - layout.segment_data).to_vec(),
        ));
        Some(Finish {
            append_at: end,
            append,
            patches,
        })
    }
}

/// An unsigned integer in as few bytes as it needs.
fn minimal(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    bytes[skip..].to_vec()
}
