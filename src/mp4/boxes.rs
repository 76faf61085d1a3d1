//! What a whole `moov` or `moof` says, parsed from its buffered bytes: the tracks (kind
//! from `hdlr`, codec and picture or sound from `stsd`, defaults from `trex`), and for a
//! fragment each track run's first-sample sync flag and decode time. Every child box is
//! checked against its parent before it is read; unknown boxes are skipped.

use super::{Limits, Mp4Error};

/// A box type, shown as its four characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl std::fmt::Display for FourCc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &b in &self.0 {
            if (0x20..0x7F).contains(&b) {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for FourCc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{self}'")
    }
}

impl FourCc {
    pub fn as_str(&self) -> String {
        self.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
    Other,
}

/// One `trak`, with what its `mvex/trex` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: u32,
    pub kind: TrackKind,
    /// Units per second of the track's decode times.
    pub timescale: u32,
    /// The first sample entry: `avc1.42e01e` (profile from avcC), `avc3`, `hvc1`,
    /// `hev1`, `vp09`, `av01`, `mp4a`, `Opus`...
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub sample_rate: u32,
    pub channels: u16,
    /// `trex` default_sample_flags, the last word on a sample's flags.
    pub default_sample_flags: Option<u32>,
}

/// One `traf` of a `moof`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackFragment {
    pub track_id: u32,
    /// Whether the run's first sample is a sync sample, from the first of: `trun`
    /// first-sample flags, its per-sample flags, `tfhd` defaults, `trex` defaults.
    /// None when nothing says (no samples, or no flags anywhere).
    pub first_sample_sync: Option<bool>,
    /// `tfdt`, and the absolute offset of its value (4 or 8 bytes, big-endian).
    pub base_decode_time: Option<(u64, u64, u8)>,
    pub samples: u64,
}

/// sample_is_non_sync_sample in the ISO-BMFF sample flags.
const NON_SYNC: u32 = 0x0001_0000;

/// A box inside a buffered parent: its type, absolute offset and body.
pub(super) struct Child<'a> {
    pub fourcc: FourCc,
    pub offset: u64,
    pub body: &'a [u8],
    /// Absolute offset of the body's first byte.
    pub body_offset: u64,
}

/// The boxes packed in `body` (absolute offset `base`), each checked against the end.
pub(super) fn children(
    body: &[u8],
    base: u64,
) -> impl Iterator<Item = Result<Child<'_>, Mp4Error>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= body.len() {
            return None;
        }
        let result = child_at(body, base, at);
        match &result {
            Ok((_, next)) => at = *next,
            Err(_) => failed = true,
        }
        Some(result.map(|(c, _)| c))
    })
}

fn child_at(body: &[u8], base: u64, at: usize) -> Result<(Child<'_>, usize), Mp4Error> {
    let offset = base + at as u64;
    let rest = &body[at..];
    let parent_end = base + body.len() as u64;
    if rest.len() < 8 {
        return Err(Mp4Error::Malformed {
            offset,
            fourcc: FourCc(*b"????"),
            reason: "trailing bytes too short for a box header",
        });
    }
    let fourcc = FourCc([rest[4], rest[5], rest[6], rest[7]]);
    let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
    let (size, header) = match size32 {
        0 => (rest.len() as u64, 8),
        1 => {
            if rest.len() < 16 {
                return Err(Mp4Error::Malformed {
                    offset,
                    fourcc,
                    reason: "64-bit size cut short",
                });
            }
            (u64::from_be_bytes(rest[8..16].try_into().unwrap()), 16)
        }
        n => (n, 8),
    };
    if size < header as u64 {
        return Err(Mp4Error::TooSmall {
            offset,
            fourcc,
            size,
        });
    }
    if size > rest.len() as u64 {
        return Err(Mp4Error::OverflowsParent {
            offset,
            fourcc,
            end: offset.saturating_add(size),
            parent_end,
        });
    }
    let size = size as usize;
    Ok((
        Child {
            fourcc,
            offset,
            body: &rest[header..size],
            body_offset: offset + header as u64,
        },
        at + size,
    ))
}

/// Big-endian reads that fail as `Malformed` rather than panic.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    fourcc: FourCc,
    offset: u64,
}

