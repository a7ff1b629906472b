//! The session layer: opens the session a request presents (lifetimes, revocation — of the
//! session, of the provider session it came from, of its user before a time — a refresh when
//! due, a touch for the idle lifetime), starts sessions at login and ends them at logout or at
//! the provider's word (back-channel logout), and publishes each start, refresh and end as a
//! [`SessionEvent`]. Whatever must follow a session's life (the audit record, the assertion
//! cache, the kernel guard, the tunnels) subscribes; nothing on the request path calls it
//! directly. `index.rs` remembers which live sessions came from which provider session, so
//! that a provider's logout can announce their end.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{HeaderMap, HeaderValue};
use sekisho_config::Scheme;

use crate::error::ProxyError;
use crate::metrics::RefreshCounts;
use crate::oidc::{OidcError, OidcProvider, Tokens};
use crate::revocation::{RevocationError, RevocationList};
use crate::seal::Sealer;
use crate::session::{
    CookieCodec, Identity, OpenSession, ProviderKeys, SessionCache, SessionRejection, SessionState,
    provider_logout_hash, provider_sid_hash, subject_hash, unix_now,
};
use events::{EndReason, EventSource, SessionChange, SessionEvent, SessionEvents};
use index::ProviderIndex;

pub mod events;
mod index;

/// Where concurrent requests carrying the same due cookie wait for its one refresh; holds the
/// outcome and when it was reached.
type RefreshSlot = tokio::sync::Mutex<Option<(RefreshOutcome, Instant)>>;

/// The result of a (single-flight) session refresh.
#[derive(Debug, Clone)]
enum RefreshOutcome {
    Refreshed(Box<SessionState>),
    Ended,
    Kept,
}

/// What a request's session cookie turned out to be.
#[derive(Debug)]
pub enum Presented {
    /// No session cookie.
    Absent,
    /// A cookie that did not open (tampered, another key, malformed): cleared.
    Rejected(SessionRejection),
    /// A session that is over (expired, revoked, refresh refused): cleared.
    Over(Over),
    /// A live session (a refreshed or touched one already re-issued).
    Live(Arc<OpenSession>),
}

/// Why a presented session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Past its absolute lifetime.
    Expired,
    /// Idle for longer than the idle lifetime.
    Idle,
    /// Signed out here (on the revocation list).
    Revoked,
    /// Its provider session, or its user, was signed out by the provider.
    ProviderLogout,
    /// The provider refused its refresh.
    RefreshRefused,
}

/// What a provider said has ended (a verified back-channel logout token).
#[derive(Debug, Clone)]
pub struct ProviderLogout {
    /// The provider's issuer.
    pub issuer: String,
    /// The provider session that ended (`sid`), when named: its sessions end.
    pub sid: Option<String>,
    /// The user (`sub`): without `sid`, every session of the user that started by `issued_at`
    /// ends.
    pub sub: Option<String>,
    /// When the provider issued the logout (`iat`, Unix seconds).
    pub issued_at: u64,
}

/// What a provider's logout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLogoutOutcome {
    /// Whether a revocation entry was written (false: the same logout was applied before).
    pub revoked: bool,
    /// Sessions announced as ended (those the index knew; others are refused all the same).
    pub ended: usize,
}

/// Sessions: the cookie codecs, the sealer, the decoded-session cache, the revocation list and
/// the single-flight refreshes, the provider index, and the events they publish.
#[derive(Debug)]
pub struct Sessions {
    sealer: Sealer,
    secure_cookies: CookieCodec,
    plain_cookies: CookieCodec,
    oidc: Arc<OidcProvider>,
    revoked: Arc<RevocationList>,
    cache: SessionCache,
    refreshes: Mutex<HashMap<String, Arc<RefreshSlot>>>,
    absolute_lifetime: Duration,
    idle_lifetime: Duration,
    events: SessionEvents,
    index: ProviderIndex,
    refresh_counts: RefreshCounts,
}

