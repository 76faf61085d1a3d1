//! Relay fan-out benchmark: one publisher at a constant bitrate, N viewers over loopback,
//! against the real `blobcast` binary running as its own process.
//!
//! ```sh
//! cargo bench --bench relay                                   # N = 10, 100, 1000; 20 s each
//! cargo bench --bench relay -- --viewers 10,100,1000 --seconds 20
//! ```
//!
//! Per N it measures, over a window that starts once every viewer is connected:
//! - latency of each live chunk, publisher send to viewer receive (the send time, in
//!   nanoseconds since an `Instant` shared by the publisher and the viewers, is the first
//!   8 bytes of every payload);
//! - delivered throughput, in total and per viewer, and whether every viewer received
//!   every byte of the generation with no gap (a viewer glues blob socket and chunk socket
//!   exactly as docs/protocol.md says a browser does);
//! - the server's resident memory (VmRSS before the viewers, after they connected and at
//!   the end of the window; VmHWM) and CPU time (/proc/PID/stat), and this process's CPU
//!   time, since on a small machine the clients compete with the server for the cores.
//!
//! In the same invocation it measures the loopback ceiling: iperf3 sending over 127.0.0.1
//! with 1 and 100 streams (`ceiling.rs`), and reports the server's core-seconds per GB
//! delivered as a ratio to the iperf3 sender's.
//!
//! Options (after `--`): `--viewers 10,100,1000`, `--seconds 20`, `--kbps 2000`,
//! `--chunk-ms 250`, `--client-threads N` (default: the number of CPUs),
//! `--connect-concurrency 64`, `--warmup-secs 4`, `--client-read-buffer BYTES`,
//! `--dump FILE` (appends one line per latency sample: viewers, viewer, ms into the window
//! when sent, latency in µs), `--tls` (the server on wss with a self-signed certificate,
//! `tls.rs`), `--ceiling-secs 5` (each iperf3 run; 0 skips the ceiling).

#[path = "relay/ceiling.rs"]
mod ceiling;
#[path = "relay/tls.rs"]
mod tls;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const HEADER_LEN: usize = 16;
const STREAM: &str = "bench";
const GENERATION: u64 = 1;
/// Size of the generation's first piece (the "WebM header" of a real recorder).
const BLOB_BYTES: usize = 4096;
/// How long all the viewers may take to connect and take their snapshots.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long viewers may take to receive the tail after the window ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// The client side of `--tls`: set once, before any connection.
static TLS: OnceLock<tls::Tls> = OnceLock::new();

/// A WebSocket to the server, over TLS when the bench runs with `--tls`.
async fn connect_ws(
    url: String,
    config: Option<WebSocketConfig>,
    nodelay: bool,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let connector = TLS.get().map(|t| t.connector.clone());
    tokio_tungstenite::connect_async_tls_with_config(url, config, nodelay, connector)
        .await
        .map(|(ws, _)| ws)
}

