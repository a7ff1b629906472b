//! The socket hooks against the real kernel: cgroup v2 directories made by the test, child
//! processes moved into them that connect (bash's /dev/tcp) or listen (python3), over IPv4 and
//! IPv6, and the bypass guard in audit and enforce mode. Needs root.
//!
//! Each test makes its own cgroup (named after the test process id and a counter) and removes it
//! when it ends, also when it panics.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use proxy_ebpf::{Attributed, Bypass, Process, SocketHooks, proxy_ebpf_common::BypassMode};

/// Upper bound for a child to start, connect and be accepted, or for an event to arrive.
const ACCEPT_WITHIN: Duration = Duration::from_secs(10);

fn attach(cgroup: &Cgroup) -> SocketHooks {
    SocketHooks::attach(&cgroup.path)
        .unwrap_or_else(|e| panic!("attaching to {}: {e:?}", cgroup.path.display()))
}

/// Connects a child in `cgroup` to a listener of this process on `host`; checks what the hooks
/// say about the connection, then that the entry goes when it closes.
fn attributes_an_outgoing_connection(host: &str) {
    let cgroup = Cgroup::create();
    let hooks = attach(&cgroup);
    let listener = TcpListener::bind((host, 0)).unwrap_or_else(|e| panic!("bind: {e}"));
    let target = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));

    let mut child = Connector::spawn(target);
    cgroup.adopt(child.pid());
    child.go();

    let (stream, peer) = accept_within(listener, ACCEPT_WITHIN);
    let local = stream
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let Attributed {
        cookie,
        cgroup_id,
        process,
    } = hooks
        .initiator(peer, local)
        .unwrap_or_else(|e| panic!("initiator({peer}, {local}): {e:?}"))
        .unwrap_or_else(|| panic!("no connection recorded for {peer} -> {local}"));
    assert_ne!(cookie, 0, "socket cookie");
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
    assert_eq!(
        hooks
            .acceptor(peer, local)
            .unwrap_or_else(|e| panic!("{e:?}")),
        None,
        "this process accepted it, outside the cgroup"
    );

    // The child exits when its connection is closed; its entry goes with the connection.
    drop(stream);
    child.wait_for_exit();
    eventually("the closed connection's entry to go", || {
        hooks
            .initiator(peer, local)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .is_none()
    });
}

#[test]
fn attributes_an_ipv4_connection_to_the_cgroup_and_process_that_opened_it() {
    attributes_an_outgoing_connection("127.0.0.1");
}

#[test]
fn attributes_an_ipv6_connection_to_the_cgroup_and_process_that_opened_it() {
    attributes_an_outgoing_connection("::1");
}

#[test]
fn attributes_an_accepted_connection_to_the_listeners_owner() {
    let cgroup = Cgroup::create();
    let hooks = attach(&cgroup);
    let mut server = Listener::spawn();
    cgroup.adopt(server.pid());
    let address = server.listen();
    let bound = hooks
        .listener(address)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_else(|| panic!("no listener recorded at {address}"));
    assert_eq!(bound.cgroup_id, Some(cgroup.id()));

    // This process (outside the cgroup) connects; the server in the cgroup accepts.
    let client = TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    let local = client
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    eventually("the accepted connection's entry", || {
        hooks
            .acceptor(local, address)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .is_some()
    });
    let accepted = hooks
        .acceptor(local, address)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_else(|| panic!("gone"));
    assert_eq!(accepted.cgroup_id, Some(cgroup.id()));
    assert_eq!(
        accepted.process,
        Some(Process {
            pid: server.pid(),
            comm: "python3".to_owned()
        }),
        "the listener's owner, not whatever the CPU ran when the handshake completed"
    );
    drop(client);
    drop(server);
    eventually("the released listener's entry to go", || {
        hooks
            .listener(address)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .is_none()
    });
}

#[test]
fn programs_beside_ours_on_the_same_cgroup_keep_working() {
    // Two independent loads on one cgroup, as another agent's programs would be: both run.
    let cgroup = Cgroup::create();
    let other = attach(&cgroup);
    let ours = attach(&cgroup);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let target = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let mut child = Connector::spawn(target);
    cgroup.adopt(child.pid());
    child.go();
    let (stream, peer) = accept_within(listener, ACCEPT_WITHIN);
    let local = stream
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    for (name, hooks) in [("the other", &other), ("ours", &ours)] {
        let found = hooks
            .initiator(peer, local)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .unwrap_or_else(|| panic!("{name} recorded nothing"));
        assert_eq!(found.cgroup_id, Some(cgroup.id()), "{name}");
    }
    drop(stream);
    child.wait_for_exit();
}

