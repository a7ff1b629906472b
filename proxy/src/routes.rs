//! The route table: which configured route serves a request (scheme, host, port, method,
//! normalised path). Every step of a lookup is a hash probe or a slice of the request, so its
//! cost follows the request's host labels and path depth, never the number of routes.
//!
//! # What a route matches
//!
//! - **scheme**: equal.
//! - **host**: equal; or, for a wildcard `*.example.com`, any name with at least one more
//!   label in front of `example.com` (`a.example.com`, `a.b.example.com`), never the bare
//!   `example.com` nor `evilexample.com`. Hosts are compared lowercase (the proxy lowercases
//!   the request's `Host` and drops a trailing dot).
//! - **port**: a route that names a port serves only requests addressed to that port; one that
//!   names none serves any port.
//! - **path** (the normalised request path): the route's `path:` matcher when set, else the
//!   path prefix of its `from`. `exact` is string equality; `prefix` is
//!   [`path_has_prefix`](crate::normalize::path_has_prefix) (the prefix itself or anything
//!   under it on a segment boundary: `/api` covers `/api/x`, not `/apix`; `/` covers
//!   everything); `regex` is an unanchored search (anchor it yourself).
//! - **method**: one of the route's methods, or the route lists none.
//!
//! # Which route wins
//!
//! Candidates are tried in this order; the first whose method also matches wins.
//!
//! 1. **Host**: the exact host, then wildcards from the longest suffix to the shortest
//!    (`*.b.example.com` before `*.example.com`). A host that has routes, none of which
//!    matches the request, does not hide the wildcards: the lookup falls through to the next
//!    host level. (`app.example.com/api` configured alone still lets `*.example.com` serve
//!    `app.example.com/docs`; answering 404 instead would make adding a specific route silently
//!    unpublish the rest of the host.)
//! 2. **Path**, within one host level: the exact path, then regex paths in configuration
//!    order, then prefixes from the longest to the shortest.
//! 3. **Port**, within one path step: routes that name the request's port before routes that
//!    name none; then configuration order.
//!
//! A route whose scheme, host, port and path match but whose methods do not is skipped and the
//! next candidate is tried, at every step and across host levels. When nothing matches but
//! such a route was skipped, the answer is [`Match::MethodNotAllowed`] (405) rather than
//! [`Match::NoRoute`] (404).
//!
//! # Cost of a lookup
//!
//! Per (scheme, port) the table holds a hash map of exact hosts and one of wildcard suffixes
//! (`*.example.com` is stored as `example.com`). A request host is probed as itself, then as
//! each of its suffixes whose length some wildcard has (`a.b.example.com` → `b.example.com`,
//! `example.com`, `com`). In each host level found, exact paths are one probe; the regexes of
//! that host level form one [`regex::RegexSet`], run only when the level has regexes; prefixes
//! are found by probing each ancestor of the path (`/a/b/c`, `/a/b`, `/a`, `/`) whose length
//! some prefix of that level has. Nothing is allocated except by the regex set when one of its
//! patterns matches.

mod table;

use std::collections::HashMap;

use http::Method;
use sekisho_config::{Route, Scheme};

use table::{HostLevel, LengthSet, PathTable};

/// The outcome of a route lookup.
#[derive(Debug, Clone, Copy)]
pub enum Match<'a> {
    /// This route (index into the configuration's routes) serves the request.
    Found(usize, &'a Route),
    /// Some route serves this scheme, host, port and path, but not this method: answer 405.
    MethodNotAllowed,
    /// No route serves the request: answer 404.
    NoRoute,
}

impl<'a> Match<'a> {
    /// The route found, if any.
    pub fn found(self) -> Option<(usize, &'a Route)> {
        match self {
            Match::Found(index, route) => Some((index, route)),
            Match::MethodNotAllowed | Match::NoRoute => None,
        }
    }
}

/// Routes indexed for lookup.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Hosts by (scheme, port named by the route).
    listeners: HashMap<Listener, Hosts>,
    /// The same routes with case-folded path literals, case-insensitive regexes and policies
    /// folded likewise ([`crate::policy::fold_case`]), for the readings of upstreams that ignore
    /// case; `None` when no route's upstream does.
    folded: Option<Box<RouteTable>>,
    /// Some route's literals or rules match differently once case is folded (see
    /// [`RouteTable::folding_matters`]).
    folding_matters: bool,
}

