//! Request traces (OpenTelemetry): one server span per request, its phases as span events,
//! the W3C trace context (`traceparent`, `tracestate`) believed only from a trusted proxy and
//! always sent to the upstream with sekisho's span as the parent, parent-based ratio sampling,
//! and batched OTLP/HTTP export through `otlp.rs`.
//!
//! Cost: with `tracing:` off a request carries a [`Trace`] of a few bytes and its trace
//! headers are only stripped (from an untrusted peer); nothing is allocated. With tracing on,
//! an unsampled request costs its ids (a thread-local generator) and the outgoing
//! `traceparent` value; only a sampled one records a start time, events and attributes.
//!
//! What a span says: method, route, normalised path, host, protocol version, status,
//! decision, door and request id — no user, no client address, no query. The request id
//! leads from a span to its audit record, which is where identities are kept.

use std::cell::Cell;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

use crate::audit::HttpEvent;
use crate::otlp::{Batching, ExportMetrics, Queue};

mod export;
pub mod traceparent;

pub use traceparent::TraceParent;

/// The incoming and outgoing trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Vendor trace state, travelling with `traceparent`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Longest `tracestate` passed on (W3C: at least 512 bytes may be dropped as a whole).
const MAX_TRACESTATE: usize = 512;

/// How spans are queued and batched.
const BATCHING: Batching = Batching {
    batch: 512,
    queue: 8192,
    linger: std::time::Duration::from_secs(1),
    what: "spans",
};

/// The tracer: the sampler and the span exporter.
#[derive(Debug)]
pub struct Tracer {
    queue: Queue<Box<FinishedSpan>>,
    sampler: Sampler,
}

/// Parent-based ratio sampling: a trusted parent's flag, else the trace id against the ratio.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// New traces whose id's low 56 bits fall below this are sampled (ratio × 2^56).
    threshold: u64,
}

impl Tracer {
    /// Starts the exporter of `config` on the current tokio runtime; the receiver hears when
    /// it has sent everything after [`Tracer::close`].
    pub fn start(
        config: &sekisho_config::Tracing,
    ) -> Result<(Self, std::sync::mpsc::Receiver<()>), String> {
        let (queue, done) = Queue::start(&config.otlp, BATCHING, export::encode)?;
        Ok((
            Tracer {
                queue,
                sampler: Sampler::new(config.sample_ratio),
            },
            done,
        ))
    }

    /// The trace of a request: see [`Sampler::begin`].
    pub fn begin(&self, headers: &HeaderMap, peer_trusted: bool) -> Trace {
        self.sampler.begin(headers, peer_trusted)
    }

    /// Queues a finished span for export; never waits (a full queue drops it, counted).
    pub(crate) fn export(&self, span: Box<FinishedSpan>) {
        self.queue.offer(span);
    }

    /// No more spans: the exporter sends what it holds and ends.
    pub fn close(&self) {
        self.queue.close();
    }

    /// The export counters (spans dropped, exported, failed exports).
    pub fn metrics(&self) -> &ExportMetrics {
        self.queue.metrics()
    }
}

impl Sampler {
    /// Samples `ratio` (0 to 1) of new traces.
    pub fn new(ratio: f64) -> Self {
        Sampler {
            threshold: threshold(ratio),
        }
    }

    /// The trace of a request with `headers`, from a peer that is (or is not) a trusted
    /// proxy: the trusted peer's valid `traceparent` is the parent (and decides sampling),
    /// anything else starts a new trace sampled by ratio.
    pub fn begin(&self, headers: &HeaderMap, peer_trusted: bool) -> Trace {
        let parent = if peer_trusted {
            incoming(headers)
        } else {
            None
        };
        let (trace_id, parent_id, sampled, tracestate) = match parent {
            Some((parent, tracestate)) => (
                parent.trace_id,
                Some(parent.parent_id),
                parent.sampled(),
                tracestate,
            ),
            None => {
                let trace_id = ids::trace_id();
                let sampled = sample(&trace_id, self.threshold);
                (trace_id, None, sampled, None)
            }
        };
        let context = SpanContext {
            trace_id,
            span_id: ids::span_id(),
            parent_id,
            sampled,
            tracestate,
        };
        let recording = sampled.then(|| {
            Box::new(Recording {
                start_unix_nano: crate::otlp::now_unix_nano(),
                events: Vec::new(),
            })
        });
        Trace {
            context: Some(context),
            peer_trusted,
            recording,
        }
    }
}

/// One request's place in a trace. [`Trace::default`] is tracing off from an untrusted peer.
#[derive(Debug, Default)]
pub struct Trace {
    /// The span's ids; `None` when tracing is off.
    context: Option<SpanContext>,
    /// The immediate peer is a trusted proxy: its trace headers are believed (with tracing
    /// off: and its `traceparent` is valid, so they may pass as they are).
    peer_trusted: bool,
    /// What a sampled span records; `None` for unsampled spans and when tracing is off.
    recording: Option<Box<Recording>>,
}

