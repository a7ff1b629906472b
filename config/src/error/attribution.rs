//! What can be wrong in the `attribution` section ([`AttributionProblem`]).

/// What is wrong in the `attribution` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AttributionProblem {
    /// Not `audit` or `enforce`.
    #[error("`{0}` is not a bypass mode: write audit or enforce")]
    Mode(String),
    /// A relative path where an absolute one is needed.
    #[error("`{0}` is not an absolute path")]
    NotAbsolute(String),
    /// A cgroup path that escapes the root or is malformed.
    #[error(
        "`{0}` is not a cgroup path: write it from the cgroup root, like /system.slice/backup.service (no `..`, no empty parts)"
    )]
    CgroupPath(String),
    /// A protected upstream with port 0.
    #[error("`{0}` has no port: a protected upstream is an address and a port")]
    NoPort(String),
}
