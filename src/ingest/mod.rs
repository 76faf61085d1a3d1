//! Ingress: media comes in here, from a publisher's two WebSockets (`socket`) or from
//! HTTP uploads (`http`, its sessions in `sessions`), and both paths hand every frame to
//! the same rules (`frame::accept_frame`) before it reaches the stream's `Buffer`.
//!
//! May import: `stream`, `protocol`, `net` (sockets and framing), `app` (from the
//! handlers only), `http_error`. Nothing here is imported by `stream` or `net`.

pub mod frame;
pub mod http;
pub mod sessions;
pub mod socket;