/// Nanoseconds since the epoch shared by the publisher and the viewers.
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug, Clone)]
struct Options {
    viewers: Vec<usize>,
    seconds: f64,
    kbps: u64,
    chunk_ms: u64,
    client_threads: usize,
    connect_concurrency: usize,
    warmup_secs: f64,
    client_read_buffer: usize,
    dump: Option<String>,
    tls: bool,
    ceiling_secs: u64,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            viewers: vec![10, 100, 1000],
            seconds: 20.0,
            kbps: 2000,
            chunk_ms: 250,
            client_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            connect_concurrency: 64,
            warmup_secs: 4.0,
            client_read_buffer: 16 * 1024,
            dump: None,
            tls: false,
            ceiling_secs: 5,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match arg.as_str() {
                "--viewers" => {
                    o.viewers = value("--viewers")
                        .split(',')
                        .map(|n| {
                            n.trim()
                                .parse()
                                .expect("--viewers: a list like 10,100,1000")
                        })
                        .collect()
                }
                "--seconds" => o.seconds = value("--seconds").parse().expect("--seconds"),
                "--kbps" => o.kbps = value("--kbps").parse().expect("--kbps"),
                "--chunk-ms" => o.chunk_ms = value("--chunk-ms").parse().expect("--chunk-ms"),
                "--client-threads" => {
                    o.client_threads = value("--client-threads").parse().expect("--client-threads")
                }
                "--connect-concurrency" => {
                    o.connect_concurrency = value("--connect-concurrency")
                        .parse()
                        .expect("--connect-concurrency")
                }
                "--warmup-secs" => {
                    o.warmup_secs = value("--warmup-secs").parse().expect("--warmup-secs")
                }
                "--client-read-buffer" => {
                    o.client_read_buffer = value("--client-read-buffer")
                        .parse()
                        .expect("--client-read-buffer")
                }
                "--dump" => o.dump = Some(value("--dump")),
                "--tls" => o.tls = true,
                "--ceiling-secs" => {
                    o.ceiling_secs = value("--ceiling-secs").parse().expect("--ceiling-secs")
                }
                // cargo bench passes --bench; a name filter makes no sense here.
                "--bench" => {}
                other => eprintln!("relay bench: ignoring argument {other:?}"),
            }
        }
        o
    }

    fn chunk_bytes(&self) -> usize {
        (self.kbps * 1000 / 8 * self.chunk_ms / 1000) as usize
    }
}

// ---------------------------------------------------------------------------------------
// The server process and what /proc says about it

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(max_viewers: usize) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_blobcast"));
        if let Some(tls) = TLS.get() {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-viewers", &max_viewers.to_string()])
            .arg("--public-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/public"))
            // The fan-out alone: recording is per stream, not per viewer (and the payload
            // here is not WebM); keep the record folder out of the work tree anyway.
            .arg("--no-record")
            .arg("--record-dir")
            .arg(std::env::temp_dir().join("blobcast-relay-bench"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the blobcast binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep reading so that the server never writes into a closed pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server prints its address within 20 s");
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Server { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        match TLS.get() {
            Some(_) => format!("wss://localhost:{}{}", self.port, path),
            None => format!("ws://127.0.0.1:{}{}", self.port, path),
        }
    }

    /// SIGTERM, then SIGKILL if it does not stop within 10 s.
    fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("relay bench: the server did not stop on SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of /proc/PID/status, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU seconds of a process.
fn proc_cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// CPU seconds all processes of the machine spent busy (not idle) since boot.
fn machine_busy_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU seconds of this process (publisher, viewers, everything).
fn self_cpu_secs() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Soft RLIMIT_NOFILE up to the hard limit; the server inherits it.
fn raise_nofile() -> u64 {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur as u64
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{nproc} CPUs ({model}), {mem} GiB RAM, Linux {}",
        kernel.trim()
    )
}

// ---------------------------------------------------------------------------------------
// The publisher: its own thread and runtime, so that viewer load cannot delay its timer
// between taking a send timestamp and writing the frame.

struct PublisherShared {
    /// Bytes of the generation sent so far (blob + chunks).
    sent: AtomicU64,
    stop_sending: AtomicBool,
    close: AtomicBool,
}

struct PublisherReport {
    /// The generation's final length.
    length: u64,
    /// Send time (ns since EPOCH) of every chunk.
    sends: Vec<u64>,
}

fn frame(offset: u64, payload_len: usize) -> Bytes {
    let mut f = vec![0u8; HEADER_LEN + payload_len];
    f[..8].copy_from_slice(&GENERATION.to_be_bytes());
    f[8..16].copy_from_slice(&offset.to_be_bytes());
    // A recognisable pattern after the timestamp; the server treats it as bytes.
    for (i, b) in f[HEADER_LEN + 8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&now_ns().to_be_bytes());
    Bytes::from(f)
}

fn spawn_publisher(
    server_port: u16,
    options: &Options,
    shared: Arc<PublisherShared>,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<PublisherReport>,
) {
    let chunk_bytes = options.chunk_bytes();
    let period = Duration::from_millis(options.chunk_ms);
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let base = match TLS.get() {
                    Some(_) => format!("wss://localhost:{server_port}/ws/publish/{STREAM}"),
                    None => format!("ws://127.0.0.1:{server_port}/ws/publish/{STREAM}"),
                };
                let open = |which: &str| {
                    let url = format!("{base}/{which}?session=bench");
                    async move {
                        connect_ws(url.clone(), None, true)
                            .await
                            .unwrap_or_else(|e| panic!("publisher {url}: {e}"))
                    }
                };
                let mut blob = open("blob").await;
                let mut chunk = open("chunk").await;
                blob.send(Message::text(
                    r#"{"type":"start","mime":"video/webm;codecs=vp8,opus"}"#,
                ))
                .await
                .unwrap();
                blob.send(Message::binary(frame(0, BLOB_BYTES)))
                    .await
                    .unwrap();
                let mut offset = BLOB_BYTES as u64;
                shared.sent.store(offset, Ordering::SeqCst);
                let mut sends = Vec::with_capacity(4096);
                let start = tokio::time::Instant::now();
                let mut k = 1u32;
                while !shared.stop_sending.load(Ordering::SeqCst) {
                    tokio::time::sleep_until(start + period * k).await;
                    k += 1;
                    let f = frame(offset, chunk_bytes);
                    sends.push(u64::from_be_bytes(
                        f[HEADER_LEN..HEADER_LEN + 8].try_into().unwrap(),
                    ));
                    chunk.send(Message::binary(f)).await.unwrap();
                    offset += chunk_bytes as u64;
                    shared.sent.store(offset, Ordering::SeqCst);
                }
                let _ = tx.send(PublisherReport {
                    length: offset,
                    sends,
                });
                while !shared.close.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = blob.send(Message::text(r#"{"type":"stop"}"#)).await;
                let _ = blob.close(None).await;
                let _ = chunk.close(None).await;
            });
        })
        .unwrap();
    (handle, rx)
}

