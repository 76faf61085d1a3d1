use super::*;
use proptest::prelude::*;

const FRAG_KEYFRAME: &[u8] = include_bytes!("testdata/ffmpeg-h264-aac-frag-keyframe.mp4");
const EVERY_FRAME: &[u8] = include_bytes!("testdata/ffmpeg-h264-opus-every-frame.mp4");
/// Chromium's own MediaRecorder output (`video/mp4;codecs=avc1.42E01E,opus`), made by
/// integration/fixtures/record-chrome-fixture.mjs (`mp4`).
const CHROME: &[u8] = include_bytes!("../../integration/fixtures/chrome-avc1-opus.mp4");
const PER_SAMPLE: &[u8] = include_bytes!("testdata/ffmpeg-h264-per-sample-flags.mp4");

fn scan(data: &[u8], cuts: &[usize]) -> (Vec<Event>, Result<(), Mp4Error>) {
    let mut scanner = Scanner::new();
    let mut events = Vec::new();
    let mut start = 0;
    let mut result = Ok(());
    for &cut in cuts.iter().chain([&data.len()]) {
        let cut = cut.clamp(start, data.len());
        result = scanner.push(&data[start..cut], &mut events);
        if result.is_err() {
            break;
        }
        start = cut;
    }
    (events, result)
}

/// A box of `fourcc` around `body`.
pub(crate) fn mp4_box(fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
    [&((body.len() + 8) as u32).to_be_bytes()[..], fourcc, body].concat()
}

fn full(fourcc: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let word = ((version as u32) << 24) | flags;
    mp4_box(fourcc, &[&word.to_be_bytes()[..], body].concat())
}

/// ftyp + a moov with one video track (id 1, `trex` flags `trex_flags`) and one audio.
pub(crate) fn init(trex_flags: u32) -> Vec<u8> {
    let video_entry = mp4_box(
        b"avc1",
        &[
            &[0u8; 24][..],
            &320u16.to_be_bytes(),
            &240u16.to_be_bytes(),
            &[0u8; 50],
            &mp4_box(b"avcC", &[1, 0x42, 0xC0, 0x1E]),
        ]
        .concat(),
    );
    let audio_entry = mp4_box(
        b"Opus",
        &[
            &[0u8; 8][..],
            &[0u8; 8],
            &2u16.to_be_bytes(),
            &16u16.to_be_bytes(),
            &[0u8; 4],
            &(48000u32 << 16).to_be_bytes(),
        ]
        .concat(),
    );
    let trak = |id: u32, handler: &[u8; 4], entry: &[u8]| {
        let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes()[..], entry].concat());
        mp4_box(
            b"trak",
            &[
                full(b"tkhd", 0, 3, &[&[0u8; 8][..], &id.to_be_bytes()].concat()),
                mp4_box(
                    b"mdia",
                    &[
                        full(
                            b"mdhd",
                            0,
                            0,
                            &[&[0u8; 8][..], &90000u32.to_be_bytes()].concat(),
                        ),
                        full(b"hdlr", 0, 0, &[&[0u8; 4][..], handler].concat()),
                        mp4_box(b"minf", &mp4_box(b"stbl", &stsd)),
                    ]
                    .concat(),
                ),
            ]
            .concat(),
        )
    };
    let trex = |id: u32, flags: u32| {
        full(
            b"trex",
            0,
            0,
            &[id, 1, 0, 0, flags]
                .iter()
                .flat_map(|w| w.to_be_bytes())
                .collect::<Vec<u8>>(),
        )
    };
    [
        mp4_box(b"ftyp", b"iso5\0\0\0\x01iso5"),
        mp4_box(
            b"moov",
            &[
                trak(1, b"vide", &video_entry),
                trak(2, b"soun", &audio_entry),
                mp4_box(b"mvex", &[trex(1, trex_flags), trex(2, 0)].concat()),
            ]
            .concat(),
        ),
    ]
    .concat()
}

