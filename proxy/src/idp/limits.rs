//! Failure limits: failed sign-ins are counted per account and per source address (an IPv6
//! source per /64), failed client authentications at the token endpoint per client and source.
//! Past the configured number, attempts are refused for a lockout that doubles with every
//! further failure, up to a maximum; counts are forgotten after a quiet `max_lockout`.
//!
//! An attempt is counted *before* its check ([`Limiter::reserve`]), under the lock that decides
//! whether it may go ahead, and refunded only when the check passes: however requests are timed,
//! a limit of N means at most N checks per key until the lockout starts.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sekisho_config::LoginLimits;

/// Entries kept per map before expired ones are swept.
const SWEEP_AT: usize = 100_000;

/// Why an attempt may not go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// The account is locked for this long.
    Account(Duration),
    /// The source is locked for this long.
    Source(Duration),
}

/// A sign-in attempt counted as a failure of its account and source until refunded.
#[derive(Debug)]
#[must_use = "an attempt stays counted as a failure unless refunded"]
pub struct Reservation {
    account: String,
    source: IpAddr,
    account_undo: Undo,
    source_undo: Undo,
}

/// A client authentication counted as a failure of its client and source until refunded.
#[derive(Debug)]
#[must_use = "an attempt stays counted as a failure unless refunded"]
pub struct ClientReservation {
    key: (String, IpAddr),
    undo: Undo,
}

/// Failure counts.
#[derive(Debug)]
pub struct Limiter {
    limits: LoginLimits,
    accounts: Mutex<HashMap<String, Entry>>,
    sources: Mutex<HashMap<IpAddr, Entry>>,
    clients: Mutex<HashMap<(String, IpAddr), Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// What counting one attempt changed, to take it back.
#[derive(Debug, Clone, Copy)]
struct Undo {
    /// The lockout before the attempt.
    before: Option<Instant>,
    /// The lockout the attempt started, if it started one.
    started: Option<Instant>,
}

impl Limiter {
    /// A limiter with no failures recorded.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            accounts: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a sign-in attempt for `account` from `source` as a failure of both, unless either
    /// is locked (then nothing is counted). Both maps are held while deciding, so concurrent
    /// attempts are counted one after the other.
    pub fn reserve(
        &self,
        account: &str,
        source: IpAddr,
        now: Instant,
    ) -> Result<Reservation, Lockout> {
        let source = source_key(source);
        let mut accounts = lock(&self.accounts);
        let mut sources = lock(&self.sources);
        if let Some(left) = remaining(&accounts, account, now) {
            return Err(Lockout::Account(left));
        }
        if let Some(left) = remaining(&sources, &source, now) {
            return Err(Lockout::Source(left));
        }
        let account_undo = count(
            &mut accounts,
            account.to_owned(),
            self.limits.account_failures,
            self.lockouts(),
            now,
        );
        let source_undo = count(
            &mut sources,
            source,
            self.limits.source_failures,
            self.lockouts(),
            now,
        );
        Ok(Reservation {
            account: account.to_owned(),
            source,
            account_undo,
            source_undo,
        })
    }

    /// The check passed: the attempt was not a failure.
    pub fn refund(&self, reservation: Reservation) {
        let mut accounts = lock(&self.accounts);
        let mut sources = lock(&self.sources);
        uncount(
            &mut accounts,
            &reservation.account,
            reservation.account_undo,
        );
        uncount(&mut sources, &reservation.source, reservation.source_undo);
    }

    /// Forgets an account's failures after a completed sign-in.
    pub fn succeed(&self, account: &str) {
        lock(&self.accounts).remove(account);
    }

    /// Counts a client authentication by `client` from `source` as a failure, unless the pair
    /// is locked: then the time left.
    pub fn reserve_client(
        &self,
        client: &str,
        source: IpAddr,
        now: Instant,
    ) -> Result<ClientReservation, Duration> {
        let key = (client.to_owned(), source_key(source));
        let mut clients = lock(&self.clients);
        if let Some(left) = remaining(&clients, &key, now) {
            return Err(left);
        }
        let undo = count(
            &mut clients,
            key.clone(),
            self.limits.client_failures,
            self.lockouts(),
            now,
        );
        Ok(ClientReservation { key, undo })
    }

