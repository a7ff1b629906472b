use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::audit::writer::tests::tempdir;
use crate::idp::{IdpEvent, IdpFailure, IdpOutcome};

/// A configuration under `dir` with one plain-HTTP listener on a port the system picks and a
/// provider nobody answers for (discovery fails, which only logs a warning). Written to
/// `dir/sekisho.yaml`, which is returned with it.
fn config(dir: &Path) -> (Config, PathBuf) {
    let path = dir.join("sekisho.yaml");
    let source = format!(
        "\
state_dir: {state}
server:
  http_listen: 127.0.0.1:0
oidc:
  issuer: http://127.0.0.1:1/
  client_id: sekisho
  client_secret: s3cret
session:
  keys: [2FOEhCQXMabxHHEK0dJg1eNl9PPqZBYxzuksXrqGFIc=]
signing:
  key: {{env: SIGNING_KEY}}
routes:
  - id: app
    from: http://app.localhost
    to: http://127.0.0.1:9
",
        state = dir.join("state").display()
    );
    std::fs::write(&path, &source).unwrap();
    let pem = crate::assertion::generate_pem().unwrap();
    let config = sekisho_config::parse(&source, &path, &|name| {
        (name == "SIGNING_KEY").then(|| pem.clone())
    })
    .unwrap_or_else(|errors| panic!("{errors}"));
    (config, path)
}

