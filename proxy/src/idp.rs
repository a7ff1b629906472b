//! The built-in OpenID provider: a standards-following OP (discovery, JWKS, authorization code
//! flow with PKCE S256 only, token endpoint with refresh-token rotation, userinfo, RP-initiated
//! logout) for teams without one, served on sekisho's own listeners for requests to its issuer's
//! host under the issuer's path. sekisho's proxy uses it like any other provider: through
//! discovery over HTTP(S).
//!
//! Request handling is split by endpoint: [`oauth`] (authorize, token, userinfo, end-session,
//! discovery) and [`login`] (the sign-in form and its second step). Keys, grants and failure
//! counts live in [`keys`], [`store`] and [`limits`]; [`backchannel`] tells clients that a
//! sign-in ended (Back-Channel Logout 1.0).

mod backchannel;
mod keys;
mod limits;
mod login;
mod oauth;
mod pages;
mod password;
mod store;
pub mod totp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use sekisho_config::{Config, IdentityProvider as IdpConfig, IdpClient, IdpUser, Scheme};
use serde::{Deserialize, Serialize};

use crate::error::{BoxError, ProxyBody, full};
use crate::seal::constant_time_eq;
use crate::seal::{Purpose, Sealer};
use crate::session::{request_cookies, unix_now};

pub use backchannel::{Delivery, DeliveryOutcome, log_delivery};
pub use keys::{
    KeyError, add_key, create_dir as create_private_dir, write_private as write_private_file,
};
pub use password::{
    MAX_PASSWORD, PasswordError, hash as hash_password, verify_blocking as verify_password_blocking,
};
pub use store::StoreError;

/// Largest request body the provider reads (forms and token requests are small).
const MAX_BODY: usize = 64 * 1024;

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The signing keys could not be loaded or made.
    #[error("identity provider keys: {0}")]
    Keys(#[from] KeyError),
    /// The grant file could not be opened.
    #[error("identity provider grants: {0}")]
    Store(#[from] StoreError),
    /// The dummy password hash could not be made.
    #[error("identity provider: {0}")]
    Password(#[from] PasswordError),
    /// The HTTP client for back-channel logouts could not be built.
    #[error("identity provider: HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The cookie key could not be read, made or used.
    #[error("identity provider cookie key {path}: {reason}")]
    CookieKey {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A sign-in attempt at the provider, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpEvent {
    /// Whether it succeeded, and if not why.
    pub outcome: IdpOutcome,
    /// The login name as typed (lowercased).
    pub login: String,
    /// The account it names, when one does.
    pub username: Option<String>,
    /// That account's email.
    pub email: Option<String>,
    /// The client address (as `server.trusted_proxies` let sekisho see it).
    pub source_ip: IpAddr,
    /// The relying party the user was signing in to.
    pub client_id: String,
    /// Unix seconds.
    pub time: u64,
}

/// How a sign-in attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpOutcome {
    /// Signed in (with every factor the account has).
    Success,
    /// Refused.
    Failure(IdpFailure),
}

/// Why a sign-in attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpFailure {
    /// No account has that username or email.
    UnknownUser,
    /// The password did not match.
    WrongPassword,
    /// The one-time code did not match.
    WrongCode,
    /// The one-time code was already used.
    ReusedCode,
    /// Too many failures for the account.
    AccountLocked,
    /// Too many failures from the source address.
    SourceLocked,
    /// The sign-in form has had all its attempts.
    FormExhausted,
    /// A client's secret at the token endpoint did not match.
    WrongClientSecret,
    /// Too many failed client authentications by the client from the source address.
    ClientLocked,
}

impl IdpOutcome {
    /// `success`, or the failure reason in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(IdpFailure::UnknownUser) => "unknown_user",
            Self::Failure(IdpFailure::WrongPassword) => "wrong_password",
            Self::Failure(IdpFailure::WrongCode) => "wrong_code",
            Self::Failure(IdpFailure::ReusedCode) => "reused_code",
            Self::Failure(IdpFailure::AccountLocked) => "account_locked",
            Self::Failure(IdpFailure::SourceLocked) => "source_locked",
            Self::Failure(IdpFailure::FormExhausted) => "form_exhausted",
            Self::Failure(IdpFailure::WrongClientSecret) => "wrong_client_secret",
            Self::Failure(IdpFailure::ClientLocked) => "client_locked",
        }
    }

    /// Whether this is about a relying party authenticating at the token endpoint (rather than
    /// a user signing in).
    pub fn is_client_authentication(self) -> bool {
        matches!(
            self,
            Self::Failure(IdpFailure::WrongClientSecret | IdpFailure::ClientLocked)
        )
    }
}

