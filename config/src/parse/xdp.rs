//! `xdp:`: interfaces (a name, or `{name, mode}`), protected TCP ports, trusted prefixes,
//! `required`, `session_grace`.

use std::path::PathBuf;
use std::time::Duration;

use marked_yaml::Node;

use super::Parser;
use crate::error::XdpProblem;
use crate::model::{AutoBan, Server, Xdp, XdpInterface, XdpMode};
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
];
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
        if let (Some(ports), Some(f)) = (&protected_ports, &ports_field) {
            let own: Vec<u16> = server
                .map(|s| {
                    [s.http_listen, s.https_listen]
                        .into_iter()
                        .flatten()
                        .map(|a| a.port())
                        .collect()
                })
                .unwrap_or_default();
            for (i, port) in ports.iter().enumerate() {
                if ports.get(..i).is_some_and(|before| before.contains(port)) {
                    self.walk.report_at(f, XdpProblem::DuplicatePort(*port));
                }
                if own.contains(port) {
                    self.walk.report_at(f, XdpProblem::OwnListener(*port));
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
        Some(Xdp {
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

    /// One protected port: `22`, or `{port: 22, protocol: tcp}`.
    fn xdp_port(&mut self, field: &Field<'_>) -> Option<u16> {
        if let Node::Mapping(_) = field.node {
            let map = self.walk.mapping(field, PORT)?;
            let port = self
                .walk
                .required(&map, "port")
                .and_then(|f| self.walk.value(&f, port));
            let tcp = self.or_default(&map, "protocol", |p, f| p.walk.value(f, protocol), || true);
            return match (port, tcp) {
                (Some(port), Some(true)) => Some(port),
                _ => None,
            };
        }
        self.walk.value(field, port)
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

/// `true` for tcp; udp is refused (the program parses TCP only).
fn protocol(input: &str) -> Result<bool, XdpProblem> {
    match input.trim() {
        "tcp" => Ok(true),
        "udp" => Err(XdpProblem::Udp),
        other => Err(XdpProblem::Protocol(other.to_owned())),
    }
}

#[cfg(test)]
mod tests;
