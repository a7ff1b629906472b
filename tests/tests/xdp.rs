//! The NIC guard end to end (root only): sekisho and the real provider run in a server network
//! namespace the test makes, with the XDP guard attached to the server side of a veth pair; a
//! client namespace signs in through sekisho (scripted, hop by hop) and connects to a protected
//! TCP port. The provider is reached from the server side (it is another network, as in
//! production); every request to sekisho and every connect to the protected port comes from
//! the client namespace, so the address sekisho admits is the client's real one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sekisho_tests::netns::{Bpffs, CLIENT, CLIENT_OTHER, CLIENT_TRUSTED, SERVER, Topology};
use sekisho_tests::{Agent, Idp, Proxy, ProxyOptions, echo, location, no_redirect_client, stack};

/// Long enough for a SYN and SYN-ACK over a veth on a loaded two-core machine.
const CONNECTS_WITHIN: Duration = Duration::from_secs(3);
/// A dropped SYN is retransmitted only after 1 s: waiting this long sees it unanswered once.
const DROPPED_WITHIN: Duration = Duration::from_millis(600);

/// Connects from `source` (the calling thread's namespace) to `target`.
async fn connect(source: IpAddr, target: SocketAddr, within: Duration) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    match tokio::time::timeout(within, socket.connect(target)).await {
        Ok(stream) => stream.map(drop),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn expect_connects(source: IpAddr, target: SocketAddr, case: &str) {
    if let Err(e) = connect(source, target, CONNECTS_WITHIN).await {
        panic!("{case}: {source} could not connect to {target}: {e}");
    }
}

async fn expect_dropped(source: IpAddr, target: SocketAddr, case: &str) {
    match connect(source, target, DROPPED_WITHIN).await {
        Ok(()) => panic!("{case}: {source} connected to {target}; expected its SYN dropped"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        Err(e) => panic!("{case}: connecting failed with {e}; expected a timeout (a drop)"),
    }
}

/// Whether a datagram sent from `source` (the calling thread's namespace) reaches `server`
/// within `within`.
fn datagram_arrives(source: IpAddr, server: &std::net::UdpSocket, within: Duration) -> bool {
    let client = std::net::UdpSocket::bind(SocketAddr::new(source, 0)).unwrap();
    let payload = format!(
        "from {} {:?}",
        client.local_addr().unwrap(),
        std::time::Instant::now()
    );
    client
        .send_to(payload.as_bytes(), server.local_addr().unwrap())
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    let mut buffer = [0u8; 128];
    loop {
        // What is left of `within` (a signal interrupting the wait must not extend it).
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        server.set_read_timeout(Some(left)).unwrap();
        match server.recv_from(&mut buffer) {
            Ok((n, _)) if buffer.get(..n) == Some(payload.as_bytes()) => return true,
            Ok(_) => continue,
            // A signal to this thread (a child process of another test exiting): wait on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(e) => panic!("receiving on the UDP service: {e}"),
        }
    }
}

/// sekisho's options for the guard on `topology`, protecting TCP `port`, pinning in `pins`.
fn options(o: &mut ProxyOptions, topology: &Topology, pins: &Bpffs, port: u16) {
    options_with(o, topology, pins, &port.to_string(), "");
}

/// [`options`] with the protected ports as the list's YAML items and more lines for the `xdp`
/// section.
fn options_with(o: &mut ProxyOptions, topology: &Topology, pins: &Bpffs, ports: &str, xdp: &str) {
    o.http_listen = format!("{SERVER}:0");
    o.routes_yaml = format!("  - id: app\n    from: http://{SERVER}\n    to: http://{{echo}}\n");
    o.extra_yaml = format!(
        "xdp:\n  interfaces: [{{name: {}, mode: generic}}]\n  protected_ports: [{ports}]\n  \
         trusted: [{CLIENT_TRUSTED}/32]\n  pin_path: {}\n{xdp}",
        topology.interface,
        pins.path().display()
    );
}

/// Signs `user` in: sekisho's hops from the client namespace, the provider's from the server's.
async fn sign_in(topology: &Topology, agent: &Agent, base: &str, idp: &Idp, user: &str) {
    topology.client.enter();
    let start = format!("{base}/hello");
    let first = agent.browse(&start).await;
    assert_eq!(first.status(), 302, "{user}: no redirect to sign in");
    let authorize = location(&first, &start);
    assert!(authorize.starts_with(&idp.issuer), "{authorize}");

    topology.server.enter();
    let to_interaction = agent.browse(&authorize).await;
    assert_eq!(to_interaction.status(), 303);
    let interaction = location(&to_interaction, &authorize);
    let login = format!("{}/login", interaction.trim_end_matches('/'));
    let password = format!("{user}-pw");
    let posted = agent
        .send(
            no_redirect_client()
                .post(&login)
                .form(&[("login", user), ("password", password.as_str())]),
        )
        .await;
    assert_eq!(posted.status(), 303);
    let resume = location(&posted, &login);
    let back = agent.browse(&resume).await;
    assert_eq!(back.status(), 303);
    let callback = location(&back, &resume);

    topology.client.enter();
    let done = agent.browse(&callback).await;
    assert_eq!(done.status(), 302, "{user}: the callback did not sign in");
}

/// sekisho with the guard on a fresh topology: its fields drop in order (sekisho first, the
/// namespaces last).
struct Guarded {
    proxy: Proxy,
    idp: Idp,
    _echo: echo::Echo,
    service: std::net::TcpListener,
    protected: SocketAddr,
    /// A UDP socket on a protected UDP port.
    udp: std::net::UdpSocket,
    pins: Bpffs,
    topology: Topology,
}

/// Starts sekisho guarding a TCP service in the server namespace, with `xdp` more lines in its
/// `xdp` section; the thread is left in the server namespace.
async fn guarded(xdp: &str) -> Guarded {
    let topology = Topology::new();
    let pins = Bpffs::mount();
    topology.server.enter();
    let service = std::net::TcpListener::bind((SERVER, 0)).unwrap();
    let protected = service.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind((SERVER, 0)).unwrap();
    let ports = format!(
        "{}, {}/udp",
        protected.port(),
        udp.local_addr().unwrap().port()
    );
    let (idp, echo, proxy) = stack(Default::default(), "ES256", |o| {
        options_with(o, &topology, &pins, &ports, xdp);
    })
    .await;
    Guarded {
        proxy,
        idp,
        _echo: echo,
        service,
        protected,
        udp,
        pins,
        topology,
    }
}

#[tokio::test]
async fn sessions_open_and_close_the_protected_port_for_their_address() {
    // Bound in this order so that sekisho goes first and the namespaces last.
    let Guarded {
        topology,
        pins: _pins,
        service,
        protected,
        udp,
        _echo,
        idp,
        proxy,
    } = guarded("").await;
    let base = proxy.base();

    topology.client.enter();
    expect_dropped(CLIENT.into(), protected, "before any sign-in").await;
    assert!(
        !datagram_arrives(CLIENT.into(), &udp, DROPPED_WITHIN),
        "a datagram to the protected UDP port before any sign-in"
    );
    assert!(
        datagram_arrives(CLIENT_TRUSTED.into(), &udp, CONNECTS_WITHIN),
        "a trusted address's datagram"
    );
    expect_connects(CLIENT_TRUSTED.into(), protected, "a trusted address").await;
    let unprotected = proxy.http;
    expect_connects(CLIENT.into(), unprotected, "sekisho's own port").await;

    let alice = Agent::new();
    sign_in(&topology, &alice, &base, &idp, "alice").await;
    topology.client.enter();
    expect_connects(
        CLIENT.into(),
        protected,
        "alice signed in from this address",
    )
    .await;
    assert!(
        datagram_arrives(CLIENT.into(), &udp, CONNECTS_WITHIN),
        "alice's datagram to the protected UDP port"
    );

    // bob signs in from the same address (one NAT): alice's sign-out must not lock him out.
    let bob = Agent::new();
    sign_in(&topology, &bob, &base, &idp, "bob").await;
    topology.client.enter();
    let out = alice.browse(&format!("{base}/.sekisho/logout")).await;
    assert_eq!(out.status(), 302);
    expect_connects(CLIENT.into(), protected, "bob still holds the address").await;
    let out = bob.browse(&format!("{base}/.sekisho/logout")).await;
    assert_eq!(out.status(), 302);
    expect_dropped(CLIENT.into(), protected, "after the last sign-out").await;
    assert!(
        !datagram_arrives(CLIENT.into(), &udp, DROPPED_WITHIN),
        "a datagram after the last sign-out"
    );
    expect_connects(CLIENT_TRUSTED.into(), protected, "a trusted address, still").await;

    // A program with a bearer token admits its address until the token expires.
    topology.server.enter();
    let token = idp.bearer("alice").await;
    topology.client.enter();
    let response = no_redirect_client()
        .get(format!("{base}/hello"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    expect_connects(CLIENT.into(), protected, "a program with a bearer token").await;
    drop(service);
}

#[tokio::test]
async fn a_second_sekisho_never_takes_over_a_guarded_interface() {
    // Bound in this order so that sekisho goes first and the namespaces last.
    let Guarded {
        topology,
        pins,
        service,
        protected,
        udp: _udp,
        _echo: echo,
        idp,
        proxy: _first,
    } = guarded("").await;

    // A second sekisho on the same interface refuses to start, and says why.
    let mut second = ProxyOptions::new(&idp.issuer);
    options(&mut second, &topology, &pins, protected.port());
    let (code, stderr) = Proxy::start_refused(&second, echo.addr).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("another sekisho already guards this interface")
            && stderr.contains(&topology.interface)
            && stderr.contains("xdp.required is true"),
        "{stderr}"
    );
    // The first one's program is still the one deciding.
    topology.client.enter();
    expect_dropped(CLIENT.into(), protected, "the first guard still attached").await;
    drop(service);
}

#[tokio::test]
async fn a_missing_interface_stops_a_required_guard_and_is_reported_by_an_optional_one() {
    let topology = Topology::new();
    let pins = Bpffs::mount();
    topology.server.enter();
    let idp = Idp::start(Default::default()).await;
    let echo = echo::Echo::start().await;
    let mut options = ProxyOptions::new(&idp.issuer);
    let pin_path = pins.path().display();
    options.extra_yaml = format!(
        "xdp:\n  interfaces: [nosuch0]\n  protected_ports: [2222]\n  pin_path: {pin_path}\n"
    );
    let (code, stderr) = Proxy::start_refused(&options, echo.addr).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("`nosuch0`") && stderr.contains("no such interface"),
        "{stderr}"
    );

    options.extra_yaml = format!(
        "xdp:\n  interfaces: [nosuch0]\n  protected_ports: [2222]\n  pin_path: {pin_path}\n  \
         required: false\nadmin:\n  listen: 127.0.0.1:0\n  policy: staff\n\
         policies:\n  staff:\n    allow:\n      and:\n        - groups: {{has: admins}}\n"
    );
    let proxy = Proxy::start(&options, echo.addr).await;
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        proxy.admin.expect("admin listener")
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(metrics.contains("\nsekisho_xdp_attached 0\n"), "{metrics}");
    let logs = proxy.logs();
    assert!(
        logs.contains("XDP guard not attached") && logs.contains("no such interface"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_kill_and_a_restart_keep_the_program_attached_and_the_admitted_client_connected() {
    // Bound in this order so that sekisho goes first and the namespaces last.
    let Guarded {
        topology,
        pins: _pins,
        service,
        protected,
        udp: _udp,
        _echo,
        idp,
        mut proxy,
    } = guarded("").await;
    let alice = Agent::new();
    sign_in(&topology, &alice, &proxy.base(), &idp, "alice").await;
    topology.client.enter();
    expect_connects(CLIENT.into(), protected, "alice signed in").await;

    topology.server.enter();
    proxy.kill().await;
    // sekisho is gone (kill -9), its program and admissions are not: the port stays closed to
    // strangers and open to alice.
    topology.client.enter();
    expect_connects(CLIENT.into(), protected, "alice while sekisho is down").await;
    expect_dropped(
        CLIENT_OTHER.into(),
        protected,
        "a stranger while sekisho is down",
    )
    .await;

    topology.server.enter();
    proxy.start_again().await;
    assert!(
        proxy
            .logs()
            .contains("XDP guard taken over from the previous run"),
        "{}",
        proxy.logs()
    );
    topology.client.enter();
    expect_connects(
        CLIENT.into(),
        protected,
        "alice after the restart, before any request",
    )
    .await;
    expect_dropped(
        CLIENT_OTHER.into(),
        protected,
        "a stranger after the restart",
    )
    .await;
    let again = alice.browse(&format!("{}/hello", proxy.base())).await;
    assert_eq!(again.status(), 200, "the session survives the restart");

    // An admission nothing holds any more is pruned at the next start: one the journal knows
    // nothing of (written to the pinned map while sekisho was down, as by a crash between the
    // map write and the journal, or an older sekisho), while alice's is kept.
    topology.server.enter();
    proxy.kill().await;
    let allowed = xdp_command(
        &proxy.config_path,
        &["allow", &CLIENT_OTHER.to_string(), "--ttl", "1h"],
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let journal = proxy.state_dir().join("xdp-admissions");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(
        text.contains(&format!("m {CLIENT_OTHER} ")),
        "the hand-made admission is journaled: {text}"
    );
    let forgotten: String = text
        .lines()
        .filter(|line| !line.starts_with(&format!("m {CLIENT_OTHER} ")))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&journal, forgotten).unwrap();
    topology.client.enter();
    expect_connects(
        CLIENT_OTHER.into(),
        protected,
        "admitted in the map while sekisho is down",
    )
    .await;
    topology.server.enter();
    proxy.start_again().await;
    let logs = proxy.logs();
    let reconciled = logs
        .lines()
        .find(|line| line.contains("admissions reconciled with the sessions that hold them"))
        .unwrap_or_else(|| panic!("no reconciliation in {logs}"));
    // The fields are coloured: look for the values after their names.
    assert!(
        reconciled.contains("kept") && reconciled.contains("pruned"),
        "{reconciled}"
    );
    topology.client.enter();
    expect_dropped(
        CLIENT_OTHER.into(),
        protected,
        "an admission nothing holds, pruned at start",
    )
    .await;
    expect_connects(CLIENT.into(), protected, "alice, kept").await;

    // Signing out first thing after a restart withdraws her address: the journal told the new
    // process which session holds it.
    let out = alice
        .browse(&format!("{}/.sekisho/logout", proxy.base()))
        .await;
    assert_eq!(out.status(), 302);
    expect_dropped(CLIENT.into(), protected, "alice after signing out").await;
    drop(service);
}

/// `sekisho xdp ARGS -c CONFIG`, run in the calling thread's network namespace.
fn xdp_command(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(sekisho_tests::sekisho_binary())
        .arg("xdp")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("running sekisho xdp")
}

#[tokio::test]
async fn the_xdp_command_reads_and_changes_a_running_guard() {
    // Bound in this order so that sekisho goes first and the namespaces last.
    let Guarded {
        topology,
        pins: _pins,
        service,
        protected,
        udp: _udp,
        _echo,
        idp,
        proxy,
    } = guarded("").await;
    let alice = Agent::new();
    sign_in(&topology, &alice, &proxy.base(), &idp, "alice").await;

    topology.server.enter();
    let status = xdp_command(&proxy.config_path, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        text.contains(&format!("{}: attached", topology.interface)),
        "{text}"
    );
    let mut tcp = [
        (protected.port(), format!("{}/tcp", protected.port())),
        (
            proxy.http.port(),
            format!(
                "{}/tcp (open; connection attempts rate-limited)",
                proxy.http.port()
            ),
        ),
    ];
    tcp.sort();
    let ports = format!(
        "ports: {}, {}, {}/udp",
        tcp[0].1,
        tcp[1].1,
        _udp.local_addr().unwrap().port()
    );
    assert!(text.contains(&ports), "{ports} in {text}");
    assert!(
        text.contains(&format!("trusted: [{CLIENT_TRUSTED}/32]")),
        "{text}"
    );
    assert!(text.contains("admitted sources: 1"), "{text}");
    assert!(text.contains(&format!("    {CLIENT}  ")), "{text}");

    let revoked = xdp_command(&proxy.config_path, &["revoke", &CLIENT.to_string()]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let allowed = xdp_command(
        &proxy.config_path,
        &["allow", &CLIENT_OTHER.to_string(), "--ttl", "10m"],
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let bad = xdp_command(
        &proxy.config_path,
        &["allow", &CLIENT_OTHER.to_string(), "--ttl", "10"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("has no unit"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    topology.client.enter();
    expect_dropped(
        CLIENT.into(),
        protected,
        "alice's address withdrawn by hand",
    )
    .await;
    expect_connects(
        CLIENT_OTHER.into(),
        protected,
        "an address admitted by hand",
    )
    .await;
    drop(service);
}

#[tokio::test]
async fn repeated_failures_ban_a_source_even_from_sekishos_own_port_until_lifted() {
    // Bound in this order so that sekisho goes first and the namespaces last.
    let Guarded {
        topology,
        pins: _pins,
        service,
        protected,
        udp: _udp,
        _echo,
        idp: _idp,
        proxy,
    } = guarded("  auto_ban: {failures: 3, window: 1m, ban: 1h}\n").await;
    let base = proxy.base();

    topology.client.enter();
    // Three rejected credentials from one address: the third one bans it.
    for attempt in 1..=3 {
        let response = reqwest::Client::new()
            .get(format!("{base}/hello"))
            .bearer_auth(format!("forged.token.{attempt}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    expect_dropped(
        CLIENT.into(),
        proxy.http,
        "the banned source, on sekisho's own port",
    )
    .await;
    expect_dropped(
        CLIENT.into(),
        protected,
        "the banned source, on the protected port",
    )
    .await;
    expect_connects(CLIENT_OTHER.into(), proxy.http, "another source").await;
    expect_connects(CLIENT_TRUSTED.into(), proxy.http, "a trusted source").await;

    topology.server.enter();
    let status = xdp_command(&proxy.config_path, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("banned sources: 1"), "{text}");
    assert!(text.contains(&format!("    {CLIENT}  ")), "{text}");
    let audit = proxy.audit_dir();
    sekisho_tests::eventually("the ban's record", || {
        let audit = audit.clone();
        async move {
            sekisho_tests::audit_records(&audit).iter().any(|r| {
                r["unmapped"]["event"] == "source_banned"
                    && r["src_endpoint"]["ip"] == CLIENT.to_string()
            })
        }
    })
    .await;
    let trusted = xdp_command(&proxy.config_path, &["ban", &CLIENT_TRUSTED.to_string()]);
    assert_eq!(trusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&trusted.stderr).contains("trusted addresses are never banned"),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let unban = xdp_command(&proxy.config_path, &["unban", &CLIENT.to_string()]);
    assert!(
        unban.status.success(),
        "{}",
        String::from_utf8_lossy(&unban.stderr)
    );

    topology.client.enter();
    expect_connects(CLIENT.into(), proxy.http, "after the ban was lifted").await;
    drop(service);
}

#[tokio::test]
async fn connection_attempts_are_rate_limited_and_drops_are_summarised_in_the_audit_log() {
    // Bound in this order so that sekisho goes first and the namespaces last.
    let Guarded {
        topology,
        pins: _pins,
        service,
        protected,
        udp,
        _echo,
        idp: _idp,
        proxy,
    } = guarded("  syn_rate_limit: {per_second: 1, burst: 5}\n  drop_summary: 2s\n").await;

    topology.client.enter();
    // Five connections at once are the burst; the sixth right after is dropped at the NIC.
    for attempt in 1..=5 {
        expect_connects(
            CLIENT_OTHER.into(),
            proxy.http,
            &format!("attempt {attempt}"),
        )
        .await;
    }
    expect_dropped(CLIENT_OTHER.into(), proxy.http, "the sixth attempt at once").await;
    expect_connects(
        CLIENT_TRUSTED.into(),
        proxy.http,
        "a trusted source is not limited",
    )
    .await;
    for _ in 0..6 {
        expect_connects(CLIENT_TRUSTED.into(), proxy.http, "trusted, again").await;
    }
    expect_dropped(CLIENT.into(), protected, "a stranger on the protected port").await;
    assert!(!datagram_arrives(CLIENT.into(), &udp, DROPPED_WITHIN));

    // The drops become Network Activity records once their two-second window is over.
    let audit = proxy.audit_dir();
    let udp_port = udp.local_addr().unwrap().port();
    let found = |records: &[serde_json::Value], source: std::net::Ipv4Addr, reason: &str| {
        records.iter().any(|r| {
            r["class_uid"] == 4001
                && r["activity_name"] == "Refuse"
                && r["src_endpoint"]["ip"] == source.to_string()
                && r["unmapped"]["reasons"][reason]
                    .as_u64()
                    .is_some_and(|n| n >= 1)
        })
    };
    // The stranger's TCP and UDP drops may fall in different windows: wait for both ports.
    let stranger_ports = |records: &[serde_json::Value]| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r["class_uid"] == 4001 && r["src_endpoint"]["ip"] == CLIENT.to_string())
            .flat_map(|r| {
                r["unmapped"]["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p.as_u64())
            .collect()
    };
    sekisho_tests::eventually("the drop records", || {
        let audit = audit.clone();
        async move {
            let records = sekisho_tests::audit_records(&audit);
            let ports = stranger_ports(&records);
            found(&records, CLIENT_OTHER, "syn_rate_limited")
                && found(&records, CLIENT, "not_admitted")
                && ports.contains(&u64::from(protected.port()))
                && ports.contains(&u64::from(udp_port))
        }
    })
    .await;
    let records = sekisho_tests::audit_records(&audit);
    let stranger: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["class_uid"] == 4001 && r["src_endpoint"]["ip"] == CLIENT.to_string())
        .collect();
    assert!(
        stranger
            .iter()
            .all(|r| r["dst_endpoint"]["interface_name"] == topology.interface.as_str()),
        "{stranger:#?}"
    );
    assert!(
        !records.iter().any(
            |r| r["class_uid"] == 4001 && r["src_endpoint"]["ip"] == CLIENT_TRUSTED.to_string()
        ),
        "nothing from the trusted source was dropped"
    );
    let (_, report) = sekisho_tests::audit_verify(&audit);
    assert!(report.contains("chain intact"), "{report}");

    topology.server.enter();
    let stats = xdp_command(&proxy.config_path, &["stats"]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let count = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(count("syn_rate_limited") >= 1, "{text}");
    assert!(count("not_admitted") >= 2, "{text}");
    assert_eq!(count("banned"), 0, "{text}");
    drop(service);
}

#[tokio::test]
async fn sessions_and_failures_at_another_instance_open_close_and_ban_at_this_guard_through_redis()
{
    // Two instances share a real Redis: this one guards the interface, the other (no guard,
    // its own port) is where the client signs in, signs out and fails.
    let redis = sekisho_tests::redis::Redis::start().await;
    let topology = Topology::new();
    let pins = Bpffs::mount();
    topology.server.enter();
    let service = std::net::TcpListener::bind((SERVER, 0)).unwrap();
    let protected = service.local_addr().unwrap();
    let shared = redis.shared_state_yaml("");
    let (idp, echo, guard) = stack(Default::default(), "ES256", |o| {
        options_with(
            o,
            &topology,
            &pins,
            &protected.port().to_string(),
            "  auto_ban: {failures: 3, window: 1m, ban: 1h}\n",
        );
        o.extra_yaml.push_str(&shared);
    })
    .await;
    let mut options = ProxyOptions::new(&idp.issuer);
    options.http_listen = format!("{SERVER}:0");
    options.routes_yaml =
        format!("  - id: app\n    from: http://{SERVER}\n    to: http://{{echo}}\n");
    options.extra_yaml = shared.clone();
    options.cookie_key = Some(guard.cookie_key.clone().try_into().unwrap());
    let other = Proxy::start(&options, echo.addr).await;
    let mut origins = guard.origins();
    origins.extend(other.origins());
    idp.register_client("sekisho", sekisho_tests::CLIENT_SECRET, &origins, "ES256")
        .await;
    for proxy in [&guard, &other] {
        sekisho_tests::eventually("both instances connected to Redis", || async {
            proxy.logs().contains("shared state: connected to Redis")
        })
        .await;
    }

    topology.client.enter();
    expect_dropped(CLIENT.into(), protected, "before any sign-in").await;
    let alice = Agent::new();
    sign_in(&topology, &alice, &other.base(), &idp, "alice").await;
    topology.client.enter();
    expect_connects(
        CLIENT.into(),
        protected,
        "alice signed in at the other instance from this address",
    )
    .await;
    let out = alice
        .browse(&format!("{}/.sekisho/logout", other.base()))
        .await;
    assert_eq!(out.status(), 302);
    sekisho_tests::eventually(
        "the guard withdraws the address signed out elsewhere",
        || async {
            connect(CLIENT.into(), protected, DROPPED_WITHIN)
                .await
                .is_err()
        },
    )
    .await;

    // Failures at the other instance count towards this guard's ban.
    let from_other = reqwest::Client::builder()
        .local_address(IpAddr::from(CLIENT_OTHER))
        .build()
        .unwrap();
    for attempt in 1..=3 {
        let response = from_other
            .get(format!("{}/hello", other.base()))
            .bearer_auth(format!("forged.token.{attempt}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    sekisho_tests::eventually(
        "the guard bans the source that failed elsewhere",
        || async {
            connect(CLIENT_OTHER.into(), guard.http, DROPPED_WITHIN)
                .await
                .is_err()
        },
    )
    .await;
    expect_dropped(CLIENT_OTHER.into(), protected, "the banned source").await;
    expect_connects(CLIENT.into(), guard.http, "another source").await;
    drop(service);
}
