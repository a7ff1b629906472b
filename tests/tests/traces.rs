//! Observability end to end: request spans exported over OTLP/HTTP to a receiver decoding
//! with the OpenTelemetry project's own bindings (`tests/interop/otlp_receiver.py`), the W3C
//! `traceparent` the upstream (the echo server) receives, and `/metrics` on the admin
//! listener.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::path::{Path, PathBuf};

use sekisho_tests::{IdpOptions, Process, no_redirect_client, stack};
use serde_json::Value;

/// A client's trace: a sampled parent.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const ROUTES: &str = "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n\
                      \x20 - id: down\n    from: http://127.0.0.1/down\n    to: http://127.0.0.1:1\n";
const ADMIN: &str = "admin:\n  listen: 127.0.0.1:0\n  policy: admins\npolicies:\n  admins:\n    allow:\n      and:\n        - groups: {has: admins}\n";
/// `kind` of a server span.
const SERVER: u64 = 2;
/// `status.code` of a failed span.
const STATUS_ERROR: u64 = 2;

fn client_parent(flags: &str) -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}")
}

/// An OTLP receiver writing what it receives to a file.
struct Receiver {
    _process: Process,
    _dir: tempfile::TempDir,
    received: PathBuf,
    endpoint: String,
}

impl Receiver {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let received = dir.path().join("received.jsonl");
        let mut command = tokio::process::Command::new("python3");
        command
            .arg(sekisho_tests::workspace().join("tests/interop/otlp_receiver.py"))
            .arg(&received);
        let (process, ready) =
            Process::spawn("otlp-receiver", command, dir.path().join("receiver.log")).await;
        let endpoint = format!("http://{}/v1/traces", ready["http"].as_str().unwrap());
        Receiver {
            _process: process,
            _dir: dir,
            received,
            endpoint,
        }
    }

    /// `tracing:` exporting here, sampling `ratio` of new traces.
    fn yaml(&self, ratio: &str) -> String {
        format!(
            "tracing:\n  otlp:\n    endpoint: {}\n    headers:\n      authorization: Bearer trace-secret\n  sample_ratio: {ratio}\n",
            self.endpoint
        )
    }

    fn spans(&self) -> Vec<Value> {
        spans_in(&self.received)
    }

    /// The span of request `id`, once it arrives.
    async fn span_of(&self, id: &str) -> Value {
        let mut found = None;
        sekisho_tests::eventually(&format!("the span of {id} reaches the receiver"), || {
            found = self
                .spans()
                .into_iter()
                .find(|s| s["attributes"]["sekisho.request_id"] == id);
            let done = found.is_some();
            async move { done }
        })
        .await;
        found.unwrap()
    }
}

fn spans_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["signal"] == "span")
        .collect()
}

/// What one request got: status, request id, and the echo's description (when forwarded).
struct Sent {
    status: u16,
    id: String,
    echoed: Option<Value>,
}

