//! The `xdp` section: what each key yields, and every refusal at its line, column and field.

use std::time::Duration;

use crate::model::{PortProtocol, ProtectedPort, XdpInterface, XdpMode};
use crate::parse::tests::{BASE, assert_has, assert_only, parse_err, parse_ok, pos_of};

fn with_xdp(section: &str) -> String {
    format!("{BASE}xdp:\n{section}")
}

#[test]
fn absent_means_no_guard() {
    assert_eq!(parse_ok(BASE).xdp, None);
}

#[test]
fn every_key_is_parsed_and_defaults_are_safe() {
    let config = parse_ok(&with_xdp(
        "  interfaces: [eth0, {name: veth-srv, mode: generic}, {name: ens3, mode: native}]
  protected_ports: [22, {port: 5432, protocol: tcp}, 51820/udp, {port: 53, protocol: udp}, 8080/udp]
  trusted: [10.0.0.0/8, \"2001:db8::/32\"]
",
    ));
    let xdp = config.xdp.expect("xdp");
    assert_eq!(
        xdp.interfaces,
        [
            XdpInterface {
                name: "eth0".into(),
                mode: XdpMode::Auto
            },
            XdpInterface {
                name: "veth-srv".into(),
                mode: XdpMode::Generic
            },
            XdpInterface {
                name: "ens3".into(),
                mode: XdpMode::Native
            },
        ]
    );
    let ports: Vec<String> = xdp
        .protected_ports
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        ports,
        ["22/tcp", "5432/tcp", "51820/udp", "53/udp", "8080/udp"],
        "UDP 8080 is not sekisho's TCP listener"
    );
    assert_eq!(
        xdp.protected_ports.first(),
        Some(&ProtectedPort {
            port: 22,
            protocol: PortProtocol::Tcp
        })
    );
    let limit = xdp.syn_rate_limit.expect("on by default");
    assert_eq!((limit.per_second, limit.burst), (100, 200));
    let trusted: Vec<String> = xdp.trusted.iter().map(ToString::to_string).collect();
    assert_eq!(trusted, ["10.0.0.0/8", "2001:db8::/32"]);
    assert!(
        xdp.required,
        "a configured guard is required unless said otherwise"
    );
    assert_eq!(xdp.session_grace, Duration::from_secs(60));
    assert_eq!(xdp.pin_path, std::path::Path::new("/sys/fs/bpf/sekisho"));
    assert_eq!(xdp.auto_ban, None, "off unless configured");
    assert_eq!(xdp.drop_summary, Duration::from_secs(60));

    let relaxed = parse_ok(&with_xdp(
        "  interfaces: [eth0]\n  protected_ports: [22]\n  required: false\n  session_grace: 5m\n",
    ))
    .xdp
    .expect("xdp");
    assert!(!relaxed.required);
    let banning = parse_ok(&with_xdp(
        "  interfaces: [eth0]\n  protected_ports: [22]\n  auto_ban: {failures: 3}\n",
    ))
    .xdp
    .expect("xdp")
    .auto_ban
    .expect("auto_ban");
    assert_eq!(
        (banning.failures, banning.window, banning.ban),
        (3, Duration::from_secs(60), Duration::from_secs(900))
    );
    assert_eq!(relaxed.session_grace, Duration::from_secs(300));

    let limited = |section: &str| {
        parse_ok(&with_xdp(&format!(
            "  interfaces: [eth0]\n  protected_ports: [22]\n{section}"
        )))
        .xdp
        .expect("xdp")
        .syn_rate_limit
    };
    assert_eq!(limited("  syn_rate_limit: off\n"), None);
    let limit = limited("  syn_rate_limit: {per_second: 5}\n").expect("limit");
    assert_eq!((limit.per_second, limit.burst), (5, 10));
    let limit = limited("  syn_rate_limit: {per_second: 5, burst: 1}\n").expect("limit");
    assert_eq!((limit.per_second, limit.burst), (5, 1));
}

