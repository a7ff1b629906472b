//! Policies tested like code: `sekisho policy test` runs case files (an identity, a request,
//! the expected decision) against a configuration, and `sekisho policy explain` shows, for one
//! request, the route chosen, the input document and the evaluation trace. Both use exactly the
//! route table and evaluator the proxy uses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sekisho_config::{Config, Scheme};
use serde::Deserialize;

use super::{Decision, Effect, Input, RegoEngines, RegoError, TraceLine, decide, explain};
use crate::normalize::{Address, Ambiguity, Views, normalize_path};
use crate::routes::{Match, RouteTable};
use crate::session::Identity;

/// A case file: `cases:` and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks, shown in the report.
    pub name: String,
    /// Who makes the request; absent: an unauthenticated request.
    #[serde(default)]
    pub identity: Option<CaseIdentity>,
    /// The request.
    pub request: CaseRequest,
    /// `allow` or `deny`.
    pub expect: Expected,
    /// The route id the request must be matched to (optional).
    #[serde(default)]
    pub route: Option<String>,
}

/// The identity of a case, as an ID token would state it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseIdentity {
    /// Subject; defaults to the email.
    #[serde(default)]
    pub sub: Option<String>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// `email_verified` (default true).
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Other claims.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// The request of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// Method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// Absolute URL: scheme, host, optional port, path.
    pub url: String,
    /// Client address (default 127.0.0.1).
    #[serde(default)]
    pub source_ip: Option<IpAddr>,
    /// RFC 3339 time (default: now).
    #[serde(default)]
    pub time: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    /// The request is allowed.
    Allow,
    /// The request is denied (including: no route, method not allowed).
    Deny,
}

/// Why a case or an explanation could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The case file is not valid YAML for the schema.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: String,
        /// What is wrong, with its position.
        message: String,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Request(String),
    /// A rego rule of the configuration did not load.
    #[error(transparent)]
    Rego(#[from] RegoError),
}

/// The policy machinery of one configuration, ready to evaluate requests.
#[derive(Debug)]
pub struct Evaluator<'c> {
    config: &'c Config,
    routes: RouteTable,
    rego: RegoEngines,
}

/// One request evaluated.
#[derive(Debug)]
pub struct Evaluation {
    /// The route chosen (id), or why none was.
    pub route: Result<String, &'static str>,
    /// Allow or deny.
    pub effect: Effect,
    /// The deciding rule, explained.
    pub explanation: String,
    /// The input document.
    pub document: serde_json::Value,
    /// Every rule evaluated.
    pub trace: Vec<TraceLine>,
}

impl<'c> Evaluator<'c> {
    /// Prepares the route table and rego engines of `config`.
    pub fn new(config: &'c Config) -> Result<Self, CaseError> {
        let rego = RegoEngines::prepare(config.routes.iter().map(|r| r.policy.as_ref()))?;
        Ok(Evaluator {
            config,
            routes: RouteTable::new(config.routes.clone()),
            rego,
        })
    }

