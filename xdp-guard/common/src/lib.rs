//! What the xdp-guard kernel program and its user space agree on: the byte layout of every map
//! key and value, the map names, and the verdict logic itself.
//!
//! The verdict logic lives here, not in the kernel crate, so that it is ordinary Rust that the
//! host can test: [`classify`] reads a frame through the [`FrameBytes`] trait (the kernel
//! implements it with bounds-checked packet loads, the tests with a byte slice) and [`decide`]
//! turns the result into a [`Verdict`] by asking a [`Policy`] (the kernel's is backed by the BPF
//! maps).
//!
//! # Byte order
//!
//! Addresses in map keys are octet arrays exactly as they appear on the wire, so `10.0.0.1` is
//! `[10, 0, 0, 1]` on every architecture. Ports in [`PROTECTED_PORTS`] are `u16` in **host** byte
//! order (the kernel converts the header's big-endian field before the lookup). Times are
//! nanoseconds of `CLOCK_MONOTONIC_COARSE`, the clock `bpf_ktime_get_coarse_ns` reads: it
//! costs the program no clock-source read, and a tick's resolution is plenty for expiries of
//! minutes and rate limits of tens per second.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

#[cfg(any(test, feature = "frames"))]
extern crate alloc;
#[cfg(any(test, feature = "frames"))]
pub mod frames;

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "xdp_guard";
/// Name of a program that passes every frame and does nothing else: the cost benchmark's
/// baseline.
pub const EMPTY_PROGRAM: &str = "xdp_empty";

/// `HashMap<SourceV4, AllowEntry>`: IPv4 sources that hold an authenticated session.
pub const ALLOWED_V4: &str = "ALLOWED_V4";
/// `HashMap<SourceV6, AllowEntry>`: IPv6 sources that hold an authenticated session.
pub const ALLOWED_V6: &str = "ALLOWED_V6";
/// `LpmTrie<[u8; 4], u8>`: trusted IPv4 ranges (value [`TRUSTED`]).
pub const TRUSTED_V4: &str = "TRUSTED_V4";
/// `LpmTrie<[u8; 16], u8>`: trusted IPv6 ranges (value [`TRUSTED`]).
pub const TRUSTED_V6: &str = "TRUSTED_V6";
/// `Array<u8>` of [`PORT_SLOTS`], indexed by [`port_slot`]: the [`PORT_PROTECTED`] /
/// [`PORT_SYN_LIMITED`] flags of every TCP and UDP destination port (0: left alone). An array,
/// not a hash, so that the lookup on every frame is a bounds check and a load.
pub const PORTS: &str = "PORTS";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const STATS: &str = "STATS";
/// `LruHashMap<SourceV4, AllowEntry>`: IPv4 sources banned until the entry's expiry: all their
/// TCP and UDP is dropped, to every port.
pub const BANNED_V4: &str = "BANNED_V4";
/// `LruHashMap<SourceV6, AllowEntry>`: IPv6 sources banned until the entry's expiry.
pub const BANNED_V6: &str = "BANNED_V6";
/// `Array<u64>` indexed by [`Setting`]: switches and parameters user space sets.
pub const SETTINGS: &str = "SETTINGS";
/// `LruHashMap<SourceV4, u64>`: per-source SYN rate limit state (the theoretical arrival time
/// of the generic cell rate algorithm, `CLOCK_MONOTONIC` ns). Least recently used sources make
/// room, so spoofed floods can only evict each other.
pub const SYN_RATE_V4: &str = "SYN_RATE_V4";
/// `LruHashMap<SourceV6, u64>`: as [`SYN_RATE_V4`].
pub const SYN_RATE_V6: &str = "SYN_RATE_V6";
/// `LruPerCpuHashMap<DropKey, u64>`: dropped frames per source, destination port, reason and
/// summary window, for the audit log's summaries. User space reads and deletes past windows.
pub const DROPS: &str = "DROPS";

/// Capacity of each `ALLOWED_*` map.
pub const MAX_ALLOWED_SOURCES: u32 = 65_536;
/// Capacity of each `BANNED_*` map (least recently used entries make room).
pub const MAX_BANNED_SOURCES: u32 = 16_384;
/// Capacity of each `TRUSTED_*` trie.
pub const MAX_TRUSTED_RANGES: u32 = 1_024;
/// Entries of [`PORTS`]: every TCP port, then every UDP port.
pub const PORT_SLOTS: u32 = 2 * 65_536;
/// Capacity of each `SYN_RATE_*` map.
pub const MAX_RATE_LIMITED_SOURCES: u32 = 65_536;
/// Capacity of [`DROPS`].
pub const MAX_DROP_TALLIES: u32 = 16_384;