impl RouteTable {
    /// Indexes `routes` (already validated). Never fails: a set of regexes too large to
    /// combine into one [`regex::RegexSet`] is tried one regex at a time instead.
    pub fn new(routes: Vec<Route>) -> Self {
        let folded = routes
            .iter()
            .any(|route| route.upstream_paths.ignores_case)
            .then(|| Box::new(Self::index(routes.iter().map(fold_case).collect())));
        let folding_matters = folded.is_some() && routes.iter().any(crate::policy::case_matters);
        RouteTable {
            folded,
            folding_matters,
            ..Self::index(routes)
        }
    }

    /// The table of `routes`, without a folded twin.
    fn index(routes: Vec<Route>) -> Self {
        let mut listeners: HashMap<Listener, Hosts> = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            let listener = Listener {
                scheme: route.from.scheme,
                port: route.from.port,
            };
            listeners
                .entry(listener)
                .or_default()
                .insert(&route.from.host)
                .insert(index, route);
        }
        for hosts in listeners.values_mut() {
            hosts.seal();
        }
        RouteTable {
            routes,
            listeners,
            folded: None,
            folding_matters: false,
        }
    }

    /// Like [`RouteTable::lookup`] for a case-folded `path`, against case-folded route literals
    /// (what an upstream that ignores case would take each route to cover). The index found
    /// is that of the same route in [`RouteTable::routes`].
    pub fn lookup_folded(
        &self,
        scheme: Scheme,
        host: &str,
        port: Option<u16>,
        method: &Method,
        path: &str,
    ) -> Match<'_> {
        match &self.folded {
            Some(folded) => folded.lookup(scheme, host, port, method, path),
            None => self.lookup(scheme, host, port, method, path),
        }
    }

    /// True when some route or `http_path` rule could match a path differently once case is
    /// folded (a literal with upper case, or a regex): then even a lower-case path is compared
    /// with the folded literals for an upstream that ignores case.
    pub fn folding_matters(&self) -> bool {
        self.folding_matters
    }

    /// Route `index` with case-folded path literals and policy, when some route's upstream
    /// ignores case.
    pub fn folded_route(&self, index: usize) -> Option<&Route> {
        self.folded.as_ref()?.routes.get(index)
    }

    /// The route for a request, in the order the module documentation gives. `host` is
    /// lowercase without a trailing dot, `port` the one the client addressed (from `Host`),
    /// `path` normalised ([`normalize_path`](crate::normalize::normalize_path)).
    pub fn lookup(
        &self,
        scheme: Scheme,
        host: &str,
        port: Option<u16>,
        method: &Method,
        path: &str,
    ) -> Match<'_> {
        self.search(scheme, host, port, Some(method.as_str()), path)
    }

    /// The route for a request whose method is not known: routes that list methods never
    /// match (fail closed). Prefer [`RouteTable::lookup`].
    pub fn find(
        &self,
        scheme: Scheme,
        host: &str,
        port: Option<u16>,
        path: &str,
    ) -> Option<(usize, &Route)> {
        self.search(scheme, host, port, None, path).found()
    }

    /// True when some route serves this scheme, host and port, exactly or through a wildcard
    /// (for sekisho's own endpoints).
    pub fn serves_host(&self, scheme: Scheme, host: &str, port: Option<u16>) -> bool {
        self.hosts(scheme, port).into_iter().flatten().any(|hosts| {
            hosts.exact.contains_key(host)
                || wildcard_suffixes(host).any(|suffix| hosts.wildcard(suffix).is_some())
        })
    }

    /// All routes, in configuration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The lookup behind [`RouteTable::lookup`] and [`RouteTable::find`]; `method: None`
    /// matches only routes that list no methods.
    fn search(
        &self,
        scheme: Scheme,
        host: &str,
        port: Option<u16>,
        method: Option<&str>,
        path: &str,
    ) -> Match<'_> {
        let [specific, any] = self.hosts(scheme, port);
        let mut search = Search {
            routes: &self.routes,
            method,
            path,
            method_mismatch: false,
        };
        let exact = HostLevel([
            specific.and_then(|h| h.exact.get(host)),
            any.and_then(|h| h.exact.get(host)),
        ]);
        if let Some(found) = search.level(exact) {
            return found;
        }
        for suffix in wildcard_suffixes(host) {
            let level = HostLevel([
                specific.and_then(|h| h.wildcard(suffix)),
                any.and_then(|h| h.wildcard(suffix)),
            ]);
            if let Some(found) = search.level(level) {
                return found;
            }
        }
        if search.method_mismatch {
            Match::MethodNotAllowed
        } else {
            Match::NoRoute
        }
    }

    /// The hosts of routes naming this port (when the request names one), then of routes
    /// naming none.
    fn hosts(&self, scheme: Scheme, port: Option<u16>) -> [Option<&Hosts>; 2] {
        let specific = port.and_then(|port| {
            self.listeners.get(&Listener {
                scheme,
                port: Some(port),
            })
        });
        let any = self.listeners.get(&Listener { scheme, port: None });
        [specific, any]
    }
}

