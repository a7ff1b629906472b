//! The `audit` and `admin` sections.

use std::path::Path;
use std::time::Duration;

use super::{Parser, Secrets, policy::SharedPolicies};
use crate::model::{Admin, Audit, Durability, OnFailure, Otlp, SecretString};
use crate::value::{self, ValueError};
use crate::walk::Field;

/// Keys of `audit`.
const AUDIT: &[&str] = &[
    "dir",
    "durability",
    "batch_window",
    "on_failure",
    "rotate_size",
    "rotate_interval",
    "retention",
    "checkpoint_interval",
    "heartbeat_multiple",
    "signing_key",
    "previous_signing_key",
    "queue",
    "record_query",
    "otlp",
];
/// Keys of `audit.otlp`.
const OTLP: &[&str] = &["endpoint", "headers", "timeout"];
/// Keys of `admin`.
const ADMIN: &[&str] = &["listen", "policy"];

impl Parser<'_> {
    /// The defaults of `audit` when the section is absent.
    pub(super) fn default_audit(state_dir: &Path) -> Audit {
        Audit {
            dir: state_dir.join("audit"),
            durability: Durability::Batched,
            batch_window: Duration::from_millis(200),
            on_failure: OnFailure::Deny,
            rotate_size: 128 << 20,
            rotate_interval: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(90 * 24 * 3600),
            checkpoint_interval: Duration::from_secs(5),
            heartbeat_multiple: 12,
            signing_key: None,
            previous_signing_key: None,
            queue: 65_536,
            record_query: false,
            otlp: None,
        }
    }

    /// `audit`; relative `dir` is resolved against the config file's directory.
    pub(super) fn audit(&mut self, field: &Field<'_>, state_dir: &Path) -> Option<Audit> {
        let defaults = Self::default_audit(state_dir);
        let map = self.walk.mapping(field, AUDIT)?;
        let dir = self.optional(&map, "dir", Self::path);
        let durability = self.or_default(
            &map,
            "durability",
            |p, f| p.walk.value(f, durability),
            || defaults.durability,
        );
        let batch_window = self.or_default(&map, "batch_window", Self::duration, || {
            defaults.batch_window
        });
        let on_failure = self.or_default(
            &map,
            "on_failure",
            |p, f| p.walk.value(f, on_failure),
            || defaults.on_failure,
        );
        let rotate_size = self.or_default(
            &map,
            "rotate_size",
            |p, f| p.walk.value(f, value::byte_size),
            || defaults.rotate_size,
        );
        let rotate_interval = self.or_default(&map, "rotate_interval", Self::duration, || {
            defaults.rotate_interval
        });
        let retention = self.or_default(&map, "retention", Self::duration, || defaults.retention);
        let checkpoint_interval =
            self.or_default(&map, "checkpoint_interval", Self::duration, || {
                defaults.checkpoint_interval
            });
        let heartbeat_multiple = self.or_default(
            &map,
            "heartbeat_multiple",
            |p, f| p.walk.value(f, heartbeat_multiple),
            || defaults.heartbeat_multiple,
        );
        let signing_key = self.optional(&map, "signing_key", Self::audit_key);
        let previous_signing_key = self.optional(&map, "previous_signing_key", Self::audit_key);
        let queue = self.or_default(
            &map,
            "queue",
            |p, f| p.walk.value(f, queue_size),
            || defaults.queue,
        );
        let record_query = self.flag(&map, "record_query", defaults.record_query);
        let otlp = self.optional(&map, "otlp", Self::otlp);
        Some(Audit {
            dir: match dir? {
                Some(dir) => self.base_dir.join(dir),
                None => defaults.dir,
            },
            durability: durability?,
            batch_window: batch_window?,
            on_failure: on_failure?,
            rotate_size: rotate_size?,
            rotate_interval: rotate_interval?,
            retention: retention?,
            checkpoint_interval: checkpoint_interval?,
            heartbeat_multiple: heartbeat_multiple?,
            signing_key: signing_key?,
            previous_signing_key: previous_signing_key?,
            queue: queue?,
            record_query: record_query?,
            otlp: otlp?,
        })
    }

    /// A checkpoint key: a PKCS#8 PEM secret.
    fn audit_key(&mut self, field: &Field<'_>) -> Option<SecretString> {
        let pem = self.secret(field)?;
        if self.secrets == Secrets::Placeholders {
            return Some(SecretString::new(pem));
        }
        match value::private_key_pem(&pem) {
            Ok(()) => Some(SecretString::new(pem)),
            Err(error) => {
                self.walk.report_at(field, error);
                None
            }
        }
    }

    /// An OTLP/HTTP exporter: `audit.otlp`, `tracing.otlp`.
    pub(super) fn otlp(&mut self, field: &Field<'_>) -> Option<Otlp> {
        let map = self.walk.mapping(field, OTLP)?;
        let endpoint = self
            .walk
            .required(&map, "endpoint")
            .and_then(|f| self.walk.value(&f, value::http_url));
        let headers = self.or_default(
            &map,
            "headers",
            |p, f| {
                let entries = p.walk.entries(f, "a mapping of header names to values")?;
                let parsed: Vec<Option<(String, SecretString)>> = entries
                    .iter()
                    .map(|entry| {
                        let name = match otlp_header_name(entry.key) {
                            Ok(name) => Some(name),
                            Err(error) => {
                                p.walk.report_at(&entry.value, error);
                                None
                            }
                        };
                        let secret = p.secret(&entry.value).map(SecretString::new);
                        Some((name?, secret?))
                    })
                    .collect();
                parsed.into_iter().collect()
            },
            Vec::new,
        );
        let timeout = self.or_default(&map, "timeout", Self::duration, || Duration::from_secs(10));
        Some(Otlp {
            endpoint: endpoint?,
            headers: headers?,
            timeout: timeout?,
        })
    }

    /// `admin`.
    pub(super) fn admin(&mut self, field: &Field<'_>, policies: &SharedPolicies) -> Option<Admin> {
        let map = self.walk.mapping(field, ADMIN)?;
        let listen = self
            .walk
            .required(&map, "listen")
            .and_then(|f| self.walk.value(&f, value::socket_addr));
        let policy = self
            .walk
            .required(&map, "policy")
            .and_then(|f| self.route_policy(&f, policies));
        Some(Admin {
            listen: listen?,
            policy: policy?,
        })
    }
}

