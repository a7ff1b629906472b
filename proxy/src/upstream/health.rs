//! The health of a route's targets, shared by every worker: consecutive connect failures and
//! the ejection they lead to (passive, `upstream_health`), and the verdict of the active probe
//! (`health_check`). All state is atomics; every decision takes the time as an argument
//! (milliseconds since the state was built), so the state machine is tested without sleeping.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sekisho_config::UpstreamHealth;

/// The health of one route's targets.
#[derive(Debug)]
pub struct Health {
    /// The route's id, for log lines and metrics.
    route: String,
    /// Consecutive connect failures that eject a target; 0 never ejects.
    eject_after: u32,
    /// The first ejection's length, in milliseconds.
    eject_for_ms: u64,
    /// The longest ejection, in milliseconds.
    eject_max_ms: u64,
    /// What [`Health::now`] counts from.
    epoch: Instant,
    /// One entry per target, in the route's `to` order.
    targets: Box<[TargetHealth]>,
}

/// One target's health.
#[derive(Debug)]
struct TargetHealth {
    /// The target's base URL, for log lines and metrics.
    name: String,
    /// Connect failures since the last success (or the last ejection).
    failures: AtomicU32,
    /// Ejections since the last success: the next ejection lasts `eject_for` times two to this
    /// power. While non-zero the target is on probation: one more failure ejects it again.
    ejections: AtomicU32,
    /// Ejected until this time ([`Health::now`] milliseconds); 0 when never ejected.
    ejected_until: AtomicU64,
    /// The active probe's last verdict was a failure.
    probe_failing: AtomicBool,
    /// Ejections since the state was built (the metric).
    ejections_total: AtomicU64,
}

/// What a connect failure did to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the target stays in rotation.
    Counted,
    /// The target is ejected for this long.
    Ejected(Duration),
    /// The target was already ejected (it was tried because no target was available).
    AlreadyEjected,
}

