//! The file being written: pieces appended as the splicer makes them, the last element
//! (or box) boundary reached, the first I/O error kept, and the finish that makes it seekable.
//! Crash recovery (`recover`) finishes a file through the same code.

use crate::recording::container::{Container, Splicer};
use crate::recording::splice::Piece;
use crate::sink::Sink;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// The file being written.
pub(crate) struct Output {
    pub(super) id: String,
    pub(super) splicer: Splicer,
    /// Apart from the splicer, so that the splicer can write each piece as it makes it.
    pub(super) disk: Disk,
    pub(super) last_sync: Instant,
}

/// The file on disk and how far it is written.
pub(super) struct Disk {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) written: u64,
    /// The file ends at an element boundary here.
    pub(super) good: u64,
    pub(super) io_error: Option<String>,
}

/// Appends each piece; the first failure is kept in `io_error` and stops writing.
impl Sink<Piece> for Disk {
    fn put(&mut self, piece: Piece) {
        if self.io_error.is_some() {
            return;
        }
        match self.file.write_all(&piece.bytes) {
            Ok(()) => {
                self.written += piece.bytes.len() as u64;
                if piece.boundary {
                    self.good = self.written;
                }
            }
            Err(err) => {
                self.io_error = Some(format!("cannot write {}: {err}", self.path.display()));
            }
        }
    }
}

impl Output {
    pub(crate) fn new(
        id: String,
        path: PathBuf,
        file: File,
        started: SystemTime,
        container: Container,
    ) -> Output {
        Output {
            id,
            splicer: Splicer::new(container, started),
            disk: Disk {
                path,
                file,
                written: 0,
                good: 0,
                io_error: None,
            },
            last_sync: Instant::now(),
        }
    }

    pub(crate) fn splicer(&mut self) -> &mut Splicer {
        &mut self.splicer
    }

    /// Appends `pieces`.
    pub(crate) fn write(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            self.disk.put(piece);
        }
    }

    pub(crate) fn io_error(&self) -> Option<&str> {
        self.disk.io_error.as_deref()
    }

    pub(super) fn notices(&mut self) {
        for notice in self.splicer.take_notices() {
            log::warn!("recording {}: {notice}", self.id);
        }
    }
}

/// Cuts the file back to its last whole element if a write failed, then appends the
/// Cues and patches the head. Returns the final length. A disk too full for the Cues
/// still gets its Duration and sizes: only the index is missing then.
pub(crate) fn finish_file(out: &mut Output) -> Result<u64, String> {
    let disk = &mut out.disk;
    let path = disk.path.display().to_string();
    if disk.io_error.is_some() || disk.written != disk.good {
        disk.file
            .set_len(disk.good)
            .map_err(|e| format!("cannot truncate {path}: {e}"))?;
        out.splicer.truncate(disk.good);
        disk.written = disk.good;
    }
    let Some(finish) = out.splicer.finish() else {
        return Ok(disk.good);
    };
    let mut len = finish.append_at;
    let mut patches = finish.patches;
    let appended = (|| {
        disk.file.seek(SeekFrom::Start(finish.append_at))?;
        disk.file.write_all(&finish.append)
    })();
    match appended {
        Ok(()) => len += finish.append.len() as u64,
        Err(err) => {
            log::warn!("{path}: no room for the Cues ({err}); finalizing without them");
            disk.file
                .set_len(finish.append_at)
                .map_err(|e| format!("cannot truncate {path}: {e}"))?;
            patches = out
                .splicer
                .finish_without_cues()
                .map(|f| f.patches)
                .unwrap_or_default();
        }
    }
    for (at, bytes) in patches {
        disk.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| disk.file.write_all(&bytes))
            .map_err(|e| format!("cannot finalize {path}: {e}"))?;
    }
    disk.file
        .sync_all()
        .map_err(|e| format!("cannot sync {path}: {e}"))?;
    Ok(len)
}
