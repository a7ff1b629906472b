//! Network namespaces the tests make and remove (root only): a server namespace where sekisho
//! and the provider run, and a client namespace joined to it by a veth pair. Nothing is ever
//! attached to the machine's own interfaces.
//!
//! [`Enter::enter`] moves the calling thread into a namespace: sockets it opens and processes
//! it spawns from then on live there (a `#[tokio::test]` runs its tasks on its one thread, so a
//! test can switch between the client's and the server's view). [`Topology`] returns the
//! thread to where it started when dropped.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// The server side's address on the veth.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The client side's address on the veth.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// A second address on the client side (for trusted-range cases).
pub const CLIENT_TRUSTED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
/// A third address on the client side: never signed in, never trusted.
pub const CLIENT_OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 4);

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns` list).
    pub name: String,
}

impl Netns {
    fn add(name: String) -> Self {
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) {
        enter_path(&format!("/run/netns/{}", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: could not delete network namespace {}: {status:?}",
                self.name
            );
        }
    }
}

/// A server and a client namespace joined by a veth pair: `SERVER`/24 on the server's
/// `interface`, `CLIENT`, `CLIENT_TRUSTED` and `CLIENT_OTHER` on the client's. Loopback is up on both.
#[derive(Debug)]
pub struct Topology {
    /// The server side (sekisho, the provider, the protected service).
    pub server: Netns,
    /// The client side.
    pub client: Netns,
    /// The server side's veth (where the XDP guard is attached).
    pub interface: String,
    home: File,
}

impl Topology {
    /// Makes both namespaces and the veth pair. The calling thread stays where it is.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("sk-t-{}-{n}", std::process::id());
        let home = File::open("/proc/thread-self/ns/net").expect("this thread's network namespace");
        let server = Netns::add(format!("{id}-s"));
        let client = Netns::add(format!("{id}-c"));
        let interface = format!("sks{n}");
        let peer = format!("skc{n}");
        ip(&[
            "-n",
            &server.name,
            "link",
            "add",
            &interface,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &client.name,
        ]);
        let (s, c) = (server.name.as_str(), client.name.as_str());
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("{SERVER}/24"),
            "dev",
            &interface,
        ]);
        for address in [CLIENT, CLIENT_TRUSTED, CLIENT_OTHER] {
            let address = format!("{address}/24");
            ip(&["-n", c, "addr", "add", &address, "dev", &peer]);
        }
        for (ns, dev) in [(s, interface.as_str()), (c, peer.as_str())] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Topology {
            server,
            client,
            interface,
            home,
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Err(e) =
            move_into_link_name_space(self.home.as_fd(), Some(LinkNameSpaceType::Network))
        {
            eprintln!("warning: could not return to the test's network namespace: {e}");
        }
    }
}

/// A private BPF file system, mounted on a temporary directory and unmounted on drop (with
/// everything pinned in it): pins of one test never meet another's.
#[derive(Debug)]
pub struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    /// Mounts a new BPF file system instance.
    pub fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t bpf failed: {status}");
        Bpffs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let status = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: could not unmount {}: {status:?}",
                self.dir.path().display()
            );
        }
    }
}

fn enter_path(path: &str) {
    let ns = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
        .unwrap_or_else(|e| panic!("setns({path}): {e}"));
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
