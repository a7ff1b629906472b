//! The revocation list: session ids ended by logout (or by a provider refusing a refresh), kept
//! in memory for the hot-path check and appended to a local file so a restart does not bring a
//! copied cookie back to life. Entries are dropped once the session would have expired anyway.
//!
//! Revoking what is already revoked (a replayed logout) or already expired writes nothing; the
//! file is rewritten without expired entries at start and whenever appends have doubled it, so
//! it stays proportional to the live entries; every disk write runs on a blocking thread, never
//! on an async worker.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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

/// Revoked session ids (hashed) with the time after which they no longer matter.
#[derive(Debug)]
pub struct RevocationList {
    entries: RwLock<HashMap<String, u64>>,
    file: PathBuf,
    /// Serialises appends and compactions; counts the lines appended since the last compaction.
    writer: Mutex<usize>,
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
        let mut malformed = 0;
        match std::fs::read_to_string(file) {
            Ok(text) => {
                for line in text.lines() {
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(hash, until)| Some((hash, until.parse::<u64>().ok()?)))
                        .filter(|(hash, _)| !hash.is_empty() && hash.len() <= 64);
                    match parsed {
                        Some((hash, until)) if until > now => {
                            entries.insert(hash.to_owned(), until);
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
            file: file.to_owned(),
            writer: Mutex::new(0),
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
        let list = self.clone();
        let line = format!("{sid_hash} {until}\n");
        tokio::task::spawn_blocking(move || list.append(&line, now))
            .await
            .map_err(|_| RevocationError::Writer {
                path: self.file.clone(),
            })??;
        Ok(true)
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
        self.compact()
    }

    /// Rewrites the file with the live entries: a temporary file, synced, renamed over it.
    fn compact(&self) -> Result<(), RevocationError> {
        let io = |source| RevocationError::Io {
            path: self.file.clone(),
            source,
        };
        let text: String = match self.entries.read() {
            Ok(entries) => entries.iter().map(|(h, u)| format!("{h} {u}\n")).collect(),
            Err(_) => return Ok(()),
        };
        let tmp = self.file.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.file).map_err(io)
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
}
