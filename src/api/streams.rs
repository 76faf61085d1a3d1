//! Streams, health and metrics: `GET /api/streams`, `GET /api/streams/{stream}`,
//! `POST /api/streams/{stream}/kick`, `GET /metrics`. Each asks `auth` first: with
//! `--watch-auth token` a reader sees only the streams its token may watch, with
//! `--metrics-auth token` only an admin reads at all.

use crate::app::App;
use crate::auth::{Credentials, Denial, Scope};
use crate::http_error::{error_response, HttpError};
use crate::protocol::StreamName;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

/// The streams this reader may see, or why it may see none.
fn scope(app: &App, credentials: &Credentials) -> Result<Scope, Denial> {
    app.auth.may_read_api(credentials)?;
    app.auth.watch_scope(credentials)
}

pub fn list_streams(credentials: Credentials, app: App) -> Response {
    let scope = match scope(&app, &credentials) {
        Ok(scope) => scope,
        Err(denial) => return denial.response(),
    };
    let mut streams = app.registry.list();
    streams.retain(|info| scope.allows(info.name.as_str()));
    reply::json(&streams).into_response()
}

pub fn get_stream(name: String, credentials: Credentials, app: App) -> Result<Response, Rejection> {
    let name = StreamName::parse(&name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let scope = match scope(&app, &credentials) {
        Ok(scope) => scope,
        Err(denial) => return Ok(denial.response()),
    };
    if !scope.allows(name.as_str()) {
        return Ok(Denial::Forbidden(format!("this token may not watch {name}")).response());
    }
    Ok(match app.registry.get(&name) {
        Some(stream) => reply::json(&stream.info()).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "no such stream"),
    })
}

/// An admin ends the stream's publish session, with the reason "kicked by admin".
pub fn kick(name: String, credentials: Credentials, app: App) -> Result<Response, Rejection> {
    let name = StreamName::parse(&name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    if let Err(denial) = app.auth.admin(&credentials) {
        return Ok(denial.response());
    }
    let publishing = app
        .registry
        .get(&name)
        .filter(|stream| stream.presence.lock().publisher.is_some());
    let Some(stream) = publishing else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "no publisher session on this stream",
        ));
    };
    stream.kick();
    // An HTTP publisher has no socket to close: its session is let go here.
    app.http_publishers.release(&name, None);
    log::info!("publisher on {name} kicked by admin");
    Ok(reply::json(&serde_json::json!({ "kicked": name })).into_response())
}

pub fn metrics(credentials: Credentials, app: App) -> Response {
    if let Err(denial) = app.auth.may_read_api(&credentials) {
        return denial.response();
    }
    let (streams, viewers) = app.registry.counts();
    let body = app.registry.metrics().render(streams, viewers);
    reply::with_header(body, "content-type", "text/plain; version=0.0.4").into_response()
}
