//! A cgroup v2 path → the container, Kubernetes pod and systemd unit it belongs to, read from
//! the names each runtime gives its cgroups. Pure: no I/O, and any string is an answer.
//!
//! The layouts recognised, each component matched exactly (`<id>` is 64 lowercase hex digits,
//! `<uid>` a pod UID in UUID shape, written with `_` for `-` in systemd slice names):
//!
//! | layout | example |
//! | --- | --- |
//! | Docker, systemd driver | `/system.slice/docker-<id>.scope` |
//! | Docker, cgroupfs driver | `/docker/<id>` (also below a slice) |
//! | containerd (CRI), systemd driver | `…/cri-containerd-<id>.scope` |
//! | CRI-O, systemd / cgroupfs driver | `…/crio-<id>.scope`, `…/crio-<id>` |
//! | Podman, systemd / cgroupfs driver | `…/libpod-<id>.scope[/container]`, `/libpod_parent/libpod-<id>` |
//! | kubelet, systemd driver | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/…` |
//! | kubelet, cgroupfs driver | `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>` |
//! | host services | `/system.slice/nginx.service`, `/user.slice/user-1000.slice/session-3.scope` |
//!
//! The kubelet's QoS level is read from the path (a pod directly under `kubepods` is
//! guaranteed); a `--cgroup-root` prefix (`kubelet-kubepods-….slice`, `/kubelet/kubepods/…`) is
//! accepted. The conmon monitors (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) are not
//! their container: they report the pod and the unit only.
//!
//! The outermost container cgroup on the path decides the container, and nothing below it is
//! read: everything under a container's cgroup (crun's `container` sub-cgroup, systemd or a
//! nested runtime inside the container) is named by that container, which must not be able to
//! claim another container's or pod's identity by naming a sub-cgroup after it. The same holds
//! only as far as the host delegates: a user's `user@UID.service` subtree (rootless Podman or
//! Docker) is named by that user, so a container id found there is the user's claim.

/// What a cgroup path says about who runs in it; `None` where the path does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The runtime that named the container's cgroup, when its name says (the kubelet's
    /// cgroupfs layout names containers by bare id, whatever the runtime).
    pub runtime: Option<Runtime>,
    /// The container id: 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// The Kubernetes pod UID, with dashes (`8-4-4-4-12` lowercase hex).
    pub pod_uid: Option<String>,
    /// The pod's QoS class, as the kubelet's cgroup hierarchy places it.
    pub qos: Option<QosClass>,
    /// The innermost systemd service or scope above the container (if any) that is not itself
    /// a container's scope: `nginx.service`, `session-3.scope`, `crio-conmon-<id>.scope`.
    pub unit: Option<String>,
}

/// A container runtime, as recognised from its cgroup naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker (`docker-<id>.scope`, `/docker/<id>`).
    Docker,
    /// containerd's CRI plugin (`cri-containerd-<id>.scope`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`, `crio-<id>`).
    CriO,
    /// Podman (`libpod-<id>.scope`, `libpod-<id>`).
    Podman,
}

impl Runtime {
    /// The runtime's name for logs and metrics: `docker`, `containerd`, `cri-o`, `podman`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }
}

/// A Kubernetes pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Requests equal limits for every resource; the pod's cgroup sits directly in `kubepods`.
    Guaranteed,
    /// Some requests or limits set (`kubepods/burstable`).
    Burstable,
    /// No requests or limits (`kubepods/besteffort`).
    BestEffort,
}

