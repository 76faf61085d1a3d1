//! The set of streams. A stream appears when its first publisher or viewer attaches and
//! is dropped when the last one detaches; attaching hands out a guard whose drop is the
//! detach, so no path can leak a stream.

use super::{PublisherSession, Stream, StreamInfo};
use crate::events::{Event, Events};
use crate::metrics::{Metrics, StreamFigures};
use crate::protocol::StreamName;
use crate::recording::Recorder;
use crate::stream::buffer::BufferLimits;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    pub max_streams: usize,
    pub max_viewers: usize,
    pub buffer: BufferLimits,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("{0}")]
    TooManyStreams(StreamLimit),
    #[error("this stream already has {0} viewers, its limit (the server's --max-viewers)")]
    TooManyViewers(usize),
    #[error("another publisher session is live on this stream; stop it first")]
    PublisherBusy,
}

/// Which of the two `--max-streams` bounds was reached. Streams that only have viewers
/// waiting for a publisher are counted apart from published ones, so that viewers of
/// names nobody publishes cannot lock publishers out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamLimit {
    #[error("the server already has {0} published streams, its limit (--max-streams)")]
    Published(usize),
    #[error("{0} streams already wait for a publisher, the limit; watch a live one")]
    Waiting(usize),
}

/// Who attaches: a publisher makes a stream published, a viewer alone leaves it waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Viewer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerSocket {
    Blob,
    Chunk,
}

pub struct Registry {
    streams: Mutex<HashMap<StreamName, Arc<Stream>>>,
    limits: RegistryLimits,
    metrics: Arc<Metrics>,
    /// Handed to every stream when recording is on.
    recorder: Option<Arc<Recorder>>,
    /// Publish sessions starting and ending.
    events: Events,
}

impl Registry {
    pub fn new(limits: RegistryLimits, metrics: Arc<Metrics>) -> Arc<Registry> {
        Registry::with_recorder(limits, metrics, None)
    }

