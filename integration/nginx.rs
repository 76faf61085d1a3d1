//! Blobcast behind a real nginx configured from docs/deploy/nginx.conf: WebSockets
//! publish and watch through it with exact reassembly, HTTP ingest POSTs up to the
//! largest frame pass it unbuffered, recordings are served through it with byte ranges,
//! the API answers through it, and the client address in the logs is the one nginx
//! forwards, never one a client claims. Without nginx the test fails under CI
//! (`CI` set) and is skipped, loudly, elsewhere.

mod common;

use common::logs::{capture_logs, logged};
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MIME: &str = "video/webm;codecs=vp8,opus";
const TEMPLATE: &str = include_str!("../docs/deploy/nginx.conf");

/// The template's upstream and listen lines, which the test replaces.
const UPSTREAM_LINE: &str = "    server 127.0.0.1:8000;\n";
const LISTEN_LINE: &str = "    listen 80;\n";
const ACCESS_LOG_LINE: &str =
    "    access_log /var/log/nginx/blobcast.access.log blobcast_redacted;\n";

fn find_nginx() -> Option<PathBuf> {
    let known = |p: &Path| p.is_file().then(|| p.to_path_buf());
    let search = || {
        known(Path::new("/usr/sbin/nginx")).or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths).find_map(|dir| known(&dir.join("nginx")))
            })
        })
    };
    if let Some(found) = search() {
        return Some(found);
    }
    eprintln!("nginx not found: trying `apt-get install -y nginx` once");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "nginx"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    search()
}

