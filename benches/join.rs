//! What a joining viewer downloads before its first decodable frame, `join=start` against
//! `join=live`, at several restart intervals; and what the WebM scanner costs. Prints
//! figures; asserts nothing.
//!
//! `cargo bench --bench join` (needs ffmpeg). It encodes 60 s of 1280x720 VP8 and Opus at
//! 2.5 Mbit/s once, keyframes every second, as a live-style WebM with unknown sizes; and
//! the same picture as H.264 and AAC in fragmented MP4 (a fragment per keyframe, as
//! Safari's MediaRecorder writes it), which goes through the same runs beside it. For
//! each restart interval (10, 30, 60 s) the first that many seconds are one generation,
//! published in 250 ms pieces to a real server on loopback, on a stream of its own. After
//! every piece a viewer joins with `join=live`, so the worst case (just before the next
//! keyframe) is met whatever the phase; every 5 s of media one joins with `join=start`.
//! `JOIN_BENCH_QUICK=1` runs 10 s of media and the 10 s interval only, for a loaded
//! machine.
//! "Server time" is connect to holding a decodable start on loopback: what the server
//! costs, not what a link would.

#[path = "../integration/common/mod.rs"]
mod common;

use blobcast::mp4;
use blobcast::stream::index::MediaIndex;
use blobcast::webm::{Event, Scanner};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const BITRATE: u64 = 2_500_000;
const RESTART_INTERVALS_S: [u64; 3] = [10, 30, 60];
const PIECE_MS: u64 = 250;
const START_JOIN_EVERY_S: u64 = 5;
/// The link rate the "computed" download times assume.
const LINK_BITS_PER_S: f64 = 10e6;

fn encode(seconds: u64) -> Vec<u8> {
    let path =
        std::env::temp_dir().join(format!("blobcast-join-bench-{}.webm", std::process::id()));
    run_ffmpeg(
        seconds,
        &path,
        &[
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
        ],
    )
}

/// The same picture as fragmented MP4: H.264 and AAC, a fragment per keyframe.
fn encode_mp4(seconds: u64) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("blobcast-join-bench-{}.mp4", std::process::id()));
    run_ffmpeg(
        seconds,
        &path,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "2400k",
            "-maxrate",
            "2400k",
            "-bufsize",
            "2400k",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-f",
            "mp4",
        ],
    )
}

fn run_ffmpeg(seconds: u64, path: &std::path::Path, codec_args: &[&str]) -> Vec<u8> {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={seconds}"
        ))
        .args(codec_args)
        .arg(path)
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg failed");
    let bytes = std::fs::read(path).unwrap();
    let _ = std::fs::remove_file(path);
    bytes
}

/// The recording's first `seconds`: everything before the first Cluster at or past it.
fn first_seconds(webm: &[u8], seconds: u64) -> &[u8] {
    let mut cut = webm.len();
    let mut scanner = Scanner::new();
    scanner
        .push(webm, &mut |event| {
            if let Event::ClusterStart {
                offset,
                timecode: Some(tc),
                ..
            } = event
            {
                if tc.value >= seconds * 1000 {
                    cut = cut.min(offset as usize);
                }
            }
        })
        .unwrap();
    &webm[..cut]
}

/// The MP4's first `seconds`: everything before the first fragment whose video decode
/// time is at or past it.
fn first_seconds_mp4(file: &[u8], seconds: u64) -> &[u8] {
    let mut cut = file.len();
    let mut video = None;
    mp4::Scanner::new()
        .push(file, &mut |event| match event {
            mp4::Event::Movie { tracks, .. } => {
                video = tracks
                    .iter()
                    .find(|t| t.kind == mp4::TrackKind::Video)
                    .map(|t| (t.id, t.timescale as u64));
            }
            mp4::Event::Fragment { range, tracks, .. } => {
                let (id, scale) = video.expect("a video track");
                let time = tracks
                    .iter()
                    .find(|t| t.track_id == id)
                    .and_then(|t| t.base_decode_time);
                if time.is_some_and(|(t, _, _)| t >= seconds * scale) {
                    cut = cut.min(range.start as usize);
                }
            }
            _ => {}
        })
        .unwrap();
    &file[..cut]
}

/// Bytes a viewer received, and how long until it held a decodable start.
struct Join {
    bytes: usize,
    first_decodable: Duration,
}

