//! Cluster benchmark: the same live stream relayed by one node, then by a cluster of
//! three nodes on one nats-server (docs/cluster.md), in one invocation.
//!
//! ```sh
//! cargo bench --bench cluster                         # 200 viewers, 10 s per run
//! cargo bench --bench cluster -- --viewers 1000 --seconds 20
//! ```
//!
//! Single node: publisher and viewers on one `blobcast`. Cluster: the publisher on node
//! 1, the viewers split over nodes 2 and 3, which replicate the stream from NATS. Each
//! run reports chunk latency (publisher send to viewer receive; the send time is the
//! first 8 bytes of every chunk's payload) at p50/p99/max, whether every viewer got
//! every chunk, the CPU seconds of each node and of nats-server over the window, and the
//! bytes each node read from NATS (`blobcast_nats_read_bytes_total`), which must be one
//! copy of the stream per node whatever the viewers. The NATS hop's cost is the
//! cluster's p99 minus the single node's, measured side by side.
//!
//! Options (after `--`): `--viewers N` (default 200), `--seconds S` (10), `--kbps K`
//! (2000), `--chunk-ms M` (250).

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const HEADER_LEN: usize = 16;
const STREAM: &str = "bench";
const BLOB_BYTES: usize = 4096;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

struct Options {
    viewers: usize,
    seconds: f64,
    kbps: u64,
    chunk_ms: u64,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            viewers: 200,
            seconds: 10.0,
            kbps: 2000,
            chunk_ms: 250,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            match args[i].as_str() {
                "--viewers" => o.viewers = value.parse().expect("--viewers N"),
                "--seconds" => o.seconds = value.parse().expect("--seconds S"),
                "--kbps" => o.kbps = value.parse().expect("--kbps K"),
                "--chunk-ms" => o.chunk_ms = value.parse().expect("--chunk-ms M"),
                _ => {
                    i += 1; // cargo bench's own flags (--bench)
                    continue;
                }
            }
            i += 2;
        }
        o
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process stopped on drop.
struct Process {
    child: Child,
    port: u16,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn cpu_secs(&self) -> f64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        ticks as f64 / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server(store: &std::path::Path) -> Process {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Process { child, port }
}

fn blobcast(nats: Option<&Process>, name: &str, max_viewers: usize) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blobcast"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-record"])
        .args(["--max-viewers", &max_viewers.to_string()])
        .env_remove("BLOBCAST_NATS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(nats) = nats {
        command
            .arg("--nats")
            .arg(format!("nats://127.0.0.1:{}", nats.port))
            .args(["--node-name", name]);
    }
    let mut child = command.spawn().expect("the blobcast binary");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("an address line").unwrap();
    std::thread::spawn(move || for _ in lines {});
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Process { child, port }
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    text
}

