//! The scanner's tests: hand-built streams, hostile headers, every split point, and the
//! ffmpeg fixture checked against mkvinfo. Test code only: `mod.rs` declares it under
//! `#[cfg(test)]`, and the attribute below says so to line counters too.

#[cfg(test)]
use super::*;
use crate::webm::ebml::id;
use crate::webm::testutil::*;
use crate::webm::{TrackKind, VideoStream};

fn header_and_tracks() -> Vec<u8> {
    [
        ebml_header("webm"),
        [id_bytes(id::SEGMENT), UNKNOWN.to_vec()].concat(),
        info(1_000_000, None),
        vp8_opus_tracks(),
    ]
    .concat()
}

fn blocks(events: &[Event]) -> Vec<(u64, u64, i16, bool, BlockKind)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Block {
                offset,
                track,
                relative_timecode,
                keyframe,
                kind,
                ..
            } => Some((offset, track, relative_timecode, keyframe, kind)),
            _ => None,
        })
        .collect()
}

fn clusters(events: &[Event]) -> Vec<(u64, Option<u64>, Option<u64>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ClusterStart {
                offset,
                size,
                timecode,
                ..
            } => Some((*offset, *size, timecode.map(|t| t.value))),
            _ => None,
        })
        .collect()
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            Event::EbmlHeader { .. } => "ebml",
            Event::SegmentStart { .. } => "segment",
            Event::Info { .. } => "info",
            Event::Tracks { .. } => "tracks",
            Event::InitSegment { .. } => "init",
            Event::ClusterStart { .. } => "cluster",
            Event::Block { .. } => "block",
        })
        .collect()
}

#[test]
fn live_stream_with_unknown_sizes() {
    let head = header_and_tracks();
    let c1 = el_unknown(
        id::CLUSTER,
        &[
            timecode(0),
            simple_block(1, 0, true, 500),
            simple_block(2, 3, true, 40),
            simple_block(1, 33, false, 100),
        ]
        .concat(),
    );
    let c2 = el_unknown(
        id::CLUSTER,
        &[timecode(1000), simple_block(1, 0, true, 300)].concat(),
    );
    let data = [head.clone(), c1.clone(), c2].concat();
    let ev = events(&data);
    assert_eq!(
        kinds(&ev),
        [
            "ebml", "segment", "info", "tracks", "init", "cluster", "block", "block", "block",
            "cluster", "block"
        ]
    );
    let segment_offset = ebml_header("webm").len() as u64;
    assert_eq!(
        ev[1],
        Event::SegmentStart {
            offset: segment_offset,
            data_offset: segment_offset + 12,
            size: None
        }
    );
    let c1_offset = head.len() as u64;
    let c2_offset = c1_offset + c1.len() as u64;
    assert_eq!(
        ev[4],
        Event::InitSegment {
            range: 0..c1_offset
        }
    );
    assert_eq!(
        ev[5],
        Event::ClusterStart {
            offset: c1_offset,
            data_offset: c1_offset + 12,
            size: None,
            timecode: Some(ClusterTimecode {
                value: 0,
                value_offset: c1_offset + 14,
                value_len: 1
            }),
        }
    );
    assert_eq!(clusters(&ev)[1], (c2_offset, None, Some(1000)));
    let b = blocks(&ev);
    assert_eq!(b[0], (c1_offset + 15, 1, 0, true, BlockKind::Simple));
    assert!(!b[2].3);
    let Event::Tracks { tracks, .. } = &ev[3] else {
        panic!()
    };
    assert_eq!(tracks[0].kind, TrackKind::Video);
    assert_eq!(tracks[1].codec_id, "A_OPUS");
}