impl Sessions {
    /// The session layer of `config`'s `session:` settings.
    pub fn new(
        config: &sekisho_config::Session,
        sealer: Sealer,
        oidc: Arc<OidcProvider>,
        revoked: Arc<RevocationList>,
        events: SessionEvents,
    ) -> Self {
        Sessions {
            sealer,
            secure_cookies: CookieCodec::new(&config.cookie_name, true),
            plain_cookies: CookieCodec::new(&config.cookie_name, false),
            oidc,
            revoked,
            cache: SessionCache::default(),
            refreshes: Mutex::new(HashMap::new()),
            absolute_lifetime: config.absolute_lifetime,
            idle_lifetime: config.idle_lifetime,
            events,
            index: ProviderIndex::default(),
            refresh_counts: RefreshCounts::default(),
        }
    }

    /// The cookie codec for requests made over `scheme` (`__Host-` cookies over HTTPS).
    pub fn codec(&self, scheme: Scheme) -> &CookieCodec {
        match scheme {
            Scheme::Https => &self.secure_cookies,
            Scheme::Http => &self.plain_cookies,
        }
    }

    /// Refreshes at the provider, by outcome (for `/metrics`).
    pub fn refresh_counts(&self) -> &RefreshCounts {
        &self.refresh_counts
    }

    /// The sealer (login flow cookies and sign-out tokens are sealed with the session keys).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The session `headers` present, checked (lifetimes, revocation), refreshed when due and
    /// touched for the idle lifetime. A refreshed or touched session is re-issued, and a
    /// rejected or ended one cleared, through `set_cookies`, which every response of the
    /// request must carry. `source` names the request for the events this publishes.
    pub async fn present(
        &self,
        headers: &HeaderMap,
        codec: &CookieCodec,
        set_cookies: &mut Vec<HeaderValue>,
        client_ip: std::net::IpAddr,
        source: &(dyn Fn() -> EventSource + Sync),
    ) -> Result<Presented, ProxyError> {
        let session = match self.cache.open(codec, &self.sealer, headers) {
            Ok(session) => session,
            Err(SessionRejection::Absent) => return Ok(Presented::Absent),
            Err(rejection) => {
                set_cookies.extend(codec.clear());
                return Ok(Presented::Rejected(rejection));
            }
        };
        let now = unix_now();
        if let Err(rejection) =
            session
                .state
                .check_lifetimes(now, self.absolute_lifetime, self.idle_lifetime)
        {
            tracing::debug!(%rejection, sid = %session.sid_hash, "session ended");
            set_cookies.extend(codec.clear());
            return Ok(Presented::Over(match rejection {
                SessionRejection::Idle => Over::Idle,
                _ => Over::Expired,
            }));
        }
        if self.revoked.is_revoked(&session.sid_hash) {
            tracing::debug!(sid = %session.sid_hash, "revoked session presented");
            set_cookies.extend(codec.clear());
            return Ok(Presented::Over(Over::Revoked));
        }
        if let Some(why) = self.provider_revoked(&session.provider, session.state.login_at, false) {
            tracing::debug!(sid = %session.sid_hash, why, "session of a signed-out provider session presented");
            set_cookies.extend(codec.clear());
            return Ok(Presented::Over(Over::ProviderLogout));
        }
        let mut fresh: Option<SessionState> = None;
        if session.state.refresh_due(now) {
            let key = presented_session_key(headers, codec, &session.state);
            // Boxed: the refresh (a token request to the provider) is rare, and its state would
            // otherwise make every request's future kilobytes larger (and copied at each await).
            match Box::pin(self.refresh(&session.state, &key, source)).await {
                RefreshOutcome::Refreshed(state) => fresh = Some(*state),
                RefreshOutcome::Ended => {
                    set_cookies.extend(codec.clear());
                    return Ok(Presented::Over(Over::RefreshRefused));
                }
                RefreshOutcome::Kept => {}
            }
        }
        if session.state.touch_due(now, self.idle_lifetime) {
            fresh.get_or_insert_with(|| session.state.clone()).seen_at = now;
        }
        let session = match fresh {
            Some(state) => {
                let reissued = codec
                    .rewrite(&self.sealer, &state, self.absolute_lifetime, headers)
                    .map_err(|e| ProxyError::Internal {
                        detail: e.to_string(),
                    })?;
                set_cookies.extend(reissued);
                Arc::new(OpenSession::new(state))
            }
            None => session,
        };
        if session.mark_indexed() {
            // First seen by this process (or re-issued): a provider's logout can announce it.
            let state = &session.state;
            self.index.insert(
                &session.sid_hash,
                &session.provider,
                state.login_at,
                self.latest_end(state),
                now,
                || Arc::new(state.identity.clone()),
            );
        }
        self.events.session_used(
            client_ip,
            &session.sid_hash,
            self.latest_end(&session.state),
        );
        Ok(Presented::Live(session))
    }

