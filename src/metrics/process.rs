//! The process's own figures, read from /proc on each scrape: CPU seconds, resident
//! memory, open file descriptors and their limit, and the tokio runtime's task counts.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct ProcessMetrics {
    cpu_seconds: Gauge<f64, AtomicU64>,
    resident_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    tokio_workers: Gauge,
    tokio_tasks: Gauge,
    tokio_global_queue: Gauge,
}

impl ProcessMetrics {
    pub fn register(&self, r: &mut Registry) {
        // Named as the official clients name them, so stock dashboards work.
        r.register(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds (a counter, sampled)",
            self.cpu_seconds.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            self.resident_bytes.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            self.open_fds.clone(),
        );
        r.register(
            "process_max_fds",
            "The open file descriptor limit",
            self.max_fds.clone(),
        );
        r.register(
            "blobcast_tokio_workers",
            "Worker threads of the tokio runtime",
            self.tokio_workers.clone(),
        );
        r.register(
            "blobcast_tokio_alive_tasks",
            "Tasks alive in the tokio runtime",
            self.tokio_tasks.clone(),
        );
        r.register(
            "blobcast_tokio_global_queue_depth",
            "Tasks waiting in the runtime's global queue",
            self.tokio_global_queue.clone(),
        );
    }

    pub fn refresh(&self) {
        if let Some(cpu) = cpu_seconds() {
            self.cpu_seconds.set(cpu);
        }
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss as i64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Some(max) = max_fds() {
            self.max_fds.set(max as i64);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let runtime = handle.metrics();
            self.tokio_workers.set(runtime.num_workers() as i64);
            self.tokio_tasks.set(runtime.num_alive_tasks() as i64);
            self.tokio_global_queue
                .set(runtime.global_queue_depth() as i64);
        }
    }
}

/// utime + stime of /proc/self/stat (fields 14 and 15, after the parenthesised name).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_process_figures() {
        assert!(cpu_seconds().is_some());
        assert!(resident_bytes().unwrap() > 0);
        assert!(max_fds().unwrap() > 0);
    }
}
