#![allow(
    clippy::indexing_slicing,
    reason = "test frames are built with known lengths"
)]

use super::frames::*;
use super::*;

struct Slice<'a>(&'a [u8]);

impl FrameBytes for Slice<'_> {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.0.get(offset..end)?.try_into().ok()
    }
}

/// Protects TCP port 22 only; admits 192.0.2.7 and 2001:db8::7 (and treats 192.0.2.7 as
/// trusted for the rate limit).
#[derive(Default)]
struct Fixture(core::cell::Cell<u32>);

const ADMITTED_V4: [u8; 4] = [192, 0, 2, 7];
const OTHER_V4: [u8; 4] = [192, 0, 2, 8];
const ADMITTED_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const OTHER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8];

/// Port 443 (TCP) is rate-limited to two connection attempts; UDP 51820 is protected.
impl Policy for Fixture {
    fn port(&self, transport: Transport, port: u16) -> u8 {
        match (transport, port) {
            (Transport::Tcp, 22) | (Transport::Udp, 51820) => PORT_PROTECTED,
            (Transport::Tcp, 443) => PORT_SYN_LIMITED,
            _ => 0,
        }
    }
    fn guards_udp(&self) -> bool {
        true
    }
    fn syn_allowed(&self, source: Source) -> bool {
        let used = self.0.get();
        self.0.set(used + 1);
        used < 2 || matches!(source, Source::V4(s) if s.octets == ADMITTED_V4)
    }
    fn dropped(&self, _: Source, _: u16, _: DropReason) {}
    fn admits(&self, source: Source) -> bool {
        match source {
            Source::V4(s) => s.octets == ADMITTED_V4 || s.octets == BANNED,
            Source::V6(s) => s.octets == ADMITTED_V6,
        }
    }
    fn banned(&self, source: Source) -> bool {
        matches!(source, Source::V4(s) if s.octets == BANNED)
    }
}

/// Banned (and, to show the ban wins, admitted too).
const BANNED: [u8; 4] = [198, 51, 100, 66];

#[test]
fn a_banned_source_is_dropped_on_every_port_even_when_admitted() {
    assert_eq!(verdict(&v4_frame(BANNED, 22)), BANNED_DROP);
    assert_eq!(verdict(&v4_frame(BANNED, 443)), BANNED_DROP);
    let later = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(BANNED, IPPROTO_TCP, 185, 0),
        tcp(80),
    ]
    .concat();
    assert_eq!(verdict(&later), BANNED_DROP);
    let udp = [ethernet(ETHERTYPE_IPV4), ipv4(BANNED, 17, 0, 0), udp(443)].concat();
    assert_eq!(verdict(&udp), BANNED_DROP, "the ban is on UDP too (QUIC)");
    let icmp = [ethernet(ETHERTYPE_IPV4), ipv4(BANNED, 1, 0, 0), vec![0; 8]].concat();
    assert_eq!(verdict(&icmp), PASS, "ICMP is never the guard's");
}

fn verdict(frame: &[u8]) -> Decision {
    decide(classify(&Slice(frame)), &Fixture::default())
}

const PASS: Decision = Decision {
    verdict: Verdict::Pass,
    malformed: false,
};
const DROP: Decision = Decision {
    verdict: Verdict::Drop(DropReason::NotAdmitted),
    malformed: false,
};
const BANNED_DROP: Decision = Decision {
    verdict: Verdict::Drop(DropReason::Banned),
    malformed: false,
};
const FRAGMENT_DROP: Decision = Decision {
    verdict: Verdict::Drop(DropReason::Fragment),
    malformed: false,
};
const PASS_MALFORMED: Decision = Decision {
    verdict: Verdict::Pass,
    malformed: true,
};
const DROP_MALFORMED: Decision = Decision {
    verdict: Verdict::Drop(DropReason::Unreadable),
    malformed: true,
};

#[test]
fn classifies_ipv4_tcp() {
    assert_eq!(
        classify(&Slice(&v4_frame(OTHER_V4, 22))),
        Packet::Segment {
            source: Source::V4(SourceV4 { octets: OTHER_V4 }),
            transport: Transport::Tcp,
            dport: 22,
            truncated: false,
            syn: true,
        }
    );
}

#[test]
fn classifies_ipv6_tcp() {
    assert_eq!(
        classify(&Slice(&v6_frame(OTHER_V6, 443))),
        Packet::Segment {
            source: Source::V6(SourceV6 { octets: OTHER_V6 }),
            transport: Transport::Tcp,
            dport: 443,
            truncated: false,
            syn: true,
        }
    );
}

