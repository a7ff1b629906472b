//! Operating sekisho end to end: `/healthz` and `/readyz` on the admin listener (ready with the
//! real provider; not ready, naming the check, with the provider unreachable or the audit disk
//! full), and TLS certificates reloaded from their files without a restart — a bad new one
//! refused, and no request failing across reloads under load.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sekisho_tests::pki::{Issued, TestCa};
use sekisho_tests::tmpfs::Tmpfs;
use sekisho_tests::{IdpOptions, ProxyOptions, audit_records, eventually, stack};
use serde_json::Value;

const ADMIN: &str = "admin:\n  listen: 127.0.0.1:0\n  policy: admins\npolicies:\n  admins:\n    allow:\n      and:\n        - groups: {has: admins}\n";

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn check<'a>(readiness: &'a Value, name: &str) -> &'a Value {
    readiness["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {readiness}"))
}

#[tokio::test]
async fn health_and_readiness_with_the_real_provider_need_no_login() {
    let (_idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = ADMIN.into();
    })
    .await;
    let admin = format!("http://{}", proxy.admin.unwrap());
    assert_eq!(get(&format!("{admin}/healthz")).await, (200, "ok\n".into()));
    let (status, body) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], true);
    assert_eq!(check(&readiness, "provider")["status"], "ok");
    assert_eq!(check(&readiness, "audit")["status"], "ok");
    assert_eq!(check(&readiness, "xdp_guard")["status"], "not_configured");
    assert_eq!(check(&readiness, "attribution")["status"], "not_configured");
    assert_eq!(
        check(&readiness, "shared_state")["status"],
        "not_configured"
    );
    let (_, metrics) = get(&format!("{admin}/metrics")).await;
    assert!(metrics.contains("\nsekisho_ready 1\n"), "{metrics}");
    // The public listener does not serve them: they are the admin listener's.
    let (status, _) = get(&format!("{}/readyz", proxy.base())).await;
    assert_ne!(status, 200);
}

/// The service's process runs with transparent huge pages off: with them, the kernel backs the
/// heap 2 MiB at a time and every connection's untouched buffer pages are resident (the idle
/// HTTP/2 figure in tests/bench went from 40.3 to 24.3 KiB per connection without them).
/// `MIMALLOC_ALLOW_THP` in the environment decides instead when set: `1` leaves them on, `0`
/// turns them off (through the allocator).
#[tokio::test]
async fn the_service_runs_with_transparent_huge_pages_off_unless_the_environment_says() {
    assert_eq!(
        thp_enabled(&std::fs::read_to_string("/proc/self/status").unwrap()),
        "1",
        "the test process itself"
    );
    for (env, expected) in [(None, "0"), (Some("1"), "1"), (Some("0"), "0")] {
        let (_idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
            o.env
                .extend(env.map(|v| ("MIMALLOC_ALLOW_THP".to_owned(), v.to_owned())));
        })
        .await;
        let pid = proxy.pid().expect("the proxy's pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert_eq!(
            thp_enabled(&status),
            expected,
            "sekisho with MIMALLOC_ALLOW_THP={env:?}"
        );
    }
}

/// The `THP_enabled:` value of a `/proc/PID/status` text.
fn thp_enabled(status: &str) -> &str {
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        panic!(
            "this kernel's /proc/PID/status has no THP_enabled line; the test cannot tell:\n{status}"
        );
    };
    line.split_whitespace().nth(1).unwrap_or_default()
}

