//! Who may publish, watch, read the API and delete: one place that decides, so that the
//! sockets, the HTTP ingest and the API ask the same question the same way.
//!
//! A request carries credentials: a token (`?token=`, or `Authorization: Bearer` over
//! HTTP) and a publish key (`?key=`). With token keys configured, a request that carries
//! a token is judged by its token alone (a token beats a key); one without is judged by
//! the publish key, when one is set. Then, with `--auth-url`, the operator's service has
//! the last word. Missing or bad credentials are 401 (close 4401), a valid token without
//! the right is 403 (4403), an auth service that cannot answer is 503 (4503).
//!
//! Tokens are checked when a socket connects, not while it stays open: a token that
//! expires during a broadcast does not cut it (that would need a re-authentication
//! message in the wire protocol, and would cut every viewer of a long event at once),
//! but a reconnect needs a valid token. An admin can end a session at any time (kick).

pub mod callout;
pub mod redact;
pub mod token;

use crate::config::{AuthMode, Config};
use crate::net::upgrade::WebSocket;
use crate::net::ws::{close_with, Closing};
use crate::protocol::{close, StreamName};
use callout::{Callout, CalloutRequest, Verdict};
use futures_util::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use token::{KeyError, Permissions, TokenKeys};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

pub use token::TokenError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Watch,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Watch => "watch",
        }
    }
}

/// What a request presented. Never logged.
#[derive(Clone, Default, Deserialize)]
pub struct Credentials {
    pub token: Option<String>,
    pub key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| redact::REDACTED))
            .field("key", &self.key.as_ref().map(|_| redact::REDACTED))
            .finish()
    }
}

/// Who asks, for the callout.
#[derive(Debug, Default, Clone, Copy)]
pub struct Asker<'a> {
    pub peer: Option<SocketAddr>,
    pub session: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credential, or one that is wrong, expired or not valid yet: 401, 4401.
    Unauthorized(String),
    /// A valid credential without this right: 403, 4403.
    Forbidden(String),
    /// The auth service did not answer: 503, 4503. Nothing is let in without it.
    Unavailable(String),
}

impl Denial {
    pub fn reason(&self) -> &str {
        match self {
            Denial::Unauthorized(why) | Denial::Forbidden(why) | Denial::Unavailable(why) => why,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Denial::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Denial::Forbidden(_) => StatusCode::FORBIDDEN,
            Denial::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn close_code(&self) -> u16 {
        match self {
            Denial::Unauthorized(_) => close::UNAUTHORIZED,
            Denial::Forbidden(_) => close::FORBIDDEN,
            Denial::Unavailable(_) => close::AUTH_UNAVAILABLE,
        }
    }

    /// The JSON error, with `WWW-Authenticate` on a 401.
    pub fn response(&self) -> Response {
        let mut response = crate::http_error::error_response(self.status(), self.reason());
        if let Denial::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"blobcast\""),
            );
        }
        response
    }
}

impl From<TokenError> for Denial {
    fn from(err: TokenError) -> Denial {
        Denial::Unauthorized(err.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token keys: {0}")]
    Keys(#[from] KeyError),
}

/// Which streams a reader of the API may see.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Only(Permissions),
}

impl Scope {
    pub fn allows(&self, stream: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(permissions) => permissions.may_watch(stream),
        }
    }
}

pub struct Auth {
    tokens: Option<TokenKeys>,
    publish_key: Option<String>,
    /// `--open-publish`: keyless publishing and deleting from anywhere, not only from
    /// this machine.
    open_publish: bool,
    watch: AuthMode,
    metrics: AuthMode,
    callout: Option<Callout>,
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Auth, AuthError> {
        let tokens = TokenKeys::load(
            config.token_secret_file.as_deref(),
            config.token_public_key.as_deref(),
        )?;
        let callout = config.auth_url.clone().map(|url| {
            Callout::new(
                url,
                Duration::from_millis(config.auth_timeout_ms),
                Duration::from_secs(config.auth_cache_secs),
            )
        });
        Ok(Auth {
            tokens,
            publish_key: config.publish_key.clone(),
            open_publish: config.open_publish,
            watch: config.watch_auth,
            metrics: config.metrics_auth,
            callout,
        })
    }

    /// May this request publish or watch `stream`? Asks the callout last.
    pub async fn authorize(
        &self,
        action: Action,
        stream: &StreamName,
        credentials: &Credentials,
        asker: Asker<'_>,
    ) -> Result<(), Denial> {
        match action {
            Action::Publish => self.may_publish(stream, credentials, asker.peer)?,
            Action::Watch => self.may_watch(stream, credentials)?,
        }
        let Some(callout) = &self.callout else {
            return Ok(());
        };
        let request = CalloutRequest {
            action: action.as_str(),
            stream: stream.as_str(),
            token: credentials.token.as_deref(),
            key: credentials.key.as_deref(),
            ip: asker.peer.map(|peer| peer.ip().to_string()),
            session: asker.session,
            user_agent: asker.user_agent,
        };
        match callout.ask(&request).await {
            Ok(Verdict::Allow) => Ok(()),
            Ok(Verdict::Deny(401)) => Err(Denial::Unauthorized(
                "the auth service refused these credentials (401)".into(),
            )),
            Ok(Verdict::Deny(status)) => Err(Denial::Forbidden(format!(
                "the auth service refused to let you {} {stream} ({status})",
                action.as_str()
            ))),
            Err(err) => Err(Denial::Unavailable(format!("{err}; refused to be safe"))),
        }
    }

