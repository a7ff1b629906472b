//! Turns one YAML document into a [`Config`]: each section of the schema is walked by hand,
//! defaults are filled in, secrets resolved and cross-field rules checked, and every problem
//! is collected rather than stopping at the first.

mod attribution;
mod audit;
pub(crate) mod idp;
mod policy;
mod route_options;
mod shared_state;
mod strip;
mod tracing;
mod upstream_health;
pub(crate) mod upstream_tls;
mod xdp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::{LoadError, LoaderOptions, Node};

use crate::error::{ConfigError, Problem};
use crate::model::{
    Config, IdentityHeaders, Oidc, Origin, Route, RouteMatch, RouteTimeouts, Scheme, SecretBytes,
    SecretString, Server, ServerTimeouts, Session, Signing, SigningAlgorithm, TlsCertificate,
    Tunnel, UpstreamPaths,
};
use crate::policy::{PathMatch, Policy, PolicyMode};
use crate::value;
use crate::walk::{Field, Map, Pos, Walker};
use policy::SharedPolicies;

/// Keys of the top-level mapping.
const TOP_LEVEL: &[&str] = &[
    "state_dir",
    "server",
    "oidc",
    "session",
    "signing",
    "identity_headers",
    "allowed_redirect_origins",
    "policies",
    "routes",
    "audit",
    "admin",
    "identity_provider",
    "strip_request_headers",
    "upstream_tls",
    "xdp",
    "shared_state",
    "attribution",
    "tracing",
];
/// Keys of `server`.
const SERVER: &[&str] = &[
    "http_listen",
    "https_listen",
    "tls",
    "client_ca_file",
    "require_client_certificate",
    "trusted_proxies",
    "timeouts",
];
/// Keys of each `server.tls` entry.
const TLS_CERTIFICATE: &[&str] = &["cert_file", "key_file"];
/// Keys of `server.timeouts`.
const SERVER_TIMEOUTS: &[&str] = &[
    "read_header",
    "idle",
    "tls_handshake",
    "tunnel_session_check",
];
/// Keys of `oidc`.
const OIDC: &[&str] = &[
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "groups_claim",
    "bearer_audiences",
    "allowed_algorithms",
    "post_logout_redirect_uri",
    "clock_skew",
    "assume_email_verified",
];
/// Keys of `session`.
const SESSION: &[&str] = &[
    "cookie_name",
    "keys",
    "absolute_lifetime",
    "idle_lifetime",
    "revocation_file",
];
/// Keys of `signing`.
const SIGNING: &[&str] = &["key", "assertion_lifetime", "issuer"];
/// Keys of `identity_headers`.
const IDENTITY_HEADERS: &[&str] = &["user", "email", "groups", "jwt_assertion"];
/// Keys of each route.
const ROUTE: &[&str] = &[
    "id",
    "from",
    "to",
    "preserve_host",
    "allow_websockets",
    "pass_identity_headers",
    "upstream_http2",
    "timeouts",
    "path",
    "methods",
    "policy",
    "mode",
    "show_error_details",
    "upstream_paths",
    "strip_request_headers",
    "tls_custom_ca",
    "tls_server_name",
    "tls_client_certificate",
    "tls_client_key",
    "tls_skip_verify",
    "public",
    "cors_allow_preflight",
    "set_request_headers",
    "remove_request_headers",
    "prefix_rewrite",
    "tunnel",
    "upstream_health",
    "health_check",
];
/// Keys of a route's `tunnel`.
const TUNNEL: &[&str] = &["idle_timeout", "max_duration"];
/// Keys of a route's `upstream_paths`.
const UPSTREAM_PATHS: &[&str] = &["case", "parameters", "decoding"];
/// Keys of a route's `timeouts`.
const ROUTE_TIMEOUTS: &[&str] = &["connect", "response_header", "idle"];
/// Keys of a secret written as a mapping.
const SECRET: &[&str] = &["file", "env"];

/// Longest allowed `signing.assertion_lifetime`.
const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// Parses `source`, the text of `file`, resolving relative paths against `file`'s directory and
/// `{env: VAR}` secrets through `env`. On failure, returns every problem found, sorted by
/// position.
pub(crate) fn document(
    source: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<Config, Vec<ConfigError>> {
    let mut walk = Walker::new(file);
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let root = match marked_yaml::parse_yaml_with_options(0, source, options) {
        Ok(root) => root,
        Err(error) => {
            let (pos, field, problem) = describe_load_error(&error);
            walk.report(pos, &field, problem);
            return Err(walk.finish());
        }
    };
    let mut parser = Parser {
        walk,
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        env,
        mtls: false,
        secrets,
    };
    let config = parser.config(&Field::root(&root));
    let errors = parser.walk.finish();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ if !errors.is_empty() => Err(errors),
        _ => {
            // Every `None` above is reported where it arises; this keeps a missed report from
            // turning into an empty error list.
            let mut walk = Walker::new(file);
            walk.report(Pos { line: 0, column: 0 }, "", Problem::Unreported);
            Err(walk.finish())
        }
    }
}

