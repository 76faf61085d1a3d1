//! Test-only builders that write tiny EBML/WebM byte vectors, so tests can state the exact
//! structure they feed the scanner (known or unknown sizes, odd layouts, hostile bytes),
//! and a heap meter, so they can bound what feeding it costs.

use super::ebml::id;
use super::{Event, Scanner, WebmError};

pub const UNKNOWN: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
pub const VOID: u32 = 0xEC;
pub const CRC32: u32 = 0xBF;
pub const BLOCK_ADDITIONS: u32 = 0x75A1;
pub const BLOCK_MORE: u32 = 0xA6;
pub const BLOCK_ADD_ID: u32 = 0xEE;
pub const BLOCK_ADDITIONAL: u32 = 0xA5;
pub const BLOCK_DURATION: u32 = 0x9B;

/// The shortest size vint for `n` (never the all-ones "unknown" pattern).
pub fn size_vint(n: u64) -> Vec<u8> {
    let len = (1..=8)
        .find(|&l| n < (1u64 << (7 * l)) - 1)
        .expect("size fits");
    let marked = n | 1u64 << (7 * len);
    marked.to_be_bytes()[8 - len..].to_vec()
}

pub fn id_bytes(id: u32) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().position(|&b| b != 0).unwrap_or(3);
    bytes[skip..].to_vec()
}

pub fn el(id: u32, body: &[u8]) -> Vec<u8> {
    [id_bytes(id), size_vint(body.len() as u64), body.to_vec()].concat()
}

pub fn el_unknown(id: u32, body: &[u8]) -> Vec<u8> {
    [id_bytes(id), UNKNOWN.to_vec(), body.to_vec()].concat()
}

/// A sized or unknown-size element, chosen by `unknown`.
pub fn el_maybe_unknown(id: u32, unknown: bool, body: &[u8]) -> Vec<u8> {
    if unknown {
        el_unknown(id, body)
    } else {
        el(id, body)
    }
}

pub fn uint(id: u32, v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    el(id, &bytes[skip..])
}

pub fn float(id: u32, v: f64) -> Vec<u8> {
    el(id, &v.to_be_bytes())
}

pub fn string(id: u32, s: &str) -> Vec<u8> {
    el(id, s.as_bytes())
}

pub fn ebml_header(doc_type: &str) -> Vec<u8> {
    el(
        id::EBML,
        &[
            uint(0x4286, 1),
            uint(0x42F7, 1),
            uint(0x42F2, 4),
            uint(0x42F3, 8),
            string(id::DOC_TYPE, doc_type),
            uint(0x4287, 4),
            uint(0x4285, 2),
        ]
        .concat(),
    )
}

pub fn info_body(scale: u64, duration: Option<f64>) -> Vec<u8> {
    let mut body = uint(id::TIMECODE_SCALE, scale);
    body.extend(string(0x4D80, "test-muxer"));
    if let Some(d) = duration {
        body.extend(float(id::DURATION, d));
    }
    body
}

pub fn info(scale: u64, duration: Option<f64>) -> Vec<u8> {
    el(id::INFO, &info_body(scale, duration))
}

pub fn video_track(number: u64, uid: u64, codec: &str, w: u64, h: u64) -> Vec<u8> {
    el(
        id::TRACK_ENTRY,
        &[
            uint(id::TRACK_NUMBER, number),
            uint(id::TRACK_UID, uid),
            uint(id::TRACK_TYPE, 1),
            string(id::CODEC_ID, codec),
            el(
                id::VIDEO,
                &[uint(id::PIXEL_WIDTH, w), uint(id::PIXEL_HEIGHT, h)].concat(),
            ),
        ]
        .concat(),
    )
}

pub fn audio_track(number: u64, uid: u64, codec: &str, rate: f64, channels: u64) -> Vec<u8> {
    el(
        id::TRACK_ENTRY,
        &[
            uint(id::TRACK_NUMBER, number),
            uint(id::TRACK_UID, uid),
            uint(id::TRACK_TYPE, 2),
            string(id::CODEC_ID, codec),
            // CodecPrivate, as Opus has.
            el(0x63A2, b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0"),
            el(
                id::AUDIO,
                &[
                    float(id::SAMPLING_FREQUENCY, rate),
                    uint(id::CHANNELS, channels),
                ]
                .concat(),
            ),
        ]
        .concat(),
    )
}

/// Tracks for a VP8 video track 1 (320x240) and an Opus audio track 2 (48 kHz stereo).
pub fn vp8_opus_tracks() -> Vec<u8> {
    el(
        id::TRACKS,
        &[
            video_track(1, 11, "V_VP8", 320, 240),
            audio_track(2, 22, "A_OPUS", 48000.0, 2),
        ]
        .concat(),
    )
}

/// Payload bytes that look like anything, including element IDs, so a scanner that
/// peeked into payloads would be caught.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| [0x1F, 0x43, 0xB6, 0x75, 0x1A, 0x45, 0xDF, 0xA3, 0x00, 0xFF][i % 10])
        .collect()
}

