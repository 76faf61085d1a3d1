//! When a stream's newest frame arrived and its current generation started: one atomic
//! each per stream (not per frame, not per viewer), for the fan-out latency histogram
//! and the generation-age gauge.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process-wide origin the atomics count nanoseconds from; 0 means "never".
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| Instant::now() - Duration::from_nanos(1))
}

fn encode(at: Instant) -> u64 {
    at.duration_since(origin()).as_nanos().max(1) as u64
}

fn decode(nanos: u64) -> Option<Instant> {
    (nanos != 0).then(|| origin() + Duration::from_nanos(nanos))
}

#[derive(Debug, Default)]
pub struct StreamClock {
    last_arrival: AtomicU64,
    generation_started: AtomicU64,
}

impl StreamClock {
    /// A frame was appended now; `new_generation` when it started one.
    pub fn frame_arrived(&self, new_generation: bool) {
        let now = encode(Instant::now());
        self.last_arrival.store(now, Relaxed);
        if new_generation {
            self.generation_started.store(now, Relaxed);
        }
    }

    /// The session ended: no current generation.
    pub fn ended(&self) {
        self.generation_started.store(0, Relaxed);
    }

    pub fn last_arrival(&self) -> Option<Instant> {
        decode(self.last_arrival.load(Relaxed))
    }

    pub fn generation_age(&self) -> Option<Duration> {
        decode(self.generation_started.load(Relaxed)).map(|at| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_arrivals_and_generation_starts() {
        let clock = StreamClock::default();
        assert!(clock.last_arrival().is_none() && clock.generation_age().is_none());
        clock.frame_arrived(true);
        let first = clock.last_arrival().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        clock.frame_arrived(false);
        assert!(clock.last_arrival().unwrap() > first);
        assert!(clock.generation_age().unwrap() >= Duration::from_millis(5));
        clock.ended();
        assert!(clock.generation_age().is_none());
    }
}
