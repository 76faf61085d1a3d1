//! Hostile media over real sockets: a frame built to cost the server the most work per
//! byte must not delay another stream's viewers, and a mime type too long to copy into
//! every hello is refused on both ingest paths.

mod common;

use common::*;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The Chrome recording's init segment: everything before its first Cluster.
fn chrome_init() -> &'static [u8] {
    let first_cluster = CHROME
        .windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .unwrap();
    &CHROME[..first_cluster]
}

/// A generation of `len` bytes that costs the WebM index the most per byte: the init
/// segment, then nothing but the smallest elements its scanner reports, an empty
/// Cluster, an unknown-size one and 100 6-byte SimpleBlocks, over and over: about
/// 2.8 million elements in 16 MiB.
fn hostile_generation(len: usize) -> Vec<u8> {
    let mut unit = vec![0x1F, 0x43, 0xB6, 0x75, 0x80];
    unit.extend([
        0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    for i in 0..100u8 {
        let flags = if i % 3 == 0 { 0x80 } else { 0 };
        unit.extend([0xA3, 0x84, 0x81 + i % 2, 0x00, 0x00, flags]);
    }
    let mut generation = chrome_init().to_vec();
    while generation.len() + unit.len() <= len {
        generation.extend_from_slice(&unit);
    }
    generation
}

/// Chunks stream B sends, one every `B_INTERVAL`.
const B_CHUNKS: usize = 300;
const B_INTERVAL: Duration = Duration::from_millis(10);
const B_CHUNK_LEN: usize = 500;
/// Frames stream A sends meanwhile, one every `A_INTERVAL` once B is under way.
const A_FRAMES: u64 = 12;
const A_INTERVAL: Duration = Duration::from_millis(150);
/// Their size: 2 MiB holds 340 thousand tiny elements, seconds of the index's work in
/// all, while receiving that many bytes costs a worker little (16 MiB frames would
/// make the machine's noise, not the index, what is measured).
const A_FRAME_LEN: usize = 2 << 20;

/// Stream B: a viewer, then a publisher sending a chunk every 10 ms. Returns how long
/// each chunk took from the publisher's send to the viewer's receipt.
async fn relay_b(server: &TestServer) -> Vec<Duration> {
    let mut viewer = Viewer::connect(server, "b").await;
    let mut publisher = Publisher::connect(server, "b", "session=b").await;
    publisher.start("video/webm;codecs=vp8,opus").await;
    let blob = chrome_init();
    publisher.send_blob(1, blob).await;
    viewer.pump_until_holds(1, blob).await;
    let Viewer {
        chunk: mut chunk_socket,
        blob: mut blob_socket,
        ..
    } = viewer;
    // The blob socket says nothing more that matters here; it is read all the same.
    tokio::spawn(async move { while blob_socket.next().await.is_some() {} });

    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; B_CHUNKS]));
    let receiver = {
        let sent = sent.clone();
        let blob_len = blob.len() as u64;
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(B_CHUNKS);
            while latencies.len() < B_CHUNKS {
                let message = tokio::time::timeout(PATIENCE, chunk_socket.next())
                    .await
                    .expect("B's chunks keep coming")
                    .expect("B's chunk socket stays open")
                    .unwrap();
                let Message::Binary(frame) = message else {
                    continue;
                };
                let received = Instant::now();
                let offset = u64::from_be_bytes(frame[8..16].try_into().unwrap());
                let i = ((offset - blob_len) / B_CHUNK_LEN as u64) as usize;
                let sent_at = sent.lock().unwrap()[i].expect("sent before received");
                latencies.push(received - sent_at);
            }
            latencies
        })
    };
    let mut ticks = tokio::time::interval(B_INTERVAL);
    for i in 0..B_CHUNKS {
        ticks.tick().await;
        let payload = vec![(i % 251) as u8; B_CHUNK_LEN];
        sent.lock().unwrap()[i] = Some(Instant::now());
        publisher.send_chunk(&payload).await;
    }
    receiver.await.unwrap()
}

/// What stream A sends.
#[derive(Debug, Clone, Copy)]
enum Flood {
    /// Frames as large, that cost the index nothing: the ceiling B is held to, since
    /// receiving megabytes (unmasking, copying) costs a worker its time in any case.
    Plain,
    Hostile,
}

/// A generation of `len` bytes that costs the index nothing: the init segment, then one
/// Void element.
fn plain_generation(len: usize) -> Vec<u8> {
    let mut generation = chrome_init().to_vec();
    let void = len - generation.len() - 9;
    generation.push(0xEC);
    generation.extend((void as u64 | 1 << 56).to_be_bytes());
    generation.resize(len, 0);
    generation
}

/// Stream A: a viewer that reads everything, and a publisher that sends a generation
/// every `A_INTERVAL` once B is under way.
async fn flood_a(server: &TestServer, flood: Flood) {
    let mut viewer = Viewer::connect(server, "a").await;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = viewer.chunk.next() => if m.is_none() { break },
                m = viewer.blob.next() => if m.is_none() { break },
            }
        }
    });
    let mut publisher = Publisher::connect(server, "a", "session=a").await;
    publisher.start("video/webm;codecs=vp8,opus").await;
    let frame = match flood {
        Flood::Plain => plain_generation(A_FRAME_LEN),
        Flood::Hostile => hostile_generation(A_FRAME_LEN),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for g in 1..=A_FRAMES {
        publisher.send_blob(g, &frame).await;
        tokio::time::sleep(A_INTERVAL).await;
    }
    server.until_api("a", |s| s["generation"] == A_FRAMES).await;
}

