use super::*;
use crate::mp4::Event;

/// ffmpeg's `frag_keyframe+empty_moov+default_base_moof`: H.264 160x120 + AAC, 3 s, a
/// fragment per keyframe (the scanner's fixture).
const FRAG_KEYFRAME: &[u8] = include_bytes!("../../mp4/testdata/ffmpeg-h264-aac-frag-keyframe.mp4");
/// H.264 only, per-sample flags: other tracks than the one above.
const PER_SAMPLE: &[u8] = include_bytes!("../../mp4/testdata/ffmpeg-h264-per-sample-flags.mp4");

fn cut(data: &[u8], size: usize) -> Vec<Bytes> {
    data.chunks(size).map(Bytes::copy_from_slice).collect()
}

/// Splices generations; returns the output and where each boundary piece ended.
fn splice(generations: &[Vec<Bytes>]) -> (Splicer, Vec<u8>, Vec<usize>) {
    let mut splicer = Splicer::new();
    let mut pieces = Vec::new();
    for (g, frames) in generations.iter().enumerate() {
        splicer.begin(g as u64 + 1);
        for frame in frames {
            splicer.push(frame.clone(), &mut pieces).unwrap();
        }
        splicer.end_generation(&mut pieces);
    }
    let mut out = Vec::new();
    let mut boundaries = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&piece.bytes);
        if piece.boundary {
            boundaries.push(out.len());
        }
    }
    assert_eq!(splicer.out_len(), out.len() as u64);
    (splicer, out, boundaries)
}

