//! The policy tools: `policy test` runs YAML cases and `policy explain` traces one request, on
//! the route table and evaluator the proxy uses, with the configuration's secrets left out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

// The doc comments of the variants and fields are the commands' help texts.
#[derive(Subcommand)]
pub(super) enum PolicyCommand {
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

/// Loads a configuration for the policy tools: routes and policies only, secrets left
/// unresolved, so policies can be tested without production secrets.
fn load_policies(path: &std::path::Path) -> anyhow::Result<sekisho_config::Config> {
    sekisho_config::load_without_secrets(path)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

/// Runs a `policy` subcommand.
pub(super) fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
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
