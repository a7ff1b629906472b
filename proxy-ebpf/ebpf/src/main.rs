//! The proxy-ebpf socket hooks: `cgroup/connect4` remembers which process opened each socket,
//! `sock_ops` records each established IPv4 TCP connection's 4-tuple. Both always let the
//! connection proceed; recording is best effort (a failed map update loses attribution, never
//! the connection).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    unsafe_code,
    reason = "kernel code: context reads, map lookups and BPF helpers are unsafe by nature"
)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::bpf_get_socket_cookie,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::LruHashMap,
    programs::{SockAddrContext, SockOpsContext},
};
use proxy_ebpf_common::{
    ConnInfo, Direction, FlowInfo, FlowKey, MAX_CONNECTIONS, MAX_FLOWS, UNKNOWN_CGROUP,
    sock_ops_remote_port,
};

#[map]
static CONN_BY_COOKIE: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);
#[map]
static FLOWS: LruHashMap<FlowKey, FlowInfo> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// `connect()` may proceed (the only value a `cgroup/connect4` program returns here).
const ALLOW_CONNECT: i32 = 1;
/// The `sock_ops` return value meaning "handled"; ignored for the established callbacks.
const SOCK_OPS_OK: u32 = 1;
const AF_INET: u32 = 2;
const SOCK_STREAM: u32 = 1;

/// Why a hook recorded nothing. Never reaches the connection: the hooks allow it regardless.
enum Skipped {
    /// Not an IPv4 TCP socket, or not an established callback.
    NotTracked,
    /// A helper or map update failed.
    Failed,
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        Ok(()) | Err(Skipped::NotTracked | Skipped::Failed) => ALLOW_CONNECT,
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<(), Skipped> {
    // SAFETY: the kernel passes a valid bpf_sock_addr for the program's lifetime.
    if unsafe { (*ctx.sock_addr).type_ } != SOCK_STREAM {
        return Err(Skipped::NotTracked);
    }
    // SAFETY: the context is a bpf_sock_addr, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let info = ConnInfo {
        // SAFETY: no preconditions; connect4 runs in the calling task's context.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        // The upper half is the tgid, the process id user space sees.
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        comm: bpf_get_current_comm().map_err(|_| Skipped::Failed)?,
        _pad: [0; 4],
    };
    CONN_BY_COOKIE
        .insert(cookie, info, 0)
        .map_err(|_| Skipped::Failed)
}

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    match try_sock_ops(&ctx) {
        Ok(()) | Err(Skipped::NotTracked | Skipped::Failed) => SOCK_OPS_OK,
    }
}

fn try_sock_ops(ctx: &SockOpsContext) -> Result<(), Skipped> {
    let direction = match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => Direction::Initiated,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => Direction::Accepted,
        _ => return Err(Skipped::NotTracked),
    };
    if ctx.family() != AF_INET {
        return Err(Skipped::NotTracked);
    }
    // local_ip4/remote_ip4 hold the address in network byte order in memory, so the native
    // bytes are the wire octets. local_port is host order; remote_port has the quirk that
    // sock_ops_remote_port undoes.
    let local = ctx.local_ip4().to_ne_bytes();
    let remote = ctx.remote_ip4().to_ne_bytes();
    let local_port = ctx.local_port() as u16;
    let remote_port = sock_ops_remote_port(ctx.remote_port());
    // SAFETY: the context is a bpf_sock_ops, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let (key, cgroup_id) = match direction {
        Direction::Initiated => (
            FlowKey::new(local, local_port, remote, remote_port),
            // SAFETY: the value is copied out at once.
            unsafe { CONN_BY_COOKIE.get(cookie) }.map_or(UNKNOWN_CGROUP, |conn| conn.cgroup_id),
        ),
        Direction::Accepted => (
            FlowKey::new(remote, remote_port, local, local_port),
            UNKNOWN_CGROUP,
        ),
    };
    let info = FlowInfo {
        cookie,
        cgroup_id,
        direction: direction as u8,
        _pad: [0; 7],
    };
    FLOWS.insert(key, info, 0).map_err(|_| Skipped::Failed)
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The workspace's licence. The programs call no GPL-only helper, so the kernel accepts it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
