//! Container attribution: which container (cgroup) is on the other end of a connection, and
//! the bypass guard.
//!
//! - [`identity`]: a cgroup v2 path → the container, pod or service it belongs to, by the
//!   naming of each runtime (Docker, containerd/CRI, CRI-O, Podman, Kubernetes, systemd).
//! - [`resolve`]: a cgroup id (the inode of its directory) → its path, walking the cgroup v2
//!   mount once and caching, re-resolving on a miss and forgetting removed cgroups.
//! - [`Attribution`]: the socket hooks (`proxy-ebpf`) attached to `attribution.cgroup_root`,
//!   asked for each request who made the client connection (when it comes from this host) and
//!   who accepted the upstream connection; and the reader of the bypass guard's events, each
//!   an audit record.
//!
//! Built with the `attribution` cargo feature (the kernel object needs the nightly toolchain
//! and `bpf-linker`); without it, a configured `attribution:` section is refused at start (or,
//! with `required: false`, reported and skipped).

pub mod identity;
pub mod procnet;
pub mod resolve;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::audit::{Container, HttpEvent};
use crate::connection::Connection;

/// Why attribution could not start.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// This binary has no socket hooks in it.
    #[error(
        "this sekisho was built without the socket hooks; build it with `cargo build --release -p sekisho --features attribution`"
    )]
    NotBuilt,
    /// No cgroup v2 mount.
    #[error(
        "no cgroup v2 file system is mounted (looked in /proc/self/mountinfo); set attribution.cgroup_root"
    )]
    NoCgroup2,
    /// Loading, verifying, attaching or pinning failed.
    #[error("socket hooks on {root}: {reason}")]
    Attach {
        /// The cgroup the hooks were to be attached to.
        root: String,
        /// What went wrong, with a hint when the cause is a known one.
        reason: String,
    },
}

/// Attribution's state, for the records, `/metrics` and the start record.
#[derive(Debug)]
pub enum AttributionStatus {
    /// No `attribution:` section.
    Off,
    /// Attached.
    Active(std::sync::Arc<Attribution>),
    /// Configured with `required: false` and not attached: why.
    Unavailable(String),
}

impl AttributionStatus {
    /// Fills in the containers of `record`'s client and upstream connections (or says that
    /// attribution is unavailable).
    pub fn annotate(&self, record: &mut HttpEvent, conn: &Connection) {
        match self {
            AttributionStatus::Off => {}
            AttributionStatus::Unavailable(_) => record.attribution_unavailable = true,
            AttributionStatus::Active(attribution) => attribution.annotate(record, conn),
        }
    }
}

/// Lookup counters.
#[derive(Debug, Default)]
pub struct AttributionCounters {
    /// Connections attributed to a cgroup.
    pub hits: AtomicU64,
    /// Lookups that found nothing (a peer not on this host, or not under the cgroup root).
    pub misses: AtomicU64,
    /// Lookups that failed (logged).
    pub failures: AtomicU64,
    /// Bypass attempts reported by the kernel.
    pub bypasses: AtomicU64,
}

/// The socket hooks, attached, and the cgroup resolver.
#[derive(Debug)]
pub struct Attribution {
    hooks: hooks::Hooks,
    resolver: resolve::Resolver,
    /// The cgroup the hooks are attached to.
    pub root: PathBuf,
    /// Lookup counters.
    pub counters: AttributionCounters,
}

impl Attribution {
    /// Attaches the hooks to `config.cgroup_root` (or the cgroup v2 mount), pinned under
    /// `config.pin_path`, and sets the bypass guard: sekisho's own cgroup and the exceptions may
    /// connect to the protected upstreams.
    pub fn load(config: &sekisho_config::Attribution) -> Result<Self, AttributionError> {
        let mount = resolve::detect_root().ok_or(AttributionError::NoCgroup2)?;
        let root = config.cgroup_root.clone().unwrap_or_else(|| mount.clone());
        let fail = |reason: String| AttributionError::Attach {
            root: root.display().to_string(),
            reason,
        };
        let mut allowed = vec![own_cgroup(&mount).map_err(fail)?];
        for exception in &config.exceptions {
            match cgroup_id(&mount.join(exception.trim_start_matches('/'))) {
                Ok(id) => allowed.push(id),
                Err(e) => {
                    tracing::warn!(cgroup = %exception, error = %e, "attribution.exceptions: no such cgroup now; it is not allowed to the protected upstreams");
                }
            }
        }
        let mut hooks = hooks::Hooks::attach(&root, config, &allowed).map_err(fail)?;
        let seeded = seed_listeners(&mut hooks, &mount, &root);
        if seeded > 0 {
            tracing::info!(
                seeded,
                "socket hooks: listeners bound before sekisho started found in /proc"
            );
        }
        tracing::info!(root = %root.display(), protected = config.protected_upstreams.len(), mode = ?config.mode, "socket hooks attached: connections attributed to their cgroups");
        Ok(Attribution {
            hooks,
            resolver: resolve::Resolver::new(mount),
            root,
            counters: AttributionCounters::default(),
        })
    }

