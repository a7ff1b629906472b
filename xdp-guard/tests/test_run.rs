//! The kernel program itself on crafted frames, through `BPF_PROG_TEST_RUN` (root only): the
//! verdict table of `xdp_guard_common` as the verifier-accepted program in the kernel decides
//! it, with real maps (admitted, expired, trusted sources; protected and open ports).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::IpAddr;
use std::time::Duration;

use xdp_guard::{Guard, TestVerdict};
use xdp_guard_common::frames::{ethernet, ipv4, ipv6, tcp, v4_frame, v6_frame};

const ADMITTED_V4: [u8; 4] = [192, 0, 2, 7];
const EXPIRED_V4: [u8; 4] = [192, 0, 2, 9];
const TRUSTED_V4: [u8; 4] = [10, 1, 2, 3];
const OTHER_V4: [u8; 4] = [192, 0, 2, 8];
/// Admitted and banned: the ban wins, on every port.
const BANNED_V4: [u8; 4] = [192, 0, 2, 66];
const ADMITTED_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const OTHER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8];
const PROTECTED: u16 = 22;
const OPEN: u16 = 443;
const TCP: u8 = 6;

fn guard() -> Guard {
    let mut guard = Guard::load_detached(None).expect("loading the program (root?)");
    guard.protect_port(PROTECTED).unwrap();
    guard
        .allow_source(IpAddr::from(ADMITTED_V4), Duration::from_secs(600))
        .unwrap();
    guard
        .allow_source(IpAddr::from(ADMITTED_V6), Duration::from_secs(600))
        .unwrap();
    guard
        .allow_source(IpAddr::from(EXPIRED_V4), Duration::ZERO)
        .unwrap();
    guard.trust_range("10.0.0.0/8".parse().unwrap()).unwrap();
    guard
        .allow_source(IpAddr::from(BANNED_V4), Duration::from_secs(600))
        .unwrap();
    guard
        .ban_source(IpAddr::from(BANNED_V4), Duration::from_secs(600))
        .unwrap();
    guard
}

fn vlan(tags: usize, inner: &[u8]) -> Vec<u8> {
    // Ethernet with `tags` 802.1Q/802.1ad tags in front of the IPv4 ethertype.
    let mut frame = inner[..12].to_vec();
    for i in 0..tags {
        let tpid: u16 = if i == 0 && tags == 2 { 0x88a8 } else { 0x8100 };
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x0a]);
    }
    frame.extend_from_slice(&inner[12..]);
    frame
}

