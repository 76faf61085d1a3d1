//! What a joining viewer downloads before its first decodable frame, `join=start` against
//! `join=live`, and what the WebM scanner costs. Prints figures; asserts nothing.
//!
//! `cargo bench --bench join` (needs ffmpeg: it encodes 30 s of 2.5 Mbit/s VP8 + Opus
//! with keyframes every second, a live-style WebM with unknown sizes, then publishes it as
//! one 30 s generation in 250 ms pieces to a real server on loopback and joins it every
//! few seconds both ways).

#[path = "../integration/common/mod.rs"]
mod common;

use blobcast::webm::{Event, Scanner};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const BITRATE: u64 = 2_500_000;
const SECONDS: u64 = 30;
const PIECE_MS: u64 = 250;

fn encode() -> Vec<u8> {
    let path =
        std::env::temp_dir().join(format!("blobcast-join-bench-{}.webm", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=30:duration={SECONDS}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={SECONDS}"
        ))
        .args([
            "-c:v",
            "libvpx",
            "-b:v",
            "2400k",
            "-minrate",
            "2400k",
            "-maxrate",
            "2400k",
            "-g",
            "30",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-c:a",
            "libopus",
            "-b:a",
            "96k",
            "-live",
            "1",
            "-cluster_time_limit",
            "250",
            "-f",
            "webm",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg failed");
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    bytes
}

/// Bytes a viewer receives, and how long until it holds a decodable start.
struct Join {
    bytes: usize,
    first_decodable: Duration,
}

async fn join(server: &TestServer, query: &str, target: u64) -> Join {
    let started = Instant::now();
    let mut viewer = Viewer::connect_with(server, "bench", query).await;
    // A decodable start is held once the viewer reached the buffer's length at join time:
    // the whole generation (start) or the init plus the keyframe cluster onwards (live).
    viewer
        .pump_until("the snapshot", |v| v.length() >= target)
        .await;
    let first_decodable = started.elapsed();
    Join {
        bytes: viewer.received_bytes,
        first_decodable,
    }
}

fn scanner_throughput(generation: &[u8]) -> f64 {
    let rounds = 20;
    let mut events = Vec::new();
    let started = Instant::now();
    let mut count = 0;
    for _ in 0..rounds {
        let mut scanner = Scanner::new();
        for piece in generation.chunks(64 * 1024) {
            scanner.push(piece, &mut events).unwrap();
            count += events
                .iter()
                .filter(|e| matches!(e, Event::Block { .. }))
                .count();
            events.clear();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(count > 0);
    (generation.len() * rounds) as f64 / secs / 1e9
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "encoding {SECONDS} s of 1280x720 VP8+Opus at {} Mbit/s with ffmpeg...",
        BITRATE as f64 / 1e6
    );
    let webm = encode();
    let actual_bitrate = webm.len() as f64 * 8.0 / SECONDS as f64;
    println!(
        "encoded {} bytes ({:.2} Mbit/s)",
        webm.len(),
        actual_bitrate / 1e6
    );

    let server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "bench", "session=bench").await;
    publisher.start("video/webm;codecs=vp8,opus").await;
    let piece = (actual_bitrate / 8.0 * PIECE_MS as f64 / 1000.0) as usize;
    let pieces: Vec<&[u8]> = webm.chunks(piece).collect();
    let per_second = (1000 / PIECE_MS) as usize;

    println!();
    println!("| media in the generation | join=start bytes | join=live bytes | start: first decodable | live: first decodable |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let mut worst = (0usize, 0usize);
    publisher.send_blob(1, pieces[0]).await;
    for (i, p) in pieces.iter().enumerate().skip(1) {
        publisher.send_chunk(p).await;
        let sent = i + 1;
        if sent % (5 * per_second) == 0 || sent == pieces.len() {
            let length = publisher.offset;
            server
                .until_api("bench", |s| s["buffered_bytes"] == length)
                .await;
            let start = join(&server, "", length).await;
            let live = join(&server, "join=live", length).await;
            worst = (worst.0.max(start.bytes), worst.1.max(live.bytes));
            println!(
                "| {:>4.1} s | {:>10} | {:>9} | {:>8.1} ms | {:>8.1} ms |",
                sent as f64 * PIECE_MS as f64 / 1000.0,
                start.bytes,
                live.bytes,
                start.first_decodable.as_secs_f64() * 1000.0,
                live.first_decodable.as_secs_f64() * 1000.0
            );
        }
    }
    let keyframe_interval_bytes = actual_bitrate / 8.0;
    println!();
    println!(
        "worst join=start {} bytes; worst join=live {} bytes = {:.2} keyframe intervals of media (1 s = {:.0} bytes)",
        worst.0,
        worst.1,
        worst.1 as f64 / keyframe_interval_bytes,
        keyframe_interval_bytes
    );
    println!(
        "scanner: {:.2} GB/s on one core, fed the 30 s generation in 64 KiB pieces",
        scanner_throughput(&webm)
    );
}
