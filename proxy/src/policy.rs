//! Authorization: evaluates a route's validated [`Policy`] against one request. Deny overrides
//! allow; when nothing allows, the request is denied; a rule that cannot be evaluated is false,
//! so it never grants access. Evaluation walks the already-compiled rule tree (regexes compiled,
//! addresses parsed, zones resolved at load time) and allocates nothing, except inside a `rego`
//! rule. Every decision names the rule that decided it, for the denial page and the audit log.

use std::collections::HashMap;
use std::net::IpAddr;

use http::{HeaderMap, Method};
use sekisho_config::policy::{
    CertificateMatch, ClaimValue, Criterion, EmailMatch, GroupsMatch, PathMatch, Policy, Rule,
    RuleKind, StringMatch, TimeWindow,
};
use serde_json::{Value, json};

use crate::normalize::path_has_prefix;
use crate::session::Identity;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

/// Why the decision went the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A `deny` rule matched.
    DenyMatched,
    /// The `allow` block held.
    AllowMatched,
    /// The `allow` block did not hold (the rule named is the one that failed).
    AllowNotSatisfied,
    /// The policy has no `allow` block.
    NoAllowBlock,
}

/// A policy decision and the rule behind it.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'p> {
    /// Allow or deny.
    pub effect: Effect,
    /// Why.
    pub reason: Reason,
    /// The rule that decided (for `NoAllowBlock`, none).
    pub rule: Option<&'p Rule>,
    /// The policy evaluated.
    pub policy: &'p Policy,
}

impl Decision<'_> {
    /// `routes[3].policy.allow.and[1] groups has "admins"`-style description of the deciding
    /// rule, for logs, audit records and (when the route opts in) the denial page.
    pub fn explanation(&self) -> String {
        match (self.reason, self.rule) {
            (Reason::NoAllowBlock, _) | (_, None) => {
                format!("{}: no allow block", self.policy.path)
            }
            (Reason::DenyMatched, Some(rule)) => format!("denied by {} {}", rule.path, rule.text),
            (Reason::AllowMatched, Some(rule)) => format!("allowed by {} {}", rule.path, rule.text),
            (Reason::AllowNotSatisfied, Some(rule)) => {
                format!("not allowed: {} {} is false", rule.path, rule.text)
            }
        }
    }
}

/// A client certificate presented over mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCertificate {
    /// SHA-256 of the DER certificate.
    pub fingerprint: [u8; 32],
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_hash: [u8; 32],
}

/// Everything a policy may look at, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The verified identity, if any.
    pub identity: Option<&'a Identity>,
    /// Request method.
    pub method: &'a Method,
    /// Host as addressed (lowercase, no port).
    pub host: &'a str,
    /// The normalised path.
    pub path: &'a str,
    /// The client address (after trusted-proxy resolution).
    pub source_ip: IpAddr,
    /// Request headers (client-sent, before sekisho strips anything).
    pub headers: &'a HeaderMap,
    /// The mTLS client certificate, if one was presented.
    pub client_certificate: Option<&'a ClientCertificate>,
    /// Evaluation time.
    pub now: jiff::Timestamp,
}

impl Input<'_> {
    /// The JSON input document: what `sekisho policy explain` prints and what `rego` rules see.
    pub fn document(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .keys()
            .map(|name| {
                let values: Vec<Value> = self
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                (name.as_str().to_owned(), Value::Array(values))
            })
            .collect();
        json!({
            "identity": self.identity.map(|i| json!({
                "sub": i.sub,
                "email": i.email,
                "email_verified": i.email_verified,
                "name": i.name,
                "groups": i.groups,
                "issuer": i.issuer,
                "claims": i.claims,
            })),
            "request": {
                "method": self.method.as_str(),
                "host": self.host,
                "path": self.path,
                "source_ip": self.source_ip.to_string(),
                "headers": headers,
                "time": self.now.to_string(),
                "client_certificate": self.client_certificate.map(|c| json!({
                    "fingerprint": crate::hex::encode(&c.fingerprint),
                    "spki_hash": crate::hex::encode(&c.spki_hash),
                })),
            },
        })
    }
}

