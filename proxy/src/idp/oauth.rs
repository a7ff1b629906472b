//! The protocol endpoints: discovery, JWKS, authorization (code flow, PKCE S256 required, exact
//! redirect URIs), token (authorization_code and refresh_token, client_secret_basic or
//! client_secret_post), userinfo and RP-initiated logout (which starts the back-channel logout
//! of the ended sign-in, `backchannel.rs`). Every refusal is an RFC 6749 / OpenID
//! Connect error: a page when the client or redirect URI cannot be trusted, a redirect with
//! `error` once they can, JSON at the token endpoint.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use sekisho_config::{IdpClient, IdpClientSecret, IdpUser};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::password::Pool;
use super::store::{CodeGrant, RefreshGrant, Refusal, SignIn};
use super::{
    CODE_LIFETIME, Call, Directory, FORM_LIFETIME, IdentityProvider, IdpEvent, IdpFailure,
    IdpOutcome, Interaction, LogoutIntent, Pending, pages, random_token, redirect,
};
use crate::error::{ProxyBody, full};

/// Scopes the provider knows; others are ignored (OpenID Connect Core §3.1.2.1).
const SCOPES: &[&str] = &["openid", "email", "profile", "groups"];
/// Longest `state` or `nonce` accepted.
const MAX_STATE: usize = 1024;
/// `typ` of access tokens (RFC 9068), which the userinfo endpoint insists on and which no ID
/// token carries.
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Claims of an access token (RFC 9068).
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    client_id: String,
    scope: String,
    iat: u64,
    exp: u64,
    jti: String,
    sid: String,
    auth_time: u64,
}

/// What an `id_token_hint` says once verified.
#[derive(Debug, Deserialize)]
struct HintClaims {
    sub: String,
    aud: Audience,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    auth_time: Option<u64>,
}