impl Health {
    /// Fresh state (every target healthy) for `targets` (their names) under `settings`.
    pub fn new(route: &str, targets: Vec<String>, settings: &UpstreamHealth) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Health {
            route: route.to_owned(),
            eject_after: settings.eject_after,
            eject_for_ms: ms(settings.eject_for),
            eject_max_ms: ms(settings.eject_max).max(ms(settings.eject_for)),
            epoch: Instant::now(),
            targets: targets
                .into_iter()
                .map(|name| TargetHealth {
                    name,
                    failures: AtomicU32::new(0),
                    ejections: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    probe_failing: AtomicBool::new(false),
                    ejections_total: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Milliseconds since the state was built: the clock every other method takes.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How many targets there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are none (a forward-auth-only route).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Whether target `index` takes requests at `now`: not ejected, and not failing its probe.
    pub fn is_available(&self, index: usize, now: u64) -> bool {
        self.targets.get(index).is_some_and(|t| {
            !t.probe_failing.load(Ordering::Relaxed)
                && now >= t.ejected_until.load(Ordering::Relaxed)
        })
    }

    /// Records a failed connection to target `index` at `now`. The `eject_after`-th consecutive
    /// failure ejects it for `eject_for`; once that has run out the target is on probation, and
    /// its next failure ejects it again for twice as long as the last time (at most
    /// `eject_max`), until a success ends the probation.
    pub fn connect_failed(&self, index: usize, now: u64) -> Failure {
        let Some(t) = self.targets.get(index) else {
            return Failure::Counted;
        };
        if self.eject_after == 0 {
            return Failure::Counted;
        }
        let until = t.ejected_until.load(Ordering::Acquire);
        if now < until {
            return Failure::AlreadyEjected;
        }
        let on_probation = t.ejections.load(Ordering::Relaxed) > 0;
        let failures = t.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if !on_probation && failures < self.eject_after {
            return Failure::Counted;
        }
        let previous = t.ejections.load(Ordering::Relaxed);
        let factor = 1u64.checked_shl(previous.min(32)).unwrap_or(u64::MAX);
        let length = self
            .eject_for_ms
            .saturating_mul(factor)
            .min(self.eject_max_ms);
        // One of the workers failing at once ejects; the others see it ejected.
        if t.ejected_until
            .compare_exchange(
                until,
                now.saturating_add(length).max(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Failure::AlreadyEjected;
        }
        t.ejections.fetch_add(1, Ordering::Relaxed);
        t.failures.store(0, Ordering::Relaxed);
        t.ejections_total.fetch_add(1, Ordering::Relaxed);
        let length = Duration::from_millis(length);
        tracing::warn!(
            route = %self.route,
            target = %t.name,
            failures,
            ejected_for = ?length,
            "upstream target ejected after consecutive connect failures"
        );
        Failure::Ejected(length)
    }

    /// Records a response from target `index`: its failure count, probation and any ejection
    /// end. Costs three reads when there was nothing to reset.
    pub fn succeeded(&self, index: usize) {
        let Some(t) = self.targets.get(index) else {
            return;
        };
        if t.failures.load(Ordering::Relaxed) != 0 {
            t.failures.store(0, Ordering::Relaxed);
        }
        if t.ejections.load(Ordering::Relaxed) != 0 || t.ejected_until.load(Ordering::Relaxed) != 0
        {
            t.ejections.store(0, Ordering::Relaxed);
            t.ejected_until.store(0, Ordering::Release);
            tracing::info!(route = %self.route, target = %t.name, "upstream target answered again; back in rotation");
        }
    }

    /// Records the active probe's verdict on target `index`; a pass also ends any ejection (the
    /// target accepted a connection and answered). `reason` says why a probe failed.
    pub fn probed(&self, index: usize, healthy: bool, reason: &str) {
        let Some(t) = self.targets.get(index) else {
            return;
        };
        let was_failing = t.probe_failing.swap(!healthy, Ordering::Relaxed);
        if healthy {
            self.succeeded(index);
            if was_failing {
                tracing::info!(route = %self.route, target = %t.name, "upstream target passes its health check again; back in rotation");
            }
        } else if !was_failing {
            tracing::warn!(route = %self.route, target = %t.name, reason, "upstream target failed its health check; out of rotation");
        }
    }

    /// The route's id.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Each target's name, whether it takes requests at `now`, and its ejections so far.
    pub fn report(&self, now: u64) -> impl Iterator<Item = (&str, bool, u64)> {
        self.targets.iter().enumerate().map(move |(index, t)| {
            (
                t.name.as_str(),
                self.is_available(index, now),
                t.ejections_total.load(Ordering::Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(eject_after: u32, eject_for: u64, eject_max: u64) -> Health {
        let settings = UpstreamHealth {
            eject_after,
            eject_for: Duration::from_secs(eject_for),
            eject_max: Duration::from_secs(eject_max),
            check: None,
        };
        Health::new("r", vec!["http://a".into(), "http://b".into()], &settings)
    }

    const S: u64 = 1000;

    #[test]
    fn consecutive_failures_eject_until_the_back_off_runs_out() {
        let h = health(3, 10, 300);
        assert_eq!(h.connect_failed(0, 0), Failure::Counted);
        assert_eq!(h.connect_failed(0, 1), Failure::Counted);
        assert!(h.is_available(0, 2), "two failures do not eject");
        assert_eq!(
            h.connect_failed(0, 2),
            Failure::Ejected(Duration::from_secs(10))
        );
        assert!(!h.is_available(0, 3));
        assert!(h.is_available(1, 3), "the other target is not affected");
        assert!(!h.is_available(0, 2 + 10 * S - 1));
        assert!(h.is_available(0, 2 + 10 * S), "back in rotation after 10s");
        let ejections: Vec<u64> = h.report(0).map(|(_, _, n)| n).collect();
        assert_eq!(ejections, [1, 0]);
    }

    #[test]
    fn failures_while_ejected_change_nothing() {
        let h = health(1, 10, 300);
        assert_eq!(
            h.connect_failed(0, 0),
            Failure::Ejected(Duration::from_secs(10))
        );
        assert_eq!(h.connect_failed(0, 5 * S), Failure::AlreadyEjected);
        assert!(h.is_available(0, 10 * S), "the ejection was not extended");
    }

    #[test]
    fn a_failure_on_probation_ejects_again_for_twice_as_long_up_to_the_max() {
        let h = health(3, 10, 35);
        for _ in 0..3 {
            h.connect_failed(0, 0);
        }
        let mut now = 10 * S;
        // On probation: one failure is enough, and each ejection doubles (capped at 35s).
        for expected in [20, 35, 35] {
            assert!(h.is_available(0, now));
            assert_eq!(
                h.connect_failed(0, now),
                Failure::Ejected(Duration::from_secs(expected))
            );
            now += expected * S;
        }
        assert_eq!(h.report(now).next().map(|(_, _, n)| n), Some(4));
    }

    #[test]
    fn a_success_resets_failures_probation_and_ejection() {
        let h = health(3, 10, 300);
        h.connect_failed(0, 0);
        h.connect_failed(0, 0);
        h.succeeded(0);
        assert_eq!(
            h.connect_failed(0, 0),
            Failure::Counted,
            "the count restarted"
        );
        assert_eq!(h.connect_failed(0, 0), Failure::Counted);
        assert_eq!(
            h.connect_failed(0, 0),
            Failure::Ejected(Duration::from_secs(10))
        );
        // A success while ejected (tried because nothing else was available) ends it at once.
        h.succeeded(0);
        assert!(h.is_available(0, 1));
        // No probation left: the next ejection needs three failures again and lasts 10s.
        assert_eq!(h.connect_failed(0, 1), Failure::Counted);
        assert_eq!(h.connect_failed(0, 1), Failure::Counted);
        assert_eq!(
            h.connect_failed(0, 1),
            Failure::Ejected(Duration::from_secs(10))
        );
    }

    #[test]
    fn eject_after_zero_never_ejects() {
        let h = health(0, 10, 300);
        for now in 0..100 {
            assert_eq!(h.connect_failed(0, now), Failure::Counted);
        }
        assert!(h.is_available(0, 100));
    }

    #[test]
    fn a_failing_probe_takes_a_target_out_until_a_probe_passes() {
        let h = health(3, 10, 300);
        h.probed(1, false, "status 503");
        assert!(!h.is_available(1, 0));
        assert!(h.is_available(0, 0));
        h.probed(1, false, "status 503");
        assert!(!h.is_available(1, 0));
        h.probed(1, true, "");
        assert!(h.is_available(1, 0));
        // A passing probe also ends an ejection.
        for _ in 0..3 {
            h.connect_failed(0, 0);
        }
        assert!(!h.is_available(0, 1));
        h.probed(0, true, "");
        assert!(h.is_available(0, 1));
    }

    #[test]
    fn out_of_range_indexes_are_harmless() {
        let h = health(1, 10, 300);
        assert_eq!(h.connect_failed(7, 0), Failure::Counted);
        h.succeeded(7);
        h.probed(7, false, "x");
        assert!(!h.is_available(7, 0));
    }
}
