//! Export of audit records to an OpenTelemetry collector over OTLP/HTTP (protobuf), for users
//! who outgrow one machine. Records are exported after they are on disk, exactly as written
//! (the JSON line, `seq` and `prev_hash` included, is the log record's body), so a pipeline
//! downstream can verify the chain too. The exporter never slows the writer: records reach it
//! through a bounded channel and are dropped (and counted) when it falls behind; a failed
//! export is retried with backoff while newer records wait in the channel. Checkpoint and
//! key-introduction lines are exported too (attribute `sekisho.chain`), so the newest signed
//! head also lives where an attacker on the proxy's host cannot rewrite it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use sekisho_config::Otlp;

/// Records per export request, at most.
const BATCH: usize = 512;
/// Records waiting for the exporter, at most.
const QUEUE: usize = 16_384;
/// How long a partial batch waits for more records.
const LINGER: Duration = Duration::from_millis(500);

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

/// Export counters.
#[derive(Debug, Default)]
pub struct ExportMetrics {
    /// Records the collector accepted.
    pub exported: AtomicU64,
    /// Records dropped because the exporter fell behind.
    pub dropped: AtomicU64,
    /// Export requests that failed (and were retried).
    pub failures: AtomicU64,
}

/// The writer's end of the exporter.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: Arc<Mutex<Option<tokio::sync::mpsc::Sender<Exported>>>>,
    metrics: Arc<ExportMetrics>,
}

impl Exporter {
    /// Starts the export task on the current tokio runtime; the receiver hears when it has
    /// sent everything after [`Exporter::close`].
    pub fn start(config: &Otlp) -> Result<(Self, std::sync::mpsc::Receiver<()>), String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "OTLP export needs the async runtime".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("OTLP client: {e}"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("OTLP header {name}: {e}"))?;
            let value = reqwest::header::HeaderValue::from_str(value.expose())
                .map_err(|e| format!("OTLP header {name}: {e}"))?;
            headers.insert(name, value);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let metrics = Arc::new(ExportMetrics::default());
        let (done_tx, done) = std::sync::mpsc::channel();
        let export = export_loop(
            rx,
            client,
            config.endpoint.to_string(),
            headers,
            metrics.clone(),
        );
        runtime.spawn(async move {
            export.await;
            let _ = done_tx.send(());
        });
        Ok((
            Exporter {
                tx: Arc::new(Mutex::new(Some(tx))),
                metrics,
            },
            done,
        ))
    }

    /// Offers a written record; never waits.
    pub fn offer(&self, record: Exported) {
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.try_send(record).is_ok()));
        if sent != Some(true) {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// No more records: the export task sends what it holds and ends.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &ExportMetrics {
        &self.metrics
    }
}

async fn export_loop(
    mut rx: tokio::sync::mpsc::Receiver<Exported>,
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    metrics: Arc<ExportMetrics>,
) {
    let mut batch: Vec<Exported> = Vec::with_capacity(BATCH);
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(record) => batch.push(record),
                None => return,
            }
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(record)) => batch.push(record),
                Ok(None) | Err(_) => break,
            }
        }
        let body = request(&batch).encode_to_vec();
        let mut backoff = Duration::from_millis(200);
        loop {
            let sent = client
                .post(&endpoint)
                .headers(headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    metrics
                        .exported
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    // The collector will never take this batch (OTLP: do not retry 4xx).
                    metrics.failures.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::error!(status = %response.status(), endpoint, "OTLP collector refused audit records");
                    break;
                }
                other => {
                    metrics.failures.fetch_add(1, Ordering::Relaxed);
                    let reason = match other {
                        Ok(response) => response.status().to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(%reason, endpoint, retry_in_ms = backoff.as_millis(), "OTLP export failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        batch.clear();
    }
}

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    })
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: text(value),
        ..KeyValue::default()
    }
}

/// The export request for `batch`.
pub fn request(batch: &[Exported]) -> ExportLogsServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let log_records = batch
        .iter()
        .map(|record| {
            let mut attributes = Vec::new();
            if let Some(class_uid) = record.class_uid {
                attributes.push(KeyValue {
                    key: "ocsf.class_uid".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(i64::from(class_uid))),
                    }),
                    ..KeyValue::default()
                });
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
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", "sekisho"),
                    attribute("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Resource::default()
            }),
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
