//! What the proxy-ebpf socket hooks and their user space agree on: program and map names and
//! the byte layout of every map key and value.
//!
//! # Addresses and byte order
//!
//! Every address is 16 octets as on the wire: an IPv6 address as it is, an IPv4 address in its
//! IPv4-mapped form (`::ffff:a.b.c.d`), so that a dual-stack socket connecting to
//! `::ffff:127.0.0.1` and an IPv4 socket connecting to `127.0.0.1` meet the same key. Ports are
//! two octets in network byte order. Everything else (`cookie`, `cgroup_id`, `pid`) is a
//! native-endian integer.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

/// Name of the `cgroup/connect4` program in the object file.
pub const CONNECT4_PROGRAM: &str = "connect4";
/// Name of the `cgroup/connect6` program.
pub const CONNECT6_PROGRAM: &str = "connect6";
/// Name of the `cgroup/post_bind4` program.
pub const POST_BIND4_PROGRAM: &str = "post_bind4";
/// Name of the `cgroup/post_bind6` program.
pub const POST_BIND6_PROGRAM: &str = "post_bind6";
/// Name of the `sock_ops` program.
pub const SOCK_OPS_PROGRAM: &str = "sock_ops";
/// Name of the `cgroup/sock_release` program.
pub const SOCK_RELEASE_PROGRAM: &str = "sock_release";

/// `LruHashMap<u64, Owner>`: who called `connect()` on a TCP socket, by socket cookie. Removed
/// when the socket closes or is released.
pub const SOCKETS: &str = "SOCKETS";
/// `LruHashMap<Endpoint, Bound>`: who bound each TCP socket's local address (a listener's owner),
/// by address and port. Removed when that socket is released.
pub const LISTENERS: &str = "LISTENERS";
/// `LruHashMap<u64, Endpoint>`: the address each bound TCP socket holds in [`LISTENERS`], by
/// socket cookie, so that its release (which cannot read the address) can remove it.
pub const BINDS: &str = "BINDS";
/// `LruHashMap<FlowKey, Bound>`: established TCP connections by 4-tuple and side, with the
/// owner of the socket on that side. Removed when the connection closes.
pub const FLOWS: &str = "FLOWS";
/// `HashMap<Endpoint, u8>`: the protected upstreams (value [`PROTECTED`]); an all-zero address
/// protects the port on every address.
pub const PROTECTED_UPSTREAMS: &str = "PROTECTED_UPSTREAMS";
/// `HashMap<u64, u8>`: the cgroups allowed to connect to protected upstreams (sekisho's own and
/// the configured exceptions; value [`ALLOWED`]).
pub const ALLOWED_CGROUPS: &str = "ALLOWED_CGROUPS";
/// `Array<u64>` indexed by [`Setting`].
pub const SETTINGS: &str = "SETTINGS";
/// `RingBuf` of [`BypassEvent`]s.
pub const BYPASSES: &str = "BYPASSES";

/// Capacity of [`SOCKETS`].
pub const MAX_SOCKETS: u32 = 131_072;
/// Capacity of [`LISTENERS`].
pub const MAX_LISTENERS: u32 = 16_384;
/// Capacity of [`FLOWS`].
pub const MAX_FLOWS: u32 = 131_072;
/// Capacity of [`PROTECTED_UPSTREAMS`].
pub const MAX_PROTECTED_UPSTREAMS: u32 = 1_024;
/// Capacity of [`ALLOWED_CGROUPS`].
pub const MAX_ALLOWED_CGROUPS: u32 = 1_024;
/// Size of the [`BYPASSES`] ring in bytes (a power of two, a multiple of the page size).
pub const BYPASS_RING_BYTES: u32 = 64 * 1024;

/// The value stored in [`PROTECTED_UPSTREAMS`].
pub const PROTECTED: u8 = 1;
/// The value stored in [`ALLOWED_CGROUPS`].
pub const ALLOWED: u8 = 1;