#[test]
fn known_sizes_with_void_cues_tags_seekhead() {
    let clusters_bytes = [
        el(
            id::CLUSTER,
            &[
                el(CRC32, &[1, 2, 3, 4]),
                timecode(0),
                simple_block(1, 0, true, 50),
            ]
            .concat(),
        ),
        el(
            id::CLUSTER,
            &[timecode(40), simple_block(1, 0, false, 50)].concat(),
        ),
    ]
    .concat();
    let body = [
        el(id::SEEK_HEAD, &el(0x4DBB, &payload(20))),
        el(VOID, &payload(50)),
        info(1_000_000, Some(80.0)),
        vp8_opus_tracks(),
        el(id::TAGS, &payload(30)),
        clusters_bytes,
        el(id::CUES, &payload(25)),
        el(id::CHAPTERS, &payload(5)),
        el(id::ATTACHMENTS, &payload(5)),
        el(0x1F00_0001, &payload(7)), // an ID nobody defines
    ]
    .concat();
    let data = [ebml_header("webm"), el(id::SEGMENT, &body)].concat();
    let ev = events(&data);
    assert_eq!(
        kinds(&ev),
        ["ebml", "segment", "info", "tracks", "init", "cluster", "block", "cluster", "block"]
    );
    let Event::SegmentStart { size, .. } = ev[1] else {
        panic!()
    };
    assert_eq!(size, Some(body.len() as u64));
    let Event::Info { duration, .. } = ev[2] else {
        panic!()
    };
    assert_eq!(duration, Some(80.0));
    // The CRC-32 first child does not hide the Timecode.
    assert_eq!(
        clusters(&ev).iter().map(|c| c.2).collect::<Vec<_>>(),
        [Some(0), Some(40)]
    );
    assert!(clusters(&ev).iter().all(|c| c.1.is_some()));
}

#[test]
fn audio_first_cluster() {
    let cluster = el_unknown(
        id::CLUSTER,
        &[
            timecode(5000),
            simple_block(2, 0, true, 60),
            simple_block(2, 20, true, 60),
            simple_block(1, 21, true, 900),
            simple_block(2, 40, true, 60),
        ]
        .concat(),
    );
    let ev = events(&[header_and_tracks(), cluster].concat());
    let b = blocks(&ev);
    assert_eq!(b.len(), 4);
    assert_eq!((b[0].1, b[0].3), (2, true));
    let first_video_key = b.iter().find(|b| b.1 == 1 && b.3).unwrap();
    assert_eq!(first_video_key.2, 21);
}

#[test]
fn block_groups_with_and_without_reference() {
    let cluster = el_unknown(
        id::CLUSTER,
        &[
            timecode(0),
            block_group(1, 0, None, false, 200),
            block_group(1, 33, Some(-33), false, 80),
            block_group(1, 66, Some(-33), true, 80),
            block_group(1, 100, None, true, 80),
        ]
        .concat(),
    );
    let head = header_and_tracks();
    let ev = events(&[head.clone(), cluster].concat());
    let b = blocks(&ev);
    let keys: Vec<bool> = b.iter().map(|b| b.3).collect();
    assert_eq!(keys, [true, false, false, true]);
    assert!(b.iter().all(|b| b.4 == BlockKind::Group && b.1 == 1));
    assert_eq!(b.iter().map(|b| b.2).collect::<Vec<_>>(), [0, 33, 66, 100]);
    // Offsets are the BlockGroup IDs: the first follows the cluster header and timecode.
    assert_eq!(b[0].0, head.len() as u64 + 12 + 3);
}

#[test]
fn group_event_waits_for_the_group_end() {
    let group = block_group(1, 0, Some(-1), false, 10);
    let data = [
        header_and_tracks(),
        el_unknown(id::CLUSTER, &[timecode(0), group.clone()].concat()),
    ]
    .concat();
    let mut scanner = Scanner::new();
    let mut ev = Vec::new();
    scanner.push(&data[..data.len() - 1], &mut ev).unwrap();
    assert!(
        blocks(&ev).is_empty(),
        "the ReferenceBlock is not complete yet"
    );
    scanner.push(&data[data.len() - 1..], &mut ev).unwrap();
    assert_eq!(blocks(&ev).len(), 1);
    assert!(!blocks(&ev)[0].3);
}

#[test]
fn block_before_timecode_and_empty_cluster() {
    let data = [
        header_and_tracks(),
        el_unknown(
            id::CLUSTER,
            &[simple_block(1, 0, true, 10), timecode(7)].concat(),
        ),
        el(id::CLUSTER, &[]),
        el(id::CLUSTER, &el(VOID, &[0; 3])),
    ]
    .concat();
    let ev = events(&data);
    let c = clusters(&ev);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c.2.is_none()));
    assert_eq!((c[1].1, c[2].1), (Some(0), Some(5)));
    // The cluster is announced before its first block.
    assert_eq!(kinds(&ev)[5..], ["cluster", "block", "cluster", "cluster"]);
}

