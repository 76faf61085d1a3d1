//! Native TLS: the relay over wss and the API over https, on one port, with a
//! certificate generated the way `--tls-self-signed` does; and the binary's own output.

mod common;

use blobcast::tls::Identity;
use blobcast::Config;
use common::{cut, scratch_dir, Publisher, Viewer, Ws, CLIP, PATIENCE};
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

const MIME: &str = "video/webm;codecs=vp8,opus";

struct TlsServer {
    addr: SocketAddr,
    identity: Arc<Identity>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), blobcast::ServerError>>>,
    /// Its own record directory (not ./rec), removed on drop.
    record_dir: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.record_dir);
    }
}

impl TlsServer {
    /// As `blobcast --listen 127.0.0.1:0 --tls-self-signed`.
    async fn start() -> TlsServer {
        TlsServer::start_on(Ipv4Addr::LOCALHOST.into()).await
    }

    /// As `blobcast --listen {ip}:0 --tls-self-signed`.
    async fn start_on(ip: IpAddr) -> TlsServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::local();
        if !ip.is_loopback() {
            config.publish_key = Some(format!("{:x}", rand_seed()));
        }
        config.public_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/public").into();
        let record_dir = scratch_dir("tls-rec");
        config.record_dir = record_dir.clone();
        config.listen = addr;
        config.tls_self_signed = true;
        let identity = blobcast::tls::prepare(&config).unwrap().expect("TLS is on");
        assert!(identity.is_self_signed());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(blobcast::serve(
            listener,
            config,
            Some(identity.clone()),
            async {
                let _ = stopped.await;
            },
        ));
        TlsServer {
            addr,
            identity,
            stop: Some(stop),
            task: Some(task),
            record_dir,
        }
    }

    /// A client that trusts exactly this server's certificate.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.identity.cert_der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection over loopback verified for `name` (a DNS name or an IP in the
    /// certificate).
    async fn tls(&self, name: &str) -> TlsStream<TcpStream> {
        self.tls_at(Ipv4Addr::LOCALHOST.into(), name).await
    }

    /// A TLS connection to `ip`, verified for `name`.
    async fn tls_at(&self, ip: IpAddr, name: &str) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect((ip, self.addr.port())).await.unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        tokio::time::timeout(PATIENCE, self.connector().connect(name, tcp))
            .await
            .expect("TLS handshake in time")
            .expect("TLS handshake")
    }

    async fn wss(&self, path: &str) -> Ws {
        let tls = MaybeTlsStream::Rustls(self.tls("localhost").await);
        let url = format!("wss://localhost:{}{path}", self.addr.port());
        let (ws, response) = tokio_tungstenite::client_async(url.as_str(), tls)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        ws
    }

    /// The common viewer over wss: chunk socket first, then blob socket.
    async fn viewer(&self, stream: &str) -> Viewer {
        let chunk = self.wss(&format!("/ws/watch/{stream}/chunk")).await;
        let blob = self.wss(&format!("/ws/watch/{stream}/blob")).await;
        Viewer::from_sockets(chunk, blob)
    }

    /// One HTTP/1.1 request over https (to the IP, the other name the certificate has).
    async fn get(&self, path: &str) -> (u16, String) {
        self.get_at(Ipv4Addr::LOCALHOST.into(), path).await
    }

    /// One HTTP/1.1 request over https to `ip`, the certificate verified for that IP.
    async fn get_at(&self, ip: IpAddr, path: &str) -> (u16, String) {
        let mut tls = self.tls_at(ip, &ip.to_string()).await;
        let host = SocketAddr::new(ip, self.addr.port());
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "response in time");
        let text = String::from_utf8(response).unwrap();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }

    async fn shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.task.take().unwrap())
            .await
            .expect("server shut down in time")
            .unwrap()
            .expect("the server ran");
    }
}

