//! Which container a recording is written in, and its splicer behind one face, so that
//! the writer and crash recovery do not care. A session's container is what its first
//! generation's first bytes say (the mime type when they are too few to tell); each
//! file holds one container, and a generation in another one starts a new file.

use super::fmp4;
use super::splice::{self, Finish, Piece, SpliceError};
use crate::mp4::{sniff, Sniff};
use crate::sink::Sink;
use bytes::Bytes;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    WebM,
    Mp4,
}

impl Container {
    pub const ALL: [Container; 2] = [Container::WebM, Container::Mp4];

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Container::WebM => "webm",
            Container::Mp4 => "mp4",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Container::WebM => "video/webm",
            Container::Mp4 => "video/mp4",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Container::WebM => "WebM",
            Container::Mp4 => "MP4",
        }
    }

    /// What a generation's first bytes say; None when too few to tell. Anything not
    /// MP4 goes to the WebM splicer, which says what is wrong with it.
    pub fn of_head(head: &[u8]) -> Option<Container> {
        match sniff(head) {
            Sniff::Mp4 => Some(Container::Mp4),
            Sniff::NotMp4 => Some(Container::WebM),
            Sniff::NeedMore => None,
        }
    }

    pub fn of_mime(mime: Option<&str>) -> Container {
        match mime {
            Some(mime)
                if mime
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("video/mp4") =>
            {
                Container::Mp4
            }
            Some(mime)
                if mime
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("audio/mp4") =>
            {
                Container::Mp4
            }
            _ => Container::WebM,
        }
    }

    /// The container of a recording's file name (`{id}.webm`, `{id}.mp4`).
    pub fn of_file(file: &str) -> Option<Container> {
        Container::ALL.into_iter().find(|c| {
            file.strip_suffix(c.extension())
                .is_some_and(|s| s.ends_with('.'))
        })
    }
}

/// The splicer of a file's container.
#[derive(Debug)]
pub enum Splicer {
    WebM(splice::Splicer),
    Mp4(fmp4::Splicer),
}

/// The same call on whichever splicer it is.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Splicer::WebM($s) => $call,
            Splicer::Mp4($s) => $call,
        }
    };
}

impl Splicer {
    pub fn new(container: Container, started: SystemTime) -> Splicer {
        match container {
            Container::WebM => Splicer::WebM(splice::Splicer::new(started)),
            Container::Mp4 => Splicer::Mp4(fmp4::Splicer::new()),
        }
    }

    pub fn container(&self) -> Container {
        match self {
            Splicer::WebM(_) => Container::WebM,
            Splicer::Mp4(_) => Container::Mp4,
        }
    }

    /// Bytes of output produced so far.
    pub fn out_len(&self) -> u64 {
        each!(self, s => s.out_len())
    }

    pub fn has_head(&self) -> bool {
        each!(self, s => s.has_head())
    }

    pub fn generations(&self) -> u32 {
        each!(self, s => s.generations())
    }

    pub fn description(&self) -> &str {
        each!(self, s => s.description())
    }

    pub fn take_notices(&mut self) -> Vec<String> {
        each!(self, s => s.take_notices())
    }

    pub fn duration_secs(&self) -> f64 {
        each!(self, s => s.duration_secs())
    }

    pub fn begin(&mut self, id: u64) {
        each!(self, s => s.begin(id))
    }

    pub fn current(&self) -> Option<u64> {
        each!(self, s => s.current())
    }

    pub fn received(&self) -> u64 {
        each!(self, s => s.received())
    }

    pub fn take_generation(&mut self) -> Option<(u64, Vec<Bytes>)> {
        each!(self, s => s.take_generation())
    }

    pub fn push(&mut self, payload: Bytes, out: &mut impl Sink<Piece>) -> Result<(), SpliceError> {
        each!(self, s => s.push(payload, out))
    }

    pub fn end_generation(&mut self, out: &mut impl Sink<Piece>) {
        each!(self, s => s.end_generation(out))
    }

    pub fn truncate(&mut self, len: u64) {
        each!(self, s => s.truncate(len))
    }

    pub fn finish(&self) -> Option<Finish> {
        each!(self, s => s.finish())
    }

    pub fn finish_without_cues(&self) -> Option<Finish> {
        each!(self, s => s.finish_without_cues())
    }
}