/// The value stored in the `TRUSTED_*` tries.
pub const TRUSTED: u8 = 1;
/// [`PORTS`] flag: only admitted sources reach the port.
pub const PORT_PROTECTED: u8 = 1;
/// [`PORTS`] flag: connection attempts (TCP SYN) to the port are rate-limited per source.
pub const PORT_SYN_LIMITED: u8 = 2;

/// Key of [`ALLOWED_V4`]: the source address, octets in wire order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceV4 {
    /// `a.b.c.d` as `[a, b, c, d]`.
    pub octets: [u8; 4],
}

/// Key of [`ALLOWED_V6`]: the source address, octets in wire order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceV6 {
    /// The 16 octets of the address, most significant first.
    pub octets: [u8; 16],
}

/// Value of the `ALLOWED_*` and `BANNED_*` maps: until when the entry holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowEntry {
    /// `CLOCK_MONOTONIC_COARSE` nanoseconds after which the entry no longer holds.
    pub expires_at_ns: u64,
}

impl AllowEntry {
    /// Whether the entry still holds at `now_ns` (`CLOCK_MONOTONIC`).
    #[inline(always)]
    pub const fn admits_at(&self, now_ns: u64) -> bool {
        now_ns < self.expires_at_ns
    }
}

/// The index of `port` for `transport` in [`PORTS`].
#[inline(always)]
pub const fn port_slot(transport: Transport, port: u16) -> u32 {
    match transport {
        Transport::Tcp => port as u32,
        Transport::Udp => 65_536 + port as u32,
    }
}

/// Key of [`DROPS`]: one tally per source, destination port, reason and summary window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// The source address: 16 octets for IPv6, the first 4 for IPv4 (the rest zero).
    pub octets: [u8; 16],
    /// The summary window of the drop: `CLOCK_MONOTONIC_COARSE` nanoseconds divided by the
    /// window's length ([`Setting::DropWindowNs`]).
    pub window: u32,
    /// Destination port, host order (0 for later fragments, which carry none).
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// [`DropReason`] as its number.
    pub reason: u8,
}

impl DropKey {
    /// The key for a drop of `reason` from `source` to `dport` in `window`.
    #[inline(always)]
    pub fn new(source: Source, dport: u16, reason: DropReason, window: u32) -> Self {
        let (octets, family) = match source {
            Source::V4(SourceV4 {
                octets: [a, b, c, d],
            }) => ([a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 4),
            Source::V6(SourceV6 { octets }) => (octets, 6),
        };
        DropKey {
            octets,
            window,
            dport,
            family,
            reason: reason as u8,
        }
    }
}

/// The length of a drop summary window unless [`Setting::DropWindowNs`] says otherwise: a
/// minute.
pub const DEFAULT_DROP_WINDOW_NS: u64 = 60_000_000_000;

/// Index of each entry in [`SETTINGS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Nonzero while the `BANNED_*` maps may hold a ban, so that the common case (nobody
    /// banned) costs no hash lookup per frame.
    BansActive = 0,
    /// Nonzero when some UDP port is protected: later UDP fragments are then judged by their
    /// source like TCP ones.
    UdpGuarded = 1,
    /// The SYN rate limit's emission interval in ns (one connection attempt per interval;
    /// 0: no limit).
    SynIntervalNs = 2,
    /// The SYN rate limit's tolerance in ns: `(burst - 1) * interval`.
    SynToleranceNs = 3,
    /// The length of a drop summary window in ns (0: [`DEFAULT_DROP_WINDOW_NS`]).
    DropWindowNs = 4,
}

/// Number of entries in [`SETTINGS`].
pub const SETTINGS_LEN: u32 = 5;

/// Why a frame was dropped.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The source is banned.
    Banned = 0,
    /// A protected port, and the source is neither admitted nor trusted.
    NotAdmitted = 1,
    /// The source's connection attempts to a rate-limited port came too fast.
    SynLimited = 2,
    /// A later fragment (no ports in it) from a source that is not admitted.
    Fragment = 3,
    /// The destination port could not be read, or the segment to a protected port is truncated.
    Unreadable = 4,
}

