//! The socket hooks: cgroup eBPF programs that tag every IPv4 TCP connection made from a cgroup
//! with the cgroup and process that opened it, and [`SocketHooks`], which attaches them and answers
//! "who is on the other end of this connection?".
//!
//! # How it works
//!
//! Two programs are attached to one cgroup v2 directory and see every socket of every process in
//! it (and in its descendants):
//!
//! - `cgroup/connect4` runs inside `connect()`, in the calling task, so it knows the process
//!   (`pid`, `comm`) and its cgroup (`bpf_get_current_cgroup_id`) but not yet the source port.
//!   For TCP sockets it stores a [`ConnInfo`] under the socket's cookie in `CONN_BY_COOKIE`, and
//!   always lets the connect proceed.
//! - `sock_ops` runs when a connection is established. It knows the 4-tuple but runs in softirq,
//!   where the current task is unrelated. On `ACTIVE_ESTABLISHED` (the socket in the cgroup
//!   connected) it joins with `CONN_BY_COOKIE` on the socket cookie and stores a [`FlowInfo`]
//!   with that cgroup id under the 4-tuple in `FLOWS`; on `PASSIVE_ESTABLISHED` (the socket in
//!   the cgroup accepted) it stores the 4-tuple with the cgroup unknown.
//!
//! [`SocketHooks::lookup_flow`] reads `FLOWS` and, for initiated connections, `CONN_BY_COOKIE`.
//!
//! # Maps
//!
//! | name | type | key | value |
//! | --- | --- | --- | --- |
//! | `CONN_BY_COOKIE` | LRU hash, 65 536 | `u64` socket cookie, native order | [`ConnInfo`]: `cgroup_id: u64`, `pid: u32`, `comm: [u8; 16]`, 4 bytes padding (32 bytes) |
//! | `FLOWS` | LRU hash, 65 536 | [`FlowKey`]: `saddr: [u8; 4]`, `daddr: [u8; 4]`, `sport: [u8; 2]`, `dport: [u8; 2]`, all **network** byte order, initiator first (12 bytes) | [`FlowInfo`]: `cookie: u64`, `cgroup_id: u64` (0 = unknown), `direction: u8` (1 initiated, 2 accepted), 7 bytes padding (24 bytes) |
//!
//! # Not done yet
//!
//! - IPv4 only: no `connect6` hook, and `sock_ops` ignores `AF_INET6` sockets, including
//!   IPv4-mapped ones from dual-stack sockets.
//! - Entries are not deleted when a connection closes; the LRU maps evict the oldest instead.
//!   A `BPF_SOCK_OPS_STATE_CB` hook that removes them comes later.
//! - Accepted connections carry no cgroup id (the kernel does not give `sock_ops` the socket's
//!   cgroup): attribution is for connections that processes in the cgroup open.
//! - Programs are not pinned: they stay attached as long as the [`SocketHooks`] lives.
//! - The kernel object is licensed `Apache-2.0` like the workspace, which the kernel accepts as
//!   long as the programs call no GPL-only helper.

use std::{fs::File, io, net::SocketAddrV4, path::Path};

use aya::{
    Ebpf, EbpfError,
    maps::{HashMap, MapData, MapError},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps},
};
pub use proxy_ebpf_common;
use proxy_ebpf_common::{
    CONN_BY_COOKIE, CONNECT4_PROGRAM, ConnInfo, Direction, FLOWS, FlowInfo, FlowKey,
    SOCK_OPS_PROGRAM, UNKNOWN_CGROUP,
};

/// The programs, attached to one cgroup. Dropping it detaches them and frees the maps.
pub struct SocketHooks {
    conns: HashMap<MapData, u64, ConnInfo>,
    flows: HashMap<MapData, FlowKey, FlowInfo>,
    /// Owns the programs and their links; declared last so the maps above are dropped first.
    _ebpf: Ebpf,
}

/// What the hooks know about one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The socket cookie of the connection's socket inside the cgroup.
    pub cookie: u64,
    /// Whether the socket in the cgroup connected or accepted.
    pub direction: Direction,
    /// The cgroup v2 id (inode number of the cgroup directory) of the process that connected;
    /// `None` for accepted connections.
    pub cgroup_id: Option<u64>,
    /// The process that connected, while the hooks still remember it.
    pub process: Option<Process>,
}

/// A process as the kernel saw it at `connect()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Process id (tgid).
    pub pid: u32,
    /// The task's `comm` (at most 15 bytes; not valid UTF-8 is replaced).
    pub comm: String,
}

