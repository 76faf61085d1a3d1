//! Blobcast: a live WebM relay. A browser's MediaRecorder publishes over two WebSockets
//! (a blob per recorder generation, then its chunks); any number of viewers receive the
//! current generation and then every live chunk, with no gap and no duplicate.
//!
//! The path of one chunk, folder by folder:
//! `net` (accept, TLS, WebSocket handshake) → `ingest` (publisher socket or HTTP upload,
//! the frame rules) → `stream` (the per-stream `Buffer`, the registry; `webm` tells it
//! where keyframes are) → `egress` (viewer sockets, fan-out writes), and beside it
//! `recording` (one seekable file per publish session). `routes` is the map of the API;
//! `app` is the state its handlers share; `api` serves the JSON and recordings' files.
//!
//! `net::server::run` serves on a bound listener, so tests start it on port 0.

pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn_id;
pub mod egress;
pub mod events;
pub mod http_error;
pub mod ingest;
pub mod metrics;
pub mod mp4;
pub mod net;
pub mod protocol;
pub mod recording;
pub mod routes;
pub mod shutdown;
pub mod sink;
pub mod stream;
pub mod webhook;
pub mod webm;
pub mod ws_head;

pub use config::Config;
pub use net::server::{run, serve, ServerError};
pub use net::tls;
