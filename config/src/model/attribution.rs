//! `attribution:`: the socket hooks. sekisho attaches cgroup eBPF programs that name the
//! container (cgroup) on the other end of each connection in the audit log, and can guard
//! upstreams against connections that bypass the proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The socket hooks' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The cgroup v2 directory the programs are attached to (they see every process in it and
    /// below); `None`: the cgroup v2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
    /// hybrid layout), found in `/proc/self/mountinfo`.
    pub cgroup_root: Option<PathBuf>,
    /// Refuse to start when the programs cannot be attached (default `true`); with `false` the
    /// records say `attribution: unavailable` and a metric is set.
    pub required: bool,
    /// Where the maps and links are pinned (a directory on a BPF file system; default
    /// `/sys/fs/bpf/sekisho/attribution`), so that a restart keeps attribution and the bypass
    /// guard running.
    pub pin_path: PathBuf,
    /// Upstreams only sekisho (and the exceptions) may connect to; an unspecified address
    /// (`0.0.0.0:5432`, `[::]:5432`) stands for the port on every address.
    pub protected_upstreams: Vec<SocketAddr>,
    /// What a connection to a protected upstream from another cgroup meets.
    pub mode: BypassMode,
    /// Cgroups (paths under `cgroup_root`, like `/system.slice/backup.service`) also allowed to
    /// connect to the protected upstreams.
    pub exceptions: Vec<String>,
}

/// `attribution.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BypassMode {
    /// Record the attempt, let it through (default).
    #[default]
    Audit,
    /// Record the attempt and refuse it (`EPERM`).
    Enforce,
}
