//! Operating sekisho end to end: `/healthz` and `/readyz` on the admin listener (ready with the
//! real provider; not ready, naming the check, with the provider unreachable or the audit disk
//! full).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::sync::{Arc, Mutex};

use sekisho_tests::tmpfs::Tmpfs;
use sekisho_tests::{IdpOptions, ProxyOptions, eventually, stack};
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