#[test]
fn protected_port_passes_only_admitted_sources() {
    assert_eq!(verdict(&v4_frame(ADMITTED_V4, 22)), PASS);
    assert_eq!(verdict(&v4_frame(OTHER_V4, 22)), DROP);
    assert_eq!(verdict(&v6_frame(ADMITTED_V6, 22)), PASS);
    assert_eq!(verdict(&v6_frame(OTHER_V6, 22)), DROP);
}

#[test]
fn unprotected_port_passes_any_source() {
    assert_eq!(verdict(&v4_frame(OTHER_V4, 80)), PASS);
    assert_eq!(verdict(&v6_frame(OTHER_V6, 80)), PASS);
}

#[test]
fn non_ip_and_unjudged_ports_pass() {
    let arp = [ethernet(0x0806), vec![0; 28]].concat();
    assert_eq!(verdict(&arp), PASS);
    let udp = [ethernet(ETHERTYPE_IPV4), ipv4(OTHER_V4, 17, 0, 0), udp(22)].concat();
    assert_eq!(verdict(&udp), PASS, "UDP 22 is not protected, TCP 22 is");
    let icmpv6 = [ethernet(ETHERTYPE_IPV6), ipv6(OTHER_V6, 58), vec![0; 8]].concat();
    assert_eq!(verdict(&icmpv6), PASS);
}

#[test]
fn ipv4_options_move_the_tcp_header() {
    let frame = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(OTHER_V4, IPPROTO_TCP, 0, 8),
        tcp(22),
    ]
    .concat();
    assert_eq!(verdict(&frame), DROP);
    let frame = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(OTHER_V4, IPPROTO_TCP, 0, 8),
        tcp(80),
    ]
    .concat();
    assert_eq!(verdict(&frame), PASS);
}

#[test]
fn vlan_tags_are_looked_through() {
    let tagged = |outer: u16| {
        let mut f = ethernet(outer);
        f.extend_from_slice(&[0, 7]);
        f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f.extend_from_slice(&[0, 8]);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        [f, ipv4(OTHER_V4, IPPROTO_TCP, 0, 0), tcp(22)].concat()
    };
    assert_eq!(verdict(&tagged(ETHERTYPE_QINQ)), DROP);
    assert_eq!(verdict(&tagged(ETHERTYPE_VLAN)), DROP);
}

#[test]
fn later_tcp_fragments_are_judged_by_their_source_first_fragments_by_port() {
    // A later fragment carries no ports (what looks like a TCP header is payload): only an
    // admitted source gets it through; other protocols' fragments are not the guard's.
    let later = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(OTHER_V4, IPPROTO_TCP, 185, 0),
        tcp(443),
    ]
    .concat();
    assert_eq!(verdict(&later), FRAGMENT_DROP);
    let admitted = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(ADMITTED_V4, IPPROTO_TCP, 185, 0),
        tcp(22),
    ]
    .concat();
    assert_eq!(verdict(&admitted), PASS);
    let udp = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(OTHER_V4, 17, 185, 0),
        vec![0; 8],
    ]
    .concat();
    assert_eq!(verdict(&udp), FRAGMENT_DROP, "a UDP port is protected");
    struct TcpOnly;
    impl Policy for TcpOnly {
        fn port(&self, transport: Transport, port: u16) -> u8 {
            Fixture::default().port(transport, port)
        }
        fn guards_udp(&self) -> bool {
            false
        }
        fn admits(&self, _: Source) -> bool {
            false
        }
        fn banned(&self, _: Source) -> bool {
            false
        }
        fn syn_allowed(&self, _: Source) -> bool {
            true
        }
        fn dropped(&self, _: Source, _: u16, _: DropReason) {}
    }
    let tcp_only = decide(classify(&Slice(&udp)), &TcpOnly);
    assert_eq!(
        tcp_only, PASS,
        "no UDP port protected: UDP fragments are not the guard's"
    );
    // More-fragments flag set, offset 0: this fragment carries the TCP header.
    let first = [
        ethernet(ETHERTYPE_IPV4),
        ipv4(OTHER_V4, IPPROTO_TCP, 0x2000, 0),
        tcp(22),
    ]
    .concat();
    assert_eq!(verdict(&first), DROP);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let mut frame = [ethernet(ETHERTYPE_IPV6), ipv6(OTHER_V6, IPPROTO_HOPOPTS)].concat();
    // Hop-by-hop, 16 bytes long, then destination options (8), then a first fragment (8), then AH (12).
    frame.extend_from_slice(&[IPPROTO_DSTOPTS, 1]);
    frame.extend_from_slice(&[0; 14]);
    frame.extend_from_slice(&[IPPROTO_FRAGMENT, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&[IPPROTO_AH, 0, 0x00, 0x01, 0, 0, 0, 1]);
    frame.extend_from_slice(&[IPPROTO_TCP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&tcp(22));
    assert_eq!(verdict(&frame), DROP);
}

#[test]
fn ipv6_later_tcp_fragment_needs_an_admitted_source() {
    let later = |source: [u8; 16], next: u8| {
        let mut frame = [ethernet(ETHERTYPE_IPV6), ipv6(source, IPPROTO_FRAGMENT)].concat();
        frame.extend_from_slice(&[next, 0, 0x05, 0x01, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0; 20]);
        frame
    };
    assert_eq!(verdict(&later(OTHER_V6, IPPROTO_TCP)), FRAGMENT_DROP);
    assert_eq!(verdict(&later(ADMITTED_V6, IPPROTO_TCP)), PASS);
    assert_eq!(verdict(&later(OTHER_V6, 17)), FRAGMENT_DROP);
    assert_eq!(
        verdict(&later(OTHER_V6, 58)),
        PASS,
        "ICMPv6 is not the guard's"
    );
}

#[test]
fn ipv6_chain_longer_than_the_walk_is_dropped() {
    let mut frame = [ethernet(ETHERTYPE_IPV6), ipv6(OTHER_V6, IPPROTO_DSTOPTS)].concat();
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        frame.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
    }
    frame.extend_from_slice(&tcp(80));
    assert_eq!(verdict(&frame), DROP_MALFORMED);
}

