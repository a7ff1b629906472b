//! The proxy-ebpf socket hooks, attached to a cgroup v2 directory (and so to every process in
//! it and below):
//!
//! - `connect4` / `connect6` run in the connecting task: they remember who opened each TCP
//!   socket (cgroup, pid, comm) by socket cookie, and are the bypass guard — a connect to a
//!   protected upstream from a cgroup not allowed to is reported, and refused in enforce mode.
//! - `post_bind4` / `post_bind6` run in the binding task: they remember who owns each bound TCP
//!   address, so that a connection accepted later (in softirq, where the current task is
//!   unrelated) is attributed to the listener's owner, not to whoever the CPU was running.
//! - `sock_ops` records each established connection by 4-tuple and side with its owner, and
//!   asks for the state callback so that the entry goes when the connection closes.
//! - `sock_release` forgets a released socket's cookie and, for a listener, its address.
//!
//! Recording is best effort: a failed map update loses attribution, never the connection.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    unsafe_code,
    reason = "kernel code: context reads, map lookups and BPF helpers are unsafe by nature"
)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::bpf_get_socket_cookie,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, RingBuf},
    programs::{SockAddrContext, SockContext, SockOpsContext},
};
use proxy_ebpf_common::{
    ALLOWED, BYPASS_RING_BYTES, Bound, BypassEvent, BypassMode, COMM_LEN, Endpoint, FlowKey,
    MAX_ALLOWED_CGROUPS, MAX_FLOWS, MAX_LISTENERS, MAX_PROTECTED_UPSTREAMS, MAX_SOCKETS, Owner,
    SETTINGS_LEN, Setting, Side, ip4_word, ip6_words, sock_ops_remote_port,
};

#[map]
static SOCKETS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);
#[map]
static LISTENERS: LruHashMap<Endpoint, Bound> = LruHashMap::with_max_entries(MAX_LISTENERS, 0);
#[map]
static BINDS: LruHashMap<u64, Endpoint> = LruHashMap::with_max_entries(MAX_LISTENERS, 0);
#[map]
static FLOWS: LruHashMap<FlowKey, Bound> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
#[map]
static PROTECTED_UPSTREAMS: HashMap<Endpoint, u8> =
    HashMap::with_max_entries(MAX_PROTECTED_UPSTREAMS, 0);
#[map]
static ALLOWED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_ALLOWED_CGROUPS, 0);
#[map]
static SETTINGS: Array<u64> = Array::with_max_entries(SETTINGS_LEN, 0);
#[map]
static BYPASSES: RingBuf = RingBuf::with_byte_size(BYPASS_RING_BYTES, 0);

/// `connect()` may proceed.
const ALLOW: i32 = 1;
/// `connect()` fails with `EPERM`.
const DENY: i32 = 0;
/// The `sock_ops` return value meaning "handled"; ignored for the callbacks used here.
const SOCK_OPS_OK: u32 = 1;
/// `post_bind` / `sock_release`: carry on.
const SOCK_OK: i32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_STREAM: u32 = 1;

/// The calling task.
#[inline(always)]
fn current_owner() -> Owner {
    Owner {
        // SAFETY: no preconditions; these programs run in the calling task's context.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        // The upper half is the tgid, the process id user space sees.
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        _pad: [0; 4],
    }
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel passes a valid bpf_sock_addr for the program's lifetime.
    let (kind, ip, port) = unsafe {
        let addr = &*ctx.sock_addr;
        (addr.type_, addr.user_ip4, addr.user_port)
    };
    connect(&ctx, kind, ip4_word(ip), port)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in connect4.
    let (kind, ip, port) = unsafe {
        let addr = &*ctx.sock_addr;
        (addr.type_, addr.user_ip6, addr.user_port)
    };
    connect(&ctx, kind, ip6_words(ip), port)
}

