//! What an operator reads: `/metrics` passes `promtool check metrics` with streams
//! coming and going, a stream's series go with it, the histograms move under a short
//! load, and one viewer's log lines share its connection id from connect to close.

mod common;

use common::logs::{capture_logs, LINES};
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const MIME: &str = "video/webm;codecs=vp8,opus";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Runs `promtool check metrics` on `body`; `false` (skipped, with a line saying so)
/// when promtool is not installed, which under CI is a failure.
fn promtool_accepts(body: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) => {
            assert!(
                !in_ci(),
                "promtool is not installed: under CI that is a failure"
            );
            eprintln!("SKIPPED promtool check: `apt-get install prometheus` (.ci/run does)");
            return false;
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

async fn metrics(server: &TestServer) -> String {
    let (status, body) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The value of the sample whose line starts with `series ` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn until_metrics(server: &TestServer, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = metrics(server).await;
        if check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics never showed {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(server: &TestServer, stream: &str) -> Publisher {
    let mut publisher = Publisher::connect(server, stream, "session=s").await;
    publisher.start(MIME).await;
    let pieces = chrome_pieces();
    let split = pieces.len() * 2 / 3;
    publisher.publish_generation(1, &pieces[..split]).await;
    let length = publisher.offset;
    server
        .until_api(stream, |s| s["buffered_bytes"] == length)
        .await;
    publisher
}

#[tokio::test]
async fn metrics_pass_promtool_and_a_streams_series_go_when_it_ends() {
    capture_logs();
    let server = TestServer::start().await;
    let publisher = publish(&server, "alpha").await;
    let viewer = Viewer::connect(&server, "alpha").await;
    let other = publish(&server, "beta").await;
    let body = until_metrics(&server, "alpha's viewers", |b| {
        sample(
            b,
            r#"blobcast_stream_viewers{stream="alpha",socket="chunk"}"#,
        ) == Some(1.0)
    })
    .await;
    assert!(sample(&body, r#"blobcast_stream_buffered_bytes{stream="alpha"}"#).unwrap() > 0.0);
    // The rate is measured over whole seconds: here only its series is checked.
    assert!(sample(
        &body,
        r#"blobcast_stream_ingest_bytes_per_second{stream="alpha"}"#
    )
    .is_some());
    assert!(sample(
        &body,
        r#"blobcast_stream_generation_age_seconds{stream="beta"}"#
    )
    .is_some());
    assert_eq!(sample(&body, "blobcast_streams"), Some(2.0));
    assert!(body.contains("blobcast_build_info{version="));
    assert!(sample(&body, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&body, "process_open_fds").unwrap() > 0.0);
    promtool_accepts(&body);

    // alpha goes away: its publisher and its viewer leave.
    drop((publisher, viewer));
    let body = until_metrics(&server, "no series of alpha", |b| {
        !b.contains(r#"stream="alpha""#)
    })
    .await;
    assert!(body.contains(r#"blobcast_stream_buffered_bytes{stream="beta"}"#));
    assert_eq!(sample(&body, "blobcast_streams"), Some(1.0));
    promtool_accepts(&body);
    drop(other);
    let body = until_metrics(&server, "no stream series", |b| !b.contains("stream=\"")).await;
    promtool_accepts(&body);
}

#[tokio::test]
async fn histograms_move_under_a_short_load() {
    capture_logs();
    let server = TestServer::start().await;
    let pieces = chrome_pieces();
    let mut publisher = Publisher::connect(&server, "cam", "session=s").await;
    publisher.start(MIME).await;
    let split = pieces.len() / 2;
    publisher.publish_generation(1, &pieces[..split]).await;
    let published = publisher.offset;
    server
        .until_api("cam", |s| s["buffered_bytes"] == published)
        .await;
    let mut from_start = Viewer::connect(&server, "cam").await;
    let mut live = Viewer::connect_with(&server, "cam", "join=live").await;
    from_start
        .pump_until("the buffer", |v| v.length() == published)
        .await;
    live.pump_until("the live edge", |v| v.length() == published)
        .await;
    // The rest of the recording arrives live: one fan-out write per chunk and viewer.
    for piece in &pieces[split..] {
        publisher.send_chunk(piece).await;
    }
    let end = publisher.offset;
    from_start
        .pump_until("the end", |v| v.length() == end)
        .await;
    live.pump_until("the end", |v| v.length() == end).await;

    let body = metrics(&server).await;
    let count = |series: &str| sample(&body, series).unwrap_or(0.0);
    assert_eq!(
        count(r#"blobcast_join_seconds_count{join="start"}"#),
        1.0,
        "{body}"
    );
    assert_eq!(
        count(r#"blobcast_join_seconds_count{join="live"}"#),
        1.0,
        "{body}"
    );
    let writes = count("blobcast_fanout_latency_seconds_count");
    assert!(writes >= 2.0, "fan-out writes counted: {body}");
    // Filled buckets: on a loopback socket every write finishes well within 16 s.
    assert_eq!(
        count(r#"blobcast_fanout_latency_seconds_bucket{le="8.192"}"#),
        writes,
        "{body}"
    );
    assert!(count("blobcast_viewer_lag_bytes_count") >= 2.0, "{body}");
    // Two publisher sockets and four viewer sockets were handshaken.
    assert_eq!(count("blobcast_handshake_seconds_count"), 6.0, "{body}");
}

#[tokio::test]
async fn one_viewers_log_lines_share_its_connection_id() {
    capture_logs();
    let server = TestServer::start().await;
    let mut publisher = publish(&server, "story").await;
    let mut viewer = Viewer::connect(&server, "story").await;
    let published = publisher.offset;
    viewer
        .pump_until("the buffer", |v| v.length() == published)
        .await;
    publisher.send_chunk(b"one more chunk").await;
    let end = publisher.offset;
    viewer.pump_until("the chunk", |v| v.length() == end).await;
    drop(viewer);

    // The chunk socket's lines: connected, the frames it was sent, disconnected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let story = loop {
        let lines = LINES.lock().unwrap().clone();
        let connected = lines
            .iter()
            .find(|l| l.contains("on story/chunk connected"))
            .expect("the viewer's connect line")
            .clone();
        let id = connected
            .split_whitespace()
            .nth(1)
            .expect("an id after `viewer`")
            .to_owned();
        assert!(
            id.starts_with('c') && id[1..].parse::<u64>().is_ok(),
            "a connection id in {connected:?}"
        );
        let mine: Vec<String> = lines
            .into_iter()
            .filter(|l| l.starts_with(&format!("viewer {id} ")))
            .collect();
        if mine.iter().any(|l| l.ends_with("disconnected")) {
            break mine;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no close line for {id}: {mine:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(story[0].ends_with("connected"), "{story:?}");
    assert!(
        story
            .iter()
            .any(|l| l.contains("sending") && l.contains("bytes")),
        "its frames are in its story: {story:?}"
    );
    assert!(story.last().unwrap().ends_with("disconnected"), "{story:?}");
    // The other connections have ids of their own.
    let blob = LINES
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("on story/blob connected"))
        .cloned()
        .unwrap();
    assert!(!story.contains(&blob));
    assert!(
        LINES
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("joins start")),
        "the join mode is logged"
    );
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// None (with a line saying why) when it cannot be mounted here; under CI a failure.
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = scratch_dir("small-disk");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            let _ = std::fs::remove_dir(&dir);
            assert!(!in_ci(), "cannot mount a tmpfs: CI runs as root and must");
            eprintln!("SKIPPED --min-free-disk test: mounting a tmpfs needs root");
            return None;
        }
        Some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn free_bytes(dir: &std::path::Path) -> u64 {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
    stat.f_bavail as u64 * stat.f_frsize as u64
}

#[tokio::test]
async fn min_free_disk_stops_the_recording_before_the_disk_fills_and_the_stream_goes_on() {
    capture_logs();
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    const MIN_FREE: u64 = 7 << 20;
    let record_dir = disk.0.clone();
    let server = TestServer::with(|c| {
        c.record_dir = record_dir;
        c.min_free_disk = MIN_FREE;
    })
    .await;
    let mut publisher = Publisher::connect(&server, "cam", "session=s").await;
    publisher.start(MIME).await;
    let mut viewer = Viewer::connect(&server, "cam").await;
    let pieces = chrome_pieces();
    let recording_failed = |list: &serde_json::Value| {
        list.as_array()
            .and_then(|l| l.first())
            .is_some_and(|r| r["state"] == "failed")
    };
    // ~170 KiB a generation: the recording passes 1 MiB, the margin, within a dozen.
    let mut stopped_at = None;
    for g in 1..=40u64 {
        publisher.publish_generation(g, &pieces).await;
        viewer
            .pump_until(&format!("generation {g}"), |v| {
                v.generation == Some(g) && v.length() == CHROME.len() as u64
            })
            .await;
        let (_, list) = server.get_json("/api/recordings").await;
        if recording_failed(&list) {
            stopped_at = Some(g);
            break;
        }
    }
    let stopped_at = stopped_at.expect("the recording stopped under --min-free-disk");
    let (_, list) = server.get_json("/api/recordings").await;
    let error = list[0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("--min-free-disk"), "{list:#}");
    // Stopped before the disk filled: what is left is about the margin.
    let free = free_bytes(&disk.0);
    assert!(free > MIN_FREE - (1 << 20), "only {free} bytes left");
    assert!(
        list[0]["bytes"].as_u64().unwrap() > 0,
        "what was recorded stays: {list:#}"
    );

    // The live stream goes on: the next generations reach the viewer.
    for g in stopped_at + 1..=stopped_at + 2 {
        publisher.publish_generation(g, &pieces).await;
        viewer
            .pump_until(&format!("generation {g} after the stop"), |v| {
                v.generation == Some(g) && v.length() == CHROME.len() as u64
            })
            .await;
    }
    let body = metrics(&server).await;
    assert_eq!(
        sample(&body, "blobcast_recordings_stopped_low_disk_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"blobcast_recording_failures_total{reason="low_disk"}"#
        ),
        Some(1.0)
    );
    assert!(sample(&body, "blobcast_recording_bytes_written_total").unwrap() > 0.0);
    let reported = sample(&body, "blobcast_record_dir_free_bytes").unwrap();
    assert!(reported > 0.0 && reported <= (8 << 20) as f64, "{reported}");
    assert!(
        LINES
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("recording of cam stopped") && l.contains("--min-free-disk")),
        "a log line says why"
    );
    drop(viewer);
    drop(publisher);
    let mut server = server;
    server.shutdown().await;
}

#[tokio::test]
async fn stream_stats_list_each_viewer_socket_with_its_figures() {
    capture_logs();
    let server = TestServer::start().await;
    let publisher = publish(&server, "stats").await;
    let published = publisher.offset;
    let mut from_start = Viewer::connect(&server, "stats").await;
    let mut live = Viewer::connect_with(&server, "stats", "join=live").await;
    from_start
        .pump_until("the buffer", |v| v.length() == published)
        .await;
    live.pump_until("the live edge", |v| v.length() == published)
        .await;

    let (status, stats) = server.get_json("/api/streams/stats/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["stream"]["name"], "stats");
    assert_eq!(stats["blob_viewers"], 2);
    assert_eq!(stats["chunk_viewers"], 2);
    assert!(
        stats["generation_age_seconds"].as_f64().is_some(),
        "{stats}"
    );
    let rows = stats["viewers"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{stats:#}");
    let mut modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    modes.sort();
    assert_eq!(modes, ["chunk", "chunk", "live", "start"]);
    let start_row = rows.iter().find(|r| r["mode"] == "start").unwrap();
    // The media and each frame's 16-byte header.
    let sent = start_row["bytes_sent"].as_u64().unwrap();
    let frames = chrome_pieces().len() as u64;
    assert!(
        sent >= published && sent <= published + 16 * frames,
        "{start_row}"
    );
    for row in rows {
        assert!(row["id"].as_u64().unwrap() > 0);
        assert!(row["address"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(row["connected_since"].as_u64().unwrap() > 1_700_000_000);
        assert!(row["lag_bytes"].is_u64());
    }

    drop(from_start);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = server.get_json("/api/streams/stats/stats").await;
        if stats["viewers"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = server.get_json("/api/streams/nobody/stats").await;
    assert_eq!(status, 404);
    drop((publisher, live));
}

#[tokio::test]
async fn the_dashboard_uses_only_series_the_server_exposes() {
    capture_logs();
    let dashboard = include_str!("../docs/ops/blobcast-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(dashboard).expect("valid JSON");
    assert!(parsed["panels"].as_array().unwrap().len() > 10);
    let server = TestServer::with(|c| c.max_viewers = 1).await;
    let _publisher = publish(&server, "dash").await;
    let _viewer = Viewer::connect(&server, "dash").await;
    // A refusal, for the refusals by close code.
    let mut refused = connect(&server.ws_url("/ws/watch/dash/chunk")).await;
    assert_eq!(closed_with(&mut refused).await.0, 4429);
    let body = until_metrics(&server, "a refusal", |b| {
        b.contains("blobcast_refusals_total{")
    })
    .await;
    let mut names: Vec<&str> = Vec::new();
    for (i, _) in dashboard
        .match_indices("blobcast_")
        .chain(dashboard.match_indices("process_"))
    {
        let name = &dashboard[i..];
        let end = name
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(name.len());
        names.push(&name[..end]);
    }
    names.sort();
    names.dedup();
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "the dashboard uses {name}, which /metrics does not have"
        );
    }
}