/// A request header name towards the collector (token characters), lowercased. Any name,
/// `authorization` included: this header goes to the collector, not to an upstream.
fn otlp_header_name(input: &str) -> Result<String, ValueError> {
    let name = input.trim();
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(ValueError::HeaderName(name.to_owned()));
    }
    Ok(name.to_ascii_lowercase())
}

/// `strict` or `batched`.
fn durability(input: &str) -> Result<Durability, ValueError> {
    match input.trim() {
        "strict" => Ok(Durability::Strict),
        "batched" => Ok(Durability::Batched),
        other => Err(ValueError::Durability(other.to_owned())),
    }
}

/// `deny` or `allow`.
fn on_failure(input: &str) -> Result<OnFailure, ValueError> {
    match input.trim() {
        "deny" => Ok(OnFailure::Deny),
        "allow" => Ok(OnFailure::Allow),
        other => Err(ValueError::OnFailure(other.to_owned())),
    }
}

/// How many checkpoint intervals an idle log waits for a heartbeat checkpoint: 1 to 10,000.
fn heartbeat_multiple(input: &str) -> Result<u32, ValueError> {
    match input.trim().parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(ValueError::HeartbeatMultiple(input.trim().to_owned())),
    }
}

/// A queue length: 1 to 16 Mi records.
fn queue_size(input: &str) -> Result<usize, ValueError> {
    match input.trim().parse::<usize>() {
        Ok(n) if (1..=1 << 24).contains(&n) => Ok(n),
        _ => Err(ValueError::QueueSize(input.trim().to_owned())),
    }
}
