//! Who the client is: its IP (through trusted proxies only) and hashes for session binding.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured trusted proxy; the
//! client is then the right-most address in the header that is not itself a trusted proxy (the
//! left part of the header is whatever the client wrote, and cannot be trusted). From any
//! other peer the header is ignored: spoofing it changes nothing.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

/// The client's IP address given the TCP peer, the headers and the trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`; compare them as IPv4.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Walk the hops from the nearest (right-most) outwards.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage in the chain: stop at the last address we could trust.
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` hop: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// A 16-byte digest used to bind a session to a value without storing the value.
pub fn binding_hash(value: &[u8]) -> Vec<u8> {
    Sha256::digest(value)[..16].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers("1.2.3.4"), &loopback()), peer);
    }

    #[test]
    fn trusted_peer_uses_right_most_untrusted_hop() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let ip = client_ip(peer, &headers("9.9.9.9, 1.2.3.4, 127.0.0.2"), &loopback());
        assert_eq!(ip, "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &HeaderMap::new(), &loopback()), peer);
        assert_eq!(client_ip(peer, &headers("not-an-ip"), &loopback()), peer);
    }

    #[test]
    fn mapped_peers_and_hops_with_ports_are_understood() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let ip = client_ip(mapped, &headers("1.2.3.4:5678"), &loopback());
        assert_eq!(ip, "1.2.3.4".parse::<IpAddr>().unwrap());
        let v6 = client_ip(mapped, &headers("[2001:db8::1]:443"), &loopback());
        assert_eq!(v6, "2001:db8::1".parse::<IpAddr>().unwrap());
        let mapped_hop = client_ip(mapped, &headers("::ffff:9.9.9.9"), &loopback());
        assert_eq!(mapped_hop, "9.9.9.9".parse::<IpAddr>().unwrap());
    }
}