/// A moof with one traf for `track` whose trun has `trun_flags` and the given words
/// (after sample_count), then its mdat.
pub(crate) fn fragment(
    seq: u32,
    track: u32,
    tfhd: &[u32],
    trun_flags: u32,
    trun: &[u32],
) -> Vec<u8> {
    let tfhd_flags = if tfhd.is_empty() { 0x020000 } else { 0x020020 };
    let words = |w: &[u32]| w.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
    let samples = 1u32;
    [
        mp4_box(
            b"moof",
            &[
                full(b"mfhd", 0, 0, &seq.to_be_bytes()),
                mp4_box(
                    b"traf",
                    &[
                        full(
                            b"tfhd",
                            0,
                            tfhd_flags,
                            &words(&[&[track][..], tfhd].concat()),
                        ),
                        full(b"tfdt", 1, 0, &(seq as u64 * 3000).to_be_bytes()),
                        full(
                            b"trun",
                            0,
                            trun_flags,
                            &words(&[&[samples][..], trun].concat()),
                        ),
                    ]
                    .concat(),
                ),
            ]
            .concat(),
        ),
        mp4_box(b"mdat", &[0xAB; 40]),
    ]
    .concat()
}

const SYNC: u32 = 0x0200_0000;
const NON_SYNC_FLAGS: u32 = 0x0101_0000;

fn fragments(events: &[Event]) -> Vec<(u64, Option<bool>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { range, tracks, .. } => tracks
                .iter()
                .find(|t| t.track_id == 1)
                .map(|t| (range.start, t.first_sample_sync)),
            _ => None,
        })
        .collect()
}

#[test]
fn sniff_tells_mp4_from_webm() {
    assert_eq!(sniff(FRAG_KEYFRAME), Sniff::Mp4);
    assert_eq!(sniff(b"\0\0\0\x20ft"), Sniff::NeedMore);
    assert_eq!(sniff(b"\0\0"), Sniff::NeedMore);
    assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]), Sniff::NotMp4);
    assert_eq!(sniff(b"\0\0\0\x04ftyp"), Sniff::NotMp4);
}

#[test]
fn the_ffmpeg_frag_keyframe_file_has_init_tracks_and_sync_led_fragments() {
    let (events, result) = scan(FRAG_KEYFRAME, &[]);
    assert_eq!(result, Ok(()));
    let init = events
        .iter()
        .find_map(|e| match e {
            Event::InitSegment { range } => Some(range.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(init.start, 0);
    let tracks = events
        .iter()
        .find_map(|e| match e {
            Event::Movie { tracks, .. } => Some(tracks.clone()),
            _ => None,
        })
        .unwrap();
    let video = tracks.iter().find(|t| t.kind == TrackKind::Video).unwrap();
    assert!(video.codec.starts_with("avc1."), "{video:?}");
    assert_eq!((video.width, video.height), (160, 120));
    let audio = tracks.iter().find(|t| t.kind == TrackKind::Audio).unwrap();
    assert_eq!(audio.codec, "mp4a");
    // The sample entry's channel count (ffmpeg writes 2 there for AAC; the esds knows better).
    assert_eq!((audio.sample_rate, audio.channels), (48000, 2));
    // frag_keyframe: every fragment opens on a keyframe; 3 s at a GOP of 1 s.
    let frags: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { range, tracks, .. } => Some((range.start, tracks.clone())),
            _ => None,
        })
        .collect();
    assert!(frags.len() >= 3, "{}", frags.len());
    for (offset, tracks) in &frags {
        assert_eq!(
            &FRAG_KEYFRAME[*offset as usize + 4..*offset as usize + 8],
            b"moof"
        );
        let v = tracks.iter().find(|t| t.track_id == video.id);
        if let Some(v) = v {
            assert_eq!(v.first_sample_sync, Some(true), "fragment at {offset}");
        }
    }
    assert!(init.end <= frags[0].0);
}

#[test]
fn chromes_mediarecorder_mp4_has_its_tracks_and_keyframe_led_fragments_every_second() {
    let (events, result) = scan(CHROME, &[]);
    assert_eq!(result, Ok(()));
    let tracks = events
        .iter()
        .find_map(|e| match e {
            Event::Movie { tracks, .. } => Some(tracks.clone()),
            _ => None,
        })
        .unwrap();
    let video = tracks.iter().find(|t| t.kind == TrackKind::Video).unwrap();
    assert!(video.codec.starts_with("avc1.42"), "{video:?}");
    assert_eq!((video.width, video.height), (192, 144));
    let audio = tracks.iter().find(|t| t.kind == TrackKind::Audio).unwrap();
    assert_eq!((audio.codec.as_str(), audio.sample_rate), ("Opus", 48000));
    let sync: Vec<Option<bool>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { tracks, .. } => tracks
                .iter()
                .find(|t| t.track_id == video.id)
                .map(|t| t.first_sample_sync),
            _ => None,
        })
        .collect();
    // 6 s with a keyframe every second: a sync-led fragment at least every second.
    let led = sync.iter().filter(|s| **s == Some(true)).count();
    assert!(led >= 5, "{sync:?}");
}

