//! Operator metrics: the request path's counters and the Prometheus text of `/metrics` on the
//! admin listener (these counters and the audit log's). The request path's histograms and
//! labelled counters live in `metrics/requests.rs`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Response;
use http::header::{self, HeaderValue};

use crate::audit::AuditLog;
use crate::error::{ProxyBody, full};
use crate::xdp::NicStatus;

mod requests;
pub use requests::{
    AuthFailure, AuthFailures, FetchErrors, Histogram, NO_ROUTE, RefreshCounts, RequestDurations,
    RouteDurations, Sources,
};

/// Counters exposed for operators (and asserted by tests).
#[derive(Debug, Default)]
pub struct Counters {
    /// Session cookies that did not decrypt or parse.
    pub invalid_cookies: AtomicU64,
    /// Bearer tokens rejected.
    pub rejected_tokens: AtomicU64,
    /// Callbacks refused (bad state, replay, failed exchange).
    pub rejected_callbacks: AtomicU64,
    /// Requests forwarded upstream.
    pub forwarded: AtomicU64,
    /// Client connections open now (gauge).
    pub connections_open: AtomicU64,
    /// HTTP/1.1 connections idle and parked, holding no buffers (gauge; see `server/conn.rs`).
    pub connections_parked: AtomicU64,
    /// Back-channel logout tokens accepted (the sessions they name ended).
    pub backchannel_accepted: AtomicU64,
    /// Back-channel logout requests refused (a bad token or request: 400, 405).
    pub backchannel_refused: AtomicU64,
    /// Back-channel logout tokens that could not be checked or carried out (503, 500).
    pub backchannel_failed: AtomicU64,
    /// Request latencies by route and decision.
    pub durations: RequestDurations,
    /// Credentials refused, by reason.
    pub auth_failures: AuthFailures,
}

