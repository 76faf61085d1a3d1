//! Command-line flags and their environment variables, with the defaults that let
//! `cargo run --release` serve a useful local instance with no setup.

use crate::net::client_addr::TrustedProxy;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "blobcast",
    version,
    about = "Live WebM relay: browser MediaRecorder in, many viewers out",
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    /// With no subcommand, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on; port 0 picks a free one.
    #[arg(long, env = "BLOBCAST_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Folder of the browser pages.
    #[arg(long, env = "BLOBCAST_PUBLIC_DIR", default_value = "public")]
    pub public_dir: PathBuf,

    /// Publishers must pass ?key= with this value.
    #[arg(long, env = "BLOBCAST_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// Allow anyone to publish on a non-loopback address without a key.
    #[arg(long, env = "BLOBCAST_OPEN_PUBLISH")]
    pub open_publish: bool,

    /// Largest media payload of one frame (bytes; K, M, G suffixes are 1024-based).
    #[arg(long, env = "BLOBCAST_MAX_FRAME", default_value = "16M", value_parser = parse_size)]
    pub max_frame: u64,

    /// Largest generation the server buffers; a publisher past it is told to restart.
    #[arg(long, env = "BLOBCAST_MAX_BUFFER", default_value = "64M", value_parser = parse_size)]
    pub max_buffer: u64,

    /// How far a viewer may fall behind the live edge before it is disconnected.
    #[arg(long, env = "BLOBCAST_MAX_VIEWER_LAG", default_value = "8M", value_parser = parse_size)]
    pub max_viewer_lag: u64,

    /// Published streams at once; as many again may have viewers waiting for a publisher.
    #[arg(long, env = "BLOBCAST_MAX_STREAMS", default_value_t = 100)]
    pub max_streams: usize,

    /// Viewers per stream.
    #[arg(long, env = "BLOBCAST_MAX_VIEWERS", default_value_t = 10_000)]
    pub max_viewers: usize,

    /// Seconds a viewer socket may take to accept one write before it is dropped as dead.
    #[arg(long, env = "BLOBCAST_SEND_TIMEOUT", default_value_t = 10)]
    pub send_timeout_secs: u64,

    /// PEM certificate chain (leaf first): serve https and wss on --listen. Needs --tls-key.
    #[arg(
        long,
        env = "BLOBCAST_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "BLOBCAST_TLS_KEY",
        requires = "tls_cert",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve https and wss with a certificate generated at start-up (its SHA-256
    /// fingerprint is printed): for a quick test on a LAN, not for production.
    #[arg(long, env = "BLOBCAST_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,

    /// A proxy (IP or network, e.g. 10.0.0.0/8) whose X-Forwarded-For is believed for
    /// logs; repeat or comma-separate. Loopback is always trusted.
    #[arg(
        long = "trusted-proxy",
        env = "BLOBCAST_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<TrustedProxy>,

    /// Folder where every published stream is recorded (created when first needed).
    #[arg(long, env = "BLOBCAST_RECORD_DIR", default_value = "rec")]
    pub record_dir: PathBuf,

    /// Stop recording (cleanly: the file is finalized, the live stream goes on) when the
    /// --record-dir filesystem has less free space than this.
    #[arg(long, env = "BLOBCAST_MIN_FREE_DISK", default_value = "1G", value_parser = parse_size)]
    pub min_free_disk: u64,

    /// Do not record streams (what --record-dir holds is still listed and served).
    #[arg(long, env = "BLOBCAST_NO_RECORD")]
    pub no_record: bool,

    /// Seconds without a POST after which an HTTP publisher counts as gone.
    #[arg(long, env = "BLOBCAST_INGEST_TIMEOUT", default_value_t = 10)]
    pub ingest_timeout_secs: u64,

    /// Seconds a publisher socket may send neither media nor a pong before its session
    /// counts as gone (the server pings every third of it).
    #[arg(long, env = "BLOBCAST_PUBLISHER_TIMEOUT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub publisher_timeout_secs: u64,

    /// Open connections at most (WebSockets included); past it, new ones are refused.
    /// Lowered at start to what the open-file limit allows. Each viewer holds two.
    #[arg(long, env = "BLOBCAST_MAX_CONNECTIONS", default_value_t = 25_000)]
    pub max_connections: usize,

    /// Open connections from one client IP at most (loopback and --trusted-proxy
    /// peers carry many clients and are bounded only by --max-connections).
    #[arg(long, env = "BLOBCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 200)]
    pub max_connections_per_ip: usize,

    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "BLOBCAST_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,

    /// Seconds from SIGTERM (or Ctrl-C) to exit: sockets are closed and recordings
    /// finalized within it, and whatever is still open then is dropped.
    #[arg(long, env = "BLOBCAST_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// File holding the HS256 secret that signs access tokens (JWT).
    #[arg(long, env = "BLOBCAST_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// PEM public key (RSA for RS256, Ed25519 for EdDSA) of a service that signs access
    /// tokens; may be set with --token-secret-file.
    #[arg(long, env = "BLOBCAST_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,

    /// Who may watch: anyone (open), or only with a token that may watch the stream.
    #[arg(long, env = "BLOBCAST_WATCH_AUTH", value_enum, default_value_t = AuthMode::Open)]
    pub watch_auth: AuthMode,

    /// Who may read /metrics and the /api listings: anyone (open), or an admin token.
    #[arg(long, env = "BLOBCAST_METRICS_AUTH", value_enum, default_value_t = AuthMode::Open)]
    pub metrics_auth: AuthMode,

    /// Ask this URL before every publish and watch (POST JSON; 2xx allows).
    #[arg(long, env = "BLOBCAST_AUTH_URL")]
    pub auth_url: Option<String>,

    /// Milliseconds the --auth-url may take; slower counts as a refusal.
    #[arg(long, env = "BLOBCAST_AUTH_TIMEOUT_MS", default_value_t = 2000)]
    pub auth_timeout_ms: u64,

    /// Seconds an --auth-url answer is reused for the same action, stream and credential.
    #[arg(long, env = "BLOBCAST_AUTH_CACHE_SECS", default_value_t = 10)]
    pub auth_cache_secs: u64,

    /// POST JSON events (publish, recordings, viewer counts) here; repeatable.
    #[arg(long = "webhook", env = "BLOBCAST_WEBHOOK", value_delimiter = ',')]
    pub webhooks: Vec<String>,

    /// File holding the secret that signs webhook bodies (X-Blobcast-Signature).
    #[arg(long, env = "BLOBCAST_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// NATS server(s) with JetStream, comma-separated (nats://host:4222): makes this node
    /// a cluster member (docs/cluster.md). Without it the node stands alone.
    #[arg(long, env = "BLOBCAST_NATS")]
    pub nats: Option<String>,

    /// A NATS credentials file (.creds) for --nats.
    #[arg(long, env = "BLOBCAST_NATS_CREDS", requires = "nats")]
    pub nats_creds: Option<PathBuf>,

    /// This node's name in the cluster's stream directory (default: host name and a
    /// random suffix).
    #[arg(long, env = "BLOBCAST_NODE_NAME", requires = "nats")]
    pub node_name: Option<String>,

    /// JetStream replicas of the cluster's log and directory: 1 on a single nats-server,
    /// 3 on a real NATS cluster.
    #[arg(
        long,
        env = "BLOBCAST_NATS_REPLICAS",
        default_value_t = 1,
        requires = "nats"
    )]
    pub nats_replicas: usize,
}

