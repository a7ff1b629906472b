//! `sekisho login PROXY` and `sekisho logout [PROXY]`: signing the command line in to a proxy
//! through the browser (RFC 8252 loopback redirect with PKCE, the proxy being the authorization
//! server of its own CLI) and out again.
//!
//! The phases of a login: PKCE verifier and state → loopback listener → browser at
//! `/.sekisho/cli/login` → callback on the loopback (state checked) → code exchanged at
//! `/.sekisho/cli/token` → credential stored → the browser told how it went.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use ring::rand::SecureRandom as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::credentials::{Credential, Store};
use super::{ProxyOrigin, choose_proxy, http_client, printable, tls_config};

/// The loopback callback's path.
const CALLBACK_PATH: &str = "/callback";

/// How many requests other than the callback (a favicon, a stray tab) the loopback listener
/// answers before it gives up.
const MAX_OTHER_REQUESTS: usize = 16;

/// The largest request head the loopback listener reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long one browser connection to the loopback listener may take to send its request.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest token endpoint answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// `sekisho login`'s arguments.
#[derive(Debug, Args)]
pub(in crate::cli) struct LoginArgs {
    /// The proxy, like https://proxy.example.com.
    #[arg(value_parser = ProxyOrigin::parse)]
    proxy: ProxyOrigin,
    /// PEM file of CA certificates to trust for the proxy, beside the public roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// How long to wait for the sign-in in the browser, like `5m` or `90s`.
    #[arg(long, default_value = "5m", value_parser = sekisho_config::duration)]
    timeout: Duration,
    /// Do not start a browser; only print the URL to open (in a browser on this machine).
    #[arg(long)]
    no_browser: bool,
}

/// `sekisho logout`'s arguments.
#[derive(Debug, Args)]
pub(in crate::cli) struct LogoutArgs {
    /// The proxy (default: the only one signed in to).
    #[arg(value_parser = ProxyOrigin::parse)]
    proxy: Option<ProxyOrigin>,
    /// PEM file of CA certificates to trust for the proxy, beside the public roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// Runs `sekisho login`.
pub(in crate::cli) fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let store = Store::from_env()?;
    // Fail before the browser opens when the file cannot be used.
    store.load()?;
    let client = http_client(tls_config(args.ca.as_deref())?)?;
    let runtime = crate::cli::runtime()?;
    let open_browser = !args.no_browser;
    let signed_in = runtime.block_on(sign_in(&args.proxy, &client, &store, args.timeout, |url| {
        announce(&args.proxy, url, open_browser)
    }));
    runtime.shutdown_background();
    let credential = signed_in?;
    eprintln!(
        "Signed in to {} as {}",
        args.proxy,
        printable(&credential.user)
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `sekisho logout`: asks the proxy to end the session, then removes the stored
/// credential whatever the proxy answered.
pub(in crate::cli) fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let store = Store::from_env()?;
    let origin = choose_proxy(args.proxy, &store.load()?, "name it")?;
    let credential = store
        .credential(origin.as_str())?
        .with_context(|| format!("not signed in to {origin}"))?;
    let client = http_client(tls_config(args.ca.as_deref())?)?;
    let url = origin.endpoint("/.sekisho/cli/logout")?;
    let runtime = crate::cli::runtime()?;
    let answer = runtime.block_on(async {
        client
            .post(url)
            .header(reqwest::header::COOKIE, credential.cookie_header())
            // A header no form on another site can send: the proxy's CSRF check.
            .header("x-sekisho-cli", "1")
            .send()
            .await
    });
    runtime.shutdown_background();
    match answer {
        Ok(response) if response.status().is_success() => {
            eprintln!("{origin} ended the session (HTTP {})", response.status());
        }
        Ok(response) => eprintln!(
            "{origin} answered the logout with HTTP {}; the session may outlive this logout",
            response.status()
        ),
        Err(error) => eprintln!(
            "could not tell {origin} to end the session ({}); it may outlive this logout",
            super::causes(&error)
        ),
    }
    store.update(|all| (all.remove(origin.as_str()).is_some(), ()))?;
    eprintln!(
        "Signed out of {origin}: removed the credential of {} from {}",
        printable(&credential.user),
        store.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Tells the user where to sign in, and opens the browser there unless told not to.
fn announce(origin: &ProxyOrigin, url: &Url, open_browser: bool) {
    if !open_browser {
        eprintln!("To sign in to {origin}, open this URL in a browser on this machine:\n  {url}");
    } else if start_browser(url) {
        eprintln!("Opening {origin} in your browser; if it does not open, visit:\n  {url}");
    } else {
        eprintln!("Could not start a browser; to sign in to {origin}, open this URL:\n  {url}");
    }
}

/// The sign-in flow, from the PKCE verifier to the stored credential; `open` is told the URL
/// the user must visit. The browser's tab is answered once the outcome is known.
async fn sign_in(
    origin: &ProxyOrigin,
    client: &reqwest::Client,
    store: &Store,
    timeout: Duration,
    open: impl FnOnce(&Url),
) -> anyhow::Result<Credential> {
    let pkce = Pkce::generate()?;
    let state = random_token(16)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("listening on 127.0.0.1 for the browser's answer")?;
    let port = listener
        .local_addr()
        .context("the loopback listener")?
        .port();
    let redirect = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
    open(&authorize_url(origin, &redirect, &pkce.challenge, &state)?);
    let callback = tokio::time::timeout(timeout, wait_for_callback(listener, state))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no sign-in within {timeout:?}: run `sekisho login {origin}` again (or pass a \
                 longer --timeout)"
            )
        })??;
    let signed_in = exchange(client, origin, &callback.code, &pkce.verifier, &redirect)
        .await
        .and_then(|credential| {
            store.update(|all| {
                all.insert(origin.as_str(), credential.clone());
                (true, ())
            })?;
            Ok(credential)
        });
    let page = match &signed_in {
        Ok(credential) => Page {
            status: 200,
            title: "Signed in to sekisho",
            text: format!(
                "Signed in to {origin} as {}. You can close this window.",
                credential.user
            ),
        },
        Err(error) => Page {
            status: 400,
            title: "Sign-in failed",
            text: format!("The command line could not sign in: {error:#}"),
        },
    };
    callback.finish(page).await;
    signed_in
}

