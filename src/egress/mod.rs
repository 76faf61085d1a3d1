//! Egress: media goes out here, to viewers. A viewer's chunk socket reads straight from
//! the stream's shared `Buffer` with a cursor of its own; its blob socket sends the
//! hello, the snapshot and each new generation's blob (`viewer`). Both write through
//! `socket`: once-encoded frame headers and shared payloads in vectored writes.
//!
//! May import: `stream`, `protocol`, `net` (sockets and framing), `app`. Nothing here
//! is imported by `stream`, `ingest` or `net`.

pub mod socket;
pub mod viewer;
