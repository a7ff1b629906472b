//! The NIC guard as the proxy runs it: the XDP program (`xdp-guard`) attached to the
//! configured interfaces, and the addresses it admits to the protected ports — fed by session
//! events. A session's `Started` admits its client address until the session's expiry (plus
//! `session_grace`), `Refreshed` extends it, and `Ended` withdraws it once no other live session
//! holds the same address (people behind one NAT must not lock each other out). The kernel
//! already treats an expired admission as absent; the bookkeeping here forgets expired sessions
//! whenever an event arrives.
//!
//! Built only with the `xdp` cargo feature (the kernel object needs the nightly toolchain and
//! `bpf-linker`); without it, a configured `xdp:` section is refused at start (or, with
//! `required: false`, reported and skipped).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sekisho_config::{AutoBan, Xdp};

use crate::session::unix_now;
use crate::sessions::events::{SessionChange, SessionEvent, SessionSubscriber};

/// Why the guard could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// This binary has no XDP program in it.
    #[error(
        "this sekisho was built without the XDP guard; build it with `cargo build --release -p sekisho --features xdp`"
    )]
    NotBuilt,
    /// Trusted addresses are never banned.
    #[error("{0} is in xdp.trusted: trusted addresses are never banned")]
    Trusted(IpAddr),
    /// Loading, verifying or attaching failed on an interface.
    #[error("XDP guard on interface `{interface}`: {reason}")]
    Attach {
        /// The interface.
        interface: String,
        /// What went wrong, with a hint when the cause is a known one.
        reason: String,
    },
}

/// The guard's state of health, for `/metrics` and the start record.
#[derive(Debug)]
pub enum NicStatus {
    /// No `xdp:` section.
    Off,
    /// Attached and fed by session events.
    Attached(std::sync::Arc<NicGuard>),
    /// Configured with `required: false` and not attached: why.
    Failed(String),
}

/// Counters of the guard's map writes.
#[derive(Debug, Default)]
pub struct XdpCounters {
    /// Sources admitted or extended.
    pub admissions: AtomicU64,
    /// Sources withdrawn.
    pub withdrawals: AtomicU64,
    /// Map writes that failed (the source stays as it was; logged).
    pub failures: AtomicU64,
}

/// The attached guard and the sessions holding each admitted address.
#[derive(Debug)]
pub struct NicGuard {
    inner: Mutex<Inner>,
    grace: Duration,
    auto_ban: Option<AutoBan>,
    trusted: Vec<ipnet::IpNet>,
    /// Where ban records go.
    audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
    /// Map write counters.
    pub counters: XdpCounters,
}

/// Sources whose failures are counted at once (the oldest counts are dropped beyond).
const MAX_FAILING_SOURCES: usize = 65_536;

#[derive(Debug)]
struct Inner {
    attached: Vec<attach::Attached>,
    /// For each admitted address, its live sessions (hash → Unix expiry).
    sessions: HashMap<IpAddr, HashMap<String, u64>>,
    /// Addresses bearer tokens were used from: the latest token expiry seen and when the
    /// admission was last written (Unix seconds).
    bearers: HashMap<IpAddr, (u64, u64)>,
    /// Recent failures per source (Unix seconds), within the auto-ban window.
    failures: HashMap<IpAddr, std::collections::VecDeque<u64>>,
    /// Banned sources and when their ban ends (Unix seconds).
    bans: HashMap<IpAddr, u64>,
}

/// At most one map write per address per this many seconds for bearer-token use.
const BEARER_WRITE_INTERVAL: u64 = 5;
/// Addresses admitted for bearer tokens at once (the kernel map holds 65 536 per family).
const MAX_BEARER_SOURCES: usize = 32_768;

