//! Instant join at the live edge, on a real Chrome MediaRecorder recording (clusters that
//! open with audio, keyframes every second, unknown sizes) published in the very pieces
//! Chrome cut it into; what a joiner receives must decode with ffmpeg.

mod common;

use common::*;
use std::process::Command;

const MIME: &str = "video/webm;codecs=vp8,opus";

fn hello(viewer: &Viewer) -> &serde_json::Value {
    viewer
        .controls
        .iter()
        .find(|c| c["type"] == "stream")
        .unwrap()
}

/// A publisher on `stream` that has sent the whole Chrome recording as `generation`, and
/// the server has buffered it.
async fn publish_chrome(server: &TestServer, stream: &str, generation: u64) -> Publisher {
    let mut publisher = Publisher::connect(server, stream, "session=s").await;
    publisher.start(MIME).await;
    publisher
        .publish_generation(generation, &chrome_pieces())
        .await;
    let length = publisher.offset;
    server
        .until_api(stream, |s| s["buffered_bytes"] == length)
        .await;
    publisher
}

/// A `join=live` viewer of `stream`, once it has reached offset `length`.
async fn join_live(server: &TestServer, stream: &str, length: usize) -> Viewer {
    let mut viewer = Viewer::connect_with(server, stream, "join=live").await;
    viewer
        .pump_until(&format!("offset {length}"), |v| v.length() == length as u64)
        .await;
    viewer
}

#[tokio::test]
async fn a_live_joiner_gets_the_init_then_a_keyframe_cluster_and_it_decodes() {
    let server = TestServer::start().await;
    let pieces = chrome_pieces();
    let mut publisher = Publisher::connect(&server, "cam", "session=s").await;
    publisher.start(MIME).await;
    // Most of the recording is out before the viewer arrives.
    let split = pieces.len() * 2 / 3;
    publisher.publish_generation(77, &pieces[..split]).await;
    let published: usize = pieces[..split].iter().map(Vec::len).sum();
    let mut full = Viewer::connect(&server, "cam").await;
    full.pump_until("the whole buffer", |v| v.length() == published as u64)
        .await;

    let mut live = Viewer::connect_with(&server, "cam", "join=live").await;
    live.pump_until("the live edge", |v| v.length() == published as u64)
        .await;
    assert_eq!(hello(&live)["join"], "live");
    assert!(live.skipped > 0, "jumped past the old clusters");

    // The rest arrives live and contiguous.
    for piece in &pieces[split..] {
        publisher.send_chunk(piece).await;
    }
    live.pump_until("the end of the recording", |v| {
        v.length() == CHROME.len() as u64
    })
    .await;
    let skipped = live.skipped as usize;
    let received = &live.data;
    // What the joiner holds is the recording's head up to the init's end, then
    // everything from the keyframe cluster on.
    let head_len = live.jumped_at as usize;
    assert_eq!(&received[..head_len], &CHROME[..head_len], "init segment");
    assert_eq!(
        &received[head_len..],
        &CHROME[head_len + skipped..],
        "from the keyframe cluster on"
    );
    assert_eq!(
        &CHROME[head_len + skipped..head_len + skipped + 4],
        &[0x1F, 0x43, 0xB6, 0x75],
        "a Cluster"
    );
    assert!(
        live.received_bytes < full.received_bytes,
        "live join {} bytes, full join {}",
        live.received_bytes,
        full.received_bytes
    );
    assert_decodes(received, "live join");
}

#[tokio::test]
async fn a_live_join_without_a_keyframe_cluster_yet_falls_back_to_the_whole_blob() {
    let server = TestServer::start().await;
    let pieces = chrome_pieces();
    let mut publisher = Publisher::connect(&server, "early", "session=s").await;
    publisher.start(MIME).await;
    // The first piece holds the init and the start of the first cluster only.
    publisher.send_blob(1, &pieces[0][..300]).await;
    let mut viewer = Viewer::connect_with(&server, "early", "join=live").await;
    viewer.pump_until_holds(1, &pieces[0][..300]).await;
    assert_eq!(hello(&viewer)["join"], "start");
}

