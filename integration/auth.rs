//! Who may publish, watch and delete, over real sockets: signed tokens (HS256 and EdDSA)
//! with every refusal's close code or HTTP status, the admin's delete and kick, an auth
//! callout served by a small HTTP server inside the test (allowing, denying, silent),
//! and webhooks delivered to receivers inside the test (signed; after an outage; a
//! receiver that never answers, which must not hold up media).

mod common;

use common::*;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const MIME: &str = "video/webm;codecs=vp8,opus";
const SECRET: &str = "an HS256 secret for the auth tests, long enough";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secret_file() -> PathBuf {
    let path = scratch_dir("token-secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

fn sign(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A token valid for ten minutes with this `blobcast` claim.
fn token(permissions: Value) -> String {
    sign(SECRET, json!({"exp": now() + 600, "blobcast": permissions}))
}

/// Opens a socket and returns the code and reason it is closed with.
async fn refused(url: &str) -> (u16, String) {
    let mut ws = connect(url).await;
    closed_with(&mut ws).await
}

/// Publishes one generation of the Chrome recording and waits until it is buffered.
async fn publish(server: &TestServer, stream: &str, query: &str) -> Publisher {
    let mut publisher = Publisher::connect(server, stream, query).await;
    publisher.start(MIME).await;
    publisher.publish_generation(1, &chrome_pieces()).await;
    publisher
}

async fn status(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn token_server(watch_auth: bool) -> TestServer {
    let secret = secret_file();
    TestServer::with(move |c| {
        c.token_secret_file = Some(secret);
        if watch_auth {
            c.watch_auth = blobcast::config::AuthMode::Token;
        }
    })
    .await
}

#[tokio::test]
async fn every_token_refusal_has_its_close_code_and_the_right_token_gets_in() {
    let server = token_server(true).await;
    let publish_url = |stream: &str, query: &str| {
        server.ws_url(&format!("/ws/publish/{stream}/blob?session=s&{query}"))
    };
    let watch =
        |stream: &str, query: &str| server.ws_url(&format!("/ws/watch/{stream}/chunk?{query}"));
    let cam1 = token(json!({"publish": ["cam1"], "watch": ["cam1"]}));
    let cases = [
        ("no token", publish_url("cam1", ""), 4401, "needs a token"),
        (
            "wrong signature",
            publish_url(
                "cam1",
                &format!(
                    "token={}",
                    sign(
                        "not the secret",
                        json!({"exp": now() + 600, "blobcast": {"publish": ["cam1"]}})
                    )
                ),
            ),
            4401,
            "signature",
        ),
        (
            "expired",
            publish_url(
                "cam1",
                &format!(
                    "token={}",
                    sign(
                        SECRET,
                        json!({"exp": now() - 3600, "blobcast": {"publish": ["cam1"]}})
                    )
                ),
            ),
            4401,
            "expired",
        ),
        (
            "not yet valid",
            publish_url(
                "cam1",
                &format!(
                    "token={}",
                    sign(
                        SECRET,
                        json!({"exp": now() + 7200, "nbf": now() + 3600, "blobcast": {"publish": ["cam1"]}})
                    )
                ),
            ),
            4401,
            "not valid yet",
        ),
        (
            "another stream",
            publish_url("cam2", &format!("token={cam1}")),
            4403,
            "may not publish cam2",
        ),
        (
            "watch-only publishing",
            publish_url("cam1", &format!("token={}", token(json!({"watch": ["*"]})))),
            4403,
            "may not publish",
        ),
        (
            "publish-only watching",
            watch(
                "cam1",
                &format!("token={}", token(json!({"publish": ["cam1"]}))),
            ),
            4403,
            "may not watch cam1",
        ),
        (
            "watching without a token",
            watch("cam1", ""),
            4401,
            "needs a token",
        ),
        (
            "watching another stream",
            watch("cam2", &format!("token={cam1}")),
            4403,
            "may not watch cam2",
        ),
    ];
    for (what, url, code, reason) in cases {
        let (got, why) = refused(&url).await;
        assert_eq!(got, code, "{what}: {why}");
        assert!(
            why.contains(reason),
            "{what}: {why:?} should say {reason:?}"
        );
    }

    // A prefix pattern: `class-*` publishes and watches class-7.
    let class = token(json!({"publish": ["class-*"], "watch": ["class-*"]}));
    let mut viewer = Viewer::connect_with(&server, "class-7", &format!("token={class}")).await;
    let _publisher = publish(&server, "class-7", &format!("session=s&token={class}")).await;
    viewer.pump_until_holds(1, CHROME).await;

    // HTTP: Bearer or ?token=; 401 without, 403 with a token for another stream.
    let client = reqwest::Client::new();
    let api = server.http_url("/api/streams/class-7");
    assert_eq!(status(client.get(&api)).await.0, 401);
    assert_eq!(status(client.get(&api).bearer_auth(&cam1)).await.0, 403);
    assert_eq!(status(client.get(&api).bearer_auth(&class)).await.0, 200);
    assert_eq!(
        status(client.get(format!("{api}?token={class}"))).await.0,
        200
    );
    // The stream's stats follow the same rules.
    let stats = server.http_url("/api/streams/class-7/stats");
    assert_eq!(status(client.get(&stats)).await.0, 401);
    assert_eq!(status(client.get(&stats).bearer_auth(&cam1)).await.0, 403);
    let (code, body) = status(client.get(&stats).bearer_auth(&class)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"viewers\":[{"), "{body}");
    // The list shows only what the token may watch.
    let list = server.http_url("/api/streams");
    assert_eq!(status(client.get(&list)).await.0, 401);
    let (_, body) = status(client.get(&list).bearer_auth(&cam1)).await;
    assert_eq!(body, "[]");
    let (_, body) = status(client.get(&list).bearer_auth(&class)).await;
    assert!(body.contains("class-7"), "{body}");

    // HTTP upload ingest takes the token too.
    let ingest = |token: &str| {
        client
            .post(server.http_url(&format!("/api/streams/cam1/blob?session=h&token={token}")))
            .body(frame(1, 0, &chrome_pieces()[0]).to_vec())
    };
    let watcher = token(json!({"watch": ["*"]}));
    assert_eq!(status(ingest(&watcher)).await.0, 403);
    assert_eq!(status(ingest("garbage")).await.0, 401);
    let (code, body) = status(ingest(&cam1)).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_token_beats_the_publish_key_which_still_works_alone() {
    let secret = secret_file();
    let server = TestServer::with(move |c| {
        c.token_secret_file = Some(secret);
        c.publish_key = Some("k".into());
    })
    .await;
    let url = |query: &str| server.ws_url(&format!("/ws/publish/cam/blob?session=s&{query}"));
    let watcher = token(json!({"watch": ["*"]}));
    let (code, _) = refused(&url(&format!("key=k&token={watcher}"))).await;
    assert_eq!(code, 4403, "the token decides, not the key");
    assert_eq!(refused(&url("key=wrong")).await.0, 4401);
    // Watching stays open (no --watch-auth token).
    let mut viewer = Viewer::connect(&server, "cam").await;
    let _publisher = publish(&server, "cam", "session=s&key=k").await;
    viewer.pump_until_holds(1, CHROME).await;
}

#[tokio::test]
async fn an_eddsa_public_key_checks_tokens_signed_elsewhere() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = scratch_dir("ed-public");
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    let server = TestServer::with(|c| c.token_public_key = Some(public.clone())).await;
    let claims = json!({"exp": now() + 600, "blobcast": {"publish": ["ed"]}});
    let signed = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let mut viewer = Viewer::connect(&server, "ed").await;
    let _publisher = publish(&server, "ed", &format!("session=s&token={signed}")).await;
    viewer.pump_until_holds(1, CHROME).await;
    // An HS256 token, with no secret configured, and a token signed by another key.
    let url = |token: &str| server.ws_url(&format!("/ws/publish/ed2/blob?session=s&token={token}"));
    let (code, reason) = refused(&url(&token(json!({"publish": ["ed2"]})))).await;
    assert_eq!(code, 4401, "{reason}");
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &json!({"exp": now() + 600, "blobcast": {"publish": ["ed2"]}}),
        &EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (code, reason) = refused(&url(&forged)).await;
    assert_eq!(
        (code, reason.contains("signature")),
        (4401, true),
        "{reason}"
    );
    let _ = std::fs::remove_file(public);
}

async fn recordings_with(server: &TestServer, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(server.http_url("/api/recordings"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn only_an_admin_deletes_or_kicks_and_recordings_need_a_watch_token() {
    let server = token_server(true).await;
    let admin = token(json!({"admin": true}));
    let publisher_token = token(json!({"publish": ["rec", "live"], "watch": ["live"]}));
    let reader = token(json!({"watch": ["rec"]}));
    let mut publisher = publish(
        &server,
        "rec",
        &format!("session=s&token={publisher_token}"),
    )
    .await;
    publisher.stop().await;
    drop(publisher);
    let deadline = Instant::now() + PATIENCE;
    let id = loop {
        let (code, list) = recordings_with(&server, &admin).await;
        assert_eq!(code, 200);
        if list[0]["state"] == "finished" {
            break list[0]["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Listing and playback: a token that may watch the stream.
    assert_eq!(recordings_with(&server, "").await.0, 401);
    let (_, listed) = recordings_with(&server, &publisher_token).await;
    assert_eq!(listed, json!([]), "it may watch live only");
    let (_, listed) = recordings_with(&server, &reader).await;
    assert_eq!(listed[0]["id"], id.as_str());
    let client = reqwest::Client::new();
    let file = server.http_url(&format!("/recordings/{id}.webm"));
    assert_eq!(status(client.get(&file)).await.0, 401);
    assert_eq!(
        status(client.get(&file).bearer_auth(&publisher_token))
            .await
            .0,
        403
    );
    assert_eq!(
        status(client.get(format!("{file}?token={reader}"))).await.0,
        200
    );

    // Deleting: 401 without a token, 403 for a non-admin, 200 for the admin.
    let delete = server.http_url(&format!("/api/recordings/{id}"));
    assert_eq!(status(client.delete(&delete)).await.0, 401);
    assert_eq!(
        status(client.delete(&delete).bearer_auth(&reader)).await.0,
        403
    );
    let (code, body) = status(client.delete(&delete).bearer_auth(&admin)).await;
    assert_eq!(code, 200, "{body}");

    // Kicking ends the publish session with its reason.
    let mut live = publish(
        &server,
        "live",
        &format!("session=k&token={publisher_token}"),
    )
    .await;
    let kick = server.http_url("/api/streams/live/kick");
    assert_eq!(status(client.post(&kick)).await.0, 401);
    assert_eq!(
        status(client.post(&kick).bearer_auth(&publisher_token))
            .await
            .0,
        403
    );
    assert_eq!(status(client.post(&kick).bearer_auth(&admin)).await.0, 200);
    let (code, reason) = closed_with(&mut live.blob).await;
    assert_eq!((code, reason.as_str()), (4410, "kicked by admin"));
    assert_eq!(closed_with(&mut live.chunk).await.0, 4410);
    assert_eq!(
        status(client.post(&kick).bearer_auth(&admin)).await.0,
        404,
        "no session left"
    );
}

#[tokio::test]
async fn metrics_auth_token_keeps_metrics_and_the_api_for_admins() {
    let secret = secret_file();
    let server = TestServer::with(move |c| {
        c.token_secret_file = Some(secret);
        c.metrics_auth = blobcast::config::AuthMode::Token;
    })
    .await;
    let client = reqwest::Client::new();
    for path in ["/metrics", "/api/streams", "/api/recordings"] {
        let url = server.http_url(path);
        assert_eq!(status(client.get(&url)).await.0, 401, "{path}");
        let watcher = token(json!({"watch": ["*"]}));
        assert_eq!(
            status(client.get(&url).bearer_auth(watcher)).await.0,
            403,
            "{path}"
        );
        let admin = token(json!({"admin": true}));
        assert_eq!(
            status(client.get(&url).bearer_auth(admin)).await.0,
            200,
            "{path}"
        );
    }
    assert_eq!(status(client.get(server.http_url("/healthz"))).await.0, 200);
}

// ---- a minimal HTTP/1.1 server for the callout and the webhooks --------------------

struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads one request; None when the client went away first.
async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    while data.len() < head_end + length {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        headers,
        body: data[head_end..head_end + length].to_vec(),
    })
}

/// Serves on `listener`: each request goes to `tx`, and is answered with the status
/// `answer` gives, or never when it gives None.
fn serve_http(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Received>,
    answer: impl Fn(&Received) -> Option<u16> + Send + Sync + 'static,
) {
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut socket).await {
                    let status = answer(&request);
                    let _ = tx.send(request);
                    let Some(status) = status else {
                        // Silent: hold the connection open without a word.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    };
                    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[tokio::test]
async fn the_callout_allows_denies_and_fails_closed_within_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    let (tx, mut asked) = mpsc::unbounded_channel();
    serve_http(listener, tx, |request| {
        match request.json()["stream"].as_str() {
            Some("allowed") => Some(200),
            Some("slow") => None,
            _ => Some(403),
        }
    });
    let server = TestServer::with(move |c| {
        c.auth_url = Some(url);
        c.auth_timeout_ms = 500;
    })
    .await;

    let mut viewer = Viewer::connect_with(&server, "allowed", "token=opaque-user-token").await;
    let _publisher = publish(&server, "allowed", "session=s1&key=user-key").await;
    viewer.pump_until_holds(1, CHROME).await;
    let mut requests = Vec::new();
    while let Ok(request) = asked.try_recv() {
        requests.push(request.json());
    }
    let watch = requests.iter().find(|r| r["action"] == "watch").unwrap();
    assert_eq!(watch["token"], "opaque-user-token");
    assert_eq!(watch["ip"], "127.0.0.1");
    let publish = requests.iter().find(|r| r["action"] == "publish").unwrap();
    assert_eq!(
        (publish["key"].as_str(), publish["session"].as_str()),
        (Some("user-key"), Some("s1"))
    );
    // Both sockets of each, and they asked once each: the second was cached.
    assert_eq!(requests.len(), 2, "{requests:?}");

    let (code, reason) =
        refused(&server.ws_url("/ws/publish/denied/blob?session=s&key=user-key")).await;
    assert_eq!(code, 4403, "{reason}");
    let started = Instant::now();
    let (code, reason) = refused(&server.ws_url("/ws/watch/slow/chunk")).await;
    assert_eq!(code, 4503, "{reason}");
    assert!(reason.contains("500 ms"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    let (code, _) =
        status(reqwest::Client::new().post(server.http_url("/api/streams/slow/blob?session=s")))
            .await;
    assert_eq!(code, 503);
}

// ---- webhooks ---------------------------------------------------------------------

const HOOK_SECRET: &str = "webhook signing secret";

fn webhook_server_config(url: String) -> impl FnOnce(&mut blobcast::Config) {
    let secret = scratch_dir("hook-secret");
    std::fs::write(&secret, HOOK_SECRET).unwrap();
    move |c| {
        c.webhooks = vec![url];
        c.webhook_secret_file = Some(secret);
    }
}

/// Collects events until `names` have all arrived; checks every signature.
async fn events_until(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    names: &[&str],
    patience: Duration,
) -> Vec<Value> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    let mut got: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + patience;
    while !names.iter().all(|n| got.iter().any(|e| e["event"] == *n)) {
        let received = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("waited too long for {names:?}; got {got:#?}"))
            .unwrap();
        let signature = received.header("x-blobcast-signature").expect("signed");
        let hex = signature.strip_prefix("sha256=").expect("sha256=");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        ring::hmac::verify(&key, &received.body, &tag).expect("a valid signature");
        let event = received.json();
        if !got.contains(&event) {
            got.push(event);
        }
    }
    got
}

/// Publishes a session on `stream` and stops it, so that it is recorded.
async fn publish_and_stop(server: &TestServer, stream: &str) {
    let mut publisher = publish(server, stream, "session=hook").await;
    publisher.stop().await;
    drop(publisher);
}

#[tokio::test]
async fn webhooks_arrive_signed_for_publishing_and_recording() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook?token=receiver-secret",
        listener.local_addr().unwrap()
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    serve_http(listener, tx, |_| Some(204));
    let server = TestServer::with(webhook_server_config(url)).await;
    let _viewer = Viewer::connect(&server, "hooked").await;
    publish_and_stop(&server, "hooked").await;
    let events = events_until(
        &mut rx,
        &[
            "publish_start",
            "publish_end",
            "recording_finished",
            "viewer_count",
        ],
        PATIENCE,
    )
    .await;
    let counts: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "viewer_count")
        .collect();
    assert_eq!(
        counts.len(),
        1,
        "one count while it stays at one: {counts:?}"
    );
    assert_eq!(
        (&counts[0]["stream"], &counts[0]["viewers"]),
        (&json!("hooked"), &json!(1))
    );
    let find = |name: &str| events.iter().find(|e| e["event"] == name).unwrap();
    assert_eq!(find("publish_start")["stream"], "hooked");
    assert_eq!(find("publish_start")["session"], "hook");
    assert_eq!(find("publish_end")["reason"], "publisher stopped");
    let finished = find("recording_finished");
    assert!(finished["bytes"].as_u64().unwrap() > 0, "{finished}");
    assert!(finished["duration"].as_f64().unwrap() > 5.0, "{finished}");
    assert!(
        finished["file"].as_str().unwrap().ends_with(".webm"),
        "{finished}"
    );
    server
        .until_metrics("blobcast_webhooks_delivered_total 4")
        .await;
}

#[tokio::test]
async fn a_receiver_down_for_three_seconds_still_gets_every_event() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = TestServer::with(webhook_server_config(format!("http://{addr}/hook"))).await;
    publish_and_stop(&server, "outage").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    serve_http(listener, tx, |_| Some(200));
    events_until(
        &mut rx,
        &["publish_start", "publish_end", "recording_finished"],
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_up_media() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    serve_http(listener, tx, |_| None);
    let server = TestServer::with(webhook_server_config(url)).await;
    let mut chunks = connect(&server.ws_url("/ws/watch/silent/chunk")).await;
    let mut publisher = Publisher::connect(&server, "silent", "session=s").await;
    publisher.start(MIME).await;
    let pieces = chrome_pieces();
    publisher.send_blob(1, &pieces[0]).await;
    // The receiver has the publish_start and says nothing.
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    // Each chunk reaches the viewer promptly, while the webhook's delivery hangs.
    let mut slowest = Duration::ZERO;
    for piece in &pieces[1..] {
        let sent = Instant::now();
        publisher.send_chunk(piece).await;
        loop {
            let message = tokio::time::timeout(PATIENCE, chunks.next())
                .await
                .expect("the chunk arrived")
                .unwrap()
                .unwrap();
            if let Message::Binary(_) = message {
                break;
            }
        }
        slowest = slowest.max(sent.elapsed());
    }
    // A loose bound on a loaded machine: a stall behind the webhook would be its
    // 10-second attempt.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest chunk took {slowest:?}"
    );
}

#[tokio::test]
async fn blobcast_token_prints_a_token_the_server_accepts() {
    let secret = secret_file();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_blobcast"))
        .args(["token", "--secret-file"])
        .arg(&secret)
        .args(["--publish", "cam1", "--watch", "class-*", "--ttl", "2h"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let server = TestServer::with(move |c| c.token_secret_file = Some(secret)).await;
    let mut viewer = Viewer::connect(&server, "cam1").await;
    let _publisher = publish(&server, "cam1", &format!("session=s&token={minted}")).await;
    viewer.pump_until_holds(1, CHROME).await;
    let (code, reason) = refused(&server.ws_url(&format!(
        "/ws/publish/class-1/blob?session=s&token={minted}"
    )))
    .await;
    assert_eq!(code, 4403, "{reason}");
}
