//! Export of audit records to an OpenTelemetry collector over OTLP/HTTP (protobuf), for users
//! who outgrow one machine. Records are exported after they are on disk, exactly as written
//! (the JSON line, `seq` and `prev_hash` included, is the log record's body), so a pipeline
//! downstream can verify the chain too. The exporter never slows the writer: records reach it
//! through a bounded channel and are dropped (and counted) when it falls behind; a failed
//! export is retried with backoff while newer records wait in the channel. Checkpoint and
//! key-introduction lines are exported too (attribute `sekisho.chain`), so the newest signed
//! head also lives where an attacker on the proxy's host cannot rewrite it.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message as _;
use sekisho_config::Otlp;

pub use crate::otlp::ExportMetrics;
use crate::otlp::{Batching, Queue, attribute, text};

/// How records are queued and batched.
const BATCHING: Batching = Batching {
    batch: 512,
    queue: 16_384,
    linger: Duration::from_millis(500),
    what: "audit records",
};

/// One written record, for export.
#[derive(Debug)]
pub struct Exported {
    /// The line as written (without the newline).
    pub line: String,
    /// Record time, ms since the epoch.
    pub time_ms: i64,
    /// `class_uid` (none for the chain's own lines).
    pub class_uid: Option<u32>,
    /// `checkpoint` or `key` for the chain's own lines.
    pub chain: Option<&'static str>,
    /// The decision or event kind.
    pub decision: Option<String>,
    /// The user.
    pub user: Option<String>,
    /// The route.
    pub route: Option<String>,
    /// Whether the record is a success (HTTP allow, successful login…).
    pub success: bool,
}

/// The writer's end of the exporter.
#[derive(Debug, Clone)]
pub struct Exporter {
    queue: Queue<Exported>,
}

impl Exporter {
    /// Starts the export task on the current tokio runtime; the receiver hears when it has
    /// sent everything after [`Exporter::close`].
    pub fn start(config: &Otlp) -> Result<(Self, std::sync::mpsc::Receiver<()>), String> {
        let (queue, done) = Queue::start(config, BATCHING, |batch| request(batch).encode_to_vec())?;
        Ok((Exporter { queue }, done))
    }

    /// Offers a written record; never waits.
    pub fn offer(&self, record: Exported) {
        self.queue.offer(record);
    }

    /// No more records: the export task sends what it holds and ends.
    pub fn close(&self) {
        self.queue.close();
    }

    /// The counters.
    pub fn metrics(&self) -> &ExportMetrics {
        self.queue.metrics()
    }
}

/// The export request for `batch`.
pub fn request(batch: &[Exported]) -> ExportLogsServiceRequest {
    let now = crate::otlp::now_unix_nano();
    let log_records = batch
        .iter()
        .map(|record| {
            let mut attributes = Vec::new();
            if let Some(class_uid) = record.class_uid {
                attributes.push(crate::otlp::int_attribute(
                    "ocsf.class_uid",
                    i64::from(class_uid),
                ));
            }
            if let Some(chain) = record.chain {
                attributes.push(attribute("sekisho.chain", chain));
            }
            for (key, value) in [
                ("sekisho.decision", &record.decision),
                ("user.email", &record.user),
                ("sekisho.route", &record.route),
            ] {
                if let Some(value) = value {
                    attributes.push(attribute(key, value));
                }
            }
            // INFO (9) for successes, WARN (13) for denials and failures.
            let (severity_number, severity_text) = if record.success {
                (9, "INFO")
            } else {
                (13, "WARN")
            };
            LogRecord {
                time_unix_nano: u64::try_from(record.time_ms)
                    .unwrap_or(0)
                    .saturating_mul(1_000_000),
                observed_time_unix_nano: now,
                severity_number,
                severity_text: severity_text.into(),
                body: text(&record.line),
                attributes,
                event_name: "sekisho.audit".into(),
                ..LogRecord::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(crate::otlp::resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "sekisho.audit".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                log_records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
