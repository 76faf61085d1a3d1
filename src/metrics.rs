//! Server-wide counters, rendered in the Prometheus text format for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Metrics {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    frames_dropped: AtomicU64,
    viewers_lagged: AtomicU64,
    connections_refused: AtomicU64,
    /// Media bytes of every generation still held, by a buffer or by a viewer that has
    /// not yet taken its snapshot: what the server's media costs in memory.
    buffered_bytes: Arc<AtomicU64>,
    /// Connections refused at accept, past `--max-connections` or its per-IP bound.
    connections_over_limit: AtomicU64,
    /// Publishers that sent neither media nor a pong within `--publisher-timeout-secs`.
    publishers_timed_out: AtomicU64,
    webhooks_delivered: AtomicU64,
    webhooks_failed: AtomicU64,
    webhooks_dropped: AtomicU64,
}

impl Metrics {
    pub fn frame_in(&self, bytes: u64, dropped: bool) {
        self.bytes_in.fetch_add(bytes, Relaxed);
        self.frames_in.fetch_add(1, Relaxed);
        if dropped {
            self.frames_dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn bytes_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Relaxed);
    }

    pub fn viewer_lagged(&self) {
        self.viewers_lagged.fetch_add(1, Relaxed);
    }

    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// The gauge each buffer's generations count themselves in.
    pub fn buffered_bytes_gauge(&self) -> Arc<AtomicU64> {
        self.buffered_bytes.clone()
    }

    pub fn connection_over_limit(&self) {
        self.connections_over_limit.fetch_add(1, Relaxed);
    }

    pub fn publisher_timed_out(&self) {
        self.publishers_timed_out.fetch_add(1, Relaxed);
    }

    pub fn webhook_delivered(&self) {
        self.webhooks_delivered.fetch_add(1, Relaxed);
    }

    pub fn webhook_failed(&self) {
        self.webhooks_failed.fetch_add(1, Relaxed);
    }

    pub fn webhook_dropped(&self) {
        self.webhooks_dropped.fetch_add(1, Relaxed);
    }

    /// The Prometheus exposition, with the gauges the registry knows.
    pub fn render(&self, streams: usize, viewers: usize) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "blobcast_streams",
            "gauge",
            "Streams with a publisher or viewer attached.",
            streams as u64,
        );
        metric(
            "blobcast_viewers",
            "gauge",
            "Viewer chunk sockets open.",
            viewers as u64,
        );
        metric(
            "blobcast_bytes_in_total",
            "counter",
            "Frame bytes received from publishers.",
            self.bytes_in.load(Relaxed),
        );
        metric(
            "blobcast_bytes_out_total",
            "counter",
            "Frame bytes sent to viewers.",
            self.bytes_out.load(Relaxed),
        );
        metric(
            "blobcast_frames_in_total",
            "counter",
            "Binary frames received from publishers.",
            self.frames_in.load(Relaxed),
        );
        metric(
            "blobcast_frames_dropped_total",
            "counter",
            "Publisher frames dropped as duplicate or stale.",
            self.frames_dropped.load(Relaxed),
        );
        metric(
            "blobcast_viewers_lagged_total",
            "counter",
            "Viewers disconnected for falling behind.",
            self.viewers_lagged.load(Relaxed),
        );
        metric(
            "blobcast_connections_refused_total",
            "counter",
            "Sockets closed for bad input or a limit.",
            self.connections_refused.load(Relaxed),
        );
        metric(
            "blobcast_buffered_bytes",
            "gauge",
            "Media bytes of the generations still held by a buffer or a joining viewer.",
            self.buffered_bytes.load(Relaxed),
        );
        metric(
            "blobcast_connections_over_limit_total",
            "counter",
            "Connections refused at accept: --max-connections or --max-connections-per-ip.",
            self.connections_over_limit.load(Relaxed),
        );
        metric(
            "blobcast_publishers_timed_out_total",
            "counter",
            "Publishers gone silent (no media, no pong) past --publisher-timeout-secs.",
            self.publishers_timed_out.load(Relaxed),
        );
        metric(
            "blobcast_webhooks_delivered_total",
            "counter",
            "Webhook deliveries a receiver answered with 2xx.",
            self.webhooks_delivered.load(Relaxed),
        );
        metric(
            "blobcast_webhooks_failed_total",
            "counter",
            "Webhook deliveries given up after retrying for 5 minutes.",
            self.webhooks_failed.load(Relaxed),
        );
        metric(
            "blobcast_webhooks_dropped_total",
            "counter",
            "Webhook events dropped, oldest first, from a full queue.",
            self.webhooks_dropped.load(Relaxed),
        );
        out
    }
}
