//! `attribution:`: `cgroup_root`, `required`, `pin_path`, `protected_upstreams`, `mode`,
//! `exceptions`.

use std::path::PathBuf;

use super::Parser;
use crate::error::AttributionProblem;
use crate::model::{Attribution, BypassMode};
use crate::value;
use crate::walk::Field;

/// Keys of `attribution`.
const ATTRIBUTION: &[&str] = &[
    "cgroup_root",
    "required",
    "pin_path",
    "protected_upstreams",
    "mode",
    "exceptions",
];
/// Where maps and links are pinned by default.
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/sekisho/attribution";

impl Parser<'_> {
    /// `attribution`.
    pub(super) fn attribution(&mut self, field: &Field<'_>) -> Option<Attribution> {
        let map = self.walk.mapping(field, ATTRIBUTION)?;
        let cgroup_root = self.optional(&map, "cgroup_root", |p, f| p.walk.value(f, absolute));
        let required = self.flag(&map, "required", true);
        let pin_path = self.or_default(
            &map,
            "pin_path",
            |p, f| p.walk.value(f, absolute),
            || PathBuf::from(DEFAULT_PIN_PATH),
        );
        let protected_upstreams = self.or_default(
            &map,
            "protected_upstreams",
            |p, f| p.list_of(f, |p, item| p.walk.value(item, upstream)),
            Vec::new,
        );
        let mode = self.or_default(
            &map,
            "mode",
            |p, f| p.walk.value(f, mode),
            BypassMode::default,
        );
        let exceptions = self.or_default(
            &map,
            "exceptions",
            |p, f| p.list_of(f, |p, item| p.walk.value(item, cgroup_path)),
            Vec::new,
        );
        Some(Attribution {
            cgroup_root: cgroup_root?,
            required: required?,
            pin_path: pin_path?,
            protected_upstreams: protected_upstreams?,
            mode: mode?,
            exceptions: exceptions?,
        })
    }
}

fn absolute(input: &str) -> Result<PathBuf, AttributionProblem> {
    let path = PathBuf::from(input.trim());
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(AttributionProblem::NotAbsolute(input.trim().to_owned()))
    }
}

fn upstream(input: &str) -> Result<std::net::SocketAddr, AttributionProblem> {
    let address = value::socket_addr(input.trim())
        .map_err(|_| AttributionProblem::NoPort(input.trim().to_owned()))?;
    if address.port() == 0 {
        return Err(AttributionProblem::NoPort(input.trim().to_owned()));
    }
    Ok(address)
}

fn mode(input: &str) -> Result<BypassMode, AttributionProblem> {
    match input.trim() {
        "audit" => Ok(BypassMode::Audit),
        "enforce" => Ok(BypassMode::Enforce),
        other => Err(AttributionProblem::Mode(other.to_owned())),
    }
}

/// `/a/b.slice/c.service`: absolute, no empty, `.` or `..` parts, no control characters.
fn cgroup_path(input: &str) -> Result<String, AttributionProblem> {
    let path = input.trim();
    let ok = path.starts_with('/')
        && path.len() <= 4096
        && !path.chars().any(char::is_control)
        && (path == "/"
            || path.get(1..).is_some_and(|rest| {
                rest.split('/')
                    .all(|part| !part.is_empty() && part != "." && part != "..")
            }));
    if ok {
        Ok(path.to_owned())
    } else {
        Err(AttributionProblem::CgroupPath(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::model::BypassMode;
    use crate::parse::tests::{BASE, assert_only, parse_err, parse_ok, pos_of};

    fn with(section: &str) -> String {
        format!("{BASE}attribution:\n{section}")
    }

    #[test]
    fn every_key_is_parsed_and_defaults_are_safe() {
        let config = parse_ok(&with("  required: true\n"));
        let a = config.attribution.unwrap_or_else(|| panic!("attribution"));
        assert_eq!(a.cgroup_root, None);
        assert!(a.required);
        assert_eq!(a.pin_path, Path::new("/sys/fs/bpf/sekisho/attribution"));
        assert!(a.protected_upstreams.is_empty());
        assert_eq!(a.mode, BypassMode::Audit);
        let config = parse_ok(&with(
            "  cgroup_root: /sys/fs/cgroup/unified/test\n  required: false\n  \
             protected_upstreams: [\"127.0.0.1:5432\", \"[::]:6379\"]\n  mode: enforce\n  \
             exceptions: [/system.slice/backup.service]\n  pin_path: /sys/fs/bpf/x\n",
        ));
        let a = config.attribution.unwrap_or_else(|| panic!("attribution"));
        assert_eq!(
            a.cgroup_root.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/test"))
        );
        assert!(!a.required);
        let upstreams: Vec<String> = a
            .protected_upstreams
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(upstreams, ["127.0.0.1:5432", "[::]:6379"]);
        assert_eq!(a.mode, BypassMode::Enforce);
        assert_eq!(a.exceptions, ["/system.slice/backup.service"]);
    }

    #[test]
    fn bad_values_are_refused_at_their_position() {
        let cases = [
            (
                "  mode: block\n",
                "block",
                "attribution.mode",
                "not a bypass mode",
            ),
            (
                "  cgroup_root: sys/fs/cgroup\n",
                "sys/fs/cgroup",
                "attribution.cgroup_root",
                "not an absolute path",
            ),
            (
                "  protected_upstreams: [\"127.0.0.1\"]\n",
                "\"127.0.0.1\"",
                "attribution.protected_upstreams[0]",
                "has no port",
            ),
            (
                "  protected_upstreams: [\"127.0.0.1:0\"]\n",
                "\"127.0.0.1:0\"",
                "attribution.protected_upstreams[0]",
                "has no port",
            ),
            (
                "  exceptions: [/system.slice/../x]\n",
                "/system.slice/../x",
                "attribution.exceptions[0]",
                "not a cgroup path",
            ),
            (
                "  exceptions: [system.slice]\n",
                "system.slice",
                "attribution.exceptions[0]",
                "not a cgroup path",
            ),
        ];
        for (section, at, field, message) in cases {
            let source = with(section);
            let errors = parse_err(&source);
            assert_only(&errors, pos_of(&source, at), field, message);
        }
    }
}
