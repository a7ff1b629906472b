//! The service's own audit records: the start record's message and the built-in provider's
//! sign-in attempts as Authentication records.

use std::sync::Arc;

use super::Addresses;
use crate::audit::{AuditLog, AuthActivity, AuthEvent, Event};
use crate::idp::{IdpEvent, IdpOutcome, log_event};
use crate::session::Identity;

/// The start record's message: the addresses sekisho listens on, as URLs.
pub(super) fn started_message(addresses: Addresses) -> String {
    let listening: Vec<String> = [
        ("http", addresses.http, ""),
        ("https", addresses.https, ""),
        ("http", addresses.admin, " (admin)"),
    ]
    .into_iter()
    .filter_map(|(scheme, address, what)| address.map(|a| format!("{scheme}://{a}{what}")))
    .collect();
    format!("sekisho started; listening on {}", listening.join(", "))
}

/// The built-in provider's event sink: every sign-in attempt (and refused client
/// authentication) becomes an Authentication record of `audit` and a log line. `issuer` is the
/// provider's issuer without a trailing `/`.
pub(super) fn provider_events(
    audit: Arc<AuditLog>,
    issuer: &str,
    nic: Option<Arc<crate::xdp::NicGuard>>,
) -> Arc<dyn Fn(IdpEvent) + Send + Sync> {
    let issuer = issuer.to_owned();
    Arc::new(move |event: IdpEvent| {
        if let (Some(nic), false) = (&nic, event.outcome == IdpOutcome::Success) {
            // A failed sign-in counts towards the source's auto-ban.
            crate::sessions::events::SessionSubscriber::failure(nic.as_ref(), event.source_ip);
        }
        if let Err(e) = audit.record(provider_record(&event, &issuer)) {
            tracing::error!(error = %e, "audit record of a provider sign-in not kept");
        }
        log_event(event);
    })
}

/// The Authentication record of one of the built-in provider's events.
fn provider_record(event: &IdpEvent, issuer: &str) -> Event {
    let identity = event.username.clone().map(|sub| {
        Arc::new(Identity {
            sub,
            email: event.email.clone(),
            name: None,
            groups: Vec::new(),
            issuer: issuer.to_owned(),
            email_verified: None,
            claims: serde_json::Map::new(),
            provider_sid: None,
        })
    });
    let time = i64::try_from(event.time)
        .ok()
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .unwrap_or_else(jiff::Timestamp::now);
    Event::Auth(Box::new(AuthEvent {
        time,
        activity: AuthActivity::Login,
        success: event.outcome == IdpOutcome::Success,
        detail: Some(event.describe()),
        request_id: None,
        identity,
        session: None,
        provider: Some(issuer.to_owned()),
        client_ip: Some(event.source_ip),
        peer: None,
        user_agent: None,
        host: None,
    }))
}
