//! The request path's own metrics: latency histograms per route and decision, authentication
//! failures by reason, session refresh outcomes, provider fetch errors and the trace
//! exporter's counters. Every observation is an atomic add on memory found without a lock or
//! an allocation; labels are route ids and fixed words only, never paths or users.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::Decision;
use crate::otlp::ExportMetrics;

/// Upper bounds of the latency buckets, in nanoseconds, with their `le` labels: 0.5ms to 10s.
const BUCKETS: [(u64, &str); 14] = [
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// The label of requests that reached no configured route (sekisho's own endpoints, the
/// built-in provider, the admin listener, requests refused before routing).
pub const NO_ROUTE: &str = "(none)";

/// A latency histogram: a count per bucket (the last one above every bound) and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation: two relaxed atomic adds.
    pub fn observe(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS
            .iter()
            .position(|(bound, _)| nanos <= *bound)
            .unwrap_or(BUCKETS.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `_bucket` (cumulative), `_sum` and `_count` lines of `name{labels}`.
    pub fn render(&self, text: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        let bounds = BUCKETS.iter().map(|(_, le)| *le).chain(["+Inf"]);
        for (count, le) in self.counts.iter().zip(bounds) {
            cumulative = cumulative.saturating_add(count.load(Ordering::Relaxed));
            let _ = writeln!(text, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        // Nanoseconds as seconds, exactly (no float rounding of the integer part).
        let sum = self.sum_nanos.load(Ordering::Relaxed);
        let _ = writeln!(
            text,
            "{name}_sum{{{labels}}} {}.{:09}",
            sum / 1_000_000_000,
            sum % 1_000_000_000
        );
        let _ = writeln!(text, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Every decision, in the order of [`RouteDurations`]'s histograms.
const DECISIONS: [Decision; 6] = [
    Decision::Allow,
    Decision::Deny,
    Decision::Login,
    Decision::Unauthenticated,
    Decision::Error,
    Decision::Public,
];

/// One route's latency histograms, one per decision.
#[derive(Debug, Default)]
pub struct RouteDurations {
    by_decision: [Histogram; DECISIONS.len()],
}

impl RouteDurations {
    /// The histogram of `decision`.
    pub fn of(&self, decision: Decision) -> &Histogram {
        let index = DECISIONS
            .iter()
            .position(|d| *d == decision)
            .unwrap_or_default();
        // `index` < DECISIONS.len(), the array's length.
        self.by_decision.get(index).unwrap_or(&self.by_decision[0])
    }
}

/// Request latencies by route and decision. A route's histograms are made when a
/// configuration first names it (at start and at each reload, under a lock) and handed to the
/// routing, so that a request finds its own by index; routes removed by a reload keep their
/// series until the restart.
#[derive(Debug, Default)]
pub struct RequestDurations {
    routes: Mutex<Vec<(String, Arc<RouteDurations>)>>,
    unrouted: RouteDurations,
}

impl RequestDurations {
    /// The histograms of route `id` (made on first use).
    pub fn for_route(&self, id: &str) -> Arc<RouteDurations> {
        let Ok(mut routes) = self.routes.lock() else {
            return Arc::default();
        };
        if let Some((_, found)) = routes.iter().find(|(name, _)| name == id) {
            return found.clone();
        }
        let made = Arc::new(RouteDurations::default());
        routes.push((id.to_owned(), made.clone()));
        made
    }

    /// Counts a request: on its route's histograms, or on [`NO_ROUTE`]'s.
    pub fn observe(&self, route: Option<&RouteDurations>, decision: Decision, latency: Duration) {
        route
            .unwrap_or(&self.unrouted)
            .of(decision)
            .observe(latency);
    }

    /// Renders `sekisho_request_duration_seconds`; histograms without observations are left
    /// out.
    fn render(&self, text: &mut String) {
        let name = "sekisho_request_duration_seconds";
        let _ = write!(
            text,
            "# HELP {name} Time from a request's arrival until its response head is released (its audit record committed), by route and decision.\n# TYPE {name} histogram\n"
        );
        let mut each = |route: &str, durations: &RouteDurations| {
            for (decision, histogram) in DECISIONS.iter().zip(&durations.by_decision) {
                if histogram.count() > 0 {
                    let labels = format!(
                        "route=\"{}\",decision=\"{}\"",
                        label_value(route),
                        decision.as_str()
                    );
                    histogram.render(text, name, &labels);
                }
            }
        };
        each(NO_ROUTE, &self.unrouted);
        if let Ok(routes) = self.routes.lock() {
            for (route, durations) in routes.iter() {
                each(route, durations);
            }
        }
    }
}

/// Why a request's credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// A session cookie that did not decrypt or parse.
    CookieInvalid,
    /// A session past its absolute lifetime.
    SessionExpired,
    /// A session idle for longer than the idle lifetime.
    SessionIdle,
    /// A session signed out here (on the revocation list).
    SessionRevoked,
    /// A session whose provider session or user the provider signed out.
    ProviderLogout,
    /// A session whose refresh the provider refused.
    RefreshRefused,
    /// A bearer token that failed verification.
    BearerInvalid,
    /// A valid bearer token of a provider session signed out here or at the provider.
    BearerRevoked,
}

impl AuthFailure {
    /// Every reason, in label order.
    const ALL: [AuthFailure; 8] = [
        AuthFailure::CookieInvalid,
        AuthFailure::SessionExpired,
        AuthFailure::SessionIdle,
        AuthFailure::SessionRevoked,
        AuthFailure::ProviderLogout,
        AuthFailure::RefreshRefused,
        AuthFailure::BearerInvalid,
        AuthFailure::BearerRevoked,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::CookieInvalid => "cookie_invalid",
            AuthFailure::SessionExpired => "session_expired",
            AuthFailure::SessionIdle => "session_idle",
            AuthFailure::SessionRevoked => "session_revoked",
            AuthFailure::ProviderLogout => "provider_logout",
            AuthFailure::RefreshRefused => "refresh_refused",
            AuthFailure::BearerInvalid => "bearer_invalid",
            AuthFailure::BearerRevoked => "bearer_revoked",
        }
    }
}

/// Authentication failures by reason.
#[derive(Debug, Default)]
pub struct AuthFailures {
    counts: [AtomicU64; AuthFailure::ALL.len()],
}

impl AuthFailures {
    /// Counts one failure.
    pub fn count(&self, reason: AuthFailure) {
        let index = AuthFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, text: &mut String) {
        let name = "sekisho_auth_failures_total";
        let _ = write!(
            text,
            "# HELP {name} Credentials refused, by reason.\n# TYPE {name} counter\n"
        );
        for (reason, count) in AuthFailure::ALL.iter().zip(&self.counts) {
            let _ = writeln!(
                text,
                "{name}{{reason=\"{}\"}} {}",
                reason.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
    }
}

/// Session refreshes at the provider, by outcome (counted by the request that performed one;
/// requests that shared its outcome are not counted again).
#[derive(Debug, Default)]
pub struct RefreshCounts {
    /// New tokens: the session goes on.
    pub refreshed: AtomicU64,
    /// The provider refused: the session ended.
    pub refused: AtomicU64,
    /// The provider could not be asked (or answered nonsense): the session is kept for now.
    pub failed: AtomicU64,
}

/// Fetches of the provider's metadata or keys that failed.
#[derive(Debug, Default)]
pub struct FetchErrors {
    /// Discovery (the metadata document and the JWKS it names) failed.
    pub discovery: AtomicU64,
    /// A JWKS refetch (after an unknown key id) failed.
    pub jwks: AtomicU64,
}

/// What the request path's metrics are read from, besides [`super::Counters`].
#[derive(Debug)]
pub struct Sources<'a> {
    /// Session refresh outcomes (`Sessions`).
    pub refreshes: &'a RefreshCounts,
    /// Provider fetch errors (`OidcProvider`).
    pub provider: &'a FetchErrors,
    /// The span exporter's counters, when tracing is on.
    pub traces: Option<&'a ExportMetrics>,
    /// Records waiting for the audit writer.
    pub audit_queue: u64,
    /// The link to the other instances, when `shared_state` is configured.
    pub shared: Option<&'a crate::shared::SharedState>,
    /// The routes' upstreams (their targets' health).
    pub upstreams: &'a [crate::upstream::Upstream],
}

/// Renders the request path's metrics.
pub(super) fn render(text: &mut String, counters: &super::Counters, sources: &Sources<'_>) {
    counters.durations.render(text);
    counters.auth_failures.render(text);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let r = sources.refreshes;
    let _ = write!(
        text,
        "# HELP sekisho_session_refresh_total Session refreshes at the provider, by outcome.\n# TYPE sekisho_session_refresh_total counter\nsekisho_session_refresh_total{{outcome=\"refreshed\"}} {}\nsekisho_session_refresh_total{{outcome=\"refused\"}} {}\nsekisho_session_refresh_total{{outcome=\"failed\"}} {}\n",
        load(&r.refreshed),
        load(&r.refused),
        load(&r.failed),
    );
    let p = sources.provider;
    let _ = write!(
        text,
        "# HELP sekisho_provider_fetch_errors_total Failed fetches of the provider's metadata or keys, by kind.\n# TYPE sekisho_provider_fetch_errors_total counter\nsekisho_provider_fetch_errors_total{{kind=\"discovery\"}} {}\nsekisho_provider_fetch_errors_total{{kind=\"jwks\"}} {}\n",
        load(&p.discovery),
        load(&p.jwks),
    );
    let _ = write!(
        text,
        "# HELP sekisho_audit_queue_depth Audit records waiting for the writer.\n# TYPE sekisho_audit_queue_depth gauge\nsekisho_audit_queue_depth {}\n",
        sources.audit_queue
    );
    if let Some(t) = sources.traces {
        for (name, help, value) in [
            (
                "sekisho_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
                &t.exported,
            ),
            (
                "sekisho_trace_spans_dropped_total",
                "Spans not exported (exporter behind, or refused by the collector).",
                &t.dropped,
            ),
            (
                "sekisho_trace_export_failures_total",
                "Span export requests that failed.",
                &t.failures,
            ),
        ] {
            let _ = write!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                load(value)
            );
        }
    }
}

/// A label value with `\`, `"` and newlines escaped (route ids are checked by the
/// configuration, but the text format must hold whatever they are).
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_inf() {
        let histogram = Histogram::default();
        for micros in [100, 500, 700, 3_000, 2_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        histogram.observe(Duration::from_secs(60));
        let mut text = String::new();
        histogram.render(&mut text, "h", "route=\"r\"");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), BUCKETS.len() + 3);
        assert_eq!(
            lines[0], "h_bucket{route=\"r\",le=\"0.0005\"} 2",
            "≤ 0.5ms, bound included"
        );
        assert_eq!(lines[1], "h_bucket{route=\"r\",le=\"0.001\"} 3");
        assert_eq!(lines[3], "h_bucket{route=\"r\",le=\"0.005\"} 4");
        assert_eq!(lines[11], "h_bucket{route=\"r\",le=\"2.5\"} 5");
        assert_eq!(lines[13], "h_bucket{route=\"r\",le=\"10\"} 5");
        assert_eq!(lines[14], "h_bucket{route=\"r\",le=\"+Inf\"} 6");
        assert_eq!(lines[15], "h_sum{route=\"r\"} 62.004300000");
        assert_eq!(lines[16], "h_count{route=\"r\"} 6");
    }

    #[test]
    fn durations_are_kept_per_route_across_reloads_and_rendered_when_observed() {
        let durations = RequestDurations::default();
        let app = durations.for_route("app");
        assert!(
            Arc::ptr_eq(&app, &durations.for_route("app")),
            "a reload finds the same"
        );
        durations.observe(Some(&app), Decision::Allow, Duration::from_millis(3));
        durations.observe(None, Decision::Error, Duration::from_millis(1));
        let mut text = String::new();
        durations.render(&mut text);
        assert!(text.contains(
            "sekisho_request_duration_seconds_count{route=\"app\",decision=\"allow\"} 1"
        ));
        assert!(text.contains(
            "sekisho_request_duration_seconds_count{route=\"(none)\",decision=\"error\"} 1"
        ));
        assert!(
            !text.contains("decision=\"deny\""),
            "empty histograms are left out"
        );
        assert_eq!(text.matches("# TYPE").count(), 1);
    }

    #[test]
    fn auth_failures_are_counted_by_fixed_reason() {
        let failures = AuthFailures::default();
        failures.count(AuthFailure::CookieInvalid);
        failures.count(AuthFailure::CookieInvalid);
        failures.count(AuthFailure::BearerRevoked);
        let mut text = String::new();
        failures.render(&mut text);
        assert!(text.contains("sekisho_auth_failures_total{reason=\"cookie_invalid\"} 2\n"));
        assert!(text.contains("sekisho_auth_failures_total{reason=\"bearer_revoked\"} 1\n"));
        assert!(text.contains("sekisho_auth_failures_total{reason=\"session_idle\"} 0\n"));
        assert_eq!(label_value("a\"b\\c"), "a\\\"b\\\\c");
    }
}
