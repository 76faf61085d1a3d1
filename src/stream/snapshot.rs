//! What a viewer's blob socket is sent when it joins: the current generation whole, from
//! its newest keyframe cluster (`join=live`), or nothing when it resumes what it holds.

use super::buffer::{GenerationPin, Resume};
use super::Stream;
use crate::protocol::{Join, OutFrame};
use std::sync::Arc;

pub struct Snapshot {
    /// Holds the generation in the buffered-bytes gauge while the frames are sent.
    pub pin: Option<Arc<GenerationPin>>,
    /// `generations_started` when the snapshot was taken.
    pub taken_at: u64,
    pub epoch: u64,
    pub generation: Option<u64>,
    pub join: Join,
    /// The viewer already holds the current generation up to its offset.
    pub resumed: bool,
    pub frames: Vec<OutFrame>,
}

impl Stream {
    /// Frames a joining blob viewer needs, unless it already holds them (`resume`).
    /// A live join falls back to the whole generation until a keyframe cluster is known.
    pub fn snapshot(&self, resume: Option<Resume>, join: Join) -> Snapshot {
        let buffer = self.buffer.read();
        let epoch = buffer.epoch();
        let taken_at = buffer.generations_started();
        let generation = buffer.generation();
        if let Some(resume) = resume.filter(|&r| buffer.can_resume(r)) {
            return Snapshot {
                pin: None,
                taken_at,
                epoch,
                generation: Some(resume.generation),
                join: Join::Start,
                resumed: true,
                frames: Vec::new(),
            };
        }
        // A replica's generation with a hole has no start to give: a joiner that asked
        // for it is joined at the live edge (the hello says so) until the hole is filled.
        let holed = buffer.hole().is_some();
        let live = match join {
            Join::Live => buffer.live_snapshot(),
            Join::Start if holed => buffer.live_snapshot(),
            Join::Start => None,
        };
        if holed && live.is_none() {
            // Its index failed past the hole: nothing whole to send until the next
            // generation, which starts at its blob.
            return Snapshot {
                pin: None,
                taken_at,
                epoch,
                generation: None,
                join: Join::Start,
                resumed: false,
                frames: Vec::new(),
            };
        }
        match live {
            Some(frames) => Snapshot {
                pin: buffer.pin(),
                taken_at,
                epoch,
                generation,
                join: Join::Live,
                resumed: false,
                frames,
            },
            None => Snapshot {
                pin: buffer.pin(),
                taken_at,
                epoch,
                generation,
                join: Join::Start,
                resumed: false,
                frames: buffer.snapshot_frames(),
            },
        }
    }
}
