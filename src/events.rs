//! What happened on the server, for whoever listens (the webhooks): publish sessions
//! starting and ending, recordings finishing or failing, viewer counts. A leaf: the
//! stream registry and the recorder emit through an [`Events`] handle without knowing
//! who delivers, so they never depend on HTTP code. Emitting never blocks: a sink takes
//! an event in a bounded, non-blocking way or drops it.

use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// One event, as its JSON body says it (`"event": "publish_start"`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PublishStart {
        stream: String,
        session: String,
    },
    PublishEnd {
        stream: String,
        session: String,
        reason: String,
    },
    RecordingFinished {
        stream: String,
        id: String,
        file: String,
        duration: Option<f64>,
        bytes: u64,
    },
    RecordingFailed {
        stream: String,
        id: String,
        file: String,
        duration: Option<f64>,
        bytes: u64,
        error: Option<String>,
    },
    ViewerCount {
        stream: String,
        viewers: usize,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::PublishStart { .. } => "publish_start",
            Event::PublishEnd { .. } => "publish_end",
            Event::RecordingFinished { .. } => "recording_finished",
            Event::RecordingFailed { .. } => "recording_failed",
            Event::ViewerCount { .. } => "viewer_count",
        }
    }
}

/// Takes events. `emit` runs on the media path and under short locks: it must return at
/// once, whatever the receiver on the other end is doing.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// Where a module sends its events: nowhere until [`Events::connect`] is called once.
#[derive(Default)]
pub struct Events(OnceLock<Arc<dyn EventSink>>);

impl Events {
    /// Sends every later event to `sink`; a second call is ignored.
    pub fn connect(&self, sink: Arc<dyn EventSink>) {
        let _ = self.0.set(sink);
    }

    pub fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = self.0.get() {
            sink.emit(event());
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Events(connected)"
        } else {
            "Events(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl EventSink for Collect {
        fn emit(&self, event: Event) {
            self.0.lock().push(event);
        }
    }

    #[test]
    fn events_go_nowhere_until_connected_and_serialize_with_their_name() {
        let events = Events::default();
        events.emit(|| unreachable!("nobody listens: the event is not even built"));
        let sink = Arc::new(Collect::default());
        events.connect(sink.clone());
        events.emit(|| Event::ViewerCount {
            stream: "cam".into(),
            viewers: 3,
        });
        let got = sink.0.lock().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name(), "viewer_count");
        assert_eq!(
            serde_json::to_value(&got[0]).unwrap(),
            serde_json::json!({"event": "viewer_count", "stream": "cam", "viewers": 3})
        );
    }
}
