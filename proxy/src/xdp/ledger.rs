//! What holds each admitted address, kept on disk (`{state_dir}/xdp-admissions`) so that a
//! restart of sekisho knows it: the pinned maps keep the admissions themselves, and this file
//! says which session, bearer token or operator's `sekisho xdp allow` each one is for. On start
//! the journal is replayed, entries that expired or whose session was revoked are dropped, the
//! file is rewritten compact, and admissions nothing holds any more are pruned from the maps.
//!
//! One line per change, appended:
//!
//! | line | meaning |
//! | --- | --- |
//! | `s ADDRESS SESSION EXPIRES` | a session (id hash) holds the address until `EXPIRES` (Unix s) |
//! | `e ADDRESS SESSION` | the session ended |
//! | `b ADDRESS EXPIRES` | a bearer token was used from the address; it expires then |
//! | `m ADDRESS EXPIRES` | admitted by hand until then |
//! | `r ADDRESS` | the hand-made admission was withdrawn |
//!
//! The file is not synced per line: the revocation list, which is, stays the authority on
//! ended sessions (a logout lost from this file is still a revoked session when replayed).
//! Malformed lines are skipped and counted; the file is compacted when the journal grows past
//! four times what it holds (and 1,024 lines), so replayed logins cannot grow it without bound.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the journal says holds each address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    /// Live sessions per address: session id hash → Unix expiry.
    pub sessions: HashMap<IpAddr, HashMap<String, u64>>,
    /// The latest bearer token expiry per address.
    pub bearers: HashMap<IpAddr, u64>,
    /// Hand-made admissions and their expiry.
    pub manual: HashMap<IpAddr, u64>,
}

impl Holders {
    /// Whether anything still holds `address`.
    pub fn holds(&self, address: &IpAddr) -> bool {
        self.sessions.contains_key(address)
            || self.bearers.contains_key(address)
            || self.manual.contains_key(address)
    }

    fn lines(&self) -> String {
        let mut text = String::new();
        for (address, sessions) in &self.sessions {
            for (session, expires) in sessions {
                text.push_str(&format!("s {address} {session} {expires}\n"));
            }
        }
        for (address, expires) in &self.bearers {
            text.push_str(&format!("b {address} {expires}\n"));
        }
        for (address, expires) in &self.manual {
            text.push_str(&format!("m {address} {expires}\n"));
        }
        text
    }

    fn len(&self) -> usize {
        self.sessions.values().map(HashMap::len).sum::<usize>()
            + self.bearers.len()
            + self.manual.len()
    }

    /// Applies one journal line; `false` when it is malformed.
    fn apply(&mut self, line: &str) -> bool {
        let mut fields = line.split(' ');
        let kind = fields.next();
        let Some(address) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            return false;
        };
        let address = address.to_canonical();
        let rest: Vec<&str> = fields.collect();
        let expiry = |field: Option<&&str>| field.and_then(|f| f.parse::<u64>().ok());
        match (kind, rest.as_slice()) {
            (Some("s"), [session, _]) if valid_session(session) => {
                let Some(expires) = expiry(rest.get(1)) else {
                    return false;
                };
                self.sessions
                    .entry(address)
                    .or_default()
                    .insert((*session).to_owned(), expires);
            }
            (Some("e"), [session]) if valid_session(session) => {
                if let Some(sessions) = self.sessions.get_mut(&address) {
                    sessions.remove(*session);
                    if sessions.is_empty() {
                        self.sessions.remove(&address);
                    }
                }
            }
            (Some("b"), [_]) => {
                let Some(expires) = expiry(rest.first()) else {
                    return false;
                };
                let slot = self.bearers.entry(address).or_insert(expires);
                *slot = (*slot).max(expires);
            }
            (Some("m"), [_]) => {
                let Some(expires) = expiry(rest.first()) else {
                    return false;
                };
                self.manual.insert(address, expires);
            }
            (Some("r"), []) => {
                self.manual.remove(&address);
            }
            _ => return false,
        }
        true
    }

    /// Forgets what expired by `now` (sessions `grace` seconds after their expiry) and the
    /// sessions `revoked` says were revoked.
    pub fn retain_live(&mut self, now: u64, grace: u64, revoked: impl Fn(&str) -> bool) {
        self.sessions.retain(|_, sessions| {
            sessions.retain(|session, expires| {
                expires.saturating_add(grace) > now && !revoked(session)
            });
            !sessions.is_empty()
        });
        self.bearers.retain(|_, expires| *expires > now);
        self.manual.retain(|_, expires| *expires > now);
    }
}

