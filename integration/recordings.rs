//! Recordings, end to end on real sockets and real files: a real Chrome recording
//! published as several generations, each with fresh TrackUIDs as Chrome gives every
//! restart, becomes ONE WebM that ffprobe reads with the right duration, monotonic
//! timestamps and the alpha side data of its BlockGroups; so does an ffmpeg one with
//! alpha; byte ranges; kill -9 and recovery; hostile name prefixes; a full disk; a
//! publisher's reconnect; HTTP upload ingest; deletion.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MIME: &str = "video/webm;codecs=vp8,opus";

/// VP8 with an alpha channel and Opus, 3 s at 160x120, as ffmpeg's muxer writes it
/// (known sizes, SeekHead, Cues): every video frame a BlockGroup whose BlockAdditions
/// carry the alpha plane. 43 KB, made with
/// `ffmpeg -f lavfi -i "testsrc=size=160x120:rate=15:duration=3,format=yuva420p,
/// geq=lum='lum(X,Y)':a='128+100*sin(T+X/10)'" -f lavfi -i "sine=frequency=440:duration=3"
/// -c:v libvpx -pix_fmt yuva420p -auto-alt-ref 0 -b:v 200k -g 15 -threads 1
/// -c:a libopus -b:a 32k -shortest -fflags +bitexact -map_metadata -1 alpha-vp8-opus.webm`
/// (the Chrome fixture has BlockAdditions too: it records a canvas, which has alpha).
const ALPHA: &[u8] = include_bytes!("fixtures/alpha-vp8-opus.webm");

/// `webm` with every TrackUID of its Tracks rewritten in place (same length) from
/// `seed`, as Chrome draws new ones at every MediaRecorder restart. Panics unless it
/// finds exactly `tracks` of them.
fn with_fresh_track_uids(webm: &[u8], seed: u64, tracks: usize) -> Vec<u8> {
    const SEGMENT: u32 = 0x1853_8067;
    const TRACKS: u32 = 0x1654_AE6B;
    const TRACK_ENTRY: u32 = 0xAE;
    const TRACK_UID: u32 = 0x73C5;
    const CLUSTER: u32 = 0x1F43_B675;
    // An EBML vint at `at`: (its length, its value without the marker bit).
    let vint = |at: usize| {
        let len = webm[at].leading_zeros() as usize + 1;
        let value = webm[at + 1..at + len]
            .iter()
            .fold(u64::from(webm[at]) & (0xFF >> len), |v, &b| {
                v << 8 | u64::from(b)
            });
        (len, value)
    };
    let mut out = webm.to_vec();
    let mut found = 0;
    let mut at = 0;
    while at < webm.len() {
        let (id_len, _) = vint(at);
        let id = webm[at..at + id_len]
            .iter()
            .fold(0u32, |v, &b| v << 8 | u32::from(b));
        let (size_len, size) = vint(at + id_len);
        let data = at + id_len + size_len;
        match id {
            // Into the masters on the way to the TrackUIDs; the rest is stepped over.
            SEGMENT | TRACKS | TRACK_ENTRY => at = data,
            CLUSTER => break,
            TRACK_UID => {
                let end = data + size as usize;
                let fresh = seed
                    .wrapping_add(found as u64 + 1)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                out[data..end].copy_from_slice(&fresh.to_be_bytes()[8 - (end - data)..]);
                assert_ne!(out[data..end], webm[data..end]);
                found += 1;
                at = end;
            }
            _ => at = data + size as usize,
        }
    }
    assert_eq!(found, tracks, "TrackUIDs in the fixture");
    out
}

/// Generation `g` of the Chrome recording: its own TrackUIDs, cut where Chrome's
/// `dataavailable` cut it.
fn chrome_generation(g: u64) -> Vec<Vec<u8>> {
    let media = with_fresh_track_uids(CHROME, g, 2);
    let mut start = 0;
    chrome_pieces()
        .iter()
        .map(|piece| {
            start += piece.len();
            media[start - piece.len()..start].to_vec()
        })
        .collect()
}

