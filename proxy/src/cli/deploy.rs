//! `sekisho check --systemd` and `--kubernetes`: a systemd unit (and its drop-ins) or
//! Kubernetes manifests checked against the configuration they run — its capabilities, the
//! paths it writes, the probes, the kernel layers' mounts. Each finding names file and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
use sekisho_config::Config;

/// How bad a finding is: errors fail the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    /// The deployment would not work, or would grant what the configuration does not need
    /// in a way that cannot be intended.
    Error,
    /// Works, but more than needed or worth a look.
    Warning,
}

/// One finding: where, how bad, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub level: Level,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(
            f,
            "{}:{}: {level}: {}",
            self.file.display(),
            self.line,
            self.message
        )
    }
}

/// What a configuration needs from the system it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Needs {
    /// Listener ports below 1024 (CAP_NET_BIND_SERVICE).
    low_ports: Vec<u16>,
    xdp: bool,
    attribution: bool,
    admin: Option<SocketAddr>,
    /// BPF pin paths of the kernel layers.
    pin_paths: Vec<PathBuf>,
    cgroup_root: PathBuf,
    /// Directories written: the state directory and the audit log.
    writable: Vec<PathBuf>,
}

impl Needs {
    fn of(config: &Config) -> Self {
        let mut listeners = vec![config.server.http_listen, config.server.https_listen];
        listeners.push(config.admin.as_ref().map(|a| a.listen));
        let mut low_ports: Vec<u16> = listeners
            .into_iter()
            .flatten()
            .map(|a| a.port())
            .filter(|p| *p != 0 && *p < 1024)
            .collect();
        low_ports.sort_unstable();
        low_ports.dedup();
        let mut pin_paths = Vec::new();
        if let Some(xdp) = &config.xdp {
            pin_paths.push(xdp.pin_path.clone());
        }
        if let Some(a) = &config.attribution {
            pin_paths.push(a.pin_path.clone());
        }
        Needs {
            low_ports,
            xdp: config.xdp.is_some(),
            attribution: config.attribution.is_some(),
            admin: config.admin.as_ref().map(|a| a.listen),
            pin_paths,
            cgroup_root: config
                .attribution
                .as_ref()
                .and_then(|a| a.cgroup_root.clone())
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            writable: vec![config.state_dir.clone(), config.audit.dir.clone()],
        }
    }

    fn kernel(&self) -> bool {
        self.xdp || self.attribution
    }

    /// Capabilities needed (without `CAP_`), each with why.
    fn capabilities(&self) -> Vec<(&'static str, String)> {
        let mut caps = Vec::new();
        if !self.low_ports.is_empty() {
            caps.push((
                "NET_BIND_SERVICE",
                format!(
                    "the configuration listens on port(s) {:?} below 1024",
                    self.low_ports
                ),
            ));
        }
        if self.kernel() {
            for cap in ["BPF", "NET_ADMIN"] {
                caps.push((
                    cap,
                    "the configuration turns the kernel layers on (xdp/attribution)".to_owned(),
                ));
            }
        }
        caps
    }

    /// Capabilities that are fine to hold besides the needed ones.
    fn tolerated(&self, cap: &str) -> bool {
        self.kernel() && cap == "PERFMON"
    }
}

fn normalise_cap(cap: &str) -> String {
    let cap = cap.trim().to_ascii_uppercase();
    cap.strip_prefix("CAP_").map(str::to_owned).unwrap_or(cap)
}

fn is_under(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// The `-c`/`--config` argument of a `sekisho run` command line.
fn config_argument<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-c" || arg == "--config" {
            return args.next();
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path);
        }
    }
    None
}

/// Loads the configuration (secrets not read: they live on the target system); its errors
/// become findings.
fn load_config(path: &Path, findings: &mut Vec<Finding>) -> Option<Config> {
    match sekisho_config::load_without_secrets(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            findings.extend(errors.errors.into_iter().map(|e| Finding {
                file: e.file,
                line: e.line,
                level: Level::Error,
                message: format!("{}: {}", e.field, e.message),
            }));
            None
        }
    }
}

// ───────────────────────────── systemd ─────────────────────────────