#[test]
fn unknown_cluster_ends_at_level1_elements() {
    for level1 in [
        id::CUES,
        id::TAGS,
        id::CHAPTERS,
        id::SEEK_HEAD,
        id::ATTACHMENTS,
    ] {
        let data = [
            header_and_tracks(),
            el_unknown(
                id::CLUSTER,
                &[timecode(0), simple_block(1, 0, true, 10)].concat(),
            ),
            el(
                level1,
                &[simple_block(1, 0, true, 10), timecode(3)].concat(),
            ),
            el_unknown(
                id::CLUSTER,
                &[timecode(9), simple_block(1, 0, true, 10)].concat(),
            ),
        ]
        .concat();
        let ev = events(&data);
        // The level-1 element's contents look like blocks but are skipped whole.
        assert_eq!(blocks(&ev).len(), 2, "{level1:#x}");
        assert_eq!(clusters(&ev).len(), 2);
    }
    // Info and Tracks too: a late Tracks is reported again.
    let data = [
        header_and_tracks(),
        el_unknown(id::CLUSTER, &timecode(0)),
        vp8_opus_tracks(),
    ]
    .concat();
    assert_eq!(kinds(&events(&data)).last(), Some(&"tracks"));
}

#[test]
fn unknown_cluster_inside_known_segment_ends_with_it() {
    let segment = el(
        id::SEGMENT,
        &[
            vp8_opus_tracks(),
            el_unknown(id::CLUSTER, &[simple_block(1, 0, true, 10)].concat()),
        ]
        .concat(),
    );
    let data = [ebml_header("webm"), segment, ebml_header("webm")].concat();
    let ev = events(&data);
    assert_eq!(
        kinds(&ev),
        ["ebml", "segment", "tracks", "init", "cluster", "block", "ebml"]
    );
}

#[test]
fn two_concatenated_files() {
    let file = |tc: u64| {
        [
            header_and_tracks(),
            el_unknown(
                id::CLUSTER,
                &[
                    timecode(tc),
                    simple_block(2, 0, true, 30),
                    simple_block(1, 0, true, 99),
                ]
                .concat(),
            ),
        ]
        .concat()
    };
    let first = file(100);
    let data = [first.clone(), file(0)].concat();
    let ev = events(&data);
    let k = kinds(&ev);
    assert_eq!(k.iter().filter(|&&k| k == "ebml").count(), 2);
    assert_eq!(k.iter().filter(|&&k| k == "init").count(), 2);
    let second_start = first.len() as u64;
    assert!(ev.contains(&Event::EbmlHeader {
        offset: second_start,
        end: second_start + ebml_header("webm").len() as u64,
        doc_type: "webm".into()
    }));
    let inits: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::InitSegment { range } => Some(range.clone()),
            _ => None,
        })
        .collect();
    let init_len = header_and_tracks().len() as u64;
    assert_eq!(inits, [0..init_len, second_start..second_start + init_len]);
    assert_eq!(blocks(&ev).len(), 4);
}

#[test]
fn ebml_header_inside_known_cluster_starts_a_new_file() {
    let data = [
        ebml_header("webm"),
        el(
            id::SEGMENT,
            &[vp8_opus_tracks(), el(id::CLUSTER, &[0u8; 1000])].concat(),
        ),
    ]
    .concat();
    // Cut the Cluster short and start a new file where its payload would be.
    let cut = data.len() - 1000;
    let data = [&data[..cut], &header_and_tracks()[..]].concat();
    let ev = events(&data);
    assert_eq!(kinds(&ev).iter().filter(|&&k| k == "ebml").count(), 2);
    assert_eq!(kinds(&ev).last(), Some(&"tracks"));
}

#[test]
fn split_one_byte_into_every_position() {
    let data = [
        header_and_tracks(),
        el_unknown(
            id::CLUSTER,
            &[
                timecode(0),
                simple_block(2, 0, true, 20),
                block_group(1, 0, None, true, 30),
                block_group(1, 33, Some(-33), false, 30),
            ]
            .concat(),
        ),
        el(id::CUES, &payload(10)),
        header_and_tracks(),
        el(
            id::CLUSTER,
            &[timecode(3), simple_block(1, 0, true, 20)].concat(),
        ),
    ]
    .concat();
    let whole = events(&data);
    for cut in 0..=data.len() {
        assert_eq!(
            scan_cut(&data, &[cut]),
            (whole.clone(), None),
            "cut at {cut}"
        );
        // One byte into an element ID, and every other two-piece split with it.
        assert_eq!(
            scan_cut(&data, &[cut, cut + 1]),
            (whole.clone(), None),
            "{cut}+1"
        );
    }
    let every_byte: Vec<usize> = (1..data.len()).collect();
    assert_eq!(scan_cut(&data, &every_byte), (whole, None));
}