    fn may_publish(
        &self,
        stream: &StreamName,
        credentials: &Credentials,
        client: Option<SocketAddr>,
    ) -> Result<(), Denial> {
        if let (Some(keys), Some(token)) = (&self.tokens, &credentials.token) {
            return if keys.verify(token)?.may_publish(stream.as_str()) {
                Ok(())
            } else {
                Err(Denial::Forbidden(format!(
                    "this token may not publish {stream}"
                )))
            };
        }
        match (&self.publish_key, &self.tokens) {
            (Some(expected), _) if key_matches(expected, credentials.key.as_deref()) => Ok(()),
            (Some(_), None) => Err(Denial::Unauthorized(
                "wrong or missing publish key (?key=)".into(),
            )),
            (Some(_), Some(_)) => Err(Denial::Unauthorized(
                "wrong or missing publish key (?key=) or token (?token=)".into(),
            )),
            (None, Some(_)) => Err(Denial::Unauthorized(
                "publishing needs a token (?token=)".into(),
            )),
            (None, None) => self.keyless(client, "publishing"),
        }
    }

    /// With no key and no tokens, only this machine may publish or delete (a proxy on
    /// it forwards for remote clients, which count as remote), unless `--open-publish`.
    fn keyless(&self, client: Option<SocketAddr>, what: &str) -> Result<(), Denial> {
        if self.open_publish || client.is_some_and(|c| is_loopback(c.ip())) {
            return Ok(());
        }
        Err(Denial::Unauthorized(format!(
            "{what} from another machine needs a publish key or token: this server has none (set --publish-key, or --open-publish to allow anyone)"
        )))
    }

    fn may_watch(&self, stream: &StreamName, credentials: &Credentials) -> Result<(), Denial> {
        if let Scope::Only(permissions) = self.watch_scope(credentials)? {
            if !permissions.may_watch(stream.as_str()) {
                return Err(Denial::Forbidden(format!(
                    "this token may not watch {stream}"
                )));
            }
        }
        Ok(())
    }

    /// The streams this request may see and watch (`--watch-auth`).
    pub fn watch_scope(&self, credentials: &Credentials) -> Result<Scope, Denial> {
        match self.watch {
            AuthMode::Open => Ok(Scope::All),
            AuthMode::Token => Ok(Scope::Only(
                self.token(credentials, "this stream needs a token (?token=)")?,
            )),
        }
    }

    /// `/metrics` and the API's listings (`--metrics-auth`).
    pub fn may_read_api(&self, credentials: &Credentials) -> Result<(), Denial> {
        match self.metrics {
            AuthMode::Open => Ok(()),
            AuthMode::Token => self.admin(credentials),
        }
    }

    /// Deleting a recording: an admin token when tokens are configured, else the
    /// publish key when one is set, else anyone.
    pub fn may_delete(
        &self,
        credentials: &Credentials,
        client: Option<SocketAddr>,
    ) -> Result<(), Denial> {
        if self.tokens.is_some() {
            return self.admin(credentials);
        }
        match (&self.publish_key, credentials.key.as_deref()) {
            (None, _) => self.keyless(client, "deleting"),
            (Some(_), None) => Err(Denial::Unauthorized(
                "deleting needs the publish key (?key=)".into(),
            )),
            (Some(expected), given) if key_matches(expected, given) => Ok(()),
            (Some(_), _) => Err(Denial::Forbidden("wrong publish key".into())),
        }
    }

    /// An admin token: kicking, and deleting when tokens are configured.
    pub fn admin(&self, credentials: &Credentials) -> Result<(), Denial> {
        if self.tokens.is_none() {
            return Err(Denial::Forbidden(
                "this needs an admin token, and this server checks no tokens (--token-secret-file or --token-public-key)".into(),
            ));
        }
        if self
            .token(
                credentials,
                "this needs an admin token (Authorization: Bearer, or ?token=)",
            )?
            .admin
        {
            Ok(())
        } else {
            Err(Denial::Forbidden("this token is not an admin's".into()))
        }
    }

    /// The verified token's permissions; `missing` is the 401's reason without one.
    fn token(&self, credentials: &Credentials, missing: &str) -> Result<Permissions, Denial> {
        let (Some(keys), Some(token)) = (&self.tokens, &credentials.token) else {
            return Err(Denial::Unauthorized(missing.to_owned()));
        };
        Ok(keys.verify(token)?)
    }
}

/// Compares in constant time, so the key cannot be guessed byte by byte.
fn key_matches(expected: &str, given: Option<&str>) -> bool {
    let given = given.unwrap_or_default().as_bytes();
    let expected = expected.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Deserialize)]
