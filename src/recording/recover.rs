//! Start-up recovery: a recording the server was writing when it died (kill -9, power
//! loss) is a valid WebM up to its last whole element (an MP4 up to its last whole
//! fragment), but has no Cues or Duration (no `mfra` or durations). It
//! is spliced again into a temporary file, finalized like any other, and renamed over
//! the original; its sidecar then says `interrupted`, with what the file tells: its
//! length, duration and tracks. Only the number of generations is not in the file: the
//! writer's sidecar has it up to the last one begun (a file without a sidecar counts 1).

use super::container::Container;
use super::names;
use super::writer::{finish_file, Output};
use super::{Recorder, RecordingInfo, State};
use bytes::Bytes;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

const READ_SIZE: usize = 256 * 1024;

/// Finalizes `id` on the blocking pool (or right here, outside a runtime).
pub(super) fn spawn(recorder: &Arc<Recorder>, id: String) {
    let guard = recorder.active_guard();
    let recorder = recorder.clone();
    let job = move || {
        let _guard = guard;
        let Some(mut info) = recorder.get(&id) else {
            return;
        };
        match recover(recorder.dir(), &info) {
            Ok(Recovered {
                bytes,
                duration,
                ended,
                tracks,
            }) => {
                info.bytes = bytes;
                info.duration = Some(duration);
                info.ended = Some(names::rfc3339(ended));
                info.generations = info.generations.max(1);
                info.tracks = Some(tracks).filter(|t| !t.is_empty()).or(info.tracks);
                let container = Container::of_file(&info.file).unwrap_or(Container::WebM);
                info.mime.get_or_insert_with(|| container.mime().to_owned());
                log::warn!(
                    "recording {id} was left open by a crash; finalized: {duration:.1} s, {bytes} bytes"
                );
            }
            Err(err) => {
                log::error!(
                    "recording {id} was left open by a crash and cannot be finalized: {err}"
                );
                info.error = Some(format!("left open by a crash, not finalized: {err}"));
            }
        }
        info.state = State::Interrupted;
        recorder.recovered(&id, info);
        if let Err(err) = recorder.persist(&id) {
            log::error!("recording {id}: {err}");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(job);
        }
        Err(_) => job(),
    }
}

/// What a finalized file says about itself.
struct Recovered {
    bytes: u64,
    /// Seconds.
    duration: f64,
    /// When it was last written.
    ended: SystemTime,
    /// As `RecordingInfo::tracks`.
    tracks: String,
}

/// Re-splices the file into a finalized copy and renames it over the original.
fn recover(dir: &Path, info: &RecordingInfo) -> Result<Recovered, String> {
    let path = dir.join(&info.file);
    let mut source =
        File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let ended = source
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let started = names::parse_rfc3339(&info.started).unwrap_or(ended);
    let tmp = dir.join(format!(".{}.recover.tmp", info.id));
    let file = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = (|| {
        let container = Container::of_file(&info.file).unwrap_or(Container::WebM);
        let mut out = Output::new(info.id.clone(), tmp.clone(), file, started, container);
        out.splicer().begin(0);
        let mut pieces = Vec::new();
        loop {
            let mut buf = vec![0; READ_SIZE];
            let n = source
                .read(&mut buf)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if let Err(err) = out.splicer().push(Bytes::from(buf), &mut pieces) {
                if !out.splicer().has_head() {
                    return Err(err.to_string());
                }
                break;
            }
            out.write(std::mem::take(&mut pieces));
        }
        out.splicer().end_generation(&mut pieces);
        out.write(pieces);
        if let Some(err) = out.io_error() {
            return Err(err.to_owned());
        }
        if !out.splicer().has_head() {
            return Err("no media was written before the crash".into());
        }
        let bytes = finish_file(&mut out)?;
        let duration = out.splicer().duration_secs();
        let tracks = out.splicer().description().to_owned();
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(Recovered {
            bytes,
            duration,
            ended,
            tracks,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
