//! Phase: route. The route table picks the route (host, path, method); then every reading the
//! route's upstream may take of the path (case folded, `;` parameters stripped, `%25XX`
//! decoded again, per `upstream_paths`) must reach the same route, or the request is refused.

use std::sync::Arc;

use http::Method;
use sekisho_config::Route;

use super::{Proxy, Routing};
use crate::error::ProxyError;
use crate::facts::Facts;
use crate::gate::{Access, DecisionCheck};
use crate::normalize::{Address, Views};
use crate::policy::RegoEngines;
use crate::routes::Match;
use crate::target::Target;
use crate::traces::Attribute;
use crate::upstream::Upstream;

/// The route a request matched, with what the later phases need of it.
#[derive(Debug)]
pub(super) struct Routed<'r> {
    /// Its index in the table.
    pub index: usize,
    /// The route.
    pub route: &'r Route,
    /// The readings its upstream may take of the path (checked again once a policy decided).
    pub views: Views,
    /// Its upstream client.
    pub upstream: &'r Upstream,
}

impl<'r> Routed<'r> {
    /// The check the gate makes once the policy decided: every reading the route's upstream
    /// may take of the path gets the same decision, or the request is refused (400).
    pub fn decision_check<'a>(
        &'a self,
        routing: &'a Routing,
    ) -> impl Fn(&crate::policy::Input<'_>, crate::policy::Effect) -> Result<(), ProxyError> + Sync + 'a
    {
        move |input, effect| {
            self.views
                .check_decision(
                    &routing.table,
                    self.index,
                    self.route,
                    input,
                    effect,
                    &routing.rego,
                )
                .map_err(ProxyError::from)
        }
    }

    /// Who may pass on this route: anyone on a public route, else whom its policy allows.
    pub fn access<'a>(
        &'a self,
        rego: &'a RegoEngines,
        check: Option<DecisionCheck<'a>>,
    ) -> Access<'a> {
        let route = self.route;
        if route.public {
            return Access::Public;
        }
        Access::Policy {
            policy: &route.policy,
            mode: route.mode,
            rego,
            cors_allow_preflight: route.cors_allow_preflight,
            check,
        }
    }
}

impl Proxy {
    /// The route for `target`, or 404/405/400.
    pub(super) fn route<'r>(
        &self,
        routing: &'r Routing,
        method: &Method,
        target: &Target,
        facts: &mut Facts,
    ) -> Result<Routed<'r>, ProxyError> {
        let (index, route) = match routing.table.lookup(
            target.scheme,
            &target.host,
            target.port,
            method,
            &target.path,
        ) {
            Match::Found(index, route) => {
                facts.record.route = Some(Arc::from(route.id.as_str()));
                (index, route)
            }
            Match::MethodNotAllowed => return Err(ProxyError::MethodNotAllowed),
            Match::NoRoute => return Err(ProxyError::NoRoute),
        };
        // A path its upstream would read as one routed elsewhere (case, `;`, `%25`) is refused.
        let address = Address {
            scheme: target.scheme,
            host: &target.host,
            port: target.port,
            method,
        };
        let views = Views::check_route(&routing.table, address, &target.path, index, route)?;
        let upstream = routing.upstreams.get(index).ok_or(ProxyError::Internal {
            detail: "route without upstream".into(),
        })?;
        facts.durations = routing.durations.get(index).cloned();
        facts.trace.event("route matched", || {
            vec![Attribute::string("sekisho.route", route.id.as_str())]
        });
        Ok(Routed {
            index,
            route,
            views,
            upstream,
        })
    }
}
