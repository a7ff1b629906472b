//! Finished spans → one OTLP `ExportTraceServiceRequest` (protobuf), on the exporter's task,
//! off the request path.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

use super::{Attribute, FinishedSpan, Value};
use crate::otlp::{attribute, int_attribute};

/// `flags`: the parent is known to be remote (bits 8 and 9), or known not to exist.
const HAS_IS_REMOTE: u32 = 0x100;
/// `flags`: the parent is remote.
const IS_REMOTE: u32 = 0x200;

/// The protobuf body of one export request.
pub(super) fn encode(batch: &[Box<FinishedSpan>]) -> Vec<u8> {
    request(batch).encode_to_vec()
}

/// The export request for `batch`.
pub(crate) fn request(batch: &[Box<FinishedSpan>]) -> ExportTraceServiceRequest {
    let spans = batch.iter().map(|span| self::span(span)).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(crate::otlp::resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "sekisho".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn span(span: &FinishedSpan) -> Span {
    let context = &span.context;
    let mut flags = u32::from(context.sampled) | HAS_IS_REMOTE;
    if context.parent_id.is_some() {
        flags |= IS_REMOTE;
    }
    Span {
        trace_id: context.trace_id.to_vec(),
        span_id: context.span_id.to_vec(),
        trace_state: context
            .tracestate
            .as_ref()
            .and_then(|s| s.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        parent_span_id: context.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: span.name.clone(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: span.start_unix_nano,
        end_time_unix_nano: span.end_unix_nano,
        attributes: attributes(&span.attributes),
        events: span
            .events
            .iter()
            .map(|event| Event {
                time_unix_nano: event.time_unix_nano,
                name: event.name.to_owned(),
                attributes: attributes(&event.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        status: span.error.then(|| Status {
            message: String::new(),
            code: StatusCode::Error as i32,
        }),
        ..Span::default()
    }
}

fn attributes(attributes: &[Attribute]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|a| match &a.value {
            Value::Static(text) => attribute(a.key, text),
            Value::Text(text) => attribute(a.key, text),
            Value::Int(n) => int_attribute(a.key, *n),
        })
        .collect()
}
