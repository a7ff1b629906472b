//! The NIC guard: an XDP program that drops TCP and UDP to protected ports unless their source
//! holds an authenticated session or lies in a trusted range, drops banned sources, and
//! rate-limits connection attempts to the proxy's own ports — and the [`Guard`] that loads it
//! and manages its maps.
//!
//! # What the program does
//!
//! For every frame received on the interface the program parses Ethernet (up to two VLAN tags),
//! IPv4 or IPv6 and TCP or UDP, and decides:
//!
//! | frame | verdict |
//! | --- | --- |
//! | not IPv4/IPv6, or neither TCP nor UDP (ICMP, ICMPv6 neighbour discovery, ARP, …) | pass |
//! | TCP or UDP (or a later fragment of either) from a banned source, to any port | **drop** (banned) |
//! | a later fragment of a TCP datagram (no ports in it) from an admitted source | pass |
//! | a later fragment of a TCP datagram, or of a UDP one while a UDP port is protected, from any other source | **drop** (fragment) |
//! | TCP or UDP to a port that is not in the port map | pass |
//! | TCP or UDP to a protected port from an admitted source | pass |
//! | TCP or UDP to a protected port from any other source | **drop** (not admitted) |
//! | a header to a protected port truncated (TCP shorter than 20 bytes or its data offset, UDP shorter than 8), whatever the source | **drop** (unreadable), counted malformed |
//! | a TCP SYN (without ACK) to a rate-limited port beyond the source's rate, unless trusted | **drop** (SYN rate limited) |
//! | TCP or UDP whose destination port cannot be read (fewer than 4 bytes of header, or an IPv6 extension header chain longer than six headers) | **drop** (unreadable), counted malformed — UDP only while a UDP port is protected |
//! | truncated or inconsistent Ethernet/VLAN/IP header, truncated header to an unjudged port | pass, counted malformed (the kernel's stack discards them itself) |
//!
//! A source is admitted when `ALLOWED_V4`/`ALLOWED_V6` holds it with an expiry later than
//! `bpf_ktime_get_coarse_ns()` (`CLOCK_MONOTONIC_COARSE`), or when `TRUSTED_V4`/`TRUSTED_V6`
//! has a prefix that covers it. The rate limit is the generic cell rate algorithm: one attempt
//! per interval on average, `burst` at once. The parsing and the table above are plain Rust in
//! [`xdp_guard_common`] (`classify`, `decide`), unit-tested and fuzzed on the host.
//!
//! Every drop is counted by reason (`STATS`) and tallied per source, destination port, reason
//! and summary window (`DROPS`); [`Guard::take_drop_tallies`] takes the windows that are over.
//!
//! # Maps
//!
//! | name | type | key | value |
//! | --- | --- | --- | --- |
//! | `ALLOWED_V4` | hash, 65 536 | [`SourceV4`]: 4 address octets, wire order | [`AllowEntry`]: `expires_at_ns: u64`, `CLOCK_MONOTONIC_COARSE` ns |
//! | `ALLOWED_V6` | hash, 65 536 | [`SourceV6`]: 16 address octets, wire order | [`AllowEntry`] |
//! | `TRUSTED_V4` | LPM trie, 1 024 | `{prefix_len: u32 (host order), [u8; 4] wire order}` | `u8` = 1 |
//! | `TRUSTED_V6` | LPM trie, 1 024 | `{prefix_len: u32 (host order), [u8; 16] wire order}` | `u8` = 1 |
//! | `PORTS` | array, 131 072 | TCP port (host order), or 65 536 + UDP port | `u8` flags: 1 protected, 2 SYN rate-limited |
//! | `SETTINGS` | array, 5 | [`Setting`]: bans active, UDP guarded, SYN interval ns, SYN tolerance ns, drop window ns | `u64` |
//! | `BANNED_V4` / `BANNED_V6` | LRU hash, 16 384 | source | [`AllowEntry`] (the ban's end) |
//! | `SYN_RATE_V4` / `SYN_RATE_V6` | LRU hash, 65 536 | source | `u64`: the GCRA's theoretical arrival time, ns |
//! | `STATS` | per-CPU array, 8 | [`Counter`] 0 passed, 1 dropped, 2 malformed, then drops by [`DropReason`] | `u64` count per CPU |
//! | `DROPS` | LRU per-CPU hash, 16 384 | [`DropKey`]: source, window, port, family, reason | `u64` frames per CPU |
//!
//! The maps and the program's link can be pinned ([`Guard::load_pinned`]) so that the guard
//! outlives the process that loaded it and the next one takes it over. Expired `ALLOWED_*`
//! entries are ignored by the program; the caller revokes them. The kernel object is licensed
//! `Apache-2.0` like the workspace, which the kernel accepts as long as the program calls no
//! GPL-only helper.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use ipnet::IpNet;
pub use xdp_guard_common;
use xdp_guard_common::{
    ALLOWED_V4, ALLOWED_V6, AllowEntry, BANNED_V4, BANNED_V6, Counter, DEFAULT_DROP_WINDOW_NS,
    DROPS, DropKey, DropReason, EMPTY_PROGRAM, PORT_PROTECTED, PORT_SLOTS, PORT_SYN_LIMITED, PORTS,
    PROGRAM, SETTINGS, STATS, SYN_RATE_V4, SYN_RATE_V6, Setting, SourceV4, SourceV6, TRUSTED,
    TRUSTED_V4, TRUSTED_V6, Transport, port_slot,
};

