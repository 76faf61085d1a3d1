//! The JSON error body every refused HTTP request gets, and the rejection handler that
//! turns warp's rejections into it. A leaf: the handshake, the handlers and the route
//! table all use it, and it uses nothing of ours.

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