#[test]
fn stream_info_follows_the_current_file() {
    let mut scanner = Scanner::new();
    let mut ev = Vec::new();
    scanner.push(&header_and_tracks(), &mut ev).unwrap();
    let info = scanner.stream_info().unwrap();
    assert_eq!(info.doc_type, "webm");
    assert_eq!(
        info.video,
        Some(VideoStream {
            track: 1,
            codec_id: "V_VP8".into(),
            width: 320,
            height: 240
        })
    );
    assert_eq!(info.audio.as_ref().unwrap().channels, 2);
    scanner.push(&ebml_header("matroska"), &mut ev).unwrap();
    assert_eq!(scanner.stream_info(), None);
}

#[test]
fn skipped_payload_is_counted_not_buffered() {
    let mut scanner = Scanner::new();
    let mut ev = Vec::new();
    scanner.push(&header_and_tracks(), &mut ev).unwrap();
    // A 64 MiB SimpleBlock, fed in 1 MiB pieces.
    let size = 64u64 << 20;
    let mut head = el_unknown(id::CLUSTER, &timecode(0));
    head.extend(id_bytes(id::SIMPLE_BLOCK));
    head.extend(size_vint(size));
    head.extend([0x81, 0, 0, 0x80]);
    scanner.push(&head, &mut ev).unwrap();
    let piece = vec![0x1Au8; 1 << 20];
    let mut left = size - 4;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        scanner.push(&piece[..n], &mut ev).unwrap();
        assert!(scanner.buffered_bytes() <= KEEP_BODY_CAPACITY);
        left -= n as u64;
    }
    scanner
        .push(&simple_block(1, 1, false, 0), &mut ev)
        .unwrap();
    assert_eq!(blocks(&ev).len(), 2);
}

fn err_of(data: &[u8]) -> WebmError {
    let (_, err) = scan(data);
    err.expect("an error")
}

#[test]
fn mp4_is_not_webm() {
    assert_eq!(err_of(b"\0\0\0\x20ftypiso5\0\0\0\x01"), WebmError::NotWebm);
    // Caught from the first byte on, whatever the cut.
    assert_eq!(
        scan_cut(b"\0\0\0\x20ftyp", &[1]).1,
        Some(WebmError::NotWebm)
    );
    assert_eq!(err_of(&[0x1A, 0x45, 0xDF, 0xA4]), WebmError::NotWebm);
}

#[test]
fn hostile_headers_are_errors() {
    let head = header_and_tracks();
    let at = head.len() as u64;
    let with = |tail: &[u8]| err_of(&[&head[..], tail].concat());
    assert_eq!(with(&[0x00]), WebmError::IdTooLong { offset: at });
    assert_eq!(
        with(&[0x08, 1, 2, 3, 4]),
        WebmError::IdTooLong { offset: at }
    );
    assert_eq!(
        with(&[0xA3, 0x00]),
        WebmError::SizeTooLong { offset: at + 1 }
    );
    assert_eq!(
        with(&[0xFF]),
        WebmError::InvalidId {
            offset: at,
            id: 0xFF
        }
    );
    // Unknown size where only Segment and Cluster may have it.
    assert_eq!(
        with(&el_unknown(id::CUES, &[])),
        WebmError::UnknownSize {
            offset: at,
            id: id::CUES
        }
    );
    assert!(matches!(
        with(
            &[
                el_unknown(id::CLUSTER, &[]),
                el_unknown(id::BLOCK_GROUP, &[])
            ]
            .concat()
        ),
        WebmError::UnknownSize { .. }
    ));
    // A zero track-number vint in a block.
    assert!(matches!(
        with(&el_unknown(
            id::CLUSTER,
            &el(id::SIMPLE_BLOCK, &[0, 0, 0, 0x80])
        )),
        WebmError::InvalidVint { .. }
    ));
    assert!(matches!(
        with(&el_unknown(id::CLUSTER, &el(id::SIMPLE_BLOCK, &[0x81, 0]))),
        WebmError::Malformed { .. }
    ));
    assert!(matches!(
        with(&el_unknown(id::CLUSTER, &el(id::TIMECODE, &[0; 9]))),
        WebmError::Malformed { .. }
    ));
}

#[test]
fn child_larger_than_parent_is_an_error() {
    let cluster = el(id::CLUSTER, &simple_block(1, 0, true, 10));
    let mut data = [header_and_tracks(), cluster].concat();
    // Grow the SimpleBlock's 1-byte size (before its 14 body bytes) past the end.
    let size_at = data.len() - 15;
    data[size_at] += 1;
    assert!(matches!(err_of(&data), WebmError::OverflowsParent { .. }));
    // Also through an unknown-size Cluster inside a known-size Segment.
    let segment = el(
        id::SEGMENT,
        &el_unknown(id::CLUSTER, &simple_block(1, 0, true, 10)),
    );
    let mut data = [ebml_header("webm"), segment].concat();
    let size_at = data.len() - 15;
    data[size_at] += 1;
    assert!(matches!(err_of(&data), WebmError::OverflowsParent { .. }));
}