/// `aud`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl IdentityProvider {
    /// `/.well-known/openid-configuration`.
    pub(super) fn discovery(&self) -> Response<ProxyBody> {
        let document = json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "userinfo_endpoint": self.url("/userinfo"),
            "jwks_uri": self.url("/jwks"),
            "end_session_endpoint": self.url("/end-session"),
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "scopes_supported": SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "amr",
                "email", "email_verified", "name", "preferred_username", "groups"
            ],
            "prompt_values_supported": ["none", "login"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        });
        let mut response = json_response(StatusCode::OK, &document);
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        response
    }

    /// `/jwks`.
    pub(super) fn jwks(&self) -> Response<ProxyBody> {
        crate::error::jwks(self.keys.jwks())
    }

    /// `/authorize`: validates the request; answers at once from the browser's sign-in, or shows
    /// the sign-in form.
    pub(super) async fn authorize(&self, call: &Call) -> Response<ProxyBody> {
        let params = match call.params() {
            Ok(params) => params,
            Err(name) => return refuse_page(&format!("The parameter `{name}` is repeated.")),
        };
        let directory = self.directory();
        // Until the client and its redirect URI are known good, errors stay on this page:
        // redirecting anywhere else would make the provider an open redirector.
        let Some(client_id) = params.get("client_id") else {
            return refuse_page("The request does not name the application (client_id).");
        };
        let Some(client) = directory.client(client_id) else {
            return refuse_page("The application (client_id) is not registered here.");
        };
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return refuse_page("The request has no redirect_uri.");
        };
        if !client
            .redirect_uris
            .iter()
            .any(|uri| uri.as_str() == redirect_uri)
        {
            tracing::info!(
                client_id = ?client_id,
                redirect_uri = ?redirect_uri,
                "identity provider: unregistered redirect_uri refused"
            );
            return refuse_page("The redirect_uri is not registered for this application.");
        }
        let state = params
            .get("state")
            .filter(|s| s.len() <= MAX_STATE)
            .cloned();
        let fail = |error: &str, description: &str| {
            self.error_redirect(redirect_uri, error, description, state.as_deref())
        };
        if params.get("state").is_some_and(|s| s.len() > MAX_STATE) {
            return fail("invalid_request", "state is too long");
        }
        if params.contains_key("request") {
            return fail("request_not_supported", "request objects are not supported");
        }
        if params.contains_key("request_uri") {
            return fail("request_uri_not_supported", "request_uri is not supported");
        }
        match params.get("response_type").map(String::as_str) {
            Some("code") => {}
            None => return fail("invalid_request", "response_type is required"),
            Some(_) => {
                return fail(
                    "unsupported_response_type",
                    "only the authorization code flow (response_type=code) is supported",
                );
            }
        }
        if params
            .get("response_mode")
            .is_some_and(|mode| mode != "query")
        {
            return fail("invalid_request", "only response_mode=query is supported");
        }
        let requested: Vec<&str> = params
            .get("scope")
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if !requested.contains(&"openid") {
            return fail("invalid_scope", "the openid scope is required");
        }
        let mut scope: Vec<String> = Vec::new();
        for known in SCOPES {
            if requested.contains(known) {
                scope.push((*known).to_owned());
            }
        }
        let Some(challenge) = params.get("code_challenge") else {
            return fail(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            );
        };
        if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        if challenge.len() != 43 || URL_SAFE_NO_PAD.decode(challenge).is_err() {
            return fail(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the verifier",
            );
        }
        let nonce = params.get("nonce").cloned();
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_STATE) {
            return fail("invalid_request", "nonce is too long");
        }
        let prompts: Vec<&str> = params
            .get("prompt")
            .map(|p| p.split(' ').filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return fail("invalid_request", "prompt=none cannot be combined");
        }
        let max_age = match params.get("max_age").map(|m| m.parse::<u64>()) {
            None => None,
            Some(Ok(age)) => Some(age),
            Some(Err(_)) => return fail("invalid_request", "max_age must be a whole number"),
        };
        let Some(id) = random_token(16) else {
            return super::internal("random source failed");
        };
        let Some((browser, browser_cookie)) = self.browser_binding(&call.headers) else {
            return super::internal("random source failed");
        };
        let pending = Pending {
            id,
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            nonce,
            scope,
            challenge: challenge.clone(),
            browser,
            created: call.now,
            password_ok: None,
        };
        let fresh_enough = |sign_in: &SignIn| {
            max_age.is_none_or(|age| call.now.saturating_sub(sign_in.auth_time) <= age)
        };
        if !prompts.contains(&"login")
            && let Some(sign_in) = self
                .current_sign_in(&call.headers, call.now)
                .filter(fresh_enough)
        {
            return self.code_redirect(&pending, &sign_in, call.now, StatusCode::FOUND, Vec::new());
        }
        if prompts.contains(&"none") {
            return fail("login_required", "the user is not signed in");
        }
        let mut response = self.sign_in_page(&pending, "", None, StatusCode::OK);
        if let Some(cookie) = browser_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// Issues a code for a completed authorization and sends the browser back with it.
    pub(super) fn code_redirect(
        &self,
        pending: &Pending,
        sign_in: &SignIn,
        now: u64,
        status: StatusCode,
        cookies: Vec<HeaderValue>,
    ) -> Response<ProxyBody> {
        let Some(code) = random_token(32) else {
            return super::internal("random source failed");
        };
        self.store.put_code(
            &code,
            CodeGrant {
                client_id: pending.client_id.clone(),
                redirect_uri: pending.redirect_uri.clone(),
                challenge: pending.challenge.clone(),
                nonce: pending.nonce.clone(),
                scope: pending.scope.clone(),
                sign_in: sign_in.clone(),
                expires_at: now.saturating_add(CODE_LIFETIME),
            },
            now,
        );
        let Ok(mut url) = url::Url::parse(&pending.redirect_uri) else {
            return super::internal("registered redirect_uri does not parse");
        };
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("code", &code);
            if let Some(state) = &pending.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.issuer);
        }
        redirect(status, url.as_str(), cookies)
    }

    /// Sends an authorization error back to a (registered) redirect URI.
    fn error_redirect(
        &self,
        redirect_uri: &str,
        error: &str,
        description: &str,
        state: Option<&str>,
    ) -> Response<ProxyBody> {
        let Ok(mut url) = url::Url::parse(redirect_uri) else {
            return super::internal("registered redirect_uri does not parse");
        };
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("error", error);
            query.append_pair("error_description", description);
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.issuer);
        }
        redirect(StatusCode::FOUND, url.as_str(), Vec::new())
    }

    /// `/token`.
    pub(super) async fn token(&self, call: &Call) -> Response<ProxyBody> {
        let params = match call.params() {
            Ok(params) => params,
            Err(name) => {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("the parameter {name} is repeated"),
                );
            }
        };
        let directory = self.directory();
        let client = match self.authenticate_client(call, &params, &directory).await {
            Ok(client) => client,
            Err(response) => return *response,
        };
        match params.get("grant_type").map(String::as_str) {
            None => error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            ),
            Some("authorization_code") => self.code_grant(call, &params, &directory, client),
            Some("refresh_token") => self.refresh_grant(call, &params, &directory, client),
            Some(_) => error_json(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: authorization_code, refresh_token",
            ),
        }
    }

    /// Client authentication at the token endpoint: HTTP Basic (`client_secret_basic`, the
    /// id and secret form-urlencoded first, RFC 6749 §2.3.1) or `client_id` + `client_secret`
    /// in the body (`client_secret_post`), not both.
    async fn authenticate_client<'d>(
        &self,
        call: &Call,
        params: &HashMap<String, String>,
        directory: &'d Directory,
    ) -> Result<&'d IdpClient, Box<Response<ProxyBody>>> {
        let mut authorizations = call.headers.get_all(header::AUTHORIZATION).iter();
        let authorization = authorizations.next();
        if authorizations.next().is_some() {
            return Err(Box::new(error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one Authorization header",
            )));
        }
        let basic = authorization.is_some();
        let (id, secret) = match (authorization, params.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(Box::new(error_json(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method, not two",
                )));
            }
            (Some(value), None) => match basic_credentials(value) {
                Some(pair) => pair,
                None => {
                    return Err(Box::new(invalid_client(
                        true,
                        "malformed Basic credentials",
                    )));
                }
            },
            (None, Some(secret)) => match params.get("client_id") {
                Some(id) => (id.clone(), secret.clone()),
                None => return Err(Box::new(invalid_client(false, "client_id is required"))),
            },
            (None, None) => {
                return Err(Box::new(invalid_client(
                    false,
                    "client authentication is required",
                )));
            }
        };
        if basic
            && params
                .get("client_id")
                .is_some_and(|body_id| *body_id != id)
        {
            return Err(Box::new(error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id differs from the authenticated client",
            )));
        }
        let Some(client) = directory.client(&id) else {
            return Err(Box::new(invalid_client(
                basic,
                "client authentication failed",
            )));
        };
        let event = |failure| IdpEvent {
            outcome: IdpOutcome::Failure(failure),
            login: String::new(),
            username: None,
            email: None,
            source_ip: call.client_ip,
            client_id: client.client_id.clone(),
            time: call.now,
        };
        // Counted before the secret is checked, so concurrent guesses cannot all be checked.
        let reservation = match self.limiter.reserve_client(
            &client.client_id,
            call.client_ip,
            std::time::Instant::now(),
        ) {
            Ok(reservation) => reservation,
            Err(left) => {
                self.event(event(IdpFailure::ClientLocked));
                return Err(Box::new(client_locked(left)));
            }
        };
        let good = match &client.secret {
            IdpClientSecret::Plain(expected) => {
                let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
                super::constant_time_eq(
                    digest(expected.expose()).as_ref(),
                    digest(&secret).as_ref(),
                )
            }
            IdpClientSecret::Argon2id(phc) => {
                self.passwords
                    .verify(Pool::Client, Some(phc.expose()), &secret)
                    .await
            }
        };
        if !good {
            // The reservation stays: a failure of this client from this source.
            self.event(event(IdpFailure::WrongClientSecret));
            return Err(Box::new(invalid_client(
                basic,
                "client authentication failed",
            )));
        }
        self.limiter.refund_client(reservation);
        Ok(client)
    }

    /// `grant_type=authorization_code`.
    fn code_grant(
        &self,
        call: &Call,
        params: &HashMap<String, String>,
        directory: &Directory,
        client: &IdpClient,
    ) -> Response<ProxyBody> {
        let bad = |what: &str| {
            error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{what} is required"),
            )
        };
        let Some(code) = params.get("code") else {
            return bad("code");
        };
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return bad("redirect_uri");
        };
        let Some(verifier) = params.get("code_verifier") else {
            return bad("code_verifier (PKCE)");
        };
        let grant = match self.store.take_code(code, &client.client_id, call.now) {
            Ok(grant) => grant,
            Err(Refusal::Replayed) => {
                tracing::warn!(client_id = ?client.client_id, "identity provider: authorization code replayed; its tokens are revoked");
                return invalid_grant("the code was already used");
            }
            Err(Refusal::Invalid) => {
                return invalid_grant(
                    "the code is invalid, expired or was issued to another client",
                );
            }
        };
        if grant.redirect_uri != *redirect_uri {
            return invalid_grant("redirect_uri differs from the authorization request's");
        }
        if !pkce_matches(verifier, &grant.challenge) {
            return invalid_grant("code_verifier does not match the code_challenge");
        }
        if self.store.sid_revoked(&grant.sign_in.sid) {
            return invalid_grant("the sign-in has ended");
        }
        let Some(user) = directory.user(&grant.sign_in.username) else {
            return invalid_grant("the user no longer exists");
        };
        let Some(family) = random_token(16) else {
            return super::internal("random source failed");
        };
        self.store.code_started(code, &family);
        let issued = Issue {
            client_id: &client.client_id,
            scope: &grant.scope,
            sign_in: &grant.sign_in,
            nonce: grant.nonce.as_deref(),
            family,
        };
        self.tokens(directory, user, &issued, call.now)
    }

    /// `grant_type=refresh_token`: rotates the refresh token.
    fn refresh_grant(
        &self,
        call: &Call,
        params: &HashMap<String, String>,
        directory: &Directory,
        client: &IdpClient,
    ) -> Response<ProxyBody> {
        let Some(token) = params.get("refresh_token") else {
            return error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is required",
            );
        };
        let grant: RefreshGrant = match self.store.use_refresh(token, &client.client_id, call.now) {
            Ok(grant) => grant,
            Err(Refusal::Replayed) => {
                return invalid_grant("the refresh token was already used; its family is revoked");
            }
            Err(Refusal::Invalid) => {
                return invalid_grant("the refresh token is invalid, expired or revoked");
            }
        };
        let scope = match params.get("scope") {
            None => grant.scope.clone(),
            Some(asked) => {
                let asked: Vec<String> = asked
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if !asked.iter().all(|s| grant.scope.contains(s)) {
                    // The presented token is spent either way: a client asking for more than
                    // it was granted is misbehaving, and gets nothing new.
                    return error_json(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "a refresh can only narrow the granted scopes",
                    );
                }
                asked
            }
        };
        let Some(user) = directory.user(&grant.sign_in.username) else {
            return invalid_grant("the user no longer exists");
        };
        let issued = Issue {
            client_id: &client.client_id,
            scope: &scope,
            sign_in: &grant.sign_in,
            nonce: None,
            family: grant.family.clone(),
        };
        self.tokens(directory, user, &issued, call.now)
    }

    /// A token response: access token (RFC 9068 JWT), ID token and a new refresh token.
    fn tokens(
        &self,
        directory: &Directory,
        user: &IdpUser,
        issued: &Issue<'_>,
        now: u64,
    ) -> Response<ProxyBody> {
        let lifetime = directory.token_lifetime.as_secs();
        let (Some(jti), Some(refresh_token)) = (random_token(16), random_token(32)) else {
            return super::internal("random source failed");
        };
        let access = AccessClaims {
            iss: self.issuer.clone(),
            sub: user.username.clone(),
            aud: self.url("/userinfo"),
            client_id: issued.client_id.to_owned(),
            scope: issued.scope.join(" "),
            iat: now,
            exp: now.saturating_add(lifetime),
            jti,
            sid: issued.sign_in.sid.clone(),
            auth_time: issued.sign_in.auth_time,
        };
        let access_token = match self.keys.sign(ACCESS_TOKEN_TYP, &access) {
            Ok(token) => token,
            Err(e) => return super::internal(&e.to_string()),
        };
        let at_hash = {
            let digest = ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.as_ref().get(..16).unwrap_or_default())
        };
        let mut id_claims = serde_json::Map::new();
        id_claims.insert("iss".into(), json!(self.issuer));
        id_claims.insert("sub".into(), json!(user.username));
        id_claims.insert("aud".into(), json!(issued.client_id));
        id_claims.insert("iat".into(), json!(now));
        id_claims.insert("exp".into(), json!(now.saturating_add(lifetime)));
        id_claims.insert("auth_time".into(), json!(issued.sign_in.auth_time));
        id_claims.insert("sid".into(), json!(issued.sign_in.sid));
        id_claims.insert("amr".into(), json!(issued.sign_in.amr));
        id_claims.insert("at_hash".into(), json!(at_hash));
        if let Some(nonce) = issued.nonce {
            id_claims.insert("nonce".into(), json!(nonce));
        }
        id_claims.extend(user_claims(user, issued.scope));
        let id_token = match self.keys.sign("JWT", &Value::Object(id_claims)) {
            Ok(token) => token,
            Err(e) => return super::internal(&e.to_string()),
        };
        self.store.issue_refresh(
            &refresh_token,
            RefreshGrant {
                family: issued.family.clone(),
                client_id: issued.client_id.to_owned(),
                scope: issued.scope.to_vec(),
                sign_in: issued.sign_in.clone(),
            },
        );
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": lifetime,
                "id_token": id_token,
                "refresh_token": refresh_token,
                "scope": issued.scope.join(" "),
            }),
        )
    }

    /// `/userinfo`: the claims of the access token's user and scopes.
    pub(super) fn userinfo(&self, call: &Call) -> Response<ProxyBody> {
        let params = call.params().unwrap_or_default();
        let mut authorizations = call.headers.get_all(header::AUTHORIZATION).iter();
        let header_token = authorizations
            .next()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        if authorizations.next().is_some() {
            return bearer_error(
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                "more than one Authorization header",
            );
        }
        let body_token = params
            .get("access_token")
            .filter(|_| call.form.is_some())
            .cloned();
        let token = match (header_token, body_token) {
            (Some(_), Some(_)) => {
                return bearer_error(
                    StatusCode::BAD_REQUEST,
                    Some("invalid_request"),
                    "send the token once",
                );
            }
            (Some(token), None) | (None, Some(token)) => token,
            (None, None) => {
                return bearer_error(StatusCode::UNAUTHORIZED, None, "a bearer token is required");
            }
        };
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[self.url("/userinfo")]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        let data = match self.keys.verify::<AccessClaims>(&token, &validation) {
            Ok(data) => data,
            Err(e) => {
                tracing::debug!(error = ?e.to_string(), "identity provider: userinfo token refused");
                return bearer_error(
                    StatusCode::UNAUTHORIZED,
                    Some("invalid_token"),
                    "the access token is invalid or expired",
                );
            }
        };
        if data.header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "not an access token",
            );
        }
        let directory = self.directory();
        let Some(user) = directory.user(&data.claims.sub) else {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "the user no longer exists",
            );
        };
        let scope: Vec<String> = data.claims.scope.split(' ').map(str::to_owned).collect();
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), json!(user.username));
        claims.extend(user_claims(user, &scope));
        json_response(StatusCode::OK, &Value::Object(claims))
    }

    /// `/end-session` (RP-initiated logout 1.0). With a valid `id_token_hint` for the signed-in
    /// user the sign-in ends at once; otherwise the user confirms first (a logout is a
    /// state-changing request another site could trigger). The browser only goes to a
    /// `post_logout_redirect_uri` registered for the client.
    pub(super) fn end_session(&self, call: &Call) -> Response<ProxyBody> {
        let params = match call.params() {
            Ok(params) => params,
            Err(name) => return refuse_page(&format!("The parameter `{name}` is repeated.")),
        };
        let directory = self.directory();
        let hint = match params.get("id_token_hint") {
            None => None,
            Some(token) => match self.verify_hint(token) {
                Some(hint) => Some(hint),
                None => return refuse_page("The logout request's id_token_hint is not valid."),
            },
        };
        let hinted_client = hint.as_ref().and_then(|h| match &h.aud {
            Audience::One(aud) => Some(aud.clone()),
            Audience::Many(list) => list.first().cloned(),
        });
        let client_id = match (params.get("client_id"), hinted_client) {
            (Some(given), Some(hinted)) if *given != hinted => {
                return refuse_page("client_id does not match the id_token_hint.");
            }
            (Some(given), _) => Some(given.clone()),
            (None, hinted) => hinted,
        };
        let client = client_id.as_deref().and_then(|id| directory.client(id));
        let post_logout = match params.get("post_logout_redirect_uri") {
            None => None,
            Some(uri) => {
                let registered = client.is_some_and(|c| {
                    c.post_logout_redirect_uris
                        .iter()
                        .any(|u| u.as_str() == uri)
                });
                if !registered {
                    tracing::info!(
                        uri = ?uri,
                        "identity provider: unregistered post_logout_redirect_uri refused"
                    );
                    return refuse_page(
                        "The post_logout_redirect_uri is not registered for this application.",
                    );
                }
                Some(uri.clone())
            }
        };
        let state = params
            .get("state")
            .filter(|s| s.len() <= MAX_STATE)
            .cloned();
        let current = self.current_sign_in(&call.headers, call.now);
        if let Some(hint) = &hint {
            // The hinted sign-in ends when it would have (its tokens may say later): a sign-in
            // already ended or over writes nothing.
            let until = hint
                .auth_time
                .unwrap_or(call.now)
                .saturating_add(directory.session_lifetime.as_secs());
            if let Some(sid) = &hint.sid {
                // The hinted sign-in's refresh tokens end even if this browser lost its cookie.
                let ended = self.store.revoke_sid(sid, until, call.now);
                self.notify_logout(ended, call.now);
            }
            if current.as_ref().is_none_or(|c| c.username == hint.sub) {
                return self.signed_out(
                    current.as_ref(),
                    post_logout.as_deref(),
                    state.as_deref(),
                    call.now,
                    StatusCode::FOUND,
                );
            }
        }
        let Some((browser, cookie)) = self.browser_binding(&call.headers) else {
            return super::internal("random source failed");
        };
        let intent = Interaction::Logout(LogoutIntent {
            browser,
            post_logout_redirect_uri: post_logout.clone(),
            state,
            created: call.now,
        });
        let Some(token) = self.seal_interaction(&intent) else {
            return super::internal("sealing failed");
        };
        let origin = post_logout.as_deref().and_then(origin_of);
        let mut response = pages::confirm_logout(
            &self.path("/end-session/confirm"),
            &token,
            origin.as_deref(),
        );
        if let Some(cookie) = cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// `/end-session/confirm`: the confirmation form, bound to the browser it was shown to.
    pub(super) fn confirm_logout(&self, call: &Call) -> Response<ProxyBody> {
        let params = call.params().unwrap_or_default();
        let intent = params
            .get("confirm")
            .and_then(|token| self.open_interaction(token));
        let Some(Interaction::Logout(intent)) = intent else {
            return refuse_page("This sign-out form is invalid. Start again from the application.");
        };
        if self.presented_binding(&call.headers).as_deref() != Some(intent.browser.as_str()) {
            return pages::message(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This sign-out form was not issued to this browser.",
            );
        }
        if call.now > intent.created.saturating_add(FORM_LIFETIME) {
            return refuse_page(
                "This sign-out form has expired. Start again from the application.",
            );
        }
        let current = self.current_sign_in(&call.headers, call.now);
        self.signed_out(
            current.as_ref(),
            intent.post_logout_redirect_uri.as_deref(),
            intent.state.as_deref(),
            call.now,
            StatusCode::SEE_OTHER,
        )
    }

    /// Ends `current` (cookie and refresh tokens) and goes to `post_logout` or the signed-out
    /// page.
    fn signed_out(
        &self,
        current: Option<&SignIn>,
        post_logout: Option<&str>,
        state: Option<&str>,
        now: u64,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let mut cookies = Vec::new();
        if let Some(sign_in) = current {
            let ended = self.store.revoke_sid(&sign_in.sid, sign_in.expires_at, now);
            tracing::info!(username = ?sign_in.username, "identity provider: signed out");
            // The clients that received tokens of this sign-in are told in the background.
            self.notify_logout(ended, now);
        }
        cookies.extend(self.set_cookie(&self.session_cookie, "", Some(0)));
        match post_logout.and_then(|uri| url::Url::parse(uri).ok()) {
            Some(mut url) => {
                if let Some(state) = state {
                    url.query_pairs_mut().append_pair("state", state);
                }
                redirect(status, url.as_str(), cookies)
            }
            None => {
                let mut response =
                    pages::message(StatusCode::OK, "Signed out", "You are signed out.");
                for cookie in cookies {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                response
            }
        }
    }

    /// A verified `id_token_hint`: signed by one of our keys, our issuer, an ID token (not an
    /// access token). Expired hints are accepted (RP-initiated logout 1.0 §2).
    fn verify_hint(&self, token: &str) -> Option<HintClaims> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iss", "sub", "aud"]);
        let data = self.keys.verify::<HintClaims>(token, &validation).ok()?;
        (data.header.typ.as_deref() == Some("JWT")).then_some(data.claims)
    }
}

