//! A route's target health settings: `upstream_health: {eject_after, eject_for, eject_max}`
//! (passive ejection after consecutive connect failures) and `health_check: {path, interval,
//! timeout, healthy_status}` (the active probe), each refused on a route without HTTP upstreams.

use std::time::Duration;

use super::Parser;
use crate::error::UpstreamHealthProblem;
use crate::model::{HealthCheck, UpstreamHealth};
use crate::value::format_duration;
use crate::walk::{Field, Map};

/// Keys of a route's `upstream_health`.
const UPSTREAM_HEALTH: &[&str] = &["eject_after", "eject_for", "eject_max"];
/// Keys of a route's `health_check`.
const HEALTH_CHECK: &[&str] = &["path", "interval", "timeout", "healthy_status"];
/// The shortest `eject_for` and `health_check.interval`.
const ONE_SECOND: Duration = Duration::from_secs(1);
/// The largest `eject_after`.
const MAX_EJECT_AFTER: u32 = 1000;
/// `health_check.interval` when absent.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// `health_check.timeout` when absent (or the interval, when that is shorter).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

impl Parser<'_> {
    /// The target health settings of the route `map`; `has_upstreams` says whether it forwards
    /// to HTTP upstreams (`to` written, not a tunnel).
    pub(super) fn upstream_health(
        &mut self,
        map: &Map<'_>,
        has_upstreams: bool,
    ) -> Option<UpstreamHealth> {
        if !has_upstreams {
            let mut refused = false;
            for key in ["upstream_health", "health_check"] {
                if let Some(field) = map.get(key) {
                    self.walk
                        .report_at(&field, UpstreamHealthProblem::NoUpstreams(key));
                    refused = true;
                }
            }
            return (!refused).then(UpstreamHealth::default);
        }
        let passive = self.or_default(map, "upstream_health", Self::ejection, || {
            let d = UpstreamHealth::default();
            (d.eject_after, d.eject_for, d.eject_max)
        });
        let check = self.optional(map, "health_check", Self::health_check);
        let (eject_after, eject_for, eject_max) = passive?;
        Some(UpstreamHealth {
            eject_after,
            eject_for,
            eject_max,
            check: check?,
        })
    }

    /// `upstream_health`: `eject_after`, `eject_for` and `eject_max`, defaults filled in.
    fn ejection(&mut self, field: &Field<'_>) -> Option<(u32, Duration, Duration)> {
        let map = self.walk.mapping(field, UPSTREAM_HEALTH)?;
        let defaults = UpstreamHealth::default();
        let eject_after = self.or_default(
            &map,
            "eject_after",
            |p, f| p.walk.value(f, eject_after),
            || defaults.eject_after,
        );
        let eject_for = self.or_default(
            &map,
            "eject_for",
            |p, f| p.at_least_one_second(f),
            || defaults.eject_for,
        );
        let eject_max = self.optional(&map, "eject_max", |p, f| {
            let max = p.duration(f)?;
            match eject_for {
                Some(eject_for) if max < eject_for => {
                    let problem = UpstreamHealthProblem::EjectMaxBelowEjectFor {
                        eject_for: format_duration(eject_for),
                        found: format_duration(max),
                    };
                    p.walk.report_at(f, problem);
                    None
                }
                _ => Some(max),
            }
        });
        let eject_for = eject_for?;
        let eject_max = eject_max?.unwrap_or_else(|| defaults.eject_max.max(eject_for));
        Some((eject_after?, eject_for, eject_max))
    }

    /// `health_check`: `path` (required), `interval`, `timeout` and `healthy_status`.
    fn health_check(&mut self, field: &Field<'_>) -> Option<HealthCheck> {
        let map = self.walk.mapping(field, HEALTH_CHECK)?;
        let path = self
            .walk
            .required(&map, "path")
            .and_then(|f| self.walk.value(&f, probe_path));
        let interval = self.or_default(
            &map,
            "interval",
            |p, f| p.at_least_one_second(f),
            || DEFAULT_INTERVAL,
        );
        let timeout = self.or_default(
            &map,
            "timeout",
            |p, f| {
                let timeout = p.duration(f)?;
                match interval {
                    Some(interval) if timeout > interval => {
                        let problem = UpstreamHealthProblem::TimeoutAboveInterval {
                            interval: format_duration(interval),
                            found: format_duration(timeout),
                        };
                        p.walk.report_at(f, problem);
                        None
                    }
                    _ => Some(timeout),
                }
            },
            || DEFAULT_TIMEOUT.min(interval.unwrap_or(DEFAULT_TIMEOUT)),
        );
        let healthy_status = self.or_default(
            &map,
            "healthy_status",
            |p, f| p.non_empty_list_of(f, |p, item| p.walk.value(item, status)),
            Vec::new,
        );
        Some(HealthCheck {
            path: path?,
            interval: interval?,
            timeout: timeout?,
            healthy_status: healthy_status?,
        })
    }

    /// A duration of at least one second.
    fn at_least_one_second(&mut self, field: &Field<'_>) -> Option<Duration> {
        let duration = self.duration(field)?;
        if duration < ONE_SECOND {
            let problem = UpstreamHealthProblem::AtLeastOneSecond(format_duration(duration));
            self.walk.report_at(field, problem);
            return None;
        }
        Some(duration)
    }
}

/// `eject_after`: a whole number from 0 (never eject) to [`MAX_EJECT_AFTER`].
fn eject_after(input: &str) -> Result<u32, UpstreamHealthProblem> {
    let text = input.trim();
    match text.parse::<u32>() {
        Ok(n) if n <= MAX_EJECT_AFTER => Ok(n),
        _ => Err(UpstreamHealthProblem::EjectAfter(text.to_owned())),
    }
}

/// `health_check.path`: starts with `/` and is a valid URI path and query.
fn probe_path(input: &str) -> Result<String, UpstreamHealthProblem> {
    let text = input.trim();
    if !text.starts_with('/') {
        return Err(UpstreamHealthProblem::PathNotAbsolute(text.to_owned()));
    }
    if text.contains('#') || text.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(UpstreamHealthProblem::PathInvalid(text.to_owned()));
    }
    Ok(text.to_owned())
}

/// A `healthy_status` entry: 100 to 599.
fn status(input: &str) -> Result<u16, UpstreamHealthProblem> {
    let text = input.trim();
    match text.parse::<u16>() {
        Ok(n) if (100..=599).contains(&n) => Ok(n),
        _ => Err(UpstreamHealthProblem::Status(text.to_owned())),
    }
}

#[cfg(test)]
mod tests;
