//! What the request path learns about a request, phase by phase, for its audit record: filled
//! in as the phases run, turned into one [`HttpEvent`] when the response head is ready.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Request, Response};

use crate::audit::{Decision, Door, Event, HttpEvent, Query};
use crate::connection::Connection;
use crate::error::{ProxyBody, ProxyError};
use crate::metrics::RouteDurations;
use crate::sessions::events::EventSource;
use crate::target::Target;
use crate::traces::{Attribute, Trace};

/// Longest path or user agent kept in a record (an attacker chooses them).
const MAX_TEXT: usize = 2048;

/// The facts of one request: its audit record as the phases fill it in. The time, status,
/// response length and latency are set when the response head is ready.
#[derive(Debug)]
pub(crate) struct Facts {
    /// The record under construction.
    pub record: HttpEvent,
    /// The request's span: its phases are noted here as they pass (nothing is kept unless
    /// the span is sampled).
    pub trace: Trace,
    /// The latency histograms of the configured route the request reached.
    pub durations: Option<Arc<RouteDurations>>,
}

impl Facts {
    /// What is known before any phase ran: the request line and the connection.
    pub(crate) fn new<B>(
        request: &Request<B>,
        conn: Connection,
        request_id: &str,
        time: jiff::Timestamp,
        record_query: bool,
    ) -> Self {
        let headers = request.headers();
        let raw_host = request
            .uri()
            .host()
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let query = match request.uri().query() {
            None => Query::None,
            Some(q) if record_query => Query::Kept(clip(q)),
            Some(_) => Query::Redacted,
        };
        Facts {
            record: HttpEvent {
                time,
                request_id: request_id.to_owned(),
                method: request.method().clone(),
                version: request.version(),
                scheme: if conn.tls { "https" } else { "http" },
                host: clip(&raw_host),
                port: None,
                path: clip(request.uri().path()),
                query,
                user_agent: text_header(headers, &header::USER_AGENT),
                peer: conn.peer,
                client_ip: conn.peer.ip(),
                tls_version: conn.tls_version,
                client_certificate: conn
                    .client_certificate
                    .map(|c| crate::hex::encode(&c.fingerprint)),
                route: None,
                decision: Decision::Error,
                policy: None,
                rule: None,
                report_only_deny: false,
                actor: None,
                upstream: None,
                upstream_connection: None,
                door: if conn.admin { Door::Admin } else { Door::Proxy },
                status: 0,
                detail: None,
                bytes_in: content_length(headers),
                bytes_out: None,
                latency: Duration::ZERO,
                container: None,
                upstream_container: None,
                attribution_unavailable: false,
            },
            trace: Trace::default(),
            durations: None,
        }
    }

    /// The request id.
    pub(crate) fn request_id(&self) -> &str {
        &self.record.request_id
    }

    /// The normalised addressing, once known.
    pub(crate) fn target(&mut self, target: &Target) {
        let record = &mut self.record;
        record.scheme = match target.scheme {
            sekisho_config::Scheme::Https => "https",
            sekisho_config::Scheme::Http => "http",
        };
        record.host.clone_from(&target.host);
        record.port = target.port;
        record.path = clip(&target.path);
        record.client_ip = target.forwarded.client_ip;
    }

    /// The request ended in an error page.
    pub(crate) fn refused(&mut self, error: &ProxyError) {
        let record = &mut self.record;
        if matches!(error, ProxyError::Unauthenticated { .. }) {
            record.decision = Decision::Unauthenticated;
        } else if matches!(error, ProxyError::Forbidden { .. }) {
            record.decision = Decision::Deny;
        } else if matches!(record.decision, Decision::Allow | Decision::Public) {
            // Allowed, then failed upstream or inside: the decision stands, the status tells.
        } else {
            record.decision = Decision::Error;
        }
        record.detail = Some(error.to_string());
        self.trace.event("refused", || {
            let mut attributes = vec![
                Attribute::text("error.type", error.kind()),
                Attribute::text("sekisho.error.origin", error.origin().as_str()),
            ];
            if let ProxyError::BadRequest { reason } = error {
                attributes.push(Attribute::text("sekisho.reason", reason));
            }
            attributes
        });
    }

    /// The record of the request, now that its response head is ready.
    pub(crate) fn event(mut self, latency: Duration, response: &Response<ProxyBody>) -> Event {
        self.record.status = response.status().as_u16();
        self.record.bytes_out = content_length(response.headers());
        self.record.latency = latency;
        Event::Http(Box::new(self.record))
    }

    /// Who and where, for the records and session events this request causes.
    pub(crate) fn source(&self) -> EventSource {
        EventSource {
            request_id: Some(self.record.request_id.clone()),
            client_ip: self.record.client_ip,
            peer: Some(self.record.peer),
            user_agent: self.record.user_agent.clone(),
            host: Some(self.record.host.clone()),
        }
    }
}

fn text_header(headers: &HeaderMap, name: &header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| clip(&String::from_utf8_lossy(v.as_bytes())))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut clipped = text.get(..end).unwrap_or_default().to_owned();
    clipped.push('…');
    clipped
}