impl NicGuard {
    /// Loads the program and attaches it to every interface of `config`, protecting its ports
    /// and trusting its ranges. Nothing is replaced: an interface that already has an XDP
    /// program is an error.
    pub fn load(
        config: &Xdp,
        audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
    ) -> Result<Self, XdpError> {
        let mut attached = Vec::new();
        for interface in &config.interfaces {
            attached.push(attach::Attached::load(interface, config)?);
        }
        Ok(NicGuard {
            inner: Mutex::new(Inner {
                attached,
                sessions: HashMap::new(),
                bearers: HashMap::new(),
                failures: HashMap::new(),
                bans: HashMap::new(),
            }),
            grace: config.session_grace,
            auto_ban: config.auto_ban,
            trusted: config.trusted.clone(),
            audit,
            counters: XdpCounters::default(),
        })
    }

    /// Ends the bans whose time is up (the kernel already lets such sources through) and
    /// records each end. Called every few seconds.
    pub fn sweep(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = unix_now();
        let ended: Vec<IpAddr> = inner
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(address, _)| *address)
            .collect();
        for address in ended {
            inner.bans.remove(&address);
            for attached in &mut inner.attached {
                if let Err(e) = attached.unban(address) {
                    tracing::error!(%address, error = %e, "XDP guard: lifting a ban failed");
                }
            }
            tracing::info!(%address, "XDP guard: ban ended");
            self.keep(
                address,
                crate::audit::AuthActivity::SourceUnbanned,
                "ban ended".into(),
            );
        }
    }

    fn keep(&self, address: IpAddr, activity: crate::audit::AuthActivity, detail: String) {
        if let Some(audit) = &self.audit {
            let source = crate::sessions::events::EventSource {
                request_id: None,
                client_ip: address,
                peer: None,
                user_agent: None,
                host: None,
            };
            audit.keep(source.auth(activity, true, Some(detail), None, None));
        }
    }

    /// How many addresses hold at least one live session or unexpired bearer token.
    pub fn admitted_sources(&self) -> usize {
        let now = unix_now();
        self.inner.lock().map_or(0, |inner| {
            let bearers_only = inner
                .bearers
                .iter()
                .filter(|(address, (exp, _))| *exp > now && !inner.sessions.contains_key(address))
                .count();
            inner.sessions.len() + bearers_only
        })
    }

    /// Admits `address` until the latest of its sessions' expiry (plus the grace) and its
    /// bearer tokens' expiry, or withdraws it when nothing holds it any more.
    fn apply(&self, inner: &mut Inner, address: IpAddr, now: u64) {
        let grace = self.grace.as_secs();
        let sessions = inner
            .sessions
            .get(&address)
            .and_then(|sessions| sessions.values().max().copied())
            .map(|expires_at| expires_at.saturating_add(grace));
        let bearer = inner
            .bearers
            .get(&address)
            .map(|(expires_at, _)| *expires_at)
            .filter(|expires_at| *expires_at > now);
        let outcome = match sessions.max(bearer) {
            Some(until) => {
                let valid_for = Duration::from_secs(until.saturating_sub(now));
                self.counters.admissions.fetch_add(1, Ordering::Relaxed);
                inner
                    .attached
                    .iter_mut()
                    .try_for_each(|a| a.allow(address, valid_for))
            }
            None => {
                inner.sessions.remove(&address);
                self.counters.withdrawals.fetch_add(1, Ordering::Relaxed);
                inner
                    .attached
                    .iter_mut()
                    .try_for_each(|a| a.revoke(address))
            }
        };
        if let Err(e) = outcome {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%address, error = %e, "XDP guard map write failed");
        }
    }
}