async fn recordings(server: &TestServer) -> Vec<Value> {
    let (status, list) = server.get_json("/api/recordings").await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// Waits until `/api/recordings` satisfies `check`.
async fn until_recordings(
    server: &TestServer,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = recordings(server).await;
        if check(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited too long for {what}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Publishes `generations` copies of the Chrome recording in one session on `stream`,
/// each one wholly received before the next starts, as a recorder restart does.
async fn publish_generations(
    server: &TestServer,
    publisher: &mut Publisher,
    stream: &str,
    generations: &[u64],
) {
    for &g in generations {
        publisher.publish_generation(g, &chrome_generation(g)).await;
        server
            .until_api(stream, |s| {
                s["generation"] == g && s["buffered_bytes"] == CHROME.len()
            })
            .await;
    }
}

/// One finished recording of `generations` on `stream`.
async fn record(server: &TestServer, stream: &str, query: &str, generations: &[u64]) -> Value {
    let before = recordings(server).await.len();
    let mut publisher = Publisher::connect(server, stream, query).await;
    publisher.start(MIME).await;
    publish_generations(server, &mut publisher, stream, generations).await;
    publisher.stop().await;
    let list = until_recordings(server, "the recording to finish", |list| {
        list.len() == before + 1
            && list
                .iter()
                .all(|r| r["state"] != "recording" && !r["duration"].is_null())
    })
    .await;
    list.into_iter().find(|r| r["stream"] == stream).unwrap()
}

#[derive(Debug)]
struct Probe {
    duration: Option<f64>,
    /// In file order.
    packets: Vec<Packet>,
    errors: String,
}

#[derive(Debug, Clone, Copy)]
struct Packet {
    stream: u64,
    /// Seconds.
    pts: f64,
    keyframe: bool,
    /// A BlockAdditional came with it (VP8's alpha plane).
    additional: bool,
}

fn probe(path: &Path) -> Probe {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format"])
        .args([
            "-show_entries",
            "packet=stream_index,pts_time,flags:packet_side_data=side_data_type",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (apt-get install ffmpeg; .ci/run installs it)");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let packets = json["packets"]
        .as_array()
        .map(|packets| {
            packets
                .iter()
                .map(|p| Packet {
                    stream: p["stream_index"].as_u64().unwrap(),
                    pts: p["pts_time"].as_str().unwrap().parse().unwrap(),
                    keyframe: p["flags"].as_str().unwrap_or_default().starts_with('K'),
                    additional: p["side_data_list"].as_array().is_some_and(|list| {
                        list.iter()
                            .any(|d| d["side_data_type"] == "Matroska BlockAdditional")
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    Probe {
        duration: json["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok()),
        packets,
        errors: String::from_utf8_lossy(&output.stderr).trim().to_owned()
            + if output.status.success() {
                ""
            } else {
                " (ffprobe failed)"
            },
    }
}

/// ffmpeg's complaints while decoding all of `path`, starting at `seek` seconds.
fn decode_errors(path: &Path, seek: Option<f64>) -> String {
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error"]);
    if let Some(seek) = seek {
        command.args(["-ss", &seek.to_string()]);
    }
    let output = command
        .arg("-i")
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

/// Timestamps per stream never go backwards.
fn assert_monotonic(probe: &Probe) {
    let mut last: std::collections::HashMap<u64, f64> = Default::default();
    for &Packet { stream, pts, .. } in &probe.packets {
        if let Some(&previous) = last.get(&stream) {
            assert!(
                pts >= previous,
                "stream {stream} goes back from {previous} to {pts}"
            );
        }
        last.insert(stream, pts);
    }
}

fn probe_bytes(media: &[u8]) -> Probe {
    let dir = scratch_dir("fixture");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fixture.webm");
    std::fs::write(&path, media).unwrap();
    let p = probe(&path);
    done(&dir);
    p
}

/// ffprobe's view of the Chrome fixture itself, once.
fn fixture_probe() -> &'static Probe {
    static PROBE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| probe_bytes(CHROME))
}

/// How long one generation of the fixture lasts once spliced: its last video frame's
/// time plus one frame.
fn fixture_span() -> f64 {
    let video: Vec<f64> = fixture_probe()
        .packets
        .iter()
        .filter(|p| p.stream == 0)
        .map(|p| p.pts)
        .collect();
    let n = video.len();
    video[n - 1] + (video[n - 1] - video[n - 2])
}

fn fixture_packets() -> usize {
    fixture_probe().packets.len()
}

/// Removes a test's directory once it passed (a failing test leaves it to look at).
fn done(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_session_of_three_generations_is_one_seekable_webm() {
    let dir = scratch_dir("splice");
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let rec = record(
        &server,
        "cam",
        "session=s&name_prefix=show",
        &[100, 200, 300],
    )
    .await;
    let list = recordings(&server).await;
    assert_eq!(list.len(), 1, "one session, one file: {list:#?}");
    assert_eq!(rec["state"], "finished", "{rec:#}");
    assert_eq!(rec["generations"], 3);
    assert_eq!(rec["name_prefix"], "show");
    assert!(rec["error"].is_null(), "{rec:#}");
    let file = rec["file"].as_str().unwrap();
    assert!(
        file.starts_with("show-cam-") && file.ends_with("Z.webm"),
        "{file}"
    );
    assert_eq!(rec["url"], format!("/recordings/{}", file));

    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(rec["bytes"], bytes.len());
    assert!(
        contains(&bytes, &[0x1C, 0x53, 0xBB, 0x6B]),
        "the file has Cues"
    );
    assert!(
        contains(&bytes, &[0x11, 0x4D, 0x9B, 0x74]),
        "the file has a SeekHead"
    );

    let p = probe(&path);
    let span = fixture_span();
    let expected = 3.0 * span;
    let duration = p.duration.expect("a Duration");
    eprintln!(
        "ffprobe: duration {duration:.3} s (expected {expected:.3}), {} packets ({} keyframes), errors: {:?}",
        p.packets.len(),
        p.packets.iter().filter(|p| p.keyframe).count(),
        p.errors
    );
    assert!(p.errors.is_empty(), "ffprobe complains: {}", p.errors);
    assert!(
        (duration - expected).abs() < 0.05,
        "duration {duration}, expected {expected}"
    );
    assert!((rec["duration"].as_f64().unwrap() - duration).abs() < 0.01);
    assert_eq!(
        p.packets.len(),
        3 * fixture_packets(),
        "every packet of every generation"
    );
    assert_monotonic(&p);
    let last_pts = p.packets.iter().map(|p| p.pts).fold(0.0, f64::max);
    assert!(
        last_pts > 2.0 * span,
        "the third generation follows the second"
    );
    // Chrome's BlockGroups keep their BlockAdditions (the canvas's alpha plane).
    let additional = |p: &Probe| p.packets.iter().filter(|p| p.additional).count();
    assert!(additional(fixture_probe()) > 0, "the fixture has alpha");
    assert_eq!(additional(&p), 3 * additional(fixture_probe()));
    assert_eq!(decode_errors(&path, None), "", "decodes cleanly");
    assert_eq!(decode_errors(&path, Some(13.0)), "", "seeks and decodes");
    drop(server);
    done(&dir);
}

/// Rounding of ffprobe's millisecond timestamps.
const MS: f64 = 0.0015;

#[tokio::test]
async fn an_ffmpeg_recording_with_alpha_is_spliced_whole_block_additions_included() {
    let dir = scratch_dir("alpha");
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let mut publisher = Publisher::connect(&server, "alpha", "session=s").await;
    publisher.start(MIME).await;
    for g in 1..=3 {
        let media = with_fresh_track_uids(ALPHA, g, 2);
        publisher.publish_generation(g, &cut(&media, 9, g)).await;
        server
            .until_api("alpha", |s| {
                s["generation"] == g && s["buffered_bytes"] == ALPHA.len()
            })
            .await;
    }
    publisher.stop().await;
    let list = until_recordings(&server, "the recording to finish", |l| {
        l.len() == 1 && l[0]["state"] == "finished"
    })
    .await;
    let rec = &list[0];
    assert_eq!(rec["generations"], 3, "{rec:#}");
    assert!(rec["split_reason"].is_null(), "{rec:#}");
    let path = dir.join(rec["file"].as_str().unwrap());

    let fixture = probe_bytes(ALPHA);
    let p = probe(&path);
    assert!(fixture.errors.is_empty(), "{}", fixture.errors);
    assert!(p.errors.is_empty(), "ffprobe complains: {}", p.errors);
    assert_monotonic(&p);
    let n = fixture.packets.len();
    assert!(fixture.packets.iter().any(|p| p.additional), "alpha");
    assert_eq!(p.packets.len(), 3 * n, "every packet of every generation");
    // Each generation is the fixture moved later as a whole: the same packets in the
    // same order, alpha side data included, every timestamp by the same shift.
    let shifts: Vec<f64> = p
        .packets
        .chunks(n)
        .enumerate()
        .map(|(k, generation)| {
            let shift = generation[0].pts - fixture.packets[0].pts;
            for (got, want) in generation.iter().zip(&fixture.packets) {
                assert_eq!(
                    (got.stream, got.keyframe, got.additional),
                    (want.stream, want.keyframe, want.additional),
                    "generation {k}: {got:?} for {want:?}"
                );
                assert!(
                    (got.pts - want.pts - shift).abs() < MS,
                    "generation {k}: {got:?} for {want:?}, shift {shift}"
                );
            }
            shift
        })
        .collect();
    let span = shifts[1] - shifts[0];
    let (first, last) = fixture
        .packets
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.pts), hi.max(p.pts))
        });
    eprintln!(
        "alpha: shifts {shifts:?}, fixture {first:.3}..{last:.3} s, duration {:?}",
        p.duration
    );
    assert!(shifts[0].abs() < MS, "{shifts:?}");
    assert!((shifts[2] - shifts[1] - span).abs() < MS, "{shifts:?}");
    // No overlap, and one video frame (15 fps) between generations.
    assert!(
        span > last - first && span < last - first + 1.0 / 15.0 + MS,
        "{shifts:?}"
    );
    let duration = p.duration.expect("a Duration");
    assert!(
        (duration - 3.0 * span).abs() < 2.0 * MS,
        "{duration} for {span}"
    );
    assert!((rec["duration"].as_f64().unwrap() - duration).abs() < 0.01);
    assert_eq!(decode_errors(&path, None), "", "decodes cleanly");
    assert_eq!(decode_errors(&path, Some(5.0)), "", "seeks and decodes");
    drop(server);
    done(&dir);
}

#[tokio::test]
async fn recordings_are_served_with_byte_ranges_and_survive_a_restart() {
    let dir = scratch_dir("range");
    let mut server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let rec = record(&server, "r", "session=s", &[1]).await;
    let url = server.http_url(rec["url"].as_str().unwrap());
    let bytes = std::fs::read(dir.join(rec["file"].as_str().unwrap())).unwrap();
    let len = bytes.len();
    let client = reqwest::Client::new();
    let get = |range: Option<&str>| {
        let mut request = client.get(&url);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };

    let whole = get(None).await.unwrap();
    assert_eq!(whole.status(), 200);
    let header = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header(&whole, "accept-ranges"), "bytes");
    assert_eq!(header(&whole, "content-type"), "video/webm");
    assert_eq!(header(&whole, "content-length"), len.to_string());
    assert_eq!(whole.bytes().await.unwrap(), bytes);
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), len.to_string());
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let part = get(Some("bytes=100-199")).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range"),
        format!("bytes 100-199/{len}")
    );
    assert_eq!(header(&part, "content-length"), "100");
    assert_eq!(part.bytes().await.unwrap(), &bytes[100..200]);

    let tail = get(Some("bytes=-1000")).await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(
        header(&tail, "content-range"),
        format!("bytes {}-{}/{len}", len - 1000, len - 1)
    );
    assert_eq!(tail.bytes().await.unwrap(), &bytes[len - 1000..]);

    let open = get(Some(&format!("bytes={}-", len - 10))).await.unwrap();
    assert_eq!(open.status(), 206);
    assert_eq!(open.bytes().await.unwrap(), &bytes[len - 10..]);

    for bad in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 5, len + 10),
    ] {
        let refused = get(Some(&bad)).await.unwrap();
        assert_eq!(refused.status(), 416, "{bad}");
        assert_eq!(header(&refused, "content-range"), format!("bytes */{len}"));
    }
    for missing in [
        "/recordings/nope.webm",
        "/recordings/..%2F..%2Fetc%2Fpasswd",
    ] {
        let response = client.get(server.http_url(missing)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
    }

    let (status, page) = server.get_text("/recordings").await;
    assert_eq!(status, 200);
    assert!(page.contains("/js/recordings.js"));

    // A server shut down mid-recording finalizes it; the catalog is the directory, so a
    // new server lists both.
    let mut publisher = Publisher::connect(&server, "r2", "session=s").await;
    publisher.start(MIME).await;
    publish_generations(&server, &mut publisher, "r2", &[1, 2]).await;
    until_recordings(&server, "the second recording", |l| l.len() == 2).await;
    server.shutdown().await;
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let list = recordings(&server).await;
    assert_eq!(list.len(), 2);
    let old = list.iter().find(|r| r["id"] == rec["id"]).unwrap();
    assert_eq!(old["state"], "finished");
    assert_eq!(old["duration"], rec["duration"]);
    let cut_short = list.iter().find(|r| r["stream"] == "r2").unwrap();
    assert_eq!(cut_short["state"], "finished", "{cut_short:#}");
    assert!((cut_short["duration"].as_f64().unwrap() - 2.0 * fixture_span()).abs() < 0.05);
    drop(server);
    done(&dir);
}

/// The real binary, as a child process, on a free port.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn spawn(dir: &Path, configure: impl FnOnce(&mut Command)) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_blobcast"));
        command
            .args(["--listen", "127.0.0.1:0", "--record-dir"])
            .arg(dir)
            .env_remove("BLOBCAST_PUBLISH_KEY")
            .env_remove("BLOBCAST_NO_RECORD")
            .stdout(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn only_webm(dir: &Path) -> PathBuf {
    let webms: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "webm"))
        .collect();
    assert_eq!(webms.len(), 1, "{webms:?}");
    webms[0].clone()
}

#[tokio::test]
async fn kill_9_mid_stream_leaves_a_playable_file_that_the_next_start_finalizes() {
    let dir = scratch_dir("kill");
    let mut first = Server::spawn(&dir, |_| {});
    let server = TestServer::at(first.addr);
    let pieces = chrome_pieces();
    let mut publisher = Publisher::connect(&server, "live", "session=s").await;
    publisher.start(MIME).await;
    publish_generations(&server, &mut publisher, "live", &[1]).await;
    // Half of the second generation is out when the server dies.
    publisher
        .publish_generation(2, &pieces[..pieces.len() / 2])
        .await;
    let half: usize = pieces[..pieces.len() / 2].iter().map(Vec::len).sum();
    server
        .until_api("live", |s| {
            s["generation"] == 2 && s["buffered_bytes"] == half
        })
        .await;
    until_recordings(&server, "the second generation on disk", |l| {
        l.len() == 1 && l[0]["bytes"].as_u64().unwrap() > (CHROME.len() + half / 2) as u64
    })
    .await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    drop(publisher);

    let path = only_webm(&dir);
    let left = probe(&path);
    assert!(
        left.errors.is_empty(),
        "as the crash left it: {}",
        left.errors
    );
    assert!(
        left.packets.len() > fixture_packets(),
        "more than one generation"
    );
    assert_monotonic(&left);
    assert_eq!(decode_errors(&path, None), "", "plays as the crash left it");
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["state"], "recording");

    let second = Server::spawn(&dir, |_| {});
    let server = TestServer::at(second.addr);
    // `ended` is set once it is finalized (the sidecar has a duration from before).
    let list = until_recordings(&server, "the interrupted recording finalized", |l| {
        l.len() == 1 && l[0]["state"] == "interrupted" && !l[0]["ended"].is_null()
    })
    .await;
    assert!(
        list[0]["duration"].as_f64().unwrap() > fixture_span(),
        "{list:#?}"
    );
    assert!(list[0]["error"].is_null(), "{list:#?}");
    // What the file says, and the generations the sidecar counted before the crash.
    assert_eq!(list[0]["generations"], 2, "{list:#?}");
    assert_eq!(list[0]["tracks"], "V_VP8 192x144, A_OPUS 48000 Hz 2 ch");
    let p = probe(&path);
    assert!(p.errors.is_empty(), "finalized: {}", p.errors);
    let duration = p.duration.expect("a Duration after finalizing");
    assert!(duration > 0.0 && (duration - list[0]["duration"].as_f64().unwrap()).abs() < 0.01);
    assert_eq!(
        p.packets.len(),
        left.packets.len(),
        "nothing lost in finalizing"
    );
    assert_eq!(decode_errors(&path, Some(duration / 2.0)), "");
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["state"], "interrupted");
    drop(second);
    done(&dir);
}