/// One evaluated rule, for explanations.
#[derive(Debug, Clone)]
pub struct TraceLine {
    /// Nesting depth.
    pub depth: usize,
    /// Rule path.
    pub path: String,
    /// Rule rendering.
    pub text: String,
    /// Its value.
    pub value: bool,
}

/// Prepared Rego engines, one per `rego` rule (keyed by rule path).
#[derive(Default)]
pub struct RegoEngines {
    engines: HashMap<String, (regorus::Engine, String)>,
}

impl std::fmt::Debug for RegoEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoEngines")
            .field("rules", &self.engines.len())
            .finish()
    }
}

/// A `rego` rule's module did not load.
#[derive(Debug, thiserror::Error)]
#[error("rego rule {path}: {message}")]
pub struct RegoError {
    /// The rule path.
    pub path: String,
    /// The regorus error.
    pub message: String,
}

impl RegoEngines {
    /// Prepares an engine for every `rego` rule of `policies`.
    pub fn prepare<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Result<Self, RegoError> {
        let mut engines = HashMap::new();
        for policy in policies {
            for block in [&policy.allow, &policy.deny].into_iter().flatten() {
                collect_rego(block, &mut engines)?;
            }
        }
        Ok(RegoEngines { engines })
    }

    fn eval(&self, rule: &Rule, input: &Input<'_>) -> bool {
        let Some((engine, query)) = self.engines.get(&rule.path) else {
            return false;
        };
        let mut engine = engine.clone();
        let document = input.document();
        let Ok(input_value) = regorus::Value::from_json_str(&document.to_string()) else {
            return false;
        };
        engine.set_input(input_value);
        match engine.eval_rule(query.clone()) {
            Ok(value) => value == regorus::Value::from(true),
            Err(e) => {
                tracing::warn!(rule = %rule.path, error = %e, "rego rule failed; treated as false");
                false
            }
        }
    }
}

fn collect_rego(
    rule: &Rule,
    engines: &mut HashMap<String, (regorus::Engine, String)>,
) -> Result<(), RegoError> {
    match &rule.kind {
        RuleKind::And(children)
        | RuleKind::Or(children)
        | RuleKind::Not(children)
        | RuleKind::Nor(children) => {
            for child in children {
                collect_rego(child, engines)?;
            }
            Ok(())
        }
        RuleKind::Criterion(Criterion::Rego(rego)) => {
            let mut engine = regorus::Engine::new();
            engine
                .add_policy(format!("{}.rego", rule.path), rego.module.clone())
                .map_err(|e| RegoError {
                    path: rule.path.clone(),
                    message: e.to_string(),
                })?;
            engines.insert(rule.path.clone(), (engine, rego.query.clone()));
            Ok(())
        }
        RuleKind::Criterion(_) => Ok(()),
    }
}

/// Decides `input` under `policy`.
pub fn decide<'p>(policy: &'p Policy, input: &Input<'_>, rego: &RegoEngines) -> Decision<'p> {
    let eval = Evaluator {
        input,
        rego,
        trace: None,
    };
    eval.decide(policy)
}

/// Decides and records the value of every rule evaluated (for `policy explain` and tests).
pub fn explain<'p>(
    policy: &'p Policy,
    input: &Input<'_>,
    rego: &RegoEngines,
) -> (Decision<'p>, Vec<TraceLine>) {
    let mut trace = Vec::new();
    let decision = {
        let mut eval = TracingEvaluator {
            input,
            rego,
            trace: &mut trace,
        };
        eval.decide(policy)
    };
    (decision, trace)
}

struct Evaluator<'i, 'a> {
    input: &'i Input<'a>,
    rego: &'i RegoEngines,
    trace: Option<()>,
}