/// Walks the document, holding what relative paths and `{env: VAR}` secrets resolve against.
struct Parser<'a> {
    /// Collects the problems.
    walk: Walker<'a>,
    /// The config file's directory.
    base_dir: PathBuf,
    /// Looks up environment variables.
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Whether `server.client_ca_file` is written (whether or not it is valid), so that
    /// `client_certificate` criteria may be used.
    mtls: bool,
    /// Whether secrets are read and validated, or left as placeholders.
    secrets: Secrets,
}

/// Whether secrets are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    /// Read `{file:}` / `{env:}` secrets and validate every secret.
    Resolve,
    /// Check only the form of secret fields; fill placeholders (for tools that never use them,
    /// like `sekisho policy test`).
    Placeholders,
}

impl Parser<'_> {
    /// The whole document.
    fn config(&mut self, root: &Field<'_>) -> Option<Config> {
        let map = self.walk.mapping(root, TOP_LEVEL)?;
        self.mtls = root
            .peek("server")
            .and_then(|server| server.peek("client_ca_file"))
            .is_some();
        let state_dir =
            self.or_default(&map, "state_dir", Self::path, || PathBuf::from(".sekisho"));
        let state_dir = state_dir.map(|dir| self.base_dir.join(dir));
        let server = self
            .walk
            .required(&map, "server")
            .and_then(|field| self.server(&field));
        let oidc = self
            .walk
            .required(&map, "oidc")
            .and_then(|field| self.oidc(&field));
        let session = self
            .walk
            .required(&map, "session")
            .and_then(|field| self.session(&field, state_dir.as_deref()));
        let signing = self
            .walk
            .required(&map, "signing")
            .and_then(|field| self.signing(&field));
        let identity_headers = self.or_default(
            &map,
            "identity_headers",
            Self::identity_headers,
            IdentityHeaders::default,
        );
        let allowed_redirect_origins =
            self.or_default(&map, "allowed_redirect_origins", Self::origins, Vec::new);
        let policies = match map.get("policies") {
            Some(field) => self.policies(&field),
            None => SharedPolicies::none(),
        };
        let upstream_tls = self.or_default(
            &map,
            "upstream_tls",
            Self::upstream_tls_defaults,
            upstream_tls::TlsLevel::default,
        );
        let routes = self.walk.required(&map, "routes").and_then(|field| {
            self.routes(
                &field,
                &policies,
                upstream_tls.as_ref(),
                identity_headers.as_ref(),
            )
        });
        let audit = match (map.get("audit"), state_dir.as_deref()) {
            (Some(field), Some(dir)) => self.audit(&field, dir),
            (None, Some(dir)) => Some(Self::default_audit(dir)),
            (_, None) => None,
        };
        let admin = self.optional(&map, "admin", |p, f| p.admin(f, &policies));
        let xdp = self.optional(&map, "xdp", |p, f| p.xdp(f, server.as_ref()));
        let attribution = self.optional(&map, "attribution", Self::attribution);
        let shared_state = self.optional(&map, "shared_state", Self::shared_state);
        let tracing = self.optional(&map, "tracing", Self::tracing);
        let identity_provider = self.optional(&map, "identity_provider", |p, f| {
            p.identity_provider(f, state_dir.as_deref())
        });
        if let Some(Some(idp)) = &identity_provider {
            self.check_own_client(root, idp);
        }
        let strip_request_headers = self.or_default(
            &map,
            "strip_request_headers",
            Self::header_patterns,
            Vec::new,
        );
        let routes = match (routes, &strip_request_headers) {
            (Some(routes), Some(global)) => Some(strip::with_global(routes, global)),
            _ => None,
        };
        Some(Config {
            state_dir: state_dir?,
            server: server?,
            oidc: oidc?,
            session: session?,
            signing: signing?,
            identity_headers: identity_headers?,
            allowed_redirect_origins: allowed_redirect_origins?,
            routes: routes?,
            policies: policies.all()?,
            audit: audit?,
            admin: admin?,
            identity_provider: identity_provider?,
            strip_request_headers: strip_request_headers?,
            xdp: xdp?,
            attribution: attribution?,
            shared_state: shared_state?,
            tracing: tracing?,
        })
    }

    /// `server`.
    fn server(&mut self, field: &Field<'_>) -> Option<Server> {
        let map = self.walk.mapping(field, SERVER)?;
        let http_field = map.get("http_listen");
        let https_field = map.get("https_listen");
        let http_listen = self.optional(&map, "http_listen", |p, f| {
            p.walk.value(f, value::socket_addr)
        });
        let https_listen = self.optional(&map, "https_listen", |p, f| {
            p.walk.value(f, value::socket_addr)
        });
        let tls_field = map.get("tls");
        let tls = self.or_default(&map, "tls", Self::tls, Vec::new);
        let client_ca_field = map.get("client_ca_file");
        let client_ca_file = self.optional(&map, "client_ca_file", Self::client_ca_file);
        let require_field = map.get("require_client_certificate");
        let require_client_certificate = self.flag(&map, "require_client_certificate", false);
        let trusted_proxies = self.or_default(
            &map,
            "trusted_proxies",
            |p, f| p.list_of(f, |p, item| p.walk.value(item, value::ip_net)),
            Vec::new,
        );
        let timeouts = self.or_default(&map, "timeouts", Self::server_timeouts, || {
            ServerTimeouts::default()
        });

        if http_field.is_none() && https_field.is_none() {
            self.walk
                .report(map.pos(), &field.path, Problem::NoListener);
        }
        if let (Some(https_field), Some(tls)) = (&https_field, &tls)
            && tls.is_empty()
        {
            self.walk.report_at(https_field, Problem::HttpsWithoutTls);
        }
        if let (None, Some(tls_field), Some(tls)) = (&https_field, &tls_field, &tls)
            && !tls.is_empty()
        {
            self.walk.report_at(tls_field, Problem::TlsWithoutHttps);
        }
        if let (None, Some(client_ca_field)) = (&https_field, &client_ca_field) {
            self.walk
                .report_at(client_ca_field, Problem::ClientCaWithoutTls);
        }
        if let (None, Some(require_field), Some(true)) =
            (&client_ca_field, &require_field, require_client_certificate)
        {
            self.walk
                .report_at(require_field, Problem::RequireWithoutClientCa);
        }

        Some(Server {
            http_listen: http_listen?,
            https_listen: https_listen?,
            tls: tls?,
            trusted_proxies: trusted_proxies?,
            timeouts: timeouts?,
            client_ca_file: client_ca_file?,
            require_client_certificate: require_client_certificate?,
        })
    }

    /// `server.client_ca_file`: read now, so that a missing file or one without certificates is
    /// reported with the rest.
    fn client_ca_file(&mut self, field: &Field<'_>) -> Option<PathBuf> {
        let written = self.path(field)?;
        let path = self.base_dir.join(written);
        let problem = match std::fs::read_to_string(&path) {
            Ok(pem) => match value::certificate_pem(&pem) {
                Ok(()) => return Some(path),
                Err(source) => Problem::ClientCaPem {
                    path: path.display().to_string(),
                    source,
                },
            },
            Err(source) => Problem::ClientCaFile {
                path: path.display().to_string(),
                source,
            },
        };
        self.walk.report_at(field, problem);
        None
    }

    /// `server.tls`.
    fn tls(&mut self, field: &Field<'_>) -> Option<Vec<TlsCertificate>> {
        self.list_of(field, |p, item| {
            let map = p.walk.mapping(item, TLS_CERTIFICATE)?;
            let cert_file = p.walk.required(&map, "cert_file").and_then(|f| p.path(&f));
            let key_file = p.walk.required(&map, "key_file").and_then(|f| p.path(&f));
            Some(TlsCertificate {
                cert_file: p.base_dir.join(cert_file?),
                key_file: p.base_dir.join(key_file?),
            })
        })
    }

    /// `server.timeouts`.
    fn server_timeouts(&mut self, field: &Field<'_>) -> Option<ServerTimeouts> {
        let map = self.walk.mapping(field, SERVER_TIMEOUTS)?;
        let defaults = ServerTimeouts::default();
        let read_header =
            self.or_default(&map, "read_header", Self::duration, || defaults.read_header);
        let idle = self.or_default(&map, "idle", Self::duration, || defaults.idle);
        let tls_handshake = self.or_default(&map, "tls_handshake", Self::duration, || {
            defaults.tls_handshake
        });
        let tunnel_session_check = self.or_default(
            &map,
            "tunnel_session_check",
            |p, f| {
                let every = p.duration(f)?;
                if every <= Duration::from_secs(10) {
                    Some(every)
                } else {
                    p.walk.report_at(f, Problem::TunnelSessionCheck);
                    None
                }
            },
            || defaults.tunnel_session_check,
        );
        Some(ServerTimeouts {
            read_header: read_header?,
            idle: idle?,
            tls_handshake: tls_handshake?,
            tunnel_session_check: tunnel_session_check?,
        })
    }

    /// `oidc`.
    fn oidc(&mut self, field: &Field<'_>) -> Option<Oidc> {
        let map = self.walk.mapping(field, OIDC)?;
        let issuer = self
            .walk
            .required(&map, "issuer")
            .and_then(|f| self.walk.value(&f, value::issuer));
        let client_id = self
            .walk
            .required(&map, "client_id")
            .and_then(|f| self.walk.value(&f, value::non_empty));
        let client_secret = self
            .walk
            .required(&map, "client_secret")
            .and_then(|f| self.secret(&f));
        let scopes = self.or_default(
            &map,
            "scopes",
            |p, f| p.list_of(f, |p, item| p.walk.value(item, value::scope)),
            || {
                vec![
                    "openid".to_owned(),
                    "email".to_owned(),
                    "profile".to_owned(),
                ]
            },
        );
        let groups_claim = self.or_default(
            &map,
            "groups_claim",
            |p, f| p.walk.value(f, value::non_empty),
            || "groups".to_owned(),
        );
        let bearer_audiences = self.optional(&map, "bearer_audiences", |p, f| {
            p.non_empty_list_of(f, |p, item| p.walk.value(item, value::non_empty))
        });
        let allowed_algorithms = self.or_default(
            &map,
            "allowed_algorithms",
            |p, f| p.non_empty_list_of(f, |p, item| p.walk.value(item, value::signing_algorithm)),
            || {
                vec![
                    SigningAlgorithm::Rs256,
                    SigningAlgorithm::Es256,
                    SigningAlgorithm::EdDsa,
                ]
            },
        );
        let post_logout_redirect_uri = self.optional(&map, "post_logout_redirect_uri", |p, f| {
            p.walk.value(f, value::http_url)
        });
        let clock_skew = self.or_default(&map, "clock_skew", Self::duration, || {
            Duration::from_secs(60)
        });
        let assume_email_verified = self.flag(&map, "assume_email_verified", false);

        let client_id = client_id?;
        let mut scopes = scopes?;
        if !scopes.iter().any(|scope| scope == "openid") {
            scopes.insert(0, "openid".to_owned());
        }
        Some(Oidc {
            issuer: issuer?,
            bearer_audiences: bearer_audiences?.unwrap_or_else(|| vec![client_id.clone()]),
            client_id,
            client_secret: SecretString::new(client_secret?),
            scopes: dedup(scopes),
            groups_claim: groups_claim?,
            allowed_algorithms: dedup(allowed_algorithms?),
            post_logout_redirect_uri: post_logout_redirect_uri?,
            clock_skew: clock_skew?,
            assume_email_verified: assume_email_verified?,
        })
    }

    /// `session`; `state_dir` gives the default revocation file.
    fn session(&mut self, field: &Field<'_>, state_dir: Option<&Path>) -> Option<Session> {
        let map = self.walk.mapping(field, SESSION)?;
        let cookie_name = self.or_default(
            &map,
            "cookie_name",
            |p, f| p.walk.value(f, value::cookie_name),
            || "_sekisho".to_owned(),
        );
        let keys = self.walk.required(&map, "keys").and_then(|f| {
            self.non_empty_list_of(&f, |p, item| {
                let secret = p.secret(item)?;
                if p.secrets == Secrets::Placeholders {
                    return Some(SecretBytes::new(vec![0; 32]));
                }
                match value::session_key(&secret) {
                    Ok(key) => Some(SecretBytes::new(key)),
                    Err(error) => {
                        p.walk.report_at(item, error);
                        None
                    }
                }
            })
        });
        let absolute_lifetime = self.or_default(&map, "absolute_lifetime", Self::duration, || {
            Duration::from_secs(12 * 3600)
        });
        let idle_field = map.get("idle_lifetime");
        let idle_lifetime = self.optional(&map, "idle_lifetime", Self::duration);
        let revocation_file = self.optional(&map, "revocation_file", Self::path);

        let absolute_lifetime = absolute_lifetime?;
        let idle_lifetime = match (idle_lifetime?, idle_field) {
            (Some(idle), Some(idle_field)) if idle > absolute_lifetime => {
                let problem = Problem::IdleAboveAbsolute {
                    idle: value::format_duration(idle),
                    absolute: value::format_duration(absolute_lifetime),
                };
                self.walk.report_at(&idle_field, problem);
                return None;
            }
            (Some(idle), _) => idle,
            (None, _) => Duration::from_secs(3600).min(absolute_lifetime),
        };
        let revocation_file = match revocation_file? {
            Some(path) => self.base_dir.join(path),
            None => state_dir?.join("revoked-sessions"),
        };
        Some(Session {
            cookie_name: cookie_name?,
            keys: keys?,
            absolute_lifetime,
            idle_lifetime,
            revocation_file,
        })
    }

    /// `signing`.
    fn signing(&mut self, field: &Field<'_>) -> Option<Signing> {
        let map = self.walk.mapping(field, SIGNING)?;
        let key = self.walk.required(&map, "key").and_then(|f| {
            let pem = self.secret(&f)?;
            if self.secrets == Secrets::Placeholders {
                return Some(SecretString::new(pem));
            }
            match value::private_key_pem(&pem) {
                Ok(()) => Some(SecretString::new(pem)),
                Err(error) => {
                    self.walk.report_at(&f, error);
                    None
                }
            }
        });
        let assertion_lifetime =
            self.or_default(&map, "assertion_lifetime", Self::duration, || {
                Duration::from_secs(300)
            });
        if let (Some(lifetime), Some(lifetime_field)) =
            (assertion_lifetime, map.get("assertion_lifetime"))
            && lifetime > MAX_ASSERTION_LIFETIME
        {
            let problem = Problem::AssertionTooLong(value::format_duration(lifetime));
            self.walk.report_at(&lifetime_field, problem);
            return None;
        }
        let issuer = self.or_default(
            &map,
            "issuer",
            |p, f| p.walk.value(f, value::non_empty),
            || "sekisho".to_owned(),
        );
        Some(Signing {
            key: key?,
            assertion_lifetime: assertion_lifetime?,
            issuer: issuer?,
        })
    }

    /// `identity_headers`: valid, lowercase and pairwise distinct names.
    fn identity_headers(&mut self, field: &Field<'_>) -> Option<IdentityHeaders> {
        let map = self.walk.mapping(field, IDENTITY_HEADERS)?;
        let defaults = IdentityHeaders::default();
        let mut named: Vec<(&'static str, Option<String>, Option<Field<'_>>)> = Vec::new();
        for (key, default) in [
            ("user", defaults.user),
            ("email", defaults.email),
            ("groups", defaults.groups),
            ("jwt_assertion", defaults.jwt_assertion),
        ] {
            let header_field = map.get(key);
            let name = match &header_field {
                Some(f) => self.walk.value(f, value::header_name),
                None => Some(default),
            };
            named.push((key, name, header_field));
        }

        let mut distinct = true;
        for (index, (key, name, header_field)) in named.iter().enumerate() {
            let earlier = named
                .iter()
                .take(index)
                .find(|(_, other, _)| other.is_some() && other == name);
            if let (Some(name), Some((first, _, first_field))) = (name, earlier) {
                distinct = false;
                let at = header_field.as_ref().or(first_field.as_ref());
                let pos = at.map_or_else(|| map.pos(), Field::pos);
                let problem = Problem::DuplicateHeader {
                    name: name.clone(),
                    first,
                };
                self.walk
                    .report(pos, &format!("{}.{key}", &field.path), problem);
            }
        }

        let mut names = named.into_iter().map(|(_, name, _)| name);
        let headers = IdentityHeaders {
            user: names.next().flatten()?,
            email: names.next().flatten()?,
            groups: names.next().flatten()?,
            jwt_assertion: names.next().flatten()?,
        };
        distinct.then_some(headers)
    }

    /// `allowed_redirect_origins`.
    fn origins(&mut self, field: &Field<'_>) -> Option<Vec<Origin>> {
        self.list_of(field, |p, item| p.walk.value(item, value::origin))
    }

    /// `routes`: non-empty, ids unique, no two matching the same requests; `policy: NAME`
    /// resolved in `policies`; upstream TLS over `tls_defaults` (`None`: they did not parse);
    /// no route sets a header named in `identity` (when it parsed).
    fn routes(
        &mut self,
        field: &Field<'_>,
        policies: &SharedPolicies,
        tls_defaults: Option<&upstream_tls::TlsLevel>,
        identity: Option<&IdentityHeaders>,
    ) -> Option<Vec<Route>> {
        let items = self.walk.non_empty_list(field)?;
        let mut seen = Seen::default();
        let routes: Vec<Option<Route>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                self.route(item, index, &mut seen, policies, tls_defaults, identity)
            })
            .collect();
        routes.into_iter().collect()
    }

    /// One route; `seen` holds the ids and matches of the routes before it.
    fn route(
        &mut self,
        field: &Field<'_>,
        index: usize,
        seen: &mut Seen,
        policies: &SharedPolicies,
        tls_defaults: Option<&upstream_tls::TlsLevel>,
        identity: Option<&IdentityHeaders>,
    ) -> Option<Route> {
        let map = self.walk.mapping(field, ROUTE)?;
        let id_field = map.get("id");
        let id = self.or_default(
            &map,
            "id",
            |p, f| p.walk.value(f, value::route_id),
            || format!("route-{index}"),
        );
        if let Some(id) = &id {
            if let Some((_, first)) = seen.ids.iter().find(|(other, _)| other == id) {
                let pos = id_field.as_ref().map_or_else(|| map.pos(), Field::pos);
                let problem = Problem::DuplicateRouteId {
                    id: id.clone(),
                    first: *first,
                };
                self.walk
                    .report(pos, &format!("{}.id", &field.path), problem);
            }
            seen.ids.push((id.clone(), index));
        }
        let from_field = self.walk.required(&map, "from");
        let is_tunnel = from_field.as_ref().is_some_and(|f| {
            f.node
                .as_scalar()
                .and_then(|s| s.as_str().trim().get(..4))
                .is_some_and(|p| p.eq_ignore_ascii_case("tcp+"))
        });
        let from = from_field.as_ref().and_then(|f| {
            if is_tunnel {
                self.walk.value(f, value::tunnel_from)
            } else {
                self.walk.value(f, value::route_match)
            }
        });
        let path_field = map.get("path");
        let path = self.optional(&map, "path", Self::path_match);
        if let (Some(from), Some(path_field)) = (&from, &path_field)
            && from.path_prefix != "/"
        {
            let problem = Problem::PathWithFromPath(from.path_prefix.clone());
            self.walk.report_at(path_field, problem);
        }
        let methods = self.or_default(
            &map,
            "methods",
            |p, f| p.distinct_items(f, |p, item| p.walk.value(item, value::http_method)),
            Vec::new,
        );
        if let (Some(from), Some(path), Some(methods), Some(from_field)) =
            (&from, &path, &methods, &from_field)
        {
            let key = RouteKey::new(from, path.as_ref(), methods);
            if let Some((_, first)) = seen.matches.iter().find(|(other, _)| *other == key) {
                let first = *first;
                let problem = if path.is_none() && methods.is_empty() {
                    Problem::DuplicateRouteFrom {
                        from: from.to_string(),
                        first,
                    }
                } else {
                    Problem::DuplicateRouteMatch {
                        what: key.to_string(),
                        first,
                    }
                };
                self.walk.report_at(from_field, problem);
            }
            seen.matches.push((key, index));
        }
        // A tunnel's `to` is one tcp://HOST:PORT (required).
        let tunnel = if is_tunnel {
            let upstream = self
                .walk
                .required(&map, "to")
                .and_then(|f| self.walk.value(&f, value::tunnel_to));
            let limits = self.optional(&map, "tunnel", Self::tunnel_limits);
            match (upstream, limits) {
                (Some(upstream), Some(limits)) => {
                    let (idle_timeout, max_duration) = limits
                        .unwrap_or((Duration::from_secs(3600), Duration::from_secs(12 * 3600)));
                    Some(Some(Tunnel {
                        upstream,
                        idle_timeout,
                        max_duration,
                    }))
                }
                _ => None,
            }
        } else {
            if let Some(f) = map.get("tunnel") {
                self.walk.report_at(&f, Problem::TunnelOnHttpRoute);
            }
            Some(None)
        };
        // Without `to`, a forward-auth-only route; `to:` written without a value is a mistake.
        let to = if is_tunnel {
            Some(Vec::new())
        } else if map.has("to") {
            self.walk
                .required(&map, "to")
                .and_then(|f| self.upstreams(&f))
        } else {
            Some(Vec::new())
        };
        let tls = self.route_tls(&map, to.as_deref(), tls_defaults);
        let preserve_host = self.flag(&map, "preserve_host", false);
        let allow_websockets = self.flag(&map, "allow_websockets", false);
        let options = self.route_options(&map, path.as_ref().map(Option::as_ref), identity);
        let pass_identity_headers = self.flag(&map, "pass_identity_headers", true);
        let pass_identity_headers = match &options {
            // On a public route the flag is absent or `false` (`true` is reported): false.
            Some(options) if options.public => pass_identity_headers.map(|_| false),
            _ => pass_identity_headers,
        };
        let upstream_http2 = self.flag(&map, "upstream_http2", false);
        let timeouts = self.or_default(&map, "timeouts", Self::route_timeouts, || {
            RouteTimeouts::default()
        });
        let upstream_health = self.upstream_health(&map, !is_tunnel && map.has("to"));
        let policy = match map.get("policy") {
            Some(f) => self.route_policy(&f, policies),
            None => Some(Arc::new(Policy::authenticated_users(&format!(
                "{}.policy",
                field.path
            )))),
        };
        let mode = self.or_default(
            &map,
            "mode",
            |p, f| p.walk.value(f, value::policy_mode),
            PolicyMode::default,
        );
        let show_error_details = self.flag(&map, "show_error_details", false);
        let upstream_paths = self.or_default(
            &map,
            "upstream_paths",
            Self::upstream_paths,
            UpstreamPaths::default,
        );
        let strip_request_headers = self.or_default(
            &map,
            "strip_request_headers",
            Self::header_patterns,
            Vec::new,
        );
        let options = options?;
        Some(Route {
            id: id?,
            from: from?,
            to: to?,
            public: options.public,
            cors_allow_preflight: options.cors_allow_preflight,
            preserve_host: preserve_host?,
            allow_websockets: allow_websockets?,
            pass_identity_headers: pass_identity_headers?,
            upstream_http2: upstream_http2?,
            timeouts: timeouts?,
            upstream_health: upstream_health?,
            path: path?,
            methods: methods?,
            policy: policy?,
            mode: mode?,
            show_error_details: show_error_details?,
            upstream_paths: upstream_paths?,
            strip_request_headers: strip_request_headers?,
            tls: tls?,
            remove_request_headers: options.remove_request_headers,
            set_request_headers: options.set_request_headers,
            prefix_rewrite: options.prefix_rewrite,
            tunnel: tunnel?,
        })
    }

    /// A tunnel route's `tunnel: {idle_timeout, max_duration}` (defaults 1h and 12h).
    fn tunnel_limits(&mut self, field: &Field<'_>) -> Option<(Duration, Duration)> {
        let map = self.walk.mapping(field, TUNNEL)?;
        let idle = self.or_default(&map, "idle_timeout", Self::duration, || {
            Duration::from_secs(3600)
        });
        let max = self.or_default(&map, "max_duration", Self::duration, || {
            Duration::from_secs(12 * 3600)
        });
        Some((idle?, max?))
    }

    /// A route's `upstream_paths`: `{case: sensitive|insensitive, parameters: literal|stripped,
    /// decoding: once|twice}`, each lenient (the second word) when absent.
    fn upstream_paths(&mut self, field: &Field<'_>) -> Option<UpstreamPaths> {
        let map = self.walk.mapping(field, UPSTREAM_PATHS)?;
        let lenient = UpstreamPaths::default();
        let ignores_case = self.or_default(
            &map,
            "case",
            |p, f| p.walk.value(f, value::ignores_case),
            || lenient.ignores_case,
        );
        let strips_parameters = self.or_default(
            &map,
            "parameters",
            |p, f| p.walk.value(f, value::strips_parameters),
            || lenient.strips_parameters,
        );
        let decodes_twice = self.or_default(
            &map,
            "decoding",
            |p, f| p.walk.value(f, value::decodes_twice),
            || lenient.decodes_twice,
        );
        Some(UpstreamPaths {
            ignores_case: ignores_case?,
            strips_parameters: strips_parameters?,
            decodes_twice: decodes_twice?,
        })
    }

    /// A route's `to`: one URL or a non-empty list of them.
    fn upstreams(&mut self, field: &Field<'_>) -> Option<Vec<url::Url>> {
        match field.node {
            Node::Scalar(_) => self.walk.value(field, value::http_url).map(|url| vec![url]),
            Node::Sequence(_) => {
                self.non_empty_list_of(field, |p, item| p.walk.value(item, value::http_url))
            }
            Node::Mapping(_) => {
                let problem = Problem::WrongType {
                    expected: "a URL or a list of URLs",
                    found: "a mapping",
                };
                self.walk.report_at(field, problem);
                None
            }
        }
    }

    /// A route's `timeouts`.
    fn route_timeouts(&mut self, field: &Field<'_>) -> Option<RouteTimeouts> {
        let map = self.walk.mapping(field, ROUTE_TIMEOUTS)?;
        let defaults = RouteTimeouts::default();
        let connect = self.or_default(&map, "connect", Self::duration, || defaults.connect);
        let response_header = self.or_default(&map, "response_header", Self::duration, || {
            defaults.response_header
        });
        let idle = self.or_default(&map, "idle", Self::duration, || defaults.idle);
        Some(RouteTimeouts {
            connect: connect?,
            response_header: response_header?,
            idle: idle?,
        })
    }

    /// A secret: a literal string, `{file: PATH}` (read, trailing newlines trimmed) or
    /// `{env: VAR}`. Problems are reported against `field`'s path.
    fn secret(&mut self, field: &Field<'_>) -> Option<String> {
        if self.secrets == Secrets::Placeholders {
            return match field.node {
                Node::Scalar(_) => self.walk.string(field).map(|_| String::new()),
                Node::Mapping(_) => self.walk.mapping(field, SECRET).map(|_| String::new()),
                Node::Sequence(_) => {
                    let problem = Problem::WrongType {
                        expected: "a string, `{file: PATH}` or `{env: VAR}`",
                        found: "a list",
                    };
                    self.walk.report_at(field, problem);
                    None
                }
            };
        }
        let secret = match field.node {
            Node::Scalar(_) => self.walk.string(field)?.to_owned(),
            Node::Mapping(_) => {
                let map = self.walk.mapping(field, SECRET)?;
                match (map.get("file"), map.get("env")) {
                    (Some(file), None) => {
                        let written = self.path(&file)?;
                        let path = self.base_dir.join(written);
                        match std::fs::read_to_string(&path) {
                            Ok(text) => text.trim_end_matches(['\n', '\r']).to_owned(),
                            Err(source) => {
                                let problem = Problem::SecretFile {
                                    path: path.display().to_string(),
                                    source,
                                };
                                self.walk.report(file.pos(), &field.path, problem);
                                return None;
                            }
                        }
                    }
                    (None, Some(var)) => {
                        let name = self.walk.string(&var)?.trim();
                        match (self.env)(name) {
                            Some(value) => value,
                            None => {
                                let problem = Problem::EnvUnset(name.to_owned());
                                self.walk.report(var.pos(), &field.path, problem);
                                return None;
                            }
                        }
                    }
                    // Only unknown keys, each already reported.
                    (None, None) if !map.is_empty() && !SECRET.iter().any(|key| map.has(key)) => {
                        return None;
                    }
                    _ => {
                        self.walk.report_at(field, Problem::SecretForm);
                        return None;
                    }
                }
            }
            Node::Sequence(_) => {
                let problem = Problem::WrongType {
                    expected: "a string, `{file: PATH}` or `{env: VAR}`",
                    found: "a list",
                };
                self.walk.report_at(field, problem);
                return None;
            }
        };
        if secret.is_empty() {
            self.walk.report_at(field, Problem::SecretEmpty);
            return None;
        }
        Some(secret)
    }

    /// A duration like `30s`.
    fn duration(&mut self, field: &Field<'_>) -> Option<Duration> {
        self.walk.value(field, value::duration)
    }

    /// A file system path as written (callers resolve it against the config directory).
    fn path(&mut self, field: &Field<'_>) -> Option<PathBuf> {
        self.walk
            .value(field, |text| value::non_empty(text).map(PathBuf::from))
    }

    /// An optional boolean.
    fn flag(&mut self, map: &Map<'_>, key: &str, default: bool) -> Option<bool> {
        self.or_default(map, key, |p, f| p.walk.bool(f), || default)
    }

    /// Each element of the list `field`, parsed by `parse`; all elements are parsed, so that
    /// all their problems are reported.
    fn list_of<T>(
        &mut self,
        field: &Field<'_>,
        parse: impl FnMut(&mut Self, &Field<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.walk.list(field)?;
        self.each(&items, parse)
    }

    /// Like [`Self::list_of`], for a list that must have at least one element.
    fn non_empty_list_of<T>(
        &mut self,
        field: &Field<'_>,
        parse: impl FnMut(&mut Self, &Field<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.walk.non_empty_list(field)?;
        self.each(&items, parse)
    }

    /// Parses every item, then succeeds only if all did.
    fn each<T>(
        &mut self,
        items: &[Field<'_>],
        mut parse: impl FnMut(&mut Self, &Field<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let results: Vec<Option<T>> = items.iter().map(|item| parse(self, item)).collect();
        results.into_iter().collect()
    }

    /// `key` parsed by `parse`, or `default()` when absent or null.
    fn or_default<T>(
        &mut self,
        map: &Map<'_>,
        key: &str,
        parse: impl FnOnce(&mut Self, &Field<'_>) -> Option<T>,
        default: impl FnOnce() -> T,
    ) -> Option<T> {
        match map.get(key) {
            Some(field) => parse(self, &field),
            None => Some(default()),
        }
    }

    /// `Some(Some(value))` when `key` is present and valid, `Some(None)` when absent or null,
    /// `None` when invalid (and reported).
    fn optional<T>(
        &mut self,
        map: &Map<'_>,
        key: &str,
        parse: impl FnOnce(&mut Self, &Field<'_>) -> Option<T>,
    ) -> Option<Option<T>> {
        match map.get(key) {
            Some(field) => parse(self, &field).map(Some),
            None => Some(None),
        }
    }
}

/// Route ids and matches already taken, with the index of the route that took each.
#[derive(Debug, Default)]
struct Seen {
    /// Ids, in route order.
    ids: Vec<(String, usize)>,
    /// What each route matches, in route order.
    matches: Vec<(RouteKey, usize)>,
}

/// The requests a route matches, compared to find two routes that match the same ones: `from`'s
/// scheme, host and port, the path test in effect (`path`, else `from`'s prefix) and the methods.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteKey {
    /// `from`'s scheme.
    scheme: Scheme,
    /// `from`'s host (maybe a wildcard).
    host: String,
    /// `from`'s explicit port.
    port: Option<u16>,
    /// The path test in effect, rendered (`prefix "/api"`, `regex "^/v1/"`).
    path: String,
    /// The methods, sorted; empty for all.
    methods: Vec<String>,
}

impl RouteKey {
    /// The key of a route with these `from`, `path` and `methods`.
    fn new(from: &RouteMatch, path: Option<&PathMatch>, methods: &[String]) -> Self {
        let path = match path {
            Some(path) => path.to_string(),
            None => PathMatch::Prefix(from.path_prefix.clone()).to_string(),
        };
        let mut methods = methods.to_vec();
        methods.sort();
        Self {
            scheme: from.scheme,
            host: from.host.clone(),
            port: from.port,
            path,
            methods,
        }
    }
}

impl std::fmt::Display for RouteKey {
    /// `https://host[:port], path prefix "/api", methods GET, POST`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, ", path {}", self.path)?;
        if !self.methods.is_empty() {
            write!(f, ", methods {}", self.methods.join(", "))?;
        }
        Ok(())
    }
}

/// Removes later duplicates, keeping the first occurrence's position.
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut unique: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}

/// Position, field and problem for a document marked-yaml refused.
fn describe_load_error(error: &LoadError) -> (Pos, String, Problem) {
    let at = |mark: &marked_yaml::Marker| Pos {
        line: mark.line(),
        column: mark.column(),
    };
    match error {
        LoadError::TopLevelMustBeMapping(mark) | LoadError::TopLevelMustBeSequence(mark) => (
            at(mark),
            String::new(),
            Problem::Syntax(
                "the top level must be a mapping of sections (server, oidc, session, signing, routes, ...)"
                    .to_owned(),
            ),
        ),
        LoadError::UnexpectedAnchor(mark) => (
            at(mark),
            String::new(),
            Problem::Syntax("anchors and aliases (`&name`, `*name`) are not supported".to_owned()),
        ),
        LoadError::MappingKeyMustBeScalar(mark) => (
            at(mark),
            String::new(),
            Problem::Syntax("mapping keys must be plain strings".to_owned()),
        ),
        LoadError::UnexpectedTag(mark) => (
            at(mark),
            String::new(),
            Problem::Syntax("tags (`!name`) are not supported".to_owned()),
        ),
        LoadError::ScanError(mark, scan) => (
            at(mark),
            String::new(),
            Problem::Syntax(scan.info().to_owned()),
        ),
        LoadError::DuplicateKey(duplicate) => {
            let first_line = duplicate
                .prev_key
                .span()
                .start()
                .map_or(0, marked_yaml::Marker::line);
            let pos = duplicate
                .key
                .span()
                .start()
                .map_or(Pos { line: 0, column: 0 }, at);
            let problem = Problem::DuplicateKey {
                key: duplicate.key.as_str().to_owned(),
                first_line,
            };
            (pos, duplicate.key.as_str().to_owned(), problem)
        }
    }
}

#[cfg(test)]
mod tests;