/// Remembers the connecting task under the socket's cookie, then applies the bypass guard.
/// `port` is the context's `user_port`: the port in network order in the low 16 bits.
#[inline(always)]
fn connect(ctx: &SockAddrContext, kind: u32, addr: [u8; 16], port: u32) -> i32 {
    if kind != SOCK_STREAM {
        return ALLOW;
    }
    let owner = current_owner();
    // SAFETY: the context is a bpf_sock_addr, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = SOCKETS.insert(cookie, owner, 0);
    let mode = SETTINGS
        .get(Setting::BypassMode as u32)
        .copied()
        .unwrap_or(0);
    if mode == BypassMode::Off as u64 {
        return ALLOW;
    }
    let upstream = Endpoint {
        addr,
        port: (port as u16).to_ne_bytes(),
        _pad: [0; 2],
    };
    // SAFETY: the values are copied out at once.
    let protected = unsafe {
        PROTECTED_UPSTREAMS.get(upstream).is_some()
            || PROTECTED_UPSTREAMS.get(upstream.any()).is_some()
    };
    // SAFETY: as above.
    if !protected || unsafe { ALLOWED_CGROUPS.get(owner.cgroup_id) }.is_some_and(|v| *v == ALLOWED)
    {
        return ALLOW;
    }
    let refuse = mode == BypassMode::Enforce as u64;
    let _ = BYPASSES.output::<BypassEvent>(
        &BypassEvent {
            owner,
            upstream,
            refused: u8::from(refuse),
            _pad: [0; 3],
        },
        0,
    );
    if refuse { DENY } else { ALLOW }
}

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    // SAFETY: the kernel passes a valid bpf_sock for the program's lifetime.
    let (kind, ip, port) = unsafe {
        let sock = &*ctx.sock;
        (sock.type_, sock.src_ip4, sock.src_port)
    };
    bound(&ctx, kind, ip4_word(ip), port)
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    // SAFETY: as in post_bind4.
    let (kind, ip, port) = unsafe {
        let sock = &*ctx.sock;
        (sock.type_, sock.src_ip6, sock.src_port)
    };
    bound(&ctx, kind, ip6_words(ip), port)
}

/// Remembers who bound a TCP socket to `addr:port` (`port` host order, as `bpf_sock` has it).
#[inline(always)]
fn bound(ctx: &SockContext, kind: u32, addr: [u8; 16], port: u32) -> i32 {
    if kind != SOCK_STREAM {
        return SOCK_OK;
    }
    // SAFETY: the context is a bpf_sock, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let endpoint = Endpoint::new(addr, port as u16);
    let _ = LISTENERS.insert(
        endpoint,
        Bound {
            cookie,
            owner: current_owner(),
        },
        0,
    );
    let _ = BINDS.insert(cookie, endpoint, 0);
    SOCK_OK
}

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // SAFETY: the kernel passes a valid bpf_sock for the program's lifetime.
    if unsafe { (*ctx.sock).type_ } != SOCK_STREAM {
        return SOCK_OK;
    }
    // SAFETY: the context is a bpf_sock, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = SOCKETS.remove(cookie);
    // The release cannot read the socket's address: BINDS kept it.
    // SAFETY: the value is copied out at once.
    let Some(endpoint) = (unsafe { BINDS.get(cookie) }).copied() else {
        return SOCK_OK;
    };
    let _ = BINDS.remove(cookie);
    // Only this socket's own entry: another socket may have bound the address since.
    // SAFETY: the value is copied out at once.
    if unsafe { LISTENERS.get(endpoint) }.is_some_and(|listener| listener.cookie == cookie) {
        let _ = LISTENERS.remove(endpoint);
    }
    SOCK_OK
}

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    let wanted = op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
        || op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB
        || (op == BPF_SOCK_OPS_STATE_CB && ctx.arg(1) == BPF_TCP_CLOSE);
    if !wanted {
        return SOCK_OPS_OK;
    }
    // The context's fields are read here, in the program's own frame: the verifier refuses a
    // context pointer that a subprogram has offset before loading from it.
    let Some(conn) = connection(&ctx) else {
        return SOCK_OPS_OK;
    };
    match op {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => initiated(&ctx, &conn),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => accepted(&ctx, &conn),
        _ => closed(&ctx, &conn),
    }
    SOCK_OPS_OK
}

/// A TCP connection's addresses (mapped when IPv4) and ports (host order).
struct Connection {
    local: [u8; 16],
    remote: [u8; 16],
    local_port: u16,
    remote_port: u16,
}

