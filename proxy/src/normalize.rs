//! Request paths: the normal form ([`sekisho_config::path`], shared with the configuration's
//! path literals) and the check that an upstream reading a path its own way — ignoring case,
//! stripping `;` parameters, decoding `%25XX` again, as the route's `upstream_paths` allows —
//! would reach the same route and get the same policy decision as the path sekisho used.
//!
//! A reading that ignores case is compared with case-folded route and policy literals (the
//! route table's folded twin): for such an upstream `/Admin` and `/admin` are one path, so a
//! route written `/Admin` covers a request for `/admin`.

use http::Method;
use sekisho_config::Route;
use sekisho_config::path::{Leniency, View, upstream_views};

use crate::error::ProxyError;
use crate::policy::{self, Effect, Input, RegoEngines};
use crate::routes::RouteTable;

pub use sekisho_config::path::{PathError, is_normal, normalize_path, path_has_prefix};

/// Why a request path was refused: its upstream could read it as another path that sekisho
/// routes or authorizes differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    /// A reading would reach another route (or none).
    #[error("{} reading of the path reaches another route", what(.0))]
    Route(Vec<Leniency>),
    /// A reading would get another policy decision.
    #[error("{} reading of the path gets another policy decision", what(.0))]
    Decision(Vec<Leniency>),
    /// A reading has no normal form (a second decoding yields `%2F`, say).
    #[error("{} reading of the path is malformed: {error}", what(.0), error = .1)]
    Unreadable(Vec<Leniency>, PathError),
}

impl Ambiguity {
    /// A short sentence for the client.
    pub fn public_reason(&self) -> &'static str {
        let leniencies = match self {
            Ambiguity::Route(l) | Ambiguity::Decision(l) | Ambiguity::Unreadable(l, _) => l,
        };
        match leniencies.as_slice() {
            [Leniency::Case] => {
                "the upstream ignores letter case, and this path in other case is routed or authorized differently; use its exact spelling"
            }
            [Leniency::Parameters] => {
                "the upstream strips ';' parameters, and this path without them is routed or authorized differently"
            }
            [Leniency::Decoding] => {
                "the upstream decodes '%25' escapes again, and this path decoded twice is routed or authorized differently or malformed"
            }
            _ => {
                "the upstream reads this path differently (letter case, ';' parameters, double decoding) and would be routed or authorized differently"
            }
        }
    }
}

impl From<Ambiguity> for ProxyError {
    fn from(ambiguity: Ambiguity) -> Self {
        tracing::debug!(%ambiguity, "path refused");
        ProxyError::BadRequest {
            reason: ambiguity.public_reason(),
        }
    }
}

/// The readings of a request path its route's upstream could take, once they were found to
/// reach the same route ([`Views::check_route`]); [`Views::check_decision`] then compares the
/// policy decisions.
#[derive(Debug, Default)]
pub struct Views {
    views: Vec<View>,
}

/// Where a request is addressed, for the route lookups of the readings.
#[derive(Debug, Clone, Copy)]
pub struct Address<'a> {
    /// The scheme.
    pub scheme: sekisho_config::Scheme,
    /// Lowercase host.
    pub host: &'a str,
    /// The port addressed, if named.
    pub port: Option<u16>,
    /// The method.
    pub method: &'a Method,
}

impl Views {
    /// The readings of `path` by the upstream of `route` (found at `route_index` for `path`);
    /// refused when one reaches another route, or none, or has no normal form.
    pub fn check_route(
        table: &RouteTable,
        address: Address<'_>,
        path: &str,
        route_index: usize,
        route: &Route,
    ) -> Result<Views, Ambiguity> {
        let views = upstream_views(path, route.upstream_paths, table.folding_matters());
        for view in &views {
            let reading = match &view.path {
                Ok(reading) => reading,
                Err(e) => return Err(Ambiguity::Unreadable(view.leniencies.clone(), *e)),
            };
            let (scheme, host, port, method) =
                (address.scheme, address.host, address.port, address.method);
            let found = if view.folded() {
                table.lookup_folded(scheme, host, port, method, reading)
            } else {
                table.lookup(scheme, host, port, method, reading)
            };
            if found.found().map(|(index, _)| index) != Some(route_index) {
                return Err(Ambiguity::Route(view.leniencies.clone()));
            }
        }
        Ok(Views { views })
    }

    /// Refused when a reading gets another effect than `effect`, the decision on the path
    /// itself (under the route's policy with case-folded literals for readings that ignore case).
    pub fn check_decision(
        &self,
        table: &RouteTable,
        route_index: usize,
        route: &Route,
        input: &Input<'_>,
        effect: Effect,
        rego: &RegoEngines,
    ) -> Result<(), Ambiguity> {
        for view in &self.views {
            let Ok(reading) = &view.path else {
                return Err(Ambiguity::Decision(view.leniencies.clone()));
            };
            let policy = if view.folded() {
                match table.folded_route(route_index) {
                    Some(folded) => &folded.policy,
                    None => return Err(Ambiguity::Decision(view.leniencies.clone())),
                }
            } else {
                &route.policy
            };
            let reading_input = Input {
                path: reading,
                ..*input
            };
            if policy::decide(policy, &reading_input, rego).effect != effect {
                return Err(Ambiguity::Decision(view.leniencies.clone()));
            }
        }
        Ok(())
    }
}

/// `a case-insensitive`, `a parameter-stripping and twice-decoding`, … for log lines.
fn what(leniencies: &[Leniency]) -> String {
    let names: Vec<&str> = leniencies
        .iter()
        .map(|l| match l {
            Leniency::Case => "case-insensitive",
            Leniency::Parameters => "parameter-stripping",
            Leniency::Decoding => "twice-decoding",
        })
        .collect();
    format!("a {}", names.join(" and "))
}

#[cfg(test)]
mod tests;