/// What a token response is issued for.
struct Issue<'a> {
    client_id: &'a str,
    scope: &'a [String],
    sign_in: &'a SignIn,
    nonce: Option<&'a str>,
    family: String,
}

/// The claims a user releases for `scope`: `email` → email, email_verified; `profile` →
/// name, preferred_username; `groups` → groups.
fn user_claims(user: &IdpUser, scope: &[String]) -> serde_json::Map<String, Value> {
    let mut claims = serde_json::Map::new();
    let has = |s: &str| scope.iter().any(|x| x == s);
    if has("email") {
        claims.insert("email".into(), json!(user.email));
        claims.insert("email_verified".into(), json!(true));
    }
    if has("profile") {
        claims.insert("name".into(), json!(user.name));
        claims.insert("preferred_username".into(), json!(user.username));
    }
    if has("groups") {
        claims.insert("groups".into(), json!(user.groups));
    }
    claims
}

/// Whether `verifier` is a valid PKCE verifier (RFC 7636 §4.1) whose S256 transform is
/// `challenge`, compared in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return false;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    let computed = URL_SAFE_NO_PAD.encode(digest.as_ref());
    super::constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// `Basic base64(urlencode(id):urlencode(secret))`.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// The origin of an absolute URL, for a CSP form target.
pub(super) fn origin_of(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    Some(url.origin().ascii_serialization())
}

