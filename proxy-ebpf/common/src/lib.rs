//! What the proxy-ebpf socket hooks and their user space agree on: map names and the byte layout
//! of every map key and value.
//!
//! # Byte order
//!
//! [`FlowKey`] holds addresses and ports as octet arrays exactly as they appear on the wire
//! (network byte order), so `127.0.0.1:8080` is `[127, 0, 0, 1]` and `[0x1f, 0x90]` on every
//! architecture. Everything else (`cookie`, `cgroup_id`, `pid`) is a native-endian integer.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

/// Name of the `cgroup/connect4` program in the object file.
pub const CONNECT4_PROGRAM: &str = "connect4";
/// Name of the `sock_ops` program in the object file.
pub const SOCK_OPS_PROGRAM: &str = "sock_ops";

/// `LruHashMap<u64, ConnInfo>`: who called `connect()` on a socket, keyed by its socket cookie.
pub const CONN_BY_COOKIE: &str = "CONN_BY_COOKIE";
/// `LruHashMap<FlowKey, FlowInfo>`: established IPv4 TCP connections by 4-tuple.
pub const FLOWS: &str = "FLOWS";

/// Capacity of [`CONN_BY_COOKIE`]; the least recently used entry is evicted beyond it.
pub const MAX_CONNECTIONS: u32 = 65_536;
/// Capacity of [`FLOWS`]; the least recently used entry is evicted beyond it.
pub const MAX_FLOWS: u32 = 65_536;

/// Length of a task's `comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Value of [`CONN_BY_COOKIE`]: the process that called `connect()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The cgroup v2 id of the calling task (the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// The calling process id (the kernel's tgid).
    pub pid: u32,
    /// The calling task's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Explicit padding to the 8-byte alignment; always zero.
    pub _pad: [u8; 4],
}

impl ConnInfo {
    /// The `comm` bytes up to the first NUL.
    pub fn comm(&self) -> &[u8] {
        let len = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        self.comm.get(..len).unwrap_or(&self.comm)
    }
}

/// Key of [`FLOWS`]: an IPv4 TCP connection, oriented from the side that initiated it.
///
/// For a connection a process in the cgroup opened, `saddr:sport` is that process's socket and
/// `daddr:dport` the server it connected to. For one it accepted, `saddr:sport` is the remote
/// client and `daddr:dport` the local listening address. Either way a server looks a connection
/// up with its peer as the source and its own address as the destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Initiator's address, network byte order.
    pub saddr: [u8; 4],
    /// Acceptor's address, network byte order.
    pub daddr: [u8; 4],
    /// Initiator's port, network byte order.
    pub sport: [u8; 2],
    /// Acceptor's port, network byte order.
    pub dport: [u8; 2],
}

impl FlowKey {
    /// The key for a connection from `saddr:sport` to `daddr:dport` (ports in host order).
    pub const fn new(saddr: [u8; 4], sport: u16, daddr: [u8; 4], dport: u16) -> Self {
        Self {
            saddr,
            daddr,
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
        }
    }
}

/// Value of [`FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// Socket cookie of the socket in the attached cgroup (the key into [`CONN_BY_COOKIE`] for
    /// connections it initiated).
    pub cookie: u64,
    /// The cgroup id recorded at `connect()` for initiated connections; [`UNKNOWN_CGROUP`] for
    /// accepted ones (the callback runs in softirq, where the current task is unrelated).
    pub cgroup_id: u64,
    /// Which side of the connection the socket in the cgroup is: a [`Direction`] as `u8` (kept
    /// raw so that every bit pattern is a valid value); see [`FlowInfo::direction`].
    pub direction: u8,
    /// Explicit padding to the 8-byte alignment; always zero.
    pub _pad: [u8; 7],
}

impl FlowInfo {
    /// Which side of the connection the socket in the cgroup is, if the field holds a known value.
    pub const fn direction(&self) -> Option<Direction> {
        match self.direction {
            1 => Some(Direction::Initiated),
            2 => Some(Direction::Accepted),
            _ => None,
        }
    }
}

/// [`FlowInfo::cgroup_id`] when the kernel could not tell.
pub const UNKNOWN_CGROUP: u64 = 0;

/// Which side of a connection the socket in the attached cgroup is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The socket called `connect()` (`BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`).
    Initiated = 1,
    /// The socket came out of `accept()` (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`).
    Accepted = 2,
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

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for the map types, so user space can read and write them.
    #![allow(
        unsafe_code,
        reason = "aya::Pod is an unsafe marker trait; every type here is #[repr(C)], Copy, and made \
                  of integers and byte arrays with explicit padding fields, so it has no \
                  uninitialised bytes, and any bit pattern is a valid value"
    )]

    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ConnInfo>(), 8 + 4 + 16 + 4);
        assert_eq!(size_of::<FlowKey>(), 12);
        assert_eq!(size_of::<FlowInfo>(), 8 + 8 + 1 + 7);
    }

    #[test]
    fn flow_key_ports_are_network_order() {
        let key = FlowKey::new([127, 0, 0, 1], 8080, [10, 0, 0, 2], 443);
        assert_eq!(key.sport, [0x1f, 0x90]);
        assert_eq!(key.dport, [0x01, 0xbb]);
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
        let info = ConnInfo {
            cgroup_id: 1,
            pid: 2,
            comm,
            _pad: [0; 4],
        };
        assert_eq!(info.comm(), b"bash");
        let full = ConnInfo {
            comm: [b'x'; COMM_LEN],
            ..info
        };
        assert_eq!(full.comm(), &[b'x'; COMM_LEN]);
    }
}