impl IdpEvent {
    /// One line for the audit record; strings the client chose are quoted and escaped.
    pub fn describe(&self) -> String {
        if self.outcome.is_client_authentication() {
            format!(
                "client authentication at the built-in provider's token endpoint by client {:?}: {}",
                self.client_id,
                self.outcome.as_str()
            )
        } else {
            format!(
                "sign-in at the built-in provider for client {:?} as {:?}: {}",
                self.client_id,
                self.login,
                self.outcome.as_str()
            )
        }
    }
}

/// Writes an [`IdpEvent`] to the log (the default event sink). Strings a client chose are
/// written with `Debug` (quoted, control characters escaped): a login name holding a line break
/// cannot start a log line of its own.
pub fn log_event(event: IdpEvent) {
    tracing::info!(
        outcome = event.outcome.as_str(),
        login = ?event.login,
        username = event.username.as_deref().unwrap_or(""),
        email = event.email.as_deref().unwrap_or(""),
        source_ip = %event.source_ip,
        client_id = ?event.client_id,
        time = event.time,
        "identity provider sign-in"
    );
}

/// The provider.
pub struct IdentityProvider {
    /// The issuer, without a trailing `/`.
    issuer: String,
    scheme: Scheme,
    host: String,
    port: u16,
    /// The issuer's path without a trailing `/` (empty for a whole host).
    prefix: String,
    directory: RwLock<Arc<Directory>>,
    keys: keys::KeyStore,
    store: store::Store,
    limiter: limits::Limiter,
    passwords: password::Passwords,
    sealer: Sealer,
    on_event: Arc<dyn Fn(IdpEvent) + Send + Sync>,
    /// Where back-channel logout outcomes go.
    on_delivery: Arc<dyn Fn(Delivery) + Send + Sync>,
    /// Posts back-channel logouts (no redirects followed).
    http: reqwest::Client,
    session_cookie: String,
    browser_cookie: String,
}

impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The reloadable part of the configuration: who may sign in, which clients exist, lifetimes.
#[derive(Debug)]
struct Directory {
    users: Vec<IdpUser>,
    clients: Vec<IdpClient>,
    token_lifetime: Duration,
    session_lifetime: Duration,
}

impl Directory {
    fn from_config(config: &IdpConfig) -> Self {
        Self {
            users: config.users.clone(),
            clients: config.clients.clone(),
            token_lifetime: config.token_lifetime,
            session_lifetime: config.session_lifetime,
        }
    }

    fn client(&self, id: &str) -> Option<&IdpClient> {
        self.clients.iter().find(|c| c.client_id == id)
    }

    fn user(&self, username: &str) -> Option<&IdpUser> {
        self.users.iter().find(|u| u.username == username)
    }

    /// The user a typed login names: a username, or an email (case-insensitive).
    fn find_login(&self, login: &str) -> Option<&IdpUser> {
        let login = login.trim();
        self.users
            .iter()
            .find(|u| u.username == login.to_lowercase() || u.email.eq_ignore_ascii_case(login))
    }
}

/// A pending authorization or logout, sealed into the form that continues it and bound to the
/// browser that was shown the form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Interaction {
    /// A sign-in for an authorization request.
    Login(Pending),
    /// A logout waiting for the user's confirmation.
    Logout(LogoutIntent),
}

/// A validated authorization request waiting for the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// Random id; a form is completed once.
    id: String,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: Vec<String>,
    challenge: String,
    /// Hash of the browser cookie this form was issued to.
    browser: String,
    created: u64,
    /// After the password step of an account with a second factor: who, and when.
    password_ok: Option<(String, u64)>,
}

/// A logout to confirm.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogoutIntent {
    browser: String,
    /// Where to send the browser afterwards (already checked against the client's list).
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    created: u64,
}

/// How long a sign-in or logout form stays usable.
const FORM_LIFETIME: u64 = 600;
/// How long the second step may follow the password.
const SECOND_STEP_LIFETIME: u64 = 300;
/// Lifetime of an authorization code.
const CODE_LIFETIME: u64 = 60;