#[test]
fn limits_are_enforced() {
    let big_tracks = el(id::TRACKS, &payload(2000));
    let data = [ebml_header("webm"), el_unknown(id::SEGMENT, &big_tracks)].concat();
    let limits = Limits {
        max_buffered_element: 1000,
        ..Limits::default()
    };
    let mut scanner = Scanner::with_limits(limits);
    let err = scanner.push(&data, &mut Vec::new()).unwrap_err();
    assert!(matches!(
        err,
        WebmError::TooLarge {
            size: 2000,
            limit: 1000,
            ..
        }
    ));

    let data = [
        header_and_tracks(),
        el_unknown(id::CLUSTER, &block_group(1, 0, None, false, 1)),
    ]
    .concat();
    let mut scanner = Scanner::with_limits(Limits {
        max_depth: 2,
        ..Limits::default()
    });
    let err = scanner.push(&data, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, WebmError::TooDeep { limit: 2, .. }));
}

#[test]
fn split_small_element_stays_within_its_limit() {
    let tracks = vp8_opus_tracks();
    let limits = Limits {
        max_buffered_element: tracks.len() - 5, // the Tracks body, exactly
        ..Limits::default()
    };
    let data = [ebml_header("webm"), el_unknown(id::SEGMENT, &tracks)].concat();
    let mut scanner = Scanner::with_limits(limits);
    let mut ev = Vec::new();
    for piece in data.chunks(7) {
        scanner.push(piece, &mut ev).unwrap();
        assert!(scanner.buffered_bytes() <= limits.max_buffered_element);
    }
    assert_eq!(kinds(&ev), ["ebml", "segment", "tracks"]);
}

#[test]
fn errors_are_sticky() {
    let mut scanner = Scanner::new();
    let mut ev = Vec::new();
    let err = scanner.push(b"\0\0\0\x20ftyp", &mut ev).unwrap_err();
    assert_eq!(
        scanner.push(&header_and_tracks(), &mut ev),
        Err(err.clone())
    );
    assert_eq!(scanner.error(), Some(&err));
    assert!(ev.is_empty());
    assert_eq!(scanner.position(), 8 + header_and_tracks().len() as u64);
}

#[test]
fn other_doc_types_and_second_segments_are_rejected() {
    assert_eq!(
        err_of(&ebml_header("mkv3d")),
        WebmError::UnsupportedDocType {
            doc_type: "mkv3d".into()
        }
    );
    let data = [
        ebml_header("matroska"),
        el(id::SEGMENT, &[]),
        el(id::SEGMENT, &[]),
    ]
    .concat();
    assert!(matches!(err_of(&data), WebmError::Unexpected { .. }));
}

// --- The ffmpeg fixture -------------------------------------------------------

const FIXTURE: &[u8] = include_bytes!("../testdata/ffmpeg-vp8-opus.webm");
/// One line per block, from `mkvinfo -v -v`: offset, cluster offset, track,
/// keyframe, simple|group, absolute timecode in ms.
const FIXTURE_BLOCKS: &str = include_str!("../testdata/ffmpeg-vp8-opus.blocks.txt");

#[test]
fn fixture_events_match_mkvinfo() {
    let ev = events(FIXTURE);
    assert_eq!(
        ev[..2],
        [
            Event::EbmlHeader {
                offset: 0,
                end: 36,
                doc_type: "webm".into()
            },
            Event::SegmentStart {
                offset: 36,
                data_offset: 48,
                size: Some(45501)
            },
        ]
    );
    let Event::Info {
        range,
        timecode_scale,
        duration,
    } = &ev[2]
    else {
        panic!("{:?}", ev[2])
    };
    assert_eq!(
        (range.start, *timecode_scale, *duration),
        (209, 1_000_000, Some(3008.0))
    );
    let Event::Tracks { range, tracks } = &ev[3] else {
        panic!("{:?}", ev[3])
    };
    assert_eq!(range.start, 246);
    assert_eq!(tracks.len(), 2);
    assert_eq!(ev[4], Event::InitSegment { range: 0..594 });

    let c = clusters(&ev);
    assert_eq!(
        c.iter().map(|c| (c.0, c.2)).collect::<Vec<_>>(),
        [
            (594, Some(0)),
            (14866, Some(981)),
            (29828, Some(1981)),
            (45195, Some(2981))
        ]
    );
    let Event::ClusterStart { timecode, .. } = ev[6 - 1] else {
        panic!()
    };
    assert_eq!(timecode.unwrap().value_offset, 602);

    let cluster_tc: std::collections::HashMap<u64, u64> =
        c.iter().map(|c| (c.0, c.2.unwrap())).collect();
    let got: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Block {
                offset,
                cluster_offset,
                track,
                relative_timecode,
                keyframe,
                kind,
            } => Some(format!(
                "{offset} {cluster_offset} {track} {} {} {}",
                u8::from(*keyframe),
                if *kind == BlockKind::Simple {
                    "simple"
                } else {
                    "group"
                },
                cluster_tc[cluster_offset] as i64 + i64::from(*relative_timecode)
            )),
            _ => None,
        })
        .collect();
    let want: Vec<&str> = FIXTURE_BLOCKS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 196);
    let video_keys = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Block {
                    track: 1,
                    keyframe: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(video_keys, 3);
}