/// Runs `work` on a thread and runtime of its own, so that its timing is not the
/// server's: a stalled server worker must show as latency, not delay the measuring.
fn on_own_thread<T: Send + 'static>(
    work: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
}

/// Stream B's chunk latencies, in ms, while A floods a server of two workers, as on a
/// 2-core machine; each client runs on a thread of its own.
fn b_latencies_while_a_sends(flood: Flood) -> Vec<f64> {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Not recorded: the recording's splicer works on the blocking pool, apart from the
    // relay, and is bounded by its own tests; what is measured here is the relay alone.
    let server = Arc::new(server_runtime.block_on(TestServer::with(|c| c.no_record = true)));
    let b = {
        let server = server.clone();
        on_own_thread(move || Box::pin(async move { relay_b(&server).await }))
    };
    let a = {
        let server = server.clone();
        on_own_thread(move || Box::pin(async move { flood_a(&server, flood).await }))
    };
    let latencies = b.join().unwrap();
    a.join().unwrap();
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "stream B chunk latency while A sends {A_FRAMES} {flood:?} frames of {} MiB: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} chunks)",
        A_FRAME_LEN >> 20,
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1],
        ms.len()
    );
    drop(server);
    drop(server_runtime);
    ms
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

#[test]
fn a_hostile_frame_on_one_stream_does_not_delay_another_streams_viewers() {
    // A frame of millions of tiny elements once cost the index 60 ms of a worker under
    // the stream's lock (ten times that in a debug build): every stream on the server
    // stalled with it. Measured against frames as large that cost the index nothing,
    // on the same machine in the same round: what receiving the bytes costs a worker
    // anyway, and what the load of a shared machine adds, is not the index's to answer
    // for. A stall shows in every round; the machine's noise, in one round or another.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let ceiling = percentile(&b_latencies_while_a_sends(Flood::Plain), 0.99);
        let hostile = percentile(&b_latencies_while_a_sends(Flood::Hostile), 0.99);
        if hostile < ceiling + 20.0 {
            return;
        }
        rounds.push(format!("p99 {hostile:.1} ms against {ceiling:.1} ms"));
    }
    panic!("B's viewers were held up by A's frames in every round: {rounds:?}");
}

/// The longest mime type a publisher may declare (255 bytes), and one byte more.
fn mimes() -> (String, String) {
    let longest = format!("video/webm;codecs={}", "a".repeat(255 - 18));
    assert_eq!(longest.len(), 255);
    let too_long = format!("{longest}a");
    (longest, too_long)
}

#[tokio::test]
async fn an_over_long_mime_is_refused_on_the_publisher_socket_with_4400() {
    let server = TestServer::start().await;
    let (longest, too_long) = mimes();
    let mut publisher = Publisher::connect(&server, "m", "session=m").await;
    publisher.start(&too_long).await;
    let (code, reason) = closed_with(&mut publisher.blob).await;
    assert_eq!(code, 4400, "{reason}");
    assert!(
        reason.contains("256 bytes") && reason.contains("255-byte limit"),
        "{reason}"
    );
    let (_, info) = server.get_json("/api/streams/m").await;
    assert!(info["mime"].is_null(), "not kept: {info}");

    // The longest allowed one reaches the API and the viewers' hello.
    let mut publisher = Publisher::connect(&server, "m2", "session=m2").await;
    publisher.start(&longest).await;
    publisher.send_blob(1, chrome_init()).await;
    server
        .until_api("m2", |s| s["mime"] == longest.as_str())
        .await;
    let mut viewer = Viewer::connect(&server, "m2").await;
    viewer.pump_until_holds(1, chrome_init()).await;
    let hello = viewer
        .controls
        .iter()
        .find(|c| c["type"] == "stream")
        .unwrap();
    assert_eq!(hello["mime"], longest.as_str());
}

#[tokio::test]
async fn an_over_long_mime_is_refused_over_http_with_400() {
    let server = TestServer::start().await;
    let (longest, too_long) = mimes();
    let query = |mime: &str| {
        format!(
            "/api/streams/h/blob?session=h&mime={}",
            mime.replace(';', "%3B").replace('=', "%3D")
        )
    };
    let blob = frame(1, 0, chrome_init()).to_vec();
    let (status, body) = server.post_json(&query(&too_long), blob.clone(), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("255-byte limit"),
        "{body}"
    );
    let (status, body) = server
        .post_json(
            "/api/streams/h/blob?session=h",
            blob.clone(),
            &[("content-type", too_long.clone())],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("255-byte limit"),
        "{body}"
    );
    // Refused before the stream was held: the same session publishes at once.
    let (status, body) = server.post_json(&query(&longest), blob, &[]).await;
    assert_eq!(status, 200, "{body}");
    server
        .until_api("h", |s| s["mime"] == longest.as_str())
        .await;
}