    /// Starts a session for a completed login: publishes `Started` and returns the session
    /// and its cookies.
    pub fn start(
        &self,
        tokens: Tokens,
        codec: &CookieCodec,
        source: &EventSource,
    ) -> Result<(SessionState, Vec<HeaderValue>), ProxyError> {
        let mut sid = [0u8; 16];
        self.sealer
            .random(&mut sid)
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
        let now = unix_now();
        let state = SessionState {
            sid: URL_SAFE_NO_PAD.encode(sid),
            identity: tokens.identity,
            login_at: now,
            seen_at: now,
            tokens_expire_at: tokens.expires_at,
            refresh_token: tokens.refresh_token,
            id_token: tokens.id_token,
        };
        let cookies = self.cookies(codec, &state)?;
        tracing::info!(sub = ?state.identity.sub, sid = %state.sid_hash(), "login");
        self.publish(SessionChange::Started, &state, source.clone());
        Ok((state, cookies))
    }

    /// Whether `state` is a session still in force (not expired, not revoked, nor its provider
    /// session or its user signed out by the provider).
    pub fn is_live(&self, state: &SessionState) -> bool {
        state
            .check_lifetimes(unix_now(), self.absolute_lifetime, self.idle_lifetime)
            .is_ok()
            && !self.revoked.is_revoked(&state.sid_hash())
            && (self.revoked.is_empty()
                || self
                    .provider_revoked(&ProviderKeys::of(&state.identity), state.login_at, false)
                    .is_none())
    }

    /// Ends a live session at the user's request: revokes it durably (and the provider
    /// session it came from, so that provider session's bearer tokens stop working too), then
    /// publishes `Ended`.
    pub async fn end(&self, state: &SessionState, source: EventSource) -> Result<(), ProxyError> {
        let now = unix_now();
        let until = self.revoke_until(state);
        let internal = |e: RevocationError| ProxyError::Internal {
            detail: e.to_string(),
        };
        self.revoked
            .revoke(&state.sid_hash(), until, now)
            .await
            .map_err(internal)?;
        if let Some(sid) = &state.identity.provider_sid {
            self.revoked
                .revoke(&provider_sid_hash(&state.identity.issuer, sid), until, now)
                .await
                .map_err(internal)?;
        }
        tracing::info!(sub = ?state.identity.sub, sid = %state.sid_hash(), "logout");
        self.publish(SessionChange::Ended(EndReason::Logout), state, source);
        Ok(())
    }

    /// A program used a valid bearer token from `source` until `expires_at` (Unix seconds):
    /// subscribers that admit addresses (the NIC guard) admit this one too.
    pub fn bearer_used(&self, source: std::net::IpAddr, expires_at: u64) {
        self.events.bearer_used(source, expires_at);
    }

    /// A sign-in failed, a credential was rejected or a callback refused, from `source`.
    pub fn failure(&self, source: std::net::IpAddr) {
        self.events.failure(source);
    }

