//! Native TLS: https and wss on the listening port, with rustls (ring provider).
//!
//! This module reads or makes the certificate ([`Identity`], [`prepare`]); warp 0.4 has
//! no TLS of its own, so the handshake runs in our accept loop (`net::accept`), bounded
//! by [`HANDSHAKE_TIMEOUT`] so that a slow or broken client never holds up the next
//! accept.

use crate::config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use super::accept::HANDSHAKE_TIMEOUT;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {0}: expected a PEM file with -----BEGIN CERTIFICATE-----")]
    NoCert(PathBuf),
    #[error("cannot read the TLS private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert and --tls-key go together: give both, or --tls-self-signed")]
    Incomplete,
    #[error("--tls-self-signed cannot be combined with --tls-cert/--tls-key")]
    Conflict,
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key, ready to serve.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    self_signed: bool,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("fingerprint", &self.fingerprint())
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Cert {
                path: cert.into(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert(cert.into()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
            path: key.into(),
            source,
        })?;
        let identity = Identity {
            chain,
            key,
            self_signed: false,
        };
        identity.server_config()?; // a key that does not match fails here, at start-up
        Ok(identity)
    }

    /// A fresh self-signed certificate (ECDSA P-256) for the listen address, localhost,
    /// 127.0.0.1 and ::1; on an unspecified address (0.0.0.0, ::) also this host's name
    /// and its own addresses (of that family; `[::]` takes both), as Linux lists them.
    pub fn self_signed(listen: SocketAddr) -> Result<Identity, TlsError> {
        let mut names = vec![
            "localhost".to_string(),
            Ipv4Addr::LOCALHOST.to_string(),
            Ipv6Addr::LOCALHOST.to_string(),
        ];
        let ip = listen.ip();
        if ip.is_unspecified() {
            names.extend(host_name());
            let addresses = local_addresses();
            let served = addresses.iter().filter(|a| ip.is_ipv6() || a.is_ipv4());
            names.extend(served.map(IpAddr::to_string));
        } else {
            names.push(ip.to_string());
        }
        names.dedup();
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "blobcast self-signed");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            self_signed: true,
        })
    }

    /// The identity the configuration asks for, if any: read from --tls-cert/--tls-key,
    /// or generated for --tls-self-signed.
    pub fn from_config(config: &Config) -> Result<Option<Identity>, TlsError> {
        match (&config.tls_cert, &config.tls_key, config.tls_self_signed) {
            (None, None, false) => Ok(None),
            (Some(_), _, true) | (_, Some(_), true) => Err(TlsError::Conflict),
            (Some(cert), Some(key), false) => Identity::load(cert, key).map(Some),
            (None, None, true) => Identity::self_signed(config.listen).map(Some),
            _ => Err(TlsError::Incomplete),
        }
    }

    /// The leaf certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// SHA-256 of the leaf certificate as colon-separated hex, the form browsers show.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.cert_der())
    }

    /// HTTP/1.1 only over ALPN: WebSockets need the HTTP/1.1 upgrade.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificate the TLS flags ask for, read or generated (a self-signed one is new
/// each call); `None` when TLS is off. `main` calls it before binding, so that a bad
/// certificate fails before anything listens, and hands the identity to
/// [`super::server::serve`], so that the fingerprint it prints is the one served.
pub fn prepare(config: &Config) -> Result<Option<Arc<Identity>>, TlsError> {
    Ok(Identity::from_config(config)?.map(Arc::new))
}

/// SHA-256 of DER bytes, "AB:CD:…".
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// This machine's own addresses, loopback and link-local left out (Linux's /proc;
/// none elsewhere): what a LAN client types to reach a server on 0.0.0.0.
fn local_addresses() -> Vec<IpAddr> {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let mut found = local_ipv4(&read("/proc/net/fib_trie"));
    found.extend(local_ipv6(&read("/proc/net/if_inet6")));
    found.sort_unstable();
    found.dedup();
    found
}