/// The loaded and attached guard. Dropping it detaches the program and frees its maps.
pub struct Guard {
    allowed_v4: HashMap<MapData, SourceV4, AllowEntry>,
    allowed_v6: HashMap<MapData, SourceV6, AllowEntry>,
    trusted_v4: LpmTrie<MapData, [u8; 4], u8>,
    trusted_v6: LpmTrie<MapData, [u8; 16], u8>,
    ports: Array<MapData, u8>,
    stats: PerCpuArray<MapData, u64>,
    banned_v4: HashMap<MapData, SourceV4, AllowEntry>,
    banned_v6: HashMap<MapData, SourceV6, AllowEntry>,
    settings: Array<MapData, u64>,
    drops: PerCpuHashMap<MapData, DropKey, u64>,
    /// Owns the program and its link; declared last so the maps above are dropped first.
    /// `None` for [`Guard::open_pinned`]: the maps of a guard another process runs.
    _ebpf: Option<Ebpf>,
}

/// The program's answer to one frame under [`Guard::test_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestVerdict {
    /// `XDP_PASS`.
    Pass,
    /// `XDP_DROP`.
    Drop,
    /// Anything else (the program never returns it).
    Other(u32),
}

/// What [`Guard::load_pinned`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// Nothing was pinned there: the maps are new and the program newly attached.
    Fresh,
    /// A previous guard's maps (and their admissions) were taken over and its program replaced
    /// atomically on its link.
    Resumed,
}

/// How the program is attached to the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Let the kernel choose: the driver's native XDP if it has it, generic otherwise.
    #[default]
    Auto,
    /// The driver's native XDP (`xdpdrv`); fails on drivers without it.
    Native,
    /// Generic XDP (`xdpgeneric`), after the socket buffer is allocated; works everywhere.
    Generic,
}

/// The program's counters, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames passed to the stack.
    pub passed: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames with truncated or inconsistent headers (also counted in `passed` or `dropped`).
    pub malformed: u64,
    /// Frames dropped, by [`DropReason`] (indexed by its number).
    pub dropped_by: [u64; DropReason::ALL.len()],
}

/// A port the guard judges, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// TCP or UDP.
    pub transport: Transport,
    /// The destination port.
    pub port: u16,
    /// Only admitted sources reach it.
    pub protected: bool,
    /// TCP connection attempts to it are rate-limited per source ([`Guard::limit_syn_rate`]).
    pub syn_limited: bool,
}

/// Frames dropped from one source to one port for one reason within one summary window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropTally {
    /// The source address.
    pub source: IpAddr,
    /// The destination port (0 for fragments, which carry none).
    pub port: u16,
    /// Why they were dropped.
    pub reason: DropReason,
    /// The summary window ([`Guard::current_window`]).
    pub window: u32,
    /// How many, summed over all CPUs.
    pub packets: u64,
}

