//! The socket hooks against the real kernel: a cgroup v2 directory made by the test, a child
//! process moved into it that connects to a listener the test owns. Needs root.
//!
//! Each test makes its own cgroup (named after the test process id and a counter) and removes it
//! when it ends, also when it panics.

use std::{
    fs,
    io::Write as _,
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use proxy_ebpf::{Flow, Process, SocketHooks, proxy_ebpf_common::Direction};

/// Upper bound for the child to start, connect and be accepted.
const ACCEPT_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn attributes_a_connection_to_the_cgroup_and_process_that_opened_it() {
    let cgroup = Cgroup::create();
    let hooks = SocketHooks::attach(&cgroup.path)
        .unwrap_or_else(|e| panic!("attaching to {}: {e:?}", cgroup.path.display()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let target = v4(listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}")));

    let mut child = Connector::spawn(target);
    cgroup.adopt(child.pid());
    child.go();

    let (stream, peer) = accept_within(listener, ACCEPT_WITHIN);
    let local = v4(stream
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}")));
    let flow = hooks
        .lookup_flow(v4(peer), local)
        .unwrap_or_else(|e| panic!("lookup_flow({peer}, {local}): {e:?}"))
        .unwrap_or_else(|| panic!("no flow recorded for {peer} -> {local}"));

    let Flow {
        cookie,
        direction,
        cgroup_id,
        process,
    } = flow;
    assert_ne!(cookie, 0, "socket cookie");
    assert_eq!(direction, Direction::Initiated);
    assert_eq!(
        cgroup_id,
        Some(cgroup.id()),
        "cgroup id vs inode of {}",
        cgroup.path.display()
    );
    assert_eq!(
        process,
        Some(Process {
            pid: child.pid(),
            comm: "bash".to_owned()
        })
    );

    // The child exits when its connection is closed.
    drop(stream);
    child.wait_for_exit();
}

#[test]
fn connections_from_outside_the_cgroup_are_not_recorded() {
    let cgroup = Cgroup::create();
    let hooks = SocketHooks::attach(&cgroup.path)
        .unwrap_or_else(|e| panic!("attaching to {}: {e:?}", cgroup.path.display()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let target = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));

    // This test process is not in the cgroup.
    let client = TcpStream::connect(target).unwrap_or_else(|e| panic!("connect {target}: {e}"));
    let (_stream, peer) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    let flow = hooks
        .lookup_flow(v4(peer), v4(target))
        .unwrap_or_else(|e| panic!("lookup_flow({peer}, {target}): {e:?}"));
    assert_eq!(flow, None);
    drop(client);
}

/// A cgroup v2 directory under the unified hierarchy, removed on drop.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn create() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sk-pe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = cgroup2_mount().join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    /// The cgroup id: the inode number of the directory.
    fn id(&self) -> u64 {
        fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
            .ino()
    }

    fn adopt(&self, pid: u32) {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("writing {pid} to {}: {e}", procs.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.path) {
            eprintln!(
                "warning: could not remove cgroup {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Where cgroup v2 is mounted, from /proc/mounts (/sys/fs/cgroup on a unified layout,
/// /sys/fs/cgroup/unified on a hybrid one).
fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_else(|e| panic!("/proc/mounts: {e}"));
    mounts
        .lines()
        .find_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, mount_point, "cgroup2", ..] => Some(PathBuf::from(mount_point)),
                _ => None,
            },
        )
        .unwrap_or_else(|| panic!("no cgroup2 mount in /proc/mounts:\n{mounts}"))
}

/// A `bash` that waits for a line on stdin, then connects to the target and holds the
/// connection until the other side closes it. Killed and reaped on drop.
struct Connector {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Connector {
    fn spawn(target: SocketAddrV4) -> Self {
        // `read` fails at end of file; that is the expected way out, not an error.
        let script = r#"read -r _ && exec 3<>"/dev/tcp/$1/$2" && { read -r _ <&3; true; }"#;
        let mut child = Command::new("bash")
            .args([
                "-c",
                script,
                "connector",
                &target.ip().to_string(),
                &target.port().to_string(),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning bash: {e}"));
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the child go on to connect (call once it is in its cgroup).
    fn go(&mut self) {
        let mut stdin = self
            .stdin
            .take()
            .unwrap_or_else(|| panic!("go() called twice"));
        writeln!(stdin, "go").unwrap_or_else(|e| panic!("writing to the connector: {e}"));
    }

    fn wait_for_exit(&mut self) {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for bash: {e}"));
        assert!(status.success(), "connector exited with {status}");
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        // Both fail harmlessly if the child already exited and was reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn accept_within(listener: TcpListener, limit: Duration) -> (TcpStream, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => panic!("accept: {e}"),
        Err(e) => panic!("no connection from the child within {limit:?}: {e}"),
    }
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(addr) => addr,
        SocketAddr::V6(addr) => panic!("expected an IPv4 address, got {addr}"),
    }
}