/// A session id hash as the journal holds it: one word of safe characters.
fn valid_session(session: &str) -> bool {
    !session.is_empty()
        && session.len() <= 128
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The journal file.
#[derive(Debug)]
pub struct Ledger {
    file: PathBuf,
    /// The open file and the lines appended since it was last compacted, and how many entries
    /// it held then.
    out: Mutex<(std::fs::File, usize, usize)>,
}

/// A failure to read or write the journal.
#[derive(Debug, thiserror::Error)]
#[error("the XDP admission journal {}: {source}", path.display())]
pub struct LedgerError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Ledger {
    /// Replays `file` (missing: empty), keeps what `keep` leaves, rewrites the file compact and
    /// opens it for appending. Returns the holders and the number of malformed lines skipped.
    pub fn open(
        file: &Path,
        keep: impl FnOnce(&mut Holders),
    ) -> Result<(Self, Holders, usize), LedgerError> {
        let io = |source| LedgerError {
            path: file.to_owned(),
            source,
        };
        let mut holders = Holders::default();
        let mut malformed = 0;
        match std::fs::read_to_string(file) {
            Ok(text) => {
                for line in text.lines() {
                    if !holders.apply(line) {
                        malformed += 1;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        keep(&mut holders);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let out = rewrite(file, &holders).map_err(io)?;
        let ledger = Ledger {
            file: file.to_owned(),
            out: Mutex::new((out, 0, holders.len())),
        };
        Ok((ledger, holders, malformed))
    }

    /// Appends one change; compacts from `holders` (the state after the change) when the
    /// journal has grown far past it. Failures are logged: the maps are already right, only a
    /// restart would have less to go on.
    pub fn append(&self, line: std::fmt::Arguments<'_>, holders: &Holders) {
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let (file, appended, held) = &mut *out;
        if let Err(e) = writeln!(file, "{line}") {
            tracing::error!(file = %self.file.display(), error = %e, "XDP admission journal: append failed");
            return;
        }
        *appended += 1;
        if *appended > 1024 && *appended > 4 * *held {
            match rewrite(&self.file, holders) {
                Ok(new) => {
                    *file = new;
                    *appended = 0;
                    *held = holders.len();
                }
                Err(e) => {
                    tracing::error!(file = %self.file.display(), error = %e, "XDP admission journal: compaction failed");
                }
            }
        }
    }
}

/// Appends one line to the journal at `file` (the `sekisho xdp allow|revoke` commands: the
/// running proxy keeps appending to the same file).
pub fn append_to(file: &Path, line: &str) -> Result<(), LedgerError> {
    let io = |source| LedgerError {
        path: file.to_owned(),
        source,
    };
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .map_err(io)?;
    writeln!(out, "{line}").map_err(io)
}

/// Writes `holders` to `file` through a temporary file and a rename, and opens it to append.
fn rewrite(file: &Path, holders: &Holders) -> std::io::Result<std::fs::File> {
    let tmp = file.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(holders.lines().as_bytes())?;
    out.sync_data()?;
    std::fs::rename(&tmp, file)?;
    std::fs::OpenOptions::new().append(true).open(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_journal_replays_to_what_holds_each_address() {
        let mut holders = Holders::default();
        for line in [
            "s 192.0.2.1 aaa 2000",
            "s 192.0.2.1 bbb 3000",
            "e 192.0.2.1 aaa",
            "s ::ffff:192.0.2.2 ccc 2000",
            "b 192.0.2.3 500",
            "b 192.0.2.3 400",
            "m 2001:db8::1 900",
            "m 2001:db8::2 900",
            "r 2001:db8::2",
        ] {
            assert!(holders.apply(line), "{line}");
        }
        assert_eq!(holders.sessions[&ip("192.0.2.1")].len(), 1);
        assert!(
            holders.holds(&ip("192.0.2.2")),
            "a v4-mapped address is its IPv4 form"
        );
        assert_eq!(holders.bearers[&ip("192.0.2.3")], 500, "the latest expiry");
        assert!(holders.holds(&ip("2001:db8::1")));
        assert!(!holders.holds(&ip("2001:db8::2")));
        for bad in [
            "",
            "s",
            "s 192.0.2.1",
            "s 192.0.2.1 aaa",
            "s 192.0.2.1 aaa soon",
            "s 192.0.2.1 a/b 2000",
            "s 192.0.2.999 aaa 2000",
            "x 192.0.2.1 1",
            "b 192.0.2.1 1 2",
            "r 192.0.2.1 extra",
        ] {
            assert!(!holders.apply(bad), "{bad:?} is refused");
        }
    }

    #[test]
    fn expired_and_revoked_holders_are_dropped_and_the_file_rewritten() {
        let dir = std::env::temp_dir().join(format!("sekisho-xdp-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("xdp-admissions");
        std::fs::write(
            &file,
            "s 192.0.2.1 live 2000\ns 192.0.2.2 revoked 2000\ns 192.0.2.3 old 950\ns 192.0.2.6 older 900\n\
             b 192.0.2.4 999\nm 192.0.2.5 5000\ngarbage\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (ledger, holders, malformed) = Ledger::open(&file, |h| {
            h.retain_live(1000, 60, |session| session == "revoked");
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(malformed, 1);
        assert!(holders.holds(&ip("192.0.2.1")));
        assert!(!holders.holds(&ip("192.0.2.2")), "revoked");
        assert!(holders.holds(&ip("192.0.2.3")), "within the grace");
        assert!(!holders.holds(&ip("192.0.2.6")), "past the grace");
        assert!(!holders.holds(&ip("192.0.2.4")), "the token expired");
        assert!(holders.holds(&ip("192.0.2.5")));
        ledger.append(format_args!("e 192.0.2.1 live"), &holders);
        drop(ledger);
        let (_, replayed, malformed) =
            Ledger::open(&file, |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(malformed, 0, "the rewritten file is clean");
        assert!(!replayed.holds(&ip("192.0.2.1")), "the appended end");
        assert!(replayed.holds(&ip("192.0.2.5")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