async fn join(server: &TestServer, stream: &str, query: &str, target: u64) -> Join {
    let started = Instant::now();
    let mut viewer = Viewer::connect_with(server, stream, query).await;
    // A decodable start is held once the viewer reached the buffer's length at join time:
    // the whole generation (start) or the init plus the keyframe cluster onwards (live).
    viewer
        .pump_until("the snapshot", |v| v.length() >= target)
        .await;
    Join {
        bytes: viewer.received_bytes,
        first_decodable: started.elapsed(),
    }
}

/// The worst over one restart interval's generation.
struct Worst {
    container: &'static str,
    /// Bytes of one second of this recording's media.
    one_second: u64,
    interval_s: u64,
    init: u64,
    /// The most bytes from a keyframe-led cluster to the next (or to the end).
    keyframe_interval: u64,
    live: Join,
    start: Join,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What a download of `bytes` takes on the assumed link, on top of the server's time.
fn on_link(bytes: usize, server: Duration) -> f64 {
    bytes as f64 * 8.0 / LINK_BITS_PER_S * 1000.0 + ms(server)
}

/// A recording to publish: its container's name, mime and bytes.
struct Source {
    container: &'static str,
    mime: &'static str,
    bytes: Vec<u8>,
}

async fn run_interval(
    server: &TestServer,
    source: &Source,
    generation: &[u8],
    interval_s: u64,
    bitrate: f64,
) -> Worst {
    let stream = format!("bench-{}-{interval_s}", source.container);
    let mut publisher = Publisher::connect(server, &stream, "session=bench").await;
    publisher.start(source.mime).await;
    let piece = (bitrate / 8.0 * PIECE_MS as f64 / 1000.0) as usize;
    let pieces: Vec<&[u8]> = generation.chunks(piece).collect();
    let start_every = (START_JOIN_EVERY_S * 1000 / PIECE_MS) as usize;

    // The same index the server keeps, to know the init and the keyframe clusters.
    let mut index = MediaIndex::new();
    let mut keyframe_clusters = Vec::new();
    let mut worst = Worst {
        container: source.container,
        one_second: (bitrate / 8.0) as u64,
        interval_s,
        init: 0,
        keyframe_interval: 0,
        live: Join {
            bytes: 0,
            first_decodable: Duration::ZERO,
        },
        start: Join {
            bytes: 0,
            first_decodable: Duration::ZERO,
        },
    };
    println!(
        "\n{}, {interval_s} s restart interval ({} bytes):",
        source.container,
        generation.len()
    );
    println!("| media in the generation | join=start bytes | worst join=live bytes of the last {START_JOIN_EVERY_S} s | start: server time | live: server time (that join) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    // The worst live join since the last line printed.
    let mut window: Option<Join> = None;
    for (i, p) in pieces.iter().enumerate() {
        if i == 0 {
            publisher.send_blob(1, p).await;
        } else {
            publisher.send_chunk(p).await;
        }
        index.feed(p);
        if let Some((init, k)) = index.live_start() {
            worst.init = init;
            if keyframe_clusters.last() != Some(&k) {
                keyframe_clusters.push(k);
            }
        }
        let length = publisher.offset;
        server
            .until_api(&stream, |s| s["buffered_bytes"] == length)
            .await;
        let live = join(server, &stream, "join=live", length).await;
        if window.as_ref().is_none_or(|w| live.bytes > w.bytes) {
            window = Some(live);
        }
        let sent = i + 1;
        if sent % start_every == 0 || sent == pieces.len() {
            let start = join(server, &stream, "", length).await;
            let live = window.take().expect("a live join per piece");
            println!(
                "| {:>4.1} s | {:>10} | {:>9} | {:>6.1} ms | {:>5.1} ms |",
                sent as f64 * PIECE_MS as f64 / 1000.0,
                start.bytes,
                live.bytes,
                ms(start.first_decodable),
                ms(live.first_decodable),
            );
            if start.bytes > worst.start.bytes {
                worst.start = start;
            }
            if live.bytes > worst.live.bytes {
                worst.live = live;
            }
        }
    }
    keyframe_clusters.push(generation.len() as u64);
    worst.keyframe_interval = keyframe_clusters
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    worst
}

/// GB/s of the scanner fed `data` in 64 KiB pieces on this thread, and the events seen.
fn scanner_throughput(data: &[u8], rounds: usize) -> (f64, usize) {
    let started = Instant::now();
    let mut count = 0;
    for _ in 0..rounds {
        let mut scanner = Scanner::new();
        for piece in data.chunks(64 * 1024) {
            scanner.push(piece, &mut |_| count += 1).unwrap();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    ((data.len() * rounds) as f64 / secs / 1e9, count / rounds)
}

/// The scanner's worst case: 16 MiB of the smallest elements it reports, 5-byte empty
/// Clusters and 6-byte SimpleBlocks, after a real init segment.
fn tiny_elements(init: &[u8]) -> Vec<u8> {
    let mut unit = vec![0x1F, 0x43, 0xB6, 0x75, 0x80];
    unit.extend([
        0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    for _ in 0..100 {
        unit.extend([0xA3, 0x84, 0x81, 0, 0, 0x80]);
    }
    [init, &unit.repeat((16 << 20) / unit.len())].concat()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var("JOIN_BENCH_QUICK").is_ok_and(|v| v == "1");
    let intervals: &[u64] = if quick {
        &RESTART_INTERVALS_S[..1]
    } else {
        &RESTART_INTERVALS_S
    };
    let longest = *intervals.iter().max().unwrap();
    println!(
        "encoding {longest} s of 1280x720 VP8+Opus and H.264+AAC at {} Mbit/s with ffmpeg...",
        BITRATE as f64 / 1e6
    );
    let webm = encode(longest);
    let mp4 = encode_mp4(longest);
    let sources = [
        Source {
            container: "WebM",
            mime: "video/webm;codecs=vp8,opus",
            bytes: webm.clone(),
        },
        Source {
            container: "MP4",
            mime: "video/mp4;codecs=avc1,mp4a",
            bytes: mp4,
        },
    ];
    let server = TestServer::with(|c| c.no_record = true).await;
    let mut results = Vec::new();
    for source in &sources {
        let bitrate = source.bytes.len() as f64 * 8.0 / longest as f64;
        println!(
            "{}: {} bytes ({:.2} Mbit/s)",
            source.container,
            source.bytes.len(),
            bitrate / 1e6
        );
        for &interval_s in intervals {
            let generation = match source.container {
                "MP4" => first_seconds_mp4(&source.bytes, interval_s),
                _ => first_seconds(&source.bytes, interval_s),
            };
            results.push(run_interval(&server, source, generation, interval_s, bitrate).await);
        }
    }

    println!("\nWorst joins per restart interval (server time: connect to holding a decodable start, on loopback):");
    println!("| container | restart interval | worst join=start bytes | worst join=live bytes | init + largest keyframe interval | live / that | live in s of media | start: server time | live: server time |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for w in &results {
        let bound = w.init + w.keyframe_interval;
        println!(
            "| {} | {} s | {} | {} | {} + {} = {} | {:.2} | {:.2} s | {:.1} ms | {:.1} ms |",
            w.container,
            w.interval_s,
            w.start.bytes,
            w.live.bytes,
            w.init,
            w.keyframe_interval,
            bound,
            w.live.bytes as f64 / bound as f64,
            w.live.bytes as f64 / w.one_second as f64,
            ms(w.start.first_decodable),
            ms(w.live.first_decodable),
        );
    }
    println!(
        "\nComputed, not measured: the same worst joins over a {} Mbit/s link (download time + the server time above):",
        LINK_BITS_PER_S / 1e6
    );
    println!("| container | restart interval | join=start | join=live |");
    println!("| --- | ---: | ---: | ---: |");
    for w in &results {
        println!(
            "| {} | {} s | {:.0} ms | {:.0} ms |",
            w.container,
            w.interval_s,
            on_link(w.start.bytes, w.start.first_decodable),
            on_link(w.live.bytes, w.live.first_decodable),
        );
    }

    let (gbps, events) = scanner_throughput(&webm, 20);
    println!(
        "\nscanner: {gbps:.2} GB/s on one core, the {longest} s recording in 64 KiB pieces ({events} events)"
    );
    let init_end = results.first().map_or(0, |w| w.init) as usize;
    let hostile = tiny_elements(&webm[..init_end]);
    let (gbps, events) = scanner_throughput(&hostile, 3);
    println!(
        "scanner, worst case: {:.0} MB/s, 16 MiB of 5- and 6-byte elements in 64 KiB pieces ({events} events, {:.0} M events/s)",
        gbps * 1000.0,
        events as f64 * gbps * 1e9 / hostile.len() as f64 / 1e6
    );
}
