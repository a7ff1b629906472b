//! What the audit log records, and how a record is written: one JSON object shaped after OCSF
//! 1.7.0 (HTTP Activity 4002, Authentication 3002, Application Lifecycle 6002), so a SIEM
//! ingests it without a mapping. AUDIT.md documents every field.
//!
//! Events are built on the request path from data the request already holds (an `Arc` of the
//! session, strings it had to own anyway) and serialised on the writer thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Version};
use serde::Serialize;

use crate::session::{Identity, OpenSession};

mod http_record;
mod json;

/// The OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.7.0";

/// One thing worth recording.
#[derive(Debug)]
pub enum Event {
    /// A request and the decision about it.
    Http(Box<HttpEvent>),
    /// A login, logout, refresh, or a rejected credential.
    Auth(Box<AuthEvent>),
    /// sekisho itself: start, stop, configuration reload, audit-log trouble.
    Lifecycle(Box<LifecycleEvent>),
    /// Traffic refused below HTTP: the NIC guard's drops, summarised per source and minute.
    Network(Box<NetworkEvent>),
    /// A connection to a protected upstream from a cgroup other than sekisho's (the bypass
    /// guard).
    Bypass(Box<BypassAttempt>),
    /// A TCP tunnel closed (its opening is the CONNECT request's HTTP record).
    Tunnel(Box<TunnelClosed>),
}

/// A TCP tunnel's end (OCSF Network Activity, activity Close).
#[derive(Debug, Clone)]
pub struct TunnelClosed {
    /// When it closed.
    pub time: jiff::Timestamp,
    /// When it opened.
    pub opened: jiff::Timestamp,
    /// The CONNECT request's id (its HTTP record has the decision and the rule).
    pub request_id: String,
    /// The tunnel route.
    pub route: String,
    /// Who opened it (email, else subject), when not a public route.
    pub user: Option<String>,
    /// The client connection's peer.
    pub client: SocketAddr,
    /// The upstream, `host:port`.
    pub upstream: String,
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    /// Why it closed.
    pub reason: crate::tunnel::CloseReason,
}

/// A `connect()` to a protected upstream from a cgroup not allowed to (OCSF Network Activity:
/// Refuse when refused, Open when only recorded).
#[derive(Debug)]
pub struct BypassAttempt {
    /// When user space read it.
    pub time: jiff::Timestamp,
    /// Who tried: the cgroup, what it names, the process.
    pub source: Container,
    /// The upstream.
    pub upstream: SocketAddr,
    /// Refused by the kernel (`mode: enforce`), or let through (`mode: audit`).
    pub refused: bool,
}

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A browser session.
    Session(Arc<OpenSession>),
    /// A bearer JWT; `token_hash` identifies the token without revealing it.
    Bearer {
        /// The verified identity.
        identity: Arc<Identity>,
        /// [`crate::session::sid_hash`] of the token.
        token_hash: String,
    },
}

impl Actor {
    /// The identity.
    pub fn identity(&self) -> &Identity {
        match self {
            Actor::Session(session) => &session.state.identity,
            Actor::Bearer { identity, .. } => identity,
        }
    }

    fn session_uid(&self) -> &str {
        match self {
            Actor::Session(session) => &session.sid_hash,
            Actor::Bearer { token_hash, .. } => token_hash,
        }
    }

    fn credential(&self) -> &'static str {
        match self {
            Actor::Session(_) => "session",
            Actor::Bearer { .. } => "bearer",
        }
    }

    /// The user as the query and the review page name them: the verified email, else the subject.
    pub fn user_key(&self) -> &str {
        self.identity().user_key()
    }
}

/// What sekisho decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded upstream (or served by sekisho itself).
    Allow,
    /// Refused by the route's policy (403).
    Deny,
    /// No valid credential; the browser was sent to log in.
    Login,
    /// No valid credential; 401.
    Unauthenticated,
    /// Refused before any decision: malformed request, no route, 405, an outage.
    Error,
    /// A public route (`public: true`) or an allowed CORS preflight: nobody was asked to sign
    /// in and no identity was passed.
    Public,
}

/// The door a request came through: every door goes through the same gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The proxy listeners: routes, sekisho's endpoints, the built-in provider.
    Proxy,
    /// The admin listener.
    Admin,
    /// `/.sekisho/auth`, asked by a front proxy (nginx `auth_request`, Caddy `forward_auth`, …)
    /// about the request it holds; the record's peer is that front proxy.
    ForwardAuth,
}

impl Door {
    /// The name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Proxy => "proxy",
            Door::Admin => "admin",
            Door::ForwardAuth => "forward-auth",
        }
    }
}

impl Decision {
    /// The name in records and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Login => "login",
            Decision::Unauthenticated => "unauthenticated",
            Decision::Error => "error",
            Decision::Public => "public",
        }
    }
}

/// Who owns one end of a connection on this host (eBPF attribution): its cgroup, and what the
/// cgroup's path says (container, pod, unit), and the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// The cgroup v2 id (the inode number of its directory): kept even when the cgroup is gone
    /// before its path could be looked up.
    pub cgroup_id: u64,
    /// The cgroup path from the cgroup root, when resolved.
    pub cgroup: Option<String>,
    /// The container id (64 hex digits), when the path names one.
    pub id: Option<String>,
    /// The runtime that named it (`docker`, `containerd`, `cri-o`, `podman`).
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod UID.
    pub pod_uid: Option<String>,
    /// The pod's QoS class.
    pub qos: Option<&'static str>,
    /// The systemd unit (a host service, or the scope around a container).
    pub unit: Option<String>,
    /// The process id that made the socket.
    pub pid: Option<u32>,
    /// Its name (`comm`).
    pub process: Option<String>,
}

impl Container {
    /// The container id, else the pod UID, else the unit, else the cgroup path: what the audit
    /// index files the record under (`None` when only the cgroup id is known).
    pub fn named(&self) -> Option<&str> {
        self.id
            .as_deref()
            .or(self.pod_uid.as_deref())
            .or(self.unit.as_deref())
            .or(self.cgroup.as_deref())
    }

