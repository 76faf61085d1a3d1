//! Clusters on NATS JetStream (`--nats`; docs/cluster.md). Everything a node does as a
//! cluster member lives here:
//!
//! - `connection`: the link to NATS, the JetStream log stream and directory bucket;
//! - `wire`: the log's message format (frames, controls, headers, cutting big frames);
//! - `directory`: the KV stream directory and its one-publisher compare-and-set;
//! - `publication`: a publisher node's copy of its stream into the log;
//! - `replica`: a viewer node's copy of a stream out of the log;
//! - `metrics`: the cluster's counters.
//!
//! It may import `stream` (the `Stream`, the `Registry`, the `Tap`), `ingest::frame` (the
//! accept path a replica feeds), `protocol`, `config` and `shutdown`. The rest of the
//! server sees only [`Cluster`]: `claim` and `publish` around a publisher's attach,
//! `watch` when a viewer attaches, `streams`, `health` and `render_metrics` for the API.

pub mod connection;
pub mod directory;
pub mod metrics;
mod publication;
mod replica;
pub mod wire;

use crate::config::Config;
use crate::protocol::StreamName;
use crate::shutdown::Shutdown;
use crate::stream::buffer::Resume;
use crate::stream::{Refusal, Registry, Stream};
use connection::{Link, Nats};
use metrics::ClusterMetrics;
use parking_lot::Mutex;
use publication::Publication;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

pub use directory::Entry;

/// A publisher session's hold on the directory entry of its stream.
#[derive(Debug, Clone)]
pub struct Claim {
    revision: u64,
    session_seq: u64,
    /// The same session was publishing from another node, recording into this file
    /// there: (node, recording id).
    moved_from: Option<(String, String)>,
}

/// How long a publisher's claim waits for NATS before it is let in on this node alone.
const CLAIM_PATIENCE: Duration = Duration::from_secs(2);
/// How long a viewer's attach waits for a starting replica to catch up with the log.
const REPLICA_PATIENCE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Connection(#[from] connection::ConnectionError),
}

/// This node as a cluster member.
pub struct Cluster {
    node: String,
    link: Arc<Link>,
    metrics: Arc<ClusterMetrics>,
    registry: Arc<Registry>,
    max_frame: u64,
    /// Frame bytes one publication may queue for NATS.
    queue_budget: u64,
    stopping: watch::Sender<bool>,
    publications: Mutex<HashMap<StreamName, Arc<Publication>>>,
    /// Streams with a replica task running.
    replicas: Mutex<HashMap<StreamName, ReplicaHandle>>,
}

/// What a viewer attaching on this node needs from the stream's replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    /// It plays from a keyframe (`join=live`): a replica it starts may read the log
    /// from the newest keyframe cluster rather than from the generation's start.
    pub live: bool,
    /// It resumes from this point, which the replica must hold.
    pub resume: Option<Resume>,
}

/// A running replica, as its viewers' attaches see it.
#[derive(Clone)]
struct ReplicaHandle {
    /// Whether it has applied what the log held when it started.
    caught_up: watch::Receiver<bool>,
    /// Asks it to fetch the part of the generation it skipped (a viewer needs it).
    fill: Arc<Notify>,
}