/// One `Key=Value` of a `[Service]` section.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    value: String,
    file: PathBuf,
    line: usize,
}

/// The `[Service]` settings of a unit and its drop-ins, in order.
fn service_settings(file: &Path, text: &str) -> Vec<Setting> {
    let mut settings = Vec::new();
    let mut in_service = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if let (true, Some((key, value))) = (in_service, line.split_once('=')) {
            settings.push(Setting {
                key: key.trim().to_owned(),
                value: value.trim().to_owned(),
                file: file.to_owned(),
                line: index + 1,
            });
        }
    }
    settings
}

/// A list setting (capabilities, paths) after every assignment: an empty one resets it.
/// `None` when never assigned; else the entries and the last assignment.
fn list<'a>(settings: &'a [Setting], key: &str) -> Option<(Vec<String>, &'a Setting)> {
    let mut result: Option<(Vec<String>, &Setting)> = None;
    for s in settings.iter().filter(|s| s.key == key) {
        let mut entries = match result.take() {
            Some((entries, _)) if !s.value.is_empty() => entries,
            _ => Vec::new(),
        };
        entries.extend(s.value.split_whitespace().map(str::to_owned));
        result = Some((entries, s));
    }
    result
}

fn last<'a>(settings: &'a [Setting], key: &str) -> Option<&'a Setting> {
    settings.iter().rev().find(|s| s.key == key)
}