impl DropReason {
    /// Every reason, in number order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Banned,
        DropReason::NotAdmitted,
        DropReason::SynLimited,
        DropReason::Fragment,
        DropReason::Unreadable,
    ];

    /// The reason numbered `n`.
    pub const fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(DropReason::Banned),
            1 => Some(DropReason::NotAdmitted),
            2 => Some(DropReason::SynLimited),
            3 => Some(DropReason::Fragment),
            4 => Some(DropReason::Unreadable),
            _ => None,
        }
    }

    /// Its name in metrics and audit records.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Banned => "banned",
            DropReason::NotAdmitted => "not_admitted",
            DropReason::SynLimited => "syn_rate_limited",
            DropReason::Fragment => "fragment",
            DropReason::Unreadable => "unreadable",
        }
    }

    /// Its counter in [`STATS`].
    pub const fn counter(self) -> u32 {
        FIRST_DROP_COUNTER + self as u32
    }
}

/// Index of each counter in [`STATS`]; after these come the drops by reason
/// ([`DropReason::counter`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frames the program passed to the stack.
    Passed = 0,
    /// Frames the program dropped.
    Dropped = 1,
    /// Frames with truncated or inconsistent headers (also counted as passed or dropped).
    Malformed = 2,
}

const FIRST_DROP_COUNTER: u32 = 3;

/// Number of entries in [`STATS`].
pub const COUNTERS: u32 = FIRST_DROP_COUNTER + DropReason::ALL.len() as u32;

/// Where a frame came from, as far as the guard cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An IPv4 source address.
    V4(SourceV4),
    /// An IPv6 source address.
    V6(SourceV6),
}

/// The transport protocols the guard judges.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP (IP protocol 6).
    Tcp = 6,
    /// UDP (IP protocol 17).
    Udp = 17,
}

/// What [`classify`] found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Nothing the guard looks at: not IPv4/IPv6, or neither TCP nor UDP (a non-first fragment
    /// of another protocol included).
    Unguarded,
    /// Ethernet, VLAN or IP headers that end early or contradict themselves before the guard
    /// could tell the transport. The kernel's IP stack discards these itself.
    Malformed,
    /// TCP or UDP, or possibly so, whose destination port the guard could not read: the
    /// transport header ends before the port (`Some`), or the IPv6 extension header chain is
    /// longer than the guard walks (`None`: the transport is unknown).
    Unidentified {
        /// The transport, when known.
        transport: Option<Transport>,
    },
    /// A non-first fragment of a TCP or UDP datagram: it carries no ports, so the guard cannot
    /// tell whether it is for a protected one, and decides by the source alone.
    LaterFragment {
        /// The IP source address.
        source: Source,
        /// The fragmented datagram's transport.
        transport: Transport,
    },
    /// A TCP segment or UDP datagram.
    Segment {
        /// The IP source address.
        source: Source,
        /// TCP or UDP.
        transport: Transport,
        /// The destination port, host byte order.
        dport: u16,
        /// The header is shorter than its minimum (TCP 20, UDP 8 bytes) or than TCP's own data
        /// offset says.
        truncated: bool,
        /// A TCP connection attempt: SYN set, ACK clear.
        syn: bool,
    },
}

/// What the program does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the frame to the kernel's stack (`XDP_PASS`).
    Pass,
    /// Discard the frame (`XDP_DROP`), for this reason.
    Drop(DropReason),
}

/// A verdict plus whether the frame also counts as malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the frame.
    pub verdict: Verdict,
    /// Whether to bump [`Counter::Malformed`] as well.
    pub malformed: bool,
}

