//! The tunnel door: `CONNECT HOST:PORT` (HTTP/1.1, or HTTP/2's CONNECT) to a tunnel route.
//! The gate admits it like any request — session cookie or bearer token, the route's policy —
//! with a 401 for the unauthenticated and a 403 naming the rule for the refused; the upstream is
//! connected before the 200, so that an unreachable one is a 502 the client can tell apart; the
//! relay runs in a task of its own once the client's connection is handed over, and its end is
//! an audit record of its own (duration, bytes each way, who closed it and why).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use hyper_util::rt::TokioIo;

use super::Proxy;
use crate::audit::{Decision, Event, TunnelClosed};
use crate::connection::Connection;
use crate::error::{BoxError, ProxyBody, ProxyError, full};
use crate::facts::Facts;
use crate::gate::{Access, Ask, Authenticated, Challenge, Denial, Verdict};
use crate::proxy::Routing;
use crate::target::Target;
use crate::tunnel::{Holder, Traffic};

/// Response header naming why a tunnel was refused (the rule, or the reason id).
const DENIED: &str = "x-sekisho-denied";
/// Response header saying why the upstream could not be reached.
const ERROR: &str = "x-sekisho-error";

impl Proxy {
    /// A CONNECT request: find its tunnel route, admit it, connect the upstream, answer 200
    /// and relay.
    pub(super) async fn tunnel<B>(
        &self,
        mut request: Request<B>,
        conn: Connection,
        routing: &Routing,
        browser: bool,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let authority = request
            .uri()
            .authority()
            .ok_or(ProxyError::BadRequest {
                reason: "CONNECT needs HOST:PORT",
            })?
            .clone();
        // As the route's `from` has it: lower case, no trailing dot, IPv6 in brackets.
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        let port = authority.port_u16().ok_or(ProxyError::BadRequest {
            reason: "CONNECT needs HOST:PORT",
        })?;
        let scheme = if conn.tls {
            sekisho_config::Scheme::Https
        } else {
            sekisho_config::Scheme::Http
        };
        let found = routing
            .table
            .routes()
            .iter()
            .enumerate()
            .find(|(_, route)| {
                route.tunnel.is_some()
                    && route.from.host == host
                    && route.from.port == Some(port)
                    && route.from.scheme == scheme
            });
        let Some((index, route)) = found else {
            facts.record.host.clone_from(&host);
            facts.record.port = Some(port);
            return Err(ProxyError::NoRoute);
        };
        let Some(tunnel) = &route.tunnel else {
            return Err(ProxyError::NoRoute);
        };
        facts.record.route = Some(Arc::from(route.id.as_str()));
        facts.durations = routing.durations.get(index).cloned();
        facts.record.host.clone_from(&host);
        facts.record.port = Some(port);
        facts.record.path = String::new();
        facts.record.upstream = Some(format!("tcp://{}", tunnel.upstream));
        // Plain-HTTP tunnels (tcp+http) only for clients on this host.
        if scheme == sekisho_config::Scheme::Http && !conn.peer.ip().is_loopback() {
            return Err(ProxyError::Forbidden {
                reason: "plain-HTTP tunnels are served to loopback clients only".into(),
            });
        }
        let target = Target {
            scheme,
            host: host.clone(),
            port: Some(port),
            path: "/".into(),
            forwarded: crate::headers::Forwarded {
                for_chain: conn.peer.ip().to_canonical().to_string(),
                proto: match scheme {
                    sekisho_config::Scheme::Https => "https".into(),
                    sekisho_config::Scheme::Http => "http".into(),
                },
                host: host.clone(),
                client_ip: conn.peer.ip().to_canonical(),
            },
        };
        let ask = Ask {
            method: &Method::CONNECT,
            query: None,
            headers: request.headers(),
            target: &target,
            conn: &conn,
            browser,
            access: if route.public {
                Access::Public
            } else {
                Access::Policy {
                    policy: &route.policy,
                    mode: route.mode,
                    rego: &routing.rego,
                    cors_allow_preflight: false,
                    check: None,
                }
            },
            challenge: Challenge::Status401,
            denial: Denial::Route {
                show_details: route.show_error_details,
            },
        };
        let auth = match self.gate.admit(ask, facts, cookies).await? {
            Verdict::Admitted(auth) => auth,
            Verdict::Refused(mut response) => {
                if response.status() == StatusCode::FORBIDDEN {
                    let why = facts.record.rule.as_deref().map_or_else(
                        || "denied by policy".to_owned(),
                        |rule| format!("rule {rule}"),
                    );
                    if let Ok(value) = HeaderValue::from_str(&crate::session::header_safe(&why)) {
                        response.headers_mut().insert(DENIED, value);
                    }
                }
                return Ok(response);
            }
        };

        // The upstream first: an unreachable one is a 502, not a 200 and a dead tunnel.
        let connect = tokio::time::timeout(
            route.timeouts.connect,
            tokio::net::TcpStream::connect(tunnel.upstream.as_str()),
        )
        .await;
        let upstream = match connect {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Ok(unreachable(
                    StatusCode::BAD_GATEWAY,
                    &format!("connecting to {}: {e}", tunnel.upstream),
                    facts,
                ));
            }
            Err(_) => {
                return Ok(unreachable(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("connecting to {}: timed out", tunnel.upstream),
                    facts,
                ));
            }
        };
        let _ = upstream.set_nodelay(true);
        facts.record.upstream_connection = match (upstream.local_addr(), upstream.peer_addr()) {
            (Ok(local), Ok(remote)) => {
                Some(crate::connection::UpstreamConnection { local, remote })
            }
            _ => None,
        };
        facts.record.decision = if route.public {
            Decision::Public
        } else {
            Decision::Allow
        };

