//! Session events: the session layer announces each session that starts, is refreshed or ends,
//! and whoever must react subscribes — the audit log (a record per event), the assertion cache
//! (forgets an ended session's assertions), and the kernel guard (admits and removes source
//! addresses). The request path calls none of them directly.
//!
//! Subscribers are called in order, synchronously, on the task that caused the event: each
//! must only hand the event on (a queue, a map write), never wait.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::audit::{AuthActivity, AuthEvent, Event};
use crate::session::Identity;

/// Who and where an event came from: the request that caused it.
#[derive(Debug, Clone)]
pub struct EventSource {
    /// The request id.
    pub request_id: Option<String>,
    /// The client address as the gate saw it (behind trusted proxies: the X-Forwarded-For
    /// client).
    pub client_ip: IpAddr,
    /// The TCP peer.
    pub peer: Option<SocketAddr>,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// The host the request addressed.
    pub host: Option<String>,
}

impl EventSource {
    /// An authentication record in the context of this source.
    pub fn auth(
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
            request_id: self.request_id.clone(),
            identity,
            session,
            provider,
            client_ip: Some(self.client_ip),
            peer: self.peer,
            user_agent: self.user_agent.clone(),
            host: self.host.clone(),
        }))
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The user signed out (`/.sekisho/logout`).
    Logout,
    /// The provider refused to refresh it.
    RefreshRefused,
    /// The provider ended the provider session it came from, or signed its user out
    /// (back-channel logout).
    ProviderLogout,
}

/// What happened to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// A login completed: a new session.
    Started,
    /// The provider refreshed the session's tokens (identity possibly updated).
    Refreshed,
    /// The session ended and is revoked.
    Ended(EndReason),
}

/// One session event.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// What happened.
    pub change: SessionChange,
    /// Whose session (after a refresh: the refreshed identity).
    pub identity: Arc<Identity>,
    /// The session id's hash ([`crate::session::SessionState::sid_hash`]).
    pub session: String,
    /// The request that caused it.
    pub source: EventSource,
    /// Unix seconds when the session ends at the latest (its absolute lifetime).
    pub expires_at: u64,
    /// Unix seconds of the session's sign-in.
    pub login_at: u64,
}

impl SessionEvent {
    /// The audit record of this event.
    pub fn record(&self) -> Event {
        let (activity, success, detail) = match self.change {
            SessionChange::Started => (AuthActivity::Login, true, None),
            SessionChange::Refreshed => (AuthActivity::Refresh, true, None),
            SessionChange::Ended(EndReason::Logout) => (AuthActivity::Logout, true, None),
            SessionChange::Ended(EndReason::RefreshRefused) => (
                AuthActivity::Refresh,
                false,
                Some("the provider refused the refresh; session ended".to_owned()),
            ),
            SessionChange::Ended(EndReason::ProviderLogout) => (
                AuthActivity::Logout,
                true,
                Some("ended by the provider's back-channel logout".to_owned()),
            ),
        };
        self.source.auth(
            activity,
            success,
            detail,
            Some(self.identity.clone()),
            Some(self.session.clone()),
        )
    }
}

/// Reacts to session events.
pub trait SessionSubscriber: Send + Sync + std::fmt::Debug {
    /// Called once per event, in publication order; must not block.
    fn session_event(&self, event: &SessionEvent);

    /// A live session was used from `source` (every request that presents one): the address
    /// may be new for it (a restart of sekisho, a client that roamed). `expires_at` is the
    /// session's latest expiry (Unix seconds). Called on every such request: must be cheap
    /// when nothing changed.
    fn session_used(&self, source: IpAddr, session: &str, expires_at: u64) {
        let _ = (source, session, expires_at);
    }

    /// A valid bearer token was used from `source`; it expires at `expires_at` (Unix seconds).
    /// Called on every such request: a subscriber that writes somewhere limits its own rate.
    fn bearer_used(&self, source: IpAddr, expires_at: u64) {
        let _ = (source, expires_at);
    }

    /// A sign-in failed, a credential was rejected or a callback refused, from `source`.
    fn failure(&self, source: IpAddr) {
        let _ = source;
    }
}

/// Which events a subscriber hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Events of this instance and of the others (through the shared state).
    Everywhere,
    /// Events of this instance only: its audit log (each instance records what it did) and
    /// the shared-state link (which sends them to the others).
    Local,
}

/// The subscribers, fixed when the application is wired.
#[derive(Debug, Default)]
pub struct SessionEvents {
    subscribers: Vec<(Arc<dyn SessionSubscriber>, Scope)>,
}

impl SessionEvents {
    /// Adds a subscriber to the events of every instance (at wiring time).
    pub fn subscribe(&mut self, subscriber: Arc<dyn SessionSubscriber>) {
        self.subscribers.push((subscriber, Scope::Everywhere));
    }

    /// Adds a subscriber to this instance's own events only (at wiring time).
    pub fn subscribe_local(&mut self, subscriber: Arc<dyn SessionSubscriber>) {
        self.subscribers.push((subscriber, Scope::Local));
    }