#[test]
fn ipv6_chain_of_exactly_the_walk_then_icmpv6_passes() {
    let mut frame = [ethernet(ETHERTYPE_IPV6), ipv6(OTHER_V6, IPPROTO_DSTOPTS)].concat();
    for i in 0..MAX_IPV6_EXTENSION_HEADERS {
        let next = if i + 1 == MAX_IPV6_EXTENSION_HEADERS {
            58
        } else {
            IPPROTO_DSTOPTS
        };
        frame.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    frame.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        verdict(&frame),
        PASS,
        "neither TCP nor UDP: not the guard's"
    );
}

#[test]
fn ipv6_chain_of_exactly_the_walk_reaches_tcp() {
    let mut frame = [ethernet(ETHERTYPE_IPV6), ipv6(OTHER_V6, IPPROTO_DSTOPTS)].concat();
    for i in 0..MAX_IPV6_EXTENSION_HEADERS {
        let next = if i + 1 == MAX_IPV6_EXTENSION_HEADERS {
            IPPROTO_TCP
        } else {
            IPPROTO_DSTOPTS
        };
        frame.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    frame.extend_from_slice(&tcp(80));
    assert_eq!(verdict(&frame), PASS);
}

#[test]
fn truncated_tcp_to_a_protected_port_is_dropped_even_from_admitted_sources() {
    for len in 4..20 {
        let mut frame = v4_frame(ADMITTED_V4, 22);
        frame.truncate(14 + 20 + len);
        assert_eq!(verdict(&frame), DROP_MALFORMED, "tcp header of {len} bytes");
    }
    // Data offset claims 24 bytes, only 20 present.
    let mut frame = v4_frame(ADMITTED_V4, 22);
    frame[14 + 20 + 12] = 0x60;
    assert_eq!(verdict(&frame), DROP_MALFORMED);
    // Data offset below the minimum.
    frame[14 + 20 + 12] = 0x40;
    assert_eq!(verdict(&frame), DROP_MALFORMED);
}

#[test]
fn truncated_tcp_to_an_unprotected_port_passes() {
    let mut frame = v4_frame(OTHER_V4, 80);
    frame.truncate(14 + 20 + 10);
    assert_eq!(verdict(&frame), PASS_MALFORMED);
}

#[test]
fn tcp_without_a_readable_port_is_dropped() {
    for len in 0..4 {
        let mut frame = v4_frame(OTHER_V4, 80);
        frame.truncate(14 + 20 + len);
        assert_eq!(verdict(&frame), DROP_MALFORMED, "tcp header of {len} bytes");
    }
}

#[test]
fn truncated_or_bad_ip_headers_pass_as_malformed() {
    let frame = v4_frame(OTHER_V4, 22);
    for len in [0, 5, 13, 14 + 19] {
        assert_eq!(
            verdict(&frame[..len]),
            PASS_MALFORMED,
            "frame of {len} bytes"
        );
    }
    let frame = v6_frame(OTHER_V6, 22);
    assert_eq!(verdict(&frame[..14 + 39]), PASS_MALFORMED);
    let mut bad_ihl = v4_frame(OTHER_V4, 22);
    bad_ihl[14] = 0x44;
    assert_eq!(verdict(&bad_ihl), PASS_MALFORMED);
    let mut bad_version = v4_frame(OTHER_V4, 22);
    bad_version[14] = 0x65;
    assert_eq!(verdict(&bad_version), PASS_MALFORMED);
}

#[test]
fn allow_entries_expire() {
    let entry = AllowEntry {
        expires_at_ns: 1_000,
    };
    assert!(entry.admits_at(999));
    assert!(!entry.admits_at(1_000));
    assert!(!entry.admits_at(u64::MAX));
}

#[test]
fn protected_udp_ports_pass_only_admitted_sources() {
    let datagram = |source: [u8; 4], port: u16| {
        [ethernet(ETHERTYPE_IPV4), ipv4(source, 17, 0, 0), udp(port)].concat()
    };
    assert_eq!(verdict(&datagram(OTHER_V4, 51820)), DROP);
    assert_eq!(verdict(&datagram(ADMITTED_V4, 51820)), PASS);
    assert_eq!(verdict(&datagram(OTHER_V4, 53)), PASS);
    let mut short = datagram(ADMITTED_V4, 51820);
    short.truncate(14 + 20 + 6);
    assert_eq!(
        verdict(&short),
        DROP_MALFORMED,
        "a truncated UDP header never passes"
    );
    short.truncate(14 + 20 + 3);
    assert_eq!(
        verdict(&short),
        DROP_MALFORMED,
        "no readable port, UDP guarded"
    );
    let v6 = [ethernet(ETHERTYPE_IPV6), ipv6(OTHER_V6, 17), udp(51820)].concat();
    assert_eq!(verdict(&v6), DROP);
}

#[test]
fn connection_attempts_to_a_rate_limited_port_stop_at_the_limit() {
    let policy = Fixture::default();
    let syn = classify(&Slice(&v4_frame(OTHER_V4, 443)));
    let limited = Decision {
        verdict: Verdict::Drop(DropReason::SynLimited),
        malformed: false,
    };
    assert_eq!(decide(syn, &policy), PASS);
    assert_eq!(decide(syn, &policy), PASS);
    assert_eq!(decide(syn, &policy), limited);
    // Segments of established connections (ACK set) are never limited.
    let mut ack = v4_frame(OTHER_V4, 443);
    ack[14 + 20 + 13] = 0x10;
    assert_eq!(decide(classify(&Slice(&ack)), &policy), PASS);
    let mut syn_ack = v4_frame(OTHER_V4, 443);
    syn_ack[14 + 20 + 13] = 0x12;
    assert_eq!(decide(classify(&Slice(&syn_ack)), &policy), PASS);
    // Other ports are not limited.
    assert_eq!(
        decide(classify(&Slice(&v4_frame(OTHER_V4, 80))), &policy),
        PASS
    );
    // A trusted source is exempt.
    assert_eq!(
        decide(classify(&Slice(&v4_frame(ADMITTED_V4, 443))), &policy),
        PASS
    );
}

#[test]
fn drop_keys_hold_the_source_port_and_reason() {
    let v4 = DropKey::new(
        Source::V4(SourceV4 { octets: OTHER_V4 }),
        22,
        DropReason::NotAdmitted,
        7,
    );
    assert_eq!(&v4.octets[..4], &OTHER_V4);
    assert!(v4.octets[4..].iter().all(|b| *b == 0));
    assert_eq!((v4.family, v4.dport, v4.window), (4, 22, 7));
    assert_eq!(
        DropReason::from_u8(v4.reason),
        Some(DropReason::NotAdmitted)
    );
    assert_eq!(DropReason::from_u8(5), None);
    for reason in DropReason::ALL {
        assert_eq!(DropReason::from_u8(reason as u8), Some(reason));
        assert!(reason.counter() < COUNTERS);
    }
    assert_eq!(
        core::mem::size_of::<DropKey>(),
        24,
        "no padding in a map key"
    );
    assert_eq!(port_slot(Transport::Tcp, 65_535), 65_535);
    assert_eq!(port_slot(Transport::Udp, 0), 65_536);
    assert_eq!(port_slot(Transport::Udp, 65_535), PORT_SLOTS - 1);
}