    /// Evaluates one request as the proxy would.
    pub fn evaluate(
        &self,
        identity: Option<&Identity>,
        request: &CaseRequest,
    ) -> Result<Evaluation, CaseError> {
        let bad = |m: String| CaseError::Request(m);
        let url = url::Url::parse(&request.url)
            .map_err(|e| bad(format!("url {:?}: {e}", request.url)))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(bad(format!("url scheme {other:?} is not http or https"))),
        };
        let host = url
            .host_str()
            .ok_or_else(|| bad("url has no host".into()))?
            .to_ascii_lowercase();
        let path =
            normalize_path(url.path()).map_err(|e| bad(format!("path {:?}: {e}", url.path())))?;
        let method_text = request
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = Method::from_bytes(method_text.as_bytes())
            .map_err(|_| bad(format!("method {method_text:?}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("header name {name:?}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|_| bad(format!("header value {value:?}")))?;
            headers.append(name, value);
        }
        let now = match &request.time {
            Some(text) => text
                .parse::<jiff::Timestamp>()
                .map_err(|e| bad(format!("time {text:?}: {e}")))?,
            None => jiff::Timestamp::now(),
        };
        let input = Input {
            identity,
            method: &method,
            host: &host,
            path: &path,
            source_ip: request
                .source_ip
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            headers: &headers,
            client_certificate: None,
            now,
        };
        let document = input.document();
        let port = url.port();
        let (index, route) = match self.routes.lookup(scheme, &host, port, &method, &path) {
            Match::Found(index, route) => (index, route),
            Match::MethodNotAllowed => {
                return Ok(Evaluation {
                    route: Err("method not allowed on the matching route"),
                    effect: Effect::Deny,
                    explanation: "no route serves this method (405)".into(),
                    document,
                    trace: Vec::new(),
                });
            }
            Match::NoRoute => {
                return Ok(Evaluation {
                    route: Err("no route"),
                    effect: Effect::Deny,
                    explanation: "no route matches (404)".into(),
                    document,
                    trace: Vec::new(),
                });
            }
        };
        // The proxy refuses a path its upstream would read as one routed or decided otherwise;
        // so does the evaluator, with the same reason.
        let refused = |ambiguity: Ambiguity, document, trace| Evaluation {
            route: Ok(route.id.clone()),
            effect: Effect::Deny,
            explanation: format!("refused (400): {}", ambiguity.public_reason()),
            document,
            trace,
        };
        let address = Address {
            scheme,
            host: &host,
            port,
            method: &method,
        };
        let views = match Views::check_route(&self.routes, address, &path, index, route) {
            Ok(views) => views,
            Err(ambiguity) => return Ok(refused(ambiguity, document, Vec::new())),
        };
        let (decision, trace) = explain(&route.policy, &input, &self.rego);
        debug_assert_eq!(
            decision.effect,
            decide(&route.policy, &input, &self.rego).effect
        );
        if let Err(ambiguity) = views.check_decision(
            &self.routes,
            index,
            route,
            &input,
            decision.effect,
            &self.rego,
        ) {
            return Ok(refused(ambiguity, document, trace));
        }
        Ok(Evaluation {
            route: Ok(route.id.clone()),
            effect: effective(&decision, route.mode, identity.is_some()),
            explanation: decision.explanation(),
            document,
            trace,
        })
    }

    /// The configuration evaluated.
    pub fn config(&self) -> &Config {
        self.config
    }
}

/// What the proxy does with a decision in the route's mode (report mode allows authenticated
/// requests a policy denies, and records it).
fn effective(
    decision: &Decision<'_>,
    mode: sekisho_config::policy::PolicyMode,
    authenticated: bool,
) -> Effect {
    match (decision.effect, mode) {
        (Effect::Deny, sekisho_config::policy::PolicyMode::Report) if authenticated => {
            Effect::Allow
        }
        (effect, _) => effect,
    }
}

impl CaseIdentity {
    /// The identity a session with these claims would carry.
    pub fn to_identity(&self, issuer: &str) -> Identity {
        Identity {
            sub: self
                .sub
                .clone()
                .or_else(|| self.email.clone())
                .unwrap_or_else(|| "anonymous".into()),
            email: self.email.clone(),
            name: None,
            groups: self.groups.clone(),
            issuer: issuer.to_owned(),
            email_verified: Some(self.email_verified.unwrap_or(true)),
            claims: self
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), typed(v)))
                .collect(),
            provider_sid: None,
        }
    }
}

/// Case files are read as YAML text, where every scalar arrives as a string: `true`, `false`
/// and numbers become JSON booleans and numbers, as an ID token would carry them.
fn typed(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(text) => match text.as_str() {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            other => other
                .parse::<i64>()
                .map(serde_json::Value::from)
                .or_else(|_| other.parse::<f64>().map(serde_json::Value::from))
                .unwrap_or_else(|_| value.clone()),
        },
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(typed).collect())
        }
        other => other.clone(),
    }
}

