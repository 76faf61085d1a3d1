//! The record directory's free space: read with statvfs, shown in
//! `blobcast_record_dir_free_bytes`, and checked by each writer before it writes, so that
//! a recording stops cleanly (finalized, playable) when free space falls under
//! `--min-free-disk`, before the disk is full; the live stream goes on.

use crate::metrics::Metrics;
use parking_lot::Mutex;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a writer asks the filesystem: statvfs is cheap, but not per frame.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Bytes free to an unprivileged writer on the filesystem holding `dir`, or the
/// nearest ancestor that exists (the record directory is created when first needed).
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("."));
    let path = CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: statvfs writes into the zeroed struct we own; `path` is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The free-space rule of one record directory.
#[derive(Debug)]
pub struct DiskWatch {
    dir: PathBuf,
    min_free: u64,
    metrics: Arc<Metrics>,
    /// The last reading and when it was taken, shared by all writers.
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskWatch {
    pub fn new(dir: PathBuf, min_free: u64, metrics: Arc<Metrics>) -> DiskWatch {
        DiskWatch {
            dir,
            min_free,
            metrics,
            last: Mutex::new(None),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Free bytes now (read again at most every `CHECK_EVERY`), also set in the gauge.
    pub fn free(&self) -> Option<u64> {
        let mut last = self.last.lock();
        if let Some((at, free)) = *last {
            if at.elapsed() < CHECK_EVERY {
                return Some(free);
            }
        }
        let free = free_bytes(&self.dir).ok()?;
        *last = Some((Instant::now(), free));
        self.metrics.record_dir_free(free);
        Some(free)
    }

    /// Why recording must stop before writing `next` more bytes, if it must. Between
    /// two readings, the bytes writers were let write are taken off the last one, so a
    /// burst of batches cannot pass the limit on a stale figure.
    pub fn refuses(&self, next: u64) -> Option<String> {
        if self.min_free == 0 {
            // The check is off (`--min-free-disk 0`); the gauge is still kept.
            self.free();
            return None;
        }
        let free = self.free()?;
        if let Some((_, cached)) = &mut *self.last.lock() {
            *cached = cached.saturating_sub(next);
        }
        (free < self.min_free.saturating_add(next)).then(|| {
            format!(
                "free space on {} is {} MiB, under --min-free-disk ({} MiB); recording stopped before the disk filled, the live stream goes on",
                self.dir.display(),
                free >> 20,
                self.min_free >> 20
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_free_space_even_before_the_directory_exists() {
        let free = free_bytes(Path::new("/tmp/no/such/dir/yet")).unwrap();
        assert!(free > 0);
        let watch = DiskWatch::new("/tmp".into(), u64::MAX / 2, Arc::new(Metrics::new()));
        assert!(watch.refuses(0).unwrap().contains("--min-free-disk"));
        let watch = DiskWatch::new("/tmp".into(), 0, Arc::new(Metrics::new()));
        assert!(watch.refuses(0).is_none());
    }
}