        let holder = match &auth {
            Some(Authenticated::Session { session }) => Some(Holder::Session(session.clone())),
            Some(Authenticated::Bearer {
                identity,
                token_hash,
                issued_at,
                expires_at,
                ..
            }) => Some(Holder::Bearer {
                token_hash: token_hash.clone(),
                identity: identity.clone(),
                issued_at: *issued_at,
                expires_at: Some(*expires_at),
            }),
            None => None,
        };
        let registration = holder.map(|holder| self.tunnels.register(holder));
        let (_, never) = tokio::sync::watch::channel(None);
        let upgrade = hyper::upgrade::on(&mut request);
        let limits = (tunnel.idle_timeout, tunnel.max_duration);
        let audit = self.audit.clone();
        let opened = TunnelClosed {
            time: jiff::Timestamp::now(),
            opened: jiff::Timestamp::now(),
            request_id: facts.record.request_id.clone(),
            route: route.id.clone(),
            user: auth.as_ref().map(|a| a.actor().user_key().to_owned()),
            client: conn.peer,
            upstream: tunnel.upstream.clone(),
            bytes_up: 0,
            bytes_down: 0,
            reason: crate::tunnel::CloseReason::Finished,
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let closed = registration.as_ref().map_or(never, |r| r.closed.clone());
            let traffic = Traffic::default();
            let reason = match upgrade.await {
                Ok(client) => {
                    crate::tunnel::relay(
                        TokioIo::new(client),
                        upstream,
                        closed,
                        limits.0,
                        limits.1,
                        &traffic,
                    )
                    .await
                }
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel: the client's connection was not handed over");
                    crate::tunnel::CloseReason::Client
                }
            };
            drop(registration);
            let ordering = std::sync::atomic::Ordering::Relaxed;
            let record = TunnelClosed {
                time: jiff::Timestamp::now(),
                bytes_up: traffic.up.load(ordering),
                bytes_down: traffic.down.load(ordering),
                reason,
                ..opened
            };
            tracing::debug!(route = %record.route, reason = reason.as_str(), seconds = started.elapsed().as_secs(), "tunnel closed");
            audit.keep(Event::Tunnel(Box::new(record)));
        });
        Ok(Response::builder()
            .status(StatusCode::OK)
            .body(full(Bytes::new()))
            .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
    }
}

/// The 502/504 for an upstream the tunnel could not reach, saying why in a header.
fn unreachable(status: StatusCode, why: &str, facts: &mut Facts) -> Response<ProxyBody> {
    facts.record.decision = Decision::Allow;
    facts.record.detail = Some(why.to_owned());
    let mut response = Response::new(full(format!("{why}\n")));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(&crate::session::header_safe(why)) {
        response.headers_mut().insert(ERROR, value);
    }
    response
}
