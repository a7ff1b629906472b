//! The login states already used at the callback, remembered until their flow would have
//! expired so a replayed callback is refused. Bounded, with O(1) amortised expiry: states
//! expire in the order they were claimed (every flow lives the same time), so the oldest is
//! always at the front of a queue.

use std::collections::{HashSet, VecDeque};

/// States remembered at most; past this the oldest is forgotten early (its code is single-use
/// at the provider and bound to its PKCE verifier, so forgetting it early only loses the
/// early refusal of a replay).
pub(super) const MAX_USED_STATES: usize = 100_000;

/// Used states and when each may be forgotten.
#[derive(Debug, Default)]
pub(super) struct UsedStates {
    set: HashSet<String>,
    queue: VecDeque<(u64, String)>,
    /// States forgotten before their time because the set was full.
    pub(super) evicted: u64,
}

impl UsedStates {
    /// Marks `state` used until `until`; false when it already was (a replay). Drops the states
    /// expired at `now` first, and the oldest one when full.
    pub(super) fn claim(&mut self, state: &str, now: u64, until: u64) -> bool {
        while let Some((expires, _)) = self.queue.front()
            && *expires <= now
        {
            if let Some((_, old)) = self.queue.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.set.contains(state) {
            return false;
        }
        if self.set.len() >= MAX_USED_STATES
            && let Some((_, old)) = self.queue.pop_front()
        {
            self.set.remove(&old);
            self.evicted += 1;
        }
        self.set.insert(state.to_owned());
        self.queue.push_back((until, state.to_owned()));
        true
    }

    /// States remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_claimed_once_until_it_expires() {
        let mut used = UsedStates::default();
        assert!(used.claim("a", 100, 700));
        assert!(!used.claim("a", 200, 800), "a replay is refused");
        assert!(used.claim("b", 300, 900));
        assert_eq!(used.len(), 2);
        assert!(used.claim("c", 701, 1301), "a is forgotten once expired");
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn the_set_is_bounded_and_expiry_costs_no_scan() {
        let mut used = UsedStates::default();
        let total = MAX_USED_STATES + 500;
        for i in 0..total {
            assert!(used.claim(&format!("s{i}"), 1000, 1600));
        }
        assert_eq!(used.len(), MAX_USED_STATES, "never more than the bound");
        assert_eq!(used.evicted, 500);
        assert!(!used.claim(&format!("s{}", total - 1), 1000, 1600));
        // Everything expires at once: the next claim empties the queue front to back.
        assert!(used.claim("late", 1600, 2200));
        assert_eq!(used.len(), 1);
    }
}
