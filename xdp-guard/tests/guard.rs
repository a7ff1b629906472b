//! The guard against the real kernel: two network namespaces joined by a veth pair, the program
//! attached to the guarded side, TCP connects from the peer side. Needs root.
//!
//! Each test makes its own namespaces (named after the test process id and a counter) and removes
//! them when it ends, also when it panics. Nothing is attached outside them.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use ipnet::IpNet;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use xdp_guard::{AttachMode, Guard, Stats};

/// Long enough for a SYN and SYN-ACK over a veth on a loaded two-core machine.
const CONNECTS_WITHIN: Duration = Duration::from_secs(3);
/// A dropped SYN is only retransmitted after 1 s, so this sees one SYN and no answer.
const DROPPED_WITHIN: Duration = Duration::from_millis(600);

const GUARDED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GUARDED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

#[test]
fn ipv4_protected_port_admits_only_allowed_sources() {
    guards_protected_port(GUARDED_V4.into(), PEER_V4.into(), AttachMode::Auto);
}

#[test]
fn ipv6_protected_port_admits_only_allowed_sources() {
    guards_protected_port(GUARDED_V6.into(), PEER_V6.into(), AttachMode::Auto);
}

#[test]
fn generic_mode_guards_too() {
    guards_protected_port(GUARDED_V4.into(), PEER_V4.into(), AttachMode::Generic);
}

#[test]
fn trusted_range_admits_and_expired_allow_does_not() {
    let topology = Topology::new();
    let listener = topology
        .guarded
        .run(|| bind(SocketAddr::new(GUARDED_V4.into(), 0)));
    let target = local_addr(&listener);
    let mut guard = topology.guarded.run(|| load(AttachMode::Auto));
    guard
        .protect_port(target.port())
        .unwrap_or_else(|e| panic!("protect_port: {e:?}"));

    guard
        .allow_source(PEER_V4.into(), Duration::ZERO)
        .unwrap_or_else(|e| panic!("allow_source: {e:?}"));
    topology.expect_dropped(&guard, target, "an allow entry that already expired");

    let range: IpNet = "192.0.2.0/30"
        .parse()
        .unwrap_or_else(|e| panic!("range: {e}"));
    guard
        .trust_range(range)
        .unwrap_or_else(|e| panic!("trust_range: {e:?}"));
    topology.expect_connects(target, "the peer in a trusted range");
}

fn guards_protected_port(guarded: IpAddr, peer: IpAddr, mode: AttachMode) {
    let topology = Topology::new();
    let listener = topology.guarded.run(|| bind(SocketAddr::new(guarded, 0)));
    let target = local_addr(&listener);
    let mut guard = topology.guarded.run(|| load(mode));

    topology.expect_connects(target, "an unprotected port");

    guard
        .protect_port(target.port())
        .unwrap_or_else(|e| panic!("protect_port: {e:?}"));
    topology.expect_dropped(&guard, target, "a protected port, source not allowed");

    guard
        .allow_source(peer, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("allow_source({peer}): {e:?}"));
    let before = stats(&guard);
    topology.expect_connects(target, "a protected port, source allowed");
    let after = stats(&guard);
    assert!(
        after.passed > before.passed,
        "passed counter did not grow: {before:?} -> {after:?}"
    );

    guard
        .revoke_source(peer)
        .unwrap_or_else(|e| panic!("revoke_source({peer}): {e:?}"));
    topology.expect_dropped(&guard, target, "a protected port, source revoked");
    guard
        .revoke_source(peer)
        .unwrap_or_else(|e| panic!("second revoke_source({peer}): {e:?}"));

    drop(listener);
}

/// Two namespaces, `guarded` with `xg0` and `peer` with `xg1`, joined by a veth pair.
struct Topology {
    // Field order is drop order: the peer goes first, then the guarded side.
    peer: Netns,
    guarded: Netns,
}

impl Topology {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "sk-xg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let guarded = Netns::add(format!("{id}-g"));
        let peer = Netns::add(format!("{id}-p"));
        let (g, p) = (guarded.name.as_str(), peer.name.as_str());
        ip(&[
            "-n", g, "link", "add", "xg0", "type", "veth", "peer", "name", "xg1", "netns", p,
        ]);
        for (ns, dev, v4, v6) in [
            (g, "xg0", GUARDED_V4, GUARDED_V6),
            (p, "xg1", PEER_V4, PEER_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Self { peer, guarded }
    }

    fn expect_connects(&self, target: SocketAddr, case: &str) {
        if let Err(e) = self
            .peer
            .run(|| TcpStream::connect_timeout(&target, CONNECTS_WITHIN))
        {
            panic!("{case}: connecting to {target} from the peer failed: {e}");
        }
    }

    fn expect_dropped(&self, guard: &Guard, target: SocketAddr, case: &str) {
        let before = stats(guard);
        match self
            .peer
            .run(|| TcpStream::connect_timeout(&target, DROPPED_WITHIN))
        {
            Ok(_) => panic!("{case}: connecting to {target} succeeded; expected the SYN dropped"),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{case}: connecting to {target} failed with {e}; expected a timeout"),
        }
        let after = stats(guard);
        assert!(
            after.dropped > before.dropped,
            "{case}: dropped counter did not grow: {before:?} -> {after:?}"
        );
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn add(name: String) -> Self {
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets and links made there stay in
    /// the namespace and can be used from any thread afterwards.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
                    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                        .unwrap_or_else(|e| panic!("setns({path}): {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
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

fn load(mode: AttachMode) -> Guard {
    Guard::load("xg0", mode).unwrap_or_else(|e| panic!("Guard::load(xg0, {mode:?}): {e:?}"))
}

fn bind(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"))
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("listener address: {e}"))
}

fn stats(guard: &Guard) -> Stats {
    guard.stats().unwrap_or_else(|e| panic!("stats: {e:?}"))
}
