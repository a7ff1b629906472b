//! The end-to-end harness: starts the real components a user meets — the test OpenID provider
//! (panva's oidc-provider, `tests/node/idp.mjs`), an echo upstream, the `sekisho` binary, and
//! headless Chromium (`tests/node/browser.mjs`) — each on port 0, and drives them.
//!
//! Tests panic with context instead of returning errors; every child process is killed when its
//! handle drops, and its log is printed when the test that owned it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test harness: panics are the failure report"
)]

pub mod builtin;
pub mod caddy;
pub mod echo;
pub mod netns;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod tmpfs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long any single wait on a child process or a condition may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `child`, told to listen on `addr`, accepts there (`true`) or exits (`false`:
/// most likely another process took the port meanwhile). Panics after [`DEADLINE`].
pub async fn accepting(child: &mut Child, addr: SocketAddr, what: &str) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if child
            .try_wait()
            .unwrap_or_else(|e| panic!("{what} status: {e}"))
            .is_some()
        {
            return false;
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not accept on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `text` with the regular-expression metacharacters escaped (for the browser's `wait_url`).
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Removes from `command` the variables `cargo test` hands the test process for its own
/// package (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...): a cargo started with them would see build
/// scripts' inputs change (ring's watches them) and rebuild.
pub fn clean_cargo_env(command: &mut std::process::Command) {
    let set_by_cargo_test = |name: &str| {
        name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_MAKEFLAGS",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name)
    };
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_test) {
            command.env_remove(&name);
        }
    }
}

/// Builds the `sekisho` binary once per test process and returns its path. When `SEKISHO_BIN`
/// is set, that binary is used as it is, unbuilt (the tunnel benchmark runs a release build so).
pub fn sekisho_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("SEKISHO_BIN") {
                return PathBuf::from(bin);
            }
            let mut cargo = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            );
            // `cargo test` hands the test process its own package's variables (CARGO_MANIFEST_DIR,
            // CARGO_PKG_*, ...). Build scripts that watch them (ring's does) would see them change
            // between this build and the outer `cargo test`, and both would rebuild every run.
            let set_by_cargo_test = |name: &str| {
                name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_MAKEFLAGS",
                        "CARGO_RUSTC_CURRENT_DIR",
                    ]
                    .contains(&name)
            };
            for (name, _) in std::env::vars_os() {
                if name.to_str().is_some_and(set_by_cargo_test) {
                    cargo.env_remove(&name);
                }
            }
            let status = cargo
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "sekisho",
                    "--bin",
                    "sekisho",
                    "--features",
                    "xdp,attribution",
                ])
                .current_dir(workspace())
                .status()
                .expect("running cargo build");
            assert!(status.success(), "cargo build -p sekisho failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace().join("target"));
            let bin = target.join("debug").join("sekisho");
            assert!(bin.exists(), "{} missing after build", bin.display());
            bin
        })
        .clone()
}

/// A child process whose stdout's first line announced readiness, whose stderr goes to a log
/// file, and which is killed on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `command`, waits (with [`DEADLINE`]) for its first stdout line, parses it as JSON.
    pub async fn spawn(name: &str, command: Command, log: PathBuf) -> (Process, Value) {
        match Self::try_spawn(name, command, log).await {
            Ok(ready) => ready,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// Like [`Process::spawn`], but a child that exits or stays silent is an `Err` with its log
    /// (for callers that retry, like a start on a port that another test took meanwhile).
    pub async fn try_spawn(
        name: &str,
        mut command: Command,
        log: PathBuf,
    ) -> Result<(Process, Value), String> {
        let log_file = std::fs::File::create(&log).expect("creating log file");
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line()).await;
        let process = Process {
            name: name.to_owned(),
            child,
            log,
        };
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => {
                return Err(format!(
                    "{name} did not announce readiness ({other:?}); log:\n{}",
                    process.logs()
                ));
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| format!("{name} readiness line {line:?}: {e}"))?;
        Ok((process, ready))
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The child's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the child to stop (SIGTERM) and waits until it has exited.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -TERM {pid} failed");
        }
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit after SIGTERM", self.name))
            .expect("waiting for the child");
    }

    /// Stops the child (SIGKILL) and waits for it.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(DEADLINE, self.child.wait()).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log -----\n{}\n----- end of {} log -----",
                self.name,
                self.logs(),
                self.name
            );
        }
    }
}