    /// Fills in the containers of `record`'s client connection (`conn`) and upstream
    /// connection.
    pub fn annotate(&self, record: &mut HttpEvent, conn: &Connection) {
        record.container = self.owner(self.hooks.initiator(conn.peer, conn.local));
        if let Some(upstream) = record.upstream_connection {
            record.upstream_container =
                self.owner(self.hooks.acceptor(upstream.local, upstream.remote));
        }
    }

    fn owner(&self, found: Result<Option<Owner>, String>) -> Option<Container> {
        match found {
            Ok(Some(owner)) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(self.container(owner))
            }
            Ok(None) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "attribution lookup failed");
                None
            }
        }
    }

    /// What the cgroup's path says, with the process.
    fn container(&self, owner: Owner) -> Container {
        let cgroup = self.resolver.path(owner.cgroup_id);
        let identity = cgroup
            .as_deref()
            .map(identity::identify)
            .unwrap_or_default();
        Container {
            cgroup_id: owner.cgroup_id,
            cgroup,
            id: identity.container_id,
            runtime: identity.runtime.map(identity::Runtime::as_str),
            pod_uid: identity.pod_uid,
            qos: identity.qos.map(identity::QosClass::as_str),
            unit: identity.unit,
            pid: owner.pid,
            process: owner.process,
        }
    }

    /// The resolver's cache counters.
    pub fn cache(&self) -> resolve::ResolverStats {
        self.resolver.stats()
    }

    /// Reads the bypass guard's events until the process ends, each one an audit record:
    /// blocks, so run it on a thread of its own.
    pub fn report_bypasses(&self, audit: &crate::audit::AuditLog) {
        self.hooks
            .bypasses(|cgroup_id, pid, process, upstream, refused| {
                self.counters.bypasses.fetch_add(1, Ordering::Relaxed);
                let source = self.container(Owner {
                    cgroup_id,
                    pid: Some(pid),
                    process: Some(process),
                });
                tracing::warn!(%upstream, refused, cgroup = ?source.cgroup, pid, "connection to a protected upstream from outside sekisho");
                audit.keep(crate::audit::Event::Bypass(Box::new(
                    crate::audit::BypassAttempt {
                        time: jiff::Timestamp::now(),
                        source,
                        upstream,
                        refused,
                    },
                )));
            });
    }
}

/// Seeds the hooks with the TCP listeners already bound under `root` (their binders were never
/// seen by the kernel programs); how many.
fn seed_listeners(hooks: &mut hooks::Hooks, mount: &Path, root: &Path) -> usize {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listening.extend(procnet::listening(&text));
        }
    }
    let inodes: Vec<u64> = listening.iter().map(|l| l.inode).collect();
    let holders = procnet::holders(&inodes);
    let mut seeded = 0;
    for socket in listening {
        let Some(pid) = holders.get(&socket.inode).copied() else {
            continue;
        };
        let Some(path) = procnet::cgroup_of(pid) else {
            continue;
        };
        let dir = mount.join(path.trim_start_matches('/'));
        if !dir.starts_with(root) {
            continue;
        }
        let Ok(cgroup_id) = cgroup_id(&dir) else {
            continue;
        };
        let comm = procnet::comm_of(pid).unwrap_or_default();
        match hooks.seed_listener(socket.address, cgroup_id, pid, &comm) {
            Ok(true) => seeded += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(address = %socket.address, error = %e, "socket hooks: seeding a listener failed")
            }
        }
    }
    seeded
}

/// Who owns one end of a connection, as the hooks say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    cgroup_id: u64,
    pid: Option<u32>,
    process: Option<String>,
}

/// The cgroup id (directory inode) of `path`.
fn cgroup_id(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)?.ino())
}

/// The id of sekisho's own cgroup: its cgroup v2 path from `/proc/self/cgroup` (`0::/path`)
/// under `mount`.
fn own_cgroup(mount: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| "/proc/self/cgroup has no cgroup v2 line (0::)".to_owned())?;
    let dir = mount.join(path.trim().trim_start_matches('/'));
    cgroup_id(&dir).map_err(|e| format!("sekisho's own cgroup {}: {e}", dir.display()))
}

#[cfg(feature = "attribution")]
mod hooks {
    //! The kernel programs, through `proxy-ebpf`.

    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Mutex;

    use proxy_ebpf::SocketHooks;
    use proxy_ebpf::proxy_ebpf_common::BypassMode;

    use super::Owner;

    /// The attached hooks. Lookups read maps (`&self` is enough); the bypass ring is taken once.
    pub(super) struct Hooks {
        hooks: SocketHooks,
        ring: Mutex<Option<proxy_ebpf::BypassRing>>,
    }

