//! The NIC guard as the proxy runs it: the XDP program (`xdp-guard`) attached to the
//! configured interfaces, and the addresses it admits to the protected ports — fed by session
//! events. A session's `Started` admits its client address until the session's expiry (plus
//! `session_grace`), `Refreshed` extends it, and `Ended` withdraws it once no other live session
//! holds the same address (people behind one NAT must not lock each other out). The kernel
//! already treats an expired admission as absent; the bookkeeping here forgets expired sessions
//! whenever an event arrives. What holds each address is journaled ([`ledger`]) so that the next
//! start re-admits what still holds and prunes the rest; the kernel's drop tallies become
//! audit records once their window is over ([`summary`]).
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

mod ledger;
mod summary;

use ledger::{Holders, Ledger};

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

/// The drop summary windows' length and the clock they count on (`CLOCK_MONOTONIC_COARSE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClock {
    /// A window's length, ns.
    pub length_ns: u64,
    /// The clock now, ns.
    pub now_ns: u64,
}

impl WindowClock {
    /// How long ago window `n` started and ended (zero for times not yet past).
    pub fn ago(&self, n: u32) -> (Duration, Duration) {
        let start = u64::from(n).saturating_mul(self.length_ns);
        let end = start.saturating_add(self.length_ns);
        (
            Duration::from_nanos(self.now_ns.saturating_sub(start)),
            Duration::from_nanos(self.now_ns.saturating_sub(end)),
        )
    }
}

/// The kernel program's own counters (frames), summed over CPUs and interfaces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelCounters {
    /// Frames passed.
    pub passed: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames with truncated or inconsistent headers (counted in one of the others too).
    pub malformed: u64,
    /// Frames dropped, by reason.
    pub dropped_by: Vec<(&'static str, u64)>,
}

/// Counters of the guard's map writes.
#[derive(Debug, Default)]
pub struct XdpCounters {
    /// Drop summary records filed in the audit log.
    pub drop_records: AtomicU64,
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
    /// The journal of what holds each address (`None` in unit tests).
    ledger: Option<Ledger>,
    /// Drop summaries: the minute summarised last.
    summarised: Mutex<Option<u32>>,
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
    /// What holds each admitted address: live sessions, bearer tokens, hand-made admissions.
    holders: Holders,
    /// When the admission of each bearer-token address was last written (Unix seconds).
    bearer_written: HashMap<IpAddr, u64>,
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
    /// program is an error. The journal `{state_dir}/xdp-admissions` says what held each
    /// admission before: what still holds (sessions not expired nor `revoked`, tokens and
    /// hand-made admissions not expired) is admitted again, every other admission in the
    /// pinned maps is pruned, and bans carried over are tracked so that their end is recorded.
    pub fn load(
        config: &Xdp,
        listeners: &[u16],
        state_dir: &std::path::Path,
        revoked: &crate::revocation::RevocationList,
        audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
    ) -> Result<Self, XdpError> {
        let mut attached = Vec::new();
        for interface in &config.interfaces {
            attached.push(attach::Attached::load(interface, config, listeners)?);
        }
        let now = unix_now();
        let grace = config.session_grace.as_secs();
        let journal = ledger_path(state_dir);
        let (ledger, holders, malformed) = Ledger::open(&journal, |holders| {
            holders.retain_live(now, grace, |session| revoked.is_revoked(session));
        })
        .map_err(|e| XdpError::Attach {
            interface: config
                .interfaces
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            reason: e.to_string(),
        })?;
        if malformed > 0 {
            tracing::warn!(malformed, file = %journal.display(), "XDP admission journal: skipped malformed lines");
        }
        let mut bans = HashMap::new();
        if let Some(first) = attached.first() {
            for (address, left) in first.banned() {
                bans.insert(address, now.saturating_add(left.as_secs().max(1)));
            }
        }
        let guard = NicGuard {
            inner: Mutex::new(Inner {
                attached,
                holders,
                bearer_written: HashMap::new(),
                failures: HashMap::new(),
                bans,
            }),
            ledger: Some(ledger),
            summarised: Mutex::new(None),
            grace: config.session_grace,
            auto_ban: config.auto_ban,
            trusted: config.trusted.clone(),
            audit,
            counters: XdpCounters::default(),
        };
        guard.reconcile();
        Ok(guard)
    }

