//! Crafted frames for the tests and benchmarks (host only): Ethernet, IPv4 with options and
//! fragment fields, IPv6, TCP, and whole TCP frames.
#![allow(
    clippy::indexing_slicing,
    reason = "frames are built with known lengths"
)]

use alloc::vec;
use alloc::vec::Vec;

use crate::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP};

/// The IPv6 destination of [`ipv6`] frames.
pub const DESTINATION_V6: [u8; 16] = [
    0xdf, 0xfe, 0xf2, 0x47, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf8,
];

/// An Ethernet header with `ethertype`.
pub fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// See the module.
pub fn ipv4(source: [u8; 4], protocol: u8, fragment: u16, options: usize) -> Vec<u8> {
    let ihl = u8::try_from(5 + options / 4).unwrap_or(15);
    let mut h = vec![0x40 | ihl, 0, 0, 0, 0, 0];
    h.extend_from_slice(&fragment.to_be_bytes());
    h.extend_from_slice(&[64, protocol, 0, 0]);
    h.extend_from_slice(&source);
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend(core::iter::repeat_n(1u8, options));
    h
}

/// See the module.
pub fn ipv6(source: [u8; 16], next_header: u8) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 0, next_header, 64];
    h.extend_from_slice(&source);
    h.extend_from_slice(&DESTINATION_V6);
    h
}

/// See the module.
pub fn tcp(dport: u16) -> Vec<u8> {
    let mut h = vec![0xc3, 0x50];
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

/// A UDP header to `dport` (length 8, no payload).
pub fn udp(dport: u16) -> Vec<u8> {
    let mut h = vec![0xc3, 0x50];
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 8, 0, 0]);
    h
}

/// A whole IPv4 UDP frame from `source` to `dport`.
pub fn v4_udp_frame(source: [u8; 4], dport: u16) -> Vec<u8> {
    [
        ethernet(ETHERTYPE_IPV4),
        ipv4(source, crate::IPPROTO_UDP, 0, 0),
        udp(dport),
    ]
    .concat()
}

/// See the module.
pub fn v4_frame(source: [u8; 4], dport: u16) -> Vec<u8> {
    [
        ethernet(ETHERTYPE_IPV4),
        ipv4(source, IPPROTO_TCP, 0, 0),
        tcp(dport),
    ]
    .concat()
}

/// See the module.
pub fn v6_frame(source: [u8; 16], dport: u16) -> Vec<u8> {
    [
        ethernet(ETHERTYPE_IPV6),
        ipv6(source, IPPROTO_TCP),
        tcp(dport),
    ]
    .concat()
}