/// Read access to a frame's bytes. Every read is bounds-checked: `None` past the end.
pub trait FrameBytes {
    /// The `N` bytes starting `offset` bytes into the frame, or `None` if the frame is shorter.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

/// The state the guard consults: which ports it judges and which sources it admits.
pub trait Policy {
    /// The [`PORT_PROTECTED`] / [`PORT_SYN_LIMITED`] flags of `port` (host byte order) for
    /// `transport`; 0 for a port the guard leaves alone.
    fn port(&self, transport: Transport, port: u16) -> u8;
    /// Whether some UDP port is protected (later UDP fragments are judged only then).
    fn guards_udp(&self) -> bool;
    /// Whether `source` holds an unexpired session or lies in a trusted range.
    fn admits(&self, source: Source) -> bool;
    /// Whether `source` is banned (auto-ban after repeated failures): all its TCP and UDP is
    /// dropped.
    fn banned(&self, source: Source) -> bool;
    /// Whether `source` may make one more connection attempt to a rate-limited port now (and
    /// count it); trusted sources always may.
    fn syn_allowed(&self, source: Source) -> bool;
    /// Notes that a frame from `source` to `port` (0 for a fragment) was dropped for `reason`
    /// (the kernel tallies it for the audit log's summaries).
    fn dropped(&self, source: Source, port: u16, reason: DropReason);
}

/// How many IPv6 extension headers [`classify`] walks before giving up ([`Packet::Unidentified`]).
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 6;

const ETH_HEADER_LEN: usize = 14;
const VLAN_HEADER_LEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_MIN_HEADER_LEN: usize = 20;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const UDP_HEADER_LEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// Parses an Ethernet frame (up to two VLAN tags, then IPv4 or the fixed IPv6 header and its
/// extension headers, then TCP) into what the guard needs to decide.
#[inline(always)]
pub fn classify(frame: &impl FrameBytes) -> Packet {
    let Some([_, _, _, _, _, _, _, _, _, _, _, _, t0, t1]) = frame.load::<ETH_HEADER_LEN>(0) else {
        return Packet::Malformed;
    };
    let mut ethertype = u16::from_be_bytes([t0, t1]);
    let mut l3 = ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        // A tag is TCI (2 bytes) then the inner ethertype (2 bytes).
        let Some([_, _, t0, t1]) = frame.load::<VLAN_HEADER_LEN>(l3) else {
            return Packet::Malformed;
        };
        ethertype = u16::from_be_bytes([t0, t1]);
        l3 += VLAN_HEADER_LEN;
    }
    match ethertype {
        ETHERTYPE_IPV4 => classify_ipv4(frame, l3),
        ETHERTYPE_IPV6 => classify_ipv6(frame, l3),
        _ => Packet::Unguarded,
    }
}

/// The guard's rule. A banned source's TCP and UDP is dropped. Only TCP and UDP to a port in
/// the port map is judged further: to a protected port it passes when the source is admitted
/// (a truncated header never passes); a TCP connection attempt to a rate-limited port passes
/// while the source's rate allows. A later fragment, which carries no ports, passes only from
/// an admitted source; a frame whose port cannot be read is dropped (it might be aimed at a
/// protected port).
#[inline(always)]
pub fn decide(packet: Packet, policy: &impl Policy) -> Decision {
    let (verdict, malformed) = match packet {
        Packet::Unguarded => (Verdict::Pass, false),
        Packet::Malformed => (Verdict::Pass, true),
        Packet::Unidentified {
            transport: Some(Transport::Udp),
        } if !policy.guards_udp() => (Verdict::Pass, true),
        Packet::Unidentified { .. } => (Verdict::Drop(DropReason::Unreadable), true),
        Packet::LaterFragment { source, transport } => {
            let verdict = if policy.banned(source) {
                Verdict::Drop(DropReason::Banned)
            } else if (transport == Transport::Udp && !policy.guards_udp()) || policy.admits(source)
            {
                Verdict::Pass
            } else {
                Verdict::Drop(DropReason::Fragment)
            };
            if let Verdict::Drop(reason) = verdict {
                policy.dropped(source, 0, reason);
            }
            (verdict, false)
        }
        Packet::Segment {
            source,
            transport,
            dport,
            truncated,
            syn,
        } => {
            let flags = policy.port(transport, dport);
            let verdict = if policy.banned(source) {
                Verdict::Drop(DropReason::Banned)
            } else if flags & PORT_PROTECTED != 0 {
                if truncated {
                    Verdict::Drop(DropReason::Unreadable)
                } else if policy.admits(source) {
                    Verdict::Pass
                } else {
                    Verdict::Drop(DropReason::NotAdmitted)
                }
            } else if syn && flags & PORT_SYN_LIMITED != 0 && !policy.syn_allowed(source) {
                Verdict::Drop(DropReason::SynLimited)
            } else {
                Verdict::Pass
            };
            if let Verdict::Drop(reason) = verdict {
                policy.dropped(source, dport, reason);
            }
            (verdict, truncated)
        }
    };
    Decision { verdict, malformed }
}

#[inline(always)]
fn classify_ipv4(frame: &impl FrameBytes, l3: usize) -> Packet {
    let Some(header) = frame.load::<IPV4_MIN_HEADER_LEN>(l3) else {
        return Packet::Malformed;
    };
    let [
        version_ihl,
        _,
        _,
        _,
        _,
        _,
        flags_frag_hi,
        frag_lo,
        _,
        protocol,
        _,
        _,
        s0,
        s1,
        s2,
        s3,
        ..,
    ] = header;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN {
        return Packet::Malformed;
    }
    let Some(transport) = transport(protocol) else {
        return Packet::Unguarded;
    };
    let source = Source::V4(SourceV4 {
        octets: [s0, s1, s2, s3],
    });
    let fragment_offset = u16::from_be_bytes([flags_frag_hi & 0x1f, frag_lo]);
    if fragment_offset != 0 {
        return Packet::LaterFragment { source, transport };
    }
    classify_transport(frame, l3 + header_len, source, transport)
}