#[test]
fn fixture_stream_info() {
    let mut scanner = Scanner::new();
    scanner.push(FIXTURE, &mut Vec::new()).unwrap();
    let info = scanner.stream_info().unwrap();
    let video = info.video.as_ref().unwrap();
    let audio = info.audio.as_ref().unwrap();
    assert_eq!(
        (video.codec_id.as_str(), video.width, video.height),
        ("V_VP8", 160, 120)
    );
    assert_eq!(
        (
            audio.codec_id.as_str(),
            audio.sampling_frequency,
            audio.channels
        ),
        ("A_OPUS", 48000.0, 1)
    );
}

/// The fixture as a live recorder would write it: Segment and Clusters of unknown
/// size (each size field rewritten in place to all ones).
fn fixture_with_unknown_sizes() -> Vec<u8> {
    let mut data = FIXTURE.to_vec();
    for e in events(FIXTURE) {
        if let Event::SegmentStart {
            offset,
            data_offset,
            ..
        }
        | Event::ClusterStart {
            offset,
            data_offset,
            ..
        } = e
        {
            let (start, end) = (offset as usize + 4, data_offset as usize);
            let len = end - start;
            for (i, b) in data[start..end].iter_mut().enumerate() {
                *b = if i == 0 { 0xFF >> (len - 1) } else { 0xFF };
            }
        }
    }
    data
}

#[test]
fn fixture_with_unknown_sizes_gives_the_same_index() {
    let strip = |ev: Vec<Event>| -> Vec<Event> {
        ev.into_iter()
            .map(|e| match e {
                Event::SegmentStart {
                    size: _,
                    offset,
                    data_offset,
                } => Event::SegmentStart {
                    offset,
                    data_offset,
                    size: None,
                },
                Event::ClusterStart {
                    size: _,
                    offset,
                    data_offset,
                    timecode,
                } => Event::ClusterStart {
                    offset,
                    data_offset,
                    size: None,
                    timecode,
                },
                e => e,
            })
            .collect()
    };
    assert_eq!(
        events(&fixture_with_unknown_sizes()),
        strip(events(FIXTURE))
    );
}

