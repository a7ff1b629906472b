//! Container attribution end to end (root only): the test makes a cgroup tree shaped like real
//! runtimes' (a Kubernetes pod's containerd container, a Docker container, a Podman container)
//! under the cgroup v2 mount, runs sekisho in a unit cgroup of its own inside it with the socket
//! hooks attached to the tree, and places real processes in the runtime cgroups before they
//! open a socket: a python3 HTTP server as the upstream, python3 clients requesting through
//! sekisho over IPv4 and IPv6, and a python3 that connects straight to the protected upstream.
//! The records must name each one's container, pod and process; the bypass must be a record in
//! audit mode, and refused with EPERM (and a record) in enforce mode after a restart, while
//! sekisho's own connections to the upstream keep working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sekisho_tests::netns::Bpffs;
use sekisho_tests::{audit_records, eventually, stack};
use serde_json::Value;

const CLIENT_ID: &str = "0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e0c1e";
const UPSTREAM_ID: &str = "d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4";
const BYPASS_ID: &str = "bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0";
const POD_UID: &str = "5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

/// The cgroup tree, removed (deepest first) on drop; the test process is moved back to where it
/// was before.
struct Tree {
    root: PathBuf,
    mount: PathBuf,
    home: PathBuf,
    made: Vec<PathBuf>,
}

impl Tree {
    fn new() -> Self {
        let mount = cgroup2_mount();
        let root = mount.join(format!("sk-attr-{}", std::process::id()));
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line")
            .trim()
            .trim_start_matches('/')
            .to_owned();
        let home = mount.join(own);
        let mut tree = Tree {
            root: root.clone(),
            mount,
            home,
            made: Vec::new(),
        };
        tree.make(&root);
        tree
    }

    /// Makes `relative` (and its parents) under the root.
    fn cgroup(&mut self, relative: &str) -> PathBuf {
        let mut path = self.root.clone();
        for part in relative.split('/') {
            path.push(part);
            if !path.exists() {
                let dir = path.clone();
                self.make(&dir);
            }
        }
        path
    }