impl SessionSubscriber for NicGuard {
    /// Keeps the admitted addresses in step with the sessions that hold them.
    fn session_event(&self, event: &SessionEvent) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = unix_now();
        let grace = self.grace.as_secs();
        let address = event.source.client_ip.to_canonical();
        // Forget sessions that ended by expiry (no event says so), and spent bearer tokens.
        inner.sessions.retain(|_, sessions| {
            sessions.retain(|_, expires_at| expires_at.saturating_add(grace) > now);
            !sessions.is_empty()
        });
        inner.bearers.retain(|_, (expires_at, _)| *expires_at > now);
        match event.change {
            SessionChange::Started | SessionChange::Refreshed => {
                inner
                    .sessions
                    .entry(address)
                    .or_default()
                    .insert(event.session.clone(), event.expires_at);
            }
            SessionChange::Ended(_) => {
                let Some(sessions) = inner.sessions.get_mut(&address) else {
                    return;
                };
                if sessions.remove(&event.session).is_none() {
                    return;
                }
            }
        }
        self.apply(&mut inner, address, now);
    }

    /// Admits an address a live session is used from that does not hold it yet (after a
    /// restart of sekisho, or a client whose address changed): one map write per session and
    /// address, nothing when it is already known.
    fn session_used(&self, source: IpAddr, session: &str, expires_at: u64) {
        let address = source.to_canonical();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner
            .sessions
            .get(&address)
            .is_some_and(|sessions| sessions.contains_key(session))
        {
            return;
        }
        let now = unix_now();
        if expires_at.saturating_add(self.grace.as_secs()) <= now {
            return;
        }
        inner
            .sessions
            .entry(address)
            .or_default()
            .insert(session.to_owned(), expires_at);
        self.apply(&mut inner, address, now);
    }

    /// Counts a failure from `source`; at `auto_ban.failures` within `auto_ban.window` the
    /// source is banned for `auto_ban.ban` (never a trusted one), and the ban recorded.
    fn failure(&self, source: IpAddr) {
        let Some(rule) = self.auto_ban else {
            return;
        };
        let address = source.to_canonical();
        if self.trusted.iter().any(|net| net.contains(&address)) {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.bans.contains_key(&address) {
            return;
        }
        let now = unix_now();
        let since = now.saturating_sub(rule.window.as_secs());
        if !inner.failures.contains_key(&address) && inner.failures.len() >= MAX_FAILING_SOURCES {
            inner
                .failures
                .retain(|_, times| times.back().is_some_and(|t| *t > since));
            if inner.failures.len() >= MAX_FAILING_SOURCES {
                return;
            }
        }
        let times = inner.failures.entry(address).or_default();
        times.push_back(now);
        while times.front().is_some_and(|t| *t <= since) {
            times.pop_front();
        }
        if times.len() < usize::try_from(rule.failures).unwrap_or(usize::MAX) {
            return;
        }
        inner.failures.remove(&address);
        inner
            .bans
            .insert(address, now.saturating_add(rule.ban.as_secs()));
        for attached in &mut inner.attached {
            if let Err(e) = attached.ban(address, rule.ban) {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%address, error = %e, "XDP guard: banning failed");
            }
        }
        tracing::warn!(%address, failures = rule.failures, window_s = rule.window.as_secs(), ban_s = rule.ban.as_secs(), "XDP guard: source banned");
        drop(inner);
        self.keep(
            address,
            crate::audit::AuthActivity::SourceBanned,
            format!(
                "{} failures within {}s: banned for {}s at the NIC",
                rule.failures,
                rule.window.as_secs(),
                rule.ban.as_secs()
            ),
        );
    }

    /// Admits the address a bearer token was used from until the token's expiry, writing the
    /// map at most once per address per [`BEARER_WRITE_INTERVAL`] (a program's every request
    /// passes here) and for at most [`MAX_BEARER_SOURCES`] addresses.
    fn bearer_used(&self, source: IpAddr, expires_at: u64) {
        let now = unix_now();
        if expires_at <= now {
            return;
        }
        let address = source.to_canonical();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some((admitted_until, written_at)) = inner.bearers.get(&address) {
            let covered = *admitted_until >= expires_at;
            let recent =
                *admitted_until > now && now < written_at.saturating_add(BEARER_WRITE_INTERVAL);
            if covered || recent {
                return;
            }
        } else if inner.bearers.len() >= MAX_BEARER_SOURCES {
            inner.bearers.retain(|_, (until, _)| *until > now);
            if inner.bearers.len() >= MAX_BEARER_SOURCES {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let until = inner
            .bearers
            .get(&address)
            .map_or(expires_at, |(until, _)| (*until).max(expires_at));
        inner.bearers.insert(address, (until, now));
        self.apply(&mut inner, address, now);
    }
}

/// The layout of the pinned maps: a new layout gets a new directory, never a mismatch.
#[cfg(feature = "xdp")]
const LAYOUT: &str = "v1";
/// `statfs` type of a BPF file system.
#[cfg(feature = "xdp")]
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `pin_path/<network namespace inode>/<interface>/v1` (made when `create`); `pin_path` must be
/// on a BPF file system.
#[cfg(feature = "xdp")]
fn pin_dir(
    pin_path: &std::path::Path,
    interface: &str,
    create: bool,
) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::MetadataExt as _;
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| format!("reading this network namespace's identity: {e}"))?
        .ino();
    let dir = pin_path
        .join(format!("net-{netns}"))
        .join(interface)
        .join(LAYOUT);
    if create {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("making the pin directory {}: {e}", dir.display()))?;
    } else if !dir.is_dir() {
        return Err(format!(
            "nothing is pinned at {}: is sekisho running with this configuration, in this network namespace?",
            dir.display()
        ));
    }
    let fs = rustix::fs::statfs(&dir)
        .map_err(|e| format!("checking the pin directory {}: {e}", dir.display()))?;
    if fs.f_type != BPF_FS_MAGIC {
        return Err(format!(
            "{} is not on a BPF file system; mount one (`mount -t bpf bpf /sys/fs/bpf`) or set xdp.pin_path",
            pin_path.display()
        ));
    }
    Ok(dir)
}