/// An nginx master process serving the template on an ephemeral port; stopped on drop.
struct Nginx {
    addr: SocketAddr,
    child: std::process::Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(binary: &Path, upstream: SocketAddr) -> Nginx {
        // An ephemeral port: bind, note it, release it for nginx.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir =
            std::env::temp_dir().join(format!("blobcast-nginx-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();

        assert_eq!(
            TEMPLATE.matches(UPSTREAM_LINE).count(),
            1,
            "template upstream"
        );
        assert_eq!(TEMPLATE.matches(LISTEN_LINE).count(), 1, "template listen");
        assert_eq!(TEMPLATE.matches(ACCESS_LOG_LINE).count(), 1, "template log");
        let d = dir.display();
        let site = TEMPLATE
            .replace(UPSTREAM_LINE, &format!("    server {upstream};\n"))
            .replace(LISTEN_LINE, &format!("    listen {addr};\n"))
            .replace(
                ACCESS_LOG_LINE,
                &format!("    access_log {d}/blobcast.access.log blobcast_redacted;\n"),
            );
        let config = format!(
            "worker_processes 1;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log {d}/access.log;\n\
             client_body_temp_path {d}/client_body;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             set_real_ip_from 127.0.0.1;\n\
             real_ip_header X-Test-Client;\n\
             {site}\n\
             }}\n"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();

        let args = |extra: &[&str]| {
            let mut command = Command::new(binary);
            command
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-g")
                .arg(format!(
                    "daemon off; pid {}; error_log {} warn;",
                    dir.join("nginx.pid").display(),
                    dir.join("error.log").display()
                ))
                .args(extra);
            command
        };
        let test = args(&["-t"]).output().unwrap();
        assert!(
            test.status.success(),
            "nginx -t rejects the generated config: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = args(&[]).stdout(Stdio::null()).spawn().unwrap();
        Nginx { addr, child, dir }
    }

    /// What nginx logged at warn level and above.
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Until nginx accepts connections on its port.
    async fn ready(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited at start-up: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx never listened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and exits; SIGKILL if it lingers.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn streams_and_the_api_pass_through_nginx_and_logs_show_the_forwarded_client() {
    capture_logs();
    let Some(binary) = find_nginx() else {
        let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        assert!(
            !ci,
            "nginx is not installed and `apt-get install nginx` failed; under CI that is \
             a failure: docs/deploy/nginx.conf must be tested"
        );
        // Straight to the process's stderr: the test harness captures eprintln!.
        let _ = write!(
            std::io::stderr(),
            "\n{bar}\n!!! SKIPPED: nginx is not installed and `apt-get install nginx` failed. !!!\n\
             !!! docs/deploy/nginx.conf was NOT tested.                           !!!\n{bar}\n",
            bar = "!".repeat(72)
        );
        return;
    };
    let dir = scratch_dir("nginx-rec");
    let mut server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let upstream = server.addr;
    let mut nginx = Nginx::start(&binary, upstream);
    nginx.ready().await;
    // From here on the harness's URLs lead through nginx.
    server.addr = nginx.addr;

    // Credentials in the query (ignored by this open server) must reach no log.
    let secrets = "token=tok-SECRET-1&key=key-SECRET-2";
    let mut viewers = vec![Viewer::connect_with(&server, "cam", secrets).await];
    let mut publisher = Publisher::connect(&server, "cam", "session=nginx1").await;
    publisher.start(MIME).await;
    for g in [2000, 2001] {
        // Small pieces and large ones (a quarter of the clip in one frame).
        let pieces = cut(CLIP, if g == 2000 { 40 } else { 4 }, g);
        publisher.send_blob(g, &pieces[0]).await;
        for (i, piece) in pieces[1..].iter().enumerate() {
            publisher.send_chunk(piece).await;
            if i == pieces.len() / 2 {
                viewers.push(Viewer::connect(&server, "cam").await);
            }
        }
        for viewer in &mut viewers {
            viewer.pump_until_holds(g, CLIP).await;
        }
    }

    let (status, list) = server.get_json("/api/streams").await;
    assert_eq!(status, 200);
    let cam = list
        .as_array()
        .and_then(|streams| streams.iter().find(|s| s["name"] == "cam"))
        .unwrap_or_else(|| panic!("cam in {list}"));
    assert_eq!(cam["live"], true);
    assert_eq!(cam["generation"], 2001);
    assert_eq!(server.get_text("/healthz").await, (200, "ok".to_string()));

    // A client that claims another address through nginx is logged as nginx saw it.
    let mut request = server
        .ws_url("/ws/watch/spoof/chunk")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", "203.0.113.66".parse().unwrap());
    let (mut spoofer, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let _ = spoofer.close(None).await;
    // Straight to blobcast from loopback (a trusted peer), the header is believed.
    let mut request = format!("ws://{upstream}/ws/watch/direct/chunk")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "x-forwarded-for",
        "198.51.100.77, 10.0.0.1".parse().unwrap(),
    );
    let (mut direct, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let _ = direct.close(None).await;

    let proxied = logged("/ws/watch/cam/chunk: client 127.0.0.1:0 via proxy 127.0.0.1:");
    assert!(!proxied.is_empty(), "no forwarded viewer in the logs");
    assert!(proxied.iter().all(|line| line.ends_with("over http")));
    assert!(
        !logged("/ws/publish/cam/blob: client 127.0.0.1:0 via proxy").is_empty(),
        "the publisher is forwarded too"
    );
    assert!(
        logged("203.0.113.66").is_empty(),
        "a client chose its own address"
    );
    assert_eq!(
        logged("/ws/watch/direct/chunk: client 198.51.100.77:0 via proxy").len(),
        1
    );

    publisher.stop().await;
    remote_clients_need_a_key(&server).await;
    recording_ranges_pass(&server, &dir).await;
    http_ingest_passes(&server).await;
    // nginx logs a WebSocket request when it closes.
    drop(viewers);
    let deadline = std::time::Instant::now() + PATIENCE;
    let access = loop {
        let access = std::fs::read_to_string(nginx.dir.join("blobcast.access.log")).unwrap();
        if access.contains("GET /ws/watch/cam/chunk") {
            break access;
        }
        assert!(std::time::Instant::now() < deadline, "{access}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        !access.contains("SECRET"),
        "nginx logged a credential: {access}"
    );
    assert!(logged("SECRET").is_empty(), "blobcast logged a credential");
    let errors = nginx.error_log();
    assert!(
        !errors.contains("buffered to a temporary file"),
        "nginx buffered an upload (proxy_request_buffering): {errors}"
    );
    drop(nginx);
    server.addr = upstream;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The recommended setup, nginx in front of a keyless blobcast on loopback: clients on
/// other machines may not publish or delete. nginx's realip module stands in for them
/// (`X-Test-Client` gives the address nginx sees and forwards).
async fn remote_clients_need_a_key(server: &TestServer) {
    let remote = ("x-test-client", "203.0.113.9".to_owned());
    let mut request = server
        .ws_url("/ws/publish/remote/blob?session=far")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert(remote.0, remote.1.parse().unwrap());
    let (mut publisher, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (code, reason) = tokio::time::timeout(PATIENCE, closed_with(&mut publisher))
        .await
        .expect("a keyless remote publisher is refused at once");
    assert_eq!(code, 4401, "a keyless remote publisher: {reason}");
    assert!(reason.contains("--publish-key"), "{reason}");
    let (status, body) = server
        .post_json(
            "/api/streams/remote/blob?session=far",
            frame(1, 0, b"media").to_vec(),
            std::slice::from_ref(&remote),
        )
        .await;
    assert_eq!(status, 401, "a keyless remote HTTP publisher: {body}");
    let response = reqwest::Client::new()
        .delete(server.http_url("/api/recordings/anything"))
        .header(remote.0, &remote.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "a keyless remote DELETE");
}

/// The finished recording of `cam`, fetched through nginx whole and in byte ranges, is
/// the file on disk.
async fn recording_ranges_pass(server: &TestServer, dir: &Path) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let rec = loop {
        let (status, list) = server.get_json("/api/recordings").await;
        assert_eq!(status, 200, "{list}");
        let finished = list.as_array().and_then(|list| {
            list.iter()
                .find(|r| r["stream"] == "cam" && r["state"] == "finished")
                .cloned()
        });
        if let Some(rec) = finished {
            break rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recording: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    let file = std::fs::read(dir.join(rec["file"].as_str().unwrap())).unwrap();
    let url = server.http_url(rec["url"].as_str().unwrap());
    let client = reqwest::Client::new();
    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(
        whole.bytes().await.unwrap(),
        file,
        "the whole file through nginx"
    );
    let len = file.len();
    for (range, from, to) in [
        ("bytes=100-199".to_string(), 100, 200),
        (format!("bytes={}-", len - 10), len - 10, len),
    ] {
        let part = client
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206, "{range}");
        let content_range = part.headers()["content-range"].to_str().unwrap().to_owned();
        assert_eq!(content_range, format!("bytes {from}-{}/{len}", to - 1));
        assert_eq!(part.bytes().await.unwrap(), &file[from..to], "{range}");
    }
    let past = client
        .get(&url)
        .header("range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
}

/// A Void element of `total` bytes (8-byte size): valid anywhere in a Cluster, so a
/// frame of any size that is still WebM.
fn void(total: usize) -> Vec<u8> {
    let mut element = vec![0xEC, 0x01];
    element.extend_from_slice(&((total - 9) as u64).to_be_bytes()[1..]);
    element.resize(total, 0);
    element
}

/// HTTP ingest through nginx: a generation as POSTed frames (blob, chunks, one of them
/// over nginx's default 1 MB body limit) that a viewer through nginx gets exactly; then
/// the largest frame blobcast takes passes nginx, and one byte more is refused by
/// blobcast itself (its JSON), not by nginx: client_max_body_size fits --max-frame.
async fn http_ingest_passes(server: &TestServer) {
    let mut viewer = Viewer::connect(server, "web").await;
    let q = "session=http1";
    let pieces = chrome_pieces();
    let big = void(2 << 20);
    let mut offset = 0;
    for (i, piece) in pieces.iter().chain([&big]).enumerate() {
        let kind = if i == 0 { "blob" } else { "chunk" };
        let (status, body) = if i % 2 == 0 {
            let body = frame(9, offset, piece).to_vec();
            let mime = ("content-type", MIME.to_owned());
            server
                .post_json(&format!("/api/streams/web/{kind}?{q}"), body, &[mime])
                .await
        } else {
            let headers = [
                ("x-generation", "9".to_owned()),
                ("x-offset", offset.to_string()),
            ];
            let path = format!("/api/streams/web/{kind}?{q}");
            server.post_json(&path, piece.clone(), &headers).await
        };
        assert_eq!(status, 200, "{kind} {i}: {body}");
        offset += piece.len() as u64;
    }
    let mut published = CHROME.to_vec();
    published.extend_from_slice(&big);
    viewer.pump_until_holds(9, &published).await;
    drop(viewer);

    let max_frame = blobcast::Config::local().max_frame as usize;
    let largest = frame(9, offset, &void(max_frame)).to_vec();
    let path = format!("/api/streams/web/chunk?{q}");
    let (status, body) = server.post_json(&path, largest, &[]).await;
    assert_eq!(status, 200, "the largest frame: {body}");
    offset += max_frame as u64;
    let too_big = frame(9, offset, &void(max_frame + 1)).to_vec();
    let (status, body) = server.post_json(&path, too_big, &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--max-frame"),
        "blobcast refused it, not nginx: {body}"
    );
    let (status, body) = server
        .post_json(&format!("/api/streams/web/stop?{q}"), vec![], &[])
        .await;
    assert_eq!(status, 200, "{body}");
}
