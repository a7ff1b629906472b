//! Audit log throughput and query speed: `cargo bench -p sekisho --bench audit`.
//!
//! Prints a table: sustained records/s through the real writer (hash chain, index, files on
//! disk) in batched mode from 2 producer threads; strict mode (every record fdatasync'ed
//! before its commit returns, group commit) from 64 concurrent committers, with commit latency
//! p50/p99; and `audit query` over a day of records (864,000: 10 requests/s) with the index
//! and with it removed. Set `SEKISHO_BENCH_DIR` to put the files on a particular disk.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark: panics are the failure report"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sekisho::audit::query::{Filter, query};
use sekisho::audit::{Actor, AuditLog, Decision, Event, HttpEvent, Query, Refused};
use sekisho::session::Identity;
use sekisho_config::{Audit, Durability, OnFailure};

fn config(dir: &Path, durability: Durability) -> Audit {
    Audit {
        dir: dir.join("audit"),
        durability,
        batch_window: Duration::from_millis(200),
        on_failure: OnFailure::Deny,
        rotate_size: 128 << 20,
        rotate_interval: Duration::from_secs(86_400),
        retention: Duration::from_secs(86_400 * 90),
        checkpoint_interval: Duration::from_secs(5),
        heartbeat_multiple: 12,
        signing_key: None,
        previous_signing_key: None,
        queue: 65_536,
        record_query: false,
        otlp: None,
    }
}

fn identities() -> &'static [Arc<Identity>] {
    static IDENTITIES: OnceLock<Vec<Arc<Identity>>> = OnceLock::new();
    IDENTITIES.get_or_init(|| {
        (0..200)
            .map(|u| {
                Arc::new(Identity {
                    sub: format!("user-{u}"),
                    email: Some(format!("user{u}@example.com")),
                    name: Some(format!("User {u}")),
                    groups: vec!["eng".into(), format!("team-{}", u % 10)],
                    issuer: "https://idp.example.com".into(),
                    email_verified: Some(true),
                    claims: serde_json::Map::new(),
                    provider_sid: None,
                })
            })
            .collect()
    })
}

/// A realistic request record: 200 users, each active in bursts of 500 requests, 20 routes,
/// 1 in 20 requests denied.
fn event(i: u64, time: jiff::Timestamp) -> Event {
    let user = (i / 500) % 200;
    let route = i % 20;
    let denied = i % 20 == 7;
    Event::Http(Box::new(HttpEvent {
        time,
        request_id: format!("bench-{i}"),
        method: http::Method::GET,
        version: http::Version::HTTP_11,
        scheme: "https",
        host: format!("app{route}.corp.example.com"),
        port: None,
        path: format!("/api/v1/items/{}", i % 1000),
        query: Query::Redacted,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0".into()),
        peer: format!("10.0.{}.{}:443", user / 250, user % 250)
            .parse()
            .unwrap(),
        client_ip: format!("10.0.{}.{}", user / 250, user % 250)
            .parse()
            .unwrap(),
        tls_version: Some("1.3"),
        client_certificate: None,
        route: Some(Arc::from(format!("route-{route}").as_str())),
        decision: if denied {
            Decision::Deny
        } else {
            Decision::Allow
        },
        policy: Some(Arc::from("policies.engineering")),
        rule: Some(if denied {
            "not allowed: policies.engineering.allow.and[0] groups has \"eng\" is false".into()
        } else {
            "allowed by policies.engineering.allow and (2 rules)".into()
        }),
        report_only_deny: false,
        actor: Some(Actor::Bearer {
            identity: identities()[user as usize].clone(),
            token_hash: "k3Jx0sZ9bQ1mT7aP".into(),
        }),
        upstream: Some(format!("10.1.0.{route}:8080")),
        upstream_connection: None,
        door: sekisho::audit::Door::Proxy,
        status: if denied { 403 } else { 200 },
        detail: None,
        bytes_in: None,
        bytes_out: Some(1234),
        latency: Duration::from_micros(900),
        container: None,
        upstream_container: None,
        attribution_unavailable: false,
    }))
}

