//! `xdp:`: the NIC guard. sekisho attaches its XDP program to these interfaces and admits the
//! address of each signed-in client to the protected ports for as long as its session lives.

use std::time::Duration;

use ipnet::IpNet;

/// The guard's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdp {
    /// Where the program is attached (at least one, names distinct).
    pub interfaces: Vec<XdpInterface>,
    /// TCP and UDP destination ports only admitted sources reach (at least one, distinct, never
    /// one of sekisho's own TCP listeners: the sign-in must stay reachable).
    pub protected_ports: Vec<ProtectedPort>,
    /// Sources always admitted (IPv4 and IPv6 prefixes).
    pub trusted: Vec<IpNet>,
    /// Refuse to start when the program cannot be attached (default `true`); with `false` the
    /// proxy runs without the guard, saying so in the log, the audit log and `/metrics`.
    pub required: bool,
    /// How long a session's address stays admitted after the session's expiry (default 60 s):
    /// a clock step or a late refresh does not cut a working user off.
    pub session_grace: Duration,
    /// Where the program's maps and link are pinned (a directory on a BPF file system; default
    /// `/sys/fs/bpf/sekisho`), under `<network namespace>/<interface>/v2`: a restart or an
    /// upgrade of sekisho keeps the program attached and every admitted source admitted.
    pub pin_path: std::path::PathBuf,
    /// Ban sources that fail too often (`auto_ban:`); absent: off.
    pub auto_ban: Option<AutoBan>,
    /// How long each summary of the guard's drops covers (`drop_summary:`, default 1m, from 1s
    /// to 1h): one audit record per source and interface per window.
    pub drop_summary: Duration,
    /// Per-source limit on TCP connection attempts to sekisho's own listeners (`syn_rate_limit:`;
    /// on by default, `off` to disable).
    pub syn_rate_limit: Option<SynRateLimit>,
}

impl Xdp {
    /// The protected TCP port numbers.
    pub fn protected_tcp_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.protected_ports
            .iter()
            .filter(|p| p.protocol == PortProtocol::Tcp)
            .map(|p| p.port)
    }
}

/// One protected port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectedPort {
    /// The destination port.
    pub port: u16,
    /// TCP (the default) or UDP.
    pub protocol: PortProtocol,
}

impl std::fmt::Display for ProtectedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            PortProtocol::Tcp => write!(f, "{}/tcp", self.port),
            PortProtocol::Udp => write!(f, "{}/udp", self.port),
        }
    }
}

/// The transport of a protected port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// `xdp.syn_rate_limit`: each source may open `per_second` connections to sekisho's own HTTP
/// and HTTPS listeners (the ports they are bound to) per second on average, `burst` at once; faster attempts (TCP SYN) are dropped at
/// the NIC. Trusted ranges are exempt. Spoofed SYN floods are the kernel's syncookies' job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynRateLimit {
    /// Average connection attempts per second per source (at least 1; default 100).
    pub per_second: u32,
    /// Attempts allowed at once (at least 1; default twice `per_second`).
    pub burst: u32,
}

/// `xdp.auto_ban`: `failures` failed sign-ins, rejected credentials or refused callbacks from
/// one source within `window` ban that source for `ban`: all its TCP is dropped at the NIC,
/// sekisho's own port included. Trusted ranges are never banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoBan {
    /// How many failures (at least 1).
    pub failures: u32,
    /// Within how long.
    pub window: Duration,
    /// For how long the source is banned.
    pub ban: Duration,
}

/// One interface the program guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpInterface {
    /// The interface name (as `ip link` shows it), in sekisho's network namespace.
    pub name: String,
    /// How the program is attached.
    pub mode: XdpMode,
}

/// How the XDP program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// The driver's native XDP when it has it, generic otherwise (default).
    #[default]
    Auto,
    /// The driver's native XDP only.
    Native,
    /// Generic XDP (after the socket buffer is allocated): works on every interface.
    Generic,
}
