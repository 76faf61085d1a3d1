//! The push-style driver: turns an MP4 byte stream, fed in pieces cut anywhere, into
//! [`Event`]s at absolute offsets. It holds a box header (at most 16 bytes) and the one
//! `moov` or `moof` it is reading; media data and unknown boxes are counted past, never
//! copied. Events are reported only when a whole box has been read, so they are the
//! same whatever the cut points.

use std::ops::Range;

use super::boxes::{self, Child, FourCc, Track, TrackFragment};
use super::{Limits, Mp4Error};
use crate::sink::Sink;

/// What the scanner found. Ranges are whole boxes, header included.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An `ftyp`: a file starts. Seen again mid-stream, a new file starts.
    FileType { range: Range<u64> },
    /// A `moov` and the tracks it describes.
    Movie {
        range: Range<u64>,
        tracks: Vec<Track>,
    },
    /// The init segment is complete: from the `ftyp` to the end of the `moov`.
    InitSegment { range: Range<u64> },
    /// A `moof`, reported when the whole of it has been read (before its `mdat`).
    Fragment {
        range: Range<u64>,
        /// `mfhd` sequence number and the absolute offset of its 4 bytes.
        sequence: Option<(u32, u64)>,
        tracks: Vec<TrackFragment>,
    },
    /// An `mdat`; `end` is None for one that runs to the end of the file (size 0).
    MediaData { offset: u64, end: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whole {
    Moov,
    Moof,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// At a box boundary, or inside a header split across pushes (`head` holds it).
    Header,
    /// Counting past bytes nobody needs, up to absolute `end` (None: forever).
    Skip { end: Option<u64> },
    /// Buffering a `moov` or `moof` to parse it whole at `end`.
    Collect {
        what: Whole,
        offset: u64,
        header: u8,
        end: u64,
    },
}

#[derive(Debug)]
pub struct Scanner {
    limits: Limits,
    position: u64,
    state: State,
    head: Vec<u8>,
    body: Vec<u8>,
    /// The newest `moov`'s tracks: a fragment's flags may fall back to their `trex`.
    tracks: Vec<Track>,
    /// Where the newest `ftyp` started, until its init segment was reported.
    file_start: Option<u64>,
    failed: Option<Mp4Error>,
    /// Top-level box headers read so far: the work a push did, for callers that bound it.
    boxes: u64,
}

/// A collect buffer larger than this is freed after use rather than kept per stream.
const KEEP_BODY_CAPACITY: usize = 16 * 1024;

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Scanner {
        Scanner {
            limits,
            position: 0,
            state: State::Header,
            head: Vec::with_capacity(16),
            body: Vec::new(),
            tracks: Vec::new(),
            file_start: None,
            failed: None,
            boxes: 0,
        }
    }

    /// Bytes pushed so far (up to the error, once there is one).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Top-level box headers read so far.
    pub fn boxes(&self) -> u64 {
        self.boxes
    }

    /// Bytes of buffer the scanner holds.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.head.capacity() + self.body.capacity()
    }

    /// Carries on at absolute offset `at`, where a top-level box (a `moof`) starts, as
    /// though the bytes before it had been scanned: a replica that joins a generation at
    /// a keyframe holds the init segment and then fragments from `at` on. A box half read
    /// is dropped without events. False, and nothing changed, unless the scanner is
    /// healthy, its init segment is complete, and it is not past `at`.
    pub fn resync(&mut self, at: u64) -> bool {
        let inited = !self.tracks.is_empty() && self.file_start.is_none();
        if self.failed.is_some() || !inited || at < self.position {
            return false;
        }
        self.state = State::Header;
        self.head.clear();
        self.body.clear();
        self.position = at;
        true
    }

    /// Feeds the next bytes. After an error every push returns that error.
    pub fn push(&mut self, mut data: &[u8], sink: &mut impl Sink<Event>) -> Result<(), Mp4Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        while !data.is_empty() {
            let used = match self.step(data, sink) {
                Ok(used) => used,
                Err(err) => {
                    self.failed = Some(err.clone());
                    self.body = Vec::new();
                    return Err(err);
                }
            };
            self.position += used as u64;
            data = &data[used..];
        }
        Ok(())
    }

    /// Consumes some of `data`, returning how much.
    fn step(&mut self, data: &[u8], sink: &mut impl Sink<Event>) -> Result<usize, Mp4Error> {
        match self.state {
            State::Skip { end: None } => Ok(data.len()),
            State::Skip { end: Some(end) } => {
                let used = (end - self.position).min(data.len() as u64) as usize;
                if self.position + used as u64 == end {
                    self.state = State::Header;
                }
                Ok(used)
            }
            State::Collect {
                what,
                offset,
                header,
                end,
            } => {
                let used = (end - self.position).min(data.len() as u64) as usize;
                self.body.extend_from_slice(&data[..used]);
                if self.position + used as u64 == end {
                    self.state = State::Header;
                    let body = std::mem::take(&mut self.body);
                    let result = self.whole(what, offset, header, &body, sink);
                    self.body = body;
                    self.body.clear();
                    if self.body.capacity() > KEEP_BODY_CAPACITY {
                        self.body = Vec::new();
                    }
                    result?;
                }
                Ok(used)
            }
            State::Header => self.header(data, sink),
        }
    }

    /// Reads (some of) a box header; once whole, decides what to do with the box.
    fn header(&mut self, data: &[u8], sink: &mut impl Sink<Event>) -> Result<usize, Mp4Error> {
        let had = self.head.len();
        let want = if had >= 8 && self.head[..4] == [0, 0, 0, 1] {
            16
        } else {
            8
        };
        let used = (want - had).min(data.len());
        self.head.extend_from_slice(&data[..used]);
        if self.head.len() < 8 {
            return Ok(used);
        }
        let offset = self.position - had as u64;
        let size32 = u32::from_be_bytes(self.head[..4].try_into().unwrap());
        if size32 == 1 && self.head.len() < 16 {
            return Ok(used);
        }
        let fourcc = FourCc(self.head[4..8].try_into().unwrap());
        if offset == 0 && &fourcc.0 != b"ftyp" {
            return Err(Mp4Error::NotMp4);
        }
        if !fourcc.0.iter().all(|b| (0x20..0x7F).contains(b)) {
            return Err(Mp4Error::InvalidType { offset });
        }
        self.boxes += 1;
        let header = self.head.len() as u64;
        let size = match size32 {
            1 => u64::from_be_bytes(self.head[8..16].try_into().unwrap()),
            n => n as u64,
        };
        self.head.clear();
        let body_start = offset + header;
        if size32 == 0 {
            if &fourcc.0 != b"mdat" {
                return Err(Mp4Error::UnknownSize { offset, fourcc });
            }
            sink.put(Event::MediaData { offset, end: None });
            self.state = State::Skip { end: None };
            return Ok(used);
        }
        if size < header {
            return Err(Mp4Error::TooSmall {
                offset,
                fourcc,
                size,
            });
        }
        let end = offset.checked_add(size).ok_or(Mp4Error::Overflow)?;
        let whole = match &fourcc.0 {
            b"moov" => Some(Whole::Moov),
            b"moof" => Some(Whole::Moof),
            _ => None,
        };
        match (whole, &fourcc.0) {
            (Some(what), _) => {
                if size - header > self.limits.max_buffered_box as u64 {
                    return Err(Mp4Error::TooLarge {
                        offset,
                        fourcc,
                        size,
                        limit: self.limits.max_buffered_box as u64,
                    });
                }
                self.state = State::Collect {
                    what,
                    offset,
                    header: header as u8,
                    end,
                };
            }
            (None, b"ftyp") => {
                self.file_start = Some(offset);
                self.tracks.clear();
                sink.put(Event::FileType { range: offset..end });
                self.state = State::Skip { end: Some(end) };
            }
            (None, kind) => {
                if kind == b"mdat" {
                    sink.put(Event::MediaData {
                        offset,
                        end: Some(end),
                    });
                }
                self.state = State::Skip { end: Some(end) };
            }
        }
        if body_start == end {
            // An empty box: nothing to skip or collect; an empty moov/moof is parsed now.
            if let State::Collect { what, .. } = self.state {
                self.state = State::Header;
                self.whole(what, offset, header as u8, &[], sink)?;
            } else {
                self.state = State::Header;
            }
        }
        Ok(used)
    }

    fn whole(
        &mut self,
        what: Whole,
        offset: u64,
        header: u8,
        body: &[u8],
        sink: &mut impl Sink<Event>,
    ) -> Result<(), Mp4Error> {
        let end = offset + header as u64 + body.len() as u64;
        let child = Child {
            fourcc: FourCc(match what {
                Whole::Moov => *b"moov",
                Whole::Moof => *b"moof",
            }),
            offset,
            body,
            body_offset: offset + header as u64,
        };
        match what {
            Whole::Moov => {
                let tracks = boxes::parse_moov(&child, &self.limits)?;
                self.tracks = tracks.clone();
                sink.put(Event::Movie {
                    range: offset..end,
                    tracks,
                });
                if let Some(start) = self.file_start.take() {
                    sink.put(Event::InitSegment { range: start..end });
                }
            }
            Whole::Moof => {
                let (sequence, tracks) = boxes::parse_moof(&child, &self.tracks, &self.limits)?;
                sink.put(Event::Fragment {
                    range: offset..end,
                    sequence,
                    tracks,
                });
            }
        }
        Ok(())
    }
}
