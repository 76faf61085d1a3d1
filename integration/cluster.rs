//! A Blobcast cluster on a real `nats-server -js` (docs/cluster.md): three nodes, a
//! publisher on one and viewers on the others, every byte intact across recorder
//! restarts; a node killed with SIGKILL and its viewers resuming on another with
//! nothing downloaded twice; the publisher's node killed and its session carrying on
//! elsewhere, its recording there linked to the file on the node it left; NATS stopped
//! and started again; one publisher session per stream cluster-wide; a replica started
//! for a live joiner reading the log from the newest keyframe cluster (WebM) or
//! sync-led fragment (MP4), and fetching what it skipped for a viewer that needs it. Without
//! nats-server the tests fail under CI (`CI` set) and are skipped, loudly, elsewhere.

mod common;

use blobcast::stream::index::MediaIndex;
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MIME: &str = "video/webm;codecs=vp8,opus";

fn find_nats_server() -> Option<PathBuf> {
    let known = |p: &Path| p.is_file().then(|| p.to_path_buf());
    known(Path::new("/usr/sbin/nats-server"))
        .or_else(|| known(Path::new("/usr/bin/nats-server")))
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths).find_map(|dir| known(&dir.join("nats-server")))
            })
        })
}

/// nats-server, or None outside CI when it is missing (said loudly); under CI a
/// missing nats-server fails the test.
fn nats_server_binary() -> Option<PathBuf> {
    if let Some(found) = find_nats_server() {
        return Some(found);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    assert!(
        !ci,
        "nats-server is not installed; under CI that is a failure (.ci/run installs it)"
    );
    let _ = write!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED: nats-server is not installed (apt-get install nats-server). !!!\n\
         !!! The cluster was NOT tested.                                          !!!\n{bar}\n",
        bar = "!".repeat(76)
    );
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `nats-server -js` on a free port with its own store, stopped by pid.
struct Nats {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Nats {
    async fn start() -> Option<Nats> {
        let binary = nats_server_binary()?;
        let store = scratch_dir("nats");
        std::fs::create_dir_all(&store).unwrap();
        let mut nats = Nats {
            binary,
            port: free_port(),
            store,
            child: None,
        };
        nats.run().await;
        Some(nats)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and store.
    async fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it by pid (SIGTERM, then SIGKILL if it lingers).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        for _ in 0..250 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// An in-process node of the cluster.
async fn node(nats: &Nats, name: &str) -> TestServer {
    let url = nats.url();
    let name = name.to_owned();
    let server = TestServer::with(move |c| {
        c.nats = Some(url);
        c.node_name = Some(name);
    })
    .await;
    until_connected(&server).await;
    server
}

/// Until the node's `/healthz` says it is connected to NATS.
async fn until_connected(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, health) = server.get_text("/healthz").await;
        if health.contains("nats: connected") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never connected to NATS: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary as a child process: a node that can be killed with SIGKILL.
struct ChildNode {
    child: Child,
    server: TestServer,
}

impl ChildNode {
    async fn spawn(nats: &Nats, name: &str) -> ChildNode {
        ChildNode::spawn_with(nats, name, &["--no-record"]).await
    }

    async fn spawn_with(nats: &Nats, name: &str, args: &[&str]) -> ChildNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blobcast"))
            .args(["--listen", "127.0.0.1:0", "--nats"])
            .arg(nats.url())
            .args(args)
            .args(["--node-name", name])
            .env_remove("BLOBCAST_PUBLISH_KEY")
            .env_remove("BLOBCAST_NATS")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let addr: SocketAddr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let server = TestServer::at(addr);
        until_connected(&server).await;
        ChildNode { child, server }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter's value in a node's `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let (_, text) = server.get_text("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Where the Chrome recording's keyframe clusters start, as the server's index sees
/// them while the pieces arrive; and its init segment's end.
fn keyframe_clusters() -> (u64, Vec<u64>) {
    join_points(&chrome_pieces())
}

/// Where a live joiner may start in a recording published in `pieces` (keyframe-led
/// clusters or sync-led fragments, as the server's index finds them), and the end of
/// its init segment.
fn join_points(pieces: &[Vec<u8>]) -> (u64, Vec<u64>) {
    let mut index = MediaIndex::new();
    let mut starts: Vec<u64> = Vec::new();
    let mut init_end = 0;
    for piece in pieces {
        index.feed(piece);
        if let Some((init, start)) = index.live_start() {
            init_end = init;
            if starts.last() != Some(&start) {
                starts.push(start);
            }
        }
    }
    (init_end, starts)
}

/// Runs `pump` on every viewer at once, giving them back in order.
async fn all<F, Fut>(viewers: Vec<Viewer>, pump: F) -> Vec<Viewer>
where
    F: Fn(Viewer) -> Fut,
    Fut: std::future::Future<Output = Viewer> + Send + 'static,
{
    let tasks: Vec<_> = viewers.into_iter().map(|v| tokio::spawn(pump(v))).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("a viewer failed"));
    }
    out
}

fn joined_live(viewer: &Viewer) -> bool {
    viewer
        .controls
        .iter()
        .any(|c| c["type"] == "stream" && c["join"] == "live")
}

/// What a viewer holds of the first generation is the recording: all of it, or for a
/// live joiner the init segment and everything from its keyframe cluster on.
fn check_first_generation(viewer: &Viewer) {
    if viewer.skipped == 0 {
        assert!(viewer.data == CHROME, "join=start: the whole recording");
        return;
    }
    let head = viewer.jumped_at as usize;
    let from = head + viewer.skipped as usize;
    assert_eq!(&viewer.data[..head], &CHROME[..head], "init segment");
    assert_eq!(
        &viewer.data[head..],
        &CHROME[from..],
        "from the keyframe on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_other_nodes_get_every_byte_across_restarts_and_one_copy_per_node() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let node2 = node(&nats, "node-2").await;
    let node3 = node(&nats, "node-3").await;
    let pieces = chrome_pieces();
    let split = pieces.len() * 2 / 3;
    let published: u64 = pieces[..split].iter().map(|p| p.len() as u64).sum();

    let mut publisher = Publisher::connect(&node1, "cam", "session=one").await;
    publisher.start(MIME).await;
    publisher.publish_generation(100, &pieces[..split]).await;
    node1
        .until_api("cam", |s| s["buffered_bytes"] == published)
        .await;
    // Any node lists the cluster's streams, and which node publishes them.
    node3
        .until_api("cam", |s| s["node"] == "node-1" && s["live"] == true)
        .await;
    let (_, listed) = node2.get_json("/api/streams").await;
    assert_eq!(listed[0]["name"], "cam", "{listed}");
    assert_eq!(listed[0]["node"], "node-1", "{listed}");

    // 15 viewers from the start on each node; once their replicas have caught up,
    // 15 live joiners on each.
    let mut viewers = Vec::new();
    for server in [&node2, &node3] {
        for _ in 0..15 {
            viewers.push(Viewer::connect(server, "cam").await);
        }
    }
    let reached = move |mut v: Viewer| async move {
        v.pump_until("the published part", |v| v.length() == published)
            .await;
        v
    };
    viewers = all(viewers, reached).await;
    for server in [&node2, &node3] {
        for _ in 0..15 {
            viewers.push(Viewer::connect_with(server, "cam", "join=live").await);
        }
    }
    viewers = all(viewers, reached).await;

    // A live joiner downloads at most the init segment and one keyframe interval.
    let (init_end, keyframes) = keyframe_clusters();
    let interval = keyframes
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([CHROME.len() as u64 - keyframes.last().unwrap()])
        .max()
        .unwrap();
    let joiner = viewers.last().unwrap();
    assert!(joined_live(joiner), "{:?}", joiner.controls);
    let media = joiner.received_bytes as u64 - 16 * joiner.binary_frames as u64;
    assert!(
        media <= init_end + interval,
        "a live joiner on node 3 got {media} bytes: more than the init ({init_end}) and \
         one keyframe interval ({interval})"
    );
    assert_eq!(viewers.iter().filter(|v| joined_live(v)).count(), 30);

    // The rest of the generation, then two recorder restarts.
    for piece in &pieces[split..] {
        publisher.send_chunk(piece).await;
    }
    viewers = all(viewers, |mut v| async move {
        v.pump_until("generation 100", |v| v.length() == CHROME.len() as u64)
            .await;
        v
    })
    .await;
    viewers.iter().for_each(check_first_generation);
    for generation in [101, 102] {
        publisher.publish_generation(generation, &pieces).await;
        viewers = all(viewers, move |mut v| async move {
            v.pump_until_holds(generation, CHROME).await;
            v
        })
        .await;
    }
    for viewer in &viewers {
        assert!(viewer.holds(100).is_some() && viewer.holds(101) == Some(CHROME));
        assert!(!viewer.saw_control("end"));
    }

    // One copy per node from NATS, however many viewers: three generations' worth.
    let log_bytes = 3 * (CHROME.len() as u64 + 16 * pieces.len() as u64);
    for server in [&node2, &node3] {
        let read = metric(server, "blobcast_nats_read_bytes_total").await;
        assert!(
            // The log also holds the start message.
            read >= log_bytes - 16 * pieces.len() as u64 && read <= log_bytes + 100,
            "read {read} bytes from NATS for 30 viewers; the log holds {log_bytes}"
        );
        assert_eq!(metric(server, "blobcast_nats_replicas").await, 1);
    }
    assert_eq!(metric(&node1, "blobcast_nats_read_bytes_total").await, 0);
    assert!(
        metric(&node1, "blobcast_nats_published_bytes_total").await
            >= log_bytes - 16 * pieces.len() as u64
    );

    // The publisher's node shuts down: its viewers elsewhere are told the stream ended.
    let mut node1 = node1;
    node1.shutdown().await;
    all(viewers, |mut v| async move {
        v.pump_until("the end", |v| v.saw_control("end")).await;
        v
    })
    .await;
    drop(publisher);
}

/// The hello a viewer got on its latest blob socket.
fn hello(viewer: &Viewer) -> &serde_json::Value {
    viewer
        .controls
        .iter()
        .find(|c| c["type"] == "stream")
        .expect("a hello")
}

/// Media bytes a viewer received since it last (re)connected.
fn media_received(viewer: &Viewer) -> u64 {
    (viewer.received_bytes - HEADER * viewer.binary_frames) as u64
}

const HEADER: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_a_killed_node_resume_on_another_with_nothing_twice() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let mut node2 = ChildNode::spawn(&nats, "node-2").await;
    let node3 = node(&nats, "node-3").await;
    let pieces = chrome_pieces();
    let split = pieces.len() / 2;
    let published: u64 = pieces[..split].iter().map(|p| p.len() as u64).sum();
    let mut publisher = Publisher::connect(&node1, "cam", "session=one").await;
    publisher.start(MIME).await;
    publisher.publish_generation(200, &pieces[..split]).await;

    let mut viewers = Vec::new();
    for query in ["", "join=live", "", "join=live"] {
        viewers.push(Viewer::connect_with(&node2.server, "cam", query).await);
    }
    viewers = all(viewers, move |mut v| async move {
        v.pump_until("half the recording", |v| v.length() == published)
            .await;
        v
    })
    .await;

    node2.kill();
    // Node 3 has no viewer of the stream yet: its replica starts with these.
    let mut resumed = Vec::new();
    for viewer in viewers {
        let before = viewer.length();
        let viewer = viewer.reconnect(&node3, "cam").await;
        resumed.push((viewer, before));
    }
    for piece in &pieces[split..] {
        publisher.send_chunk(piece).await;
    }
    for (mut viewer, before) in resumed {
        viewer
            .pump_until("the rest of the recording", |v| {
                v.length() == CHROME.len() as u64
            })
            .await;
        assert_eq!(hello(&viewer)["resumed"], true, "{:?}", viewer.controls);
        assert_eq!(hello(&viewer)["generation"], 200);
        assert_eq!(
            media_received(&viewer),
            CHROME.len() as u64 - before,
            "after the reconnection, only what the viewer did not have (had {before}, skipped {}, frames {}, controls {:?})",
            viewer.skipped, viewer.binary_frames, viewer.controls
        );
        check_first_generation(&viewer);
    }
    drop(publisher);
    let mut node1 = node1;
    node1.shutdown().await;
}

/// The stream's directory entry once `done` holds for it.
async fn until_directory(
    nats: &Nats,
    stream: &str,
    done: impl Fn(&blobcast::cluster::Entry) -> bool,
) -> blobcast::cluster::Entry {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = blobcast::cluster::connection::DIRECTORY_BUCKET;
    let store = js.get_key_value(bucket).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let entry = blobcast::cluster::directory::read(&store, stream)
            .await
            .unwrap();
        if let Some((entry, _)) = entry.as_ref().filter(|(e, _)| done(e)) {
            return entry.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the directory entry never got there: {entry:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_for_a_live_joiner_reads_from_the_keyframe_and_fetches_the_start_for_whoever_needs_it(
) {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let node3 = node(&nats, "node-3").await;
    let pieces = chrome_pieces();
    let split = pieces.len() * 3 / 4;
    let published: u64 = pieces[..split].iter().map(|p| p.len() as u64).sum();
    let (init_end, keyframes) = keyframe_clusters();
    let newest = *keyframes.iter().rfind(|&&k| k < published).unwrap();
    assert!(
        newest > published / 2,
        "the fixture's newest keyframe cluster is late enough"
    );

    let mut publisher = Publisher::connect(&node1, "cam", "session=one").await;
    publisher.start(MIME).await;
    // As a recorder sends it: the blob, then a chunk at a time (none held for the blob,
    // so the log holds the blob first).
    publisher.send_blob(300, &pieces[0]).await;
    node1
        .until_api("cam", |s| s["buffered_bytes"] == pieces[0].len())
        .await;
    for piece in &pieces[1..split] {
        publisher.send_chunk(piece).await;
    }
    let entry = until_directory(&nats, "cam", |e| {
        e.keyframe.is_some_and(|k| k.offset == newest)
    })
    .await;
    let keyframe = entry.keyframe.unwrap();

    // The node's first viewer joins at the live edge: its replica reads the
    // generation's first message (the init segment is in it), then the log from the
    // keyframe cluster's message on.
    let mut live = Viewer::connect_with(&node3, "cam", "join=live").await;
    live.pump_until("the published part", |v| v.length() == published)
        .await;
    assert!(joined_live(&live), "{:?}", live.controls);
    assert_eq!(live.jumped_at, init_end);
    assert_eq!(live.length() - live.skipped, init_end + published - newest);
    check_first_generation_so_far(&live, published);
    assert_eq!(
        metric(&node3, "blobcast_nats_replica_keyframe_starts_total").await,
        1
    );
    let read = metric(&node3, "blobcast_nats_read_bytes_total").await;
    let frame_bytes = |range: std::ops::Range<usize>| -> u64 {
        pieces[range].iter().map(|p| p.len() as u64 + 16).sum()
    };
    // The keyframe's message is the piece that holds its first byte.
    let mut end = 0u64;
    let holding = pieces
        .iter()
        .position(|p| {
            end += p.len() as u64;
            end > keyframe.offset
        })
        .unwrap();
    let expected = frame_bytes(0..1) + frame_bytes(holding..split);
    assert!(
        read <= expected + 100,
        "node 3 read {read} bytes from NATS: more than the first message and the \
         messages from the keyframe's on ({expected}); the generation so far is {}",
        frame_bytes(0..split)
    );
    assert!(read >= expected, "read {read}, expected {expected}");

    // A viewer resuming inside what was skipped, and one from the start: the replica
    // fetches the generation's start for the first, once.
    let query = format!("gen=300&offset={init_end}&epoch={}", hello(&live)["epoch"]);
    let mut resumed = Viewer::connect_with(&node3, "cam", &query).await;
    resumed
        .pump_until("the hello", |v| v.saw_control("stream"))
        .await;
    assert_eq!(hello(&resumed)["resumed"], true, "{:?}", resumed.controls);
    assert_eq!(metric(&node3, "blobcast_nats_replica_fills_total").await, 1);
    let mut whole = Viewer::connect(&node3, "cam").await;
    whole
        .pump_until("the published part", |v| v.length() == published)
        .await;
    assert_eq!(hello(&whole)["join"], "start", "{:?}", whole.controls);
    assert_eq!(whole.skipped, 0);
    assert!(
        whole.data == CHROME[..published as usize],
        "join=start: every byte"
    );
    assert_eq!(metric(&node3, "blobcast_nats_replica_fills_total").await, 1);

    // The rest of the generation and a new one: the live joiner, whose generation was
    // rebuilt under it, goes on exactly; so does everyone else.
    for piece in &pieces[split..] {
        publisher.send_chunk(piece).await;
    }
    let mut viewers = all(vec![live, whole], |mut v| async move {
        v.pump_until("generation 300", |v| v.length() == CHROME.len() as u64)
            .await;
        v
    })
    .await;
    viewers.iter().for_each(check_first_generation);
    assert!(viewers[1].data == CHROME);
    publisher.publish_generation(301, &pieces).await;
    viewers = all(viewers, |mut v| async move {
        v.pump_until_holds(301, CHROME).await;
        v
    })
    .await;
    assert!(viewers.iter().all(|v| !v.saw_control("end")));
    drop((publisher, resumed));
    let mut node1 = node1;
    node1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp4_replica_for_a_live_joiner_starts_at_the_newest_sync_led_fragment_and_decodes() {
    const MP4: &[u8] = include_bytes!("fixtures/chrome-avc1-opus.mp4");
    let Some(nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let node3 = node(&nats, "node-3").await;
    // Chromium's own MP4 in 6 KB pieces after a blob that holds the init segment.
    let blob = moofs(MP4)[0] + 100;
    let pieces: Vec<Vec<u8>> = std::iter::once(MP4[..blob].to_vec())
        .chain(MP4[blob..].chunks(6000).map(<[u8]>::to_vec))
        .collect();
    let split = pieces.len() - 3;
    let published: u64 = pieces[..split].iter().map(|p| p.len() as u64).sum();
    let (init_end, points) = join_points(&pieces[..split]);
    let newest = *points.last().unwrap();
    assert!(
        newest > init_end + 12_000,
        "several messages to skip: {points:?}"
    );

    let mut publisher = Publisher::connect(&node1, "phone", "session=one").await;
    publisher.start("video/mp4;codecs=avc1.42E01E,opus").await;
    publisher.send_blob(7, &pieces[0]).await;
    node1
        .until_api("phone", |s| s["buffered_bytes"] == pieces[0].len())
        .await;
    for piece in &pieces[1..split] {
        publisher.send_chunk(piece).await;
    }
    until_directory(&nats, "phone", |e| {
        e.keyframe.is_some_and(|k| k.offset == newest)
    })
    .await;

    let mut live = Viewer::connect_with(&node3, "phone", "join=live").await;
    live.pump_until("the published part", |v| v.length() == published)
        .await;
    assert_eq!(hello(&live)["join"], "live");
    assert_eq!(
        metric(&node3, "blobcast_nats_replica_keyframe_starts_total").await,
        1
    );
    assert_eq!(
        (live.jumped_at, live.jumped_at + live.skipped),
        (init_end, newest)
    );
    let mut whole = Viewer::connect(&node3, "phone").await;
    whole
        .pump_until("the published part", |v| v.length() == published)
        .await;
    assert_eq!(metric(&node3, "blobcast_nats_replica_fills_total").await, 1);
    assert!(
        whole.data == MP4[..published as usize],
        "join=start: every byte"
    );

    for piece in &pieces[split..] {
        publisher.send_chunk(piece).await;
    }
    let viewers = all(vec![live, whole], |mut v| async move {
        v.pump_until("the whole recording", |v| v.length() == MP4.len() as u64)
            .await;
        v
    })
    .await;
    let [live, whole] = &viewers[..] else {
        unreachable!()
    };
    assert!(live.data[..init_end as usize] == MP4[..init_end as usize]);
    assert!(live.data[init_end as usize..] == MP4[newest as usize..]);
    // Byte for byte the recording (which itself has repeated timestamps ffmpeg
    // complains of: Chromium's muxer, not the relay).
    assert!(whole.data == MP4);
    assert_decodes(&live.data, "mp4 live joiner on a replica");
    drop(publisher);
    let mut node1 = node1;
    node1.shutdown().await;
}

/// What a viewer holds of the first generation up to `published`, as in
/// `check_first_generation`.
fn check_first_generation_so_far(viewer: &Viewer, published: u64) {
    let head = viewer.jumped_at as usize;
    let from = head + viewer.skipped as usize;
    assert_eq!(&viewer.data[..head], &CHROME[..head], "init segment");
    assert!(
        viewer.data[head..] == CHROME[from..published as usize],
        "from the keyframe on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_node_dies_goes_on_from_another_and_viewers_follow() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let mut node1 = ChildNode::spawn(&nats, "node-1").await;
    let node2 = node(&nats, "node-2").await;
    let node3 = node(&nats, "node-3").await;
    let pieces = chrome_pieces();
    let mut publisher = Publisher::connect(&node1.server, "cam", "session=moving").await;
    publisher.start(MIME).await;
    let mut viewers = Vec::new();
    for query in ["", "join=live", ""] {
        viewers.push(Viewer::connect_with(&node3, "cam", query).await);
    }
    publisher.publish_generation(300, &pieces).await;
    viewers = all(viewers, |mut v| async move {
        v.pump_until_holds(300, CHROME).await;
        v
    })
    .await;

    node1.kill();
    let killed = tokio::time::Instant::now();
    // The same session, on node 2, restarts its recorder as the page does.
    let mut publisher = Publisher::connect(&node2, "cam", "session=moving").await;
    publisher.start(MIME).await;
    publisher.send_blob(301, &pieces[0]).await;
    node2
        .until_api("cam", |s| s["generation"] == 301 && s["node"] == "node-2")
        .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?} to go on");
    for piece in &pieces[1..] {
        publisher.send_chunk(piece).await;
    }
    for mut viewer in viewers {
        // Pumping panics on any close or error; each socket's frames must follow on.
        viewer.pump_until_holds(301, CHROME).await;
        assert!(viewer.holds(300) == Some(CHROME), "generation 300 intact");
        assert!(!viewer.saw_control("end"));
    }
    node3
        .until_api("cam", |s| s["node"] == "node-2" && s["live"] == true)
        .await;
}

/// The recordings a node lists, once `done` holds for them.
async fn until_recordings(
    server: &TestServer,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, list) = server.get_json("/api/recordings").await;
        let list = list.as_array().cloned().unwrap_or_default();
        if status == 200 && done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {status} {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until the directory entry of `stream` names `recording` as its node's file.
async fn until_directory_names(nats: &Nats, stream: &str, recording: &str) {
    until_directory(nats, stream, |e| e.recording.as_deref() == Some(recording)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_goes_on_on_the_node_a_session_moves_to_and_says_which_file_it_continues() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let record_dir = scratch_dir("rec-node-1");
    let node1_args = ["--record-dir", record_dir.to_str().unwrap()];
    let mut node1 = ChildNode::spawn_with(&nats, "node-1", &node1_args).await;
    let node2 = node(&nats, "node-2").await;
    let pieces = chrome_pieces();
    let mut publisher = Publisher::connect(&node1.server, "cam", "session=moved").await;
    publisher.start(MIME).await;
    publisher.publish_generation(1, &pieces).await;
    let listed = until_recordings(&node1.server, "recording on node 1", |list| {
        list.len() == 1 && list[0]["state"] == "recording" && list[0]["bytes"].as_u64() > Some(0)
    })
    .await;
    let old = listed[0]["id"].as_str().unwrap().to_owned();
    until_directory_names(&nats, "cam", &old).await;

    node1.kill();
    let mut publisher = Publisher::connect(&node2, "cam", "session=moved").await;
    publisher.start(MIME).await;
    publisher.send_blob(2, &pieces[0]).await;
    // The blob is in before the chunk socket's `stop` can end the session.
    node2
        .until_api("cam", |s| s["generation"] == 2 && s["node"] == "node-2")
        .await;
    for piece in &pieces[1..] {
        publisher.send_chunk(piece).await;
    }
    publisher.stop().await;
    let listed = until_recordings(&node2, "finished on node 2", |list| {
        list.len() == 1 && list[0]["state"] == "finished"
    })
    .await;
    let new = &listed[0];
    assert_eq!(new["continues"], old.as_str(), "{new:#}");
    assert_eq!(new["continues_node"], "node-1", "{new:#}");
    assert_eq!(
        new["split_reason"], "the publisher moved from node-1 to node-2",
        "{new:#}"
    );

    // Node 1, started again on its record folder, finalizes the file the link names.
    let node1 = ChildNode::spawn_with(&nats, "node-1", &node1_args).await;
    let listed = until_recordings(&node1.server, "finalized on node 1", |list| {
        list.len() == 1 && list[0]["state"] == "interrupted"
    })
    .await;
    assert_eq!(listed[0]["id"], old.as_str());
    assert!(listed[0]["continues_node"].is_null(), "{:#}", listed[0]);
    drop(node1);
    let _ = std::fs::remove_dir_all(&record_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_started_again_stalls_replicas_without_corrupting_them() {
    let Some(mut nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let node2 = node(&nats, "node-2").await;
    let node3 = node(&nats, "node-3").await;
    let pieces = chrome_pieces();
    let split = pieces.len() / 3;
    let published: u64 = pieces[..split].iter().map(|p| p.len() as u64).sum();
    let mut publisher = Publisher::connect(&node1, "cam", "session=steady").await;
    publisher.start(MIME).await;
    publisher.publish_generation(400, &pieces[..split]).await;
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (server, local_node) in [(&node1, true), (&node2, false), (&node3, false)] {
        for query in ["", "join=live"] {
            let viewer = Viewer::connect_with(server, "cam", query).await;
            if local_node {
                local.push(viewer);
            } else {
                remote.push(viewer);
            }
        }
    }
    let reached = move |mut v: Viewer| async move {
        v.pump_until("a third of the recording", |v| v.length() == published)
            .await;
        v
    };
    local = all(local, reached).await;
    remote = all(remote, reached).await;

    nats.stop();
    let stopped = tokio::time::Instant::now();
    // The publisher goes on over the 3 s; node 1's own viewers get all of it live.
    let rest = &pieces[split..];
    let pause = Duration::from_secs(3) / rest.len() as u32;
    for piece in rest {
        publisher.send_chunk(piece).await;
        tokio::time::sleep(pause).await;
    }
    local = all(local, |mut v| async move {
        v.pump_until("the whole recording, NATS down", |v| {
            v.length() == CHROME.len() as u64
        })
        .await;
        v
    })
    .await;
    local.iter().for_each(check_first_generation);
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "NATS was down throughout"
    );
    nats.run().await;

    remote = all(remote, |mut v| async move {
        v.pump_until("the whole recording, NATS back", |v| {
            v.length() == CHROME.len() as u64
        })
        .await;
        v
    })
    .await;
    remote.iter().for_each(check_first_generation);
    publisher.publish_generation(401, &pieces).await;
    for mut viewer in local.into_iter().chain(remote) {
        viewer.pump_until_holds(401, CHROME).await;
        assert!(!viewer.saw_control("end"));
    }
    for server in [&node1, &node2, &node3] {
        assert!(metric(server, "blobcast_nats_state_changes_total").await >= 3);
        assert_eq!(metric(server, "blobcast_nats_connected").await, 1);
    }
    for server in [&node2, &node3] {
        assert!(metric(server, "blobcast_nats_replica_resumes_total").await >= 1);
        assert_eq!(
            metric(server, "blobcast_nats_replica_refused_frames_total").await,
            0
        );
    }
    drop(publisher);
    let mut node1 = node1;
    node1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_on_another_node_is_refused_while_the_first_lives() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let node3 = node(&nats, "node-3").await;
    let pieces = chrome_pieces();
    let mut first = Publisher::connect(&node1, "cam", "session=first").await;
    first.start(MIME).await;
    first.publish_generation(500, &pieces[..4]).await;
    let mut viewer = Viewer::connect(&node3, "cam").await;
    let have: u64 = pieces[..4].iter().map(|p| p.len() as u64).sum();
    viewer
        .pump_until("the first pieces", |v| v.length() == have)
        .await;

    let mut second = connect(&node3.ws_url("/ws/publish/cam/blob?session=second")).await;
    let (code, reason) = closed_with(&mut second).await;
    assert_eq!(code, 4409, "{reason}");
    // The refusal touched nothing: node 3's viewer goes on.
    for piece in &pieces[4..] {
        first.send_chunk(piece).await;
    }
    viewer
        .pump_until("the rest", |v| v.length() == CHROME.len() as u64)
        .await;
    assert!(viewer.data == CHROME);
    assert_eq!(
        metric(&node3, "blobcast_nats_claims_refused_total").await,
        1
    );

    // Once the first session has stopped, the second may publish at once.
    first.stop().await;
    viewer.pump_until("the end", |v| v.saw_control("end")).await;
    drop(first);
    // The directory entry goes with the session.
    node3.until_api("cam", |s| s["node"].is_null()).await;
    let mut second = Publisher::connect(&node3, "cam", "session=second").await;
    second.start(MIME).await;
    // (Numbered past the first session's: the test viewer, unlike a browser, drops
    // chunks of a lower generation that overtake their blob.)
    second.publish_generation(600, &pieces).await;
    viewer.pump_until_holds(600, CHROME).await;
    let mut node1 = node1;
    node1.shutdown().await;
}

/// An EBML Void element of `total` bytes: media a WebM scanner skips.
fn void(total: usize) -> Vec<u8> {
    let mut element = vec![0xEC, 0x01];
    element.extend_from_slice(&((total - 9) as u64).to_be_bytes()[1..]);
    element.resize(total, 0);
    element
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_and_frames_over_max_payload_reach_other_nodes() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let node1 = node(&nats, "node-1").await;
    let node2 = node(&nats, "node-2").await;
    let mut viewer = Viewer::connect(&node2, "web").await;
    // A frame of 3 MiB: nats-server's max_payload is 1 MB, so the log holds it cut.
    let big = void(3 << 20);
    let mut published = Vec::new();
    let q = "session=http1";
    for (i, piece) in chrome_pieces().iter().chain([&big]).enumerate() {
        let kind = if i == 0 { "blob" } else { "chunk" };
        let body = frame(9, published.len() as u64, piece).to_vec();
        let mime = ("content-type", MIME.to_owned());
        let path = format!("/api/streams/web/{kind}?{q}");
        let (status, body) = node1.post_json(&path, body, &[mime]).await;
        assert_eq!(status, 200, "{kind} {i}: {body}");
        published.extend_from_slice(piece);
    }
    viewer.pump_until_holds(9, &published).await;
    assert!(
        metric(&node1, "blobcast_nats_published_messages_total").await
            > chrome_pieces().len() as u64 + 3
    );

    // Another HTTP session on node 2 is refused, as a socket would be with 4409.
    let other = frame(1, 0, b"x").to_vec();
    let (status, body) = node2
        .post_json("/api/streams/web/blob?session=http2", other, &[])
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = node1
        .post_json(&format!("/api/streams/web/stop?{q}"), vec![], &[])
        .await;
    assert_eq!(status, 200);
    viewer.pump_until("the end", |v| v.saw_control("end")).await;
    let mut node1 = node1;
    node1.shutdown().await;
}
