//! sekisho with its built-in OpenID provider: a configuration with three users (alice, bob,
//! and carol with a TOTP second factor), sekisho as one client and two test relying parties,
//! and helpers that speak to the provider like a browser or a relying party would.
//!
//! The issuer URL holds the port, and sekisho must know it before it starts (it discovers its
//! own provider over HTTP). So the port is reserved by binding `127.0.0.1:0` and released just
//! before sekisho binds it; should another process take it in between, sekisho fails to bind
//! and the start is retried on a new port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::process::Command;

use crate::{Agent, Process, echo, location, no_redirect_client, sekisho_binary};

/// alice's password (groups eng, admins).
pub const ALICE_PASSWORD: &str = "alice-correct-horse";
/// bob's password (group sales).
pub const BOB_PASSWORD: &str = "bob-battery-staple";
/// carol's password (group eng; TOTP).
pub const CAROL_PASSWORD: &str = "carol-tr0ub4dor";
/// carol's TOTP secret (base32 of `12345678901234567890`, RFC 6238's test key).
pub const CAROL_TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// The test relying party (not sekisho): client id.
pub const RP_ID: &str = "rp-test";
/// Its secret.
pub const RP_SECRET: &str = "rp-test-secret-0123456789";
/// Its redirect URI (nothing listens there: tests read the redirect).
pub const RP_REDIRECT: &str = "http://127.0.0.1:9/callback";
/// Its post-logout redirect URI.
pub const RP_LOGOUT: &str = "http://127.0.0.1:9/bye";
/// A second relying party whose secret is stored as an Argon2id hash.
pub const HASHED_RP_ID: &str = "rp-hashed";
/// Its secret.
pub const HASHED_RP_SECRET: &str = "rp-hashed-secret-9876543210";

/// Settings of one instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// `identity_provider.token_lifetime`.
    pub token_lifetime: String,
    /// `identity_provider.login_limits` as flow YAML.
    pub login_limits: String,
    /// `server.trusted_proxies` (to let tests choose the source address with X-Forwarded-For).
    pub trusted_proxies: Vec<String>,
    /// More YAML lines for the `sekisho` client (indented by six spaces; `{origin}` is
    /// replaced by the proxy's origin), e.g. a `backchannel_logout_uri`.
    pub sekisho_client_yaml: String,
    /// More YAML lines for the test relying party's client, like `sekisho_client_yaml`.
    pub rp_client_yaml: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token_lifetime: "10m".into(),
            login_limits: "{}".into(),
            trusted_proxies: Vec::new(),
            sekisho_client_yaml: String::new(),
            rp_client_yaml: String::new(),
        }
    }
}

/// A running sekisho whose `oidc.issuer` is its own built-in provider, with an echo upstream.
#[derive(Debug)]
pub struct Stack {
    /// The proxy's origin, `http://127.0.0.1:PORT`.
    pub origin: String,
    /// The issuer, `{origin}/idp`.
    pub issuer: String,
    /// The configuration file.
    pub config_path: PathBuf,
    /// The echo upstream.
    pub echo: echo::Echo,
    process: Process,
    dir: tempfile::TempDir,
    port: u16,
}