// ---------------------------------------------------------------------------------------
// Viewers

/// What the main thread tells viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The publisher has stopped at this length: finish once you have all of it.
    Drain(u64),
    /// Give up now.
    Abort,
}

struct ViewerShared {
    ready: AtomicUsize,
    ready_changed: Notify,
    /// The measured window, ns since EPOCH (`u64::MAX` until it is set).
    window_start: AtomicU64,
    window_end: AtomicU64,
    phase: watch::Sender<Phase>,
    connect: Semaphore,
    config: WebSocketConfig,
    chunk_url: String,
    blob_url: String,
    /// What the publisher has sent so far: a viewer is ready once it holds that much.
    published: Arc<PublisherShared>,
    /// Chunks a window holds, with some slack.
    window_chunks: usize,
}

#[derive(Debug, Default)]
struct ViewerReport {
    /// Latency of each chunk sent inside the window, microseconds.
    latencies_us: Vec<u32>,
    /// Send time of each of those chunks (ns since EPOCH), for `--dump`.
    sent_ns: Vec<u64>,
    window_chunks: u64,
    window_bytes: u64,
    /// Final length of the generation as this viewer assembled it.
    length: u64,
    /// Frames still waiting for a gap to close at the end.
    held_at_end: usize,
    generations: u64,
    error: Option<String>,
}

/// A viewer's reassembly state, as docs/protocol.md "Joining without a gap" describes.
struct Assembly {
    generation: Option<u64>,
    length: u64,
    held: Vec<(bool, Bytes)>,
}

