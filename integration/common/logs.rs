//! The server's log lines, captured in-process, for tests that check what it logs (the
//! client address behind a proxy, credentials kept out, a viewer's connection id).

use std::sync::{Mutex, Once};

/// Every `blobcast` log line since the capture began, debug level and up.
pub static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("blobcast")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            LINES.lock().unwrap().push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Every test of a binary that reads the logs calls it first, so the capture is the
/// process's logger.
pub fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("no other logger yet");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// The captured lines that contain `needle`.
pub fn logged(needle: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}
