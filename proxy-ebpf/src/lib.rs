//! The socket hooks: cgroup eBPF programs that tag every TCP connection made or accepted under a
//! cgroup v2 directory with the cgroup and process that owns it, and guard protected upstreams
//! against connections that bypass the proxy — and [`SocketHooks`], which attaches them and
//! answers "who is on the other end of this connection?".
//!
//! # How it works
//!
//! The programs are attached (with `BPF_F_ALLOW_MULTI` links, so other agents' programs on the
//! same cgroup keep running) to one cgroup v2 directory, and see every socket of every process
//! in it and below:
//!
//! - `cgroup/connect4` and `cgroup/connect6` run inside `connect()`, in the calling task: they
//!   store its [`Owner`] (cgroup id, pid, comm) under the socket's cookie in `SOCKETS`. They are
//!   also the **bypass guard**: a connect to an address in `PROTECTED_UPSTREAMS` from a cgroup
//!   not in `ALLOWED_CGROUPS` is sent to user space as a [`BypassEvent`] on the `BYPASSES` ring,
//!   and refused with `EPERM` in enforce mode.
//! - `cgroup/post_bind4` and `cgroup/post_bind6` run inside `bind()`, in the binding task: they
//!   store the owner of each bound TCP address in `LISTENERS`.
//! - `sock_ops` runs when a connection is established, in softirq (the current task is
//!   unrelated). For a socket that connected it joins `SOCKETS` on the cookie; for one that was
//!   accepted, `LISTENERS` on the local address (or its wildcard): the owner comes from the
//!   syscall that made the socket, never from softirq context. It stores the connection under
//!   its 4-tuple and side in `FLOWS` and asks for the socket's state changes, so that the entry
//!   goes when the connection closes.
//! - `cgroup/sock_release` forgets a released socket's cookie and, if it was bound, its address
//!   (through `BINDS`: the release cannot read the socket's address itself).
//!
//! IPv4 addresses are stored IPv4-mapped, so dual-stack sockets and IPv4 ones meet the same keys.
//!
//! # Maps
//!
//! | name | type | key | value |
//! | --- | --- | --- | --- |
//! | `SOCKETS` | LRU hash, 131 072 | `u64` socket cookie | [`Owner`]: `cgroup_id: u64`, `pid: u32`, `comm: [u8; 16]`, 4 bytes padding |
//! | `LISTENERS` | LRU hash, 16 384 | [`Endpoint`]: `addr: [u8; 16]`, `port: [u8; 2]` network order, 2 bytes padding | [`Bound`]: `cookie: u64`, [`Owner`] |
//! | `BINDS` | LRU hash, 16 384 | `u64` socket cookie | [`Endpoint`] the socket holds in `LISTENERS` |
//! | `FLOWS` | LRU hash, 131 072 | [`FlowKey`]: initiator and acceptor address and port, [`Side`] | [`Bound`] |
//! | `PROTECTED_UPSTREAMS` | hash, 1 024 | [`Endpoint`] (all-zero address: every address) | `u8` = 1 |
//! | `ALLOWED_CGROUPS` | hash, 1 024 | `u64` cgroup id | `u8` = 1 |
//! | `SETTINGS` | array, 1 | [`Setting`] | `u64`: the [`BypassMode`] |
//! | `BYPASSES` | ring buffer, 64 KiB | | [`BypassEvent`] |
//!
//! The maps and the links can be pinned ([`SocketHooks::attach_pinned`]) so that attribution and
//! the bypass guard keep running while the proxy restarts; the next start attaches its programs
//! first and only then lets the previous ones go. The kernel object is licensed `Apache-2.0`
//! like the workspace, which the kernel accepts as long as the programs call no GPL-only helper.

