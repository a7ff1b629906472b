//! The policy model: what `allow` / `deny` blocks, criteria and route matchers mean once
//! validated. Every rule carries the configuration path that names it (for explanations and the
//! audit log) and a one-line rendering of itself; regexes are compiled, CIDRs parsed, emails
//! parsed as addresses, time zones resolved, so the evaluator never re-checks anything.

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

/// A policy: deny overrides allow; when neither matches, the request is denied.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The shared name (`policies.NAME`), or `None` for a route's inline policy.
    pub name: Option<String>,
    /// Configuration path of the policy itself, e.g. `policies.admins` or `routes[3].policy`.
    pub path: String,
    /// The `allow` block; absent means nothing is allowed.
    pub allow: Option<Rule>,
    /// The `deny` block; absent means nothing is denied explicitly.
    pub deny: Option<Rule>,
}

impl Policy {
    /// The default policy of a route that names none: any authenticated user.
    pub fn authenticated_users(path: &str) -> Policy {
        Policy {
            name: None,
            path: format!("{path} (default)"),
            allow: Some(Rule {
                path: format!("{path}.allow"),
                text: "authenticated_user".to_owned(),
                kind: RuleKind::Criterion(Criterion::AuthenticatedUser),
            }),
            deny: None,
        }
    }

    /// Whether this is the default policy made by [`Policy::authenticated_users`] for a route
    /// that names none.
    pub fn is_default(&self) -> bool {
        self.name.is_none() && self.path.ends_with(" (default)")
    }
}

/// One node of a policy tree.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Configuration path, e.g. `routes[3].policy.allow.and[1]`.
    pub path: String,
    /// One-line rendering, e.g. `groups has "admins"` or `and (3 rules)`.
    pub text: String,
    /// What the node does.
    pub kind: RuleKind,
}

/// Boolean combinators and leaves.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// True when every child is true (true for no children).
    And(Vec<Rule>),
    /// True when some child is true (false for no children).
    Or(Vec<Rule>),
    /// True unless every child is true: NOT(AND(children)). `not: [x]` is the negation of x.
    Not(Vec<Rule>),
    /// True when no child is true: NOT(OR(children)).
    Nor(Vec<Rule>),
    /// A criterion on the request or identity.
    Criterion(Criterion),
}

/// A leaf test.
#[derive(Debug, Clone)]
pub enum Criterion {
    /// `authenticated_user: true`: any verified identity.
    AuthenticatedUser,
    /// `email: {is | ends_with | in}` on the parsed address.
    Email(EmailMatch),
    /// `domain: {is | in}`: the email address's domain (lowercase), exact.
    Domain(Vec<String>),
    /// `groups: {has | any_of | all_of}`.
    Groups(GroupsMatch),
    /// `claim/NAME: {is | in}`: any ID-token claim; for array claims, any element.
    Claim {
        /// The claim name.
        name: String,
        /// Accepted values (compared as JSON scalars: strings, numbers, booleans).
        values: Vec<ClaimValue>,
    },
    /// `http_method: {is | in}`, uppercase.
    HttpMethod(Vec<String>),
    /// `http_path: {exact | prefix | regex}` on the normalised path.
    HttpPath(PathMatch),
    /// `source_ip: [CIDR, …]`: the client address (after trusted-proxy resolution).
    SourceIp(Vec<IpNet>),
    /// `time: {days, hours, time_zone}`.
    Time(TimeWindow),
    /// `client_certificate: {fingerprint | spki_hash}`: SHA-256 of the DER certificate or of its
    /// SubjectPublicKeyInfo, when mTLS is on.
    ClientCertificate(CertificateMatch),
    /// `header/NAME: {is | prefix | regex | present}`; NAME lowercase.
    Header {
        /// Lowercase header name.
        name: String,
        /// How its value is tested (any value of a repeated header may match).
        matcher: StringMatch,
    },
    /// `rego: {module, query}`: evaluated with regorus on the `policy explain` input document.
    Rego(RegoRule),
}

/// How an email address is tested. Addresses are parsed (exactly one `@`, non-empty parts);
/// the domain compares case-insensitively, the local part exactly (RFC 5321 §2.4).
#[derive(Debug, Clone)]
pub enum EmailMatch {
    /// Exactly this address.
    Is(EmailAddress),
    /// The address ends with this text: `@example.com` (a domain suffix, lowercase) or
    /// `.example.com` — matched on the domain part only, never across the `@`.
    EndsWith(String),
    /// One of these addresses.
    In(Vec<EmailAddress>),
}

/// A parsed email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// Local part, as written.
    pub local: String,
    /// Domain, lowercase.
    pub domain: String,
}

impl EmailAddress {
    /// Parses `text`: exactly one `@`, both parts non-empty, no whitespace or control characters.
    pub fn parse(text: &str) -> Option<EmailAddress> {
        let (local, domain) = text.split_once('@')?;
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return None;
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        Some(EmailAddress {
            local: local.to_owned(),
            domain: domain.to_ascii_lowercase(),
        })
    }
}