impl IdentityProvider {
    /// Builds the provider of `config` (keys and grants under its state directory), reporting
    /// sign-in attempts to `on_event`.
    pub fn new(
        config: &IdpConfig,
        on_event: Arc<dyn Fn(IdpEvent) + Send + Sync>,
    ) -> Result<Self, IdpError> {
        let now = unix_now();
        keys::create_dir(&config.state_dir)?;
        // Tokens signed by a replaced key stay verifiable for as long as any can live.
        let retain = config.token_lifetime + Duration::from_secs(3600);
        let keys = keys::KeyStore::open(
            &config.state_dir.join("keys"),
            config.key_rotation,
            retain,
            now,
        )?;
        let store = store::Store::open(&config.state_dir.join("grants.jsonl"), now)?;
        let sealer = Sealer::new([cookie_key(&config.state_dir.join("cookie.key"))?.as_slice()])
            .map_err(|e| IdpError::CookieKey {
                path: config.state_dir.join("cookie.key").display().to_string(),
                reason: e.to_string(),
            })?;
        let scheme = if config.issuer.scheme() == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let prefix = config.issuer.path().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            // A client's back-channel URI is registered exactly; never follow it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(backchannel::ATTEMPT_TIMEOUT)
            .build()
            .map_err(IdpError::Http)?;
        let secure = scheme == Scheme::Https;
        let base = match (secure, prefix.is_empty()) {
            (true, true) => "__Host-sekisho_idp",
            (true, false) => "__Secure-sekisho_idp",
            (false, _) => "sekisho_idp",
        };
        Ok(Self {
            issuer: config.issuer.as_str().trim_end_matches('/').to_owned(),
            scheme,
            host: config
                .issuer
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port: config
                .issuer
                .port_or_known_default()
                .unwrap_or_else(|| scheme.default_port()),
            prefix,
            directory: RwLock::new(Arc::new(Directory::from_config(config))),
            keys,
            store,
            limiter: limits::Limiter::new(config.login_limits),
            passwords: password::Passwords::new()?,
            sealer,
            on_event,
            on_delivery: backchannel::default_sink(),
            http,
            session_cookie: base.to_owned(),
            browser_cookie: format!("{base}_browser"),
        })
    }

    /// Reports each back-channel logout delivery (delivered or given up) to `on_delivery`
    /// instead of only logging it.
    pub fn with_delivery_events(
        mut self,
        on_delivery: Arc<dyn Fn(Delivery) + Send + Sync>,
    ) -> Self {
        self.on_delivery = on_delivery;
        self
    }

    /// The issuer URL (no trailing `/`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id that signs now.
    pub fn signing_kid(&self) -> String {
        self.keys.signing_kid()
    }

    /// Whether a request to this scheme, host, port and (normalised) path is the provider's.
    pub fn serves(&self, scheme: Scheme, host: &str, port: Option<u16>, path: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        scheme == self.scheme
            && host.eq_ignore_ascii_case(&self.host)
            && port.unwrap_or_else(|| scheme.default_port()) == self.port
            && self.endpoint(path).is_some()
    }

