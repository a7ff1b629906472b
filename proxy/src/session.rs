//! Sessions: who a request is, carried in an encrypted cookie so the hot path needs no network
//! round trip. Owns the session state, its lifetimes, and the cookie codec (split across numbered
//! cookies when large, so nothing is ever silently cut).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::seal::{Purpose, SealError, Sealer};

/// Largest value put in one cookie; browsers cap a cookie (name + value + attributes) at 4096.
pub const MAX_COOKIE_VALUE: usize = 3800;
/// Most chunks a session may take; more would push the Cookie header past common server limits.
pub const MAX_CHUNKS: usize = 8;

/// A minimal identity for unit tests: subject `sub`, nothing else.
#[cfg(test)]
pub(crate) fn test_identity(sub: &str) -> Identity {
    Identity {
        sub: sub.into(),
        email: None,
        name: None,
        groups: Vec::new(),
        issuer: "https://idp.example.com".into(),
        email_verified: None,
        claims: serde_json::Map::new(),
        provider_sid: None,
    }
}

/// A verified identity, from a session cookie or a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Subject at the issuer.
    pub sub: String,
    /// Email, when the provider supplied one.
    pub email: Option<String>,
    /// Display name, when supplied.
    pub name: Option<String>,
    /// Group names from the configured claim.
    pub groups: Vec<String>,
    /// Issuer that vouched for this identity.
    pub issuer: String,
    /// `email_verified` as the provider stated it (or `true` when the provider is configured
    /// with `assume_email_verified` and sent nothing). Only `Some(true)` makes `email` the
    /// user's address for policies, identity headers and the assertion: see
    /// [`Identity::verified_email`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// Other claims (scalars and arrays of scalars, bounded in size) for `claim/NAME` criteria.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The provider's session id (`sid`), when its token carried one: a logout at sekisho ends
    /// it, so bearer tokens of that provider session stop working too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_sid: Option<String>,
}

impl Identity {
    /// The address a provider vouched for: `email` when `email_verified` is true, else none. An
    /// unverified address is never asserted as the user's (headers, assertion, policies); the
    /// audit record keeps it, marked unverified.
    pub fn verified_email(&self) -> Option<&str> {
        match self.email_verified {
            Some(true) => self.email.as_deref(),
            _ => None,
        }
    }

    /// The name audit records are filed under: the verified email, else the subject.
    pub fn user_key(&self) -> &str {
        self.verified_email().unwrap_or(&self.sub)
    }

    /// The address the provider sent without vouching for it, if any.
    pub fn unverified_email(&self) -> Option<&str> {
        match self.email_verified {
            Some(true) => None,
            _ => self.email.as_deref(),
        }
    }
}

/// Everything a session cookie holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Random session id, fresh at every login (base64url of 16 bytes).
    pub sid: String,
    /// Who is logged in.
    pub identity: Identity,
    /// Unix seconds of the login; the absolute lifetime counts from here.
    pub login_at: u64,
    /// Unix seconds of the last request seen (updated coarsely, see [`SessionState::touch_due`]).
    pub seen_at: u64,
    /// Unix seconds when the provider's tokens expire; a refresh is due before this.
    pub tokens_expire_at: Option<u64>,
    /// Refresh token, when the provider issued one.
    pub refresh_token: Option<String>,
    /// The last ID token, kept for `id_token_hint` at logout.
    pub id_token: Option<String>,
}