#[tokio::test]
async fn an_unreachable_provider_makes_the_instance_unready_naming_the_check() {
    let echo = sekisho_tests::echo::Echo::start().await;
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut options = ProxyOptions::new(&format!("http://{closed}"));
    options.extra_yaml = ADMIN.into();
    let proxy = sekisho_tests::Proxy::start(&options, echo.addr).await;
    let admin = format!("http://{}", proxy.admin.unwrap());
    assert_eq!(
        get(&format!("{admin}/healthz")).await.0,
        200,
        "alive all the same"
    );
    let (status, body) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], false);
    let provider = check(&readiness, "provider");
    assert_eq!(provider["status"], "failing");
    assert!(
        provider["detail"].as_str().unwrap().contains("discovery"),
        "{provider}"
    );
    assert_eq!(check(&readiness, "audit")["status"], "ok");
    let (_, metrics) = get(&format!("{admin}/metrics")).await;
    assert!(metrics.contains("\nsekisho_ready 0\n"), "{metrics}");
    assert!(
        metrics.contains("sekisho_readiness_check_failing{check=\"provider\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_audit_disk_makes_the_instance_unready_until_space_returns() {
    let tmpfs = Tmpfs::mount("256k");
    let audit = tmpfs.0.join("audit");
    let yaml = format!(
        "{ADMIN}audit:\n  dir: {}\n  durability: strict\n  on_failure: deny\n",
        audit.display()
    );
    let (idp, _echo, proxy) =
        stack(IdpOptions::default(), "RS256", move |o| o.extra_yaml = yaml).await;
    let readyz = format!("http://{}/readyz", proxy.admin.unwrap());
    let healthz = format!("http://{}/healthz", proxy.admin.unwrap());
    assert_eq!(get(&readyz).await.0, 200);
    let token = idp.bearer("alice").await;
    let url = format!("{}/x", proxy.base());

    let filler = tmpfs.fill();
    // Probes write no records; a request's record finds the disk full.
    let last = Arc::new(Mutex::new(String::new()));
    eventually("/readyz says the audit log cannot be written", || {
        let (readyz, last, url, token) = (readyz.clone(), last.clone(), url.clone(), token.clone());
        async move {
            let _ = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await;
            let (status, body) = get(&readyz).await;
            *last.lock().unwrap() = body;
            status == 503
        }
    })
    .await;
    let readiness: Value = serde_json::from_str(&last.lock().unwrap()).unwrap();
    let check = check(&readiness, "audit");
    assert_eq!(check["status"], "failing", "{readiness}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be written"),
        "{check}"
    );
    assert_eq!(
        readiness["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "failing")
            .count(),
        1,
        "only the audit check fails: {readiness}"
    );
    // Alive all the same, while every other request is refused (on_failure: deny).
    assert_eq!(get(&healthz).await, (200, "ok\n".into()));
    assert_eq!(
        reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    std::fs::remove_file(filler).unwrap();
    eventually("/readyz is ready again", || {
        let readyz = readyz.clone();
        async move { get(&readyz).await.0 == 200 }
    })
    .await;
}

/// Writes `issued`'s certificate and key over the proxy's `tls.crt` and `tls.key`.
fn install(dir: &Path, issued: &Issued) {
    sekisho_tests::write_atomically(
        &dir.join("tls.crt"),
        &std::fs::read_to_string(&issued.cert).unwrap(),
    );
    sekisho_tests::write_atomically(
        &dir.join("tls.key"),
        &std::fs::read_to_string(&issued.key).unwrap(),
    );
}

/// Whether a new connection's handshake presents a certificate `ca` issued (the client trusts
/// only `ca`, and pools nothing).
async fn serves_certificate_of(url: &str, ca: &TestCa) -> bool {
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca.cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    client.get(url).send().await.is_ok()
}

fn reload_records(dir: &Path) -> Vec<Value> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r["unmapped"]["event"] == "reload")
        .collect()
}

const TLS_ROUTES: &str = "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n  - id: app-tls\n    from: https://127.0.0.1\n    to: http://{echo}\n";

