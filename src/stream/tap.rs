//! A stream's tap: an observer that is handed everything its local publisher's input did
//! to the stream (start, each frame kept, end), in the buffer's order, so that it can be
//! copied elsewhere (the cluster's log, `cluster::publication`). It is called under the
//! stream's buffer lock, so it must only hand things on, never wait.

use super::buffer::Accepted;
use bytes::Bytes;

pub trait Tap: Send + Sync {
    /// `{"type":"start"}`: the publisher's MIME type.
    fn started(&self, mime: &str);
    /// A frame the buffer kept (appended, held, or a new generation's blob); refused and
    /// dropped frames are not passed on.
    fn accepted(&self, frame: &Bytes, blob: bool, accepted: Accepted);
    /// The stream ended: the publisher stopped or is gone.
    fn ended(&self);
}
