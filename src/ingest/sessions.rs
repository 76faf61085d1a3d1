//! The HTTP publisher sessions holding streams: an HTTP publisher has no socket whose
//! close ends its session, so a session holds its stream from its first POST until it
//! stops or stays silent for `--ingest-timeout-secs`.

use crate::conn_id::ConnId;
use crate::protocol::StreamName;
use crate::shutdown::Shutdown;
use crate::stream::registry::PublisherGuard;
use crate::stream::{Refusal, Registry, Stream};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct HttpSession {
    session: String,
    /// Tells this session's reaper from a later session's on the same stream.
    token: u64,
    last_post: Instant,
    guard: PublisherGuard,
    /// In every log line about this session.
    conn: ConnId,
}

/// The HTTP publisher sessions holding streams, by stream.
pub struct HttpPublishers {
    registry: Arc<Registry>,
    /// Silence after which a session counts as gone.
    timeout: Duration,
    shutdown: Shutdown,
    sessions: Mutex<HashMap<StreamName, HttpSession>>,
    next_token: AtomicU64,
}

impl HttpPublishers {
    pub fn new(registry: Arc<Registry>, timeout: Duration, shutdown: Shutdown) -> Arc<Self> {
        Arc::new(HttpPublishers {
            registry,
            timeout,
            shutdown,
            sessions: Mutex::default(),
            next_token: AtomicU64::new(0),
        })
    }

    /// The stream `session` publishes to, attaching it on its first POST.
    pub fn hold(
        self: &Arc<Self>,
        name: &StreamName,
        session: &str,
    ) -> Result<Arc<Stream>, Refusal> {
        let mut sessions = self.sessions.lock();
        if let Some(held) = sessions.get_mut(name) {
            if held.session != session {
                return Err(Refusal::PublisherBusy);
            }
            held.last_post = Instant::now();
            return Ok(held.guard.stream().clone());
        }
        let guard = self.registry.attach_publisher(name, session)?;
        let stream = guard.stream().clone();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let conn = ConnId::next();
        sessions.insert(
            name.clone(),
            HttpSession {
                session: session.to_owned(),
                token,
                last_post: Instant::now(),
                guard,
                conn,
            },
        );
        log::info!("HTTP publisher {conn} on {name} (session {session}) started");
        tokio::spawn(self.clone().reap(name.clone(), token));
        Ok(stream)
    }

    /// The connection id of the HTTP session holding `name`, for log lines ("-": none).
    pub fn conn_of(&self, name: &StreamName) -> String {
        self.sessions
            .lock()
            .get(name)
            .map_or_else(|| "-".to_owned(), |held| held.conn.to_string())
    }

    /// Whether `name` is held over HTTP, and if so whether by `session`.
    pub fn holds(&self, name: &StreamName, session: &str) -> Option<bool> {
        self.sessions
            .lock()
            .get(name)
            .map(|held| held.session == session)
    }

    /// Detaches the session `token` (or any, for None) of `name`; dropping its guard
    /// ends the stream if nothing else publishes to it.
    pub fn release(&self, name: &StreamName, token: Option<u64>) -> bool {
        let removed = {
            let mut sessions = self.sessions.lock();
            match sessions.get(name) {
                Some(held) if token.is_none_or(|t| t == held.token) => sessions.remove(name),
                _ => None,
            }
        };
        removed.is_some()
    }

    /// When session `token` of `name` counts as gone, if it still holds the stream.
    fn deadline(&self, name: &StreamName, token: u64) -> Option<Instant> {
        match self.sessions.lock().get(name) {
            Some(held) if held.token == token => Some(held.last_post + self.timeout),
            _ => None,
        }
    }

    /// Ends an HTTP publisher session once it has been idle for the timeout.
    async fn reap(self: Arc<Self>, name: StreamName, token: u64) {
        let conn = self.conn_of(&name);
        let mut shutdown = self.shutdown.clone();
        while let Some(deadline) = self.deadline(&name, token) {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = shutdown.recv() => {
                    self.release(&name, Some(token));
                    return;
                }
            }
            let idle = self
                .deadline(&name, token)
                .is_some_and(|deadline| deadline <= Instant::now());
            if idle && self.release(&name, Some(token)) {
                log::info!(
                    "HTTP publisher {conn} on {name} gone: no POST for {:?}",
                    self.timeout
                );
                return;
            }
        }
    }
}
