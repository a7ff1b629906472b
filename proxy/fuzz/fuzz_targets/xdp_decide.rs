//! xdp-guard's `classify` and `decide` on any frame and any policy: `classify` never panics and
//! is deterministic, agrees with a plain slice-walking reference parser written here wherever
//! the two definitions must agree, and `decide` keeps the guard's safety rules: a banned
//! source's TCP and UDP is dropped, a protected port passes only admitted, untruncated segments,
//! a frame whose TCP port cannot be read is dropped, every drop of a segment or fragment is
//! tallied once, and the SYN rate limit is asked only about connection attempts it governs.
//!
//! Input: two bytes of policy (switches, then a salt that picks each port's flags, so that the
//! frame's own destination port is protected, rate-limited, both or neither), then the frame.
#![no_main]

use std::cell::Cell;

use libfuzzer_sys::fuzz_target;
use xdp_guard_common::{
    DropReason, FrameBytes, MAX_IPV6_EXTENSION_HEADERS, PORT_PROTECTED, PORT_SYN_LIMITED, Packet,
    Policy, Source, SourceV4, SourceV6, Transport, Verdict, classify, decide,
};

fuzz_target!(|data: &[u8]| {
    let Some((&[switches, salt], frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let packet = classify(&Frame(frame));
    assert_eq!(
        packet,
        classify(&Frame(frame)),
        "classify is not deterministic"
    );
    if let Some(expected) = reference(frame) {
        assert_eq!(packet, expected, "classify disagrees with the reference");
    }
    let rules = Rules::new(switches, salt);
    let decision = decide(packet, &rules);
    check(packet, decision.verdict, &rules);
});

/// The frame, read as the guard's tests read it: `None` past the end.
struct Frame<'a>(&'a [u8]);

impl FrameBytes for Frame<'_> {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.0.get(offset..end)?.try_into().ok()
    }
}

/// One source's standing, the same whatever the frame's source (the fuzzer tries each), and
/// each port's flags picked by the salt; records what `decide` asked and tallied.
struct Rules {
    salt: u8,
    guards_udp: bool,
    admitted: bool,
    banned: bool,
    syn_allowed: bool,
    /// Calls of `dropped`, and the last one's arguments.
    drops: Cell<u32>,
    last_drop: Cell<Option<(Source, u16, DropReason)>>,
    /// Calls of `syn_allowed`.
    syn_asked: Cell<u32>,
}

impl Rules {
    fn new(switches: u8, salt: u8) -> Self {
        Rules {
            salt,
            guards_udp: switches & 1 != 0,
            admitted: switches & 2 != 0,
            banned: switches & 4 != 0,
            syn_allowed: switches & 8 != 0,
            drops: Cell::new(0),
            last_drop: Cell::new(None),
            syn_asked: Cell::new(0),
        }
    }
}

impl Policy for Rules {
    fn port(&self, transport: Transport, port: u16) -> u8 {
        let [_, low] = port.to_be_bytes();
        (low ^ self.salt ^ transport as u8) & (PORT_PROTECTED | PORT_SYN_LIMITED)
    }
    fn guards_udp(&self) -> bool {
        self.guards_udp
    }
    fn admits(&self, _: Source) -> bool {
        self.admitted
    }
    fn banned(&self, _: Source) -> bool {
        self.banned
    }
    fn syn_allowed(&self, _: Source) -> bool {
        self.syn_asked.set(self.syn_asked.get() + 1);
        self.syn_allowed
    }
    fn dropped(&self, source: Source, port: u16, reason: DropReason) {
        self.drops.set(self.drops.get() + 1);
        self.last_drop.set(Some((source, port, reason)));
    }
}

