//! The active health check (`health_check`): one task per target asks `GET path` every
//! interval through the route's connector and TLS settings, and records the verdict in the
//! route's [`Health`]. The tasks end when their [`Probes`] is dropped, with the upstream that
//! owns it (a reload replaced the route, or sekisho stops).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, Version, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sekisho_config::HealthCheck;
use tokio::task::AbortHandle;

use super::Target;
use super::health::Health;
use crate::error::ProxyBody;

/// `User-Agent` of the probes, so upstream logs can tell them from users.
const USER_AGENT: &str = "sekisho-health-check";

/// The running probe tasks of one route; dropping it stops them.
#[derive(Debug)]
pub(super) struct Probes {
    /// One per target.
    tasks: Vec<AbortHandle>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What one target's probe sends.
struct Probe {
    /// The target's index in the route (and in [`Health`]).
    index: usize,
    /// `GET` this.
    uri: Uri,
    /// With this `Host`.
    host: HeaderValue,
}

impl Probes {
    /// Starts one probe task per target on the current runtime. `None` (and a warning) when
    /// there is no runtime to run them on, or a target's probe URI is invalid (the config
    /// checked the path, so neither happens in sekisho itself).
    pub(super) fn start(
        client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
        check: &HealthCheck,
        targets: &[Target],
        health: Arc<Health>,
        http2: bool,
    ) -> Option<Probes> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                route = health.route(),
                "no runtime to run the health checks on; targets are judged by connect failures only"
            );
            return None;
        };
        let mut probes = Vec::with_capacity(targets.len());
        for (index, target) in targets.iter().enumerate() {
            match target.probe_uri(&check.path) {
                Ok(uri) => probes.push(Probe {
                    index,
                    uri,
                    host: target.host.clone(),
                }),
                Err(e) => {
                    tracing::warn!(route = health.route(), target = %target.base, error = %e, "health check path does not make a URI; no health checks");
                    return None;
                }
            }
        }
        let tasks = probes
            .into_iter()
            .map(|probe| {
                let (client, check, health) = (client.clone(), check.clone(), health.clone());
                runtime
                    .spawn(run(client, check, probe, health, http2))
                    .abort_handle()
            })
            .collect();
        Some(Probes { tasks })
    }
}

/// Probes one target every `check.interval`, from now until aborted.
async fn run(
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    check: HealthCheck,
    probe: Probe,
    health: Arc<Health>,
    http2: bool,
) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let verdict = once(&client, &check, &probe, http2).await;
        match verdict {
            Ok(()) => health.probed(probe.index, true, ""),
            Err(reason) => health.probed(probe.index, false, &reason),
        }
    }
}

/// One probe: `Ok` when the target answered within the timeout with a healthy status, else why
/// not.
async fn once(
    client: &Client<HttpsConnector<HttpConnector>, ProxyBody>,
    check: &HealthCheck,
    probe: &Probe,
    http2: bool,
) -> Result<(), String> {
    let mut request = Request::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *request.method_mut() = Method::GET;
    *request.uri_mut() = probe.uri.clone();
    *request.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let headers = request.headers_mut();
    headers.insert(header::HOST, probe.host.clone());
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let response = tokio::time::timeout(check.timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout))?
        .map_err(|e| crate::oidc::error_chain(&e))?;
    let status = response.status().as_u16();
    if check.is_healthy_status(status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