#[tokio::test]
async fn a_live_joiner_follows_the_next_generation_from_its_blob() {
    let server = TestServer::start().await;
    let mut publisher = publish_chrome(&server, "gen", 1).await;
    let mut viewer = join_live(&server, "gen", CHROME.len()).await;
    assert!(viewer.skipped > 0, "{:?}", viewer.controls);
    publisher.publish_generation(2, &chrome_pieces()).await;
    viewer.pump_until_holds(2, CHROME).await;
    assert_decodes(viewer.holds(2).unwrap(), "next generation");
}

#[tokio::test]
async fn after_the_webm_breaks_a_live_join_gets_the_whole_generation() {
    let server = TestServer::start().await;
    let mut publisher = publish_chrome(&server, "broken", 5).await;
    let before = join_live(&server, "broken", CHROME.len()).await;
    assert_eq!(hello(&before)["join"], "live");

    // The recording ends on an element boundary, where 0x00 cannot start an element ID:
    // the scanner gives up, and what it knew of the keyframes would only grow stale.
    let garbage = [0u8, 1, 2, 3, 4, 5, 6, 7];
    publisher.send_chunk(&garbage).await;
    let whole = [CHROME, &garbage[..]].concat();
    server
        .until_api("broken", |s| s["buffered_bytes"] == whole.len())
        .await;
    let mut after = Viewer::connect_with(&server, "broken", "join=live").await;
    after.pump_until_holds(5, &whole).await;
    assert_eq!(hello(&after)["join"], "start");
    assert_eq!(after.holds(5).unwrap(), &whole[..]);
    assert_eq!(after.skipped, 0);

    // The next generation is indexed afresh.
    publisher.publish_generation(6, &chrome_pieces()).await;
    server
        .until_api("broken", |s| {
            s["generation"] == 6 && s["buffered_bytes"] == CHROME.len()
        })
        .await;
    let next = join_live(&server, "broken", CHROME.len()).await;
    assert_eq!(hello(&next)["join"], "live");
}

#[tokio::test]
async fn an_audio_only_stream_joins_live_at_any_cluster() {
    // The Chrome recording without its video: Opus only, a cluster about every second.
    if !ffmpeg_present() {
        return;
    }
    let opus = audio_only(CHROME);
    let server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "radio", "session=s").await;
    publisher.start("audio/webm;codecs=opus").await;
    publisher.publish_generation(1, &cut(&opus, 6, 3)).await;
    server
        .until_api("radio", |s| s["buffered_bytes"] == opus.len())
        .await;
    let viewer = join_live(&server, "radio", opus.len()).await;
    assert_eq!(hello(&viewer)["join"], "live");
    assert!(viewer.skipped > 0);
    assert!(viewer.received_bytes < opus.len());
    assert_decodes(&viewer.data, "audio-only live join");
}

/// `webm` with its video track dropped, remuxed by ffmpeg as a live recorder writes it.
fn audio_only(webm: &[u8]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("blobcast-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("av.webm"), dir.join("audio.webm"));
    std::fs::write(&input, webm).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&input)
        .args(["-map", "0:a", "-c", "copy", "-live", "1"])
        .args(["-cluster_time_limit", "1000", "-f", "webm"])
        .arg(&output)
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg; .ci/run installs it)");
    assert!(status.success());
    let opus = std::fs::read(&output).unwrap();
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    opus
}