impl<'a> Reader<'a> {
    fn new(child: &Child<'a>) -> Reader<'a> {
        Reader {
            data: child.body,
            at: 0,
            fourcc: child.fourcc,
            offset: child.offset,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        let Some(bytes) = self.data.get(self.at..self.at + n) else {
            return Err(Mp4Error::Malformed {
                offset: self.offset,
                fourcc: self.fourcc,
                reason: "body shorter than its fields",
            });
        };
        self.at += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Mp4Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Mp4Error> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, Mp4Error> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, Mp4Error> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A full box's version and flags.
    fn full(&mut self) -> Result<(u8, u32), Mp4Error> {
        let word = self.u32()?;
        Ok(((word >> 24) as u8, word & 0x00FF_FFFF))
    }

    fn skip(&mut self, n: usize) -> Result<(), Mp4Error> {
        self.take(n).map(|_| ())
    }
}

fn too_deep(child: &Child, depth: usize, limits: &Limits) -> Result<(), Mp4Error> {
    if depth > limits.max_depth {
        return Err(Mp4Error::TooDeep {
            offset: child.offset,
            fourcc: child.fourcc,
            limit: limits.max_depth,
        });
    }
    Ok(())
}

/// A `moov` body: its tracks, with the `trex` defaults joined in.
pub(super) fn parse_moov(moov: &Child, limits: &Limits) -> Result<Vec<Track>, Mp4Error> {
    let mut tracks = Vec::new();
    let mut trex = Vec::new();
    for child in children(moov.body, moov.body_offset) {
        let child = child?;
        too_deep(&child, 2, limits)?;
        match &child.fourcc.0 {
            b"trak" => {
                if tracks.len() == limits.max_tracks {
                    return Err(Mp4Error::TooManyTracks {
                        offset: moov.offset,
                        fourcc: moov.fourcc,
                        limit: limits.max_tracks,
                    });
                }
                tracks.push(parse_trak(&child, limits)?);
            }
            b"mvex" => {
                for ex in children(child.body, child.body_offset) {
                    let ex = ex?;
                    if &ex.fourcc.0 == b"trex" && trex.len() < limits.max_tracks {
                        let mut r = Reader::new(&ex);
                        r.full()?;
                        let id = r.u32()?;
                        r.skip(12)?;
                        trex.push((id, r.u32()?));
                    }
                }
            }
            _ => {}
        }
    }
    for track in &mut tracks {
        track.default_sample_flags = trex.iter().find(|(id, _)| *id == track.id).map(|t| t.1);
    }
    Ok(tracks)
}

fn parse_trak(trak: &Child, limits: &Limits) -> Result<Track, Mp4Error> {
    let mut track = Track {
        id: 0,
        kind: TrackKind::Other,
        timescale: 0,
        codec: String::new(),
        width: 0,
        height: 0,
        sample_rate: 0,
        channels: 0,
        default_sample_flags: None,
    };
    // trak > mdia > minf > stbl > stsd, looked for by a walk over the known containers.
    walk(trak, 3, limits, &mut |child, depth| {
        let mut r = Reader::new(child);
        match &child.fourcc.0 {
            b"tkhd" => {
                let (version, _) = r.full()?;
                r.skip(if version == 1 { 16 } else { 8 })?;
                track.id = r.u32()?;
            }
            b"mdhd" => {
                let (version, _) = r.full()?;
                r.skip(if version == 1 { 16 } else { 8 })?;
                track.timescale = r.u32()?;
            }
            b"hdlr" => {
                r.full()?;
                r.skip(4)?;
                track.kind = match r.take(4)? {
                    b"vide" => TrackKind::Video,
                    b"soun" => TrackKind::Audio,
                    _ => TrackKind::Other,
                };
            }
            b"stsd" => {
                r.full()?;
                r.u32()?;
                if let Some(entry) = children(
                    &child.body[8.min(child.body.len())..],
                    child.body_offset + 8,
                )
                .next()
                {
                    let entry = entry?;
                    too_deep(&entry, depth + 1, limits)?;
                    sample_entry(&entry, depth + 1, limits, &mut track)?;
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(track)
}

/// Calls `visit` on every box under `parent` that is not a container this module
/// descends into, descending into mdia, minf and stbl.
fn walk(
    parent: &Child,
    depth: usize,
    limits: &Limits,
    visit: &mut dyn FnMut(&Child, usize) -> Result<(), Mp4Error>,
) -> Result<(), Mp4Error> {
    for child in children(parent.body, parent.body_offset) {
        let child = child?;
        too_deep(&child, depth, limits)?;
        match &child.fourcc.0 {
            b"mdia" | b"minf" | b"stbl" => walk(&child, depth + 1, limits, visit)?,
            _ => visit(&child, depth)?,
        }
    }
    Ok(())
}

/// The first sample entry of an `stsd`: codec, and picture size or sound format.
fn sample_entry(
    entry: &Child,
    depth: usize,
    limits: &Limits,
    track: &mut Track,
) -> Result<(), Mp4Error> {
    track.codec = entry.fourcc.as_str();
    let mut r = Reader::new(entry);
    r.skip(8)?; // reserved, data_reference_index
    let children_at = match track.kind {
        TrackKind::Video => {
            r.skip(16)?;
            track.width = r.u16()? as u32;
            track.height = r.u16()? as u32;
            78
        }
        TrackKind::Audio => {
            let version = r.u16()?;
            r.skip(6)?;
            track.channels = r.u16()?;
            r.skip(6)?;
            track.sample_rate = r.u32()? >> 16;
            match version {
                1 => 28 + 16,
                2 => 28 + 36,
                _ => 28,
            }
        }
        TrackKind::Other => return Ok(()),
    };
    let Some(rest) = entry.body.get(children_at..) else {
        return Ok(());
    };
    for child in children(rest, entry.body_offset + children_at as u64) {
        let child = child?;
        too_deep(&child, depth + 1, limits)?;
        let mut r = Reader::new(&child);
        match &child.fourcc.0 {
            // AVCDecoderConfigurationRecord: version, profile, compatibility, level.
            b"avcC" => {
                r.u8()?;
                let (p, c, l) = (r.u8()?, r.u8()?, r.u8()?);
                track.codec = format!("{}.{p:02x}{c:02x}{l:02x}", track.codec);
            }
            b"dOps" => {
                // OpusSpecificBox: version, output channels, pre-skip, input rate.
                r.u8()?;
                track.channels = r.u8()? as u16;
                r.u16()?;
                let rate = r.u32()?;
                if rate != 0 {
                    track.sample_rate = rate;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// An `mfhd` sequence number and the absolute offset of its 4 bytes.
pub type Sequence = (u32, u64);

/// A `moof` body: its sequence number (and where it sits) and its track runs.
pub(super) fn parse_moof(
    moof: &Child,
    tracks: &[Track],
    limits: &Limits,
) -> Result<(Option<Sequence>, Vec<TrackFragment>), Mp4Error> {
    let mut sequence = None;
    let mut trafs = Vec::new();
    for child in children(moof.body, moof.body_offset) {
        let child = child?;
        too_deep(&child, 2, limits)?;
        match &child.fourcc.0 {
            b"mfhd" => {
                let mut r = Reader::new(&child);
                r.full()?;
                sequence = Some((r.u32()?, child.body_offset + 4));
            }
            b"traf" => {
                if trafs.len() == limits.max_tracks {
                    return Err(Mp4Error::TooManyTracks {
                        offset: moof.offset,
                        fourcc: moof.fourcc,
                        limit: limits.max_tracks,
                    });
                }
                trafs.push(parse_traf(&child, tracks, limits)?);
            }
            _ => {}
        }
    }
    Ok((sequence, trafs))
}

fn parse_traf(traf: &Child, tracks: &[Track], limits: &Limits) -> Result<TrackFragment, Mp4Error> {
    let mut fragment = TrackFragment {
        track_id: 0,
        first_sample_sync: None,
        base_decode_time: None,
        samples: 0,
    };
    let mut tfhd_flags = None;
    // The first sample's flags, once a trun with samples has said (or not).
    let mut first_flags: Option<Option<u32>> = None;
    for child in children(traf.body, traf.body_offset) {
        let child = child?;
        too_deep(&child, 3, limits)?;
        let mut r = Reader::new(&child);
        match &child.fourcc.0 {
            b"tfhd" => {
                let (_, flags) = r.full()?;
                fragment.track_id = r.u32()?;
                if flags & 0x01 != 0 {
                    r.skip(8)?;
                }
                for bit in [0x02, 0x08, 0x10] {
                    if flags & bit != 0 {
                        r.skip(4)?;
                    }
                }
                if flags & 0x20 != 0 {
                    tfhd_flags = Some(r.u32()?);
                }
            }
            b"tfdt" => {
                let (version, _) = r.full()?;
                let at = child.body_offset + 4;
                fragment.base_decode_time = Some(if version == 1 {
                    (r.u64()?, at, 8)
                } else {
                    (r.u32()? as u64, at, 4)
                });
            }
            b"trun" => {
                let (_, flags) = r.full()?;
                let count = r.u32()? as u64;
                fragment.samples += count;
                if first_flags.is_some() || count == 0 {
                    continue;
                }
                if flags & 0x01 != 0 {
                    r.skip(4)?;
                }
                let mut first = None;
                if flags & 0x04 != 0 {
                    first = Some(r.u32()?);
                } else if flags & 0x400 != 0 {
                    // The first sample's fields: duration and size come before flags.
                    for bit in [0x100, 0x200] {
                        if flags & bit != 0 {
                            r.skip(4)?;
                        }
                    }
                    first = Some(r.u32()?);
                }
                first_flags = Some(first);
            }
            _ => {}
        }
    }
    let trex = tracks
        .iter()
        .find(|t| t.id == fragment.track_id)
        .and_then(|t| t.default_sample_flags);
    if let Some(first) = first_flags {
        fragment.first_sample_sync = first
            .or(tfhd_flags)
            .or(trex)
            .map(|flags| flags & NON_SYNC == 0);
    }
    Ok(fragment)
}
