//! Hostile media over real sockets: a mime type too long to copy into every hello is
//! refused on both ingest paths.

mod common;

use common::*;

/// The Chrome recording's init segment: everything before its first Cluster.
fn chrome_init() -> &'static [u8] {
    let first_cluster = CHROME
        .windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .unwrap();
    &CHROME[..first_cluster]
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