/// Checks a unit and its drop-ins (in the order systemd applies them) against `config`, or
/// against the configuration its `ExecStart` names when `config` is `None`.
pub(super) fn systemd(files: &[PathBuf], config: Option<&Path>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut settings = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => settings.extend(service_settings(file, &text)),
            Err(e) => findings.push(Finding {
                file: file.clone(),
                line: 0,
                level: Level::Error,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let Some(first) = files.first() else {
        return findings;
    };
    let at = |s: Option<&Setting>| s.map_or((first.clone(), 0), |s| (s.file.clone(), s.line));
    let push = |findings: &mut Vec<Finding>, s: Option<&Setting>, level, message: String| {
        let (file, line) = at(s);
        findings.push(Finding {
            file,
            line,
            level,
            message,
        });
    };
    let exec = last(&settings, "ExecStart");
    let named = exec.and_then(|s| config_argument(s.value.split_whitespace()));
    let path = match (config, named) {
        (Some(path), _) => path.to_owned(),
        (None, Some(named)) => PathBuf::from(named),
        (None, None) => {
            push(
                &mut findings,
                exec,
                Level::Error,
                "ExecStart does not run `sekisho run -c FILE`".into(),
            );
            return findings;
        }
    };
    if exec.is_none() {
        push(
            &mut findings,
            None,
            Level::Error,
            "no ExecStart in [Service]".into(),
        );
    }
    let Some(config) = load_config(&path, &mut findings) else {
        return findings;
    };
    findings.extend(check_unit(&settings, &Needs::of(&config), first));
    findings
}

fn check_unit(settings: &[Setting], needs: &Needs, first: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut push = |s: Option<&Setting>, level, message: String| {
        let (file, line) = s.map_or((first.to_owned(), 0), |s| (s.file.clone(), s.line));
        findings.push(Finding {
            file,
            line,
            level,
            message,
        });
    };
    // Capabilities.
    let ambient = list(settings, "AmbientCapabilities");
    let bounding = list(settings, "CapabilityBoundingSet");
    let held: Vec<String> = ambient
        .as_ref()
        .map(|(caps, _)| caps.iter().map(|c| normalise_cap(c)).collect())
        .unwrap_or_default();
    let root = !settings.iter().any(|s| {
        (s.key == "User" && s.value != "root" && s.value != "0")
            || (s.key == "DynamicUser" && s.value == "yes")
    });
    if root {
        push(None, Level::Warning, "no User= or DynamicUser=yes: sekisho runs as root with every capability; run it as its own user with only the capabilities below".into());
    }
    for (cap, why) in needs.capabilities() {
        if !root && !held.iter().any(|h| h == cap) {
            push(
                ambient.as_ref().map(|(_, s)| *s),
                Level::Error,
                format!("AmbientCapabilities lacks CAP_{cap}: {why}"),
            );
        }
        if let Some((set, s)) = &bounding
            && !set.iter().any(|c| normalise_cap(c) == cap)
        {
            push(
                Some(s),
                Level::Error,
                format!("CapabilityBoundingSet lacks CAP_{cap}: {why}"),
            );
        }
    }
    let needed: Vec<&str> = needs.capabilities().iter().map(|(c, _)| *c).collect();
    for cap in &held {
        if !needed.contains(&cap.as_str()) && !needs.tolerated(cap) {
            let kernel = ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"].contains(&cap.as_str());
            push(
                ambient.as_ref().map(|(_, s)| *s),
                Level::Warning,
                if kernel {
                    format!(
                        "CAP_{cap} is granted but the configuration has no kernel layers (xdp/attribution): drop it (and the kernel-layers drop-in)"
                    )
                } else {
                    format!("CAP_{cap} is granted but this configuration does not need it")
                },
            );
        }
    }
    // Reload: sekisho reloads on SIGHUP.
    match last(settings, "ExecReload") {
        None => push(None, Level::Warning, "no ExecReload: `systemctl reload` will not reach sekisho (ExecReload=/bin/kill -HUP $MAINPID)".into()),
        Some(s) if !s.value.contains("HUP") => push(Some(s), Level::Error, "ExecReload does not send SIGHUP, the signal sekisho reloads on".into()),
        Some(_) => {}
    }
    // Writable paths under ProtectSystem=strict.
    if last(settings, "ProtectSystem").is_some_and(|s| s.value == "strict") {
        let mut writable: Vec<PathBuf> = list(settings, "StateDirectory")
            .map(|(dirs, _)| dirs.iter().map(|d| Path::new("/var/lib").join(d)).collect())
            .unwrap_or_default();
        if let Some((paths, _)) = list(settings, "ReadWritePaths") {
            writable.extend(
                paths
                    .iter()
                    .map(|p| PathBuf::from(p.trim_start_matches('-'))),
            );
        }
        let protect = last(settings, "ProtectSystem");
        for dir in needs.writable.iter().chain(&needs.pin_paths) {
            if !writable.iter().any(|w| is_under(dir, w)) {
                push(
                    protect,
                    Level::Error,
                    format!(
                        "{} is written by sekisho but read-only under ProtectSystem=strict: put it under StateDirectory= (/var/lib/NAME) or ReadWritePaths=",
                        dir.display()
                    ),
                );
            }
        }
    }
    // The kernel layers' system calls and sockets.
    if needs.kernel() {
        if let Some((filters, s)) = list(settings, "SystemCallFilter")
            && !filters.iter().any(|f| f == "bpf" || f == "@privileged")
        {
            push(Some(s), Level::Error, "SystemCallFilter does not allow bpf(), which the kernel layers need (SystemCallFilter=bpf perf_event_open)".into());
        }
        if needs.xdp
            && let Some((families, s)) = list(settings, "RestrictAddressFamilies")
            && !families.iter().any(|f| f == "AF_NETLINK")
        {
            push(
                Some(s),
                Level::Error,
                "RestrictAddressFamilies lacks AF_NETLINK, which attaching the XDP guard needs"
                    .into(),
            );
        }
    }
    findings
}

// ─────────────────────────── Kubernetes ───────────────────────────

/// A YAML document of a manifest file and the line it starts on.
struct Document {
    node: Node,
    offset: usize,
}

/// Splits a multi-document file on `---` lines and parses each document.
fn documents(file: &Path, text: &str, findings: &mut Vec<Finding>) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    let mut bounds = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            bounds.push((start, i));
            start = i + 1;
        }
    }
    bounds.push((start, lines.len()));
    for (from, to) in bounds {
        let body = lines.get(from..to).unwrap_or_default().join("\n");
        if body
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        match marked_yaml::parse_yaml(0, &body) {
            Ok(node) => docs.push(Document { node, offset: from }),
            Err(e) => findings.push(Finding {
                file: file.to_owned(),
                line: from + 1,
                level: Level::Error,
                message: format!("not YAML: {e}"),
            }),
        }
    }
    docs
}

