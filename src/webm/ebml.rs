//! EBML primitives: variable-length integers, element headers, the element IDs the
//! scanner and the recording writer use, and typed reads of small element bodies
//! already in memory.

use super::WebmError;

pub(crate) const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
/// Matroska declares EBMLMaxIDLength 4 and EBMLMaxSizeLength 8; nothing real exceeds them,
/// and holding them fixed keeps a header within a 12-byte stack buffer.
pub(crate) const MAX_ID_LEN: usize = 4;
pub(crate) const MAX_SIZE_LEN: usize = 8;
pub(crate) const MAX_HEADER_LEN: usize = MAX_ID_LEN + MAX_SIZE_LEN;

/// Element IDs, with their length markers, as the Matroska spec writes them.
pub(crate) mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const DOC_TYPE: u32 = 0x4282;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const TAGS: u32 = 0x1254_C367;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const ATTACHMENTS: u32 = 0x1941_A469;

    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DATE_UTC: u32 = 0x4461;

    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;

    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const REFERENCE_BLOCK: u32 = 0xFB;

    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;

    pub const VOID: u32 = 0xEC;

    /// The Segment's children: an unknown-size Cluster ends where one of these starts.
    pub fn is_level1(id: u32) -> bool {
        matches!(
            id,
            SEEK_HEAD | INFO | TRACKS | CLUSTER | CUES | TAGS | CHAPTERS | ATTACHMENTS
        )
    }
}

/// Total length of a vint from its first byte; `None` for 0x00, whose marker would come
/// after the eighth byte.
pub(crate) fn vint_len(first: u8) -> Option<usize> {
    (first != 0).then(|| first.leading_zeros() as usize + 1)
}

/// The value of a complete vint (marker removed), and whether all its data bits are set,
/// which for a size means "unknown".
fn vint_value(bytes: &[u8]) -> (u64, bool) {
    let raw = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
    let data_bits = 7 * bytes.len() as u32;
    let mask = (1u64 << data_bits) - 1;
    (raw & mask, raw & mask == mask)
}

/// Decodes a vint that must be complete within `buf`: `Ok(None)` when more bytes are needed.
pub(crate) fn read_vint(buf: &[u8], offset: u64) -> Result<Option<(u64, usize)>, WebmError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = vint_len(first).ok_or(WebmError::InvalidVint { offset })?;
    Ok(buf.get(..len).map(|bytes| (vint_value(bytes).0, len)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub id: u32,
    /// `None` is the reserved all-ones value: the element runs until something that
    /// cannot be its child.
    pub size: Option<u64>,
    /// Bytes taken by ID and size together.
    pub len: u8,
}

/// Parses the element header at the start of `buf`, whose first byte sits at `offset`.
/// `Ok(None)` means `buf` is a valid prefix that needs more bytes. Errors are reported as
/// soon as the offending byte is in `buf`, so the verdict never depends on how the stream
/// was cut.
pub(crate) fn parse_header(buf: &[u8], offset: u64) -> Result<Option<Header>, WebmError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let id_len = match vint_len(first) {
        Some(n) if n <= MAX_ID_LEN => n,
        _ => return Err(WebmError::IdTooLong { offset }),
    };
    let Some(id_bytes) = buf.get(..id_len) else {
        return Ok(None);
    };
    let (data, all_ones) = vint_value(id_bytes);
    let id = id_bytes
        .iter()
        .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
    if data == 0 || all_ones {
        return Err(WebmError::InvalidId { offset, id });
    }
    let size_offset = offset + id_len as u64;
    let Some(&size_first) = buf.get(id_len) else {
        return Ok(None);
    };
    let size_len = match vint_len(size_first) {
        Some(n) if n <= MAX_SIZE_LEN => n,
        _ => {
            return Err(WebmError::SizeTooLong {
                offset: size_offset,
            })
        }
    };
    let Some(size_bytes) = buf.get(id_len..id_len + size_len) else {
        return Ok(None);
    };
    let (size, unknown) = vint_value(size_bytes);
    Ok(Some(Header {
        id,
        size: (!unknown).then_some(size),
        len: (id_len + size_len) as u8,
    }))
}