use std::{
    fs::File,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, RingBuf},
    programs::{CgroupAttachMode, ProgramError, links::FdLink},
};
pub use proxy_ebpf_common;
use proxy_ebpf_common::{
    ALLOWED, ALLOWED_CGROUPS, BINDS, BYPASSES, Bound, BypassEvent, BypassMode, COMM_LEN,
    CONNECT4_PROGRAM, CONNECT6_PROGRAM, Endpoint, FLOWS, FlowKey, LISTENERS, Owner,
    POST_BIND4_PROGRAM, POST_BIND6_PROGRAM, PROTECTED, PROTECTED_UPSTREAMS, SETTINGS,
    SOCK_OPS_PROGRAM, SOCK_RELEASE_PROGRAM, SOCKETS, Setting, Side, mapped,
};

/// The maps, by name, as pinned by [`SocketHooks::attach_pinned`].
const MAPS: [&str; 8] = [
    SOCKETS,
    LISTENERS,
    BINDS,
    FLOWS,
    PROTECTED_UPSTREAMS,
    ALLOWED_CGROUPS,
    SETTINGS,
    BYPASSES,
];

/// The programs, attached to one cgroup. Dropping it detaches them (unless their links are
/// pinned) and frees the maps (unless pinned).
pub struct SocketHooks {
    flows: HashMap<MapData, FlowKey, Bound>,
    listeners: HashMap<MapData, Endpoint, Bound>,
    protected: HashMap<MapData, Endpoint, u8>,
    allowed: HashMap<MapData, u64, u8>,
    settings: Array<MapData, u64>,
    bypasses: Option<RingBuf<MapData>>,
    /// The links: dropping them detaches the programs, unless they are pinned.
    _links: Vec<FdLink>,
    /// Owns the programs; declared last so the maps and links above are dropped first.
    _ebpf: Ebpf,
}

/// The ring the bypass guard's events arrive on ([`SocketHooks::take_bypasses`]).
pub type BypassRing = RingBuf<MapData>;

/// Who owns one end of a connection, as the hooks recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributed {
    /// The socket cookie.
    pub cookie: u64,
    /// The cgroup v2 id (the inode number of the cgroup directory); `None` when the hooks saw
    /// the connection but not the syscall that made its socket (opened before they were
    /// attached, or evicted since).
    pub cgroup_id: Option<u64>,
    /// The process, when known.
    pub process: Option<Process>,
}

/// A process as the kernel saw it in `connect()` or `bind()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Process id (tgid).
    pub pid: u32,
    /// The task's `comm` (at most 15 bytes; not valid UTF-8 is replaced).
    pub comm: String,
}

/// A connect to a protected upstream from a cgroup not allowed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bypass {
    /// The connecting task's cgroup id.
    pub cgroup_id: u64,
    /// The connecting process.
    pub process: Process,
    /// The upstream it tried.
    pub upstream: SocketAddr,
    /// Whether the kernel refused it (enforce mode) or let it through (audit mode).
    pub refused: bool,
}

impl Bypass {
    /// Decodes a [`BypassEvent`] from the ring (`None` if too short).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<BypassEvent>() {
            return None;
        }
        // SAFETY: `bytes` holds at least size_of::<BypassEvent>() bytes (checked above); the
        // type is plain integers and byte arrays (any bit pattern is valid), and
        // `read_unaligned` has no alignment requirement.
        #[allow(unsafe_code, reason = "decoding a plain-old-data record from the ring")]
        let event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<BypassEvent>()) };
        Some(Bypass {
            cgroup_id: event.owner.cgroup_id,
            process: process(&event.owner),
            upstream: socket_addr(&event.upstream),
            refused: event.refused != 0,
        })
    }
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
    /// A link could not be pinned or a previous one let go.
    #[error("pinning at {path}: {detail}")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A map could not be opened, read or written.
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
}

impl SocketHooks {
    /// Loads the programs and attaches them to the cgroup v2 directory `cgroup_path`. They see
    /// sockets of processes in that cgroup and its descendants from now on, until this value is
    /// dropped.
    pub fn attach(cgroup_path: &Path) -> Result<Self, Error> {
        let cgroup = open_cgroup(cgroup_path)?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(Error::Load)?;
        let mut links = Vec::new();
        for name in PROGRAMS {
            links.push(load_and_attach(&mut ebpf, name, &cgroup, cgroup_path)?);
        }
        Self::from_ebpf(ebpf, links)
    }

