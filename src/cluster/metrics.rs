//! The cluster's counters, appended to `/metrics` (a `prometheus-client` registry of
//! their own, rendered after the server's families).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug)]
pub struct ClusterMetrics {
    registry: Registry,
    connected: Gauge,
    state_changes: Counter,
    published_messages: Counter,
    published_bytes: Counter,
    publish_retries: Counter,
    log_dropped_frames: Counter,
    read_messages: Counter,
    read_bytes: Counter,
    replicas: Gauge,
    replica_resumes: Counter,
    replica_snapshots: Counter,
    replica_refused: Counter,
    replica_keyframe_starts: Counter,
    replica_fills: Counter,
    claims_refused: Counter,
}

impl Default for ClusterMetrics {
    fn default() -> ClusterMetrics {
        let m = ClusterMetrics {
            registry: Registry::default(),
            connected: Gauge::default(),
            state_changes: Counter::default(),
            published_messages: Counter::default(),
            published_bytes: Counter::default(),
            publish_retries: Counter::default(),
            log_dropped_frames: Counter::default(),
            read_messages: Counter::default(),
            read_bytes: Counter::default(),
            replicas: Gauge::default(),
            replica_resumes: Counter::default(),
            replica_snapshots: Counter::default(),
            replica_refused: Counter::default(),
            replica_keyframe_starts: Counter::default(),
            replica_fills: Counter::default(),
            claims_refused: Counter::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "blobcast_nats_connected",
            "1 while the NATS connection is up",
            m.connected.clone(),
        );
        registry.register(
            "blobcast_nats_replicas",
            "Streams this node replicates from NATS for its viewers",
            m.replicas.clone(),
        );
        let counters = [
            ("blobcast_nats_state_changes", "NATS connection state changes (connected, disconnected, closed)", &m.state_changes),
            ("blobcast_nats_published_messages", "Messages appended to the JetStream log", &m.published_messages),
            ("blobcast_nats_published_bytes", "Payload bytes appended to the JetStream log", &m.published_bytes),
            ("blobcast_nats_publish_retries", "Log appends retried after a failure or timeout", &m.publish_retries),
            ("blobcast_nats_log_dropped_frames", "Accepted frames not appended: the queue to NATS was full", &m.log_dropped_frames),
            ("blobcast_nats_read_messages", "Log messages read by this node's replicas", &m.read_messages),
            ("blobcast_nats_read_bytes", "Payload bytes read from NATS by this node's replicas", &m.read_bytes),
            ("blobcast_nats_replica_resumes", "Replica consumers made again from their last applied sequence", &m.replica_resumes),
            ("blobcast_nats_replica_snapshots", "Replicas that started over from the current generation (the log no longer had their position)", &m.replica_snapshots),
            ("blobcast_nats_replica_refused_frames", "Log frames a replica's buffer refused (a gap: it waits for the next generation)", &m.replica_refused),
            ("blobcast_nats_replica_keyframe_starts", "Replicas that read their first generation from its newest keyframe cluster, for a join=live viewer", &m.replica_keyframe_starts),
            ("blobcast_nats_replica_fills", "Skipped generation starts a replica fetched for a viewer that needed them", &m.replica_fills),
            ("blobcast_nats_claims_refused", "Publisher sessions refused because another node's session holds the stream", &m.claims_refused),
        ];
        for (name, help, counter) in counters {
            // Counters are rendered with the `_total` suffix: the names stay as they were.
            registry.register(name, help, counter.clone());
        }
        ClusterMetrics { registry, ..m }
    }
}

impl ClusterMetrics {
    pub fn state_change(&self) {
        self.state_changes.inc();
    }

    pub fn published(&self, bytes: usize) {
        self.published_messages.inc();
        self.published_bytes.inc_by(bytes as u64);
    }

    pub fn publish_retry(&self) {
        self.publish_retries.inc();
    }

    pub fn log_dropped(&self) {
        self.log_dropped_frames.inc();
    }

    pub fn read(&self, bytes: usize) {
        self.read_messages.inc();
        self.read_bytes.inc_by(bytes as u64);
    }

    pub fn replica_started(&self) {
        self.replicas.inc();
    }

    pub fn replica_stopped(&self) {
        self.replicas.dec();
    }

    pub fn replica_resumed(&self) {
        self.replica_resumes.inc();
    }

    pub fn replica_snapshot(&self) {
        self.replica_snapshots.inc();
    }

    pub fn replica_refused(&self) {
        self.replica_refused.inc();
    }

    pub fn replica_keyframe_start(&self) {
        self.replica_keyframe_starts.inc();
    }

    pub fn replica_filled(&self) {
        self.replica_fills.inc();
    }

    pub fn claim_refused(&self) {
        self.claims_refused.inc();
    }

    pub fn render(&self, connected: bool, out: &mut String) {
        self.connected.set(i64::from(connected));
        crate::metrics::Metrics::render_registry(&self.registry, out);
    }
}