struct CredentialQuery {
    token: Option<String>,
    key: Option<String>,
}

/// A request's credentials: `?token=`, `?key=`, and `Authorization: Bearer` (which wins
/// over `?token=`).
pub fn credentials() -> impl Filter<Extract = (Credentials,), Error = Infallible> + Clone {
    let query = warp::query::<CredentialQuery>()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    query
        .and(
            warp::header::optional::<String>("authorization")
                .or(warp::any().map(|| None))
                .unify(),
        )
        .map(
            |query: Option<CredentialQuery>, authorization: Option<String>| {
                let bearer = authorization.and_then(|value| {
                    let (scheme, token) = value.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| token.trim().to_owned())
                });
                let (token, key) = query.map_or((None, None), |q| (q.token, q.key));
                Credentials {
                    token: bearer.or(token).filter(|t| !t.is_empty()),
                    key: key.filter(|k| !k.is_empty()),
                }
            },
        )
}

/// Answers a WebSocket whose request was denied: the upgrade completes so that a
/// browser can read the close code and reason, then the socket closes with them.
pub async fn refuse_socket(ws: WebSocket, who: String, denial: Denial) {
    let (mut tx, _rx) = ws.split();
    log::info!("{who} refused: {}", denial.reason());
    close_with(&mut tx, Closing::new(denial.close_code(), denial.reason())).await;
}

/// IPv4-mapped IPv6 loopback (a dual-stack listener's view of 127.0.0.1) too.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(publish_key: Option<&str>, secret: Option<&std::path::Path>) -> Auth {
        let mut config = Config::local();
        config.publish_key = publish_key.map(str::to_owned);
        config.token_secret_file = secret.map(ToOwned::to_owned);
        Auth::from_config(&config).unwrap()
    }

    fn creds(token: Option<&str>, key: Option<&str>) -> Credentials {
        Credentials {
            token: token.map(str::to_owned),
            key: key.map(str::to_owned),
        }
    }

    #[test]
    fn a_token_beats_a_key_and_the_key_alone_still_works() {
        let secret =
            std::env::temp_dir().join(format!("blobcast-auth-unit-{}", std::process::id()));
        std::fs::write(&secret, "unit test secret, long enough").unwrap();
        let auth = auth(Some("k"), Some(&secret));
        let cam = StreamName::parse("cam").unwrap();
        let watcher = token::mint(
            &secret,
            Permissions {
                watch: vec!["*".into()],
                ..Permissions::default()
            },
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            auth.may_publish(&cam, &creds(None, Some("k")), REMOTE),
            Ok(())
        );
        assert!(matches!(
            auth.may_publish(&cam, &creds(Some(&watcher), Some("k")), REMOTE),
            Err(Denial::Forbidden(_))
        ));
        assert!(matches!(
            auth.may_publish(&cam, &creds(None, Some("nope")), REMOTE),
            Err(Denial::Unauthorized(_))
        ));
        assert!(matches!(
            auth.may_delete(&creds(None, Some("k")), REMOTE),
            Err(Denial::Unauthorized(_))
        ));
        let _ = std::fs::remove_file(secret);
        let open = self::auth(None, None);
        assert_eq!(
            open.may_publish(&cam, &Credentials::default(), LOCAL),
            Ok(())
        );
        assert_eq!(open.may_watch(&cam, &Credentials::default()), Ok(()));
    }

    const LOCAL: Option<SocketAddr> = Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        4000,
    ));
    const REMOTE: Option<SocketAddr> = Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)),
        4000,
    ));

    #[test]
    fn with_no_key_and_no_tokens_only_this_machine_publishes_or_deletes() {
        let open = self::auth(None, None);
        let cam = StreamName::parse("cam").unwrap();
        let none = Credentials::default();
        assert_eq!(open.may_publish(&cam, &none, LOCAL), Ok(()));
        assert_eq!(open.may_delete(&none, LOCAL), Ok(()));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(open.may_publish(&cam, &none, Some(mapped)), Ok(()));
        for client in [REMOTE, None] {
            assert!(matches!(
                open.may_publish(&cam, &none, client),
                Err(Denial::Unauthorized(_))
            ));
            assert!(matches!(
                open.may_delete(&none, client),
                Err(Denial::Unauthorized(_))
            ));
        }
        let mut config = Config::local();
        config.open_publish = true;
        let anyone = Auth::from_config(&config).unwrap();
        assert_eq!(anyone.may_publish(&cam, &none, REMOTE), Ok(()));
        assert_eq!(anyone.may_delete(&none, REMOTE), Ok(()));
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let shown = format!("{:?}", creds(Some("eyJsecret"), Some("hunter2")));
        assert!(
            !shown.contains("eyJsecret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