    /// Like [`SocketHooks::attach`], with the maps and the links pinned in `dir` (an existing
    /// directory on a BPF file system): the programs stay attached when this process ends, and
    /// the next call with the same `dir` takes over — it attaches its own programs (which share
    /// the pinned maps, so nothing recorded is lost) and only then unpins the previous links, so
    /// no connection goes unseen and the bypass guard never lapses.
    pub fn attach_pinned(cgroup_path: &Path, dir: &Path) -> Result<Self, Error> {
        let cgroup = open_cgroup(cgroup_path)?;
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = MAPS.iter().map(|name| (*name, dir.join(name))).collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(Error::Load)?;
        let mut links = Vec::new();
        for name in PROGRAMS {
            let link = load_and_attach(&mut ebpf, name, &cgroup, cgroup_path)?;
            let current = dir.join(format!("link-{name}"));
            let fresh = dir.join(format!("link-{name}-new"));
            let pin_error = |path: &Path, detail: String| Error::Pin {
                path: path.to_owned(),
                detail,
            };
            let _ = std::fs::remove_file(&fresh);
            let link = link
                .pin(&fresh)
                .map_err(|e| pin_error(&fresh, e.to_string()))?;
            // The previous run's link (if any) goes only now that this one is attached.
            match std::fs::remove_file(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(pin_error(&current, e.to_string())),
            }
            std::fs::rename(&fresh, &current).map_err(|e| pin_error(&current, e.to_string()))?;
            links.push(FdLink::from(link));
        }
        Self::from_ebpf(ebpf, links)
    }

    fn from_ebpf(mut ebpf: Ebpf, links: Vec<FdLink>) -> Result<Self, Error> {
        Ok(Self {
            flows: take_map(&mut ebpf, FLOWS, HashMap::try_from)?,
            listeners: take_map(&mut ebpf, LISTENERS, HashMap::try_from)?,
            protected: take_map(&mut ebpf, PROTECTED_UPSTREAMS, HashMap::try_from)?,
            allowed: take_map(&mut ebpf, ALLOWED_CGROUPS, HashMap::try_from)?,
            settings: take_map(&mut ebpf, SETTINGS, Array::try_from)?,
            bypasses: Some(take_map(&mut ebpf, BYPASSES, RingBuf::try_from)?),
            _links: links,
            _ebpf: ebpf,
        })
    }