/// Reads the fields one volatile load each, every one of them whatever the family: a plain
/// read lets the compiler merge the two families' loads behind one offset context pointer,
/// which the verifier refuses.
#[inline(always)]
fn connection(ctx: &SockOpsContext) -> Option<Connection> {
    let ops = ctx.ops;
    // SAFETY: `ops` is the kernel's bpf_sock_ops for this program run; every field read is a
    // u32 of it (the verifier rewrites each into a read of the socket).
    let (family, local4, remote4, local6, remote6, local_port, remote_port) = unsafe {
        use core::ptr::read_volatile as read;
        (
            read(&raw const (*ops).family),
            read(&raw const (*ops).local_ip4),
            read(&raw const (*ops).remote_ip4),
            [
                read(&raw const (*ops).local_ip6[0]),
                read(&raw const (*ops).local_ip6[1]),
                read(&raw const (*ops).local_ip6[2]),
                read(&raw const (*ops).local_ip6[3]),
            ],
            [
                read(&raw const (*ops).remote_ip6[0]),
                read(&raw const (*ops).remote_ip6[1]),
                read(&raw const (*ops).remote_ip6[2]),
                read(&raw const (*ops).remote_ip6[3]),
            ],
            read(&raw const (*ops).local_port),
            read(&raw const (*ops).remote_port),
        )
    };
    let (local, remote) = match family {
        AF_INET => (ip4_word(local4), ip4_word(remote4)),
        AF_INET6 => (ip6_words(local6), ip6_words(remote6)),
        _ => return None,
    };
    Some(Connection {
        local,
        remote,
        local_port: local_port as u16,
        remote_port: sock_ops_remote_port(remote_port),
    })
}

// Each callback is a function of its own (a BPF subprogram), so that their keys do not share
// one stack frame.

/// A connection this host's socket opened: owned by whoever called `connect()` on it.
#[inline(never)]
fn initiated(ctx: &SockOpsContext, conn: &Connection) {
    // SAFETY: the context is a bpf_sock_ops, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let owner = unsafe { SOCKETS.get(cookie) }
        .copied()
        .unwrap_or(Owner::UNKNOWN);
    let key = FlowKey::new(
        conn.local,
        conn.local_port,
        conn.remote,
        conn.remote_port,
        Side::Initiated,
    );
    let _ = FLOWS.insert(key, Bound { cookie, owner }, 0);
    watch_state(ctx);
}

/// A connection this host's socket accepted: owned by whoever bound the listening address (or
/// its family's wildcard).
#[inline(never)]
fn accepted(ctx: &SockOpsContext, conn: &Connection) {
    // SAFETY: the context is a bpf_sock_ops, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let owner = listener_owner(&Endpoint::new(conn.local, conn.local_port));
    let key = FlowKey::new(
        conn.remote,
        conn.remote_port,
        conn.local,
        conn.local_port,
        Side::Accepted,
    );
    let _ = FLOWS.insert(key, Bound { cookie, owner }, 0);
    watch_state(ctx);
}

/// The owner of the socket bound to `listener`, its port on every address, or its port on
/// every IPv4 address.
#[inline(always)]
fn listener_owner(listener: &Endpoint) -> Owner {
    // SAFETY: the values are copied out at once.
    unsafe {
        if let Some(bound) = LISTENERS.get(listener) {
            return bound.owner;
        }
        if let Some(bound) = LISTENERS.get(listener.any()) {
            return bound.owner;
        }
        LISTENERS
            .get(listener.any_v4())
            .map_or(Owner::UNKNOWN, |bound| bound.owner)
    }
}

/// Asks for the connection's state changes, to forget it when it closes.
#[inline(always)]
fn watch_state(ctx: &SockOpsContext) {
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// The connection closed: its entries go (the one it has as either side; never the peer's,
/// which is the mirror key).
#[inline(never)]
fn closed(ctx: &SockOpsContext, conn: &Connection) {
    let _ = FLOWS.remove(FlowKey::new(
        conn.local,
        conn.local_port,
        conn.remote,
        conn.remote_port,
        Side::Initiated,
    ));
    let _ = FLOWS.remove(FlowKey::new(
        conn.remote,
        conn.remote_port,
        conn.local,
        conn.local_port,
        Side::Accepted,
    ));
    // SAFETY: the context is a bpf_sock_ops, which bpf_get_socket_cookie accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = SOCKETS.remove(cookie);
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
