//! The few EBML pieces a recording writes and rereads itself: element headers with
//! fixed-width sizes (so they can be patched in place), typed small elements, and a
//! header reader for elements already in memory.

/// Element IDs the recording writes or looks for (with their length markers).
pub mod id {
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DATE_UTC: u32 = 0x4461;
    pub const DURATION: u32 = 0x4489;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
    pub const VOID: u32 = 0xEC;
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const TAGS: u32 = 0x1254_C367;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const ATTACHMENTS: u32 = 0x1941_A469;

    /// Children of the Segment other than Cluster: a generation's own copies are dropped.
    pub fn is_level1_not_cluster(id: u32) -> bool {
        matches!(
            id,
            SEEK_HEAD | INFO | TRACKS | CUES | TAGS | CHAPTERS | ATTACHMENTS
        )
    }
}

/// An 8-byte size vint saying "unknown", patched once the size is known.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// `size` as an 8-byte vint, whatever its value (below 2^56 - 1).
pub fn size8(size: u64) -> [u8; 8] {
    debug_assert!(size < (1 << 56) - 1);
    let mut out = size.to_be_bytes();
    out[0] = 0x01;
    out
}

/// `size` in the shortest vint (never the reserved all-ones value).
pub fn size_vint(size: u64, out: &mut Vec<u8>) {
    let len = (1..=8u32)
        .find(|&n| size < (1u64 << (7 * n)) - 1)
        .expect("sizes below 2^56 - 1");
    let marked = size | 1u64 << (7 * len);
    out.extend_from_slice(&marked.to_be_bytes()[8 - len as usize..]);
}

pub fn put_id(id: u32, out: &mut Vec<u8>) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().position(|&b| b != 0).unwrap_or(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// An element with a known body.
pub fn element(id: u32, body: &[u8], out: &mut Vec<u8>) {
    put_id(id, out);
    size_vint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// An unsigned integer in 8 bytes, so that it can be rewritten in place.
pub fn uint8(id: u32, value: u64, out: &mut Vec<u8>) {
    element(id, &value.to_be_bytes(), out);
}

pub fn float8(id: u32, value: f64, out: &mut Vec<u8>) {
    element(id, &value.to_be_bytes(), out);
}

/// A Void element of exactly `total` bytes (at least 2), header included.
pub fn void(total: usize, out: &mut Vec<u8>) {
    assert!(total >= 2, "a Void takes at least 2 bytes");
    put_id(id::VOID, out);
    if total - 2 < 127 {
        size_vint((total - 2) as u64, out);
        out.resize(out.len() + total - 2, 0);
    } else {
        assert!(total >= 9);
        out.extend_from_slice(&size8((total - 9) as u64));
        out.resize(out.len() + total - 9, 0);
    }
}

/// An element header read from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u32,
    /// `None`: unknown size.
    pub size: Option<u64>,
    pub len: usize,
}

/// Reads the element header at the start of `buf`: `None` if `buf` holds too little of
/// it, `Some(Err)` if it is not a valid header.
pub fn read_header(buf: &[u8]) -> Option<Result<Header, ()>> {
    let first = *buf.first()?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return Some(Err(()));
    }
    let id_bytes = buf.get(..id_len)?;
    let id = id_bytes
        .iter()
        .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
    let size_first = *buf.get(id_len)?;
    let size_len = size_first.leading_zeros() as usize + 1;
    if size_len > 8 {
        return Some(Err(()));
    }
    let size_bytes = buf.get(id_len..id_len + size_len)?;
    let raw = size_bytes
        .iter()
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
    let mask = (1u64 << (7 * size_len)) - 1;
    let value = raw & mask;
    Some(Ok(Header {
        id,
        size: (value != mask).then_some(value),
        len: id_len + size_len,
    }))
}

/// The children of an in-memory master body, as (id, whole element bytes). Stops at the
/// first malformed or truncated child.
pub fn children(mut body: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        let header = read_header(body)?.ok()?;
        let end = header
            .len
            .checked_add(usize::try_from(header.size?).ok()?)?;
        let element = body.get(..end)?;
        body = &body[end..];
        Some((header.id, element))
    })
}

/// What identifies a Tracks element for splicing: every byte of it except the
/// TrackUIDs, which Chrome draws afresh on every recorder restart.
pub fn tracks_fingerprint(tracks: &[u8]) -> Vec<u8> {
    let Some(Ok(header)) = read_header(tracks) else {
        return tracks.to_vec();
    };
    let mut out = Vec::with_capacity(tracks.len());
    for (child_id, entry) in children(&tracks[header.len..]) {
        if child_id != id::TRACK_ENTRY {
            out.extend_from_slice(entry);
            continue;
        }
        let Some(Ok(entry_header)) = read_header(entry) else {
            continue;
        };
        put_id(child_id, &mut out);
        for (field, bytes) in children(&entry[entry_header.len..]) {
            if field != id::TRACK_UID {
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vints_and_headers_round_trip() {
        for size in [0u64, 1, 126, 127, 16_382, 16_383, 1 << 30, (1 << 56) - 2] {
            let mut out = Vec::new();
            put_id(id::CLUSTER, &mut out);
            size_vint(size, &mut out);
            let h = read_header(&out).unwrap().unwrap();
            assert_eq!((h.id, h.size, h.len), (id::CLUSTER, Some(size), out.len()));
        }
        let mut out = Vec::new();
        put_id(id::SEGMENT, &mut out);
        out.extend_from_slice(&UNKNOWN_SIZE);
        assert_eq!(read_header(&out).unwrap().unwrap().size, None);
        out.truncate(4);
        out.extend_from_slice(&size8(12345));
        assert_eq!(read_header(&out).unwrap().unwrap().size, Some(12345));
        assert_eq!(read_header(&out[..5]), None);
        assert_eq!(read_header(&[0x00, 0x81]), Some(Err(())));
    }

    #[test]
    fn voids_have_the_exact_length() {
        for total in [2, 11, 128, 129, 200, 5000] {
            let mut out = Vec::new();
            void(total, &mut out);
            assert_eq!(out.len(), total);
            let h = read_header(&out).unwrap().unwrap();
            assert_eq!(h.len as u64 + h.size.unwrap(), total as u64);
        }
    }

    #[test]
    fn the_fingerprint_ignores_track_uids_only() {
        let entry = |uid: u64, width: u8| {
            let mut body = Vec::new();
            element(0xD7, &[1], &mut body);
            element(id::TRACK_UID, &uid.to_be_bytes(), &mut body);
            element(0x86, b"V_VP8", &mut body);
            element(0xE0, &[0xB0, 0x81, width], &mut body);
            let mut out = Vec::new();
            element(id::TRACK_ENTRY, &body, &mut out);
            let mut tracks = Vec::new();
            element(id::TRACKS, &out, &mut tracks);
            tracks
        };
        assert_eq!(
            tracks_fingerprint(&entry(1, 64)),
            tracks_fingerprint(&entry(99, 64))
        );
        assert_ne!(
            tracks_fingerprint(&entry(1, 64)),
            tracks_fingerprint(&entry(1, 65))
        );
    }
}