/// A PKCE pair (RFC 7636): the secret verifier and its S256 challenge.
#[derive(Debug)]
struct Pkce {
    /// 43 characters of base64url from 32 random bytes.
    verifier: String,
    /// `BASE64URL-NOPAD(SHA-256(verifier))`.
    challenge: String,
}

impl Pkce {
    /// A new pair from the system's CSPRNG.
    fn generate() -> anyhow::Result<Self> {
        Ok(Self::from_verifier(random_token(32)?))
    }

    /// The pair of `verifier`.
    fn from_verifier(verifier: String) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
        let challenge = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Self {
            verifier,
            challenge,
        }
    }
}

/// `bytes` random bytes from the system's CSPRNG, in base64url without padding.
fn random_token(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0_u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

/// The proxy's CLI sign-in page, for this loopback redirect, challenge and state.
fn authorize_url(
    origin: &ProxyOrigin,
    redirect: &str,
    challenge: &str,
    state: &str,
) -> anyhow::Result<Url> {
    let mut url = origin.endpoint("/.sekisho/cli/login")?;
    url.query_pairs_mut()
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state);
    Ok(url)
}

/// Why the browser's answer on the loopback does not sign in.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum CallbackError {
    /// The `state` is missing or not this login's.
    #[error(
        "the sign-in answer is not for this login (its state does not match): it came from an \
         old browser tab or another program; run `sekisho login` again"
    )]
    StateMismatch,
    /// The proxy redirected with `error`.
    #[error("the proxy refused the sign-in: {error}{}", description_suffix(.description))]
    Refused {
        /// The error code.
        error: String,
        /// The error's description, if any.
        description: Option<String>,
    },
    /// The answer has neither a code nor an error.
    #[error("the sign-in answer carries no code")]
    MissingCode,
}