    /// Why a credential of `identity` issued at `issued_at` (Unix seconds) is refused: its
    /// provider session was signed out (here, or by the provider), or the provider signed its
    /// user out after it was issued. `None` when neither; no hashing while nothing is revoked.
    pub fn provider_session_revoked(
        &self,
        identity: &Identity,
        issued_at: u64,
    ) -> Option<&'static str> {
        if self.revoked.is_empty() {
            return None;
        }
        self.provider_revoked(&ProviderKeys::of(identity), issued_at, true)
    }

    /// Ends, at the provider's word, every session that came from the provider session
    /// `logout.sid`, or (no `sid`) every session of `logout.sub` that started at or before the
    /// logout was issued. The revocation is durable (it survives a restart and, through the
    /// shared revocation list, reaches other instances) before the sessions the index knows
    /// are announced as `Ended` — their tunnels close, their NIC admissions are withdrawn.
    pub async fn end_provider_session(
        &self,
        logout: &ProviderLogout,
        source: EventSource,
    ) -> Result<ProviderLogoutOutcome, ProxyError> {
        let now = unix_now();
        let internal = |e: RevocationError| ProxyError::Internal {
            detail: e.to_string(),
        };
        let lifetime = self.absolute_lifetime.as_secs().saturating_add(60);
        let (revoked, ended) = match (&logout.sid, &logout.sub) {
            (Some(sid), _) => {
                // A session (or bearer token) of that provider session may have started just
                // now: the entry lasts as long as the longest session started now.
                let key = provider_logout_hash(&logout.issuer, sid);
                let revoked = self
                    .revoked
                    .revoke(&key, now.saturating_add(lifetime), now)
                    .await
                    .map_err(internal)?;
                (revoked, self.index.take_provider_session(&key, now))
            }
            (None, Some(sub)) => {
                // Sessions started by the logout's issue time, or by now if the provider's
                // clock is ahead: later sessions are new sign-ins.
                let before = logout.issued_at.min(now);
                let key = subject_hash(&logout.issuer, sub);
                let revoked = self
                    .revoked
                    .revoke_subject(&key, before, before.saturating_add(lifetime), now)
                    .await
                    .map_err(internal)?;
                (revoked, self.index.take_subject(&key, before, now))
            }
            (None, None) => {
                return Err(ProxyError::Internal {
                    detail: "a provider logout names neither a session nor a user".into(),
                });
            }
        };
        let count = ended.len();
        for (session, indexed) in ended {
            tracing::info!(sub = ?indexed.identity.sub, sid = %session, "session ended by the provider (back-channel logout)");
            self.events.publish(&SessionEvent {
                change: SessionChange::Ended(EndReason::ProviderLogout),
                identity: indexed.identity,
                session,
                source: source.clone(),
                expires_at: indexed.expires_at,
                login_at: indexed.login_at,
            });
        }
        Ok(ProviderLogoutOutcome {
            revoked,
            ended: count,
        })
    }

    /// Why sessions (`bearer` false) or bearer tokens with these provider keys that started at
    /// `started_at` are refused, if they are. A provider session signed out at sekisho ends
    /// its bearer tokens only: the provider may keep that session and sign the user in again
    /// with it, and a new session of it must not be refused into a login loop. One the
    /// provider ended (back-channel logout) ends everything of it.
    fn provider_revoked(
        &self,
        keys: &ProviderKeys,
        started_at: u64,
        bearer: bool,
    ) -> Option<&'static str> {
        let revoked = |key: &Option<String>| {
            key.as_deref()
                .is_some_and(|key| self.revoked.is_revoked(key))
        };
        if bearer && revoked(&keys.signed_out) {
            return Some("the provider session (sid) of this token was signed out at sekisho");
        }
        if revoked(&keys.ended) {
            return Some("the provider ended the provider session (sid) (back-channel logout)");
        }
        if self.revoked.subject_revoked(&keys.subject, started_at) {
            return Some("the provider signed the user out after this began (back-channel logout)");
        }
        None
    }

    /// When a session ends at the latest (its absolute lifetime).
    fn latest_end(&self, state: &SessionState) -> u64 {
        state
            .login_at
            .saturating_add(self.absolute_lifetime.as_secs())
    }

    fn cookies(
        &self,
        codec: &CookieCodec,
        state: &SessionState,
    ) -> Result<Vec<HeaderValue>, ProxyError> {
        codec
            .write(&self.sealer, state, self.absolute_lifetime)
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })
    }

    /// Applies a session event from another instance: the provider index learns (or forgets)
    /// the session, so a back-channel logout received here ends it too, and the subscribers to
    /// every instance's events hear it (not this instance's audit log, nor the link that
    /// brought it).
    pub fn remote_event(&self, event: &SessionEvent) {
        match event.change {
            SessionChange::Started | SessionChange::Refreshed => self.index.insert(
                &event.session,
                &ProviderKeys::of(&event.identity),
                event.login_at,
                event.expires_at,
                unix_now(),
                || event.identity.clone(),
            ),
            SessionChange::Ended(_) => self.index.remove(&event.session),
        }
        self.events.publish_remote(event);
    }

    /// Applies a failure from another instance (auto-bans count every instance's).
    pub fn remote_failure(&self, source: std::net::IpAddr) {
        self.events.failure_remote(source);
    }

    fn publish(&self, change: SessionChange, state: &SessionState, source: EventSource) {
        let identity = Arc::new(state.identity.clone());
        let session = state.sid_hash();
        let expires_at = self.latest_end(state);
        match change {
            SessionChange::Started | SessionChange::Refreshed => self.index.insert(
                &session,
                &ProviderKeys::of(&state.identity),
                state.login_at,
                expires_at,
                unix_now(),
                || identity.clone(),
            ),
            SessionChange::Ended(_) => self.index.remove(&session),
        }
        self.events.publish(&SessionEvent {
            change,
            identity,
            session,
            source,
            expires_at,
            login_at: state.login_at,
        });
    }

    /// Refreshes a session once even when many requests carrying the same cookie arrive
    /// together; `key` names that cookie (see [`presented_session_key`]). The request that
    /// performs the refresh publishes its event; the others share the outcome.
    async fn refresh(
        &self,
        state: &SessionState,
        key: &str,
        source: &(dyn Fn() -> EventSource + Sync),
    ) -> RefreshOutcome {
        let slot = {
            let Ok(mut map) = self.refreshes.lock() else {
                return RefreshOutcome::Kept;
            };
            map.retain(|_, v| {
                Arc::strong_count(v) > 1
                    || v.try_lock()
                        .map(|g| {
                            g.as_ref()
                                .is_some_and(|(_, t)| t.elapsed() < Duration::from_secs(30))
                        })
                        .unwrap_or(true)
            });
            map.entry(key.to_owned()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some((outcome, at)) = guard.as_ref()
            && at.elapsed() < Duration::from_secs(30)
        {
            return outcome.clone();
        }
        let Some(refresh_token) = state.refresh_token.as_deref() else {
            return RefreshOutcome::Kept;
        };
        let outcome = match self.oidc.refresh(refresh_token, &state.identity).await {
            Ok(tokens) => {
                let mut fresh = state.clone();
                fresh.identity = tokens.identity;
                fresh.refresh_token = tokens.refresh_token;
                fresh.tokens_expire_at = tokens.expires_at;
                if tokens.id_token.is_some() {
                    fresh.id_token = tokens.id_token;
                }
                tracing::info!(sid = %state.sid_hash(), "session refreshed");
                self.refresh_counts
                    .refreshed
                    .fetch_add(1, Ordering::Relaxed);
                self.publish(SessionChange::Refreshed, &fresh, source());
                RefreshOutcome::Refreshed(Box::new(fresh))
            }
            Err(OidcError::Refused(reason) | OidcError::Rejected(reason)) => {
                tracing::info!(sid = %state.sid_hash(), %reason, "provider refused the refresh; session ended");
                self.refresh_counts.refused.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self
                    .revoked
                    .revoke(&state.sid_hash(), self.revoke_until(state), unix_now())
                    .await
                {
                    tracing::error!(error = %e, "could not persist revocation");
                }
                self.publish(
                    SessionChange::Ended(EndReason::RefreshRefused),
                    state,
                    source(),
                );
                RefreshOutcome::Ended
            }
            Err(e) => {
                tracing::warn!(sid = %state.sid_hash(), error = %e, "refresh failed; session kept until the provider answers");
                self.refresh_counts.failed.fetch_add(1, Ordering::Relaxed);
                RefreshOutcome::Kept
            }
        };
        *guard = Some((outcome.clone(), Instant::now()));
        outcome
    }

    /// How long a revocation of `state` must be kept: until it would have expired anyway.
    fn revoke_until(&self, state: &SessionState) -> u64 {
        state
            .login_at
            .saturating_add(self.absolute_lifetime.as_secs())
            .saturating_add(60)
    }
}

/// The refresh-cache key of the session cookie a request presented: the session id's hash and a
/// digest of the sealed cookie value(s). Every sealing draws a fresh nonce, so a re-issued
/// (refreshed) cookie never shares its predecessor's key and is never answered with its
/// predecessor's cached outcome, while requests carrying the same cookie share one refresh.
/// (`tokens_expire_at` would not do: a refresh within the second of the login or of the previous
/// refresh yields the same value.)
pub(crate) fn presented_session_key(
    headers: &HeaderMap,
    codec: &CookieCodec,
    state: &SessionState,
) -> String {
    // The same sealed value (single cookie or joined chunks) the session was opened from.
    let sealed = codec.sealed(headers).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, sealed.as_bytes());
    format!(
        "{}.{}",
        state.sid_hash(),
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header::{self, HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn refreshes_are_cached_per_presented_cookie_not_per_session() {
        let sealer = Sealer::new([[7u8; 32].as_slice()]).unwrap_or_else(|e| panic!("{e}"));
        let codec = CookieCodec::new("_sekisho", false);
        let state = SessionState {
            sid: "sid-1".into(),
            identity: serde_json::from_value(serde_json::json!({
                "sub": "alice", "email": null, "name": null, "groups": [], "issuer": "http://idp"
            }))
            .unwrap_or_else(|e| panic!("{e}")),
            login_at: 1000,
            seen_at: 1000,
            tokens_expire_at: Some(1030),
            refresh_token: Some("rt".into()),
            id_token: None,
        };
        let presented = |extra: &str| {
            let cookies = codec
                .write(&sealer, &state, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
            let live: Vec<&str> = cookies
                .iter()
                .filter_map(|c| c.to_str().ok())
                .filter(|c| !c.contains("Max-Age=0"))
                .filter_map(|c| c.split(';').next())
                .collect();
            let mut headers = HeaderMap::new();
            let value = format!("{}{extra}", live.join("; "));
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&value).unwrap_or_else(|e| panic!("{e}")),
            );
            headers
        };
        let first = presented("");
        let key = presented_session_key(&first, &codec, &state);
        assert_eq!(
            key,
            presented_session_key(&first.clone(), &codec, &state),
            "the same cookie shares one refresh"
        );
        let mut with_other_cookies = first.clone();
        let value = format!(
            "theme=dark; {}; _sekisho_flow_abc=x",
            first
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        );
        with_other_cookies.insert(
            header::COOKIE,
            HeaderValue::from_str(&value).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            key,
            presented_session_key(&with_other_cookies, &codec, &state),
            "other cookies do not matter"
        );
        // The same state sealed again (a re-issued cookie, same second, same expiry): a new key.
        assert_ne!(key, presented_session_key(&presented(""), &codec, &state));
        assert!(key.starts_with(&format!("{}.", state.sid_hash())));
    }
}