async fn until_connected(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(port, "/healthz").await.contains("nats: connected") {
        assert!(Instant::now() < deadline, "node never connected to NATS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(port: u16, name: &str) -> u64 {
    let text = http_get(port, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// One viewer: reads its chunk socket, timing every chunk; drains its blob socket.
async fn viewer(
    port: u16,
    samples: Arc<Mutex<Vec<u32>>>,
    chunks: Arc<Mutex<Vec<usize>>>,
    until: Instant,
) {
    let url = |socket: &str| format!("ws://127.0.0.1:{port}/ws/watch/{STREAM}/{socket}");
    let (mut chunk, _) = tokio_tungstenite::connect_async(url("chunk"))
        .await
        .expect("chunk socket");
    let (blob, _) = tokio_tungstenite::connect_async(url("blob"))
        .await
        .expect("blob socket");
    tokio::spawn(blob.for_each(|_| async {}));
    let mut mine = Vec::new();
    let mut count = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until.into(), chunk.next()).await {
        if let Message::Binary(frame) = message {
            if frame.len() >= HEADER_LEN + 8 {
                let sent =
                    u64::from_be_bytes(frame[HEADER_LEN..HEADER_LEN + 8].try_into().unwrap());
                mine.push(((now_ns().saturating_sub(sent)) / 1000) as u32);
                count += 1;
            }
        }
    }
    samples.lock().unwrap().extend(mine);
    chunks.lock().unwrap().push(count);
}

struct Row {
    label: &'static str,
    latencies: Vec<u32>,
    chunks_sent: usize,
    short_viewers: usize,
    cpu: Vec<(String, f64)>,
    nats_read: Vec<(String, u64)>,
    stream_bytes: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Publishes for the window to `publisher_port`, viewers on `viewer_ports` (split
/// evenly), and measures.
async fn run(
    label: &'static str,
    options: &Options,
    publisher_port: u16,
    viewer_ports: &[u16],
    processes: &[(&str, &Process)],
) -> Row {
    let chunk_bytes = (options.kbps * 1000 / 8 * options.chunk_ms / 1000) as usize;
    let url = |socket: &str| {
        format!("ws://127.0.0.1:{publisher_port}/ws/publish/{STREAM}/{socket}?session=bench")
    };
    let (mut blob, _) = tokio_tungstenite::connect_async(url("blob")).await.unwrap();
    let (mut chunk, _) = tokio_tungstenite::connect_async(url("chunk"))
        .await
        .unwrap();
    blob.send(Message::text(
        r#"{"type":"start","mime":"application/octet-stream"}"#,
    ))
    .await
    .unwrap();
    let frame = |offset: u64, len: usize| {
        let mut f = Vec::with_capacity(HEADER_LEN + len);
        f.extend_from_slice(&1u64.to_be_bytes());
        f.extend_from_slice(&offset.to_be_bytes());
        f.extend_from_slice(&now_ns().to_be_bytes());
        f.resize(HEADER_LEN + len, 0x5a);
        f
    };
    blob.send(Message::binary(frame(0, BLOB_BYTES)))
        .await
        .unwrap();
    let mut offset = BLOB_BYTES as u64;

    let samples = Arc::new(Mutex::new(Vec::new()));
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let window = Duration::from_secs_f64(options.seconds);
    let settle = Duration::from_secs(2);
    // Viewers stop reading a little after the last chunk, so the tail arrives.
    let until = Instant::now() + settle + window + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for i in 0..options.viewers {
        let port = viewer_ports[i % viewer_ports.len()];
        tasks.push(tokio::spawn(viewer(
            port,
            samples.clone(),
            chunks.clone(),
            until,
        )));
    }
    tokio::time::sleep(settle).await;
    samples.lock().unwrap().clear();
    let cpu_before: Vec<f64> = processes.iter().map(|(_, p)| p.cpu_secs()).collect();
    let mut read_before = Vec::new();
    for (_, p) in processes {
        read_before.push(metric(p.port, "blobcast_nats_read_bytes_total").await);
    }
    let start = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(options.chunk_ms));
    while start.elapsed() < window {
        tick.tick().await;
        chunk
            .send(Message::binary(frame(offset, chunk_bytes)))
            .await
            .unwrap();
        offset += chunk_bytes as u64;
        sent += 1;
    }
    let cpu: Vec<(String, f64)> = processes
        .iter()
        .zip(cpu_before)
        .map(|((name, p), before)| (name.to_string(), p.cpu_secs() - before))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let mut nats_read = Vec::new();
    for ((name, p), before) in processes.iter().zip(read_before) {
        if name.starts_with("node-") {
            nats_read.push((
                name.to_string(),
                metric(p.port, "blobcast_nats_read_bytes_total").await - before,
            ));
        }
    }
    let _ = chunk.send(Message::text(r#"{"type":"stop"}"#)).await;
    let mut latencies = std::mem::take(&mut *samples.lock().unwrap());
    latencies.sort_unstable();
    let counts = chunks.lock().unwrap();
    Row {
        label,
        latencies,
        chunks_sent: sent,
        short_viewers: counts.iter().filter(|&&c| c < sent).count(),
        cpu,
        nats_read,
        stream_bytes: sent as u64 * (chunk_bytes + HEADER_LEN) as u64,
    }
}

fn report(row: &Row, options: &Options) {
    println!(
        "{:<12} viewers {:>5}  chunks {:>4}  latency p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  viewers short of a chunk: {}",
        row.label,
        options.viewers,
        row.chunks_sent,
        percentile(&row.latencies, 50.0),
        percentile(&row.latencies, 99.0),
        percentile(&row.latencies, 100.0),
        row.short_viewers,
    );
    let cpu: Vec<String> = row
        .cpu
        .iter()
        .map(|(name, secs)| format!("{name} {:.0}%", 100.0 * secs / options.seconds))
        .collect();
    println!("{:<12} CPU over the window: {}", "", cpu.join(", "));
    for (name, bytes) in &row.nats_read {
        println!(
            "{:<12} {name} read {bytes} bytes from NATS: {:.2} copies of the stream's {} bytes",
            "",
            *bytes as f64 / row.stream_bytes as f64,
            row.stream_bytes
        );
    }
}

fn main() {
    let options = Options::parse();
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("cluster bench: nats-server is not installed (apt-get install nats-server)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        println!(
            "cluster bench: {} viewers, {} kbit/s in {} ms chunks, {} s window\n",
            options.viewers, options.kbps, options.chunk_ms, options.seconds
        );
        let single = blobcast(None, "single", options.viewers + 16);
        let row = run(
            "single node",
            &options,
            single.port,
            &[single.port],
            &[("node", &single)],
        )
        .await;
        drop(single);
        report(&row, &options);
        let single_p99 = percentile(&row.latencies, 99.0);

        let store =
            std::env::temp_dir().join(format!("blobcast-cluster-bench-{}", std::process::id()));
        let nats = nats_server(&store);
        let nodes: Vec<Process> = (1..=3)
            .map(|i| blobcast(Some(&nats), &format!("node-{i}"), options.viewers + 16))
            .collect();
        for node in &nodes {
            until_connected(node.port).await;
        }
        let processes = [
            ("node-1", &nodes[0]),
            ("node-2", &nodes[1]),
            ("node-3", &nodes[2]),
            ("nats-server", &nats),
        ];
        let row = run(
            "cluster",
            &options,
            nodes[0].port,
            &[nodes[1].port, nodes[2].port],
            &processes,
        )
        .await;
        report(&row, &options);
        println!(
            "\nthe NATS hop adds {:.2} ms at p99 (aim: at most 15 ms)",
            percentile(&row.latencies, 99.0) - single_p99
        );
        drop(nodes);
        drop(nats);
        let _ = std::fs::remove_dir_all(&store);
    });
}