/// A child element inside a body that is fully in memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child<'a> {
    pub id: u32,
    /// Absolute offset of the child's ID.
    pub offset: u64,
    /// Absolute offset of the child's data.
    pub data_offset: u64,
    pub data: &'a [u8],
}

impl<'a> Child<'a> {
    pub fn uint(&self) -> Result<u64, WebmError> {
        read_uint(self.data, self.data_offset)
    }

    pub fn float(&self) -> Result<f64, WebmError> {
        match *self.data {
            [] => Ok(0.0),
            [a, b, c, d] => Ok(f64::from(f32::from_be_bytes([a, b, c, d]))),
            [a, b, c, d, e, f, g, h] => Ok(f64::from_be_bytes([a, b, c, d, e, f, g, h])),
            _ => Err(WebmError::Malformed {
                offset: self.data_offset,
                reason: "float element is neither 0, 4 nor 8 bytes",
            }),
        }
    }

    /// Strings are ASCII or UTF-8 padded with NULs; a bad byte is not worth losing the
    /// index over, so it becomes U+FFFD.
    pub fn string(&self) -> String {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }

    pub fn children(&self) -> Children<'a> {
        children(self.data, self.data_offset)
    }
}

/// An unsigned integer element: 0 to 8 big-endian bytes, empty meaning 0.
pub(crate) fn read_uint(data: &[u8], offset: u64) -> Result<u64, WebmError> {
    if data.len() > 8 {
        return Err(WebmError::Malformed {
            offset,
            reason: "unsigned integer longer than 8 bytes",
        });
    }
    Ok(data.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

/// Walks the children of an in-memory master element body starting at absolute `base`.
pub(crate) fn children(data: &[u8], base: u64) -> Children<'_> {
    Children { data, pos: 0, base }
}

pub(crate) struct Children<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Child<'a>, WebmError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let item = self.next_child();
        // Fuse after an error so callers looping with `?` and without it behave alike.
        if item.is_err() {
            self.pos = self.data.len();
        }
        Some(item)
    }
}

impl<'a> Children<'a> {
    fn next_child(&mut self) -> Result<Child<'a>, WebmError> {
        let rest = &self.data[self.pos..];
        let offset = self.base + self.pos as u64;
        let parent_end = self.base + self.data.len() as u64;
        let header = parse_header(rest, offset)?.ok_or(WebmError::Malformed {
            offset,
            reason: "element header runs past its parent's end",
        })?;
        let size = header.size.ok_or(WebmError::UnknownSize {
            offset,
            id: header.id,
        })?;
        let start = usize::from(header.len);
        let available = (rest.len() - start) as u64;
        if size > available {
            return Err(WebmError::OverflowsParent {
                offset,
                id: header.id,
                end: (offset + start as u64).saturating_add(size),
                parent_end,
            });
        }
        // `size <= available <= usize::MAX`, so the cast is exact.
        let data = &rest[start..start + size as usize];
        self.pos += start + data.len();
        Ok(Child {
            id: header.id,
            offset,
            data_offset: offset + start as u64,
            data,
        })
    }
}