#[test]
fn the_every_frame_file_has_sync_and_non_sync_fragments() {
    let (events, result) = scan(EVERY_FRAME, &[]);
    assert_eq!(result, Ok(()));
    let tracks = events
        .iter()
        .find_map(|e| match e {
            Event::Movie { tracks, .. } => Some(tracks.clone()),
            _ => None,
        })
        .unwrap();
    let video = tracks.iter().find(|t| t.kind == TrackKind::Video).unwrap();
    let opus = tracks.iter().find(|t| t.kind == TrackKind::Audio).unwrap();
    assert_eq!(opus.codec, "Opus");
    assert_eq!(opus.sample_rate, 48000);
    let sync: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { tracks, .. } => tracks
                .iter()
                .find(|t| t.track_id == video.id)
                .and_then(|t| t.first_sample_sync),
            _ => None,
        })
        .collect();
    // 2 s at 15 fps, a keyframe every 10 frames: 3 sync fragments of 30.
    assert_eq!(sync.len(), 30, "{sync:?}");
    assert_eq!(sync.iter().filter(|s| **s).count(), 3, "{sync:?}");
    assert!(sync[0] && sync[10] && sync[20]);
}

#[test]
fn per_sample_flags_alone_say_which_fragments_are_sync_led() {
    // 15-frame fragments, a keyframe every 7 frames: only the first fragment opens on one.
    let (events, result) = scan(PER_SAMPLE, &[]);
    assert_eq!(result, Ok(()));
    let sync: Vec<_> = fragments(&events).into_iter().map(|f| f.1).collect();
    assert_eq!(sync, [Some(true), Some(false), Some(false)]);
}

#[test]
fn sync_flags_come_from_trun_first_then_per_sample_then_tfhd_then_trex() {
    let data = [
        init(NON_SYNC_FLAGS),
        // trun first_sample_flags (0x4) says sync, whatever the defaults.
        fragment(1, 1, &[NON_SYNC_FLAGS], 0x004, &[SYNC]),
        // Per-sample flags (0x400) with duration and size before them.
        fragment(2, 1, &[SYNC], 0x700, &[1000, 40, NON_SYNC_FLAGS]),
        fragment(3, 1, &[NON_SYNC_FLAGS], 0x700, &[1000, 40, SYNC]),
        // No trun flags: tfhd default_sample_flags.
        fragment(4, 1, &[SYNC], 0x000, &[]),
        fragment(5, 1, &[NON_SYNC_FLAGS], 0x000, &[]),
        // Neither: trex (non-sync here).
        fragment(6, 1, &[], 0x000, &[]),
    ]
    .concat();
    let (events, result) = scan(&data, &[]);
    assert_eq!(result, Ok(()));
    let sync: Vec<_> = fragments(&events).into_iter().map(|f| f.1).collect();
    assert_eq!(
        sync,
        [
            Some(true),
            Some(false),
            Some(true),
            Some(true),
            Some(false),
            Some(false)
        ]
    );
    // trex saying sync makes the last one sync.
    let data = [init(SYNC), fragment(1, 1, &[], 0, &[])].concat();
    assert_eq!(fragments(&scan(&data, &[]).0)[0].1, Some(true));
}