fn block_body(track: u64, tc: i16, flags: u8, payload_len: usize) -> Vec<u8> {
    [
        size_vint(track),
        tc.to_be_bytes().to_vec(),
        vec![flags],
        payload(payload_len),
    ]
    .concat()
}

pub fn simple_block(track: u64, tc: i16, key: bool, payload_len: usize) -> Vec<u8> {
    let flags = if key { 0x80 } else { 0 };
    el(id::SIMPLE_BLOCK, &block_body(track, tc, flags, payload_len))
}

/// The smallest elements the scanner reports, packed: an empty Cluster, an unknown-size
/// Cluster, then 100 6-byte SimpleBlocks of two tracks. Repeated to 16 MiB it is the
/// hostile frame that memory bounds are tested with.
pub fn tiny_clusters_and_blocks() -> Vec<u8> {
    let mut unit = el(id::CLUSTER, &[]);
    unit.extend(el_unknown(id::CLUSTER, &[]));
    for i in 0..100 {
        unit.extend(simple_block(1 + i % 2, 0, i % 3 == 0, 0));
    }
    unit
}

/// A BlockGroup; `reference` adds a ReferenceBlock (so not a keyframe), `additions` adds
/// BlockAdditions as a source with alpha has.
pub fn block_group(
    track: u64,
    tc: i16,
    reference: Option<i64>,
    additions: bool,
    payload_len: usize,
) -> Vec<u8> {
    let mut body = el(id::BLOCK, &block_body(track, tc, 0, payload_len));
    if additions {
        body.extend(el(
            BLOCK_ADDITIONS,
            &el(
                BLOCK_MORE,
                &[uint(BLOCK_ADD_ID, 1), el(BLOCK_ADDITIONAL, &payload(9))].concat(),
            ),
        ));
    }
    body.extend(uint(BLOCK_DURATION, 20));
    if let Some(r) = reference {
        body.extend(el(id::REFERENCE_BLOCK, &r.to_be_bytes()[6..]));
    }
    el(id::BLOCK_GROUP, &body)
}

pub fn timecode(tc: u64) -> Vec<u8> {
    uint(id::TIMECODE, tc)
}

/// Feeds `data` cut at `cuts` (sorted offsets) and returns everything it said.
pub fn scan_cut(data: &[u8], cuts: &[usize]) -> (Vec<Event>, Option<WebmError>) {
    let mut scanner = Scanner::new();
    let mut events = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(start, data.len());
        if let Err(e) = scanner.push(&data[start..cut], &mut events) {
            return (events, Some(e));
        }
        start = cut;
    }
    assert_eq!(scanner.position(), data.len() as u64);
    (events, None)
}

pub fn scan(data: &[u8]) -> (Vec<Event>, Option<WebmError>) {
    scan_cut(data, &[])
}

/// Scans a stream that must be valid.
pub fn events(data: &[u8]) -> Vec<Event> {
    let (events, err) = scan(data);
    assert_eq!(err, None, "events so far: {events:#?}");
    events
}

/// Heap bytes a closure used on its own thread: the most held at once beyond what the
/// thread held before, and what was still held after.
#[derive(Debug, Clone, Copy)]
pub struct HeapUse {
    pub peak: usize,
    pub retained: isize,
}

/// Runs `f` and measures its heap use. Counts are per thread (each test runs on its
/// own), so tests running alongside do not disturb the figure.
pub fn heap_use<T>(f: impl FnOnce() -> T) -> (T, HeapUse) {
    let before = heap::LIVE.with(|l| l.get());
    heap::PEAK.with(|p| p.set(before));
    let result = f();
    let after = heap::LIVE.with(|l| l.get());
    let peak = heap::PEAK.with(|p| p.get());
    let used = HeapUse {
        peak: (peak - before).max(0) as usize,
        retained: after - before,
    };
    (result, used)
}

/// The test binary's allocator: the system's, counting live bytes per thread.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        // Const-initialized and without destructors: using them never allocates, so
        // the allocator may.
        pub static LIVE: Cell<isize> = const { Cell::new(0) };
        pub static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn count(delta: isize) {
        // `try_with`: a thread being torn down still frees memory.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    struct Counting;

    // SAFETY: every call is forwarded to `System` unchanged; counting touches only
    // thread-locals that never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc_zeroed(layout);
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            System.dealloc(p, layout);
            count(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let q = System.realloc(p, layout, new_size);
            if !q.is_null() {
                count(new_size as isize - layout.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}
