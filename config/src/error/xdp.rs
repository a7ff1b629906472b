//! What can be wrong in the `xdp` section ([`XdpProblem`]); becomes a [`super::Problem`] like
//! every other configuration error.

/// What is wrong in the `xdp` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum XdpProblem {
    /// Not an interface name the kernel would accept.
    #[error(
        "`{0}` is not an interface name: 1 to 15 characters, none of them `/`, `:`, whitespace or control characters, and not `.` or `..`"
    )]
    InterfaceName(String),
    /// The same interface twice.
    #[error("interface `{0}` is listed twice")]
    DuplicateInterface(String),
    /// Not `auto`, `native` or `generic`.
    #[error("`{0}` is not an XDP mode: write auto, native or generic")]
    Mode(String),
    /// Not a port number.
    #[error(
        "`{0}` is not a port: write a number from 1 to 65535, optionally followed by /tcp or /udp"
    )]
    Port(String),
    /// The same port twice.
    #[error("port {0} is listed twice")]
    DuplicatePort(String),
    /// A protocol other than tcp/udp.
    #[error("`{0}` is not a protocol: write tcp or udp")]
    Protocol(String),
    /// A summary window outside 1s..1h.
    #[error("the drop summary window must be from 1s to 1h")]
    DropSummary,
    /// Not a positive rate or burst.
    #[error("`{0}` is not a rate: write a whole number of at least 1")]
    Rate(String),
    /// Not a positive count.
    #[error("`{0}` is not a count of failures: write a whole number of at least 1")]
    Failures(String),
    /// A relative pin path.
    #[error(
        "`{0}` is not an absolute path: write the directory on the BPF file system, like /sys/fs/bpf/sekisho"
    )]
    PinPath(String),
    /// One of sekisho's own listeners.
    #[error(
        "port {0} is one of sekisho's own listeners: protecting it would make signing in impossible"
    )]
    OwnListener(u16),
}