    /// Sets the bypass guard: connects to `upstreams` (an unspecified address, `0.0.0.0` or
    /// `::`, stands for the port on every address) from any cgroup not in `allowed` are
    /// reported, and refused in `BypassMode::Enforce`. Replaces any earlier setting (pinned maps
    /// keep what a previous run put there).
    pub fn guard(
        &mut self,
        mode: BypassMode,
        upstreams: &[SocketAddr],
        allowed: &[u64],
    ) -> Result<(), Error> {
        // Off first, so that no connect is judged against a half-written set.
        self.settings
            .set(Setting::BypassMode as u32, BypassMode::Off as u64, 0)
            .map_err(map_error("updating", SETTINGS))?;
        let wanted: Vec<Endpoint> = upstreams.iter().map(endpoint).collect();
        let stale: Vec<Endpoint> = self
            .protected
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.contains(key))
            .collect();
        for key in stale {
            self.protected
                .remove(&key)
                .map_err(map_error("deleting from", PROTECTED_UPSTREAMS))?;
        }
        for key in &wanted {
            self.protected
                .insert(key, PROTECTED, 0)
                .map_err(map_error("updating", PROTECTED_UPSTREAMS))?;
        }
        let stale: Vec<u64> = self
            .allowed
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !allowed.contains(id))
            .collect();
        for id in stale {
            self.allowed
                .remove(&id)
                .map_err(map_error("deleting from", ALLOWED_CGROUPS))?;
        }
        for id in allowed {
            self.allowed
                .insert(id, ALLOWED, 0)
                .map_err(map_error("updating", ALLOWED_CGROUPS))?;
        }
        let mode = if wanted.is_empty() {
            BypassMode::Off
        } else {
            mode
        };
        self.settings
            .set(Setting::BypassMode as u32, mode as u64, 0)
            .map_err(map_error("updating", SETTINGS))
    }

    /// The ring of [`BypassEvent`]s ([`Bypass::from_bytes`] decodes them), for one reader; `None`
    /// once taken.
    pub fn take_bypasses(&mut self) -> Option<BypassRing> {
        self.bypasses.take()
    }

    /// Who opened the connection from `initiator` to `acceptor`, when that socket is on this
    /// host under the cgroup: call it with a server socket's peer and local addresses.
    pub fn initiator(
        &self,
        initiator: SocketAddr,
        acceptor: SocketAddr,
    ) -> Result<Option<Attributed>, Error> {
        self.lookup(initiator, acceptor, Side::Initiated)
    }

    /// Who accepted the connection from `initiator` to `acceptor` (the owner of the listening
    /// socket), when that socket is on this host under the cgroup: call it with a client
    /// socket's local and peer addresses. The connection's own entry when it is still open,
    /// else the listener bound to `acceptor` (or its port's wildcard): an upstream that
    /// answers and closes at once (HTTP/1.0) is gone from `FLOWS` before the record is made.
    pub fn acceptor(
        &self,
        initiator: SocketAddr,
        acceptor: SocketAddr,
    ) -> Result<Option<Attributed>, Error> {
        if let Some(found) = self.lookup(initiator, acceptor, Side::Accepted)?
            && found.cgroup_id.is_some()
        {
            return Ok(Some(found));
        }
        let exact = endpoint(&acceptor);
        for key in [exact, exact.any(), exact.any_v4()] {
            if let Some(bound) = lookup(&self.listeners, &key, LISTENERS)? {
                return Ok(Some(Attributed {
                    cookie: bound.cookie,
                    cgroup_id: (bound.owner.cgroup_id != 0).then_some(bound.owner.cgroup_id),
                    process: Some(process(&bound.owner)),
                }));
            }
        }
        Ok(None)
    }

    fn lookup(
        &self,
        initiator: SocketAddr,
        acceptor: SocketAddr,
        side: Side,
    ) -> Result<Option<Attributed>, Error> {
        let key = FlowKey::new(
            octets(initiator.ip()),
            initiator.port(),
            octets(acceptor.ip()),
            acceptor.port(),
            side,
        );
        let Some(bound) = lookup(&self.flows, &key, FLOWS)? else {
            return Ok(None);
        };
        let known = bound.owner.cgroup_id != 0;
        Ok(Some(Attributed {
            cookie: bound.cookie,
            cgroup_id: known.then_some(bound.owner.cgroup_id),
            process: known.then(|| process(&bound.owner)),
        }))
    }

    /// Who bound `address` (a listener's owner), while its socket lives.
    pub fn listener(&self, address: SocketAddr) -> Result<Option<Attributed>, Error> {
        let key = endpoint(&address);
        Ok(
            lookup(&self.listeners, &key, LISTENERS)?.map(|bound| Attributed {
                cookie: bound.cookie,
                cgroup_id: Some(bound.owner.cgroup_id),
                process: Some(process(&bound.owner)),
            }),
        )
    }

    /// Records `address` as bound by process `pid` (`comm`) in cgroup `cgroup_id`, for a
    /// listener bound before the programs were attached; an entry the kernel wrote is never
    /// replaced. Whether it was recorded.
    pub fn seed_listener(
        &mut self,
        address: SocketAddr,
        cgroup_id: u64,
        pid: u32,
        comm: &str,
    ) -> Result<bool, Error> {
        let mut name = [0u8; COMM_LEN];
        for (slot, byte) in name.iter_mut().zip(comm.bytes().take(COMM_LEN - 1)) {
            *slot = byte;
        }
        let bound = Bound {
            cookie: 0,
            owner: Owner {
                cgroup_id,
                pid,
                comm: name,
                _pad: [0; 4],
            },
        };
        // BPF_NOEXIST: only where nothing is recorded.
        match self.listeners.insert(endpoint(&address), bound, 1) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::AlreadyExists => {
                Ok(false)
            }
            Err(source) => Err(map_error("updating", LISTENERS)(source)),
        }
    }

    /// How many connections `FLOWS` holds now (both sides of a local connection count).
    pub fn flows(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
    }
}

