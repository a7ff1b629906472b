//! The revocation list: session ids ended by logout (or by a provider refusing a refresh), kept
//! in memory for the hot-path check and appended to a local file so a restart does not bring a
//! copied cookie back to life. Entries are dropped once the session would have expired anyway.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

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
}

/// Revoked session ids (hashed) with the time after which they no longer matter.
#[derive(Debug)]
pub struct RevocationList {
    entries: RwLock<HashMap<String, u64>>,
    file: PathBuf,
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

    /// Revokes a session until `until` (unix seconds), durably: the entry is on disk (fsync)
    /// before this returns.
    pub fn revoke(&self, sid_hash: &str, until: u64) -> Result<(), RevocationError> {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(sid_hash.to_owned(), until);
        }
        let io = |source| RevocationError::Io {
            path: self.file.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(io)?;
        writeln!(file, "{sid_hash} {until}").map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// Drops entries expired at `now` from memory and rewrites the file.
    pub fn prune(&self, now: u64) -> Result<(), RevocationError> {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, until| *until > now);
        }
        self.compact()
    }

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
        std::fs::write(&tmp, text).map_err(io)?;
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

    #[test]
    fn revocations_survive_a_reload_until_they_expire() {
        let dir = std::env::temp_dir().join(format!("sekisho-revocation-{}", std::process::id()));
        let file = dir.join("revoked");
        let _ = std::fs::remove_dir_all(&dir);
        let (list, _) = RevocationList::load(&file, 100).unwrap_or_else(|e| panic!("{e}"));
        list.revoke("abc", 200).unwrap_or_else(|e| panic!("{e}"));
        list.revoke("old", 150).unwrap_or_else(|e| panic!("{e}"));
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
}
