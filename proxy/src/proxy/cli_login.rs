//! The command-line client's sign-in (`sekisho login`): RFC 8252's loopback redirect with PKCE
//! (RFC 7636), sekisho being the authorization server for its own client.
//!
//! 1. `GET /.sekisho/cli/login?redirect_uri=http://127.0.0.1:PORT/callback&code_challenge=…&
//!    code_challenge_method=S256&state=…` in the user's browser: the redirect URI must be a
//!    loopback IP literal on plain HTTP with the path `/callback` (anything else is a 400 page,
//!    never a redirect). Without a session the browser signs in first and comes back here; with
//!    one, sekisho issues a one-time code (60 s) bound to the challenge and the redirect URI and
//!    sends the browser to `redirect_uri?code=…&state=…`.
//! 2. `POST /.sekisho/cli/token` (form: `grant_type=authorization_code`, `code`,
//!    `code_verifier`, `redirect_uri`) from the client: the code is spent (used once), the
//!    verifier must hash to the challenge, and the answer is a new session of the same identity
//!    — its cookies, which the client sends with every tunnel, and which sekisho refreshes with
//!    `Set-Cookie` like a browser's. The session has no provider tokens of its own (a refresh
//!    token is never shared between sessions), so it lives for sekisho's session lifetimes.
//! 3. `POST /.sekisho/cli/logout` with the session's cookies and `X-Sekisho-Cli: 1` (a header a
//!    form on another site cannot send) ends the session.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt as _;

use super::Proxy;
use crate::error::{BoxError, ProxyBody, ProxyError, full};
use crate::facts::Facts;
use crate::gate::login::redirect;
use crate::oidc::Tokens;
use crate::seal::constant_time_eq;
use crate::session::unix_now;
use crate::target::Target;

/// The browser's step.
pub const CLI_LOGIN_PATH: &str = "/.sekisho/cli/login";
/// The client's code exchange.
pub const CLI_TOKEN_PATH: &str = "/.sekisho/cli/token";
/// The client's sign-out.
pub const CLI_LOGOUT_PATH: &str = "/.sekisho/cli/logout";
/// How long a code may wait for its exchange.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Codes waiting at once (an attacker can only make them with a signed-in browser, but still).
const MAX_CODES: usize = 1024;

/// A code waiting for its exchange.
#[derive(Debug)]
pub(crate) struct PendingCode {
    identity: crate::session::Identity,
    challenge: String,
    redirect_uri: String,
    expires_at: u64,
}

/// The codes waiting for their exchange.
#[derive(Debug, Default)]
pub(crate) struct PendingCodes(std::sync::Mutex<HashMap<String, PendingCode>>);

/// What the browser's step asks for, checked.
struct Authorization {
    redirect_uri: String,
    challenge: String,
    state: String,
}

impl Proxy {
    /// `GET /.sekisho/cli/login`.
    pub(super) async fn cli_login<B>(
        &self,
        request: &Request<B>,
        target: &Target,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let asked = authorization(request.uri().query().unwrap_or(""))?;
        let codec = self.gate.sessions().codec(target.scheme);
        let session = match self
            .gate
            .authenticate(request.headers(), codec, cookies, facts)
            .await?
        {
            Some(crate::gate::Authenticated::Session { session }) => session,
            Some(crate::gate::Authenticated::Bearer { .. }) => {
                return Err(ProxyError::BadRequest {
                    reason: "sign in with the browser, not a bearer token",
                });
            }
            None => {
                // Sign in first, then come back here with the same query.
                let back = match request.uri().query() {
                    Some(query) => format!("{CLI_LOGIN_PATH}?{query}"),
                    None => CLI_LOGIN_PATH.to_owned(),
                };
                let return_to =
                    format!("{}{back}", crate::redirect::origin_string(&target.origin()));
                return self.gate.start_login(target, &return_to).await;
            }
        };
        let mut code = [0u8; 32];
        self.gate
            .sessions()
            .sealer()
            .random(&mut code)
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
        let code = URL_SAFE_NO_PAD.encode(code);
        let now = unix_now();
        {
            let mut codes = self.cli_codes.0.lock().map_err(|_| ProxyError::Internal {
                detail: "code table poisoned".into(),
            })?;
            codes.retain(|_, pending| pending.expires_at > now);
            if codes.len() >= MAX_CODES {
                return Err(ProxyError::Unavailable {
                    detail: "too many command-line sign-ins waiting".into(),
                });
            }
            codes.insert(
                code.clone(),
                PendingCode {
                    identity: session.state.identity.clone(),
                    challenge: asked.challenge,
                    redirect_uri: asked.redirect_uri.clone(),
                    expires_at: now.saturating_add(CODE_LIFETIME.as_secs()),
                },
            );
        }
        let location = format!(
            "{}?code={}&state={}",
            asked.redirect_uri,
            code,
            url::form_urlencoded::byte_serialize(asked.state.as_bytes()).collect::<String>()
        );
        Ok(redirect(&location, Vec::new()))
    }