#[test]
fn connections_from_outside_the_cgroup_are_not_recorded() {
    let cgroup = Cgroup::create();
    let hooks = attach(&cgroup);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let target = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));

    // This test process is not in the cgroup.
    let client = TcpStream::connect(target).unwrap_or_else(|e| panic!("connect {target}: {e}"));
    let (_stream, peer) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    let flow = hooks
        .initiator(peer, target)
        .unwrap_or_else(|e| panic!("initiator({peer}, {target}): {e:?}"));
    assert_eq!(flow, None);
    drop(client);
}

#[test]
fn the_bypass_guard_reports_and_in_enforce_mode_refuses_connects_from_other_cgroups() {
    let root = Cgroup::create();
    let proxy = root.child("proxy");
    let other = root.child("other");
    let mut hooks = attach(&root);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let upstream = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let mut ring = hooks.take_bypasses().unwrap_or_else(|| panic!("the ring"));

    for (mode, refused) in [(BypassMode::Audit, false), (BypassMode::Enforce, true)] {
        hooks
            .guard(mode, &[upstream], &[proxy.id()])
            .unwrap_or_else(|e| panic!("{e:?}"));
        // The allowed cgroup connects, and nothing is reported.
        let mut allowed = Connector::spawn(upstream);
        proxy.adopt(allowed.pid());
        allowed.go();
        let (stream, _) = accept_within(
            listener
                .try_clone()
                .unwrap_or_else(|e| panic!("clone: {e}")),
            ACCEPT_WITHIN,
        );
        drop(stream);
        allowed.wait_for_exit();

        let mut bypass = Connector::spawn(upstream);
        other.adopt(bypass.pid());
        bypass.go();
        let event = next_bypass(&mut ring);
        assert_eq!(
            event,
            Bypass {
                cgroup_id: other.id(),
                process: Process {
                    pid: bypass.pid(),
                    comm: "bash".to_owned()
                },
                upstream,
                refused,
            },
            "{mode:?}"
        );
        if refused {
            let status = bypass.wait();
            assert!(!status.success(), "the connect must fail in enforce mode");
            let stderr = bypass.stderr();
            assert!(
                stderr.contains("Operation not permitted"),
                "EPERM expected: {stderr}"
            );
        } else {
            let (stream, _) = accept_within(
                listener
                    .try_clone()
                    .unwrap_or_else(|e| panic!("clone: {e}")),
                ACCEPT_WITHIN,
            );
            drop(stream);
            bypass.wait_for_exit();
        }
        assert!(
            ring.next().is_none(),
            "one event per bypass, none for the allowed cgroup"
        );
    }
}

/// Waits (polling the ring's descriptor) for the next bypass event.
fn next_bypass(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Bypass {
    use std::os::fd::AsFd as _;
    let deadline = std::time::Instant::now() + ACCEPT_WITHIN;
    loop {
        if let Some(item) = ring.next() {
            return Bypass::from_bytes(&item).unwrap_or_else(|| panic!("a short event"));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no bypass event within {ACCEPT_WITHIN:?}");
        let fd = ring.as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(left).ok();
        let _ = rustix::event::poll(&mut fds, timeout.as_ref());
    }
}

/// Polls `done` until it holds, for at most [`ACCEPT_WITHIN`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + ACCEPT_WITHIN;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// A python3 that waits for a line on stdin, then binds a TCP listener on 127.0.0.1, prints its
/// port and accepts connections until killed.
struct Listener {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Listener {
    fn spawn() -> Self {
        let script = "import socket,sys\nsys.stdin.readline()\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(8)\nprint(s.getsockname()[1],flush=True)\nconns=[]\nwhile True:\n    conns.append(s.accept())\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning python3: {e}"));
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it bind (call once it is in its cgroup); its address.
    fn listen(&mut self) -> SocketAddr {
        let mut stdin = self
            .stdin
            .take()
            .unwrap_or_else(|| panic!("listen() twice"));
        writeln!(stdin, "go").unwrap_or_else(|e| panic!("writing to python3: {e}"));
        let stdout = self.child.stdout.take().unwrap_or_else(|| panic!("stdout"));
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the port: {e}"));
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("port {line:?}: {e}"));
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    /// A cgroup inside this one (removed before it, being declared after it).
    fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
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
    fn spawn(target: SocketAddr) -> Self {
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
            .stderr(Stdio::piped())
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

    /// Its exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for bash: {e}"))
    }

    /// What it wrote to stderr (after it exited).
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
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
