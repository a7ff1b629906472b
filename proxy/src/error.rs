//! Errors of the request path and the one place they become HTTP responses. Each error says
//! where it came from (the client, the upstream, or sekisho itself) so the status, the page and
//! the log line are chosen together. Pages are short and carry the request id; the detail only
//! goes to the log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};

/// The error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response sekisho produces.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Where a failure originated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something unacceptable.
    Downstream,
    /// The upstream failed or was too slow.
    Upstream,
    /// sekisho itself (or its provider) could not serve the request.
    Internal,
}

impl Origin {
    /// The name in spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Downstream => "downstream",
            Origin::Upstream => "upstream",
            Origin::Internal => "internal",
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Malformed request (path, host, header); `reason` is safe to show.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Short, client-safe reason.
        reason: &'static str,
    },
    /// No credentials, or credentials that did not verify.
    #[error("unauthenticated: {detail}")]
    Unauthenticated {
        /// Log-only detail.
        detail: String,
        /// `error` parameter of `WWW-Authenticate` (`invalid_token`), when a token was presented.
        invalid_token: bool,
    },
    /// Authenticated but not allowed.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Short, client-safe reason.
        reason: String,
    },
    /// No route matches the host and path.
    #[error("no route")]
    NoRoute,
    /// A route matches the host and path, but not the method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream failed: {detail}")]
    BadGateway {
        /// Log-only detail.
        detail: String,
    },
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    GatewayTimeout,
    /// A dependency (the provider) is unavailable.
    #[error("unavailable: {detail}")]
    Unavailable {
        /// Log-only detail.
        detail: String,
    },
    /// A bug or an environment failure inside sekisho.
    #[error("internal error: {detail}")]
    Internal {
        /// Log-only detail.
        detail: String,
    },
}

impl ProxyError {
    /// The error's name in spans (`error.type`): one fixed word per variant.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::Unauthenticated { .. } => "unauthenticated",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::BadGateway { .. } => "bad_gateway",
            ProxyError::GatewayTimeout => "gateway_timeout",
            ProxyError::Unavailable { .. } => "unavailable",
            ProxyError::Internal { .. } => "internal",
        }
    }

    /// Where the failure originated.
    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::Unauthenticated { .. }
            | ProxyError::Forbidden { .. }
            | ProxyError::NoRoute
            | ProxyError::MethodNotAllowed => Origin::Downstream,
            ProxyError::BadGateway { .. } | ProxyError::GatewayTimeout => Origin::Upstream,
            ProxyError::Unavailable { .. } | ProxyError::Internal { .. } => Origin::Internal,
        }
    }

    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The sentence shown to the client: never internal detail.
    fn public_reason(&self) -> String {
        match self {
            ProxyError::BadRequest { reason } => (*reason).to_owned(),
            ProxyError::Unauthenticated { .. } => "Sign-in required.".to_owned(),
            ProxyError::Forbidden { reason } => reason.clone(),
            ProxyError::NoRoute => "No route for this address.".to_owned(),
            ProxyError::MethodNotAllowed => "This address does not serve that method.".to_owned(),
            ProxyError::BadGateway { .. } => "The service behind this address failed.".to_owned(),
            ProxyError::GatewayTimeout => {
                "The service behind this address did not answer in time.".to_owned()
            }
            ProxyError::Unavailable { .. } => {
                "Temporarily unavailable; try again shortly.".to_owned()
            }
            ProxyError::Internal { .. } => "Something went wrong.".to_owned(),
        }
    }

    /// Logs the error and renders the client's page.
    pub fn into_response(self, request_id: &str, browser: bool) -> Response<ProxyBody> {
        let status = self.status();
        match self.origin() {
            Origin::Downstream => {
                tracing::debug!(request_id, %status, error = %self, "request refused")
            }
            Origin::Upstream => {
                tracing::warn!(request_id, %status, error = %self, "upstream error")
            }
            Origin::Internal => {
                tracing::error!(request_id, %status, error = %self, "internal error")
            }
        }
        let mut response = page(status, &self.public_reason(), request_id, browser);
        if let ProxyError::Unauthenticated { invalid_token, .. } = &self {
            let challenge = if *invalid_token {
                r#"Bearer realm="sekisho", error="invalid_token""#
            } else {
                r#"Bearer realm="sekisho""#
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The content security policy of sekisho's own short pages: nothing loads, nothing frames them.
pub const PAGE_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The headers every HTML page sekisho serves carries (error pages, the sign-out form, the
/// audit review, the built-in provider's pages): HTML content type, no caching, no sniffing,
/// no framing (`frame-ancestors` in `csp` and `X-Frame-Options`), no referrer, and `csp`.
pub fn html_headers(headers: &mut http::HeaderMap, csp: HeaderValue) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A short page (HTML for browsers, text otherwise) with the request id.
pub fn page(
    status: StatusCode,
    reason: &str,
    request_id: &str,
    browser: bool,
) -> Response<ProxyBody> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let (content_type, body) = if browser {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
                 <body><h1>{title}</h1><p>{}</p><p><small>Request id: <code>{request_id}</code></small></p></body></html>\n",
                html_escape(reason)
            ),
        )
    } else {
        (
            "text/plain; charset=utf-8",
            format!("{title}\n{reason}\nrequest id: {request_id}\n"),
        )
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if browser {
        html_headers(headers, HeaderValue::from_static(PAGE_CSP));
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

/// A complete body from bytes.
pub fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JWK Set document (`application/jwk-set+json`, cacheable for 5 minutes).
pub fn jwks(body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `error` and its causes as one line (`a: b: c`), and the first OS error number among them:
/// what the kernel said, for the hints that name what to do about it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> (String, Option<i32>) {
    let mut text = error.to_string();
    let mut errno = None;
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        source = cause.source();
    }
    (text, errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hide_internal_detail_and_carry_the_request_id() {
        let e = ProxyError::Internal {
            detail: "db password is hunter2".into(),
        };
        let response = e.into_response("req-123", false);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("req-123")
        );
    }

    #[test]
    fn error_pages_for_browsers_cannot_be_framed_or_load_anything() {
        let response = ProxyError::Forbidden {
            reason: "no".into(),
        }
        .into_response("req-1", true);
        let header = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header(header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(header(header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(header::REFERRER_POLICY), "no-referrer");
        assert!(header(header::CONTENT_TYPE).starts_with("text/html"));
    }

    #[test]
    fn unauthenticated_carries_a_challenge() {
        let e = ProxyError::Unauthenticated {
            detail: "x".into(),
            invalid_token: true,
        };
        let response = e.into_response("r", false);
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            challenge,
            Some(r#"Bearer realm="sekisho", error="invalid_token""#)
        );
    }

    #[test]
    fn reasons_are_escaped() {
        assert_eq!(html_escape("<script>&\""), "&lt;script&gt;&amp;&quot;");
    }
}
