//! The connection edges against peers that misbehave (issue "safe on the open internet,
//! part 1"): publishers that vanish without a FIN, two sessions that number their
//! generations alike, viewers that pin memory, clients that trickle headers, shutdown
//! with a stalled download, and a stop that overtakes its generation's blob.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const MIME: &str = "video/webm;codecs=vp8,opus";

/// A TCP proxy that can go silent: once frozen it forwards nothing either way and
/// closes nothing, as a laptop that sleeps or Wi-Fi that drops.
struct Freezer {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Freezer {
    async fn start(upstream: std::net::SocketAddr) -> Freezer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, flag.clone()));
                tokio::spawn(pipe(sr, cw, flag.clone()));
            }
        });
        Freezer { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n.unwrap_or(0),
            _ = async { while !frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await } } => 0,
        };
        if frozen.load(Ordering::SeqCst) {
            // Hold both ends open and say nothing, for good.
            let _hold = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_publisher_gone_silent_without_a_fin_frees_its_stream_and_its_session_takes_over_at_once()
{
    let server = TestServer::with(|c| c.publisher_timeout_secs = 2).await;
    let proxy = Freezer::start(server.addr).await;
    let via_proxy = TestServer::at(proxy.addr);
    let pieces = chrome_pieces();

    // A session behind a link that goes dead; the same session comes back directly
    // (a reloaded page keeps its id) and takes over at once.
    let mut viewer = Viewer::connect(&server, "cam").await;
    let mut old = Publisher::connect(&via_proxy, "cam", "session=s1").await;
    old.start(MIME).await;
    old.publish_generation(1, &pieces[..3]).await;
    viewer
        .pump_until("generation 1", |v| v.generation == Some(1))
        .await;
    proxy.freeze();
    let mut again = Publisher::connect(&server, "cam", "session=s1").await;
    again.start(MIME).await;
    again.publish_generation(2, &pieces[..3]).await;
    viewer
        .pump_until("generation 2 from the same session", |v| {
            v.generation == Some(2)
        })
        .await;
    // The old sockets were closed when the new ones came: when the new ones leave,
    // the session ends at once, not after the silence timeout.
    let left = Instant::now();
    drop(again);
    viewer
        .pump_until("the end of the session", |v| v.saw_control("end"))
        .await;
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );

    // Another session behind a link that goes dead: a new session is refused while it
    // lives, and gets the stream once the silence timeout has passed.
    let proxy = Freezer::start(server.addr).await;
    let via_proxy = TestServer::at(proxy.addr);
    let mut stuck = Publisher::connect(&via_proxy, "cam2", "session=s2").await;
    stuck.start(MIME).await;
    stuck.publish_generation(1, &pieces[..2]).await;
    server.until_api("cam2", |s| s["live"] == true).await;
    proxy.freeze();
    let silent_since = Instant::now();
    let refused = connect(&server.ws_url("/ws/publish/cam2/blob?session=s3")).await;
    let mut refused = refused;
    assert_eq!(closed_with(&mut refused).await.0, 4409);
    let deadline = silent_since + Duration::from_secs(6);
    loop {
        let mut blob = connect(&server.ws_url("/ws/publish/cam2/blob?session=s3")).await;
        blob.send(Message::text(format!(
            r#"{{"type":"start","mime":"{MIME}"}}"#
        )))
        .await
        .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), blob.next()).await {
            // Still open after 300 ms: accepted.
            Err(_) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "a new session was still refused {:?} after the publisher went silent",
                silent_since.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("blobcast_publishers_timed_out_total 2"),
        "both of the silent session's sockets timed out: {metrics}"
    );
}

