//! The cluster's counters, appended to `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ClusterMetrics {
    state_changes: AtomicU64,
    published_messages: AtomicU64,
    published_bytes: AtomicU64,
    publish_retries: AtomicU64,
    log_dropped_frames: AtomicU64,
    read_messages: AtomicU64,
    read_bytes: AtomicU64,
    replicas: AtomicU64,
    replica_resumes: AtomicU64,
    replica_snapshots: AtomicU64,
    replica_refused: AtomicU64,
    claims_refused: AtomicU64,
}

impl ClusterMetrics {
    pub fn state_change(&self) {
        self.state_changes.fetch_add(1, Relaxed);
    }

    pub fn published(&self, bytes: usize) {
        self.published_messages.fetch_add(1, Relaxed);
        self.published_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn publish_retry(&self) {
        self.publish_retries.fetch_add(1, Relaxed);
    }

    pub fn log_dropped(&self) {
        self.log_dropped_frames.fetch_add(1, Relaxed);
    }

    pub fn read(&self, bytes: usize) {
        self.read_messages.fetch_add(1, Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn replica_started(&self) {
        self.replicas.fetch_add(1, Relaxed);
    }

    pub fn replica_stopped(&self) {
        self.replicas.fetch_sub(1, Relaxed);
    }

    pub fn replica_resumed(&self) {
        self.replica_resumes.fetch_add(1, Relaxed);
    }

    pub fn replica_snapshot(&self) {
        self.replica_snapshots.fetch_add(1, Relaxed);
    }

    pub fn replica_refused(&self) {
        self.replica_refused.fetch_add(1, Relaxed);
    }

    pub fn claim_refused(&self) {
        self.claims_refused.fetch_add(1, Relaxed);
    }

    pub fn render(&self, connected: bool, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let counters = [
            ("blobcast_nats_state_changes_total", "NATS connection state changes (connected, disconnected, closed).", &self.state_changes),
            ("blobcast_nats_published_messages_total", "Messages appended to the JetStream log.", &self.published_messages),
            ("blobcast_nats_published_bytes_total", "Payload bytes appended to the JetStream log.", &self.published_bytes),
            ("blobcast_nats_publish_retries_total", "Log appends retried after a failure or timeout.", &self.publish_retries),
            ("blobcast_nats_log_dropped_frames_total", "Accepted frames not appended: the queue to NATS was full.", &self.log_dropped_frames),
            ("blobcast_nats_read_messages_total", "Log messages read by this node's replicas.", &self.read_messages),
            ("blobcast_nats_read_bytes_total", "Payload bytes read from NATS by this node's replicas.", &self.read_bytes),
            ("blobcast_nats_replica_resumes_total", "Replica consumers made again from their last applied sequence.", &self.replica_resumes),
            ("blobcast_nats_replica_snapshots_total", "Replicas that started over from the current generation (the log no longer had their position).", &self.replica_snapshots),
            ("blobcast_nats_replica_refused_frames_total", "Log frames a replica's buffer refused (a gap: it waits for the next generation).", &self.replica_refused),
            ("blobcast_nats_claims_refused_total", "Publisher sessions refused because another node's session holds the stream.", &self.claims_refused),
        ];
        metric(
            "blobcast_nats_connected",
            "gauge",
            "1 while the NATS connection is up.",
            u64::from(connected),
        );
        metric(
            "blobcast_nats_replicas",
            "gauge",
            "Streams this node replicates from NATS for its viewers.",
            self.replicas.load(Relaxed),
        );
        for (name, help, value) in counters {
            metric(name, "counter", help, value.load(Relaxed));
        }
    }
}
