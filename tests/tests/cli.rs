//! The `sekisho` command line: `check` on every example (each must stay valid) and on broken
//! files (every error reported at once, with line and column, exit code 1).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::process::Command;

use sekisho_tests::{sekisho_binary, workspace};

fn check(path: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    Command::new(sekisho_binary())
        .arg("check")
        .arg("-c")
        .arg(path)
        .current_dir(dir)
        .env("SEKISHO_CLIENT_SECRET", "example-secret")
        .env(
            "SEKISHO_COOKIE_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env(
            "SEKISHO_COOKIE_KEY_PREVIOUS",
            "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
        )
        .env(
            "SEKISHO_SIGNING_KEY",
            sekisho::assertion::generate_pem().expect("keygen"),
        )
        .env(
            "SEKISHO_AUDIT_SIGNING_KEY",
            sekisho::audit::writer::generate_key_pem().expect("keygen"),
        )
        .env("OTLP_AUTHORIZATION", "Bearer example-token")
        .output()
        .expect("running sekisho check")
}

#[test]
fn every_example_passes_check() {
    // Check copies, so files the examples reference (the secrets `sekisho quickstart` generates
    // next to its configuration) can be provided without touching the working tree.
    let root = tempfile::tempdir().unwrap();
    let examples = root.path().join("examples");
    std::fs::create_dir_all(&examples).unwrap();
    let write = |name: &str, content: &str| std::fs::write(examples.join(name), content).unwrap();
    write("cookie.key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    write("signing.pem", &sekisho::assertion::generate_pem().unwrap());
    write("client-secret", "quickstart-client-secret-0123456789");
    let hash = sekisho::idp::hash_password("demo-password").unwrap();
    write("alice.hash", &hash);
    write("bob.hash", &hash);
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("examples")).unwrap() {
        let original = entry.unwrap().path();
        let name = original
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // `*.cases.yaml` are policy test cases, run by `policy_test_runs_the_example_cases...`.
        if !name.ends_with(".yaml") || name.ends_with(".cases.yaml") {
            continue;
        }
        let path = examples.join(original.file_name().unwrap());
        std::fs::copy(&original, &path).unwrap();
        let out = check(&path, root.path());
        assert!(
            out.status.success(),
            "{} failed check:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("->"),
            "summary of {} lists no route:\n{summary}",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected at least three examples, checked {checked}"
    );
}

#[test]
fn check_reports_every_error_with_its_position_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "server:\n  http_listen: 127.0.0.1:8080\n  colour: blue\n\
         oidc:\n  issuer: http://idp.example.com\n  client_id: x\n  client_secret: s\n  allowed_algorithms: [HS256]\n\
         session:\n  keys: [not-base64!]\n  idle_lifetime: 10\n\
         signing:\n  key: {env: SEKISHO_UNSET_VARIABLE_FOR_TEST}\n\
         routes:\n  - from: ftp://app\n    to: http://127.0.0.1:1\n",
    )
    .unwrap();
    let out = check(&path, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = [
        ("server.colour", ":3:"),
        ("oidc.issuer", ":5:"),
        ("oidc.allowed_algorithms", ":8:"),
        ("session.keys[0]", ":10:"),
        ("session.idle_lifetime", ":11:"),
        ("signing.key", ":13:"),
        ("routes[0].from", ":15:"),
    ];
    for (field, line) in expected {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(field) && l.contains(line)),
            "no error for {field} at line {line} in:\n{stderr}"
        );
    }
}

