//! Failed-login limits: failures are counted per account and per source address (an IPv6
//! source per /64); past the configured number, attempts are refused for a lockout that doubles
//! with every further failure, up to a maximum. Counts are forgotten after a quiet `max_lockout`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sekisho_config::LoginLimits;

/// Entries kept per map before expired ones are swept.
const SWEEP_AT: usize = 100_000;

/// Whether an attempt may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// The account is locked for this long.
    AccountLocked(Duration),
    /// The source is locked for this long.
    SourceLocked(Duration),
}

/// Failure counts.
#[derive(Debug)]
pub struct Limiter {
    limits: LoginLimits,
    accounts: Mutex<HashMap<String, Entry>>,
    sources: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Limiter {
    /// A limiter with no failures recorded.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            accounts: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `account` may try from `source` now. A locked attempt is not counted.
    pub fn check(&self, account: &str, source: IpAddr, now: Instant) -> Verdict {
        if let Some(left) = remaining(&self.accounts, account, now) {
            return Verdict::AccountLocked(left);
        }
        if let Some(left) = remaining(&self.sources, &source_key(source), now) {
            return Verdict::SourceLocked(left);
        }
        Verdict::Allow
    }

    /// Records a failed attempt.
    pub fn fail(&self, account: &str, source: IpAddr, now: Instant) {
        let (lockout, max) = (self.limits.lockout, self.limits.max_lockout);
        if let Ok(mut accounts) = self.accounts.lock() {
            record(
                &mut accounts,
                account.to_owned(),
                self.limits.account_failures,
                (lockout, max),
                now,
            );
        }
        if let Ok(mut sources) = self.sources.lock() {
            record(
                &mut sources,
                source_key(source),
                self.limits.source_failures,
                (lockout, max),
                now,
            );
        }
    }

    /// Forgets an account's failures after a successful login.
    pub fn succeed(&self, account: &str) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(account);
        }
    }
}

/// The lockout left for `key`, if any.
fn remaining<K: std::hash::Hash + Eq + std::borrow::Borrow<Q>, Q: std::hash::Hash + Eq + ?Sized>(
    map: &Mutex<HashMap<K, Entry>>,
    key: &Q,
    now: Instant,
) -> Option<Duration> {
    let map = map.lock().ok()?;
    let until = map.get(key)?.locked_until?;
    (until > now).then(|| until - now)
}

/// Counts one failure for `key`, locking it once `threshold` is reached.
fn record<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Entry>,
    key: K,
    threshold: u32,
    (lockout, max): (Duration, Duration),
    now: Instant,
) {
    if map.len() >= SWEEP_AT {
        map.retain(|_, e| now.duration_since(e.last) <= max);
    }
    let entry = map.entry(key).or_insert(Entry {
        failures: 0,
        last: now,
        locked_until: None,
    });
    if now.duration_since(entry.last) > max {
        entry.failures = 0;
    }
    entry.failures = entry.failures.saturating_add(1);
    entry.last = now;
    if entry.failures >= threshold {
        let doublings = (entry.failures - threshold).min(20);
        let lock = lockout.saturating_mul(1 << doublings).min(max);
        entry.locked_until = Some(now + lock);
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
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(60),
        })
    }

    #[test]
    fn accounts_lock_after_their_limit_and_lockouts_double() {
        let l = limiter();
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for _ in 0..2 {
            l.fail("alice", ip, t);
            assert_eq!(l.check("alice", ip, t), Verdict::Allow);
        }
        l.fail("alice", ip, t);
        assert_eq!(
            l.check("alice", ip, t),
            Verdict::AccountLocked(Duration::from_secs(10))
        );
        assert_eq!(l.check("bob", ip, t), Verdict::Allow);
        let later = t + Duration::from_secs(11);
        assert_eq!(l.check("alice", ip, later), Verdict::Allow);
        l.fail("alice", ip, later);
        assert_eq!(
            l.check("alice", ip, later),
            Verdict::AccountLocked(Duration::from_secs(20))
        );
        l.succeed("alice");
        assert_eq!(l.check("alice", ip, later), Verdict::Allow);
    }

    #[test]
    fn sources_lock_across_accounts_and_ipv6_counts_per_64() {
        let l = limiter();
        let t = Instant::now();
        for i in 0..5u8 {
            let ip: IpAddr = format!("2001:db8::{i}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            l.fail(&format!("user{i}"), ip, t);
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(l.check("new", other, t), Verdict::SourceLocked(_)));
        let elsewhere: IpAddr = "2001:db8:1::1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.check("new", elsewhere, t), Verdict::Allow);
    }

    #[test]
    fn lockouts_are_capped_and_quiet_periods_forget() {
        let l = limiter();
        let ip: IpAddr = "192.0.2.9".parse().unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for _ in 0..30 {
            l.fail("carol", ip, t);
        }
        assert_eq!(
            l.check("carol", ip, t),
            Verdict::AccountLocked(Duration::from_secs(60))
        );
        let much_later = t + Duration::from_secs(200);
        l.fail("carol", ip, much_later);
        assert_eq!(l.check("carol", ip, much_later), Verdict::Allow);
    }
}
