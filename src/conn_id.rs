//! A process-wide connection id, given to each publisher socket, viewer socket and HTTP
//! ingest session when it arrives and written in every log line about it, so that one
//! connection's story can be picked out of a busy log (`grep 'c42 '`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ConnId(u64);

impl ConnId {
    pub fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shown_with_a_prefix() {
        let (a, b) = (ConnId::next(), ConnId::next());
        assert_ne!(a, b);
        assert_eq!(format!("{a}"), format!("c{}", a.get()));
    }
}