#[test]
fn untrusted_boxes_are_errors_and_unknown_ones_are_skipped() {
    let ok = init(SYNC);
    // Not an ftyp first.
    assert_eq!(
        scan(b"\0\0\0\x10moov\0\0\0\0\0\0\0\0", &[]).1,
        Err(Mp4Error::NotMp4)
    );
    // A top-level box smaller than its header.
    let data = [&ok[..], b"\0\0\0\x04free"].concat();
    assert!(matches!(scan(&data, &[]).1, Err(Mp4Error::TooSmall { .. })));
    // A non-printable type.
    let data = [&ok[..], b"\0\0\0\x08\x01\x02\x03\x04"].concat();
    assert!(matches!(
        scan(&data, &[]).1,
        Err(Mp4Error::InvalidType { .. })
    ));
    // A child that overflows its parent.
    let data = [&ok[..], &mp4_box(b"moof", b"\0\0\0\x40mfhd\0\0\0\0")].concat();
    assert!(matches!(
        scan(&data, &[]).1,
        Err(Mp4Error::OverflowsParent { .. })
    ));
    // A moov too large to buffer.
    let data = [&ok[..], b"\x7f\0\0\0moov"].concat();
    assert!(matches!(scan(&data, &[]).1, Err(Mp4Error::TooLarge { .. })));
    // Size 0 ("to the end") on anything but mdat.
    let data = [&ok[..], b"\0\0\0\0moof"].concat();
    assert!(matches!(
        scan(&data, &[]).1,
        Err(Mp4Error::UnknownSize { .. })
    ));
    // 64-bit sizes that overflow the stream offset.
    let data = [&ok[..], b"\0\0\0\x01free\xff\xff\xff\xff\xff\xff\xff\xff"].concat();
    assert_eq!(scan(&data, &[]).1, Err(Mp4Error::Overflow));
    // A trun cut short.
    let data = [
        &ok[..],
        &mp4_box(
            b"moof",
            &mp4_box(b"traf", &full(b"trun", 0, 0x4, &[0, 0, 0, 1])),
        ),
    ]
    .concat();
    assert!(matches!(
        scan(&data, &[]).1,
        Err(Mp4Error::Malformed { .. })
    ));
    // Too deep: a depth limit below the real nesting.
    let mut scanner = Scanner::with_limits(Limits {
        max_depth: 3,
        ..Limits::default()
    });
    let got = scanner.push(FRAG_KEYFRAME, &mut Vec::new());
    assert!(matches!(got, Err(Mp4Error::TooDeep { .. })), "{got:?}");
    // After an error, the scanner stays errored.
    assert!(scanner.push(b"more", &mut Vec::new()).is_err());
    // Unknown boxes (top level and inside moof) are skipped; 64-bit sizes are read.
    let data = [
        ok.clone(),
        mp4_box(b"uuid", &[7; 30]),
        [
            &1u32.to_be_bytes()[..],
            b"free",
            &24u64.to_be_bytes(),
            &[0; 8],
        ]
        .concat(),
        fragment(1, 1, &[SYNC], 0, &[]),
    ]
    .concat();
    let (events, result) = scan(&data, &[]);
    assert_eq!(result, Ok(()));
    let last = data.len() - fragment(1, 1, &[SYNC], 0, &[]).len();
    assert_eq!(fragments(&events), [(last as u64, Some(true))]);
}

#[test]
fn a_trailing_mdat_of_size_zero_runs_to_the_end() {
    let data = [init(SYNC), b"\0\0\0\0mdat".to_vec(), vec![0; 100]].concat();
    let (events, result) = scan(&data, &[10, 500]);
    assert_eq!(result, Ok(()));
    assert!(matches!(
        events.last(),
        Some(Event::MediaData { end: None, .. })
    ));
}

