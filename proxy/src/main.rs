//! The `sekisho` command: `run` the proxy, `check` a configuration, generate keys.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use sekisho::audit::{AuditLog, AuthActivity, AuthEvent, Event, Lifecycle, LifecycleEvent};
use sekisho::proxy::Proxy;
use sekisho::server::Listeners;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sekisho",
    version,
    about = "Zero-trust, identity-aware access proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print its routes.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Test and explain policies.
    #[command(subcommand)]
    Policy(Box<PolicyCommand>),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a new random session-cookie key (base64, 32 bytes).
    GenCookieKey,
    /// Print a new ECDSA P-256 assertion signing key (PKCS#8 PEM).
    GenSigningKey,
    /// Print the Argon2id hash of a password for `identity_provider.users[].password_hash`.
    /// The password is read from the terminal (not echoed, asked twice) or from standard input,
    /// never from the command line.
    HashPassword,
    /// Print a new TOTP secret (base32) for `identity_provider.users[].totp_secret`, and the
    /// otpauth:// URI an authenticator app imports.
    GenTotpSecret {
        /// The account name shown in the authenticator app.
        #[arg(long)]
        account: String,
        /// The issuer name shown in the authenticator app.
        #[arg(long, default_value = "sekisho")]
        issuer: String,
    },
    /// Built-in OpenID provider tools.
    #[command(subcommand)]
    Idp(IdpCommand),
    /// Run the quickstart: the proxy, its built-in OpenID provider with two demo users and a
    /// demo upstream, on http://127.0.0.1:8080, with secrets generated into a state directory
    /// on first run and kept.
    Quickstart {
        /// State directory (default: $XDG_STATE_HOME/sekisho/quickstart, else
        /// ~/.local/state/sekisho/quickstart).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IdpCommand {
    /// Add a new signing key: it signs from the provider's next reload (SIGHUP) or restart;
    /// the previous key stays published until the tokens it signed have expired.
    RotateKey {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and checkpoint signatures of audit log files (oldest first);
    /// exit 1 at the first break, when lines follow the last checkpoint unsigned, or when the
    /// log ends before the signed head (records cut off).
    Verify {
        /// Configuration file: verifies its `audit.dir` with `audit-signing.pub` there, against
        /// the head `{state_dir}/audit-head.json`.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// File of checkpoint public keys (hex of a 32-byte Ed25519 key per line, like
        /// `audit-signing.pub`, which lists every key that signed the log); repeatable.
        #[arg(long, required_unless_present = "config")]
        public_key: Vec<PathBuf>,
        /// The newest signed checkpoint, kept apart from the log (`audit-head.json`, or the
        /// last checkpoint line from the OTLP pipeline): the log must reach it.
        #[arg(long)]
        head: Option<PathBuf>,
        /// The files do not start at the beginning of the log (the first is a later rotation).
        #[arg(long)]
        mid_chain: bool,
        /// Audit log files, oldest first, or directories (all their log files, in order).
        #[arg(required_unless_present = "config")]
        files: Vec<PathBuf>,
    },
    /// Search the audit log: `--since 1h --user alice@example.com --decision deny`.
    Query(Box<AuditQuery>),
}

#[derive(clap::Args)]
struct AuditQuery {
    /// Configuration file (the log is in its `audit.dir`).
    #[arg(short, long, conflicts_with = "dir", required_unless_present = "dir")]
    config: Option<PathBuf>,
    /// The audit directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Records from this long ago (`90m`, `1h`, `7d`) or this RFC 3339 time on.
    #[arg(long)]
    since: Option<String>,
    /// Records before this time (same forms as `--since`).
    #[arg(long)]
    until: Option<String>,
    /// The user: email (or subject).
    #[arg(long)]
    user: Option<String>,
    /// allow, deny, login, unauthenticated, error; or logout, refresh, credential_rejected.
    #[arg(long)]
    decision: Option<String>,
    /// Route id.
    #[arg(long)]
    route: Option<String>,
    /// Client address.
    #[arg(long)]
    source: Option<String>,
    /// Container id.
    #[arg(long)]
    container: Option<String>,
    /// Request id (`X-Request-Id`).
    #[arg(long)]
    request_id: Option<String>,
    /// Show at most this many (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// `table` (one line per record) or `json` (JSON lines, the records as written).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run policy test cases (YAML files with `cases:`); exit 1 on any mismatch.
    Test {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Case files.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Show the route, input document and evaluation trace for one request.
    Explain {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Email of the user making the request.
        #[arg(long = "as")]
        email: Option<String>,
        /// Subject (default: the email).
        #[arg(long)]
        sub: Option<String>,
        /// Groups (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Extra claims, NAME=VALUE (VALUE parsed as JSON when it parses, else a string).
        #[arg(long)]
        claim: Vec<String>,
        /// Client address.
        #[arg(long)]
        source_ip: Option<std::net::IpAddr>,
        /// Request time (RFC 3339).
        #[arg(long)]
        time: Option<String>,
        /// Request headers, "Name: value".
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The request method.
        method: String,
        /// The request URL.
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match sekisho_config::load(&config) {
            Ok(config) => {
                println!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Policy(command) => match policy(*command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Audit(AuditCommand::Query(query)) => match audit_query(&query) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Audit(AuditCommand::Verify {
            config,
            public_key,
            head,
            mid_chain,
            files,
        }) => match audit_verify(config.as_deref(), public_key, head, mid_chain, files) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::GenCookieKey => {
            let mut key = [0u8; 32];
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).is_err() {
                eprintln!("error: the system random source failed");
                return ExitCode::FAILURE;
            }
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::GenSigningKey => match sekisho::assertion::generate_pem() {
            Some(pem) => {
                print!("{pem}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: key generation failed");
                ExitCode::FAILURE
            }
        },
        Command::HashPassword => match hash_password() {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::GenTotpSecret { account, issuer } => match sekisho::idp::totp::generate_secret() {
            Some(secret) => {
                let label_text = format!("{issuer}:{account}");
                let label = percent_encoding::utf8_percent_encode(
                    &label_text,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                let issuer_param = percent_encoding::utf8_percent_encode(
                    &issuer,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                println!("{secret}");
                println!(
                    "otpauth://totp/{label}?secret={secret}&issuer={issuer_param}&algorithm=SHA1&digits=6&period=30"
                );
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: the system random source failed");
                ExitCode::FAILURE
            }
        },
        Command::Idp(IdpCommand::RotateKey { config }) => match rotate_key(&config) {
            Ok(kid) => {
                println!("{kid}");
                eprintln!(
                    "new signing key {kid}; it signs once the provider reloads (SIGHUP) or restarts"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Quickstart { dir } => match quickstart(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<sekisho_config::Config> {
    sekisho_config::load(path).map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

fn audit_query(query: &AuditQuery) -> anyhow::Result<ExitCode> {
    use sekisho::audit::query::{self, Filter};
    let dir = match (&query.dir, &query.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => {
            sekisho_config::load_without_secrets(config)
                .map_err(|errors| anyhow::anyhow!("{errors}"))?
                .audit
                .dir
        }
        (None, None) => anyhow::bail!("give --config or --dir"),
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let time = |text: &Option<String>, flag: &str| {
        text.as_deref()
            .map(|t| query::parse_time(t, now))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    };
    let filter = Filter {
        since_ms: time(&query.since, "--since")?,
        until_ms: time(&query.until, "--until")?,
        user: query.user.clone(),
        decision: query.decision.clone(),
        route: query.route.clone(),
        source: query.source.clone(),
        container: query.container.clone(),
        request_id: query.request_id.clone(),
        seq: None,
    };
    let found = query::query(&dir, &filter, query.limit)?;
    for record in &found.records {
        if query.format == "json" {
            println!("{record}");
        } else {
            println!("{}", query::table_row(record));
        }
    }
    eprintln!(
        "{} matching records ({} shown); index: {} blocks read, {} skipped, {} bytes unindexed",
        found.matched,
        found.records.len(),
        found.blocks_read,
        found.blocks_skipped,
        found.unindexed_bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(
    config: Option<&std::path::Path>,
    mut public_keys: Vec<PathBuf>,
    mut head: Option<PathBuf>,
    mid_chain: bool,
    mut files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = config {
        let config = sekisho_config::load_without_secrets(path)
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
        if files.is_empty() {
            files.push(config.audit.dir.clone());
        }
        if public_keys.is_empty() {
            public_keys.push(config.audit.dir.join("audit-signing.pub"));
        }
        if head.is_none() {
            let path = sekisho::audit::writer::head_path(&config.state_dir);
            anyhow::ensure!(
                path.exists(),
                "{}: no signed head: without it a log cut back to an earlier checkpoint cannot be told from a complete one; pass --head with a copy kept elsewhere (the OTLP pipeline's last checkpoint line)",
                path.display()
            );
            head = Some(path);
        }
    }
    let mut expanded = Vec::new();
    for path in &files {
        if path.is_dir() {
            let logs = sekisho::audit::writer::log_files(path)
                .with_context(|| format!("reading {}", path.display()))?;
            // An empty directory is still a log (one cut back to nothing) when there is a head.
            anyhow::ensure!(
                !logs.is_empty() || head.is_some(),
                "{}: no audit log files",
                path.display()
            );
            expanded.extend(logs.into_iter().map(|f| f.path));
        } else {
            expanded.push(path.clone());
        }
    }
    let files = &expanded[..];
    let mut keys = Vec::new();
    for path in &public_keys {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            anyhow::ensure!(
                line.is_empty()
                    || (line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit())),
                "{}:{}: expected 64 hex digits (an Ed25519 public key) per line",
                path.display(),
                n + 1
            );
        }
        keys.extend(sekisho::audit::writer::parse_public_keys(&text));
    }
    anyhow::ensure!(!keys.is_empty(), "no public key given");
    let mut text = String::new();
    let mut boundaries = Vec::new();
    for file in files {
        let content =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        boundaries.push((file.display().to_string(), content.lines().count()));
        text.push_str(&content);
        if !content.is_empty() && !content.ends_with('\n') {
            text.push('\n');
        }
    }
    let mut verifier = sekisho::audit::chain::Verifier::with_keys(keys, !mid_chain);
    if let Some(path) = &head {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed = sekisho::audit::chain::Head::parse(&text)
            .with_context(|| format!("{}: not a signed head", path.display()))?;
        verifier
            .set_head(parsed)
            .with_context(|| format!("{}: not a signed head of this log", path.display()))?;
    }
    for line in text.lines() {
        if !verifier.feed(line) {
            break;
        }
    }
    let report = verifier.result();
    // Name the file and line of a break.
    let locate = |mut n: u64| -> String {
        for (file, count) in &boundaries {
            let count = *count as u64;
            if n <= count {
                return format!("{file}:{n}");
            }
            n -= count;
        }
        format!("line {n}")
    };
    println!(
        "{} lines, {} valid checkpoints{}",
        report.lines,
        report.checkpoints,
        match report.keys_introduced {
            0 => String::new(),
            n => format!(", {n} key introductions"),
        }
    );
    if let Some(first) = report.first_seq.filter(|s| *s > 0) {
        println!("the log starts at seq {first} (mid-chain): records before it are not verified");
    }
    if let Some(checkpoint) = &report.last_checkpoint {
        println!(
            "last checkpoint: seq {} signed at {}",
            checkpoint.seq, checkpoint.time
        );
    }
    if let Some((line, why)) = &report.first_break {
        println!("BROKEN at {}: {why}", locate(*line));
        return Ok(ExitCode::FAILURE);
    }
    if let Some(missing) = &report.missing {
        println!("TRUNCATED: {missing}");
        return Ok(ExitCode::FAILURE);
    }
    if report.unsigned_tail > 0 {
        println!(
            "chain intact, but the last {} lines follow the last checkpoint unsigned (truncated or not yet checkpointed)",
            report.unsigned_tail
        );
        return Ok(ExitCode::FAILURE);
    }
    match (&report.head, &head) {
        (Some(signed), Some(path)) => println!(
            "chain intact and signed, and it reaches the signed head {} (seq {}, signed at {})",
            path.display(),
            signed.seq,
            signed.time
        ),
        _ => println!(
            "chain intact and signed up to its last checkpoint; no signed head given, so a log cut back to an earlier checkpoint would verify the same: pass -c CONFIG or --head FILE to check that nothing was cut off"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a configuration for the policy tools: routes and policies only, secrets left
/// unresolved, so policies can be tested without production secrets.
fn load_policies(path: &std::path::Path) -> anyhow::Result<sekisho_config::Config> {
    sekisho_config::load_without_secrets(path)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

fn policy(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    use sekisho::policy::cases;
    match command {
        PolicyCommand::Test {
            config,
            cases: files,
        } => {
            let config = load_policies(&config)?;
            let evaluator = cases::Evaluator::new(&config)?;
            let mut failed = 0;
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let name = file.display().to_string();
                let parsed = cases::parse_cases(&name, &text)?;
                let report = cases::run_cases(&evaluator, &name, &parsed);
                print!("{}", report.text);
                failed += report.failed;
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Explain {
            config,
            email,
            sub,
            groups,
            claim,
            source_ip,
            time,
            headers,
            method,
            url,
        } => {
            let config = load_policies(&config)?;
            let evaluator = cases::Evaluator::new(&config)?;
            let mut claims = std::collections::BTreeMap::new();
            for pair in claim {
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--claim {pair:?} is not NAME=VALUE"))?;
                let value = serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
                claims.insert(name.to_owned(), value);
            }
            let authenticated = email.is_some() || sub.is_some();
            let identity = authenticated.then(|| {
                cases::CaseIdentity {
                    sub,
                    email,
                    email_verified: None,
                    groups,
                    claims,
                }
                .to_identity(config.oidc.issuer.as_str().trim_end_matches('/'))
            });
            let mut header_map = std::collections::BTreeMap::new();
            for h in headers {
                let (name, value) = h
                    .split_once(':')
                    .with_context(|| format!("-H {h:?} is not \"Name: value\""))?;
                header_map.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
            let request = cases::CaseRequest {
                method: Some(method),
                url,
                source_ip,
                time,
                headers: header_map,
            };
            let evaluation = evaluator.evaluate(identity.as_ref(), &request)?;
            print!("{}", cases::render_explanation(&evaluation));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    init_tracing();
    let config = load_config(&path)?;
    runtime()?.block_on(serve(config, path, |_, _| {}))
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Binds the listeners, starts the proxy (and its built-in provider, when configured), calls
/// `listening` with the bound addresses and serves until SIGINT/SIGTERM.
async fn serve(
    config: sekisho_config::Config,
    path: PathBuf,
    listening: impl FnOnce(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
) -> anyhow::Result<()> {
    let timeouts = config.server.timeouts;
    let listeners = Listeners::bind(&config).await?;
    // The provider's sign-in records go to the proxy's audit log, which opens with the proxy.
    let audit_cell: Arc<std::sync::OnceLock<Arc<AuditLog>>> = Arc::default();
    let idp = match &config.identity_provider {
        Some(idp) => Some(Arc::new(sekisho::idp::IdentityProvider::new(
            idp,
            idp_audit(
                audit_cell.clone(),
                idp.issuer.as_str().trim_end_matches('/'),
            ),
        )?)),
        None => None,
    };
    let self_provided = idp
        .as_ref()
        .is_some_and(|idp| idp.issuer() == config.oidc.issuer.as_str().trim_end_matches('/'));
    let mut proxy = Proxy::new(config)?;
    if let Some(idp) = &idp {
        tracing::info!(issuer = idp.issuer(), kid = %idp.signing_kid(), "built-in OpenID provider enabled");
        proxy = proxy.with_identity_provider(idp.clone());
        tokio::spawn(idp.clone().maintain());
    }
    let proxy = Arc::new(proxy);
    let _ = audit_cell.set(proxy.audit_handle());
    let discovery = {
        let proxy = proxy.clone();
        async move {
            if let Err(e) = proxy.oidc().discover().await {
                tracing::warn!(error = %e, "provider discovery failed at startup; retrying on demand");
            }
        }
    };
    if self_provided {
        // The provider is this very process: it answers once the listeners accept, so discovery
        // runs beside serving.
        tokio::spawn(discovery);
    } else {
        discovery.await;
    }
    let shutdown = shutdown_signal()?;
    let (http, https) = listeners.addresses();
    let admin = listeners.admin_address();
    // One machine-readable line on stdout: tests and scripts read the bound ports from it.
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "http": http.map(|a| a.to_string()), "https": https.map(|a| a.to_string()), "admin": admin.map(|a| a.to_string()) })
    );
    listening(http, https);
    tracing::info!(?http, ?https, ?admin, audit = %proxy.audit().dir().display(), "sekisho listening");
    proxy.record(lifecycle(
        Lifecycle::Start,
        true,
        started_message(http, https, admin),
    ));
    tokio::spawn(watch_config(path.clone(), proxy.clone()));
    listeners.serve(proxy.clone(), timeouts, shutdown).await;
    proxy.record(lifecycle(Lifecycle::Stop, true, "sekisho stopped".into()));
    proxy.audit().close();
    tracing::info!("sekisho stopped");
    Ok(())
}

/// `sekisho quickstart`: prepares the state directory, starts the demo upstream and runs the
/// quickstart configuration.
fn quickstart(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use sekisho::quickstart;
    init_tracing();
    let dir = dir.unwrap_or_else(quickstart::default_dir);
    let prepared = quickstart::prepare(&dir)
        .with_context(|| format!("preparing the quickstart state in {}", dir.display()))?;
    let config = load_config(&prepared.config)?;
    let verifier = quickstart::whoami::Verifier {
        jwks_url: format!("{}.well-known/sekisho/jwks.json", quickstart::URL),
        issuer: config.signing.issuer.clone(),
        audiences: config.routes.iter().map(|r| r.id.clone()).collect(),
    };
    let banner = quickstart::banner(&prepared, &dir);
    runtime()?.block_on(async move {
        let whoami = tokio::net::TcpListener::bind(quickstart::WHOAMI_LISTEN)
            .await
            .with_context(|| {
                format!(
                    "the demo upstream cannot listen on {}",
                    quickstart::WHOAMI_LISTEN
                )
            })?;
        tokio::spawn(quickstart::whoami::serve(whoami, verifier));
        serve(config, prepared.config, |_, _| {
            use std::io::Write as _;
            println!("{banner}");
            let _ = std::io::stdout().flush();
        })
        .await
    })
}

/// `sekisho hash-password`: the password from the terminal (no echo, twice) or standard input.
fn hash_password() -> anyhow::Result<String> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let stdin = std::io::stdin();
    let password = if rustix::termios::isatty(&stdin) {
        let ask = |prompt: &str| -> anyhow::Result<String> {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
            let saved = rustix::termios::tcgetattr(&stdin).context("reading terminal settings")?;
            let mut quiet = saved.clone();
            quiet.local_modes -= rustix::termios::LocalModes::ECHO;
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
                .context("turning echo off")?;
            let mut line = String::new();
            let read = stdin.lock().read_line(&mut line);
            let restored =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
            eprintln!();
            read.context("reading the password")?;
            restored.context("restoring terminal settings")?;
            Ok(line.trim_end_matches(['\n', '\r']).to_owned())
        };
        let first = ask("Password: ")?;
        let second = ask("Again: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        first
    } else {
        let mut text = String::new();
        stdin
            .lock()
            .take(sekisho::idp::MAX_PASSWORD as u64 + 2)
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    anyhow::ensure!(
        password.len() <= sekisho::idp::MAX_PASSWORD,
        "the password is longer than {} bytes",
        sekisho::idp::MAX_PASSWORD
    );
    Ok(sekisho::idp::hash_password(&password)?)
}

/// `sekisho idp rotate-key`.
fn rotate_key(path: &std::path::Path) -> anyhow::Result<String> {
    let config = load_config(path)?;
    let idp = config
        .identity_provider
        .context("the configuration has no identity_provider section")?;
    let now = sekisho::session::unix_now();
    Ok(sekisho::idp::add_key(&idp.state_dir.join("keys"), now)?)
}

/// Reloads routes and policies on SIGHUP and whenever the configuration file changes (checked
/// every second). An invalid file is reported in full and the running set is kept.
async fn watch_config(path: PathBuf, proxy: Arc<Proxy>) {
    let fingerprint = |path: &std::path::Path| {
        std::fs::read(path)
            .ok()
            .map(|bytes| ring::digest::digest(&ring::digest::SHA256, &bytes))
    };
    let mut last = fingerprint(&path).map(|d| d.as_ref().to_vec());
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let signalled = match hangup.as_mut() {
            Some(h) => tokio::select! {
                _ = h.recv() => true,
                _ = tick.tick() => false,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let signalled = {
            tick.tick().await;
            false
        };
        let current = fingerprint(&path).map(|d| d.as_ref().to_vec());
        if !signalled && current == last {
            continue;
        }
        last = current;
        match sekisho_config::load(&path) {
            Ok(config) => match proxy.reload(&config) {
                Ok(routes) => {
                    tracing::info!(routes, file = %path.display(), "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration not reloaded; keeping the running routes");
                    proxy.record(lifecycle(
                        Lifecycle::Reload,
                        false,
                        format!("configuration not reloaded: {e}"),
                    ));
                }
            },
            Err(errors) => {
                for error in &errors.errors {
                    tracing::error!(%error, "configuration not reloaded; keeping the running routes");
                }
                let first = errors
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                proxy.record(lifecycle(
                    Lifecycle::Reload,
                    false,
                    format!(
                        "configuration not reloaded ({} errors; first: {first})",
                        errors.errors.len()
                    ),
                ));
            }
        }
    }
}

/// The built-in provider's audit callback: every sign-in attempt becomes an Authentication
/// record (and a log line).
fn idp_audit(
    cell: Arc<std::sync::OnceLock<Arc<AuditLog>>>,
    issuer: &str,
) -> Arc<dyn Fn(sekisho::idp::IdpEvent) + Send + Sync> {
    let issuer = issuer.to_owned();
    Arc::new(move |event: sekisho::idp::IdpEvent| {
        let success = event.outcome == sekisho::idp::IdpOutcome::Success;
        let detail = event.describe();
        let identity = event.username.clone().map(|sub| {
            Arc::new(sekisho::session::Identity {
                sub,
                email: event.email.clone(),
                name: None,
                groups: Vec::new(),
                issuer: issuer.clone(),
                email_verified: None,
                claims: serde_json::Map::new(),
                provider_sid: None,
            })
        });
        let time = i64::try_from(event.time)
            .ok()
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let record = Event::Auth(Box::new(AuthEvent {
            time,
            activity: AuthActivity::Login,
            success,
            detail: Some(detail),
            request_id: None,
            identity,
            session: None,
            provider: Some(issuer.clone()),
            client_ip: Some(event.source_ip),
            peer: None,
            user_agent: None,
            host: None,
        }));
        match cell.get() {
            Some(audit) => {
                if let Err(e) = audit.record(record) {
                    tracing::error!(error = %e, "audit record of a provider sign-in not kept");
                }
            }
            None => tracing::error!("provider sign-in before the audit log opened"),
        }
        sekisho::idp::log_event(event);
    })
}

/// The start record's message: the addresses sekisho listens on, as URLs.
fn started_message(
    http: Option<std::net::SocketAddr>,
    https: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
) -> String {
    let listening: Vec<String> = [
        ("http", http, ""),
        ("https", https, ""),
        ("http", admin, " (admin)"),
    ]
    .into_iter()
    .filter_map(|(scheme, address, what)| address.map(|a| format!("{scheme}://{a}{what}")))
    .collect();
    format!("sekisho started; listening on {}", listening.join(", "))
}

fn lifecycle(activity: Lifecycle, success: bool, message: String) -> Event {
    Event::Lifecycle(Box::new(LifecycleEvent {
        time: jiff::Timestamp::now(),
        activity,
        success,
        message,
    }))
}

/// SIGTERM or SIGINT, registered now: a signal that arrives after this returns (say, right
/// after the readiness line) stops the proxy gracefully instead of killing it by default.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