/// Why a presented session is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRejection {
    /// No session cookie was sent.
    #[error("no session cookie")]
    Absent,
    /// The cookie did not decrypt or parse: tampered, truncated, or foreign.
    #[error("session cookie is invalid")]
    Invalid,
    /// Past the absolute lifetime.
    #[error("session passed its absolute lifetime")]
    Expired,
    /// Idle for longer than the idle lifetime.
    #[error("session was idle too long")]
    Idle,
    /// Logged out: the session id is on the revocation list.
    #[error("session was revoked")]
    Revoked,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SessionState {
    /// Checks the lifetimes at `now`.
    pub fn check_lifetimes(
        &self,
        now: u64,
        absolute: Duration,
        idle: Duration,
    ) -> Result<(), SessionRejection> {
        if now >= self.login_at.saturating_add(absolute.as_secs()) {
            return Err(SessionRejection::Expired);
        }
        if now >= self.seen_at.saturating_add(idle.as_secs()) {
            return Err(SessionRejection::Idle);
        }
        Ok(())
    }

    /// True when the cookie should be re-issued to record activity: `seen_at` is updated at a
    /// coarse grain (a tenth of the idle lifetime, at most a minute) so most requests cost no
    /// encryption and no `Set-Cookie`.
    pub fn touch_due(&self, now: u64, idle: Duration) -> bool {
        let grain = (idle.as_secs() / 10).clamp(1, 60);
        now >= self.seen_at.saturating_add(grain)
    }

    /// True when the provider tokens are close enough to expiry that a refresh is due.
    pub fn refresh_due(&self, now: u64) -> bool {
        match (self.tokens_expire_at, &self.refresh_token) {
            (Some(exp), Some(_)) => now.saturating_add(60) >= exp,
            _ => false,
        }
    }

    /// Hash of the session id, safe to log and to key caches with.
    pub fn sid_hash(&self) -> String {
        sid_hash(&self.sid)
    }
}

/// The revocation-list key of a provider session (`sid` at `issuer`); distinct from every
/// [`sid_hash`] of sekisho's own sessions.
pub fn provider_sid_hash(issuer: &str, sid: &str) -> String {
    sid_hash(&format!("provider-sid\0{issuer}\0{sid}"))
}

/// The revocation-list key of a provider session that the provider itself ended (back-channel
/// logout): unlike [`provider_sid_hash`] (signed out at sekisho, which ends that provider
/// session's bearer tokens only, since the provider may keep it and sign the user in again with
/// it), every session and token of it is refused.
pub fn provider_logout_hash(issuer: &str, sid: &str) -> String {
    sid_hash(&format!("provider-logout\0{issuer}\0{sid}"))
}

/// The revocation-list key of a subject (`sub` at `issuer`), for "every session of this user
/// that started before T" (a back-channel logout naming only the user); distinct from every
/// [`sid_hash`] and [`provider_sid_hash`].
pub fn subject_hash(issuer: &str, sub: &str) -> String {
    sid_hash(&format!("subject\0{issuer}\0{sub}"))
}

/// SHA-256 of a session id, base64url, first 16 characters.
pub fn sid_hash(sid: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, sid.as_bytes());
    let mut text = URL_SAFE_NO_PAD.encode(digest.as_ref());
    text.truncate(16);
    text
}

/// Encodes and decodes session cookies.
#[derive(Debug)]
pub struct CookieCodec {
    /// Cookie name as sent (`__Host-` prefixed when secure).
    pub name: String,
    /// Whether cookies carry `Secure` (and the `__Host-` prefix).
    pub secure: bool,
}