#[test]
fn bad_values_are_refused_at_their_position() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "  interfaces: [eth0/1]\n  protected_ports: [22]\n",
            "eth0/1",
            "xdp.interfaces[0]",
            "`eth0/1` is not an interface name",
        ),
        (
            "  interfaces: [averyveryverylongname]\n  protected_ports: [22]\n",
            "averyveryverylongname",
            "xdp.interfaces[0]",
            "1 to 15 characters",
        ),
        (
            "  interfaces: [{name: eth0, mode: turbo}]\n  protected_ports: [22]\n",
            "turbo",
            "xdp.interfaces[0].mode",
            "`turbo` is not an XDP mode",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [00]\n",
            "00]",
            "xdp.protected_ports[0]",
            "`00` is not a port",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [70000]\n",
            "70000",
            "xdp.protected_ports[0]",
            "`70000` is not a port",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [{port: 53, protocol: sctp}]\n",
            "sctp",
            "xdp.protected_ports[0].protocol",
            "`sctp` is not a protocol: write tcp or udp",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [53/quic]\n",
            "53/quic",
            "xdp.protected_ports[0]",
            "`quic` is not a protocol",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [x/udp]\n",
            "x/udp",
            "xdp.protected_ports[0]",
            "`x/udp` is not a port",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  drop_summary: 2h\n",
            "2h",
            "xdp.drop_summary",
            "from 1s to 1h",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  syn_rate_limit: {per_second: 0}\n",
            "0}",
            "xdp.syn_rate_limit.per_second",
            "`0` is not a rate",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  syn_rate_limit: {burst: many}\n",
            "many",
            "xdp.syn_rate_limit.burst",
            "`many` is not a rate",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  syn_rate_limit: {per_minute: 5}\n",
            "per_minute",
            "xdp.syn_rate_limit.per_minute",
            "unknown field `per_minute`",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  trusted: [10.0.0.0/33]\n",
            "10.0.0.0/33",
            "xdp.trusted[0]",
            "10.0.0.0/33",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  trusted: [10.1.2.3/8]\n",
            "10.1.2.3/8",
            "xdp.trusted[0]",
            "has host bits set",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  auto_ban: {failures: 0}\n",
            "0}",
            "xdp.auto_ban.failures",
            "`0` is not a count of failures",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  pin_path: bpf/sekisho\n",
            "bpf/sekisho",
            "xdp.pin_path",
            "not an absolute path",
        ),
        (
            "  interfaces: [eth0]\n  protected_ports: [22]\n  session_grace: 60\n",
            "60\n",
            "xdp.session_grace",
            "has no unit",
        ),
    ];
    for (section, at, field, message) in cases {
        let source = with_xdp(section);
        let errors = parse_err(&source);
        assert_only(&errors, pos_of(&source, at), field, message);
    }
}

#[test]
fn duplicates_missing_keys_and_own_listeners_are_refused() {
    let source =
        with_xdp("  interfaces: [eth0, eth0]\n  protected_ports: [22, 22, 8080, 22/udp]\n");
    let errors = parse_err(&source);
    let interfaces = pos_of(&source, "[eth0, eth0]");
    assert_has(
        &errors,
        interfaces,
        "xdp.interfaces",
        "interface `eth0` is listed twice",
    );
    let ports = pos_of(&source, "[22, 22, 8080, 22/udp]");
    assert_has(
        &errors,
        ports,
        "xdp.protected_ports",
        "port 22/tcp is listed twice",
    );
    assert_has(
        &errors,
        ports,
        "xdp.protected_ports",
        "port 8080 is one of sekisho's own listeners",
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");

    let source = with_xdp("  interfaces: []\n");
    let errors = parse_err(&source);
    assert!(
        errors.iter().any(|e| e.field == "xdp.protected_ports"),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.field == "xdp.interfaces"),
        "{errors:#?}"
    );
}
