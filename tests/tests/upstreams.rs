//! Routes with several upstream targets, end to end: one of two upstreams stopped under load
//! fails no GET (each is retried on the survivor, and the stopped one is ejected), a POST with a
//! body is never replayed on another target, a request that reaches no target gets the 502 and
//! an audit record naming every target tried, and the active health check takes a target out
//! of rotation while it fails and back when it recovers; a reload replaces the probes (the old
//! ones stop).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sekisho_tests::echo::Echo;
use sekisho_tests::{IdpOptions, Proxy, audit_records, eventually, stack};

/// The admin listener, for `/metrics`.
const ADMIN: &str = "admin:\n  listen: 127.0.0.1:0\n  policy: admins\npolicies:\n  admins:\n    allow:\n      and:\n        - groups: {has: admins}\n";

/// A port nobody listens on while the socket lives: bound but not listening, so connecting to
/// it is refused and no other process is given it.
fn dead_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let port = socket.local_addr().expect("address").port();
    (socket, port)
}

/// One route `id` on the plain listener to `targets`, with `more` (route keys, each line
/// indented by four spaces).
fn route(id: &str, targets: &[String], more: &str) -> String {
    format!(
        "  - id: {id}\n    from: http://127.0.0.1\n    to: [{}]\n{more}",
        targets.join(", ")
    )
}

/// The value of the sample `name{labels}` in sekisho's `/metrics`.
async fn metric(proxy: &Proxy, sample: &str) -> Option<u64> {
    let admin = proxy.admin.expect("admin listener");
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// The `target` label of an echo upstream.
fn target(echo: &Echo) -> String {
    format!("http://{}", echo.addr)
}

/// GETs `url` with `token`: the status and the echo that answered (`x-echo-addr`).
async fn get(client: &reqwest::Client, url: &str, token: &str) -> (u16, Option<SocketAddr>) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let echo = response
        .headers()
        .get("x-echo-addr")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let _ = response.bytes().await;
    (status, echo)
}

#[tokio::test]
async fn no_get_fails_when_one_of_two_upstreams_stops_under_load() {
    let (a, b) = (Echo::start().await, Echo::start().await);
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml = route("pair", &[target(&a), target(&b)], "");
        o.extra_yaml = ADMIN.into();
    })
    .await;
    let token = idp.bearer("alice").await;
    let url = format!("{}/x", proxy.base());

    // Four workers, each a sequence of GETs; every answer is kept with whether the request
    // started after the stopped upstream was seen ejected.
    let stop = Arc::new(AtomicBool::new(false));
    let ejected = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(Mutex::new(Vec::<(bool, SocketAddr)>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ejected, ok, failures, served) = (
            stop.clone(),
            ejected.clone(),
            ok.clone(),
            failures.clone(),
            served.clone(),
        );
        let (url, token) = (url.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let after = ejected.load(Ordering::SeqCst);
                match get(&client, &url, &token).await {
                    (200, Some(echo)) => {
                        served.lock().unwrap().push((after, echo));
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    (status, echo) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {status} from {echo:?}")),
                }
            }
        }));
    }
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
    let before: Vec<SocketAddr> = served.lock().unwrap().iter().map(|(_, e)| *e).collect();
    assert!(
        before.contains(&a.addr) && before.contains(&b.addr),
        "both upstreams served before the stop"
    );

    b.stop();
    let ejections = format!(
        "sekisho_upstream_ejections_total{{route=\"pair\",target=\"{}\"}}",
        target(&b)
    );
    eventually("the stopped upstream is ejected", || {
        let ejections = ejections.clone();
        let proxy = &proxy;
        async move { metric(proxy, &ejections).await >= Some(1) }
    })
    .await;
    ejected.store(true, Ordering::SeqCst);
    let healthy = |echo: &Echo| {
        format!(
            "sekisho_upstream_target_healthy{{route=\"pair\",target=\"{}\"}}",
            target(echo)
        )
    };
    assert_eq!(metric(&proxy, &healthy(&b)).await, Some(0));
    assert_eq!(metric(&proxy, &healthy(&a)).await, Some(1));
    fifty_more("requests after the ejection").await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    let served = served.lock().unwrap().clone();
    eprintln!(
        "{} GETs answered, {} failed: {failures:?}",
        served.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed GETs: {failures:?}");
    let after: Vec<SocketAddr> = served
        .iter()
        .filter(|(after, _)| *after)
        .map(|(_, echo)| *echo)
        .collect();
    assert!(
        after.len() > 50,
        "{} requests after the ejection",
        after.len()
    );
    assert!(
        after.iter().all(|echo| *echo == a.addr),
        "only the survivor serves after the ejection"
    );
    let retries = metric(&proxy, "sekisho_upstream_retries_total{route=\"pair\"}").await;
    assert!(retries >= Some(1), "retries: {retries:?}");
}