    /// A registry whose streams record every publish session through `recorder`.
    pub fn with_recorder(
        limits: RegistryLimits,
        metrics: Arc<Metrics>,
        recorder: Option<Arc<Recorder>>,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            streams: Mutex::new(HashMap::new()),
            limits,
            metrics,
            recorder,
            events: Events::default(),
        })
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn get(&self, name: &StreamName) -> Option<Arc<Stream>> {
        self.streams.lock().get(name).cloned()
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        let streams: Vec<_> = self.streams.lock().values().cloned().collect();
        let mut infos: Vec<_> = streams.iter().map(|s| s.info()).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Drops `name` and its metric series.
    fn remove(&self, streams: &mut HashMap<StreamName, Arc<Stream>>, name: &StreamName) {
        streams.remove(name);
        self.metrics.forget_stream(name.as_str());
    }

    /// Sets every stream's gauges, under the lock that removals take (so a stream's
    /// series cannot come back after it went away), and returns (streams, viewers).
    pub fn refresh_metrics(&self) -> (usize, usize) {
        let streams = self.streams.lock();
        let mut viewers = 0;
        for (name, stream) in streams.iter() {
            let (blob_viewers, chunk_viewers, rate, generation_age, buffered_bytes) =
                stream.figures();
            viewers += chunk_viewers;
            self.metrics.set_stream(&StreamFigures {
                stream: name.as_str(),
                blob_viewers,
                chunk_viewers,
                ingest_bits_per_second: rate,
                generation_age,
                buffered_bytes,
            });
        }
        (streams.len(), viewers)
    }

    /// (streams, viewers) for the metrics page.
    pub fn counts(&self) -> (usize, usize) {
        let streams = self.streams.lock();
        let viewers = streams
            .values()
            .map(|s| s.presence.lock().chunk_viewers)
            .sum();
        (streams.len(), viewers)
    }

    fn stream_entry(
        &self,
        streams: &mut HashMap<StreamName, Arc<Stream>>,
        name: &StreamName,
        role: Role,
    ) -> Result<Arc<Stream>, Refusal> {
        let published = |s: &Arc<Stream>| s.presence.lock().publisher.is_some();
        let existing = streams.get(name);
        let adds = match role {
            Role::Publisher => existing.is_none_or(|s| !published(s)),
            Role::Viewer => existing.is_none(),
        };
        if adds {
            let max = self.limits.max_streams;
            let counted = streams
                .values()
                .filter(|s| published(s) == (role == Role::Publisher))
                .count();
            if counted >= max {
                return Err(Refusal::TooManyStreams(match role {
                    Role::Publisher => StreamLimit::Published(max),
                    Role::Viewer => StreamLimit::Waiting(max),
                }));
            }
        }
        if let Some(stream) = existing {
            return Ok(stream.clone());
        }
        let stream = Arc::new(Stream::new(
            name.clone(),
            self.limits.buffer,
            self.metrics.clone(),
            self.recorder.clone(),
        ));
        streams.insert(name.clone(), stream.clone());
        Ok(stream)
    }

    pub fn attach_publisher(
        self: &Arc<Self>,
        name: &StreamName,
        session: &str,
    ) -> Result<PublisherGuard, Refusal> {
        let mut streams = self.streams.lock();
        let stream = self.stream_entry(&mut streams, name, Role::Publisher)?;
        let mut presence = stream.presence.lock();
        match &mut presence.publisher {
            Some(current) if current.id == session => current.sockets += 1,
            Some(_) => {
                let idle = presence.is_idle();
                drop(presence);
                if idle {
                    self.remove(&mut streams, name);
                }
                return Err(Refusal::PublisherBusy);
            }
            None => {
                stream.reset_session(session);
                presence.publisher = Some(PublisherSession {
                    id: session.to_owned(),
                    sockets: 1,
                    since: SystemTime::now(),
                });
                self.events.emit(|| Event::PublishStart {
                    stream: name.to_string(),
                    session: session.to_owned(),
                });
            }
        }
        drop(presence);
        Ok(PublisherGuard {
            registry: self.clone(),
            stream,
        })
    }

    pub fn attach_viewer(
        self: &Arc<Self>,
        name: &StreamName,
        socket: ViewerSocket,
    ) -> Result<ViewerGuard, Refusal> {
        let mut streams = self.streams.lock();
        let stream = self.stream_entry(&mut streams, name, Role::Viewer)?;
        let mut presence = stream.presence.lock();
        let count = match socket {
            ViewerSocket::Blob => &mut presence.blob_viewers,
            ViewerSocket::Chunk => &mut presence.chunk_viewers,
        };
        if *count >= self.limits.max_viewers {
            let idle = presence.is_idle();
            drop(presence);
            if idle {
                self.remove(&mut streams, name);
            }
            return Err(Refusal::TooManyViewers(self.limits.max_viewers));
        }
        *count += 1;
        drop(presence);
        Ok(ViewerGuard {
            registry: self.clone(),
            stream,
            socket,
        })
    }

    /// A cluster replica holds `name` (src/cluster): the stream stays while it feeds it,
    /// without counting as a viewer. Refused only when a new stream would pass the limit.
    pub fn attach_replica(self: &Arc<Self>, name: &StreamName) -> Result<ReplicaGuard, Refusal> {
        let mut streams = self.streams.lock();
        let stream = self.stream_entry(&mut streams, name, Role::Viewer)?;
        stream.presence.lock().replicas += 1;
        Ok(ReplicaGuard {
            registry: self.clone(),
            stream,
        })
    }

    /// Runs `detach` on the stream's presence and drops the stream if it left it idle.
    fn detach(&self, stream: &Arc<Stream>, detach: impl FnOnce(&mut super::Presence)) {
        let mut streams = self.streams.lock();
        let mut presence = stream.presence.lock();
        detach(&mut presence);
        if presence.is_idle() {
            self.remove(&mut streams, stream.name());
        }
    }

    /// Ends every stream: the server is shutting down.
    pub fn end_all(&self) {
        let streams: Vec<_> = self.streams.lock().values().cloned().collect();
        for stream in streams {
            stream.end_with("server shutting down");
        }
    }
}

/// One open publisher socket. Dropping it detaches; the last socket of the session
/// ends the stream.
pub struct PublisherGuard {
    registry: Arc<Registry>,
    stream: Arc<Stream>,
}

impl PublisherGuard {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for PublisherGuard {
    fn drop(&mut self) {
        let stream = self.stream.clone();
        let events = &self.registry.events;
        self.registry.detach(&self.stream, |presence| {
            if let Some(session) = &mut presence.publisher {
                session.sockets -= 1;
                if session.sockets == 0 {
                    let ended = presence.publisher.take().expect("a session");
                    let reason = stream.take_end_reason();
                    stream.end();
                    events.emit(|| Event::PublishEnd {
                        stream: stream.name().to_string(),
                        session: ended.id,
                        reason: reason.unwrap_or_else(|| "publisher disconnected".into()),
                    });
                }
            }
        });
    }
}

/// One open viewer socket. Dropping it detaches.
pub struct ViewerGuard {
    registry: Arc<Registry>,
    stream: Arc<Stream>,
    socket: ViewerSocket,
}

impl ViewerGuard {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        let socket = self.socket;
        self.registry.detach(&self.stream, |presence| match socket {
            ViewerSocket::Blob => presence.blob_viewers -= 1,
            ViewerSocket::Chunk => presence.chunk_viewers -= 1,
        });
    }
}