/// `open`: no credential needed; `token`: a signed token with the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Open,
    Token,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a signed access token (HS256) and exit.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The same file as the server's --token-secret-file.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Streams it may publish: names or `prefix*`; repeat or comma-separate.
    #[arg(long, value_delimiter = ',')]
    pub publish: Vec<String>,
    /// Streams it may watch: names, `prefix*` or `*`; repeat or comma-separate.
    #[arg(long, value_delimiter = ',')]
    pub watch: Vec<String>,
    /// May delete recordings, see every stream and kick publishers.
    #[arg(long)]
    pub admin: bool,
    /// How long it is valid: 90s, 30m, 2h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("refusing to listen on {0} with no publish key: anyone who can reach it could publish. Set --publish-key (or BLOBCAST_PUBLISH_KEY), tokens (--token-secret-file, --token-public-key) or --auth-url, or pass --open-publish to allow it")]
    OpenPublish(SocketAddr),
    #[error("--{0} token needs a way to check tokens: --token-secret-file or --token-public-key")]
    TokenModeWithoutKeys(&'static str),
}

impl Config {
    /// The defaults, for tests and embedding.
    pub fn local() -> Config {
        // The defaults alone: a BLOBCAST_* variable in the caller's environment (a publish
        // key, say) must not change what a test or an embedder gets.
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .get_matches_from(["blobcast", "--listen", "127.0.0.1:0"]);
        Config::from_arg_matches(&matches).expect("the defaults are valid")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let guarded =
            self.publish_key.is_some() || self.has_token_keys() || self.auth_url.is_some();
        if !self.listen.ip().is_loopback() && !guarded && !self.open_publish {
            return Err(ConfigError::OpenPublish(self.listen));
        }
        for (flag, mode) in [
            ("watch-auth", self.watch_auth),
            ("metrics-auth", self.metrics_auth),
        ] {
            if mode == AuthMode::Token && !self.has_token_keys() {
                return Err(ConfigError::TokenModeWithoutKeys(flag));
            }
        }
        Ok(())
    }