/// `/metrics`, in the Prometheus text format.
pub fn render(
    audit: &AuditLog,
    counters: &Counters,
    nic: &NicStatus,
    attribution: &crate::attribution::AttributionStatus,
    readiness: &crate::health::Readiness,
    sources: &Sources<'_>,
) -> Response<ProxyBody> {
    let m = audit.metrics();
    let mut text = String::new();
    let _ = write!(
        text,
        "# HELP sekisho_ready 1 when every required readiness check passes (/readyz answers 200).\n# TYPE sekisho_ready gauge\nsekisho_ready {}\n# HELP sekisho_readiness_check_failing 1 while the readiness check fails.\n# TYPE sekisho_readiness_check_failing gauge\n",
        u8::from(readiness.ready())
    );
    for check in &readiness.checks {
        let _ = writeln!(
            text,
            "sekisho_readiness_check_failing{{check=\"{}\"}} {}",
            check.name,
            u8::from(check.status == crate::health::Status::Failing)
        );
    }
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        );
    };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    counter(
        "sekisho_audit_records_written_total",
        "Audit records written to disk.",
        load(&m.records_written),
    );
    counter(
        "sekisho_audit_records_dropped_total",
        "Audit records lost (queue or retry buffer full).",
        load(&m.records_dropped),
    );
    counter(
        "sekisho_audit_write_failures_total",
        "Audit writes or syncs that failed.",
        load(&m.write_failures),
    );
    counter(
        "sekisho_audit_queue_full_total",
        "Audit records refused because the writer was behind.",
        load(&m.queue_full),
    );
    counter(
        "sekisho_audit_checkpoints_total",
        "Signed audit checkpoints written.",
        load(&m.checkpoints),
    );
    counter(
        "sekisho_audit_syncs_total",
        "fdatasync calls on audit files.",
        load(&m.syncs),
    );
    counter(
        "sekisho_audit_requests_refused_total",
        "Requests answered 503 because their audit record could not be written.",
        load(&m.requests_refused),
    );
    counter(
        "sekisho_requests_forwarded_total",
        "Requests forwarded upstream.",
        load(&counters.forwarded),
    );
    counter(
        "sekisho_invalid_cookies_total",
        "Session cookies that did not decrypt or parse.",
        load(&counters.invalid_cookies),
    );
    counter(
        "sekisho_rejected_tokens_total",
        "Bearer tokens rejected.",
        load(&counters.rejected_tokens),
    );
    counter(
        "sekisho_rejected_callbacks_total",
        "Login callbacks refused.",
        load(&counters.rejected_callbacks),
    );
    if let Some(export) = audit.export_metrics() {
        counter(
            "sekisho_audit_otlp_exported_total",
            "Audit records the OTLP collector accepted.",
            load(&export.exported),
        );
        counter(
            "sekisho_audit_otlp_dropped_total",
            "Audit records not exported (exporter behind, or refused by the collector).",
            load(&export.dropped),
        );
        counter(
            "sekisho_audit_otlp_failures_total",
            "OTLP export requests that failed.",
            load(&export.failures),
        );
    }
    let _ = write!(
        text,
        "# HELP sekisho_backchannel_logouts_total Back-channel logout requests from the provider, by outcome.\n# TYPE sekisho_backchannel_logouts_total counter\nsekisho_backchannel_logouts_total{{outcome=\"accepted\"}} {}\nsekisho_backchannel_logouts_total{{outcome=\"refused\"}} {}\nsekisho_backchannel_logouts_total{{outcome=\"failed\"}} {}\n",
        load(&counters.backchannel_accepted),
        load(&counters.backchannel_refused),
        load(&counters.backchannel_failed),
    );
    let _ = write!(
        text,
        "# HELP sekisho_audit_failing 1 while audit records cannot be written.\n# TYPE sekisho_audit_failing gauge\nsekisho_audit_failing {}\n",
        u8::from(audit.failure().is_some())
    );
    let gauge = |text: &mut String, name: &str, help: &str, value: u64| {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    };
    gauge(
        &mut text,
        "sekisho_connections_open",
        "Client connections open (all listeners).",
        load(&counters.connections_open),
    );
    gauge(
        &mut text,
        "sekisho_connections_parked",
        "Idle HTTP/1.1 keep-alive connections parked without buffers.",
        load(&counters.connections_parked),
    );
    match nic {
        NicStatus::Off => {}
        NicStatus::Failed(_) => gauge(
            &mut text,
            "sekisho_xdp_attached",
            "1 while the XDP guard is attached to its interfaces.",
            0,
        ),
        NicStatus::Attached(guard) => {
            gauge(
                &mut text,
                "sekisho_xdp_attached",
                "1 while the XDP guard is attached to its interfaces.",
                1,
            );
            gauge(
                &mut text,
                "sekisho_xdp_admitted_sources",
                "Addresses the XDP guard admits for a live session.",
                u64::try_from(guard.admitted_sources()).unwrap_or(u64::MAX),
            );
            let c = &guard.counters;
            for (name, help, value) in [
                (
                    "sekisho_xdp_admissions_total",
                    "Sources admitted to the protected ports, or their admission extended.",
                    &c.admissions,
                ),
                (
                    "sekisho_xdp_withdrawals_total",
                    "Sources withdrawn when their last session ended.",
                    &c.withdrawals,
                ),
                (
                    "sekisho_xdp_map_failures_total",
                    "XDP guard map writes that failed.",
                    &c.failures,
                ),
                (
                    "sekisho_xdp_drop_records_total",
                    "Audit records summarising the XDP guard's drops (per source and minute).",
                    &c.drop_records,
                ),
            ] {
                let _ = write!(
                    text,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                    value.load(Ordering::Relaxed)
                );
            }
            let k = guard.kernel_counters();
            let _ = write!(
                text,
                "# HELP sekisho_xdp_frames_total Frames the XDP program judged, by verdict (all interfaces).\n# TYPE sekisho_xdp_frames_total counter\nsekisho_xdp_frames_total{{verdict=\"pass\"}} {}\nsekisho_xdp_frames_total{{verdict=\"drop\"}} {}\n",
                k.passed, k.dropped
            );
            let _ = write!(
                text,
                "# HELP sekisho_xdp_malformed_frames_total Frames with truncated or inconsistent headers (also counted by verdict).\n# TYPE sekisho_xdp_malformed_frames_total counter\nsekisho_xdp_malformed_frames_total {}\n",
                k.malformed
            );
            let _ = write!(
                text,
                "# HELP sekisho_xdp_dropped_frames_total Frames the XDP program dropped, by reason.\n# TYPE sekisho_xdp_dropped_frames_total counter\n"
            );
            for (reason, n) in &k.dropped_by {
                let _ = writeln!(
                    text,
                    "sekisho_xdp_dropped_frames_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
    }
    match attribution {
        crate::attribution::AttributionStatus::Off => {}
        crate::attribution::AttributionStatus::Unavailable(_) => gauge(
            &mut text,
            "sekisho_attribution_available",
            "1 while the socket hooks attribute connections to their containers.",
            0,
        ),
        crate::attribution::AttributionStatus::Active(a) => {
            gauge(
                &mut text,
                "sekisho_attribution_available",
                "1 while the socket hooks attribute connections to their containers.",
                1,
            );
            let c = &a.counters;
            let cache = a.cache();
            let _ = write!(
                text,
                "# HELP sekisho_attribution_lookups_total Connection lookups, by result.\n# TYPE sekisho_attribution_lookups_total counter\nsekisho_attribution_lookups_total{{result=\"hit\"}} {}\nsekisho_attribution_lookups_total{{result=\"miss\"}} {}\nsekisho_attribution_lookups_total{{result=\"error\"}} {}\n",
                c.hits.load(Ordering::Relaxed),
                c.misses.load(Ordering::Relaxed),
                c.failures.load(Ordering::Relaxed)
            );
            let _ = write!(
                text,
                "# HELP sekisho_attribution_cgroup_cache_total cgroup id to path resolutions, by result, and walks of the cgroup tree.\n# TYPE sekisho_attribution_cgroup_cache_total counter\nsekisho_attribution_cgroup_cache_total{{result=\"hit\"}} {}\nsekisho_attribution_cgroup_cache_total{{result=\"miss\"}} {}\nsekisho_attribution_cgroup_cache_total{{result=\"rescan\"}} {}\n",
                cache.hits, cache.misses, cache.rescans
            );
            let _ = write!(
                text,
                "# HELP sekisho_attribution_bypass_attempts_total Connections to protected upstreams from outside sekisho.\n# TYPE sekisho_attribution_bypass_attempts_total counter\nsekisho_attribution_bypass_attempts_total {}\n",
                c.bypasses.load(Ordering::Relaxed)
            );
        }
    }
    if let Some(shared) = sources.shared {
        shared.render_metrics(&mut text);
    }
    requests::render(&mut text, counters, sources);
    crate::upstream::write_metrics(sources.upstreams, &mut text);
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