impl Cluster {
    /// Joins the cluster named by `config.nats` (connecting in the background).
    pub fn start(
        config: &Config,
        registry: Arc<Registry>,
        shutdown: Shutdown,
    ) -> Result<Option<Arc<Cluster>>, ClusterError> {
        if config.nats.is_none() {
            return Ok(None);
        }
        let metrics = Arc::new(ClusterMetrics::default());
        let link = Link::start(config, metrics.clone())?;
        let node = config.node_name.clone().unwrap_or_else(default_node_name);
        log::info!("cluster: this node is {node}");
        let cluster = Arc::new(Cluster {
            node,
            link,
            metrics,
            registry,
            max_frame: config.max_frame,
            queue_budget: 2 * config.max_buffer,
            stopping: watch::Sender::new(false),
            publications: Mutex::default(),
            replicas: Mutex::default(),
        });
        // Our tasks watch `stopping`, not `Shutdown`: a Shutdown clone held by a task
        // would keep the server waiting for "every socket closed".
        let weak = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            shutdown.recv().await;
            drop(shutdown);
            if let Some(cluster) = weak.upgrade() {
                cluster.stopping.send_replace(true);
            }
        });
        Ok(Some(cluster))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the node is shutting down.
    async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// The connection once usable; None if the node shuts down first. While shutting
    /// down, the connection only if it is up: the last `stop`s still go out.
    async fn ready_unless_stopping(&self) -> Option<Nats> {
        if self.is_stopping() {
            return self.link.now();
        }
        tokio::select! {
            nats = self.link.connected_and_ready() => Some(nats),
            _ = self.stopped() => None,
        }
    }

    /// Before a publisher session attaches here: refused if another node's session
    /// holds the stream. Writes the directory entry for it (compare-and-set). With NATS
    /// unreachable the session is let in on this node alone (it keeps publishing
    /// locally) and claims the entry once NATS is back.
    pub async fn claim(&self, name: &StreamName, session: &str) -> Result<Option<Claim>, Refusal> {
        let local = self.registry.get(name).and_then(|stream| {
            let presence = stream.presence.lock();
            presence.publisher.as_ref().map(|p| p.id.clone())
        });
        if local.is_some() {
            // This session is here already (its other socket); or another one is, and
            // the local registry refuses it.
            return Ok(None);
        }
        let Some(nats) = self.link.within(CLAIM_PATIENCE).await else {
            log::warn!("cluster: NATS is unreachable; {name} (session {session}) publishes on this node alone for now");
            return Ok(None);
        };
        let mut entry = directory::Entry::fresh(name.as_str(), &self.node, session);
        let claimed = async {
            // Every message of this session will come after the log's end now.
            let end = nats
                .log
                .get_info()
                .await
                .map_err(|e| directory::DirectoryError::Nats(e.to_string()))?;
            entry.session_seq = Some(end.state.last_sequence + 1);
            let (revision, replaced) =
                directory::claim(&nats.directory, name.as_str(), &entry).await?;
            // The session's node died (or the publisher moved before it noticed): the
            // entry it leaves says which file the session was being recorded into.
            let moved_from = replaced
                .filter(|held| held.session == session && held.node != self.node)
                .and_then(|held| Some((held.node, held.recording?)));
            Ok(Claim {
                revision,
                session_seq: end.state.last_sequence + 1,
                moved_from,
            })
        };
        match claimed.await {
            Ok(claim) => Ok(Some(claim)),
            Err(directory::DirectoryError::Busy {
                node,
                session: holder,
            }) => {
                self.metrics.claim_refused();
                log::info!("cluster: {name} refused to session {session}: session {holder} publishes it on node {node}");
                Err(Refusal::PublisherBusy)
            }
            Err(err) => {
                log::warn!("cluster: cannot claim {name} in the directory ({err}); publishing on this node alone for now");
                Ok(None)
            }
        }
    }

    /// After a publisher session attached to `stream` here: copy it to the log, and
    /// if it moved here from another node, link its recording here to the file there.
    pub fn publish(self: &Arc<Self>, stream: &Arc<Stream>, session: &str, claim: Option<Claim>) {
        stream.set_records(true);
        if let Some((node, file)) = claim.as_ref().and_then(|c| c.moved_from.as_ref()) {
            log::info!(
                "cluster: session {session} of {} moved here from {node}, where it was recorded to {file}",
                stream.name()
            );
            let reason = format!("the publisher moved from {node} to {}", self.node);
            stream.continue_recording(node, file, reason);
        }
        let mut publications = self.publications.lock();
        match publications.get(stream.name()) {
            Some(publication) if Arc::ptr_eq(&publication.stream, stream) => {
                publication.continue_as(session, claim);
            }
            _ => {
                let publication = Publication::start(self, stream, session, claim);
                publications.insert(stream.name().clone(), publication);
            }
        }
    }

    /// Ends `publication` if its stream no longer has a publisher here: removes the
    /// stream's tap, which closes its queue.
    fn publication_over(&self, publication: &Arc<Publication>) -> bool {
        let mut publications = self.publications.lock();
        if publication.stream.presence.lock().publisher.is_some() {
            return false;
        }
        let name = publication.stream.name();
        if publications
            .get(name)
            .is_some_and(|p| Arc::ptr_eq(p, publication))
        {
            publications.remove(name);
        }
        publication.stream.set_tap(None);
        true
    }

    /// A viewer attached to `stream` here: make sure a replica feeds it, unless its
    /// publisher is on this node, and wait (a little) until the replica has caught up
    /// with the log, so that a viewer resuming from another node finds its position.
    ///
    /// A replica started for a `join=live` viewer reads the log from the newest keyframe
    /// cluster (after the generation's init segment); a later viewer that needs the
    /// generation from its start, or a resume point inside what was skipped, waits
    /// (a little) while the replica fetches it.
    pub async fn watch(self: &Arc<Self>, stream: &Arc<Stream>, wants: Wants) {
        if stream.presence.lock().publisher.is_some() {
            return;
        }
        let ReplicaHandle {
            mut caught_up,
            fill,
        } = {
            let mut replicas = self.replicas.lock();
            match replicas.get(stream.name()) {
                Some(handle) => handle.clone(),
                None => {
                    let (tell, caught_up) = watch::channel(false);
                    let handle = ReplicaHandle {
                        caught_up,
                        fill: Arc::new(Notify::new()),
                    };
                    replicas.insert(stream.name().clone(), handle.clone());
                    let from_keyframe = wants.live && wants.resume.is_none();
                    tokio::spawn(replica::run(
                        self.clone(),
                        stream.name().clone(),
                        tell,
                        handle.fill.clone(),
                        from_keyframe,
                    ));
                    handle
                }
            }
        };
        let waited = tokio::time::timeout(REPLICA_PATIENCE, caught_up.wait_for(|up| *up))
            .await
            .is_ok();
        if !waited {
            log::warn!(
                "cluster: the replica of {} has not caught up with the log within {REPLICA_PATIENCE:?}; a viewer resuming now may be sent its generation again",
                stream.name()
            );
            return;
        }
        let Some((generation, _, hole_end)) = stream.hole() else {
            return;
        };
        let needs_hole = match wants.resume {
            Some(r) => r.generation == generation && r.offset < hole_end,
            None => !wants.live,
        };
        if !needs_hole {
            return;
        }
        fill.notify_one();
        let mut media = stream.watch_media();
        let filled = tokio::time::timeout(REPLICA_PATIENCE, async {
            while stream.hole().is_some() {
                if media.changed().await.is_err() {
                    break;
                }
            }
        });
        if filled.await.is_err() {
            log::warn!(
                "cluster: the replica of {} has not fetched the start of generation {generation} within {REPLICA_PATIENCE:?}; a viewer that wanted it joins at the live edge",
                stream.name()
            );
        }
    }

    /// Whether the replica of `name` may stop: true unless a viewer came back.
    fn replica_over(&self, name: &StreamName, stream: Option<&Arc<Stream>>) -> bool {
        let mut replicas = self.replicas.lock();
        if stream.is_some_and(|s| s.presence.lock().has_viewers()) {
            return false;
        }
        replicas.remove(name);
        true
    }

    /// Every stream published in the cluster, from the directory; None when NATS
    /// cannot be asked.
    pub async fn streams(&self) -> Option<Vec<Entry>> {
        let nats = self.link.now()?;
        let listing =
            tokio::time::timeout(Duration::from_secs(2), directory::list(&nats.directory));
        match listing.await {
            Ok(Ok(entries)) => Some(entries),
            Ok(Err(err)) => {
                log::debug!("cluster: cannot list the directory: {err}");
                None
            }
            Err(_) => None,
        }
    }

    /// One stream's directory entry.
    pub async fn stream(&self, name: &StreamName) -> Option<Entry> {
        let nats = self.link.now()?;
        let read = directory::read(&nats.directory, name.as_str());
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(entry)) => entry.map(|(entry, _)| entry),
            _ => None,
        }
    }

    /// The NATS connection's state, for `/healthz`.
    pub fn health(&self) -> &'static str {
        match (self.link.is_ready(), self.link.is_connected()) {
            (true, true) => "connected",
            (false, true) => "setting up",
            (_, false) => "disconnected",
        }
    }

    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(self.link.is_connected(), out);
    }
}

/// The host name and a random suffix: unique even for several nodes on one machine.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}-{:06x}", random & 0xff_ffff)
}
