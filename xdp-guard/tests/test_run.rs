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

use xdp_guard::{Guard, PortRule, TestVerdict};
use xdp_guard_common::frames::{ethernet, ipv4, ipv6, tcp, v4_frame, v4_udp_frame, v6_frame};
use xdp_guard_common::{DropReason, Transport};

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

#[test]
fn protected_udp_ports_admit_only_admitted_sources() {
    let mut guard = guard();
    let wireguard = 51820;
    assert_eq!(
        guard
            .test_run(&v4_udp_frame(OTHER_V4, wireguard), 1)
            .unwrap()
            .0,
        TestVerdict::Pass,
        "not protected yet"
    );
    guard.protect_udp_port(wireguard).unwrap();
    for (source, expected) in [
        (OTHER_V4, TestVerdict::Drop),
        (ADMITTED_V4, TestVerdict::Pass),
        (TRUSTED_V4, TestVerdict::Pass),
        (BANNED_V4, TestVerdict::Drop),
    ] {
        let verdict = guard
            .test_run(&v4_udp_frame(source, wireguard), 1)
            .unwrap()
            .0;
        assert_eq!(verdict, expected, "from {source:?}");
    }
    assert_eq!(
        guard.test_run(&v4_udp_frame(OTHER_V4, 53), 1).unwrap().0,
        TestVerdict::Pass,
        "another UDP port"
    );
    assert_eq!(
        guard.test_run(&v4_frame(OTHER_V4, wireguard), 1).unwrap().0,
        TestVerdict::Pass,
        "TCP to the same number is not protected"
    );
    let later = [ethernet(0x0800), ipv4(OTHER_V4, 17, 185, 0), vec![0; 8]].concat();
    assert_eq!(guard.test_run(&later, 1).unwrap().0, TestVerdict::Drop);
    // The configuration is replaced as a whole: UDP unprotected again, fragments pass.
    guard
        .set_ports(&[PortRule {
            transport: Transport::Tcp,
            port: PROTECTED,
            protected: true,
            syn_limited: false,
        }])
        .unwrap();
    assert_eq!(
        guard
            .test_run(&v4_udp_frame(OTHER_V4, wireguard), 1)
            .unwrap()
            .0,
        TestVerdict::Pass
    );
    assert_eq!(guard.test_run(&later, 1).unwrap().0, TestVerdict::Pass);
    assert_eq!(guard.protected_ports().unwrap(), vec![PROTECTED]);
}

#[test]
fn connection_attempts_beyond_the_rate_are_dropped_and_trusted_sources_exempt() {
    let mut guard = guard();
    // One attempt per 1000 s on average, bursts of 3: the fourth SYN in a row is dropped.
    let interval = Duration::from_secs(1000);
    guard.limit_syn_rate(OPEN, interval, 3).unwrap();
    guard.limit_syn_rate(OPEN, Duration::ZERO, 0).unwrap();
    let syn = v4_frame(OTHER_V4, OPEN);
    for _ in 0..10 {
        assert_eq!(
            guard.test_run(&syn, 1).unwrap().0,
            TestVerdict::Pass,
            "a zero interval lifts the limit"
        );
    }
    guard.limit_syn_rate(OPEN, interval, 3).unwrap();
    let verdicts: Vec<TestVerdict> = (0..5).map(|_| guard.test_run(&syn, 1).unwrap().0).collect();
    assert_eq!(
        verdicts,
        [
            TestVerdict::Pass,
            TestVerdict::Pass,
            TestVerdict::Pass,
            TestVerdict::Drop,
            TestVerdict::Drop
        ]
    );
    let mut ack = syn.clone();
    ack[14 + 20 + 13] = 0x10;
    assert_eq!(
        guard.test_run(&ack, 1).unwrap().0,
        TestVerdict::Pass,
        "segments of established connections are not limited"
    );
    let v6 = v6_frame(OTHER_V6, OPEN);
    assert_eq!(guard.test_run(&v6, 3).unwrap().0, TestVerdict::Pass);
    assert_eq!(
        guard.test_run(&v6, 1).unwrap().0,
        TestVerdict::Drop,
        "IPv6 sources have buckets too"
    );
    let trusted = v4_frame(TRUSTED_V4, OPEN);
    assert_eq!(guard.test_run(&trusted, 10).unwrap().0, TestVerdict::Pass);
    assert_eq!(
        guard.test_run(&v4_frame(OTHER_V4, 8443), 1).unwrap().0,
        TestVerdict::Pass,
        "other ports are not limited"
    );
    let stats = guard.stats().unwrap();
    assert_eq!(stats.dropped_by[DropReason::SynLimited as usize], 3);
}

#[test]
fn drops_are_tallied_per_source_port_and_reason_and_taken_once() {
    let mut guard = guard();
    guard.set_drop_window(Duration::from_secs(3600)).unwrap();
    let (window, _) = guard.current_window().unwrap();
    guard.test_run(&v4_frame(OTHER_V4, PROTECTED), 5).unwrap();
    guard.test_run(&v4_frame(BANNED_V4, OPEN), 2).unwrap();
    guard
        .test_run(&v4_frame(ADMITTED_V4, PROTECTED), 4)
        .unwrap();
    guard.test_run(&v6_frame(OTHER_V6, PROTECTED), 1).unwrap();
    assert!(
        guard.take_drop_tallies(window).unwrap().is_empty(),
        "the current window is still being counted"
    );
    let mut tallies = guard.take_drop_tallies(u32::MAX).unwrap();
    tallies.sort_by_key(|t| (t.source, t.port));
    let seen: Vec<(IpAddr, u16, DropReason, u64)> = tallies
        .iter()
        .map(|t| (t.source, t.port, t.reason, t.packets))
        .collect();
    assert_eq!(
        seen,
        [
            (
                IpAddr::from(OTHER_V4),
                PROTECTED,
                DropReason::NotAdmitted,
                5
            ),
            (IpAddr::from(BANNED_V4), OPEN, DropReason::Banned, 2),
            (
                IpAddr::from(OTHER_V6),
                PROTECTED,
                DropReason::NotAdmitted,
                1
            ),
        ]
    );
    assert!(tallies.iter().all(|t| t.window == window));
    assert!(
        guard.take_drop_tallies(u32::MAX).unwrap().is_empty(),
        "taken once"
    );
    let stats = guard.stats().unwrap();
    assert_eq!(stats.dropped, 8);
    assert_eq!(stats.dropped_by[DropReason::NotAdmitted as usize], 6);
    assert_eq!(stats.dropped_by[DropReason::Banned as usize], 2);
    assert_eq!(stats.passed, 4);
}