/// `: description` when there is one.
fn description_suffix(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|text| format!(": {text}"))
        .unwrap_or_default()
}

/// The code in a callback's query, once its `state` is checked against `expected`. Parameters
/// after the first of a name are ignored.
fn parse_callback(query: &str, expected: &str) -> Result<String, CallbackError> {
    let first = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    if first("state").as_deref() != Some(expected) {
        return Err(CallbackError::StateMismatch);
    }
    if let Some(error) = first("error") {
        return Err(CallbackError::Refused {
            error: printable(&error),
            description: first("error_description").map(|text| printable(&text)),
        });
    }
    match first("code") {
        Some(code) if !code.is_empty() => Ok(code),
        _ => Err(CallbackError::MissingCode),
    }
}

/// What one browser connection to the loopback listener brought.
#[derive(Debug)]
enum Event {
    /// A request to the callback path, good or not.
    Callback(Result<Callback, CallbackError>),
    /// Any other request (answered 404), or none that parsed.
    Other,
}

/// A good callback: its code, and the browser's connection waiting for the page to show.
#[derive(Debug)]
struct Callback {
    /// The authorization code.
    code: String,
    /// Where the page goes.
    reply: oneshot::Sender<Page>,
    /// Hears when the page is written.
    written: oneshot::Receiver<()>,
}

impl Callback {
    /// Shows `page` in the browser's tab, waiting (briefly) until it is written.
    async fn finish(self, page: Page) {
        if self.reply.send(page).is_ok() {
            // The browser may be gone; the outcome is reported on the terminal anyway.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.written).await;
        }
    }
}

/// Accepts the browser's connections until one brings the callback; each connection is served
/// on its own task (browsers open speculative connections that never send a request).
async fn wait_for_callback(listener: TcpListener, state: String) -> anyhow::Result<Callback> {
    let state: Arc<str> = state.into();
    let (events, mut received) = mpsc::channel(8);
    let mut others = 0_usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accepting the browser's connection")?;
                tokio::spawn(serve_browser(stream, Arc::clone(&state), events.clone()));
            }
            Some(event) = received.recv() => match event {
                Event::Callback(callback) => return Ok(callback?),
                Event::Other => {
                    others = others.saturating_add(1);
                    anyhow::ensure!(
                        others < MAX_OTHER_REQUESTS,
                        "{others} requests to the loopback listener, none of them the sign-in \
                         answer: giving up"
                    );
                }
            },
        }
    }
}

/// Serves one browser connection: reads its request, answers it, and reports it as an event.
async fn serve_browser(mut stream: TcpStream, state: Arc<str>, events: mpsc::Sender<Event>) {
    let head = tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_request_head(&mut stream)).await;
    let Ok(Some(head)) = head else {
        // No request came, or not one that parses: not worth an answer.
        let _ = events.send(Event::Other).await;
        return;
    };
    let target = match request_target(&head) {
        Some(target) => target,
        None => {
            let page = Page {
                status: 400,
                title: "Bad request",
                text: "Not a request this page answers.".to_owned(),
            };
            page.write(&mut stream).await;
            let _ = events.send(Event::Other).await;
            return;
        }
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        let page = Page {
            status: 404,
            title: "Not found",
            text: "This is the sekisho command line's sign-in listener.".to_owned(),
        };
        page.write(&mut stream).await;
        let _ = events.send(Event::Other).await;
        return;
    }
    match parse_callback(query, &state) {
        Err(error) => {
            let page = Page {
                status: 400,
                title: "Sign-in failed",
                text: error.to_string(),
            };
            page.write(&mut stream).await;
            let _ = events.send(Event::Callback(Err(error))).await;
        }
        Ok(code) => {
            let (reply, page) = oneshot::channel();
            let (written, done) = oneshot::channel();
            let callback = Callback {
                code,
                reply,
                written: done,
            };
            if events.send(Event::Callback(Ok(callback))).await.is_ok()
                && let Ok(page) = page.await
            {
                page.write(&mut stream).await;
                let _ = written.send(());
            }
        }
    }
}