#[tokio::test]
async fn payloads_that_are_neither_webm_nor_mp4_are_relayed_without_an_index() {
    let server = TestServer::start().await;
    let ogg: Vec<u8> = b"OggS\0\x02"
        .iter()
        .chain(CHROME.iter())
        .copied()
        .take(20_000)
        .collect();
    let mut publisher = Publisher::connect(&server, "ogg", "session=s").await;
    publisher.start("audio/ogg").await;
    publisher.publish_generation(1, &cut(&ogg, 5, 1)).await;
    let mut viewer = Viewer::connect_with(&server, "ogg", "join=live").await;
    viewer.pump_until_holds(1, &ogg).await;
    assert_eq!(hello(&viewer)["join"], "start");
    let (_, info) = server.get_json("/api/streams/ogg").await;
    assert!(info["media"].is_null(), "{info}");
}

/// ffmpeg's fragmented MP4 (a fragment per keyframe, one a second, H.264 and AAC), as
/// Safari's MediaRecorder writes it in shape: ftyp, moov, then moof+mdat pairs.
const MP4: &[u8] = include_bytes!("../src/mp4/testdata/ffmpeg-h264-aac-frag-keyframe.mp4");

#[tokio::test]
async fn an_mp4_live_joiner_gets_the_init_then_the_newest_sync_led_fragment_and_it_decodes() {
    let server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "iphone", "session=s").await;
    publisher
        .start("video/mp4;codecs=avc1.42E01E,mp4a.40.2")
        .await;
    // Everything but the last fragment, in pieces cut anywhere.
    let moofs = moofs(MP4);
    let last = *moofs.last().unwrap();
    publisher
        .publish_generation(3, &cut(&MP4[..last], 7, 5))
        .await;
    server
        .until_api("iphone", |s| s["buffered_bytes"] == last)
        .await;
    let mut live = Viewer::connect_with(&server, "iphone", "join=live").await;
    live.pump_until("the live edge", |v| v.length() == last as u64)
        .await;
    assert_eq!(hello(&live)["join"], "live");
    // The rest arrives live and contiguous.
    publisher.send_chunk(&MP4[last..]).await;
    live.pump_until("the end", |v| v.length() == MP4.len() as u64)
        .await;
    let init_end = live.jumped_at as usize;
    let newest = init_end + live.skipped as usize;
    assert_eq!(init_end, moofs[0], "the init segment is ftyp + moov");
    assert_eq!(
        newest,
        moofs[moofs.len() - 2],
        "the newest sync-led fragment"
    );
    assert_eq!(&live.data[..init_end], &MP4[..init_end]);
    assert_eq!(&live.data[init_end..], &MP4[newest..]);
    assert_decodes(&live.data, "mp4 live join");

    let (_, info) = server.get_json("/api/streams/iphone").await;
    let media = &info["media"];
    assert_eq!(media["container"], "mp4", "{info}");
    assert_eq!(media["video_codec"], "avc1.42c00c");
    assert_eq!(
        (media["width"].as_u64(), media["height"].as_u64()),
        (Some(160), Some(120))
    );
    assert_eq!(media["audio_codec"], "mp4a");
    assert_eq!(media["audio_sample_rate"], 48000.0);
}

#[tokio::test]
async fn the_api_reports_what_the_tracks_say() {
    let server = TestServer::start().await;
    let mut publisher = Publisher::connect(&server, "facts", "session=s").await;
    publisher.start(MIME).await;
    publisher.publish_generation(1, &chrome_pieces()[..3]).await;
    server.until_api("facts", |s| !s["media"].is_null()).await;
    let (_, info) = server.get_json("/api/streams/facts").await;
    let media = &info["media"];
    assert_eq!(media["video_codec"], "V_VP8");
    assert_eq!(
        (media["width"].as_u64(), media["height"].as_u64()),
        (Some(192), Some(144))
    );
    assert_eq!(media["audio_codec"], "A_OPUS");
    assert_eq!(media["audio_sample_rate"], 48000.0);
    assert_eq!(info["mime"], MIME);
}

#[test]
fn the_whole_fixture_decodes() {
    // Guards the fixture itself, so a failure above is about the relay, not the file.
    assert_decodes(CHROME, "fixture");
}
