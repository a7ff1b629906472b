//! What can be wrong in a route's target health settings — `upstream_health` and
//! `health_check` ([`UpstreamHealthProblem`]); becomes a [`super::Problem`] like every other
//! configuration error.

/// What is wrong in `upstream_health` or `health_check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamHealthProblem {
    /// `upstream_health` or `health_check` on a route without HTTP upstreams.
    #[error(
        "`{0}` judges a route's upstream targets, and this route has none (it has no `to`, or is a tunnel)"
    )]
    NoUpstreams(&'static str),
    /// `eject_after` that is not a whole number from 0 to 1000.
    #[error(
        "`{0}` is not a number of consecutive failures: write a whole number from 1 to 1000, or 0 to never eject"
    )]
    EjectAfter(String),
    /// A duration below one second.
    #[error("must be at least 1s (found {0})")]
    AtLeastOneSecond(String),
    /// `eject_max` shorter than `eject_for`.
    #[error("must be at least `eject_for` ({eject_for}) (found {found})")]
    EjectMaxBelowEjectFor {
        /// `eject_for`, as the config spells durations.
        eject_for: String,
        /// `eject_max`, likewise.
        found: String,
    },
    /// A `health_check.path` not starting with `/`.
    #[error("`{0}` must start with '/', like `/healthz`")]
    PathNotAbsolute(String),
    /// A `health_check.path` that is not a valid path and query.
    #[error(
        "`{0}` is not a path sekisho can send: only the characters of a URI path and query are allowed (percent-encode the others)"
    )]
    PathInvalid(String),
    /// A `health_check.timeout` longer than the interval.
    #[error("must be at most `interval` ({interval}) (found {found})")]
    TimeoutAboveInterval {
        /// `interval`, as the config spells durations.
        interval: String,
        /// `timeout`, likewise.
        found: String,
    },
    /// A `healthy_status` entry that is not an HTTP status.
    #[error("`{0}` is not an HTTP status: write a number from 100 to 599")]
    Status(String),
}
