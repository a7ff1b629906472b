//! The revocation list: session ids ended by logout (or by a provider refusing a refresh),
//! provider sessions signed out here or at the provider (back-channel logout), and subjects whose
//! sessions started before a time ("every session of this user before T": a back-channel logout
//! naming only the user), kept in memory for the hot-path check and appended to a local file so a
//! restart does not bring a copied cookie back to life. Entries are dropped once the sessions
//! they end would have expired anyway.
//!
//! A line is `HASH UNTIL` (a session or provider session) or `HASH UNTIL BEFORE` (a subject's
//! sessions that started at or before `BEFORE`), times in Unix seconds.
//!
//! Revoking what is already revoked (a replayed logout) or already expired writes nothing; the
//! file is rewritten without expired entries at start and whenever appends have doubled it, so
//! it stays proportional to the live entries; every disk write runs on a blocking thread, never
//! on an async worker.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Why the revocation list could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Reading or appending to the revocation file failed.
    #[error("revocation file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking writer thread did not finish.
    #[error("revocation file {path}: the writer stopped")]
    Writer {
        /// The file.
        path: PathBuf,
    },
}

/// Appends before the file is compacted, at the least.
const COMPACT_AFTER_APPENDS: usize = 1024;

/// A subject whose sessions that started at or before `before` are revoked, until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubjectRevocation {
    before: u64,
    until: u64,
}

/// One entry of the list, as it is replicated to other instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// A session or a provider session, by its key, until `until`.
    Session {
        /// The key.
        key: String,
        /// When the entry stops mattering (Unix seconds).
        until: u64,
    },
    /// A subject's sessions that started at or before `before`, until `until`.
    Subject {
        /// The subject's key.
        key: String,
        /// The latest start time revoked (Unix seconds).
        before: u64,
        /// When the entry stops mattering (Unix seconds).
        until: u64,
    },
}

/// Hears of every revocation made on this instance (the shared-state link).
pub trait RevocationSink: Send + Sync + std::fmt::Debug {
    /// `entry` was revoked here; must not block.
    fn revoked(&self, entry: &Revocation);
}

/// Revoked session ids (hashed) with the time after which they no longer matter, and revoked
/// subjects (hashed) with the time their revocation reaches back to.
#[derive(Debug)]
pub struct RevocationList {
    entries: RwLock<HashMap<String, u64>>,
    subjects: RwLock<HashMap<String, SubjectRevocation>>,
    file: PathBuf,
    /// Serialises appends and compactions; counts the lines appended since the last compaction.
    writer: Mutex<usize>,
    /// Where local revocations are replicated (set once, when shared state is configured).
    sink: OnceLock<Arc<dyn RevocationSink>>,
}

