//! Phase: forward. The request is rewritten for the upstream — hop-by-hop, spoofable identity
//! and sekisho's own headers stripped, X-Forwarded-* rebuilt, the identity headers and the
//! signed assertion added — sent over the route's pooled client to a target in rotation (another
//! one when a replayable request could not reach it), and the response (or the WebSocket
//! splice) handed back. The target and the upstream connection used are recorded.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt as _;
use sekisho_config::Route;

use super::Proxy;
use super::route::Routed;
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::facts::Facts;
use crate::gate::Authenticated;
use crate::headers::{
    apply_route_headers, is_websocket_upgrade, sanitize_request_headers, set_forwarded,
    strip_hop_by_hop,
};
use crate::session::{CookieCodec, strip_own_cookies, unix_now};
use crate::target::Target;
use crate::traces::Attribute;
use crate::upstream::{IdleTimeout, Outgoing, splice_upgrades};

impl Proxy {
    /// Sends an admitted request to its route's upstream.
    pub(super) async fn forward<B>(
        &self,
        mut request: Request<B>,
        target: &Target,
        routed: &Routed<'_>,
        auth: Option<&Authenticated>,
        request_id: &str,
        facts: &mut Facts,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let route = routed.route;
        let websocket = is_websocket_upgrade(request.headers());
        if websocket && !route.allow_websockets {
            return Err(ProxyError::Forbidden {
                reason: "WebSockets are not enabled for this route.".into(),
            });
        }
        if websocket && request.version() != Version::HTTP_11 {
            return Err(ProxyError::BadRequest {
                reason: "WebSocket upgrades need HTTP/1.1",
            });
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        if routed.upstream.is_empty() {
            return Err(ProxyError::BadGateway {
                detail: format!("route {} has no upstream (forward-auth only)", route.id),
            });
        }
        let (mut parts, body) = request.into_parts();
        let keep_te_trailers = route.upstream_http2
            && parts
                .headers
                .get(header::TE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
        let codec = self.gate.sessions().codec(target.scheme);
        self.rewrite_request_headers(
            &mut parts.headers,
            target,
            route,
            websocket,
            auth.is_some_and(Authenticated::is_bearer),
            codec,
        );
        if keep_te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // `Host`: the client's with `preserve_host`, else each target's own (set as it is tried).
        let host = if route.preserve_host {
            let text = match target.port {
                Some(p) => format!("{}:{p}", target.host),
                None => target.host.clone(),
            };
            Some(
                HeaderValue::from_str(&text).map_err(|_| ProxyError::BadRequest {
                    reason: "malformed Host",
                })?,
            )
        } else {
            None
        };
        if let Ok(id) = HeaderValue::from_str(request_id) {
            parts.headers.insert("x-request-id", id);
        }
        if let (true, Some(auth)) = (route.pass_identity_headers, auth) {
            self.set_identity_headers(&mut parts.headers, auth, &route.id)?;
        }
        // The upstream's parent is sekisho's span (the client's own trace headers never pass
        // unless a trusted proxy sent them).
        facts.trace.propagate(&mut parts.headers);
        let body = IdleTimeout::new(body, route.timeouts.idle).boxed_unsync();
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        facts.trace.event("upstream request sent", Vec::new);
        let outgoing = Outgoing {
            parts,
            body,
            path: &target.path,
            host,
        };
        let sent = routed
            .upstream
            .send(outgoing, &mut facts.record.upstream)
            .await?;
        facts.trace.event("upstream response headers received", || {
            vec![Attribute::int(
                "http.response.status_code",
                i64::from(sent.response.status().as_u16()),
            )]
        });
        facts.record.upstream_connection = sent.connection;
        let mut response = sent.response;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client) => splice_upgrades(
                    client,
                    hyper::upgrade::on(&mut response),
                    route.timeouts.idle,
                ),
                None => {
                    return Err(ProxyError::BadGateway {
                        detail: "upstream switched protocols unasked".into(),
                    });
                }
            }
        } else {
            strip_hop_by_hop(response.headers_mut(), false);
        }
        tracing::debug!(request_id, route = %route.id, sub = auth.map(|a| a.identity().sub.as_str()), status = %response.status(), "forwarded");
        Ok(response)
    }

    /// Strips hop-by-hop, spoofable and sekisho's own headers, applies the route's
    /// `remove_request_headers` and `set_request_headers`, then sets the forwarded set.
    fn rewrite_request_headers(
        &self,
        headers: &mut HeaderMap,
        target: &Target,
        route: &Route,
        websocket: bool,
        bearer_used: bool,
        codec: &CookieCodec,
    ) {
        let names: Vec<&str> = self.identity_names.iter().map(String::as_str).collect();
        sanitize_request_headers(headers, &names, &route.strip_request_headers, websocket);
        strip_own_cookies(headers, codec);
        if bearer_used {
            headers.remove(header::AUTHORIZATION);
        }
        apply_route_headers(
            headers,
            &route.remove_request_headers,
            &route.set_request_headers,
        );
        set_forwarded(headers, &target.forwarded);
    }

    /// The identity headers and the signed assertion (audience: `audience`, the route id).
    pub(super) fn set_identity_headers(
        &self,
        headers: &mut HeaderMap,
        auth: &Authenticated,
        audience: &str,
    ) -> Result<(), ProxyError> {
        let names = &self.identity_header_names;
        let values = auth.values();
        headers.insert(names.user.clone(), values.user.clone());
        if let Some(email) = &values.email {
            headers.insert(names.email.clone(), email.clone());
        }
        headers.insert(names.groups.clone(), values.groups.clone());
        let assertion = self
            .signer
            .assertion(auth.cache_key(), audience, auth.identity(), unix_now())
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
        headers.insert(names.jwt_assertion.clone(), assertion);
        Ok(())
    }
}