impl QosClass {
    /// The class as the kubelet spells its cgroup: `guaranteed`, `burstable`, `besteffort`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

/// Reads a cgroup v2 path relative to the cgroup root (with or without the leading `/`).
///
/// A path with a `..` component is no cgroup path and says nothing; empty and `.` components
/// are skipped.
#[must_use]
pub fn identify(path: &str) -> Identity {
    let mut identity = Identity::default();
    if path.split('/').any(|name| name == "..") {
        return identity;
    }
    let mut names = path
        .split('/')
        .filter(|name| !name.is_empty() && *name != ".");
    let mut parent = Parent::Other;
    while let Some(name) = names.next() {
        if let Some((runtime, id, form)) = container(name, parent) {
            // Old Podman with the cgroupfs driver put conmon in `libpod-<id>/conmon`.
            if form == Form::PodmanCgroupfs && names.next() == Some("conmon") {
                return identity;
            }
            identity.runtime = runtime;
            identity.container_id = Some(id.to_owned());
            return identity;
        }
        if is_unit(name) {
            identity.unit = Some(name.to_owned());
        }
        if let Some(kube) = kube_slice(name) {
            identity.note(kube);
        }
        parent = match (parent, name) {
            (_, "docker") => Parent::Docker,
            (_, "kubepods") => Parent::Kubepods,
            (Parent::Kubepods, "burstable") => Parent::Qos(QosClass::Burstable),
            (Parent::Kubepods, "besteffort") => Parent::Qos(QosClass::BestEffort),
            (Parent::Kubepods, _) => pod_dir(name, QosClass::Guaranteed),
            (Parent::Qos(qos), _) => pod_dir(name, qos),
            _ => Parent::Other,
        };
        match parent {
            Parent::Qos(qos) => identity.note(Kube::Qos(qos)),
            Parent::Pod(qos, uid) => identity.note(Kube::Pod(qos, uid)),
            Parent::Other | Parent::Docker | Parent::Kubepods => {}
        }
    }
    identity
}

impl Identity {
    /// The outermost Kubernetes level wins: a nested one is not the kubelet's.
    fn note(&mut self, kube: Kube) {
        match kube {
            Kube::Qos(qos) => {
                self.qos.get_or_insert(qos);
            }
            Kube::Pod(qos, uid) => {
                self.qos.get_or_insert(qos);
                if self.pod_uid.is_none() {
                    self.pod_uid = Some(uid.as_string());
                }
            }
        }
    }
}

/// The cgroup a component sits in, as far as the cgroupfs layouts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    Other,
    /// Docker's cgroupfs parent, `docker`.
    Docker,
    /// The kubelet's cgroupfs root, `kubepods`.
    Kubepods,
    /// `kubepods/burstable` or `kubepods/besteffort`.
    Qos(QosClass),
    /// A pod's cgroupfs directory, `pod<uid>`.
    Pod(QosClass, PodUid),
}

/// A Kubernetes level found in one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kube {
    Qos(QosClass),
    Pod(QosClass, PodUid),
}

/// How a container's cgroup was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `<prefix>-<id>.scope`: runc's, crun's and CRI-O's systemd drivers.
    Scope,
    /// `crio-<id>`: CRI-O's cgroupfs driver.
    CrioCgroupfs,
    /// `libpod-<id>`: Podman's cgroupfs driver.
    PodmanCgroupfs,
    /// `<id>` under `docker` or a kubelet pod directory.
    Bare,
}

/// The systemd scope prefixes of container cgroups. The conmon scopes (`crio-conmon-`,
/// `libpod-conmon-`) share a prefix but their rest is not an id, so they never match.
const SCOPE_PREFIXES: [(&str, Runtime); 4] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("libpod-", Runtime::Podman),
];

/// The container a component names, if it is a container's own cgroup.
fn container(name: &str, parent: Parent) -> Option<(Option<Runtime>, &str, Form)> {
    if let Some(stem) = name.strip_suffix(".scope") {
        return SCOPE_PREFIXES.iter().find_map(|(prefix, runtime)| {
            let id = stem.strip_prefix(prefix).filter(|id| is_container_id(id))?;
            Some((Some(*runtime), id, Form::Scope))
        });
    }
    if let Some(id) = name.strip_prefix("crio-").filter(|id| is_container_id(id)) {
        return Some((Some(Runtime::CriO), id, Form::CrioCgroupfs));
    }
    if let Some(id) = name
        .strip_prefix("libpod-")
        .filter(|id| is_container_id(id))
    {
        return Some((Some(Runtime::Podman), id, Form::PodmanCgroupfs));
    }
    match parent {
        Parent::Docker if is_container_id(name) => Some((Some(Runtime::Docker), name, Form::Bare)),
        Parent::Pod(..) if is_container_id(name) => Some((None, name, Form::Bare)),
        _ => None,
    }
}

/// Exactly 64 lowercase hex digits, as every runtime here writes a container id.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(is_lower_hex)
}

fn is_lower_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
}

/// A systemd service or scope name: a non-empty name of systemd's unit-name characters
/// (`[A-Za-z0-9:_.@\-\\]`, at most 255) ending in `.service` or `.scope`.
fn is_unit(name: &str) -> bool {
    let stem = name
        .strip_suffix(".service")
        .or_else(|| name.strip_suffix(".scope"));
    stem.is_some_and(|stem| !stem.is_empty())
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
}