impl Sent {
    /// The values of header `name` the upstream received.
    fn upstream_header(&self, name: &str) -> Vec<String> {
        self.echoed.as_ref().expect("forwarded")["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    }

    /// The one `traceparent` the upstream received: (trace id, parent id, flags).
    fn upstream_parent(&self) -> (String, String, String) {
        let values = self.upstream_header("traceparent");
        assert_eq!(values.len(), 1, "exactly one traceparent: {values:?}");
        let parts: Vec<&str> = values[0].split('-').collect();
        assert_eq!(parts.len(), 4, "{values:?}");
        assert_eq!(parts[0], "00");
        (parts[1].into(), parts[2].into(), parts[3].into())
    }
}

async fn send(url: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Sent {
    let mut request = no_redirect_client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let forwarded = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
    let echoed = if forwarded && status == 200 {
        Some(response.json().await.unwrap())
    } else {
        None
    };
    Sent { status, id, echoed }
}

fn event_names(span: &Value) -> Vec<String> {
    span["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn event<'a>(span: &'a Value, name: &str) -> &'a Value {
    span["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no event {name} in {span}"))
}

#[tokio::test]
async fn each_request_is_a_span_whose_id_the_upstream_receives_as_its_parent() {
    let receiver = Receiver::start().await;
    let yaml = receiver.yaml("1.0");
    let (idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", move |o| {
        o.routes_yaml = ROUTES.into();
        o.extra_yaml = yaml;
    })
    .await;
    let base = proxy.base();
    let token = idp.bearer("alice").await;

    // A signed-in request; the client's traceparent comes from an untrusted peer.
    let sent = send(
        &format!("{base}/traced/./page?q=secret"),
        Some(&token),
        &[
            ("traceparent", &client_parent("01")),
            ("tracestate", "vendor=spoofed"),
        ],
    )
    .await;
    assert_eq!(sent.status, 200);
    let span = receiver.span_of(&sent.id).await;
    assert_eq!(span["name"], "GET app", "method and route, never the path");
    assert_eq!(span["kind"], SERVER);
    assert_eq!(span["authorization"], "Bearer trace-secret");
    assert_eq!(span["resource"]["service.name"], "sekisho");
    let attributes = &span["attributes"];
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(
        attributes["url.path"], "/traced/page",
        "normalised, no query"
    );
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["server.address"], "127.0.0.1");
    assert_eq!(attributes["network.protocol.version"], "1.1");
    assert_eq!(attributes["sekisho.route"], "app");
    assert_eq!(attributes["sekisho.decision"], "allow");
    let text = format!("{} {}", span["attributes"], span["events"]);
    assert!(
        !text.contains("alice") && !text.contains("secret"),
        "no user, no query: {text}"
    );
    assert_ne!(span["status_code"], STATUS_ERROR);
    assert_eq!(
        event_names(&span),
        [
            "route matched",
            "credential checked",
            "policy decided",
            "upstream request sent",
            "upstream response headers received",
            "audit record committed"
        ]
    );
    assert_eq!(
        event(&span, "credential checked")["attributes"]["sekisho.credential"],
        "bearer"
    );
    assert_eq!(
        event(&span, "upstream response headers received")["attributes"]["http.response.status_code"],
        200
    );
    // The client's trace was not believed: a new trace, no parent.
    assert_ne!(span["trace_id"], CLIENT_TRACE);
    assert_eq!(span["parent_span_id"], "");
    assert_eq!(span["trace_state"], "");
    // The upstream's parent is sekisho's span; the client's headers did not pass.
    let (trace, parent, flags) = sent.upstream_parent();
    assert_eq!(trace, span["trace_id"].as_str().unwrap());
    assert_eq!(parent, span["span_id"].as_str().unwrap());
    assert_eq!(flags, "01");
    assert!(sent.upstream_header("tracestate").is_empty());

    // A malformed traceparent is replaced, never an error.
    let sent = send(
        &format!("{base}/malformed"),
        Some(&token),
        &[(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    assert_eq!(sent.status, 200);
    let span = receiver.span_of(&sent.id).await;
    let (trace, parent, _) = sent.upstream_parent();
    assert_eq!(
        (trace.as_str(), parent.as_str()),
        (
            span["trace_id"].as_str().unwrap(),
            span["span_id"].as_str().unwrap()
        )
    );
    assert_ne!(
        trace.to_ascii_uppercase(),
        CLIENT_TRACE.to_ascii_uppercase()
    );

    // Refusals are spans too, with the refusal as an event.
    let sent = send(&format!("{base}/private"), None, &[]).await;
    assert_eq!(sent.status, 401);
    let span = receiver.span_of(&sent.id).await;
    assert_eq!(span["attributes"]["sekisho.decision"], "unauthenticated");
    assert_eq!(
        event(&span, "refused")["attributes"]["sekisho.refusal"],
        "unauthenticated"
    );
    assert_eq!(
        event(&span, "credential checked")["attributes"]["sekisho.credential"],
        "none"
    );

    // A 5xx marks the span failed.
    let sent = send(&format!("{base}/down/x"), Some(&token), &[]).await;
    assert_eq!(sent.status, 502);
    let span = receiver.span_of(&sent.id).await;
    assert_eq!(span["name"], "GET down");
    assert_eq!(span["status_code"], STATUS_ERROR);
    assert_eq!(span["attributes"]["error.type"], "502");
    assert_eq!(
        event(&span, "refused")["attributes"]["error.type"],
        "bad_gateway"
    );

    // Requests on no route are named by their method alone.
    let sent = send(&format!("{base}/.sekisho/nothing-here"), None, &[]).await;
    let span = receiver.span_of(&sent.id).await;
    assert_eq!(span["name"], "GET", "{span}");
    assert!(span["attributes"]["sekisho.route"].is_null());
    proxy.terminate().await;
}

#[tokio::test]
async fn a_trusted_proxy_continues_its_trace_and_its_sampling_decides() {
    let receiver = Receiver::start().await;
    // Sampling 0: only a trusted parent's sampled flag brings spans.
    let yaml = format!("{}{ADMIN}", receiver.yaml("0"));
    let (idp, _echo, mut proxy) = stack(IdpOptions::default(), "RS256", move |o| {
        o.server_yaml = "  trusted_proxies: [127.0.0.1]\n".to_owned();
        o.extra_yaml = yaml;
    })
    .await;
    let base = proxy.base();
    let token = idp.bearer("alice").await;

    let sent = send(
        &format!("{base}/continued"),
        Some(&token),
        &[
            ("traceparent", &client_parent("01")),
            ("tracestate", "vendor=1,other=2"),
        ],
    )
    .await;
    assert_eq!(sent.status, 200);
    let span = receiver.span_of(&sent.id).await;
    assert_eq!(span["trace_id"], CLIENT_TRACE, "the trusted caller's trace");
    assert_eq!(
        span["parent_span_id"], CLIENT_SPAN,
        "under the caller's span"
    );
    assert_eq!(span["trace_state"], "vendor=1,other=2");
    let (trace, parent, flags) = sent.upstream_parent();
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(parent, span["span_id"].as_str().unwrap());
    assert_ne!(parent, CLIENT_SPAN);
    assert_eq!(flags, "01");
    assert_eq!(sent.upstream_header("tracestate"), ["vendor=1,other=2"]);

    // The caller did not sample: no span, and the upstream hears so.
    let unsampled = send(
        &format!("{base}/unsampled"),
        Some(&token),
        &[("traceparent", &client_parent("00"))],
    )
    .await;
    let (trace, parent, flags) = unsampled.upstream_parent();
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    assert_ne!(parent, CLIENT_SPAN);

    // A malformed one from the trusted proxy: a new trace (ratio 0: unsampled), its
    // tracestate dropped.
    let malformed = send(
        &format!("{base}/malformed"),
        Some(&token),
        &[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=1"),
        ],
    )
    .await;
    let (trace, _, flags) = malformed.upstream_parent();
    assert_ne!(trace, "00000000000000000000000000000000");
    assert_ne!(trace, CLIENT_TRACE);
    assert_eq!(flags, "00");
    assert!(malformed.upstream_header("tracestate").is_empty());

    // No parent at all, ratio 0: not sampled, yet the upstream gets sekisho's ids.
    let fresh = send(&format!("{base}/fresh"), Some(&token), &[]).await;
    let (_, _, flags) = fresh.upstream_parent();
    assert_eq!(flags, "00");

    // The exporter flushes at shutdown: after it, only the sampled request has a span.
    let admin = format!("http://{}", proxy.admin.unwrap());
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nsekisho_trace_spans_dropped_total 0\n"),
        "{metrics}"
    );
    proxy.terminate().await;
    let ids: Vec<String> = receiver
        .spans()
        .iter()
        .map(|s| {
            s["attributes"]["sekisho.request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(ids.contains(&sent.id));
    for unsampled in [&unsampled.id, &malformed.id, &fresh.id] {
        assert!(
            !ids.contains(unsampled),
            "{unsampled} was not sampled: {ids:?}"
        );
    }
}

/// The value of the sample `line` (a full series name with labels) in `metrics`, 0 if absent.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_count_latencies_by_route_and_decision_and_failures_by_reason() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = ADMIN.into();
    })
    .await;
    let base = proxy.base();
    let admin = format!("http://{}", proxy.admin.unwrap());
    let metrics = || async {
        reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let allowed = "sekisho_request_duration_seconds_count{route=\"app\",decision=\"allow\"}";
    let unauthenticated =
        "sekisho_request_duration_seconds_count{route=\"app\",decision=\"unauthenticated\"}";
    let bad_cookie = "sekisho_auth_failures_total{reason=\"cookie_invalid\"}";
    let before = metrics().await;
    assert!(before.contains("# TYPE sekisho_request_duration_seconds histogram"));
    assert!(before.contains("\nsekisho_audit_queue_depth "), "{before}");
    assert!(before.contains("sekisho_session_refresh_total{outcome=\"refreshed\"}"));
    assert!(before.contains("sekisho_provider_fetch_errors_total{kind=\"jwks\"}"));
    assert!(
        !before.contains("sekisho_trace_spans_dropped_total"),
        "tracing is off"
    );

    let token = idp.bearer("alice").await;
    for _ in 0..3 {
        // Tracing is off: a client's trace headers still never reach the upstream.
        let sent = send(
            &format!("{base}/a"),
            Some(&token),
            &[
                ("traceparent", &client_parent("01")),
                ("tracestate", "vendor=spoofed"),
            ],
        )
        .await;
        assert_eq!(sent.status, 200);
        assert!(sent.upstream_header("traceparent").is_empty());
        assert!(sent.upstream_header("tracestate").is_empty());
    }
    let refused = send(
        &format!("{base}/b"),
        None,
        &[("cookie", "_sekisho=not-a-sealed-session")],
    )
    .await;
    assert_eq!(refused.status, 401);

    let after = metrics().await;
    assert_eq!(
        sample(&after, allowed),
        sample(&before, allowed) + 3,
        "{after}"
    );
    assert_eq!(
        sample(&after, unauthenticated),
        sample(&before, unauthenticated) + 1
    );
    assert_eq!(sample(&after, bad_cookie), sample(&before, bad_cookie) + 1);
    // Buckets are cumulative and end at +Inf, which equals the count.
    let inf =
        "sekisho_request_duration_seconds_bucket{route=\"app\",decision=\"allow\",le=\"+Inf\"}";
    assert_eq!(sample(&after, inf), sample(&after, allowed));
    let fast =
        "sekisho_request_duration_seconds_bucket{route=\"app\",decision=\"allow\",le=\"0.0005\"}";
    assert!(sample(&after, fast) <= sample(&after, inf));
    // Labels are route ids and fixed words: the paths asked for appear nowhere.
    assert!(!after.contains("/a\"") && !after.contains("/b\""));
}