impl Assembly {
    /// Applies one binary frame; `from_blob` when it came on the blob socket.
    fn apply(&mut self, from_blob: bool, frame: Bytes, report: &mut ViewerReport) -> bool {
        if frame.len() < HEADER_LEN {
            report.error = Some(format!("short frame of {} bytes", frame.len()));
            return false;
        }
        let generation = u64::from_be_bytes(frame[..8].try_into().unwrap());
        let offset = u64::from_be_bytes(frame[8..16].try_into().unwrap());
        let end = offset + (frame.len() - HEADER_LEN) as u64;
        match self.generation {
            Some(g) if g == generation => {
                if end <= self.length {
                    // Already held (a chunk also in the snapshot).
                } else if offset <= self.length {
                    self.length = end;
                    self.retry_held(report);
                } else {
                    self.held.push((from_blob, frame));
                }
            }
            _ if from_blob && offset == 0 => {
                self.generation = Some(generation);
                self.length = end;
                report.generations += 1;
                self.retry_held(report);
            }
            Some(g) if generation < g => {}
            _ => self.held.push((from_blob, frame)),
        }
        true
    }

    fn retry_held(&mut self, report: &mut ViewerReport) {
        while !self.held.is_empty() {
            let before = (self.generation, self.length, self.held.len());
            for (from_blob, frame) in std::mem::take(&mut self.held) {
                self.apply(from_blob, frame, report);
            }
            if (self.generation, self.length, self.held.len()) == before {
                break;
            }
        }
    }
}

async fn viewer(shared: Arc<ViewerShared>) -> ViewerReport {
    let mut report = ViewerReport::default();
    let mut phase = shared.phase.subscribe();
    let permit = shared.connect.acquire().await.unwrap();
    // Chunk socket first, then blob socket (docs/protocol.md).
    let connect = |url: String| {
        let config = shared.config;
        async move { connect_ws(url, Some(config), false).await }
    };
    let mut chunk: Ws = match connect(shared.chunk_url.clone()).await {
        Ok(ws) => ws,
        Err(e) => {
            report.error = Some(format!("chunk connect: {e}"));
            return report;
        }
    };
    // The snapshot holds at least this much: the viewer is ready once it has it.
    let caught_up = shared.published.sent.load(Ordering::SeqCst);
    let mut blob: Ws = match connect(shared.blob_url.clone()).await {
        Ok(ws) => ws,
        Err(e) => {
            report.error = Some(format!("blob connect: {e}"));
            return report;
        }
    };
    let mut permit = Some(permit);
    // Room for every chunk of the window, so that recording a sample never allocates.
    report.latencies_us.reserve(shared.window_chunks);
    report.sent_ns.reserve(shared.window_chunks);
    let mut asm = Assembly {
        generation: None,
        length: 0,
        held: Vec::with_capacity(8),
    };
    let mut hello = false;
    let mut target = u64::MAX;
    loop {
        let (from_blob, message) = tokio::select! {
            m = chunk.next() => (false, m),
            m = blob.next() => (true, m),
            changed = phase.changed() => {
                match (changed, *phase.borrow_and_update()) {
                    (Ok(()), Phase::Drain(len)) => target = len,
                    (Ok(()), Phase::Streaming) => {}
                    _ => {
                        report.error.get_or_insert_with(|| "gave up waiting".into());
                        break;
                    }
                }
                if asm.length >= target && asm.held.is_empty() {
                    break;
                }
                continue;
            }
        };
        let received = now_ns();
        let socket = if from_blob { "blob" } else { "chunk" };
        match message {
            Some(Ok(Message::Binary(frame))) => {
                if !from_blob && frame.len() >= HEADER_LEN + 8 {
                    let sent =
                        u64::from_be_bytes(frame[HEADER_LEN..HEADER_LEN + 8].try_into().unwrap());
                    let start = shared.window_start.load(Ordering::Relaxed);
                    let end = shared.window_end.load(Ordering::Relaxed);
                    if sent >= start && sent < end {
                        let us = received.saturating_sub(sent) / 1000;
                        report.latencies_us.push(us.min(u32::MAX as u64) as u32);
                        report.sent_ns.push(sent);
                        report.window_chunks += 1;
                        report.window_bytes += frame.len() as u64;
                    }
                }
                if !asm.apply(from_blob, frame, &mut report) {
                    break;
                }
            }
            Some(Ok(Message::Text(text))) if from_blob => {
                if text.contains(r#""type":"stream""#) {
                    hello = true;
                }
            }
            Some(Ok(Message::Close(close))) => {
                report.error = Some(format!("server closed the {socket} socket: {close:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.error = Some(format!("{socket} socket: {e}"));
                break;
            }
            None => {
                report.error = Some(format!("{socket} socket ended"));
                break;
            }
        }
        if permit.is_some() && hello && asm.generation.is_some() && asm.length >= caught_up {
            permit = None;
            shared.ready.fetch_add(1, Ordering::SeqCst);
            shared.ready_changed.notify_one();
        }
        if asm.length >= target && asm.held.is_empty() {
            break;
        }
    }
    report.length = asm.length;
    report.held_at_end = asm.held.len();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = chunk.close(None).await;
        let _ = blob.close(None).await;
    })
    .await;
    report
}

