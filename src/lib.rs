//! Blobcast: a live WebM relay. A browser's MediaRecorder publishes over two WebSockets
//! (a blob per recorder generation, then its chunks); any number of viewers receive the
//! current generation and then every live chunk, with no gap and no duplicate.
//!
//! `server::run` serves on a bound listener, so tests start it on port 0.

pub mod api;
pub mod app;
pub mod client_addr;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod protocol;
pub mod publish;
pub mod recording;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod stream;
pub mod tls;
pub mod upgrade;
pub mod watch;
pub mod webm;
pub mod ws;

pub use config::Config;
pub use server::run;