impl RevocationList {
    /// Loads the list from `file` (missing file: empty list), dropping entries expired at `now`.
    /// Malformed lines are skipped and counted in the returned number.
    pub fn load(file: &Path, now: u64) -> Result<(Self, usize), RevocationError> {
        let io = |source| RevocationError::Io {
            path: file.to_owned(),
            source,
        };
        let mut entries = HashMap::new();
        let mut subjects: HashMap<String, SubjectRevocation> = HashMap::new();
        let mut malformed = 0;
        match std::fs::read_to_string(file) {
            Ok(text) => {
                for line in text.lines() {
                    match parse_line(line) {
                        Some(Line::Session { hash, until }) if until > now => {
                            let known = entries.entry(hash.to_owned()).or_insert(until);
                            *known = (*known).max(until);
                        }
                        Some(Line::Subject { hash, entry }) if entry.until > now => {
                            let known = subjects.entry(hash.to_owned()).or_insert(entry);
                            known.before = known.before.max(entry.before);
                            known.until = known.until.max(entry.until);
                        }
                        Some(_) => {}
                        None => malformed += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let list = RevocationList {
            entries: RwLock::new(entries),
            subjects: RwLock::new(subjects),
            file: file.to_owned(),
            writer: Mutex::new(0),
            sink: OnceLock::new(),
        };
        list.compact()?;
        Ok((list, malformed))
    }

    /// True when the session whose id hashes to `sid_hash` was revoked.
    pub fn is_revoked(&self, sid_hash: &str) -> bool {
        self.entries
            .read()
            .map(|e| e.contains_key(sid_hash))
            .unwrap_or(true)
    }

    /// True when the sessions of the subject hashing to `subject_hash` that started at
    /// `started_at` (Unix seconds) were revoked: a revocation of that subject reaches back to
    /// or past it.
    pub fn subject_revoked(&self, subject_hash: &str, started_at: u64) -> bool {
        self.subjects.read().map_or(true, |s| {
            s.get(subject_hash)
                .is_some_and(|entry| started_at <= entry.before)
        })
    }

    /// True when some subject is revoked (so that callers skip hashing while none is).
    pub fn has_subjects(&self) -> bool {
        self.subjects.read().map_or(true, |s| !s.is_empty())
    }

    /// Revokes every session of the subject hashing to `subject_hash` that started at or
    /// before `before`, until `until` (both Unix seconds), durably like [`Self::revoke`].
    /// `Ok(false)`, and nothing written, when an entry reaching back as far and lasting as
    /// long exists, or `until` is past at `now`.
    pub async fn revoke_subject(
        self: &Arc<Self>,
        subject_hash: &str,
        before: u64,
        until: u64,
        now: u64,
    ) -> Result<bool, RevocationError> {
        let Some(entry) = self.insert_subject(subject_hash, before, until, now) else {
            return Ok(false);
        };
        if let Some(sink) = self.sink.get() {
            sink.revoked(&Revocation::Subject {
                key: subject_hash.to_owned(),
                before: entry.before,
                until: entry.until,
            });
        }
        let list = self.clone();
        let line = format!("{subject_hash} {} {}\n", entry.until, entry.before);
        tokio::task::spawn_blocking(move || list.append(&line, now))
            .await
            .map_err(|_| RevocationError::Writer {
                path: self.file.clone(),
            })??;
        Ok(true)
    }

    /// Records the subject entry in memory (merged with one already there): the merged entry,
    /// or `None` when it changes nothing.
    fn insert_subject(
        &self,
        subject_hash: &str,
        before: u64,
        until: u64,
        now: u64,
    ) -> Option<SubjectRevocation> {
        if until <= now {
            return None;
        }
        let mut subjects = self.subjects.write().ok()?;
        let fresh = SubjectRevocation { before, until };
        match subjects.get_mut(subject_hash) {
            Some(known) if known.before >= before && known.until >= until => None,
            Some(known) => {
                known.before = known.before.max(before);
                known.until = known.until.max(until);
                Some(*known)
            }
            None => {
                subjects.insert(subject_hash.to_owned(), fresh);
                Some(fresh)
            }
        }
    }

    /// Revokes a session until `until` (unix seconds), durably: the entry is in memory at once
    /// and on disk (fsync, on a blocking thread) before this returns. `Ok(false)`, and nothing
    /// written, when the entry would change nothing: already revoked at least as long, or
    /// `until` already past at `now`.
    pub async fn revoke(
        self: &Arc<Self>,
        sid_hash: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, RevocationError> {
        if !self.insert(sid_hash, until, now) {
            return Ok(false);
        }
        if let Some(sink) = self.sink.get() {
            sink.revoked(&Revocation::Session {
                key: sid_hash.to_owned(),
                until,
            });
        }
        let list = self.clone();
        let line = format!("{sid_hash} {until}\n");
        tokio::task::spawn_blocking(move || list.append(&line, now))
            .await
            .map_err(|_| RevocationError::Writer {
                path: self.file.clone(),
            })??;
        Ok(true)
    }

    /// Replicates every local revocation from now on to `sink` (once; later calls are ignored).
    pub fn replicate_to(&self, sink: Arc<dyn RevocationSink>) {
        let _ = self.sink.set(sink);
    }

    /// Applies an entry another instance revoked: in memory at once, and appended to the file
    /// on a blocking thread (not waited for: the entry also lives in the shared store). Not
    /// replicated back. True when it changed something.
    pub fn merge(self: &Arc<Self>, entry: Revocation, now: u64) -> bool {
        let line = match &entry {
            Revocation::Session { key, until } => self
                .insert(key, *until, now)
                .then(|| format!("{key} {until}\n")),
            Revocation::Subject { key, before, until } => self
                .insert_subject(key, *before, *until, now)
                .map(|merged| format!("{key} {} {}\n", merged.until, merged.before)),
        };
        let Some(line) = line else {
            return false;
        };
        let list = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = list.append(&line, now) {
                tracing::error!(error = %e, "a revocation from another instance is in memory but not on disk");
            }
        });
        true
    }

    /// Every live entry at `now` (for pushing to the shared store after a reconnection).
    pub fn entries(&self, now: u64) -> Vec<Revocation> {
        let mut all: Vec<Revocation> = match self.entries.read() {
            Ok(entries) => entries
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(key, until)| Revocation::Session {
                    key: key.clone(),
                    until: *until,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(subjects) = self.subjects.read() {
            all.extend(subjects.iter().filter(|(_, entry)| entry.until > now).map(
                |(key, entry)| Revocation::Subject {
                    key: key.clone(),
                    before: entry.before,
                    until: entry.until,
                },
            ));
        }
        all
    }

    /// Records the entry in memory; false when it changes nothing.
    fn insert(&self, sid_hash: &str, until: u64, now: u64) -> bool {
        if until <= now {
            return false;
        }
        let Ok(mut entries) = self.entries.write() else {
            return false;
        };
        match entries.get(sid_hash) {
            Some(known) if *known >= until => false,
            _ => {
                entries.insert(sid_hash.to_owned(), until);
                true
            }
        }
    }

    /// Appends one line (blocking: fsync), compacting once appends outnumber the live entries.
    fn append(&self, line: &str, now: u64) -> Result<(), RevocationError> {
        let io = |source| RevocationError::Io {
            path: self.file.clone(),
            source,
        };
        let mut appended = match self.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        *appended += 1;
        if *appended >= COMPACT_AFTER_APPENDS.max(self.len()) {
            self.prune_locked(now)?;
            *appended = 0;
        }
        Ok(())
    }

    /// Drops entries expired at `now` from memory and rewrites the file (blocking).
    pub fn prune(&self, now: u64) -> Result<(), RevocationError> {
        let _writer = match self.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.prune_locked(now)
    }

    fn prune_locked(&self, now: u64) -> Result<(), RevocationError> {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, until| *until > now);
        }
        if let Ok(mut subjects) = self.subjects.write() {
            subjects.retain(|_, entry| entry.until > now);
        }
        self.compact()
    }

    /// Rewrites the file with the live entries: a temporary file, synced, renamed over it.
    fn compact(&self) -> Result<(), RevocationError> {
        let io = |source| RevocationError::Io {
            path: self.file.clone(),
            source,
        };
        let mut text: String = match self.entries.read() {
            Ok(entries) => entries.iter().map(|(h, u)| format!("{h} {u}\n")).collect(),
            Err(_) => return Ok(()),
        };
        match self.subjects.read() {
            Ok(subjects) => {
                for (hash, entry) in subjects.iter() {
                    text.push_str(&format!("{hash} {} {}\n", entry.until, entry.before));
                }
            }
            Err(_) => return Ok(()),
        }
        let tmp = self.file.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.file).map_err(io)
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        let sessions = self.entries.read().map(|e| e.len()).unwrap_or(0);
        let subjects = self.subjects.read().map(|s| s.len()).unwrap_or(0);
        sessions.saturating_add(subjects)
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One line of the file.
enum Line<'a> {
    /// `HASH UNTIL`: a session or a provider session.
    Session { hash: &'a str, until: u64 },
    /// `HASH UNTIL BEFORE`: a subject's sessions that started at or before `BEFORE`.
    Subject {
        hash: &'a str,
        entry: SubjectRevocation,
    },
}

/// Reads one line; `None` when it is malformed.
fn parse_line(line: &str) -> Option<Line<'_>> {
    let mut words = line.split(' ');
    let hash = words.next().filter(|h| !h.is_empty() && h.len() <= 64)?;
    let until = words.next()?.parse::<u64>().ok()?;
    let parsed = match words.next() {
        None => Line::Session { hash, until },
        Some(before) => Line::Subject {
            hash,
            entry: SubjectRevocation {
                before: before.parse::<u64>().ok()?,
                until,
            },
        },
    };
    words.next().is_none().then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(file: &Path) -> usize {
        std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{e}"))
            .lines()
            .count()
    }

    #[tokio::test]
    async fn revocations_survive_a_reload_until_they_expire() {
        let dir = std::env::temp_dir().join(format!("sekisho-revocation-{}", std::process::id()));
        let file = dir.join("revoked");
        let _ = std::fs::remove_dir_all(&dir);
        let (list, _) = RevocationList::load(&file, 100).unwrap_or_else(|e| panic!("{e}"));
        let list = Arc::new(list);
        assert!(
            list.revoke("abc", 200, 100)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            list.revoke("old", 150, 100)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(list.is_revoked("abc"));
        assert!(!list.is_revoked("other"));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"garbage line without number\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let (reloaded, malformed) =
            RevocationList::load(&file, 160).unwrap_or_else(|e| panic!("{e}"));
        assert!(reloaded.is_revoked("abc"));
        assert!(!reloaded.is_revoked("old"), "expired entries are dropped");
        assert_eq!(malformed, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn replayed_and_expired_revocations_write_nothing_and_the_file_stays_bounded() {
        let dir =
            std::env::temp_dir().join(format!("sekisho-revocation-replay-{}", std::process::id()));
        let file = dir.join("revoked");
        let _ = std::fs::remove_dir_all(&dir);
        let (list, _) = RevocationList::load(&file, 1000).unwrap_or_else(|e| panic!("{e}"));
        let list = Arc::new(list);
        assert!(
            list.revoke("sid", 5000, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        for _ in 0..2000 {
            assert!(
                !list
                    .revoke("sid", 5000, 1000)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            );
        }
        assert_eq!(lines(&file), 1, "a replayed logout appends nothing");
        assert!(
            !list
                .revoke("gone", 999, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            !list.is_revoked("gone"),
            "an expired session needs no entry"
        );
        assert_eq!(lines(&file), 1);
        // Many short-lived sessions: once they expire, compaction drops them.
        for i in 0..3000u64 {
            let _ = list
                .revoke(&format!("s{i}"), 1000 + 1 + i % 10, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(lines(&file) <= 3001);
        list.prune(2000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines(&file), 1, "only the live entry is kept");
        assert!(list.is_revoked("sid"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn subject_revocations_reach_back_in_time_merge_and_survive_a_reload() {
        let dir =
            std::env::temp_dir().join(format!("sekisho-revocation-subject-{}", std::process::id()));
        let file = dir.join("revoked");
        let _ = std::fs::remove_dir_all(&dir);
        let (list, _) = RevocationList::load(&file, 1000).unwrap_or_else(|e| panic!("{e}"));
        let list = Arc::new(list);
        assert!(!list.has_subjects());
        assert!(
            list.revoke_subject("alice", 1500, 5000, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(list.has_subjects());
        assert!(list.subject_revoked("alice", 1400), "started before");
        assert!(
            list.subject_revoked("alice", 1500),
            "started in that second"
        );
        assert!(!list.subject_revoked("alice", 1501), "started after");
        assert!(!list.subject_revoked("bob", 1400));
        assert!(!list.is_revoked("alice"), "a subject is no session id");
        // The same or an older revocation writes nothing; a later one moves the time forward.
        assert!(
            !list
                .revoke_subject("alice", 1200, 4000, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            list.revoke_subject("alice", 1600, 4000, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(list.subject_revoked("alice", 1600));
        assert_eq!(lines(&file), 2);
        // A reload merges the lines; an expired subject is dropped.
        assert!(
            list.revoke_subject("carol", 1000, 1100, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            list.revoke("sid", 3000, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"bad 12 x\nbad 1 2 3\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let (reloaded, malformed) =
            RevocationList::load(&file, 2000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(malformed, 2);
        assert!(reloaded.subject_revoked("alice", 1600));
        assert!(!reloaded.subject_revoked("alice", 1601));
        assert!(!reloaded.subject_revoked("carol", 900), "expired");
        assert!(reloaded.is_revoked("sid"));
        assert_eq!(reloaded.len(), 2);
        assert_eq!(
            lines(&file),
            2,
            "compacted at load: one line per live entry"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