#[tokio::test]
async fn hostile_name_prefixes_end_up_as_safe_names_inside_the_record_directory() {
    let root = scratch_dir("names");
    let dir = root.join("rec");
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let long = "x".repeat(3000);
    let odd = "%00%01%FF%FE%2F%5C..%0D%0A%E2%80%AE%F0%9F%92%A9%20%25%3F%2A%3A%22%3C%3E%7C%2E";
    let prefixes = [
        ("passwd", "..%2F..%2Fetc%2Fpasswd"),
        ("long", long.as_str()),
        ("odd", odd),
        ("dots", ".."),
    ];
    for (stream, prefix) in prefixes {
        record(
            &server,
            stream,
            &format!("session=s&name_prefix={prefix}"),
            &[1],
        )
        .await;
    }
    // The same prefix and stream again within the same second: a counter, no clash.
    let again = record(&server, "dots", "session=t&name_prefix=..", &[1]).await;
    let list = recordings(&server).await;
    assert_eq!(list.len(), prefixes.len() + 1);
    let mut ids: Vec<_> = list.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), list.len(), "no two recordings share a name");
    for rec in &list {
        let file = rec["file"].as_str().unwrap();
        assert!(file.len() < 255, "{file}");
        assert!(
            file.strip_suffix(".webm")
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{file}"
        );
        assert!(
            dir.join(file).is_file(),
            "{file} is in the record directory"
        );
    }
    let by_stream = |s: &str| list.iter().find(|r| r["stream"] == s).unwrap();
    assert!(by_stream("passwd")["file"]
        .as_str()
        .unwrap()
        .starts_with("etc_passwd-passwd-"));
    assert_eq!(by_stream("long")["name_prefix"].as_str().unwrap().len(), 48);
    assert!(again["file"].as_str().unwrap().starts_with("noname-dots-"));
    // Nothing but our files, and nothing outside.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        assert!(entry.file_type().unwrap().is_file(), "{:?}", entry.path());
    }
    let outside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["rec"], "nothing escaped the record directory");
    drop(server);
    done(&root);
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop; None where mounting is not
/// allowed (not root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_stops_the_recording_not_the_live_stream() {
    let dir = scratch_dir("full");
    // 256 KiB: room for one generation of the fixture (170 KiB), not two.
    let tmpfs = Tmpfs::mount(&dir, "256k");
    let (_child, server, expected) = match &tmpfs {
        // --min-free-disk 0: the disk really fills (integration/observability.rs tests the
        // clean stop before it does).
        Some(_) => (
            None,
            TestServer::with(|c| {
                c.record_dir = dir.clone();
                c.min_free_disk = 0;
            })
            .await,
            "No space left on device",
        ),
        None => {
            // Not root: a child server whose files may not grow past 256 KiB.
            std::fs::create_dir_all(&dir).unwrap();
            let child = Server::spawn(&dir, |command| {
                command.args(["--min-free-disk", "0"]);
                use std::os::unix::process::CommandExt;
                unsafe {
                    command.pre_exec(|| {
                        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                        let limit = libc::rlimit {
                            rlim_cur: 256 << 10,
                            rlim_max: 256 << 10,
                        };
                        if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            });
            let server = TestServer::at(child.addr);
            (Some(child), server, "File too large")
        }
    };
    let mut viewer = Viewer::connect(&server, "full").await;
    let mut publisher = Publisher::connect(&server, "full", "session=s").await;
    publisher.start(MIME).await;
    let pieces = chrome_pieces();
    for g in 1..=3 {
        publisher.publish_generation(g, &pieces).await;
        viewer.pump_until_holds(g, CHROME).await;
    }
    let list = until_recordings(&server, "the recording to fail", |l| {
        l.len() == 1 && l[0]["state"] == "failed"
    })
    .await;
    let error = list[0]["error"].as_str().unwrap();
    assert!(error.contains(expected), "{error}");
    let (_, info) = server.get_json("/api/streams/full").await;
    assert_eq!(info["live"], true, "the stream goes on: {info}");
    // What did fit is still a playable file.
    let path = dir.join(list[0]["file"].as_str().unwrap());
    let p = probe(&path);
    assert!(p.errors.is_empty(), "{}", p.errors);
    assert!(p.duration.unwrap_or(0.0) > 0.0, "{p:?}");
    publisher.stop().await;
    viewer.pump_until("the end", |v| v.saw_control("end")).await;
    drop(server);
    drop(tmpfs);
    done(&dir);
}

#[tokio::test]
async fn http_ingest_publishes_a_stream_that_a_websocket_viewer_watches_exactly() {
    let server = TestServer::with(|c| {
        c.publish_key = Some("k".into());
        c.max_frame = 1 << 20;
    })
    .await;
    let pieces = chrome_pieces();
    let mut viewer = Viewer::connect(&server, "web").await;
    let q = "session=h&key=k&name_prefix=web";

    // Refusals, each with a JSON reason.
    let (status, body) = server
        .post_json(
            "/api/streams/web/blob?session=h&key=nope",
            frame(7, 0, &pieces[0]).to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("key"));
    let (status, body) = server
        .post_json(
            "/api/streams/web/blob?key=k",
            frame(7, 0, &pieces[0]).to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(&format!("/api/streams/web/blob?{q}"), vec![1, 2, 3], &[])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("16-byte"),
        "{body}"
    );
    let (status, body) = server
        .post_json(
            &format!("/api/streams/web/blob?{q}"),
            frame(7, 5, b"x").to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, 400, "a blob not at offset 0: {body}");
    let (status, body) = server
        .post_json(
            &format!("/api/streams/web/blob?{q}"),
            vec![0; (1 << 20) + 17],
            &[],
        )
        .await;
    assert_eq!(status, 413, "{body}");

    // Generation 7: the blob with its header in the body and the mime as Content-Type;
    // then chunks, every other one as X-Generation / X-Offset headers and a raw body.
    let (status, body) = server
        .post_json(
            &format!("/api/streams/web/blob?{q}"),
            frame(7, 0, &pieces[0]).to_vec(),
            &[("content-type", MIME.to_owned())],
        )
        .await;
    assert_eq!(
        (status, body["accepted"].as_str()),
        (200, Some("new_generation")),
        "{body}"
    );
    let mut offset = pieces[0].len() as u64;
    for (i, piece) in pieces[1..].iter().enumerate() {
        let (status, body) = if i % 2 == 0 {
            server
                .post_json(
                    &format!("/api/streams/web/chunk?{q}"),
                    frame(7, offset, piece).to_vec(),
                    &[],
                )
                .await
        } else {
            server
                .post_json(
                    &format!("/api/streams/web/chunk?{q}"),
                    piece.clone(),
                    &[
                        ("x-generation", "7".into()),
                        ("x-offset", offset.to_string()),
                    ],
                )
                .await
        };
        assert_eq!(
            (status, body["accepted"].as_str()),
            (200, Some("appended")),
            "{body}"
        );
        offset += piece.len() as u64;
        if i == 3 {
            // Another session, and a gap, are refused without harm.
            let (status, body) = server
                .post_json(
                    "/api/streams/web/blob?session=other&key=k",
                    frame(8, 0, b"x").to_vec(),
                    &[],
                )
                .await;
            assert_eq!(status, 409, "{body}");
            let (status, body) = server
                .post_json(
                    &format!("/api/streams/web/chunk?{q}"),
                    frame(7, offset + 100, b"late").to_vec(),
                    &[],
                )
                .await;
            assert_eq!(status, 422, "{body}");
            assert!(body["error"].as_str().unwrap().contains("gap"), "{body}");
        }
    }
    viewer.pump_until_holds(7, CHROME).await;
    let (_, info) = server.get_json("/api/streams/web").await;
    assert_eq!(info["mime"], MIME);

    // A second generation, all in header-in-body frames.
    let mut offset = 0;
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { "blob" } else { "chunk" };
        let (status, body) = server
            .post_json(
                &format!("/api/streams/web/{kind}?{q}"),
                frame(8, offset, piece).to_vec(),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        offset += piece.len() as u64;
    }
    viewer.pump_until_holds(8, CHROME).await;

    let (status, body) = server
        .post_json("/api/streams/web/stop?session=other&key=k", Vec::new(), &[])
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = server
        .post_json(&format!("/api/streams/web/stop?{q}"), Vec::new(), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    viewer.pump_until("the end", |v| v.saw_control("end")).await;

    let list = until_recordings(&server, "the HTTP session's recording", |l| {
        l.len() == 1 && l[0]["state"] == "finished"
    })
    .await;
    assert_eq!(list[0]["generations"], 2);
    assert_eq!(list[0]["name_prefix"], "web");
    assert!((list[0]["duration"].as_f64().unwrap() - 2.0 * fixture_span()).abs() < 0.05);
}

#[tokio::test]
async fn an_idle_http_publisher_lets_go_of_its_stream() {
    let server = TestServer::with(|c| c.ingest_timeout_secs = 1).await;
    let blob = frame(1, 0, &chrome_pieces()[0]).to_vec();
    let (status, _) = server
        .post_json("/api/streams/idle/blob?session=a", blob.clone(), &[])
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post_json(
            "/api/streams/idle/blob?session=b",
            frame(2, 0, b"x").to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, 409, "held by session a");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, info) = server.get_json("/api/streams/idle").await;
    assert_eq!(status, 404, "the stream ended with its publisher: {info}");
    let (status, body) = server
        .post_json("/api/streams/idle/blob?session=b", blob, &[])
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn deleting_a_recording_needs_the_key_and_a_finished_recording() {
    let server = TestServer::with(|c| c.publish_key = Some("k".into())).await;
    let client = reqwest::Client::new();
    let delete = |id: &str, query: &str| {
        client
            .delete(server.http_url(&format!("/api/recordings/{id}{query}")))
            .send()
    };
    let mut publisher = Publisher::connect(&server, "d", "session=s&key=k").await;
    publisher.start(MIME).await;
    publish_generations(&server, &mut publisher, "d", &[1]).await;
    let list = until_recordings(&server, "a recording in progress", |l| l.len() == 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["state"], "recording");
    let response = delete(&id, "?key=k").await.unwrap();
    assert_eq!(response.status(), 409, "still recording");
    publisher.stop().await;
    until_recordings(&server, "the recording to finish", |l| {
        l[0]["state"] == "finished"
    })
    .await;

    let response = delete(&id, "").await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("key"), "{body}");
    assert_eq!(delete(&id, "?key=nope").await.unwrap().status(), 403);
    let file = server.http_url(&format!("/recordings/{id}.webm"));
    assert_eq!(client.get(&file).send().await.unwrap().status(), 200);
    assert_eq!(delete(&id, "?key=k").await.unwrap().status(), 200);
    assert!(recordings(&server).await.is_empty());
    assert_eq!(client.get(&file).send().await.unwrap().status(), 404);
    assert_eq!(delete(&id, "?key=k").await.unwrap().status(), 404);

    // Without a publish key, anyone who can reach the server may delete.
    let dir = scratch_dir("delete");
    let open = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let rec = record(&open, "o", "session=s", &[1]).await;
    let response = client
        .delete(open.http_url(&format!("/api/recordings/{}", rec["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "file and sidecar are gone: {left:?}");
    drop(open);
    done(&dir);
}

#[tokio::test]
async fn a_publisher_that_changes_its_video_starts_a_new_file_and_says_why() {
    let dir = scratch_dir("split");
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let mut publisher = Publisher::connect(&server, "cut", "session=s").await;
    publisher.start(MIME).await;
    publish_generations(&server, &mut publisher, "cut", &[1]).await;
    // The ffmpeg clip: 160x120 where the Chrome recording is 192x144.
    publisher.publish_generation(2, &cut(CLIP, 6, 2)).await;
    server
        .until_api("cut", |s| {
            s["generation"] == 2 && s["buffered_bytes"] == CLIP.len()
        })
        .await;
    publisher.stop().await;
    let list = until_recordings(&server, "two finished files", |l| {
        l.len() == 2 && l.iter().all(|r| r["state"] == "finished")
    })
    .await;
    let second = list
        .iter()
        .find(|r| !r["split_reason"].is_null())
        .expect("a split");
    let first = list.iter().find(|r| r["split_reason"].is_null()).unwrap();
    assert_eq!(second["continues"], first["id"]);
    let why = second["split_reason"].as_str().unwrap();
    assert!(why.contains("192x144") && why.contains("160x120"), "{why}");
    for rec in [first, second] {
        let p = probe(&dir.join(rec["file"].as_str().unwrap()));
        assert!(
            p.errors.is_empty() && p.duration.unwrap() > 3.0,
            "{rec:#} {p:?}"
        );
    }
    drop(server);
    done(&dir);
}

#[tokio::test]
async fn a_publisher_back_after_a_drop_gets_a_new_file_that_continues_the_old_one() {
    let dir = scratch_dir("reconnect");
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let query = "session=s&name_prefix=show";
    let mut publisher = Publisher::connect(&server, "blip", query).await;
    publisher.start(MIME).await;
    publish_generations(&server, &mut publisher, "blip", &[1]).await;
    // The network goes: both sockets close without a stop, and the session ends.
    drop(publisher);
    let list = until_recordings(&server, "the dropped session's file", |l| {
        l.len() == 1 && l[0]["state"] == "finished"
    })
    .await;
    let first = list[0]["id"].clone();
    assert!(list[0]["continues"].is_null(), "{list:#?}");

    // The recorder page comes back as it does: same session, a new generation.
    let mut publisher = Publisher::connect(&server, "blip", query).await;
    publisher.start(MIME).await;
    publish_generations(&server, &mut publisher, "blip", &[2]).await;
    publisher.stop().await;
    let list = until_recordings(&server, "the second file", |l| {
        l.len() == 2 && l.iter().all(|r| r["state"] == "finished")
    })
    .await;
    let second = list.iter().find(|r| r["id"] != first).unwrap();
    assert_eq!(second["continues"], first, "{list:#?}");
    let why = second["split_reason"].as_str().unwrap();
    assert!(why.contains("reconnected"), "{why}");

    // Another name prefix is another broadcast, not a continuation.
    drop(publisher);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.get_json("/api/streams/blip").await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the stream ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = record(&server, "blip", "session=t&name_prefix=other", &[3]).await;
    assert!(other["continues"].is_null(), "{other:#}");
    drop(server);
    done(&dir);
}

/// An unknown-size Cluster with an 8-byte Timecode, holding one small keyframe.
fn cluster_at(timecode: u64) -> Vec<u8> {
    let mut cluster = vec![
        0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    cluster.extend([0xE7, 0x88]);
    cluster.extend(timecode.to_be_bytes());
    // SimpleBlock: track 1, relative time 0, keyframe, 8 bytes of payload.
    cluster.extend([0xA3, 0x8C, 0x81, 0x00, 0x00, 0x80]);
    cluster.extend([0x5A; 8]);
    cluster
}

#[tokio::test]
async fn a_cluster_timecode_past_the_timeline_fails_the_recording_not_the_stream() {
    let dir = scratch_dir("timeline");
    let server = TestServer::with(|c| {
        c.publish_key = Some("k".into());
        c.record_dir = dir.clone();
    })
    .await;
    let mut viewer = Viewer::connect(&server, "tc").await;
    let mut publisher = Publisher::connect(&server, "tc", "session=s&key=k").await;
    publisher.start(MIME).await;
    let pieces = chrome_pieces();
    publisher.publish_generation(1, &pieces).await;
    // 2^63 ticks: the splicer once overflowed on it and panicked in the blocking pool,
    // leaving the recording `recording` forever.
    let hostile = cluster_at(1 << 63);
    let after = cluster_at(7000);
    publisher.send_chunk(&hostile).await;
    publisher.send_chunk(&after).await;
    viewer
        .pump_until_holds(1, &[CHROME, &hostile, &after].concat())
        .await;
    let list = until_recordings(&server, "the recording to fail", |l| {
        l.len() == 1 && l[0]["state"] == "failed"
    })
    .await;
    let error = list[0]["error"].as_str().unwrap();
    assert!(
        error.contains("Timecode 9223372036854775808") && error.contains("live stream goes on"),
        "{error}"
    );
    // What came before it is a playable file.
    let p = probe(&dir.join(list[0]["file"].as_str().unwrap()));
    assert!(p.duration.unwrap_or(0.0) > 5.0, "{p:?}");

    // The live stream goes on, to the next generation and to its stop.
    publisher.publish_generation(2, &pieces).await;
    viewer.pump_until_holds(2, CHROME).await;
    publisher.stop().await;
    viewer.pump_until("the end", |v| v.saw_control("end")).await;
    assert_eq!(
        recordings(&server).await.len(),
        1,
        "no other file this session"
    );

    // And the failed recording can be deleted.
    let id = list[0]["id"].as_str().unwrap();
    let response = reqwest::Client::new()
        .delete(server.http_url(&format!("/api/recordings/{id}?key=k")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(recordings(&server).await.is_empty());
    drop(server);
    done(&dir);
}

/// A fragmented MP4 as ffmpeg writes it with `-movflags
/// frag_keyframe+empty_moov+default_base_moof` (what Safari's and Chrome's
/// MediaRecorder write is shaped alike): `secs` seconds of H.264 at `size` and AAC,
/// each file its own init segment, as every recorder restart sends. Returns its bytes
/// and the duration ffprobe gives it.
fn ffmpeg_mp4(dir: &Path, name: &str, secs: f64, size: &str) -> (Vec<u8>, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=15:duration={secs}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={secs}"
        ))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "15"])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k", "-threads", "1",
        ])
        .args(["-fflags", "+bitexact", "-map_metadata", "-1"])
        .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg; .ci/run installs it)");
    assert!(status.success(), "ffmpeg made {name}");
    let duration = probe(&path).duration.expect("ffprobe reads it");
    (std::fs::read(&path).unwrap(), duration)
}

/// What `ffmpeg_mp4` makes, as the catalog says it (the H.264 level is x264's choice).
fn assert_mp4_tracks(rec: &Value, size: &str) {
    let tracks = rec["tracks"].as_str().unwrap_or_default();
    let (video, audio) = tracks.split_once(", ").unwrap_or_default();
    assert!(
        video.starts_with("avc1.") && video.ends_with(size) && audio.starts_with("mp4a 48000 Hz"),
        "{rec:#}"
    );
}

const MP4_MIME: &str = "video/mp4;codecs=avc1.42c00c,mp4a.40.2";

/// Publishes `generations` in one MP4 session on `stream`, each wholly received before
/// the next starts, and stops.
async fn publish_mp4(server: &TestServer, stream: &str, generations: &[&[u8]]) -> Publisher {
    let mut publisher = Publisher::connect(server, stream, "session=s").await;
    publisher.start(MP4_MIME).await;
    for (g, media) in generations.iter().enumerate() {
        let g = g as u64 + 1;
        publisher.publish_generation(g, &cut(media, 8, g * 7)).await;
        server
            .until_api(stream, |s| {
                s["generation"] == g && s["buffered_bytes"] == media.len()
            })
            .await;
    }
    publisher
}

#[tokio::test]
async fn a_session_of_three_mp4_generations_is_one_seekable_mp4() {
    let dir = scratch_dir("mp4");
    let media = dir.join("media");
    let generations = [
        ffmpeg_mp4(&media, "one.mp4", 2.0, "160x120"),
        ffmpeg_mp4(&media, "two.mp4", 3.0, "160x120"),
        ffmpeg_mp4(&media, "three.mp4", 1.6, "160x120"),
    ];
    let expected: f64 = generations.iter().map(|g| g.1).sum();
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let bytes: Vec<&[u8]> = generations.iter().map(|g| &g.0[..]).collect();
    let mut publisher = publish_mp4(&server, "safari", &bytes).await;
    // Joined live all along: a viewer now gets the third generation.
    let mut viewer = Viewer::connect(&server, "safari").await;
    viewer.pump_until_holds(3, bytes[2]).await;
    publisher.stop().await;
    let list = until_recordings(&server, "the MP4 recording to finish", |l| {
        l.len() == 1 && l[0]["state"] != "recording" && !l[0]["duration"].is_null()
    })
    .await;
    let rec = &list[0];
    assert_eq!(rec["state"], "finished", "{rec:#}");
    assert!(rec["error"].is_null(), "{rec:#}");
    assert_eq!(rec["generations"], 3);
    assert_eq!(rec["mime"], MP4_MIME);
    assert_mp4_tracks(rec, "160x120");
    let file = rec["file"].as_str().unwrap();
    assert!(
        file.starts_with("noname-safari-") && file.ends_with("Z.mp4"),
        "{file}"
    );
    assert_eq!(rec["url"], format!("/recordings/{file}"));

    let path = dir.join(file);
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(rec["bytes"], on_disk.len());
    assert_eq!(&on_disk[4..8], b"ftyp");
    assert_eq!(&on_disk[on_disk.len() - 12..on_disk.len() - 8], b"mfro");
    assert!(contains(&on_disk, b"mehd"), "the moov says the duration");
    let p = probe(&path);
    let duration = p.duration.expect("a duration");
    eprintln!(
        "ffprobe: duration {duration:.3} s (generations sum to {expected:.3}), {} packets ({} keyframes), errors: {:?}",
        p.packets.len(),
        p.packets.iter().filter(|p| p.keyframe).count(),
        p.errors
    );
    assert!(p.errors.is_empty(), "ffprobe complains: {}", p.errors);
    assert!(
        (duration - expected).abs() < 0.2,
        "duration {duration}, expected {expected}"
    );
    assert!(
        (rec["duration"].as_f64().unwrap() - duration).abs() < 0.1,
        "{rec:#}"
    );
    let packets: usize = generations
        .iter()
        .map(|g| probe_bytes(&g.0).packets.len())
        .sum();
    assert_eq!(p.packets.len(), packets, "every packet of every generation");
    assert_monotonic(&p);
    let last_video = p
        .packets
        .iter()
        .filter(|p| p.stream == 0)
        .map(|p| p.pts)
        .fold(0.0, f64::max);
    assert!(
        last_video > generations[0].1 + generations[1].1,
        "the third generation follows the second: {last_video}"
    );
    assert_eq!(decode_errors(&path, None), "", "decodes cleanly");
    assert_eq!(decode_errors(&path, Some(4.0)), "", "seeks and decodes");

    // Served as MP4, with byte ranges.
    let response = reqwest::Client::new()
        .get(server.http_url(rec["url"].as_str().unwrap()))
        .header("range", "bytes=0-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(&response.bytes().await.unwrap()[4..8], b"ftyp");
    let webm_name = file.replace(".mp4", ".webm");
    let (status, _) = server.get_text(&format!("/recordings/{webm_name}")).await;
    assert_eq!(status, 404, "only the recording's own name");
    drop(server);
    done(&dir);
}

#[tokio::test]
async fn a_new_picture_size_mid_mp4_session_starts_a_new_file_and_says_why() {
    let dir = scratch_dir("mp4split");
    let media = dir.join("media");
    let small = ffmpeg_mp4(&media, "small.mp4", 1.0, "160x120");
    let large = ffmpeg_mp4(&media, "large.mp4", 1.0, "176x144");
    let server = TestServer::with(|c| c.record_dir = dir.clone()).await;
    let mut publisher = publish_mp4(&server, "resize", &[&small.0, &large.0]).await;
    publisher.stop().await;
    let list = until_recordings(&server, "two finished files", |l| {
        l.len() == 2 && l.iter().all(|r| r["state"] == "finished")
    })
    .await;
    let second = list
        .iter()
        .find(|r| !r["split_reason"].is_null())
        .expect("a split");
    let first = list.iter().find(|r| r["split_reason"].is_null()).unwrap();
    assert_eq!(second["continues"], first["id"]);
    let why = second["split_reason"].as_str().unwrap();
    assert!(why.contains("160x120") && why.contains("176x144"), "{why}");
    for (rec, size) in [(first, "160x120"), (second, "176x144")] {
        assert!(rec["file"].as_str().unwrap().ends_with(".mp4"), "{rec:#}");
        assert!(rec["tracks"].as_str().unwrap().contains(size), "{rec:#}");
        let path = dir.join(rec["file"].as_str().unwrap());
        let p = probe(&path);
        assert!(p.errors.is_empty(), "{rec:#} {p:?}");
        assert!((p.duration.unwrap() - 1.0).abs() < 0.2, "{rec:#} {p:?}");
        assert_eq!(decode_errors(&path, None), "");
    }
    drop(server);
    done(&dir);
}

#[tokio::test]
async fn kill_9_mid_mp4_session_leaves_whole_fragments_that_the_next_start_finalizes() {
    let dir = scratch_dir("mp4kill");
    let media = dir.join("media");
    let (whole, whole_secs) = ffmpeg_mp4(&media, "one.mp4", 3.0, "160x120");
    let mut first = Server::spawn(&dir, |_| {});
    let server = TestServer::at(first.addr);
    let mut publisher = publish_mp4(&server, "live", &[&whole]).await;
    // Part of the second generation is out when the server dies: the last fragment
    // is cut short.
    let half = whole.len() * 2 / 3;
    publisher
        .publish_generation(2, &cut(&whole[..half], 4, 5))
        .await;
    server
        .until_api("live", |s| {
            s["generation"] == 2 && s["buffered_bytes"] == half
        })
        .await;
    until_recordings(&server, "the second generation on disk", |l| {
        l.len() == 1 && l[0]["bytes"].as_u64().unwrap() > (whole.len() + half / 2) as u64
    })
    .await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    drop(publisher);

    let mp4s: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    assert_eq!(mp4s.len(), 1, "{mp4s:?}");
    let path = mp4s[0].clone();
    let left_bytes = std::fs::read(&path).unwrap();
    // Whole boxes to the last byte.
    let mut at = 0;
    while at < left_bytes.len() {
        let size = u32::from_be_bytes(left_bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && at + size <= left_bytes.len(),
            "a box cut short at {at}"
        );
        at += size;
    }
    let left = probe(&path);
    assert!(
        left.errors.is_empty(),
        "as the crash left it: {}",
        left.errors
    );
    assert!(
        left.packets.len() > probe_bytes(&whole).packets.len(),
        "more than one generation"
    );
    assert_monotonic(&left);
    assert_eq!(decode_errors(&path, None), "", "plays as the crash left it");
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["state"], "recording");

    let second = Server::spawn(&dir, |_| {});
    let server = TestServer::at(second.addr);
    let list = until_recordings(&server, "the interrupted recording finalized", |l| {
        l.len() == 1 && l[0]["state"] == "interrupted" && !l[0]["ended"].is_null()
    })
    .await;
    let rec = &list[0];
    assert!(rec["error"].is_null(), "{rec:#}");
    assert_eq!(rec["generations"], 2, "{rec:#}");
    assert_mp4_tracks(rec, "160x120");
    let finalized = std::fs::read(&path).unwrap();
    assert_eq!(
        &finalized[finalized.len() - 12..finalized.len() - 8],
        b"mfro"
    );
    let p = probe(&path);
    assert!(p.errors.is_empty(), "finalized: {}", p.errors);
    let duration = p.duration.expect("a duration after finalizing");
    assert!(duration > whole_secs, "{duration}");
    assert!(
        (duration - rec["duration"].as_f64().unwrap()).abs() < 0.1,
        "{rec:#}"
    );
    assert_eq!(
        p.packets.len(),
        left.packets.len(),
        "nothing lost in finalizing"
    );
    assert_eq!(decode_errors(&path, Some(duration / 2.0)), "");
    drop(second);
    done(&dir);
}