/// The rule `decide` documents, checked against the verdict it gave for `packet`.
fn check(packet: Packet, verdict: Verdict, rules: &Rules) {
    let passed = verdict == Verdict::Pass;
    let drops = rules.drops.get();
    if passed {
        assert_eq!(drops, 0, "a pass tallied as a drop");
    }
    let syn_asked = rules.syn_asked.get();
    assert!(syn_asked <= 1, "syn_allowed asked {syn_asked} times");
    match packet {
        Packet::Unidentified {
            transport: None | Some(Transport::Tcp),
        } => assert!(!passed, "{packet:?} passed"),
        Packet::LaterFragment { source, transport } => {
            if rules.banned {
                assert_eq!(verdict, Verdict::Drop(DropReason::Banned), "{packet:?}");
            }
            if passed {
                assert!(
                    rules.admitted || (transport == Transport::Udp && !rules.guards_udp),
                    "a later fragment passed from a source not admitted"
                );
            }
            check_tally(verdict, drops, rules, source, 0);
        }
        Packet::Segment {
            source,
            transport,
            dport,
            truncated,
            syn,
        } => {
            let flags = rules.port(transport, dport);
            let protected = flags & PORT_PROTECTED != 0;
            let limited = flags & PORT_SYN_LIMITED != 0;
            if rules.banned {
                assert_eq!(verdict, Verdict::Drop(DropReason::Banned), "{packet:?}");
            }
            if protected {
                assert!(
                    !(passed && truncated),
                    "truncated {packet:?} to a protected port passed"
                );
                assert_eq!(
                    passed,
                    rules.admitted && !truncated && !rules.banned,
                    "{packet:?} to a protected port, admitted: {}",
                    rules.admitted
                );
            } else if !rules.banned {
                // Not protected: only the SYN rate limit can stop it.
                let limited_out = syn && limited && !rules.syn_allowed;
                let expected = if limited_out {
                    Verdict::Drop(DropReason::SynLimited)
                } else {
                    Verdict::Pass
                };
                assert_eq!(verdict, expected, "{packet:?} to an unprotected port");
            }
            if syn_asked != 0 {
                assert!(
                    syn && limited && !protected,
                    "syn_allowed asked about {packet:?}, flags {flags}"
                );
            }
            check_tally(verdict, drops, rules, source, dport);
        }
        Packet::Unguarded | Packet::Malformed | Packet::Unidentified { .. } => {}
    }
    if !matches!(packet, Packet::Segment { .. }) {
        assert_eq!(syn_asked, 0, "syn_allowed asked about {packet:?}");
    }
}

/// A drop of a segment or later fragment is tallied exactly once, with its source, port and
/// reason.
fn check_tally(verdict: Verdict, drops: u32, rules: &Rules, source: Source, port: u16) {
    if let Verdict::Drop(reason) = verdict {
        assert_eq!(drops, 1, "a drop tallied {drops} times");
        assert_eq!(rules.last_drop.get(), Some((source, port, reason)));
    }
}

/// What `classify` must return for `frame`, by a parser that walks slices and insists on whole
/// headers; `None` where the two definitions may differ. On purpose, the reference:
///
/// - names only `Segment`s with a whole transport header (so `truncated` is false),
///   `LaterFragment`s and `Unguarded`; short or contradictory headers (`Malformed`,
///   `Unidentified`, truncated segments) are conventions of the guard it leaves alone;
/// - like the guard, bounds headers by the frame, not by the IP total or payload length (bytes
///   past those are the stack's to discard), and accepts IPv6 extension headers in any order
///   and any number of times;
/// - makes no claim about a third VLAN tag (the guard reads two and calls the rest
///   `Unguarded`), nor about a chain of more than `MAX_IPV6_EXTENSION_HEADERS` extension headers
///   (the guard's `Unidentified { transport: None }`), nor about a protocol that is neither TCP
///   nor UDP after exactly that many (the guard cannot tell it from one more extension header
///   there and says `Unidentified { transport: None }` too, dropping it: the safe side).
fn reference(frame: &[u8]) -> Option<Packet> {
    // Ethertypes compared byte by byte, and IP versions as whole nibbles (below): libFuzzer's
    // comparison hints then carry the bytes to write, which the guard's 16-bit compares and
    // shifts hide from it (without them, most runs found no IPv6 frame in a minute).
    let mut ethertype = frame.get(12..14)?;
    let mut rest = frame.get(14..)?;
    let mut tags = 0;
    while let [0x81, 0x00] | [0x88, 0xa8] = ethertype {
        if tags == 2 {
            return None;
        }
        tags += 1;
        ethertype = rest.get(2..4)?;
        rest = rest.get(4..)?;
    }
    match ethertype {
        [0x08, 0x00] => ipv4(rest),
        [0x86, 0xdd] => ipv6(rest),
        _ => Some(Packet::Unguarded),
    }
}

