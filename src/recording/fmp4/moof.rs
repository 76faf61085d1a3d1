//! A copied `moof`, read for what splicing rewrites in place: where its `mfhd`
//! sequence number sits, and for each `traf` its track, where its `tfdt` base media
//! decode time and `tfhd` base data offset sit, and how long its runs last (from the
//! `trun` sample durations, else the `tfhd` or `trex` default).

use super::boxes::{children, field, inside, version, BoxAt, Field};

/// What a `moof` holds. Offsets are into the `moof`'s bytes.
#[derive(Debug)]
pub(super) struct Fragment {
    pub sequence: Option<usize>,
    pub trafs: Vec<Traf>,
}

#[derive(Debug)]
pub(super) struct Traf {
    /// 1-based, as `tfra` counts them.
    pub number: u32,
    pub track_id: u32,
    pub tfdt: Option<Field>,
    /// An explicit base data offset (absolute in the file), to move with the `moof`.
    pub base_data_offset: Option<usize>,
    /// In the track's timescale.
    pub duration: u64,
}

/// `trun` flags.
const DATA_OFFSET: u32 = 0x001;
const FIRST_SAMPLE_FLAGS: u32 = 0x004;
const SAMPLE_DURATION: u32 = 0x100;
/// Sample size, flags and composition offset: the other per-sample fields.
const OTHER_SAMPLE_FIELDS: [u32; 3] = [0x200, 0x400, 0x800];

/// Reads a whole `moof` box; `default_duration` gives a track's `trex` default.
pub(super) fn parse(
    moof: &[u8],
    default_duration: impl Fn(u32) -> u32,
) -> Result<Fragment, String> {
    let top = children(moof, 0..moof.len())?;
    let [whole] = top[..] else {
        return Err("not one moof box".into());
    };
    let mut fragment = Fragment {
        sequence: None,
        trafs: Vec::new(),
    };
    for child in inside(moof, &whole)? {
        match &child.fourcc {
            b"mfhd" => {
                field(moof, child.body + 4, 4, child.end)?;
                fragment.sequence = Some(child.body + 4);
            }
            b"traf" => {
                let number = fragment.trafs.len() as u32 + 1;
                fragment
                    .trafs
                    .push(traf(moof, &child, number, &default_duration)?);
            }
            _ => {}
        }
    }
    Ok(fragment)
}

fn traf(
    moof: &[u8],
    traf: &BoxAt,
    number: u32,
    default_duration: &impl Fn(u32) -> u32,
) -> Result<Traf, String> {
    let mut out = Traf {
        number,
        track_id: 0,
        tfdt: None,
        base_data_offset: None,
        duration: 0,
    };
    let boxes = inside(moof, traf)?;
    let Some(tfhd) = boxes.iter().find(|b| &b.fourcc == b"tfhd") else {
        return Err("a traf without tfhd".into());
    };
    let flags = field(moof, tfhd.body, 4, tfhd.end)? as u32 & 0x00FF_FFFF;
    out.track_id = field(moof, tfhd.body + 4, 4, tfhd.end)? as u32;
    let mut at = tfhd.body + 8;
    if flags & 0x01 != 0 {
        field(moof, at, 8, tfhd.end)?;
        out.base_data_offset = Some(at);
        at += 8;
    }
    if flags & 0x02 != 0 {
        at += 4;
    }
    let mut default = default_duration(out.track_id);
    if flags & 0x08 != 0 {
        default = field(moof, at, 4, tfhd.end)? as u32;
    }
    for b in &boxes {
        match &b.fourcc {
            b"tfdt" => {
                let width = if version(moof, b)? == 1 { 8 } else { 4 };
                field(moof, b.body + 4, width, b.end)?;
                out.tfdt = Some(Field {
                    at: (b.body + 4) as u64,
                    width: width as u8,
                });
            }
            b"trun" => out.duration += run_duration(moof, b, default)?,
            _ => {}
        }
    }
    Ok(out)
}

/// The sum of a `trun`'s sample durations.
fn run_duration(moof: &[u8], trun: &BoxAt, default: u32) -> Result<u64, String> {
    let flags = field(moof, trun.body, 4, trun.end)? as u32 & 0x00FF_FFFF;
    let count = field(moof, trun.body + 4, 4, trun.end)?;
    if flags & SAMPLE_DURATION == 0 {
        return Ok(count * u64::from(default));
    }
    let mut at = trun.body + 8;
    for bit in [DATA_OFFSET, FIRST_SAMPLE_FLAGS] {
        if flags & bit != 0 {
            at += 4;
        }
    }
    let stride = 4 + 4 * OTHER_SAMPLE_FIELDS
        .iter()
        .filter(|&&bit| flags & bit != 0)
        .count();
    if (trun.end.saturating_sub(at) as u64) < count * stride as u64 {
        return Err(format!("a trun of {count} samples is too short for them"));
    }
    Ok((0..count as usize)
        .map(|i| super::boxes::read(moof, at + i * stride, 4))
        .sum())
}
