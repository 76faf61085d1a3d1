//! The loopback ceiling, measured in the same run as the relay: Debian's iperf3 sending
//! over 127.0.0.1 with 1 and with 100 parallel streams. What the kernel alone costs per
//! gigabyte moved is the floor a relay's core-seconds per gigabyte are compared with.

use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Ceiling {
    pub streams: usize,
    pub gbit_s: f64,
    /// iperf3's own CPU (user + system) per GB it sent, in core-seconds.
    pub sender_core_s_per_gb: f64,
    pub receiver_core_s_per_gb: f64,
}

/// Runs `iperf3 -c` against a one-shot `iperf3 -s` on a free loopback port.
pub fn measure(streams: usize, seconds: u64) -> Result<Ceiling, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port()
        .to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 is not installed (apt-get install iperf3): {e}"))?;
    let mut output = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let run = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port, "-J"])
            .args(["-t", &seconds.to_string(), "-P", &streams.to_string()])
            .output()
            .map_err(|e| format!("iperf3 -c: {e}"))?;
        if run.status.success() {
            output = Some(run.stdout);
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let output = output.ok_or("iperf3 -c never connected")?;
    let json: serde_json::Value =
        serde_json::from_slice(&output).map_err(|e| format!("iperf3 -J output: {e}"))?;
    let end = &json["end"];
    let bytes = end["sum_sent"]["bytes"]
        .as_f64()
        .ok_or("no end.sum_sent.bytes")?;
    let secs = end["sum_sent"]["seconds"]
        .as_f64()
        .ok_or("no end.sum_sent.seconds")?;
    let cpu = &end["cpu_utilization_percent"];
    let core_s_per_gb =
        |pct: &serde_json::Value| pct.as_f64().unwrap_or(f64::NAN) / 100.0 * secs / (bytes / 1e9);
    Ok(Ceiling {
        streams,
        gbit_s: bytes * 8.0 / secs / 1e9,
        sender_core_s_per_gb: core_s_per_gb(&cpu["host_total"]),
        receiver_core_s_per_gb: core_s_per_gb(&cpu["remote_total"]),
    })
}