#[test]
fn memory_is_bounded_by_the_largest_buffered_box() {
    let mut scanner = Scanner::new();
    let mut events = Vec::new();
    scanner.push(&init(SYNC), &mut events).unwrap();
    // A huge mdat fed in pieces is counted past, never held.
    let mdat_size = 64u32 << 20;
    scanner
        .push(
            &[&mdat_size.to_be_bytes()[..], b"mdat"].concat(),
            &mut events,
        )
        .unwrap();
    let piece = vec![0u8; 1 << 20];
    for _ in 0..63 {
        scanner.push(&piece, &mut events).unwrap();
    }
    assert!(scanner.held() <= 16 * 1024 + 16, "{}", scanner.held());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_events_do_not_depend_on_the_cuts(
        which in 0usize..5,
        mut cuts in proptest::collection::vec(0usize..150_000, 0..12),
    ) {
        let hand = [
            init(NON_SYNC_FLAGS),
            fragment(1, 1, &[NON_SYNC_FLAGS], 0x004, &[SYNC]),
            fragment(2, 1, &[SYNC], 0x700, &[1000, 40, NON_SYNC_FLAGS]),
            b"\0\0\0\x10junk\0\0\0\0\0\0\0\0".to_vec(),
        ]
        .concat();
        let data: &[u8] = match which {
            0 => FRAG_KEYFRAME,
            1 => EVERY_FRAME,
            2 => PER_SAMPLE,
            3 => CHROME,
            _ => &hand,
        };
        cuts.sort();
        let whole = scan(data, &[]);
        prop_assert_eq!(scan(data, &cuts), whole);
    }

    #[test]
    fn bytewise_and_random_garbage_never_panic_and_agree(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cut in 0usize..300,
    ) {
        let data = [&init(SYNC)[..], &bytes].concat();
        let whole = scan(&data, &[]);
        let cuts: Vec<usize> = (0..data.len()).collect();
        prop_assert_eq!(scan(&data, &cuts), whole.clone());
        prop_assert_eq!(scan(&data, &[init(SYNC).len() + cut]), whole);
    }
}

fn fragment_starts(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { range, .. } => Some(range.start),
            _ => None,
        })
        .collect()
}

#[test]
fn a_scanner_resynced_at_a_later_fragment_reports_what_a_whole_scan_reports_from_there() {
    for file in [FRAG_KEYFRAME, CHROME] {
        let (whole, result) = scan(file, &[]);
        result.unwrap();
        let starts = fragment_starts(&whole);
        assert!(starts.len() > 2, "{starts:?}");
        let at = starts[starts.len() / 2];
        let mut scanner = Scanner::new();
        let mut events = Vec::new();
        // The init segment and half of the first fragment's header.
        scanner
            .push(&file[..starts[0] as usize + 10], &mut events)
            .unwrap();
        assert!(!scanner.resync(starts[0]), "behind what it has read");
        assert!(scanner.resync(at));
        let before = events.len();
        for piece in file[at as usize..].chunks(1000) {
            scanner.push(piece, &mut events).unwrap();
        }
        let from_there = |e: &&Event| match e {
            Event::Fragment { range, .. } => range.start >= at,
            Event::MediaData { offset, .. } => *offset >= at,
            _ => false,
        };
        let expected: Vec<&Event> = whole.iter().filter(from_there).collect();
        assert_eq!(events[before..].iter().collect::<Vec<_>>(), expected);
    }
}

#[test]
fn a_scanner_refuses_to_resync_before_its_moov() {
    let (whole, _) = scan(FRAG_KEYFRAME, &[]);
    let at = fragment_starts(&whole)[1];
    let mut scanner = Scanner::new();
    scanner.push(&FRAG_KEYFRAME[..30], &mut Vec::new()).unwrap();
    assert!(!scanner.resync(at));
    assert_eq!(scanner.position(), 30);
}
