use std::time::{Duration, SystemTime};

use super::*;
use crate::audit::chain;
use crate::audit::record::{Decision, HttpEvent, Query};

/// An audit configuration writing under `dir` (also used by the review page's tests).
pub(crate) fn config(dir: &Path) -> Audit {
    Audit {
        dir: dir.join("audit"),
        durability: Durability::Batched,
        batch_window: Duration::from_millis(50),
        on_failure: OnFailure::Deny,
        rotate_size: 1 << 30,
        rotate_interval: Duration::from_secs(3600),
        retention: Duration::from_secs(3600),
        checkpoint_interval: Duration::from_secs(3600),
        heartbeat_multiple: 12,
        signing_key: None,
        previous_signing_key: None,
        queue: 1024,
        record_query: false,
        otlp: None,
    }
}

/// A request record: allowed when `i` is even, denied when odd.
pub(crate) fn event(i: u64, user_path: &str) -> Event {
    Event::Http(Box::new(HttpEvent {
        time: jiff::Timestamp::now(),
        request_id: format!("req-{i}"),
        method: http::Method::GET,
        version: http::Version::HTTP_11,
        scheme: "http",
        host: "app.test".into(),
        port: None,
        path: user_path.into(),
        query: Query::None,
        user_agent: None,
        peer: "127.0.0.1:1000".parse().unwrap(),
        client_ip: "127.0.0.1".parse().unwrap(),
        tls_version: None,
        client_certificate: None,
        route: Some(Arc::from("app")),
        decision: if i.is_multiple_of(2) {
            Decision::Allow
        } else {
            Decision::Deny
        },
        policy: None,
        rule: None,
        report_only_deny: false,
        actor: None,
        upstream: None,
        upstream_connection: None,
        door: crate::audit::Door::Proxy,
        status: 200,
        detail: None,
        bytes_in: None,
        bytes_out: None,
        latency: Duration::from_millis(1),
        container: None,
        upstream_container: None,
        attribution_unavailable: false,
    }))
}

fn all_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for file in log_files(dir).unwrap() {
        let text = std::fs::read_to_string(&file.path).unwrap();
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

fn verify_dir(dir: &Path, log: &AuditLog) -> chain::Verification {
    let key: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&log.public_key_hex()[i..i + 2], 16).unwrap())
        .collect();
    let lines = all_lines(dir);
    chain::verify(lines.iter().map(String::as_str), &key, true)
}

#[test]
fn records_are_chained_signed_and_indexed() {
    let tmp = tempdir();
    let config = config(tmp.path());
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    for i in 0..10 {
        log.record(event(i, "/x")).unwrap();
    }
    log.flush().unwrap();
    let report = verify_dir(&config.dir, &log);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.lines, 11, "10 records and a checkpoint");
    assert_eq!(log.metrics().records_written.load(Ordering::Relaxed), 10);
    assert_eq!(
        log.metrics().queued.load(Ordering::Relaxed),
        0,
        "the writer took every record it was handed"
    );
    let files = log_files(&config.dir).unwrap();
    let index = std::fs::read_to_string(index_path(&files[0].path)).unwrap();
    let block: IndexBlock = serde_json::from_str(index.lines().next().unwrap()).unwrap();
    assert_eq!((block.first_seq, block.last_seq), (0, 9));
    assert!(block.facets.may_contain(facet::DECISION, "allow"));
    assert!(block.facets.may_contain(facet::DECISION, "deny"));
    assert!(block.facets.may_contain(facet::ROUTE, "app"));
    assert!(!block.facets.may_contain(facet::DECISION, "login"));
    assert!(
        !block.facets.may_contain(facet::USER, "app"),
        "facets are tagged"
    );
    assert_eq!(
        std::fs::read_to_string(config.dir.join("audit-signing.pub")).unwrap(),
        format!("{}\n", log.public_key_hex())
    );
}

