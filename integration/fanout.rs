//! The viewers' write path against a real server over real sockets: the bytes on the
//! wire are a reference encoder's, frame for frame, and a live viewer that falls behind
//! is moved to the newest keyframe cluster instead of being cut off.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

const MIME: &str = "video/webm;codecs=vp8,opus";

/// A viewer socket with no WebSocket library: the handshake by hand, then raw bytes.
async fn raw_socket(server: &TestServer, path: &str) -> TcpStream {
    let addr = server.http_url("").trim_start_matches("http://").to_owned();
    let addr = addr.trim_end_matches('/');
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The response ends at the first blank line; read it a byte at a time so that no
    // WebSocket byte after it is consumed.
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        response.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        response.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    tcp
}

/// One WebSocket frame as it came off the wire: its opcode and all its bytes.
async fn raw_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut raw = vec![0u8; 2];
    tcp.read_exact(&mut raw).await.unwrap();
    assert_eq!(raw[1] & 0x80, 0, "a server's frames are never masked");
    let extended = match raw[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    raw.resize(2 + extended, 0);
    tcp.read_exact(&mut raw[2..]).await.unwrap();
    let len = match extended {
        2 => u64::from(u16::from_be_bytes([raw[2], raw[3]])),
        8 => u64::from_be_bytes(raw[2..10].try_into().unwrap()),
        _ => u64::from(raw[1] & 0x7F),
    } as usize;
    let start = raw.len();
    raw.resize(start + len, 0);
    tcp.read_exact(&mut raw[start..]).await.unwrap();
    (raw[0] & 0x0F, raw)
}

/// What tungstenite, the reference encoder, puts on the wire for a binary message.
fn reference(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::message(message.to_vec(), OpCode::Data(Data::Binary), true)
        .format(&mut out)
        .unwrap();
    out
}

async fn binary_frames(tcp: &mut TcpStream, count: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while frames.len() < count {
        let (opcode, raw) = tokio::time::timeout(PATIENCE, raw_frame(tcp))
            .await
            .expect("the frames arrive");
        match opcode {
            0x2 => frames.push(raw),
            0x1 | 0x9 => continue,
            0x8 => panic!("closed: {}", String::from_utf8_lossy(&raw[2..])),
            other => panic!("unexpected opcode {other}"),
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_bytes_on_the_wire_are_a_reference_encoders_frame_for_frame() {
    // A 16 MiB frame is further behind the live edge than the default lag bound allows.
    let server = TestServer::with(|c| c.max_viewer_lag = 64 << 20).await;
    let mut chunk = raw_socket(&server, "/ws/watch/wire/chunk").await;
    let mut blob = raw_socket(&server, "/ws/watch/wire/blob").await;
    let mut publisher = Publisher::connect(&server, "wire", "session=s1").await;
    publisher.start(MIME).await;
    // A 0-byte media blob; then payloads whose messages (16-byte header included) sit on
    // each side of the 7-bit, 16-bit and 64-bit length encodings, 64 KiB and 16 MiB.
    publisher.send_blob(1, &[]).await;
    server.until_api("wire", |s| s["generation"] == 1).await;
    let sizes = [109, 110, 125, 126, 65_519, 65_520, 64 << 10, 16 << 20];
    let mut sent = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        sent.push(frame(1, publisher.offset, &payload));
        publisher.send_chunk(&payload).await;
    }

    let got = binary_frames(&mut blob, 1).await;
    assert_eq!(got[0], reference(&frame(1, 0, &[])), "the blob");
    let got = binary_frames(&mut chunk, sizes.len()).await;
    for ((got, sent), size) in got.iter().zip(&sent).zip(sizes) {
        let expected = reference(sent);
        assert_eq!(got.len(), expected.len(), "{size}-byte payload");
        assert!(got == &expected, "{size}-byte payload: bytes differ");
    }
}

/// Where the first Cluster starts: everything before it is the init segment.
fn first_cluster(webm: &[u8]) -> usize {
    webm.windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .expect("a Cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_viewer_that_falls_behind_is_moved_to_the_newest_keyframe_cluster() {
    let server = TestServer::with(|c| {
        c.max_viewer_lag = 2 << 20;
        c.send_timeout_secs = 3600;
    })
    .await;
    let mut publisher = Publisher::connect(&server, "behind", "session=s1").await;
    publisher.start(MIME).await;
    publisher.send_blob(1, &CHROME[..4096]).await;
    server.until_api("behind", |s| s["generation"] == 1).await;
    // A viewer that joined at the live edge, and reads slowly.
    let mut dawdler =
        connect_small_window(&server.ws_url("/ws/watch/behind/chunk?join=live")).await;
    // The rest of the recording, then its clusters over and over: 24 MiB of media whose
    // keyframe clusters the server indexes as they come.
    let clusters = &CHROME[first_cluster(CHROME)..];
    let mut media = CHROME[4096..].to_vec();
    while media.len() < 24 << 20 {
        media.extend_from_slice(clusters);
    }
    for piece in media.chunks(64 << 10) {
        publisher.send_chunk(piece).await;
    }

    let mut jump = None;
    let mut next_offset = None;
    let read = async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(message) = dawdler.next().await {
            match message.expect("no error") {
                Message::Text(text) => {
                    let control: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if control["type"] == "jump" {
                        jump = Some(control);
                    }
                }
                Message::Binary(frame) if jump.is_some() => {
                    next_offset = Some(u64::from_be_bytes(frame[8..16].try_into().unwrap()));
                    return;
                }
                Message::Close(close) => panic!("cut off instead of moved: {close:?}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("moved ahead in time");
    let jump = jump.expect("a jump");
    assert_eq!(jump["generation"], 1);
    let to = jump["offset"].as_u64().unwrap();
    assert_eq!(next_offset, Some(to), "the frames go on from the jump");
    // The jump lands on a cluster boundary of the generation.
    let generation = [&CHROME[..4096], &media[..]].concat();
    assert_eq!(
        &generation[to as usize..to as usize + 4],
        &[0x1F, 0x43, 0xB6, 0x75]
    );
    // Counted, server-wide and per stream (it may have been moved again since).
    let (_, metrics) = server.get_text("/metrics").await;
    let moves = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(moves("blobcast_viewers_moved_to_keyframe_total ") >= 1);
    assert!(moves("blobcast_stream_viewers_moved_to_keyframe_total{stream=\"behind\"}") >= 1);
}
