//! The few EBML pieces a recording writes: element headers with fixed-width sizes (so
//! they can be patched in place) and typed small elements. Element IDs and reading are
//! the WebM scanner's (`crate::webm::ebml`).

use crate::webm::ebml::{children, id, parse_header, Child};

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

/// The children of an in-memory master body, each with its whole bytes (header
/// included). Stops at the first malformed or truncated child.
fn elements(body: &[u8]) -> impl Iterator<Item = (Child<'_>, &[u8])> {
    children(body, 0).map_while(Result::ok).map(move |child| {
        // Offsets are relative to `body`, which is in memory: the casts are exact.
        let end = child.data_offset as usize + child.data.len();
        (child, &body[child.offset as usize..end])
    })
}

/// What identifies a Tracks element for splicing: every byte of it except the
/// TrackUIDs, which Chrome draws afresh on every recorder restart.
pub fn tracks_fingerprint(tracks: &[u8]) -> Vec<u8> {
    let Ok(Some(header)) = parse_header(tracks, 0) else {
        return tracks.to_vec();
    };
    let mut out = Vec::with_capacity(tracks.len());
    for (entry, bytes) in elements(&tracks[usize::from(header.len)..]) {
        if entry.id != id::TRACK_ENTRY {
            out.extend_from_slice(bytes);
            continue;
        }
        put_id(entry.id, &mut out);
        for (field, bytes) in elements(entry.data) {
            if field.id != id::TRACK_UID {
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
            let h = parse_header(&out, 0).unwrap().unwrap();
            assert_eq!(
                (h.id, h.size, usize::from(h.len)),
                (id::CLUSTER, Some(size), out.len())
            );
        }
        let mut out = Vec::new();
        put_id(id::SEGMENT, &mut out);
        out.extend_from_slice(&UNKNOWN_SIZE);
        assert_eq!(parse_header(&out, 0).unwrap().unwrap().size, None);
        out.truncate(4);
        out.extend_from_slice(&size8(12345));
        assert_eq!(parse_header(&out, 0).unwrap().unwrap().size, Some(12345));
        assert_eq!(parse_header(&out[..5], 0), Ok(None));
        assert!(parse_header(&[0x00, 0x81], 0).is_err());
    }

    #[test]
    fn voids_have_the_exact_length() {
        for total in [2, 11, 128, 129, 200, 5000] {
            let mut out = Vec::new();
            void(total, &mut out);
            assert_eq!(out.len(), total);
            let h = parse_header(&out, 0).unwrap().unwrap();
            assert_eq!(u64::from(h.len) + h.size.unwrap(), total as u64);
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