/// Why a [`SocketHooks`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cgroup directory could not be opened.
    #[error("opening cgroup {path}")]
    Cgroup {
        /// The path given to [`SocketHooks::attach`].
        path: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The embedded object file could not be parsed or its maps could not be created.
    #[error("loading the proxy-ebpf object")]
    Load(#[source] EbpfError),
    /// The embedded object lacks a program or map this crate expects (a build mismatch).
    #[error("the proxy-ebpf object has no {0}")]
    Missing(&'static str),
    /// The kernel refused to verify a program.
    #[error("verifying the {program} program")]
    Verify {
        /// The program's name.
        program: &'static str,
        /// What the kernel or aya said.
        #[source]
        source: ProgramError,
    },
    /// A program could not be attached to the cgroup.
    #[error("attaching the {program} program to cgroup {path}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The path given to [`SocketHooks::attach`].
        path: String,
        /// What the kernel or aya said.
        #[source]
        source: ProgramError,
    },
    /// A map could not be opened or read.
    #[error("{operation} map {map}")]
    Map {
        /// What was being done, e.g. "reading".
        operation: &'static str,
        /// The map's name.
        map: &'static str,
        /// What the kernel or aya said.
        #[source]
        source: MapError,
    },
    /// A map held a value the kernel programs never write (a kernel/user-space layout mismatch).
    #[error("map {map} holds {field} = {value}, which the kernel programs never write")]
    Unexpected {
        /// The map's name.
        map: &'static str,
        /// The field holding the value.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

impl SocketHooks {
    /// Loads the programs and attaches them to the cgroup v2 directory `cgroup_path`. They see
    /// sockets of processes in that cgroup and its descendants from now on.
    pub fn attach(cgroup_path: &Path) -> Result<Self, Error> {
        let path = || cgroup_path.display().to_string();
        let cgroup = File::open(cgroup_path).map_err(|source| Error::Cgroup {
            path: path(),
            source,
        })?;
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/proxy-ebpf"
        )))
        .map_err(Error::Load)?;

        let connect4: &mut CgroupSockAddr = program(&mut ebpf, CONNECT4_PROGRAM)?;
        connect4.load().map_err(verify_error(CONNECT4_PROGRAM))?;
        connect4
            .attach(&cgroup, CgroupAttachMode::default())
            .map_err(|source| Error::Attach {
                program: CONNECT4_PROGRAM,
                path: path(),
                source,
            })?;

        let sock_ops: &mut SockOps = program(&mut ebpf, SOCK_OPS_PROGRAM)?;
        sock_ops.load().map_err(verify_error(SOCK_OPS_PROGRAM))?;
        sock_ops
            .attach(&cgroup, CgroupAttachMode::default())
            .map_err(|source| Error::Attach {
                program: SOCK_OPS_PROGRAM,
                path: path(),
                source,
            })?;

        Ok(Self {
            conns: take_map(&mut ebpf, CONN_BY_COOKIE)?,
            flows: take_map(&mut ebpf, FLOWS)?,
            _ebpf: ebpf,
        })
    }

    /// What the hooks know about the TCP connection that `peer` opened to `local`: call it with a
    /// server socket's peer and local addresses. `None` if the hooks did not see it (it was not
    /// opened from the cgroup, before the hooks were attached, or was evicted since).
    pub fn lookup_flow(
        &self,
        peer: SocketAddrV4,
        local: SocketAddrV4,
    ) -> Result<Option<Flow>, Error> {
        let key = FlowKey::new(
            peer.ip().octets(),
            peer.port(),
            local.ip().octets(),
            local.port(),
        );
        let Some(info) = lookup(&self.flows, &key, FLOWS)? else {
            return Ok(None);
        };
        let direction = info.direction().ok_or(Error::Unexpected {
            map: FLOWS,
            field: "direction",
            value: u64::from(info.direction),
        })?;
        let conn = match direction {
            Direction::Initiated => lookup(&self.conns, &info.cookie, CONN_BY_COOKIE)?,
            Direction::Accepted => None,
        };
        let cgroup_id = match (info.cgroup_id, conn) {
            (UNKNOWN_CGROUP, Some(conn)) => Some(conn.cgroup_id),
            (UNKNOWN_CGROUP, None) => None,
            (id, _) => Some(id),
        };
        Ok(Some(Flow {
            cookie: info.cookie,
            direction,
            cgroup_id,
            process: conn.map(|conn| Process {
                pid: conn.pid,
                comm: String::from_utf8_lossy(conn.comm()).into_owned(),
            }),
        }))
    }
}

impl std::fmt::Debug for SocketHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketHooks").finish_non_exhaustive()
    }
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(verify_error(name))
}

fn verify_error(program: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |source| Error::Verify { program, source }
}

fn take_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, Error> {
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    HashMap::try_from(map).map_err(|source| Error::Map {
        operation: "opening",
        map: name,
        source,
    })
}

fn lookup<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<Option<V>, Error> {
    match map.get(key, 0) {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Map {
            operation: "reading",
            map: name,
            source,
        }),
    }
}
