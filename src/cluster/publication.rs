//! A publisher node's copy of one stream into the log. The stream's tap hands each
//! `start`, kept frame and `stop` to a bounded queue, in the buffer's order; one task
//! per stream appends them to JetStream one by one (each acknowledged before the next,
//! so the log keeps that order), purges generations older than the previous one, and
//! refreshes the stream's directory entry on a heartbeat (and when the file it records
//! the stream into changes, which the entry names).
//!
//! While NATS is away the task retries the same message (the same `Nats-Msg-Id`, so a
//! retry that had in fact been stored is not stored twice) and the queue fills; local
//! viewers never wait for it. A frame that finds the queue full is not appended: a
//! replica then meets a gap and waits for the next generation.

use super::directory::{self, Entry, Keyframe};
use super::wire::{self, Outgoing};
use super::{Claim, Cluster};
use crate::protocol::{FrameHeader, Join, PublisherControl, StreamName};
use crate::stream::buffer::Accepted;
use crate::stream::{Stream, Tap};
use async_nats::jetstream::context::Publish;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames (and controls) waiting for NATS: at 2 Mbit/s in 100 ms chunks, minutes. Their
/// bytes are bounded too, by the cluster's `queue_budget` (twice `--max-buffer`).
const QUEUE: usize = 4096;

enum Item {
    Frame {
        frame: Bytes,
        blob: bool,
        new_generation: bool,
        session: String,
        mime: Option<String>,
    },
    Control {
        control: PublisherControl,
        session: String,
    },
}

/// What the stream's tap holds: the queue's sending end.
struct Feed {
    queue: mpsc::Sender<Item>,
    session: Arc<Mutex<String>>,
    mime: Mutex<Option<String>>,
    cluster: Arc<Cluster>,
    warned: AtomicBool,
    /// Frame bytes in the queue.
    queued: Arc<AtomicU64>,
}

impl Feed {
    fn send(&self, item: Item) {
        let bytes = item.bytes();
        let over = self.queued.load(Ordering::Relaxed) + bytes > self.cluster.queue_budget;
        if over || self.queue.try_send(item).is_err() {
            self.cluster.metrics.log_dropped();
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "cluster: the queue to NATS is full; frames are not reaching other nodes"
                );
            }
        } else {
            self.queued.fetch_add(bytes, Ordering::Relaxed);
            self.warned.store(false, Ordering::Relaxed);
        }
    }
}

impl Item {
    fn bytes(&self) -> u64 {
        match self {
            Item::Frame { frame, .. } => frame.len() as u64,
            Item::Control { .. } => 0,
        }
    }
}

impl Tap for Feed {
    fn started(&self, mime: &str) {
        *self.mime.lock() = Some(mime.to_owned());
        self.send(Item::Control {
            control: PublisherControl::Start {
                mime: mime.to_owned(),
            },
            session: self.session.lock().clone(),
        });
    }

    fn accepted(&self, frame: &Bytes, blob: bool, accepted: Accepted) {
        self.send(Item::Frame {
            frame: frame.clone(),
            blob,
            new_generation: matches!(accepted, Accepted::NewGeneration { .. }),
            session: self.session.lock().clone(),
            mime: self.mime.lock().clone(),
        });
    }

    fn ended(&self) {
        self.send(Item::Control {
            control: PublisherControl::Stop {
                generation: None,
                length: None,
            },
            session: self.session.lock().clone(),
        });
    }
}

/// One published stream on this node.
pub struct Publication {
    pub(super) stream: Arc<Stream>,
    session: Arc<Mutex<String>>,
    /// The directory entry's revision as we last wrote it.
    revision: Mutex<Option<u64>>,
    /// The log's end when the session claimed the stream.
    session_seq: Mutex<Option<u64>>,
    /// Frame bytes queued for the log (shared with the stream's tap).
    queued: Arc<AtomicU64>,
    /// False while another node's session holds the directory entry (a split after an
    /// outage): then nothing is appended, so the log never mixes two sessions.
    owned: AtomicBool,
}

/// Where the log's messages of the current generations lie.
#[derive(Default)]
struct LogState {
    /// The first sequence seen for each recent generation (a chunk held for its blob
    /// can come before the blob).
    first_seq: BTreeMap<u64, u64>,
    current: Option<(u64, u64)>,
    previous_seq: Option<u64>,
    /// The messages of the current generation (and of any held ahead of it):
    /// (generation, offset, end, seq).
    spans: Vec<(u64, u64, u64, u64)>,
}

impl LogState {
    fn record(&mut self, span: (u64, u64, u64), seq: u64) {
        let (generation, offset, end) = span;
        self.first_seq.entry(generation).or_insert(seq);
        if self.current.is_none_or(|(g, _)| generation >= g) {
            self.spans.push((generation, offset, end, seq));
        }
    }

    /// A blob started `generation`: returns the sequence below which the log may go.
    fn new_generation(&mut self, generation: u64, blob_seq: u64) -> Option<u64> {
        let start = self.first_seq.get(&generation).copied().unwrap_or(blob_seq);
        self.previous_seq = self.current.map(|(_, seq)| seq);
        self.current = Some((generation, start));
        self.spans.retain(|&(g, ..)| g >= generation);
        self.first_seq.retain(|&g, _| g >= generation);
        self.previous_seq
    }

