//! The README's first command, exactly: `cargo run -p sekisho -- quickstart`, in a fresh network
//! namespace (the quickstart listens on the fixed ports 8080 and 8081, which would collide with
//! parallel tests and with anything on the machine), with headless Chromium in the same
//! namespace walking the README's tour: alice signs in and opens /admin, signs out; bob signs in
//! and is denied /admin. A second run keeps the generated secrets. Needs root (CI runs as root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::process::Stdio;

use sekisho_tests::{DEADLINE, clean_cargo_env, run_browser_in, sekisho_binary, workspace};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The README's first command, as written there.
const README_COMMAND: &str = "cargo run -p sekisho -- quickstart";

/// A named network namespace with its loopback up; every process left in it is killed and the
/// namespace deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn add() -> Self {
        let mut random = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).unwrap();
        let name = format!(
            "sekisho-qs-{}-{}",
            std::process::id(),
            u32::from_be_bytes(random)
        );
        ip(&["netns", "add", &name]);
        let netns = Self { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }
        }
        let status = std::process::Command::new("ip")
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
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "ip {} failed (the quickstart test needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// The running quickstart: its process and what it printed.
struct Quickstart {
    child: Child,
    printed: String,
    log: std::path::PathBuf,
}

impl Quickstart {
    /// Runs the README command inside `netns` with its state under `state_home`; returns once
    /// the banner (with both passwords) is printed.
    async fn start(netns: &Netns, state_home: &std::path::Path, log: std::path::PathBuf) -> Self {
        let mut command = std::process::Command::new("ip");
        command.args(["netns", "exec", &netns.name]);
        command.args(README_COMMAND.split(' '));
        clean_cargo_env(&mut command);
        command
            .current_dir(workspace())
            .env("XDG_STATE_HOME", state_home)
            .env("SEKISHO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        let mut command = Command::from(command);
        command.kill_on_drop(true);
        let mut child = command.spawn().expect("spawning the quickstart");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = String::new();
        // `cargo run` may have to link the binary first: allow it more than one deadline.
        let read = tokio::time::timeout(DEADLINE * 4, async {
            while let Ok(Some(line)) = lines.next_line().await {
                printed.push_str(&line);
                printed.push('\n');
                if line.contains("Ctrl-C stops it") {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(read, Ok(true)) {
            panic!(
                "the quickstart did not print its banner; stdout:\n{printed}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            printed,
            log,
        }
    }

    /// The password the banner gives `user`.
    fn password(&self, user: &str) -> String {
        self.printed
            .lines()
            .find(|l| l.trim_start().starts_with(user) && l.contains("password:"))
            .and_then(|l| l.split("password:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no password for {user} in:\n{}", self.printed))
            .to_owned()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(DEADLINE, self.child.wait()).await;
    }
}

fn sign_in(user: &str, password: &str) -> Vec<serde_json::Value> {
    vec![
        json!({"goto": "http://127.0.0.1:8080/"}),
        json!({"wait_url": "^http://127\\.0\\.0\\.1:8080/\\.sekisho/idp/authorize"}),
        json!({"expect_text": "Sign in"}),
        json!({"fill": "#username", "value": user}),
        json!({"fill": "#password", "value": password}),
        json!({"click": "#submit"}),
        json!({"wait_url": "^http://127\\.0\\.0\\.1:8080/$"}),
        json!({"expect_status": 200}),
        json!({"expect_text": format!("Hello, {user}")}),
        json!({"expect_text": "Signature verified against sekisho's JWKS."}),
    ]
}

#[tokio::test]
async fn the_readme_quickstart_signs_alice_in_and_keeps_bob_out_of_admin() {
    // Build first (as the other tests do), so `cargo run` only has to start the binary.
    sekisho_binary();
    let netns = Netns::add();
    let state = tempfile::tempdir().unwrap();
    let quickstart = Quickstart::start(&netns, state.path(), state.path().join("run-1.log")).await;
    assert!(
        quickstart.printed.contains("Open http://127.0.0.1:8080/"),
        "{}",
        quickstart.printed
    );
    let alice = quickstart.password("alice");
    let bob = quickstart.password("bob");
    sekisho_tests::eventually("sekisho to discover its built-in provider", || {
        let discovered = quickstart.logs().contains("provider discovered");
        async move { discovered }
    })
    .await;

    let mut steps = sign_in("alice", &alice);
    steps.extend([
        json!({"dump": "alice_home"}),
        json!({"goto": "http://127.0.0.1:8080/admin"}),
        json!({"expect_status": 200}),
        json!({"expect_text": "Hello, alice"}),
        json!({"dump": "alice_admin"}),
        json!({"goto": "http://127.0.0.1:8080/.sekisho/logout"}),
        json!({"wait_url": "^http://127\\.0\\.0\\.1:8080/\\.sekisho/signed-out"}),
        json!({"expect_text": "signed out"}),
    ]);
    steps.extend(sign_in("bob", &bob));
    steps.extend([
        json!({"dump": "bob_home"}),
        json!({"goto": "http://127.0.0.1:8080/admin"}),
        json!({"expect_status": 403}),
        json!({"expect_text": "Access denied"}),
        json!({"dump": "bob_admin"}),
        // The audit review page on the admin listener: not for bob…
        json!({"goto": "http://127.0.0.1:8082/"}),
        json!({"expect_status": 403}),
        json!({"goto": "http://127.0.0.1:8080/.sekisho/logout"}),
        json!({"wait_url": "^http://127\\.0\\.0\\.1:8080/\\.sekisho/signed-out"}),
        // …but for alice, who finds bob's denial there.
        json!({"goto": "http://127.0.0.1:8082/"}),
        json!({"wait_url": "^http://127\\.0\\.0\\.1:8080/\\.sekisho/idp/authorize"}),
        json!({"fill": "#username", "value": "alice"}),
        json!({"fill": "#password", "value": &alice}),
        json!({"click": "#submit"}),
        json!({"wait_url": "^http://127\\.0\\.0\\.1:8082/$"}),
        json!({"expect_text": "Chain intact"}),
        json!({"fill": "input[name=user]", "value": "bob@example.com"}),
        json!({"select": "#decision", "value": "deny"}),
        json!({"click": "#search"}),
        json!({"wait_url": "decision=deny"}),
        json!({"expect_text": "/admin"}),
        json!({"dump": "review"}),
    ]);
    let result = run_browser_in(
        &netns.exec(),
        &json!({ "steps": steps, "timeout_ms": 20000 }),
    )
    .await;
    let dumps = &result["dumps"];
    let alice_home = dumps["alice_home"]["body"].as_str().unwrap();
    assert!(alice_home.contains("alice@example.com"), "{alice_home}");
    assert!(
        alice_home.contains("admins"),
        "the page lists alice's groups: {alice_home}"
    );
    assert!(
        alice_home.contains("\"aud\": \"whoami\""),
        "verified claims shown: {alice_home}"
    );
    let bob_home = dumps["bob_home"]["body"].as_str().unwrap();
    assert!(bob_home.contains("sales"), "{bob_home}");
    let bob_admin = dumps["bob_admin"]["body"].as_str().unwrap();
    assert!(
        bob_admin.contains("groups has \"admins\""),
        "the denial names the rule: {bob_admin}"
    );
    let review = dumps["review"]["body"].as_str().unwrap();
    let table = review.split("Time (UTC)").nth(1).expect("a results table");
    assert!(
        table.contains("bob@example.com") && table.contains("/admin") && !table.contains("alice"),
        "the review page finds bob's denials: {review}"
    );
    quickstart.stop().await;

    // A second run keeps the generated secrets.
    let again = Quickstart::start(&netns, state.path(), state.path().join("run-2.log")).await;
    assert_eq!(again.password("alice"), alice);
    assert_eq!(again.password("bob"), bob);
    again.stop().await;
}
