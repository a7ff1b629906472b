//! The routes of one host (or wildcard) on one listener, indexed by path: exact paths and
//! prefixes by hash, regexes in one [`RegexSet`].

use std::collections::HashMap;
use std::sync::Arc;

use regex::{Regex, RegexSet};
use sekisho_config::Route;
use sekisho_config::policy::PathMatch;

/// Route indices by path, for one host level of one listener.
#[derive(Debug, Default)]
pub(super) struct PathTable {
    /// Exact path → routes, in configuration order.
    exact: HashMap<String, Vec<usize>>,
    /// Regex routes in configuration order.
    regexes: Vec<(usize, Arc<Regex>)>,
    /// `regexes` as one set (same order); `None` when there are none or they are too large to
    /// combine, and then each is tried on its own.
    regex_set: Option<RegexSet>,
    /// Prefix → routes, in configuration order.
    prefixes: HashMap<String, Vec<usize>>,
    /// Byte lengths of the keys of `prefixes`: only ancestors of these lengths are probed.
    prefix_lengths: LengthSet,
}

impl PathTable {
    /// Adds route `index`, under its `path:` matcher or else its `from` prefix.
    pub(super) fn insert(&mut self, index: usize, route: &Route) {
        match &route.path {
            Some(PathMatch::Exact(path)) => self.exact.entry(path.clone()).or_default().push(index),
            Some(PathMatch::Regex(regex)) => self.regexes.push((index, Arc::clone(regex))),
            Some(PathMatch::Prefix(prefix)) => self.insert_prefix(index, prefix),
            None => self.insert_prefix(index, &route.from.path_prefix),
        }
    }

    fn insert_prefix(&mut self, index: usize, prefix: &str) {
        // `path_has_prefix` treats "" like "/": every path lies under it.
        let prefix = if prefix.is_empty() { "/" } else { prefix };
        self.prefix_lengths.insert(prefix.len());
        self.prefixes
            .entry(prefix.to_owned())
            .or_default()
            .push(index);
    }

    /// Combines the regexes into one set. Each pattern is recompiled with the default options
    /// (what `Regex::new` uses), so the set answers exactly as the individual regexes do.
    pub(super) fn seal(&mut self) {
        if self.regexes.is_empty() {
            return;
        }
        let patterns = self.regexes.iter().map(|(_, regex)| regex.as_str());
        match RegexSet::new(patterns) {
            Ok(set) => self.regex_set = Some(set),
            Err(error) => {
                tracing::warn!(%error, count = self.regexes.len(), "route regexes tried one by one");
            }
        }
    }

    /// Routes whose exact path is `path`.
    pub(super) fn exact(&self, path: &str) -> Option<&[usize]> {
        if self.exact.is_empty() {
            return None;
        }
        self.exact.get(path).map(Vec::as_slice)
    }

    /// Calls `visit` with each regex route matching `path`, in configuration order, until it
    /// returns true.
    pub(super) fn regex_matches(&self, path: &str, mut visit: impl FnMut(usize) -> bool) {
        if self.regexes.is_empty() {
            return;
        }
        match &self.regex_set {
            Some(set) => {
                if !set.is_match(path) {
                    return;
                }
                for position in set.matches(path).iter() {
                    if let Some((index, _)) = self.regexes.get(position)
                        && visit(*index)
                    {
                        return;
                    }
                }
            }
            None => {
                for (index, regex) in &self.regexes {
                    if regex.is_match(path) && visit(*index) {
                        return;
                    }
                }
            }
        }
    }

    /// Routes whose prefix is exactly `ancestor`.
    pub(super) fn prefix(&self, ancestor: &str) -> Option<&[usize]> {
        if !self.prefix_lengths.contains(ancestor.len()) {
            return None;
        }
        self.prefixes.get(ancestor).map(Vec::as_slice)
    }

    /// True when no route of this table matches by prefix.
    pub(super) fn has_no_prefixes(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// The tables of one host level: routes naming the request's port, then routes naming none.
#[derive(Debug, Clone, Copy)]
pub(super) struct HostLevel<'a>(pub(super) [Option<&'a PathTable>; 2]);

impl<'a> HostLevel<'a> {
    /// True when neither listener has routes for this host.
    pub(super) fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The tables present, port-specific first.
    pub(super) fn tables(&self) -> impl Iterator<Item = &'a PathTable> {
        self.0.into_iter().flatten()
    }
}

/// A set of small integers (string lengths), for skipping hash probes that cannot hit.
#[derive(Debug, Default)]
pub(super) struct LengthSet(Vec<bool>);

impl LengthSet {
    pub(super) fn insert(&mut self, length: usize) {
        if self.0.len() <= length {
            self.0.resize(length + 1, false);
        }
        if let Some(slot) = self.0.get_mut(length) {
            *slot = true;
        }
    }

    pub(super) fn contains(&self, length: usize) -> bool {
        self.0.get(length).copied().unwrap_or(false)
    }
}

/// The prefixes that cover `path` under [`path_has_prefix`](crate::normalize::path_has_prefix),
/// longest first: `/a/b/c` gives `/a/b/c`, `/a/b`, `/a`, `/`; `/a/` gives `/a/`, `/a`, `/`.
/// Slices of `path`, nothing allocated.
pub(super) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            Some(0) | None if current == "/" => None,
            Some(0) | None => Some("/"),
            Some(slash) => current.get(..slash),
        };
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_the_covering_prefixes_longest_first() {
        fn all(p: &str) -> Vec<&str> {
            ancestors(p).collect()
        }
        assert_eq!(all("/a/b/c"), ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(all("/a/b/"), ["/a/b/", "/a/b", "/a", "/"]);
        assert_eq!(all("/a"), ["/a", "/"]);
        assert_eq!(all("/"), ["/"]);
        for path in ["/a/b/c", "/a/b/", "/x", "/", "/a/bc/d"] {
            for prefix in [
                "/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a/bc", "/x", "/b",
            ] {
                assert_eq!(
                    ancestors(path).any(|a| a == prefix),
                    crate::normalize::path_has_prefix(path, prefix),
                    "{path} under {prefix}"
                );
            }
        }
    }

    #[test]
    fn length_set() {
        let mut set = LengthSet::default();
        set.insert(3);
        set.insert(0);
        assert!(set.contains(3) && set.contains(0));
        assert!(!set.contains(1) && !set.contains(4) && !set.contains(usize::MAX));
    }
}
