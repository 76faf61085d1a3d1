//! Boxes held in memory (a copied `moov` or `moof`), walked for the few fields the MP4
//! splicer reads or rewrites: each child's type and byte range, checked against its
//! parent's end, and big-endian fields read and written in place.

use std::ops::Range;

/// One box inside a buffer: offsets into that buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct BoxAt {
    pub fourcc: [u8; 4],
    pub start: usize,
    /// The first byte after the header.
    pub body: usize,
    pub end: usize,
}

impl BoxAt {
    pub fn header_len(&self) -> usize {
        self.body - self.start
    }
}

/// A big-endian field of a box, as an offset into a buffer and its width (4 or 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field {
    pub at: u64,
    pub width: u8,
}

impl Field {
    pub fn moved(self, by: u64) -> Field {
        Field {
            at: self.at + by,
            width: self.width,
        }
    }

    /// `value` in this field's width: saturated at the 32-bit maximum for a narrow one
    /// (a duration that long says "longer than this can say").
    pub fn bytes(self, value: u64) -> Vec<u8> {
        match self.width {
            4 => (value.min(u32::MAX as u64) as u32).to_be_bytes().to_vec(),
            _ => value.to_be_bytes().to_vec(),
        }
    }
}

/// The boxes packed in `data[range]`.
pub(super) fn children(data: &[u8], range: Range<usize>) -> Result<Vec<BoxAt>, String> {
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        if range.end - at < 8 {
            return Err(format!("{} stray bytes at {at}", range.end - at));
        }
        let size32 = read(data, at, 4) as usize;
        let fourcc: [u8; 4] = data[at + 4..at + 8].try_into().expect("4 bytes");
        let (size, header) = match size32 {
            0 => (range.end - at, 8),
            1 if range.end - at >= 16 => (read(data, at + 8, 8) as usize, 16),
            1 => return Err(format!("a 64-bit box size cut short at {at}")),
            n => (n, 8),
        };
        if size < header || size > range.end - at {
            return Err(format!(
                "box {} at {at} claims {size} bytes, which its parent cannot hold",
                String::from_utf8_lossy(&fourcc)
            ));
        }
        out.push(BoxAt {
            fourcc,
            start: at,
            body: at + header,
            end: at + size,
        });
        at += size;
    }
    Ok(out)
}

/// The children of `parent`'s body.
pub(super) fn inside(data: &[u8], parent: &BoxAt) -> Result<Vec<BoxAt>, String> {
    children(data, parent.body..parent.end)
}

/// Reads `width` (1 to 8) bytes big-endian at `at`; the caller has checked they exist.
pub(super) fn read(data: &[u8], at: usize, width: usize) -> u64 {
    data[at..at + width]
        .iter()
        .fold(0, |value, &b| value << 8 | u64::from(b))
}

/// Reads `width` bytes at `at` of a box ending at `end`, or says it is too short.
pub(super) fn field(data: &[u8], at: usize, width: usize, end: usize) -> Result<u64, String> {
    if at + width > end {
        return Err(format!("a box ending at {end} is too short for its fields"));
    }
    Ok(read(data, at, width))
}

/// Writes `value` big-endian into `width` bytes at `at`.
pub(super) fn write(data: &mut [u8], at: usize, width: usize, value: u64) {
    let bytes = value.to_be_bytes();
    data[at..at + width].copy_from_slice(&bytes[8 - width..]);
}

/// A full box's version.
pub(super) fn version(data: &[u8], b: &BoxAt) -> Result<u8, String> {
    field(data, b.body, 1, b.end).map(|v| v as u8)
}

/// A box of `fourcc` with `body`, 32-bit size.
pub(super) fn boxed(fourcc: &[u8; 4], body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(fourcc);
    out.extend_from_slice(body);
}