    /// What the audit index and `--container` match on: the container id, else the pod UID,
    /// else the unit, else the cgroup path, else `cgroup:<id>`.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        self.id
            .as_deref()
            .or(self.pod_uid.as_deref())
            .or(self.unit.as_deref())
            .or(self.cgroup.as_deref())
            .map_or_else(
                || std::borrow::Cow::Owned(format!("cgroup:{}", self.cgroup_id)),
                std::borrow::Cow::Borrowed,
            )
    }
}

/// The query string of a request, as recorded.
#[derive(Debug, Clone)]
pub enum Query {
    /// There was none.
    None,
    /// There was one; `audit.record_query` is off.
    Redacted,
    /// As sent.
    Kept(String),
}

/// One request.
#[derive(Debug)]
pub struct HttpEvent {
    /// When the request arrived.
    pub time: jiff::Timestamp,
    /// The `X-Request-Id` sekisho gave it.
    pub request_id: String,
    /// Method.
    pub method: Method,
    /// HTTP version.
    pub version: Version,
    /// `http` or `https` as the client used it.
    pub scheme: &'static str,
    /// Host, normalised (lowercase, no trailing dot); empty when the request had none.
    pub host: String,
    /// Port given in the request, if any.
    pub port: Option<u16>,
    /// Normalised path; the raw path when it could not be normalised.
    pub path: String,
    /// The query string.
    pub query: Query,
    /// `User-Agent`, if any.
    pub user_agent: Option<String>,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client address (differs from the peer behind a trusted proxy).
    pub client_ip: IpAddr,
    /// TLS version, when the listener terminated TLS.
    pub tls_version: Option<&'static str>,
    /// SHA-256 of the client certificate (mTLS), hex.
    pub client_certificate: Option<String>,
    /// The route that matched.
    pub route: Option<Arc<str>>,
    /// The decision.
    pub decision: Decision,
    /// The name of the route's policy.
    pub policy: Option<Arc<str>>,
    /// The rule that decided (the policy explanation).
    pub rule: Option<String>,
    /// Whether the route's policy is in report mode and would have denied.
    pub report_only_deny: bool,
    /// Who, when authenticated.
    pub actor: Option<Actor>,
    /// The upstream the request went to (`host:port`).
    pub upstream: Option<String>,
    /// The upstream connection the request went out on (both ends), when it was forwarded.
    pub upstream_connection: Option<crate::connection::UpstreamConnection>,
    /// The door the request came through.
    pub door: Door,
    /// Response status.
    pub status: u16,
    /// Why sekisho answered with an error (never shown to the client in full).
    pub detail: Option<String>,
    /// Request body length, when declared.
    pub bytes_in: Option<u64>,
    /// Response body length, when declared.
    pub bytes_out: Option<u64>,
    /// Time from the request's arrival to the response head.
    pub latency: Duration,
    /// The container the connection came from, when attributed.
    pub container: Option<Container>,
    /// The container that accepted the upstream connection sekisho used, when attributed.
    pub upstream_container: Option<Container>,
    /// Attribution was configured but is not running (`unmapped.attribution: unavailable`).
    pub attribution_unavailable: bool,
}

/// Which authentication event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthActivity {
    /// A login completed (callback accepted) or failed.
    Login,
    /// A logout.
    Logout,
    /// A session refresh at the provider (success, or refusal that ended the session).
    Refresh,
    /// A bearer token or session cookie was rejected.
    CredentialRejected,
    /// A source was banned at the NIC after repeated failures (`xdp.auto_ban`).
    SourceBanned,
    /// A source's ban ended.
    SourceUnbanned,
    /// A provider's back-channel logout token received (accepted, or refused with the check
    /// that failed).
    BackchannelLogout,
    /// The built-in provider's back-channel logout to a client (delivered or given up).
    BackchannelLogoutSent,
}

impl AuthActivity {
    fn ids(self) -> (u8, &'static str) {
        match self {
            AuthActivity::Login => (1, "Logon"),
            AuthActivity::Logout => (2, "Logoff"),
            AuthActivity::Refresh => (99, "Refresh"),
            AuthActivity::CredentialRejected => (99, "Credential Rejected"),
            AuthActivity::SourceBanned => (99, "Source Banned"),
            AuthActivity::SourceUnbanned => (99, "Source Unbanned"),
            AuthActivity::BackchannelLogout | AuthActivity::BackchannelLogoutSent => (2, "Logoff"),
        }
    }

    /// The name in records and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthActivity::Login => "login",
            AuthActivity::Logout => "logout",
            AuthActivity::Refresh => "refresh",
            AuthActivity::CredentialRejected => "credential_rejected",
            AuthActivity::SourceBanned => "source_banned",
            AuthActivity::SourceUnbanned => "source_unbanned",
            AuthActivity::BackchannelLogout => "backchannel_logout",
            AuthActivity::BackchannelLogoutSent => "backchannel_logout_sent",
        }
    }
}

/// One authentication event.
#[derive(Debug)]
pub struct AuthEvent {
    /// When.
    pub time: jiff::Timestamp,
    /// What.
    pub activity: AuthActivity,
    /// Whether it succeeded.
    pub success: bool,
    /// Why it failed (or what happened), for people.
    pub detail: Option<String>,
    /// Request that carried it.
    pub request_id: Option<String>,
    /// The identity, when known.
    pub identity: Option<Arc<Identity>>,
    /// Session id hash (or token hash), when known.
    pub session: Option<String>,
    /// The identity provider (issuer URL).
    pub provider: Option<String>,
    /// The client.
    pub client_ip: Option<IpAddr>,
    /// The TCP peer.
    pub peer: Option<SocketAddr>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Host the request was for.
    pub host: Option<String>,
}

/// Which lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// The proxy started.
    Start,
    /// The proxy is stopping.
    Stop,
    /// The configuration was reloaded (or a reload was refused).
    Reload,
    /// The audit log itself: records lost, writes failing or recovered, files removed.
    AuditLog,
}

/// One lifecycle event.
#[derive(Debug)]
pub struct LifecycleEvent {
    /// When.
    pub time: jiff::Timestamp,
    /// What.
    pub activity: Lifecycle,
    /// Whether it succeeded.
    pub success: bool,
    /// What happened, for people.
    pub message: String,
}

