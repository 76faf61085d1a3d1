//! The relay against a real server on an ephemeral port, over real sockets, with a real
//! WebM recording cut the way Chrome's MediaRecorder cuts it.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const MIME: &str = "video/webm;codecs=vp8,opus";

#[tokio::test]
async fn viewers_joining_at_any_moment_reassemble_every_generation_exactly() {
    let server = TestServer::start().await;
    let mut viewers = vec![Viewer::connect(&server, "cam").await];
    let mut publisher = Publisher::connect(&server, "cam", "session=s1").await;
    publisher.start(MIME).await;

    for g in 1000..1003 {
        // Every generation is the whole clip, cut differently.
        let pieces = cut(CLIP, 24, g);
        publisher.send_blob(g, &pieces[0]).await;
        for (i, piece) in pieces[1..].iter().enumerate() {
            publisher.send_chunk(piece).await;
            if i == 10 {
                // A viewer joins mid-generation, while chunks keep coming.
                viewers.push(Viewer::connect(&server, "cam").await);
            }
        }
        // Viewers read continuously, as browsers do; a restart comes seconds later.
        for viewer in &mut viewers {
            viewer.pump_until_holds(g, CLIP).await;
        }
    }
    assert!(viewers[2].holds(1000).is_none(), "joined in 1001");
    let hello = &viewers[3].controls[0];
    assert_eq!(hello["type"], "stream");
    assert_eq!(hello["live"], true);
    assert_eq!(hello["mime"], MIME);
    assert_eq!(hello["generation"], 1002);
}

#[tokio::test]
async fn a_viewer_that_stops_reading_for_generations_jumps_to_the_latest_one() {
    let server = TestServer::start().await;
    let mut stalled = Viewer::connect(&server, "jump").await;
    let mut publisher = Publisher::connect(&server, "jump", "session=s1").await;
    publisher.start(MIME).await;
    for g in 1..=4 {
        publisher.publish_generation(g, &cut(CLIP, 12, g)).await;
    }
    server
        .until_api("jump", |s| {
            s["generation"] == 4 && s["buffered_bytes"] == CLIP.len()
        })
        .await;
    stalled.pump_until_holds(4, CLIP).await;
}

#[tokio::test]
async fn a_chunk_that_beats_its_blob_is_held_until_the_blob_arrives() {
    let server = TestServer::start().await;
    let pieces = cut(CLIP, 6, 7);
    let mut viewer = Viewer::connect(&server, "race").await;
    let mut publisher = Publisher::connect(&server, "race", "session=s1").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, &[0x1a, 0x45]).await; // a first generation to follow
    server.until_api("race", |s| s["generation"] == 1).await;

    // Generation 2's chunks go out on the chunk socket before its blob.
    let blob_len = pieces[0].len() as u64;
    let mut offset = blob_len;
    for piece in &pieces[1..] {
        publisher
            .chunk
            .send(Message::binary(frame(2, offset, piece)))
            .await
            .unwrap();
        offset += piece.len() as u64;
    }
    // Every one of them has reached the server (1 blob + the chunks), and none went
    // into the buffer.
    server
        .until_metrics(&format!("blobcast_frames_in_total {}", pieces.len()))
        .await;
    let (_, info) = server.get_json("/api/streams/race").await;
    assert_eq!(
        (info["generation"].as_u64(), info["buffered_bytes"].as_u64()),
        (Some(1), Some(2))
    );
    publisher.send_blob(2, &pieces[0]).await;

    viewer.pump_until_holds(2, CLIP).await;
    server
        .until_api("race", |s| s["buffered_bytes"] == CLIP.len())
        .await;
}