/// The `/32 host LOCAL` leaves of /proc/net/fib_trie: the addresses of this host.
fn local_ipv4(fib_trie: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut leaf = None;
    for line in fib_trie.lines().map(str::trim_start) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.trim().parse::<Ipv4Addr>().ok();
        } else if line.starts_with("/32 host LOCAL") {
            found.extend(leaf.take().filter(|a| !a.is_loopback()).map(IpAddr::V4));
        }
    }
    found
}

/// The global-scope addresses of /proc/net/if_inet6 (a link-local one needs a zone,
/// which a browser's address bar does not take).
fn local_ipv6(if_inet6: &str) -> Vec<IpAddr> {
    const GLOBAL_SCOPE: &str = "00";
    if_inet6
        .lines()
        .filter_map(|line| {
            // address, interface index, prefix length, scope, flags, name
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (hex, scope) = (fields.first()?, fields.get(3)?);
            let bits = u128::from_str_radix(hex, 16).ok()?;
            (*scope == GLOBAL_SCOPE).then_some(IpAddr::V6(Ipv6Addr::from(bits)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_serves_and_has_a_stable_fingerprint() {
        let identity = Identity::self_signed("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(identity.server_config().is_ok());
        let fp = identity.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert_eq!(fp, fingerprint(identity.cert_der()));
    }

    #[test]
    fn cert_files_load_and_a_missing_or_empty_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("blobcast-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key, empty) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("e.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        std::fs::write(&empty, "nothing here\n").unwrap();
        let identity = Identity::load(&cert, &key).unwrap();
        assert_eq!(identity.cert_der(), made.cert.der());
        assert!(!identity.is_self_signed());
        assert!(matches!(
            Identity::load(&empty, &key),
            Err(TlsError::NoCert(_))
        ));
        assert!(matches!(
            Identity::load(&cert, &empty),
            Err(TlsError::Key { .. })
        ));
        assert!(Identity::load(&dir.join("absent.pem"), &key).is_err());
        // A key that belongs to another certificate.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(Identity::load(&cert, &key).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn local_addresses_come_from_procs_tables() {
        // As Linux writes it (indentation trimmed: the parser ignores it).
        let fib_trie = [
            "Main:",
            "+-- 0.0.0.0/0 3 0 5",
            "+-- 127.0.0.0/8 2 0 2",
            "|-- 127.0.0.0",
            "/8 host LOCAL",
            "|-- 127.0.0.1",
            "/32 host LOCAL",
            "|-- 192.168.1.0",
            "/24 link UNICAST",
            "|-- 192.168.1.20",
            "/32 host LOCAL",
            "|-- 192.168.1.255",
            "/32 link BROADCAST",
        ]
        .join("\n   ");
        assert_eq!(
            local_ipv4(&fib_trie),
            [IpAddr::from([192, 168, 1, 20])],
            "neither loopback, nor a network, nor a broadcast address"
        );
        let if_inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
            fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
            fd000000000000000000000000000002 04 40 00 82     eth0\n";
        assert_eq!(
            local_ipv6(if_inet6),
            ["fd00::2".parse::<IpAddr>().unwrap()],
            "global scope only"
        );
        assert!(local_ipv4("").is_empty() && local_ipv6("garbage").is_empty());
    }

    #[test]
    fn the_flags_choose_the_identity() {
        let mut config = Config::local();
        assert!(prepare(&config).unwrap().is_none());
        config.tls_self_signed = true;
        let first = prepare(&config).unwrap().unwrap();
        assert!(first.is_self_signed());

        let mut config = Config::local();
        config.tls_cert = Some("c.pem".into());
        assert!(matches!(
            Identity::from_config(&config),
            Err(TlsError::Incomplete)
        ));
        config.tls_key = Some("k.pem".into());
        config.tls_self_signed = true;
        assert!(matches!(
            Identity::from_config(&config),
            Err(TlsError::Conflict)
        ));
    }
}