/// The ids of sekisho's span for one request.
#[derive(Debug, Clone)]
pub struct SpanContext {
    /// The trace (the trusted parent's, or new).
    pub trace_id: [u8; 16],
    /// sekisho's span.
    pub span_id: [u8; 8],
    /// The trusted caller's span.
    pub parent_id: Option<[u8; 8]>,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// The trusted caller's `tracestate`, passed on.
    pub tracestate: Option<HeaderValue>,
}

/// The events and start of a sampled span.
#[derive(Debug)]
struct Recording {
    start_unix_nano: u64,
    events: Vec<SpanEvent>,
}

/// A phase the request went through.
#[derive(Debug)]
struct SpanEvent {
    time_unix_nano: u64,
    name: &'static str,
    attributes: Vec<Attribute>,
}

/// A span or event attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The key (semantic conventions, or `sekisho.*`).
    pub key: &'static str,
    /// The value.
    pub value: Value,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A fixed text.
    Static(&'static str),
    /// A text.
    Text(String),
    /// A number.
    Int(i64),
}

impl Attribute {
    /// `key` = a fixed text.
    pub fn text(key: &'static str, value: &'static str) -> Self {
        Attribute {
            key,
            value: Value::Static(value),
        }
    }

    /// `key` = a text.
    pub fn string(key: &'static str, value: impl Into<String>) -> Self {
        Attribute {
            key,
            value: Value::Text(value.into()),
        }
    }

    /// `key` = a number.
    pub fn int(key: &'static str, value: i64) -> Self {
        Attribute {
            key,
            value: Value::Int(value),
        }
    }
}

/// A span, finished, waiting for export.
#[derive(Debug)]
pub(crate) struct FinishedSpan {
    context: SpanContext,
    name: String,
    start_unix_nano: u64,
    end_unix_nano: u64,
    attributes: Vec<Attribute>,
    events: Vec<SpanEvent>,
    /// A 5xx answer (status `Error`).
    error: bool,
}

impl Trace {
    /// Tracing is off: nothing is recorded, and the trace headers of `headers` pass only from
    /// a trusted proxy, and only with a valid `traceparent` (read on the stack; nothing is
    /// allocated).
    pub fn off(headers: &HeaderMap, peer_trusted: bool) -> Self {
        Trace {
            context: None,
            peer_trusted: peer_trusted && incoming_parent(headers).is_some(),
            recording: None,
        }
    }

    /// sekisho's span ids (`None` when tracing is off).
    pub fn context(&self) -> Option<&SpanContext> {
        self.context.as_ref()
    }

    /// Whether this span records (sampled, tracing on).
    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Notes that the request passed phase `name`; `attributes` is called only when the span
    /// records.
    pub fn event(&mut self, name: &'static str, attributes: impl FnOnce() -> Vec<Attribute>) {
        if let Some(recording) = &mut self.recording {
            recording.events.push(SpanEvent {
                time_unix_nano: crate::otlp::now_unix_nano(),
                name,
                attributes: attributes(),
            });
        }
    }

    /// Sets the trace headers of a request forwarded upstream. The client's `traceparent` and
    /// `tracestate` never pass as they came, except through a trusted proxy while tracing is
    /// off; with tracing on, the upstream gets sekisho's span as its parent (sampled or not)
    /// and the trusted caller's `tracestate`.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        let Some(context) = &self.context else {
            if !self.peer_trusted {
                headers.remove(TRACEPARENT);
                headers.remove(TRACESTATE);
            }
            return;
        };
        headers.remove(TRACESTATE);
        let value = traceparent::format(&context.trace_id, &context.span_id, context.sampled);
        match HeaderValue::from_bytes(&value) {
            Ok(value) => {
                headers.insert(TRACEPARENT, value);
            }
            Err(_) => {
                headers.remove(TRACEPARENT);
            }
        }
        if let Some(state) = &context.tracestate {
            headers.insert(TRACESTATE, state.clone());
        }
    }

    /// The span of the request `record` describes, when this trace records: named
    /// `METHOD route` (or `METHOD` off any route), with the record's facts as attributes. The
    /// caller closes it with the status actually sent ([`FinishedSpan::close`]).
    pub(crate) fn end(self, record: &HttpEvent) -> Option<Box<FinishedSpan>> {
        let recording = self.recording?;
        let context = self.context?;
        let method = method_name(&record.method);
        let name = match &record.route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        };
        let mut attributes = vec![
            Attribute::text("http.request.method", method),
            Attribute::string("url.path", record.path.as_str()),
            Attribute::text("url.scheme", record.scheme),
            Attribute::string("server.address", record.host.as_str()),
            Attribute::text("network.protocol.version", protocol_version(record.version)),
            Attribute::text("sekisho.decision", record.decision.as_str()),
            Attribute::text("sekisho.door", record.door.as_str()),
            Attribute::string("sekisho.request_id", record.request_id.as_str()),
        ];
        if let Some(port) = record.port {
            attributes.push(Attribute::int("server.port", i64::from(port)));
        }
        if let Some(route) = &record.route {
            attributes.push(Attribute::string("sekisho.route", &**route));
        }
        Some(Box::new(FinishedSpan {
            context,
            name,
            start_unix_nano: recording.start_unix_nano,
            end_unix_nano: 0,
            attributes,
            events: recording.events,
            error: false,
        }))
    }
}