/// Options of the test IdP.
#[derive(Debug, Clone)]
pub struct IdpOptions {
    /// Put email/name/groups in the ID token (else only at userinfo).
    pub claims_in_id_token: bool,
    /// Access-token lifetime, seconds.
    pub access_token_ttl: u64,
    /// ID-token lifetime, seconds.
    pub id_token_ttl: u64,
}

impl Default for IdpOptions {
    fn default() -> Self {
        IdpOptions {
            claims_in_id_token: true,
            access_token_ttl: 3600,
            id_token_ttl: 3600,
        }
    }
}

impl IdpOptions {
    /// Provider tokens that live 30 s: sekisho refreshes 60 s ahead, so every session is due at
    /// once and every request refreshes.
    pub fn short_tokens() -> Self {
        IdpOptions {
            access_token_ttl: 30,
            id_token_ttl: 30,
            ..IdpOptions::default()
        }
    }
}

/// The real OpenID provider.
#[derive(Debug)]
pub struct Idp {
    /// Issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    process: Process,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Idp {
    /// Starts the IdP with no clients (register them with [`Idp::register_client`]).
    pub async fn start(options: IdpOptions) -> Idp {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = json!({
            "clients": [],
            "claims_in_id_token": options.claims_in_id_token,
            "access_token_ttl": options.access_token_ttl,
            "id_token_ttl": options.id_token_ttl,
            "port": 0,
        });
        let config_path = dir.path().join("idp.json");
        std::fs::write(&config_path, config.to_string()).expect("writing idp config");
        let mut command = Command::new("node");
        command
            .arg(workspace().join("tests/node/idp.mjs"))
            .arg(&config_path);
        let (process, ready) = Process::spawn("idp", command, dir.path().join("idp.log")).await;
        let issuer = ready["issuer"]
            .as_str()
            .expect("issuer in readiness line")
            .to_owned();
        Idp {
            issuer,
            process,
            _dir: dir,
            http: no_redirect_client(),
        }
    }

    /// Registers the proxy as a client whose redirect URIs live on `proxy_origin`.
    pub async fn register_client(
        &self,
        client_id: &str,
        secret: &str,
        proxy_origins: &[String],
        alg: &str,
    ) {
        self.register_client_with(client_id, secret, proxy_origins, alg, json!({}))
            .await;
    }