/// One interface's guard as its pinned maps show it (`sekisho xdp status`).
#[derive(Debug)]
pub struct InterfaceStatus {
    /// The interface.
    pub interface: String,
    /// Where its maps and link are pinned.
    pub pins: std::path::PathBuf,
    /// Whether the program's link is pinned (the program is attached).
    pub attached: bool,
    /// The protected ports.
    pub ports: Vec<u16>,
    /// The trusted ranges.
    pub trusted: Vec<ipnet::IpNet>,
    /// The admitted sources and how long each stays admitted.
    pub admitted: Vec<(IpAddr, Duration)>,
    /// The banned sources and how long each ban has left.
    pub banned: Vec<(IpAddr, Duration)>,
    /// Frames passed, dropped, and malformed (counted in one of the others too).
    pub counters: [u64; 3],
}

/// The pinned guards of `config`'s interfaces, as they are now.
pub fn status(config: &Xdp) -> Result<Vec<InterfaceStatus>, XdpError> {
    config
        .interfaces
        .iter()
        .map(|interface| inspect::status(config, &interface.name))
        .collect()
}

/// Admits `address` for `ttl` on every interface of `config` (by hand, beside the sessions).
pub fn allow(config: &Xdp, address: IpAddr, ttl: Duration) -> Result<(), XdpError> {
    for interface in &config.interfaces {
        inspect::allow(config, &interface.name, address.to_canonical(), ttl)?;
    }
    Ok(())
}

/// Withdraws `address` on every interface of `config` (a session used again re-admits it).
pub fn revoke(config: &Xdp, address: IpAddr) -> Result<(), XdpError> {
    for interface in &config.interfaces {
        inspect::revoke(config, &interface.name, address.to_canonical())?;
    }
    Ok(())
}

/// Bans `address` for `ttl` on every interface of `config`: all its TCP dropped. A trusted
/// address is refused.
pub fn ban(config: &Xdp, address: IpAddr, ttl: Duration) -> Result<(), XdpError> {
    let address = address.to_canonical();
    if config.trusted.iter().any(|net| net.contains(&address)) {
        return Err(XdpError::Trusted(address));
    }
    for interface in &config.interfaces {
        inspect::ban(config, &interface.name, address, Some(ttl))?;
    }
    Ok(())
}