/// Frames the NIC guard dropped from one source on one interface within one minute (OCSF
/// Network Activity, activity Refuse), or the rest of a busy minute's sources in one line.
#[derive(Debug)]
pub struct NetworkEvent {
    /// The end of the summarised window.
    pub time: jiff::Timestamp,
    /// The start of the summarised window.
    pub start: jiff::Timestamp,
    /// The source, or `None` for the roll-up of the sources not itemised.
    pub source: Option<IpAddr>,
    /// How many sources the record covers (1 unless a roll-up).
    pub sources: u64,
    /// The interface the guard dropped them on.
    pub interface: String,
    /// Frames dropped.
    pub packets: u64,
    /// Frames by reason (`not_admitted`, `banned`, `syn_rate_limited`, `fragment`, `unreadable`).
    pub reasons: Vec<(&'static str, u64)>,
    /// The destination ports they were aimed at (at most a few, most dropped first; 0 for
    /// fragments).
    pub ports: Vec<u16>,
}

/// Everything about an event the index and the review page use, without serialising it.
#[derive(Debug, Clone, Copy)]
pub struct Facets<'a> {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The user (email, else subject).
    pub user: Option<&'a str>,
    /// The route.
    pub route: Option<&'a str>,
    /// The decision (or auth activity / lifecycle kind).
    pub decision: Option<&'a str>,
    /// The client address.
    pub source: Option<IpAddr>,
    /// The container.
    pub container: Option<&'a str>,
}

impl Event {
    /// A lifecycle record of sekisho itself, timed now.
    pub fn lifecycle(activity: Lifecycle, success: bool, message: impl Into<String>) -> Self {
        Event::Lifecycle(Box::new(LifecycleEvent {
            time: jiff::Timestamp::now(),
            activity,
            success,
            message: message.into(),
        }))
    }

    /// The facets of this event.
    pub fn facets(&self) -> Facets<'_> {
        match self {
            Event::Http(e) => Facets {
                time_ms: millis(e.time),
                user: e.actor.as_ref().map(Actor::user_key),
                route: e.route.as_deref(),
                decision: Some(e.decision.as_str()),
                source: Some(e.client_ip),
                container: e.container.as_ref().and_then(Container::named),
            },
            Event::Auth(e) => Facets {
                time_ms: millis(e.time),
                user: e.identity.as_deref().map(|i| i.user_key()),
                route: None,
                decision: Some(e.activity.as_str()),
                source: e.client_ip,
                container: None,
            },
            Event::Lifecycle(e) => Facets {
                time_ms: millis(e.time),
                user: None,
                route: None,
                decision: None,
                source: None,
                container: None,
            },
            Event::Tunnel(e) => Facets {
                time_ms: millis(e.time),
                user: e.user.as_deref(),
                route: Some(&e.route),
                decision: Some("tunnel_closed"),
                source: Some(e.client.ip()),
                container: None,
            },
            Event::Bypass(e) => Facets {
                time_ms: millis(e.time),
                user: None,
                route: None,
                decision: Some("upstream_bypass"),
                source: None,
                container: e.source.named(),
            },
            Event::Network(e) => Facets {
                time_ms: millis(e.time),
                user: None,
                route: None,
                decision: Some("nic_drop"),
                source: e.source,
                container: None,
            },
        }
    }

    /// Appends this event as one JSON object (no `seq`/`prev_hash`: the chain adds them).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Event::Http(e) => http_record::write(e, out),
            Event::Auth(e) => serde_json::to_writer(out, &AuthRecord::new(e)),
            Event::Lifecycle(e) => serde_json::to_writer(out, &LifecycleRecord::new(e)),
            Event::Network(e) => serde_json::to_writer(out, &NetworkRecord::new(e)),
            Event::Bypass(e) => serde_json::to_writer(out, &BypassRecord::new(e)),
            Event::Tunnel(e) => serde_json::to_writer(out, &TunnelRecord::new(e)),
        }
    }
}

fn display<S: serde::Serializer, T: std::fmt::Display>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn millis(time: jiff::Timestamp) -> i64 {
    time.as_millisecond()
}

// ---- The OCSF shapes -------------------------------------------------------------------------

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    product: Product,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    log_name: &'static str,
}

impl<'a> Metadata<'a> {
    fn new(uid: Option<&'a str>) -> Self {
        Metadata {
            version: OCSF_VERSION,
            product: Product {
                name: "sekisho",
                vendor_name: "sekisho",
                version: env!("CARGO_PKG_VERSION"),
            },
            uid,
            log_name: "audit",
        }
    }
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Endpoint {
    ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// The TCP peer when the client address came from a trusted proxy's `X-Forwarded-For`.
    #[serde(skip_serializing_if = "Option::is_none")]
    intermediate_ips: Option<[IpAddr; 1]>,
}

fn source(client_ip: IpAddr, peer: SocketAddr) -> Endpoint {
    let forwarded = client_ip != peer.ip();
    Endpoint {
        ip: client_ip,
        port: (!forwarded).then_some(peer.port()),
        intermediate_ips: forwarded.then_some([peer.ip()]),
    }
}

#[cfg(test)]
#[derive(Serialize)]
struct Upstream<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    /// The address actually connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    svc_name: Option<&'a str>,
}

#[derive(Serialize)]
struct User<'a> {
    uid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_addr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    groups: Vec<Group<'a>>,
}

impl<'a> User<'a> {
    fn new(identity: &'a Identity) -> Self {
        User {
            uid: &identity.sub,
            email_addr: identity.verified_email(),
            name: identity.name.as_deref(),
            groups: identity.groups.iter().map(|name| Group { name }).collect(),
        }
    }
}

#[derive(Serialize)]
struct Group<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Session<'a> {
    uid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_uid: Option<&'static str>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Idp<'a> {
    name: &'a str,
}

#[cfg(test)]
#[derive(Serialize)]
struct ActorRecord<'a> {
    user: User<'a>,
    session: Session<'a>,
    idp: Idp<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorizations: Vec<Authorization<'a>>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Authorization<'a> {
    decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyRecord<'a>>,
}