/// Every record of the audit log in `dir`, oldest first (checkpoint lines included).
fn records(dir: &Path) -> Vec<Value> {
    crate::audit::writer::log_files(dir)
        .unwrap()
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(&file.path)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_app_serves_from_ready_to_shutdown_between_a_start_and_a_stop_record() {
    let tmp = tempdir();
    let (config, path) = config(tmp.path());
    let app = App::start(config, path).await.unwrap();
    let bound = app.addresses();
    let http = bound.http.unwrap();
    assert_ne!(http.port(), 0, "the bound port, not the configured 0");
    assert_eq!((bound.https, bound.admin), (None, None));
    let audit_dir = app.proxy().audit().dir().to_owned();

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(
        async {
            let _ = stop_rx.await;
        },
        move |addresses| {
            let _ = ready_tx.send(addresses);
        },
    ));
    assert_eq!(ready_rx.await.unwrap(), bound);

    // It serves: a host no route claims gets the proxy's answer.
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    stop_tx.send(()).unwrap();
    running.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the listener is closed after shutdown"
    );

    let records = records(&audit_dir);
    let lifecycle: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["class_uid"] == 6002)
        .map(|r| {
            (
                r["unmapped"]["event"].as_str().unwrap(),
                r["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lifecycle,
        [
            (
                "start",
                format!("sekisho started; listening on http://{http}").as_str()
            ),
            ("stop", "sekisho stopped"),
        ]
    );
    let requests = records.iter().filter(|r| r["class_uid"] == 4002).count();
    assert_eq!(requests, 1, "the request is recorded: {records:#?}");
}

/// Shutdown on the worker threads: a request in flight when the stop comes is answered before
/// the app returns, an idle keep-alive connection is closed, and nothing new is accepted.
#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_and_idle_connections_are_closed() {
    let tmp = tempdir();
    let (mut config, path) = config(tmp.path());
    // An upstream that answers only when told to.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (got_request_tx, got_request_rx) = tokio::sync::oneshot::channel::<()>();
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = upstream.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = got_request_tx.send(());
        let _ = answer_rx.await;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            .await
            .unwrap();
        // Keep the socket open until the proxy is done with it.
        let _ = socket.read(&mut buf).await;
    });
    let mut route = config.routes[0].clone();
    route.public = true;
    route.to = vec![url::Url::parse(&format!("http://{upstream_addr}")).unwrap()];
    config.routes = vec![route];
    let app = App::start(config, path).await.unwrap();
    let http = app.addresses().http.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(
        async {
            let _ = stop_rx.await;
        },
        |_| {},
    ));

    // An idle keep-alive connection (one request answered, then quiet).
    let mut idle = tokio::net::TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = idle.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 404"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );

    // A request the upstream holds.
    let mut slow = tokio::net::TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    got_request_rx.await.unwrap();

    stop_tx.send(()).unwrap();
    // The idle connection is closed (EOF) while the slow request is still open.
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "nothing more on the idle connection: {rest:?}"
    );
    assert!(
        !running.is_finished(),
        "shutdown waits for the request in flight"
    );
    answer_tx.send(()).unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("slow"), "{response}");
    running.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn a_listener_that_cannot_bind_stops_the_start_before_the_audit_log_is_opened() {
    let tmp = tempdir();
    let (mut config, path) = config(tmp.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.server.http_listen = Some(taken.local_addr().unwrap());
    let audit_dir = config.audit.dir.clone();
    match App::start(config, path).await {
        Err(AppError::Listen(ServerError::Bind { addr, .. })) => {
            assert_eq!(addr, taken.local_addr().unwrap())
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    assert!(!audit_dir.exists(), "the audit log was not touched");
}

#[test]
fn the_start_message_names_every_listener_as_a_url() {
    let addresses = Addresses {
        http: Some("127.0.0.1:8080".parse().unwrap()),
        https: Some("[::1]:8443".parse().unwrap()),
        admin: Some("127.0.0.1:9090".parse().unwrap()),
    };
    assert_eq!(
        records::started_message(addresses),
        "sekisho started; listening on http://127.0.0.1:8080, https://[::1]:8443, http://127.0.0.1:9090 (admin)"
    );
    let https_only = Addresses {
        http: None,
        admin: None,
        ..addresses
    };
    assert_eq!(
        records::started_message(https_only),
        "sekisho started; listening on https://[::1]:8443"
    );
}

#[test]
fn provider_sign_ins_become_authentication_records_of_the_shared_log() {
    let tmp = tempdir();
    let audit_config = crate::audit::writer::tests::config(tmp.path());
    let audit = Arc::new(AuditLog::open(&audit_config, tmp.path()).unwrap());
    let sink = records::provider_events(audit.clone(), "http://127.0.0.1:8080/idp", None);
    sink(IdpEvent {
        outcome: IdpOutcome::Failure(IdpFailure::WrongPassword),
        login: "alice".into(),
        username: Some("alice".into()),
        email: Some("alice@example.com".into()),
        source_ip: "198.51.100.1".parse().unwrap(),
        client_id: "sekisho".into(),
        time: 1_700_000_000,
    });
    sink(IdpEvent {
        outcome: IdpOutcome::Failure(IdpFailure::UnknownUser),
        login: "mallory".into(),
        username: None,
        email: None,
        source_ip: "203.0.113.9".parse().unwrap(),
        client_id: "sekisho".into(),
        time: 1_700_000_001,
    });
    audit.flush().unwrap();
    let auth: Vec<Value> = records(&audit_config.dir)
        .into_iter()
        .filter(|r| r["class_uid"] == 3002)
        .collect();
    assert_eq!(auth.len(), 2, "{auth:#?}");
    let (alice, mallory) = (&auth[0], &auth[1]);
    assert_eq!(alice["status_id"], 2);
    assert_eq!(alice["src_endpoint"]["ip"], "198.51.100.1");
    assert_eq!(alice["user"]["uid"], "alice");
    assert_eq!(alice["unmapped"]["unverified_email"], "alice@example.com");
    assert_eq!(alice["time"], 1_700_000_000_000_i64);
    assert!(
        alice["status_detail"]
            .as_str()
            .unwrap()
            .ends_with("wrong_password"),
        "{alice}"
    );
    assert!(mallory.get("user").is_none(), "{mallory}");
    assert_eq!(mallory["src_endpoint"]["ip"], "203.0.113.9");
}
