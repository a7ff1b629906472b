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
//! nanoseconds of `CLOCK_MONOTONIC`, the clock `bpf_ktime_get_ns` reads.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

#[cfg(any(test, feature = "frames"))]
extern crate alloc;
#[cfg(any(test, feature = "frames"))]
pub mod frames;

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "xdp_guard";

/// `HashMap<SourceV4, AllowEntry>`: IPv4 sources that hold an authenticated session.
pub const ALLOWED_V4: &str = "ALLOWED_V4";
/// `HashMap<SourceV6, AllowEntry>`: IPv6 sources that hold an authenticated session.
pub const ALLOWED_V6: &str = "ALLOWED_V6";
/// `LpmTrie<[u8; 4], u8>`: trusted IPv4 ranges (value [`TRUSTED`]).
pub const TRUSTED_V4: &str = "TRUSTED_V4";
/// `LpmTrie<[u8; 16], u8>`: trusted IPv6 ranges (value [`TRUSTED`]).
pub const TRUSTED_V6: &str = "TRUSTED_V6";
/// `HashMap<u16, u8>`: TCP destination ports (host byte order) the guard protects (value [`PROTECTED`]).
pub const PROTECTED_PORTS: &str = "PROTECTED_PORTS";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const STATS: &str = "STATS";
/// `LruHashMap<SourceV4, AllowEntry>`: IPv4 sources banned until the entry's expiry: all their
/// TCP is dropped, to every port.
pub const BANNED_V4: &str = "BANNED_V4";
/// `LruHashMap<SourceV6, AllowEntry>`: IPv6 sources banned until the entry's expiry.
pub const BANNED_V6: &str = "BANNED_V6";

/// Capacity of each `ALLOWED_*` map.
pub const MAX_ALLOWED_SOURCES: u32 = 65_536;
/// `Array<u32>` of one entry: nonzero while the `BANNED_*` maps may hold a ban, so that the
/// common case (nobody banned) costs no hash lookup per frame.
pub const BANS_ACTIVE: &str = "BANS_ACTIVE";
/// Capacity of each `BANNED_*` map (least recently used entries make room).
pub const MAX_BANNED_SOURCES: u32 = 16_384;
/// Capacity of each `TRUSTED_*` trie.
pub const MAX_TRUSTED_RANGES: u32 = 1_024;
/// Capacity of [`PROTECTED_PORTS`].
pub const MAX_PROTECTED_PORTS: u32 = 1_024;

/// The value stored in the `TRUSTED_*` tries.
pub const TRUSTED: u8 = 1;
/// The value stored in [`PROTECTED_PORTS`].
pub const PROTECTED: u8 = 1;

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

/// Value of the `ALLOWED_*` maps: until when the source is admitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowEntry {
    /// `CLOCK_MONOTONIC` nanoseconds after which the entry no longer admits the source.
    pub expires_at_ns: u64,
}

impl AllowEntry {
    /// Whether the entry still admits its source at `now_ns` (`CLOCK_MONOTONIC`).
    #[inline(always)]
    pub const fn admits_at(&self, now_ns: u64) -> bool {
        now_ns < self.expires_at_ns
    }
}

/// Index of each counter in [`STATS`].
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

/// Number of entries in [`STATS`].
pub const COUNTERS: u32 = 3;

/// Where a frame came from, as far as the guard cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An IPv4 source address.
    V4(SourceV4),
    /// An IPv6 source address.
    V6(SourceV6),
}

/// What [`classify`] found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Nothing the guard looks at: not IPv4/IPv6, or not TCP (a non-first fragment of another
    /// protocol included).
    Unguarded,
    /// Ethernet, VLAN or IP headers that end early or contradict themselves before the guard
    /// could tell whether the frame is TCP. The kernel's IP stack discards these itself.
    Malformed,
    /// TCP, or possibly TCP, whose destination port the guard could not read: the TCP header
    /// ends before the port, or the IPv6 extension header chain is longer than the guard walks.
    Unidentified,
    /// A non-first fragment of a TCP datagram: it carries no ports, so the guard cannot tell
    /// whether it is for a protected one, and decides by the source alone.
    LaterTcpFragment {
        /// The IP source address.
        source: Source,
    },
    /// A TCP segment.
    Tcp {
        /// The IP source address.
        source: Source,
        /// The destination port, host byte order.
        dport: u16,
        /// The TCP header is shorter than 20 bytes or than its own data offset says.
        truncated: bool,
    },
}