    fn make(&mut self, path: &Path) {
        std::fs::create_dir(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        self.made.push(path.to_owned());
    }

    /// The path as the audit record has it: from the cgroup v2 mount.
    fn relative(&self, path: &Path) -> String {
        format!("/{}", path.strip_prefix(&self.mount).unwrap().display())
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for dir in self.made.iter().rev() {
            // Processes still inside (killed, not yet reaped by the kernel) delay removal.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, mount_point, "cgroup2", ..] => Some(PathBuf::from(mount_point)),
                _ => None,
            },
        )
        .expect("a cgroup2 mount")
}

/// `argv` started inside `cgroup` (the shell moves itself in, then becomes the program, so the
/// program's every socket is made there). Killed on drop.
struct InCgroup(Child);

impl InCgroup {
    fn spawn(cgroup: &Path, argv: &[&str]) -> Self {
        let child = Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
            .arg(cgroup)
            .args(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sh");
        InCgroup(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The first line it prints.
    fn first_line(&mut self) -> String {
        let mut line = String::new();
        BufReader::new(self.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_owned()
    }

    /// Waits for it; its exit status and what it printed on stdout and stderr.
    fn finish(mut self) -> (bool, String, String) {
        let mut out = String::new();
        let mut err = String::new();
        std::io::Read::read_to_string(self.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        std::io::Read::read_to_string(self.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        let status = self.0.wait().unwrap();
        (status.success(), out, err)
    }
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PYTHON: &str = "/usr/bin/python3";

/// A python3 HTTP upstream in `cgroup`, bound on 127.0.0.1; its address.
fn upstream(cgroup: &Path) -> (InCgroup, SocketAddr) {
    let script = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'upstream says hi'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut server = InCgroup::spawn(cgroup, &[PYTHON, "-c", script]);
    let port: u16 = server.first_line().parse().expect("the upstream's port");
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A python3 in `cgroup` that GETs `url`: its pid, whether it succeeded, and the body.
fn get(cgroup: &Path, url: &str) -> (u32, bool, String) {
    let script = "import sys,urllib.request\nprint(urllib.request.urlopen(sys.argv[1],timeout=10).read().decode())\n";
    let client = InCgroup::spawn(cgroup, &[PYTHON, "-c", script, url]);
    let pid = client.pid();
    let (ok, out, err) = client.finish();
    (pid, ok, format!("{out}{err}"))
}

/// A python3 in `cgroup` that connects straight to `target`: its pid, whether the connect
/// succeeded, and what it said.
fn connect(cgroup: &Path, target: SocketAddr) -> (u32, bool, String) {
    let script = "import socket,sys\nsocket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10).close()\nprint('connected')\n";
    let client = InCgroup::spawn(
        cgroup,
        &[
            PYTHON,
            "-c",
            script,
            &target.ip().to_string(),
            &target.port().to_string(),
        ],
    );
    let pid = client.pid();
    let (ok, out, err) = client.finish();
    (pid, ok, format!("{out}{err}"))
}

fn http_records_with_pid(audit: &Path, pid: u32) -> Vec<Value> {
    audit_records(audit)
        .into_iter()
        .filter(|r| r["class_uid"] == 4002 && r["container"]["process"]["pid"] == pid)
        .collect()
}

#[tokio::test]
async fn records_name_the_containers_on_both_ends_and_the_bypass_guard_holds() {
    let pins = Bpffs::mount();
    let mut tree = Tree::new();
    let own = tree.cgroup("system.slice/sekisho-test.service");
    let client_cgroup = tree.cgroup(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CLIENT_ID}.scope",
        POD_UID.replace('-', "_")
    ));
    let upstream_cgroup = tree.cgroup(&format!("system.slice/docker-{UPSTREAM_ID}.scope"));
    let bypass_cgroup = tree.cgroup(&format!("machine.slice/libpod-{BYPASS_ID}.scope/container"));
    // This process (and so sekisho, the provider and the echo server it starts) runs in a unit
    // cgroup inside the tree: sekisho's own connections are judged by the guard too.
    std::fs::write(own.join("cgroup.procs"), std::process::id().to_string()).unwrap();

    let (_server, upstream_addr) = upstream(&upstream_cgroup);
    let root = tree.root.display().to_string();
    let (_idp, _echo, mut proxy) = stack(Default::default(), "ES256", |o| {
        o.http_listen = "[::]:0".into();
        o.routes_yaml = format!(
            "  - id: app\n    from: http://127.0.0.1\n    to: http://{upstream_addr}\n    public: true\n  \
             - id: app6\n    from: http://[::1]\n    to: http://{upstream_addr}\n    public: true\n"
        );
        o.extra_yaml = format!(
            "attribution:\n  cgroup_root: {root}\n  pin_path: {}\n  protected_upstreams: [\"{upstream_addr}\"]\n  mode: audit\n",
            pins.path().display()
        );
    })
    .await;
    let port = proxy.http.port();
    let audit = proxy.audit_dir();

    // A pod's container asks through sekisho, over IPv4 and over IPv6.
    for url in [
        format!("http://127.0.0.1:{port}/hello"),
        format!("http://[::1]:{port}/hello"),
    ] {
        let (pid, ok, said) = get(&client_cgroup, &url);
        assert!(ok && said.contains("upstream says hi"), "{url}: {said}");
        eventually(&format!("the record of {url}"), || {
            let audit = audit.clone();
            async move { !http_records_with_pid(&audit, pid).is_empty() }
        })
        .await;
        let record = http_records_with_pid(&audit, pid).remove(0);
        let client = &record["container"];
        assert_eq!(client["uid"], CLIENT_ID, "{record:#}");
        assert_eq!(client["runtime"], "containerd", "{record:#}");
        assert_eq!(client["pod_uuid"], POD_UID, "{record:#}");
        assert_eq!(client["orchestrator"], "kubernetes", "{record:#}");
        assert_eq!(client["qos"], "burstable", "{record:#}");
        assert_eq!(client["process"]["name"], "python3", "{record:#}");
        assert_eq!(
            client["cgroup"],
            tree.relative(&client_cgroup).as_str(),
            "{record:#}"
        );
        assert_eq!(
            client["cgroup_id"],
            std::fs::metadata(&client_cgroup).unwrap().ino(),
            "{record:#}"
        );
        let upstream = &record["unmapped"]["upstream_container"];
        assert_eq!(upstream["uid"], UPSTREAM_ID, "{record:#}");
        assert_eq!(upstream["runtime"], "docker", "{record:#}");
        assert_eq!(upstream["process"]["name"], "python3", "{record:#}");
    }

    // Straight to the protected upstream from a Podman container: let through, and recorded.
    let (pid, ok, said) = connect(&bypass_cgroup, upstream_addr);
    assert!(ok, "audit mode lets it through: {said}");
    let bypass = |records: &[Value], pid: u32, activity: &str| {
        records
            .iter()
            .find(|r| {
                r["unmapped"]["event"] == "upstream_bypass"
                    && r["container"]["process"]["pid"] == pid
                    && r["activity_name"] == activity
            })
            .cloned()
    };
    eventually("the bypass record", || {
        let found = bypass(&audit_records(&audit), pid, "Open").is_some();
        async move { found }
    })
    .await;
    let record = bypass(&audit_records(&audit), pid, "Open").unwrap();
    assert_eq!(record["class_uid"], 4001);
    assert_eq!(record["container"]["uid"], BYPASS_ID, "{record:#}");
    assert_eq!(record["container"]["runtime"], "podman", "{record:#}");
    assert_eq!(
        record["dst_endpoint"]["port"],
        upstream_addr.port(),
        "{record:#}"
    );

    // The container's records on the command line: its requests (and nothing else's).
    let query = Command::new(sekisho_tests::sekisho_binary())
        .args([
            "audit",
            "query",
            "--format",
            "json",
            "--container",
            CLIENT_ID,
            "--dir",
        ])
        .arg(&audit)
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&query.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "the IPv4 and the IPv6 request: {lines:#?}");
    assert!(lines.iter().all(|r| r["container"]["uid"] == CLIENT_ID));
    let query = Command::new(sekisho_tests::sekisho_binary())
        .args([
            "audit",
            "query",
            "--format",
            "json",
            "--decision",
            "upstream_bypass",
            "--dir",
        ])
        .arg(&audit)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&query.stdout).lines().count(),
        1,
        "{}",
        String::from_utf8_lossy(&query.stdout)
    );

    // Enforce mode, after a restart (the pinned hooks are taken over, make before break).
    proxy.kill().await;
    let config = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(
        &proxy.config_path,
        config.replace("mode: audit", "mode: enforce"),
    )
    .unwrap();
    proxy.start_again().await;
    let port = proxy.http.port();
    let (pid, ok, said) = connect(&bypass_cgroup, upstream_addr);
    assert!(!ok, "enforce mode refuses it: {said}");
    assert!(
        said.contains("Operation not permitted") || said.contains("PermissionError"),
        "{said}"
    );
    eventually("the refused bypass record", || {
        let found = bypass(&audit_records(&audit), pid, "Refuse").is_some();
        async move { found }
    })
    .await;
    // sekisho's own connections to the protected upstream still work.
    let (_, ok, said) = get(&client_cgroup, &format!("http://127.0.0.1:{port}/hello"));
    assert!(
        ok && said.contains("upstream says hi"),
        "through sekisho: {said}"
    );
    drop(proxy);
}

#[tokio::test]
async fn hooks_that_cannot_attach_stop_a_required_start_and_mark_records_otherwise() {
    let pins = Bpffs::mount();
    let echo = sekisho_tests::echo::Echo::start().await;
    let idp = sekisho_tests::Idp::start(Default::default()).await;
    let mut options = sekisho_tests::ProxyOptions::new(&idp.issuer);
    options.routes_yaml =
        "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n    public: true\n".into();
    options.extra_yaml = format!(
        "attribution:\n  cgroup_root: /sys/fs/cgroup/no-such-cgroup-{}\n  pin_path: {}\n",
        std::process::id(),
        pins.path().display()
    );
    let (code, output) = sekisho_tests::Proxy::start_refused(&options, echo.addr).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("there is no such cgroup directory")
            && output.contains("attribution.required is true"),
        "{output}"
    );

    options.extra_yaml.push_str("  required: false\n");
    let proxy = sekisho_tests::Proxy::start(&options, echo.addr).await;
    let response = reqwest::get(format!("{}/hello", proxy.base()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let audit = proxy.audit_dir();
    eventually("the request's record", || {
        let audit = audit.clone();
        async move {
            audit_records(&audit)
                .iter()
                .any(|r| r["class_uid"] == 4002 && r["unmapped"]["attribution"] == "unavailable")
        }
    })
    .await;
    assert!(
        audit_records(&audit).iter().any(|r| r["class_uid"] == 6002
            && r["status"] == "Failure"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("socket hooks not attached"))),
        "a failed start record"
    );
}