impl FinishedSpan {
    /// Ends the span now: the response's `status` (5xx: status `Error`, with `error.type`),
    /// after the phase `last` (the audit record's fate).
    pub(crate) fn close(&mut self, status: u16, last: &'static str) {
        let now = crate::otlp::now_unix_nano();
        self.events.push(SpanEvent {
            time_unix_nano: now,
            name: last,
            attributes: Vec::new(),
        });
        self.attributes.push(Attribute::int(
            "http.response.status_code",
            i64::from(status),
        ));
        self.error = status >= 500;
        if self.error {
            self.attributes
                .push(Attribute::string("error.type", status.to_string()));
        }
        self.end_unix_nano = now;
    }
}

/// A trusted caller's valid `traceparent` (exactly one) and its `tracestate` (at most
/// [`MAX_TRACESTATE`] bytes, else dropped).
fn incoming(headers: &HeaderMap) -> Option<(TraceParent, Option<HeaderValue>)> {
    let parent = incoming_parent(headers)?;
    let mut states = headers.get_all(TRACESTATE).iter();
    let tracestate = match (states.next(), states.next()) {
        (Some(one), None) if one.len() <= MAX_TRACESTATE => Some(one.clone()),
        (Some(first), Some(second)) => {
            // Several lines are one list (RFC 9110 §5.3).
            let mut joined = first.as_bytes().to_vec();
            for line in std::iter::once(second).chain(states) {
                joined.extend_from_slice(b",");
                joined.extend_from_slice(line.as_bytes());
            }
            (joined.len() <= MAX_TRACESTATE)
                .then(|| HeaderValue::from_bytes(&joined).ok())
                .flatten()
        }
        _ => None,
    };
    Some((parent, tracestate))
}

/// The one valid `traceparent` of `headers` (several lines are none).
fn incoming_parent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    traceparent::parse(value.as_bytes())
}

/// `ratio` × 2^56, the sampling threshold of new traces.
fn threshold(ratio: f64) -> u64 {
    const SPACE: f64 = (1u64 << 56) as f64;
    if ratio >= 1.0 {
        return 1 << 56;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    // In range: 0 < ratio × 2^56 < 2^56.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0 < ratio < 1, so the product is a positive number below 2^56"
    )]
    let threshold = (ratio * SPACE) as u64;
    threshold
}

/// Whether a new trace is sampled: its id's low 56 bits (the random part W3C level 2 names)
/// below the threshold, so every service sampling by ratio agrees on the same traces.
fn sample(trace_id: &[u8; 16], threshold: u64) -> bool {
    let mut low = [0u8; 8];
    for (slot, byte) in low.iter_mut().skip(1).zip(trace_id.iter().skip(9)) {
        *slot = *byte;
    }
    u64::from_be_bytes(low) < threshold
}

/// The method as semantic conventions name it: a known method, else `_OTHER` (a client
/// chooses the method, and a span name must not let it mint names).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// `network.protocol.version` of an HTTP version.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Trace and span ids: a per-thread generator (SplitMix64) seeded from the system's random
/// source, so an id costs a few arithmetic instructions and no system call or lock. Ids need
/// to be unique, not secret.
mod ids {
    use super::Cell;

    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }

    fn seed() -> u64 {
        let mut bytes = [0u8; 8];
        let filled = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        let seed = u64::from_ne_bytes(bytes);
        if filled.is_err() || seed == 0 {
            // No system randomness: the clock and the thread still tell threads and runs apart.
            let nanos = crate::otlp::now_unix_nano();
            let thread = std::thread::current().id();
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(nanos, thread), &mut hasher);
            return std::hash::Hasher::finish(&hasher);
        }
        seed
    }

    fn next() -> u64 {
        STATE.with(|state| {
            let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(s);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    /// A new, non-zero trace id.
    pub(super) fn trace_id() -> [u8; 16] {
        loop {
            let id = (u128::from(next()) << 64 | u128::from(next())).to_be_bytes();
            if id != [0; 16] {
                return id;
            }
        }
    }

    /// A new, non-zero span id.
    pub(super) fn span_id() -> [u8; 8] {
        loop {
            let id = next().to_be_bytes();
            if id != [0; 8] {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
