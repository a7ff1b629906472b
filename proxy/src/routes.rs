//! The route table: from (scheme, host, port, normalised path) to the route that serves it.
//! Hosts are found by hash; within a host the longest matching path prefix wins.

use std::collections::HashMap;

use sekisho_config::{Route, Scheme};

use crate::normalize::path_has_prefix;

/// Routes indexed for lookup.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Host → indices into `routes`, longest prefix first.
    by_host: HashMap<String, Vec<usize>>,
}

impl RouteTable {
    /// Indexes `routes` (already validated: unique `from`).
    pub fn new(routes: Vec<Route>) -> Self {
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            by_host.entry(route.from.host.clone()).or_default().push(i);
        }
        for indices in by_host.values_mut() {
            indices.sort_by_key(|i| std::cmp::Reverse(routes.get(*i).map_or(0, |r| r.from.path_prefix.len())));
        }
        RouteTable { routes, by_host }
    }

    /// The route for a request. `port` is the port the client addressed (from `Host`); a route
    /// that names a port only matches that port.
    pub fn find(&self, scheme: Scheme, host: &str, port: Option<u16>, path: &str) -> Option<(usize, &Route)> {
        self.by_host
            .get(host)?
            .iter()
            .filter_map(|i| Some((*i, self.routes.get(*i)?)))
            .find(|(_, route)| {
                route.from.scheme == scheme
                    && route.from.port.is_none_or(|p| Some(p) == port)
                    && path_has_prefix(path, &route.from.path_prefix)
            })
    }

    /// All routes, in configuration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

impl RouteTable {
    /// True when some route serves this scheme, host and port (for sekisho's own endpoints).
    pub fn serves_host(&self, scheme: Scheme, host: &str, port: Option<u16>) -> bool {
        self.by_host.get(host).is_some_and(|indices| {
            indices.iter().filter_map(|i| self.routes.get(*i)).any(|r| r.from.scheme == scheme && r.from.port.is_none_or(|p| Some(p) == port))
        })
    }
}
