//! The stream directory: one JetStream KV entry per published stream, written by the
//! node that holds its publisher and refreshed on a heartbeat, so that an entry whose
//! node died expires (the bucket's `max_age`). It says where a replica starts reading
//! the log, and it is what makes one publisher per stream cluster-wide: a node writes
//! the entry only with a compare-and-set on the revision it read.

use async_nats::jetstream::kv::{self, Operation};
use serde::{Deserialize, Serialize};

/// One stream's entry. Everything but `node` and `session` is informational, for
/// `/api/streams` on other nodes and for a replica's first read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub live: bool,
    pub mime: Option<String>,
    /// What the WebM says (codecs, size), as `/api/streams` shows it.
    pub media: Option<serde_json::Value>,
    pub generation: Option<u64>,
    /// The log sequence where the current generation's first message lies.
    pub generation_seq: Option<u64>,
    /// No message of this session lies before this log sequence (the log's end when
    /// the session claimed the stream): where a replica starts before the first
    /// generation is known.
    pub session_seq: Option<u64>,
    /// The newest cluster that opens with a video keyframe: its log sequence and offset.
    pub keyframe: Option<Keyframe>,
    /// The node holding the publisher, and its publish session.
    pub node: String,
    pub session: String,
    /// Unix seconds when the session began publishing here.
    pub since: u64,
    /// The id of the file `node` is recording the session into (in its own record
    /// folder): a node the session moves to says its new file continues this one.
    #[serde(default)]
    pub recording: Option<String>,
    pub ingest_bits_per_second: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyframe {
    pub seq: u64,
    pub offset: u64,
}

impl Entry {
    pub fn fresh(name: &str, node: &str, session: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            live: false,
            mime: None,
            media: None,
            generation: None,
            generation_seq: None,
            session_seq: None,
            keyframe: None,
            node: node.to_owned(),
            session: session.to_owned(),
            since: unix_now(),
            ingest_bits_per_second: 0,
            recording: None,
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("stream is published by session {session} on node {node}")]
    Busy { node: String, session: String },
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats(err: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Nats(err.to_string())
}

/// The entry of `key` and its revision, if there is a live one.
pub async fn read(store: &kv::Store, key: &str) -> Result<Option<(Entry, u64)>, DirectoryError> {
    let Some(entry) = store.entry(key).await.map_err(nats)? else {
        return Ok(None);
    };
    if entry.operation != Operation::Put {
        return Ok(None);
    }
    match serde_json::from_slice::<Entry>(&entry.value) {
        Ok(value) => Ok(Some((value, entry.revision))),
        // Not ours to read (an older format): treat as free, and overwrite it.
        Err(_) => Ok(None),
    }
}

/// Writes `entry` for `key` if this node may: nobody holds it, or it is held by the
/// same session (a publisher that moved here) or by this node. Compare-and-set on the
/// revision read, so of two nodes racing for the same stream exactly one wins. Returns
/// the new revision, and the entry it replaced (if there was a live one).
pub async fn claim(
    store: &kv::Store,
    key: &str,
    entry: &Entry,
) -> Result<(u64, Option<Entry>), DirectoryError> {
    let value: bytes::Bytes = serde_json::to_vec(entry).expect("entries serialize").into();
    for _ in 0..3 {
        let (written, replaced) = match read(store, key).await? {
            Some((held, _)) if held.session != entry.session && held.node != entry.node => {
                return Err(DirectoryError::Busy {
                    node: held.node,
                    session: held.session,
                })
            }
            Some((held, revision)) => (
                store.update(key, value.clone(), revision).await.ok(),
                Some(held),
            ),
            None => match store.create(key, value.clone()).await {
                Ok(revision) => (Some(revision), None),
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => (None, None),
                Err(err) => return Err(nats(err)),
            },
        };
        if let Some(revision) = written {
            return Ok((revision, replaced));
        }
        // Someone wrote in between: read again and decide again.
    }
    Err(DirectoryError::Nats(format!(
        "the entry of {key} kept changing under us"
    )))
}

/// Refreshes our entry: compare-and-set on our last revision, falling back to a claim
/// when that fails (the entry expired during an outage, say).
pub async fn refresh(
    store: &kv::Store,
    key: &str,
    entry: &Entry,
    revision: Option<u64>,
) -> Result<u64, DirectoryError> {
    if let Some(revision) = revision {
        let value = serde_json::to_vec(entry).expect("entries serialize").into();
        if let Ok(revision) = store.update(key, value, revision).await {
            return Ok(revision);
        }
    }
    claim(store, key, entry)
        .await
        .map(|(revision, _replaced)| revision)
}

/// Removes our entry (the session ended here), unless someone else's replaced it.
pub async fn release(store: &kv::Store, key: &str, revision: u64) {
    if let Err(err) = store.delete_expect_revision(key, Some(revision)).await {
        log::debug!("cluster: directory entry {key} not removed: {err}");
    }
}

/// Every live entry.
pub async fn list(store: &kv::Store) -> Result<Vec<Entry>, DirectoryError> {
    use futures_util::StreamExt;
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(nats)?
        .filter_map(|key| async move { key.ok() })
        .collect()
        .await;
    let mut entries = Vec::new();
    for key in keys {
        if let Some((entry, _)) = read(store, &key).await? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_as_json() {
        let mut entry = Entry::fresh("cam", "node-1", "s1");
        entry.generation = Some(9);
        entry.recording = Some("show-cam-20251122T031500Z".into());
        entry.generation_seq = Some(120);
        entry.keyframe = Some(Keyframe {
            seq: 130,
            offset: 4096,
        });
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), entry);
    }

    #[test]
    fn an_entry_from_a_node_that_records_nothing_reads() {
        let mut entry = serde_json::to_value(Entry::fresh("cam", "node-1", "s1")).unwrap();
        entry.as_object_mut().unwrap().remove("recording");
        let read: Entry = serde_json::from_value(entry).unwrap();
        assert_eq!(read.recording, None);
    }
}