/// A kubelet slice of the systemd driver: `[<root>-]kubepods-<qos>.slice` (a QoS level) or
/// `[<root>-]kubepods[-<qos>]-pod<uid with _>.slice` (a pod; no QoS level means guaranteed).
fn kube_slice(name: &str) -> Option<Kube> {
    let stem = name.strip_suffix(".slice")?;
    let mut parts = stem.split('-');
    parts.by_ref().find(|part| *part == "kubepods")?;
    let (first, second, rest) = (parts.next(), parts.next(), parts.next());
    match (first, second, rest) {
        (Some(level), None, None) => match qos_level(level) {
            Some(qos) => Some(Kube::Qos(qos)),
            None => Some(Kube::Pod(QosClass::Guaranteed, pod_part(level, '_')?)),
        },
        (Some(level), Some(pod), None) => Some(Kube::Pod(qos_level(level)?, pod_part(pod, '_')?)),
        _ => None,
    }
}

fn qos_level(name: &str) -> Option<QosClass> {
    match name {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// A pod's cgroupfs directory `pod<uid>` under a QoS level (or `kubepods` for guaranteed).
fn pod_dir(name: &str, qos: QosClass) -> Parent {
    match pod_part(name, '-') {
        Some(uid) => Parent::Pod(qos, uid),
        None => Parent::Other,
    }
}

/// `pod<uid>`, the UID's dashes written as `dash` (`_` in systemd slice names, which use `-`
/// for nesting; `-` in cgroupfs).
fn pod_part(name: &str, dash: char) -> Option<PodUid> {
    PodUid::parse(name.strip_prefix("pod")?, dash)
}

/// A pod UID in UUID shape, kept as its 32 hex digits (lowercase) so it is `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PodUid([u8; 32]);

impl PodUid {
    /// `8-4-4-4-12` lowercase hex digits, with `dash` between the groups.
    fn parse(text: &str, dash: char) -> Option<Self> {
        if text.len() != 36 {
            return None;
        }
        let mut digits = [0u8; 32];
        let mut slots = digits.iter_mut();
        for (index, c) in text.chars().enumerate() {
            if matches!(index, 8 | 13 | 18 | 23) {
                if c != dash {
                    return None;
                }
            } else {
                let byte = u8::try_from(c).ok().filter(|b| is_lower_hex(*b))?;
                *slots.next()? = byte;
            }
        }
        Some(Self(digits))
    }

    /// The UID with dashes, as the Kubernetes API writes it.
    fn as_string(self) -> String {
        let mut text = String::with_capacity(36);
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 8 | 12 | 16 | 20) {
                text.push('-');
            }
            text.push(char::from(*byte));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f10";
    const UID: &str = "0b6e3f2a-9c4d-4e1f-8a7b-5c6d7e8f9a0b";
    const UID_ESCAPED: &str = "0b6e3f2a_9c4d_4e1f_8a7b_5c6d7e8f9a0b";

    fn container(runtime: Option<Runtime>) -> Identity {
        Identity {
            runtime,
            container_id: Some(ID.to_owned()),
            ..Identity::default()
        }
    }

    fn in_pod(mut identity: Identity, qos: QosClass) -> Identity {
        identity.pod_uid = Some(UID.to_owned());
        identity.qos = Some(qos);
        identity
    }

    fn unit(name: &str) -> Identity {
        Identity {
            unit: Some(name.to_owned()),
            ..Identity::default()
        }
    }

    #[test]
    fn docker_with_either_driver() {
        let docker = container(Some(Runtime::Docker));
        assert_eq!(
            identify(&format!("/system.slice/docker-{ID}.scope")),
            docker
        );
        assert_eq!(identify(&format!("system.slice/docker-{ID}.scope")), docker);
        assert_eq!(identify(&format!("/docker/{ID}")), docker);
        assert_eq!(identify(&format!("/my.slice/docker/{ID}")), docker);
        // Rootless Docker: the user's manager is the unit around it.
        let rootless =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope");
        assert_eq!(
            identify(&rootless),
            Identity {
                unit: Some("user@1000.service".to_owned()),
                ..docker
            }
        );
    }

    #[test]
    fn containerd_cri_with_either_driver() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_ESCAPED}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            identify(&systemd),
            in_pod(container(Some(Runtime::Containerd)), QosClass::Burstable)
        );
        // The kubelet's cgroupfs driver names the container by its id alone.
        let cgroupfs = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            identify(&cgroupfs),
            in_pod(container(None), QosClass::Burstable)
        );
        // kind: the kubelet's --cgroup-root=/kubelet prefixes every slice.
        let kind = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_ESCAPED}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            identify(&kind),
            in_pod(container(Some(Runtime::Containerd)), QosClass::BestEffort)
        );
    }

    #[test]
    fn crio_and_its_monitor() {
        let pod = format!("/kubepods.slice/kubepods-pod{UID_ESCAPED}.slice");
        assert_eq!(
            identify(&format!("{pod}/crio-{ID}.scope")),
            in_pod(container(Some(Runtime::CriO)), QosClass::Guaranteed)
        );
        // crun's sub-cgroup and anything else below the container's scope are the container's.
        assert_eq!(
            identify(&format!("{pod}/crio-{ID}.scope/container")),
            in_pod(container(Some(Runtime::CriO)), QosClass::Guaranteed)
        );
        let conmon = format!("crio-conmon-{ID}.scope");
        assert_eq!(
            identify(&format!("{pod}/{conmon}")),
            in_pod(unit(&conmon), QosClass::Guaranteed)
        );
        assert_eq!(
            identify(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            in_pod(container(Some(Runtime::CriO)), QosClass::BestEffort)
        );
        assert_eq!(
            identify(&format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}")),
            in_pod(Identity::default(), QosClass::BestEffort)
        );
    }

    #[test]
    fn podman_rootful_rootless_and_its_monitor() {
        let podman = container(Some(Runtime::Podman));
        assert_eq!(
            identify(&format!("/machine.slice/libpod-{ID}.scope")),
            podman
        );
        assert_eq!(
            identify(&format!("/machine.slice/libpod-{ID}.scope/container")),
            podman
        );
        let user = "/user.slice/user-1000.slice/user@1000.service";
        assert_eq!(
            identify(&format!("{user}/user.slice/libpod-{ID}.scope")),
            Identity {
                unit: Some("user@1000.service".to_owned()),
                ..podman.clone()
            }
        );
        let conmon = format!("libpod-conmon-{ID}.scope");
        assert_eq!(identify(&format!("/machine.slice/{conmon}")), unit(&conmon));
        assert_eq!(identify(&format!("/libpod_parent/libpod-{ID}")), podman);
        assert_eq!(
            identify(&format!("/libpod_parent/libpod-{ID}/conmon")),
            Identity::default()
        );
        assert_eq!(identify("/libpod_parent/conmon"), Identity::default());
    }

    #[test]
    fn kubernetes_pods_and_qos_levels() {
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESCAPED}.slice"
        );
        assert_eq!(
            identify(&besteffort),
            in_pod(Identity::default(), QosClass::BestEffort)
        );
        assert_eq!(
            identify(&format!("/kubepods/pod{UID}/{ID}")),
            in_pod(container(None), QosClass::Guaranteed)
        );
        assert_eq!(
            identify(&format!("/kubepods/pod{UID}")),
            in_pod(Identity::default(), QosClass::Guaranteed)
        );
        // Docker as the kubelet's runtime (dockershim, cri-dockerd) with the systemd driver.
        assert_eq!(
            identify(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_ESCAPED}.slice/docker-{ID}.scope"
            )),
            in_pod(container(Some(Runtime::Docker)), QosClass::Burstable)
        );
        let qos_only = Identity {
            qos: Some(QosClass::Burstable),
            ..Identity::default()
        };
        assert_eq!(
            identify("/kubepods.slice/kubepods-burstable.slice"),
            qos_only
        );
        assert_eq!(identify("/kubepods/burstable"), qos_only);
        assert_eq!(identify("/kubepods.slice"), Identity::default());
        assert_eq!(identify("/kubepods"), Identity::default());
    }

    #[test]
    fn pod_uid_escaping_round_trips() {
        let uid = PodUid::parse(UID_ESCAPED, '_');
        assert_eq!(uid.map(PodUid::as_string).as_deref(), Some(UID));
        assert_eq!(uid, PodUid::parse(UID, '-'));
        // Each form only where its driver writes it.
        assert_eq!(PodUid::parse(UID, '_'), None);
        assert_eq!(PodUid::parse(UID_ESCAPED, '-'), None);
        assert_eq!(
            identify(&format!("/kubepods.slice/kubepods-pod{UID}.slice")),
            Identity::default()
        );
        assert_eq!(
            identify(&format!("/kubepods/pod{UID_ESCAPED}/{ID}")),
            Identity::default()
        );
    }

    #[test]
    fn malformed_ids_are_no_containers() {
        let short = ID.get(1..).unwrap_or_default();
        let upper = ID.to_uppercase();
        let non_hex = ID.replace('f', "g");
        let long = format!("{ID}0");
        for bad in [short, upper.as_str(), non_hex.as_str(), long.as_str()] {
            let scope = format!("docker-{bad}.scope");
            assert_eq!(
                identify(&format!("/system.slice/{scope}")),
                unit(&scope),
                "{bad}"
            );
            assert_eq!(
                identify(&format!("/docker/{bad}")),
                Identity::default(),
                "{bad}"
            );
            assert_eq!(
                identify(&format!("/kubepods/pod{UID}/{bad}")),
                in_pod(Identity::default(), QosClass::Guaranteed),
                "{bad}"
            );
        }
        let bad_uids = [
            UID.to_uppercase(),
            UID.replace('b', "x"),
            UID.get(1..).unwrap_or_default().to_owned(),
            UID.replacen('-', "", 1) + "0",
        ];
        for bad in bad_uids {
            assert_eq!(
                identify(&format!("/kubepods/pod{bad}")),
                Identity::default(),
                "{bad}"
            );
        }
    }

    #[test]
    fn truncated_names_say_nothing_but_their_unit() {
        assert_eq!(
            identify("/system.slice/docker-.scope"),
            unit("docker-.scope")
        );
        assert_eq!(identify("/system.slice/.scope"), Identity::default());
        assert_eq!(identify("/system.slice/.service"), Identity::default());
        assert_eq!(identify("/docker"), Identity::default());
        assert_eq!(
            identify("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice"),
            Identity {
                qos: Some(QosClass::Burstable),
                ..Identity::default()
            }
        );
        assert_eq!(
            identify("/kubepods.slice/kubepods-pod.slice"),
            Identity::default()
        );
        assert_eq!(identify("/kubepods/pod"), Identity::default());
    }

    #[test]
    fn host_services_by_innermost_unit() {
        assert_eq!(
            identify("/system.slice/nginx.service"),
            unit("nginx.service")
        );
        assert_eq!(
            identify("/user.slice/user-1000.slice/session-3.scope"),
            unit("session-3.scope")
        );
        assert_eq!(
            identify("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo@1.service"),
            unit("app-foo@1.service")
        );
        assert_eq!(identify("/init.scope"), unit("init.scope"));
        assert_eq!(identify("/system.slice"), Identity::default());
        assert_eq!(
            identify("/system.slice/bad name.service"),
            Identity::default()
        );
    }

    #[test]
    fn a_container_cannot_claim_another_by_naming_a_sub_cgroup() {
        let other = ID.replace('4', "5");
        let path = format!(
            "/system.slice/docker-{ID}.scope/kubepods/pod{UID}/docker-{other}.scope/x.service"
        );
        assert_eq!(identify(&path), container(Some(Runtime::Docker)));
    }

    #[test]
    fn unknown_layouts_and_odd_input_say_nothing() {
        for path in [
            "",
            "/",
            "//",
            "/./.",
            &format!("/foo/{ID}"),
            &format!("/system.slice/../docker-{ID}.scope"),
            &format!("/docker/../docker/{ID}"),
            "\u{0}/\u{fffd}/é.service",
        ] {
            assert_eq!(identify(path), Identity::default(), "{path:?}");
        }
        // Look-alikes are units, not containers.
        for name in [
            format!("docker-{ID}.service"),
            format!("containerd-{ID}.scope"),
        ] {
            assert_eq!(identify(&format!("/system.slice/{name}")), unit(&name));
        }
        assert_eq!(
            identify(&format!("//system.slice/./docker-{ID}.scope")),
            container(Some(Runtime::Docker))
        );
        let long = "a/".repeat(100_000) + "x.service";
        assert_eq!(identify(&long), unit("x.service"));
    }

    #[test]
    fn names_for_logs() {
        let runtimes = [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::CriO,
            Runtime::Podman,
        ];
        let names: Vec<_> = runtimes.into_iter().map(Runtime::as_str).collect();
        assert_eq!(names, ["docker", "containerd", "cri-o", "podman"]);
        let classes = [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ];
        let names: Vec<_> = classes.into_iter().map(QosClass::as_str).collect();
        assert_eq!(names, ["guaranteed", "burstable", "besteffort"]);
    }
}
