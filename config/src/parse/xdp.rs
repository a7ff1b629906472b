//! `xdp:`: interfaces (a name, or `{name, mode}`), protected TCP ports, trusted prefixes,
//! `required`, `session_grace`.

use std::path::PathBuf;
use std::time::Duration;

use marked_yaml::Node;

use super::Parser;
use crate::error::XdpProblem;
use crate::model::{
    AutoBan, PortProtocol, ProtectedPort, Server, SynRateLimit, Xdp, XdpInterface, XdpMode,
};
use crate::value;
use crate::walk::Field;

/// Keys of `xdp`.
const XDP: &[&str] = &[
    "interfaces",
    "protected_ports",
    "trusted",
    "required",
    "session_grace",
    "pin_path",
    "auto_ban",
    "syn_rate_limit",
    "drop_summary",
];
/// Keys of `xdp.syn_rate_limit`.
const SYN_RATE_LIMIT: &[&str] = &["per_second", "burst"];
/// Connection attempts per second per source by default.
const DEFAULT_SYN_PER_SECOND: u32 = 100;
/// Keys of `xdp.auto_ban`.
const AUTO_BAN: &[&str] = &["failures", "window", "ban"];
/// Keys of an `xdp.interfaces` entry written as a mapping.
const INTERFACE: &[&str] = &["name", "mode"];
/// Keys of an `xdp.protected_ports` entry written as a mapping.
const PORT: &[&str] = &["port", "protocol"];
/// Where maps and links are pinned by default.
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/sekisho";
/// How long an admission outlives its session by default.
const DEFAULT_SESSION_GRACE: Duration = Duration::from_secs(60);

impl Parser<'_> {
    /// `xdp`; `server` (when it parsed) names the listeners no protected port may be.
    pub(super) fn xdp(&mut self, field: &Field<'_>, server: Option<&Server>) -> Option<Xdp> {
        let map = self.walk.mapping(field, XDP)?;
        let interfaces = self
            .walk
            .required(&map, "interfaces")
            .and_then(|f| self.non_empty_list_of(&f, Self::xdp_interface));
        if let (Some(list), Some(f)) = (&interfaces, map.get("interfaces")) {
            let mut seen: Vec<&str> = Vec::new();
            for interface in list {
                if seen.contains(&interface.name.as_str()) {
                    self.walk
                        .report_at(&f, XdpProblem::DuplicateInterface(interface.name.clone()));
                }
                seen.push(&interface.name);
            }
        }
        let ports_field = map.get("protected_ports");
        let protected_ports = self
            .walk
            .required(&map, "protected_ports")
            .and_then(|f| self.non_empty_list_of(&f, Self::xdp_port));
        let own: Vec<u16> = server
            .map(|s| {
                [s.http_listen, s.https_listen]
                    .into_iter()
                    .flatten()
                    .map(|a| a.port())
                    .collect()
            })
            .unwrap_or_default();
        if let (Some(ports), Some(f)) = (&protected_ports, &ports_field) {
            for (i, port) in ports.iter().enumerate() {
                if ports.get(..i).is_some_and(|before| before.contains(port)) {
                    self.walk
                        .report_at(f, XdpProblem::DuplicatePort(port.to_string()));
                }
                if port.protocol == PortProtocol::Tcp && own.contains(&port.port) {
                    self.walk.report_at(f, XdpProblem::OwnListener(port.port));
                }
            }
        }
        let trusted = self.or_default(
            &map,
            "trusted",
            |p, f| p.list_of(f, |p, item| p.walk.value(item, value::ip_net)),
            Vec::new,
        );
        let required = self.flag(&map, "required", true);
        let session_grace = self.or_default(&map, "session_grace", Self::duration, || {
            DEFAULT_SESSION_GRACE
        });
        let pin_path = self.or_default(
            &map,
            "pin_path",
            |p, f| p.walk.value(f, pin_path),
            || PathBuf::from(DEFAULT_PIN_PATH),
        );
        let auto_ban = self.optional(&map, "auto_ban", Self::auto_ban);
        let syn_rate_limit = match map.get("syn_rate_limit") {
            Some(f)
                if f.node
                    .as_scalar()
                    .is_some_and(|s| s.as_str().trim() == "off") =>
            {
                Some(None)
            }
            Some(f) => self.syn_rate_limit(&f).map(Some),
            None => Some(Some(SynRateLimit {
                per_second: DEFAULT_SYN_PER_SECOND,
                burst: 2 * DEFAULT_SYN_PER_SECOND,
            })),
        };
        let drop_summary = self.or_default(
            &map,
            "drop_summary",
            |p, f| {
                let length = p.duration(f)?;
                if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&length) {
                    Some(length)
                } else {
                    p.walk.report_at(f, XdpProblem::DropSummary);
                    None
                }
            },
            || Duration::from_secs(60),
        );
        Some(Xdp {
            drop_summary: drop_summary?,
            syn_rate_limit: syn_rate_limit?,
            auto_ban: auto_ban?,
            pin_path: pin_path?,
            interfaces: interfaces?,
            protected_ports: protected_ports?,
            trusted: trusted?,
            required: required?,
            session_grace: session_grace?,
        })
    }

    /// `auto_ban: {failures, window, ban}` (defaults 10, 1m, 15m).
    fn auto_ban(&mut self, field: &Field<'_>) -> Option<AutoBan> {
        let map = self.walk.mapping(field, AUTO_BAN)?;
        let failures = self.or_default(&map, "failures", |p, f| p.walk.value(f, failures), || 10);
        let window = self.or_default(&map, "window", Self::duration, || Duration::from_secs(60));
        let ban = self.or_default(&map, "ban", Self::duration, || Duration::from_secs(900));
        Some(AutoBan {
            failures: failures?,
            window: window?,
            ban: ban?,
        })
    }

    /// `syn_rate_limit: {per_second, burst}` (defaults 100 and twice `per_second`).
    fn syn_rate_limit(&mut self, field: &Field<'_>) -> Option<SynRateLimit> {
        let map = self.walk.mapping(field, SYN_RATE_LIMIT)?;
        let per_second = self.or_default(
            &map,
            "per_second",
            |p, f| p.walk.value(f, rate),
            || DEFAULT_SYN_PER_SECOND,
        )?;
        let burst = self.or_default(
            &map,
            "burst",
            |p, f| p.walk.value(f, rate),
            || per_second.saturating_mul(2),
        )?;
        Some(SynRateLimit { per_second, burst })
    }

    /// One interface: `eth0`, or `{name: eth0, mode: native}`.
    fn xdp_interface(&mut self, field: &Field<'_>) -> Option<XdpInterface> {
        if let Node::Mapping(_) = field.node {
            let map = self.walk.mapping(field, INTERFACE)?;
            let name = self
                .walk
                .required(&map, "name")
                .and_then(|f| self.walk.value(&f, interface_name));
            let mode =
                self.or_default(&map, "mode", |p, f| p.walk.value(f, mode), XdpMode::default);
            return Some(XdpInterface {
                name: name?,
                mode: mode?,
            });
        }
        let name = self.walk.value(field, interface_name)?;
        Some(XdpInterface {
            name,
            mode: XdpMode::default(),
        })
    }

    /// One protected port: `22`, `51820/udp`, or `{port: 51820, protocol: udp}`.
    fn xdp_port(&mut self, field: &Field<'_>) -> Option<ProtectedPort> {
        if let Node::Mapping(_) = field.node {
            let map = self.walk.mapping(field, PORT)?;
            let port = self
                .walk
                .required(&map, "port")
                .and_then(|f| self.walk.value(&f, port));
            let protocol = self.or_default(
                &map,
                "protocol",
                |p, f| p.walk.value(f, protocol),
                PortProtocol::default,
            );
            return Some(ProtectedPort {
                port: port?,
                protocol: protocol?,
            });
        }
        self.walk.value(field, port_and_protocol)
    }
}