impl Evaluator<'_, '_> {
    fn decide<'p>(&self, policy: &'p Policy) -> Decision<'p> {
        let _ = self.trace;
        if let Some(deny) = &policy.deny {
            let (value, rule) = self.rule(deny);
            if value {
                return Decision {
                    effect: Effect::Deny,
                    reason: Reason::DenyMatched,
                    rule: Some(rule),
                    policy,
                };
            }
        }
        match &policy.allow {
            None => Decision {
                effect: Effect::Deny,
                reason: Reason::NoAllowBlock,
                rule: None,
                policy,
            },
            Some(allow) => {
                let (value, rule) = self.rule(allow);
                if value {
                    Decision {
                        effect: Effect::Allow,
                        reason: Reason::AllowMatched,
                        rule: Some(rule),
                        policy,
                    }
                } else {
                    Decision {
                        effect: Effect::Deny,
                        reason: Reason::AllowNotSatisfied,
                        rule: Some(rule),
                        policy,
                    }
                }
            }
        }
    }

    /// The rule's value and the rule that determined it.
    fn rule<'p>(&self, rule: &'p Rule) -> (bool, &'p Rule) {
        match &rule.kind {
            RuleKind::And(children) => all(children, |c| self.rule(c)).unwrap_or((true, rule)),
            RuleKind::Or(children) => any(children, |c| self.rule(c)).unwrap_or((false, rule)),
            RuleKind::Not(children) => {
                let (v, r) = all(children, |c| self.rule(c)).unwrap_or((true, rule));
                (!v, r)
            }
            RuleKind::Nor(children) => {
                let (v, r) = any(children, |c| self.rule(c)).unwrap_or((false, rule));
                (!v, r)
            }
            RuleKind::Criterion(criterion) => (
                criterion_holds(criterion, rule, self.input, self.rego),
                rule,
            ),
        }
    }
}

/// The first false child, if any (short-circuit AND).
fn all<'p>(
    children: &'p [Rule],
    mut eval: impl FnMut(&'p Rule) -> (bool, &'p Rule),
) -> Option<(bool, &'p Rule)> {
    children.iter().map(&mut eval).find(|(v, _)| !v)
}

/// The first true child, if any (short-circuit OR).
fn any<'p>(
    children: &'p [Rule],
    mut eval: impl FnMut(&'p Rule) -> (bool, &'p Rule),
) -> Option<(bool, &'p Rule)> {
    children.iter().map(&mut eval).find(|(v, _)| *v)
}

struct TracingEvaluator<'i, 'a, 't> {
    input: &'i Input<'a>,
    rego: &'i RegoEngines,
    trace: &'t mut Vec<TraceLine>,
}

impl TracingEvaluator<'_, '_, '_> {
    fn decide<'p>(&mut self, policy: &'p Policy) -> Decision<'p> {
        // Explanations evaluate every rule (no short-circuit) so the trace is complete; the
        // decision itself comes from the short-circuit evaluator, so both always agree.
        for block in [&policy.deny, &policy.allow].into_iter().flatten() {
            self.rule(block, 0);
        }
        Evaluator {
            input: self.input,
            rego: self.rego,
            trace: None,
        }
        .decide(policy)
    }

    /// Evaluates every child (no short-circuit, so each appears in the trace); returns
    /// (all true, any true).
    fn every(&mut self, children: &[Rule], depth: usize) -> (bool, bool) {
        let (mut all, mut any) = (true, false);
        for child in children {
            let value = self.rule(child, depth + 1);
            all &= value;
            any |= value;
        }
        (all, any)
    }

    fn rule(&mut self, rule: &Rule, depth: usize) -> bool {
        let index = self.trace.len();
        self.trace.push(TraceLine {
            depth,
            path: rule.path.clone(),
            text: rule.text.clone(),
            value: false,
        });
        let value = match &rule.kind {
            RuleKind::And(children) => self.every(children, depth).0,
            RuleKind::Or(children) => self.every(children, depth).1,
            RuleKind::Not(children) => !self.every(children, depth).0,
            RuleKind::Nor(children) => !self.every(children, depth).1,
            RuleKind::Criterion(criterion) => {
                criterion_holds(criterion, rule, self.input, self.rego)
            }
        };
        if let Some(line) = self.trace.get_mut(index) {
            line.value = value;
        }
        value
    }
}