    fn seq_of(&self, generation: u64, offset: u64) -> Option<u64> {
        self.spans
            .iter()
            .find(|&&(g, start, end, _)| g == generation && start <= offset && offset < end)
            .map(|&(.., seq)| seq)
    }
}

impl Publication {
    /// Starts copying `stream` to the log for `session`; the task ends once the stream
    /// has no publisher.
    pub(super) fn start(
        cluster: &Arc<Cluster>,
        stream: &Arc<Stream>,
        session: &str,
        claim: Option<Claim>,
    ) -> Arc<Publication> {
        let (queue, items) = mpsc::channel(QUEUE);
        let session = Arc::new(Mutex::new(session.to_owned()));
        let queued = Arc::new(AtomicU64::new(0));
        let publication = Arc::new(Publication {
            queued: queued.clone(),
            stream: stream.clone(),
            session: session.clone(),
            revision: Mutex::new(claim.as_ref().map(|c| c.revision)),
            session_seq: Mutex::new(claim.as_ref().map(|c| c.session_seq)),
            owned: AtomicBool::new(true),
        });
        stream.set_tap(Some(Arc::new(Feed {
            queue,
            session,
            mime: Mutex::new(stream.status().mime),
            cluster: cluster.clone(),
            warned: AtomicBool::new(false),
            queued,
        })));
        tokio::spawn(publication.clone().run(cluster.clone(), items));
        publication
    }

    /// The same stream, now published by `session` (a new session here, or this one's
    /// second socket).
    pub(super) fn continue_as(&self, session: &str, claim: Option<Claim>) {
        *self.session.lock() = session.to_owned();
        if let Some(claim) = claim {
            *self.revision.lock() = Some(claim.revision);
            *self.session_seq.lock() = Some(claim.session_seq);
        }
        self.owned.store(true, Ordering::Relaxed);
    }

    fn name(&self) -> &StreamName {
        self.stream.name()
    }

    async fn run(self: Arc<Self>, cluster: Arc<Cluster>, mut items: mpsc::Receiver<Item>) {
        log::info!(
            "cluster: {} is published to NATS from this node",
            self.name()
        );
        let subject = wire::subject(self.name());
        let mut state = LogState::default();
        let mut heartbeat = tokio::time::interval(super::connection::HEARTBEAT);
        // The session's end is noticed soon, so that another session may take over.
        let mut check = tokio::time::interval(Duration::from_millis(100));
        let mut ending = false;
        // The recording file the entry names: a new one is said at once, so that a node
        // the session moves to links its file to the newest one here.
        let mut advertised = None;
        loop {
            tokio::select! {
                item = items.recv() => match item {
                    Some(item) => {
                        let bytes = item.bytes();
                        let appended = self.append(&cluster, &subject, item, &mut state).await;
                        self.queued.fetch_sub(bytes, Ordering::Relaxed);
                        if !appended {
                            break;
                        }
                    }
                    None => break,
                },
                // Removing the tap closes the queue: what is in it still goes out.
                _ = check.tick(), if !ending => {
                    ending = cluster.publication_over(&self);
                    let recording = self.stream.recording_file();
                    if !ending && recording != advertised {
                        advertised = recording;
                        self.refresh(&cluster, &state).await;
                    }
                }
                _ = heartbeat.tick(), if !ending => self.refresh(&cluster, &state).await,
            }
        }
        if let Some(revision) = *self.revision.lock() {
            if let Some(nats) = cluster.link.now() {
                let key = self.name().as_str().to_owned();
                tokio::spawn(
                    async move { directory::release(&nats.directory, &key, revision).await },
                );
            }
        }
        log::info!(
            "cluster: {} is no longer published from this node",
            self.name()
        );
    }

    /// Appends one item; false if the node is shutting down.
    async fn append(
        &self,
        cluster: &Cluster,
        subject: &str,
        item: Item,
        state: &mut LogState,
    ) -> bool {
        if !self.owned.load(Ordering::Relaxed) {
            return true;
        }
        let Some(nats) = cluster.ready_unless_stopping().await else {
            return false;
        };
        let (messages, new_generation) = match item {
            Item::Frame {
                frame,
                blob,
                new_generation,
                session,
                mime,
            } => (
                wire::frame_messages(
                    self.name(),
                    &session,
                    &frame,
                    blob,
                    mime.as_deref(),
                    nats.max_payload(),
                ),
                new_generation,
            ),
            Item::Control { control, session } => {
                (vec![wire::control_message(&session, &control)], false)
            }
        };
        let mut blob_seq = None;
        for message in &messages {
            let Some(seq) = self.publish(cluster, subject, message).await else {
                return false;
            };
            if let Some(span) = message.span {
                state.record(span, seq);
            }
            blob_seq.get_or_insert(seq);
        }
        if let (true, Some(seq), Some((generation, ..))) =
            (new_generation, blob_seq, messages[0].span)
        {
            if let Some(keep_from) = state.new_generation(generation, seq) {
                self.purge_before(cluster, subject, keep_from).await;
            }
            // Replicas that start now should start here: say so at once.
            self.refresh(cluster, state).await;
        }
        true
    }