#[tokio::test]
async fn certificates_reload_from_their_files_and_a_bad_one_is_refused() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.tls = true;
        o.routes_yaml = TLS_ROUTES.into();
    })
    .await;
    let dir = proxy.config_path.parent().unwrap().to_owned();
    let token = idp.bearer("alice").await;
    let url = format!("{}/x", proxy.tls_base().unwrap());
    let (ca_a, ca_b) = (TestCa::new("ca a"), TestCa::new("ca b"));
    let a = ca_a.server("a", "IP:127.0.0.1,DNS:localhost");
    let b = ca_b.server("b", "IP:127.0.0.1,DNS:localhost");
    assert!(!serves_certificate_of(&url, &ca_a).await);

    install(&dir, &a);
    eventually("new handshakes present certificate A", || {
        serves_certificate_of(&url, &ca_a)
    })
    .await;
    // A connection made under A keeps working across the next swap.
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca_a.cert).unwrap()).unwrap();
    let kept = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .build()
        .unwrap();
    assert_eq!(
        kept.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    install(&dir, &b);
    eventually("new handshakes present certificate B", || {
        serves_certificate_of(&url, &ca_b)
    })
    .await;
    assert_eq!(
        kept.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the established connection is untouched"
    );

    // Not a certificate at all: refused, B stays.
    std::fs::write(dir.join("tls.crt"), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    eventually("the broken certificate's refusal is recorded", || {
        let done = reload_records(&proxy.audit_dir())
            .iter()
            .any(|r| r["status_id"] == 2);
        async move { done }
    })
    .await;
    assert!(serves_certificate_of(&url, &ca_b).await, "B still served");
    // A's certificate with B's key: the key does not belong to it.
    std::fs::copy(&a.cert, dir.join("tls.crt")).unwrap();
    eventually("the mismatched key's refusal is recorded", || {
        let done = reload_records(&proxy.audit_dir()).iter().any(|r| {
            r["status_id"] == 2
                && r["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("does not belong")
        });
        async move { done }
    })
    .await;
    assert!(serves_certificate_of(&url, &ca_b).await, "B still served");
    assert!(!serves_certificate_of(&url, &ca_a).await);

    let records = reload_records(&proxy.audit_dir());
    let applied = records.iter().filter(|r| r["status_id"] == 1).count();
    assert!(applied >= 2, "A and B applied: {records:?}");
    let refused: Vec<&Value> = records.iter().filter(|r| r["status_id"] == 2).collect();
    assert!(
        refused.iter().all(|r| r["message"]
            .as_str()
            .unwrap()
            .contains("TLS certificates not reloaded, the running ones stay in use")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["message"].as_str().unwrap().contains("tls.crt")),
        "the refusal names the file: {refused:?}"
    );
    assert!(proxy.logs().contains("TLS certificates not reloaded"));
}

#[tokio::test]
async fn no_request_fails_across_certificate_reloads_under_load() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.tls = true;
        o.routes_yaml = TLS_ROUTES.into();
    })
    .await;
    let dir = proxy.config_path.parent().unwrap().to_owned();
    let token = idp.bearer("alice").await;
    let url = format!("{}/x", proxy.tls_base().unwrap());
    let (ca_a, ca_b) = (TestCa::new("ca a"), TestCa::new("ca b"));
    let a = ca_a.server("a", "IP:127.0.0.1");
    let b = ca_b.server("b", "IP:127.0.0.1");
    install(&dir, &a);
    eventually("certificate A served", || {
        serves_certificate_of(&url, &ca_a)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
        for ca in [&ca_a, &ca_b] {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca.cert).unwrap()).unwrap(),
            );
        }
        // Half the workers handshake for every request, half keep their connections.
        if worker % 2 == 0 {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        let (stop, ok, failed, url, token) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            url.clone(),
            token.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = match client.get(&url).bearer_auth(&token).send().await {
                    Ok(response) if response.status() == 200 => response
                        .bytes()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Ok(response) => Err(format!("status {}", response.status())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed request: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // Fifty more successful requests after each step: the load goes on through every swap.
    let fifty_more = |what: &'static str| {
        let ok = ok.clone();
        async move {
            let before = ok.load(Ordering::Relaxed);
            eventually(what, || {
                let ok = ok.clone();
                async move { ok.load(Ordering::Relaxed) > before + 50 }
            })
            .await;
        }
    };
    fifty_more("load is running").await;
    install(&dir, &b);
    eventually("certificate B served under load", || {
        serves_certificate_of(&url, &ca_b)
    })
    .await;
    fifty_more("requests under B").await;
    install(&dir, &a);
    eventually("certificate A served again under load", || {
        serves_certificate_of(&url, &ca_a)
    })
    .await;
    fifty_more("requests under A again").await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests across two certificate reloads: {ok} succeeded, {failed} failed");
    assert!(ok > 150, "{ok} requests");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    let refused = reload_records(&proxy.audit_dir())
        .into_iter()
        .filter(|r| r["status_id"] == 2)
        .count();
    assert_eq!(refused, 0, "no reload was refused");
}

/// Runs `sekisho check ARGS…` from the workspace; (success, stdout + stderr).
fn check_deployment(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(sekisho_tests::sekisho_binary())
        .arg("check")
        .args(args)
        .current_dir(sekisho_tests::workspace())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_shipped_systemd_unit_and_kubernetes_manifests_pass_sekisho_check() {
    let unit = "examples/systemd/sekisho.service";
    let drop_in = "examples/systemd/sekisho-kernel-layers.conf";
    let (ok, out) = check_deployment(&["-c", "examples/systemd/sekisho.yaml", "--systemd", unit]);
    assert!(ok && out.contains("ok (0 warnings)"), "{out}");
    for manifest in [
        "examples/kubernetes/sekisho.yaml",
        "examples/kubernetes/sekisho-node.yaml",
    ] {
        let (ok, out) = check_deployment(&["--kubernetes", manifest]);
        assert!(ok && out.contains("ok (0 warnings)"), "{manifest}: {out}");
    }

    // The same configuration with the NIC guard: the drop-in is needed, and enough.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sekisho.yaml");
    let example =
        std::fs::read_to_string(sekisho_tests::workspace().join("examples/systemd/sekisho.yaml"))
            .unwrap();
    std::fs::write(
        &config,
        format!("{example}xdp:\n  interfaces: [eth0]\n  protected_ports: [22]\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (ok, out) = check_deployment(&["-c", config, "--systemd", unit]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("examples/systemd/sekisho.service:")
            && out.contains("error: AmbientCapabilities lacks CAP_BPF"),
        "{out}"
    );
    let (ok, out) = check_deployment(&["-c", config, "--systemd", unit, drop_in]);
    assert!(ok && out.contains("ok (0 warnings)"), "{out}");
    // And the drop-in without kernel layers is warned about, not refused.
    let (ok, out) = check_deployment(&[
        "-c",
        "examples/systemd/sekisho.yaml",
        "--systemd",
        unit,
        drop_in,
    ]);
    assert!(ok && out.contains("warning: CAP_BPF is granted"), "{out}");
}