fn criterion_holds(
    criterion: &Criterion,
    rule: &Rule,
    input: &Input<'_>,
    rego: &RegoEngines,
) -> bool {
    let identity = input.identity;
    match criterion {
        Criterion::AuthenticatedUser => identity.is_some(),
        Criterion::Email(matcher) => verified_email(identity)
            .is_some_and(|(local, domain)| email_matches(matcher, local, domain)),
        Criterion::Domain(domains) => verified_email(identity)
            .is_some_and(|(_, domain)| domains.iter().any(|d| d.eq_ignore_ascii_case(domain))),
        Criterion::Groups(matcher) => identity.is_some_and(|i| groups_match(matcher, &i.groups)),
        Criterion::Claim { name, values } => identity
            .and_then(|i| i.claims.get(name))
            .is_some_and(|claim| claim_matches(claim, values)),
        Criterion::HttpMethod(methods) => methods.iter().any(|m| m == input.method.as_str()),
        Criterion::HttpPath(matcher) => path_matches(matcher, input.path),
        Criterion::SourceIp(nets) => {
            let ip = canonical_ip(input.source_ip);
            nets.iter().any(|net| net.contains(&ip))
        }
        Criterion::Time(window) => time_matches(window, input.now),
        Criterion::ClientCertificate(matcher) => input
            .client_certificate
            .is_some_and(|c| certificate_matches(matcher, c)),
        Criterion::Header { name, matcher } => header_matches(input.headers, name, matcher),
        Criterion::Rego(_) => rego.eval(rule, input),
    }
}

/// The identity's email as (local part, domain), when present, well-formed (exactly one `@`)
/// and verified ([`Identity::verified_email`]).
fn verified_email(identity: Option<&Identity>) -> Option<(&str, &str)> {
    let email = identity?.verified_email()?;
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some((local, domain))
}

