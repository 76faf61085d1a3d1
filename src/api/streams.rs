//! Streams, health and metrics: `GET /api/streams`, `GET /api/streams/{stream}`,
//! `GET /api/streams/{stream}/stats`, `POST /api/streams/{stream}/kick`, `GET /healthz`, `GET /metrics`. In a cluster the
//! streams are the whole cluster's: this node's own, and the directory's entries for
//! those published elsewhere. Each asks `auth` first: with
//! `--watch-auth token` a reader sees only the streams its token may watch, with
//! `--metrics-auth token` only an admin reads at all.

use crate::app::App;
use crate::auth::{Credentials, Denial, Scope};
use crate::cluster::Entry;
use crate::http_error::{error_response, HttpError};
use crate::metrics::Metrics;
use crate::protocol::StreamName;
use crate::stream::StreamInfo;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

/// The streams this reader may see, or why it may see none.
fn scope(app: &App, credentials: &Credentials) -> Result<Scope, Denial> {
    app.auth.may_read_api(credentials)?;
    app.auth.watch_scope(credentials)
}

/// Whether this reader may see `name` (`get_stream` and `stream_stats` alike).
fn may_see(app: &App, credentials: &Credentials, name: &StreamName) -> Result<(), Denial> {
    if scope(app, credentials)?.allows(name.as_str()) {
        Ok(())
    } else {
        Err(Denial::Forbidden(format!(
            "this token may not watch {name}"
        )))
    }
}

pub async fn list_streams(credentials: Credentials, app: App) -> Response {
    let scope = match scope(&app, &credentials) {
        Ok(scope) => scope,
        Err(denial) => return denial.response(),
    };
    let mut local = app.registry.list();
    local.retain(|info| scope.allows(info.name.as_str()));
    let Some(cluster) = &app.cluster else {
        return reply::json(&local).into_response();
    };
    let mut entries = cluster.streams().await.unwrap_or_default();
    entries.retain(|entry| scope.allows(&entry.name));
    let mut listed: Vec<serde_json::Value> = Vec::new();
    for info in &local {
        let entry = entries.iter().find(|e| e.name == info.name.as_str());
        listed.push(with_node(info, entry, cluster.node()));
    }
    for entry in &entries {
        if !local.iter().any(|info| info.name.as_str() == entry.name) {
            listed.push(from_directory(entry));
        }
    }
    listed.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    reply::json(&listed).into_response()
}

pub async fn get_stream(
    name: String,
    credentials: Credentials,
    app: App,
) -> Result<Response, Rejection> {
    let name = StreamName::parse(&name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    if let Err(denial) = may_see(&app, &credentials, &name) {
        return Ok(denial.response());
    }
    let local = app.registry.get(&name).map(|stream| stream.info());
    let Some(cluster) = &app.cluster else {
        return Ok(match local {
            Some(info) => reply::json(&info).into_response(),
            None => error_response(StatusCode::NOT_FOUND, "no such stream"),
        });
    };
    let entry = cluster.stream(&name).await;
    Ok(match (local, entry) {
        (Some(info), entry) => reply::json(&with_node(&info, entry.as_ref(), cluster.node())),
        (None, Some(entry)) => reply::json(&from_directory(&entry)),
        (None, None) => return Ok(error_response(StatusCode::NOT_FOUND, "no such stream")),
    }
    .into_response())
}

/// This node's figures of one stream and a row per viewer socket (at most
/// `viewers::MAX_ROWS`), under the same rules as `get_stream`.
pub fn stream_stats(
    name: String,
    credentials: Credentials,
    app: App,
) -> Result<Response, Rejection> {
    let name = StreamName::parse(&name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    if let Err(denial) = may_see(&app, &credentials, &name) {
        return Ok(denial.response());
    }
    let Some(stream) = app.registry.get(&name) else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "no such stream on this node",
        ));
    };
    let (blob_viewers, chunk_viewers, _, generation_age, _) = stream.figures();
    let table = stream.viewers();
    let rows = table.rows();
    let stats = serde_json::json!({
        "stream": stream.info(),
        "blob_viewers": blob_viewers,
        "chunk_viewers": chunk_viewers,
        "generation_age_seconds": generation_age.map(|age| age.as_secs_f64()),
        "viewer_sockets": table.len(),
        "viewers_truncated": table.len() > rows.len(),
        "viewers": rows,
    });
    Ok(reply::json(&stats).into_response())
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

/// A stream this node has, and the node that publishes it.
fn with_node(info: &StreamInfo, entry: Option<&Entry>, this_node: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(info).expect("stream info serializes");
    let node = match (info.publisher_connected_since, entry) {
        (Some(_), _) => Some(this_node),
        (None, Some(entry)) => Some(entry.node.as_str()),
        (None, None) => None,
    };
    value["node"] = node.into();
    value
}

/// A stream published on another node, which this node has no viewer of.
fn from_directory(entry: &Entry) -> serde_json::Value {
    serde_json::json!({
        "name": entry.name,
        "live": entry.live,
        "mime": entry.mime,
        "generation": entry.generation,
        "buffered_bytes": 0,
        "viewers": 0,
        "publisher_connected_since": entry.since,
        "ingest_bits_per_second": entry.ingest_bits_per_second,
        "media": entry.media,
        "node": entry.node,
    })
}

/// `ok`, and in a cluster the NATS connection's state.
pub fn healthz(app: App) -> Response {
    match &app.cluster {
        None => "ok".into_response(),
        Some(cluster) => format!("ok\nnats: {}\n", cluster.health()).into_response(),
    }
}

pub fn metrics(credentials: Credentials, app: App) -> Response {
    if let Err(denial) = app.auth.may_read_api(&credentials) {
        return denial.response();
    }
    let (streams, viewers) = app.registry.refresh_metrics();
    for (state, count) in app.recorder.count_by_state() {
        app.registry.metrics().set_recordings(state.as_str(), count);
    }
    if !app.config.no_record {
        app.recorder.free_bytes();
    }
    let body = app.registry.metrics().render(streams, viewers, |out| {
        if let Some(cluster) = &app.cluster {
            cluster.render_metrics(out);
        }
    });
    reply::with_header(body, "content-type", Metrics::CONTENT_TYPE).into_response()
}
