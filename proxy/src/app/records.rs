//! The service's own audit records: the start record's message, and the built-in provider's
//! sign-in attempts and back-channel logout deliveries as Authentication records.

use std::sync::Arc;

use super::Addresses;
use crate::audit::{AuditLog, AuthActivity, AuthEvent, Event};
use crate::idp::{Delivery, IdpEvent, IdpOutcome, log_delivery, log_event};
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

/// The built-in provider's back-channel logout outcomes: each delivery (or delivery given up)
/// becomes an Authentication record of `audit` (`backchannel_logout_sent`) and a log line.
pub(super) fn provider_deliveries(
    audit: Arc<AuditLog>,
    issuer: &str,
) -> Arc<dyn Fn(Delivery) + Send + Sync> {
    let issuer = issuer.to_owned();
    Arc::new(move |delivery: Delivery| {
        if let Err(e) = audit.record(delivery_record(&delivery, &issuer)) {
            tracing::error!(error = %e, "audit record of a back-channel logout not kept");
        }
        log_delivery(&delivery);
    })
}

/// The Authentication record of one back-channel logout delivery.
fn delivery_record(delivery: &Delivery, issuer: &str) -> Event {
    let identity = delivery.username.clone().map(|sub| {
        Arc::new(Identity {
            sub,
            email: None,
            name: None,
            groups: Vec::new(),
            issuer: issuer.to_owned(),
            email_verified: None,
            claims: serde_json::Map::new(),
            provider_sid: None,
        })
    });
    let time = i64::try_from(delivery.time)
        .ok()
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .unwrap_or_else(jiff::Timestamp::now);
    Event::Auth(Box::new(AuthEvent {
        time,
        activity: AuthActivity::BackchannelLogoutSent,
        success: delivery.delivered(),
        detail: Some(delivery.describe()),
        request_id: None,
        identity,
        session: None,
        provider: Some(issuer.to_owned()),
        client_ip: None,
        peer: None,
        user_agent: None,
        host: None,
    }))
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