#[tokio::test]
async fn a_clip_published_over_wss_is_watched_over_wss_exactly_and_https_serves_the_api() {
    let mut server = TlsServer::start().await;
    assert_eq!(server.get("/healthz").await, (200, "ok".to_string()));

    let mut early = server.viewer("cam").await;
    let mut publisher = Publisher::from_sockets(
        server.wss("/ws/publish/cam/blob?session=tls1").await,
        server.wss("/ws/publish/cam/chunk?session=tls1").await,
    );
    publisher.start(MIME).await;

    // The clip cut at arbitrary bytes, as MediaRecorder does; a viewer joins halfway.
    let generation = 1_700_000_000_000;
    let pieces = cut(CLIP, 40, 7);
    publisher.send_blob(generation, &pieces[0]).await;
    let mut late = None;
    for (i, piece) in pieces[1..].iter().enumerate() {
        publisher.send_chunk(piece).await;
        if i == 20 {
            late = Some(server.viewer("cam").await);
        }
    }
    let mut late = late.unwrap();
    early.pump_until_holds(generation, CLIP).await;
    late.pump_until_holds(generation, CLIP).await;
    assert_eq!(late.controls[0]["type"], "stream");

    let (status, body) = server.get("/api/streams/cam").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["live"], true);
    assert_eq!(info["buffered_bytes"], CLIP.len());

    // Shutdown over TLS too: viewers get "end" and a 1001 close.
    server.shutdown().await;
    let mut ended = false;
    loop {
        match tokio::time::timeout(PATIENCE, early.blob.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => ended |= text.contains(r#""end""#),
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(u16::from(close.code), 1001);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    assert!(ended, "viewer was told the stream ended");
    // And it was recorded, into the server's own directory rather than ./rec.
    let webms = std::fs::read_dir(&server.record_dir)
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension().is_some_and(|ext| ext == "webm")
        })
        .count();
    assert_eq!(webms, 1, "one recording in {}", server.record_dir.display());
}

/// Different at every run, for a throw-away publish key.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// This machine's address towards its default route, found the way a LAN client's
/// packets would arrive (a UDP connect sends nothing), independently of how the
/// server lists its addresses.
fn default_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("198.51.100.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn a_self_signed_certificate_on_all_addresses_is_valid_for_this_machines_address() {
    let Some(lan) = default_route_address() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: this machine has no default route, so no LAN address to test with"
        );
        return;
    };
    let mut server = TlsServer::start_on(Ipv4Addr::UNSPECIFIED.into()).await;
    assert_eq!(
        server.get_at(lan, "/healthz").await,
        (200, "ok".to_string())
    );
    assert_eq!(server.get("/healthz").await.0, 200, "and loopback");
    server.shutdown().await;
}

#[tokio::test]
async fn stalled_or_plaintext_handshakes_do_not_hold_up_other_clients_or_shutdown() {
    let mut server = TlsServer::start().await;
    // A client that connects and never says anything...
    let _stalled = TcpStream::connect(server.addr).await.unwrap();
    // ...and one that speaks plain HTTP to the TLS port.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .expect("the plaintext client is dropped");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "no plaintext service");

    // Meanwhile everyone else is served at once.
    let started = tokio::time::Instant::now();
    assert_eq!(server.get("/healthz").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(2));

    // A client that never completes its handshake does not delay shutdown either.
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < blobcast::tls::HANDSHAKE_TIMEOUT,
        "shutdown waited for the stalled handshake"
    );
}

/// Accepts exactly one certificate by SHA-256, as a person comparing the printed
/// fingerprint with the browser's does.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    seen: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let seen = blobcast::tls::fingerprint(end_entity);
        let ok = seen == self.fingerprint;
        *self.seen.lock().unwrap() = Some(seen);
        if ok {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint mismatch".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Kills the child process this test started, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_an_https_address_and_the_fingerprint_it_serves() {
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_blobcast"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--tls-self-signed",
                "--no-record",
            ])
            // Even with --no-record the catalog is read (and a crash's files finished).
            .arg("--record-dir")
            .arg(scratch_dir("tls-bin-rec"))
            .env_remove("BLOBCAST_PUBLISH_KEY")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(2)
            .collect::<Result<Vec<_>, _>>()
    });
    let lines = tokio::time::timeout(PATIENCE, lines)
        .await
        .expect("the binary prints its address")
        .unwrap()
        .unwrap();
    let addr = lines[0]
        .strip_prefix("blobcast listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]));
    let addr: SocketAddr = addr.parse().unwrap();
    let fingerprint = lines[1]
        .strip_prefix("self-signed TLS certificate, SHA-256 fingerprint ")
        .unwrap_or_else(|| panic!("unexpected second line {:?}", lines[1]))
        .to_string();
    assert_eq!(fingerprint.len(), 95, "32 bytes as AB:CD:…");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Arc::new(Pinned {
        fingerprint,
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("{e}: saw {:?}", pinned.seen.lock().unwrap()));
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}

#[test]
fn the_binary_refuses_half_a_certificate_pair_and_a_conflict() {
    for args in [
        &["--tls-cert", "cert.pem"][..],
        &[
            "--tls-self-signed",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_blobcast"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(out.stdout.is_empty(), "{args:?} started listening");
    }
    // A certificate file that does not exist fails before anything listens.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blobcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
        ])
        .args(["--tls-key", "/nonexistent/k.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
}