fn fresh_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("SEKISHO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("sekisho-audit-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Records/s through the batched writer from `producers` threads; (records/s, bytes/record).
fn batched(records: u64, producers: u64, spread: Option<Duration>) -> (f64, f64, PathBuf) {
    let dir = fresh_dir("batched");
    let log = Arc::new(AuditLog::open(&config(&dir, Durability::Batched), &dir).unwrap());
    let start_time = jiff::Timestamp::now();
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut i = p;
                while i < records {
                    // Spread record times over `spread` (a day of traffic written fast).
                    let time = match spread {
                        Some(spread) => {
                            let offset = spread.as_millis() as i64 * i as i64 / records as i64;
                            start_time
                                .checked_sub(jiff::SignedDuration::from_millis(
                                    spread.as_millis() as i64 - offset,
                                ))
                                .unwrap()
                        }
                        None => jiff::Timestamp::now(),
                    };
                    let mut event = event(i, time);
                    loop {
                        match log.record(event) {
                            Ok(()) => break,
                            Err(Refused::QueueFull) => {
                                std::thread::yield_now();
                                event = self::event(i, time);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    i += producers;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.flush().unwrap();
    let elapsed = started.elapsed();
    let audit_dir = log.dir().to_owned();
    drop(log);
    let bytes = dir_size(&audit_dir) as f64;
    (
        records as f64 / elapsed.as_secs_f64(),
        bytes / records as f64,
        dir,
    )
}

/// Strict mode from `committers` concurrent tasks for `duration`; (records/s, p50 µs, p99 µs).
fn strict(committers: u64, duration: Duration) -> (f64, f64, f64) {
    let dir = fresh_dir("strict");
    let log = Arc::new(AuditLog::open(&config(&dir, Durability::Strict), &dir).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let latencies = runtime.block_on(async {
        let deadline = Instant::now() + duration;
        let tasks: Vec<_> = (0..committers)
            .map(|c| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut i = c;
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        log.commit(event(i, jiff::Timestamp::now())).await.unwrap();
                        latencies.push(started.elapsed());
                        i += committers;
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let mut micros: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q) as usize];
    let rate = micros.len() as f64 / duration.as_secs_f64();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    (rate, at(0.5), at(0.99))
}

fn timed_query(dir: &Path, filter: &Filter) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut matched = 0;
    for _ in 0..5 {
        let started = Instant::now();
        matched = query(dir, filter, 100).unwrap().matched;
        times.push(started.elapsed());
    }
    times.sort();
    (times[2], matched)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it: then only
    // a smoke run, so that the test suite checks the benchmark still works without running it.
    if !std::env::args().any(|a| a == "--bench") {
        let (rate, _, dir) = batched(2_000, 2, None);
        let found = query(&dir.join("audit"), &Filter::default(), 10).unwrap();
        assert_eq!(found.matched, 2_000);
        let (strict_rate, _, _) = strict(4, Duration::from_millis(200));
        assert!(rate > 0.0 && strict_rate > 0.0);
        let _ = std::fs::remove_dir_all(dir);
        println!(
            "audit benchmark smoke run ok (run `cargo bench -p sekisho --bench audit` to measure)"
        );
        return;
    }
    println!("| measurement | result |");
    println!("|---|---|");
    let mut rates = Vec::new();
    for _ in 0..3 {
        let (rate, per_record, dir) = batched(300_000, 2, None);
        rates.push((rate, per_record));
        let _ = std::fs::remove_dir_all(dir);
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "| batched, 300,000 records, 2 producers (median of 3) | {:.0} records/s, {:.0} bytes/record |",
        rates[1].0, rates[1].1
    );
    let (rate, p50, p99) = strict(64, Duration::from_secs(5));
    println!(
        "| strict, 64 concurrent committers, 5 s | {rate:.0} records/s; commit p50 {p50:.0} µs, p99 {p99:.0} µs |"
    );

    let (rate, _, dir) = batched(864_000, 2, Some(Duration::from_secs(86_400)));
    let audit = dir.join("audit");
    println!(
        "| a day of records written (864,000) | {rate:.0} records/s, {} MB |",
        dir_size(&audit) >> 20
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let selective = Filter {
        user: Some("user77@example.com".into()),
        decision: Some("deny".into()),
        since_ms: Some(now - 3_600_000 * 24),
        ..Filter::default()
    };
    let (took, matched) = timed_query(&audit, &selective);
    println!(
        "| query --user user77@example.com --decision deny --since 24h (indexed) | {:.1} ms, {matched} matches |",
        took.as_secs_f64() * 1e3
    );
    let last_hour = Filter {
        route: Some("route-3".into()),
        since_ms: Some(now - 3_600_000),
        ..Filter::default()
    };
    let (took, matched) = timed_query(&audit, &last_hour);
    println!(
        "| query --route route-3 --since 1h (indexed) | {:.1} ms, {matched} matches |",
        took.as_secs_f64() * 1e3
    );
    for entry in std::fs::read_dir(&audit).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "idx") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (took, matched) = timed_query(&audit, &selective);
    println!(
        "| the same selective query without the index (full scan) | {:.1} ms, {matched} matches |",
        took.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(dir);
}
