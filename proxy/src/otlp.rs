//! OTLP/HTTP (protobuf) export plumbing shared by the audit log's records (`audit/otlp.rs`) and
//! the request traces (`traces.rs`): a bounded queue that never waits (a full queue drops and
//! counts), one task that batches what it holds, and delivery with retry and backoff (OTLP:
//! 4xx other than 429 is never retried). What a batch becomes on the wire is the caller's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sekisho_config::Otlp;

/// Export counters.
#[derive(Debug, Default)]
pub struct ExportMetrics {
    /// Items the collector accepted.
    pub exported: AtomicU64,
    /// Items dropped: the queue was full, the exporter had closed, or the collector refused.
    pub dropped: AtomicU64,
    /// Export requests that failed (and were retried, or refused for good).
    pub failures: AtomicU64,
}

/// How one kind of item is queued and batched.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Items per export request, at most.
    pub batch: usize,
    /// Items waiting for the exporter, at most.
    pub queue: usize,
    /// How long a partial batch waits for more items.
    pub linger: Duration,
    /// What the items are, for the log (`audit records`, `spans`).
    pub what: &'static str,
}

/// What travels through the queue: an item, or the word that no more will come.
#[derive(Debug)]
enum Message<T> {
    Item(T),
    Close,
}

/// The producers' end of an exporter: cheap to clone, never waits, takes no lock.
#[derive(Debug)]
pub struct Queue<T> {
    tx: tokio::sync::mpsc::Sender<Message<T>>,
    closed: Arc<AtomicBool>,
    metrics: Arc<ExportMetrics>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            closed: self.closed.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T: Send + 'static> Queue<T> {
    /// Starts the export task on the current tokio runtime: batches of items become one
    /// request body each through `encode`, posted to `config.endpoint`. The receiver hears
    /// when the task has sent everything after [`Queue::close`].
    pub fn start(
        config: &Otlp,
        batching: Batching,
        encode: impl Fn(&[T]) -> Vec<u8> + Send + 'static,
    ) -> Result<(Self, std::sync::mpsc::Receiver<()>), String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "OTLP export needs the async runtime".to_owned())?;
        let delivery = Delivery::new(config, batching.what)?;
        let (tx, rx) = tokio::sync::mpsc::channel(batching.queue.max(1));
        let metrics = Arc::new(ExportMetrics::default());
        let closed = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = std::sync::mpsc::channel();
        let export = export_loop(
            rx,
            delivery,
            batching,
            encode,
            metrics.clone(),
            closed.clone(),
        );
        runtime.spawn(async move {
            export.await;
            let _ = done_tx.send(());
        });
        Ok((
            Queue {
                tx,
                closed,
                metrics,
            },
            done,
        ))
    }

    /// Offers an item; never waits. A full queue, or a closed exporter, drops it (counted).
    pub fn offer(&self, item: T) {
        if self.closed.load(Ordering::Relaxed) || self.tx.try_send(Message::Item(item)).is_err() {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// No more items: the export task sends what it holds and ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // A full queue needs no wake-up: the task sees `closed` once it has drained it.
        let _ = self.tx.try_send(Message::Close);
    }

    /// The counters.
    pub fn metrics(&self) -> &ExportMetrics {
        &self.metrics
    }
}

/// The collector's endpoint with the client and headers that reach it.
#[derive(Debug)]
struct Delivery {
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    what: &'static str,
}

impl Delivery {
    fn new(config: &Otlp, what: &'static str) -> Result<Self, String> {
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
        Ok(Delivery {
            client,
            endpoint: config.endpoint.to_string(),
            headers,
            what,
        })
    }

    /// Posts `body` (holding `items` items) until the collector takes it or refuses it for
    /// good; failures back off from 200ms to 30s.
    async fn deliver(&self, body: Vec<u8>, items: usize, metrics: &ExportMetrics) {
        let (endpoint, what) = (&self.endpoint, self.what);
        let items = items as u64;
        let mut backoff = Duration::from_millis(200);
        loop {
            let sent = self
                .client
                .post(endpoint)
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    metrics.exported.fetch_add(items, Ordering::Relaxed);
                    return;
                }
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    // The collector will never take this batch (OTLP: do not retry 4xx).
                    metrics.failures.fetch_add(1, Ordering::Relaxed);
                    metrics.dropped.fetch_add(items, Ordering::Relaxed);
                    tracing::error!(status = %response.status(), endpoint, what, "OTLP collector refused an export");
                    return;
                }
                other => {
                    metrics.failures.fetch_add(1, Ordering::Relaxed);
                    let reason = match other {
                        Ok(response) => response.status().to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(%reason, endpoint, what, retry_in_ms = backoff.as_millis(), "OTLP export failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Gathers items into batches (up to `batch`, or what came within `linger`), encodes and
/// delivers each; ends once closed and drained.
async fn export_loop<T>(
    mut rx: tokio::sync::mpsc::Receiver<Message<T>>,
    delivery: Delivery,
    batching: Batching,
    encode: impl Fn(&[T]) -> Vec<u8>,
    metrics: Arc<ExportMetrics>,
    closed: Arc<AtomicBool>,
) {
    let mut batch: Vec<T> = Vec::with_capacity(batching.batch);
    loop {
        if closed.load(Ordering::Relaxed) {
            // Closed: take what is queued without waiting; stop once nothing is left.
            while batch.len() < batching.batch {
                match rx.try_recv() {
                    Ok(Message::Item(item)) => batch.push(item),
                    Ok(Message::Close) => {}
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        } else {
            if batch.is_empty() {
                match rx.recv().await {
                    Some(Message::Item(item)) => batch.push(item),
                    // `closed` is set before the word is sent: the next turn drains.
                    Some(Message::Close) => continue,
                    None => return,
                }
            }
            let deadline = tokio::time::Instant::now() + batching.linger;
            while batch.len() < batching.batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(Message::Item(item))) => batch.push(item),
                    Ok(Some(Message::Close) | None) | Err(_) => break,
                }
            }
        }
        delivery
            .deliver(encode(&batch), batch.len(), &metrics)
            .await;
        batch.clear();
    }
}

/// A string value.
pub fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    })
}

/// A string attribute.
pub fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: text(value),
        ..KeyValue::default()
    }
}

/// An integer attribute.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// The resource every export names: this service and its version.
pub fn resource() -> Resource {
    Resource {
        attributes: vec![
            attribute("service.name", "sekisho"),
            attribute("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Resource::default()
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
