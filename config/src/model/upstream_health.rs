//! How a route judges its upstream targets: passive ejection after consecutive connect failures
//! (`upstream_health`) and the optional active probe (`health_check`).

use std::time::Duration;

/// A route's target health settings: `upstream_health` (passive ejection) and `health_check`
/// (active probes). Both only apply to a route with `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// Consecutive connect failures that eject a target (`upstream_health.eject_after`,
    /// default 3); 0 never ejects.
    pub eject_after: u32,
    /// How long the first ejection lasts (`upstream_health.eject_for`, default 10s); each
    /// ejection that follows without a success in between lasts twice as long as the one before.
    pub eject_for: Duration,
    /// The longest an ejection lasts (`upstream_health.eject_max`, default 5m, and never less
    /// than `eject_for`).
    pub eject_max: Duration,
    /// The active probe (`health_check`), when configured.
    pub check: Option<HealthCheck>,
}

impl Default for UpstreamHealth {
    /// The documented defaults: eject after 3 consecutive connect failures, for 10s doubling up
    /// to 5m; no active probe.
    fn default() -> Self {
        UpstreamHealth {
            eject_after: 3,
            eject_for: Duration::from_secs(10),
            eject_max: Duration::from_secs(300),
            check: None,
        }
    }
}

/// A route's `health_check`: every `interval`, each target is asked `GET path`; a target that
/// does not answer within `timeout`, or answers with a status not in `healthy_status`, is
/// skipped until a probe succeeds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and optional query) asked, starting with `/`; appended to the target's base path
    /// like a request path.
    pub path: String,
    /// Time between probes of a target (default 5s, at least 1s).
    pub interval: Duration,
    /// How long a probe waits for the response head (default 2s, at most `interval`).
    pub timeout: Duration,
    /// The statuses that mean healthy; empty means any 2xx (the default).
    pub healthy_status: Vec<u16>,
}

impl HealthCheck {
    /// Whether a probe answered with `status` passes.
    pub fn is_healthy_status(&self, status: u16) -> bool {
        if self.healthy_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.healthy_status.contains(&status)
        }
    }
}