// ---------------------------------------------------------------------------------------
// One run

struct Row {
    viewers: usize,
    connect_secs: f64,
    window_secs: f64,
    chunks_sent: u64,
    chunk_bytes: usize,
    complete: usize,
    failed: usize,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    total_mbps: f64,
    per_viewer_mbps: f64,
    min_viewer_mbps: f64,
    server_cpu_pct: f64,
    /// Server CPU over the window per GB delivered to viewers in it.
    server_core_s_per_gb: f64,
    client_cpu_pct: f64,
    other_cpu_pct: f64,
    rss_before: u64,
    buffer_rss_per_byte: f64,
    rss_connected: u64,
    rss_end: u64,
    hwm: u64,
    buffer_growth_connect: u64,
    buffer_growth_window: u64,
    errors: Vec<String>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn run(n: usize, options: &Options, rt: &tokio::runtime::Runtime) -> Row {
    let server = Server::start(n + 16);
    let pid = server.pid();

    let publisher = Arc::new(PublisherShared {
        sent: AtomicU64::new(0),
        stop_sending: AtomicBool::new(false),
        close: AtomicBool::new(false),
    });
    let (publisher_thread, publisher_report) =
        spawn_publisher(server.port, options, publisher.clone());
    // Warm-up with no viewers, which also tells what a byte of buffered media costs the
    // server in RSS (the buffer keeps the whole generation): RSS growth / bytes sent,
    // from the second chunk to the end of the warm-up.
    let warmup_end = Instant::now() + Duration::from_secs_f64(options.warmup_secs);
    let two_chunks = (BLOB_BYTES + 2 * options.chunk_bytes()) as u64;
    while publisher.sent.load(Ordering::SeqCst) < two_chunks && Instant::now() < warmup_end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent_calibration = publisher.sent.load(Ordering::SeqCst);
    let rss_calibration = proc_status_bytes(pid, "VmRSS");
    std::thread::sleep(warmup_end.saturating_duration_since(Instant::now()));
    let rss_before = proc_status_bytes(pid, "VmRSS");
    let sent_before = publisher.sent.load(Ordering::SeqCst);
    let buffer_rss_per_byte = if sent_before > sent_calibration && rss_before > rss_calibration {
        (rss_before - rss_calibration) as f64 / (sent_before - sent_calibration) as f64
    } else {
        1.0
    };

    let config = WebSocketConfig::default().read_buffer_size(options.client_read_buffer);
    let (phase, _) = watch::channel(Phase::Streaming);
    let shared = Arc::new(ViewerShared {
        ready: AtomicUsize::new(0),
        ready_changed: Notify::new(),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        phase,
        connect: Semaphore::new(options.connect_concurrency),
        config,
        chunk_url: server.url(&format!("/ws/watch/{STREAM}/chunk")),
        blob_url: server.url(&format!("/ws/watch/{STREAM}/blob")),
        published: publisher.clone(),
        window_chunks: (options.seconds * 1000.0 / options.chunk_ms as f64) as usize + 16,
    });
    let connect_start = Instant::now();
    let tasks: Vec<_> = (0..n).map(|_| rt.spawn(viewer(shared.clone()))).collect();
    let connected = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            let notified = shared.ready_changed.notified();
            if shared.ready.load(Ordering::SeqCst) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    });
    let connect_secs = connect_start.elapsed().as_secs_f64();
    if !connected {
        eprintln!(
            "relay bench: only {} of {n} viewers connected within {CONNECT_TIMEOUT:?}",
            shared.ready.load(Ordering::SeqCst)
        );
    }
    let rss_connected = proc_status_bytes(pid, "VmRSS");
    let sent_connected = publisher.sent.load(Ordering::SeqCst);

    // The measured window.
    let window = Duration::from_secs_f64(options.seconds);
    let start = now_ns();
    shared.window_start.store(start, Ordering::SeqCst);
    shared
        .window_end
        .store(start + window.as_nanos() as u64, Ordering::SeqCst);
    let server_cpu0 = proc_cpu_secs(pid);
    let client_cpu0 = self_cpu_secs();
    let busy0 = machine_busy_secs();
    let wall0 = Instant::now();
    std::thread::sleep(window);
    let wall = wall0.elapsed().as_secs_f64();
    let server_cpu = proc_cpu_secs(pid) - server_cpu0;
    let client_cpu = self_cpu_secs() - client_cpu0;
    let other_cpu = (machine_busy_secs() - busy0 - server_cpu - client_cpu).max(0.0);
    let rss_end = proc_status_bytes(pid, "VmRSS");
    let sent_end = publisher.sent.load(Ordering::SeqCst);

    publisher.stop_sending.store(true, Ordering::SeqCst);
    let published = publisher_report
        .recv_timeout(Duration::from_secs(10))
        .expect("the publisher stops");
    let end = start + window.as_nanos() as u64;
    let chunks_sent = published
        .sends
        .iter()
        .filter(|&&t| t >= start && t < end)
        .count() as u64;
    shared.phase.send_replace(Phase::Drain(published.length));
    let reports: Vec<ViewerReport> = rt.block_on(async {
        let abort = async {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
            shared.phase.send_replace(Phase::Abort);
            std::future::pending::<()>().await
        };
        let join = futures_util::future::join_all(tasks);
        tokio::select! {
            reports = join => reports.into_iter().map(|r| r.unwrap()).collect(),
            _ = abort => unreachable!(),
        }
    });
    let hwm = proc_status_bytes(pid, "VmHWM");

    publisher.close.store(true, Ordering::SeqCst);
    let _ = publisher_thread.join();
    server.stop();

    let mut latencies: Vec<u32> =
        Vec::with_capacity(reports.iter().map(|r| r.latencies_us.len()).sum());
    let mut errors = Vec::new();
    let (mut complete, mut failed, mut bytes) = (0, 0, 0u64);
    let mut min_bytes = u64::MAX;
    for r in &reports {
        latencies.extend_from_slice(&r.latencies_us);
        bytes += r.window_bytes;
        min_bytes = min_bytes.min(r.window_bytes);
        let whole = r.error.is_none()
            && r.length == published.length
            && r.held_at_end == 0
            && r.generations == 1
            && r.window_chunks == chunks_sent;
        if whole {
            complete += 1;
        }
        if let Some(e) = &r.error {
            failed += 1;
            if errors.len() < 5 {
                errors.push(e.clone());
            }
        }
    }
    if let Some(path) = &options.dump {
        dump_samples(path, n, &reports, start);
    }
    latencies.sort_unstable();
    let mbps = |b: u64| b as f64 * 8.0 / wall / 1e6;
    Row {
        viewers: n,
        connect_secs,
        window_secs: wall,
        chunks_sent,
        chunk_bytes: options.chunk_bytes(),
        complete,
        failed,
        samples: latencies.len(),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
        total_mbps: mbps(bytes),
        per_viewer_mbps: mbps(bytes) / n.max(1) as f64,
        min_viewer_mbps: mbps(if reports.is_empty() { 0 } else { min_bytes }),
        server_cpu_pct: server_cpu / wall * 100.0,
        server_core_s_per_gb: server_cpu / (bytes as f64 / 1e9),
        client_cpu_pct: client_cpu / wall * 100.0,
        other_cpu_pct: other_cpu / wall * 100.0,
        rss_before,
        buffer_rss_per_byte,
        rss_connected,
        rss_end,
        hwm,
        buffer_growth_connect: ((sent_connected - sent_before) as f64 * buffer_rss_per_byte) as u64,
        buffer_growth_window: ((sent_end - sent_before) as f64 * buffer_rss_per_byte) as u64,
        errors,
    }
}