    /// The path below the issuer (`/token`, ...), when `path` is under it.
    fn endpoint<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(&self.prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    /// Takes the users, clients and lifetimes of a reloaded configuration. The issuer, keys and
    /// login limits need a restart.
    pub fn reload(&self, config: &Config) {
        let Some(idp) = &config.identity_provider else {
            tracing::warn!(
                "identity_provider removed from the configuration; takes effect at the next restart"
            );
            return;
        };
        if idp.issuer.as_str().trim_end_matches('/') != self.issuer {
            tracing::warn!("identity_provider.issuer changed; takes effect at the next restart");
        }
        let fresh = Arc::new(Directory::from_config(idp));
        match self.directory.write() {
            Ok(mut slot) => *slot = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        if let Err(e) = self.keys.refresh(unix_now()) {
            tracing::error!(error = %e, "identity provider: reloading keys failed; keeping the loaded ones");
        }
        tracing::info!(
            users = idp.users.len(),
            clients = idp.clients.len(),
            "identity provider reloaded"
        );
    }

    /// Rotates keys when due (hourly), until the process ends.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = self.keys.refresh(unix_now()) {
                tracing::error!(error = %e, "identity provider: key maintenance failed");
            }
        }
    }

    fn directory(&self) -> Arc<Directory> {
        match self.directory.read() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves one request under the issuer path. `path` is the normalised request path and
    /// `client_ip` the client's address as the proxy attributes it.
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        path: &str,
        client_ip: IpAddr,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(endpoint) = self.endpoint(path) else {
            return not_found();
        };
        let endpoint = endpoint.to_owned();
        let (parts, body) = request.into_parts();
        let query = parts.uri.query().unwrap_or("").to_owned();
        let form = if parts.method == Method::POST {
            let is_form = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| {
                    v.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                });
            if !is_form {
                return oauth::error_json(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body must be application/x-www-form-urlencoded",
                );
            }
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => Some(collected.to_bytes()),
                Err(_) => {
                    return oauth::error_json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request",
                        "the request body is too large or broken",
                    );
                }
            }
        } else {
            None
        };
        let call = Call {
            method: parts.method.clone(),
            headers: parts.headers,
            query,
            form,
            client_ip,
            now: unix_now(),
        };
        // Changes to the grant file are on disk before the answer leaves.
        let queued = self.store.queued();
        let response = self.dispatch(&endpoint, &call).await;
        let now_queued = self.store.queued();
        if now_queued != queued {
            self.store.synced(now_queued).await;
        }
        response
    }

    /// Runs the endpoint `endpoint` names.
    async fn dispatch(&self, endpoint: &str, call: &Call) -> Response<ProxyBody> {
        let get_or_post = matches!(call.method, Method::GET | Method::HEAD | Method::POST);
        match endpoint {
            "/.well-known/openid-configuration" if is_get(&call.method) => self.discovery(),
            "/jwks" if is_get(&call.method) => self.jwks(),
            "/authorize" if get_or_post => self.authorize(call).await,
            "/login" if call.method == Method::POST => self.login(call).await,
            "/login/code" if call.method == Method::POST => self.second_step(call).await,
            "/token" if call.method == Method::POST => self.token(call).await,
            "/userinfo" if get_or_post => self.userinfo(call),
            "/end-session" if get_or_post => self.end_session(call),
            "/end-session/confirm" if call.method == Method::POST => self.confirm_logout(call),
            "/.well-known/openid-configuration"
            | "/jwks"
            | "/authorize"
            | "/login"
            | "/login/code"
            | "/token"
            | "/userinfo"
            | "/end-session"
            | "/end-session/confirm" => method_not_allowed(),
            _ => not_found(),
        }
    }

    /// `{issuer}{path}`: an endpoint URL.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The absolute path of an endpoint (for form actions).
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// A `Set-Cookie` for one of the provider's cookies; `max_age` None: a browser-session cookie.
    fn set_cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
        let path = if self.prefix.is_empty() {
            "/"
        } else {
            &self.prefix
        };
        let secure = if self.scheme == Scheme::Https {
            "; Secure"
        } else {
            ""
        };
        let age = max_age.map_or_else(String::new, |age| format!("; Max-Age={age}"));
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}{age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }

    /// The value of one of the provider's cookies.
    fn cookie<'h>(&self, headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        request_cookies(headers)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The hash binding forms to this browser: of its browser cookie, made (and set) when
    /// absent. `None` when no random value could be made.
    fn browser_binding(&self, headers: &HeaderMap) -> Option<(String, Option<HeaderValue>)> {
        if let Some(value) = self
            .cookie(headers, &self.browser_cookie)
            .filter(|v| v.len() >= 32)
        {
            return Some((store::hash(value), None));
        }
        let value = random_token(32)?;
        let cookie = self.set_cookie(&self.browser_cookie, &value, None);
        Some((store::hash(&value), cookie))
    }

    /// The hash of the browser cookie sent, if any.
    fn presented_binding(&self, headers: &HeaderMap) -> Option<String> {
        self.cookie(headers, &self.browser_cookie).map(store::hash)
    }

    /// The current sign-in of this browser: the sealed cookie, not ended, its user still there.
    fn current_sign_in(&self, headers: &HeaderMap, now: u64) -> Option<store::SignIn> {
        let sealed = self.cookie(headers, &self.session_cookie)?;
        let plain = self.sealer.open(Purpose::IdpSession, sealed).ok()?;
        let sign_in: store::SignIn = serde_json::from_slice(&plain).ok()?;
        if sign_in.expires_at <= now || self.store.sid_revoked(&sign_in.sid) {
            return None;
        }
        self.directory().user(&sign_in.username)?;
        Some(sign_in)
    }

    fn seal_interaction(&self, interaction: &Interaction) -> Option<String> {
        let plain = serde_json::to_vec(interaction).ok()?;
        self.sealer.seal(Purpose::IdpInteraction, &plain).ok()
    }

    fn open_interaction(&self, sealed: &str) -> Option<Interaction> {
        let plain = self.sealer.open(Purpose::IdpInteraction, sealed).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    fn event(&self, event: IdpEvent) {
        (self.on_event)(event);
    }
}

/// One request's inputs.
#[derive(Debug)]
struct Call {
    method: Method,
    headers: HeaderMap,
    query: String,
    /// The form body of a POST.
    form: Option<Bytes>,
    client_ip: IpAddr,
    now: u64,
}

