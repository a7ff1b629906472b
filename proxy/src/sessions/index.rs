//! Which live sessions came from which provider session and which user: sessions are sealed
//! cookies that sekisho does not store, so when a provider signs a session out (back-channel
//! logout) this index names the sekisho sessions to announce as ended — tunnels close and the
//! NIC guard withdraws their addresses at once. It is fed by the session layer (starts,
//! refreshes, and a session's first presentation since this process started), forgets ended
//! and expired sessions, and is bounded. What is refused is decided by the revocation list
//! alone; a session the index does not know is still refused, only not announced.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::session::{Identity, ProviderKeys};

/// Sessions indexed at most (their ends are still enforced beyond; only not announced).
const MAX_SESSIONS: usize = 100_000;
/// Entries before the first sweep of expired ones.
const FIRST_SWEEP: usize = 1024;

/// A session the index knows.
#[derive(Debug, Clone)]
pub struct Indexed {
    /// Whose (for the `Ended` event).
    pub identity: Arc<Identity>,
    /// Unix seconds of its login.
    pub login_at: u64,
    /// Unix seconds when it ends at the latest.
    pub expires_at: u64,
    keys: ProviderKeys,
}

/// The index.
#[derive(Debug)]
pub struct ProviderIndex {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// By session hash.
    sessions: HashMap<String, Indexed>,
    /// Provider session key → session hashes.
    by_sid: HashMap<String, HashSet<String>>,
    /// Subject key → session hashes.
    by_subject: HashMap<String, HashSet<String>>,
    /// Size at which expired entries are swept next.
    sweep_at: usize,
    /// Whether the "index full" warning was logged since the index last had room.
    warned: bool,
}

impl Default for ProviderIndex {
    fn default() -> Self {
        ProviderIndex {
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                by_sid: HashMap::new(),
                by_subject: HashMap::new(),
                sweep_at: FIRST_SWEEP,
                warned: false,
            }),
        }
    }
}

impl ProviderIndex {
    /// Knows `session` (its keys, login and latest expiry); `identity` is made only when the
    /// session is new or its keys changed (a refresh that changed the identity).
    pub fn insert(
        &self,
        session: &str,
        keys: &ProviderKeys,
        login_at: u64,
        expires_at: u64,
        now: u64,
        identity: impl FnOnce() -> Arc<Identity>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(known) = inner.sessions.get_mut(session)
            && known.keys == *keys
        {
            known.expires_at = expires_at;
            return;
        }
        if expires_at <= now {
            return;
        }
        inner.unlink(session);
        if inner.sessions.len() >= inner.sweep_at {
            inner.sweep(now);
        }
        if inner.sessions.len() >= MAX_SESSIONS {
            if !inner.warned {
                inner.warned = true;
                tracing::warn!(
                    max = MAX_SESSIONS,
                    "provider session index full: back-channel logouts still refuse the sessions \
                     it misses, but announce their end only at the next request or tunnel check"
                );
            }
            return;
        }
        if let Some(sid) = &keys.ended {
            inner
                .by_sid
                .entry(sid.clone())
                .or_default()
                .insert(session.to_owned());
        }
        inner
            .by_subject
            .entry(keys.subject.clone())
            .or_default()
            .insert(session.to_owned());
        inner.sessions.insert(
            session.to_owned(),
            Indexed {
                identity: identity(),
                login_at,
                expires_at,
                keys: keys.clone(),
            },
        );
    }

    /// Forgets `session` (it ended).
    pub fn remove(&self, session: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.unlink(session);
        }
    }

    /// Takes out the live sessions that came from the provider session whose
    /// [`crate::session::provider_logout_hash`] is `sid_key`.
    pub fn take_provider_session(&self, sid_key: &str, now: u64) -> Vec<(String, Indexed)> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let hashes: Vec<String> = inner
            .by_sid
            .get(sid_key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        inner.take(hashes, now)
    }

    /// Takes out the live sessions of the subject `subject_key` that started at or before
    /// `before` (Unix seconds).
    pub fn take_subject(&self, subject_key: &str, before: u64, now: u64) -> Vec<(String, Indexed)> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let hashes: Vec<String> = inner
            .by_subject
            .get(subject_key)
            .map(|set| {
                set.iter()
                    .filter(|h| inner.sessions.get(*h).is_some_and(|s| s.login_at <= before))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        inner.take(hashes, now)
    }

    /// Sessions indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.sessions.len())
    }

    /// Whether none is.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Removes `hashes` and returns those still live at `now`.
    fn take(&mut self, hashes: Vec<String>, now: u64) -> Vec<(String, Indexed)> {
        hashes
            .into_iter()
            .filter_map(|hash| {
                let entry = self.unlink(&hash)?;
                (entry.expires_at > now).then_some((hash, entry))
            })
            .collect()
    }

    /// Removes a session from every map.
    fn unlink(&mut self, session: &str) -> Option<Indexed> {
        let entry = self.sessions.remove(session)?;
        if let Some(sid) = &entry.keys.ended {
            remove_member(&mut self.by_sid, sid, session);
        }
        remove_member(&mut self.by_subject, &entry.keys.subject, session);
        Some(entry)
    }

    /// Drops the expired sessions; the next sweep comes when the index has doubled.
    fn sweep(&mut self, now: u64) {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(hash, _)| hash.clone())
            .collect();
        for hash in expired {
            self.unlink(&hash);
        }
        self.sweep_at = self.sessions.len().saturating_mul(2).max(FIRST_SWEEP);
        if self.sessions.len() < MAX_SESSIONS {
            self.warned = false;
        }
    }
}