// --- Properties -------------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum GenBlock {
        Simple {
            track: u64,
            tc: i16,
            key: bool,
            len: usize,
        },
        Group {
            track: u64,
            tc: i16,
            reference: bool,
            additions: bool,
            len: usize,
        },
    }

    #[derive(Debug, Clone)]
    struct GenCluster {
        unknown: bool,
        timecode: Option<u64>,
        crc: bool,
        blocks: Vec<GenBlock>,
    }

    #[derive(Debug, Clone)]
    struct GenFile {
        unknown_segment: bool,
        void: bool,
        clusters: Vec<GenCluster>,
        cues: bool,
    }

    fn gen_block() -> impl Strategy<Value = GenBlock> {
        prop_oneof![
            (1u64..3, any::<i16>(), any::<bool>(), 0usize..200).prop_map(
                |(track, tc, key, len)| GenBlock::Simple {
                    track,
                    tc,
                    key,
                    len
                }
            ),
            (
                1u64..200,
                any::<i16>(),
                any::<bool>(),
                any::<bool>(),
                0usize..200
            )
                .prop_map(|(track, tc, reference, additions, len)| {
                    GenBlock::Group {
                        track,
                        tc,
                        reference,
                        additions,
                        len,
                    }
                }),
        ]
    }

    fn gen_file() -> impl Strategy<Value = GenFile> {
        let cluster = (
            any::<bool>(),
            proptest::option::of(0u64..1 << 40),
            any::<bool>(),
            proptest::collection::vec(gen_block(), 0..6),
        )
            .prop_map(|(unknown, timecode, crc, blocks)| GenCluster {
                unknown,
                timecode,
                crc,
                blocks,
            });
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(cluster, 0..5),
            any::<bool>(),
        )
            .prop_map(|(unknown_segment, void, clusters, cues)| GenFile {
                unknown_segment,
                void,
                clusters,
                cues,
            })
    }

    fn build(files: &[GenFile]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in files {
            let mut body = info(1_000_000, None);
            if f.void {
                body.extend(el(VOID, &payload(40)));
            }
            body.extend(vp8_opus_tracks());
            for c in &f.clusters {
                let mut cb = Vec::new();
                if c.crc {
                    cb.extend(el(CRC32, &[9, 9, 9, 9]));
                }
                if let Some(tc) = c.timecode {
                    cb.extend(timecode(tc));
                }
                for b in &c.blocks {
                    cb.extend(match *b {
                        GenBlock::Simple {
                            track,
                            tc,
                            key,
                            len,
                        } => simple_block(track, tc, key, len),
                        GenBlock::Group {
                            track,
                            tc,
                            reference,
                            additions,
                            len,
                        } => block_group(track, tc, reference.then_some(-1), additions, len),
                    });
                }
                body.extend(el_maybe_unknown(id::CLUSTER, c.unknown, &cb));
            }
            if f.cues {
                body.extend(el(id::CUES, &payload(30)));
            }
            out.extend(ebml_header("webm"));
            out.extend(el_maybe_unknown(id::SEGMENT, f.unknown_segment, &body));
        }
        out
    }

    fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0..=len, 0..40).prop_map(|mut v| {
            v.sort_unstable();
            v
        })
    }

    /// Cuts a buffer of length `len` into pieces: every byte, random points, or whole.
    fn chunking(len: usize) -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![
            Just((1..len).collect::<Vec<_>>()),
            cuts(len),
            Just(Vec::new()),
        ]
    }

    /// Feeds `data` as `cuts` say, checking the memory bound after every push.
    fn scan_bounded(data: &[u8], cuts: &[usize]) -> (Vec<Event>, Option<WebmError>) {
        let limits = Limits::default();
        let mut scanner = Scanner::with_limits(limits);
        let mut events = Vec::new();
        let mut error = None;
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let cut = cut.clamp(start, data.len());
            let result = scanner.push(&data[start..cut], &mut events);
            assert!(scanner.buffered_bytes() <= limits.max_buffered_element);
            if let Err(e) = result {
                // Sticky: the same error from here on.
                assert_eq!(scanner.push(&data[cut..], &mut events), Err(e.clone()));
                error = Some(e);
                break;
            }
            start = cut;
        }
        assert_eq!(scanner.position(), data.len() as u64);
        (events, error)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn fixture_events_do_not_depend_on_chunking(cuts in chunking(FIXTURE.len())) {
            prop_assert_eq!(scan_cut(FIXTURE, &cuts), scan(FIXTURE));
        }

        #[test]
        fn unknown_size_fixture_does_not_depend_on_chunking(cuts in cuts(FIXTURE.len())) {
            let data = fixture_with_unknown_sizes();
            prop_assert_eq!(scan_cut(&data, &cuts), scan(&data));
        }

        #[test]
        fn mutated_fixture_never_panics(
            flips in proptest::collection::vec((0..FIXTURE.len(), any::<u8>()), 1..8),
            truncate in 0..=FIXTURE.len(),
            cuts in cuts(FIXTURE.len()),
        ) {
            let mut data = FIXTURE[..truncate].to_vec();
            for (at, byte) in flips {
                if at < data.len() {
                    data[at] = byte;
                }
            }
            // Whatever the damage, the verdict must not depend on the cuts either.
            prop_assert_eq!(scan_bounded(&data, &cuts), scan_bounded(&data, &[]));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn generated_streams_index_every_block(
            files in proptest::collection::vec(gen_file(), 1..3),
            seed in any::<u64>(),
        ) {
            let data = build(&files);
            let whole = events(&data);
            // Chunking invariance: every byte, and pseudo-random cuts from the seed.
            prop_assert_eq!(scan_cut(&data, &(1..data.len()).collect::<Vec<_>>()), (whole.clone(), None));
            let mut x = seed | 1;
            let mut random_cuts: Vec<usize> = (0..20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % (data.len() as u64 + 1)) as usize
                })
                .collect();
            random_cuts.sort_unstable();
            prop_assert_eq!(scan_cut(&data, &random_cuts), (whole.clone(), None));

            // The index matches what was built.
            let want_blocks: Vec<(bool, BlockKind)> = files
                .iter()
                .flat_map(|f| &f.clusters)
                .flat_map(|c| &c.blocks)
                .map(|b| match *b {
                    GenBlock::Simple { key, .. } => (key, BlockKind::Simple),
                    GenBlock::Group { reference, .. } => (!reference, BlockKind::Group),
                })
                .collect();
            let got_blocks: Vec<(bool, BlockKind)> =
                blocks(&whole).iter().map(|b| (b.3, b.4)).collect();
            prop_assert_eq!(got_blocks, want_blocks);
            let mut want_clusters: Vec<(bool, Option<u64>)> = files
                .iter()
                .flat_map(|f| &f.clusters)
                .map(|c| (c.unknown, c.timecode))
                .collect();
            // An unknown-size Cluster with nothing in it, last in the stream, has not
            // ended yet and has nothing to announce.
            let last = files.last().unwrap();
            if let Some(c) = last.clusters.last() {
                let open = c.unknown && last.unknown_segment && !last.cues;
                if open && c.timecode.is_none() && c.blocks.is_empty() {
                    want_clusters.pop();
                }
            }
            let got_clusters: Vec<(bool, Option<u64>)> =
                clusters(&whole).iter().map(|c| (c.1.is_none(), c.2)).collect();
            prop_assert_eq!(got_clusters, want_clusters);
            let inits = kinds(&whole).iter().filter(|&&k| k == "init").count();
            prop_assert_eq!(inits, files.iter().filter(|f| !f.clusters.is_empty()).count());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in cuts(2000),
        ) {
            prop_assert_eq!(scan_bounded(&data, &cuts), scan_bounded(&data, &[]));
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_head_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in cuts(2500),
        ) {
            // Past the magic check, so the fuzzing reaches the element logic.
            let data = [header_and_tracks(), tail].concat();
            prop_assert_eq!(scan_bounded(&data, &cuts), scan_bounded(&data, &[]));
        }
    }
}

