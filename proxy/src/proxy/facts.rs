//! What the request path learns about a request, phase by phase, for its audit record: filled
//! in as the phases run, turned into one [`HttpEvent`] when the response head is ready.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, Version};

use super::{Connection, Target};
use crate::audit::{Actor, AuthActivity, AuthEvent, Decision, Event, HttpEvent, Query};
use crate::error::{ProxyBody, ProxyError};
use crate::session::Identity;

/// Longest path or user agent kept in a record (an attacker chooses them).
const MAX_TEXT: usize = 2048;

/// The facts of one request.
#[derive(Debug)]
pub(crate) struct Facts {
    request_id: String,
    method: Method,
    version: Version,
    scheme: &'static str,
    host: String,
    port: Option<u16>,
    path: String,
    query: Query,
    user_agent: Option<String>,
    peer: SocketAddr,
    client_ip: IpAddr,
    tls_version: Option<&'static str>,
    client_certificate: Option<String>,
    bytes_in: Option<u64>,
    /// The route that matched.
    pub route: Option<Arc<str>>,
    /// The decision so far (`Error` until a phase decides).
    pub decision: Decision,
    /// The route's policy (its configuration path).
    pub policy: Option<Arc<str>>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// Report mode let a would-be denial through.
    pub report_only_deny: bool,
    /// Who.
    pub actor: Option<Actor>,
    /// Where the request went.
    pub upstream: Option<String>,
    detail: Option<String>,
}

impl Facts {
    /// What is known before any phase ran: the request line and the connection.
    pub(crate) fn new<B>(
        request: &Request<B>,
        conn: Connection,
        request_id: &str,
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
            bytes_in: content_length(headers),
            route: None,
            decision: Decision::Error,
            policy: None,
            rule: None,
            report_only_deny: false,
            actor: None,
            upstream: None,
            detail: None,
        }
    }

    /// The request id.
    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The normalised addressing, once known.
    pub(crate) fn target(&mut self, target: &Target) {
        self.scheme = match target.scheme {
            sekisho_config::Scheme::Https => "https",
            sekisho_config::Scheme::Http => "http",
        };
        self.host.clone_from(&target.host);
        self.port = target.port;
        self.path.clone_from(&target.path);
        self.client_ip = target.forwarded.client_ip;
    }

    /// The request ended in an error page.
    pub(crate) fn refused(&mut self, error: &ProxyError) {
        if matches!(error, ProxyError::Unauthenticated { .. }) {
            self.decision = Decision::Unauthenticated;
        } else if matches!(error, ProxyError::Forbidden { .. }) {
            self.decision = Decision::Deny;
        } else if self.decision == Decision::Allow {
            // Allowed, then failed upstream or inside: the decision stands, the status tells.
        } else {
            self.decision = Decision::Error;
        }
        self.detail = Some(error.to_string());
    }

    /// The record of the request, now that its response head is ready.
    pub(crate) fn event(
        &mut self,
        time: jiff::Timestamp,
        latency: Duration,
        response: &Response<ProxyBody>,
    ) -> Event {
        Event::Http(Box::new(HttpEvent {
            time,
            request_id: std::mem::take(&mut self.request_id),
            method: self.method.clone(),
            version: self.version,
            scheme: self.scheme,
            host: std::mem::take(&mut self.host),
            port: self.port,
            path: std::mem::take(&mut self.path),
            query: std::mem::replace(&mut self.query, Query::None),
            user_agent: self.user_agent.take(),
            peer: self.peer,
            client_ip: self.client_ip,
            tls_version: self.tls_version,
            client_certificate: self.client_certificate.take(),
            route: self.route.take(),
            decision: self.decision,
            policy: self.policy.take(),
            rule: self.rule.take(),
            report_only_deny: self.report_only_deny,
            actor: self.actor.take(),
            upstream: self.upstream.take(),
            status: response.status().as_u16(),
            detail: self.detail.take(),
            bytes_in: self.bytes_in,
            bytes_out: content_length(response.headers()),
            latency,
            container: None,
        }))
    }

    /// An authentication event in the context of this request.
    pub(crate) fn auth(
        &self,
        activity: AuthActivity,
        success: bool,
        detail: Option<String>,
        identity: Option<Arc<Identity>>,
        session: Option<String>,
    ) -> Event {
        let provider = identity.as_ref().map(|i| i.issuer.clone());
        Event::Auth(Box::new(AuthEvent {
            time: jiff::Timestamp::now(),
            activity,
            success,
            detail,
            request_id: Some(self.request_id.clone()),
            identity,
            session,
            provider,
            client_ip: Some(self.client_ip),
            peer: Some(self.peer),
            user_agent: self.user_agent.clone(),
            host: Some(self.host.clone()),
        }))
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
