//! wss for the relay bench: a self-signed certificate for `localhost` written where the
//! server reads it (`--tls-cert`/`--tls-key`), and a client connector that trusts it.

use std::path::PathBuf;
use std::sync::Arc;
use tokio_tungstenite::Connector;

pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub connector: Connector,
}

pub fn self_signed() -> Tls {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let dir = std::env::temp_dir().join(format!("blobcast-relay-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write the key");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(made.cert.der().clone())
        .expect("a valid certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Tls {
        cert,
        key,
        connector: Connector::Rustls(Arc::new(config)),
    }
}