impl std::fmt::Debug for SocketHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketHooks").finish_non_exhaustive()
    }
}

/// The kernel object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proxy-ebpf"));

/// How the programs are attached: as `bpf_link`s (kernel 5.7 and later), which the kernel always
/// attaches in `BPF_F_ALLOW_MULTI` mode beside other programs on the cgroup (it refuses the flag
/// itself on a link).
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// Every program, in the order attached.
const PROGRAMS: [&str; 6] = [
    POST_BIND4_PROGRAM,
    POST_BIND6_PROGRAM,
    CONNECT4_PROGRAM,
    CONNECT6_PROGRAM,
    SOCK_OPS_PROGRAM,
    SOCK_RELEASE_PROGRAM,
];

fn open_cgroup(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Cgroup {
        path: path.display().to_string(),
        source,
    })
}

/// Loads program `name` and attaches it to `cgroup` with a multi-attach link, returned so that
/// it can be pinned (the `Ebpf` keeps it attached otherwise).
fn load_and_attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
    path: &Path,
) -> Result<FdLink, Error> {
    let attach_error = |source| Error::Attach {
        program: name,
        path: path.display().to_string(),
        source,
    };
    let program = ebpf.program_mut(name).ok_or(Error::Missing(name))?;
    let pin = |detail: String| Error::Pin {
        path: path.to_owned(),
        detail: format!("{name}: {detail}"),
    };
    let link = match program {
        aya::programs::Program::CgroupSockAddr(p) => {
            load(p.load(), name)?;
            let id = p.attach(cgroup, LINK_MODE).map_err(attach_error)?;
            FdLink::try_from(p.take_link(id).map_err(attach_error)?)
                .map_err(|e| pin(e.to_string()))?
        }
        aya::programs::Program::CgroupSock(p) => {
            load(p.load(), name)?;
            let id = p.attach(cgroup, LINK_MODE).map_err(attach_error)?;
            FdLink::try_from(p.take_link(id).map_err(attach_error)?)
                .map_err(|e| pin(e.to_string()))?
        }
        aya::programs::Program::SockOps(p) => {
            load(p.load(), name)?;
            let id = p.attach(cgroup, LINK_MODE).map_err(attach_error)?;
            FdLink::try_from(p.take_link(id).map_err(attach_error)?)
                .map_err(|e| pin(e.to_string()))?
        }
        _ => return Err(Error::Missing(name)),
    };
    Ok(link)
}

fn load(result: Result<(), ProgramError>, program: &'static str) -> Result<(), Error> {
    result.map_err(|source| Error::Verify { program, source })
}

fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    typed: impl FnOnce(aya::maps::Map) -> Result<M, MapError>,
) -> Result<M, Error> {
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    typed(map).map_err(map_error("opening", name))
}

fn map_error(operation: &'static str, map: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map {
        operation,
        map,
        source,
    }
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

/// An address as the maps hold it: IPv6 as is, IPv4 (and IPv4-mapped IPv6) mapped. An
/// unspecified address (either family) is all zeros, the maps' "every address".
fn octets(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn endpoint(address: &SocketAddr) -> Endpoint {
    let addr = if address.ip().is_unspecified() {
        [0; 16]
    } else {
        octets(address.ip())
    };
    Endpoint::new(addr, address.port())
}

fn socket_addr(endpoint: &Endpoint) -> SocketAddr {
    let ip = std::net::Ipv6Addr::from(endpoint.addr);
    SocketAddr::new(
        IpAddr::V6(ip).to_canonical(),
        u16::from_be_bytes(endpoint.port),
    )
}

fn process(owner: &Owner) -> Process {
    Process {
        pid: owner.pid,
        comm: String::from_utf8_lossy(owner.comm()).into_owned(),
    }
}
