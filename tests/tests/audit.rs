//! The audit log end to end: what real requests, logins and denials leave in it, a kill -9
//! under strict-mode load, and a full disk (a small tmpfs the test mounts) with both
//! `on_failure` modes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sekisho_tests::tmpfs::Tmpfs;
use sekisho_tests::{
    Agent, Idp, IdpOptions, audit_records, audit_verify, no_redirect_client, regex_escape, stack,
};
use serde_json::{Value, json};

const POLICIES: &str =
    "policies:\n  admins-only:\n    allow:\n      and:\n        - groups: {has: admins}\n";
const ROUTES: &str = "  - id: admin\n    from: http://127.0.0.1/admin\n    to: http://{echo}\n    policy: admins-only\n\
                      \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n";

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

fn record_of<'a>(records: &'a [Value], id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["class_uid"] == 4002 && r["http_request"]["uid"] == id)
        .unwrap_or_else(|| panic!("no HTTP record for request {id}"))
}

#[tokio::test]
async fn decisions_logins_and_rejections_are_recorded_and_the_log_verifies() {
    let (idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml = ROUTES.into();
        o.extra_yaml = POLICIES.into();
    })
    .await;
    let base = proxy.base();

    // alice logs in through the browser flow and reaches /admin.
    let alice = Agent::new();
    let login = alice
        .login(
            &format!("{base}/admin/panel?token=s3cret"),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let allowed = alice.api(&login.landed).await;
    assert_eq!(allowed.status(), 200);
    let allowed_id = request_id(&allowed);

    // bob logs in and is denied.
    let bob = Agent::new();
    let login = bob
        .login(&format!("{base}/admin/panel"), &idp.issuer, "bob", "bob-pw")
        .await;
    let denied = bob.api(&login.landed).await;
    assert_eq!(denied.status(), 403);
    let denied_id = request_id(&denied);

    // A program without credentials, and one with a forged token.
    let anonymous = no_redirect_client()
        .get(format!("{base}/admin/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let anonymous_id = request_id(&anonymous);
    let token = idp.bearer("alice").await;
    // Change one signature character well inside the signature (the last one carries padding
    // bits).
    let at = token.len() - 10;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    let rejected = no_redirect_client()
        .get(format!("{base}/admin/x"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);

    let logout = alice.browse(&format!("{base}/.sekisho/logout")).await;
    assert!(logout.status().is_redirection());

    proxy.terminate().await;
    let dir = proxy.audit_dir();
    let (ok, report) = audit_verify(&dir);
    assert!(ok, "a cleanly stopped log verifies fully: {report}");
    let records = audit_records(&dir);

    let allow = record_of(&records, &allowed_id);
    assert_eq!(allow["unmapped"]["decision"], "allow");
    assert_eq!(allow["unmapped"]["route"], "admin");
    assert_eq!(allow["actor"]["user"]["email_addr"], "alice@example.com");
    assert!(
        allow["actor"]["user"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "admins")
    );
    assert_eq!(allow["actor"]["session"]["credential_uid"], "session");
    assert_eq!(allow["http_response"]["code"], 200);
    assert_eq!(allow["http_request"]["url"]["path"], "/admin/panel");
    assert_eq!(
        allow["http_request"]["url"]["query_string"], "[redacted]",
        "query strings are redacted by default"
    );
    assert!(
        allow["unmapped"]["rule"]
            .as_str()
            .unwrap()
            .contains("policies.admins-only"),
        "{allow}"
    );
    assert!(allow["dst_endpoint"]["port"].as_u64().is_some());
    assert_eq!(allow["src_endpoint"]["ip"], "127.0.0.1");

    let deny = record_of(&records, &denied_id);
    assert_eq!(deny["unmapped"]["decision"], "deny");
    // bob's provider says `email_verified: false`: the record is filed under his subject, the
    // address kept beside it, marked unverified, never as his email.
    assert!(deny["actor"]["user"].get("email_addr").is_none(), "{deny}");
    assert_eq!(deny["actor"]["user"]["uid"], "bob");
    assert_eq!(deny["unmapped"]["user"], "bob");
    assert_eq!(deny["unmapped"]["unverified_email"], "bob@example.com");
    assert_eq!(deny["http_response"]["code"], 403);
    assert_eq!(deny["action"], "Denied");
    assert!(
        deny["actor"]["authorizations"][0]["policy"]["desc"]
            .as_str()
            .unwrap()
            .contains("admins"),
        "{deny}"
    );

    let anon = record_of(&records, &anonymous_id);
    assert_eq!(anon["unmapped"]["decision"], "unauthenticated");
    assert!(anon.get("actor").is_none());

    let auth: Vec<&Value> = records.iter().filter(|r| r["class_uid"] == 3002).collect();
    let has = |event: &str, user: &str, success: bool| {
        auth.iter().any(|r| {
            r["unmapped"]["event"] == event
                && r["status_id"] == if success { 1 } else { 2 }
                && (user.is_empty()
                    || r["user"]["email_addr"] == user
                    || (r["user"].get("email_addr").is_none() && r["user"]["uid"] == user))
        })
    };
    assert!(has("login", "alice@example.com", true), "{auth:#?}");
    assert!(has("login", "bob", true));
    assert!(has("logout", "alice@example.com", true));
    assert!(has("credential_rejected", "", false));
    let lifecycle: Vec<&str> = records
        .iter()
        .filter(|r| r["class_uid"] == 6002)
        .map(|r| r["unmapped"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(lifecycle, ["start", "stop"]);

    // Nothing secret is in the log.
    let text = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!text.contains(&token[..40]), "bearer token in the log");
    assert!(!text.contains("s3cret"), "query string in the log");
    for cookie in alice.cookies().values() {
        assert!(!text.contains(cookie.as_str()), "session cookie in the log");
    }

    // `sekisho audit query` finds bob's denial and nothing else for that filter.
    let (json, _) = audit_query(
        &dir,
        &[
            "--user",
            "bob",
            "--decision",
            "deny",
            "--since",
            "1h",
            "--format",
            "json",
        ],
    );
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    assert_eq!(lines[0]["http_request"]["uid"], denied_id.as_str());
    let (table, summary) = audit_query(&dir, &["--route", "admin", "--decision", "allow"]);
    assert!(
        table.contains("alice@example.com") && table.contains("/admin/panel"),
        "{table}"
    );
    assert!(!table.contains("bob"), "{table}");
    assert!(summary.contains("matching records"), "{summary}");
    let (none, _) = audit_query(&dir, &["--user", "bob", "--until", "2000-01-01T00:00:00Z"]);
    assert!(none.is_empty(), "{none}");

    // Tampering is found: change alice's decision in place.
    let files = sekisho_tests::audit_files(&dir);
    let victim = files
        .iter()
        .find(|f| std::fs::read_to_string(f).unwrap().contains(&allowed_id))
        .unwrap();
    let original = std::fs::read_to_string(victim).unwrap();
    let tampered = original.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    assert_ne!(tampered, original);
    std::fs::write(victim, tampered).unwrap();
    let (ok, report) = audit_verify(&dir);
    assert!(!ok && report.contains("BROKEN"), "{report}");
}

/// Runs `sekisho audit query --dir DIR ARGS…`; (stdout, stderr). Panics unless it succeeds.
fn audit_query(dir: &Path, args: &[&str]) -> (String, String) {
    let output = std::process::Command::new(sekisho_tests::sekisho_binary())
        .args(["audit", "query", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "audit query {args:?}: {stderr}");
    (stdout, stderr)
}

/// Sends requests from `loops` concurrent tasks until stopped, collecting the request id of
/// every response that came back.
fn load(
    url: String,
    token: String,
    loops: usize,
    received: Arc<Mutex<Vec<(u16, String)>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..loops)
        .map(|_| {
            let (url, token, received, stop) =
                (url.clone(), token.clone(), received.clone(), stop.clone());
            tokio::spawn(async move {
                let client = no_redirect_client();
                while !*stop.borrow() {
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(response) => {
                            let id = request_id(&response);
                            let status = response.status().as_u16();
                            if response.bytes().await.is_ok() {
                                received.lock().unwrap().push((status, id));
                            }
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn kill_9_under_strict_load_leaves_a_verifiable_log_with_every_answered_request() {
    let (idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = "audit:\n  durability: strict\n".into();
    })
    .await;
    let token = idp.bearer("alice").await;
    let received = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = load(
        format!("{}/load", proxy.base()),
        token,
        8,
        received.clone(),
        stop_rx,
    );
    sekisho_tests::eventually("400 answered requests", || {
        let n = received.lock().unwrap().len();
        async move { n >= 400 }
    })
    .await;
    proxy.kill().await;
    for task in tasks {
        task.await.unwrap();
    }
    drop(stop_tx);
    let answered = received.lock().unwrap().clone();
    assert!(answered.iter().all(|(status, _)| *status == 200));

    let dir = proxy.audit_dir();
    let (_, report) = audit_verify(&dir);
    assert!(
        !report.contains("BROKEN"),
        "the chain survives kill -9: {report}"
    );
    let recorded: HashSet<String> = audit_records(&dir)
        .iter()
        .filter_map(|r| r["http_request"]["uid"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "strict mode: {} of {} answered requests have no record: {missing:?}",
        missing.len(),
        answered.len()
    );

    // The next start signs what the crash left unsigned (and a clean stop signs the rest).
    proxy.start_again().await;
    proxy.terminate().await;
    let (ok, report) = audit_verify(&dir);
    assert!(ok, "after restart the log verifies fully: {report}");
}

async fn disk_full_stack(
    on_failure: &str,
    audit: &Path,
) -> (Idp, sekisho_tests::echo::Echo, sekisho_tests::Proxy) {
    let yaml = format!(
        "audit:\n  dir: {}\n  durability: strict\n  on_failure: {on_failure}\n",
        audit.display()
    );
    stack(IdpOptions::default(), "RS256", move |o| o.extra_yaml = yaml).await
}

async fn status_and_id(url: &str, token: &str) -> (u16, String) {
    let response = no_redirect_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), request_id(&response))
}

#[tokio::test]
async fn a_full_disk_with_on_failure_deny_refuses_requests_until_space_returns() {
    let tmpfs = Tmpfs::mount("256k");
    let audit = tmpfs.0.join("audit");
    let (idp, _echo, mut proxy) = disk_full_stack("deny", &audit).await;
    let token = idp.bearer("alice").await;
    let url = format!("{}/x", proxy.base());
    assert_eq!(status_and_id(&url, &token).await.0, 200);

    let filler = tmpfs.fill();
    let mut answered_ok = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let (status, id) = status_and_id(&url, &token).await;
        match status {
            200 => answered_ok.push(id),
            503 => {
                refused = Some(id);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused = refused.expect("with the disk full, requests are refused with 503");
    // While the writer fails, every new request is refused at once.
    assert_eq!(status_and_id(&url, &token).await.0, 503);
    assert!(proxy.logs().contains("audit log cannot be written"));

    std::fs::remove_file(filler).unwrap();
    sekisho_tests::eventually("requests are served again", || {
        let (url, token) = (url.clone(), token.clone());
        async move { status_and_id(&url, &token).await.0 == 200 }
    })
    .await;
    proxy.terminate().await;
    let (ok, report) = audit_verify(&audit);
    assert!(ok, "{report}");
    let records = audit_records(&audit);
    for id in &answered_ok {
        record_of(&records, id);
    }
    // The withheld response is recorded as what the client got, once the disk takes records.
    let refusal = record_of(&records, &refused);
    assert_eq!(refusal["http_response"]["code"], 503);
    assert_eq!(refusal["unmapped"]["decision"], "error");
    assert!(
        refusal["status_detail"]
            .as_str()
            .unwrap()
            .contains("audit record not written"),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_full_disk_with_on_failure_allow_keeps_serving_and_writes_the_records_later() {
    let tmpfs = Tmpfs::mount("256k");
    let audit = tmpfs.0.join("audit");
    let (idp, _echo, mut proxy) = disk_full_stack("allow", &audit).await;
    let token = idp.bearer("alice").await;
    let url = format!("{}/x", proxy.base());
    let filler = tmpfs.fill();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (status, id) = status_and_id(&url, &token).await;
        assert_eq!(status, 200, "on_failure: allow keeps serving");
        ids.push(id);
    }
    assert!(proxy.logs().contains("audit log cannot be written"));
    std::fs::remove_file(filler).unwrap();
    proxy.terminate().await;
    let (ok, report) = audit_verify(&audit);
    assert!(ok, "{report}");
    let records = audit_records(&audit);
    for id in &ids {
        record_of(&records, id);
    }
}

#[tokio::test]
async fn the_review_page_finds_a_denial_and_shows_why_in_chromium() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml = ROUTES.into();
        o.extra_yaml = format!("{POLICIES}admin:\n  listen: 127.0.0.1:0\n  policy: admins-only\n");
    })
    .await;
    let base = proxy.base();
    let admin = format!("http://{}", proxy.admin.expect("admin listener"));

    // Records to find: bob is denied /admin, alice allowed.
    let bob = Agent::new();
    let login = bob
        .login(
            &format!("{base}/admin/payroll"),
            &idp.issuer,
            "bob",
            "bob-pw",
        )
        .await;
    let denied = bob.api(&login.landed).await;
    assert_eq!(denied.status(), 403);
    let denied_id = request_id(&denied);
    let alice = Agent::new();
    let login = alice
        .login(&format!("{base}/admin/x"), &idp.issuer, "alice", "alice-pw")
        .await;
    assert_eq!(alice.api(&login.landed).await.status(), 200);

    // The review page is behind sekisho's login and the admin policy: bob may not see it.
    let bob_admin = Agent::new();
    let login = bob_admin
        .login(&format!("{admin}/audit"), &idp.issuer, "bob", "bob-pw")
        .await;
    assert_eq!(bob_admin.browse(&login.landed).await.status(), 403);
    // Metrics need no login (the admin listener is private).
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sekisho_audit_records_written_total"),
        "{metrics}"
    );
    assert!(metrics.contains("sekisho_audit_failing 0"), "{metrics}");

    let steps = vec![
        json!({"goto": format!("{admin}/audit")}),
        json!({"wait_url": format!("^{}/interaction/", regex_escape(&idp.issuer))}),
        json!({"fill": "input[name=login]", "value": "alice"}),
        json!({"fill": "input[name=password]", "value": "alice-pw"}),
        json!({"click": "#submit"}),
        json!({"wait_url": format!("^{}/audit", regex_escape(&admin))}),
        json!({"expect_text": "Chain intact"}),
        json!({"fill": "input[name=user]", "value": "bob"}),
        json!({"select": "#decision", "value": "deny"}),
        json!({"fill": "input[name=since]", "value": "1h"}),
        json!({"click": "#search"}),
        json!({"wait_url": "decision=deny"}),
        json!({"expect_text": "/admin/payroll"}),
        json!({"dump": "results"}),
        json!({"click": "#records tbody tr:has-text('/admin/payroll') a"}),
        json!({"wait_url": "/audit/record\\?seq="}),
        json!({"expect_text": "Why"}),
        json!({"dump": "record"}),
        json!({"goto": format!("{admin}/audit/user?user=bob")}),
        json!({"expect_text": "Timeline of bob"}),
        json!({"dump": "timeline"}),
    ];
    let result = sekisho_tests::run_browser(&json!({ "steps": steps })).await;
    let dumps = &result["dumps"];
    let results = dumps["results"]["body"].as_str().unwrap();
    // bob's denial at /admin, and his refused look at the review page itself.
    assert!(results.contains("2 matching records"), "{results}");
    let table = results.split("Time (UTC)").nth(1).expect("a results table");
    assert!(
        table.contains("bob") && !table.contains("alice@example.com"),
        "{results}"
    );
    assert!(results.contains("Chain intact"), "{results}");
    let record = dumps["record"]["body"].as_str().unwrap();
    assert!(
        record.contains(&denied_id),
        "the opened record is bob's denial: {record}"
    );
    assert!(
        record.contains("not allowed"),
        "the explanation is shown: {record}"
    );
    assert!(record.contains("policies.admins-only"), "{record}");
    let timeline = dumps["timeline"]["body"].as_str().unwrap();
    assert!(
        timeline.contains("login") && timeline.contains("deny"),
        "{timeline}"
    );
}

#[tokio::test]
async fn records_are_exported_over_otlp_http_exactly_as_written() {
    let receiver_dir = tempfile::tempdir().unwrap();
    let received = receiver_dir.path().join("received.jsonl");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(sekisho_tests::workspace().join("tests/interop/otlp_receiver.py"))
        .arg(&received);
    let (_receiver, ready) = sekisho_tests::Process::spawn(
        "otlp-receiver",
        command,
        receiver_dir.path().join("receiver.log"),
    )
    .await;
    let endpoint = format!("http://{}/v1/logs", ready["http"].as_str().unwrap());
    let yaml = format!(
        "audit:\n  otlp:\n    endpoint: {endpoint}\n    headers:\n      authorization: Bearer otlp-test-secret\n"
    );
    let (idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", move |o| {
        o.extra_yaml = yaml;
    })
    .await;
    let token = idp.bearer("alice").await;
    let (status, id) = status_and_id(&format!("{}/exported", proxy.base()), &token).await;
    assert_eq!(status, 200);

    let exported = {
        let (received, id) = (received.clone(), id.clone());
        let mut found = None;
        sekisho_tests::eventually("the record reaches the receiver", || {
            let text = std::fs::read_to_string(&received).unwrap_or_default();
            found = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|r| r["body"].as_str().unwrap_or("").contains(&id));
            let done = found.is_some();
            async move { done }
        })
        .await;
        found.unwrap()
    };
    assert_eq!(exported["authorization"], "Bearer otlp-test-secret");
    assert_eq!(exported["resource"]["service.name"], "sekisho");
    assert_eq!(exported["event_name"], "sekisho.audit");
    assert_eq!(exported["attributes"]["ocsf.class_uid"], 4002);
    assert_eq!(exported["attributes"]["sekisho.decision"], "allow");
    assert_eq!(exported["attributes"]["user.email"], "alice@example.com");
    assert_eq!(exported["severity_text"], "INFO");
    let body: Value = serde_json::from_str(exported["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        exported["time_unix_nano"].as_u64().unwrap(),
        body["time"].as_u64().unwrap() * 1_000_000
    );

    proxy.terminate().await;
    // The exported body is the line on disk, byte for byte (seq and prev_hash included).
    let on_disk = sekisho_tests::audit_files(&proxy.audit_dir())
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|l| l.contains(&id))
        .unwrap();
    assert_eq!(exported["body"].as_str().unwrap(), on_disk);
}

#[tokio::test]
async fn configuration_reloads_and_refusals_are_recorded() {
    let (_idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let original = std::fs::read_to_string(&proxy.config_path).unwrap();
    let dir = proxy.audit_dir();
    let reloads = |dir: &Path| -> Vec<Value> {
        audit_records(dir)
            .into_iter()
            .filter(|r| r["unmapped"]["event"] == "reload")
            .collect()
    };

    // An invalid file is refused, and the refusal names the first problem.
    sekisho_tests::write_atomically(&proxy.config_path, &format!("{original}bogus_key: 1\n"));
    sekisho_tests::eventually("a refused reload is recorded", || {
        let done = reloads(&dir).iter().any(|r| r["status_id"] == 2);
        async move { done }
    })
    .await;
    // A valid change is applied.
    sekisho_tests::write_atomically(
        &proxy.config_path,
        &original.replace(
            "routes:\n",
            "routes:\n  - id: extra\n    from: http://localhost\n    to: http://127.0.0.1:9\n",
        ),
    );
    sekisho_tests::eventually("an applied reload is recorded", || {
        let done = reloads(&dir).iter().any(|r| r["status_id"] == 1);
        async move { done }
    })
    .await;
    proxy.terminate().await;
    let records = reloads(&dir);
    let refused = records.iter().find(|r| r["status_id"] == 2).unwrap();
    assert_eq!(refused["class_uid"], 6002);
    assert_eq!(refused["activity_id"], 8);
    assert!(
        refused["message"].as_str().unwrap().contains("bogus_key"),
        "{refused}"
    );
    let applied = records.iter().find(|r| r["status_id"] == 1).unwrap();
    assert!(
        applied["message"].as_str().unwrap().contains("2 routes"),
        "{applied}"
    );
    let (ok, report) = audit_verify(&dir);
    assert!(ok, "{report}");
}

/// Runs `sekisho ARGS…`; (exit success, stdout + stderr).
fn sekisho(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = std::process::Command::new(sekisho_tests::sekisho_binary())
        .args(args)
        .output()
        .expect("running sekisho");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn a_log_cut_back_to_an_earlier_checkpoint_fails_verification_naming_the_missing_records() {
    // An OTLP receiver keeps the newest checkpoint it was sent: the head an attacker on the
    // proxy's host cannot rewrite.
    let receiver_dir = tempfile::tempdir().unwrap();
    let otlp_head = receiver_dir.path().join("head.json");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(sekisho_tests::workspace().join("tests/interop/otlp_receiver.py"))
        .arg(receiver_dir.path().join("received.jsonl"))
        .arg(&otlp_head);
    let (_receiver, ready) = sekisho_tests::Process::spawn(
        "otlp-receiver",
        command,
        receiver_dir.path().join("receiver.log"),
    )
    .await;
    let endpoint = format!("http://{}/v1/logs", ready["http"].as_str().unwrap());
    let yaml = format!("audit:\n  checkpoint_interval: 200ms\n  otlp:\n    endpoint: {endpoint}\n");
    let (idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", move |o| {
        o.extra_yaml = yaml;
    })
    .await;
    let token = idp.bearer("alice").await;
    let url = format!("{}/before", proxy.base());
    for _ in 0..5 {
        assert_eq!(status_and_id(&url, &token).await.0, 200);
    }
    let dir = proxy.audit_dir();
    let checkpoints = |dir: &Path| -> Vec<u64> {
        audit_records(dir)
            .iter()
            .filter(|r| r["type"] == "checkpoint")
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    sekisho_tests::eventually("a checkpoint after the first requests", || {
        let done = !checkpoints(&dir).is_empty();
        async move { done }
    })
    .await;
    let url = format!("{}/after", proxy.base());
    for _ in 0..20 {
        assert_eq!(status_and_id(&url, &token).await.0, 200);
    }
    proxy.terminate().await;
    let all = checkpoints(&dir);
    let head = *all.last().unwrap();
    sekisho_tests::eventually("the final checkpoint reaches the receiver", || {
        let text = std::fs::read_to_string(&otlp_head).unwrap_or_default();
        let done = serde_json::from_str::<Value>(&text).is_ok_and(|h| h["seq"] == head);
        async move { done }
    })
    .await;
    let config = proxy.config_path.clone();
    let (ok, report) = sekisho(&[
        "audit".as_ref(),
        "verify".as_ref(),
        "-c".as_ref(),
        config.as_ref(),
    ]);
    assert!(ok, "the untouched log verifies against its head: {report}");

    // Cut the log back to its first checkpoint, as in the report.
    let files = sekisho_tests::audit_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let cut = all[0];
    let kept: String = text
        .lines()
        .take_while(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
                <= cut
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&files[0], kept).unwrap();
    let missing = format!("records {}–{head} are missing", cut + 1);

    // Without a head, verification cannot know, and says so.
    let (_, report) = audit_verify(&dir);
    assert!(
        report.contains("no signed head") && !report.contains("chain intact and signed\n"),
        "{report}"
    );
    // With the configuration, the head kept in the state directory names the missing records.
    let (ok, report) = sekisho(&[
        "audit".as_ref(),
        "verify".as_ref(),
        "-c".as_ref(),
        config.as_ref(),
    ]);
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!(
            "log ends at seq {cut}; the signed head says {head}"
        )),
        "{report}"
    );
    assert!(report.contains(&missing), "{report}");
    // An attacker who also removes the local head is caught by the copy exported over OTLP.
    std::fs::remove_file(proxy.state_dir().join("audit-head.json")).unwrap();
    let (ok, report) = sekisho(&[
        "audit".as_ref(),
        "verify".as_ref(),
        "-c".as_ref(),
        config.as_ref(),
    ]);
    assert!(!ok && report.contains("audit-head.json"), "{report}");
    let pub_key = dir.join("audit-signing.pub");
    let (ok, report) = sekisho(&[
        "audit".as_ref(),
        "verify".as_ref(),
        "--public-key".as_ref(),
        pub_key.as_ref(),
        "--head".as_ref(),
        otlp_head.as_ref(),
        dir.as_ref(),
    ]);
    assert!(!ok && report.contains(&missing), "{report}");
}

#[tokio::test]
async fn the_start_record_names_the_listening_addresses() {
    let (_idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let base = proxy.base();
    proxy.terminate().await;
    let records = audit_records(&proxy.audit_dir());
    let start = records
        .iter()
        .find(|r| r["unmapped"]["event"] == "start")
        .expect("a start record");
    let message = start["message"].as_str().unwrap();
    assert!(message.contains(&base), "{message}");
    assert!(
        !message.contains("Some(") && !message.contains("None"),
        "no Rust debug output: {message}"
    );
}

#[tokio::test]
async fn a_forwarded_request_names_both_ends_of_the_upstream_connection() {
    // The container issue looks up both ends of the upstream connection: the record must name
    // the one the request really went out on, as the upstream saw it.
    let (idp, echo, mut proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    let token = idp.bearer("alice").await;
    let response = no_redirect_client()
        .get(format!("{}/hello", proxy.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let echoed = sekisho_tests::echo::Echoed(response.json().await.unwrap());
    proxy.terminate().await;
    let records = audit_records(&proxy.audit_dir());
    let record = record_of(&records, &id);
    assert_eq!(
        record["unmapped"]["upstream_local"].as_str(),
        Some(echoed.peer().as_str()),
        "sekisho's end is the peer the upstream saw: {record}"
    );
    assert_eq!(record["dst_endpoint"]["ip"], echo.addr.ip().to_string());
    assert_eq!(record["dst_endpoint"]["port"], echo.addr.port());
    assert_eq!(record["dst_endpoint"]["svc_name"], "app");
}

#[tokio::test]
async fn an_admin_policy_that_lets_the_unsigned_in_still_asks_who_reads_the_log() {
    // `source_ip` alone admits anyone on loopback; the review page still needs a name for its
    // reader, so the unsigned are sent to sign in (browsers) or refused (programs).
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.extra_yaml =
            "policies:\n  local:\n    allow:\n      and:\n        - source_ip: [127.0.0.0/8]\n\
                        admin:\n  listen: 127.0.0.1:0\n  policy: local\n"
                .into();
    })
    .await;
    let admin = format!("http://{}/audit", proxy.admin.expect("admin listener"));
    let program = no_redirect_client()
        .get(&admin)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(program.status(), 401);
    let browser = Agent::new().browse(&admin).await;
    assert_eq!(browser.status(), 302);
    let location = browser.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&idp.issuer), "{location}");
}