impl CookieCodec {
    /// A codec for `base` name; `secure` adds `Secure` and the `__Host-` prefix.
    pub fn new(base: &str, secure: bool) -> Self {
        let name = if secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        };
        CookieCodec { name, secure }
    }

    /// Reads the session from request cookies. A missing cookie is `Absent`; anything that does
    /// not decrypt and parse is `Invalid`.
    pub fn read(
        &self,
        sealer: &Sealer,
        headers: &HeaderMap,
    ) -> Result<SessionState, SessionRejection> {
        let sealed = self.sealed(headers).ok_or(SessionRejection::Absent)?;
        open_sealed(sealer, &sealed)
    }

    /// The sealed value: one cookie (borrowed), or the numbered chunks joined.
    pub fn sealed<'h>(&self, headers: &'h HeaderMap) -> Option<Cow<'h, str>> {
        let mut chunks: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
        for (name, value) in request_cookies(headers) {
            if name == self.name {
                return Some(Cow::Borrowed(value));
            }
            if let Some(index) = name
                .strip_prefix(self.name.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
                .and_then(|n| n.parse::<usize>().ok())
                && let Some(slot) = chunks.get_mut(index)
            {
                *slot = Some(value);
            }
        }
        let mut joined = String::new();
        for chunk in chunks {
            match chunk {
                Some(part) => joined.push_str(part),
                None => break,
            }
        }
        (!joined.is_empty()).then_some(Cow::Owned(joined))
    }

    /// `Set-Cookie` values that store `state`, and clear the cookies of the other shape (single
    /// vs chunked) that the browser may still hold.
    pub fn write(
        &self,
        sealer: &Sealer,
        state: &SessionState,
        max_age: Duration,
    ) -> Result<Vec<HeaderValue>, CookieError> {
        self.write_over(sealer, state, max_age, None)
    }

    /// Like [`Self::write`], re-issuing the session of a request that presented `presented`:
    /// only the cookies of the other shape that the request carried are cleared, so a session in
    /// one cookie is re-issued as one `Set-Cookie` (a front proxy that passes on only the first,
    /// like nginx's `$upstream_http_set_cookie`, passes the session).
    pub fn rewrite(
        &self,
        sealer: &Sealer,
        state: &SessionState,
        max_age: Duration,
        presented: &HeaderMap,
    ) -> Result<Vec<HeaderValue>, CookieError> {
        self.write_over(sealer, state, max_age, Some(presented))
    }

    fn write_over(
        &self,
        sealer: &Sealer,
        state: &SessionState,
        max_age: Duration,
        presented: Option<&HeaderMap>,
    ) -> Result<Vec<HeaderValue>, CookieError> {
        let plain = serde_json::to_vec(state).map_err(|_| CookieError::Encode)?;
        let sealed = sealer
            .seal(Purpose::Session, &plain)
            .map_err(CookieError::Seal)?;
        let max_age = max_age.as_secs();
        // A stale cookie is cleared unless the request is known not to carry it.
        let carried = |name: &str| {
            presented.is_none_or(|headers| request_cookies(headers).any(|(n, _)| n == name))
        };
        let mut out = Vec::new();
        if sealed.len() <= MAX_COOKIE_VALUE {
            out.push(self.set_cookie(&self.name, &sealed, max_age)?);
            for i in 0..MAX_CHUNKS {
                let chunk = format!("{}_{i}", self.name);
                if carried(&chunk) {
                    out.push(self.set_cookie(&chunk, "", 0)?);
                }
            }
            return Ok(out);
        }
        let parts: Vec<&[u8]> = sealed.as_bytes().chunks(MAX_COOKIE_VALUE).collect();
        if parts.len() > MAX_CHUNKS {
            return Err(CookieError::TooLarge(sealed.len()));
        }
        for i in 0..MAX_CHUNKS {
            let chunk = format!("{}_{i}", self.name);
            match parts.get(i) {
                Some(part) => {
                    let text = std::str::from_utf8(part).map_err(|_| CookieError::Encode)?;
                    out.push(self.set_cookie(&chunk, text, max_age)?);
                }
                None if carried(&chunk) => out.push(self.set_cookie(&chunk, "", 0)?),
                None => {}
            }
        }
        if carried(&self.name) {
            out.push(self.set_cookie(&self.name, "", 0)?);
        }
        Ok(out)
    }

    /// `Set-Cookie` values that delete the session in every shape.
    pub fn clear(&self) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if let Ok(v) = self.set_cookie(&self.name, "", 0) {
            out.push(v);
        }
        for i in 0..MAX_CHUNKS {
            if let Ok(v) = self.set_cookie(&format!("{}_{i}", self.name), "", 0) {
                out.push(v);
            }
        }
        out
    }

    /// One `Set-Cookie` value with sekisho's attributes.
    pub fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: u64,
    ) -> Result<HeaderValue, CookieError> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .map_err(|_| CookieError::Encode)
    }

    /// True when a cookie name belongs to sekisho (session, chunks, login flows) and so must not
    /// be forwarded to upstreams. Names of both codecs count, whichever this one is: a browser
    /// sends the plain codec's cookies (no `Secure`) over https as well, where they are not the
    /// session but still hold sealed session material.
    pub fn owns(&self, cookie_name: &str) -> bool {
        self.owns_bytes(cookie_name.as_bytes())
    }

    /// [`Self::owns`] on a name as it came, in bytes. Any number of `__Host-` and `__Secure-`
    /// prefixes is looked through (`__Host-__Host-_sekisho` is still sekisho's name to anyone
    /// who strips one prefix more than the browser did).
    pub fn owns_bytes(&self, cookie_name: &[u8]) -> bool {
        let base = self.name.strip_prefix("__Host-").unwrap_or(&self.name);
        let mut name = cookie_name;
        while let Some(rest) = name
            .strip_prefix(b"__Host-")
            .or_else(|| name.strip_prefix(b"__Secure-"))
        {
            name = rest;
        }
        name.starts_with(base.as_bytes())
    }
}