fn ipv4(packet: &[u8]) -> Option<Packet> {
    let version_ihl = *packet.first()?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl & 0xf0 != 0x40 || header_len < 20 {
        return None;
    }
    let header = packet.get(..header_len)?;
    let Some(transport) = transport(*header.get(9)?) else {
        return Some(Packet::Unguarded);
    };
    let source = Source::V4(SourceV4 {
        octets: header.get(12..16)?.try_into().ok()?,
    });
    // The low 13 bits of the flags and fragment offset word.
    if be16(header.get(6..8)?) & 0x1fff != 0 {
        return Some(Packet::LaterFragment { source, transport });
    }
    segment(packet.get(header_len..)?, source, transport)
}

fn ipv6(packet: &[u8]) -> Option<Packet> {
    let header = packet.get(..40)?;
    if header.first()? & 0xf0 != 0x60 {
        return None;
    }
    let source = Source::V6(SourceV6 {
        octets: header.get(8..24)?.try_into().ok()?,
    });
    let mut next = *header.get(6)?;
    let mut rest = packet.get(40..)?;
    let mut extensions = 0;
    while transport(next).is_none() {
        if extensions == MAX_IPV6_EXTENSION_HEADERS {
            // Past the guard's walk, or a protocol it cannot tell from one more header there.
            return None;
        }
        extensions += 1;
        let (len, fragment) = match next {
            // Hop-by-hop, routing, destination options: 8-octet units past the first 8.
            0 | 43 | 60 => ((usize::from(*rest.get(1)?) + 1) * 8, false),
            // Authentication header: 4-octet units, minus 2.
            51 => ((usize::from(*rest.get(1)?) + 2) * 4, false),
            44 => (8, true),
            _ => return Some(Packet::Unguarded),
        };
        let extension = rest.get(..len)?;
        next = *extension.first()?;
        // A fragment header's offset is the top 13 bits of its third and fourth octets.
        if fragment && be16(extension.get(2..4)?) >> 3 != 0 {
            return Some(match transport(next) {
                Some(transport) => Packet::LaterFragment { source, transport },
                None => Packet::Unguarded,
            });
        }
        rest = rest.get(len..)?;
    }
    segment(rest, source, transport(next)?)
}

fn segment(l4: &[u8], source: Source, transport: Transport) -> Option<Packet> {
    let dport = be16(l4.get(2..4)?);
    let syn = match transport {
        Transport::Udp => {
            l4.get(..8)?;
            false
        }
        Transport::Tcp => {
            let header_len = usize::from(l4.get(12)? >> 4) * 4;
            if header_len < 20 {
                return None;
            }
            let flags = *l4.get(..header_len)?.get(13)?;
            // SYN set, ACK clear.
            flags & 0x12 == 0x02
        }
    };
    Some(Packet::Segment {
        source,
        transport,
        dport,
        truncated: false,
        syn,
    })
}

fn transport(protocol: u8) -> Option<Transport> {
    match protocol {
        6 => Some(Transport::Tcp),
        17 => Some(Transport::Udp),
        _ => None,
    }
}

fn be16(bytes: &[u8]) -> u16 {
    match bytes {
        [hi, lo] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}
