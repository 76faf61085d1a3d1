//! Test harness: a real server on an ephemeral port, and real WebSocket clients that
//! publish and watch the way docs/protocol.md says a browser does.

#![allow(dead_code)]

pub mod logs;
pub mod media;

#[allow(unused_imports)]
pub use media::{assert_decodes, ffmpeg_present, moofs};

use blobcast::protocol::{FrameHeader, HEADER_LEN};
use blobcast::Config;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A real WebM recording (VP8 + Opus, 4 s) made with ffmpeg.
pub const CLIP: &[u8] = include_bytes!("../fixtures/clip.webm");

/// A real Chrome MediaRecorder recording (VP8 + Opus, 6 s: clusters that open with
/// audio, keyframes every second, unknown sizes), from
/// integration/fixtures/record-chrome-fixture.mjs.
pub const CHROME: &[u8] = include_bytes!("../fixtures/chrome-vp8-opus.webm");
const CHROME_PIECES: &str = include_str!("../fixtures/chrome-vp8-opus.pieces.json");

/// The Chrome recording in the pieces its `dataavailable` handed out.
pub fn chrome_pieces() -> Vec<Vec<u8>> {
    let lengths: Vec<usize> = serde_json::from_str(CHROME_PIECES).unwrap();
    let mut start = 0;
    let pieces: Vec<_> = lengths
        .iter()
        .map(|len| {
            let piece = CHROME[start..start + len].to_vec();
            start += len;
            piece
        })
        .collect();
    assert_eq!(start, CHROME.len());
    pieces
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), blobcast::ServerError>>>,
    /// The fresh record directory every test server gets, removed on drop.
    scratch: Option<std::path::PathBuf>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A directory of its own under target/, for one test's recordings.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let mut config = Config::local();
        config.public_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/public").into();
        // Recordings go to a fresh directory, not ./rec, unless the test says otherwise.
        let scratch = scratch_dir("rec");
        config.record_dir = scratch.clone();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(blobcast::run(listener, config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
            scratch: Some(scratch),
        }
    }

    /// A handle on a server running elsewhere (a child process), for its URLs.
    pub fn at(addr: SocketAddr) -> TestServer {
        TestServer {
            addr,
            stop: None,
            task: None,
            scratch: None,
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("server shut down in time")
                .unwrap()
                .expect("the server ran");
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(self.http_url(path)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Waits until `/api/streams/{stream}` shows `check` true.
    pub async fn until_api(&self, stream: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, info) = self.get_json(&format!("/api/streams/{stream}")).await;
            if status == 200 && check(&info) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the API never showed it: {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the `/metrics` text contains `line`.
    pub async fn until_metrics(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (_, metrics) = self.get_text("/metrics").await;
            if metrics.lines().any(|l| l == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the metrics never showed {line:?}: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs `body` with `headers`; every answer of blobcast's, refusals included, is JSON.
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> (u16, serde_json::Value) {
        let len = body.len();
        let mut request = reqwest::Client::new().post(self.http_url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path} ({len} bytes): not blobcast's JSON: {text}"));
        (status, json)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.http_url(path)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// The HTTP status a refused upgrade got.
/// A client whose TCP receive window stays at 64 KiB. Loopback autotuning lets a socket
/// that is never read take in tens of MiB (tcp_rmem's maximum), which would hide a viewer
/// that does not read behind kernel buffers; a fixed buffer turns autotuning off.
pub async fn connect_small_window(url: &str) -> Ws {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .expect("a ws:// URL");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

pub async fn connect_refused(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{url}: expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("{url}: expected an HTTP refusal, the upgrade was accepted"),
    }
}

pub fn frame(generation: u64, offset: u64, payload: &[u8]) -> Bytes {
    FrameHeader { generation, offset }.frame(payload)
}

/// Reads until the server closes the socket; returns its close code and reason.
pub async fn closed_with(ws: &mut Ws) -> (u16, String) {
    closed_with_pauses(ws, Duration::ZERO).await
}

/// As [`closed_with`], reading slowly: `pause` after every message.
pub async fn closed_with_pauses(ws: &mut Ws, pause: Duration) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("server closed the socket in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => return (0, String::new()),
            Some(Ok(_)) if pause.is_zero() => continue,
            Some(Ok(_)) => tokio::time::sleep(pause).await,
            Some(Err(err)) => panic!("socket failed instead of closing cleanly: {err}"),
        }
    }
}

/// Cuts a recording the way Chrome's MediaRecorder does: at arbitrary byte positions,
/// not at element boundaries. Deterministic for a given seed.
pub fn cut(data: &[u8], pieces: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut cuts: Vec<usize> = (1..pieces)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1 + (state >> 33) as usize % (data.len() - 1)
        })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        out.push(data[start..c].to_vec());
        start = c;
    }
    out
}

/// A publisher: two sockets of one session.
pub struct Publisher {
    pub blob: Ws,
    pub chunk: Ws,
    pub generation: u64,
    pub offset: u64,
}

impl Publisher {
    pub async fn connect(server: &TestServer, stream: &str, query: &str) -> Publisher {
        let blob = connect(&server.ws_url(&format!("/ws/publish/{stream}/blob?{query}"))).await;
        let chunk = connect(&server.ws_url(&format!("/ws/publish/{stream}/chunk?{query}"))).await;
        Publisher::from_sockets(blob, chunk)
    }

    /// A publisher on sockets opened elsewhere (over wss, say).
    pub fn from_sockets(blob: Ws, chunk: Ws) -> Publisher {
        Publisher {
            blob,
            chunk,
            generation: 0,
            offset: 0,
        }
    }

    pub async fn start(&mut self, mime: &str) {
        let text = format!(r#"{{"type":"start","mime":"{mime}"}}"#);
        self.blob.send(Message::text(text)).await.unwrap();
    }

    /// Stops on the chunk socket, after the last chunk, as the recorder page does.
    pub async fn stop(&mut self) {
        self.chunk
            .send(Message::text(r#"{"type":"stop"}"#))
            .await
            .unwrap();
    }

    pub async fn send_blob(&mut self, generation: u64, payload: &[u8]) {
        self.generation = generation;
        self.offset = payload.len() as u64;
        self.blob
            .send(Message::binary(frame(generation, 0, payload)))
            .await
            .unwrap();
    }

    pub async fn send_chunk(&mut self, payload: &[u8]) {
        let f = frame(self.generation, self.offset, payload);
        self.offset += payload.len() as u64;
        self.chunk.send(Message::binary(f)).await.unwrap();
    }

    /// Publishes a whole generation: its first piece as the blob, the rest as chunks.
    pub async fn publish_generation(&mut self, generation: u64, pieces: &[Vec<u8>]) {
        self.send_blob(generation, &pieces[0]).await;
        for piece in &pieces[1..] {
            self.send_chunk(piece).await;
        }
    }
}

/// A viewer that reassembles frames from both sockets as docs/protocol.md says.
pub struct Viewer {
    pub chunk: Ws,
    pub blob: Ws,
    pub generation: Option<u64>,
    pub data: Vec<u8>,
    /// Generations this viewer has moved past, by number.
    pub generations: BTreeMap<u64, Vec<u8>>,
    held: Vec<(FrameHeader, Bytes)>,
    pub controls: Vec<serde_json::Value>,
    pub binary_frames: usize,
    pub received_bytes: usize,
    /// A live join's jump: generation bytes between the init's end and the keyframe
    /// cluster that this viewer never received, by design.
    pub skipped: u64,
    /// Where that jump was taken: the init segment's length.
    pub jumped_at: u64,
    /// Per socket, the generation and end offset of the last frame it carried. Within a
    /// generation each socket's frames must follow on exactly: a duplicate or a gap on
    /// one socket fails the test. (The snapshot and the chunk socket overlap by design;
    /// that overlap is dropped by offset, as a browser does.)
    chunk_edge: Option<(u64, u64)>,
    blob_edge: Option<(u64, u64)>,
    /// The publish session of what this viewer holds (the blob socket's hello), and of
    /// the frames its chunk socket is sending (its `epoch` message); chunk frames of
    /// another session wait in `other_session` until their hello, as a browser keeps them.
    pub epoch: Option<u64>,
    chunk_epoch: Option<u64>,
    other_session: Vec<(u64, Bytes)>,
    /// How many times the publish session changed under this viewer.
    pub sessions_seen: usize,
}

impl Viewer {
    pub async fn connect(server: &TestServer, stream: &str) -> Viewer {
        Viewer::connect_with(server, stream, "").await
    }

    /// Chunk socket first, then blob socket, as the protocol requires.
    pub async fn connect_with(server: &TestServer, stream: &str, query: &str) -> Viewer {
        let chunk = connect(&server.ws_url(&format!("/ws/watch/{stream}/chunk?{query}"))).await;
        let blob = connect(&server.ws_url(&format!("/ws/watch/{stream}/blob?{query}"))).await;
        Viewer::from_sockets(chunk, blob)
    }

    /// A viewer on sockets opened elsewhere (over wss, say): the chunk socket must have
    /// been opened first.
    pub fn from_sockets(chunk: Ws, blob: Ws) -> Viewer {
        Viewer {
            chunk,
            blob,
            generation: None,
            data: Vec::new(),
            generations: BTreeMap::new(),
            held: Vec::new(),
            controls: Vec::new(),
            binary_frames: 0,
            received_bytes: 0,
            skipped: 0,
            jumped_at: 0,
            chunk_edge: None,
            blob_edge: None,
            epoch: None,
            chunk_epoch: None,
            other_session: Vec::new(),
            sessions_seen: 0,
        }
    }

    /// The generation offset this viewer has reached.
    pub fn length(&self) -> u64 {
        self.data.len() as u64 + self.skipped
    }

    fn joined_live(&self) -> bool {
        let hello = self.controls.iter().rev().find(|c| c["type"] == "stream");
        hello.is_some_and(|h| {
            h["join"] == "live"
                && h["generation"] == self.generation.map_or(serde_json::Value::Null, Into::into)
        })
    }

    /// Continues a viewer's state on new sockets, resuming from what it holds.
    pub async fn reconnect(mut self, server: &TestServer, stream: &str) -> Viewer {
        let query = match (self.generation, self.epoch) {
            (Some(g), Some(epoch)) => format!("gen={g}&offset={}&epoch={epoch}", self.length()),
            (Some(g), None) => format!("gen={g}&offset={}", self.length()),
            _ => String::new(),
        };
        let _ = self.chunk.close(None).await;
        let _ = self.blob.close(None).await;
        let fresh = Viewer::connect_with(server, stream, &query).await;
        self.chunk = fresh.chunk;
        self.blob = fresh.blob;
        self.chunk_edge = None;
        self.blob_edge = None;
        self.chunk_epoch = None;
        self.controls.clear();
        self.binary_frames = 0;
        self.received_bytes = 0;
        self
    }

    fn accept(&mut self, frame: Bytes, from_blob_socket: bool) {
        if !from_blob_socket {
            let epoch = self
                .chunk_epoch
                .expect("the chunk socket names its epoch first");
            if Some(epoch) != self.epoch {
                self.other_session.push((epoch, frame));
                return;
            }
        }
        self.binary_frames += 1;
        self.received_bytes += frame.len();
        let header = FrameHeader::parse(&frame).expect("server frames have headers");
        self.check_follows_on(header, frame.len() - HEADER_LEN, from_blob_socket);
        if from_blob_socket && header.offset == 0 && Some(header.generation) != self.generation {
            if let Some(g) = self.generation {
                self.generations.insert(g, std::mem::take(&mut self.data));
            }
            self.generation = Some(header.generation);
            self.data.clear();
            self.skipped = 0;
        } else if from_blob_socket
            && self.joined_live()
            && Some(header.generation) == self.generation
            && self.skipped == 0
            && header.offset > self.length()
        {
            // The live join's second frame starts at a keyframe cluster: the gap after
            // the init segment is intended.
            self.jumped_at = self.length();
            self.skipped = header.offset - self.length();
        }
        match self.generation {
            Some(g) if header.generation == g => self.append(header, &frame),
            Some(g) if header.generation < g => {}
            _ => self.held.push((header, frame)),
        }
        self.apply_held();
    }

    fn check_follows_on(&mut self, header: FrameHeader, len: usize, from_blob_socket: bool) {
        let live_jump = from_blob_socket && self.joined_live() && self.skipped == 0;
        let (socket, edge) = if from_blob_socket {
            ("blob", &mut self.blob_edge)
        } else {
            ("chunk", &mut self.chunk_edge)
        };
        if let Some((generation, end)) = *edge {
            let jumped = live_jump && header.offset > end;
            assert!(
                generation != header.generation || header.offset == end || jumped,
                "the {socket} socket sent generation {generation} from offset {} right after \
                 offset {end}: a duplicate or a gap on one socket",
                header.offset
            );
        }
        *edge = Some((header.generation, header.offset + len as u64));
    }

    /// What this viewer holds of generation `generation`.
    pub fn holds(&self, generation: u64) -> Option<&[u8]> {
        if self.generation == Some(generation) {
            Some(&self.data)
        } else {
            self.generations.get(&generation).map(Vec::as_slice)
        }
    }

    fn append(&mut self, header: FrameHeader, frame: &[u8]) {
        let payload = &frame[HEADER_LEN..];
        let have = self.length();
        let end = header.offset + payload.len() as u64;
        if end <= have {
            return;
        }
        if header.offset <= have {
            self.data
                .extend_from_slice(&payload[(have - header.offset) as usize..]);
        } else {
            self.held.push((header, Bytes::copy_from_slice(frame)));
        }
    }

    fn apply_held(&mut self) {
        loop {
            let Some(g) = self.generation else { return };
            let have = self.length();
            self.held.retain(|(h, _)| h.generation >= g);
            let Some(i) = self
                .held
                .iter()
                .position(|(h, _)| h.generation == g && h.offset <= have)
            else {
                return;
            };
            let (h, f) = self.held.remove(i);
            self.append(h, &f);
        }
    }

    /// Processes whatever arrives on either socket for `wait`.
    pub async fn pump_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::timeout_at(deadline, self.pump_one())
            .await
            .is_ok()
        {}
    }

    /// Processes messages until `done` holds, failing the test after PATIENCE.
    pub async fn pump_until(&mut self, what: &str, done: impl Fn(&Viewer) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(self) {
            if tokio::time::timeout_at(deadline, self.pump_one())
                .await
                .is_err()
            {
                panic!(
                    "viewer waited too long for {what}: generation {:?}, {} bytes, controls {:?}",
                    self.generation,
                    self.data.len(),
                    self.controls
                );
            }
        }
    }

    /// Until this viewer holds `bytes` as generation `generation`.
    pub async fn pump_until_holds(&mut self, generation: u64, bytes: &[u8]) {
        self.pump_until(
            &format!("generation {generation} of {} bytes", bytes.len()),
            |v| v.holds(generation).map(<[u8]>::len) == Some(bytes.len()),
        )
        .await;
        assert!(
            self.holds(generation) == Some(bytes),
            "generation {generation} reassembled differently from what was published"
        );
    }

    async fn pump_one(&mut self) {
        tokio::select! {
            message = self.chunk.next() => self.handle(message, false),
            message = self.blob.next() => self.handle(message, true),
        }
    }

    fn handle(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        from_blob_socket: bool,
    ) {
        match message {
            Some(Ok(Message::Binary(bytes))) => self.accept(bytes, from_blob_socket),
            Some(Ok(Message::Text(text))) => {
                let control: serde_json::Value =
                    serde_json::from_str(text.as_str()).expect("control messages are JSON");
                let epoch = control["epoch"].as_u64();
                match (control["type"].as_str(), epoch) {
                    (Some("stream"), Some(epoch)) if from_blob_socket => self.hello(epoch),
                    (Some("epoch"), Some(epoch)) if !from_blob_socket => {
                        // The chunk socket's framing, not a control a test looks for.
                        self.chunk_epoch = Some(epoch);
                        self.chunk_edge = None;
                        return;
                    }
                    _ => {}
                }
                self.controls.push(control);
            }
            Some(Ok(Message::Close(frame))) => {
                panic!("server closed a viewer socket: {frame:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("viewer socket failed: {err}"),
            None => panic!("viewer socket ended"),
        }
    }

    /// A hello from another publish session starts this viewer afresh, whatever the
    /// generation numbers say; then the chunk frames that waited for it are applied.
    fn hello(&mut self, epoch: u64) {
        if self.epoch.is_some_and(|held| held != epoch) {
            self.sessions_seen += 1;
            self.generation = None;
            self.data.clear();
            self.generations.clear();
            self.held.clear();
            self.skipped = 0;
            self.blob_edge = None;
        }
        self.epoch = Some(epoch);
        let waiting = std::mem::take(&mut self.other_session);
        for (frame_epoch, frame) in waiting {
            if frame_epoch == epoch {
                self.accept(frame, false);
            } else if frame_epoch > epoch {
                self.other_session.push((frame_epoch, frame));
            }
        }
    }

    pub fn saw_control(&self, kind: &str) -> bool {
        self.controls.iter().any(|c| c["type"] == kind)
    }
}

pub fn close_code(frame: &CloseCode) -> u16 {
    u16::from(*frame)
}