#[tokio::test]
async fn a_post_with_a_body_is_not_replayed_and_unreachable_targets_get_a_502_naming_each() {
    let live = Echo::start().await;
    let ((_held, dead), (_held2, dead2)) = (dead_port(), dead_port());
    let dead_target = format!("http://127.0.0.1:{dead}");
    let routes = format!(
        "{}  - id: nowhere\n    from: http://127.0.0.1/nowhere\n    to: [http://127.0.0.1:{dead}, http://127.0.0.1:{dead2}]\n",
        // Never ejected: the dead target stays in rotation, every other request goes to it.
        route(
            "half",
            &[dead_target.clone(), target(&live)],
            "    upstream_health: {eject_after: 0}\n"
        )
    );
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml = routes;
        o.extra_yaml = ADMIN.into();
    })
    .await;
    let token = idp.bearer("alice").await;
    let client = reqwest::Client::new();
    let url = format!("{}/x", proxy.base());

    // Round-robin alternates between the two targets for consecutive requests: half of the
    // POSTs go to the dead one, and a POST with a body is not sent again elsewhere.
    const N: usize = 10;
    let mut statuses = Vec::new();
    for _ in 0..N {
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .body("payload")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 502).count();
    assert!(
        refused >= 1 && statuses.iter().all(|s| *s == 200 || *s == 502),
        "POSTs: {statuses:?}"
    );
    // The same alternation for GETs: each one meant for the dead target is retried.
    for _ in 0..N {
        let (status, echo) = get(&client, &url, &token).await;
        assert_eq!((status, echo), (200, Some(live.addr)));
    }
    let retries = metric(&proxy, "sekisho_upstream_retries_total{route=\"half\"}").await;
    assert!(retries >= Some(1), "retries: {retries:?}");
    assert_eq!(
        metric(
            &proxy,
            &format!("sekisho_upstream_target_healthy{{route=\"half\",target=\"{dead_target}\"}}")
        )
        .await,
        Some(1),
        "eject_after: 0 never ejects"
    );

    // No target reachable: the 502, and its record names both targets tried.
    let response = client
        .get(format!("{}/nowhere/x", proxy.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502, "{:?}", response.headers());
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert!(
        !body.contains(&dead.to_string()),
        "the page hides the targets: {body}"
    );
    let dir = proxy.audit_dir();
    let find = |dir: &std::path::Path, id: &str| {
        audit_records(dir)
            .into_iter()
            .find(|r| r["class_uid"] == 4002 && r["http_request"]["uid"] == id)
    };
    eventually("the 502 is recorded", || {
        let found = find(&dir, &id).is_some();
        async move { found }
    })
    .await;
    let record = find(&dir, &id).unwrap();
    assert_eq!(record["http_response"]["code"], 502);
    let detail = record["status_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("127.0.0.1:{dead}"))
            && detail.contains(&format!("127.0.0.1:{dead2}")),
        "the record names every target tried: {detail}"
    );
}

#[tokio::test]
async fn a_target_failing_its_health_check_is_skipped_until_it_recovers() {
    let (a, b) = (Echo::start().await, Echo::start().await);
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml = route(
            "checked",
            &[target(&a), target(&b)],
            "    health_check: {path: /.echo/health, interval: 1s, timeout: 1s}\n",
        );
        o.extra_yaml = ADMIN.into();
    })
    .await;
    let token = idp.bearer("alice").await;
    let client = reqwest::Client::new();
    let url = format!("{}/x", proxy.base());
    let healthy = format!(
        "sekisho_upstream_target_healthy{{route=\"checked\",target=\"{}\"}}",
        target(&b)
    );
    eventually("both targets are probed", || {
        let (a, b) = (&a, &b);
        async move { a.health_probes() > 0 && b.health_probes() > 0 }
    })
    .await;

    b.set_health(503);
    eventually("the failing target is out of rotation", || {
        let (proxy, healthy) = (&proxy, &healthy);
        async move { metric(proxy, healthy).await == Some(0) }
    })
    .await;
    let hits = b.hits();
    for _ in 0..20 {
        assert_eq!(get(&client, &url, &token).await, (200, Some(a.addr)));
    }
    assert_eq!(b.hits(), hits, "no request reached the failing target");

    b.set_health(200);
    eventually("the recovered target is back in rotation", || {
        let (proxy, healthy) = (&proxy, &healthy);
        async move { metric(proxy, healthy).await == Some(1) }
    })
    .await;
    eventually("the recovered target serves again", || {
        let (client, url, token, b) = (&client, &url, &token, &b);
        async move { get(client, url, token).await == (200, Some(b.addr)) }
    })
    .await;
}

#[tokio::test]
async fn a_reload_replaces_the_health_checks_and_the_old_ones_stop() {
    let (a, b) = (Echo::start().await, Echo::start().await);
    let (_idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml = route(
            "checked",
            &[target(&a), target(&b)],
            "    health_check: {path: /.echo/health/v1, interval: 1s}\n",
        );
    })
    .await;
    eventually("the first probes", || {
        let a = &a;
        async move { a.health_probes_of("/.echo/health/v1") > 0 }
    })
    .await;
    let original = std::fs::read_to_string(&proxy.config_path).unwrap();
    assert!(original.contains("/.echo/health/v1"));
    sekisho_tests::write_atomically(
        &proxy.config_path,
        &original.replace("/.echo/health/v1", "/.echo/health/v2"),
    );
    // Two probes of the new path are an interval apart: by the second, the reload that started
    // them has long swapped the routes, and the old probes are stopped.
    eventually("the new probes", || {
        let a = &a;
        async move { a.health_probes_of("/.echo/health/v2") >= 2 }
    })
    .await;
    let old = (
        a.health_probes_of("/.echo/health/v1"),
        b.health_probes_of("/.echo/health/v1"),
    );
    // Two more intervals of new probes, and not one more of the old.
    eventually("more new probes", || {
        let a = &a;
        async move { a.health_probes_of("/.echo/health/v2") >= 4 }
    })
    .await;
    assert_eq!(
        (
            a.health_probes_of("/.echo/health/v1"),
            b.health_probes_of("/.echo/health/v1")
        ),
        old,
        "the replaced route's probes stopped"
    );
    assert!(b.health_probes_of("/.echo/health/v2") >= 1);
}