fn finalize(splicer: &Splicer, mut file: Vec<u8>) -> Vec<u8> {
    let finish = splicer.finish().expect("a head");
    assert_eq!(finish.append_at, file.len() as u64);
    file.extend_from_slice(&finish.append);
    for (at, bytes) in finish.patches {
        file[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    file
}

fn events(data: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    Scanner::new().push(data, &mut events).unwrap();
    events
}

/// Each fragment's (sequence number, [(track, tfdt)]), and the mdat payload ranges.
#[allow(clippy::type_complexity)]
fn fragments(data: &[u8]) -> (Vec<(u32, Vec<(u32, u64)>)>, Vec<Range<usize>>) {
    let mut frags = Vec::new();
    let mut mdats = Vec::new();
    for event in events(data) {
        match event {
            Event::Fragment {
                sequence, tracks, ..
            } => frags.push((
                sequence.unwrap().0,
                tracks
                    .iter()
                    .map(|t| (t.track_id, t.base_decode_time.map_or(0, |b| b.0)))
                    .collect(),
            )),
            Event::MediaData { offset, end } => {
                mdats.push(offset as usize + 8..end.unwrap() as usize)
            }
            _ => {}
        }
    }
    (frags, mdats)
}

/// (track id, timescale) of the fixture's tracks.
fn timescales(data: &[u8]) -> Vec<(u32, u32)> {
    events(data)
        .into_iter()
        .find_map(|e| match e {
            Event::Movie { tracks, .. } => {
                Some(tracks.iter().map(|t| (t.id, t.timescale)).collect())
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn three_generations_become_one_mp4_whose_decode_times_follow_on() {
    let one = fragments(FRAG_KEYFRAME);
    let (splicer, file, _) = splice(&[
        cut(FRAG_KEYFRAME, 4096),
        cut(FRAG_KEYFRAME, 777),
        cut(FRAG_KEYFRAME, 100_000),
    ]);
    assert_eq!(splicer.generations(), 3);
    assert_eq!(
        splicer.description(),
        "avc1.42c00c 160x120, mp4a 48000 Hz 2 ch"
    );
    let file = finalize(&splicer, file);

    // One init segment, the first generation's, then only fragments and the mfra.
    let top: Vec<[u8; 4]> = boxes::children(&file, 0..file.len())
        .unwrap()
        .iter()
        .map(|b| b.fourcc)
        .collect();
    assert_eq!(&top[..2], &[*b"ftyp", *b"moov"]);
    assert_eq!(top.last(), Some(b"mfra"));
    assert_eq!(top.iter().filter(|f| *f == b"moov").count(), 1);

    let (frags, mdats) = fragments(&file);
    assert_eq!(frags.len(), 3 * one.0.len());
    // Sequence numbers continue across generations.
    let sequences: Vec<u32> = frags.iter().map(|f| f.0).collect();
    assert_eq!(sequences, (1..=frags.len() as u32).collect::<Vec<_>>());
    // Each track's decode times rise, and each generation starts where the file ended.
    let scales = timescales(FRAG_KEYFRAME);
    let n = one.0.len();
    for &(track, timescale) in &scales {
        let times: Vec<u64> = frags
            .iter()
            .flat_map(|f| f.1.iter().filter(|t| t.0 == track).map(|t| t.1))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "track {track}: {times:?}"
        );
        let first_of = |g: usize| frags[g * n].1.iter().find(|t| t.0 == track).unwrap().1;
        assert_eq!(first_of(0), 0);
        let end = splicer.tracks.iter().find(|t| t.id == track).unwrap().end;
        let secs = |t: u64| t as f64 / f64::from(timescale);
        assert!(
            (secs(first_of(1)) - secs(end) / 3.0).abs() < 0.03,
            "track {track}"
        );
        assert!((secs(first_of(2)) - 2.0 * secs(end) / 3.0).abs() < 0.05);
    }
    // The media is the publisher's, byte for byte.
    let (_, in_mdats) = fragments(FRAG_KEYFRAME);
    let media: Vec<&[u8]> = in_mdats.iter().map(|r| &FRAG_KEYFRAME[r.clone()]).collect();
    for (i, range) in mdats.iter().enumerate() {
        assert_eq!(&file[range.clone()], media[i % media.len()], "mdat {i}");
    }
    // The durations are set: mehd and mvhd say three times the fixture, in ms.
    let duration = splicer.duration_secs();
    assert!((duration - 3.0 * 3.0213).abs() < 0.1, "{duration}");
    if let Some(path) = std::env::var_os("BLOBCAST_DUMP_MP4") {
        std::fs::write(path, &file).unwrap();
    }
}

#[test]
fn finishing_sets_durations_and_indexes_the_sync_fragments() {
    let (splicer, file, _) = splice(&[cut(FRAG_KEYFRAME, 5000), cut(FRAG_KEYFRAME, 5000)]);
    let unpatched = file.clone();
    let file = finalize(&splicer, file);
    let moov_at = boxes::children(&file, 0..file.len()).unwrap()[1];
    let moov_bytes = &file[moov_at.start..moov_at.end];
    let movie = moov::parse(moov_bytes).unwrap();
    let at = |f: Field| boxes::read(moov_bytes, f.at as usize, f.width.into());
    let expected_ms = (splicer.duration_secs() * f64::from(movie.timescale)).ceil() as u64;
    assert_eq!(at(movie.mvhd_duration), expected_ms);
    assert_eq!(at(movie.mehd.expect("a mehd was put in")), expected_ms);
    let original = moov::parse(top_box_whole(FRAG_KEYFRAME, b"moov")).unwrap();
    assert!(original.mehd.is_none(), "ffmpeg's empty_moov has none");
    for track in &movie.tracks {
        assert!(at(track.mdhd_duration) > 0 && at(track.tkhd_duration) > 0);
    }
    // Only the head was patched; the mfra was appended.
    assert_eq!(file[moov_at.end..unpatched.len()], unpatched[moov_at.end..]);
    let mfra = &file[unpatched.len()..];
    assert_eq!(&mfra[4..8], b"mfra");
    assert_eq!(&mfra[mfra.len() - 16 + 4..mfra.len() - 8], b"mfro");
    assert_eq!(
        boxes::read(mfra, mfra.len() - 4, 4) as usize,
        mfra.len(),
        "mfro says the mfra's size"
    );
    // One tfra entry per video fragment that opens on a keyframe, pointing at a moof.
    let tfra = &mfra[8..];
    assert_eq!(&tfra[4..8], b"tfra");
    assert_eq!(boxes::read(tfra, 12, 4), 1, "the video track");
    let entries = boxes::read(tfra, 20, 4) as usize;
    assert_eq!(entries, splicer.tfra.len());
    assert!(
        entries >= 2 * 3,
        "a keyframe a second, two generations: {entries}"
    );
    let mut last = None;
    for i in 0..entries {
        let entry = &tfra[24 + i * 19..];
        let (time, offset) = (boxes::read(entry, 0, 8), boxes::read(entry, 8, 8) as usize);
        assert_eq!(&file[offset + 4..offset + 8], b"moof");
        assert!(last < Some(time));
        last = Some(time);
    }
}

fn top_box_whole<'a>(data: &'a [u8], fourcc: &[u8; 4]) -> &'a [u8] {
    let all = boxes::children(data, 0..data.len()).unwrap();
    let b = all.iter().find(|b| &b.fourcc == fourcc).unwrap();
    &data[b.start..b.end]
}

#[test]
fn a_recording_is_the_same_however_its_pieces_are_cut() {
    let (_, a, _) = splice(&[cut(FRAG_KEYFRAME, 1), cut(FRAG_KEYFRAME, 9)]);
    let (_, b, _) = splice(&[cut(FRAG_KEYFRAME, 65536), cut(FRAG_KEYFRAME, 3000)]);
    assert!(a == b);
}

#[test]
fn the_file_always_ends_at_a_whole_box_and_recovery_finds_the_same_file() {
    let (_, file, boundaries) = splice(&[cut(FRAG_KEYFRAME, 3000), cut(FRAG_KEYFRAME, 3000)]);
    assert_eq!(boundaries.last(), Some(&file.len()));
    for &end in &boundaries {
        // What a kill -9 can leave: whole boxes only.
        let left = &file[..end];
        let top = boxes::children(left, 0..left.len()).unwrap();
        assert!(top.iter().all(|b| b.end <= end));
        // Recovery splices the file again: the same bytes come out.
        let (again, out, _) = splice(&[cut(left, 4096)]);
        assert!(
            out == left,
            "recovery of the first {end} bytes changed them"
        );
        assert!(again.has_head());
    }
    // A file cut mid-fragment is recovered up to its last whole fragment.
    let mid = (boundaries[5] + boundaries[6]) / 2;
    let (_, out, _) = splice(&[cut(&file[..mid], 4096)]);
    assert!(out == file[..boundaries[5]]);
}

#[test]
fn other_tracks_are_incompatible_and_the_generation_comes_back_whole() {
    let mut splicer = Splicer::new();
    let mut pieces = Vec::new();
    splicer.begin(1);
    for frame in cut(FRAG_KEYFRAME, 4096) {
        splicer.push(frame, &mut pieces).unwrap();
    }
    splicer.end_generation(&mut pieces);
    splicer.begin(2);
    let mut result = Ok(());
    for frame in cut(PER_SAMPLE, 100) {
        result = splicer.push(frame, &mut pieces);
        if result.is_err() {
            break;
        }
    }
    let Err(SpliceError::Incompatible(why)) = result else {
        panic!("{result:?}");
    };
    assert_eq!(
        why,
        "the tracks changed from avc1.42c00c 160x120, mp4a 48000 Hz 2 ch to avc1.42c00b 160x120"
    );
    let (id, frames) = splicer.take_generation().unwrap();
    assert_eq!(id, 2);
    assert_eq!(frames.concat(), PER_SAMPLE[..frames.concat().len()]);
    assert_eq!(splicer.generations(), 1);
}

/// The fixture with the picture size (and only it) changed in its sample entry.
fn with_size(width: u16) -> Vec<u8> {
    let mut data = FRAG_KEYFRAME.to_vec();
    let at = data.windows(4).position(|w| w == b"avc1").unwrap();
    // avc1 body: 6 reserved, 2 index, 16 predefined, then width and height.
    let width_at = at + 4 + 24;
    assert_eq!(boxes::read(&data, width_at, 2), 160);
    data[width_at..width_at + 2].copy_from_slice(&width.to_be_bytes());
    data
}

#[test]
fn a_new_picture_size_or_timescale_is_incompatible_and_says_so() {
    let second = |data: &[u8]| {
        let mut splicer = Splicer::new();
        let mut pieces = Vec::new();
        for (g, data) in [FRAG_KEYFRAME, data].into_iter().enumerate() {
            splicer.begin(g as u64);
            for frame in cut(data, 1000) {
                splicer.push(frame, &mut pieces)?;
            }
            splicer.end_generation(&mut pieces);
        }
        Ok(())
    };
    assert_eq!(second(FRAG_KEYFRAME), Ok(()));
    assert_eq!(
        second(&with_size(176)),
        Err(SpliceError::Incompatible(
            "the tracks changed from avc1.42c00c 160x120, mp4a 48000 Hz 2 ch to avc1.42c00c 176x120, mp4a 48000 Hz 2 ch".into()
        ))
    );
    let mut rescaled = FRAG_KEYFRAME.to_vec();
    let movie = moov::parse(top_box_whole(FRAG_KEYFRAME, b"moov")).unwrap();
    let moov_at = FRAG_KEYFRAME.windows(4).position(|w| w == b"moov").unwrap() - 4;
    let timescale_at = moov_at + movie.tracks[0].mdhd_duration.at as usize - 4;
    assert_eq!(boxes::read(&rescaled, timescale_at, 4), 15360);
    boxes::write(&mut rescaled, timescale_at, 4, 90000);
    assert_eq!(
        second(&rescaled),
        Err(SpliceError::Incompatible(
            "the timescale of track 1 changed from 15360 to 90000".into()
        ))
    );
}

#[test]
fn what_is_not_mp4_cannot_be_recorded_and_a_broken_fragment_ends_its_generation() {
    let mut splicer = Splicer::new();
    splicer.begin(1);
    let result = splicer.push(
        Bytes::from_static(b"\x1a\x45\xdf\xa3 webm"),
        &mut Vec::new(),
    );
    assert!(
        matches!(result, Err(SpliceError::Unrecordable(_))),
        "{result:?}"
    );
    assert!(splicer.finish().is_none());

    // A moof whose trun claims more samples than it holds: the generation stops there,
    // what came before it stays.
    let (_, mdats) = fragments(FRAG_KEYFRAME);
    let mut broken = FRAG_KEYFRAME.to_vec();
    let trun = broken.windows(4).rposition(|w| w == b"trun").unwrap();
    boxes::write(&mut broken, trun + 8, 4, 1 << 30);
    let (splicer, file, _) = splice(&[cut(&broken, 4096)]);
    let (frags, _) = fragments(&file);
    assert_eq!(frags.len(), mdats.len() - 1);
    let mut splicer = splicer;
    assert!(splicer.take_notices()[0].contains("too short"));
}

/// Without `default_base_moof`, ffmpeg's tfhd says where its data is, absolutely.
const BASE_DATA_OFFSET: &[u8] = include_bytes!("testdata/ffmpeg-h264-base-data-offset.mp4");

/// Each fragment's `moof` offset and its first tfhd's explicit base data offset.
fn base_data_offsets(data: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for event in events(data) {
        if let Event::Fragment { range, .. } = event {
            let moof = &data[range.start as usize..range.end as usize];
            let fragment = moof::parse(moof, |_| 0).unwrap();
            let at = fragment.trafs[0].base_data_offset.expect("an explicit one");
            out.push((range.start, boxes::read(moof, at, 8)));
        }
    }
    out
}

#[test]
fn an_explicit_base_data_offset_moves_with_its_moof() {
    let input = base_data_offsets(BASE_DATA_OFFSET);
    assert!(input.len() >= 2 && input.iter().all(|(moof, base)| moof == base));
    let (splicer, file, _) = splice(&[cut(BASE_DATA_OFFSET, 3000), cut(BASE_DATA_OFFSET, 500)]);
    let output = base_data_offsets(&file);
    assert_eq!(output.len(), 2 * input.len());
    assert!(output.iter().all(|(moof, base)| moof == base), "{output:?}");
    assert!(splicer.duration_secs() > 3.9, "{}", splicer.duration_secs());
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever bytes a publisher garbles (sizes, flags, sample counts, decode
        /// times), the splicer never panics, and what it wrote is whole boxes that the
        /// scanner reads back, finished or not.
        #[test]
        fn garbled_generations_never_panic_and_leave_whole_boxes(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
            cut_size in 1usize..5000,
            second in any::<bool>(),
        ) {
            // The bytes worth garbling: the moov, and each moof and mdat header.
            let targets: Vec<usize> = events(FRAG_KEYFRAME)
                .into_iter()
                .flat_map(|e| match e {
                    Event::Movie { range, .. } | Event::Fragment { range, .. } => {
                        range.start as usize..range.end as usize
                    }
                    Event::MediaData { offset, .. } => offset as usize..offset as usize + 8,
                    _ => 0..0,
                })
                .collect();
            let mut garbled = FRAG_KEYFRAME.to_vec();
            for (at, value) in flips {
                garbled[*at.get(&targets)] = value;
            }
            let mut splicer = Splicer::new();
            let mut pieces = Vec::new();
            let generations: Vec<&[u8]> = if second {
                vec![FRAG_KEYFRAME, &garbled]
            } else {
                vec![&garbled, FRAG_KEYFRAME]
            };
            for (g, data) in generations.into_iter().enumerate() {
                splicer.begin(g as u64);
                for frame in cut(data, cut_size) {
                    if splicer.push(frame, &mut pieces).is_err() {
                        break;
                    }
                }
                if splicer.current().is_some() {
                    splicer.end_generation(&mut pieces);
                }
            }
            let mut file = Vec::new();
            let mut good = 0;
            for piece in pieces {
                file.extend_from_slice(&piece.bytes);
                if piece.boundary {
                    good = file.len();
                }
            }
            prop_assert_eq!(good, file.len(), "the output ends at a boundary");
            if splicer.has_head() {
                let file = finalize(&splicer, file);
                let mut events = Vec::new();
                prop_assert!(Scanner::new().push(&file, &mut events).is_ok());
                prop_assert!(splicer.duration_secs().is_finite());
            }
        }
    }
}

/// The fixture with every run of `track` starting `by` later (its tfdt moved).
fn track_later(track: u32, by: u64) -> Vec<u8> {
    let mut data = FRAG_KEYFRAME.to_vec();
    for event in events(FRAG_KEYFRAME) {
        if let Event::Fragment { tracks, .. } = event {
            for run in tracks.iter().filter(|t| t.track_id == track) {
                let (value, at, width) = run.base_decode_time.unwrap();
                boxes::write(&mut data, at as usize, width.into(), value + by);
            }
        }
    }
    data
}

#[test]
fn a_generation_keeps_its_tracks_offset_from_one_another() {
    // Generation 2's audio (track 2, 48 kHz) starts half a second after its video.
    let (splicer, file, _) =
        splice(&[cut(FRAG_KEYFRAME, 4096), cut(&track_later(2, 24_000), 4096)]);
    let (frags, _) = fragments(&file);
    let n = fragments(FRAG_KEYFRAME).0.len();
    let first = |track: u32| {
        frags[n..]
            .iter()
            .find_map(|f| f.1.iter().find(|t| t.0 == track).map(|t| t.1))
            .unwrap()
    };
    let scales = timescales(FRAG_KEYFRAME);
    let secs = |track: u32| first(track) as f64 / f64::from(scales[track as usize - 1].1);
    assert!(
        (secs(2) - secs(1) - 0.5).abs() < 0.001,
        "{} {}",
        secs(1),
        secs(2)
    );
    // And the generation starts where the first one ended.
    assert!((secs(1) - 3.0213).abs() < 0.01, "{}", secs(1));
    assert!(splicer.duration_secs() > 6.5);
}

#[test]
fn runs_without_a_tfdt_follow_on_where_their_track_ended() {
    // Every tfdt turned into a `free` box of the same size: only the runs' durations
    // say where they are.
    let mut untimed = FRAG_KEYFRAME.to_vec();
    for event in events(FRAG_KEYFRAME) {
        if let Event::Fragment { tracks, .. } = event {
            for run in &tracks {
                let (_, at, _) = run.base_decode_time.unwrap();
                // The value follows the box header (8) and version and flags (4).
                untimed[at as usize - 8..at as usize - 4].copy_from_slice(b"free");
            }
        }
    }
    let (mut splicer, file, _) = splice(&[
        cut(&untimed, 4096),
        cut(FRAG_KEYFRAME, 4096),
        cut(&untimed, 333),
    ]);
    assert!(splicer.take_notices().is_empty());
    let (frags, _) = fragments(&file);
    assert_eq!(frags.len(), 3 * fragments(FRAG_KEYFRAME).0.len());
    assert!(
        (splicer.duration_secs() - 3.0 * 3.0213).abs() < 0.05,
        "{}",
        splicer.duration_secs()
    );
    if let Some(path) = std::env::var_os("BLOBCAST_DUMP_UNTIMED") {
        std::fs::write(path, finalize(&splicer, file)).unwrap();
    }
}

#[test]
fn a_later_generation_whose_moov_cannot_be_read_is_left_out_and_the_file_goes_on() {
    // Its mvex renamed: not a fragmented MP4 any more.
    let mut unfragmented = FRAG_KEYFRAME.to_vec();
    let at = unfragmented.windows(4).position(|w| w == b"mvex").unwrap();
    unfragmented[at..at + 4].copy_from_slice(b"free");
    let mut splicer = Splicer::new();
    let mut pieces = Vec::new();
    for (g, data) in [FRAG_KEYFRAME, &unfragmented, FRAG_KEYFRAME]
        .into_iter()
        .enumerate()
    {
        splicer.begin(g as u64 + 1);
        for frame in cut(data, 4096) {
            splicer.push(frame, &mut pieces).unwrap();
        }
        splicer.end_generation(&mut pieces);
    }
    let notices = splicer.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("generation 2") && notices[0].contains("no mvex"),
        "{notices:?}"
    );
    assert!((splicer.duration_secs() - 2.0 * 3.0213).abs() < 0.05);
    // As the first generation of a file, it cannot be recorded at all.
    let mut splicer = Splicer::new();
    splicer.begin(1);
    let result = splicer.push(Bytes::from(unfragmented), &mut Vec::new());
    assert!(
        matches!(result, Err(SpliceError::Unrecordable(ref why)) if why.contains("no mvex")),
        "{result:?}"
    );
}

/// Bytes the open generation holds.
fn held(splicer: &Splicer) -> usize {
    let g = splicer.generation.as_ref().unwrap();
    g.frames.iter().map(|(_, b)| b.len()).sum()
}

#[test]
fn boxes_between_fragments_are_not_held_in_memory() {
    // 8 MiB of `free` box, and an mdat of no fragment, among the fixture's fragments.
    let first_moof = events(FRAG_KEYFRAME)
        .into_iter()
        .find_map(|e| match e {
            Event::Fragment { range, .. } => Some(range.start as usize),
            _ => None,
        })
        .unwrap();
    let mut padded = FRAG_KEYFRAME[..first_moof].to_vec();
    for fourcc in [b"free", b"mdat"] {
        let len = 8 << 20;
        padded.extend_from_slice(&(len as u32).to_be_bytes());
        padded.extend_from_slice(fourcc);
        padded.resize(padded.len() + len - 8, 0);
    }
    padded.extend_from_slice(&FRAG_KEYFRAME[first_moof..]);
    let mut splicer = Splicer::new();
    let mut pieces = Vec::new();
    splicer.begin(1);
    let mut most = 0;
    for frame in cut(&padded, 64 * 1024) {
        splicer.push(frame, &mut pieces).unwrap();
        most = most.max(held(&splicer));
    }
    assert!(
        most <= MOOF_LOOKBACK as usize + 64 * 1024,
        "held {most} bytes"
    );
    splicer.end_generation(&mut pieces);
    let file: Vec<u8> = pieces.iter().flat_map(|p| p.bytes.to_vec()).collect();
    assert_eq!(fragments(&file).0.len(), fragments(FRAG_KEYFRAME).0.len());
    assert!(
        file.len() < FRAG_KEYFRAME.len() + 100,
        "the padding is dropped"
    );
}
