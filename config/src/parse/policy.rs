//! Policies: the `policies:` section and each route's `policy`, walked into [`crate::policy`]
//! trees whose rules carry their configuration path and a one-line rendering. Every criterion
//! value is parsed here (regexes and Rego modules compiled, zones resolved, hashes decoded), so
//! the evaluator re-checks nothing.

use std::fmt::Display;
use std::sync::Arc;

use marked_yaml::Node;

use super::Parser;
use crate::error::Problem;
use crate::policy::{
    CertificateMatch, ClaimValue, Criterion, EmailMatch, GroupsMatch, PathMatch, Policy, RegoRule,
    Rule, RuleKind, StringMatch, TimeWindow,
};
use crate::value::{self, ValueError};
use crate::walk::{Entry, Field, join};

/// Keys of a policy.
const POLICY: &[&str] = &["allow", "deny"];
/// The combinators: each holds a non-empty list of rules.
const COMBINATORS: &[&str] = &["and", "or", "not", "nor"];
/// The criteria, as listed in errors. `claim/` and `header/` are followed by a name.
const CRITERIA: &[&str] = &[
    "authenticated_user",
    "email",
    "domain",
    "groups",
    "claim/NAME",
    "http_method",
    "http_path",
    "source_ip",
    "time",
    "client_certificate",
    "header/NAME",
    "rego",
];
/// Prefix of the claim criterion's key.
const CLAIM_PREFIX: &str = "claim/";
/// Prefix of the header criterion's key.
const HEADER_PREFIX: &str = "header/";
/// Keys of `email`.
const EMAIL: &[&str] = &["is", "ends_with", "in"];
/// Keys of `domain`, `claim/NAME` and `http_method`.
const IS_IN: &[&str] = &["is", "in"];
/// Keys of `groups`.
const GROUPS: &[&str] = &["has", "any_of", "all_of"];
/// Keys of `http_path` and of a route's `path`.
const PATH: &[&str] = &["exact", "prefix", "regex"];
/// Keys of `header/NAME`.
const HEADER: &[&str] = &["is", "prefix", "regex", "present"];
/// Keys of `time`.
const TIME: &[&str] = &["days", "hours", "time_zone"];
/// Keys of `time.hours`.
const HOURS: &[&str] = &["from", "to"];
/// Keys of `client_certificate`.
const CLIENT_CERTIFICATE: &[&str] = &["fingerprint", "spki_hash"];
/// Keys of `rego`.
const REGO: &[&str] = &["module", "query"];
/// The query of a `rego` rule that names none.
const DEFAULT_REGO_QUERY: &str = "data.sekisho.allow";

/// The names written under `policies:`, for resolving the routes' `policy: NAME`.
#[derive(Debug)]
pub(super) struct SharedPolicies {
    /// Each name as written, with its policy when the name and policy are valid (otherwise
    /// their problems are reported), in file order.
    entries: Vec<(String, Option<Arc<Policy>>)>,
    /// Whether every name is known: false when `policies` itself was malformed, so that a
    /// reference is not reported as unknown on top of that.
    complete: bool,
}

impl SharedPolicies {
    /// No `policies:` section: every name is unknown.
    pub(super) fn none() -> Self {
        Self {
            entries: Vec::new(),
            complete: true,
        }
    }

    /// The policies in file order, when all are valid.
    pub(super) fn all(&self) -> Option<Vec<Arc<Policy>>> {
        self.entries
            .iter()
            .map(|(_, policy)| policy.clone())
            .collect()
    }
}