    /// Like [`Idp::register_client`], with more client metadata (`extra`, a JSON object, e.g.
    /// `backchannel_logout_uri`) merged in.
    pub async fn register_client_with(
        &self,
        client_id: &str,
        secret: &str,
        proxy_origins: &[String],
        alg: &str,
        extra: Value,
    ) {
        let redirect_uris: Vec<String> = proxy_origins
            .iter()
            .map(|o| format!("{o}/.sekisho/callback"))
            .collect();
        let post_logout: Vec<String> = proxy_origins
            .iter()
            .map(|o| format!("{o}/.sekisho/signed-out"))
            .collect();
        let mut body = json!({
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": post_logout,
            "id_token_signed_response_alg": alg,
            "token_endpoint_auth_method": "client_secret_basic",
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let response = self
            .http
            .post(format!("{}/test/clients", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("registering client");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "client registration failed: {status} {text}"
        );
    }

    /// Mints a JWT through the IdP's test hook (`sub`, `aud`, `alg`, `ttl`, optional `iss`).
    pub async fn token(&self, query: &[(&str, &str)]) -> String {
        let response = self
            .http
            .post(format!("{}/test/token", self.issuer))
            .query(query)
            .send()
            .await
            .expect("minting token");
        let body: Value = response.json().await.expect("token JSON");
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_owned()
    }

    /// A JWT of exactly `claims`, signed with the IdP's current `alg` key, with the header
    /// `{typ: "logout+jwt", kid}` and `header` merged over it (`/test/sign`).
    pub async fn sign(&self, alg: &str, header: Value, claims: Value) -> String {
        let response = self
            .http
            .post(format!("{}/test/sign", self.issuer))
            .json(&json!({ "alg": alg, "header": header, "claims": claims }))
            .send()
            .await
            .expect("signing claims");
        let body: Value = response.json().await.expect("sign JSON");
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_owned()
    }

    /// A 10-minute ES256 access token for `sub` with audience `sekisho`.
    pub async fn bearer(&self, sub: &str) -> String {
        self.token(&[
            ("sub", sub),
            ("aud", "sekisho"),
            ("alg", "ES256"),
            ("ttl", "600"),
        ])
        .await
    }

    /// POSTs to a test hook (`/test/...`) and returns its JSON.
    pub async fn hook(&self, path_and_query: &str) -> Value {
        let response = self
            .http
            .post(format!("{}{path_and_query}", self.issuer))
            .send()
            .await
            .expect("calling test hook");
        assert!(
            response.status().is_success(),
            "hook {path_and_query} answered {}",
            response.status()
        );
        response.json().await.expect("hook JSON")
    }

    /// The IdP's log so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Token-endpoint calls the IdP has answered (code exchanges and refreshes).
    pub async fn token_requests(&self) -> u64 {
        self.hook("/test/stats").await["token_requests"]
            .as_u64()
            .expect("token_requests")
    }
}

/// The values a response sets for the plain-HTTP session cookie `_sekisho` (empty: a deletion).
pub fn session_cookies_set(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == "_sekisho")
        .map(|(_, value)| value.to_owned())
        .collect()
}

/// A reqwest client that never follows redirects and accepts the test's self-signed certificates.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(DEADLINE)
        .build()
        .expect("reqwest client")
}

/// Settings for one sekisho instance under test.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Issuer URL.
    pub issuer: String,
    /// Extra YAML appended under `routes:` (each item starting with `  - `); `{echo}` is
    /// replaced by the echo upstream's address.
    pub routes_yaml: String,
    /// Extra top-level YAML (e.g. `allowed_redirect_origins`).
    pub extra_yaml: String,
    /// YAML under `session:` besides keys (lifetimes).
    pub session_yaml: String,
    /// YAML under `server:` besides the listeners (e.g. `  trusted_proxies: [127.0.0.1]\n`).
    pub server_yaml: String,
    /// The plain HTTP listener (default `127.0.0.1:0`; `"[::]:0"` for a dual-stack one).
    pub http_listen: String,
    /// Also listen with TLS (self-signed certificate for 127.0.0.1 / localhost).
    pub tls: bool,
    /// Bearer audiences.
    pub bearer_audiences: Vec<String>,
    /// More YAML under `oidc:` (each line indented by two spaces).
    pub oidc_yaml: String,
    /// More certificates (PEM cert, PEM key) served by SNI after the default one, when `tls`.
    pub extra_tls_certificates: Vec<(String, String)>,
    /// With `tls`: a CA (PEM) for client certificates (mTLS, optional for clients).
    pub client_ca_pem: Option<String>,
    /// The session cookie key; absent: a fresh one. Instances given the same key accept each
    /// other's cookies (several instances behind one load balancer).
    pub cookie_key: Option<[u8; 32]>,
    /// More environment variables for the sekisho process (kept across restarts).
    pub env: Vec<(String, String)>,
}

impl ProxyOptions {
    /// One route, `http://127.0.0.1` (any port) → the echo upstream.
    pub fn new(issuer: &str) -> Self {
        ProxyOptions {
            issuer: issuer.to_owned(),
            routes_yaml: "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n"
                .to_owned(),
            extra_yaml: String::new(),
            session_yaml: String::new(),
            server_yaml: String::new(),
            http_listen: "127.0.0.1:0".to_owned(),
            tls: false,
            bearer_audiences: vec!["sekisho".into(), "api://sekisho".into()],
            oidc_yaml: String::new(),
            extra_tls_certificates: Vec::new(),
            client_ca_pem: None,
            cookie_key: None,
            env: Vec::new(),
        }
    }
}

