//! The `tracing` section: request traces exported to an OpenTelemetry collector.

use super::Otlp;

/// Request traces: one span per request, exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone)]
pub struct Tracing {
    /// Where spans go: the collector's traces endpoint, like `http://collector:4318/v1/traces`
    /// (the same settings as `audit.otlp`).
    pub otlp: Otlp,
    /// The share of new traces that are sampled, from 0 to 1 (default 1). A trace continued
    /// from a trusted proxy's `traceparent` follows that parent's sampled flag instead.
    pub sample_ratio: f64,
}