/// Lifts `address`'s ban on every interface of `config`.
pub fn unban(config: &Xdp, address: IpAddr) -> Result<(), XdpError> {
    for interface in &config.interfaces {
        inspect::ban(config, &interface.name, address.to_canonical(), None)?;
    }
    Ok(())
}

#[cfg(feature = "xdp")]
mod inspect {
    //! The pinned maps of a guard another process runs.

    use std::net::IpAddr;
    use std::time::Duration;

    use sekisho_config::Xdp;
    use xdp_guard::Guard;

    use super::{InterfaceStatus, XdpError, attach::explain, pin_dir};

    fn open(config: &Xdp, interface: &str) -> Result<(Guard, std::path::PathBuf), XdpError> {
        let fail = |reason: String| XdpError::Attach {
            interface: interface.to_owned(),
            reason,
        };
        let dir = pin_dir(&config.pin_path, interface, false).map_err(fail)?;
        let guard = Guard::open_pinned(&dir).map_err(|e| fail(explain(&e)))?;
        Ok((guard, dir))
    }

    pub(super) fn status(config: &Xdp, interface: &str) -> Result<InterfaceStatus, XdpError> {
        let fail = |e: xdp_guard::Error| XdpError::Attach {
            interface: interface.to_owned(),
            reason: explain(&e),
        };
        let (guard, dir) = open(config, interface)?;
        let stats = guard.stats().map_err(fail)?;
        Ok(InterfaceStatus {
            interface: interface.to_owned(),
            attached: dir.join("link").exists(),
            ports: guard.protected_ports().map_err(fail)?,
            trusted: guard.trusted().map_err(fail)?,
            admitted: guard.admitted().map_err(fail)?,
            banned: guard.banned().map_err(fail)?,
            counters: [stats.passed, stats.dropped, stats.malformed],
            pins: dir,
        })
    }

    pub(super) fn allow(
        config: &Xdp,
        interface: &str,
        address: IpAddr,
        ttl: Duration,
    ) -> Result<(), XdpError> {
        let (mut guard, _) = open(config, interface)?;
        guard
            .allow_source(address, ttl)
            .map_err(|e| XdpError::Attach {
                interface: interface.to_owned(),
                reason: explain(&e),
            })
    }

    pub(super) fn revoke(config: &Xdp, interface: &str, address: IpAddr) -> Result<(), XdpError> {
        let (mut guard, _) = open(config, interface)?;
        guard.revoke_source(address).map_err(|e| XdpError::Attach {
            interface: interface.to_owned(),
            reason: explain(&e),
        })
    }

    /// Bans `address` for `ttl`, or lifts its ban (`None`).
    pub(super) fn ban(
        config: &Xdp,
        interface: &str,
        address: IpAddr,
        ttl: Option<Duration>,
    ) -> Result<(), XdpError> {
        let (mut guard, _) = open(config, interface)?;
        match ttl {
            Some(ttl) => guard.ban_source(address, ttl),
            None => guard.unban_source(address),
        }
        .map_err(|e| XdpError::Attach {
            interface: interface.to_owned(),
            reason: explain(&e),
        })
    }
}

#[cfg(not(feature = "xdp"))]
mod inspect {
    //! Built without the `xdp` feature: there are no maps to read.

    use std::net::IpAddr;
    use std::time::Duration;

    use sekisho_config::Xdp;

    use super::{InterfaceStatus, XdpError};

    pub(super) fn status(_: &Xdp, _: &str) -> Result<InterfaceStatus, XdpError> {
        Err(XdpError::NotBuilt)
    }

    pub(super) fn allow(_: &Xdp, _: &str, _: IpAddr, _: Duration) -> Result<(), XdpError> {
        Err(XdpError::NotBuilt)
    }