#[tokio::test]
async fn a_viewer_resumes_by_offset_without_downloading_again() {
    let server = TestServer::start().await;
    let pieces = cut(CLIP, 20, 3);
    let mut publisher = Publisher::connect(&server, "blip", "session=s1").await;
    publisher.start(MIME).await;
    publisher.send_blob(5, &pieces[0]).await;
    for piece in &pieces[1..10] {
        publisher.send_chunk(piece).await;
    }
    let held_before: usize = pieces[..10].iter().map(Vec::len).sum();
    let mut viewer = Viewer::connect(&server, "blip").await;
    viewer
        .pump_until("the first half", |v| v.data.len() == held_before)
        .await;

    // Drop the connection, publish more meanwhile, come back.
    let _ = viewer.chunk.close(None).await;
    let _ = viewer.blob.close(None).await;
    for piece in &pieces[10..] {
        publisher.send_chunk(piece).await;
    }
    server
        .until_api("blip", |s| s["buffered_bytes"] == CLIP.len())
        .await;
    let mut viewer = viewer.reconnect(&server, "blip").await;
    viewer.pump_until_holds(5, CLIP).await;

    let hello = &viewer.controls[0];
    assert_eq!(hello["resumed"], true, "hello: {hello}");
    let new_bytes = CLIP.len() - held_before;
    let overhead = viewer.binary_frames * blobcast::protocol::HEADER_LEN;
    assert_eq!(
        viewer.received_bytes - overhead,
        new_bytes,
        "the resumed viewer downloaded only what it lacked"
    );
}

#[tokio::test]
async fn a_resume_after_the_generation_moved_on_gets_the_new_snapshot() {
    let server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "moved", "session=s1").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, b"first-generation").await;
    let mut viewer = Viewer::connect(&server, "moved").await;
    viewer.pump_until_holds(1, b"first-generation").await;
    let _ = viewer.chunk.close(None).await;
    let _ = viewer.blob.close(None).await;
    let pieces = cut(CLIP, 5, 9);
    publisher.publish_generation(2, &pieces).await;
    server
        .until_api("moved", |s| s["buffered_bytes"] == CLIP.len())
        .await;
    let mut viewer = viewer.reconnect(&server, "moved").await;
    viewer.pump_until_holds(2, CLIP).await;
    assert_eq!(viewer.controls[0]["resumed"], false);
}

/// 24 MiB of media in 64 KiB chunks: far more than socket buffers can absorb.
const FLOOD_CHUNKS: usize = 384;

fn flood_chunk() -> Vec<u8> {
    CLIP.iter().cycle().take(64 * 1024).copied().collect()
}

/// A publisher on `stream` whose first generation's 4 KiB blob the server holds.
async fn publisher_with_blob(server: &TestServer, stream: &str) -> Publisher {
    let mut publisher = Publisher::connect(server, stream, "session=s1").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, &CLIP[..4096]).await;
    // Chunks that beat their blob are held only up to a bound: let the blob land first.
    server.until_api(stream, |s| s["generation"] == 1).await;
    publisher
}

async fn flood(publisher: &mut Publisher) {
    let chunk = flood_chunk();
    for _ in 0..FLOOD_CHUNKS {
        publisher.send_chunk(&chunk).await;
    }
}