#[cfg(test)]
#[derive(Serialize)]
struct PolicyRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<&'a str>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Url<'a> {
    scheme: &'static str,
    hostname: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string: Option<&'a str>,
}

#[cfg(test)]
#[derive(Serialize)]
struct HttpRequest<'a> {
    uid: &'a str,
    http_method: &'a str,
    version: &'static str,
    url: Url<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
}

#[cfg(test)]
#[derive(Serialize)]
struct HttpResponse {
    code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    /// Milliseconds.
    latency: u64,
}

#[cfg(test)]
#[derive(Serialize)]
struct Tls<'a> {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<Certificate<'a>>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Certificate<'a> {
    fingerprints: [Fingerprint<'a>; 1],
}

#[cfg(test)]
#[derive(Serialize)]
struct Fingerprint<'a> {
    algorithm_id: u8,
    algorithm: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct ContainerRecord<'a> {
    uid: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orchestrator: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<ProcessRecord<'a>>,
}

#[derive(Serialize)]
struct ProcessRecord<'a> {
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> ContainerRecord<'a> {
    fn new(c: &'a Container) -> Self {
        ContainerRecord {
            uid: c.key(),
            runtime: c.runtime,
            pod_uuid: c.pod_uid.as_deref(),
            orchestrator: c.pod_uid.is_some().then_some("kubernetes"),
            qos: c.qos,
            unit: c.unit.as_deref(),
            cgroup_id: c.cgroup_id,
            cgroup: c.cgroup.as_deref(),
            process: c.pid.map(|pid| ProcessRecord {
                pid,
                name: c.process.as_deref(),
            }),
        }
    }
}

/// sekisho's own fields, under OCSF's `unmapped`.
#[derive(Serialize)]
struct Unmapped<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    report_only_deny: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    /// An address the provider sent without vouching for it (`email_verified` not true): kept
    /// for the record, never as `user.email_addr`, and the record is filed under the subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    unverified_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    /// The door, when not the proxy listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    door: Option<&'static str>,
    /// sekisho's end of the upstream connection (`ip:port`), to look the connection up by.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_local: Option<SocketAddr>,
    /// Who accepted the upstream connection, when on this host and attributed.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_container: Option<ContainerRecord<'a>>,
    /// `unavailable` when attribution is configured but not running.
    #[serde(skip_serializing_if = "Option::is_none")]
    attribution: Option<&'static str>,
}

/// The common head of every class.
#[derive(Serialize)]
struct Head<'a> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u8,
    category_name: &'static str,
    activity_id: u8,
    activity_name: &'a str,
    type_uid: u32,
    type_name: std::borrow::Cow<'static, str>,
    time: i64,
    #[serde(serialize_with = "display")]
    time_dt: jiff::Timestamp,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    metadata: Metadata<'a>,
}

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u8,
    category_name: &'static str,
}

const HTTP_ACTIVITY: Class = Class {
    uid: 4002,
    name: "HTTP Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const AUTHENTICATION: Class = Class {
    uid: 3002,
    name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};

/// The `type_name` of the common (class, activity) pairs, without formatting one per record.
fn type_name(class: u32, activity: u8) -> Option<&'static str> {
    Some(match (class, activity) {
        (4002, 1) => "HTTP Activity: Connect",
        (4002, 2) => "HTTP Activity: Delete",
        (4002, 3) => "HTTP Activity: Get",
        (4002, 4) => "HTTP Activity: Head",
        (4002, 5) => "HTTP Activity: Options",
        (4002, 6) => "HTTP Activity: Post",
        (4002, 7) => "HTTP Activity: Put",
        (4002, 8) => "HTTP Activity: Trace",
        (4002, 9) => "HTTP Activity: Patch",
        (3002, 1) => "Authentication: Logon",
        (3002, 2) => "Authentication: Logoff",
        _ => return None,
    })
}

#[allow(
    clippy::too_many_arguments,
    reason = "the OCSF head has this many parts"
)]
fn head<'a>(
    class: &Class,
    activity: (u8, &'a str),
    time: jiff::Timestamp,
    severity_id: u8,
    success: bool,
    status_code: Option<String>,
    status_detail: Option<&'a str>,
    message: Option<String>,
    uid: Option<&'a str>,
) -> Head<'a> {
    let severity = match severity_id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        _ => "Unknown",
    };
    Head {
        class_uid: class.uid,
        class_name: class.name,
        category_uid: class.category_uid,
        category_name: class.category_name,
        activity_id: activity.0,
        activity_name: activity.1,
        type_uid: class.uid * 100 + u32::from(activity.0),
        type_name: type_name(class.uid, activity.0).map_or_else(
            || format!("{}: {}", class.name, activity.1).into(),
            Into::into,
        ),
        time: millis(time),
        time_dt: time,
        severity_id,
        severity,
        status_id: if success { 1 } else { 2 },
        status: if success { "Success" } else { "Failure" },
        status_code,
        status_detail,
        message,
        metadata: Metadata::new(uid),
    }
}

/// HTTP Activity (4002), as serde's derive writes it: the reference the hand-written writer
/// (`record/http_record.rs`, what the log uses) is tested against.
#[cfg(test)]
#[derive(Serialize)]
struct HttpRecord<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
    http_request: HttpRequest<'a>,
    http_response: HttpResponse,
    src_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<Upstream<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<ActorRecord<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<ContainerRecord<'a>>,
    unmapped: Unmapped<'a>,
}