/// Length of a task's `comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Index of each entry of [`SETTINGS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// A [`BypassMode`] as its number.
    BypassMode = 0,
}

/// Number of entries in [`SETTINGS`].
pub const SETTINGS_LEN: u32 = 1;

/// What the bypass guard does with a `connect()` to a protected upstream from a cgroup that is
/// not allowed.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BypassMode {
    /// Nothing (no upstream protected).
    Off = 0,
    /// Record it and let it proceed.
    Audit = 1,
    /// Record it and refuse it (`EPERM`).
    Enforce = 2,
}

/// A process as the kernel saw it in a syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The cgroup v2 id of the task (the inode number of its cgroup directory); 0 unknown.
    pub cgroup_id: u64,
    /// The process id (the kernel's tgid).
    pub pid: u32,
    /// The task's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Explicit padding to the 8-byte alignment; always zero.
    pub _pad: [u8; 4],
}

impl Owner {
    /// Nobody known.
    pub const UNKNOWN: Owner = Owner {
        cgroup_id: 0,
        pid: 0,
        comm: [0; COMM_LEN],
        _pad: [0; 4],
    };

    /// The `comm` bytes up to the first NUL.
    pub fn comm(&self) -> &[u8] {
        let len = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        self.comm.get(..len).unwrap_or(&self.comm)
    }
}

/// A socket's identity and owner: value of [`LISTENERS`] and [`FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The socket cookie.
    pub cookie: u64,
    /// Who owns it.
    pub owner: Owner,
}

/// An address and port: key of [`LISTENERS`] and [`PROTECTED_UPSTREAMS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address, 16 octets (IPv4 mapped).
    pub addr: [u8; 16],
    /// The port, network byte order.
    pub port: [u8; 2],
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
}

impl Endpoint {
    /// `addr` (16 octets) and `port` (host order).
    #[inline(always)]
    pub const fn new(addr: [u8; 16], port: u16) -> Self {
        Endpoint {
            addr,
            port: port.to_be_bytes(),
            _pad: [0; 2],
        }
    }

    /// The same port on every address (a wildcard bind or protection).
    #[inline(always)]
    pub const fn any(&self) -> Self {
        Endpoint {
            addr: [0; 16],
            port: self.port,
            _pad: [0; 2],
        }
    }

    /// The same port on the IPv4 wildcard in mapped form (`::ffff:0.0.0.0`).
    #[inline(always)]
    pub const fn any_v4(&self) -> Self {
        Endpoint {
            addr: mapped([0; 4]),
            port: self.port,
            _pad: [0; 2],
        }
    }
}

/// `a.b.c.d` as `::ffff:a.b.c.d`.
#[inline(always)]
pub const fn mapped([a, b, c, d]: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
}

/// Which side of a connection a recorded socket is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The socket called `connect()` (`BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`).
    Initiated = 1,
    /// The socket came out of `accept()` (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`).
    Accepted = 2,
}

/// Key of [`FLOWS`]: a TCP connection oriented from its initiator, and the side recorded. Both
/// ends on one host are two entries (one per side), never one overwriting the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The initiator's address.
    pub saddr: [u8; 16],
    /// The acceptor's address.
    pub daddr: [u8; 16],
    /// The initiator's port, network byte order.
    pub sport: [u8; 2],
    /// The acceptor's port, network byte order.
    pub dport: [u8; 2],
    /// A [`Side`] as its number.
    pub side: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The connection from `saddr:sport` to `daddr:dport` (ports in host order), `side`'s entry.
    #[inline(always)]
    pub const fn new(saddr: [u8; 16], sport: u16, daddr: [u8; 16], dport: u16, side: Side) -> Self {
        FlowKey {
            saddr,
            daddr,
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            side: side as u8,
            _pad: [0; 3],
        }
    }
}

