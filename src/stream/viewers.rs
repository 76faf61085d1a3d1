//! Each open viewer socket's figures, for `/api/streams/{stream}/stats`: a slot of
//! atomics registered with its stream on connect and removed when dropped. The send
//! loop only adds to its own atomics; the map's lock is taken on connect, disconnect
//! and when the stats are read, never per write.

use crate::conn_id::ConnId;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// Rows `/api/streams/{stream}/stats` lists at most.
pub const MAX_ROWS: usize = 1000;

#[derive(Debug)]
pub struct ViewerStats {
    id: ConnId,
    peer: Option<SocketAddr>,
    /// `chunk`, or the blob socket's join mode: `live`, `start` or `resume`.
    mode: &'static str,
    since: SystemTime,
    bytes_sent: AtomicU64,
    lag_bytes: AtomicU64,
}

impl ViewerStats {
    pub fn sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Relaxed);
    }

    /// Bytes the viewer was owed as its latest write began.
    pub fn lagging(&self, bytes: u64) {
        self.lag_bytes.store(bytes, Relaxed);
    }
}

/// One row of the stats.
#[derive(Debug, Serialize)]
pub struct ViewerRow {
    pub id: ConnId,
    pub address: Option<String>,
    pub mode: &'static str,
    pub lag_bytes: u64,
    pub bytes_sent: u64,
    /// Unix seconds.
    pub connected_since: u64,
}

/// The viewer slots of one stream.
#[derive(Debug, Default)]
pub struct ViewerTable {
    slots: Mutex<BTreeMap<ConnIdKey, Arc<ViewerStats>>>,
}

type ConnIdKey = u64;

impl ViewerTable {
    /// Registers a viewer socket; its row goes when the returned slot is dropped.
    pub fn register(
        self: &Arc<Self>,
        id: ConnId,
        peer: Option<SocketAddr>,
        mode: &'static str,
    ) -> ViewerSlot {
        let stats = Arc::new(ViewerStats {
            id,
            peer,
            mode,
            since: SystemTime::now(),
            bytes_sent: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
        });
        self.slots.lock().insert(id.get(), stats.clone());
        ViewerSlot {
            table: Arc::downgrade(self),
            stats,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `MAX_ROWS` rows, oldest connection first.
    pub fn rows(&self) -> Vec<ViewerRow> {
        let slots: Vec<Arc<ViewerStats>> =
            self.slots.lock().values().take(MAX_ROWS).cloned().collect();
        slots
            .iter()
            .map(|s| ViewerRow {
                id: s.id,
                address: s.peer.map(|p| p.to_string()),
                mode: s.mode,
                lag_bytes: s.lag_bytes.load(Relaxed),
                bytes_sent: s.bytes_sent.load(Relaxed),
                connected_since: s
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            })
            .collect()
    }
}

/// A viewer socket's place in its stream's table.
#[derive(Debug)]
pub struct ViewerSlot {
    table: Weak<ViewerTable>,
    stats: Arc<ViewerStats>,
}

impl std::ops::Deref for ViewerSlot {
    type Target = ViewerStats;

    fn deref(&self) -> &ViewerStats {
        &self.stats
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.slots.lock().remove(&self.stats.id.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_and_go_with_their_slots_and_are_capped() {
        let table = Arc::new(ViewerTable::default());
        let slot = table.register(ConnId::next(), None, "chunk");
        slot.sent(10);
        slot.sent(5);
        slot.lagging(7);
        let rows = table.rows();
        assert_eq!((rows[0].bytes_sent, rows[0].lag_bytes), (15, 7));
        drop(slot);
        assert!(table.is_empty());
        let slots: Vec<_> = (0..MAX_ROWS + 5)
            .map(|_| table.register(ConnId::next(), None, "live"))
            .collect();
        assert_eq!(table.len(), MAX_ROWS + 5);
        assert_eq!(table.rows().len(), MAX_ROWS);
        drop(slots);
        assert!(table.is_empty());
    }
}