fn http_activity(method: &Method) -> (u8, &str) {
    match *method {
        Method::CONNECT => (1, "Connect"),
        Method::DELETE => (2, "Delete"),
        Method::GET => (3, "Get"),
        Method::HEAD => (4, "Head"),
        Method::OPTIONS => (5, "Options"),
        Method::POST => (6, "Post"),
        Method::PUT => (7, "Put"),
        Method::TRACE => (8, "Trace"),
        Method::PATCH => (9, "Patch"),
        ref other => (99, other.as_str()),
    }
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

#[cfg(test)]
impl<'a> HttpRecord<'a> {
    fn new(e: &'a HttpEvent) -> Self {
        let allowed = matches!(e.decision, Decision::Allow | Decision::Public);
        let success = allowed && e.status < 400;
        let severity = match e.decision {
            Decision::Allow | Decision::Login | Decision::Public => 1,
            Decision::Unauthenticated | Decision::Error => 2,
            Decision::Deny => 3,
        };
        let latency = u64::try_from(e.latency.as_millis()).unwrap_or(u64::MAX);
        let query = match &e.query {
            Query::None => None,
            Query::Redacted => Some("[redacted]"),
            Query::Kept(q) => Some(q.as_str()),
        };
        let authorization = Authorization {
            decision: e.decision.as_str(),
            policy: (e.policy.is_some() || e.rule.is_some()).then_some(PolicyRecord {
                name: e.policy.as_deref(),
                desc: e.rule.as_deref(),
            }),
        };
        let actor = e.actor.as_ref().map(|actor| {
            let identity = actor.identity();
            ActorRecord {
                user: User::new(identity),
                session: Session {
                    uid: actor.session_uid(),
                    issuer: None,
                    credential_uid: Some(actor.credential()),
                },
                idp: Idp {
                    name: &identity.issuer,
                },
                authorizations: vec![authorization],
            }
        });
        let (upstream_host, upstream_port) = match &e.upstream {
            Some(text) => match text.rsplit_once(':') {
                Some((host, port)) => (Some(host), port.parse().ok()),
                None => (Some(text.as_str()), None),
            },
            None => (None, None),
        };
        HttpRecord {
            head: head(
                &HTTP_ACTIVITY,
                http_activity(&e.method),
                e.time,
                severity,
                success,
                Some(e.status.to_string()),
                e.detail.as_deref(),
                None,
                Some(&e.request_id),
            ),
            action_id: if allowed { 1 } else { 2 },
            action: if allowed { "Allowed" } else { "Denied" },
            disposition_id: if allowed { 1 } else { 2 },
            disposition: if allowed { "Allowed" } else { "Blocked" },
            http_request: HttpRequest {
                uid: &e.request_id,
                http_method: e.method.as_str(),
                version: version_text(e.version),
                url: Url {
                    scheme: e.scheme,
                    hostname: &e.host,
                    port: e.port,
                    path: &e.path,
                    query_string: query,
                },
                user_agent: e.user_agent.as_deref(),
                length: e.bytes_in,
            },
            http_response: HttpResponse {
                code: e.status,
                length: e.bytes_out,
                latency,
            },
            src_endpoint: source(e.client_ip, e.peer),
            dst_endpoint: (e.upstream.is_some() || e.route.is_some()).then_some(Upstream {
                hostname: upstream_host,
                ip: e.upstream_connection.map(|c| c.remote.ip()),
                port: e
                    .upstream_connection
                    .map(|c| c.remote.port())
                    .or(upstream_port),
                svc_name: e.route.as_deref(),
            }),
            actor,
            tls: e.tls_version.map(|version| Tls {
                version,
                certificate: e.client_certificate.as_deref().map(|value| Certificate {
                    fingerprints: [Fingerprint {
                        algorithm_id: 3,
                        algorithm: "SHA-256",
                        value,
                    }],
                }),
            }),
            container: e.container.as_ref().map(ContainerRecord::new),
            unmapped: Unmapped {
                decision: Some(e.decision.as_str()),
                event: None,
                route: e.route.as_deref(),
                rule: e.rule.as_deref(),
                report_only_deny: e.report_only_deny,
                user: e.actor.as_ref().map(Actor::user_key),
                unverified_email: e
                    .actor
                    .as_ref()
                    .and_then(|a| a.identity().unverified_email()),
                cgroup: e.container.as_ref().and_then(|c| c.cgroup.as_deref()),
                door: (e.door != Door::Proxy).then_some(e.door.as_str()),
                upstream_local: e.upstream_connection.map(|c| c.local),
                upstream_container: e.upstream_container.as_ref().map(ContainerRecord::new),
                attribution: e.attribution_unavailable.then_some("unavailable"),
            },
        }
    }
}

/// Authentication (3002).
#[derive(Serialize)]
struct AuthRecord<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    auth_protocol_id: u8,
    auth_protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Session<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_request: Option<AuthHttpRequest<'a>>,
    service: Service,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct AuthHttpRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<AuthUrl<'a>>,
}

#[derive(Serialize)]
struct AuthUrl<'a> {
    hostname: &'a str,
}

#[derive(Serialize)]
struct Service {
    name: &'static str,
}

impl<'a> AuthRecord<'a> {
    fn new(e: &'a AuthEvent) -> Self {
        let who = e
            .identity
            .as_deref()
            .map_or("unknown user", |i| i.user_key());
        let message = format!(
            "{} {} {}",
            e.activity.as_str(),
            if e.success {
                "succeeded for"
            } else {
                "failed for"
            },
            who
        );
        let severity = if e.success { 1 } else { 2 };
        AuthRecord {
            head: head(
                &AUTHENTICATION,
                e.activity.ids(),
                e.time,
                severity,
                e.success,
                None,
                e.detail.as_deref(),
                Some(message),
                e.request_id.as_deref(),
            ),
            auth_protocol_id: 4,
            auth_protocol: "OpenID",
            user: e.identity.as_deref().map(User::new),
            session: e.session.as_deref().map(|uid| Session {
                uid,
                issuer: e.provider.as_deref(),
                credential_uid: None,
            }),
            src_endpoint: e.client_ip.map(|ip| match e.peer {
                Some(peer) => source(ip, peer),
                None => Endpoint {
                    ip,
                    port: None,
                    intermediate_ips: None,
                },
            }),
            http_request: (e.request_id.is_some() || e.user_agent.is_some()).then(|| {
                AuthHttpRequest {
                    uid: e.request_id.as_deref(),
                    user_agent: e.user_agent.as_deref(),
                    url: e.host.as_deref().map(|hostname| AuthUrl { hostname }),
                }
            }),
            service: Service { name: "sekisho" },
            unmapped: Unmapped {
                decision: None,
                event: Some(e.activity.as_str()),
                route: None,
                rule: None,
                report_only_deny: false,
                user: e.identity.as_deref().map(|i| i.user_key()),
                unverified_email: e.identity.as_deref().and_then(Identity::unverified_email),
                cgroup: None,
                door: None,
                upstream_local: None,
                upstream_container: None,
                attribution: None,
            },
        }
    }
}