fn open_sealed(sealer: &Sealer, sealed: &str) -> Result<SessionState, SessionRejection> {
    let plain = sealer
        .open(Purpose::Session, sealed)
        .map_err(|_| SessionRejection::Invalid)?;
    serde_json::from_slice(&plain).map_err(|_| SessionRejection::Invalid)
}

/// A decoded session with what every request of it needs, computed once.
#[derive(Debug)]
pub struct OpenSession {
    /// The session.
    pub state: SessionState,
    /// [`SessionState::sid_hash`].
    pub sid_hash: String,
    /// The identity as header values.
    pub values: IdentityValues,
    /// The revocation-list keys of the provider session and the subject it came from.
    pub provider: ProviderKeys,
    /// Whether the session layer's provider index has been told of this session.
    indexed: std::sync::atomic::AtomicBool,
}

/// The revocation-list keys of what a session or token came from at its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKeys {
    /// [`provider_sid_hash`] of the provider session, when the ID token named one.
    pub signed_out: Option<String>,
    /// [`provider_logout_hash`] of the provider session, when the ID token named one.
    pub ended: Option<String>,
    /// [`subject_hash`] of the user.
    pub subject: String,
}

impl ProviderKeys {
    /// The keys of `identity`.
    pub fn of(identity: &Identity) -> Self {
        let sid = identity.provider_sid.as_deref();
        ProviderKeys {
            signed_out: sid.map(|sid| provider_sid_hash(&identity.issuer, sid)),
            ended: sid.map(|sid| provider_logout_hash(&identity.issuer, sid)),
            subject: subject_hash(&identity.issuer, &identity.sub),
        }
    }
}

impl OpenSession {
    /// Prepares a session.
    pub fn new(state: SessionState) -> Self {
        OpenSession {
            sid_hash: state.sid_hash(),
            values: IdentityValues::new(&state.identity),
            provider: ProviderKeys::of(&state.identity),
            indexed: std::sync::atomic::AtomicBool::new(false),
            state,
        }
    }

    /// Marks the session as known to the provider index; true the first time.
    pub(crate) fn mark_indexed(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // A load first: the hot path of a known session only reads the shared cache line.
        !self.indexed.load(Relaxed) && !self.indexed.swap(true, Relaxed)
    }
}

/// Identity rendered as header values once (not per request).
#[derive(Debug, Clone)]
pub struct IdentityValues {
    /// The subject.
    pub user: HeaderValue,
    /// The email, when known.
    pub email: Option<HeaderValue>,
    /// Groups, comma-separated, commas inside names percent-encoded.
    pub groups: HeaderValue,
}

impl IdentityValues {
    /// Renders `identity`; characters a header cannot carry are percent-encoded.
    pub fn new(identity: &Identity) -> Self {
        let value = |text: &str| {
            HeaderValue::from_str(&header_safe(text))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        let groups: Vec<String> = identity
            .groups
            .iter()
            .map(|g| header_safe(g).replace(',', "%2C"))
            .collect();
        IdentityValues {
            user: value(&identity.sub),
            email: identity.verified_email().map(value),
            groups: value(&groups.join(",")),
        }
    }
}

/// Identity values as header text: bytes outside visible ASCII (and `%`) are percent-encoded.
pub fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..0x7f).contains(&b) && b != b'%' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decoded sessions by their exact sealed cookie value, so a session's cookie is decrypted and
/// parsed once, not on every request. Lifetimes and revocation are still checked per request
/// by the caller; a re-issued cookie is a new entry.
#[derive(Debug, Default)]
pub struct SessionCache {
    /// Keyed by a hash of the cookie's tail (its AEAD tag: random, unforgeable); the full
    /// value is compared on every hit.
    entries: RwLock<HashMap<u64, CachedCookie>>,
}

