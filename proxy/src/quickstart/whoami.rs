//! The quickstart's demo upstream: a page showing what sekisho told it about the user — the
//! identity headers and the claims of the signed assertion, which it verifies as any upstream
//! should: against sekisho's JWKS, fetched over HTTP (and fetched again for an unknown key id).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::net::TcpListener;

use crate::error::html_escape;

/// Least time between two JWKS fetches.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// What the page verifies assertions against.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// sekisho's JWKS URL.
    pub jwks_url: String,
    /// Expected `iss` (sekisho's `signing.issuer`).
    pub issuer: String,
    /// Accepted `aud` values (the ids of the routes in front of this upstream).
    pub audiences: Vec<String>,
}

/// Serves the page on `listener` until the process ends.
pub async fn serve(listener: TcpListener, verifier: Verifier) {
    let state = Arc::new(State {
        verifier,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default(),
        keys: Mutex::new((HashMap::new(), None)),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.page(request.headers()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct State {
    verifier: Verifier,
    http: reqwest::Client,
    /// Keys by id, and when they were last fetched.
    keys: Mutex<(HashMap<String, DecodingKey>, Option<Instant>)>,
}

impl State {
    async fn page(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let user = get("x-sekisho-user");
        let assertion = get("x-sekisho-jwt-assertion");
        let (verdict, claims) = match self.verify(assertion).await {
            Ok(claims) => (
                "<p class=\"ok\" id=\"verified\">Signature verified against sekisho's JWKS.</p>"
                    .to_owned(),
                serde_json::to_string_pretty(&claims).unwrap_or_default(),
            ),
            Err(why) => (
                format!(
                    "<p class=\"bad\" id=\"unverified\">Assertion NOT verified: {}</p>",
                    html_escape(&why)
                ),
                String::new(),
            ),
        };
        let groups = get("x-sekisho-groups");
        let group_items: String = groups
            .split(',')
            .filter(|g| !g.is_empty())
            .map(|g| format!("<li>{}</li>", html_escape(g)))
            .collect();
        let rows: String = headers
            .iter()
            .map(|(name, value)| {
                format!(
                    "<tr><th>{}</th><td>{}</td></tr>",
                    html_escape(name.as_str()),
                    html_escape(&String::from_utf8_lossy(value.as_bytes()))
                )
            })
            .collect();
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>whoami</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}\
             th{{text-align:left;padding-right:1rem;vertical-align:top}}td{{word-break:break-all}}\
             .ok{{color:#166534}}.bad{{color:#991b1b}}pre{{background:#f4f4f5;padding:1rem}}</style></head>\
             <body><h1>Hello, {user}</h1>\
             <p>Email: <b id=\"email\">{email}</b></p>\
             <h2>Groups</h2><ul id=\"groups\">{group_items}</ul>\
             <h2>Signed assertion</h2>{verdict}<pre id=\"claims\">{claims}</pre>\
             <h2>Identity headers received</h2><table>{rows}</table>\
             <p><a href=\"/admin\">Admin page</a> (group <code>admins</code> only) &middot; \
             <a href=\"/.sekisho/logout\">Sign out</a></p></body></html>\n",
            user = html_escape(if user.is_empty() { "(nobody)" } else { user }),
            email = html_escape(get("x-sekisho-email")),
            claims = html_escape(&claims),
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::OK;
        if let Ok(v) = "text/html; charset=utf-8".parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        response
    }

    /// The assertion's claims when its signature, issuer, audience and lifetime check out.
    async fn verify(&self, token: &str) -> Result<serde_json::Value, String> {
        if token.is_empty() {
            return Err("no X-Sekisho-Jwt-Assertion header".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("the assertion has no kid")?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.fetch().await?;
                self.key(&kid)
                    .ok_or("no key in sekisho's JWKS has this kid")?
            }
        };
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.verifier.issuer]);
        validation.set_audience(&self.verifier.audiences);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.lock().ok()?.0.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<(), String> {
        {
            let Ok(mut keys) = self.keys.lock() else {
                return Err("key cache unavailable".into());
            };
            if keys.1.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
                return Err("JWKS fetched moments ago".into());
            }
            keys.1 = Some(Instant::now());
        }
        let set: JwkSet = self
            .http
            .get(&self.verifier.jwks_url)
            .send()
            .await
            .map_err(|e| format!("fetching the JWKS: {e}"))?
            .json()
            .await
            .map_err(|e| format!("reading the JWKS: {e}"))?;
        let mut fresh = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                fresh.insert(kid.clone(), key);
            }
        }
        if let Ok(mut keys) = self.keys.lock() {
            keys.0 = fresh;
        }
        Ok(())
    }
}