/// Parses a case file (YAML); errors name the file and position.
pub fn parse_cases(file: &str, text: &str) -> Result<CaseFile, CaseError> {
    marked_yaml::from_yaml(0, text).map_err(|e| CaseError::File {
        file: file.to_owned(),
        message: e.to_string(),
    })
}

/// The outcome of running a case file.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable output, one line per case plus failure details.
    pub text: String,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
}

/// Runs every case and renders a test-runner style report.
pub fn run_cases(evaluator: &Evaluator<'_>, file: &str, cases: &CaseFile) -> Report {
    let mut report = Report::default();
    let issuer = evaluator
        .config()
        .oidc
        .issuer
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let _ = writeln!(
        report.text,
        "running {} cases from {file}",
        cases.cases.len()
    );
    for (i, case) in cases.cases.iter().enumerate() {
        let identity = case.identity.as_ref().map(|c| c.to_identity(&issuer));
        let outcome = evaluator.evaluate(identity.as_ref(), &case.request);
        let failure = match &outcome {
            Err(e) => Some(format!("    error: {e}\n")),
            Ok(evaluation) => {
                let got = match evaluation.effect {
                    Effect::Allow => Expected::Allow,
                    Effect::Deny => Expected::Deny,
                };
                let route_ok = case
                    .route
                    .as_ref()
                    .is_none_or(|want| evaluation.route.as_ref().is_ok_and(|r| r == want));
                if got == case.expect && route_ok {
                    None
                } else {
                    let mut text = String::new();
                    let _ = writeln!(
                        text,
                        "    expected {:?}, got {:?}: {}",
                        case.expect, got, evaluation.explanation
                    );
                    if !route_ok {
                        let _ = writeln!(
                            text,
                            "    expected route {:?}, got {:?}",
                            case.route, evaluation.route
                        );
                    }
                    text.push_str(&render_trace(&evaluation.trace, "    "));
                    Some(text)
                }
            }
        };
        match failure {
            None => {
                report.passed += 1;
                let _ = writeln!(report.text, "case {} {:?} ... ok", i + 1, case.name);
            }
            Some(details) => {
                report.failed += 1;
                let _ = writeln!(report.text, "case {} {:?} ... FAILED", i + 1, case.name);
                report.text.push_str(&details);
            }
        }
    }
    let verdict = if report.failed == 0 { "ok" } else { "FAILED" };
    let _ = writeln!(
        report.text,
        "\npolicy test result: {verdict}. {} passed; {} failed",
        report.passed, report.failed
    );
    report
}

/// An evaluation trace as indented lines, `✔`/`✘` marking each rule's value.
pub fn render_trace(trace: &[TraceLine], indent: &str) -> String {
    let mut out = String::new();
    for line in trace {
        let mark = if line.value { "✔" } else { "✘" };
        let _ = writeln!(
            out,
            "{indent}{}{mark} {} {}",
            "  ".repeat(line.depth),
            line.path,
            line.text
        );
    }
    out
}

/// Renders `policy explain` output.
pub fn render_explanation(evaluation: &Evaluation) -> String {
    let mut out = String::new();
    match &evaluation.route {
        Ok(id) => {
            let _ = writeln!(out, "route: {id}");
        }
        Err(why) => {
            let _ = writeln!(out, "route: none ({why})");
        }
    }
    let _ = writeln!(
        out,
        "input:\n{}",
        serde_json::to_string_pretty(&evaluation.document).unwrap_or_default()
    );
    if !evaluation.trace.is_empty() {
        let _ = writeln!(out, "trace:\n{}", render_trace(&evaluation.trace, "  "));
    }
    let verdict = match evaluation.effect {
        Effect::Allow => "ALLOW",
        Effect::Deny => "DENY",
    };
    let _ = writeln!(out, "decision: {verdict} ({})", evaluation.explanation);
    out
}