/// What the generation holds after the blob and the flood.
fn flooded_generation() -> Vec<u8> {
    let mut generation = CLIP[..4096].to_vec();
    generation.extend(flood_chunk().repeat(FLOOD_CHUNKS));
    generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_never_holds_up_the_publisher_or_a_normal_viewer() {
    // Bounds too generous to fire during the test: if the stalled viewer could hold up
    // the publisher, nothing would ever release it.
    let server = TestServer::with(|c| {
        c.max_viewer_lag = 1 << 40;
        c.send_timeout_secs = 3600;
    })
    .await;
    let mut publisher = publisher_with_blob(&server, "busy").await;

    // The stalled viewer never reads a byte.
    let stalled_chunk = connect_small_window(&server.ws_url("/ws/watch/busy/chunk")).await;
    let stalled_blob = connect_small_window(&server.ws_url("/ws/watch/busy/blob")).await;
    // The normal viewer reads continuously on its own task, as a browser would.
    let mut normal = Viewer::connect(&server, "busy").await;
    let expected = flooded_generation();
    let length = expected.len();
    let normal = tokio::spawn(async move {
        normal.pump_until_holds(1, &expected).await;
        normal
    });
    tokio::time::timeout(PATIENCE, flood(&mut publisher))
        .await
        .expect("the publisher sent 24 MiB past a stalled viewer");
    let _normal = normal.await.expect("the normal viewer got every byte");
    // Both viewers are still there: the stalled one was neither waited for nor dropped.
    server
        .until_api("busy", |s| {
            s["buffered_bytes"] == length && s["viewers"] == 2
        })
        .await;
    drop((stalled_chunk, stalled_blob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let server = TestServer::with(|c| {
        c.max_viewer_lag = 1 << 40;
        c.send_timeout_secs = 1;
    })
    .await;
    let mut publisher = publisher_with_blob(&server, "stall").await;
    let mut stalled = connect_small_window(&server.ws_url("/ws/watch/stall/chunk")).await;
    flood(&mut publisher).await;
    // Without reading a byte, wait for the server to give up on the viewer; then read
    // what it was sent through to the close frame, which waits behind it.
    server
        .until_metrics("blobcast_viewers_lagged_total 1")
        .await;
    let (code, reason) = closed_with(&mut stalled).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(reason.contains("did not accept a write"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_reads_but_falls_behind_is_cut_off_at_the_lag_bound() {
    let server = TestServer::with(|c| {
        c.max_viewer_lag = 2 << 20;
        c.send_timeout_secs = 3600;
    })
    .await;
    let mut publisher = publisher_with_blob(&server, "lag").await;
    let mut dawdler = connect_small_window(&server.ws_url("/ws/watch/lag/chunk")).await;
    flood(&mut publisher).await;
    // It reads, only slowly: every write completes, but the live edge runs away from it.
    let (code, reason) = closed_with_pauses(&mut dawdler, Duration::from_millis(20)).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(reason.contains("behind the live edge"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_on_a_slow_link_gets_a_snapshot_that_takes_longer_than_the_send_timeout() {
    let server = TestServer::with(|c| c.send_timeout_secs = 1).await;
    let mut publisher = publisher_with_blob(&server, "big").await;
    flood(&mut publisher).await;
    let expected = flooded_generation();
    server
        .until_api("big", |s| s["buffered_bytes"] == expected.len())
        .await;
    // Connected after the media is buffered, it reads its 24 MiB snapshot at a pace of
    // about 6 MB/s: some 4 s in all, each write accepted well within the 1 s timeout.
    let _chunk = connect(&server.ws_url("/ws/watch/big/chunk")).await;
    let mut blob = connect_small_window(&server.ws_url("/ws/watch/big/blob")).await;
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let message = tokio::time::timeout(PATIENCE, blob.next())
            .await
            .expect("the snapshot kept coming");
        match message {
            Some(Ok(Message::Binary(frame))) => received.extend_from_slice(&frame[16..]),
            Some(Ok(Message::Text(_))) => {}
            other => panic!("the snapshot was cut off: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(received == expected, "the snapshot is the published bytes");
    println!("a 24 MiB snapshot read slowly in {:?}", started.elapsed());
}

/// Opens a publisher socket and returns how the server closed it after `send`.
async fn publisher_refusal(server: &TestServer, path: &str, send: Vec<Message>) -> (u16, String) {
    let mut ws = connect(&server.ws_url(path)).await;
    for message in send {
        if ws.send(message).await.is_err() {
            break;
        }
    }
    closed_with(&mut ws).await
}

#[tokio::test]
async fn every_bad_input_gets_its_close_code_and_the_server_keeps_serving() {
    let server = TestServer::with(|c| {
        c.max_frame = 1024;
        c.max_buffer = 4096;
    })
    .await;
    let bin = |g, o, len: usize| Message::binary(frame(g, o, &vec![7u8; len]));

    assert_eq!(
        connect_refused(&server.ws_url("/ws/publish/bad.name/blob?session=s")).await,
        400
    );
    assert_eq!(
        connect_refused(&server.ws_url("/ws/watch/bad%20name/chunk")).await,
        400
    );
    assert_eq!(
        connect_refused(&server.ws_url(&format!("/ws/watch/{}/blob", "x".repeat(65)))).await,
        400
    );
    assert_eq!(
        connect_refused(&server.ws_url("/ws/publish/ok/blob")).await,
        400
    );
    assert_eq!(
        connect_refused(&server.ws_url("/ws/publish/ok/blob?session=a/b")).await,
        400
    );
    assert_eq!(
        connect_refused(&server.ws_url("/ws/watch/ok/chunk?gen=1")).await,
        400
    );
    assert_eq!(
        connect_refused(&server.ws_url("/ws/watch/ok/chunk?gen=x&offset=1")).await,
        400
    );

    let cases: Vec<(&str, &str, Vec<Message>, u16, &str)> = vec![
        (
            "short frame",
            "/ws/publish/a/blob?session=s",
            vec![Message::binary(vec![0u8; 15])],
            4400,
            "shorter than the 16-byte header",
        ),
        (
            "blob offset",
            "/ws/publish/b/blob?session=s",
            vec![bin(1, 5, 10)],
            4400,
            "offset 5",
        ),
        (
            "bad control",
            "/ws/publish/c/blob?session=s",
            vec![Message::text("{\"type\":\"dance\"}")],
            4400,
            "control message",
        ),
        (
            "start on chunk socket",
            "/ws/publish/d/chunk?session=s",
            vec![Message::text(format!(
                "{{\"type\":\"start\",\"mime\":\"{MIME}\"}}"
            ))],
            4400,
            "blob socket",
        ),
        (
            "oversize",
            "/ws/publish/e/blob?session=s",
            vec![bin(1, 0, 1025)],
            1009,
            "1024-byte limit",
        ),
    ];
    for (what, path, send, code, reason) in cases {
        let (got, got_reason) = publisher_refusal(&server, path, send).await;
        assert_eq!(got, code, "{what}: {got_reason}");
        assert!(got_reason.contains(reason), "{what}: reason {got_reason:?}");
    }

    // A gap, an overlap, an offset at the end of u64, and a generation that outgrows
    // --max-buffer, on a live publisher.
    let mut publisher = Publisher::connect(&server, "g", "session=s").await;
    publisher.send_blob(1, &[1; 1000]).await;
    publisher.chunk.send(bin(1, 1500, 10)).await.unwrap();
    let (code, reason) = closed_with(&mut publisher.chunk).await;
    assert_eq!((code, reason.contains("gap")), (4422, true), "{reason}");
    for (what, offset, expect) in [
        ("overlap", 995, "overlaps"),
        ("end of u64", u64::MAX - 3, "gap"),
    ] {
        let mut chunk = connect(&server.ws_url("/ws/publish/g/chunk?session=s")).await;
        chunk.send(bin(1, offset, 10)).await.unwrap();
        let (code, reason) = closed_with(&mut chunk).await;
        assert_eq!(
            (code, reason.contains(expect)),
            (4422, true),
            "{what}: {reason}"
        );
    }
    // A viewer may only send control frames; a big message is over its limit.
    let mut chatty = connect(&server.ws_url("/ws/watch/g/chunk")).await;
    chatty
        .send(Message::binary(vec![0u8; 100_000]))
        .await
        .unwrap();
    let (code, reason) = closed_with(&mut chatty).await;
    assert_eq!(code, 1009, "{reason}");

    let mut publisher = Publisher::connect(&server, "h", "session=s").await;
    publisher.send_blob(1, &[1; 1000]).await;
    for _ in 0..3 {
        publisher.send_chunk(&[2; 1000]).await;
    }
    publisher.send_chunk(&[3; 1000]).await;
    let (code, reason) = closed_with(&mut publisher.chunk).await;
    assert_eq!(code, 4413, "{reason}");
    assert!(reason.contains("4096-byte buffer limit"), "{reason}");

    // Still serving: a clean publish and watch on another stream works.
    let mut viewer = Viewer::connect(&server, "fine").await;
    let mut publisher = Publisher::connect(&server, "fine", "session=s").await;
    publisher.start(MIME).await;
    publisher
        .publish_generation(1, &[b"abc".to_vec(), b"def".to_vec()])
        .await;
    viewer.pump_until_holds(1, b"abcdef").await;
    assert_eq!(server.get_text("/healthz").await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn publish_key_and_one_publisher_session_per_stream() {
    let server = TestServer::with(|c| c.publish_key = Some("sesame".into())).await;
    let (code, reason) = publisher_refusal(&server, "/ws/publish/k/blob?session=s", vec![]).await;
    assert_eq!(code, 4401, "{reason}");
    let (code, _) =
        publisher_refusal(&server, "/ws/publish/k/chunk?session=s&key=sesam", vec![]).await;
    assert_eq!(code, 4401);

    let mut first = Publisher::connect(&server, "k", "session=one&key=sesame").await;
    first.start(MIME).await;
    first.send_blob(1, b"hello").await;
    let (code, reason) =
        publisher_refusal(&server, "/ws/publish/k/blob?session=two&key=sesame", vec![]).await;
    assert_eq!(code, 4409, "{reason}");
    assert!(reason.contains("another publisher"), "{reason}");

    // Once the first session is gone, the second may publish.
    first.blob.close(None).await.unwrap();
    first.chunk.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut second = connect(&server.ws_url("/ws/publish/k/blob?session=two&key=sesame")).await;
        second
            .send(Message::binary(frame(1, 0, b"again")))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), second.next()).await {
            Err(_) => break, // not closed: accepted
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "second session never accepted"
            ),
        }
    }
}

#[tokio::test]
async fn viewer_limit_is_enforced_with_a_close_code() {
    let server = TestServer::with(|c| c.max_viewers = 1).await;
    let _first = Viewer::connect(&server, "full").await;
    let mut second = connect(&server.ws_url("/ws/watch/full/chunk")).await;
    let (code, reason) = closed_with(&mut second).await;
    assert_eq!(code, 4429, "{reason}");
}

#[tokio::test]
async fn the_stream_limit_is_enforced_and_waiting_viewers_cannot_lock_publishers_out() {
    let server = TestServer::with(|c| c.max_streams = 1).await;
    // A viewer waits on a name nobody publishes; a second such name is over the limit.
    let _waiting = Viewer::connect(&server, "nobody").await;
    let mut another = connect(&server.ws_url("/ws/watch/nobody-else/chunk")).await;
    let (code, reason) = closed_with(&mut another).await;
    assert_eq!(code, 4429, "{reason}");
    assert!(reason.contains("wait for a publisher"), "{reason}");
    // A publisher still gets its stream; a second published stream is over the limit.
    let mut publisher = Publisher::connect(&server, "one", "session=s").await;
    publisher.send_blob(1, b"x").await;
    server.until_api("one", |s| s["live"] == true).await;
    let (code, reason) = publisher_refusal(&server, "/ws/publish/two/blob?session=s", vec![]).await;
    assert_eq!(code, 4429, "{reason}");
    assert!(reason.contains("published streams"), "{reason}");
}

/// Sends a raw HTTP/1.1 request and returns the response head and body.
async fn raw_http(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if response.len() >= head_end + 4 + length {
                    return text;
                }
            }
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection ended mid-response: {text}");
            response.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server answered")
}

#[tokio::test]
async fn a_broken_websocket_handshake_is_refused_with_a_status_and_a_reason() {
    let server = TestServer::start().await;
    let request = |extra: &str| {
        format!("GET /ws/watch/cam/chunk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
    };
    let handshake = "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // Connection: close, so no Upgrade token: a plain GET.
    let plain = raw_http(&server, &request("")).await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("this is a WebSocket route"), "{plain}");

    let upgrade = |extra: &str| {
        format!(
            "GET /ws/watch/cam/chunk HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n{handshake}{extra}\r\n"
        )
    };
    let version = raw_http(&server, &upgrade("Sec-WebSocket-Version: 8\r\n")).await;
    assert!(version.starts_with("HTTP/1.1 426"), "{version}");
    assert!(
        version
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{version}"
    );
    let subprotocol = raw_http(
        &server,
        &upgrade("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n"),
    )
    .await;
    assert!(subprotocol.starts_with("HTTP/1.1 400"), "{subprotocol}");
    assert!(subprotocol.contains("subprotocol"), "{subprotocol}");
    let bad_key = raw_http(
        &server,
        "GET /ws/watch/cam/chunk HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope\r\n\r\n",
    )
    .await;
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    assert!(bad_key.contains("Sec-WebSocket-Key"), "{bad_key}");
    // And a real client still gets in.
    let mut viewer = Viewer::connect(&server, "cam").await;
    viewer
        .pump_until("the hello", |v| v.saw_control("stream"))
        .await;
}

#[tokio::test]
async fn a_peer_that_closes_gets_the_close_handshake_answered() {
    let server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "polite", "session=s").await;
    publisher.send_blob(1, b"x").await;
    let mut viewer = connect(&server.ws_url("/ws/watch/polite/chunk")).await;
    for ws in [&mut viewer, &mut publisher.chunk] {
        ws.send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
        // The server echoes the close (RFC 6455 §5.5.1) instead of dropping the TCP
        // connection, which a browser would report as 1006, not clean.
        let (code, _) = closed_with(ws).await;
        assert_eq!(code, 1000);
    }
}

#[tokio::test]
async fn stop_ends_the_stream_for_viewers_and_the_api_follows() {
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect(&server, "show").await;
    viewer
        .pump_until("the waiting hello", |v| !v.controls.is_empty())
        .await;
    assert_eq!(viewer.controls[0]["live"], false);

    let mut publisher = Publisher::connect(&server, "show", "session=s").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, &CLIP[..1000]).await;
    viewer.pump_until_holds(1, &CLIP[..1000]).await;

    let (status, list) = server.get_json("/api/streams").await;
    assert_eq!(status, 200);
    let show = &list.as_array().unwrap()[0];
    assert_eq!(show["name"], "show");
    assert_eq!(show["live"], true);
    assert_eq!(show["mime"], MIME);
    assert_eq!(show["generation"], 1);
    assert_eq!(show["buffered_bytes"], 1000);
    assert_eq!(show["viewers"], 1);
    assert!(show["publisher_connected_since"].as_u64().is_some());

    publisher.stop().await;
    viewer.pump_until("end", |v| v.saw_control("end")).await;
    server.until_api("show", |s| s["live"] == false).await;
    assert_eq!(server.get_json("/api/streams/nothing").await.0, 404);
    assert_eq!(server.get_json("/api/streams/no.pe").await.0, 400);
}

#[tokio::test]
async fn a_stop_on_the_chunk_socket_never_overtakes_the_last_chunks() {
    let server = TestServer::start().await;
    let pieces = chrome_pieces();
    for round in 0..5 {
        let stream = format!("tail{round}");
        let mut viewer = Viewer::connect(&server, &stream).await;
        let mut publisher = Publisher::connect(&server, &stream, "session=s").await;
        publisher.start(MIME).await;
        publisher.send_blob(1, &pieces[0]).await;
        server.until_api(&stream, |s| s["generation"] == 1).await;
        // The last pieces and the stop leave back to back, as when a recorder stops.
        for piece in &pieces[1..] {
            publisher.send_chunk(piece).await;
        }
        publisher.stop().await;
        // The tail may come after `end` (the two viewer sockets are not ordered), but it
        // comes: nothing the publisher sent before its stop is lost.
        viewer
            .pump_until(
                &format!("round {round}: end and the whole recording"),
                |v| v.saw_control("end") && v.holds(1).map(<[u8]>::len) == Some(CHROME.len()),
            )
            .await;
        assert!(
            viewer.holds(1) == Some(CHROME),
            "round {round}: reassembled wrong"
        );
    }
}

#[tokio::test]
async fn a_publisher_that_vanishes_ends_the_stream_and_idle_streams_are_dropped() {
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect(&server, "gone").await;
    let mut publisher = Publisher::connect(&server, "gone", "session=s").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, b"x").await;
    viewer.pump_until_holds(1, b"x").await;
    drop(publisher);
    viewer.pump_until("end", |v| v.saw_control("end")).await;
    drop(viewer);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.get_json("/api/streams").await.1 != serde_json::json!([]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_sends_end_and_closes_viewers_with_1001() {
    let mut server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "bye", "session=s").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, b"x").await;
    let mut viewer = Viewer::connect(&server, "bye").await;
    viewer.pump_until_holds(1, b"x").await;

    let shutdown = tokio::spawn(async move {
        server.shutdown().await;
    });
    let mut saw_end = false;
    let code = loop {
        match tokio::time::timeout(PATIENCE, viewer.blob.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) if t.as_str() == r#"{"type":"end"}"# => saw_end = true,
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert!(saw_end && code == 1001, "end {saw_end}, close {code}");
    let (code, _) = closed_with(&mut publisher.blob).await;
    assert_eq!(code, 1001);
    shutdown.await.unwrap();
}

#[tokio::test]
async fn metrics_count_traffic() {
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect(&server, "m").await;
    let mut publisher = Publisher::connect(&server, "m", "session=s").await;
    publisher.start(MIME).await;
    publisher.publish_generation(1, &cut(CLIP, 4, 1)).await;
    viewer.pump_until_holds(1, CLIP).await;
    let (status, text) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("blobcast_streams"), 1);
    assert_eq!(value("blobcast_viewers"), 1);
    assert_eq!(value("blobcast_frames_in_total"), 4);
    assert_eq!(
        value("blobcast_bytes_in_total"),
        (CLIP.len() + 4 * 16) as u64
    );
    assert!(value("blobcast_bytes_out_total") >= (CLIP.len() + 4 * 16) as u64);
}

#[test]
fn the_binary_refuses_a_public_address_without_a_key() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_blobcast"))
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("BLOBCAST_PUBLISH_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--open-publish"), "{stderr}");
}