/// The scheme and port routes are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Listener {
    scheme: Scheme,
    /// The port the route names; `None` serves every port.
    port: Option<u16>,
}

/// The routes of one listener, by host.
#[derive(Debug, Default)]
struct Hosts {
    /// Exact host → its routes.
    exact: HashMap<String, PathTable>,
    /// Wildcard suffix (`example.com` for `*.example.com`) → its routes.
    wildcard: HashMap<String, PathTable>,
    /// Byte lengths of the keys of `wildcard`: only suffixes of these lengths are probed.
    wildcard_lengths: LengthSet,
}

impl Hosts {
    /// The path table for a configured host (`*.suffix` or exact), created when new.
    fn insert(&mut self, host: &str) -> &mut PathTable {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("*.").filter(|suffix| !suffix.is_empty()) {
            Some(suffix) => {
                self.wildcard_lengths.insert(suffix.len());
                self.wildcard.entry(suffix.to_owned()).or_default()
            }
            None => self.exact.entry(host).or_default(),
        }
    }

    /// Builds the regex sets once every route is in.
    fn seal(&mut self) {
        for table in self.exact.values_mut().chain(self.wildcard.values_mut()) {
            table.seal();
        }
    }

    /// The routes of the wildcard over `suffix`.
    fn wildcard(&self, suffix: &str) -> Option<&PathTable> {
        if !self.wildcard_lengths.contains(suffix.len()) {
            return None;
        }
        self.wildcard.get(suffix)
    }
}

/// One lookup in progress: the request's method and path, and whether a route was skipped for
/// its method alone.
struct Search<'a, 'r> {
    routes: &'a [Route],
    method: Option<&'r str>,
    path: &'r str,
    method_mismatch: bool,
}

impl<'a> Search<'a, '_> {
    /// The winner within one host level (path steps in order), if any.
    fn level(&mut self, level: HostLevel<'_>) -> Option<Match<'a>> {
        if level.is_empty() {
            return None;
        }
        let path = self.path;
        for table in level.tables() {
            if let Some(found) = table.exact(path).and_then(|c| self.pick(c)) {
                return Some(found);
            }
        }
        for table in level.tables() {
            let mut found = None;
            table.regex_matches(path, |index| {
                found = self.pick(std::slice::from_ref(&index));
                found.is_some()
            });
            if found.is_some() {
                return found;
            }
        }
        if level.tables().all(PathTable::has_no_prefixes) {
            return None;
        }
        for ancestor in table::ancestors(path) {
            for table in level.tables() {
                if let Some(found) = table.prefix(ancestor).and_then(|c| self.pick(c)) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The first of `candidates` (route indices, all matching the path) whose methods allow
    /// the request's.
    fn pick(&mut self, candidates: &[usize]) -> Option<Match<'a>> {
        for &index in candidates {
            let Some(route) = self.routes.get(index) else {
                continue;
            };
            let allowed = route.methods.is_empty()
                || self
                    .method
                    .is_some_and(|method| route.methods.iter().any(|m| m == method));
            if allowed {
                return Some(Match::Found(index, route));
            }
            self.method_mismatch = true;
        }
        None
    }
}

/// `route` as an upstream that ignores case reads it: path literals folded, regexes
/// case-insensitive, its policy's path rules likewise.
fn fold_case(route: &Route) -> Route {
    let mut folded = route.clone();
    folded.from.path_prefix = sekisho_config::path::fold_case(&route.from.path_prefix);
    folded.path = route.path.as_ref().map(crate::policy::fold_path_match);
    folded.policy = std::sync::Arc::new(crate::policy::fold_case(&route.policy));
    folded
}

/// The suffixes of `host` a wildcard could cover, longest first: for `a.b.example.com`,
/// `b.example.com`, `example.com`, `com`. A suffix is offered only when a non-empty label
/// stands before it, so `.example.com` and `a..example.com` match no `*.example.com`.
fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    let bytes = host.as_bytes();
    host.match_indices('.').filter_map(move |(dot, _)| {
        let label_before = dot.checked_sub(1).and_then(|i| bytes.get(i));
        match label_before {
            Some(b'.') | None => None,
            Some(_) => host.get(dot + 1..).filter(|suffix| !suffix.is_empty()),
        }
    })
}

#[cfg(test)]
mod tests;