/// Network Activity (4001), activity Close: a TCP tunnel's end.
#[derive(Serialize)]
struct TunnelRecord<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    start_time: i64,
    end_time: i64,
    duration: i64,
    src_endpoint: Endpoint,
    dst_endpoint: TunnelDestination<'a>,
    traffic: TunnelTraffic,
    connection_info: ConnectionInfo,
    unmapped: TunnelUnmapped<'a>,
}

#[derive(Serialize)]
struct TunnelDestination<'a> {
    hostname: &'a str,
    svc_name: &'a str,
}

#[derive(Serialize)]
struct TunnelTraffic {
    bytes_out: u64,
    bytes_in: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct TunnelUnmapped<'a> {
    event: &'static str,
    route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    request_id: &'a str,
    closed_by: &'static str,
    reason: &'static str,
}

impl<'a> TunnelRecord<'a> {
    fn new(e: &'a TunnelClosed) -> Self {
        let duration = millis(e.time).saturating_sub(millis(e.opened));
        TunnelRecord {
            head: head(
                &NETWORK_ACTIVITY,
                (2, "Close"),
                e.time,
                1,
                true,
                None,
                Some(e.reason.as_str()),
                Some(format!(
                    "tunnel {} to {} closed by {} ({}): {} bytes up, {} down",
                    e.route,
                    e.upstream,
                    e.reason.closed_by(),
                    e.reason.as_str(),
                    e.bytes_up,
                    e.bytes_down
                )),
                Some(&e.request_id),
            ),
            start_time: millis(e.opened),
            end_time: millis(e.time),
            duration,
            src_endpoint: Endpoint {
                ip: e.client.ip(),
                port: Some(e.client.port()),
                intermediate_ips: None,
            },
            dst_endpoint: TunnelDestination {
                hostname: &e.upstream,
                svc_name: &e.route,
            },
            traffic: TunnelTraffic {
                bytes_out: e.bytes_up,
                bytes_in: e.bytes_down,
                bytes: e.bytes_up.saturating_add(e.bytes_down),
            },
            connection_info: ConnectionInfo {
                protocol_name: "tcp",
                direction_id: 2,
                direction: "Outbound",
            },
            unmapped: TunnelUnmapped {
                event: "tunnel_closed",
                route: &e.route,
                user: e.user.as_deref(),
                request_id: &e.request_id,
                closed_by: e.reason.closed_by(),
                reason: e.reason.as_str(),
            },
        }
    }
}

/// Network Activity (4001): a bypass attempt, refused (activity Refuse) or recorded (Open).
#[derive(Serialize)]
struct BypassRecord<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
    container: ContainerRecord<'a>,
    dst_endpoint: Endpoint,
    connection_info: ConnectionInfo,
    unmapped: BypassUnmapped,
}

#[derive(Serialize)]
struct ConnectionInfo {
    protocol_name: &'static str,
    direction_id: u8,
    direction: &'static str,
}

#[derive(Serialize)]
struct BypassUnmapped {
    event: &'static str,
}

impl<'a> BypassRecord<'a> {
    fn new(e: &'a BypassAttempt) -> Self {
        let who = e.source.key();
        let message = if e.refused {
            format!(
                "connection to protected upstream {} from {who} refused: only sekisho may connect",
                e.upstream
            )
        } else {
            format!(
                "connection to protected upstream {} from {who} bypasses sekisho (mode: audit, let through)",
                e.upstream
            )
        };
        let (activity, action_id, action, disposition_id, disposition) = if e.refused {
            ((5, "Refuse"), 2, "Denied", 2, "Blocked")
        } else {
            ((1, "Open"), 1, "Allowed", 1, "Allowed")
        };
        BypassRecord {
            head: head(
                &NETWORK_ACTIVITY,
                activity,
                e.time,
                if e.refused { 4 } else { 3 },
                false,
                None,
                None,
                Some(message),
                None,
            ),
            action_id,
            action,
            disposition_id,
            disposition,
            container: ContainerRecord::new(&e.source),
            dst_endpoint: Endpoint {
                ip: e.upstream.ip(),
                port: Some(e.upstream.port()),
                intermediate_ips: None,
            },
            connection_info: ConnectionInfo {
                protocol_name: "tcp",
                direction_id: 3,
                direction: "Lateral",
            },
            unmapped: BypassUnmapped {
                event: "upstream_bypass",
            },
        }
    }
}

/// Network Activity (4001), activity Refuse: the NIC guard's drops.
#[derive(Serialize)]
struct NetworkRecord<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
    count: u64,
    start_time: i64,
    end_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint>,
    dst_endpoint: NetworkDestination<'a>,
    traffic: Traffic,
    unmapped: NetworkUnmapped<'a>,
}

#[derive(Serialize)]
struct NetworkDestination<'a> {
    interface_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Serialize)]
struct Traffic {
    packets: u64,
}

#[derive(Serialize)]
struct NetworkUnmapped<'a> {
    event: &'static str,
    reasons: std::collections::BTreeMap<&'static str, u64>,
    ports: &'a [u16],
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<u64>,
}