impl Stack {
    /// Writes the configuration and starts sekisho.
    pub async fn start(options: Options) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let echo = echo::Echo::start().await;
        let [alice, bob, carol, hashed_rp] = hashes();
        std::fs::write(dir.path().join("alice.hash"), alice).expect("write hash");
        std::fs::write(dir.path().join("bob.hash"), bob).expect("write hash");
        std::fs::write(dir.path().join("carol.hash"), carol).expect("write hash");
        std::fs::write(dir.path().join("rp.hash"), hashed_rp).expect("write hash");
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("random");
        std::fs::write(
            dir.path().join("cookie.key"),
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .expect("write key");
        std::fs::write(
            dir.path().join("signing.pem"),
            sekisho::assertion::generate_pem().expect("keygen"),
        )
        .expect("write pem");
        std::fs::write(
            dir.path().join("client-secret"),
            URL_SAFE_NO_PAD.encode(key),
        )
        .expect("write secret");
        let config_path = dir.path().join("sekisho.yaml");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = reserve_port();
            std::fs::write(&config_path, config(port, &options, echo.addr)).expect("write config");
            match spawn(dir.path()).await {
                Ok(process) => {
                    let origin = format!("http://127.0.0.1:{port}");
                    let stack = Stack {
                        issuer: format!("{origin}/idp"),
                        origin,
                        config_path,
                        echo,
                        process,
                        dir,
                        port,
                    };
                    stack.wait_discovered().await;
                    return stack;
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "sekisho did not start in five tries:\n{}",
            failures.join("\n----\n")
        );
    }

    /// Waits until the proxy has discovered its provider (it does so over HTTP, as soon as
    /// its listener accepts).
    async fn wait_discovered(&self) {
        crate::eventually("sekisho to discover its built-in provider", || {
            let discovered = self.process.logs().contains("provider discovered");
            async move { discovered }
        })
        .await;
    }

    /// Stops sekisho and starts it again on the same port, with the same state directory.
    pub async fn restart(&mut self) {
        self.process.stop().await;
        let mut last = String::new();
        for _ in 0..50 {
            match spawn(self.dir.path()).await {
                Ok(process) => {
                    self.process = process;
                    self.wait_discovered().await;
                    return;
                }
                Err(failure) => last = failure,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("sekisho did not restart on port {}: {last}", self.port);
    }

    /// Sends SIGHUP (reload).
    pub fn reload(&self) {
        let pid = self.process.pid().expect("sekisho runs");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    /// sekisho's log so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The audit log directory (`{state_dir}/audit`).
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("state").join("audit")
    }

    /// The provider's state directory.
    pub fn idp_state(&self) -> PathBuf {
        self.dir.path().join("state/idp")
    }
}

/// Starts `sekisho run` in `dir`.
async fn spawn(dir: &Path) -> Result<Process, String> {
    let mut command = Command::new(sekisho_binary());
    command
        .arg("run")
        .arg("-c")
        .arg(dir.join("sekisho.yaml"))
        .env("SEKISHO_LOG", "sekisho=debug,info");
    let log = dir.join(format!(
        "sekisho-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    Process::try_spawn("sekisho", command, log)
        .await
        .map(|(process, _)| process)
}

/// A port that was free a moment ago.
fn reserve_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Argon2id hashes of the three passwords and of the hashed client's secret, made once per
/// test process.
fn hashes() -> [String; 4] {
    static HASHES: OnceLock<[String; 4]> = OnceLock::new();
    HASHES
        .get_or_init(|| {
            [
                ALICE_PASSWORD,
                BOB_PASSWORD,
                CAROL_PASSWORD,
                HASHED_RP_SECRET,
            ]
            .map(|p| sekisho::idp::hash_password(p).expect("hashing"))
        })
        .clone()
}

fn config(port: u16, options: &Options, echo: SocketAddr) -> String {
    let origin = format!("http://127.0.0.1:{port}");
    let trusted = if options.trusted_proxies.is_empty() {
        String::new()
    } else {
        format!(
            "  trusted_proxies: [{}]\n",
            options.trusted_proxies.join(", ")
        )
    };
    format!(
        "state_dir: state
server:
  http_listen: 127.0.0.1:{port}
{trusted}identity_provider:
  issuer: {origin}/idp
  token_lifetime: {token_lifetime}
  login_limits: {limits}
  users:
    - username: alice
      email: alice@example.com
      name: Alice Admin
      groups: [eng, admins]
      password_hash: {{file: alice.hash}}
    - username: bob
      email: bob@example.com
      name: Bob Sales
      groups: [sales]
      password_hash: {{file: bob.hash}}
    - username: carol
      email: carol@example.com
      groups: [eng]
      password_hash: {{file: carol.hash}}
      totp_secret: {CAROL_TOTP}
  clients:
    - client_id: sekisho
      client_secret: {{file: client-secret}}
      redirect_uris: [{origin}/.sekisho/callback]
      post_logout_redirect_uris: [{origin}/.sekisho/signed-out]
{sekisho_client}    - client_id: {RP_ID}
      client_secret: {RP_SECRET}
      redirect_uris: [{RP_REDIRECT}]
      post_logout_redirect_uris: [{RP_LOGOUT}]
{rp_client}    - client_id: {HASHED_RP_ID}
      client_secret_hash: {{file: rp.hash}}
      redirect_uris: [{RP_REDIRECT}]
oidc:
  issuer: {origin}/idp
  client_id: sekisho
  client_secret: {{file: client-secret}}
  scopes: [openid, email, profile, groups]
session:
  keys: [{{file: cookie.key}}]
signing:
  key: {{file: signing.pem}}
routes:
  - id: app
    from: http://127.0.0.1
    to: http://{echo}
",
        token_lifetime = options.token_lifetime,
        limits = options.login_limits,
        sekisho_client = options.sekisho_client_yaml.replace("{origin}", &origin),
        rp_client = options.rp_client_yaml.replace("{origin}", &origin),
    )
}

/// PKCE: a fresh verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("random");
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
    (verifier, challenge)
}

/// An authorization URL for the test relying party.
pub fn authorize_url(issuer: &str, extra: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{issuer}/authorize")).expect("issuer URL");
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in extra {
            query.append_pair(name, value);
        }
    }
    url.to_string()
}

/// The standard parameters of a code-flow request by the test relying party with `challenge`.
pub fn code_request<'a>(challenge: &'a str, state: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", RP_ID),
        ("redirect_uri", RP_REDIRECT),
        ("scope", "openid email profile groups"),
        ("state", state),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// The sign-in form of a page: its action (absolute URL against `base`) and hidden
/// `interaction` value.
pub fn form(html: &str, base: &str) -> (String, String) {
    let action = attribute_after(html, "<form", "action").expect("form action");
    let interaction = html
        .split("name=\"interaction\"")
        .nth(1)
        .and_then(|rest| attribute_after(rest, "", "value"))
        .expect("interaction field");
    let action = url::Url::parse(base)
        .expect("base")
        .join(&unescape(&action))
        .expect("action URL")
        .to_string();
    (action, unescape(&interaction))
}

fn attribute_after(html: &str, marker: &str, name: &str) -> Option<String> {
    let start = html.find(marker)?;
    let rest = html.get(start..)?;
    let needle = format!("{name}=\"");
    let at = rest.find(&needle)? + needle.len();
    let value = rest.get(at..)?;
    Some(value.get(..value.find('"')?)?.to_owned())
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The outcome of posting a sign-in form.
#[derive(Debug)]
pub struct Posted {
    /// Status of the POST.
    pub status: u16,
    /// `Location`, for a redirect.
    pub location: Option<String>,
    /// The page, otherwise.
    pub body: String,
    /// `Retry-After`, when sent.
    pub retry_after: Option<String>,
}

impl Agent {
    /// Opens an authorization URL and returns the sign-in form (action, interaction).
    pub async fn open_sign_in(&self, authorize: &str) -> (String, String) {
        let page = self.browse(authorize).await;
        let status = page.status();
        let body = page.text().await.expect("sign-in page");
        assert_eq!(status, 200, "authorize answered {status}: {body}");
        form(&body, authorize)
    }

    /// Posts a form (with `X-Forwarded-For: source` when given).
    pub async fn post_form(
        &self,
        action: &str,
        fields: &[(&str, &str)],
        source: Option<&str>,
    ) -> Posted {
        let mut request = no_redirect_client()
            .post(action)
            .header("accept", "text/html")
            .form(fields);
        if let Some(source) = source {
            request = request.header("x-forwarded-for", source);
        }
        let response = self.send(request).await;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|_| location(&response, action));
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        Posted {
            status,
            location,
            body,
            retry_after,
        }
    }

    /// Signs in to the proxy (`{origin}/hello`) through the built-in provider's form, following
    /// every hop by hand: the agent then holds the proxy's session cookie and the provider's
    /// sign-in cookie.
    pub async fn proxy_login(&self, stack: &Stack, user: &str, password: &str) {
        let start = format!("{}/hello", stack.origin);
        let first = self.browse(&start).await;
        assert_eq!(first.status(), 302);
        let authorize = location(&first, &start);
        assert!(
            authorize.starts_with(&format!("{}/authorize", stack.issuer)),
            "{authorize}"
        );
        let (action, interaction) = self.open_sign_in(&authorize).await;
        let posted = self
            .post_form(
                &action,
                &[
                    ("interaction", &interaction),
                    ("username", user),
                    ("password", password),
                ],
                None,
            )
            .await;
        assert_eq!(posted.status, 303, "{}", posted.body);
        let callback = posted.location.expect("a redirect to the callback");
        let done = self.browse(&callback).await;
        assert_eq!(
            done.status(),
            302,
            "callback: {}",
            done.text().await.unwrap_or_default()
        );
        assert_eq!(location(&done, &callback), start);
    }

    /// Signs in at the provider for the test relying party and returns the code it was
    /// redirected with (after checking `state` and `iss`).
    pub async fn code_for(
        &self,
        issuer: &str,
        challenge: &str,
        user: &str,
        password: &str,
    ) -> String {
        let authorize = authorize_url(issuer, &code_request(challenge, "st-1"));
        let (action, interaction) = self.open_sign_in(&authorize).await;
        let posted = self
            .post_form(
                &action,
                &[
                    ("interaction", &interaction),
                    ("username", user),
                    ("password", password),
                ],
                None,
            )
            .await;
        assert_eq!(
            posted.status, 303,
            "sign-in answered {}: {}",
            posted.status, posted.body
        );
        let back = url::Url::parse(posted.location.as_deref().expect("Location")).expect("URL");
        assert!(back.as_str().starts_with(RP_REDIRECT), "{back}");
        let param = |name: &str| {
            back.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(param("state").as_deref(), Some("st-1"));
        assert_eq!(param("iss").as_deref(), Some(issuer));
        param("code").expect("code in the redirect")
    }
}

/// POSTs to the token endpoint as the test relying party (Basic authentication).
pub async fn token_request(issuer: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let response = no_redirect_client()
        .post(format!("{issuer}/token"))
        .basic_auth(RP_ID, Some(RP_SECRET))
        .form(fields)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.expect("token JSON");
    assert_eq!(
        cache.as_deref(),
        Some("no-store"),
        "token responses are never cached"
    );
    (status, body)
}
