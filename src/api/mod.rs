//! The HTTP API beside the sockets: streams, health and metrics (`streams`), and the
//! recordings' list, files and deletion (`recordings`).
//!
//! May import: `app`, `http_error`, `protocol`, `recording`, `stream`.

pub mod recordings;
pub mod streams;