#[test]
fn the_kernel_program_decides_the_table() {
    let mut guard = guard();
    let later_fragment = [
        ethernet(0x0800),
        ipv4(OTHER_V4, TCP, 0x0001, 0),
        vec![0xde; 8],
    ]
    .concat();
    let admitted_later_fragment = [
        ethernet(0x0800),
        ipv4(ADMITTED_V4, TCP, 0x0001, 0),
        vec![0xde; 8],
    ]
    .concat();
    let first_fragment = [
        ethernet(0x0800),
        ipv4(OTHER_V4, TCP, 0x2000, 0),
        tcp(PROTECTED),
    ]
    .concat();
    let with_options = [ethernet(0x0800), ipv4(OTHER_V4, TCP, 0, 8), tcp(PROTECTED)].concat();
    let v6_hop_by_hop = [
        ethernet(0x86dd),
        ipv6(OTHER_V6, 0),
        vec![TCP, 0, 0, 0, 0, 0, 0, 0],
        tcp(PROTECTED),
    ]
    .concat();
    let arp = [ethernet(0x0806), vec![0; 28]].concat();
    let udp = [ethernet(0x0800), ipv4(OTHER_V4, 17, 0, 0), vec![0; 8]].concat();
    let cases: Vec<(&str, Vec<u8>, TestVerdict)> = vec![
        (
            "admitted v4 to protected",
            v4_frame(ADMITTED_V4, PROTECTED),
            TestVerdict::Pass,
        ),
        (
            "stranger v4 to protected",
            v4_frame(OTHER_V4, PROTECTED),
            TestVerdict::Drop,
        ),
        (
            "expired v4 to protected",
            v4_frame(EXPIRED_V4, PROTECTED),
            TestVerdict::Drop,
        ),
        (
            "trusted v4 to protected",
            v4_frame(TRUSTED_V4, PROTECTED),
            TestVerdict::Pass,
        ),
        (
            "stranger v4 to an open port",
            v4_frame(OTHER_V4, OPEN),
            TestVerdict::Pass,
        ),
        (
            "admitted v6 to protected",
            v6_frame(ADMITTED_V6, PROTECTED),
            TestVerdict::Pass,
        ),
        (
            "stranger v6 to protected",
            v6_frame(OTHER_V6, PROTECTED),
            TestVerdict::Drop,
        ),
        (
            "stranger v6 through hop-by-hop",
            v6_hop_by_hop,
            TestVerdict::Drop,
        ),
        (
            "one VLAN tag",
            vlan(1, &v4_frame(OTHER_V4, PROTECTED)),
            TestVerdict::Drop,
        ),
        (
            "two VLAN tags",
            vlan(2, &v4_frame(OTHER_V4, PROTECTED)),
            TestVerdict::Drop,
        ),
        (
            "two VLAN tags, admitted",
            vlan(2, &v4_frame(ADMITTED_V4, PROTECTED)),
            TestVerdict::Pass,
        ),
        ("IPv4 options", with_options, TestVerdict::Drop),
        ("first fragment", first_fragment, TestVerdict::Drop),
        (
            "later TCP fragment, stranger",
            later_fragment,
            TestVerdict::Drop,
        ),
        (
            "later TCP fragment, admitted",
            admitted_later_fragment,
            TestVerdict::Pass,
        ),
        (
            "banned, to protected",
            v4_frame(BANNED_V4, PROTECTED),
            TestVerdict::Drop,
        ),
        (
            "banned, to an open port",
            v4_frame(BANNED_V4, OPEN),
            TestVerdict::Drop,
        ),
        ("ARP", arp, TestVerdict::Pass),
        ("UDP", udp, TestVerdict::Pass),
    ];
    for (case, frame, expected) in cases {
        let (verdict, _) = guard.test_run(&frame, 1).unwrap();
        assert_eq!(verdict, expected, "{case}");
    }
}

#[test]
fn truncation_at_every_offset_never_lets_a_stranger_through() {
    let mut guard = guard();
    for full in [v4_frame(OTHER_V4, PROTECTED), v6_frame(OTHER_V6, PROTECTED)] {
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
        for len in 14..full.len() {
            let (verdict, _) = guard.test_run(&full[..len], 1).unwrap();
            // Cut before the TCP ports are readable, the frame is the stack's to discard; once
            // the destination port is readable, a stranger's frame is dropped.
            assert!(
                matches!(verdict, TestVerdict::Pass | TestVerdict::Drop),
                "length {len}: {verdict:?}"
            );
            let l4 = full.len() - 20;
            if len >= l4 + 4 {
                assert_eq!(verdict, TestVerdict::Drop, "length {len} of {}", full.len());
            }
        }
    }
}

#[test]
fn lifting_the_last_ban_lets_the_source_through_again() {
    let mut guard = guard();
    let frame = v4_frame(BANNED_V4, PROTECTED);
    assert_eq!(guard.test_run(&frame, 1).unwrap().0, TestVerdict::Drop);
    guard.unban_source(IpAddr::from(BANNED_V4)).unwrap();
    assert_eq!(
        guard.test_run(&frame, 1).unwrap().0,
        TestVerdict::Pass,
        "admitted, and no longer banned"
    );
    guard
        .ban_source(IpAddr::from(BANNED_V4), Duration::from_secs(60))
        .unwrap();
    assert_eq!(guard.test_run(&frame, 1).unwrap().0, TestVerdict::Drop);
}
