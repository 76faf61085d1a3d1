//! Recent publish sessions, by stream. A recorder that loses its connection (a network
//! blip, a laptop lid) comes back as a new publish session, so its recording starts a
//! new file; this remembers each stream's last file for a short while so that the new
//! file can say which one it continues (`continues`, with a `split_reason`), and the
//! catalog shows one broadcast in two files rather than two unrelated recordings.
//!
//! The relay does not tell a dropped publisher from one that stopped and started again:
//! both end the session. So a quick stop and start is linked the same way; a new
//! session after [`RECONNECT_WINDOW`], or with another name prefix, is not.
//!
//! In a cluster a session can also come back on another node, whose catalog knows
//! nothing of the old file: that node is told which file it continues
//! ([`ContinuedFrom`], from the stream's directory entry) and that takes precedence.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How soon after a session ended a new session of the same stream and name prefix is
/// taken for its publisher reconnecting. The recorder page retries within 8 s; an HTTP
/// publisher's session ends `--ingest-timeout-secs` after its last POST.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// The file a publish session was recorded into on another node before it moved here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinuedFrom {
    /// The node whose record folder holds the file.
    pub node: String,
    /// The file's recording id there.
    pub file: String,
    /// The new file's `split_reason`.
    pub reason: String,
}

#[derive(Debug)]
struct Last {
    session: u64,
    prefix: String,
    /// The id of the session's newest file.
    file: String,
    /// None while the session's writer is still running.
    ended: Option<Instant>,
}

impl Last {
    fn recent(&self, now: Instant) -> bool {
        self.ended
            .is_none_or(|ended| now.saturating_duration_since(ended) <= RECONNECT_WINDOW)
    }
}

/// Bounded: a stream's entry goes once its session has been over for the window.
#[derive(Debug, Default)]
pub(super) struct Recent {
    by_stream: Mutex<HashMap<String, Last>>,
    next_session: AtomicU64,
}

impl Recent {
    /// A number for a new recording session, unique in this process.
    pub fn new_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// When `session` looks like the publisher of the stream's previous session coming
    /// back: that session's newest file, and how long ago it ended.
    pub fn continued(
        &self,
        stream: &str,
        prefix: &str,
        session: u64,
        now: Instant,
    ) -> Option<(String, Duration)> {
        let by_stream = self.by_stream.lock();
        let last = by_stream.get(stream)?;
        if last.session == session || last.prefix != prefix || !last.recent(now) {
            return None;
        }
        let since = last
            .ended
            .map_or(Duration::ZERO, |ended| now.saturating_duration_since(ended));
        Some((last.file.clone(), since))
    }

    /// `file` is now the newest file of `session` on `stream`.
    pub fn opened(&self, stream: &str, prefix: &str, session: u64, file: &str, now: Instant) {
        let mut by_stream = self.by_stream.lock();
        by_stream.retain(|_, last| last.recent(now));
        by_stream.insert(
            stream.to_owned(),
            Last {
                session,
                prefix: prefix.to_owned(),
                file: file.to_owned(),
                ended: None,
            },
        );
    }

    /// The publish session `session` of `stream` is over.
    pub fn ended(&self, stream: &str, session: u64, now: Instant) {
        if let Some(last) = self.by_stream.lock().get_mut(stream) {
            if last.session == session {
                last.ended = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_soon_after_continues_the_last_file_and_a_late_one_does_not() {
        let recent = Recent::default();
        let t0 = Instant::now();
        let (one, two, three) = (
            recent.new_session(),
            recent.new_session(),
            recent.new_session(),
        );
        assert_eq!(
            recent.continued("cam", "show", one, t0),
            None,
            "nothing yet"
        );
        recent.opened("cam", "show", one, "show-cam-a", t0);
        recent.opened("cam", "show", one, "show-cam-a-2", t0);
        assert_eq!(recent.continued("cam", "show", one, t0), None, "its own");
        // Still being finalized when the publisher is back: it ended just now.
        assert_eq!(
            recent.continued("cam", "show", two, t0),
            Some(("show-cam-a-2".into(), Duration::ZERO))
        );
        let ended = t0 + Duration::from_secs(1);
        recent.ended("cam", one, ended);
        let back = ended + Duration::from_secs(3);
        assert_eq!(
            recent.continued("cam", "show", two, back),
            Some(("show-cam-a-2".into(), Duration::from_secs(3)))
        );
        assert_eq!(recent.continued("cam", "other", two, back), None, "prefix");
        assert_eq!(recent.continued("cam2", "show", two, back), None, "stream");
        let late = ended + RECONNECT_WINDOW + Duration::from_millis(1);
        assert_eq!(recent.continued("cam", "show", two, late), None, "too late");
        // An old session's end does not touch a newer one's entry, and old entries go.
        recent.opened("cam", "show", two, "show-cam-b", back);
        recent.ended("cam", one, back);
        assert_eq!(
            recent.continued("cam", "show", three, late),
            Some(("show-cam-b".into(), Duration::ZERO))
        );
        recent.ended("cam", two, back);
        recent.opened("mic", "show", three, "show-mic-c", late + RECONNECT_WINDOW);
        assert_eq!(recent.by_stream.lock().len(), 1, "cam's entry expired");
    }
}