/// How groups are tested.
#[derive(Debug, Clone)]
pub enum GroupsMatch {
    /// The user is in this group.
    Has(String),
    /// The user is in at least one of these.
    AnyOf(Vec<String>),
    /// The user is in all of these.
    AllOf(Vec<String>),
}

/// A claim value a `claim/NAME` criterion accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    /// A string.
    String(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// A path test (route `path:` and the `http_path` criterion). Paths are compared with the
/// normalised request path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Exactly this path.
    Exact(String),
    /// This path or anything under it, on a segment boundary (`/api` covers `/api/x`, not
    /// `/apix`); `/` covers everything.
    Prefix(String),
    /// The path matches this regex (anchor it yourself).
    Regex(Arc<regex::Regex>),
}

/// A header-value test.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equal.
    Is(String),
    /// Starts with.
    Prefix(String),
    /// Matches.
    Regex(Arc<regex::Regex>),
    /// The header is present (any value).
    Present,
}

/// A weekly time window in a time zone.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    /// Days allowed, bit 0 = Monday … bit 6 = Sunday; all days when the key is absent.
    pub days: u8,
    /// Start minute of the day (inclusive), 0..1440.
    pub from_minute: u16,
    /// End minute of the day (exclusive), 1..=1440; a window with `to <= from` wraps midnight.
    pub to_minute: u16,
    /// IANA time zone name as written, e.g. `Europe/Berlin`; `UTC` by default.
    pub time_zone_name: String,
    /// The resolved zone (from the bundled database).
    pub time_zone: jiff::tz::TimeZone,
}

/// Client-certificate test values (SHA-256, 32 bytes each).
#[derive(Debug, Clone, Default)]
pub struct CertificateMatch {
    /// SHA-256 of the DER certificate.
    pub fingerprints: Vec<[u8; 32]>,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_hashes: Vec<[u8; 32]>,
}

/// A Rego rule.
#[derive(Debug, Clone)]
pub struct RegoRule {
    /// The module source (validated: it parses).
    pub module: String,
    /// The query whose result must be `true`, default `data.sekisho.allow`.
    pub query: String,
}

/// Whether a route's policy denies, or only reports what it would deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    /// Denials are enforced (default).
    #[default]
    Enforce,
    /// Requests are allowed; would-be denials are logged and audited.
    Report,
}

impl TimeWindow {
    /// [`TimeWindow::days`] with every day set.
    pub const ALL_DAYS: u8 = 0b111_1111;
    /// [`TimeWindow::to_minute`] of a window that runs to the end of the day.
    pub const END_OF_DAY: u16 = 24 * 60;
}

impl fmt::Display for EmailAddress {
    /// `local@domain`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Display for ClaimValue {
    /// Strings quoted, numbers and booleans bare: `"eng"`, `3`, `true`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(text) => write!(f, "{text:?}"),
            Self::Number(number) => write!(f, "{number}"),
            Self::Bool(flag) => write!(f, "{flag}"),
        }
    }
}

impl fmt::Display for PathMatch {
    /// `exact "/x"`, `prefix "/admin"` or `regex "^/v1/"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => write!(f, "exact {path:?}"),
            Self::Prefix(path) => write!(f, "prefix {path:?}"),
            Self::Regex(regex) => write!(f, "regex {:?}", regex.as_str()),
        }
    }
}

impl fmt::Display for StringMatch {
    /// `is "v"`, `prefix "v"`, `regex "r"` or `present`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Is(text) => write!(f, "is {text:?}"),
            Self::Prefix(text) => write!(f, "prefix {text:?}"),
            Self::Regex(regex) => write!(f, "regex {:?}", regex.as_str()),
            Self::Present => f.write_str("present"),
        }
    }
}

impl fmt::Display for TimeWindow {
    /// Days (`daily`, `mon-fri`, `mon,wed,sat-sun`), hours (`09:00-17:30`) and zone:
    /// `mon-fri 09:00-17:30 Europe/Berlin`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        if self.days & Self::ALL_DAYS == Self::ALL_DAYS {
            f.write_str("daily")?;
        } else {
            let mut runs: Vec<String> = Vec::new();
            let mut day = 0;
            while day < NAMES.len() {
                if self.days & (1 << day) == 0 {
                    day += 1;
                    continue;
                }
                let start = day;
                while day + 1 < NAMES.len() && self.days & (1 << (day + 1)) != 0 {
                    day += 1;
                }
                let name = |index: usize| NAMES.get(index).copied().unwrap_or("?");
                runs.push(if start == day {
                    name(start).to_owned()
                } else {
                    format!("{}-{}", name(start), name(day))
                });
                day += 1;
            }
            f.write_str(&runs.join(","))?;
        }
        let clock = |minute: u16| format!("{:02}:{:02}", minute / 60, minute % 60);
        write!(
            f,
            " {}-{} {}",
            clock(self.from_minute),
            clock(self.to_minute),
            self.time_zone_name
        )
    }
}

impl fmt::Display for PolicyMode {
    /// `enforce` or `report`, as written in the config file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforce => "enforce",
            Self::Report => "report",
        })
    }
}
