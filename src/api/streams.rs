//! Streams, health and metrics: `GET /api/streams`, `GET /api/streams/{stream}`,
//! `GET /metrics`.

use crate::app::App;
use crate::http_error::{error_response, HttpError};
use crate::protocol::StreamName;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

pub fn list_streams(app: App) -> Response {
    reply::json(&app.registry.list()).into_response()
}

pub fn get_stream(name: String, app: App) -> Result<Response, Rejection> {
    let name = StreamName::parse(&name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    Ok(match app.registry.get(&name) {
        Some(stream) => reply::json(&stream.info()).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "no such stream"),
    })
}

pub fn metrics(app: App) -> Response {
    let (streams, viewers) = app.registry.counts();
    let body = app.registry.metrics().render(streams, viewers);
    reply::with_header(body, "content-type", "text/plain; version=0.0.4").into_response()
}