impl<'a> NetworkRecord<'a> {
    fn new(e: &'a NetworkEvent) -> Self {
        let message = match e.source {
            Some(source) => format!(
                "XDP guard on {} dropped {} frame(s) from {source}",
                e.interface, e.packets
            ),
            None => format!(
                "XDP guard on {} dropped {} frame(s) from {} further source(s), not itemised",
                e.interface, e.packets, e.sources
            ),
        };
        NetworkRecord {
            head: head(
                &NETWORK_ACTIVITY,
                (5, "Refuse"),
                e.time,
                2,
                false,
                None,
                None,
                Some(message),
                None,
            ),
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
            count: e.packets,
            start_time: millis(e.start),
            end_time: millis(e.time),
            src_endpoint: e.source.map(|ip| Endpoint {
                ip,
                port: None,
                intermediate_ips: None,
            }),
            dst_endpoint: NetworkDestination {
                interface_name: &e.interface,
                port: match e.ports.as_slice() {
                    [one] => Some(*one),
                    _ => None,
                },
            },
            traffic: Traffic { packets: e.packets },
            unmapped: NetworkUnmapped {
                event: "nic_drop",
                reasons: e.reasons.iter().copied().collect(),
                ports: &e.ports,
                sources: e.source.is_none().then_some(e.sources),
            },
        }
    }
}

/// Application Lifecycle (6002).
#[derive(Serialize)]
struct LifecycleRecord<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    app: Product,
    unmapped: Unmapped<'a>,
}