fn remove_member(map: &mut HashMap<String, HashSet<String>>, key: &str, session: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(session);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(sid: Option<&str>, sub: &str) -> ProviderKeys {
        ProviderKeys {
            signed_out: sid.map(|s| format!("out-{s}")),
            ended: sid.map(str::to_owned),
            subject: sub.to_owned(),
        }
    }

    fn identity() -> Arc<Identity> {
        Arc::new(crate::session::test_identity("alice"))
    }

    fn hashes(taken: &[(String, Indexed)]) -> Vec<&str> {
        let mut h: Vec<&str> = taken.iter().map(|(h, _)| h.as_str()).collect();
        h.sort_unstable();
        h
    }

    #[test]
    fn sessions_are_found_by_provider_session_and_by_subject_before_a_time() {
        let index = ProviderIndex::default();
        index.insert("s1", &keys(Some("p1"), "alice"), 100, 1000, 100, identity);
        index.insert("s2", &keys(Some("p1"), "alice"), 150, 1000, 150, identity);
        index.insert("s3", &keys(Some("p2"), "alice"), 300, 1000, 300, identity);
        index.insert("s4", &keys(None, "bob"), 100, 1000, 100, identity);
        assert_eq!(index.len(), 4);
        assert_eq!(
            hashes(&index.take_provider_session("p1", 400)),
            ["s1", "s2"]
        );
        assert!(
            index.take_provider_session("p1", 400).is_empty(),
            "taken once"
        );
        // alice's sessions that started at or before 300: s3 (s1, s2 are gone).
        assert!(index.take_subject("alice", 299, 400).is_empty());
        assert_eq!(hashes(&index.take_subject("alice", 300, 400)), ["s3"]);
        assert_eq!(index.len(), 1);
        index.remove("s4");
        assert!(index.is_empty());
    }

    #[test]
    fn a_refresh_moves_a_session_to_its_new_keys_and_ended_or_expired_ones_are_not_announced() {
        let index = ProviderIndex::default();
        index.insert("s1", &keys(Some("p1"), "alice"), 100, 1000, 100, identity);
        let mut made = 0;
        // The same keys: only the expiry moves, no identity is made.
        index.insert("s1", &keys(Some("p1"), "alice"), 100, 2000, 200, || {
            made += 1;
            identity()
        });
        assert_eq!(made, 0);
        index.insert("s1", &keys(Some("p9"), "alice"), 100, 2000, 200, identity);
        assert!(index.take_provider_session("p1", 300).is_empty());
        let taken = index.take_provider_session("p9", 300);
        assert_eq!(taken.first().map(|(_, s)| s.expires_at), Some(2000));
        index.insert("old", &keys(Some("p3"), "carol"), 100, 500, 100, identity);
        assert!(index.take_provider_session("p3", 500).is_empty(), "expired");
        index.insert("late", &keys(Some("p4"), "carol"), 100, 500, 600, identity);
        assert!(index.is_empty(), "an expired session is not indexed");
    }

    #[test]
    fn the_index_sweeps_expired_sessions_and_stays_bounded() {
        let index = ProviderIndex::default();
        for i in 0..FIRST_SWEEP {
            index.insert(&format!("e{i}"), &keys(None, "u"), 0, 10, 0, identity);
        }
        // The next insertion at time 20 sweeps the expired ones.
        index.insert("live", &keys(None, "u"), 15, 100, 20, identity);
        assert_eq!(index.len(), 1);
        for i in 0..MAX_SESSIONS + 10 {
            index.insert(&format!("l{i}"), &keys(None, "u"), 20, 1000, 20, identity);
        }
        assert_eq!(index.len(), MAX_SESSIONS);
    }
}
