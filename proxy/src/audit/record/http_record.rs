//! The HTTP Activity record (one per request) written by hand: the same bytes serde's derive
//! writes for the shape AUDIT.md documents (the tests compare the two on every kind of request),
//! without building the nested structs first, at a third of the cost on the writer thread.

use super::json::Object;
use super::{
    Actor, ContainerRecord, Decision, Door, HTTP_ACTIVITY, HttpEvent, OCSF_VERSION, Query,
    http_activity, millis, type_name, version_text,
};

/// Appends `e` as one JSON object.
pub(super) fn write(e: &HttpEvent, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut result = Ok(());
    Object::write(out, |o| result = members(o, e));
    result
}

fn members(o: &mut Object<'_>, e: &HttpEvent) -> Result<(), serde_json::Error> {
    let allowed = matches!(e.decision, Decision::Allow | Decision::Public);
    let success = allowed && e.status < 400;
    let severity_id = match e.decision {
        Decision::Allow | Decision::Login | Decision::Public => 1,
        Decision::Unauthenticated | Decision::Error => 2,
        Decision::Deny => 3,
    };
    let (activity_id, activity_name) = http_activity(&e.method);

    // The OCSF head.
    o.number("class_uid", HTTP_ACTIVITY.uid);
    o.str("class_name", HTTP_ACTIVITY.name);
    o.number("category_uid", HTTP_ACTIVITY.category_uid);
    o.str("category_name", HTTP_ACTIVITY.category_name);
    o.number("activity_id", activity_id);
    o.str("activity_name", activity_name);
    o.number(
        "type_uid",
        u64::from(HTTP_ACTIVITY.uid) * 100 + u64::from(activity_id),
    );
    match type_name(HTTP_ACTIVITY.uid, activity_id) {
        Some(name) => o.str("type_name", name),
        None => o.display(
            "type_name",
            &format_args!("{}: {activity_name}", HTTP_ACTIVITY.name),
        ),
    }
    o.number("time", millis(e.time));
    o.display("time_dt", &e.time);
    o.number("severity_id", severity_id);
    o.str(
        "severity",
        match severity_id {
            1 => "Informational",
            2 => "Low",
            _ => "Medium",
        },
    );
    o.number("status_id", if success { 1 } else { 2 });
    o.str("status", if success { "Success" } else { "Failure" });
    o.display("status_code", &e.status);
    o.opt_str("status_detail", e.detail.as_deref());
    o.object("metadata", |o| {
        o.str("version", OCSF_VERSION);
        o.object("product", |o| {
            o.str("name", "sekisho");
            o.str("vendor_name", "sekisho");
            o.str("version", env!("CARGO_PKG_VERSION"));
        });
        o.str("uid", &e.request_id);
        o.str("log_name", "audit");
    });

    // HTTP Activity.
    o.number("action_id", if allowed { 1 } else { 2 });
    o.str("action", if allowed { "Allowed" } else { "Denied" });
    o.number("disposition_id", if allowed { 1 } else { 2 });
    o.str("disposition", if allowed { "Allowed" } else { "Blocked" });
    o.object("http_request", |o| {
        o.str("uid", &e.request_id);
        o.str("http_method", e.method.as_str());
        o.str("version", version_text(e.version));
        o.object("url", |o| {
            o.str("scheme", e.scheme);
            o.str("hostname", &e.host);
            o.opt_number("port", e.port);
            o.str("path", &e.path);
            o.opt_str(
                "query_string",
                match &e.query {
                    Query::None => None,
                    Query::Redacted => Some("[redacted]"),
                    Query::Kept(q) => Some(q),
                },
            );
        });
        o.opt_str("user_agent", e.user_agent.as_deref());
        o.opt_number("length", e.bytes_in);
    });
    o.object("http_response", |o| {
        o.number("code", e.status);
        o.opt_number("length", e.bytes_out);
        o.number(
            "latency",
            u64::try_from(e.latency.as_millis()).unwrap_or(u64::MAX),
        );
    });
    o.object("src_endpoint", |o| {
        o.display("ip", &e.client_ip);
        if e.client_ip == e.peer.ip() {
            o.number("port", e.peer.port());
        } else {
            o.displays("intermediate_ips", &[&e.peer.ip()]);
        }
    });
    if e.upstream.is_some() || e.route.is_some() {
        o.object("dst_endpoint", |o| {
            let (host, port) = match e.upstream.as_deref() {
                Some(text) => match text.rsplit_once(':') {
                    Some((host, port)) => (Some(host), port.parse::<u16>().ok()),
                    None => (Some(text), None),
                },
                None => (None, None),
            };
            o.opt_str("hostname", host);
            if let Some(connection) = &e.upstream_connection {
                o.display("ip", &connection.remote.ip());
            }
            o.opt_number(
                "port",
                e.upstream_connection
                    .map(|c| c.remote.port())
                    .or(port)
                    .map(u64::from),
            );
            o.opt_str("svc_name", e.route.as_deref());
        });
    }
    if let Some(actor) = &e.actor {
        o.object("actor", |o| actor_members(o, actor, e));
    }
    if let Some(version) = e.tls_version {
        o.object("tls", |o| {
            o.str("version", version);
            if let Some(value) = &e.client_certificate {
                o.object("certificate", |o| {
                    o.objects("fingerprints", [value], |o, value| {
                        o.number("algorithm_id", 3);
                        o.str("algorithm", "SHA-256");
                        o.str("value", value);
                    });
                });
            }
        });
    }
    let mut result = Ok(());
    if let Some(container) = &e.container {
        result = o.serialized("container", &ContainerRecord::new(container));
    }
    o.object("unmapped", |o| {
        o.str("decision", e.decision.as_str());
        o.opt_str("route", e.route.as_deref());
        o.opt_str("rule", e.rule.as_deref());
        if e.report_only_deny {
            o.bool("report_only_deny", true);
        }
        o.opt_str("user", e.actor.as_ref().map(Actor::user_key));
        o.opt_str(
            "unverified_email",
            e.actor
                .as_ref()
                .and_then(|a| a.identity().unverified_email()),
        );
        o.opt_str(
            "cgroup",
            e.container.as_ref().and_then(|c| c.cgroup.as_deref()),
        );
        if e.door != Door::Proxy {
            o.str("door", e.door.as_str());
        }
        if let Some(connection) = &e.upstream_connection {
            o.display("upstream_local", &connection.local);
        }
        if let (Some(container), Ok(())) = (&e.upstream_container, &result) {
            result = o.serialized("upstream_container", &ContainerRecord::new(container));
        }
        if e.attribution_unavailable {
            o.str("attribution", "unavailable");
        }
    });
    result
}

/// `actor`: the user, the session or token, the provider, and the authorization.
fn actor_members(o: &mut Object<'_>, actor: &Actor, e: &HttpEvent) {
    let identity = actor.identity();
    o.object("user", |o| {
        o.str("uid", &identity.sub);
        o.opt_str("email_addr", identity.verified_email());
        o.opt_str("name", identity.name.as_deref());
        o.objects("groups", &identity.groups, |o, name| o.str("name", name));
    });
    o.object("session", |o| {
        o.str("uid", actor.session_uid());
        o.str("credential_uid", actor.credential());
    });
    o.object("idp", |o| o.str("name", &identity.issuer));
    o.objects("authorizations", [()], |o, ()| {
        o.str("decision", e.decision.as_str());
        if e.policy.is_some() || e.rule.is_some() {
            o.object("policy", |o| {
                o.opt_str("name", e.policy.as_deref());
                o.opt_str("desc", e.rule.as_deref());
            });
        }
    });
}