#[test]
fn policy_test_runs_the_example_cases_without_secrets() {
    // No secret environment variables: the policy tools never need them.
    let out = Command::new(sekisho_binary())
        .args([
            "policy",
            "test",
            "-c",
            "examples/policies.yaml",
            "examples/policies.cases.yaml",
        ])
        .current_dir(workspace())
        .env_remove("SEKISHO_CLIENT_SECRET")
        .output()
        .expect("running sekisho policy test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "policy test failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("policy test result: ok"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn policy_test_fails_on_a_mismatch_and_explains_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("wrong.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - name: bob is wrongly expected to reach admin\n    identity: {email: bob@example.com, groups: [sales]}\n    \
         request: {url: \"https://admin.example.com/\"}\n    expect: allow\n",
    )
    .unwrap();
    let out = Command::new(sekisho_binary())
        .args(["policy", "test", "-c"])
        .arg(workspace().join("examples/policies.yaml"))
        .arg(&cases)
        .output()
        .expect("running sekisho policy test");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("... FAILED"), "{stdout}");
    assert!(stdout.contains("expected Allow, got Deny"), "{stdout}");
    assert!(
        stdout.contains("policies.admins-only.allow.and[0] groups has \"admins\""),
        "the failing rule is named:\n{stdout}"
    );
}

#[test]
fn policy_explain_prints_route_input_and_trace() {
    let out = Command::new(sekisho_binary())
        .args([
            "policy",
            "explain",
            "-c",
            "examples/policies.yaml",
            "--as",
            "alice@example.com",
            "--groups",
            "eng,admins",
        ])
        .args([
            "--source-ip",
            "10.99.1.1",
            "GET",
            "https://admin.example.com/x",
        ])
        .current_dir(workspace())
        .output()
        .expect("running sekisho policy explain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("route: admin"), "{stdout}");
    assert!(
        stdout.contains("\"email\": \"alice@example.com\""),
        "input document printed:\n{stdout}"
    );
    assert!(
        stdout.contains("✔ policies.admins-only.deny.or[0] source_ip"),
        "trace printed:\n{stdout}"
    );
    assert!(
        stdout.contains("decision: DENY (denied by policies.admins-only.deny.or[0]"),
        "{stdout}"
    );
}

#[test]
fn audit_verify_names_the_file_and_line_of_a_break() {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    use sekisho::audit::chain::Chain;

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public: String = key
        .public_key()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.path().join("audit.pub"), format!("{public}\n")).unwrap();
    // Two rotated files, each ending with a checkpoint.
    let mut chain = Chain::default();
    let mut files = Vec::new();
    for file in 0..2 {
        let mut text = String::new();
        for i in 0..5 {
            let record = serde_json::json!({"type": "http", "file": file, "n": i});
            text.push_str(&chain.append(record.as_object().cloned().unwrap()).unwrap());
            text.push('\n');
        }
        text.push_str(&chain.checkpoint(&key, "2026-11-25T00:00:00Z").unwrap());
        text.push('\n');
        let path = dir.path().join(format!("audit-{file}.jsonl"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let verify = |files: &[std::path::PathBuf]| {
        Command::new(sekisho_binary())
            .args(["audit", "verify", "--public-key"])
            .arg(dir.path().join("audit.pub"))
            .args(files)
            .output()
            .expect("running sekisho audit verify")
    };
    let out = verify(&files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain intact and signed"));

    // A record changed in the second file: the break is named by file and line.
    let second = std::fs::read_to_string(&files[1]).unwrap();
    std::fs::write(&files[1], second.replacen("\"n\":2", "\"n\":20", 1)).unwrap();
    let out = verify(&files);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("BROKEN at {}:4", files[1].display())),
        "{stdout}"
    );

    // A missing rotated file breaks the chain; verifying it alone needs --mid-chain.
    std::fs::write(&files[1], second).unwrap();
    assert_eq!(verify(&files[1..]).status.code(), Some(1));

    // Truncation after the last checkpoint is reported.
    let lines: Vec<&str> = std::fs::read_to_string(&files[1])
        .unwrap()
        .leak()
        .lines()
        .collect();
    std::fs::write(&files[1], lines[..lines.len() - 1].join("\n")).unwrap();
    let out = verify(&files);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unsigned"));
}

#[test]
fn hash_password_reads_standard_input_and_prints_an_argon2id_hash() {
    use std::io::Write as _;
    let mut child = Command::new(sekisho_binary())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(sekisho::idp::verify_password_blocking(
        hash.trim(),
        "correct horse battery staple"
    ));
    // An empty password is refused.
    let mut child = Command::new(sekisho_binary())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(1));
}

#[test]
fn identity_provider_errors_are_reported_with_their_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.yaml");
    std::fs::write(
        &path,
        "server:\n  http_listen: 127.0.0.1:8080\n\
         identity_provider:\n  issuer: http://idp.example.com\n  colour: blue\n  users:\n\
         \x20   - username: Alice\n      email: not-an-email\n      password_hash: hunter2\n      totp_secret: abc!\n\
         \x20   - username: bob\n      email: bob@example.com\n      password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2Gk5y1C1zQK3qvu8t3cYkq6n1C2Kk1v3bJ2hQmE0a8c\"\n\
         \x20 clients:\n    - client_id: sekisho\n      client_secret: short\n      redirect_uris: [http://app.example.com/cb]\n\
         \x20     backchannel_logout_uri: http://app.example.com/bcl#frag\n      backchannel_logout_session_required: maybe\n\
         oidc:\n  issuer: http://127.0.0.1:8080/idp\n  client_id: x\n  client_secret: s\n\
         session:\n  keys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]\n\
         signing:\n  key: {env: SEKISHO_SIGNING_KEY}\n\
         routes:\n  - from: http://127.0.0.1\n    to: http://127.0.0.1:1\n",
    )
    .unwrap();
    let out = check(&path, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (field, line) in [
        ("identity_provider.issuer", ":4:"),
        ("identity_provider.colour", ":5:"),
        ("identity_provider.users[0].username", ":7:"),
        ("identity_provider.users[0].email", ":8:"),
        ("identity_provider.users[0].password_hash", ":9:"),
        ("identity_provider.users[0].totp_secret", ":10:"),
        ("identity_provider.clients[0].client_secret", ":16:"),
        ("identity_provider.clients[0].redirect_uris[0]", ":17:"),
        (
            "identity_provider.clients[0].backchannel_logout_uri",
            ":18:",
        ),
        (
            "identity_provider.clients[0].backchannel_logout_session_required",
            ":19:",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(field) && l.contains(line)),
            "no error for {field} at line {line} in:\n{stderr}"
        );
    }
}

#[test]
fn audit_verify_refuses_a_missing_or_malformed_head_with_a_precise_message() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("minimal.yaml");
    std::fs::copy(workspace().join("examples/minimal.yaml"), &config).unwrap();
    // With a configuration, the head in its state_dir is required.
    let out = Command::new(sekisho_binary())
        .args(["audit", "verify", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("audit-head.json") && stderr.contains("no signed head"),
        "{stderr}"
    );
    // A head that is not a signed checkpoint is refused, not trusted.
    let keys = root.path().join("audit-signing.pub");
    std::fs::write(&keys, format!("{}\n", "ab".repeat(32))).unwrap();
    let log = root
        .path()
        .join("audit-0000000000000000-20260101T000000Z.jsonl");
    std::fs::write(&log, "").unwrap();
    for (head, why) in [
        ("{\"seq\":18446744073709551615}", "not a checkpoint line"),
        ("garbage", "not a JSON object"),
    ] {
        let path = root.path().join("head.json");
        std::fs::write(&path, head).unwrap();
        let out = Command::new(sekisho_binary())
            .args(["audit", "verify", "--public-key"])
            .arg(&keys)
            .arg("--head")
            .arg(&path)
            .arg(&log)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("not a signed head") && stderr.contains(why),
            "{stderr}"
        );
    }
}