    /// The client's secret was right: the attempt was not a failure.
    pub fn refund_client(&self, reservation: ClientReservation) {
        uncount(&mut lock(&self.clients), &reservation.key, reservation.undo);
    }

    fn lockouts(&self) -> (Duration, Duration) {
        (self.limits.lockout, self.limits.max_lockout)
    }
}

/// The map, also when a panicking thread poisoned its lock (the counts stay usable).
fn lock<K>(map: &Mutex<HashMap<K, Entry>>) -> MutexGuard<'_, HashMap<K, Entry>> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lockout left for `key`, if any.
fn remaining<K: Hash + Eq + std::borrow::Borrow<Q>, Q: Hash + Eq + ?Sized>(
    map: &HashMap<K, Entry>,
    key: &Q,
    now: Instant,
) -> Option<Duration> {
    let until = map.get(key)?.locked_until?;
    (until > now).then(|| until - now)
}

/// Counts one failure for `key`, locking it once `threshold` is reached.
fn count<K: Hash + Eq>(
    map: &mut HashMap<K, Entry>,
    key: K,
    threshold: u32,
    (lockout, max): (Duration, Duration),
    now: Instant,
) -> Undo {
    if map.len() >= SWEEP_AT {
        map.retain(|_, e| now.saturating_duration_since(e.last) <= max);
    }
    let entry = map.entry(key).or_insert(Entry {
        failures: 0,
        last: now,
        locked_until: None,
    });
    if now.saturating_duration_since(entry.last) > max {
        entry.failures = 0;
    }
    entry.failures = entry.failures.saturating_add(1);
    entry.last = now;
    let before = entry.locked_until;
    let mut started = None;
    if entry.failures >= threshold {
        let doublings = entry.failures.saturating_sub(threshold).min(20);
        let lock = lockout.saturating_mul(1 << doublings).min(max);
        let until = now.checked_add(lock).unwrap_or(now);
        entry.locked_until = Some(until);
        started = Some(until);
    }
    Undo { before, started }
}

/// Takes back one counted failure: the count, and the lockout it started unless a later
/// failure replaced it.
fn uncount<K: Hash + Eq>(map: &mut HashMap<K, Entry>, key: &K, undo: Undo) {
    if let Some(entry) = map.get_mut(key) {
        entry.failures = entry.failures.saturating_sub(1);
        if undo.started.is_some() && entry.locked_until == undo.started {
            entry.locked_until = undo.before;
        }
    }
}

/// IPv4 addresses as they are; IPv6 addresses by their /64 (one host usually owns a /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            for byte in octets.iter_mut().skip(8) {
                *byte = 0;
            }
            IpAddr::V6(octets.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Limiter {
        Limiter::new(LoginLimits {
            account_failures: 3,
            source_failures: 5,
            client_failures: 3,
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(60),
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reserves and keeps the attempt (a failed check); the lockout when refused.
    fn fail(l: &Limiter, account: &str, source: IpAddr, now: Instant) -> Option<Lockout> {
        l.reserve(account, source, now).err()
    }

    #[test]
    fn accounts_lock_after_their_limit_and_lockouts_double() {
        let l = limiter();
        let ip = ip("192.0.2.1");
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(fail(&l, "alice", ip, t), None);
        }
        assert_eq!(
            fail(&l, "alice", ip, t),
            Some(Lockout::Account(Duration::from_secs(10)))
        );
        let bob = l.reserve("bob", ip, t);
        assert!(bob.is_ok());
        if let Ok(bob) = bob {
            l.refund(bob);
        }
        let later = t + Duration::from_secs(11);
        assert_eq!(fail(&l, "alice", ip, later), None);
        assert_eq!(
            fail(&l, "alice", ip, later),
            Some(Lockout::Account(Duration::from_secs(20)))
        );
        l.succeed("alice");
        assert_eq!(fail(&l, "alice", ip, later), None);
    }

    #[test]
    fn refunded_attempts_do_not_count_nor_lock() {
        let l = limiter();
        let ip = ip("192.0.2.2");
        let t = Instant::now();
        for _ in 0..10 {
            match l.reserve("alice", ip, t) {
                Ok(r) => l.refund(r),
                Err(e) => panic!("refunded attempts counted: {e:?}"),
            }
        }
        assert_eq!(fail(&l, "alice", ip, t), None);
        assert_eq!(fail(&l, "alice", ip, t), None);
        // The third attempt starts the lockout while it runs; its success takes it back.
        let third = l.reserve("alice", ip, t);
        assert!(matches!(
            fail(&l, "alice", ip, t),
            Some(Lockout::Account(_))
        ));
        if let Ok(third) = third {
            l.refund(third);
        }
        assert_eq!(fail(&l, "alice", ip, t), None);
    }

    #[test]
    fn concurrent_attempts_get_at_most_the_limit() {
        let l = std::sync::Arc::new(limiter());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
        let t = Instant::now();
        let threads: Vec<_> = (0..64u8)
            .map(|i| {
                let (l, barrier) = (l.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    l.reserve("alice", IpAddr::from([198, 51, 100, i]), t)
                        .is_ok()
                })
            })
            .collect();
        let allowed = threads
            .into_iter()
            .map(|t| t.join().unwrap_or(false))
            .filter(|ok| *ok)
            .count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn sources_lock_across_accounts_and_ipv6_counts_per_64() {
        let l = limiter();
        let t = Instant::now();
        for i in 0..5u8 {
            let source = ip(&format!("2001:db8::{i}"));
            assert_eq!(fail(&l, &format!("user{i}"), source, t), None);
        }
        assert!(matches!(
            fail(&l, "new", ip("2001:db8::ffff"), t),
            Some(Lockout::Source(_))
        ));
        assert_eq!(fail(&l, "new", ip("2001:db8:1::1"), t), None);
    }

    #[test]
    fn lockouts_are_capped_and_quiet_periods_forget() {
        let l = limiter();
        let ip = ip("192.0.2.9");
        let mut t = Instant::now();
        for _ in 0..2 {
            assert_eq!(fail(&l, "carol", ip, t), None);
        }
        let mut lockouts = Vec::new();
        for _ in 0..5 {
            assert_eq!(fail(&l, "carol", ip, t), None);
            match fail(&l, "carol", ip, t) {
                Some(Lockout::Account(left)) => {
                    lockouts.push(left.as_secs());
                    t += left;
                }
                other => panic!("not locked: {other:?}"),
            }
        }
        assert_eq!(lockouts, [10, 20, 40, 60, 60]);
        let much_later = t + Duration::from_secs(200);
        assert_eq!(fail(&l, "carol", ip, much_later), None);
        assert_eq!(fail(&l, "carol", ip, much_later), None);
    }

    #[test]
    fn clients_lock_per_client_and_source() {
        let l = limiter();
        let t = Instant::now();
        let here = ip("192.0.2.7");
        for _ in 0..3 {
            assert!(l.reserve_client("rp", here, t).is_ok());
        }
        assert_eq!(
            l.reserve_client("rp", here, t).err(),
            Some(Duration::from_secs(10))
        );
        assert!(l.reserve_client("rp", ip("192.0.2.8"), t).is_ok());
        match l.reserve_client("other", here, t) {
            Ok(r) => l.refund_client(r),
            Err(left) => panic!("another client is locked for {left:?}"),
        }
        for _ in 0..10 {
            match l.reserve_client("other", here, t) {
                Ok(r) => l.refund_client(r),
                Err(left) => panic!("refunded attempts counted: {left:?}"),
            }
        }
    }
}