/// Secret of the `sekisho` client at the test IdP.
pub const CLIENT_SECRET: &str = "test-client-secret-for-sekisho";

/// A running `sekisho run`.
#[derive(Debug)]
pub struct Proxy {
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// TLS address, when enabled.
    pub https: Option<SocketAddr>,
    /// Admin listener address, when configured.
    pub admin: Option<SocketAddr>,
    /// The session cookie key (base64), to forge or inspect cookies in attack tests.
    pub cookie_key: Vec<u8>,
    /// The config file.
    pub config_path: PathBuf,
    process: Process,
    dir: PathBuf,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Proxy {
    /// Writes a configuration and starts sekisho with it.
    pub async fn start(options: &ProxyOptions, echo: SocketAddr) -> Proxy {
        let (tmp, key) = Self::configure(options, echo);
        let dir = tmp.path().to_owned();
        let config_path = dir.join("sekisho.yaml");
        let (process, ready) = Self::spawn_process(&dir, &options.env).await;
        let mut proxy = Proxy {
            http: "0.0.0.0:0".parse().expect("addr"),
            https: None,
            admin: None,
            cookie_key: key.to_vec(),
            config_path,
            process,
            dir,
            env: options.env.clone(),
            _tmp: Some(tmp),
        };
        proxy.apply_ready(&ready);
        proxy
    }

    /// Runs sekisho on the configuration `options` describe and expects it to refuse to start:
    /// returns its exit code and what it wrote to stderr.
    pub async fn start_refused(options: &ProxyOptions, echo: SocketAddr) -> (Option<i32>, String) {
        let (tmp, _) = Self::configure(options, echo);
        let output = tokio::time::timeout(
            DEADLINE,
            Command::new(sekisho_binary())
                .arg("run")
                .arg("-c")
                .arg(tmp.path().join("sekisho.yaml"))
                .env("SEKISHO_TEST_CLIENT_SECRET", CLIENT_SECRET)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("sekisho was expected to refuse to start, and kept running")
        .expect("running sekisho");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Writes the configuration `options` describe, with fresh keys, into a new directory.
    fn configure(options: &ProxyOptions, echo: SocketAddr) -> (tempfile::TempDir, [u8; 32]) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("random");
        if let Some(shared) = options.cookie_key {
            key = shared;
        }
        std::fs::write(
            dir.join("cookie.key"),
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .expect("write key");
        std::fs::write(
            dir.join("signing.pem"),
            sekisho::assertion::generate_pem().expect("keygen"),
        )
        .expect("write pem");
        let tls_yaml = if options.tls {
            let (cert, key) = self_signed_pem();
            std::fs::write(dir.join("tls.crt"), cert).expect("write cert");
            std::fs::write(dir.join("tls.key"), key).expect("write key");
            let mut yaml = "  https_listen: 127.0.0.1:0\n  tls:\n    - cert_file: tls.crt\n      key_file: tls.key\n".to_owned();
            for (i, (cert, key)) in options.extra_tls_certificates.iter().enumerate() {
                std::fs::write(dir.join(format!("tls-{i}.crt")), cert).expect("write cert");
                std::fs::write(dir.join(format!("tls-{i}.key")), key).expect("write key");
                yaml.push_str(&format!(
                    "    - cert_file: tls-{i}.crt\n      key_file: tls-{i}.key\n"
                ));
            }
            if let Some(ca) = &options.client_ca_pem {
                std::fs::write(dir.join("client-ca.pem"), ca).expect("write client CA");
                yaml.push_str("  client_ca_file: client-ca.pem\n");
            }
            yaml
        } else {
            String::new()
        };
        let audiences = options
            .bearer_audiences
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "state_dir: state\n\
             server:\n  http_listen: \"{listen}\"\n{server}{tls_yaml}\
             oidc:\n  issuer: {issuer}\n  client_id: sekisho\n  client_secret: {{env: SEKISHO_TEST_CLIENT_SECRET}}\n  \
             scopes: [openid, email, profile, groups]\n  bearer_audiences: [{audiences}]\n{oidc}\
             session:\n  keys: [{{file: cookie.key}}]\n{session}\
             signing:\n  key: {{file: signing.pem}}\n\
             {extra}\
             routes:\n{routes}",
            issuer = options.issuer,
            session = options.session_yaml,
            oidc = options.oidc_yaml,
            server = options.server_yaml,
            listen = options.http_listen,
            extra = options.extra_yaml,
            routes = options.routes_yaml.replace("{echo}", &echo.to_string()),
        );
        std::fs::write(dir.join("sekisho.yaml"), config).expect("write config");
        (tmp, key)
    }

    /// Starts `sekisho run` on the configuration in `dir`, logging at `sekisho=debug,info`, or
    /// at the `SEKISHO_LOG` of the environment when set (the tunnel benchmark's `warn`).
    async fn spawn_process(dir: &Path, env: &[(String, String)]) -> (Process, Value) {
        let log = std::env::var("SEKISHO_LOG").unwrap_or_else(|_| "sekisho=debug,info".into());
        let mut command = Command::new(sekisho_binary());
        command
            .arg("run")
            .arg("-c")
            .arg(dir.join("sekisho.yaml"))
            .env("SEKISHO_TEST_CLIENT_SECRET", CLIENT_SECRET)
            .env("SEKISHO_LOG", log)
            .envs(env.iter().map(|(k, v)| (k, v)));
        Process::spawn(
            "sekisho",
            command,
            dir.join(format!("sekisho-{}.log", unique())),
        )
        .await
    }

    /// Stops and starts the same configuration again (new ports).
    pub async fn restart(&mut self) {
        self.process.stop().await;
        let (process, ready) = Self::spawn_process(&self.dir, &self.env).await;
        self.process = process;
        self.apply_ready(&ready);
    }

    fn apply_ready(&mut self, ready: &Value) {
        self.http = ready["http"]
            .as_str()
            .expect("http address")
            .parse()
            .expect("http address");
        self.https = ready["https"]
            .as_str()
            .map(|a| a.parse().expect("https address"));
        self.admin = ready["admin"]
            .as_str()
            .map(|a| a.parse().expect("admin address"));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `https://127.0.0.1:PORT`, when TLS is on.
    pub fn tls_base(&self) -> Option<String> {
        self.https.map(|a| format!("https://{a}"))
    }

    /// Origins to register at the IdP.
    pub fn origins(&self) -> Vec<String> {
        let mut origins = vec![self.base()];
        origins.extend(self.tls_base());
        origins.extend(self.admin.map(|a| format!("http://{a}")));
        origins
    }

    /// The proxy's log so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The sekisho process's id, while it runs (to read its memory and CPU time in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The `state_dir` of this instance.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The default audit directory (`{state_dir}/audit`).
    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir().join("audit")
    }

    /// The session in `agent`'s plain-HTTP cookie (`_sekisho`), opened with this instance's key.
    pub fn session_of(&self, agent: &Agent) -> sekisho::session::SessionState {
        let sealer = sekisho::seal::Sealer::new([self.cookie_key.as_slice()]).expect("sealer");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(&agent.cookie_header()).expect("cookie header"),
        );
        sekisho::session::CookieCodec::new("_sekisho", false)
            .read(&sealer, &headers)
            .expect("a session cookie")
    }

    /// Kills the proxy with SIGKILL (a crash), leaving its files as they are.
    pub async fn kill(&mut self) {
        self.process.stop().await;
    }

    /// Stops the proxy gracefully (SIGTERM) and waits until it has exited.
    pub async fn terminate(&mut self) {
        self.process.terminate().await;
    }

    /// Starts the proxy again after [`Self::kill`] or [`Self::terminate`] (new ports).
    pub async fn start_again(&mut self) {
        let (process, ready) = Self::spawn_process(&self.dir, &self.env).await;
        self.process = process;
        self.apply_ready(&ready);
    }
}

/// Replaces a file in one step (a watcher never sees it half-written).
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("writing the new file");
    std::fs::rename(&tmp, path).expect("renaming it into place");
}