/// Why a [`Guard`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded object file could not be parsed or its maps could not be created.
    #[error("loading the xdp-guard object")]
    Load(#[source] EbpfError),
    /// The embedded object lacks a program or map this crate expects (a build mismatch).
    #[error("the xdp-guard object has no {0}")]
    Missing(&'static str),
    /// The kernel refused to verify the program.
    #[error("verifying the {PROGRAM} program")]
    Verify(#[source] ProgramError),
    /// No interface of that name in the calling thread's network namespace.
    #[error("there is no interface {0} in this network namespace")]
    NoSuchInterface(String),
    /// The program could not be attached to the interface (mode unsupported, another program
    /// attached, no permission).
    #[error("attaching the {PROGRAM} program to {iface}")]
    Attach {
        /// The interface name given to [`Guard::load`].
        iface: String,
        /// What the kernel or aya said.
        #[source]
        source: ProgramError,
    },
    /// A map read or update failed.
    #[error("{operation} map {map}")]
    Map {
        /// What was being done, e.g. "updating".
        operation: &'static str,
        /// The map's name.
        map: &'static str,
        /// What the kernel or aya said.
        #[source]
        source: MapError,
    },
    /// A pinned object could not be made, opened or taken over.
    #[error("pinning at {path}: {detail}")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The monotonic clock could not be read to compute an expiry.
    #[error("reading CLOCK_MONOTONIC")]
    Clock,
}

impl Guard {
    /// Loads the program and attaches it to `iface`, resolved in the calling thread's network
    /// namespace. All maps start empty, so until [`Guard::protect_port`] is called every frame
    /// passes.
    pub fn load(iface: &str, mode: AttachMode) -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(Error::Load)?;
        let program = verified(&mut ebpf)?;
        attach(program, iface, mode)?;
        Self::from_ebpf(ebpf)
    }

    /// Loads the program and its maps without attaching it anywhere, for
    /// [`Guard::test_run`] (`BPF_PROG_TEST_RUN`): tables of crafted frames and the program's cost
    /// per packet. `max_allowed` overrides the size of each admitted-source map.
    pub fn load_detached(max_allowed: Option<u32>) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        if let Some(max) = max_allowed {
            loader.map_max_entries(ALLOWED_V4, max);
            loader.map_max_entries(ALLOWED_V6, max);
        }
        let mut ebpf = loader.load(OBJECT).map_err(Error::Load)?;
        verified(&mut ebpf)?;
        Self::from_ebpf(ebpf)
    }

    /// Runs the program on `frame` `repeat` times in the kernel (`BPF_PROG_TEST_RUN`): its
    /// verdict, and the kernel's mean time per run. Only for a guard this process loaded.
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(TestVerdict, Duration), Error> {
        let ebpf = self._ebpf.as_mut().ok_or(Error::Missing(PROGRAM))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(Error::Verify)?;
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.repeat = repeat;
        let result = program.test_run(options).map_err(Error::Verify)?;
        let verdict = match result.return_value {
            1 => TestVerdict::Drop,
            2 => TestVerdict::Pass,
            other => TestVerdict::Other(other),
        };
        Ok((verdict, result.duration))
    }

    /// Runs a program that does nothing but pass on `frame` `repeat` times: the kernel's mean
    /// time per run is the `BPF_PROG_TEST_RUN` harness's own cost, to subtract from
    /// [`Guard::test_run`]'s. Only for a guard this process loaded.
    pub fn test_run_empty(&mut self, frame: &[u8], repeat: u32) -> Result<Duration, Error> {
        let ebpf = self._ebpf.as_mut().ok_or(Error::Missing(EMPTY_PROGRAM))?;
        let program: &mut Xdp = ebpf
            .program_mut(EMPTY_PROGRAM)
            .ok_or(Error::Missing(EMPTY_PROGRAM))?
            .try_into()
            .map_err(Error::Verify)?;
        if program.fd().is_err() {
            program.load().map_err(Error::Verify)?;
        }
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.repeat = repeat;
        Ok(program.test_run(options).map_err(Error::Verify)?.duration)
    }

    /// Like [`Guard::load`], with the maps and the link pinned in `dir` (an existing directory
    /// on a BPF file system): the program stays attached and the admissions stay in force when
    /// this process ends, and the next guard loaded on the same `dir` takes them over — its
    /// program replaces the running one atomically on the pinned link, so no frame meets the
    /// interface unguarded.
    pub fn load_pinned(iface: &str, mode: AttachMode, dir: &Path) -> Result<(Self, Pinned), Error> {
        let link_path = dir.join("link");
        let pin_error = |detail: String| Error::Pin {
            path: link_path.clone(),
            detail,
        };
        let pins: Vec<(&str, PathBuf)> = PINNED_MAPS
            .into_iter()
            .map(|name| (name, dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(Error::Load)?;
        let program = verified(&mut ebpf)?;
        let pinned = if link_path.exists() {
            let previous =
                PinnedLink::from_pin(&link_path).map_err(|e| pin_error(e.to_string()))?;
            let previous = XdpLink::try_from(FdLink::from(previous))
                .map_err(|e| pin_error(format!("not an XDP link: {e}")))?;
            program
                .attach_to_link(previous)
                .map_err(|e| pin_error(format!("replacing the program on it: {e}")))?;
            Pinned::Resumed
        } else {
            let id = attach(program, iface, mode)?;
            let link = program.take_link(id).map_err(Error::Verify)?;
            let link = FdLink::try_from(link)
                .map_err(|e| pin_error(format!("the link cannot be pinned: {e}")))?;
            link.pin(&link_path).map_err(|e| pin_error(e.to_string()))?;
            Pinned::Fresh
        };
        Ok((Self::from_ebpf(ebpf)?, pinned))
    }

    fn from_ebpf(mut ebpf: Ebpf) -> Result<Self, Error> {
        Ok(Self {
            allowed_v4: take_map(&mut ebpf, ALLOWED_V4, HashMap::try_from)?,
            allowed_v6: take_map(&mut ebpf, ALLOWED_V6, HashMap::try_from)?,
            trusted_v4: take_map(&mut ebpf, TRUSTED_V4, LpmTrie::try_from)?,
            trusted_v6: take_map(&mut ebpf, TRUSTED_V6, LpmTrie::try_from)?,
            ports: take_map(&mut ebpf, PORTS, Array::try_from)?,
            stats: take_map(&mut ebpf, STATS, PerCpuArray::try_from)?,
            banned_v4: take_map(&mut ebpf, BANNED_V4, HashMap::try_from)?,
            banned_v6: take_map(&mut ebpf, BANNED_V6, HashMap::try_from)?,
            settings: take_map(&mut ebpf, SETTINGS, Array::try_from)?,
            drops: take_map(&mut ebpf, DROPS, PerCpuHashMap::try_from)?,
            _ebpf: Some(ebpf),
        })
    }

    /// The pinned maps in `dir` of a guard another process runs (see [`Guard::load_pinned`]),
    /// to read and change them; the program is left as it is.
    pub fn open_pinned(dir: &Path) -> Result<Self, Error> {
        fn open<M>(
            dir: &Path,
            name: &'static str,
            typed: impl FnOnce(aya::maps::Map) -> Result<M, MapError>,
        ) -> Result<M, Error> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| Error::Pin {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let map = aya::maps::Map::from_map_data(data).map_err(map_error("opening", name))?;
            typed(map).map_err(map_error("opening", name))
        }
        Ok(Self {
            allowed_v4: open(dir, ALLOWED_V4, HashMap::try_from)?,
            allowed_v6: open(dir, ALLOWED_V6, HashMap::try_from)?,
            trusted_v4: open(dir, TRUSTED_V4, LpmTrie::try_from)?,
            trusted_v6: open(dir, TRUSTED_V6, LpmTrie::try_from)?,
            ports: open(dir, PORTS, Array::try_from)?,
            stats: open(dir, STATS, PerCpuArray::try_from)?,
            banned_v4: open(dir, BANNED_V4, HashMap::try_from)?,
            banned_v6: open(dir, BANNED_V6, HashMap::try_from)?,
            settings: open(dir, SETTINGS, Array::try_from)?,
            drops: open(dir, DROPS, PerCpuHashMap::try_from)?,
            _ebpf: None,
        })
    }

    /// The admitted sources and how long each stays admitted (expired entries, which the
    /// program already ignores, are left out).
    pub fn admitted(&self) -> Result<Vec<(IpAddr, Duration)>, Error> {
        unexpired(&self.allowed_v4, &self.allowed_v6, [ALLOWED_V4, ALLOWED_V6])
    }

    /// The ports the guard judges, TCP then UDP, each in port order.
    pub fn ports(&self) -> Result<Vec<PortRule>, Error> {
        let mut rules = Vec::new();
        for slot in 0..PORT_SLOTS {
            let flags = self
                .ports
                .get(&slot, 0)
                .map_err(map_error("reading", PORTS))?;
            if flags == 0 {
                continue;
            }
            let (transport, port) = slot_port(slot);
            rules.push(PortRule {
                transport,
                port,
                protected: flags & PORT_PROTECTED != 0,
                syn_limited: flags & PORT_SYN_LIMITED != 0,
            });
        }
        Ok(rules)
    }

    /// The protected TCP ports, sorted.
    pub fn protected_ports(&self) -> Result<Vec<u16>, Error> {
        Ok(self
            .ports()?
            .into_iter()
            .filter(|rule| rule.transport == Transport::Tcp && rule.protected)
            .map(|rule| rule.port)
            .collect())
    }

    /// The trusted ranges.
    pub fn trusted(&self) -> Result<Vec<IpNet>, Error> {
        let mut out = Vec::new();
        for key in self.trusted_v4.keys() {
            let key = key.map_err(map_error("reading", TRUSTED_V4))?;
            if let Ok(net) =
                ipnet::Ipv4Net::new(Ipv4Addr::from(key.data()), prefix(key.prefix_len()))
            {
                out.push(IpNet::V4(net));
            }
        }
        for key in self.trusted_v6.keys() {
            let key = key.map_err(map_error("reading", TRUSTED_V6))?;
            if let Ok(net) =
                ipnet::Ipv6Net::new(Ipv6Addr::from(key.data()), prefix(key.prefix_len()))
            {
                out.push(IpNet::V6(net));
            }
        }
        Ok(out)
    }

    /// Makes `rules` the ports the guard judges: ports not in it (a previous configuration's,
    /// in pinned maps) are forgotten. Later UDP fragments are judged when a UDP port is
    /// protected.
    pub fn set_ports(&mut self, rules: &[PortRule]) -> Result<(), Error> {
        let wanted: Vec<(u32, u8)> = rules
            .iter()
            .map(|rule| {
                let flags = if rule.protected { PORT_PROTECTED } else { 0 }
                    | if rule.syn_limited && rule.transport == Transport::Tcp {
                        PORT_SYN_LIMITED
                    } else {
                        0
                    };
                (port_slot(rule.transport, rule.port), flags)
            })
            .collect();
        for rule in self.ports()? {
            let slot = port_slot(rule.transport, rule.port);
            if !wanted.iter().any(|(s, _)| *s == slot) {
                self.ports
                    .set(slot, 0, 0)
                    .map_err(map_error("updating", PORTS))?;
            }
        }
        for (slot, flags) in &wanted {
            self.ports
                .set(*slot, flags, 0)
                .map_err(map_error("updating", PORTS))?;
        }
        let udp = rules
            .iter()
            .any(|rule| rule.transport == Transport::Udp && rule.protected);
        self.set(Setting::UdpGuarded, u64::from(udp))
    }

    /// Starts guarding TCP destination port `port` (beside the ports already judged).
    pub fn protect_port(&mut self, port: u16) -> Result<(), Error> {
        self.add_port_flag(Transport::Tcp, port, PORT_PROTECTED)
    }

    /// Starts guarding UDP destination port `port` (beside the ports already judged).
    pub fn protect_udp_port(&mut self, port: u16) -> Result<(), Error> {
        self.add_port_flag(Transport::Udp, port, PORT_PROTECTED)?;
        self.set(Setting::UdpGuarded, 1)
    }

    /// Rate-limits TCP connection attempts (SYN without ACK) to `port` per source: one per
    /// `interval` on average, `burst` at once; trusted sources are exempt. The rate and burst
    /// are the guard's, shared by every limited port; a zero `interval` lifts the limit
    /// everywhere.
    pub fn limit_syn_rate(
        &mut self,
        port: u16,
        interval: Duration,
        burst: u32,
    ) -> Result<(), Error> {
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        if interval == 0 {
            return self.set(Setting::SynIntervalNs, 0);
        }
        let tolerance = interval.saturating_mul(u64::from(burst.max(1) - 1));
        self.set(Setting::SynToleranceNs, tolerance)?;
        self.set(Setting::SynIntervalNs, interval)?;
        self.add_port_flag(Transport::Tcp, port, PORT_SYN_LIMITED)
    }

    fn add_port_flag(&mut self, transport: Transport, port: u16, flag: u8) -> Result<(), Error> {
        let slot = port_slot(transport, port);
        let flags = self
            .ports
            .get(&slot, 0)
            .map_err(map_error("reading", PORTS))?;
        self.ports
            .set(slot, flags | flag, 0)
            .map_err(map_error("updating", PORTS))
    }

    fn set(&mut self, setting: Setting, value: u64) -> Result<(), Error> {
        self.settings
            .set(setting as u32, value, 0)
            .map_err(map_error("updating", SETTINGS))
    }

    /// Distrusts every range not in `ranges` (pinned maps keep what a previous configuration
    /// put there).
    pub fn retain_trusted(&mut self, ranges: &[IpNet]) -> Result<(), Error> {
        let wanted: Vec<IpNet> = ranges.iter().map(IpNet::trunc).collect();
        let stale_v4: Vec<Key<[u8; 4]>> = self
            .trusted_v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let net = ipnet::Ipv4Net::new(Ipv4Addr::from(k.data()), prefix(k.prefix_len()));
                !net.is_ok_and(|net| wanted.contains(&IpNet::V4(net)))
            })
            .collect();
        for key in stale_v4 {
            self.trusted_v4
                .remove(&key)
                .map_err(map_error("deleting from", TRUSTED_V4))?;
        }
        let stale_v6: Vec<Key<[u8; 16]>> = self
            .trusted_v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let net = ipnet::Ipv6Net::new(Ipv6Addr::from(k.data()), prefix(k.prefix_len()));
                !net.is_ok_and(|net| wanted.contains(&IpNet::V6(net)))
            })
            .collect();
        for key in stale_v6 {
            self.trusted_v6
                .remove(&key)
                .map_err(map_error("deleting from", TRUSTED_V6))?;
        }
        Ok(())
    }

    /// Admits `ip` to protected ports for `valid_for` from now (saturating at "forever"), replacing
    /// any earlier expiry.
    pub fn allow_source(&mut self, ip: IpAddr, valid_for: Duration) -> Result<(), Error> {
        let now_ns = monotonic_ns()?;
        let valid_for_ns = u64::try_from(valid_for.as_nanos()).unwrap_or(u64::MAX);
        let entry = AllowEntry {
            expires_at_ns: now_ns.saturating_add(valid_for_ns),
        };
        match ip {
            IpAddr::V4(ip) => self.allowed_v4.insert(source_v4(ip), entry, 0),
            IpAddr::V6(ip) => self.allowed_v6.insert(source_v6(ip), entry, 0),
        }
        .map_err(map_error("updating", allowed_map(ip)))
    }

    /// Bans `ip` for `duration` from now: all its TCP is dropped, to every port, admitted or
    /// not. Callers never ban trusted addresses.
    pub fn ban_source(&mut self, ip: IpAddr, duration: Duration) -> Result<(), Error> {
        let entry = AllowEntry {
            expires_at_ns: monotonic_ns()?
                .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)),
        };
        match ip {
            IpAddr::V4(ip) => self.banned_v4.insert(source_v4(ip), entry, 0),
            IpAddr::V6(ip) => self.banned_v6.insert(source_v6(ip), entry, 0),
        }
        .map_err(map_error("updating", banned_map(ip)))?;
        self.set(Setting::BansActive, 1)
    }

    /// Lifts `ip`'s ban. Unbanning a source that is not banned is not an error.
    pub fn unban_source(&mut self, ip: IpAddr) -> Result<(), Error> {
        let removed = match ip {
            IpAddr::V4(ip) => self.banned_v4.remove(&source_v4(ip)),
            IpAddr::V6(ip) => self.banned_v6.remove(&source_v6(ip)),
        };
        match removed {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(source) => Err(map_error("deleting from", banned_map(ip))(source)),
        }?;
        // The last ban lifted: frames skip the ban lookup again. Cleared first and checked
        // after, so a ban another process adds meanwhile sets the flag back.
        if self.banned_v4.keys().next().is_none() && self.banned_v6.keys().next().is_none() {
            self.set(Setting::BansActive, 0)?;
            if self.banned_v4.keys().next().is_some() || self.banned_v6.keys().next().is_some() {
                self.set(Setting::BansActive, 1)?;
            }
        }
        Ok(())
    }

    /// The banned sources and how long each ban has left (expired ones left out).
    pub fn banned(&self) -> Result<Vec<(IpAddr, Duration)>, Error> {
        unexpired(&self.banned_v4, &self.banned_v6, [BANNED_V4, BANNED_V6])
    }

    /// Withdraws `ip`'s admission. Revoking a source that is not admitted is not an error.
    pub fn revoke_source(&mut self, ip: IpAddr) -> Result<(), Error> {
        let removed = match ip {
            IpAddr::V4(ip) => self.allowed_v4.remove(&source_v4(ip)),
            IpAddr::V6(ip) => self.allowed_v6.remove(&source_v6(ip)),
        };
        match removed {
            Ok(()) => Ok(()),
            Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(source) => Err(map_error("deleting from", allowed_map(ip))(source)),
        }
    }

    /// Admits every source in `range` (host bits are ignored) to protected ports, with no expiry.
    pub fn trust_range(&mut self, range: IpNet) -> Result<(), Error> {
        match range.trunc() {
            IpNet::V4(net) => self
                .trusted_v4
                .insert(
                    &Key::new(u32::from(net.prefix_len()), net.addr().octets()),
                    TRUSTED,
                    0,
                )
                .map_err(map_error("updating", TRUSTED_V4)),
            IpNet::V6(net) => self
                .trusted_v6
                .insert(
                    &Key::new(u32::from(net.prefix_len()), net.addr().octets()),
                    TRUSTED,
                    0,
                )
                .map_err(map_error("updating", TRUSTED_V6)),
        }
    }

    /// The program's counters, summed over all CPUs.
    pub fn stats(&self) -> Result<Stats, Error> {
        let read = |counter: u32| -> Result<u64, Error> {
            let per_cpu = self
                .stats
                .get(&counter, 0)
                .map_err(map_error("reading", STATS))?;
            Ok(per_cpu.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)))
        };
        let mut dropped_by = [0; DropReason::ALL.len()];
        for (slot, reason) in dropped_by.iter_mut().zip(DropReason::ALL) {
            *slot = read(reason.counter())?;
        }
        Ok(Stats {
            passed: read(Counter::Passed as u32)?,
            dropped: read(Counter::Dropped as u32)?,
            malformed: read(Counter::Malformed as u32)?,
            dropped_by,
        })
    }

    /// Sets the length of the drop summary windows (the program files each drop under
    /// `CLOCK_MONOTONIC_COARSE / length`); zero: a minute.
    pub fn set_drop_window(&mut self, length: Duration) -> Result<(), Error> {
        self.set(
            Setting::DropWindowNs,
            u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
        )
    }

    /// The drop summary window the program files drops under now, and where it starts and
    /// ends in `CLOCK_MONOTONIC_COARSE` nanoseconds.
    pub fn current_window(&self) -> Result<(u32, Window), Error> {
        let length = match self
            .settings
            .get(&(Setting::DropWindowNs as u32), 0)
            .map_err(map_error("reading", SETTINGS))?
        {
            0 => DEFAULT_DROP_WINDOW_NS,
            n => n,
        };
        let now = monotonic_ns()?;
        Ok((
            u32::try_from(now / length).unwrap_or(u32::MAX),
            Window { length, now },
        ))
    }

    /// The drop tallies the map holds now (windows not yet taken), left in place.
    pub fn drop_tallies(&self) -> Result<Vec<DropTally>, Error> {
        let mut out = Vec::new();
        for item in self.drops.iter() {
            let (key, per_cpu) = item.map_err(map_error("reading", DROPS))?;
            if let (Some(reason), Some(source)) = (DropReason::from_u8(key.reason), source_of(&key))
            {
                out.push(DropTally {
                    source,
                    port: key.dport,
                    reason,
                    window: key.window,
                    packets: per_cpu.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)),
                });
            }
        }
        Ok(out)
    }

    /// Takes the drop tallies of windows before `before` ([`Guard::current_window`]) out of the
    /// map: the program only adds to the current window's, so nothing counted is lost. Tallies the
    /// map had no room for were evicted, least recently used first.
    pub fn take_drop_tallies(&mut self, before: u32) -> Result<Vec<DropTally>, Error> {
        let mut taken = Vec::new();
        let keys: Vec<DropKey> = self
            .drops
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.window < before)
            .collect();
        for key in keys {
            let per_cpu = match self.drops.get(&key, 0) {
                Ok(values) => values,
                Err(MapError::KeyNotFound) => continue,
                Err(source) => return Err(map_error("reading", DROPS)(source)),
            };
            match self.drops.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_error("deleting from", DROPS)(source)),
            }
            let (Some(reason), Some(source)) = (DropReason::from_u8(key.reason), source_of(&key))
            else {
                continue;
            };
            taken.push(DropTally {
                source,
                port: key.dport,
                reason,
                window: key.window,
                packets: per_cpu.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)),
            });
        }
        Ok(taken)
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// The maps pinned beside the link, by name.
const PINNED_MAPS: [&str; 12] = [
    ALLOWED_V4,
    ALLOWED_V6,
    TRUSTED_V4,
    TRUSTED_V6,
    PORTS,
    STATS,
    BANNED_V4,
    BANNED_V6,
    SETTINGS,
    SYN_RATE_V4,
    SYN_RATE_V6,
    DROPS,
];