    /// Makes the maps say what the holders say: every held address admitted until its
    /// holders' latest expiry, every other admission (a previous run's, whose session has
    /// ended or been revoked meanwhile) withdrawn.
    fn reconcile(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = unix_now();
        let mut pruned = 0usize;
        let mut stale = Vec::new();
        for attached in &inner.attached {
            for (address, _) in attached.admitted() {
                if !inner.holders.holds(&address) && !stale.contains(&address) {
                    stale.push(address);
                }
            }
        }
        for address in stale {
            for attached in &mut inner.attached {
                if let Err(e) = attached.revoke(address) {
                    tracing::error!(%address, error = %e, "XDP guard: pruning failed");
                }
            }
            pruned += 1;
        }
        let held: std::collections::BTreeSet<IpAddr> = inner
            .holders
            .sessions
            .keys()
            .chain(inner.holders.bearers.keys())
            .chain(inner.holders.manual.keys())
            .copied()
            .collect();
        let kept = held.len();
        for address in held {
            self.apply(&mut inner, address, now);
        }
        if kept + pruned > 0 {
            tracing::info!(
                kept,
                pruned,
                "XDP guard: admissions reconciled with the sessions that hold them"
            );
        }
    }

    /// Ends the bans whose time is up (the kernel already lets such sources through) and
    /// records each end; once a minute, files the past minute's drops as audit records.
    /// Called every few seconds.
    pub fn sweep(&self) {
        self.summarise();
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

    /// Turns the drop tallies of the summary windows that are over into audit records (at
    /// most [`summary::MAX_ITEMISED`] sources each per interface and window, plus a roll-up).
    fn summarise(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some((window, clock)) = inner
            .attached
            .first()
            .and_then(attach::Attached::current_window)
        else {
            return;
        };
        {
            let Ok(mut last) = self.summarised.lock() else {
                return;
            };
            if *last == Some(window) {
                return;
            }
            *last = Some(window);
        }
        let wall_now = jiff::Timestamp::now();
        let to_wall = |n: u32| {
            let (start_ago, end_ago) = clock.ago(n);
            let back = |ago: Duration| {
                wall_now - jiff::SignedDuration::try_from(ago).unwrap_or(jiff::SignedDuration::ZERO)
            };
            (back(start_ago), back(end_ago))
        };
        let mut records = Vec::new();
        for attached in &mut inner.attached {
            let tallies = attached.take_drop_tallies(window);
            records.extend(summary::records(attached.interface(), &tallies, to_wall));
        }
        drop(inner);
        if let Some(audit) = &self.audit {
            for record in records {
                self.counters.drop_records.fetch_add(1, Ordering::Relaxed);
                audit.keep(crate::audit::Event::Network(Box::new(record)));
            }
        }
    }

    /// The kernel program's counters, summed over the interfaces.
    pub fn kernel_counters(&self) -> KernelCounters {
        let mut total = KernelCounters::default();
        let Ok(inner) = self.inner.lock() else {
            return total;
        };
        for attached in &inner.attached {
            let c = attached.counters();
            total.passed += c.passed;
            total.dropped += c.dropped;
            total.malformed += c.malformed;
            for (name, n) in c.dropped_by {
                match total.dropped_by.iter_mut().find(|(k, _)| *k == name) {
                    Some((_, sum)) => *sum += n,
                    None => total.dropped_by.push((name, n)),
                }
            }
        }
        total
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

    /// How many addresses hold at least one live session, unexpired bearer token or hand-made
    /// admission.
    pub fn admitted_sources(&self) -> usize {
        let now = unix_now();
        self.inner.lock().map_or(0, |inner| {
            let h = &inner.holders;
            let others = h
                .bearers
                .iter()
                .filter(|(_, exp)| **exp > now)
                .map(|(a, _)| a)
                .chain(
                    h.manual
                        .iter()
                        .filter(|(_, exp)| **exp > now)
                        .map(|(a, _)| a),
                )
                .filter(|address| !h.sessions.contains_key(address))
                .collect::<std::collections::HashSet<_>>()
                .len();
            h.sessions.len() + others
        })
    }

    /// Admits `address` until the latest of its sessions' expiry (plus the grace), its
    /// bearer tokens' and its hand-made admission's expiry, or withdraws it when nothing holds
    /// it any more.
    fn apply(&self, inner: &mut Inner, address: IpAddr, now: u64) {
        let grace = self.grace.as_secs();
        let sessions = inner
            .holders
            .sessions
            .get(&address)
            .and_then(|sessions| sessions.values().max().copied())
            .map(|expires_at| expires_at.saturating_add(grace));
        let bearer = inner
            .holders
            .bearers
            .get(&address)
            .copied()
            .filter(|expires_at| *expires_at > now);
        let manual = inner
            .holders
            .manual
            .get(&address)
            .copied()
            .filter(|expires_at| *expires_at > now);
        let outcome = match sessions.max(bearer).max(manual) {
            Some(until) => {
                let valid_for = Duration::from_secs(until.saturating_sub(now));
                self.counters.admissions.fetch_add(1, Ordering::Relaxed);
                inner
                    .attached
                    .iter_mut()
                    .try_for_each(|a| a.allow(address, valid_for))
            }
            None => {
                inner.holders.sessions.remove(&address);
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

    /// Appends a change to the journal.
    fn journal(&self, inner: &Inner, line: std::fmt::Arguments<'_>) {
        if let Some(ledger) = &self.ledger {
            ledger.append(line, &inner.holders);
        }
    }
}

/// The admission journal under `state_dir`.
pub fn ledger_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("xdp-admissions")
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
        inner.holders.retain_live(now, grace, |_| false);
        let Inner {
            holders,
            bearer_written,
            ..
        } = &mut *inner;
        bearer_written.retain(|address, _| holders.bearers.contains_key(address));
        match event.change {
            SessionChange::Started | SessionChange::Refreshed => {
                inner
                    .holders
                    .sessions
                    .entry(address)
                    .or_default()
                    .insert(event.session.clone(), event.expires_at);
                self.journal(
                    &inner,
                    format_args!("s {address} {} {}", event.session, event.expires_at),
                );
            }
            SessionChange::Ended(_) => {
                // Withdrawn wherever it is held: the session may have been used from several
                // addresses, and the event may come from elsewhere (a provider's back-channel
                // logout comes from the provider). Logouts are rare; the scan is cheap.
                let held: Vec<IpAddr> = inner
                    .holders
                    .sessions
                    .iter()
                    .filter(|(_, sessions)| sessions.contains_key(&event.session))
                    .map(|(address, _)| *address)
                    .collect();
                for address in held {
                    if let Some(sessions) = inner.holders.sessions.get_mut(&address) {
                        sessions.remove(&event.session);
                        if sessions.is_empty() {
                            inner.holders.sessions.remove(&address);
                        }
                    }
                    self.journal(&inner, format_args!("e {address} {}", event.session));
                    self.apply(&mut inner, address, now);
                }
                return;
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
            .holders
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
            .holders
            .sessions
            .entry(address)
            .or_default()
            .insert(session.to_owned(), expires_at);
        self.journal(&inner, format_args!("s {address} {session} {expires_at}"));
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
        if let Some(admitted_until) = inner.holders.bearers.get(&address) {
            let written_at = inner.bearer_written.get(&address).copied().unwrap_or(0);
            let covered = *admitted_until >= expires_at;
            let recent =
                *admitted_until > now && now < written_at.saturating_add(BEARER_WRITE_INTERVAL);
            if covered || recent {
                return;
            }
        } else if inner.holders.bearers.len() >= MAX_BEARER_SOURCES {
            inner.holders.bearers.retain(|_, until| *until > now);
            if inner.holders.bearers.len() >= MAX_BEARER_SOURCES {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let until = inner
            .holders
            .bearers
            .get(&address)
            .map_or(expires_at, |until| (*until).max(expires_at));
        inner.holders.bearers.insert(address, until);
        inner.bearer_written.insert(address, now);
        self.journal(&inner, format_args!("b {address} {until}"));
        self.apply(&mut inner, address, now);
    }
}

/// The layout of the pinned maps: a new layout gets a new directory, never a mismatch.
#[cfg(feature = "xdp")]
const LAYOUT: &str = "v2";
/// `statfs` type of a BPF file system.
#[cfg(feature = "xdp")]
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `pin_path/<network namespace inode>/<interface>/v2` (made when `create`); `pin_path` must be
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
    /// The judged ports, like `22/tcp` (protected) or `8443/tcp (connection attempts limited)`.
    pub ports: Vec<String>,
    /// The trusted ranges.
    pub trusted: Vec<ipnet::IpNet>,
    /// The admitted sources and how long each stays admitted.
    pub admitted: Vec<(IpAddr, Duration)>,
    /// The banned sources and how long each ban has left.
    pub banned: Vec<(IpAddr, Duration)>,
    /// The program's counters.
    pub counters: KernelCounters,
    /// Frames dropped in the minutes not yet filed in the audit log: source, port, reason,
    /// frames; the most dropped first.
    pub recent_drops: Vec<(IpAddr, u16, &'static str, u64)>,
}

/// The pinned guards of `config`'s interfaces, as they are now.
pub fn status(config: &Xdp) -> Result<Vec<InterfaceStatus>, XdpError> {
    config
        .interfaces
        .iter()
        .map(|interface| inspect::status(config, &interface.name))
        .collect()
}

/// Admits `address` for `ttl` on every interface of `config` (by hand, beside the sessions),
/// and notes it in the admission journal under `state_dir` so that a restart keeps it.
pub fn allow(
    config: &Xdp,
    state_dir: &std::path::Path,
    address: IpAddr,
    ttl: Duration,
) -> Result<(), XdpError> {
    let address = address.to_canonical();
    for interface in &config.interfaces {
        inspect::allow(config, &interface.name, address, ttl)?;
    }
    let until = unix_now().saturating_add(ttl.as_secs());
    journal_by_hand(config, state_dir, &format!("m {address} {until}"))
}

/// Withdraws `address` on every interface of `config` now, and its hand-made admission for
/// good. Sessions that hold it admit it again when they are next started or refreshed, and at
/// sekisho's next start; `ban` keeps a source out.
pub fn revoke(config: &Xdp, state_dir: &std::path::Path, address: IpAddr) -> Result<(), XdpError> {
    let address = address.to_canonical();
    for interface in &config.interfaces {
        inspect::revoke(config, &interface.name, address)?;
    }
    journal_by_hand(config, state_dir, &format!("r {address}"))
}

fn journal_by_hand(config: &Xdp, state_dir: &std::path::Path, line: &str) -> Result<(), XdpError> {
    ledger::append_to(&ledger_path(state_dir), line).map_err(|e| XdpError::Attach {
        interface: config
            .interfaces
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default(),
        reason: e.to_string(),
    })
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
    use xdp_guard::xdp_guard_common::Transport;

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
        let ports = guard
            .ports()
            .map_err(fail)?
            .into_iter()
            .map(|rule| {
                let transport = match rule.transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp",
                };
                match (rule.protected, rule.syn_limited) {
                    (true, _) => format!("{}/{transport}", rule.port),
                    (false, _) => format!(
                        "{}/{transport} (open; connection attempts rate-limited)",
                        rule.port
                    ),
                }
            })
            .collect();
        let mut recent: Vec<(IpAddr, u16, &'static str, u64)> = Vec::new();
        for tally in guard.drop_tallies().map_err(fail)? {
            let key = (tally.source, tally.port, tally.reason.name());
            match recent.iter_mut().find(|(s, p, r, _)| (*s, *p, *r) == key) {
                Some(entry) => entry.3 += tally.packets,
                None => recent.push((key.0, key.1, key.2, tally.packets)),
            }
        }
        recent.sort_by_key(|entry| std::cmp::Reverse(entry.3));
        Ok(InterfaceStatus {
            interface: interface.to_owned(),
            attached: dir.join("link").exists(),
            ports,
            trusted: guard.trusted().map_err(fail)?,
            admitted: guard.admitted().map_err(fail)?,
            banned: guard.banned().map_err(fail)?,
            counters: super::attach::kernel_counters(&guard),
            recent_drops: recent,
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
    //! The program on one interface, pinned under `pin_path/<netns>/<interface>/v2`.

    use std::net::IpAddr;
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::time::Duration;

    use sekisho_config::{PortProtocol, Xdp, XdpInterface, XdpMode};
    use xdp_guard::xdp_guard_common::{DropReason, Transport};
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
        pub(super) fn load(
            interface: &XdpInterface,
            config: &Xdp,
            listeners: &[u16],
        ) -> Result<Self, XdpError> {
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
                .set_ports(&port_rules(config, listeners))
                .map_err(|e| fail(explain(&e)))?;
            guard
                .retain_trusted(&config.trusted)
                .map_err(|e| fail(explain(&e)))?;
            for range in &config.trusted {
                guard.trust_range(*range).map_err(|e| fail(explain(&e)))?;
            }
            guard
                .set_drop_window(config.drop_summary)
                .map_err(|e| fail(explain(&e)))?;
            match &config.syn_rate_limit {
                Some(limit) => {
                    let interval =
                        Duration::from_nanos(1_000_000_000 / u64::from(limit.per_second.max(1)));
                    for port in listeners {
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

        pub(super) fn interface(&self) -> &str {
            &self.interface
        }

        /// The admitted sources (errors logged: nothing then).
        pub(super) fn admitted(&self) -> Vec<(IpAddr, Duration)> {
            self.guard.admitted().unwrap_or_else(|e| {
                tracing::error!(interface = %self.interface, error = %explain(&e), "XDP guard: reading the admissions failed");
                Vec::new()
            })
        }

        /// The banned sources (errors logged: nothing then).
        pub(super) fn banned(&self) -> Vec<(IpAddr, Duration)> {
            self.guard.banned().unwrap_or_else(|e| {
                tracing::error!(interface = %self.interface, error = %explain(&e), "XDP guard: reading the bans failed");
                Vec::new()
            })
        }

        /// The drop summary window now and its clock (errors logged: `None` then).
        pub(super) fn current_window(&self) -> Option<(u32, super::WindowClock)> {
            match self.guard.current_window() {
                Ok((window, clock)) => Some((
                    window,
                    super::WindowClock {
                        length_ns: clock.length,
                        now_ns: clock.now,
                    },
                )),
                Err(e) => {
                    tracing::error!(interface = %self.interface, error = %explain(&e), "XDP guard: reading the drop window failed");
                    None
                }
            }
        }

        /// Takes the drop tallies of windows before `before` (errors logged: nothing then).
        pub(super) fn take_drop_tallies(&mut self, before: u32) -> Vec<super::summary::Tally> {
            match self.guard.take_drop_tallies(before) {
                Ok(tallies) => tallies
                    .into_iter()
                    .map(|t| super::summary::Tally {
                        source: t.source,
                        port: t.port,
                        reason: t.reason.name(),
                        window: t.window,
                        packets: t.packets,
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(interface = %self.interface, error = %explain(&e), "XDP guard: reading the drop tallies failed");
                    Vec::new()
                }
            }
        }

        /// The program's counters on this interface (zero when they cannot be read).
        pub(super) fn counters(&self) -> super::KernelCounters {
            kernel_counters(&self.guard)
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

    /// The program's counters as the proxy reports them (zero when they cannot be read).
    pub(super) fn kernel_counters(guard: &Guard) -> super::KernelCounters {
        let Ok(stats) = guard.stats() else {
            return super::KernelCounters::default();
        };
        super::KernelCounters {
            passed: stats.passed,
            dropped: stats.dropped,
            malformed: stats.malformed,
            dropped_by: DropReason::ALL
                .iter()
                .zip(stats.dropped_by)
                .map(|(reason, n)| (reason.name(), n))
                .collect(),
        }
    }

    /// The ports of `config` as the guard judges them: the protected ones, and sekisho's own
    /// listeners when connection attempts to them are rate-limited.
    fn port_rules(config: &Xdp, listeners: &[u16]) -> Vec<PortRule> {
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
        if config.syn_rate_limit.is_some() {
            rules.extend(listeners.iter().map(|port| PortRule {
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
        let (text, errno) = crate::error::chain(error);
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
        pub(super) fn load(_: &XdpInterface, _: &Xdp, _: &[u16]) -> Result<Self, XdpError> {
            Err(XdpError::NotBuilt)
        }

        pub(super) fn interface(&self) -> &str {
            match *self {}
        }

        pub(super) fn admitted(&self) -> Vec<(IpAddr, Duration)> {
            match *self {}
        }

        pub(super) fn banned(&self) -> Vec<(IpAddr, Duration)> {
            match *self {}
        }

        pub(super) fn take_drop_tallies(&mut self, _: u32) -> Vec<super::summary::Tally> {
            match *self {}
        }

        pub(super) fn current_window(&self) -> Option<(u32, super::WindowClock)> {
            match *self {}
        }

        pub(super) fn counters(&self) -> super::KernelCounters {
            match *self {}
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
                holders: Holders::default(),
                bearer_written: HashMap::new(),
                failures: HashMap::new(),
                bans: HashMap::new(),
            }),
            ledger: None,
            summarised: Mutex::new(None),
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
            login_at: 0,
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
    fn unknown_ends_change_nothing_ends_withdraw_everywhere_and_expired_sessions_are_forgotten() {
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
        assert_eq!(
            guard.admitted_sources(),
            1,
            "the session that expired an hour ago (beyond the grace) is forgotten; the live one stays"
        );
        // A v4-mapped client is the same address as its IPv4 form.
        guard.session_event(&event(
            SessionChange::Started,
            "mapped",
            "::ffff:192.0.2.4",
            now + 3600,
        ));
        assert_eq!(guard.admitted_sources(), 2);
        guard.session_event(&event(logout, "mapped", "192.0.2.4", now + 3600));
        assert_eq!(guard.admitted_sources(), 1);
        // An end reported from another address (a provider's back-channel logout comes from
        // the provider) withdraws the session wherever it is held.
        let ended_by_provider = SessionChange::Ended(EndReason::ProviderLogout);
        guard.session_event(&event(ended_by_provider, "new", "203.0.113.9", now + 3600));
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