fn line_of(node: &Node, offset: usize) -> usize {
    node.span()
        .start()
        .map_or(offset + 1, |m| m.line() + offset)
}

fn text<'a>(map: &'a MarkedMappingNode, key: &str) -> Option<&'a str> {
    map.get_scalar(key).map(|s| s.as_str())
}

fn path<'a>(node: &'a Node, keys: &[&str]) -> Option<&'a Node> {
    let mut node = node;
    for key in keys {
        node = node.as_mapping()?.get_node(key)?;
    }
    Some(node)
}

fn items(node: Option<&Node>) -> Vec<&Node> {
    node.and_then(Node::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// Checks Kubernetes manifests (several documents per file are fine): every Deployment and
/// DaemonSet container running sekisho, against the configuration from the ConfigMap it
/// mounts — or against `config` when given.
pub(super) fn kubernetes(files: &[PathBuf], config: Option<&Path>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut docs = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                for doc in documents(file, &text, &mut findings) {
                    docs.push((file.clone(), doc));
                }
            }
            Err(e) => findings.push(Finding {
                file: file.clone(),
                line: 0,
                level: Level::Error,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let given = config.and_then(|p| load_config(p, &mut findings));
    let mut workloads = 0;
    for (file, doc) in &docs {
        let kind = doc
            .node
            .as_mapping()
            .and_then(|m| text(m, "kind"))
            .unwrap_or("");
        if kind != "Deployment" && kind != "DaemonSet" {
            continue;
        }
        let Some(pod) = path(&doc.node, &["spec", "template", "spec"]) else {
            continue;
        };
        for container in items(path(pod, &["containers"])) {
            let Some(c) = container.as_mapping() else {
                continue;
            };
            if !text(c, "image").is_some_and(|i| i.contains("sekisho")) {
                continue;
            }
            workloads += 1;
            let mut out = Workload {
                file,
                offset: doc.offset,
                findings: &mut findings,
            };
            let config = match &given {
                Some(config) => Some(config.clone()),
                None => out.mounted_config(pod, container, &docs),
            };
            if let Some(config) = config {
                out.check(kind, pod, container, &Needs::of(&config));
            }
        }
    }
    if workloads == 0 {
        findings.push(Finding {
            file: files.first().cloned().unwrap_or_default(),
            line: 0,
            level: Level::Error,
            message: "no Deployment or DaemonSet with a sekisho container (an image named sekisho)"
                .into(),
        });
    }
    findings
}

struct Workload<'a> {
    file: &'a Path,
    offset: usize,
    findings: &'a mut Vec<Finding>,
}

impl Workload<'_> {
    fn push(&mut self, node: &Node, level: Level, message: String) {
        self.findings.push(Finding {
            file: self.file.to_owned(),
            line: line_of(node, self.offset),
            level,
            message,
        });
    }

    /// The configuration the container's `-c` names, from the ConfigMap mounted there.
    fn mounted_config(
        &mut self,
        pod: &Node,
        container: &Node,
        docs: &[(PathBuf, Document)],
    ) -> Option<Config> {
        let args: Vec<&str> = items(path(container, &["args"]))
            .into_iter()
            .chain(items(path(container, &["command"])))
            .filter_map(|a| a.as_scalar().map(|s| s.as_str()))
            .collect();
        let Some(config_path) = config_argument(args.iter().copied()) else {
            self.push(
                container,
                Level::Error,
                "the sekisho container's args do not name a configuration (`run -c FILE`)".into(),
            );
            return None;
        };
        let config_path = Path::new(config_path);
        let mount = items(path(container, &["volumeMounts"]))
            .into_iter()
            .find(|m| {
                path(m, &["mountPath"])
                    .and_then(Node::as_scalar)
                    .is_some_and(|p| is_under(config_path, Path::new(p.as_str())))
            });
        let Some(mount) = mount else {
            self.push(
                container,
                Level::Error,
                format!(
                    "no volume is mounted where the configuration {} is read",
                    config_path.display()
                ),
            );
            return None;
        };
        let volume_name = path(mount, &["name"])
            .and_then(Node::as_scalar)
            .map(|s| s.as_str())
            .unwrap_or("");
        let mount_path = path(mount, &["mountPath"])
            .and_then(Node::as_scalar)
            .map(|s| s.as_str())
            .unwrap_or("");
        let key = config_path
            .strip_prefix(mount_path)
            .ok()?
            .to_string_lossy()
            .into_owned();
        let map_name = items(path(pod, &["volumes"]))
            .into_iter()
            .find(|v| {
                path(v, &["name"])
                    .and_then(Node::as_scalar)
                    .is_some_and(|n| n.as_str() == volume_name)
            })
            .and_then(|v| path(v, &["configMap", "name"]))
            .and_then(Node::as_scalar)
            .map(|s| s.as_str().to_owned());
        let Some(map_name) = map_name else {
            self.push(mount, Level::Warning, format!("the configuration comes from volume {volume_name}, not a ConfigMap: not checked (pass -c FILE)"));
            return None;
        };
        let found = docs.iter().find(|(_, d)| {
            d.node.as_mapping().and_then(|m| text(m, "kind")) == Some("ConfigMap")
                && path(&d.node, &["metadata", "name"])
                    .and_then(Node::as_scalar)
                    .is_some_and(|n| n.as_str() == map_name)
        });
        let Some((map_file, map_doc)) = found else {
            self.push(
                mount,
                Level::Error,
                format!("ConfigMap {map_name} is not in the files checked"),
            );
            return None;
        };
        let Some(source) = path(&map_doc.node, &["data", &key]) else {
            self.push(&map_doc.node, Level::Error, format!("ConfigMap {map_name} has no key {key}, which the container reads as its configuration"));
            return None;
        };
        let text = source.as_scalar().map(|s| s.as_str()).unwrap_or("");
        let base = line_of(source, map_doc.offset);
        match sekisho_config::parse_without_secrets(text, Path::new(&key)) {
            Ok(config) => Some(config),
            Err(errors) => {
                for e in errors.errors {
                    self.findings.push(Finding {
                        file: map_file.clone(),
                        line: base + e.line,
                        level: Level::Error,
                        message: format!("ConfigMap {map_name} {key}: {}: {}", e.field, e.message),
                    });
                }
                None
            }
        }
    }

    fn check(&mut self, kind: &str, pod: &Node, container: &Node, needs: &Needs) {
        let host_network = path(pod, &["hostNetwork"])
            .and_then(Node::as_scalar)
            .and_then(|s| s.as_bool())
            .unwrap_or(false);
        // Probes on the admin listener.
        for (probe, want) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let Some(node) = path(container, &[probe]) else {
                self.push(
                    container,
                    Level::Error,
                    format!("no {probe} (httpGet {want} on the admin listener)"),
                );
                continue;
            };
            let Some(admin) = needs.admin else {
                self.push(
                    node,
                    Level::Error,
                    format!(
                        "{probe}: the configuration has no admin listener, which serves {want}"
                    ),
                );
                continue;
            };
            if admin.ip().is_loopback() {
                self.push(node, Level::Error, format!("{probe}: the admin listener {admin} is on the loopback; the kubelet probes the pod's address (listen on [::] or 0.0.0.0)"));
            }
            let got = path(node, &["httpGet", "path"])
                .and_then(Node::as_scalar)
                .map(|s| s.as_str());
            if got != Some(want) {
                self.push(
                    node,
                    Level::Error,
                    format!(
                        "{probe} must GET {want}, not {}",
                        got.unwrap_or("(nothing)")
                    ),
                );
            }
            let port = path(node, &["httpGet", "port"])
                .and_then(Node::as_scalar)
                .map(|s| s.as_str().to_owned());
            let resolved = port.as_deref().and_then(|p| {
                p.parse::<u16>().ok().or_else(|| {
                    items(path(container, &["ports"]))
                        .into_iter()
                        .find(|cp| {
                            path(cp, &["name"])
                                .and_then(Node::as_scalar)
                                .is_some_and(|n| n.as_str() == p)
                        })
                        .and_then(|cp| path(cp, &["containerPort"]))
                        .and_then(Node::as_scalar)
                        .and_then(|s| s.as_str().parse().ok())
                })
            });
            if resolved != Some(admin.port()) {
                self.push(
                    node,
                    Level::Error,
                    format!(
                        "{probe} probes port {}, but the admin listener is on {}",
                        port.as_deref().unwrap_or("(none)"),
                        admin.port()
                    ),
                );
            }
        }
        // Capabilities.
        let security = path(container, &["securityContext"]);
        let added: Vec<String> = items(security.and_then(|s| path(s, &["capabilities", "add"])))
            .into_iter()
            .filter_map(|c| c.as_scalar().map(|s| normalise_cap(s.as_str())))
            .collect();
        let dropped_all = items(security.and_then(|s| path(s, &["capabilities", "drop"])))
            .into_iter()
            .any(|c| c.as_scalar().is_some_and(|s| s.as_str() == "ALL"));
        if !dropped_all {
            self.push(security.unwrap_or(container), Level::Warning, "securityContext.capabilities.drop lacks ALL: the container keeps the runtime's default capabilities".into());
        }
        for (cap, why) in needs.capabilities() {
            if !added.iter().any(|a| a == cap) {
                self.push(
                    security.unwrap_or(container),
                    Level::Error,
                    format!("securityContext.capabilities.add lacks {cap}: {why}"),
                );
            }
        }
        let needed: Vec<&str> = needs.capabilities().iter().map(|(c, _)| *c).collect();
        for cap in &added {
            if !needed.contains(&cap.as_str()) && !needs.tolerated(cap) {
                self.push(
                    security.unwrap_or(container),
                    Level::Warning,
                    format!("capability {cap} is added but this configuration does not need it"),
                );
            }
        }
        if security
            .and_then(|s| path(s, &["allowPrivilegeEscalation"]))
            .and_then(Node::as_scalar)
            .and_then(|s| s.as_bool())
            != Some(false)
        {
            self.push(
                security.unwrap_or(container),
                Level::Warning,
                "securityContext.allowPrivilegeEscalation is not false".into(),
            );
        }
        // The kernel layers.
        if !needs.kernel() {
            if kind == "DaemonSet" || host_network {
                self.push(pod, Level::Warning, format!("a {kind}{} for a configuration without kernel layers: a Deployment suffices", if host_network { " on the host network" } else { "" }));
            }
            return;
        }
        if needs.xdp && !host_network {
            self.push(
                pod,
                Level::Error,
                "the XDP guard attaches to the node's interfaces: the pod needs hostNetwork: true"
                    .into(),
            );
        }
        let host_mounts: Vec<String> = items(path(container, &["volumeMounts"]))
            .into_iter()
            .filter(|m| {
                let name = path(m, &["name"])
                    .and_then(Node::as_scalar)
                    .map(|s| s.as_str());
                items(path(pod, &["volumes"])).into_iter().any(|v| {
                    path(v, &["name"])
                        .and_then(Node::as_scalar)
                        .map(|s| s.as_str())
                        == name
                        && path(v, &["hostPath"]).is_some()
                })
            })
            .filter_map(|m| {
                path(m, &["mountPath"])
                    .and_then(Node::as_scalar)
                    .map(|p| p.as_str().to_owned())
            })
            .collect();
        for pin in &needs.pin_paths {
            if !host_mounts
                .iter()
                .any(|p| is_under(pin, Path::new(p)) && Path::new(p).starts_with("/sys/fs/bpf"))
            {
                self.push(container, Level::Error, format!("pin_path {} is not on the node's BPF file system: mount hostPath /sys/fs/bpf there", pin.display()));
            }
        }
        if needs.attribution
            && !host_mounts
                .iter()
                .any(|p| is_under(&needs.cgroup_root, Path::new(p)))
        {
            self.push(container, Level::Error, format!("the socket hooks read the cgroup tree at {}: mount the node's (hostPath) there", needs.cgroup_root.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "tests panic with context"
    )]

    use super::*;

    const CONFIG: &str = "state_dir: /var/lib/sekisho\nserver:\n  http_listen: \"[::]:80\"\noidc:\n  issuer: https://idp.example.com\n  client_id: sekisho\n  client_secret: {env: X}\nsession:\n  keys: [{env: K}]\nsigning:\n  key: {env: S}\nadmin:\n  listen: \"[::]:9901\"\n  policy: p\npolicies:\n  p:\n    allow:\n      and:\n        - groups: {has: a}\nroutes:\n  - id: app\n    from: http://app.example.com\n    to: http://127.0.0.1:9000\n";
    const XDP: &str = "xdp:\n  interfaces: [eth0]\n  protected_ports: [22]\n";

    fn needs(extra: &str) -> Needs {
        let config = sekisho_config::parse_without_secrets(
            &format!("{CONFIG}{extra}"),
            Path::new("/etc/sekisho/sekisho.yaml"),
        )
        .unwrap();
        Needs::of(&config)
    }

    fn unit(text: &str) -> Vec<Setting> {
        service_settings(Path::new("u.service"), text)
    }

    fn messages(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(ToString::to_string).collect()
    }

    const UNIT: &str = "[Service]\nExecStart=/usr/bin/sekisho run -c /etc/sekisho/sekisho.yaml\nExecReload=/bin/kill -HUP $MAINPID\nUser=sekisho\nStateDirectory=sekisho\nProtectSystem=strict\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nSystemCallFilter=@system-service\nRestrictAddressFamilies=AF_INET AF_INET6\n";

    #[test]
    fn a_least_privilege_unit_passes() {
        let findings = check_unit(&unit(UNIT), &needs(""), Path::new("u.service"));
        assert!(findings.is_empty(), "{:?}", messages(&findings));
    }

    #[test]
    fn a_low_port_needs_net_bind_service_on_the_line_that_grants_capabilities() {
        let text = UNIT.replace(
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=",
        );
        let findings = check_unit(&unit(&text), &needs(""), Path::new("u.service"));
        assert_eq!(
            messages(&findings),
            [
                "u.service:7: error: AmbientCapabilities lacks CAP_NET_BIND_SERVICE: the configuration listens on port(s) [80] below 1024"
            ]
        );
    }

    #[test]
    fn kernel_layers_need_their_capabilities_syscall_and_netlink_and_pins_writable() {
        let findings = messages(&check_unit(
            &unit(UNIT),
            &needs(XDP),
            Path::new("u.service"),
        ));
        assert!(
            findings.iter().any(|f| f.contains("lacks CAP_BPF")),
            "{findings:?}"
        );
        assert!(
            findings.iter().any(|f| f.contains("lacks CAP_NET_ADMIN")),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with("u.service:9: error: SystemCallFilter")),
            "{findings:?}"
        );
        assert!(
            findings.iter().any(|f| f.contains("AF_NETLINK")),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.contains("/sys/fs/bpf/sekisho is written")),
            "{findings:?}"
        );
        let drop_in = "[Service]\nAmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON\nCapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON\nSystemCallFilter=bpf\nRestrictAddressFamilies=AF_NETLINK\nReadWritePaths=/sys/fs/bpf/sekisho\n";
        let mut settings = unit(UNIT);
        settings.extend(service_settings(Path::new("k.conf"), drop_in));
        let findings = check_unit(&settings, &needs(XDP), Path::new("u.service"));
        assert!(findings.is_empty(), "{:?}", messages(&findings));
        // The same drop-in without kernel layers: warned about.
        let findings = messages(&check_unit(&settings, &needs(""), Path::new("u.service")));
        assert!(
            findings.iter().any(|f| f.starts_with(
                "k.conf:2: warning: CAP_BPF is granted but the configuration has no kernel layers"
            )),
            "{findings:?}"
        );
    }

    #[test]
    fn exec_reload_must_send_sighup_and_a_reset_list_forgets_earlier_entries() {
        let text = UNIT.replace("kill -HUP", "kill -USR1");
        let findings = messages(&check_unit(
            &unit(&text),
            &needs(""),
            Path::new("u.service"),
        ));
        assert_eq!(
            findings,
            ["u.service:3: error: ExecReload does not send SIGHUP, the signal sekisho reloads on"]
        );
        let settings = unit(
            "[Service]\nAmbientCapabilities=CAP_A\nAmbientCapabilities=\nAmbientCapabilities=CAP_B\n",
        );
        assert_eq!(list(&settings, "AmbientCapabilities").unwrap().0, ["CAP_B"]);
        assert_eq!(
            config_argument(["run", "--config=/x.yaml"]),
            Some("/x.yaml")
        );
    }

    fn manifest(config_extra: &str, container_extra: &str, pod_extra: &str) -> String {
        let config: String = format!("{CONFIG}{config_extra}")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  sekisho.yaml: |\n{config}---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: s\nspec:\n  template:\n    spec:\n{pod_extra}      containers:\n        - name: sekisho\n          image: sekisho:1\n          args: [run, -c, /etc/sekisho/sekisho.yaml]\n          ports: [{{name: admin, containerPort: 9901}}]\n          readinessProbe: {{httpGet: {{path: /readyz, port: admin}}}}\n          livenessProbe: {{httpGet: {{path: /healthz, port: 9901}}}}\n          securityContext:\n            allowPrivilegeEscalation: false\n            capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE{container_extra}]}}\n          volumeMounts:\n            - {{name: config, mountPath: /etc/sekisho}}\n            - {{name: bpf, mountPath: /sys/fs/bpf}}\n      volumes:\n        - {{name: config, configMap: {{name: c}}}}\n        - {{name: bpf, hostPath: {{path: /sys/fs/bpf}}}}\n"
        )
    }

    fn check_manifest(text: &str) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!(
            "sekisho-deploy-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.yaml");
        std::fs::write(&file, text).unwrap();
        let findings = kubernetes(&[file], None);
        std::fs::remove_dir_all(&dir).unwrap();
        findings
            .iter()
            .map(|f| format!("{}: {}", f.line, f.message))
            .collect()
    }

    #[test]
    fn a_daemonset_for_the_kernel_layers_passes_and_each_lack_is_named() {
        let good = manifest(XDP, ", BPF, NET_ADMIN", "      hostNetwork: true\n");
        assert!(
            check_manifest(&good).is_empty(),
            "{:?}",
            check_manifest(&good)
        );
        let findings = check_manifest(&manifest(XDP, "", ""));
        assert!(
            findings.iter().any(|f| f.contains("lacks BPF")),
            "{findings:?}"
        );
        assert!(
            findings.iter().any(|f| f.contains("hostNetwork: true")),
            "{findings:?}"
        );
        let no_bpffs = good.replace("mountPath: /sys/fs/bpf", "mountPath: /bpf");
        let findings = check_manifest(&no_bpffs);
        assert!(
            findings
                .iter()
                .any(|f| f
                    .contains("pin_path /sys/fs/bpf/sekisho is not on the node's BPF file system")),
            "{findings:?}"
        );
    }

    #[test]
    fn probes_must_reach_the_admin_listener() {
        let text =
            manifest("", "", "").replace("path: /readyz, port: admin", "path: /ready, port: 8080");
        let findings = check_manifest(&text);
        assert!(
            findings
                .iter()
                .any(|f| f.contains("readinessProbe must GET /readyz, not /ready")),
            "{findings:?}"
        );
        assert!(
            findings.iter().any(|f| f
                .contains("readinessProbe probes port 8080, but the admin listener is on 9901")),
            "{findings:?}"
        );
        // The finding's line is the probe's, in the second document.
        let line = text
            .lines()
            .position(|l| l.contains("readinessProbe"))
            .unwrap()
            + 1;
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with(&format!("{line}: readinessProbe"))),
            "{line} {findings:?}"
        );
        let loopback =
            manifest("", "", "").replace("listen: \"[::]:9901\"", "listen: 127.0.0.1:9901");
        assert!(
            check_manifest(&loopback)
                .iter()
                .any(|f| f.contains("on the loopback"))
        );
        let bad = manifest("", "", "").replace("  issuer:", "  isuer:");
        let findings = check_manifest(&bad);
        assert!(
            findings
                .iter()
                .any(|f| f.contains("ConfigMap c sekisho.yaml")),
            "{findings:?}"
        );
    }
}
