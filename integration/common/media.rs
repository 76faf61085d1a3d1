//! Media checks shared by the tests: ffmpeg decoding a received stream, and where an
//! MP4's fragments start.

use std::process::Command;

/// Whether ffmpeg is installed. Without it, one line says what to install and the
/// decoding checks are skipped; under CI (`CI` set) that is a failure.
pub fn ffmpeg_present() -> bool {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        assert!(!ci, "ffmpeg is not installed: under CI that is a failure");
        eprintln!("SKIPPED ffmpeg decoding check: `apt-get install ffmpeg`");
    }
    found
}

/// Fails the test unless ffmpeg decodes `media` (WebM or MP4) without a single error.
pub fn assert_decodes(media: &[u8], what: &str) {
    if !ffmpeg_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("blobcast-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // No extension: ffmpeg tells WebM from MP4 by the bytes.
    let path = dir.join(what.replace(' ', "-"));
    std::fs::write(&path, media).unwrap();
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs (apt-get install ffmpeg; .ci/run installs it)");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && errors.trim().is_empty(),
        "{what} does not decode cleanly: {errors}"
    );
    let _ = std::fs::remove_file(&path);
}

/// Offsets of the top-level `moof` boxes of an MP4 file.
pub fn moofs(file: &[u8]) -> Vec<usize> {
    let (mut at, mut out) = (0, Vec::new());
    while at + 8 <= file.len() {
        if &file[at + 4..at + 8] == b"moof" {
            out.push(at);
        }
        at += u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}