    /// Tokens are checked here (a secret, a public key or both).
    pub fn has_token_keys(&self) -> bool {
        self.token_secret_file.is_some() || self.token_public_key.is_some()
    }
}

/// "90s", "30m", "2h", "7d" or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1),
        Some((i, 'm')) => (&text[..i], 60),
        Some((i, 'h')) => (&text[..i], 3600),
        Some((i, 'd')) => (&text[..i], 86_400),
        _ => (text, 1),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 2h or 7d"))?;
    value
        .checked_mul(unit)
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} must be above zero and below a few billion years"))
}

/// "16M", "512K", "1G" or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 16M, 512K or 1048576"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn public_addresses_need_a_key_or_explicit_consent() {
        let mut config = Config::local();
        assert!(config.validate().is_ok());
        config.listen = "0.0.0.0:8000".parse().unwrap();
        assert!(config.validate().is_err());
        config.open_publish = true;
        assert!(config.validate().is_ok());
        config.open_publish = false;
        config.publish_key = Some("k".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn recording_flags_parse() {
        let config = Config::local();
        assert_eq!(config.record_dir, PathBuf::from("rec"));
        assert_eq!(config.min_free_disk, 1 << 30);
        assert!(!config.no_record);
        assert_eq!(config.ingest_timeout_secs, 10);
        let config = Config::parse_from(["blobcast", "--record-dir", "/srv/rec", "--no-record"]);
        assert_eq!(config.record_dir, PathBuf::from("/srv/rec"));
        assert!(config.no_record);
    }

    #[test]
    fn auth_flags_parse_and_token_modes_need_keys() {
        let config = Config::local();
        assert_eq!(config.watch_auth, AuthMode::Open);
        assert_eq!(config.auth_timeout_ms, 2000);
        assert_eq!(config.auth_cache_secs, 10);
        assert!(config.command.is_none());
        let config = Config::parse_from([
            "blobcast",
            "--watch-auth",
            "token",
            "--webhook",
            "http://a/x",
            "--webhook",
            "http://b/y",
        ]);
        assert_eq!(config.webhooks.len(), 2);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TokenModeWithoutKeys("watch-auth"))
        ));
        let mut config = Config::parse_from(["blobcast", "--token-secret-file", "s"]);
        config.listen = "0.0.0.0:8000".parse().unwrap();
        assert!(config.validate().is_ok(), "tokens guard publishing");
    }

    #[test]
    fn the_token_subcommand_parses_and_leaves_the_server_flags_alone() {
        let config = Config::parse_from([
            "blobcast",
            "token",
            "--secret-file",
            "F",
            "--publish",
            "cam1",
            "--watch",
            "class-*,lobby",
            "--ttl",
            "2h",
        ]);
        let Some(Command::Token(args)) = config.command else {
            panic!("the subcommand")
        };
        assert_eq!(args.publish, ["cam1"]);
        assert_eq!(args.watch, ["class-*", "lobby"]);
        assert_eq!(args.ttl, Duration::from_secs(7200));
        assert!(!args.admin);
        assert!(
            Config::try_parse_from(["blobcast", "--no-record", "token", "--secret-file", "F"])
                .is_err()
        );
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("0").is_err() && parse_duration("soon").is_err());
    }

    #[test]
    fn cluster_flags_parse_and_need_nats() {
        assert!(Config::local().nats.is_none(), "the default stands alone");
        let config = Config::parse_from([
            "blobcast",
            "--nats",
            "nats://127.0.0.1:4222",
            "--nats-creds",
            "n.creds",
            "--node-name",
            "edge-1",
        ]);
        assert_eq!(config.nats.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(config.node_name.as_deref(), Some("edge-1"));
        assert_eq!(config.nats_replicas, 1);
        assert!(Config::try_parse_from(["blobcast", "--nats-creds", "n.creds"]).is_err());
    }

    #[test]
    fn tls_and_proxy_flags_parse_and_conflict() {
        let config = Config::parse_from([
            "blobcast",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--trusted-proxy",
            "10.0.0.0/8,192.0.2.7",
            "--trusted-proxy",
            "fd00::/8",
        ]);
        assert_eq!(config.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(config.trusted_proxies.len(), 3);
        assert!(Config::local().trusted_proxies.is_empty());
        let parse = |args: &[&str]| Config::try_parse_from([&["blobcast"], args].concat());
        assert!(parse(&["--tls-self-signed"]).unwrap().tls_self_signed);
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--tls-self-signed", "--tls-cert", "c", "--tls-key", "k"]).is_err());
        assert!(parse(&["--trusted-proxy", "somewhere"]).is_err());
    }
}