impl Call {
    /// The request parameters: the form body of a POST, else the query. An empty value counts
    /// as absent (RFC 6749 §3.1); a repeated parameter is an error naming it.
    fn params(&self) -> Result<HashMap<String, String>, String> {
        let raw: &[u8] = match &self.form {
            Some(body) => body,
            None => self.query.as_bytes(),
        };
        parse_params(raw)
    }
}

/// Parses `application/x-www-form-urlencoded`, refusing repeated names.
fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw) {
        if value.is_empty() {
            continue;
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(name.into_owned());
        }
    }
    Ok(params)
}

fn is_get(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

fn not_found() -> Response<ProxyBody> {
    pages::message(
        StatusCode::NOT_FOUND,
        "Not found",
        "The identity provider has no such page.",
    )
}

fn method_not_allowed() -> Response<ProxyBody> {
    pages::message(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "This address does not serve that method.",
    )
}

/// A redirect; `status` 302 after a GET, 303 after a POST.
fn redirect(status: StatusCode, location: &str, cookies: Vec<HeaderValue>) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    pages::no_store(h);
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for cookie in cookies {
        h.append(header::SET_COOKIE, cookie);
    }
    response
}

/// `len` random bytes, base64url; `None` when the system random source fails.
fn random_token(len: usize) -> Option<String> {
    crate::seal::random_token(len).ok()
}

/// The page for a failure inside sekisho (detail goes to the log).
fn internal(detail: &str) -> Response<ProxyBody> {
    tracing::error!(detail, "identity provider: internal error");
    pages::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The identity provider could not complete the request. Try again.",
    )
}

/// Reads the provider's cookie-sealing key, making it on first start.
fn cookie_key(path: &std::path::Path) -> Result<Vec<u8>, IdpError> {
    let fail = |reason: String| IdpError::CookieKey {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|e| fail(e.to_string()))?;
            if key.len() != 32 {
                return Err(fail(format!("{} bytes, expected 32", key.len())));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| fail("random source failed".into()))?;
            keys::write_private(path, URL_SAFE_NO_PAD.encode(&key).as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_may_not_repeat_and_empty_ones_are_absent() {
        let params = parse_params(b"a=1&b=&c=x%20y").unwrap_or_default();
        assert_eq!(params.get("a").map(String::as_str), Some("1"));
        assert!(!params.contains_key("b"));
        assert_eq!(params.get("c").map(String::as_str), Some("x y"));
        assert_eq!(parse_params(b"a=1&a=2"), Err("a".to_owned()));
    }

    #[test]
    fn logins_are_usernames_or_emails_in_any_case() {
        let user = |name: &str, email: &str| IdpUser {
            username: name.into(),
            email: email.into(),
            name: name.into(),
            groups: Vec::new(),
            password_hash: sekisho_config::SecretString::new(String::new()),
            totp_secret: None,
        };
        let directory = Directory {
            users: vec![
                user("alice", "Alice@Example.com"),
                user("bob", "bob@example.com"),
            ],
            clients: Vec::new(),
            token_lifetime: Duration::from_secs(60),
            session_lifetime: Duration::from_secs(60),
        };
        let found = |login: &str| directory.find_login(login).map(|u| u.username.clone());
        assert_eq!(found("alice"), Some("alice".into()));
        assert_eq!(found(" ALICE "), Some("alice".into()));
        assert_eq!(found("alice@example.COM"), Some("alice".into()));
        assert_eq!(found("bob@example.com"), Some("bob".into()));
        assert_eq!(found("carol"), None);
        assert_eq!(found(""), None);
    }

    #[test]
    fn client_chosen_strings_cannot_start_a_log_line() {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut held) = self.0.lock() {
                    held.extend_from_slice(bytes);
                }
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl tracing_subscriber::fmt::MakeWriter<'_> for Buffer {
            type Writer = Buffer;
            fn make_writer(&self) -> Buffer {
                self.clone()
            }
        }
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .finish();
        let event = IdpEvent {
            outcome: IdpOutcome::Failure(IdpFailure::UnknownUser),
            login: "mallory\n2026-01-01T00:00:00Z  INFO forged\r".into(),
            username: None,
            email: None,
            source_ip: IpAddr::from([192, 0, 2, 1]),
            client_id: "rp\nforged".into(),
            time: 0,
        };
        tracing::subscriber::with_default(subscriber, || log_event(event.clone()));
        let text = buffer
            .0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#"login="mallory\n2026-01-01T00:00:00Z  INFO forged\r""#),
            "{text}"
        );
        assert!(text.contains(r#"client_id="rp\nforged""#), "{text}");
        assert_eq!(event.describe().lines().count(), 1);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