impl Parser<'_> {
    /// `policies`: a mapping of names to policies.
    pub(super) fn policies(&mut self, field: &Field<'_>) -> SharedPolicies {
        let Some(entries) = self
            .walk
            .entries(field, "a mapping of policy names to policies")
        else {
            return SharedPolicies {
                entries: Vec::new(),
                complete: false,
            };
        };
        let mut shared = SharedPolicies::none();
        for entry in &entries {
            let name = match value::policy_name(entry.key) {
                Ok(name) => Some(name),
                Err(error) => {
                    self.walk.report(entry.key_pos, &entry.value.path, error);
                    None
                }
            };
            let policy = if entry.value.is_null() {
                self.walk
                    .report(entry.key_pos, &entry.value.path, Problem::Null);
                None
            } else {
                self.policy(&entry.value, name.clone())
            };
            let policy = name.and(policy).map(Arc::new);
            shared.entries.push((entry.key.trim().to_owned(), policy));
        }
        shared
    }

    /// A route's `policy`: the name of a shared policy, or an inline policy.
    pub(super) fn route_policy(
        &mut self,
        field: &Field<'_>,
        shared: &SharedPolicies,
    ) -> Option<Arc<Policy>> {
        match field.node {
            Node::Scalar(_) => {
                let name = self.walk.string(field)?.trim();
                match shared.entries.iter().find(|(known, _)| known == name) {
                    // `None`: the shared policy is invalid, and reported.
                    Some((_, policy)) => policy.clone(),
                    None if !shared.complete => None,
                    None => {
                        let names: Vec<&str> = shared
                            .entries
                            .iter()
                            .map(|(name, _)| name.as_str())
                            .collect();
                        let defined = if names.is_empty() {
                            "`policies:` defines none".to_owned()
                        } else {
                            format!("defined: {}", names.join(", "))
                        };
                        let problem = Problem::UnknownPolicy {
                            name: name.to_owned(),
                            defined,
                        };
                        self.walk.report_at(field, problem);
                        None
                    }
                }
            }
            Node::Mapping(_) => self.policy(field, None).map(Arc::new),
            Node::Sequence(_) => {
                let problem = Problem::WrongType {
                    expected: "a policy name or an inline policy (`{allow: ..., deny: ...}`)",
                    found: "a list",
                };
                self.walk.report_at(field, problem);
                None
            }
        }
    }

    /// A policy: `allow`, `deny` or both.
    fn policy(&mut self, field: &Field<'_>, name: Option<String>) -> Option<Policy> {
        let map = self.walk.mapping(field, POLICY)?;
        let allow = self.optional(&map, "allow", Self::block);
        let deny = self.optional(&map, "deny", Self::block);
        if map.get("allow").is_none() && map.get("deny").is_none() {
            // Only unknown keys: each is reported already.
            if map.is_empty() || map.only(POLICY) {
                self.walk
                    .report(map.pos(), &field.path, Problem::PolicyEmpty);
            }
            return None;
        }
        Some(Policy {
            name,
            path: field.path.clone(),
            allow: allow?,
            deny: deny?,
        })
    }

    /// An `allow` or `deny` block: exactly one combinator and its rules. The block is the rule
    /// at its own path, like `policies.admins.allow`.
    fn block(&mut self, field: &Field<'_>) -> Option<Rule> {
        let entries = self
            .walk
            .entries(field, "a mapping with one of and, or, not, nor")?;
        match entries.as_slice() {
            [] => {
                self.walk.report_at(field, Problem::BlockEmpty);
                None
            }
            [entry] if COMBINATORS.contains(&entry.key) => self.combinator(&field.path, entry),
            [entry] if is_criterion(entry.key) => {
                let problem = Problem::BlockCriterion {
                    key: entry.key.to_owned(),
                };
                self.walk.report(entry.key_pos, &entry.value.path, problem);
                None
            }
            [entry] => {
                let problem = Problem::UnknownField {
                    key: entry.key.to_owned(),
                    expected: COMBINATORS.join(", "),
                };
                self.walk.report(entry.key_pos, &entry.value.path, problem);
                None
            }
            [_, second, ..] => {
                let problem = Problem::BlockSeveral {
                    keys: keys_of(&entries),
                };
                self.walk
                    .report(second.key_pos, &second.value.path, problem);
                // Still walk each, so that problems inside are reported too.
                for entry in entries.iter().filter(|e| COMBINATORS.contains(&e.key)) {
                    self.combinator(&field.path, entry);
                }
                None
            }
        }
    }

    /// One rule: a mapping with exactly one key, a combinator or a criterion.
    fn rule(&mut self, field: &Field<'_>) -> Option<Rule> {
        let entries = self
            .walk
            .entries(field, "a rule (a mapping with one key)")?;
        match entries.as_slice() {
            [] => {
                self.walk.report_at(field, Problem::RuleEmpty);
                None
            }
            [entry] => self.rule_entry(&field.path, entry),
            [_, second, ..] => {
                let problem = Problem::RuleSeveral {
                    keys: keys_of(&entries),
                };
                self.walk
                    .report(second.key_pos, &second.value.path, problem);
                for entry in &entries {
                    self.rule_entry(&field.path, entry);
                }
                None
            }
        }
    }

    /// The rule at `path` whose one key and value are `entry`.
    fn rule_entry(&mut self, path: &str, entry: &Entry<'_>) -> Option<Rule> {
        let key = entry.key;
        if COMBINATORS.contains(&key) {
            return self.combinator(path, entry);
        }
        if !is_criterion(key) {
            let problem = Problem::UnknownCriterion {
                key: key.to_owned(),
                combinators: COMBINATORS.join(", "),
                criteria: CRITERIA.join(", "),
            };
            self.walk.report(entry.key_pos, &entry.value.path, problem);
            return None;
        }
        if entry.value.is_null() {
            self.walk
                .report(entry.key_pos, &entry.value.path, Problem::Null);
            return None;
        }
        let field = &entry.value;
        let (text, criterion) = match key {
            "authenticated_user" => self.authenticated_user(field)?,
            "email" => self.email(field)?,
            "domain" => self.domain(field)?,
            "groups" => self.groups(field)?,
            "http_method" => self.http_method(field)?,
            "http_path" => {
                let matcher = self.path_match(field)?;
                (format!("http_path {matcher}"), Criterion::HttpPath(matcher))
            }
            "source_ip" => self.source_ip(field)?,
            "time" => self.time(field)?,
            "client_certificate" => self.client_certificate(entry)?,
            "rego" => self.rego(path, field)?,
            _ if key.starts_with(CLAIM_PREFIX) => self.claim(entry)?,
            _ => self.header(entry)?,
        };
        Some(Rule {
            path: path.to_owned(),
            text,
            kind: RuleKind::Criterion(criterion),
        })
    }

    /// `and`, `or`, `not` or `nor` with its non-empty list of rules, as the rule at `path`.
    fn combinator(&mut self, path: &str, entry: &Entry<'_>) -> Option<Rule> {
        if entry.value.is_null() {
            self.walk
                .report(entry.key_pos, &entry.value.path, Problem::Null);
            return None;
        }
        let rules = self.non_empty_list_of(&entry.value, Self::rule)?;
        let count = rules.len();
        let plural = if count == 1 { "" } else { "s" };
        let text = format!("{} ({count} rule{plural})", entry.key);
        let kind = match entry.key {
            "and" => RuleKind::And(rules),
            "or" => RuleKind::Or(rules),
            "not" => RuleKind::Not(rules),
            _ => RuleKind::Nor(rules),
        };
        Some(Rule {
            path: path.to_owned(),
            text,
            kind,
        })
    }

    /// `authenticated_user: true`.
    fn authenticated_user(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        if !self.walk.bool(field)? {
            let problem = Problem::OnlyTrue("authenticated_user".to_owned());
            self.walk.report_at(field, problem);
            return None;
        }
        Some((
            "authenticated_user".to_owned(),
            Criterion::AuthenticatedUser,
        ))
    }

    /// `email: {is | ends_with | in}`.
    fn email(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        let (key, found) = self.one_of(field, EMAIL)?;
        let matcher = match key {
            "is" => EmailMatch::Is(self.walk.value(&found, value::email_address)?),
            "ends_with" => EmailMatch::EndsWith(self.walk.value(&found, value::email_suffix)?),
            _ => EmailMatch::In(self.distinct_values(&found, value::email_address)?),
        };
        let text = match &matcher {
            EmailMatch::Is(address) => format!("email is {}", quoted(address)),
            EmailMatch::EndsWith(suffix) => format!("email ends_with {suffix:?}"),
            EmailMatch::In(addresses) => format!("email in {}", quoted_list(addresses)),
        };
        Some((text, Criterion::Email(matcher)))
    }

    /// `domain: {is | in}`.
    fn domain(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        let (key, found) = self.one_of(field, IS_IN)?;
        let domains = self.one_or_many(key, &found, value::domain)?;
        let text = match domains.as_slice() {
            [domain] if key == "is" => format!("domain is {domain:?}"),
            _ => format!("domain in {}", quoted_list(&domains)),
        };
        Some((text, Criterion::Domain(domains)))
    }

    /// `groups: {has | any_of | all_of}`.
    fn groups(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        let (key, found) = self.one_of(field, GROUPS)?;
        let (text, matcher) = match key {
            "has" => {
                let group = self.walk.value(&found, value::non_empty)?;
                (format!("groups has {group:?}"), GroupsMatch::Has(group))
            }
            "any_of" => {
                let groups = self.distinct_values(&found, value::non_empty)?;
                let text = format!("groups any_of {}", quoted_list(&groups));
                (text, GroupsMatch::AnyOf(groups))
            }
            _ => {
                let groups = self.distinct_values(&found, value::non_empty)?;
                let text = format!("groups all_of {}", quoted_list(&groups));
                (text, GroupsMatch::AllOf(groups))
            }
        };
        Some((text, Criterion::Groups(matcher)))
    }

    /// `claim/NAME: {is | in}` with string, number or boolean values.
    fn claim(&mut self, entry: &Entry<'_>) -> Option<(String, Criterion)> {
        let name = entry
            .key
            .strip_prefix(CLAIM_PREFIX)
            .unwrap_or_default()
            .trim();
        if name.is_empty() {
            let problem = Problem::MissingName("claim/department");
            self.walk.report(entry.key_pos, &entry.value.path, problem);
        }
        let (key, found) = self.one_of(&entry.value, IS_IN)?;
        let values = match key {
            "is" => vec![self.claim_value(&found)?],
            _ => self.distinct_items(&found, Self::claim_value)?,
        };
        if name.is_empty() {
            return None;
        }
        let text = match values.as_slice() {
            [claim] if key == "is" => format!("claim/{name} is {claim}"),
            _ => format!("claim/{name} in {}", plain_list(&values)),
        };
        let criterion = Criterion::Claim {
            name: name.to_owned(),
            values,
        };
        Some((text, criterion))
    }

    /// One claim value: an unquoted `true`/`false` is a boolean, an unquoted finite number a
    /// number, anything else (quoted `"true"` too) a string.
    fn claim_value(&mut self, field: &Field<'_>) -> Option<ClaimValue> {
        let found = match field.node {
            Node::Scalar(_) if field.is_null() => {
                self.walk.report_at(field, Problem::Null);
                return None;
            }
            Node::Scalar(scalar) => {
                if let Some(flag) = scalar.as_bool() {
                    return Some(ClaimValue::Bool(flag));
                }
                if let Some(number) = scalar.as_f64().filter(|number| number.is_finite()) {
                    return Some(ClaimValue::Number(number));
                }
                return Some(ClaimValue::String(scalar.as_str().to_owned()));
            }
            Node::Mapping(_) => "a mapping",
            Node::Sequence(_) => "a list",
        };
        let problem = Problem::WrongType {
            expected: "a string, number or boolean",
            found,
        };
        self.walk.report_at(field, problem);
        None
    }

    /// `http_method: {is | in}`.
    fn http_method(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        let (key, found) = self.one_of(field, IS_IN)?;
        let methods = self.one_or_many(key, &found, value::http_method)?;
        let text = match methods.as_slice() {
            [method] if key == "is" => format!("http_method is {method:?}"),
            _ => format!("http_method in {}", quoted_list(&methods)),
        };
        Some((text, Criterion::HttpMethod(methods)))
    }

    /// A path test, `{exact | prefix | regex}`: the `http_path` criterion and a route's `path`.
    pub(super) fn path_match(&mut self, field: &Field<'_>) -> Option<PathMatch> {
        let (key, found) = self.one_of(field, PATH)?;
        match key {
            "exact" => self
                .walk
                .value(&found, value::request_path)
                .map(PathMatch::Exact),
            "prefix" => self
                .walk
                .value(&found, value::path_prefix)
                .map(PathMatch::Prefix),
            _ => self.walk.value(&found, value::regex).map(PathMatch::Regex),
        }
    }

    /// `source_ip: [CIDR, ...]`.
    fn source_ip(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        let networks = self.distinct_values(field, value::ip_net)?;
        let text = format!("source_ip in {}", plain_list(&networks));
        Some((text, Criterion::SourceIp(networks)))
    }

    /// `time: {days, hours, time_zone}`, at least one of days and hours.
    fn time(&mut self, field: &Field<'_>) -> Option<(String, Criterion)> {
        let map = self.walk.mapping(field, TIME)?;
        let days = self.or_default(
            &map,
            "days",
            |p, f| {
                let days = p.distinct_items(f, |p, item| p.walk.value(item, value::weekday))?;
                Some(days.into_iter().fold(0, |all, day| all | day))
            },
            || TimeWindow::ALL_DAYS,
        );
        let hours = self.or_default(&map, "hours", Self::hours, || (0, TimeWindow::END_OF_DAY));
        let time_zone = self.or_default(
            &map,
            "time_zone",
            |p, f| p.walk.value(f, value::time_zone),
            || ("UTC".to_owned(), jiff::tz::TimeZone::UTC),
        );
        if map.get("days").is_none() && map.get("hours").is_none() {
            if map.only(TIME) {
                self.walk
                    .report(map.pos(), &field.path, Problem::TimeWindowEmpty);
            }
            return None;
        }
        let (from_minute, to_minute) = hours?;
        let (time_zone_name, time_zone) = time_zone?;
        let window = TimeWindow {
            days: days?,
            from_minute,
            to_minute,
            time_zone_name,
            time_zone,
        };
        Some((format!("time {window}"), Criterion::Time(window)))
    }

    /// `time.hours: {from, to}` as start and end minute; `to: 00:00` is the end of the day.
    fn hours(&mut self, field: &Field<'_>) -> Option<(u16, u16)> {
        let map = self.walk.mapping(field, HOURS)?;
        let from_field = self.walk.required(&map, "from");
        let from = from_field
            .as_ref()
            .and_then(|f| self.walk.value(f, value::time_of_day));
        let to = self
            .walk
            .required(&map, "to")
            .and_then(|f| self.walk.value(&f, value::time_of_day))
            .map(|to| if to == 0 { TimeWindow::END_OF_DAY } else { to });
        if let (Some(TimeWindow::END_OF_DAY), Some(from_field)) = (from, &from_field) {
            self.walk
                .report_at(from_field, Problem::TimeFromMidnightEnd);
            return None;
        }
        let (from, to) = (from?, to?);
        if from == to {
            self.walk
                .report(map.pos(), &field.path, Problem::TimeWindowZero);
            return None;
        }
        Some((from, to))
    }

    /// `client_certificate: {fingerprint, spki_hash}`; needs `server.client_ca_file`.
    fn client_certificate(&mut self, entry: &Entry<'_>) -> Option<(String, Criterion)> {
        let field = &entry.value;
        if !self.mtls {
            self.walk.report(
                entry.key_pos,
                &field.path,
                Problem::ClientCertificateWithoutCa,
            );
        }
        let map = self.walk.mapping(field, CLIENT_CERTIFICATE)?;
        let hashes = |p: &mut Self, f: &Field<'_>| p.distinct_values(f, value::sha256_hex);
        let fingerprints = self.or_default(&map, "fingerprint", hashes, Vec::new);
        let spki_hashes = self.or_default(&map, "spki_hash", hashes, Vec::new);
        if map.get("fingerprint").is_none() && map.get("spki_hash").is_none() {
            if map.only(CLIENT_CERTIFICATE) {
                self.walk
                    .report(map.pos(), &field.path, Problem::ClientCertificateEmpty);
            }
            return None;
        }
        let matcher = CertificateMatch {
            fingerprints: fingerprints?,
            spki_hashes: spki_hashes?,
        };
        if !self.mtls {
            return None;
        }
        let mut parts = Vec::new();
        for (name, hashes) in [
            ("fingerprint", &matcher.fingerprints),
            ("spki_hash", &matcher.spki_hashes),
        ] {
            if !hashes.is_empty() {
                let plural = if hashes.len() == 1 { "" } else { "s" };
                parts.push(format!("{name} in [{} value{plural}]", hashes.len()));
            }
        }
        let text = format!("client_certificate {}", parts.join(" or "));
        Some((text, Criterion::ClientCertificate(matcher)))
    }

    /// `header/NAME: {is | prefix | regex | present}`.
    fn header(&mut self, entry: &Entry<'_>) -> Option<(String, Criterion)> {
        let written = entry.key.strip_prefix(HEADER_PREFIX).unwrap_or_default();
        let name = match value::header_token(written) {
            Ok(name) => Some(name),
            Err(ValueError::Empty) => {
                let problem = Problem::MissingName("header/x-environment");
                self.walk.report(entry.key_pos, &entry.value.path, problem);
                None
            }
            Err(error) => {
                self.walk.report(entry.key_pos, &entry.value.path, error);
                None
            }
        };
        let (key, found) = self.one_of(&entry.value, HEADER)?;
        let matcher = match key {
            "is" => StringMatch::Is(self.walk.string(&found)?.to_owned()),
            "prefix" => StringMatch::Prefix(self.walk.string(&found)?.to_owned()),
            "regex" => StringMatch::Regex(self.walk.value(&found, value::regex)?),
            _ => {
                if !self.walk.bool(&found)? {
                    let problem = Problem::OnlyTrue(format!("header/{}", name.unwrap_or_default()));
                    self.walk.report_at(&found, problem);
                    return None;
                }
                StringMatch::Present
            }
        };
        let name = name?;
        let text = format!("header/{name} {matcher}");
        Some((text, Criterion::Header { name, matcher }))
    }

    /// `rego: {module, query}`: the module must parse and compile, and the query name one of
    /// its rules. The rule at `path` names the module in regorus' messages.
    fn rego(&mut self, path: &str, field: &Field<'_>) -> Option<(String, Criterion)> {
        let map = self.walk.mapping(field, REGO)?;
        let module_field = self.walk.required(&map, "module");
        let module = module_field
            .as_ref()
            .and_then(|f| self.walk.string(f))
            .map(str::to_owned);
        let query_field = map.get("query");
        let query = self.or_default(
            &map,
            "query",
            |p, f| p.walk.value(f, value::non_empty),
            || DEFAULT_REGO_QUERY.to_owned(),
        );
        let (module, query, module_field) = (module?, query?, module_field?);
        match check_rego(path, &module, &query) {
            Ok(()) => {}
            Err(RegoFailure::Module(message)) => {
                self.walk.report_at(&module_field, Problem::Rego(message));
                return None;
            }
            Err(RegoFailure::Query { package }) => {
                let pos = query_field.as_ref().map_or_else(|| map.pos(), Field::pos);
                let problem = Problem::RegoQuery {
                    query: query.clone(),
                    package,
                };
                self.walk.report(pos, &join(&field.path, "query"), problem);
                return None;
            }
        }
        let text = format!("rego {query}");
        Some((text, Criterion::Rego(RegoRule { module, query })))
    }

    /// The one key of the mapping `field` among `keys`, and its value: `{is: x}`.
    fn one_of<'n>(
        &mut self,
        field: &Field<'n>,
        keys: &'static [&'static str],
    ) -> Option<(&'static str, Field<'n>)> {
        let map = self.walk.mapping(field, keys)?;
        let mut written: Vec<&'static str> =
            keys.iter().copied().filter(|key| map.has(key)).collect();
        written.sort_by_key(|key| map.key_pos(key).map(|pos| (pos.line, pos.column)));
        match written.as_slice() {
            [key] => {
                let found = self.walk.required(&map, key)?;
                Some((key, found))
            }
            [] => {
                // Only unknown keys: each is reported already.
                if map.is_empty() {
                    let problem = Problem::OneOfMissing(keys.join(", "));
                    self.walk.report(map.pos(), &field.path, problem);
                }
                None
            }
            [_, second, ..] => {
                let pos = map.key_pos(second).unwrap_or_else(|| map.pos());
                let problem = Problem::OneOfSeveral(keys.join(", "));
                self.walk.report(pos, &join(&field.path, second), problem);
                None
            }
        }
    }

    /// `is: x` as `[x]`, `in: [x, ...]` as the list (non-empty, no repeats), each parsed by
    /// `parse`.
    fn one_or_many<T: PartialEq>(
        &mut self,
        key: &str,
        field: &Field<'_>,
        parse: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Option<Vec<T>> {
        if key == "is" {
            self.walk.value(field, parse).map(|value| vec![value])
        } else {
            self.distinct_values(field, parse)
        }
    }

    /// A non-empty list of scalars parsed by `parse`, none repeated.
    fn distinct_values<T: PartialEq>(
        &mut self,
        field: &Field<'_>,
        parse: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Option<Vec<T>> {
        self.distinct_items(field, |p, item| p.walk.value(item, &parse))
    }

    /// A non-empty list whose items are parsed by `parse`; an item equal to an earlier one is
    /// reported at the item.
    pub(super) fn distinct_items<T: PartialEq>(
        &mut self,
        field: &Field<'_>,
        mut parse: impl FnMut(&mut Self, &Field<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.walk.non_empty_list(field)?;
        let mut values: Vec<T> = Vec::with_capacity(items.len());
        let mut valid = true;
        for item in &items {
            match parse(self, item) {
                Some(value) if values.contains(&value) => {
                    let written = match item.node {
                        Node::Scalar(scalar) => scalar.as_str().trim().to_owned(),
                        _ => String::new(),
                    };
                    self.walk.report_at(item, Problem::Repeated(written));
                    valid = false;
                }
                Some(value) => values.push(value),
                None => valid = false,
            }
        }
        valid.then_some(values)
    }
}

/// Why a `rego` rule was refused.
#[derive(Debug)]
enum RegoFailure {
    /// The module does not parse or compile; regorus' message, on one line.
    Module(String),
    /// The query names no rule of the module.
    Query {
        /// The module's package, as `data.…`.
        package: String,
    },
}

/// Parses and compiles `module` with regorus and checks that `query` names one of its rules,
/// without evaluating anything. `name` stands for the module in regorus' messages.
fn check_rego(name: &str, module: &str, query: &str) -> Result<(), RegoFailure> {
    let mut engine = regorus::Engine::new();
    let package = engine
        .add_policy(name.to_owned(), module.to_owned())
        .map_err(|error| RegoFailure::Module(rego_message(&error.to_string())))?;
    let declared = query
        .strip_prefix(package.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rule| {
            engine
                .has_declared_rule_rooted_at(name, rule)
                .unwrap_or(false)
        });
    if !declared {
        return Err(RegoFailure::Query { package });
    }
    engine
        .compile_with_entrypoint(&query.into())
        .map(|_| ())
        .map_err(|error| RegoFailure::Module(rego_message(&error.to_string())))
}

/// A regorus diagnostic (`--> name:LINE:COL`, the source line, a caret, `error: ...`) on one
/// line: `line LINE, column COL of the module: ...`.
fn rego_message(message: &str) -> String {
    let location = message
        .lines()
        .find_map(|line| line.trim().strip_prefix("--> "))
        .and_then(|location| {
            let mut parts = location.rsplitn(3, ':');
            let column = parts.next()?;
            let line = parts.next()?;
            Some(format!("line {line}, column {column} of the module: "))
        })
        .unwrap_or_default();
    format!("{location}{}", value::one_line(message))
}

/// Whether `key` names a criterion (not a combinator).
fn is_criterion(key: &str) -> bool {
    key.starts_with(CLAIM_PREFIX)
        || key.starts_with(HEADER_PREFIX)
        || CRITERIA
            .iter()
            .any(|criterion| !criterion.contains('/') && *criterion == key)
}

/// The keys of a mapping, as written, comma-separated.
fn keys_of(entries: &[Entry<'_>]) -> String {
    entries
        .iter()
        .map(|entry| entry.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `value`'s display form, quoted: `"a@b.c"`.
fn quoted(value: &impl Display) -> String {
    format!("{:?}", value.to_string())
}

/// Display forms, quoted, in brackets: `["a", "b"]`.
fn quoted_list<T: Display>(values: &[T]) -> String {
    let items: Vec<String> = values.iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

/// Display forms in brackets: `[10.0.0.0/8, 192.0.2.1/32]`.
fn plain_list<T: Display>(values: &[T]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests;