/// Chromium's MediaRecorder output: unknown-size clusters, the case a resync must meet.
const CHROME_WEBM: &[u8] = include_bytes!("../../../integration/fixtures/chrome-vp8-opus.webm");

fn scan_all(data: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    Scanner::new().push(data, &mut events).unwrap();
    events
}

#[test]
fn a_scanner_resynced_at_a_later_cluster_reports_what_a_whole_scan_reports_from_there() {
    let whole = scan_all(CHROME_WEBM);
    let starts: Vec<u64> = clusters(&whole).iter().map(|c| c.0).collect();
    assert!(starts.len() > 4, "{starts:?}");
    let (first, at) = (starts[0], starts[starts.len() / 2]);
    // The init segment and part of the first cluster, cut mid-block; then the bytes
    // from a later cluster on.
    let held = first as usize + 100;
    let mut scanner = Scanner::new();
    let mut events = Vec::new();
    scanner.push(&CHROME_WEBM[..held], &mut events).unwrap();
    assert!(!scanner.resync(held as u64 - 1), "behind what it has read");
    assert!(scanner.resync(at));
    assert_eq!(scanner.position(), at);
    let before = events.len();
    for piece in CHROME_WEBM[at as usize..].chunks(777) {
        scanner.push(piece, &mut events).unwrap();
    }
    let from_there = |e: &&Event| match e {
        Event::ClusterStart { offset, .. } => *offset >= at,
        Event::Block { cluster_offset, .. } => *cluster_offset >= at,
        _ => false,
    };
    let expected: Vec<&Event> = whole.iter().filter(from_there).collect();
    let got: Vec<&Event> = events[before..].iter().collect();
    assert_eq!(got, expected);
}

#[test]
fn a_scanner_refuses_to_resync_before_its_init_segment_is_complete_or_after_an_error() {
    let whole = scan_all(CHROME_WEBM);
    let at = clusters(&whole)[2].0;
    let mut scanner = Scanner::new();
    scanner.push(&CHROME_WEBM[..40], &mut Vec::new()).unwrap();
    assert!(
        !scanner.resync(at),
        "no Cluster seen: the init is not complete"
    );
    assert_eq!(scanner.position(), 40, "nothing changed");
    let mut broken = Scanner::new();
    assert!(broken.push(b"not webm at all", &mut Vec::new()).is_err());
    assert!(!broken.resync(at));
}