impl<'a> LifecycleRecord<'a> {
    fn new(e: &'a LifecycleEvent) -> Self {
        let (activity, event) = match e.activity {
            Lifecycle::Start => ((3, "Start"), "start"),
            Lifecycle::Stop => ((4, "Stop"), "stop"),
            Lifecycle::Reload => ((8, "Update"), "reload"),
            Lifecycle::AuditLog => ((99, "Audit Log"), "audit_log"),
        };
        let severity = if e.success { 1 } else { 4 };
        LifecycleRecord {
            head: head(
                &APPLICATION_LIFECYCLE,
                activity,
                e.time,
                severity,
                e.success,
                None,
                None,
                Some(e.message.clone()),
                None,
            ),
            app: Product {
                name: "sekisho",
                vendor_name: "sekisho",
                version: env!("CARGO_PKG_VERSION"),
            },
            unmapped: Unmapped {
                decision: None,
                event: Some(event),
                route: None,
                rule: None,
                report_only_deny: false,
                user: None,
                unverified_email: None,
                cgroup: None,
                door: None,
                upstream_local: None,
                upstream_container: None,
                attribution: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionState;
    use serde_json::Value;

    fn identity() -> Identity {
        Identity {
            sub: "u-1".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            groups: vec!["eng".into(), "admins".into()],
            issuer: "https://idp.example.com".into(),
            email_verified: Some(true),
            claims: serde_json::Map::new(),
            provider_sid: None,
        }
    }

    fn http_event() -> HttpEvent {
        let session = OpenSession::new(SessionState {
            sid: "sid-1".into(),
            identity: identity(),
            login_at: 1,
            seen_at: 1,
            tokens_expire_at: None,
            refresh_token: Some("secret-refresh-token".into()),
            id_token: Some("secret-id-token".into()),
        });
        HttpEvent {
            time: jiff::Timestamp::from_millisecond(1_764_068_813_123).unwrap(),
            request_id: "req-1".into(),
            method: Method::PATCH,
            version: Version::HTTP_2,
            scheme: "https",
            host: "app.example.com".into(),
            port: Some(8443),
            path: "/admin/x".into(),
            query: Query::Redacted,
            user_agent: Some("curl/8".into()),
            peer: "10.0.0.1:4444".parse().unwrap(),
            client_ip: "203.0.113.9".parse().unwrap(),
            tls_version: Some("1.3"),
            client_certificate: Some("ab".repeat(32)),
            route: Some(Arc::from("admin")),
            decision: Decision::Deny,
            policy: Some(Arc::from("admins-only")),
            rule: Some("policies.admins-only: no allow rule matched".into()),
            report_only_deny: false,
            actor: Some(Actor::Session(Arc::new(session))),
            upstream: Some("10.1.0.5:8080".into()),
            upstream_connection: None,
            door: Door::Proxy,
            status: 403,
            detail: None,
            bytes_in: Some(12),
            bytes_out: None,
            latency: Duration::from_millis(3),
            container: None,
            upstream_container: None,
            attribution_unavailable: false,
        }
    }

    fn json(event: &Event) -> Value {
        let mut out = Vec::new();
        event.write_json(&mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn http_records_carry_the_ocsf_fields() {
        let v = json(&Event::Http(Box::new(http_event())));
        assert_eq!(v["class_uid"], 4002);
        assert_eq!(v["activity_id"], 9);
        assert_eq!(v["type_uid"], 400209);
        assert_eq!(v["time"], 1_764_068_813_123_i64);
        assert_eq!(v["time_dt"], "2025-11-25T11:06:53.123Z");
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["action"], "Denied");
        assert_eq!(v["http_request"]["url"]["path"], "/admin/x");
        assert_eq!(v["http_request"]["url"]["query_string"], "[redacted]");
        assert_eq!(v["http_request"]["version"], "HTTP/2");
        assert_eq!(v["http_response"]["code"], 403);
        assert_eq!(v["src_endpoint"]["ip"], "203.0.113.9");
        assert_eq!(v["src_endpoint"]["intermediate_ips"][0], "10.0.0.1");
        assert_eq!(v["dst_endpoint"]["hostname"], "10.1.0.5");
        assert_eq!(v["dst_endpoint"]["port"], 8080);
        assert_eq!(v["actor"]["user"]["email_addr"], "alice@example.com");
        assert_eq!(v["actor"]["user"]["groups"][1]["name"], "admins");
        assert_eq!(
            v["actor"]["session"]["uid"],
            crate::session::sid_hash("sid-1")
        );
        assert_eq!(
            v["actor"]["authorizations"][0]["policy"]["desc"],
            "policies.admins-only: no allow rule matched"
        );
        assert_eq!(
            v["tls"]["certificate"]["fingerprints"][0]["algorithm_id"],
            3
        );
        assert_eq!(v["unmapped"]["decision"], "deny");
        assert_eq!(v["unmapped"]["route"], "admin");
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
    }

    #[test]
    fn records_never_carry_tokens_or_session_ids() {
        let mut out = Vec::new();
        Event::Http(Box::new(http_event()))
            .write_json(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("secret-refresh-token"));
        assert!(!text.contains("secret-id-token"));
        assert!(!text.contains("\"sid-1\""));
    }

    #[test]
    fn auth_and_lifecycle_records_have_their_classes() {
        let auth = json(&Event::Auth(Box::new(AuthEvent {
            time: jiff::Timestamp::UNIX_EPOCH,
            activity: AuthActivity::Login,
            success: false,
            detail: Some("state mismatch".into()),
            request_id: Some("r".into()),
            identity: None,
            session: None,
            provider: Some("https://idp".into()),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            peer: Some("127.0.0.1:1".parse().unwrap()),
            user_agent: None,
            host: Some("app".into()),
        })));
        assert_eq!(auth["class_uid"], 3002);
        assert_eq!(auth["type_uid"], 300201);
        assert_eq!(auth["status"], "Failure");
        assert_eq!(auth["status_detail"], "state mismatch");
        assert_eq!(auth["auth_protocol"], "OpenID");
        let life = json(&Event::Lifecycle(Box::new(LifecycleEvent {
            time: jiff::Timestamp::UNIX_EPOCH,
            activity: Lifecycle::Reload,
            success: true,
            message: "3 routes".into(),
        })));
        assert_eq!(life["class_uid"], 6002);
        assert_eq!(life["activity_name"], "Update");
        assert_eq!(life["unmapped"]["event"], "reload");
    }

    /// What the log writes for an HTTP event, and what serde's derive writes for the documented
    /// shape: the same bytes.
    fn assert_written_as_serde_writes(e: &HttpEvent) {
        let mut fast = Vec::new();
        http_record::write(e, &mut fast).unwrap();
        let reference = serde_json::to_vec(&HttpRecord::new(e)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&reference)
        );
    }

    fn container(id: u64) -> Container {
        Container {
            cgroup_id: id,
            cgroup: Some(format!("/kubepods/pod-{id}/\"odd\"\n")),
            id: Some("c".repeat(64)),
            runtime: Some("containerd"),
            pod_uid: Some("pod-uid".into()),
            qos: Some("burstable"),
            unit: None,
            pid: Some(42),
            process: Some("curl".into()),
        }
    }

    #[test]
    fn the_hand_written_http_record_is_what_serde_writes_for_every_kind_of_request() {
        let base = http_event();
        assert_written_as_serde_writes(&base);
        let variants: &[fn(&mut HttpEvent)] = &[
            |e| {
                e.decision = Decision::Allow;
                e.status = 200;
                e.method = Method::GET;
                e.version = Version::HTTP_11;
            },
            |e| {
                e.decision = Decision::Public;
                e.actor = None;
                e.policy = None;
                e.rule = None;
            },
            |e| {
                e.decision = Decision::Login;
                e.status = 302;
                e.actor = None;
                e.route = None;
                e.upstream = None;
            },
            |e| {
                e.decision = Decision::Unauthenticated;
                e.status = 401;
                e.actor = None;
                e.tls_version = None;
                e.client_certificate = None;
            },
            |e| {
                e.decision = Decision::Error;
                e.status = 400;
                e.detail = Some("malformed \"path\"\n\u{1}".into());
                e.method = Method::from_bytes(b"PURGE").unwrap();
                e.version = Version::HTTP_10;
            },
            |e| {
                e.policy = None;
                e.rule = Some("rule only".into());
                e.report_only_deny = true;
                e.query = Query::Kept("a=\"1\"&b=\\x\t".into());
                e.port = None;
            },
            |e| {
                e.policy = Some(Arc::from("policy only"));
                e.rule = None;
                e.query = Query::None;
                e.user_agent = None;
                e.bytes_in = None;
                e.bytes_out = Some(u64::MAX);
                e.latency = Duration::from_secs(u64::MAX);
            },
            |e| {
                e.client_ip = e.peer.ip();
                e.peer = "[2001:db8::1]:65535".parse().unwrap();
                e.client_ip = e.peer.ip();
                e.upstream = Some("upstream-without-port".into());
                e.upstream_connection = Some(crate::connection::UpstreamConnection {
                    local: "[::1]:40000".parse().unwrap(),
                    remote: "[::1]:8080".parse().unwrap(),
                });
            },
            |e| {
                e.upstream = Some("host:notaport".into());
                e.route = None;
                e.door = Door::ForwardAuth;
                e.attribution_unavailable = true;
            },
            |e| {
                e.upstream = None;
                e.door = Door::Admin;
                e.container = Some(container(7));
                e.upstream_container = Some(Container {
                    cgroup_id: 9,
                    ..Container::default()
                });
            },
            |e| {
                let mut identity = identity();
                identity.email_verified = Some(false);
                identity.name = None;
                identity.groups.clear();
                identity.sub = "weird \"sub\" \u{7f} é".into();
                e.actor = Some(Actor::Bearer {
                    identity: Arc::new(identity),
                    token_hash: "tokenhash".into(),
                });
            },
            |e| {
                let mut identity = identity();
                identity.email_verified = None;
                identity.email = None;
                e.actor = Some(Actor::Bearer {
                    identity: Arc::new(identity),
                    token_hash: "tokenhash".into(),
                });
                e.time = jiff::Timestamp::from_second(0).unwrap();
            },
        ];
        for variant in variants {
            let mut e = http_event();
            variant(&mut e);
            assert_written_as_serde_writes(&e);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_request_text_is_written_as_serde_writes_it(
            host in ".*", path in ".*", agent in proptest::option::of(".*"),
            detail in proptest::option::of(".*"), rule in proptest::option::of(".*"),
            query in ".*", sub in ".*", group in ".*", nanos in 0..i64::MAX,
        ) {
            let mut e = http_event();
            e.host = host;
            e.path = path;
            e.user_agent = agent;
            e.detail = detail;
            e.rule = rule;
            e.query = Query::Kept(query);
            e.time = jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap();
            let mut identity = identity();
            identity.sub = sub;
            identity.groups.push(group);
            e.actor = Some(Actor::Bearer { identity: Arc::new(identity), token_hash: "h".into() });
            let mut fast = Vec::new();
            http_record::write(&e, &mut fast).unwrap();
            proptest::prop_assert_eq!(fast, serde_json::to_vec(&HttpRecord::new(&e)).unwrap());
        }
    }
}
