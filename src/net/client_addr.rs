//! The client's address for log lines, behind a reverse proxy too.
//!
//! A request whose direct peer is loopback or a `--trusted-proxy` is taken to come from
//! the first address of its `X-Forwarded-For` header (nginx, as configured in
//! docs/deploy/nginx.conf, sets it to the address it was reached from); any other peer is
//! taken at its word, whatever headers it sends. `X-Forwarded-Proto` from a trusted
//! proxy is logged with it. A forwarded address carries no port unless the header gives
//! one, so it shows as `ip:0`.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use warp::http::HeaderMap;
use warp::Filter;

/// The TCP peer of a connection served by our own accept loop (the TLS one); warp's
/// `RemoteAddr`, which its plain loop sets, cannot be built outside warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A proxy address or network whose forwarding headers are believed: `10.0.0.5`,
/// `10.0.0.0/8`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let mut bits = prefix as usize;
    for (a, b) in net.iter().zip(ip) {
        if bits == 0 {
            return true;
        }
        let take = bits.min(8);
        let mask = !0xffu8.checked_shr(take as u32).unwrap_or(0);
        if a & mask != b & mask {
            return false;
        }
        bits -= take;
    }
    true
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4 peers)
/// compares as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(text: &str) -> Result<TrustedProxy, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not an IP address or a network like 10.0.0.0/8");
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let network = canonical(ip.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(TrustedProxy { network, prefix })
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether headers from `peer` are believed: loopback always, else the trusted list.
pub fn is_trusted(peer: IpAddr, trusted: &[TrustedProxy]) -> bool {
    canonical(peer).is_loopback() || trusted.iter().any(|t| t.contains(peer))
}

/// The client address: the first `X-Forwarded-For` entry when `peer` is a trusted
/// proxy and the entry parses, else `peer`.
pub fn resolve(
    peer: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    trusted: &[TrustedProxy],
) -> Option<SocketAddr> {
    let peer = peer?;
    if !is_trusted(peer.ip(), trusted) {
        return Some(peer);
    }
    forwarded_for
        .and_then(|list| list.split(',').next())
        .and_then(parse_forwarded)
        .or(Some(peer))
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:5678`.
fn parse_forwarded(entry: &str) -> Option<SocketAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = entry.strip_prefix('[')?.strip_suffix(']')?;
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

/// A drop-in for `warp::addr::remote()`: the client address as [`resolve`] finds it,
/// from either accept loop.
pub fn remote(
    trusted: &[TrustedProxy],
) -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    let trusted: Arc<[TrustedProxy]> = trusted.into();
    warp::ext::optional::<PeerAddr>()
        .and(warp::addr::remote())
        .and(warp::header::headers_cloned())
        .and(warp::path::full())
        .map(
            move |ours: Option<PeerAddr>,
                  warps: Option<SocketAddr>,
                  headers: HeaderMap,
                  path: warp::path::FullPath| {
                let peer = ours.map(|PeerAddr(addr)| addr).or(warps);
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                let client = resolve(peer, header("x-forwarded-for"), &trusted);
                if let (Some(client), Some(peer)) = (client, peer) {
                    if client != peer {
                        log::debug!(
                            "{}: client {client} via proxy {peer} over {}",
                            crate::auth::redact::url(path.as_str()),
                            header("x-forwarded-proto").unwrap_or("http")
                        );
                    }
                }
                client
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    fn nets(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn networks_parse_and_match() {
        let net: TrustedProxy = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let odd: TrustedProxy = "192.168.4.0/22".parse().unwrap();
        assert!(odd.contains("192.168.7.255".parse().unwrap()));
        assert!(!odd.contains("192.168.8.0".parse().unwrap()));
        let one: TrustedProxy = "fd00::5".parse().unwrap();
        assert!(one.contains("fd00::5".parse().unwrap()));
        assert!(!one.contains("fd00::6".parse().unwrap()));
        let all: TrustedProxy = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(one.to_string(), "fd00::5/128");
        for bad in ["", "10.0.0.0/33", "proxy", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<TrustedProxy>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let none: Vec<TrustedProxy> = Vec::new();
        let xff = Some("203.0.113.7, 10.0.0.2");
        // Loopback is trusted by default: the first entry is the client.
        assert_eq!(
            resolve(addr("127.0.0.1:4000"), xff, &none),
            addr("203.0.113.7:0")
        );
        assert_eq!(
            resolve(addr("[::1]:4000"), xff, &none),
            addr("203.0.113.7:0")
        );
        // Anyone else is taken at its word.
        assert_eq!(
            resolve(addr("198.51.100.1:4000"), xff, &none),
            addr("198.51.100.1:4000")
        );
        let trusted = nets(&["198.51.100.0/24"]);
        assert_eq!(
            resolve(addr("198.51.100.1:4000"), xff, &trusted),
            addr("203.0.113.7:0")
        );
        // Forms with ports and brackets; garbage falls back to the peer.
        assert_eq!(
            resolve(addr("127.0.0.1:1"), Some("[2001:db8::1]:443"), &none),
            addr("[2001:db8::1]:443")
        );
        assert_eq!(
            resolve(addr("127.0.0.1:1"), Some(" [2001:db8::2] "), &none),
            addr("[2001:db8::2]:0")
        );
        assert_eq!(
            resolve(addr("127.0.0.1:1"), Some("192.0.2.1:8080"), &none),
            addr("192.0.2.1:8080")
        );
        assert_eq!(
            resolve(addr("127.0.0.1:1"), Some("unknown"), &none),
            addr("127.0.0.1:1")
        );
        assert_eq!(
            resolve(addr("127.0.0.1:1"), None, &none),
            addr("127.0.0.1:1")
        );
        assert_eq!(resolve(None, xff, &none), None);
    }
}