/// A cluster replica's hold on a stream. Dropping it detaches.
pub struct ReplicaGuard {
    registry: Arc<Registry>,
    stream: Arc<Stream>,
}

impl ReplicaGuard {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for ReplicaGuard {
    fn drop(&mut self) {
        self.registry
            .detach(&self.stream, |presence| presence.replicas -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_streams: usize, max_viewers: usize) -> Arc<Registry> {
        Registry::new(
            RegistryLimits {
                max_streams,
                max_viewers,
                buffer: BufferLimits {
                    max_generation_bytes: 1 << 20,
                },
            },
            Arc::new(Metrics::default()),
        )
    }

    fn name(s: &str) -> StreamName {
        StreamName::parse(s).unwrap()
    }

    #[test]
    fn streams_live_exactly_as_long_as_their_users() {
        let r = registry(10, 10);
        let viewer = r.attach_viewer(&name("a"), ViewerSocket::Chunk).unwrap();
        let publisher = r.attach_publisher(&name("a"), "s1").unwrap();
        drop(viewer);
        assert!(r.get(&name("a")).is_some());
        drop(publisher);
        assert!(r.get(&name("a")).is_none());
    }

    #[test]
    fn one_publisher_session_per_stream() {
        let r = registry(10, 10);
        let blob = r.attach_publisher(&name("a"), "s1").unwrap();
        let chunk = r.attach_publisher(&name("a"), "s1").unwrap();
        assert_eq!(
            r.attach_publisher(&name("a"), "s2").err(),
            Some(Refusal::PublisherBusy)
        );
        drop(blob);
        assert!(
            r.attach_publisher(&name("a"), "s2").is_err(),
            "s1 still has a socket"
        );
        drop(chunk);
        assert!(r.attach_publisher(&name("a"), "s2").is_ok());
    }

    #[test]
    fn a_replica_keeps_its_stream_without_counting_as_a_viewer() {
        let r = registry(10, 10);
        let viewer = r.attach_viewer(&name("a"), ViewerSocket::Chunk).unwrap();
        let replica = r.attach_replica(&name("a")).unwrap();
        drop(viewer);
        assert_eq!(r.counts(), (1, 0), "kept, with no viewer");
        drop(replica);
        assert!(r.get(&name("a")).is_none());
    }

    #[test]
    fn limits_refuse_without_leaking_streams() {
        let r = registry(1, 1);
        let _a = r.attach_viewer(&name("a"), ViewerSocket::Chunk).unwrap();
        assert_eq!(
            r.attach_viewer(&name("b"), ViewerSocket::Chunk).err(),
            Some(Refusal::TooManyStreams(StreamLimit::Waiting(1)))
        );
        assert_eq!(
            r.attach_viewer(&name("a"), ViewerSocket::Chunk).err(),
            Some(Refusal::TooManyViewers(1))
        );
        assert!(r.attach_viewer(&name("a"), ViewerSocket::Blob).is_ok());
        assert_eq!(r.counts(), (1, 1));
    }

    #[test]
    fn waiting_viewers_cannot_lock_publishers_out() {
        let r = registry(1, 10);
        let _waiting = r
            .attach_viewer(&name("nobody"), ViewerSocket::Chunk)
            .unwrap();
        let _live = r.attach_publisher(&name("live"), "s1").unwrap();
        assert_eq!(
            r.attach_publisher(&name("other"), "s2").err(),
            Some(Refusal::TooManyStreams(StreamLimit::Published(1)))
        );
        // Publishing where viewers wait turns a waiting stream into a published one.
        assert_eq!(
            r.attach_publisher(&name("nobody"), "s3").err(),
            Some(Refusal::TooManyStreams(StreamLimit::Published(1)))
        );
        assert!(r.attach_viewer(&name("live"), ViewerSocket::Chunk).is_ok());
        assert_eq!(r.counts().0, 2, "nothing leaked");
    }
}
