//! A viewer node's replica of one stream: for as long as the node has viewers of a
//! stream published elsewhere, one ordered JetStream consumer reads the stream's log
//! and hands every message to the local `Stream` through the publisher's accept path
//! (`ingest::frame::accept_frame`), so the local fan-out, `join=live`, resume, blob
//! mode and the limits work as on the publisher's node. One per stream per node,
//! however many viewers; it stops a grace period after the last one leaves.
//!
//! It starts at the current generation's first message (the directory says where); one
//! started for a `join=live` viewer reads only the generation's first messages, through
//! its init segment, and then goes on from the newest keyframe cluster's message, so a
//! node whose viewers play from the live edge never downloads the rest. The generation
//! then has a hole: a later viewer that needs the whole generation (or a resume point
//! inside the hole) has the replica fetch it (`fill`) before it is answered.
//! After a failure or a reconnection it makes its consumer again from the sequence
//! after the last one it applied, so nothing is applied twice or skipped; if the log
//! no longer holds that sequence it starts over from the current generation. A frame
//! the buffer refuses (a gap: the publisher's node dropped frames it could not append)
//! stalls the viewers until the next generation's blob, never corrupts them.

use super::directory;
use super::wire::{self, Incoming};
use super::Cluster;
use crate::ingest::frame::{accept_frame, PublisherSocket};
use crate::protocol::{FrameHeader, PublisherControl, StreamName};
use crate::stream::Stream;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long a replica outlives its node's last viewer (a viewer that reconnects finds
/// it still running).
pub const GRACE: Duration = Duration::from_secs(5);
/// How often a running replica looks at its viewers and at a local publisher.
const CHECK: Duration = Duration::from_millis(250);
/// How long fetching the skipped start of a generation may take.
const FILL_PATIENCE: Duration = Duration::from_secs(2);

/// A generation read from its newest keyframe cluster on: where it starts in the log,
/// and the message (and offset in it) the replica goes on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Skip {
    generation: u64,
    generation_seq: u64,
    seq: u64,
    offset: u64,
}

/// Where a replica started for a live joiner stands with its skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skipping {
    /// Reading the generation's first messages until its init segment is in.
    Planned(Skip),
    /// The consumer was moved to the keyframe's message: applying it leaves the hole.
    Moved(Skip),
    /// The hole is there, for a viewer to have filled.
    Holed(Skip),
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    Go,
    /// A publisher on this node feeds the stream itself.
    Pause,
    Stop,
}

struct Replica {
    cluster: Arc<Cluster>,
    stream: Arc<Stream>,
    /// The log sequence of the last message applied.
    last_applied: Option<u64>,
    /// The publish session of the last message applied.
    session: Option<String>,
    /// The generation whose frames the buffer started refusing, logged once.
    refusing: Option<u64>,
    idle_since: Option<Instant>,
    /// Told once the replica has applied what the log held when it started.
    caught_up: watch::Sender<bool>,
    catch_up_to: u64,
    /// Read the first generation from its newest keyframe cluster (until it starts).
    from_keyframe: bool,
    skipping: Option<Skipping>,
    fill: Arc<Notify>,
}

pub(super) async fn run(
    cluster: Arc<Cluster>,
    name: StreamName,
    caught_up: watch::Sender<bool>,
    fill: Arc<Notify>,
    from_keyframe: bool,
) {
    let guard = match cluster.registry.attach_replica(&name) {
        Ok(guard) => guard,
        Err(refusal) => {
            log::warn!("cluster: no replica of {name}: {refusal}");
            cluster.replica_over(&name, None);
            return;
        }
    };
    cluster.metrics.replica_started();
    log::info!("cluster: replicating {name} from NATS for this node's viewers");
    let mut replica = Replica {
        cluster: cluster.clone(),
        stream: guard.stream().clone(),
        last_applied: None,
        session: None,
        refusing: None,
        idle_since: None,
        caught_up,
        catch_up_to: 0,
        from_keyframe,
        skipping: None,
        fill,
    };
    replica.run().await;
    cluster.metrics.replica_stopped();
    log::info!("cluster: stopped replicating {name}");
    drop(guard);
}

impl Replica {
    fn name(&self) -> &StreamName {
        self.stream.name()
    }

