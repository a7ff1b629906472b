//! "Compiled at load time into an evaluator that allocates nothing per request": counts heap
//! allocations made by the deciding thread while it evaluates a policy of every non-Rego
//! criterion, for an allowed and for a denied request.
#![allow(
    unsafe_code,
    reason = "a counting global allocator must implement the unsafe GlobalAlloc trait"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use http::{HeaderMap, HeaderValue, Method};
use sekisho::policy::{Effect, Input, RegoEngines, decide};
use sekisho::session::Identity;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; the bookkeeping only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let value = f();
    COUNTING.with(|c| c.set(false));
    (value, COUNT.with(Cell::get))
}

const CONFIG: &str = r#"
server: {http_listen: 127.0.0.1:0}
oidc: {issuer: https://idp.example.com, client_id: sekisho, client_secret: s}
session: {keys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]}
signing: {key: {env: KEY}}
policies:
  everything:
    deny:
      or:
        - not: [{authenticated_user: true}]
        - source_ip: [203.0.113.0/24]
    allow:
      and:
        - or:
            - groups: {all_of: [eng, admins]}
            - email: {in: [root@example.com]}
        - email: {ends_with: "@example.com"}
        - domain: {is: example.com}
        - claim/department: {is: platform}
        - http_method: {in: [GET, POST]}
        - http_path: {regex: '^/api/v[0-9]+/'}
        - header/accept: {prefix: application/}
        - nor: [{header/x-debug: {present: true}}]
        - time: {days: [mon, tue, wed, thu, fri, sat, sun], hours: {from: "00:00", to: "24:00"}, time_zone: America/New_York}
routes:
  - {id: api, from: https://app.example.com, to: http://127.0.0.1:9, policy: everything}
"#;

const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----";

#[test]
fn deciding_allocates_nothing() {
    let config = sekisho_config::parse(CONFIG, Path::new("t.yaml"), &|n| {
        (n == "KEY").then(|| KEY.to_owned())
    })
    .unwrap();
    let policy = config.routes[0].policy.clone();
    let rego = RegoEngines::default();
    let identity = Identity {
        sub: "alice".into(),
        email: Some("alice@example.com".into()),
        name: None,
        groups: vec!["eng".into(), "admins".into()],
        issuer: "https://idp.example.com".into(),
        email_verified: Some(true),
        claims: serde_json::json!({"department": "platform"})
            .as_object()
            .cloned()
            .unwrap(),
        provider_sid: None,
    };
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let method = Method::GET;
    let input = Input {
        identity: Some(&identity),
        method: &method,
        host: "app.example.com",
        path: "/api/v2/items",
        source_ip: "10.0.0.1".parse().unwrap(),
        headers: &headers,
        client_certificate: None,
        now: jiff::Timestamp::now(),
    };
    // Warm up lazily initialised state (regex caches, time zone data) outside the count.
    assert_eq!(decide(&policy, &input, &rego).effect, Effect::Allow);

    let (decision, allocations) = allocations_during(|| decide(&policy, &input, &rego).effect);
    assert_eq!(decision, Effect::Allow);
    assert_eq!(allocations, 0, "an allowed decision allocated");

    let stranger = Identity {
        groups: vec!["sales".into()],
        email: Some("eve@example.org".into()),
        ..identity.clone()
    };
    let denied = Input {
        identity: Some(&stranger),
        source_ip: "203.0.113.5".parse().unwrap(),
        ..input
    };
    let (decision, allocations) = allocations_during(|| decide(&policy, &denied, &rego).effect);
    assert_eq!(decision, Effect::Deny);
    assert_eq!(allocations, 0, "a denied decision allocated");

    // The counter works: building an explanation does allocate.
    let (_, allocations) = allocations_during(|| sekisho::policy::explain(&policy, &input, &rego));
    assert!(allocations > 0);
}