#[inline(always)]
fn classify_ipv6(frame: &impl FrameBytes, l3: usize) -> Packet {
    let Some(header) = frame.load::<IPV6_HEADER_LEN>(l3) else {
        return Packet::Malformed;
    };
    let [version, _, _, _, _, _, mut next_header, ..] = header;
    if version >> 4 != 6 {
        return Packet::Malformed;
    }
    // The source address is bytes 8..24 of the fixed header (already known to be present).
    let Some(octets) = frame.load::<16>(l3 + 8) else {
        return Packet::Malformed;
    };
    let source = Source::V6(SourceV6 { octets });
    let mut offset = l3 + IPV6_HEADER_LEN;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        match next_header {
            IPPROTO_TCP => return classify_transport(frame, offset, source, Transport::Tcp),
            IPPROTO_UDP => return classify_transport(frame, offset, source, Transport::Udp),
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header, then the length in 8-octet units not counting the first 8.
                let Some([next, len]) = frame.load::<2>(offset) else {
                    return Packet::Malformed;
                };
                next_header = next;
                offset += (usize::from(len) + 1) * 8;
            }
            IPPROTO_AH => {
                // Next header, then the length in 4-octet units minus 2.
                let Some([next, len]) = frame.load::<2>(offset) else {
                    return Packet::Malformed;
                };
                next_header = next;
                offset += (usize::from(len) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some([next, _, offset_hi, offset_lo]) = frame.load::<4>(offset) else {
                    return Packet::Malformed;
                };
                if u16::from_be_bytes([offset_hi, offset_lo]) >> 3 != 0 {
                    return match transport(next) {
                        Some(transport) => Packet::LaterFragment { source, transport },
                        None => Packet::Unguarded,
                    };
                }
                next_header = next;
                offset += 8;
            }
            _ => return Packet::Unguarded,
        }
    }
    match (transport(next_header), next_header) {
        (Some(transport), _) => classify_transport(frame, offset, source, transport),
        // Still an extension header: the chain is longer than the walk.
        (
            None,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT,
        ) => Packet::Unidentified { transport: None },
        (None, _) => Packet::Unguarded,
    }
}

#[inline(always)]
const fn transport(protocol: u8) -> Option<Transport> {
    match protocol {
        IPPROTO_TCP => Some(Transport::Tcp),
        IPPROTO_UDP => Some(Transport::Udp),
        _ => None,
    }
}

#[inline(always)]
fn classify_transport(
    frame: &impl FrameBytes,
    l4: usize,
    source: Source,
    transport: Transport,
) -> Packet {
    // Both headers start with the source port, then the destination port.
    let Some([_, _, d0, d1]) = frame.load::<4>(l4) else {
        return Packet::Unidentified {
            transport: Some(transport),
        };
    };
    let dport = u16::from_be_bytes([d0, d1]);
    let (truncated, syn) = match transport {
        Transport::Udp => (frame.load::<UDP_HEADER_LEN>(l4).is_none(), false),
        Transport::Tcp => match frame.load::<TCP_MIN_HEADER_LEN>(l4) {
            None => (true, false),
            Some(header) => {
                let [.., data_offset, flags, _, _, _, _, _, _] = header;
                let header_len = usize::from(data_offset >> 4) * 4;
                let truncated = header_len < TCP_MIN_HEADER_LEN
                    || frame.load::<1>(l4 + header_len - 1).is_none();
                (truncated, flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
            }
        },
    };
    Packet::Segment {
        source,
        transport,
        dport,
        truncated,
        syn,
    }
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for the map types, so user space can read and write them.
    #![allow(
        unsafe_code,
        reason = "aya::Pod is an unsafe marker trait; every type here is #[repr(C)], Copy, made of \
                  integers and integer arrays with no padding, so any bit pattern is valid"
    )]

    unsafe impl aya::Pod for super::SourceV4 {}
    unsafe impl aya::Pod for super::SourceV6 {}
    unsafe impl aya::Pod for super::AllowEntry {}
    unsafe impl aya::Pod for super::DropKey {}
}

#[cfg(test)]
mod tests;
