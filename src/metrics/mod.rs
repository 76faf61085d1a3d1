//! Server-wide and per-stream metrics, kept in a `prometheus-client` registry and rendered
//! in the text exposition format for `/metrics`. Per-stream series carry a `stream` label;
//! they exist only while the stream does (the stream registry forgets them when it drops
//! a stream), so their number is bounded by `--max-streams`.

mod process;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub use process::ProcessMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewerSocketLabels {
    pub stream: String,
    /// `blob` (the join socket: hello, snapshot, blobs) or `chunk` (live chunks only).
    pub socket: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JoinLabel {
    pub join: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    git: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The `reason` label values of `blobcast_recording_failures_total`.
pub const FAILURE_REASONS: [&str; 4] = ["low_disk", "disk_too_slow", "io", "media"];

/// The figures of one stream, set on each scrape by the stream registry.
pub struct StreamFigures<'a> {
    pub stream: &'a str,
    pub blob_viewers: usize,
    pub chunk_viewers: usize,
    pub ingest_bits_per_second: f64,
    pub generation_age: Option<Duration>,
    pub buffered_bytes: u64,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    bytes_in: Counter,
    bytes_out: Counter,
    frames_in: Counter,
    frames_dropped: Counter,
    viewers_lagged: Counter,
    viewers_moved_to_keyframe: Counter,
    connections_refused: Counter,
    refusals: Family<CodeLabel, Counter>,
    streams: Gauge,
    viewers: Gauge,
    /// Media bytes of every generation still held, by a buffer or by a viewer that has
    /// not yet taken its snapshot: what the server's media costs in memory.
    buffered_bytes: Arc<AtomicU64>,
    buffered_bytes_gauge: Gauge,
    /// Connections refused at accept, past `--max-connections` or its per-IP bound.
    connections_over_limit: Counter,
    /// Publishers that sent neither media nor a pong within `--publisher-timeout-secs`.
    publishers_timed_out: Counter,
    webhooks_delivered: Counter,
    webhooks_failed: Counter,
    webhooks_dropped: Counter,
    stream_viewers: Family<ViewerSocketLabels, Gauge>,
    stream_ingest_bps: Family<StreamLabel, FloatGauge>,
    stream_generation_age: Family<StreamLabel, FloatGauge>,
    stream_buffered_bytes: Family<StreamLabel, Gauge>,
    stream_viewers_lagged: Family<StreamLabel, Counter>,
    stream_viewers_moved_to_keyframe: Family<StreamLabel, Counter>,
    fanout_latency: Histogram,
    join_time: Family<JoinLabel, Histogram>,
    viewer_lag: Histogram,
    handshake: Histogram,
    recording_bytes: Counter,
    recording_failures: Family<ReasonLabel, Counter>,
    recordings: Family<StateLabel, Gauge>,
    recordings_stopped_low_disk: Counter,
    recording_queue: Gauge,
    record_dir_free: Gauge,
    process: ProcessMetrics,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            frames_in: Counter::default(),
            frames_dropped: Counter::default(),
            viewers_lagged: Counter::default(),
            viewers_moved_to_keyframe: Counter::default(),
            connections_refused: Counter::default(),
            refusals: Family::default(),
            streams: Gauge::default(),
            viewers: Gauge::default(),
            buffered_bytes: Arc::default(),
            buffered_bytes_gauge: Gauge::default(),
            connections_over_limit: Counter::default(),
            publishers_timed_out: Counter::default(),
            webhooks_delivered: Counter::default(),
            webhooks_failed: Counter::default(),
            webhooks_dropped: Counter::default(),
            stream_viewers: Family::default(),
            stream_ingest_bps: Family::default(),
            stream_generation_age: Family::default(),
            stream_buffered_bytes: Family::default(),
            stream_viewers_lagged: Family::default(),
            stream_viewers_moved_to_keyframe: Family::default(),
            fanout_latency: seconds_histogram(),
            join_time: Family::new_with_constructor(seconds_histogram),
            // 1 KiB to 32 MiB.
            viewer_lag: Histogram::new(exponential_buckets(1024.0, 2.0, 16)),
            handshake: seconds_histogram(),
            recording_bytes: Counter::default(),
            recording_failures: Family::default(),
            recordings: Family::default(),
            recordings_stopped_low_disk: Counter::default(),
            recording_queue: Gauge::default(),
            record_dir_free: Gauge::default(),
            process: ProcessMetrics::default(),
        };
        // Series of the fixed label values exist from the start, so that rate() sees
        // their first event.
        for join in ["live", "start", "resume"] {
            let _ = metrics.join_time.get_or_create(&JoinLabel { join });
        }
        for reason in FAILURE_REASONS {
            let _ = metrics
                .recording_failures
                .get_or_create(&ReasonLabel { reason });
        }
        metrics.register_all();
        metrics
    }

    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "blobcast_streams",
            "Streams with a publisher or viewer attached",
            self.streams.clone(),
        );
        r.register(
            "blobcast_viewers",
            "Viewer chunk sockets open",
            self.viewers.clone(),
        );
        r.register(
            "blobcast_bytes_in",
            "Frame bytes received from publishers",
            self.bytes_in.clone(),
        );
        r.register(
            "blobcast_bytes_out",
            "Frame bytes sent to viewers",
            self.bytes_out.clone(),
        );
        r.register(
            "blobcast_frames_in",
            "Binary frames received from publishers",
            self.frames_in.clone(),
        );
        r.register(
            "blobcast_frames_dropped",
            "Publisher frames dropped as duplicate or stale",
            self.frames_dropped.clone(),
        );
        r.register(
            "blobcast_viewers_lagged",
            "Viewers disconnected for falling behind",
            self.viewers_lagged.clone(),
        );
        r.register(
            "blobcast_viewers_moved_to_keyframe",
            "Viewers that fell behind and were moved to the newest keyframe cluster instead of being cut",
            self.viewers_moved_to_keyframe.clone(),
        );
        r.register(
            "blobcast_connections_refused",
            "Sockets closed for bad input or a limit",
            self.connections_refused.clone(),
        );
        r.register(
            "blobcast_refusals",
            "Sockets refused or closed by the server, by WebSocket close code (or HTTP status)",
            self.refusals.clone(),
        );
        r.register(
            "blobcast_buffered_bytes",
            "Media bytes of the generations still held by a buffer or a joining viewer",
            self.buffered_bytes_gauge.clone(),
        );
        r.register(
            "blobcast_connections_over_limit",
            "Connections refused at accept: --max-connections or --max-connections-per-ip",
            self.connections_over_limit.clone(),
        );
        r.register(
            "blobcast_publishers_timed_out",
            "Publishers gone silent (no media, no pong) past --publisher-timeout-secs",
            self.publishers_timed_out.clone(),
        );
        r.register(
            "blobcast_webhooks_delivered",
            "Webhook deliveries a receiver answered with 2xx",
            self.webhooks_delivered.clone(),
        );
        r.register(
            "blobcast_webhooks_failed",
            "Webhook deliveries given up after retrying for 5 minutes",
            self.webhooks_failed.clone(),
        );
        r.register(
            "blobcast_webhooks_dropped",
            "Webhook events dropped, oldest first, from a full queue",
            self.webhooks_dropped.clone(),
        );
        r.register("blobcast_stream_viewers", "Open viewer sockets of a stream, by socket (blob: joins with a snapshot; chunk: live chunks)", self.stream_viewers.clone());
        r.register(
            "blobcast_stream_ingest_bytes_per_second",
            "A stream's publisher ingest rate over the last seconds",
            self.stream_ingest_bps.clone(),
        );
        r.register(
            "blobcast_stream_generation_age_seconds",
            "Time since the stream's current generation started",
            self.stream_generation_age.clone(),
        );
        r.register(
            "blobcast_stream_buffered_bytes",
            "Media bytes in a stream's buffer",
            self.stream_buffered_bytes.clone(),
        );
        r.register(
            "blobcast_stream_viewers_lagged",
            "A stream's viewers disconnected for falling behind",
            self.stream_viewers_lagged.clone(),
        );
        r.register(
            "blobcast_stream_viewers_moved_to_keyframe",
            "A stream's viewers moved to the newest keyframe cluster for falling behind",
            self.stream_viewers_moved_to_keyframe.clone(),
        );
        r.register(
            "blobcast_fanout_latency_seconds",
            "From a publisher frame's arrival to a viewer write's completion, per chunk write",
            self.fanout_latency.clone(),
        );
        r.register(
            "blobcast_join_seconds",
            "From a viewer's connect to its first decodable byte sent, by join mode",
            self.join_time.clone(),
        );
        r.register(
            "blobcast_viewer_lag_bytes",
            "How far behind the live edge a chunk viewer is at each write",
            self.viewer_lag.clone(),
        );
        r.register(
            "blobcast_handshake_seconds",
            "WebSocket upgrade handshakes, from request to answer",
            self.handshake.clone(),
        );
        r.register(
            "blobcast_recording_bytes_written",
            "Bytes written to recording files",
            self.recording_bytes.clone(),
        );
        r.register(
            "blobcast_recording_failures",
            "Recordings that failed, by reason",
            self.recording_failures.clone(),
        );
        r.register(
            "blobcast_recordings",
            "Recordings in the catalog, by state",
            self.recordings.clone(),
        );
        r.register(
            "blobcast_recordings_stopped_low_disk",
            "Recordings stopped because free space fell under --min-free-disk",
            self.recordings_stopped_low_disk.clone(),
        );
        r.register(
            "blobcast_recording_queue_bytes",
            "Media bytes queued for the recording writers",
            self.recording_queue.clone(),
        );
        r.register(
            "blobcast_record_dir_free_bytes",
            "Free bytes on the --record-dir filesystem (0 without recording)",
            self.record_dir_free.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                git: env!("BLOBCAST_GIT_HASH"),
            })
            .set(1);
        r.register(
            "blobcast_build_info",
            "The server's version and git commit (value 1)",
            build,
        );
        self.process.register(r);
    }

    pub fn frame_in(&self, bytes: u64, dropped: bool) {
        self.bytes_in.inc_by(bytes);
        self.frames_in.inc();
        if dropped {
            self.frames_dropped.inc();
        }
    }

    pub fn bytes_out(&self, bytes: u64) {
        self.bytes_out.inc_by(bytes);
    }

    /// A viewer of `stream` fell behind and was closed or moved.
    pub fn viewer_lagged(&self, stream: &str) {
        self.viewers_lagged.inc();
        self.stream_viewers_lagged
            .get_or_create(&StreamLabel {
                stream: stream.to_owned(),
            })
            .inc();
    }

    /// A viewer that fell behind was moved to the newest keyframe cluster.
    pub fn viewer_moved_to_keyframe(&self, stream: &str) {
        self.viewers_moved_to_keyframe.inc();
        self.stream_viewers_moved_to_keyframe
            .get_or_create(&StreamLabel {
                stream: stream.to_owned(),
            })
            .inc();
    }

    /// A viewer did not accept a write in time (counted as lagged, server-wide only:
    /// the write path does not know the stream).
    pub fn viewer_write_timed_out(&self) {
        self.viewers_lagged.inc();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A refusal or server-side close with `code`.
    pub fn refused_with(&self, code: u16) {
        self.refusals.get_or_create(&CodeLabel { code }).inc();
    }

    /// The gauge each buffer's generations count themselves in.
    pub fn buffered_bytes_gauge(&self) -> Arc<AtomicU64> {
        self.buffered_bytes.clone()
    }

    pub fn connection_over_limit(&self) {
        self.connections_over_limit.inc();
    }

    pub fn publisher_timed_out(&self) {
        self.publishers_timed_out.inc();
    }

    pub fn webhook_delivered(&self) {
        self.webhooks_delivered.inc();
    }

    pub fn webhook_failed(&self) {
        self.webhooks_failed.inc();
    }

    pub fn webhook_dropped(&self) {
        self.webhooks_dropped.inc();
    }

    pub fn fanout_latency(&self, latency: Duration) {
        self.fanout_latency.observe(latency.as_secs_f64());
    }

    /// `join` is the join mode's wire name (`live`, `start`, `resume`).
    pub fn joined(&self, join: &'static str, took: Duration) {
        self.join_time
            .get_or_create(&JoinLabel { join })
            .observe(took.as_secs_f64());
    }

    pub fn viewer_lag(&self, bytes: u64) {
        self.viewer_lag.observe(bytes as f64);
    }

    pub fn handshake(&self, took: Duration) {
        self.handshake.observe(took.as_secs_f64());
    }

    pub fn recording_written(&self, bytes: u64) {
        self.recording_bytes.inc_by(bytes);
    }

    pub fn recording_failed(&self, reason: &'static str) {
        self.recording_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The catalog holds `count` recordings in `state`; set on each scrape.
    pub fn set_recordings(&self, state: &'static str, count: usize) {
        self.recordings
            .get_or_create(&StateLabel { state })
            .set(count as i64);
    }

    pub fn recording_stopped_low_disk(&self) {
        self.recordings_stopped_low_disk.inc();
    }

    pub fn recording_queue(&self, frames: i64) {
        self.recording_queue.inc_by(frames);
    }

    pub fn record_dir_free(&self, bytes: u64) {
        self.record_dir_free.set(bytes.min(i64::MAX as u64) as i64);
    }

    /// Sets a stream's gauges; called on each scrape, under the stream registry's lock.
    pub fn set_stream(&self, figures: &StreamFigures) {
        let label = StreamLabel {
            stream: figures.stream.to_owned(),
        };
        for (socket, count) in [
            ("blob", figures.blob_viewers),
            ("chunk", figures.chunk_viewers),
        ] {
            self.stream_viewers
                .get_or_create(&ViewerSocketLabels {
                    stream: label.stream.clone(),
                    socket,
                })
                .set(count as i64);
        }
        self.stream_ingest_bps
            .get_or_create(&label)
            .set(figures.ingest_bits_per_second / 8.0);
        match figures.generation_age {
            Some(age) => {
                self.stream_generation_age
                    .get_or_create(&label)
                    .set(age.as_secs_f64());
            }
            None => {
                self.stream_generation_age.remove(&label);
            }
        }
        self.stream_buffered_bytes
            .get_or_create(&label)
            .set(figures.buffered_bytes as i64);
        // Present from the start, so that rate() sees the first lag.
        let _ = self.stream_viewers_lagged.get_or_create(&label);
    }

    /// Removes every series of `stream`: it has gone away.
    pub fn forget_stream(&self, stream: &str) {
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        for socket in ["blob", "chunk"] {
            self.stream_viewers.remove(&ViewerSocketLabels {
                stream: label.stream.clone(),
                socket,
            });
        }
        self.stream_ingest_bps.remove(&label);
        self.stream_generation_age.remove(&label);
        self.stream_buffered_bytes.remove(&label);
        self.stream_viewers_lagged.remove(&label);
        self.stream_viewers_moved_to_keyframe.remove(&label);
    }

    /// The exposition: the server-wide gauges the stream registry knows, every family,
    /// then whatever `extra` appends (the cluster's series), then the end marker.
    pub fn render(
        &self,
        streams: usize,
        viewers: usize,
        extra: impl FnOnce(&mut String),
    ) -> String {
        self.streams.set(streams as i64);
        self.viewers.set(viewers as i64);
        self.buffered_bytes_gauge
            .set(self.buffered_bytes.load(Relaxed).min(i64::MAX as u64) as i64);
        self.process.refresh();
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        extra(&mut out);
        let _ = encode_eof(&mut out);
        classic_text(&out)
    }

    /// The content type of `render`'s text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Renders a registry of another layer (the cluster's) without an end marker.
    pub fn render_registry(registry: &Registry, out: &mut String) {
        let _ = encode_registry(out, registry);
    }
}

/// The OpenMetrics text `prometheus-client` writes, in the classic Prometheus text format
/// (0.0.4) that every scraper and `promtool check metrics` read: there a counter's HELP
/// and TYPE lines name it with its `_total` suffix, and there is no `# EOF`.
fn classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 16 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_total_names_in_the_classic_format() {
        let metrics = Metrics::new();
        metrics.frame_in(10, false);
        metrics.viewer_lagged("cam");
        let text = metrics.render(1, 0, |_| {});
        assert!(text.contains("# TYPE blobcast_bytes_in_total counter\n"));
        assert!(text.contains("# HELP blobcast_bytes_in_total Frame bytes"));
        assert!(text.contains("\nblobcast_bytes_in_total 10\n"));
        assert!(text.contains("blobcast_stream_viewers_lagged_total{stream=\"cam\"} 1\n"));
        assert!(text.contains("# TYPE blobcast_streams gauge\n"));
        assert!(!text.contains("# EOF"));
        metrics.forget_stream("cam");
        assert!(!metrics.render(0, 0, |_| {}).contains("cam"));
    }
}