#[test]
fn the_chain_runs_across_rotation_and_restarts() {
    let tmp = tempdir();
    let mut config = config(tmp.path());
    config.rotate_size = 4096;
    {
        let log = AuditLog::open(&config, tmp.path()).unwrap();
        for i in 0..40 {
            log.record(event(i, "/a")).unwrap();
            if i % 5 == 0 {
                log.flush().unwrap();
            }
        }
        log.close();
    }
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    for i in 40..45 {
        log.record(event(i, "/b")).unwrap();
    }
    log.flush().unwrap();
    let files = log_files(&config.dir).unwrap();
    assert!(files.len() > 2, "rotated: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(&file.path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], file.first_seq, "{}", file.path.display());
    }
    let report = verify_dir(&config.dir, &log);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(log.metrics().records_written.load(Ordering::Relaxed), 5);
}

#[test]
fn a_crash_tail_is_signed_at_the_next_start_and_a_torn_line_cut() {
    let tmp = tempdir();
    let config = config(tmp.path());
    let key_hex;
    {
        let log = AuditLog::open(&config, tmp.path()).unwrap();
        key_hex = log.public_key_hex().to_owned();
        log.record(event(0, "/a")).unwrap();
        log.flush().unwrap();
        log.record(event(1, "/b")).unwrap();
        // A clean close would sign; simulate a crash by appending a torn line instead.
        log.close();
    }
    let files = log_files(&config.dir).unwrap();
    let newest = &files.last().unwrap().path;
    let mut file = OpenOptions::new().append(true).open(newest).unwrap();
    file.write_all(b"{\"seq\":99,\"prev_").unwrap();
    drop(file);
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    assert_eq!(log.public_key_hex(), key_hex, "the key persists");
    log.flush().unwrap();
    let text = std::fs::read_to_string(newest).unwrap();
    assert!(!text.contains("prev_\n") && text.ends_with("}\n"));
    let report = verify_dir(&config.dir, &log);
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test]
async fn strict_commits_return_after_the_record_is_on_disk() {
    let tmp = tempdir();
    let mut config = config(tmp.path());
    config.durability = Durability::Strict;
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    log.commit(event(0, "/strict")).await.unwrap();
    let lines = all_lines(&config.dir);
    assert!(lines.iter().any(|l| l.contains("/strict")), "{lines:?}");
    assert!(log.metrics().syncs.load(Ordering::Relaxed) >= 1);
}

#[test]
fn retention_removes_old_rotated_files_and_says_so() {
    let tmp = tempdir();
    let mut config = config(tmp.path());
    config.rotate_size = 2048;
    {
        let log = AuditLog::open(&config, tmp.path()).unwrap();
        for i in 0..20 {
            log.record(event(i, "/old")).unwrap();
            log.flush().unwrap();
        }
    }
    let files = log_files(&config.dir).unwrap();
    assert!(files.len() >= 3);
    let old = SystemTime::now() - Duration::from_secs(7200);
    for file in &files[..2] {
        File::options()
            .append(true)
            .open(&file.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    log.record(event(100, "/new")).unwrap();
    log.flush().unwrap();
    let remaining = log_files(&config.dir).unwrap();
    assert!(
        remaining.len() + 2 >= files.len() && remaining.len() < files.len(),
        "{remaining:?}"
    );
    assert_eq!(remaining[0].first_seq, files[2].first_seq);
    let lines = all_lines(&config.dir);
    assert!(
        lines.iter().any(|l| l.contains("retention removed")),
        "the removal is recorded"
    );
    let key: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&log.public_key_hex()[i..i + 2], 16).unwrap())
        .collect();
    let report = chain::verify(lines.iter().map(String::as_str), &key, false);
    assert!(report.is_intact(), "{report:?}");
}

/// A temporary directory removed on drop (also used by the service's tests).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new empty directory under the system's temporary directory.
pub(crate) fn tempdir() -> TempDir {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "sekisho-audit-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&path).unwrap();
    TempDir(path)
}

