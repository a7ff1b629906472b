//! `Forwarded::from_request`: whatever `X-Forwarded-For` lines a client or a balancer writes, the
//! client sekisho names is never a trusted proxy unless every hop is one, is never written
//! v4-mapped, and an untrusted peer is always the client itself.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use sekisho::headers::Forwarded;

/// Trusted networks, IPv4, IPv6 and one written v4-mapped.
const TRUSTED: [&str; 4] = [
    "10.0.0.0/8",
    "192.0.2.1/32",
    "2001:db8:ffff::/48",
    "::ffff:172.16.0.0/108",
];

/// Peers: trusted (in each form) and not.
const PEERS: [&str; 6] = [
    "10.0.0.1",
    "192.0.2.1",
    "::ffff:10.0.0.2",
    "::ffff:172.16.0.9",
    "2001:db8:ffff::1",
    "203.0.113.9",
];

/// Whether `ip`, in either of its IPv4 forms, is in a trusted network.
fn trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let mapped = match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        IpAddr::V6(_) => ip,
    };
    nets.iter().any(|n| n.contains(&ip) || n.contains(&mapped))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let nets: Vec<IpNet> = TRUSTED.iter().filter_map(|n| n.parse().ok()).collect();
    assert_eq!(nets.len(), TRUSTED.len());
    let Some(peer) = PEERS
        .get(usize::from(selector) % PEERS.len())
        .and_then(|p| p.parse::<IpAddr>().ok())
    else {
        return;
    };
    let mut headers = HeaderMap::new();
    let mut elements = 0usize;
    for line in rest.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            elements += line
                .split(|b| *b == b',')
                .filter(|e| !e.trim_ascii().is_empty())
                .count();
            headers.append("x-forwarded-for", value);
        }
    }
    let peer_trusted = trusted(&nets, peer);
    let forwarded = match Forwarded::from_request(&headers, peer, "http", "h", &nets) {
        Ok(forwarded) => forwarded,
        Err(_) => {
            assert!(peer_trusted, "an untrusted peer's headers were read");
            return;
        }
    };
    let client = forwarded.client_ip;
    assert_eq!(client, client.to_canonical(), "client written v4-mapped");
    if !peer_trusted {
        assert_eq!(
            client,
            peer.to_canonical(),
            "an untrusted peer is the client"
        );
        assert_eq!(forwarded.for_chain, client.to_string());
        return;
    }
    let chain: Vec<IpAddr> = forwarded
        .for_chain
        .split(", ")
        .map(|hop| {
            hop.parse()
                .unwrap_or_else(|e| panic!("chain entry {hop:?}: {e}"))
        })
        .collect();
    assert_eq!(
        chain.first(),
        Some(&client),
        "the chain starts at the client"
    );
    assert_eq!(
        chain.last(),
        Some(&peer.to_canonical()),
        "the chain ends at the peer"
    );
    // Everything after the client was a trusted proxy.
    for hop in chain.iter().skip(1) {
        assert!(
            trusted(&nets, *hop),
            "untrusted hop {hop} right of the client"
        );
    }
    if trusted(&nets, client) {
        // Only when every element was a trusted proxy: all of them are in the chain.
        assert_eq!(
            chain.len(),
            elements + 1,
            "trusted client {client} chosen while hops were left out: {}",
            forwarded.for_chain
        );
    }
});
