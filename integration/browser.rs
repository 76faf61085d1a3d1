//! The recorder and viewer pages in real Chromium and Firefox ESR: runs
//! `node integration/browser/run.mjs` against this build's server binary and fails if
//! any browser test fails. The harness's output is streamed as it runs.
//!
//! Needs node (20+), npm, Chromium (`apt-get install chromium`, or CHROMIUM=/path) and
//! Firefox ESR (`apt-get install firefox-esr`, or FIREFOX=/path). `npm ci` runs in
//! integration/browser first when its node_modules is missing. Without one of them the
//! suite says in one line what to install and is skipped, except under CI (`CI` set),
//! where a missing tool is a failure.

use std::io::Write;
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

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// A tool the suite needs is missing: one line on what to install, then a skip, or a
/// failure under CI.
fn missing(what: &str) {
    assert!(
        !under_ci(),
        "browser tests: {what} (under CI a missing tool is a failure)"
    );
    // Straight to the process's stderr: the test harness captures eprintln!.
    let _ = writeln!(std::io::stderr(), "SKIPPED browser tests: {what}");
}

/// The browser at `$env` or `default`, if it is there.
fn browser(env: &str, default: &str) -> Result<PathBuf, PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.exists() {
        Ok(path)
    } else {
        Err(path)
    }
}

fn ensure_node_modules(dir: &Path) {
    let modules = dir.join("node_modules");
    if modules.join("playwright-core").exists() && modules.join("puppeteer-core").exists() {
        return;
    }
    assert!(
        tool_works("npm"),
        "npm not found: the browser tests need node 20+ and npm to install playwright-core"
    );
    eprintln!("browser tests: running `npm ci` in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        // puppeteer-core downloads nothing by itself; this keeps it so.
        .env("PUPPETEER_SKIP_DOWNLOAD", "1")
        .current_dir(dir)
        .status()
        .expect("run npm ci");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[test]
fn recorder_and_viewer_pages_work_in_chromium_and_firefox() {
    let root = repo_root();
    let chromium = match browser("CHROMIUM", "/usr/bin/chromium") {
        Ok(path) => path,
        Err(path) => {
            return missing(&format!(
                "no Chromium at {}: `apt-get install chromium` (or set CHROMIUM=/path)",
                path.display()
            ))
        }
    };
    let firefox = match browser("FIREFOX", "/usr/bin/firefox-esr") {
        Ok(path) => path,
        Err(path) => {
            return missing(&format!(
                "no Firefox at {}: `apt-get install firefox-esr` (or set FIREFOX=/path)",
                path.display()
            ))
        }
    };
    if !tool_works("node") || !tool_works("npm") {
        return missing("no node/npm: `apt-get install nodejs npm` (node 20+)");
    }
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
        .env("FIREFOX", &firefox)
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
