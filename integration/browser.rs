//! The recorder and viewer pages in real Chromium: runs `node integration/browser/run.mjs`
//! against this build's server binary and fails if any browser test fails. The harness's
//! output is streamed as it runs.
//!
//! Needs node (20+), npm and Chromium (`apt-get install chromium`, or CHROMIUM=/path).
//! `npm ci` runs in integration/browser first when its node_modules is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool_works(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "Chromium not found at {}: the browser tests need it. Install it with \
         `apt-get install chromium` (or point CHROMIUM at a Chromium/Chrome binary).",
        path.display()
    );
    path
}

fn ensure_node_modules(dir: &Path) {
    if dir.join("node_modules").join("playwright-core").exists() {
        return;
    }
    assert!(
        tool_works("npm"),
        "npm not found: the browser tests need node 20+ and npm to install playwright-core"
    );
    eprintln!("browser tests: running `npm ci` in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("run npm ci");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[test]
fn recorder_and_viewer_pages_work_in_chromium() {
    let root = repo_root();
    let chromium = chromium();
    assert!(
        tool_works("node"),
        "node not found: the browser tests need node 20+ (https://nodejs.org or apt-get install nodejs)"
    );
    ensure_node_modules(&root.join("integration").join("browser"));

    let artifacts = root.join("integration").join("browser").join("artifacts");
    let failures = artifacts.join("failures.txt");
    let _ = std::fs::remove_file(&failures);
    // Inherited stdout/stderr: the harness's progress shows up live, test by test.
    let status = Command::new("node")
        .arg("integration/browser/run.mjs")
        .current_dir(&root)
        .env("BLOBCAST_BIN", env!("CARGO_BIN_EXE_blobcast"))
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("run node integration/browser/run.mjs");
    // The failures again, in the panic: a long log's tail is often all one gets to see.
    let failed = std::fs::read_to_string(&failures).unwrap_or_default();
    assert!(
        status.success(),
        "browser tests failed ({status}):\n{failed}see the output above. Screenshots are in {}",
        artifacts.display()
    );
}