    pub(super) fn revoke(_: &Xdp, _: &str, _: IpAddr) -> Result<(), XdpError> {
        Err(XdpError::NotBuilt)
    }

    pub(super) fn ban(_: &Xdp, _: &str, _: IpAddr, _: Option<Duration>) -> Result<(), XdpError> {
        Err(XdpError::NotBuilt)
    }
}

#[cfg(feature = "xdp")]
mod attach {
    //! The program on one interface, pinned under `pin_path/<netns>/<interface>/v1`.

    use std::net::IpAddr;
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::time::Duration;

    use sekisho_config::{PortProtocol, Xdp, XdpInterface, XdpMode};
    use xdp_guard::xdp_guard_common::Transport;
    use xdp_guard::{AttachMode, Guard, Pinned, PortRule};

    use super::XdpError;

    /// The guard attached to one interface.
    pub(super) struct Attached {
        interface: String,
        guard: Guard,
        /// Held while this process guards the interface: a second sekisho in the same network
        /// namespace cannot take the interface over (an abstract socket, gone with the process).
        _lock: UnixListener,
    }

    impl std::fmt::Debug for Attached {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Attached")
                .field("interface", &self.interface)
                .finish_non_exhaustive()
        }
    }

    impl Attached {
        pub(super) fn load(interface: &XdpInterface, config: &Xdp) -> Result<Self, XdpError> {
            let name = interface.name.as_str();
            let fail = |reason: String| XdpError::Attach {
                interface: name.to_owned(),
                reason,
            };
            let lock = SocketAddr::from_abstract_name(format!("sekisho-xdp-{name}"))
                .and_then(|address| UnixListener::bind_addr(&address))
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AddrInUse => fail(
                        "another sekisho already guards this interface in this network namespace"
                            .to_owned(),
                    ),
                    _ => fail(format!("taking the interface's lock: {e}")),
                })?;
            let dir = super::pin_dir(&config.pin_path, name, true).map_err(fail)?;
            let mode = match interface.mode {
                XdpMode::Auto => AttachMode::Auto,
                XdpMode::Native => AttachMode::Native,
                XdpMode::Generic => AttachMode::Generic,
            };
            let (mut guard, pinned) =
                Guard::load_pinned(name, mode, &dir).map_err(|e| fail(explain(&e)))?;
            guard
                .set_ports(&port_rules(config))
                .map_err(|e| fail(explain(&e)))?;
            guard
                .retain_trusted(&config.trusted)
                .map_err(|e| fail(explain(&e)))?;
            for range in &config.trusted {
                guard.trust_range(*range).map_err(|e| fail(explain(&e)))?;
            }
            match &config.syn_rate_limit {
                Some(limit) => {
                    let interval = Duration::from_nanos(
                        1_000_000_000 / u64::from(limit.per_second.max(1)),
                    );
                    for port in &limit.ports {
                        guard
                            .limit_syn_rate(*port, interval, limit.burst)
                            .map_err(|e| fail(explain(&e)))?;
                    }
                }
                None => guard
                    .limit_syn_rate(0, Duration::ZERO, 0)
                    .map_err(|e| fail(explain(&e)))?,
            }
            match pinned {
                Pinned::Fresh => {
                    tracing::info!(interface = name, pins = %dir.display(), ports = %ports_text(config), trusted = config.trusted.len(), "XDP guard attached");
                }
                Pinned::Resumed => {
                    tracing::info!(interface = name, pins = %dir.display(), ports = %ports_text(config), trusted = config.trusted.len(), "XDP guard taken over from the previous run: program replaced on its link, admissions kept");
                }
            }
            Ok(Attached {
                interface: name.to_owned(),
                guard,
                _lock: lock,
            })
        }

        pub(super) fn allow(&mut self, address: IpAddr, valid_for: Duration) -> Result<(), String> {
            self.guard
                .allow_source(address, valid_for)
                .map_err(|e| format!("{}: {}", self.interface, explain(&e)))
        }

        pub(super) fn revoke(&mut self, address: IpAddr) -> Result<(), String> {
            self.guard
                .revoke_source(address)
                .map_err(|e| format!("{}: {}", self.interface, explain(&e)))
        }

        pub(super) fn ban(&mut self, address: IpAddr, duration: Duration) -> Result<(), String> {
            self.guard
                .ban_source(address, duration)
                .map_err(|e| format!("{}: {}", self.interface, explain(&e)))
        }

        pub(super) fn unban(&mut self, address: IpAddr) -> Result<(), String> {
            self.guard
                .unban_source(address)
                .map_err(|e| format!("{}: {}", self.interface, explain(&e)))
        }
    }

    /// The ports of `config` as the guard judges them: the protected ones, and sekisho's own
    /// listeners when connection attempts to them are rate-limited.
    fn port_rules(config: &Xdp) -> Vec<PortRule> {
        let mut rules: Vec<PortRule> = config
            .protected_ports
            .iter()
            .map(|p| PortRule {
                transport: match p.protocol {
                    PortProtocol::Tcp => Transport::Tcp,
                    PortProtocol::Udp => Transport::Udp,
                },
                port: p.port,
                protected: true,
                syn_limited: false,
            })
            .collect();
        if let Some(limit) = &config.syn_rate_limit {
            rules.extend(limit.ports.iter().map(|port| PortRule {
                transport: Transport::Tcp,
                port: *port,
                protected: false,
                syn_limited: true,
            }));
        }
        rules
    }

    fn ports_text(config: &Xdp) -> String {
        let ports: Vec<String> = config
            .protected_ports
            .iter()
            .map(ToString::to_string)
            .collect();
        ports.join(",")
    }

    /// The error's chain, with what to do about the causes operators meet.
    pub(super) fn explain(error: &xdp_guard::Error) -> String {
        let mut text = error.to_string();
        let mut errno = None;
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                errno = errno.or(io.raw_os_error());
            }
            source = cause.source();
        }
        if let xdp_guard::Error::NoSuchInterface(_) = error {
            return format!("there is no such interface in sekisho's network namespace ({text})");
        }
        let hint = match errno {
            Some(1 | 13) => Some(
                "loading XDP programs needs CAP_BPF and CAP_NET_ADMIN (run as root or grant them)",
            ),
            Some(19) => Some("there is no such interface in sekisho's network namespace"),
            Some(16 | 17) => Some(
                "another XDP program is already attached to this interface; sekisho never replaces it",
            ),
            _ => None,
        };
        match hint {
            Some(hint) => format!("{hint} ({text})"),
            None => text,
        }
    }
}