/// What the program does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the frame to the kernel's stack (`XDP_PASS`).
    Pass,
    /// Discard the frame (`XDP_DROP`).
    Drop,
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

/// The state the guard consults: which ports it protects and which sources it admits.
pub trait Policy {
    /// Whether TCP destination port `port` (host byte order) is protected.
    fn is_protected(&self, port: u16) -> bool;
    /// Whether `source` holds an unexpired session or lies in a trusted range.
    fn admits(&self, source: Source) -> bool;
    /// Whether `source` is banned (auto-ban after repeated failures): all its TCP is dropped.
    fn banned(&self, source: Source) -> bool;
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

/// The guard's rule: only TCP to a protected port is judged; it passes when the source is
/// admitted, except that a truncated segment to a protected port never passes, and a segment
/// whose port cannot be read is dropped (it might be aimed at a protected port).
#[inline(always)]
pub fn decide(packet: Packet, policy: &impl Policy) -> Decision {
    match packet {
        Packet::Unguarded => Decision {
            verdict: Verdict::Pass,
            malformed: false,
        },
        Packet::Malformed => Decision {
            verdict: Verdict::Pass,
            malformed: true,
        },
        Packet::Unidentified => Decision {
            verdict: Verdict::Drop,
            malformed: true,
        },
        Packet::LaterTcpFragment { source } => Decision {
            verdict: if !policy.banned(source) && policy.admits(source) {
                Verdict::Pass
            } else {
                Verdict::Drop
            },
            malformed: false,
        },
        Packet::Tcp {
            source,
            dport,
            truncated,
        } => {
            let protected = policy.is_protected(dport);
            let verdict = if policy.banned(source) {
                Verdict::Drop
            } else if !protected || (!truncated && policy.admits(source)) {
                Verdict::Pass
            } else {
                Verdict::Drop
            };
            Decision {
                verdict,
                malformed: truncated,
            }
        }
    }
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
    if protocol != IPPROTO_TCP {
        return Packet::Unguarded;
    }
    let source = Source::V4(SourceV4 {
        octets: [s0, s1, s2, s3],
    });
    let fragment_offset = u16::from_be_bytes([flags_frag_hi & 0x1f, frag_lo]);
    if fragment_offset != 0 {
        return Packet::LaterTcpFragment { source };
    }
    classify_tcp(frame, l3 + header_len, source)
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
            IPPROTO_TCP => return classify_tcp(frame, offset, source),
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
                    return if next == IPPROTO_TCP {
                        Packet::LaterTcpFragment { source }
                    } else {
                        Packet::Unguarded
                    };
                }
                next_header = next;
                offset += 8;
            }
            _ => return Packet::Unguarded,
        }
    }
    if next_header == IPPROTO_TCP {
        classify_tcp(frame, offset, source)
    } else {
        Packet::Unidentified
    }
}

#[inline(always)]
fn classify_tcp(frame: &impl FrameBytes, l4: usize, source: Source) -> Packet {
    let Some([_, _, d0, d1]) = frame.load::<4>(l4) else {
        return Packet::Unidentified;
    };
    let dport = u16::from_be_bytes([d0, d1]);
    let truncated = match frame.load::<TCP_MIN_HEADER_LEN>(l4) {
        None => true,
        Some(header) => {
            let [.., data_offset, _, _, _, _, _, _, _] = header;
            let header_len = usize::from(data_offset >> 4) * 4;
            header_len < TCP_MIN_HEADER_LEN || frame.load::<1>(l4 + header_len - 1).is_none()
        }
    };
    Packet::Tcp {
        source,
        dport,
        truncated,
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
}

#[cfg(test)]
mod tests;