/// A `connect()` to a protected upstream from a cgroup not allowed to: sent on [`BYPASSES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BypassEvent {
    /// Who tried.
    pub owner: Owner,
    /// Where to.
    pub upstream: Endpoint,
    /// 1 when the connect was refused (enforce mode), 0 when let through (audit mode).
    pub refused: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

/// Converts the `bpf_sock_ops.remote_port` field to a port in host order.
///
/// The kernel stores the big-endian port in the upper 16 bits of that `u32` on little-endian
/// machines (`local_port` is plain host order), a long-standing quirk of the context rewrite.
#[inline(always)]
pub const fn sock_ops_remote_port(raw: u32) -> u16 {
    if cfg!(target_endian = "little") {
        u16::from_be((raw >> 16) as u16)
    } else {
        raw as u16
    }
}

/// An address from the four `u32` words of a context's IPv6 field (each word holds four wire
/// octets in memory order).
#[inline(always)]
pub const fn ip6_words([a, b, c, d]: [u32; 4]) -> [u8; 16] {
    let [a0, a1, a2, a3] = a.to_ne_bytes();
    let [b0, b1, b2, b3] = b.to_ne_bytes();
    let [c0, c1, c2, c3] = c.to_ne_bytes();
    let [d0, d1, d2, d3] = d.to_ne_bytes();
    [
        a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3,
    ]
}

/// An IPv4 address from a context's `u32` field (wire octets in memory order), mapped.
#[inline(always)]
pub const fn ip4_word(word: u32) -> [u8; 16] {
    mapped(word.to_ne_bytes())
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for the map types, so user space can read and write them.
    #![allow(
        unsafe_code,
        reason = "aya::Pod is an unsafe marker trait; every type here is #[repr(C)], Copy, and made \
                  of integers and byte arrays with explicit padding fields, so it has no \
                  uninitialised bytes, and any bit pattern is a valid value"
    )]

    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::Bound {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::BypassEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Owner>(), 8 + 4 + 16 + 4);
        assert_eq!(size_of::<Bound>(), 8 + 32);
        assert_eq!(size_of::<Endpoint>(), 16 + 2 + 2);
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<BypassEvent>(), 32 + 20 + 1 + 3);
    }

    #[test]
    fn ports_are_network_order_and_ipv4_is_mapped() {
        let key = FlowKey::new(
            mapped([127, 0, 0, 1]),
            8080,
            mapped([10, 0, 0, 2]),
            443,
            Side::Initiated,
        );
        assert_eq!(key.sport, [0x1f, 0x90]);
        assert_eq!(key.dport, [0x01, 0xbb]);
        assert_eq!(
            key.saddr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]
        );
        let word = u32::from_ne_bytes([10, 0, 0, 2]);
        assert_eq!(ip4_word(word), key.daddr);
        let v6 = [0x2001_0db8_u32.to_be(), 0, 0, 7_u32.to_be()];
        assert_eq!(
            ip6_words(v6),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        let endpoint = Endpoint::new(mapped([127, 0, 0, 1]), 5432);
        assert_eq!(endpoint.any().addr, [0; 16]);
        assert_eq!(endpoint.any_v4().addr, mapped([0; 4]));
        assert_eq!(endpoint.any().port, endpoint.port);
    }

    #[test]
    fn remote_port_quirk() {
        // What the kernel puts in remote_port for port 8080 on a little-endian machine.
        let raw = u32::from(u16::from_ne_bytes([0x1f, 0x90])) << 16;
        assert_eq!(sock_ops_remote_port(raw), 8080);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0; COMM_LEN];
        comm[..4].copy_from_slice(b"bash");
        let owner = Owner {
            comm,
            ..Owner::UNKNOWN
        };
        assert_eq!(owner.comm(), b"bash");
        let full = Owner {
            comm: [b'x'; COMM_LEN],
            ..owner
        };
        assert_eq!(full.comm(), &[b'x'; COMM_LEN]);
    }
}