/// Every complete line of the audit log files in `dir`, oldest file first, parsed. A last line
/// without its newline is one the writer is still writing: it is left for the next read.
pub fn audit_records(dir: &Path) -> Vec<Value> {
    audit_files(dir)
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("reading an audit file");
            let complete = text.rfind('\n').map_or("", |end| &text[..end]);
            complete
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).expect("audit line is JSON"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The audit log files in `dir`, oldest first.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading the audit directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Runs `sekisho audit verify` over `dir` with its published key; (exit success, stdout).
pub fn audit_verify(dir: &Path) -> (bool, String) {
    let output = std::process::Command::new(sekisho_binary())
        .args(["audit", "verify", "--public-key"])
        .arg(dir.join("audit-signing.pub"))
        .args(audit_files(dir))
        .output()
        .expect("running sekisho audit verify");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn unique() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Starts an IdP, an echo upstream and sekisho, and registers sekisho at the IdP.
pub async fn stack(
    idp_options: IdpOptions,
    alg: &str,
    customize: impl FnOnce(&mut ProxyOptions),
) -> (Idp, echo::Echo, Proxy) {
    let idp = Idp::start(idp_options).await;
    let echo = echo::Echo::start().await;
    let mut options = ProxyOptions::new(&idp.issuer);
    customize(&mut options);
    let proxy = Proxy::start(&options, echo.addr).await;
    idp.register_client("sekisho", CLIENT_SECRET, &proxy.origins(), alg)
        .await;
    (idp, echo, proxy)
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (PEM cert, PEM key), made with
/// the system's openssl.
pub fn self_signed_pem() -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,DNS:app.localtest,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(dir.path().join("c.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running openssl");
    assert!(status.success(), "openssl req failed");
    (
        std::fs::read_to_string(dir.path().join("c.pem")).expect("cert"),
        std::fs::read_to_string(dir.path().join("k.pem")).expect("key"),
    )
}

/// A cookie-keeping HTTP user agent that does not follow redirects (each hop is asserted).
#[derive(Debug)]
pub struct Agent {
    http: reqwest::Client,
    jar: Mutex<BTreeMap<String, String>>,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

/// A login stopped just before the callback.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The authorization URL sekisho sent the browser to.
    pub authorize: String,
    /// The callback URL the IdP sent the browser back to, not yet requested.
    pub callback: String,
}

/// The steps of a completed login, for replay tests.
#[derive(Debug, Clone)]
pub struct Login {
    /// The callback URL the IdP sent the browser to.
    pub callback: String,
    /// Where sekisho sent the browser after the callback.
    pub landed: String,
    /// The authorization URL sekisho sent the browser to.
    pub authorize: String,
}

impl Agent {
    /// An agent with an empty jar.
    pub fn new() -> Self {
        Agent {
            http: no_redirect_client(),
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    /// A GET as a browser navigation the user made (`Accept: text/html`, `Sec-Fetch-Site: none`,
    /// as for a typed URL or a bookmark).
    pub async fn browse(&self, url: &str) -> reqwest::Response {
        self.send(
            self.http
                .get(url)
                .header("accept", "text/html,application/xhtml+xml")
                .header("sec-fetch-site", "none"),
        )
        .await
    }

    /// A GET as an API client (`Accept: application/json`).
    pub async fn api(&self, url: &str) -> reqwest::Response {
        self.send(self.http.get(url).header("accept", "application/json"))
            .await
    }

    /// Sends a request with the jar's cookies and records the response's cookies.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let cookie = self.cookie_header();
        let request = if cookie.is_empty() {
            request
        } else {
            request.header("cookie", cookie)
        };
        let response = request.send().await.expect("request failed");
        self.absorb(&response);
        response
    }

    /// The `Cookie` header the jar would send.
    pub fn cookie_header(&self) -> String {
        let jar = self.jar.lock().expect("jar");
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Replaces the jar.
    pub fn set_cookies(&self, cookies: BTreeMap<String, String>) {
        *self.jar.lock().expect("jar") = cookies;
    }

    /// A copy of the jar.
    pub fn cookies(&self) -> BTreeMap<String, String> {
        self.jar.lock().expect("jar").clone()
    }

    fn absorb(&self, response: &reqwest::Response) {
        let mut jar = self.jar.lock().expect("jar");
        for value in response.headers().get_all("set-cookie") {
            let Ok(text) = value.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let deleted =
                value.is_empty() || parts.any(|p| p.trim().eq_ignore_ascii_case("max-age=0"));
            if deleted {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    /// The hops of [`Agent::login`] up to, not including, the request to sekisho's callback.
    pub async fn until_callback(
        &self,
        start: &str,
        issuer: &str,
        user: &str,
        password: &str,
    ) -> Pending {
        let first = self.browse(start).await;
        assert_eq!(
            first.status(),
            302,
            "expected a redirect to the IdP from {start}"
        );
        let authorize = location(&first, start);
        assert!(
            authorize.starts_with(issuer),
            "redirected to {authorize}, not the IdP {issuer}"
        );
        let to_interaction = self.browse(&authorize).await;
        assert_eq!(
            to_interaction.status(),
            303,
            "IdP /auth answered {}",
            to_interaction.status()
        );
        let interaction = location(&to_interaction, &authorize);
        let login_url = format!("{}/login", interaction.trim_end_matches('/'));
        let posted = self
            .send(
                self.http
                    .post(&login_url)
                    .form(&[("login", user), ("password", password)]),
            )
            .await;
        assert_eq!(
            posted.status(),
            303,
            "IdP login answered {}",
            posted.status()
        );
        let resume = location(&posted, &login_url);
        let back = self.browse(&resume).await;
        assert_eq!(back.status(), 303, "IdP resume answered {}", back.status());
        let callback = location(&back, &resume);
        assert!(
            callback.contains("/.sekisho/callback?"),
            "IdP sent the browser to {callback}"
        );
        Pending {
            authorize,
            callback,
        }
    }

    /// Logs in through the real IdP login form, starting from `start` (a proxy URL), following
    /// every hop by hand. Panics with the hop that failed.
    pub async fn login(&self, start: &str, issuer: &str, user: &str, password: &str) -> Login {
        let Pending {
            authorize,
            callback,
        } = self.until_callback(start, issuer, user, password).await;
        let done = self.browse(&callback).await;
        let status = done.status();
        assert_eq!(
            status,
            302,
            "callback answered {status}: {}",
            done.text().await.unwrap_or_default()
        );
        let landed = location(&done, &callback);
        Login {
            callback,
            landed,
            authorize,
        }
    }
}

/// The absolute `Location` of a redirect.
pub fn location(response: &reqwest::Response, base: &str) -> String {
    let raw = response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {} response", response.status()))
        .to_str()
        .expect("Location text");
    url::Url::parse(base)
        .expect("base URL")
        .join(raw)
        .expect("Location URL")
        .to_string()
}

/// The claims of a JWT, unverified (tests that need its signature verify it themselves).
pub fn jwt_claims(jwt: &str) -> Value {
    let body = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .expect("base64url"),
    )
    .expect("JSON")
}

/// Waits for `condition` to hold, polling, up to [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A self-signed P-256 certificate (PEM cert, PEM key) for `subject_alt_names` in openssl's
/// syntax (`DNS:a.localtest,DNS:*.w.localtest`), made with the system's openssl.
pub fn self_signed_pem_for(subject_alt_names: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sekisho-test",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName={subject_alt_names}"))
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(dir.path().join("c.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running openssl");
    assert!(
        status.success(),
        "openssl req failed for {subject_alt_names}"
    );
    (
        std::fs::read_to_string(dir.path().join("c.pem")).expect("cert"),
        std::fs::read_to_string(dir.path().join("k.pem")).expect("key"),
    )
}

/// Runs `tests/node/browser.mjs` (headless Chromium) on `script` (a list of steps or
/// `{"steps": [...], ...}`, see tests/node/README.md) and returns its JSON result. Panics with the
/// failed step, the page and the driver's log when a step fails.
pub async fn run_browser(script: &Value) -> Value {
    run_browser_in(&[], script).await
}

/// Like [`run_browser`], with the driver started under `prefix` (like
/// `["ip", "netns", "exec", NAME]`, to browse inside a network namespace).
pub async fn run_browser_in(prefix: &[&str], script: &Value) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let script_path = dir.path().join("steps.json");
    std::fs::write(&script_path, script.to_string()).expect("writing browser script");
    let log_path = dir.path().join("browser.log");
    let log = std::fs::File::create(&log_path).expect("creating browser log");
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg("node");
            command
        }
        None => Command::new("node"),
    };
    let child = command
        .arg(workspace().join("tests/node/browser.mjs"))
        .arg(&script_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawning node browser.mjs");
    // A login flow takes ~2 s; Chromium's first start on a cold machine can take much longer.
    let output = tokio::time::timeout(DEADLINE * 4, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "browser.mjs did not finish; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        })
        .expect("waiting for browser.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser.mjs printed {stdout:?} ({e}); log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    });
    if result["ok"] != Value::Bool(true) {
        let step = result["step"]
            .as_u64()
            .and_then(|i| script_steps(script).get(usize::try_from(i).ok()?).cloned());
        panic!(
            "browser step {} ({}) failed: {}\nurl: {}\nstatus: {}\nbody:\n{}\nlog:\n{}",
            result["step"],
            step.unwrap_or(Value::Null),
            result["error"],
            result["url"],
            result["status"],
            result["body"].as_str().unwrap_or_default(),
            std::fs::read_to_string(&log_path).unwrap_or_default(),
        );
    }
    result
}

fn script_steps(script: &Value) -> Vec<Value> {
    let steps = if script.is_array() {
        script
    } else {
        &script["steps"]
    };
    steps.as_array().cloned().unwrap_or_default()
}

/// A real nginx (`/usr/sbin/nginx`, Debian's) on a free loopback port, as an upstream whose
/// path handling is not sekisho's (its `location ~*` regexes ignore case). Killed on drop.
#[derive(Debug)]
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `locations` (the body of its one `server` block). nginx cannot listen on
    /// port 0: a free port is found by binding `127.0.0.1:0` and closing it, and the start is
    /// retried on another port when someone took it meanwhile. Returns once it accepts.
    pub async fn start(locations: &str) -> Nginx {
        Self::start_listening("", locations).await
    }

    /// Like [`Nginx::start`], serving TLS: `server` (the body of the `server` block) carries
    /// `ssl_certificate` and `ssl_certificate_key`, and any `ssl_verify_client`.
    pub async fn start_tls(server: &str) -> Nginx {
        Self::start_listening(" ssl", server).await
    }

    /// Starts nginx with `listen ADDR{parameters};` and `locations` in its `server` block.
    async fn start_listening(parameters: &str, locations: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        for _ in 0..5 {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
                 scgi_temp_path {d}/scgi;\n  default_type text/plain;\n  \
                 server {{\n    listen {addr}{parameters};\n{locations}\n  }}\n}}\n"
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut child = Command::new("/usr/sbin/nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawning /usr/sbin/nginx");
            if accepting(&mut child, addr, "nginx").await {
                return Nginx { addr, child, dir };
            }
            // Exited: most likely the port was taken meanwhile; try another.
        }
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start; error log:\n{log}");
    }

    /// Requests nginx logged so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