#[tokio::test]
async fn two_ingest_sessions_that_both_number_generation_1_never_mix() {
    let server = TestServer::start().await;
    let post = |session: &'static str, offset: u64, piece: Vec<u8>| {
        let kind = if offset == 0 { "blob" } else { "chunk" };
        let path = format!("/api/streams/web/{kind}?session={session}");
        let server = &server;
        async move {
            let (status, body) = server
                .post_json(&path, frame(1, offset, &piece).to_vec(), &[])
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let session_a: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let session_b: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    let mut viewer = Viewer::connect(&server, "web").await;
    for (i, piece) in cut(&session_a, 4, 7).into_iter().enumerate() {
        let offset = cut(&session_a, 4, 7)[..i]
            .iter()
            .map(Vec::len)
            .sum::<usize>();
        post("a", offset as u64, piece).await;
    }
    viewer.pump_until_holds(1, &session_a).await;
    let epoch_a = viewer.epoch;
    let seen_a = viewer.sessions_seen;
    let (status, _) = server
        .post_json("/api/streams/web/stop?session=a", vec![], &[])
        .await;
    assert_eq!(status, 200);
    viewer
        .pump_until("the end of session a", |v| v.saw_control("end"))
        .await;

    // Session b numbers its generation 1 too, and is shorter: a cursor or a resume
    // point of session a would underflow, or glue b's bytes after a's.
    let pieces = cut(&session_b, 3, 9);
    post("b", 0, pieces[0].clone()).await;
    let mut offset = pieces[0].len() as u64;
    for piece in &pieces[1..] {
        post("b", offset, piece.clone()).await;
        offset += piece.len() as u64;
    }
    viewer.pump_until_holds(1, &session_b).await;
    assert_ne!(viewer.epoch, epoch_a, "session b has an epoch of its own");
    assert_eq!(viewer.sessions_seen, seen_a + 1);
    let hello = viewer
        .controls
        .iter()
        .rev()
        .find(|c| c["type"] == "stream")
        .unwrap();
    assert_eq!(hello["resumed"], false);

    // A viewer that held session a's generation 1 resumes: it gets session b afresh,
    // with or without naming its epoch.
    for query in [
        format!(
            "gen=1&offset={}&epoch={}",
            session_a.len(),
            epoch_a.unwrap()
        ),
        format!("gen=1&offset={}", session_a.len() - 1),
    ] {
        let mut late = Viewer::connect_with(&server, "web", &query).await;
        late.pump_until_holds(1, &session_b).await;
        assert_eq!(late.controls[0]["resumed"], false, "{query}");
    }
}

async fn buffered_bytes(server: &TestServer) -> u64 {
    let (_, metrics) = server.get_text("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("blobcast_buffered_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the buffered-bytes gauge")
}

#[tokio::test]
async fn viewers_that_join_every_generation_and_stay_pin_at_most_two_generations() {
    let server = TestServer::with(|c| c.no_record = true).await;
    let mut publisher = Publisher::connect(&server, "cam", "session=s").await;
    publisher.start(MIME).await;
    const GENERATION: usize = 1 << 20;
    let payload = vec![7u8; GENERATION / 8];
    let mut viewers = Vec::new();
    for g in 1..=10u64 {
        publisher.send_blob(g, &payload).await;
        for _ in 1..8 {
            publisher.send_chunk(&payload).await;
        }
        viewers.push(Viewer::connect(&server, "cam").await);
        for viewer in &mut viewers {
            viewer
                .pump_until("the generation", |v| {
                    v.holds(g).map(<[u8]>::len) == Some(GENERATION)
                })
                .await;
        }
        let held = buffered_bytes(&server).await;
        assert!(
            held <= 2 * GENERATION as u64,
            "generation {g}: {held} bytes held for 10 viewers that each joined a generation"
        );
    }
}

#[tokio::test]
async fn a_viewer_that_takes_its_snapshot_drop_by_drop_is_cut_two_generations_later() {
    let server = TestServer::with(|c| {
        c.no_record = true;
        c.send_timeout_secs = 60;
    })
    .await;
    let mut publisher = Publisher::connect(&server, "cam", "session=s").await;
    publisher.start(MIME).await;
    let piece = vec![3u8; 128 * 1024];
    publisher.send_blob(1, &piece).await;
    for _ in 0..63 {
        publisher.send_chunk(&piece).await;
    }
    server
        .until_api("cam", |s| s["buffered_bytes"] == 64 * 128 * 1024)
        .await;
    let url = server.ws_url("/ws/watch/cam/blob");
    let mut dripper = connect_small_window(&url).await;
    let reader = tokio::spawn(async move {
        // 32 KiB every 100 ms: 8 MiB would take half a minute.
        closed_with_pauses(&mut dripper, Duration::from_millis(100)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for g in 2..=3u64 {
        publisher.send_blob(g, &piece).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, reason) = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the slow joiner is cut soon after two newer generations")
        .unwrap();
    assert_eq!(code, 4408, "{reason}");
    assert!(reason.contains("two newer generations"), "{reason}");
    let deadline = Instant::now() + PATIENCE;
    while buffered_bytes(&server).await > 2 * 128 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the first generation is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_that_trickle_their_headers_are_closed_and_viewers_still_served() {
    let server = TestServer::with(|c| c.header_timeout_secs = 1).await;
    let mut tricklers = Vec::new();
    for _ in 0..300 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        tricklers.push(socket);
    }
    let started = Instant::now();
    let mut publisher = Publisher::connect(&server, "cam", "session=s").await;
    publisher.start(MIME).await;
    let mut viewer = Viewer::connect(&server, "cam").await;
    let pieces = chrome_pieces();
    publisher.publish_generation(1, &pieces).await;
    viewer.pump_until_holds(1, CHROME).await;
    // One header byte a while, for longer than the timeout: each is cut off anyway.
    let mut open = tricklers.len();
    let deadline = started + Duration::from_secs(8);
    while open > 0 {
        assert!(
            Instant::now() < deadline,
            "{open} of 300 trickling connections still open after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        open = 0;
        for socket in &mut tricklers {
            let alive = socket.write_all(b"X").await.is_ok() && {
                let mut byte = [0u8; 1];
                !matches!(
                    tokio::time::timeout(Duration::from_millis(1), socket.read(&mut byte)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                )
            };
            open += usize::from(alive);
        }
    }
    assert_eq!(server.get_text("/healthz").await.0, 200);
}

#[test]
fn sigterm_with_a_stalled_download_in_flight_exits_within_the_grace_period() {
    let public = scratch_dir("sigterm-public");
    std::fs::create_dir_all(&public).unwrap();
    std::fs::write(public.join("big.bin"), vec![0u8; 64 << 20]).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blobcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-record",
            "--shutdown-grace-secs",
            "2",
        ])
        .arg("--public-dir")
        .arg(&public)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    // A download that reads nothing, and a request head that never ends.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    socket.connect(&target.into()).unwrap();
    let mut stalled: std::net::TcpStream = socket.into();
    std::io::Write::write_all(&mut stalled, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut slowloris = std::net::TcpStream::connect(target).unwrap();
    std::io::Write::write_all(&mut slowloris, b"GET / HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = sent + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 5 s after SIGTERM with --shutdown-grace-secs 2");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sent.elapsed() < Duration::from_millis(3500),
        "{:?}",
        sent.elapsed()
    );
    drop((stalled, slowloris));
    let _ = std::fs::remove_dir_all(&public);
}

#[tokio::test]
async fn a_stop_that_overtakes_its_generations_blob_never_revives_the_stream() {
    let server = TestServer::start().await;
    let pieces = chrome_pieces();
    let mut viewer = Viewer::connect(&server, "cam").await;
    for round in 0..20u64 {
        let session = format!("session=stop{round}");
        let mut publisher = Publisher::connect(&server, "cam", &session).await;
        publisher.start(MIME).await;
        let first = 2 * round + 1;
        publisher.publish_generation(first, &pieces[..4]).await;
        viewer
            .pump_until("the first generation", |v| v.generation == Some(first))
            .await;
        // A restart, then Stop at once: the stop (chunk socket) arrives before the new
        // generation's blob (blob socket), as it can over two TCP connections.
        let restart = &pieces[0];
        let stop = format!(
            r#"{{"type":"stop","generation":{},"length":{}}}"#,
            first + 1,
            restart.len()
        );
        publisher.chunk.send(Message::text(stop)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        publisher.send_blob(first + 1, restart).await;
        viewer
            .pump_until("the end of the session", |v| {
                v.controls.last().is_some_and(|c| c["type"] == "end")
            })
            .await;
        // Anything after the stop is refused, and the stream stays ended.
        publisher.send_blob(first + 2, restart).await;
        let (code, reason) = closed_with(&mut publisher.blob).await;
        assert_eq!(code, 4400, "{reason}");
        viewer.pump_for(Duration::from_millis(100)).await;
        assert_eq!(
            viewer.controls.last().map(|c| c["type"].clone()),
            Some("end".into()),
            "round {round}: the stream came back to life: {:?}",
            &viewer.controls[viewer.controls.len().saturating_sub(3)..]
        );
        let (_, info) = server.get_json("/api/streams/cam").await;
        assert_eq!(info["live"], false, "round {round}: {info}");
        drop(publisher);
        server
            .until_api("cam", |s| s["publisher_connected_since"].is_null())
            .await;
    }
    // Each session is one recording, with both of its generations.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = server.get_json("/api/recordings").await;
        let list = list.as_array().unwrap().clone();
        let done = list.iter().filter(|r| r["state"] != "recording").count();
        if list.len() == 20 && done == 20 {
            assert!(list.iter().all(|r| r["generations"] == 2), "{list:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} recordings: {list:?}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn max_connections_is_lowered_to_what_the_open_file_limit_allows_and_says_so() {
    use std::io::{BufRead, Read, Write};
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_blobcast"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-record"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 200,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // 136 = 200 - 64 spare descriptors. Held open, they fill the limit; the next one is
    // refused at accept rather than failing there with EMFILE.
    let held: Vec<std::net::TcpStream> = (0..136)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = std::net::TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = over.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = over.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "refused: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    // With the slots free again, the server serves as before.
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child.wait().unwrap();
    assert!(
        log.contains("--max-connections lowered from 25000 to 136: the open-file limit is 200"),
        "{log}"
    );
}
