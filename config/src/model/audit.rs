//! The `audit` and `admin` sections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::SecretString;
use crate::policy::Policy;

/// The audit log: where it is written, how durably, and what happens when it cannot be.
#[derive(Debug, Clone)]
pub struct Audit {
    /// Directory of the log files (default `{state_dir}/audit`).
    pub dir: PathBuf,
    /// When a record counts as written.
    pub durability: Durability,
    /// `batched`: the longest a record waits in memory before it is synced (default 200ms).
    pub batch_window: Duration,
    /// What requests get while records cannot be written.
    pub on_failure: OnFailure,
    /// A file is rotated when it reaches this size (default 128 MiB)…
    pub rotate_size: u64,
    /// …or this age (default 24h).
    pub rotate_interval: Duration,
    /// Rotated files older than this are deleted (default 90d).
    pub retention: Duration,
    /// A signed checkpoint is written this often while records arrive (default 5s), and at
    /// rotation, start and shutdown.
    pub checkpoint_interval: Duration,
    /// An idle log still gets a signed heartbeat checkpoint every `checkpoint_interval` × this
    /// (default 12), so that a verifier holding a head can bound by time what may be missing.
    pub heartbeat_multiple: u32,
    /// PKCS#8 PEM of the Ed25519 key that signs checkpoints; absent: generated once and kept in
    /// `{state_dir}/audit-signing.pem`.
    pub signing_key: Option<SecretString>,
    /// The key `signing_key` replaces: at the first start with a new key it signs the record
    /// that introduces the new one into the chain (without it, a new key is refused).
    pub previous_signing_key: Option<SecretString>,
    /// Records waiting for the writer, at most (default 65536); beyond it `on_failure` applies.
    pub queue: usize,
    /// Write the query string of request URLs (default false: only whether there was one).
    pub record_query: bool,
    /// Also export every record as an OTLP log to a collector.
    pub otlp: Option<Otlp>,
}

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A response is released only after its record is on disk (fdatasync, group commit).
    Strict,
    /// Records are synced at least every `batch_window`.
    Batched,
}

/// What requests get while the audit log cannot be written (disk full, writer behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// 503 for new requests (the default).
    Deny,
    /// Requests go on; records that cannot be kept are counted and logged.
    Allow,
}

/// OTLP/HTTP log export.
#[derive(Debug, Clone)]
pub struct Otlp {
    /// The collector's logs endpoint, like `http://collector:4318/v1/logs`.
    pub endpoint: Url,
    /// Extra request headers (authentication towards the collector).
    pub headers: Vec<(String, SecretString)>,
    /// Per-export timeout (default 10s).
    pub timeout: Duration,
}

/// The admin listener: metrics and the audit review page.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address of the admin listener (plain HTTP; keep it on a private interface).
    pub listen: SocketAddr,
    /// Who may open the review page (sekisho's own login, then this policy).
    pub policy: Arc<Policy>,
}