/// Reads a request head (up to the blank line); `None` when the connection ends first or the
/// head is too large.
async fn read_request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(chunk.get(..n)?);
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            return Some(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return None;
        }
    }
}

/// The target of a `GET` request head (`/callback?code=…`), if it is one.
fn request_target(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    (method == "GET"
        && target.starts_with('/')
        && version.starts_with("HTTP/1.")
        && words.next().is_none())
    .then_some(target)
}

/// A small HTML page for the browser's tab.
#[derive(Debug)]
struct Page {
    /// The HTTP status.
    status: u16,
    /// The heading.
    title: &'static str,
    /// The text (escaped when written).
    text: String,
}

impl Page {
    /// The whole HTTP response.
    fn response(&self) -> String {
        let reason = match self.status {
            200 => "OK",
            404 => "Not Found",
            _ => "Bad Request",
        };
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{text}</p>\
             </body></html>\n",
            title = html_escape(self.title),
            text = html_escape(&self.text),
        );
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\
             Referrer-Policy: no-referrer\r\n\r\n{body}",
            self.status,
            body.len()
        )
    }

    /// Writes the response; a browser that went away is not an error worth reporting.
    async fn write(&self, stream: &mut TcpStream) {
        let _ = stream.write_all(self.response().as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// `text` safe inside HTML.
fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Exchanges the code for a session at the proxy's token endpoint.
async fn exchange(
    client: &reqwest::Client,
    origin: &ProxyOrigin,
    code: &str,
    verifier: &str,
    redirect: &str,
) -> anyhow::Result<Credential> {
    let url = origin.endpoint("/.sekisho/cli/token")?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("code_verifier", verifier)
        .append_pair("redirect_uri", redirect)
        .finish();
    let mut response = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the proxy {origin}: {}", super::causes(&e)))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("reading {origin}'s token answer: {}", super::causes(&e)))?
    {
        body.extend_from_slice(&chunk);
        anyhow::ensure!(
            body.len() <= MAX_TOKEN_ANSWER,
            "{origin}'s token answer is larger than {MAX_TOKEN_ANSWER} bytes"
        );
    }
    token_answer(origin, status, &body)
}

/// The token endpoint's answer: the credential (200), or why not.
fn token_answer(origin: &ProxyOrigin, status: u16, body: &[u8]) -> anyhow::Result<Credential> {
    /// The refusal's JSON.
    #[derive(serde::Deserialize)]
    struct Refusal {
        /// The error code.
        error: String,
        /// Its description.
        error_description: Option<String>,
    }
    if status == 200 {
        let credential: Credential = serde_json::from_slice(body)
            .with_context(|| format!("{origin}'s token answer is not a sekisho session"))?;
        anyhow::ensure!(
            !credential.cookies.is_empty(),
            "{origin}'s token answer holds no cookie"
        );
        return Ok(credential);
    }
    match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) => Err(anyhow::anyhow!(
            "{origin} refused the sign-in code: {}{}",
            printable(&refusal.error),
            description_suffix(&refusal.error_description.map(|text| printable(&text)))
        )),
        Err(_) => Err(anyhow::anyhow!(
            "{origin}'s token endpoint answered HTTP {status}: {}",
            printable(String::from_utf8_lossy(body).lines().next().unwrap_or(""))
        )),
    }
}

