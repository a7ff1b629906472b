//! The human summary `sekisho check` prints: listeners, issuer, and two lines per route (what
//! it matches and where it goes, then its policy and mode, or that it is public).

use std::fmt::Write as _;

use crate::model::{Config, Route};

impl Config {
    /// A few lines for a human: the listeners, the issuer, and per route
    /// `id  from[ path ...][ methods ...][ prefix_rewrite ...] -> to[, to...]|(forward-auth
    /// only)  (flags)` and then `policy NAME|inline|default: authenticated users
    /// (enforce|report)` or `public: no sign-in, no policy`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut listeners = Vec::new();
        if let Some(addr) = self.server.http_listen {
            listeners.push(format!("http {addr}"));
        }
        if let Some(addr) = self.server.https_listen {
            let count = self.server.tls.len();
            let plural = if count == 1 { "" } else { "s" };
            listeners.push(format!("https {addr} ({count} certificate{plural})"));
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "listeners: {}", listeners.join(", "));
        let _ = writeln!(out, "issuer:    {}", self.oidc.issuer);
        if let Some(idp) = &self.identity_provider {
            let _ = writeln!(
                out,
                "built-in provider: {} ({} users, {} clients)",
                idp.issuer,
                idp.users.len(),
                idp.clients.len()
            );
        }
        let audit = &self.audit;
        let _ = writeln!(
            out,
            "audit:     {} ({}, on failure {}{})",
            audit.dir.display(),
            match audit.durability {
                crate::model::Durability::Strict => "strict",
                crate::model::Durability::Batched => "batched",
            },
            match audit.on_failure {
                crate::model::OnFailure::Deny => "deny",
                crate::model::OnFailure::Allow => "allow",
            },
            audit
                .otlp
                .as_ref()
                .map_or_else(String::new, |o| format!(", OTLP to {}", o.endpoint))
        );
        if let Some(admin) = &self.admin {
            let _ = writeln!(
                out,
                "admin:     http {} (metrics, audit review)",
                admin.listen
            );
        }
        let _ = writeln!(out, "routes:");
        let id_width = self
            .routes
            .iter()
            .map(|route| route.id.len())
            .max()
            .unwrap_or(0);
        for route in &self.routes {
            let upstreams: Vec<String> = route.to.iter().map(ToString::to_string).collect();
            if let Some(tunnel) = &route.tunnel {
                let scheme = match route.from.scheme {
                    crate::model::Scheme::Https => "tcp+https",
                    crate::model::Scheme::Http => "tcp+http",
                };
                let _ = write!(
                    out,
                    "  {:id_width$}  {scheme}://{}:{} -> tcp://{}  (tunnel, idle {}, max {})",
                    route.id,
                    route.from.host,
                    route.from.port.unwrap_or_default(),
                    tunnel.upstream,
                    crate::value::format_duration(tunnel.idle_timeout),
                    crate::value::format_duration(tunnel.max_duration),
                );
                let _ = writeln!(
                    out,
                    "\n  {:id_width$}  policy {} ({})",
                    "",
                    policy_name(route),
                    route.mode
                );
                continue;
            }
            let _ = write!(out, "  {:id_width$}  {}", route.id, route.from);
            if let Some(path) = &route.path {
                let _ = write!(out, " path {path}");
            }
            if !route.methods.is_empty() {
                let _ = write!(out, " methods {}", route.methods.join(", "));
            }
            if let Some(rewrite) = &route.prefix_rewrite {
                let _ = write!(out, " prefix_rewrite {rewrite}");
            }
            if upstreams.is_empty() {
                let _ = write!(out, " -> (forward-auth only)");
            } else {
                let _ = write!(out, " -> {}", upstreams.join(", "));
            }
            let flags = flags(route);
            if !flags.is_empty() {
                let _ = write!(out, "  ({})", flags.join(", "));
            }
            if route.public {
                let _ = writeln!(out, "\n  {:id_width$}  public: no sign-in, no policy", "");
            } else {
                let _ = writeln!(
                    out,
                    "\n  {:id_width$}  policy {} ({})",
                    "",
                    policy_name(route),
                    route.mode
                );
            }
        }
        out
    }
}

/// How a route's policy is named: its shared name, `inline`, or the default.
fn policy_name(route: &Route) -> &str {
    match &route.policy.name {
        Some(name) => name,
        None if route.policy.is_default() => "default: authenticated users",
        None => "inline",
    }
}

/// The non-default behaviours of a route, by short name.
fn flags(route: &Route) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if route.allow_websockets {
        flags.push("websockets");
    }
    if route.upstream_http2 {
        flags.push("h2");
    }
    if route.preserve_host {
        flags.push("preserve_host");
    }
    // A public route has no identity to pass; its second line already says so.
    if !route.pass_identity_headers && !route.public {
        flags.push("no_identity_headers");
    }
    if route.show_error_details {
        flags.push("error_details");
    }
    match route.tls.verify {
        crate::model::UpstreamVerify::PublicRoots => {}
        crate::model::UpstreamVerify::CustomCa(_) => flags.push("tls_custom_ca"),
        crate::model::UpstreamVerify::Off => flags.push("tls_skip_verify"),
    }
    if route.tls.server_name.is_some() {
        flags.push("tls_server_name");
    }
    if route.tls.client_auth.is_some() {
        flags.push("tls_client_certificate");
    }
    if route.cors_allow_preflight {
        flags.push("cors_preflight");
    }
    if route.upstream_health.check.is_some() {
        flags.push("health_check");
    }
    if route.upstream_health.eject_after == 0 && !route.to.is_empty() {
        flags.push("no_ejection");
    }
    if !route.remove_request_headers.is_empty() {
        flags.push("headers_removed");
    }
    if !route.set_request_headers.is_empty() {
        flags.push("headers_set");
    }
    flags
}
