//! The provider's HTML: sign-in, second factor, logout confirmation and messages. Plain HTML and
//! one inline style sheet (allowed by its hash), no JavaScript; every page forbids framing and
//! caching and sends no referrer.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderValue, Response, StatusCode, header};

use crate::error::{ProxyBody, full, html_escape};

/// The style sheet of every page.
const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f4f5;color:#18181b;margin:0}\
main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.5rem;box-shadow:0 1px 3px #0002}\
h1{font-size:1.4rem;margin-top:0}label{display:block;margin:1rem 0 .3rem;font-weight:600}\
input{width:100%;box-sizing:border-box;padding:.55rem;font-size:1rem;border:1px solid #a1a1aa;border-radius:.3rem}\
input:focus{outline:3px solid #2563eb;outline-offset:1px}\
button{margin-top:1.5rem;width:100%;padding:.6rem;font-size:1rem;background:#1d4ed8;color:#fff;border:0;border-radius:.3rem;cursor:pointer}\
button:focus{outline:3px solid #18181b;outline-offset:2px}\
.error{background:#fef2f2;color:#991b1b;border:1px solid #fca5a5;padding:.6rem;border-radius:.3rem}\
.muted{color:#52525b;font-size:.9rem}";

/// `'sha256-…'` of [`STYLE`], for the Content-Security-Policy.
static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
});

/// What a sign-in page needs to say.
#[derive(Debug)]
pub struct SignInPage<'a> {
    /// Form action (absolute path).
    pub action: &'a str,
    /// The sealed pending authorization.
    pub interaction: &'a str,
    /// The application asking (client id).
    pub client_id: &'a str,
    /// The username typed before, to fill in again.
    pub username: &'a str,
    /// A message after a failed attempt.
    pub error: Option<&'a str>,
    /// The origin the browser is sent to afterwards (allowed as a form target by the CSP).
    pub return_origin: &'a str,
}

/// The username and password form.
pub fn sign_in(page: &SignInPage<'_>, status: StatusCode) -> Response<ProxyBody> {
    let error = page.error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
            html_escape(e)
        )
    });
    let body = format!(
        "<h1>Sign in</h1>\
         <p class=\"muted\">to continue to <strong>{client}</strong></p>{error}\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"interaction\" value=\"{interaction}\">\
         <label for=\"username\">Username or email</label>\
         <input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus value=\"{username}\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button id=\"submit\" type=\"submit\">Sign in</button></form>",
        client = html_escape(page.client_id),
        action = html_escape(page.action),
        interaction = html_escape(page.interaction),
        username = html_escape(page.username),
    );
    document(status, "Sign in", &body, Some(page.return_origin))
}

/// The one-time code form (second step).
pub fn one_time_code(
    action: &str,
    interaction: &str,
    error: Option<&str>,
    return_origin: &str,
    status: StatusCode,
) -> Response<ProxyBody> {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
            html_escape(e)
        )
    });
    let body = format!(
        "<h1>Two-step verification</h1>\
         <p class=\"muted\">Enter the 6-digit code from your authenticator app.</p>{error}\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"interaction\" value=\"{interaction}\">\
         <label for=\"code\">Code</label>\
         <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" autocomplete=\"one-time-code\" required autofocus>\
         <button id=\"submit\" type=\"submit\">Verify</button></form>",
        action = html_escape(action),
        interaction = html_escape(interaction),
    );
    document(status, "Two-step verification", &body, Some(return_origin))
}

/// Asks before ending the sign-in when the request did not prove who asked for it.
pub fn confirm_logout(
    action: &str,
    token: &str,
    return_origin: Option<&str>,
) -> Response<ProxyBody> {
    let body = format!(
        "<h1>Sign out?</h1><p>Do you want to sign out of every application that uses this sign-in?</p>\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"confirm\" value=\"{token}\">\
         <button id=\"submit\" type=\"submit\">Sign out</button></form>",
        action = html_escape(action),
        token = html_escape(token),
    );
    document(StatusCode::OK, "Sign out", &body, return_origin)
}

/// A message page (errors, signed out).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let body = format!(
        "<h1>{}</h1><p id=\"message\">{}</p>",
        html_escape(title),
        html_escape(text)
    );
    document(status, title, &body, None)
}

/// 429 with `Retry-After`.
pub fn locked(retry_after: Duration) -> Response<ProxyBody> {
    let seconds = retry_after.as_secs().max(1);
    let mut response = message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!("Too many failed sign-in attempts. Wait {seconds} seconds, then try again."),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A whole page with the provider's headers. `form_target` is an origin forms may lead to
/// (through the redirect after a POST) besides this one.
fn document(
    status: StatusCode,
    title: &str,
    body: &str,
    form_target: Option<&str>,
) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        html_escape(title)
    );
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let form_action = match form_target {
        Some(origin) if is_origin(origin) => format!("'self' {origin}"),
        _ => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; style-src {}; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH
    );
    let h = response.headers_mut();
    // The CSP is built from a base64 hash and an origin checked by `is_origin`: always a valid
    // header value; should it not be, the strictest policy stands in.
    let csp = HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static(crate::error::PAGE_CSP));
    crate::error::html_headers(h, csp);
    no_store(h);
    response
}

/// `Cache-Control: no-store`, `Pragma: no-cache`, `X-Content-Type-Options: nosniff`.
pub fn no_store(h: &mut http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Whether `text` is `scheme://host[:port]` and nothing that could widen a CSP source list.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_forbid_framing_caching_and_scripts() {
        let response = sign_in(
            &SignInPage {
                action: "/idp/login",
                interaction: "abc",
                client_id: "<app>",
                username: "\"x",
                error: Some("Invalid"),
                return_origin: "http://127.0.0.1:8080",
            },
            StatusCode::OK,
        );
        let h = response.headers();
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(
            csp.contains("form-action 'self' http://127.0.0.1:8080"),
            "{csp}"
        );
        assert_eq!(
            h.get(header::X_FRAME_OPTIONS).and_then(|v| v.to_str().ok()),
            Some("DENY")
        );
        assert_eq!(
            h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        assert!(!is_origin("https://a.example.com 'unsafe-inline'"));
        assert!(is_origin("https://a.example.com:8443"));
    }
}