    /// `POST /.sekisho/cli/token`.
    pub(super) async fn cli_token<B>(
        &self,
        request: Request<B>,
        target: &Target,
        facts: &mut Facts,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if request.method() != Method::POST {
            return Err(ProxyError::MethodNotAllowed);
        }
        let body = http_body_util::Limited::new(request.into_body(), 8192)
            .collect()
            .await
            .map_err(|_| ProxyError::BadRequest {
                reason: "token request too large or unreadable",
            })?
            .to_bytes();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        if field("grant_type") != "authorization_code" {
            return Ok(token_error(
                "unsupported_grant_type",
                "grant_type must be authorization_code",
            ));
        }
        let pending = self
            .cli_codes
            .0
            .lock()
            .ok()
            .and_then(|mut codes| codes.remove(field("code")));
        let Some(pending) = pending else {
            self.gate.sessions().failure(facts.record.client_ip);
            return Ok(token_error(
                "invalid_grant",
                "unknown, used or expired code",
            ));
        };
        let verifier = field("code_verifier");
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        let valid = pending.expires_at > unix_now()
            && pending.redirect_uri == field("redirect_uri")
            && valid_verifier(verifier)
            && constant_time_eq(challenge.as_bytes(), pending.challenge.as_bytes());
        if !valid {
            self.gate.sessions().failure(facts.record.client_ip);
            return Ok(token_error(
                "invalid_grant",
                "the code expired, or the verifier or redirect_uri does not match",
            ));
        }
        let user = pending
            .identity
            .verified_email()
            .unwrap_or(&pending.identity.sub)
            .to_owned();
        let codec = self.gate.sessions().codec(target.scheme);
        let (state, set_cookies) = self.gate.sessions().start(
            Tokens {
                identity: pending.identity,
                id_token: None,
                refresh_token: None,
                expires_at: None,
            },
            codec,
            &facts.source(),
        )?;
        let pairs: Vec<String> = set_cookies
            .iter()
            .filter_map(|c| c.to_str().ok())
            .filter_map(|c| c.split(';').next())
            .map(|pair| pair.trim().to_owned())
            .filter(|pair| !pair.ends_with('='))
            .collect();
        let expires_at = state
            .login_at
            .saturating_add(self.config.session.absolute_lifetime.as_secs());
        let body = serde_json::json!({
            "cookies": pairs,
            "expires_at": expires_at,
            "user": user,
        });
        let mut response = Response::new(full(body.to_string()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    /// `POST /.sekisho/cli/logout`.
    pub(super) async fn cli_logout<B>(
        &self,
        request: Request<B>,
        target: &Target,
        facts: &Facts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if request.method() != Method::POST {
            return Err(ProxyError::MethodNotAllowed);
        }
        if request
            .headers()
            .get("x-sekisho-cli")
            .is_none_or(|v| v != "1")
        {
            return Err(ProxyError::BadRequest {
                reason: "the command-line sign-out needs X-Sekisho-Cli: 1",
            });
        }
        let sessions = self.gate.sessions();
        let codec = sessions.codec(target.scheme);
        let session = codec.read(sessions.sealer(), request.headers()).ok();
        let ended = match session.filter(|state| sessions.is_live(state)) {
            Some(state) => {
                sessions.end(&state, facts.source()).await?;
                true
            }
            None => false,
        };
        let body = serde_json::json!({ "ended": ended });
        let mut response = Response::new(full(body.to_string()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for cookie in codec.clear() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }
}

/// The browser step's query, checked: a loopback redirect URI (RFC 8252 §7.3: an IP literal,
/// plain HTTP, any port) with the path `/callback`, an S256 challenge, a state.
fn authorization(query: &str) -> Result<Authorization, ProxyError> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let bad = |reason: &'static str| ProxyError::BadRequest { reason };
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or(bad("redirect_uri is missing"))?;
    let url = url::Url::parse(redirect_uri).map_err(|_| bad("redirect_uri is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    if url.scheme() != "http"
        || !loopback
        || url.port().is_none()
        || url.path() != "/callback"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad(
            "redirect_uri must be http://127.0.0.1:PORT/callback (or [::1]): a loopback address",
        ));
    }
    if form.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err(bad("code_challenge_method must be S256"));
    }
    let challenge = form
        .get("code_challenge")
        .filter(|c| {
            c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or(bad(
            "code_challenge must be the base64url SHA-256 of the verifier",
        ))?;
    let state = form
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(bad("state is missing or malformed"))?;
    Ok(Authorization {
        redirect_uri: url.as_str().to_owned(),
        challenge: challenge.clone(),
        state: state.clone(),
    })
}

/// RFC 7636: 43 to 128 characters of `[A-Za-z0-9-._~]`.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn token_error(error: &str, description: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn only_loopback_callbacks_with_an_s256_challenge_are_accepted() {
        let ok = format!(
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A4711%2Fcallback&code_challenge={CHALLENGE}&code_challenge_method=S256&state=xyz"
        );
        let asked = authorization(&ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(asked.redirect_uri, "http://127.0.0.1:4711/callback");
        let v6 = ok.replace("127.0.0.1", "%5B%3A%3A1%5D");
        assert!(authorization(&v6).is_ok());
        for bad in [
            ok.replace("127.0.0.1", "localhost"),
            ok.replace("127.0.0.1", "evil.example"),
            ok.replace("http%3A", "https%3A"),
            ok.replace("%2Fcallback", "%2Fother"),
            ok.replace("%3A4711", ""),
            ok.replace("127.0.0.1", "attacker%40127.0.0.1"),
            ok.replace("S256", "plain"),
            ok.replace(CHALLENGE, "short"),
            ok.replace("&state=xyz", ""),
        ] {
            assert!(authorization(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verifiers_follow_rfc_7636() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_verifier(verifier));
        assert_eq!(
            URL_SAFE_NO_PAD.encode(ring::digest::digest(
                &ring::digest::SHA256,
                verifier.as_bytes()
            )),
            CHALLENGE
        );
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
