//! Command-line flags and their environment variables, with the defaults that let
//! `cargo run --release` serve a useful local instance with no setup.

use crate::net::client_addr::TrustedProxy;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "blobcast",
    version,
    about = "Live WebM relay: browser MediaRecorder in, many viewers out"
)]
pub struct Config {
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
    #[arg(long, env = "BLOBCAST_MAX_VIEWERS", default_value_t = 2000)]
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

    /// Do not record streams (what --record-dir holds is still listed and served).
    #[arg(long, env = "BLOBCAST_NO_RECORD")]
    pub no_record: bool,

    /// Seconds without a POST after which an HTTP publisher counts as gone.
    #[arg(long, env = "BLOBCAST_INGEST_TIMEOUT", default_value_t = 10)]
    pub ingest_timeout_secs: u64,

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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("refusing to listen on {0} with no publish key: anyone who can reach it could publish. Set --publish-key (or BLOBCAST_PUBLISH_KEY), or pass --open-publish to allow it")]
    OpenPublish(SocketAddr),
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
        if !self.listen.ip().is_loopback() && self.publish_key.is_none() && !self.open_publish {
            return Err(ConfigError::OpenPublish(self.listen));
        }
        Ok(())
    }
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
        assert!(!config.no_record);
        assert_eq!(config.ingest_timeout_secs, 10);
        let config = Config::parse_from(["blobcast", "--record-dir", "/srv/rec", "--no-record"]);
        assert_eq!(config.record_dir, PathBuf::from("/srv/rec"));
        assert!(config.no_record);
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