/// The drop summary windows' length and the clock they are counted on, read together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The length of a window in ns.
    pub length: u64,
    /// `CLOCK_MONOTONIC_COARSE` now, in ns.
    pub now: u64,
}

impl Window {
    /// How long ago window `n` started and ended (zero for times not yet past).
    pub fn ago(&self, n: u32) -> (Duration, Duration) {
        let start = u64::from(n).saturating_mul(self.length);
        let end = start.saturating_add(self.length);
        (
            Duration::from_nanos(self.now.saturating_sub(start)),
            Duration::from_nanos(self.now.saturating_sub(end)),
        )
    }
}

/// The transport and port of a [`PORTS`] slot.
fn slot_port(slot: u32) -> (Transport, u16) {
    let transport = if slot < 65_536 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    (transport, u16::try_from(slot % 65_536).unwrap_or(0))
}

/// The address a drop key names.
fn source_of(key: &DropKey) -> Option<IpAddr> {
    match key.family {
        4 => {
            let [a, b, c, d, ..] = key.octets;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        6 => Some(IpAddr::V6(Ipv6Addr::from(key.octets))),
        _ => None,
    }
}

/// The kernel object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-guard"));

/// The program, loaded into the kernel (verified).
fn verified(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(Error::Missing(PROGRAM))?
        .try_into()
        .map_err(Error::Verify)?;
    program.load().map_err(Error::Verify)?;
    Ok(program)
}

/// Attaches `program` to `iface` in `mode`.
fn attach(program: &mut Xdp, iface: &str, mode: AttachMode) -> Result<XdpLinkId, Error> {
    let mode = match mode {
        AttachMode::Auto => XdpMode::Default,
        AttachMode::Native => XdpMode::Driver,
        AttachMode::Generic => XdpMode::Skb,
    };
    program.attach(iface, mode).map_err(|source| match source {
        ProgramError::UnknownInterface { .. } => Error::NoSuchInterface(iface.to_owned()),
        source => Error::Attach {
            iface: iface.to_owned(),
            source,
        },
    })
}

/// The unexpired entries of a v4 and a v6 map of expiries (named `names`), with the time each
/// has left.
fn unexpired(
    v4: &HashMap<MapData, SourceV4, AllowEntry>,
    v6: &HashMap<MapData, SourceV6, AllowEntry>,
    [name_v4, name_v6]: [&'static str; 2],
) -> Result<Vec<(IpAddr, Duration)>, Error> {
    let now = monotonic_ns()?;
    let left = |entry: AllowEntry| {
        (entry.expires_at_ns > now).then(|| Duration::from_nanos(entry.expires_at_ns - now))
    };
    let mut out = Vec::new();
    for item in v4.iter() {
        let (key, entry) = item.map_err(map_error("reading", name_v4))?;
        if let Some(left) = left(entry) {
            out.push((IpAddr::V4(Ipv4Addr::from(key.octets)), left));
        }
    }
    for item in v6.iter() {
        let (key, entry) = item.map_err(map_error("reading", name_v6))?;
        if let Some(left) = left(entry) {
            out.push((IpAddr::V6(Ipv6Addr::from(key.octets)), left));
        }
    }
    Ok(out)
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, the clock the program compares expiries with.
fn monotonic_ns() -> Result<u64, Error> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    u64::try_from(now.tv_sec)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(u64::try_from(now.tv_nsec).ok()?))
        .ok_or(Error::Clock)
}

/// A trie key's prefix length as `ipnet` takes it (the map never holds more than 128).
fn prefix(len: u32) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
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

const fn banned_map(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => BANNED_V4,
        IpAddr::V6(_) => BANNED_V6,
    }
}

const fn allowed_map(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => ALLOWED_V4,
        IpAddr::V6(_) => ALLOWED_V6,
    }
}

const fn source_v4(ip: Ipv4Addr) -> SourceV4 {
    SourceV4 {
        octets: ip.octets(),
    }
}

const fn source_v6(ip: Ipv6Addr) -> SourceV6 {
    SourceV6 {
        octets: ip.octets(),
    }
}
