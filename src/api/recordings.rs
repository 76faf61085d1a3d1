//! Recordings over HTTP: the catalog (`GET /api/recordings`), each file with byte
//! ranges (`GET /recordings/{id}.webm` or `.mp4`, what a `<video>` seek bar asks for), and
//! `DELETE /api/recordings/{id}`. With `--watch-auth token`, the list shows only the
//! recordings of streams the token may watch, and a file needs such a token too;
//! deleting needs an admin token once tokens are configured (else the publish key).

use crate::app::App;
use crate::auth::{Credentials, Denial};
use crate::http_error::error_response;
use crate::recording::container::Container;
use crate::recording::{RecordingError, RecordingInfo};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use std::io::SeekFrom;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{self, Reply, Response};

const READ_CHUNK: usize = 64 * 1024;

#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    info: &'a RecordingInfo,
    url: String,
}

pub fn list(credentials: Credentials, app: App) -> Response {
    let scope = match app
        .auth
        .may_read_api(&credentials)
        .and_then(|()| app.auth.watch_scope(&credentials))
    {
        Ok(scope) => scope,
        Err(denial) => return denial.response(),
    };
    let recordings = app.recorder.list();
    let listed: Vec<_> = recordings
        .iter()
        .filter(|info| scope.allows(&info.stream))
        .map(|info| Listed {
            info,
            url: format!("/recordings/{}", info.file),
        })
        .collect();
    reply::json(&listed).into_response()
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No range (or one we ignore, as RFC 9110 allows: another unit, bad syntax,
    /// several ranges): the whole file, 200.
    Whole,
    /// `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Nothing of the file is in it: 416.
    Unsatisfiable,
}

pub fn parse_range(value: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => ByteRange::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        },
        (true, _, Some(_)) => ByteRange::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => {
            if start < len {
                ByteRange::Part {
                    start,
                    end: len - 1,
                }
            } else {
                ByteRange::Unsatisfiable
            }
        }
        (false, Some(start), Some(end)) if start <= end => {
            if start < len {
                ByteRange::Part {
                    start,
                    end: end.min(len - 1),
                }
            } else {
                ByteRange::Unsatisfiable
            }
        }
        _ => ByteRange::Whole,
    }
}

/// `GET /recordings/{id}.webm` (or `.mp4`, as the recording's `file` says), with `Range`
/// support.
pub async fn file(
    name: String,
    range: Option<String>,
    credentials: Credentials,
    app: App,
) -> Response {
    let not_found = || error_response(StatusCode::NOT_FOUND, "no such recording");
    let scope = match app.auth.watch_scope(&credentials) {
        Ok(scope) => scope,
        Err(denial) => return denial.response(),
    };
    let Some(container) = Container::of_file(&name) else {
        return not_found();
    };
    let Some(id) = name
        .strip_suffix(container.extension())
        .and_then(|stem| stem.strip_suffix('.'))
        .filter(|id| crate::recording::names::is_safe_id(id))
    else {
        return not_found();
    };
    // The name must be the recording's own: `{id}.webm` or `{id}.mp4`, not both.
    let Some(info) = app.recorder.get(id).filter(|info| info.file == name) else {
        return not_found();
    };
    if !scope.allows(&info.stream) {
        let denial = Denial::Forbidden(format!("this token may not watch {}", info.stream));
        return denial.response();
    }
    let Some(path) = app.recorder.file_path(id) else {
        return not_found();
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => return not_found(),
    };
    let len = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return not_found(),
    };
    let (status, start, end) = match parse_range(range.as_deref(), len) {
        ByteRange::Whole => (StatusCode::OK, 0, len),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        ByteRange::Unsatisfiable => {
            let mut response = error_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("the range is outside the recording's {len} bytes"),
            );
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            return response;
        }
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return not_found();
    }
    // The file may still be growing: send exactly the bytes promised.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut left = end - start;
        while left > 0 {
            let mut buf = BytesMut::zeroed(READ_CHUNK.min(left as usize));
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.send(Ok(buf.freeze())).await.is_err() {
                        break;
                    }
                }
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    break;
                }
            }
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = reply::stream(body).into_response();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(container.mime()),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{len}", end - 1);
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("ascii"),
        );
    }
    response
}

/// `DELETE /api/recordings/{id}`: an admin token when tokens are configured, else
/// `?key=` with the publish key when one is set.
pub fn delete(
    id: String,
    credentials: Credentials,
    client: Option<std::net::SocketAddr>,
    app: App,
) -> Response {
    if let Err(denial) = app.auth.may_delete(&credentials, client) {
        return denial.response();
    }
    match app.recorder.delete(&id) {
        Ok(info) => reply::json(&serde_json::json!({ "deleted": info.id })).into_response(),
        Err(err @ RecordingError::NotFound(_)) => {
            error_response(StatusCode::NOT_FOUND, &err.to_string())
        }
        Err(err @ RecordingError::StillRecording(_)) => {
            error_response(StatusCode::CONFLICT, &err.to_string())
        }
        Err(err) => {
            log::error!("{err}");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |v: &str| parse_range(Some(v), 1000);
        assert_eq!(parse_range(None, 1000), ByteRange::Whole);
        assert_eq!(r("bytes=0-99"), ByteRange::Part { start: 0, end: 99 });
        assert_eq!(
            r("bytes=900-"),
            ByteRange::Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            ByteRange::Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), ByteRange::Part { start: 0, end: 999 });
        assert_eq!(
            r("bytes=990-5000"),
            ByteRange::Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(r("bytes=1000-"), ByteRange::Unsatisfiable);
        assert_eq!(r("bytes=1000-2000"), ByteRange::Unsatisfiable);
        assert_eq!(r("bytes=-0"), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        // Ignored, as the RFC allows: bad syntax, other units, several ranges.
        assert_eq!(r("bytes=5-1"), ByteRange::Whole);
        assert_eq!(r("bytes=a-b"), ByteRange::Whole);
        assert_eq!(r("items=0-1"), ByteRange::Whole);
        assert_eq!(r("bytes=0-1,5-6"), ByteRange::Whole);
    }
}