/// A kernel interface name: 1 to 15 bytes (`IFNAMSIZ` less the NUL), no `/`, `:` (alias
/// syntax), whitespace or control characters, not `.` or `..`.
fn interface_name(input: &str) -> Result<String, XdpProblem> {
    let ok = !input.is_empty()
        && input.len() <= 15
        && input != "."
        && input != ".."
        && input
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(input.to_owned())
    } else {
        Err(XdpProblem::InterfaceName(input.to_owned()))
    }
}

/// An absolute directory path.
fn pin_path(input: &str) -> Result<PathBuf, XdpProblem> {
    let path = PathBuf::from(input.trim());
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(XdpProblem::PinPath(input.trim().to_owned()))
    }
}

fn mode(input: &str) -> Result<XdpMode, XdpProblem> {
    match input.trim() {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        other => Err(XdpProblem::Mode(other.to_owned())),
    }
}

fn failures(input: &str) -> Result<u32, XdpProblem> {
    input
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| XdpProblem::Failures(input.trim().to_owned()))
}

fn port(input: &str) -> Result<u16, XdpProblem> {
    input
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| XdpProblem::Port(input.trim().to_owned()))
}

/// `22`, `22/tcp` or `51820/udp`.
fn port_and_protocol(input: &str) -> Result<ProtectedPort, XdpProblem> {
    let (number, protocol) = match input.trim().split_once('/') {
        Some((number, name)) => (number, self::protocol(name)?),
        None => (input, PortProtocol::Tcp),
    };
    Ok(ProtectedPort {
        port: port(number).map_err(|_| XdpProblem::Port(input.trim().to_owned()))?,
        protocol,
    })
}

fn protocol(input: &str) -> Result<PortProtocol, XdpProblem> {
    match input.trim() {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        other => Err(XdpProblem::Protocol(other.to_owned())),
    }
}

fn rate(input: &str) -> Result<u32, XdpProblem> {
    input
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| XdpProblem::Rate(input.trim().to_owned()))
}

#[cfg(test)]
mod tests;