#[cfg(not(feature = "xdp"))]
mod attach {
    //! Built without the `xdp` feature: nothing can be attached.

    use std::net::IpAddr;
    use std::time::Duration;

    use sekisho_config::{Xdp, XdpInterface};

    use super::XdpError;

    /// Never constructed.
    #[derive(Debug)]
    pub(super) enum Attached {}

    impl Attached {
        pub(super) fn load(_: &XdpInterface, _: &Xdp) -> Result<Self, XdpError> {
            Err(XdpError::NotBuilt)
        }

        pub(super) fn allow(&mut self, _: IpAddr, _: Duration) -> Result<(), String> {
            match *self {}
        }

        pub(super) fn revoke(&mut self, _: IpAddr) -> Result<(), String> {
            match *self {}
        }

        pub(super) fn ban(&mut self, _: IpAddr, _: Duration) -> Result<(), String> {
            match *self {}
        }

        pub(super) fn unban(&mut self, _: IpAddr) -> Result<(), String> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sessions::events::{EndReason, EventSource};

    /// The bookkeeping alone: no interface attached.
    fn guard() -> NicGuard {
        NicGuard {
            inner: Mutex::new(Inner {
                attached: Vec::new(),
                sessions: HashMap::new(),
                bearers: HashMap::new(),
                failures: HashMap::new(),
                bans: HashMap::new(),
            }),
            grace: Duration::from_secs(60),
            auto_ban: None,
            trusted: Vec::new(),
            audit: None,
            counters: XdpCounters::default(),
        }
    }