#[test]
fn a_new_checkpoint_key_is_introduced_by_the_previous_one() {
    let tmp = tempdir();
    let mut config = config(tmp.path());
    let old_pem = generate_key_pem().unwrap();
    config.signing_key = Some(sekisho_config::SecretString::new(old_pem.clone()));
    let old_key = {
        let log = AuditLog::open(&config, tmp.path()).unwrap();
        log.record(event(0, "/before")).unwrap();
        log.close();
        log.public_key()
    };
    config.signing_key = Some(sekisho_config::SecretString::new(
        generate_key_pem().unwrap(),
    ));
    // A new key alone is refused: nothing in the chain vouches for it.
    match AuditLog::open(&config, tmp.path()) {
        Err(OpenError::KeyNotIntroduced { chain, new }) => {
            assert_eq!(chain, chain::key_id(&old_key));
            assert_ne!(chain, new);
        }
        other => panic!("expected KeyNotIntroduced, got {other:?}"),
    }
    config.previous_signing_key = Some(sekisho_config::SecretString::new(old_pem));
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    log.record(event(1, "/after")).unwrap();
    log.flush().unwrap();
    assert_eq!(log.public_keys().len(), 2);
    assert_eq!(log.public_keys()[0], old_key);
    let published = std::fs::read_to_string(config.dir.join("audit-signing.pub")).unwrap();
    assert_eq!(parse_public_keys(&published), log.public_keys());
    let lines = all_lines(&config.dir);
    assert!(
        lines.iter().any(|l| l.contains("\"type\":\"key\"")),
        "a key-introduction record"
    );
    let mut both = chain::Verifier::with_keys(log.public_keys().to_vec(), true);
    lines.iter().for_each(|l| {
        both.feed(l);
    });
    let report = both.result();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.keys_introduced, 1);
    let new_only = chain::verify(lines.iter().map(String::as_str), &log.public_key(), true);
    assert!(
        new_only.first_break.is_some(),
        "the old key's checkpoints need the old key"
    );
    // Restarting with the new key needs no second introduction.
    log.close();
    config.previous_signing_key = None;
    AuditLog::open(&config, tmp.path()).unwrap().close();
}

#[test]
fn the_newest_checkpoint_is_kept_as_the_head_and_a_log_cut_back_does_not_reopen() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempdir();
    let config = config(tmp.path());
    let first_checkpoint_len;
    {
        let log = AuditLog::open(&config, tmp.path()).unwrap();
        for i in 0..5 {
            log.record(event(i, "/a")).unwrap();
        }
        log.flush().unwrap();
        first_checkpoint_len = std::fs::metadata(&log_files(&config.dir).unwrap()[0].path)
            .unwrap()
            .len();
        for i in 5..10 {
            log.record(event(i, "/b")).unwrap();
        }
        log.close();
    }
    let head_path = head_path(tmp.path());
    let head = chain::Head::parse(&std::fs::read_to_string(&head_path).unwrap()).unwrap();
    let lines = all_lines(&config.dir);
    assert_eq!(
        head.line(),
        lines.last().unwrap(),
        "the head is the last checkpoint"
    );
    assert_eq!(
        std::fs::metadata(&head_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Cut back to the first checkpoint (seq 5): the writer refuses to continue the chain.
    let file = &log_files(&config.dir).unwrap()[0].path;
    File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(first_checkpoint_len)
        .unwrap();
    match AuditLog::open(&config, tmp.path()) {
        Err(e @ OpenError::Truncated { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(
                    "log ends at seq 5; the signed head says 11: records 6–11 are missing"
                ),
                "{text}"
            );
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // A different line at the head's seq is a rewrite.
    let mut rewritten = lines.clone();
    let last = rewritten.pop().unwrap();
    rewritten.push(last.replacen(",\"time\":\"", ",\"time\":\"1", 1));
    std::fs::write(file, rewritten.join("\n") + "\n").unwrap();
    assert!(matches!(
        AuditLog::open(&config, tmp.path()),
        Err(OpenError::Rewritten { seq: 11, .. })
    ));
}

#[test]
fn an_idle_log_gets_heartbeat_checkpoints() {
    let tmp = tempdir();
    let mut config = config(tmp.path());
    config.checkpoint_interval = Duration::from_millis(20);
    config.heartbeat_multiple = 2;
    let log = AuditLog::open(&config, tmp.path()).unwrap();
    log.record(event(0, "/a")).unwrap();
    log.flush().unwrap();
    let after_flush = log.metrics().checkpoints.load(Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.metrics().checkpoints.load(Ordering::Relaxed) < after_flush + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat checkpoint while idle"
        );
        std::thread::park_timeout(Duration::from_millis(10));
    }
    log.close();
    let report = verify_dir(&config.dir, &log);
    assert!(report.is_intact(), "{report:?}");
}
