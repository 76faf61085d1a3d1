//! Opening a session's next file: the record it continues (a split, or a publisher
//! that reconnected), a free name claimed in the catalog, and the file created.

use super::{Output, Writer};
use crate::recording::container::Container;
use crate::recording::{names, RecordingInfo, State};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// Names tried for one file (`…Z`, `…Z-2`, …) before giving up.
const NAME_ATTEMPTS: u32 = 1000;

impl Writer {
    /// Opens a new file for the session, named after its start, and catalogs it. The
    /// first file of a session that follows closely on the stream's previous session
    /// says that it continues that one's last file (`sessions`), or the file another
    /// node recorded it into before it moved here.
    pub(super) fn create(&mut self, split_reason: Option<String>, container: Container) -> bool {
        let started = SystemTime::now();
        let (continues, continues_node, split_reason) = match split_reason {
            Some(why) => (self.previous_file.clone(), None, Some(why)),
            // A cluster publisher that moved here: the file is on the node it left.
            None => match self.subject.continues.take() {
                Some(from) => (Some(from.file), Some(from.node), Some(from.reason)),
                None => match self.recorder.recent.continued(
                    &self.subject.stream,
                    &self.subject.prefix,
                    self.subject.session,
                    Instant::now(),
                ) {
                    Some((file, since)) => (
                        Some(file),
                        None,
                        Some(format!(
                            "the publisher reconnected: a new publish session {:.1} s after the previous one ended",
                            since.as_secs_f64()
                        )),
                    ),
                    None => (None, None, None),
                },
            },
        };
        let info = RecordingInfo {
            id: String::new(),
            stream: self.subject.stream.clone(),
            name_prefix: self.subject.prefix.clone(),
            file: String::new(),
            mime: self.subject.mime.clone(),
            started: names::rfc3339(started),
            ended: None,
            duration: None,
            bytes: 0,
            state: State::Recording,
            error: None,
            split_reason,
            continues,
            continues_node,
            generations: 0,
            tracks: None,
        };
        let Some((id, path, opened)) = self.claim_file(info, started, container) else {
            let why = format!("no free file name after {NAME_ATTEMPTS} tries");
            log::error!("recording of {} failed: {why}", self.subject.stream);
            self.shared.fail(why);
            self.stopped = true;
            return false;
        };
        *self.shared.open_entry.lock() = Some(id.clone());
        let file = match opened {
            Ok(file) => file,
            Err(why) => {
                // The entry keeps the id it claimed, which no other recording can have,
                // and names no file that exists: deleting it removes nothing else.
                log::error!("recording of {} failed: {why}", self.subject.stream);
                self.recorder.update(&id, |info| {
                    info.state = State::Failed;
                    info.ended = Some(info.started.clone());
                    info.error = Some(why.clone());
                });
                self.shared.open_entry.lock().take();
                self.shared.fail(why);
                self.stopped = true;
                return false;
            }
        };
        log::info!("recording {} to {}", self.subject.stream, path.display());
        self.recorder.recent.opened(
            &self.subject.stream,
            &self.subject.prefix,
            self.subject.session,
            &id,
            Instant::now(),
        );
        if let Err(err) = self.recorder.persist(&id) {
            // A sidecar we cannot write is a disk we cannot trust.
            self.out = Some(Output::new(id, path, file, started, container));
            self.stop(State::Failed, Some(err.to_string()));
            return false;
        }
        self.previous_file = Some(id.clone());
        self.out = Some(Output::new(id, path, file, started, container));
        true
    }

    /// Claims the first free id for a file started at `started` and creates its file.
    /// Returns the claimed id and the file, or why it could not be created (the id
    /// stays claimed, for the failed entry); None when every name was taken.
    fn claim_file(
        &self,
        mut info: RecordingInfo,
        started: SystemTime,
        container: Container,
    ) -> Option<(String, PathBuf, Result<File, String>)> {
        let dir = self.recorder.dir().to_owned();
        let dir_error = std::fs::create_dir_all(&dir)
            .err()
            .map(|err| format!("cannot create {}: {err}", dir.display()));
        for n in 1..=NAME_ATTEMPTS {
            let id = names::stem(&self.subject.prefix, &self.subject.stream, started, n);
            info.id.clone_from(&id);
            info.file = format!("{id}.{}", container.extension());
            let path = dir.join(&info.file);
            if !self.recorder.claim(info.clone()) {
                continue;
            }
            let opened = match &dir_error {
                // Nothing can be created; still, the failed entry must not name a file
                // that is there.
                Some(_) if path.symlink_metadata().is_ok() => None,
                Some(why) => Some(Err(why.clone())),
                None => match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(file) => Some(Ok(file)),
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => None,
                    Err(err) => Some(Err(format!("cannot create {}: {err}", path.display()))),
                },
            };
            match opened {
                Some(opened) => return Some((id, path, opened)),
                None => self.recorder.release(&id),
            }
        }
        None
    }
}
