//! The init segment's `moov`, as the MP4 splicer needs it: each track's id, timescale
//! and `trex` default sample duration; where the durations that finishing fills in sit
//! (`mvhd`, `mehd`, each `tkhd` and `mdhd`); and a fingerprint of what a later
//! generation must share to be spliced (track ids, handlers, timescales, `stsd`). A
//! `moov` without a `mehd` gets one, so that finishing only patches bytes in place.

use super::boxes::{boxed, children, field, inside, read, version, write, BoxAt, Field};

/// What a `moov` says. Field offsets are into the `moov` it was read from.
#[derive(Debug, Clone)]
pub(super) struct Movie {
    pub timescale: u32,
    pub mvhd_duration: Field,
    pub mehd: Option<Field>,
    /// Where a `mehd` goes when there is none: the start of the `mvex` body.
    mvex: BoxAt,
    moov_header: usize,
    pub tracks: Vec<MovieTrack>,
    pub fingerprint: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(super) struct MovieTrack {
    pub id: u32,
    pub timescale: u32,
    pub handler: [u8; 4],
    pub default_duration: u32,
    pub tkhd_duration: Field,
    pub mdhd_duration: Field,
}

/// A version-1 `mehd`: size, type, version and flags, 64-bit fragment duration.
const MEHD_LEN: usize = 20;

/// Reads a whole `moov` box.
pub(super) fn parse(moov: &[u8]) -> Result<Movie, String> {
    let top = children(moov, 0..moov.len())?;
    let [whole] = top[..] else {
        return Err("not one moov box".into());
    };
    let mut movie = Movie {
        timescale: 0,
        mvhd_duration: Field { at: 0, width: 0 },
        mehd: None,
        mvex: whole,
        moov_header: whole.header_len(),
        tracks: Vec::new(),
        fingerprint: Vec::new(),
    };
    let mut has_mvhd = false;
    let mut has_mvex = false;
    let mut trex = Vec::new();
    for child in inside(moov, &whole)? {
        match &child.fourcc {
            b"mvhd" => {
                let (times, width) = times(moov, &child)?;
                movie.timescale = field(moov, times, 4, child.end)? as u32;
                movie.mvhd_duration = duration(moov, times + 4, width, &child)?;
                has_mvhd = true;
            }
            b"trak" => {
                let (track, fingerprint) = track(moov, &child)?;
                movie.tracks.push(track);
                movie.fingerprint.extend_from_slice(&fingerprint);
            }
            b"mvex" => {
                has_mvex = true;
                movie.mvex = child;
                for ex in inside(moov, &child)? {
                    match &ex.fourcc {
                        b"mehd" => {
                            let width = if version(moov, &ex)? == 1 { 8 } else { 4 };
                            movie.mehd = Some(duration(moov, ex.body + 4, width, &ex)?);
                        }
                        b"trex" => {
                            let id = field(moov, ex.body + 4, 4, ex.end)? as u32;
                            let default = field(moov, ex.body + 12, 4, ex.end)? as u32;
                            trex.push((id, default));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !has_mvhd {
        return Err("its moov has no mvhd".into());
    }
    if !has_mvex {
        return Err("its moov has no mvex: not a fragmented MP4".into());
    }
    if movie.tracks.is_empty() {
        return Err("its moov has no tracks".into());
    }
    for track in &mut movie.tracks {
        if track.timescale == 0 {
            return Err(format!("track {} has a timescale of 0", track.id));
        }
        track.default_duration = trex
            .iter()
            .find(|(id, _)| *id == track.id)
            .map_or(0, |t| t.1);
    }
    if movie.timescale == 0 {
        movie.timescale = 1000;
    }
    Ok(movie)
}

/// Where a full box's times start (after creation and modification times), and the
/// width of its times.
fn times(data: &[u8], b: &BoxAt) -> Result<(usize, u8), String> {
    Ok(if version(data, b)? == 1 {
        (b.body + 4 + 16, 8)
    } else {
        (b.body + 4 + 8, 4)
    })
}

fn duration(data: &[u8], at: usize, width: u8, b: &BoxAt) -> Result<Field, String> {
    field(data, at, width as usize, b.end)?;
    Ok(Field {
        at: at as u64,
        width,
    })
}

/// A `trak`, and the bytes that identify it for splicing.
fn track(moov: &[u8], trak: &BoxAt) -> Result<(MovieTrack, Vec<u8>), String> {
    let mut track = MovieTrack {
        id: 0,
        timescale: 0,
        handler: *b"    ",
        default_duration: 0,
        tkhd_duration: Field { at: 0, width: 0 },
        mdhd_duration: Field { at: 0, width: 0 },
    };
    let mut stsd: &[u8] = &[];
    let mut found = [false; 2];
    let mut visit = |b: &BoxAt| -> Result<(), String> {
        match &b.fourcc {
            b"tkhd" => {
                let (times, width) = times(moov, b)?;
                track.id = field(moov, times, 4, b.end)? as u32;
                // track_ID, then 4 reserved bytes, then the duration.
                track.tkhd_duration = duration(moov, times + 8, width, b)?;
                found[0] = true;
            }
            b"mdhd" => {
                let (times, width) = times(moov, b)?;
                track.timescale = field(moov, times, 4, b.end)? as u32;
                track.mdhd_duration = duration(moov, times + 4, width, b)?;
                found[1] = true;
            }
            b"hdlr" => {
                let handler = field(moov, b.body + 8, 4, b.end)? as u32;
                track.handler = handler.to_be_bytes();
            }
            b"stsd" => stsd = &moov[b.start..b.end],
            _ => {}
        }
        Ok(())
    };
    walk(moov, trak, 0, &mut visit)?;
    if found != [true, true] {
        return Err("a trak without tkhd or mdhd".into());
    }
    let mut fingerprint = Vec::new();
    fingerprint.extend_from_slice(&track.id.to_be_bytes());
    fingerprint.extend_from_slice(&track.handler);
    fingerprint.extend_from_slice(&track.timescale.to_be_bytes());
    fingerprint.extend_from_slice(stsd);
    Ok((track, fingerprint))
}

/// Calls `visit` on each box under `parent`, descending into mdia, minf and stbl.
fn walk(
    data: &[u8],
    parent: &BoxAt,
    depth: usize,
    visit: &mut dyn FnMut(&BoxAt) -> Result<(), String>,
) -> Result<(), String> {
    for child in inside(data, parent)? {
        match &child.fourcc {
            b"mdia" | b"minf" | b"stbl" if depth < 3 => walk(data, &child, depth + 1, visit)?,
            _ => visit(&child)?,
        }
    }
    Ok(())
}

impl Movie {
    /// The `moov` as the file gets it: the same bytes, with a `mehd` put at the start of
    /// the `mvex` when it had none (and the sizes of both grown to hold it). Field
    /// offsets follow the new bytes.
    pub fn with_mehd(&mut self, moov: &[u8]) -> Vec<u8> {
        if self.mehd.is_some() {
            return moov.to_vec();
        }
        let at = self.mvex.body;
        let mut out = Vec::with_capacity(moov.len() + MEHD_LEN);
        out.extend_from_slice(&moov[..at]);
        let mut mehd = Vec::with_capacity(MEHD_LEN);
        boxed(b"mehd", &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut mehd);
        out.extend_from_slice(&mehd);
        out.extend_from_slice(&moov[at..]);
        for (start, header) in [
            (0, self.moov_header),
            (self.mvex.start, self.mvex.header_len()),
        ] {
            let (size_at, width) = if header == 16 {
                (start + 8, 8)
            } else {
                (start, 4)
            };
            // A size of 0 ("to the end of its parent") still says so.
            let size = read(&out, size_at, width);
            if size != 0 {
                write(&mut out, size_at, width, size + MEHD_LEN as u64);
            }
        }
        let moved = |f: Field| {
            if f.at >= at as u64 {
                f.moved(MEHD_LEN as u64)
            } else {
                f
            }
        };
        self.mvhd_duration = moved(self.mvhd_duration);
        for track in &mut self.tracks {
            track.tkhd_duration = moved(track.tkhd_duration);
            track.mdhd_duration = moved(track.mdhd_duration);
        }
        self.mehd = Some(Field {
            at: (at + 12) as u64,
            width: 8,
        });
        out
    }
}