/// A cache entry: the exact sealed value and its session.
#[derive(Debug)]
struct CachedCookie {
    sealed: Box<str>,
    session: Arc<OpenSession>,
}

/// Entries held before the cache starts over.
const SESSION_CACHE_MAX: usize = 50_000;

impl SessionCache {
    /// The session a request presents, from the cache or by opening its cookie.
    pub fn open(
        &self,
        codec: &CookieCodec,
        sealer: &Sealer,
        headers: &HeaderMap,
    ) -> Result<Arc<OpenSession>, SessionRejection> {
        let sealed = codec.sealed(headers).ok_or(SessionRejection::Absent)?;
        let key = tail_hash(&sealed);
        if let Ok(entries) = self.entries.read()
            && let Some(hit) = entries.get(&key).filter(|hit| *hit.sealed == *sealed)
        {
            return Ok(hit.session.clone());
        }
        let session = Arc::new(OpenSession::new(open_sealed(sealer, &sealed)?));
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= SESSION_CACHE_MAX {
                entries.clear();
            }
            entries.insert(
                key,
                CachedCookie {
                    sealed: sealed.into_owned().into_boxed_str(),
                    session: session.clone(),
                },
            );
        }
        Ok(session)
    }
}

/// FNV-1a over the last 32 bytes.
fn tail_hash(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let tail = bytes.get(bytes.len().saturating_sub(32)..).unwrap_or(bytes);
    tail.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why a cookie could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Serialising the state failed.
    #[error("session state could not be encoded")]
    Encode,
    /// Sealing failed.
    #[error("session state could not be sealed: {0}")]
    Seal(#[source] SealError),
    /// Even split into chunks the session is too large; never cut silently.
    #[error("session is too large for cookies ({0} bytes sealed)")]
    TooLarge(usize),
}

/// Iterates `(name, value)` over all `Cookie` headers (HTTP/2 may send several), as bytes: every
/// `;`-separated pair stands on its own, so one pair with a byte outside ASCII does not hide the
/// others (a header read with `to_str` would be dropped whole).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| Semicolons(Some(v.as_bytes())))
        .filter_map(|pair| {
            let at = memchr::memchr(b'=', pair)?;
            let (name, value) = (pair.get(..at)?, pair.get(at + 1..)?);
            Some((name.trim_ascii(), value.trim_ascii()))
        })
}

