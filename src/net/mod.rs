//! The network edge: the accept loop (`accept`: limits, timeouts, TLS handshakes),
//! running the server (`server`), certificates (`tls`), the
//! WebSocket handshake (`upgrade`) and what every socket shares (`ws`: close codes,
//! fragmented writes, peer names), and the client's address behind a proxy
//! (`client_addr`).
//!
//! May import: `config`, `app` and `routes` (only `server`, which runs them),
//! `http_error`, `protocol`, `stream` (refusals' close codes), `shutdown`. Nothing in
//! the stream core imports from here.

pub mod accept;
pub mod client_addr;
pub mod server;
pub mod tls;
pub mod upgrade;
pub mod ws;