fn email_matches(matcher: &EmailMatch, local: &str, domain: &str) -> bool {
    let same = |a: &sekisho_config::policy::EmailAddress| {
        a.local == local && a.domain.eq_ignore_ascii_case(domain)
    };
    match matcher {
        EmailMatch::Is(address) => same(address),
        EmailMatch::In(addresses) => addresses.iter().any(same),
        EmailMatch::EndsWith(suffix) => match suffix.strip_prefix('@') {
            Some(exact_domain) => domain.eq_ignore_ascii_case(exact_domain),
            None => {
                domain.len() > suffix.len()
                    && domain
                        .get(domain.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        },
    }
}

fn groups_match(matcher: &GroupsMatch, groups: &[String]) -> bool {
    let has = |g: &String| groups.iter().any(|mine| mine == g);
    match matcher {
        GroupsMatch::Has(group) => has(group),
        GroupsMatch::AnyOf(wanted) => wanted.iter().any(has),
        GroupsMatch::AllOf(wanted) => wanted.iter().all(has),
    }
}

fn claim_matches(claim: &Value, values: &[ClaimValue]) -> bool {
    let scalar = |v: &Value| {
        values.iter().any(|want| match (want, v) {
            (ClaimValue::String(s), Value::String(c)) => s == c,
            (ClaimValue::Bool(b), Value::Bool(c)) => b == c,
            (ClaimValue::Number(n), Value::Number(c)) => c.as_f64().is_some_and(|c| c == *n),
            _ => false,
        })
    };
    match claim {
        Value::Array(items) => items.iter().any(scalar),
        other => scalar(other),
    }
}

/// Tests a path against a matcher (shared with route matching).
pub fn path_matches(matcher: &PathMatch, path: &str) -> bool {
    match matcher {
        PathMatch::Exact(exact) => path == exact,
        PathMatch::Prefix(prefix) => path_has_prefix(path, prefix),
        PathMatch::Regex(regex) => regex.is_match(path),
    }
}

/// `policy` as an upstream that ignores case reads it: `http_path` literals case-folded and
/// regexes case-insensitive, everything else as it is (rule paths kept, so `rego` engines and
/// explanations still apply).
pub fn fold_case(policy: &Policy) -> Policy {
    Policy {
        name: policy.name.clone(),
        path: policy.path.clone(),
        allow: policy.allow.as_ref().map(fold_rule),
        deny: policy.deny.as_ref().map(fold_rule),
    }
}

fn fold_rule(rule: &Rule) -> Rule {
    let fold_all = |children: &[Rule]| children.iter().map(fold_rule).collect();
    let kind = match &rule.kind {
        RuleKind::And(children) => RuleKind::And(fold_all(children)),
        RuleKind::Or(children) => RuleKind::Or(fold_all(children)),
        RuleKind::Not(children) => RuleKind::Not(fold_all(children)),
        RuleKind::Nor(children) => RuleKind::Nor(fold_all(children)),
        RuleKind::Criterion(Criterion::HttpPath(matcher)) => {
            RuleKind::Criterion(Criterion::HttpPath(fold_path_match(matcher)))
        }
        RuleKind::Criterion(other) => RuleKind::Criterion(other.clone()),
    };
    Rule {
        path: rule.path.clone(),
        text: rule.text.clone(),
        kind,
    }
}

/// True when `route`'s path test or its policy's `http_path` rules could match differently once
/// case is folded: a literal with an upper-case letter, or a regex.
pub fn case_matters(route: &sekisho_config::Route) -> bool {
    fn matcher(m: &PathMatch) -> bool {
        match m {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => sekisho_config::path::has_upper_case(p),
            PathMatch::Regex(_) => true,
        }
    }
    fn rule(r: &Rule) -> bool {
        match &r.kind {
            RuleKind::And(c) | RuleKind::Or(c) | RuleKind::Not(c) | RuleKind::Nor(c) => {
                c.iter().any(rule)
            }
            RuleKind::Criterion(Criterion::HttpPath(m)) => matcher(m),
            RuleKind::Criterion(_) => false,
        }
    }
    sekisho_config::path::has_upper_case(&route.from.path_prefix)
        || route.path.as_ref().is_some_and(matcher)
        || [&route.policy.allow, &route.policy.deny]
            .into_iter()
            .flatten()
            .any(rule)
}

/// A path test as an upstream that ignores case reads it: literals case-folded, a regex made
/// case-insensitive (kept as it is in the unlikely case it no longer compiles so).
pub fn fold_path_match(matcher: &PathMatch) -> PathMatch {
    use sekisho_config::path::fold_case;
    match matcher {
        PathMatch::Exact(path) => PathMatch::Exact(fold_case(path)),
        PathMatch::Prefix(prefix) => PathMatch::Prefix(fold_case(prefix)),
        PathMatch::Regex(regex) => regex::RegexBuilder::new(regex.as_str())
            .case_insensitive(true)
            .build()
            .map_or_else(
                |_| PathMatch::Regex(regex.clone()),
                |folded| PathMatch::Regex(std::sync::Arc::new(folded)),
            ),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are tested as the IPv4 address they carry.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn time_matches(window: &TimeWindow, now: jiff::Timestamp) -> bool {
    let local = now.to_zoned(window.time_zone.clone());
    let day_bit = 1u8 << (local.weekday().to_monday_zero_offset() as u8);
    let minute =
        u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
    let (from, to) = (window.from_minute, window.to_minute);
    if to > from {
        window.days & day_bit != 0 && minute >= from && minute < to
    } else {
        // Wraps midnight: the part after midnight belongs to the previous day's window.
        let previous_bit = if day_bit == 1 { 1 << 6 } else { day_bit >> 1 };
        (window.days & day_bit != 0 && minute >= from)
            || (window.days & previous_bit != 0 && minute < to)
    }
}

fn certificate_matches(matcher: &CertificateMatch, cert: &ClientCertificate) -> bool {
    matcher.fingerprints.contains(&cert.fingerprint)
        || matcher.spki_hashes.contains(&cert.spki_hash)
}

fn header_matches(headers: &HeaderMap, name: &str, matcher: &StringMatch) -> bool {
    let mut values = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    match matcher {
        StringMatch::Present => values.peek().is_some(),
        StringMatch::Is(want) => values.any(|v| v == want),
        StringMatch::Prefix(want) => values.any(|v| v.starts_with(want.as_str())),
        StringMatch::Regex(regex) => values.any(|v| regex.is_match(v)),
    }
}

pub mod cases;

#[cfg(test)]
mod tests;