/// The `;`-separated parts of a `Cookie` value, found with `memchr` (a session cookie is a
/// kilobyte or more, scanned on every request).
struct Semicolons<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Semicolons<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        match memchr::memchr(b';', rest) {
            Some(at) => {
                self.0 = rest.get(at + 1..);
                rest.get(..at)
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// The text pairs of [`cookie_pairs`]: a pair that is not UTF-8 is skipped on its own (sekisho's
/// own cookies are ASCII, so none of them is ever skipped).
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_pairs(headers).filter_map(|(name, value)| {
        Some((
            std::str::from_utf8(name).ok()?,
            std::str::from_utf8(value).ok()?,
        ))
    })
}

/// Rebuilds the `Cookie` header without sekisho's own cookies, so session material never
/// reaches an upstream. Works on bytes: the other cookies are passed on as they came, whatever
/// bytes they hold, and a cookie named like sekisho's is removed even when its value is not text.
pub fn strip_own_cookies(headers: &mut HeaderMap, codec: &CookieCodec) {
    if !cookie_pairs(headers).any(|(name, _)| codec.owns_bytes(name)) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for (name, value) in cookie_pairs(headers).filter(|(name, _)| !codec.owns_bytes(name)) {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(name);
        kept.push(b'=');
        kept.extend_from_slice(value);
    }
    headers.remove(COOKIE);
    // Every byte kept came from a valid header value and the separator is ASCII, so this only
    // fails on an empty value, which is not sent.
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(&kept)
    {
        headers.insert(COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_split_exactly_as_the_slice_split_does() {
        for input in [
            "",
            ";",
            ";;",
            "a",
            "a;",
            ";a",
            "a;b",
            "a=1; b=2;",
            " a = 1 ;; b=2 ; ",
            "x=;=y;;z",
        ] {
            let ours: Vec<&[u8]> = Semicolons(Some(input.as_bytes())).collect();
            let std: Vec<&[u8]> = input.as_bytes().split(|b| *b == b';').collect();
            assert_eq!(ours, std, "{input:?}");
        }
    }

    fn state(groups: usize) -> SessionState {
        SessionState {
            sid: "sid-1".into(),
            identity: Identity {
                sub: "alice".into(),
                email: Some("alice@example.com".into()),
                name: None,
                groups: (0..groups)
                    .map(|i| format!("group-number-{i:05}"))
                    .collect(),
                issuer: "http://idp".into(),
                email_verified: Some(true),
                claims: serde_json::Map::new(),
                provider_sid: None,
            },
            login_at: 1000,
            seen_at: 1000,
            tokens_expire_at: Some(2000),
            refresh_token: Some("rt".into()),
            id_token: None,
        }
    }

    fn sealer() -> Sealer {
        Sealer::new([[7u8; 32].as_slice()]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn request_with(set_cookies: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<String> = set_cookies
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.contains("Max-Age=0"))
            .filter_map(|v| v.split(';').next().map(str::to_owned))
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).unwrap_or_else(|e| panic!("{e}")),
        );
        headers
    }

    #[test]
    fn small_session_round_trips_in_one_cookie() {
        let codec = CookieCodec::new("_sekisho", true);
        let cookies = codec
            .write(&sealer(), &state(3), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let first = cookies[0].to_str().unwrap_or_default();
        assert!(first.starts_with("__Host-_sekisho="));
        assert!(
            first.contains("HttpOnly")
                && first.contains("SameSite=Lax")
                && first.contains("Secure")
        );
        assert_eq!(codec.read(&sealer(), &request_with(&cookies)), Ok(state(3)));
    }

    #[test]
    fn large_group_lists_are_split_not_cut() {
        let codec = CookieCodec::new("_sekisho", false);
        let big = state(400);
        let cookies = codec
            .write(&sealer(), &big, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let live: Vec<_> = cookies
            .iter()
            .filter(|c| !c.to_str().unwrap_or("").contains("Max-Age=0"))
            .collect();
        assert!(live.len() > 1, "expected chunks");
        for c in &live {
            assert!(c.len() < 4096);
        }
        assert_eq!(codec.read(&sealer(), &request_with(&cookies)), Ok(big));
    }

    #[test]
    fn oversized_sessions_are_refused() {
        let codec = CookieCodec::new("_sekisho", false);
        assert!(matches!(
            codec.write(&sealer(), &state(5000), Duration::from_secs(60)),
            Err(CookieError::TooLarge(_))
        ));
    }

    #[test]
    fn garbage_cookies_are_invalid_not_errors() {
        let codec = CookieCodec::new("_sekisho", false);
        for value in [
            "",
            "x",
            "%%%",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(
                COOKIE,
                HeaderValue::from_str(&format!("_sekisho={value}"))
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            let got = codec.read(&sealer(), &headers);
            assert!(
                matches!(
                    got,
                    Err(SessionRejection::Invalid | SessionRejection::Absent)
                ),
                "{value:?}: {got:?}"
            );
        }
        assert_eq!(
            codec.read(&sealer(), &HeaderMap::new()),
            Err(SessionRejection::Absent)
        );
    }

    #[test]
    fn lifetimes() {
        let s = state(0);
        let abs = Duration::from_secs(3600);
        let idle = Duration::from_secs(600);
        assert_eq!(s.check_lifetimes(1500, abs, idle), Ok(()));
        assert_eq!(
            s.check_lifetimes(1600, abs, idle),
            Err(SessionRejection::Idle)
        );
        let mut active = s.clone();
        active.seen_at = 4500;
        assert_eq!(
            active.check_lifetimes(4600, abs, idle),
            Err(SessionRejection::Expired)
        );
        assert!(!s.touch_due(1030, idle));
        assert!(s.touch_due(1060, idle));
        assert!(s.refresh_due(1950));
        assert!(!s.refresh_due(1900));
    }

    #[test]
    fn own_cookies_are_not_forwarded() {
        let codec = CookieCodec::new("_sekisho", false);
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static(
                "a=1; _sekisho=secret; _sekisho_0=x; _sekisho_flow_abc=y; b=2",
            ),
        );
        strip_own_cookies(&mut headers, &codec);
        assert_eq!(
            headers.get(COOKIE).and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
    }

    #[test]
    fn own_cookies_of_the_other_scheme_are_not_forwarded_either() {
        for secure in [false, true] {
            let codec = CookieCodec::new("_sekisho", secure);
            let mut headers = HeaderMap::new();
            headers.insert(
                COOKIE,
                HeaderValue::from_static(
                    "a=1; _sekisho=s; __Host-_sekisho=t; _sekisho_0=u; __Host-_sekisho_1=v; \
                     _sekisho_flow_abc=w; __Host-_sekisho_flow_abc=x; __Host-other=y; b=2",
                ),
            );
            strip_own_cookies(&mut headers, &codec);
            let kept = headers.get(COOKIE).and_then(|v| v.to_str().ok());
            assert_eq!(kept, Some("a=1; __Host-other=y; b=2"), "secure: {secure}");
        }
    }

    #[test]
    fn a_cookie_with_a_byte_outside_ascii_hides_nothing() {
        let codec = CookieCodec::new("_sekisho", false);
        let cookies = codec
            .write(&sealer(), &state(1), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut headers = request_with(&cookies);
        let mut line = headers
            .get(COOKIE)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        line.extend_from_slice(b"; _=\xef; theme=d\xe4rk");
        headers.insert(
            COOKIE,
            HeaderValue::from_bytes(&line).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            codec.read(&sealer(), &headers),
            Ok(state(1)),
            "the session is read beside a non-ASCII cookie"
        );
        strip_own_cookies(&mut headers, &codec);
        let forwarded = headers.get(COOKIE).map(|v| v.as_bytes().to_vec());
        assert_eq!(
            forwarded.as_deref(),
            Some(b"_=\xef; theme=d\xe4rk".as_slice()),
            "the session cookie is removed, the others pass as they came"
        );
    }

    #[test]
    fn own_cookies_with_non_text_values_are_removed_too() {
        let codec = CookieCodec::new("_sekisho", true);
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_bytes(b"__Host-_sekisho=\xff\xfe; _sekisho_1=\x80; a=1")
                .unwrap_or_else(|e| panic!("{e}")),
        );
        strip_own_cookies(&mut headers, &codec);
        assert_eq!(
            headers.get(COOKIE).map(HeaderValue::as_bytes),
            Some(b"a=1".as_slice())
        );
    }

    #[test]
    fn own_cookies_under_repeated_prefixes_are_removed() {
        // Found by the cookie_strip fuzz target: one prefix more than the browser adds.
        for secure in [false, true] {
            let codec = CookieCodec::new("_sekisho", secure);
            let mut headers = HeaderMap::new();
            headers.insert(
                COOKIE,
                HeaderValue::from_static(
                    "__Host-__Host-_sekisho=x; __Secure-__Host-_sekisho_0=y; __Host-=z; a=1",
                ),
            );
            strip_own_cookies(&mut headers, &codec);
            assert_eq!(
                headers.get(COOKIE).map(HeaderValue::as_bytes),
                Some(b"__Host-=z; a=1".as_slice()),
                "secure: {secure}"
            );
        }
    }
}