    impl std::fmt::Debug for Hooks {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Hooks").finish_non_exhaustive()
        }
    }

    /// `statfs` type of a BPF file system.
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    /// The layout of the pinned maps and links: a new layout gets a new directory.
    const LAYOUT: &str = "v1";

    impl Hooks {
        pub(super) fn attach(
            root: &Path,
            config: &sekisho_config::Attribution,
            allowed: &[u64],
        ) -> Result<Self, String> {
            let dir = config.pin_path.join(LAYOUT);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("making the pin directory {}: {e}", dir.display()))?;
            let fs = rustix::fs::statfs(&dir)
                .map_err(|e| format!("checking the pin directory {}: {e}", dir.display()))?;
            if fs.f_type != BPF_FS_MAGIC {
                return Err(format!(
                    "{} is not on a BPF file system; mount one (`mount -t bpf bpf /sys/fs/bpf`) or set attribution.pin_path",
                    config.pin_path.display()
                ));
            }
            let mut hooks = SocketHooks::attach_pinned(root, &dir).map_err(|e| explain(&e))?;
            let mode = match config.mode {
                sekisho_config::BypassMode::Audit => BypassMode::Audit,
                sekisho_config::BypassMode::Enforce => BypassMode::Enforce,
            };
            hooks
                .guard(mode, &config.protected_upstreams, allowed)
                .map_err(|e| explain(&e))?;
            let ring = hooks.take_bypasses();
            Ok(Hooks {
                hooks,
                ring: Mutex::new(ring),
            })
        }

        /// Records `address` as bound by `pid` in `cgroup_id`, unless the kernel recorded it;
        /// whether it did.
        pub(super) fn seed_listener(
            &mut self,
            address: SocketAddr,
            cgroup_id: u64,
            pid: u32,
            comm: &str,
        ) -> Result<bool, String> {
            self.hooks
                .seed_listener(address, cgroup_id, pid, comm)
                .map_err(|e| explain(&e))
        }

        pub(super) fn initiator(
            &self,
            peer: SocketAddr,
            local: SocketAddr,
        ) -> Result<Option<Owner>, String> {
            self.hooks
                .initiator(peer, local)
                .map(|found| found.and_then(owner))
                .map_err(|e| explain(&e))
        }

        pub(super) fn acceptor(
            &self,
            local: SocketAddr,
            remote: SocketAddr,
        ) -> Result<Option<Owner>, String> {
            self.hooks
                .acceptor(local, remote)
                .map(|found| found.and_then(owner))
                .map_err(|e| explain(&e))
        }

        /// Calls `report` for each bypass event, as they come (poll(2) on the ring), until the
        /// process ends.
        pub(super) fn bypasses(&self, mut report: impl FnMut(u64, u32, String, SocketAddr, bool)) {
            use std::os::fd::AsFd as _;
            let Some(mut ring) = self.ring.lock().ok().and_then(|mut ring| ring.take()) else {
                return;
            };
            loop {
                while let Some(item) = proxy_ebpf::BypassRing::next(&mut ring) {
                    if let Some(bypass) = proxy_ebpf::Bypass::from_bytes(&item) {
                        report(
                            bypass.cgroup_id,
                            bypass.process.pid,
                            bypass.process.comm,
                            bypass.upstream,
                            bypass.refused,
                        );
                    }
                }
                let fd = ring.as_fd();
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                if let Err(e) = rustix::event::poll(&mut fds, None)
                    && e != rustix::io::Errno::INTR
                {
                    tracing::error!(error = %e, "bypass events cannot be read any more");
                    return;
                }
            }
        }
    }

    fn owner(found: proxy_ebpf::Attributed) -> Option<Owner> {
        let cgroup_id = found.cgroup_id?;
        Some(Owner {
            cgroup_id,
            pid: found.process.as_ref().map(|p| p.pid),
            process: found.process.map(|p| p.comm),
        })
    }

    /// The error's chain, with what to do about the causes operators meet.
    fn explain(error: &proxy_ebpf::Error) -> String {
        let (text, errno) = crate::error::chain(error);
        match errno {
            Some(1 | 13) => format!(
                "loading cgroup programs needs CAP_BPF and CAP_NET_ADMIN (run as root or grant them) ({text})"
            ),
            Some(2) => format!("there is no such cgroup directory ({text})"),
            _ => text,
        }
    }
}

#[cfg(not(feature = "attribution"))]
mod hooks {
    //! Built without the `attribution` feature: nothing can be attached.

    use std::net::SocketAddr;
    use std::path::Path;

    use super::Owner;

    /// Never constructed.
    #[derive(Debug)]
    pub(super) enum Hooks {}

    impl Hooks {
        pub(super) fn attach(
            _: &Path,
            _: &sekisho_config::Attribution,
            _: &[u64],
        ) -> Result<Self, String> {
            Err(super::AttributionError::NotBuilt.to_string())
        }

        pub(super) fn seed_listener(
            &mut self,
            _: SocketAddr,
            _: u64,
            _: u32,
            _: &str,
        ) -> Result<bool, String> {
            match *self {}
        }

        pub(super) fn initiator(
            &self,
            _: SocketAddr,
            _: SocketAddr,
        ) -> Result<Option<Owner>, String> {
            match *self {}
        }

        pub(super) fn acceptor(
            &self,
            _: SocketAddr,
            _: SocketAddr,
        ) -> Result<Option<Owner>, String> {
            match *self {}
        }

        pub(super) fn bypasses(&self, _: impl FnMut(u64, u32, String, SocketAddr, bool)) {
            match *self {}
        }
    }
}
