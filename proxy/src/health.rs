//! Liveness and readiness for orchestrators: `/healthz` answers while the process serves;
//! `/readyz` runs the readiness checks (each one a function here, listed once in
//! `Proxy::readiness`) and names the ones that fail.

use std::fmt::Write as _;

use http::{Response, StatusCode, header};

use crate::attribution::AttributionStatus;
use crate::audit::AuditLog;
use crate::error::ProxyBody;
use crate::oidc::{Discovery, OidcProvider};
use crate::xdp::NicStatus;

/// One readiness check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Working.
    Ok,
    /// Not working; the instance is not ready when the check is required.
    Failing,
    /// Working with less than was configured (an optional part is missing).
    Degraded,
    /// Nothing to check: the part is not configured.
    NotConfigured,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failing => "failing",
            Status::Degraded => "degraded",
            Status::NotConfigured => "not_configured",
        }
    }
}

/// A readiness check: its name, whether a failure makes the instance not ready, and what it
/// found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable name, as `/readyz` and the logs write it.
    pub name: &'static str,
    /// Whether [`Status::Failing`] makes the instance not ready.
    pub required: bool,
    /// The outcome.
    pub status: Status,
    /// What was found, for the operator.
    pub detail: String,
}

/// Every check's outcome, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Readiness {
    /// Ready unless a required check fails.
    pub fn ready(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| c.required && c.status == Status::Failing)
    }

    /// The `/readyz` answer: 200 when ready, else 503; a JSON body either way:
    /// `{"ready": bool, "checks": [{"name", "status", "required", "detail"}]}`.
    pub fn response(&self) -> Response<ProxyBody> {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "status": c.status.as_str(),
                    "required": c.required,
                    "detail": c.detail,
                })
            })
            .collect();
        let body = serde_json::json!({ "ready": self.ready(), "checks": checks });
        let status = if self.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        respond(status, "application/json", format!("{body}\n"))
    }

    /// The failing required checks as `name: detail` (for logs and audit details).
    pub fn failing(&self) -> String {
        let mut text = String::new();
        for c in self
            .checks
            .iter()
            .filter(|c| c.required && c.status == Status::Failing)
        {
            if !text.is_empty() {
                text.push_str("; ");
            }
            let _ = write!(text, "{}: {}", c.name, c.detail);
        }
        text
    }
}

/// The `/healthz` answer: 200 `ok` (the process serves requests).
pub fn alive() -> Response<ProxyBody> {
    respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
}

/// The OpenID provider's metadata and JWKS have been fetched (discovery fetches both).
pub fn provider(oidc: &OidcProvider) -> Check {
    let (status, detail) = match oidc.discovery() {
        Discovery::Done { keys } => (
            Status::Ok,
            format!("metadata and JWKS fetched ({keys} keys)"),
        ),
        Discovery::Pending => (Status::Failing, "discovery not done yet".to_owned()),
        Discovery::Failed(error) => (Status::Failing, format!("discovery failed: {error}")),
    };
    Check {
        name: "provider",
        required: true,
        status,
        detail,
    }
}

/// The audit log takes records (its writer is not failing).
pub fn audit(log: &AuditLog) -> Check {
    let (status, detail) = match log.failure() {
        None => (Status::Ok, format!("writable ({})", log.dir().display())),
        Some(error) => (Status::Failing, format!("cannot be written: {error}")),
    };
    Check {
        name: "audit",
        required: true,
        status,
        detail,
    }
}

/// The XDP guard is attached. With `xdp.required` sekisho does not start without it; with
/// `required: false` a guard that did not attach makes the instance degraded, not unready.
pub fn nic_guard(nic: &NicStatus, required: bool) -> Check {
    let (status, detail) = match nic {
        NicStatus::Off => (Status::NotConfigured, "no xdp section".to_owned()),
        NicStatus::Attached(_) => (Status::Ok, "attached".to_owned()),
        NicStatus::Failed(why) if required => (Status::Failing, format!("not attached: {why}")),
        NicStatus::Failed(why) => (
            Status::Degraded,
            format!("not attached (xdp.required: false): {why}"),
        ),
    };
    Check {
        name: "xdp_guard",
        required,
        status,
        detail,
    }
}

/// The socket hooks are attached; `required` as for the XDP guard.
pub fn attribution(attribution: &AttributionStatus, required: bool) -> Check {
    let (status, detail) = match attribution {
        AttributionStatus::Off => (Status::NotConfigured, "no attribution section".to_owned()),
        AttributionStatus::Active(_) => (Status::Ok, "attached".to_owned()),
        AttributionStatus::Unavailable(why) if required => {
            (Status::Failing, format!("not attached: {why}"))
        }
        AttributionStatus::Unavailable(why) => (
            Status::Degraded,
            format!("not attached (attribution.required: false): {why}"),
        ),
    };
    Check {
        name: "attribution",
        required,
        status,
        detail,
    }
}

/// State shared between instances (Redis): not implemented yet, so never configured.
pub fn shared_state(shared: Option<&crate::shared::SharedState>) -> Check {
    let (status, detail) = match shared {
        None => (
            Status::NotConfigured,
            "no shared_state section (this instance's state is its own)".to_owned(),
        ),
        Some(link) if link.connected() => (
            Status::Ok,
            format!("connected to Redis at {}", link.server()),
        ),
        Some(link) => (
            Status::Degraded,
            format!(
                "Redis at {} unreachable ({}); serving from the local copy, {} changes queued",
                link.server(),
                link.last_error().unwrap_or_else(|| "connecting".to_owned()),
                link.queued()
            ),
        ),
    };
    Check {
        name: "shared_state",
        required: false,
        status,
        detail,
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(crate::error::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, required: bool, status: Status) -> Check {
        Check {
            name,
            required,
            status,
            detail: String::new(),
        }
    }

    #[test]
    fn only_a_failing_required_check_makes_the_instance_unready() {
        let mut readiness = Readiness {
            checks: vec![
                check("a", true, Status::Ok),
                check("b", false, Status::Failing),
                check("c", false, Status::Degraded),
                check("d", false, Status::NotConfigured),
            ],
        };
        assert!(readiness.ready());
        assert_eq!(readiness.response().status(), StatusCode::OK);
        readiness.checks.push(Check {
            detail: "gone".into(),
            ..check("e", true, Status::Failing)
        });
        assert!(!readiness.ready());
        assert_eq!(readiness.failing(), "e: gone");
        assert_eq!(
            readiness.response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn unattached_kernel_layers_fail_only_when_required() {
        let failed = NicStatus::Failed("no such interface".into());
        assert_eq!(nic_guard(&failed, false).status, Status::Degraded);
        assert_eq!(nic_guard(&failed, true).status, Status::Failing);
        assert_eq!(
            nic_guard(&NicStatus::Off, false).status,
            Status::NotConfigured
        );
        let unavailable = AttributionStatus::Unavailable("no cgroup v2".into());
        assert_eq!(attribution(&unavailable, false).status, Status::Degraded);
        assert_eq!(attribution(&unavailable, true).status, Status::Failing);
    }
}