/// Starts the user's browser at `url`: each command of `$BROWSER` (`:`-separated, `%s` for the
/// URL, else the URL last) in turn, else `xdg-open`. Says whether one started.
fn start_browser(url: &Url) -> bool {
    let commands = std::env::var("BROWSER")
        .ok()
        .filter(|list| !list.trim().is_empty())
        .unwrap_or_else(|| "xdg-open".to_owned());
    for command in commands.split(':') {
        let mut words = command.split_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let mut arguments: Vec<String> =
            words.map(|word| word.replace("%s", url.as_str())).collect();
        if !command.contains("%s") {
            arguments.push(url.to_string());
        }
        let started = tokio::process::Command::new(program)
            .args(&arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = started {
            // Reaped in the background; a browser that stays open is not waited for.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::credentials::tests::temporary_store;
    use super::*;

    #[test]
    fn pkce_follows_rfc_7636_appendix_b() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned());
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let fresh = Pkce::generate().unwrap();
        assert_eq!(fresh.verifier.len(), 43);
        assert!(
            fresh
                .verifier
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        );
        assert_ne!(fresh.verifier, Pkce::generate().unwrap().verifier);
    }

    #[test]
    fn the_authorize_url_carries_the_redirect_challenge_and_state() {
        let origin = ProxyOrigin::parse("https://proxy.example.com").unwrap();
        let url = authorize_url(&origin, "http://127.0.0.1:4242/callback", "ch", "st").unwrap();
        assert_eq!(
            url.as_str(),
            "https://proxy.example.com/.sekisho/cli/login?redirect_uri=http%3A%2F%2F127.0.0.1%3A4242%2Fcallback&code_challenge=ch&code_challenge_method=S256&state=st"
        );
    }

    #[test]
    fn callbacks_are_checked() {
        assert_eq!(
            parse_callback("code=abc&state=s1", "s1"),
            Ok("abc".to_owned())
        );
        assert_eq!(
            parse_callback("code=abc&state=s2", "s1"),
            Err(CallbackError::StateMismatch)
        );
        assert_eq!(
            parse_callback("code=abc", "s1"),
            Err(CallbackError::StateMismatch)
        );
        // The state is checked before anything else is believed.
        assert_eq!(
            parse_callback("error=access_denied&state=other", "s1"),
            Err(CallbackError::StateMismatch)
        );
        let refused = parse_callback(
            "error=access_denied&error_description=not+in+group%0Aadmins&state=s1",
            "s1",
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the proxy refused the sign-in: access_denied: not in group admins"
        );
        assert_eq!(
            parse_callback("error=x&state=s1", "s1")
                .unwrap_err()
                .to_string(),
            "the proxy refused the sign-in: x"
        );
        assert_eq!(
            parse_callback("state=s1", "s1"),
            Err(CallbackError::MissingCode)
        );
        assert_eq!(
            parse_callback("code=&state=s1", "s1"),
            Err(CallbackError::MissingCode)
        );
    }

    #[test]
    fn request_targets_are_get_only() {
        assert_eq!(
            request_target(b"GET /callback?code=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/callback?code=1")
        );
        assert_eq!(request_target(b"POST /callback HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"GET http://x/ HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"GET / HTTP/1.1 extra\r\n\r\n"), None);
    }

    #[test]
    fn pages_are_escaped() {
        let page = Page {
            status: 400,
            title: "Sign-in failed",
            text: "<script>alert('x')</script> & more".to_owned(),
        };
        let response = page.response();
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(response.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
    }

    #[test]
    fn token_answers_become_credentials_or_errors() {
        let origin = ProxyOrigin::parse("https://proxy.example.com").unwrap();
        let credential = token_answer(
            &origin,
            200,
            br#"{"cookies": ["s=1", "t=2"], "expires_at": 1900000000, "user": "alice@example.com"}"#,
        )
        .unwrap();
        assert_eq!(credential.cookie_header(), "s=1; t=2");
        assert_eq!(credential.user, "alice@example.com");
        let error = token_answer(
            &origin,
            400,
            br#"{"error": "invalid_grant", "error_description": "the code was used"}"#,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://proxy.example.com refused the sign-in code: invalid_grant: the code was used"
        );
        let error = token_answer(&origin, 502, b"bad gateway\nmore").unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://proxy.example.com's token endpoint answered HTTP 502: bad gateway"
        );
        assert!(
            token_answer(
                &origin,
                200,
                br#"{"cookies": [], "expires_at": 1, "user": "u"}"#
            )
            .is_err()
        );
        assert!(
            token_answer(
                &origin,
                200,
                br#"{"cookies": ["a\r\nb"], "expires_at": 1, "user": "u"}"#
            )
            .is_err()
        );
    }

    /// A fake proxy's token endpoint: checks the exchange against the challenge the login page
    /// received, and answers a session.
    async fn fake_token_endpoint(listener: TcpListener, challenge: oneshot::Receiver<String>) {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut chunk = [0_u8; 4096];
        let body = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    assert!(
                        head.starts_with("POST /.sekisho/cli/token HTTP/1.1"),
                        "{head}"
                    );
                    break body.to_owned();
                }
            }
        };
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], "the-code");
        assert!(form["redirect_uri"].starts_with("http://127.0.0.1:"));
        let expected = challenge.await.unwrap();
        assert_eq!(
            Pkce::from_verifier(form["code_verifier"].clone()).challenge,
            expected
        );
        let json = r#"{"cookies": ["sekisho_session=abc"], "expires_at": 1900000000, "user": "alice@example.com"}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_login_through_the_loopback_stores_the_session() {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin =
            ProxyOrigin::parse(&format!("http://{}", proxy.local_addr().unwrap())).unwrap();
        let (challenge_tx, challenge_rx) = oneshot::channel();
        let endpoint = tokio::spawn(fake_token_endpoint(proxy, challenge_rx));
        let store = temporary_store("login");
        let client = http_client(tls_config(None).unwrap()).unwrap();
        let (page_tx, page_rx) = oneshot::channel();
        // The "browser": a stray request, then the proxy's redirect to the callback.
        let browser = |url: &Url| {
            assert_eq!(url.path(), "/.sekisho/cli/login");
            let query: std::collections::HashMap<String, String> =
                url.query_pairs().into_owned().collect();
            assert_eq!(query["code_challenge_method"], "S256");
            challenge_tx.send(query["code_challenge"].clone()).unwrap();
            let redirect = Url::parse(&query["redirect_uri"]).unwrap();
            let state = query["state"].clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let stray = redirect.join("/favicon.ico").unwrap();
                assert_eq!(http.get(stray).send().await.unwrap().status(), 404);
                let mut callback = redirect.clone();
                callback
                    .query_pairs_mut()
                    .append_pair("code", "the-code")
                    .append_pair("state", &state);
                let page = http.get(callback).send().await.unwrap();
                let _ = page_tx.send((page.status(), page.text().await.unwrap()));
            });
        };
        let credential = sign_in(&origin, &client, &store, Duration::from_secs(20), browser)
            .await
            .unwrap();
        assert_eq!(credential.cookie_header(), "sekisho_session=abc");
        let (status, page) = page_rx.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            page.contains("as alice@example.com. You can close this window."),
            "{page}"
        );
        let stored = store.credential(origin.as_str()).unwrap().unwrap();
        assert_eq!(stored, credential);
        endpoint.await.unwrap();
        std::fs::remove_dir_all(store.path().parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_callback_with_another_state_fails_the_login() {
        let store = temporary_store("login-state");
        let origin = ProxyOrigin::parse("http://127.0.0.1:9").unwrap();
        let client = http_client(tls_config(None).unwrap()).unwrap();
        let (page_tx, page_rx) = oneshot::channel();
        let browser = |url: &Url| {
            let query: std::collections::HashMap<String, String> =
                url.query_pairs().into_owned().collect();
            let mut callback = Url::parse(&query["redirect_uri"]).unwrap();
            callback
                .query_pairs_mut()
                .append_pair("code", "c")
                .append_pair("state", "forged");
            tokio::spawn(async move {
                let page = reqwest::get(callback).await.unwrap();
                let _ = page_tx.send(page.status());
            });
        };
        let error = sign_in(&origin, &client, &store, Duration::from_secs(20), browser)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("state does not match"),
            "{error}"
        );
        assert_eq!(page_rx.await.unwrap(), 400);
        assert!(store.load().unwrap().origins().next().is_none());
    }

    #[tokio::test]
    async fn a_login_nobody_answers_times_out() {
        let store = temporary_store("login-timeout");
        let origin = ProxyOrigin::parse("http://127.0.0.1:9").unwrap();
        let client = http_client(tls_config(None).unwrap()).unwrap();
        let error = sign_in(&origin, &client, &store, Duration::from_millis(200), |_| {})
            .await
            .unwrap_err();
        assert!(
            error.to_string().starts_with("no sign-in within 200ms"),
            "{error}"
        );
    }
}