/// A JSON response that is never cached (token responses, RFC 6749 §5.1).
fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    pages::no_store(h);
    response
}

/// An OAuth error (RFC 6749 §5.2).
pub(super) fn error_json(
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<ProxyBody> {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn invalid_grant(description: &str) -> Response<ProxyBody> {
    error_json(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// 401 `invalid_client`, with a Basic challenge when the client tried Basic.
fn invalid_client(basic: bool, description: &str) -> Response<ProxyBody> {
    let mut response = error_json(StatusCode::UNAUTHORIZED, "invalid_client", description);
    let challenge = if basic {
        r#"Basic realm="sekisho""#
    } else {
        r#"Basic realm="sekisho", error="invalid_client""#
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// 429 with `Retry-After`: the client failed to authenticate too often from this source.
/// The error code stays `invalid_client` (RFC 6749 §5.2 has none for rate limits).
fn client_locked(retry_after: std::time::Duration) -> Response<ProxyBody> {
    let seconds = retry_after.as_secs().max(1);
    let mut response = error_json(
        StatusCode::TOO_MANY_REQUESTS,
        "invalid_client",
        &format!("too many failed client authentications; retry in {seconds} seconds"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A bearer-token error (RFC 6750 §3).
fn bearer_error(status: StatusCode, error: Option<&str>, description: &str) -> Response<ProxyBody> {
    let mut response = match error {
        Some(error) => error_json(status, error, description),
        None => json_response(status, &json!({"error_description": description})),
    };
    let challenge = match error {
        Some(error) => {
            format!(r#"Bearer realm="sekisho", error="{error}", error_description="{description}""#)
        }
        None => r#"Bearer realm="sekisho""#.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The page for an authorization or logout request that cannot be answered by redirect.
fn refuse_page(text: &str) -> Response<ProxyBody> {
    pages::message(StatusCode::BAD_REQUEST, "Request refused", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_follows_rfc_7636() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!pkce_matches(&format!("{verifier} "), challenge));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let value = HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode("my%3Aclient:s%2Bcret+x")
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            basic_credentials(&value),
            Some(("my:client".into(), "s+cret x".into()))
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!")),
            None
        );
    }
}