    fn next(&mut self) -> Next {
        if self.cluster.is_stopping() {
            return Next::Stop;
        }
        let (viewers, publisher) = {
            let presence = self.stream.presence.lock();
            (presence.has_viewers(), presence.publisher.is_some())
        };
        if viewers {
            self.idle_since = None;
        } else if self.idle_since.get_or_insert_with(Instant::now).elapsed() >= GRACE
            && self.cluster.replica_over(self.name(), Some(&self.stream))
        {
            return Next::Stop;
        }
        if publisher {
            Next::Pause
        } else {
            Next::Go
        }
    }

    async fn run(&mut self) {
        let cluster = self.cluster.clone();
        let mut reconnects = cluster.link.watch_reconnects();
        let mut paused = false;
        'consumer: loop {
            match self.next() {
                Next::Stop => return,
                Next::Pause => {
                    if !paused {
                        log::info!(
                            "cluster: {} is published on this node now; replica paused",
                            self.name()
                        );
                        paused = true;
                    }
                    self.last_applied = None;
                    tokio::time::sleep(CHECK).await;
                    continue;
                }
                Next::Go => paused = false,
            }
            let Some(nats) = cluster.link.within(CHECK).await else {
                continue;
            };
            reconnects.borrow_and_update();
            let start = match self.start_at(&nats).await {
                Ok(start) => start,
                Err(err) => {
                    log::debug!(
                        "cluster: replica of {} cannot start yet: {err}",
                        self.name()
                    );
                    tokio::time::sleep(CHECK).await;
                    continue;
                }
            };
            let config = OrderedConfig {
                filter_subject: wire::subject(self.name()),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            };
            let messages = match nats.log.create_consumer(config).await {
                Ok(consumer) => consumer.messages().await,
                Err(err) => {
                    log::debug!(
                        "cluster: replica of {}: no consumer yet: {err}",
                        self.name()
                    );
                    tokio::time::sleep(CHECK).await;
                    continue;
                }
            };
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(err) => {
                    log::debug!(
                        "cluster: replica of {}: no messages yet: {err}",
                        self.name()
                    );
                    tokio::time::sleep(CHECK).await;
                    continue;
                }
            };
            self.stream.set_records(false);
            if start > self.catch_up_to {
                self.caught_up.send_replace(true);
            }
            log::debug!(
                "cluster: replica of {} reads the log from {start}",
                self.name()
            );
            let mut check = tokio::time::interval(CHECK);
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(Ok(message)) => if self.apply(message) {
                            // The init segment is in: on from the keyframe's message.
                            continue 'consumer;
                        },
                        Some(Err(err)) => {
                            log::warn!("cluster: replica of {} lost its consumer ({err}); resuming", self.name());
                            cluster.metrics.replica_resumed();
                            tokio::time::sleep(CHECK).await;
                            continue 'consumer;
                        }
                        None => continue 'consumer,
                    },
                    _ = reconnects.changed() => {
                        log::info!(
                            "cluster: replica of {} resumes after a reconnection, from sequence {}",
                            self.name(),
                            self.last_applied.map_or(start, |s| s + 1)
                        );
                        cluster.metrics.replica_resumed();
                        continue 'consumer;
                    }
                    _ = check.tick() => if self.next() != Next::Go { continue 'consumer },
                    _ = self.fill.notified(), if matches!(self.skipping, Some(Skipping::Holed(_))) => {
                        self.fill_hole(&nats).await
                    }
                    _ = cluster.stopped() => return,
                }
            }
        }
    }

    /// The log sequence to read from: after the last one applied if the log still has
    /// it, else the current generation's first message (or, with no live publisher,
    /// whatever comes next).
    async fn start_at(&mut self, nats: &super::connection::Nats) -> Result<u64, String> {
        let info = nats.log.get_info().await.map_err(|e| e.to_string())?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        self.catch_up_to = last;
        if let Some(applied) = self.last_applied {
            if applied + 1 >= first {
                return Ok(applied + 1);
            }
            log::warn!(
                "cluster: the log no longer holds sequence {} of {}; starting over from its current generation",
                applied + 1,
                self.name()
            );
            self.cluster.metrics.replica_snapshot();
            self.last_applied = None;
            self.skipping = None;
        }
        let entry = directory::read(&nats.directory, self.name().as_str())
            .await
            .map_err(|e| e.to_string())?;
        let Some((entry, _)) = entry else {
            return Ok(last + 1);
        };
        if std::mem::take(&mut self.from_keyframe) {
            self.plan_skip(&entry, first);
        }
        // A generation (or a whole session) lies between its start and the log's end;
        // with no publisher, what comes next is the next session's.
        let start = match entry.generation_seq {
            Some(seq) if entry.live => Some(seq),
            _ => entry.session_seq,
        };
        Ok(start.map_or(last + 1, |seq| seq.max(first)))
    }

    /// For a first viewer that plays from a keyframe: read the current generation's
    /// first messages until its init segment is in, then go on from the newest keyframe
    /// cluster's message, when there is something worth skipping between.
    fn plan_skip(&mut self, entry: &directory::Entry, first: u64) {
        let (Some(generation), Some(generation_seq), Some(keyframe)) =
            (entry.generation, entry.generation_seq, entry.keyframe)
        else {
            return;
        };
        if !entry.live || keyframe.seq <= generation_seq.max(first) + 1 {
            return;
        }
        if self.stream.status().generation == Some(generation) {
            // This node holds some of it already (a replica that stopped and started
            // again): reading on is what fits it.
            return;
        }
        self.skipping = Some(Skipping::Planned(Skip {
            generation,
            generation_seq,
            seq: keyframe.seq,
            offset: keyframe.offset,
        }));
    }

    /// Applies one message; true when the consumer should move to the skip's message
    /// now (the generation's init segment is in).
    fn apply(&mut self, message: async_nats::jetstream::Message) -> bool {
        if self.stream.presence.lock().publisher.is_some() {
            // A publisher here feeds the stream now (its frames come back to us from
            // the log too): the replica pauses at its next check.
            return false;
        }
        let Ok(info) = message.info() else {
            return false;
        };
        let seq = info.stream_sequence;
        if self.last_applied.is_some_and(|last| seq <= last) {
            return false;
        }
        self.last_applied = Some(seq);
        self.cluster.metrics.read(message.payload.len());
        self.apply_message(seq, &message);
        // Only once the message is in the buffer: a waiting viewer takes its position
        // from there the moment it is told.
        if seq >= self.catch_up_to {
            self.caught_up
                .send_if_modified(|up| !std::mem::replace(up, true));
        }
        self.skip_now(seq)
    }

    /// After applying message `seq`: whether to move the consumer to the skip's message.
    fn skip_now(&mut self, seq: u64) -> bool {
        let Some(Skipping::Planned(skip)) = self.skipping else {
            return false;
        };
        if seq + 1 >= skip.seq {
            // Read on to it: nothing left to skip.
            self.skipping = None;
            return false;
        }
        if !self.stream.holds_init_of(skip.generation) {
            return false;
        }
        log::info!(
            "cluster: replica of {} has generation {}'s init segment; reading on from the newest keyframe cluster (log sequence {}, offset {}), skipping {} messages",
            self.name(),
            skip.generation,
            skip.seq,
            skip.offset,
            skip.seq - seq - 1
        );
        self.skipping = Some(Skipping::Moved(skip));
        self.last_applied = Some(skip.seq - 1);
        true
    }

    fn apply_message(&mut self, seq: u64, message: &async_nats::jetstream::Message) {
        let headers = message.headers.as_ref();
        let Ok(session) = wire::session_of(headers) else {
            log::warn!(
                "cluster: log message {seq} of {} has no session; skipped",
                self.name()
            );
            return;
        };
        if self.session.as_deref() != Some(session) {
            // A new publish session numbers its generations afresh, as on one node.
            if self.session.is_some() || !self.stream.status().live {
                self.stream.reset_session(session);
            }
            self.session = Some(session.to_owned());
        }
        match wire::parse(headers, message.payload.clone()) {
            Ok(Incoming::Frame {
                socket,
                frame,
                mime,
            }) if matches!(self.skipping, Some(Skipping::Moved(_))) => {
                self.accept_after_skip(seq, socket, frame, mime)
            }
            Ok(Incoming::Frame {
                socket,
                frame,
                mime,
            }) => self.accept(socket, frame, mime),
            Ok(Incoming::Control(PublisherControl::Start { mime })) => self.stream.start(mime),
            Ok(Incoming::Control(PublisherControl::Stop { .. })) => self.stream.end(),
            Err(err) => log::warn!("cluster: log message {seq} of {}: {err}", self.name()),
        }
    }

    fn accept(&mut self, socket: PublisherSocket, frame: bytes::Bytes, mime: Option<String>) {
        if let Some(mime) = mime.filter(|m| self.stream.status().mime.as_ref() != Some(m)) {
            self.stream.start(mime);
        }
        let generation = FrameHeader::parse(&frame).map(|h| h.generation).ok();
        match accept_frame(&self.stream, self.cluster.max_frame, socket, frame) {
            Ok(_) => {
                if socket == PublisherSocket::Blob {
                    self.refusing = None;
                }
            }
            Err(refused) => {
                self.cluster.metrics.replica_refused();
                if self.refusing != generation {
                    self.refusing = generation;
                    log::warn!(
                        "cluster: replica of {} refused a frame ({}); its viewers wait for the next generation",
                        self.name(),
                        refused.reason
                    );
                }
            }
        }
    }

    /// The first message after the skip: the hole is left between what the generation
    /// holds and this frame.
    fn accept_after_skip(
        &mut self,
        seq: u64,
        socket: PublisherSocket,
        frame: bytes::Bytes,
        mime: Option<String>,
    ) {
        let Some(Skipping::Moved(skip)) = self.skipping.take() else {
            return;
        };
        let ours = socket == PublisherSocket::Chunk
            && seq == skip.seq
            && FrameHeader::parse(&frame).is_ok_and(|h| h.generation == skip.generation);
        if !ours {
            log::warn!(
                "cluster: replica of {}: log message {seq} is not the keyframe cluster's; its viewers may wait for the next generation",
                self.name()
            );
            return self.accept(socket, frame, mime);
        }
        match self.stream.accept_after_hole(frame, skip.offset) {
            Ok(_) => {
                self.cluster.metrics.replica_keyframe_start();
                self.skipping = Some(Skipping::Holed(skip));
            }
            Err(err) => {
                self.cluster.metrics.replica_refused();
                log::warn!(
                    "cluster: replica of {} could not go on from the keyframe cluster ({err}); its viewers wait for the next generation",
                    self.name()
                );
            }
        }
    }

    /// Fetches the generation's messages the skip left out and fills the hole with
    /// them, for a viewer that needs the generation whole. Live messages wait meanwhile
    /// (the consumer holds them).
    async fn fill_hole(&mut self, nats: &super::connection::Nats) {
        let Some(Skipping::Holed(skip)) = self.skipping else {
            return;
        };
        if self.stream.hole().map(|(g, ..)| g) != Some(skip.generation) {
            self.skipping = None;
            return;
        }
        let started = Instant::now();
        let head = tokio::time::timeout(FILL_PATIENCE, self.fetch_head(nats, skip)).await;
        let head = match head {
            Ok(Ok(head)) => head,
            Ok(Err(err)) => {
                log::warn!(
                    "cluster: replica of {} cannot fetch the start of generation {}: {err}",
                    self.name(),
                    skip.generation
                );
                return;
            }
            Err(_) => {
                log::warn!(
                    "cluster: replica of {} did not fetch the start of generation {} within {FILL_PATIENCE:?}",
                    self.name(),
                    skip.generation
                );
                return;
            }
        };
        let bytes: usize = head.iter().map(|f| f.len()).sum();
        if self.stream.fill_hole(head) {
            self.skipping = None;
            self.cluster.metrics.replica_filled();
            log::info!(
                "cluster: replica of {} fetched the start of generation {} ({bytes} bytes, {} ms) for a viewer that needs it whole",
                self.name(),
                skip.generation,
                started.elapsed().as_millis()
            );
        } else {
            log::warn!(
                "cluster: replica of {}: the log's start of generation {} does not fill its hole",
                self.name(),
                skip.generation
            );
        }
    }

    /// The generation's frames from its first message up to the skip's, in offset order.
    async fn fetch_head(
        &self,
        nats: &super::connection::Nats,
        skip: Skip,
    ) -> Result<Vec<bytes::Bytes>, String> {
        let config = OrderedConfig {
            filter_subject: wire::subject(self.name()),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: skip.generation_seq,
            },
            ..Default::default()
        };
        let consumer = nats
            .log
            .create_consumer(config)
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| e.to_string())?;
            let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
            if seq >= skip.seq {
                break;
            }
            self.cluster.metrics.read(message.payload.len());
            let headers = message.headers.as_ref();
            if wire::session_of(headers).ok() != self.session.as_deref() {
                continue;
            }
            if let Ok(Incoming::Frame { frame, .. }) = wire::parse(headers, message.payload.clone())
            {
                let header = FrameHeader::parse(&frame).map_err(|e| e.to_string())?;
                if header.generation == skip.generation && header.offset < skip.offset {
                    head.push((header.offset, frame));
                }
            }
        }
        head.sort_by_key(|(offset, _)| *offset);
        head.dedup_by_key(|(offset, _)| *offset);
        Ok(head.into_iter().map(|(_, frame)| frame).collect())
    }
}