    /// Publishes until acknowledged; None if the node is shutting down first.
    async fn publish(&self, cluster: &Cluster, subject: &str, message: &Outgoing) -> Option<u64> {
        let mut failures = 0u32;
        loop {
            let nats = cluster.ready_unless_stopping().await?;
            let publish = Publish::build()
                .payload(message.payload.clone())
                .headers(message.headers.clone());
            let acked = match nats.js.send_publish(subject.to_owned(), publish).await {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            };
            match acked {
                Ok(ack) => {
                    cluster.metrics.published(message.payload.len());
                    if failures > 0 {
                        log::info!("cluster: appending {} to the log again", self.name());
                    }
                    return Some(ack.sequence);
                }
                Err(_) if cluster.is_stopping() => return None,
                Err(err) => {
                    cluster.metrics.publish_retry();
                    if failures == 0 {
                        log::warn!(
                            "cluster: cannot append {} to the log ({err}); retrying",
                            self.name()
                        );
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(5))))
                        .await;
                }
            }
        }
    }

    async fn purge_before(&self, cluster: &Cluster, subject: &str, keep_from: u64) {
        let Some(nats) = cluster.link.now() else {
            return;
        };
        let purge = nats.log.purge().filter(subject).sequence(keep_from);
        if let Err(err) = purge.await {
            log::warn!(
                "cluster: cannot purge old generations of {}: {err}",
                self.name()
            );
        }
    }

    /// Writes the directory entry (the heartbeat that keeps it from expiring).
    async fn refresh(&self, cluster: &Cluster, state: &LogState) {
        let Some(nats) = cluster.link.now() else {
            return;
        };
        let entry = self.entry(cluster, state);
        let key = self.name().as_str();
        let revision = *self.revision.lock();
        match directory::refresh(&nats.directory, key, &entry, revision).await {
            Ok(revision) => {
                *self.revision.lock() = Some(revision);
                if !self.owned.swap(true, Ordering::Relaxed) {
                    log::info!("cluster: {key} is ours again in the directory");
                }
            }
            Err(directory::DirectoryError::Busy { node, session }) => {
                if self.owned.swap(false, Ordering::Relaxed) {
                    log::warn!("cluster: {key} is held by session {session} on node {node}; not appending to the log");
                }
            }
            Err(err) => log::debug!("cluster: directory entry of {key} not refreshed: {err}"),
        }
    }

    fn entry(&self, cluster: &Cluster, state: &LogState) -> Entry {
        let info = self.stream.info();
        let mut entry = Entry::fresh(self.name().as_str(), &cluster.node, &self.session.lock());
        entry.live = info.live;
        entry.mime = info.mime;
        entry.media = info.media.and_then(|m| serde_json::to_value(m).ok());
        entry.generation = info.generation;
        entry.since = info.publisher_connected_since.unwrap_or(entry.since);
        entry.ingest_bits_per_second = info.ingest_bits_per_second;
        entry.session_seq = *self.session_seq.lock();
        entry.recording = self.stream.recording_file();
        if let Some((generation, seq)) = state.current.filter(|&(g, _)| Some(g) == info.generation)
        {
            entry.generation_seq = Some(seq);
            entry.keyframe = self.keyframe(generation, state);
        }
        entry
    }

    /// Where a live joiner would start: the newest keyframe-led cluster.
    fn keyframe(&self, generation: u64, state: &LogState) -> Option<Keyframe> {
        let snapshot = self.stream.snapshot(None, Join::Live);
        if snapshot.join != Join::Live || snapshot.generation != Some(generation) {
            return None;
        }
        let start = snapshot.frames.get(1)?.parts().first()?;
        let offset = FrameHeader::parse(start).ok()?.offset;
        Some(Keyframe {
            seq: state.seq_of(generation, offset)?,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_start_at_their_first_message_and_purge_keeps_the_previous_one() {
        let mut state = LogState::default();
        state.record((1, 0, 100), 10);
        assert_eq!(state.new_generation(1, 10), None, "nothing to purge yet");
        state.record((1, 100, 200), 11);
        // A chunk of generation 2 held for its blob comes first in the log.
        state.record((2, 300, 400), 12);
        state.record((2, 0, 300), 13);
        assert_eq!(state.new_generation(2, 13), Some(10));
        assert_eq!(state.current, Some((2, 12)));
        assert_eq!(state.seq_of(2, 350), Some(12));
        state.record((3, 0, 50), 20);
        assert_eq!(state.new_generation(3, 20), Some(12), "keeps generation 2");
        state.record((3, 50, 90), 21);
        assert_eq!(state.seq_of(3, 60), Some(21));
        assert_eq!(state.seq_of(3, 10), Some(20));
        assert_eq!(state.seq_of(3, 90), None);
        assert_eq!(state.seq_of(2, 10), None, "forgotten");
    }
}