/// The EBML header's one fact the scanner needs: the DocType, defaulting to "matroska".
pub(crate) fn parse_ebml_header(body: &[u8], base: u64) -> Result<String, WebmError> {
    let mut doc_type = String::from("matroska");
    for child in children(body, base) {
        let child = child?;
        if child.id == id::DOC_TYPE {
            doc_type = child.string();
        }
    }
    Ok(doc_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vint_lengths() {
        assert_eq!(vint_len(0x80), Some(1));
        assert_eq!(vint_len(0x40), Some(2));
        assert_eq!(vint_len(0x1A), Some(4));
        assert_eq!(vint_len(0x01), Some(8));
        assert_eq!(vint_len(0x00), None);
    }

    #[test]
    fn read_vint_values() {
        assert_eq!(read_vint(&[0x81], 0), Ok(Some((1, 1))));
        assert_eq!(read_vint(&[0x40, 0x02], 0), Ok(Some((2, 2))));
        assert_eq!(read_vint(&[0x40], 0), Ok(None));
        assert_eq!(
            read_vint(&[0x00, 0x81], 7),
            Err(WebmError::InvalidVint { offset: 7 })
        );
    }

    #[test]
    fn parses_cluster_header_with_unknown_size() {
        let bytes = [
            0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        let h = parse_header(&bytes, 0).unwrap().unwrap();
        assert_eq!(h.id, id::CLUSTER);
        assert_eq!(h.size, None);
        assert_eq!(h.len, 12);
    }

    #[test]
    fn all_ones_is_unknown_at_every_length() {
        // 0xFF (1 byte), 0x7FFF (2 bytes), 0x3FFFFF (3 bytes) are all "unknown".
        for size in [&[0xFFu8][..], &[0x7F, 0xFF], &[0x3F, 0xFF, 0xFF]] {
            let mut bytes = vec![0xA3];
            bytes.extend_from_slice(size);
            assert_eq!(parse_header(&bytes, 0).unwrap().unwrap().size, None);
        }
        // One bit short of all ones is a real size.
        assert_eq!(
            parse_header(&[0xA3, 0x7F, 0xFE], 0).unwrap().unwrap().size,
            Some(0x3FFE)
        );
    }

    #[test]
    fn every_prefix_of_a_header_needs_more() {
        let bytes = [0x1A, 0x45, 0xDF, 0xA3, 0x01, 0, 0, 0, 0, 0, 0, 0x1F];
        for n in 0..bytes.len() {
            assert_eq!(parse_header(&bytes[..n], 0), Ok(None), "prefix {n}");
        }
        let h = parse_header(&bytes, 0).unwrap().unwrap();
        assert_eq!((h.id, h.size, h.len), (id::EBML, Some(0x1F), 12));
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            parse_header(&[0x00], 5),
            Err(WebmError::IdTooLong { offset: 5 })
        );
        // A 5-byte ID (first byte 0x08..0x0F).
        assert_eq!(
            parse_header(&[0x08, 1, 2, 3, 4, 0x81], 0),
            Err(WebmError::IdTooLong { offset: 0 })
        );
        assert_eq!(
            parse_header(&[0xFF, 0x81], 0),
            Err(WebmError::InvalidId {
                offset: 0,
                id: 0xFF
            })
        );
        assert_eq!(
            parse_header(&[0x80, 0x81], 0),
            Err(WebmError::InvalidId {
                offset: 0,
                id: 0x80
            })
        );
        assert_eq!(
            parse_header(&[0xA3, 0x00], 10),
            Err(WebmError::SizeTooLong { offset: 11 })
        );
    }

    #[test]
    fn typed_reads() {
        fn c(data: &[u8]) -> Child<'_> {
            Child {
                id: 0,
                offset: 0,
                data_offset: 0,
                data,
            }
        }
        assert_eq!(c(&[]).uint(), Ok(0));
        assert_eq!(c(&[0x0F, 0x42, 0x40]).uint(), Ok(1_000_000));
        assert!(c(&[0; 9]).uint().is_err());
        assert_eq!(c(&48000f32.to_be_bytes()).float(), Ok(48000.0));
        assert_eq!(c(&3008f64.to_be_bytes()).float(), Ok(3008.0));
        assert!(c(&[0; 3]).float().is_err());
        assert_eq!(c(b"V_VP8\0\0").string(), "V_VP8");
    }

    #[test]
    fn children_reject_overflow_and_unknown_size() {
        // Child claims 5 bytes, parent has 2 left.
        let body = [0xD7, 0x85, 1, 2];
        let err = children(&body, 100).next().unwrap().unwrap_err();
        assert_eq!(
            err,
            WebmError::OverflowsParent {
                offset: 100,
                id: 0xD7,
                end: 107,
                parent_end: 104
            }
        );
        let body = [0xD7, 0xFF, 1];
        assert!(matches!(
            children(&body, 0).next(),
            Some(Err(WebmError::UnknownSize { .. }))
        ));
        // Truncated header inside a complete body; the iterator fuses after the error.
        let mut it = children(&[0x73], 0);
        assert!(matches!(it.next(), Some(Err(WebmError::Malformed { .. }))));
        assert!(it.next().is_none());
    }
}
