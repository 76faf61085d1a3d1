//! The HTTP API: stream listing, health and metrics, and the JSON error body every
//! refused HTTP request gets.

use crate::app::App;
use crate::protocol::StreamName;
use serde::Serialize;
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A request refused before it reached a handler's happy path.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl warp::reject::Reject for HttpError {}

impl HttpError {
    pub fn bad_request(message: impl Into<String>) -> Rejection {
        warp::reject::custom(HttpError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        })
    }
}

pub fn error_response(status: StatusCode, message: &str) -> Response {
    reply::with_status(reply::json(&ErrorBody { error: message }), status).into_response()
}

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

/// Turns every rejection into a JSON error with the right status.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let (status, message) = if let Some(err) = rejection.find::<HttpError>() {
        (err.status, err.message.clone())
    } else if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_owned())
    } else if let Some(err) = rejection.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, err.to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_owned(),
        )
    } else {
        (StatusCode::BAD_REQUEST, format!("{rejection:?}"))
    };
    let mut response = error_response(status, &message);
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(
            warp::http::header::SEC_WEBSOCKET_VERSION,
            warp::http::HeaderValue::from_static("13"),
        );
    }
    Ok(response)
}