    fn event(change: SessionChange, session: &str, address: &str, expires_at: u64) -> SessionEvent {
        SessionEvent {
            change,
            identity: Arc::new(crate::session::test_identity("alice")),
            session: session.into(),
            source: EventSource {
                request_id: None,
                client_ip: address.parse().unwrap_or_else(|e| panic!("{e}")),
                peer: None,
                user_agent: None,
                host: None,
            },
            expires_at,
        }
    }

    #[test]
    fn an_address_stays_admitted_while_any_of_its_sessions_lives() {
        let guard = guard();
        let later = unix_now() + 3600;
        guard.session_event(&event(SessionChange::Started, "a", "198.51.100.7", later));
        guard.session_event(&event(SessionChange::Started, "b", "198.51.100.7", later));
        guard.session_event(&event(SessionChange::Started, "c", "2001:db8::7", later));
        assert_eq!(guard.admitted_sources(), 2);
        let logout = SessionChange::Ended(EndReason::Logout);
        guard.session_event(&event(logout, "a", "198.51.100.7", later));
        assert_eq!(
            guard.admitted_sources(),
            2,
            "b still holds the shared address"
        );
        guard.session_event(&event(logout, "b", "198.51.100.7", later));
        assert_eq!(guard.admitted_sources(), 1, "the last session on it ended");
        assert_eq!(guard.counters.withdrawals.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unknown_ends_change_nothing_and_expired_sessions_are_forgotten() {
        let guard = guard();
        let now = unix_now();
        guard.session_event(&event(
            SessionChange::Started,
            "old",
            "192.0.2.1",
            now - 3600,
        ));
        guard.session_event(&event(
            SessionChange::Started,
            "new",
            "192.0.2.2",
            now + 3600,
        ));
        let logout = SessionChange::Ended(EndReason::Logout);
        guard.session_event(&event(logout, "never-started", "192.0.2.2", now + 3600));
        guard.session_event(&event(logout, "new", "192.0.2.3", now + 3600));
        assert_eq!(
            guard.admitted_sources(),
            1,
            "the session that expired an hour ago (beyond the grace) is forgotten; the live one stays"
        );
        // A v4-mapped client is the same address as its IPv4 form.
        guard.session_event(&event(
            SessionChange::Ended(EndReason::Logout),
            "new",
            "::ffff:192.0.2.2",
            now + 3600,
        ));
        assert_eq!(guard.admitted_sources(), 0);
    }

    #[test]
    fn bearer_tokens_admit_until_they_expire_and_outlive_a_sign_out() {
        let guard = guard();
        let now = unix_now();
        guard.bearer_used(
            "203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}")),
            now + 300,
        );
        guard.bearer_used(
            "203.0.113.10".parse().unwrap_or_else(|e| panic!("{e}")),
            now - 1,
        );
        assert_eq!(
            guard.admitted_sources(),
            1,
            "an expired token admits nothing"
        );
        let writes = guard.counters.admissions.load(Ordering::Relaxed);
        for _ in 0..100 {
            guard.bearer_used(
                "203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}")),
                now + 300,
            );
        }
        assert_eq!(
            guard.counters.admissions.load(Ordering::Relaxed),
            writes,
            "the same token again writes nothing"
        );
        guard.session_event(&event(
            SessionChange::Started,
            "s",
            "203.0.113.9",
            now + 3600,
        ));
        guard.session_event(&event(
            SessionChange::Ended(EndReason::Logout),
            "s",
            "203.0.113.9",
            now + 3600,
        ));
        assert_eq!(
            guard.admitted_sources(),
            1,
            "the program's token still admits its address after the session ended"
        );
        assert_eq!(guard.counters.withdrawals.load(Ordering::Relaxed), 0);
    }
}