    fn everywhere(&self) -> impl Iterator<Item = &Arc<dyn SessionSubscriber>> {
        self.subscribers
            .iter()
            .filter(|(_, scope)| *scope == Scope::Everywhere)
            .map(|(s, _)| s)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn SessionSubscriber>> {
        self.subscribers.iter().map(|(s, _)| s)
    }

    /// Tells every subscriber.
    pub fn publish(&self, event: &SessionEvent) {
        for subscriber in self.all() {
            subscriber.session_event(event);
        }
    }

    /// Tells the subscribers to every instance's events of an event on another instance.
    pub fn publish_remote(&self, event: &SessionEvent) {
        for subscriber in self.everywhere() {
            subscriber.session_event(event);
        }
    }

    /// Tells the subscribers to every instance's events of a failure on another instance.
    pub fn failure_remote(&self, source: IpAddr) {
        for subscriber in self.everywhere() {
            subscriber.failure(source);
        }
    }

    /// Tells every subscriber that a live session was used.
    pub fn session_used(&self, source: IpAddr, session: &str, expires_at: u64) {
        for subscriber in self.all() {
            subscriber.session_used(source, session, expires_at);
        }
    }

    /// Tells every subscriber of a failure from `source`.
    pub fn failure(&self, source: IpAddr) {
        for subscriber in self.all() {
            subscriber.failure(source);
        }
    }

    /// Tells every subscriber that a bearer token was used.
    pub fn bearer_used(&self, source: IpAddr, expires_at: u64) {
        for subscriber in self.all() {
            subscriber.bearer_used(source, expires_at);
        }
    }
}

impl SessionSubscriber for crate::audit::AuditLog {
    /// Each session event is an authentication record.
    fn session_event(&self, event: &SessionEvent) {
        self.keep(event.record());
    }
}

impl SessionSubscriber for crate::assertion::AssertionSigner {
    /// An ended session's cached assertions are dropped: none is handed out again.
    fn session_event(&self, event: &SessionEvent) {
        if matches!(event.change, SessionChange::Ended(_)) {
            self.forget(&event.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(SessionChange, String)>>);

    impl SessionSubscriber for Seen {
        fn session_event(&self, event: &SessionEvent) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((event.change, event.session.clone()));
            }
        }
    }

    fn event(change: SessionChange) -> SessionEvent {
        SessionEvent {
            change,
            identity: Arc::new(crate::session::test_identity("alice")),
            session: "sid-hash".into(),
            source: EventSource {
                request_id: Some("r-1".into()),
                client_ip: "192.0.2.7".parse().unwrap(),
                peer: None,
                user_agent: None,
                host: Some("app.example.com".into()),
            },
            expires_at: 100,
            login_at: 50,
        }
    }

    #[test]
    fn every_subscriber_sees_every_event_in_order() {
        let (a, b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
        let mut events = SessionEvents::default();
        events.subscribe(a.clone());
        events.subscribe(b.clone());
        events.publish(&event(SessionChange::Started));
        events.publish(&event(SessionChange::Ended(EndReason::Logout)));
        for seen in [a, b] {
            let seen = seen.0.lock().unwrap();
            assert_eq!(
                seen.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                [
                    SessionChange::Started,
                    SessionChange::Ended(EndReason::Logout)
                ]
            );
        }
    }

    #[test]
    fn another_instances_events_reach_only_the_subscribers_to_every_instance() {
        let (everywhere, local) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
        let mut events = SessionEvents::default();
        events.subscribe(everywhere.clone());
        events.subscribe_local(local.clone());
        events.publish(&event(SessionChange::Started));
        events.publish_remote(&event(SessionChange::Ended(EndReason::Logout)));
        let seen = |s: &Seen| {
            s.0.lock()
                .unwrap()
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seen(&everywhere),
            [
                SessionChange::Started,
                SessionChange::Ended(EndReason::Logout)
            ]
        );
        assert_eq!(
            seen(&local),
            [SessionChange::Started],
            "the audit log and the link hear this instance's events only"
        );
    }

    #[test]
    fn records_name_the_activity_and_outcome() {
        let cases = [
            (SessionChange::Started, AuthActivity::Login, true),
            (SessionChange::Refreshed, AuthActivity::Refresh, true),
            (
                SessionChange::Ended(EndReason::Logout),
                AuthActivity::Logout,
                true,
            ),
            (
                SessionChange::Ended(EndReason::RefreshRefused),
                AuthActivity::Refresh,
                false,
            ),
            (
                SessionChange::Ended(EndReason::ProviderLogout),
                AuthActivity::Logout,
                true,
            ),
        ];
        for (change, activity, success) in cases {
            let Event::Auth(record) = event(change).record() else {
                panic!("not an auth record");
            };
            assert_eq!(record.activity, activity, "{change:?}");
            assert_eq!(record.success, success, "{change:?}");
            assert_eq!(record.session.as_deref(), Some("sid-hash"));
            assert_eq!(record.request_id.as_deref(), Some("r-1"));
        }
    }
}