/// Appends one line per sample: viewers, viewer index, ms since the window start when
/// the chunk was sent, latency in microseconds.
fn dump_samples(path: &str, n: usize, reports: &[ViewerReport], window_start: u64) {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("--dump {path}: {e}"));
    let mut out = std::io::BufWriter::new(file);
    for (i, r) in reports.iter().enumerate() {
        for (sent, us) in r.sent_ns.iter().zip(&r.latencies_us) {
            let ms = (sent - window_start) as f64 / 1e6;
            writeln!(out, "{n} {i} {ms:.3} {us}").unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

/// Server memory per viewer, in KiB, beyond the buffer growth since `before`.
fn per_viewer_kib(after: u64, before: u64, buffer_growth: u64, n: usize) -> f64 {
    (after as f64 - before as f64 - buffer_growth as f64) / 1024.0 / n.max(1) as f64
}

/// The server's core-seconds per GB delivered, next to the loopback ceiling of this run.
fn print_efficiency(rows: &[Row], ceilings: &[Result<ceiling::Ceiling, String>]) {
    println!("Loopback ceiling (iperf3 over 127.0.0.1, measured in this run)");
    println!("| iperf3 streams | Gbit/s | sender core-s/GB | receiver core-s/GB |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut senders = Vec::new();
    for ceiling in ceilings {
        match ceiling {
            Ok(c) => {
                println!(
                    "| {} | {:.1} | {:.3} | {:.3} |",
                    c.streams, c.gbit_s, c.sender_core_s_per_gb, c.receiver_core_s_per_gb
                );
                senders.push((c.streams, c.sender_core_s_per_gb));
            }
            Err(e) => println!("| — | not measured: {e} | | |"),
        }
    }
    println!();
    println!("Server efficiency: core-seconds (user + system) per GB delivered to viewers, and its ratio to the iperf3 sender's");
    let heads: Vec<String> = senders
        .iter()
        .map(|(streams, _)| format!("÷ iperf3 -P {streams}"))
        .collect();
    println!("| viewers | server core-s/GB | {} |", heads.join(" | "));
    println!("| ---: | ---: |{}", " ---: |".repeat(heads.len()));
    for r in rows {
        let ratios: Vec<String> = senders
            .iter()
            .map(|(_, floor)| format!("{:.2}", r.server_core_s_per_gb / floor))
            .collect();
        println!(
            "| {} | {:.3} | {} |",
            r.viewers,
            r.server_core_s_per_gb,
            ratios.join(" | ")
        );
    }
    println!();
}

fn main() {
    let options = Options::parse();
    EPOCH.get_or_init(Instant::now);
    let nofile = raise_nofile();
    let needed = 2 * options.viewers.iter().copied().max().unwrap_or(0) + 64;
    if nofile < needed as u64 {
        eprintln!(
            "relay bench: RLIMIT_NOFILE is {nofile}, {needed} descriptors are needed; expect refused connections"
        );
    }
    if options.tls {
        let _ = TLS.set(tls::self_signed());
    }
    // The ceiling first, before any relay run warms the machine.
    let ceilings: Vec<Result<ceiling::Ceiling, String>> = if options.ceiling_secs == 0 {
        Vec::new()
    } else {
        [1, 100]
            .iter()
            .map(|&streams| {
                eprintln!("relay bench: loopback ceiling, iperf3 -P {streams} ...");
                ceiling::measure(streams, options.ceiling_secs)
            })
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .enable_all()
        .build()
        .unwrap();

    println!("Relay fan-out benchmark (cargo bench --bench relay)");
    println!("machine: {}", machine());
    println!(
        "stream: {} kbit/s, one {}-byte chunk every {} ms after a {}-byte blob; {} s window per run after all viewers connected",
        options.kbps,
        options.chunk_bytes(),
        options.chunk_ms,
        BLOB_BYTES,
        options.seconds
    );
    println!(
        "client: this process, tokio multi-thread runtime with {} workers (+1 publisher thread); RLIMIT_NOFILE {nofile}",
        options.client_threads
    );
    println!(
        "transport: {}",
        if options.tls {
            "wss (TLS 1.3, rustls with ring, self-signed certificate)"
        } else {
            "ws (plain TCP)"
        }
    );
    println!();

    let mut rows = Vec::new();
    for &n in &options.viewers {
        eprintln!("relay bench: {n} viewers ...");
        let row = run(n, &options, &rt);
        for e in &row.errors {
            eprintln!("relay bench: {n} viewers: viewer error: {e}");
        }
        rows.push(row);
    }

    println!("Latency (publisher send -> viewer receive of each live chunk) and delivery");
    println!(
        "| viewers | connect s | chunks sent | viewers with every chunk, no gap | failed | p50 ms | p99 ms | max ms | delivered Mbit/s total | per viewer (min) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {:.1} | {} | {}/{} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} ({:.2}) |",
            r.viewers,
            r.connect_secs,
            r.chunks_sent,
            r.complete,
            r.viewers,
            r.failed,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.total_mbps,
            r.per_viewer_mbps,
            r.min_viewer_mbps,
        );
    }
    println!();
    println!("Server memory and CPU (CPU % of one core over the window; 200% = both cores)");
    println!(
        "| viewers | RSS before MiB | after connect MiB | end of window MiB | peak (VmHWM) MiB | KiB/viewer after connect | KiB/viewer streaming | buffer RSS per media byte | server CPU | client CPU | rest of machine |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.1}% | {:.1}% | {:.1}% |",
            r.viewers,
            mib(r.rss_before),
            mib(r.rss_connected),
            mib(r.rss_end),
            mib(r.hwm),
            per_viewer_kib(
                r.rss_connected,
                r.rss_before,
                r.buffer_growth_connect,
                r.viewers
            ),
            per_viewer_kib(r.rss_end, r.rss_before, r.buffer_growth_window, r.viewers),
            r.buffer_rss_per_byte,
            r.server_cpu_pct,
            r.client_cpu_pct,
            r.other_cpu_pct,
        );
    }
    println!();
    print_efficiency(&rows, &ceilings);
    println!(
        "KiB/viewer = (server VmRSS - VmRSS before the viewers - media sent in between x buffer RSS per media byte) / viewers;\nbuffer RSS per media byte = server RSS growth per byte published during the viewer-less warm-up (the buffer keeps the whole generation)."
    );
    if rows.iter().any(|r| r.other_cpu_pct > 10.0) {
        println!(
            "WARNING: other processes used more than 10% of a core during a window (\"rest of machine\"); that run's latency and CPU figures are pessimistic."
        );
    }
    println!(
        "latency samples: {}; chunk payload {} bytes; window {:.1} s",
        rows.iter().map(|r| r.samples).sum::<usize>(),
        rows.first().map_or(0, |r| r.chunk_bytes),
        rows.first().map_or(0.0, |r| r.window_secs)
    );
}
