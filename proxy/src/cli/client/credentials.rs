//! The credentials file: for each proxy origin, the sekisho session `sekisho login` obtained
//! (its cookies, their expiry, the user), kept private to the user (mode 0600, replaced
//! atomically) and refreshed from the `Set-Cookie` headers the proxy sends.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name in the configuration directory.
const FILE_NAME: &str = "credentials.json";

/// The lock file that serialises read-modify-write updates (several tunnels refreshing the
/// same session, a login beside them).
const LOCK_NAME: &str = "credentials.lock";

/// Why the credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub(in crate::cli) enum StoreError {
    /// Neither `SEKISHO_CONFIG_DIR`, `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("no configuration directory: set SEKISHO_CONFIG_DIR, XDG_CONFIG_HOME or HOME")]
    NoDirectory,
    /// The file (or its directory, or the lock) could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// Others than the owner may read the file.
    #[error(
        "refusing to read {path}: it is readable by other users (mode {mode:o}); it holds \
         sign-in sessions: run `chmod 600 {path}`, or remove it and sign in again"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not the JSON object this module writes.
    #[error("{path} is not a sekisho credentials file: {error}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: serde_json::Error,
    },
}

/// The credentials file in its directory.
#[derive(Debug, Clone)]
pub(in crate::cli) struct Store {
    /// The directory (`~/.config/sekisho` by default).
    dir: PathBuf,
}

impl Store {
    /// The store in `$SEKISHO_CONFIG_DIR`, else `$XDG_CONFIG_HOME/sekisho`, else
    /// `~/.config/sekisho`.
    pub(in crate::cli) fn from_env() -> Result<Self, StoreError> {
        let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let dir = if let Some(dir) = set("SEKISHO_CONFIG_DIR") {
            PathBuf::from(dir)
        } else if let Some(config) = set("XDG_CONFIG_HOME") {
            PathBuf::from(config).join("sekisho")
        } else if let Some(home) = set("HOME") {
            PathBuf::from(home).join(".config").join("sekisho")
        } else {
            return Err(StoreError::NoDirectory);
        };
        Ok(Self::at(dir))
    }

    /// The store in `dir`.
    pub(in crate::cli) fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The credentials file's path.
    pub(in crate::cli) fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Every stored credential (none when there is no file yet).
    pub(in crate::cli) fn load(&self) -> Result<Credentials, StoreError> {
        let path = self.path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials::default());
            }
            Err(error) => return Err(StoreError::Io { path, error }),
        };
        // The opened file's own mode, not the path's: nothing can swap it in between.
        let io = |error| StoreError::Io {
            path: path.clone(),
            error,
        };
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Exposed { path, mode });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        serde_json::from_str(&text).map_err(|error| StoreError::Malformed { path, error })
    }

    /// The credential stored for `origin`.
    pub(in crate::cli) fn credential(
        &self,
        origin: &str,
    ) -> Result<Option<Credential>, StoreError> {
        Ok(self.load()?.0.remove(origin))
    }

    /// Reads the file, lets `change` edit the credentials and writes them back when it says
    /// they changed (its first return value), holding the lock throughout so concurrent
    /// updates are not lost.
    pub(in crate::cli) fn update<R>(
        &self,
        change: impl FnOnce(&mut Credentials) -> (bool, R),
    ) -> Result<R, StoreError> {
        self.create_dir()?;
        let lock_path = self.dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|error| StoreError::Io {
                path: lock_path.clone(),
                error,
            })?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|error| {
            StoreError::Io {
                path: lock_path,
                error: error.into(),
            }
        })?;
        let mut credentials = self.load()?;
        let (changed, result) = change(&mut credentials);
        if changed {
            self.write(&credentials)?;
        }
        // Closing the lock file releases the lock.
        drop(lock);
        Ok(result)
    }

    /// Creates the directory (mode 0700) when missing.
    fn create_dir(&self) -> Result<(), StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|error| StoreError::Io {
                path: self.dir.clone(),
                error,
            })
    }

    /// Replaces the file: a new file (mode 0600) in the same directory, renamed over it.
    fn write(&self, credentials: &Credentials) -> Result<(), StoreError> {
        let path = self.path();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let temporary = self
            .dir
            .join(format!(".{FILE_NAME}.{}.{nanos}.tmp", std::process::id()));
        let written = (|| {
            let mut json = serde_json::to_vec_pretty(credentials).map_err(std::io::Error::other)?;
            json.push(b'\n');
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        })();
        written.map_err(|error| {
            // Best effort: the error being reported is the write's, not this one's.
            let _ = std::fs::remove_file(&temporary);
            StoreError::Io { path, error }
        })
    }
}

/// The stored credentials, by proxy origin.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(in crate::cli) struct Credentials(BTreeMap<String, Credential>);

impl Credentials {
    /// The origins with a stored credential, in order.
    pub(in crate::cli) fn origins(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Stores `credential` for `origin`, replacing any other.
    pub(in crate::cli) fn insert(&mut self, origin: &str, credential: Credential) {
        self.0.insert(origin.to_owned(), credential);
    }

    /// Removes and returns the credential of `origin`.
    pub(in crate::cli) fn remove(&mut self, origin: &str) -> Option<Credential> {
        self.0.remove(origin)
    }

    /// The credential of `origin`, to change.
    pub(in crate::cli) fn credential_mut(&mut self, origin: &str) -> Option<&mut Credential> {
        self.0.get_mut(origin)
    }
}

/// One proxy's sekisho session: the cookies to send back as one `Cookie` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::cli) struct Credential {
    /// The session's cookies.
    pub(in crate::cli) cookies: Vec<Cookie>,
    /// When the session ends at the latest (Unix seconds), as the proxy said at sign-in.
    pub(in crate::cli) expires_at: u64,
    /// Who signed in.
    pub(in crate::cli) user: String,
}

impl Credential {
    /// The value of the `Cookie` header that presents the session.
    pub(in crate::cli) fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self.cookies.iter().map(ToString::to_string).collect();
        pairs.join("; ")
    }

    /// Applies one `Set-Cookie` header as a browser would for this origin: a cookie of the same
    /// name is replaced, or removed when the header expires it (`Max-Age` ≤ 0, or an `Expires`
    /// before `now`). A header that does not parse is ignored. Says whether anything changed.
    pub(in crate::cli) fn apply_set_cookie(&mut self, header: &str, now: SystemTime) -> bool {
        let Some(set) = SetCookie::parse(header, now) else {
            return false;
        };
        let position = self
            .cookies
            .iter()
            .position(|cookie| cookie.name == set.cookie.name);
        match (position, set.remove) {
            (None, true) => false,
            (None, false) => {
                self.cookies.push(set.cookie);
                true
            }
            (Some(index), true) => {
                self.cookies.remove(index);
                true
            }
            (Some(index), false) => match self.cookies.get_mut(index) {
                Some(cookie) if *cookie != set.cookie => {
                    *cookie = set.cookie;
                    true
                }
                _ => false,
            },
        }
    }
}

/// One `name=value` cookie pair, safe to put in a `Cookie` header: a non-empty name of token
/// characters, a value without `;`, `,`, spaces, quotes-in-the-middle or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(in crate::cli) struct Cookie {
    /// The cookie's name.
    name: String,
    /// Its value.
    value: String,
}

impl Cookie {
    /// Parses `name=value` (spaces around either are dropped).
    pub(in crate::cli) fn parse(pair: &str) -> Result<Self, String> {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("cookie {pair:?} is not name=value"))?;
        let (name, value) = (name.trim(), value.trim());
        let separator = |c: char| "()<>@,;:\\\"/[]?={} \t".contains(c);
        if name.is_empty() || name.chars().any(|c| c.is_ascii_control() || separator(c)) {
            return Err(format!("cookie name {name:?} is not a token"));
        }
        let bare = value
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(value);
        if bare
            .chars()
            .any(|c| !c.is_ascii() || c.is_ascii_control() || " \",;\\".contains(c))
        {
            return Err(format!(
                "cookie {name}'s value has a character a cookie cannot"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

impl TryFrom<String> for Cookie {
    type Error = String;

    fn try_from(pair: String) -> Result<Self, String> {
        Self::parse(&pair)
    }
}

impl From<Cookie> for String {
    fn from(cookie: Cookie) -> Self {
        cookie.to_string()
    }
}

/// A parsed `Set-Cookie` header: the cookie, and whether it removes the stored one.
#[derive(Debug, PartialEq, Eq)]
struct SetCookie {
    /// The pair.
    cookie: Cookie,
    /// `Max-Age` ≤ 0, or (without `Max-Age`) an `Expires` in the past.
    remove: bool,
}

impl SetCookie {
    /// Parses a header value (RFC 6265 §5.2): the pair, then `;`-separated attributes of which
    /// only the lifetime matters here (every cookie of the proxy is sent to the proxy).
    /// `Max-Age` wins over `Expires`; an attribute that does not parse is ignored.
    fn parse(header: &str, now: SystemTime) -> Option<Self> {
        let mut parts = header.split(';');
        let cookie = Cookie::parse(parts.next()?).ok()?;
        let (mut max_age, mut expires) = (None, None);
        for attribute in parts {
            let (name, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            let value = value.trim();
            if name.trim().eq_ignore_ascii_case("max-age") {
                max_age = value.parse::<i64>().ok().or(max_age);
            } else if name.trim().eq_ignore_ascii_case("expires") {
                expires = http_date(value).or(expires);
            }
        }
        let remove = match (max_age, expires) {
            (Some(seconds), _) => seconds <= 0,
            (None, Some(at)) => at <= now,
            (None, None) => false,
        };
        Some(Self { cookie, remove })
    }
}

/// A cookie date: `Wed, 21 Oct 2015 07:28:00 GMT`, or with dashes (`21-Oct-2015`).
fn http_date(text: &str) -> Option<SystemTime> {
    let parse = |text: &str| jiff::fmt::rfc2822::parse(text).ok();
    let zoned = parse(text).or_else(|| parse(&text.replace('-', " ")))?;
    let seconds = zoned.timestamp().as_second();
    match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH.checked_add(Duration::from_secs(after)),
        Err(_) => Some(UNIX_EPOCH),
    }
}

#[cfg(test)]
pub(in crate::cli) mod tests {
    use super::*;

    /// A credential with `cookies`, for tests.
    pub(in crate::cli) fn credential(cookies: &[&str]) -> Credential {
        Credential {
            cookies: cookies.iter().map(|c| Cookie::parse(c).unwrap()).collect(),
            expires_at: 1_900_000_000,
            user: "alice@example.com".to_owned(),
        }
    }

    /// A fresh, empty store directory under the system's temporary directory.
    pub(in crate::cli) fn temporary_store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "sekisho-cli-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        Store::at(dir)
    }

    #[test]
    fn the_file_round_trips_with_mode_0600() {
        let store = temporary_store("round-trip");
        assert_eq!(store.load().unwrap().origins().count(), 0);
        store
            .update(|all| {
                all.insert("https://proxy.example.com", credential(&["a=1", "b=\"2\""]));
                (true, ())
            })
            .unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(store.path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"https://proxy.example.com": {
                "cookies": ["a=1", "b=\"2\""],
                "expires_at": 1_900_000_000,
                "user": "alice@example.com",
            }})
        );
        let read = store
            .credential("https://proxy.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(read, credential(&["a=1", "b=\"2\""]));
        assert_eq!(read.cookie_header(), "a=1; b=\"2\"");
        let removed = store
            .update(|all| (true, all.remove("https://proxy.example.com")))
            .unwrap();
        assert!(removed.is_some());
        assert_eq!(store.load().unwrap().origins().count(), 0);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&store.dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let store = temporary_store("exposed");
        store
            .update(|all| {
                all.insert("https://proxy.example.com", credential(&["a=1"]));
                (true, ())
            })
            .unwrap();
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = store.load().unwrap_err();
        assert!(matches!(error, StoreError::Exposed { mode: 0o644, .. }));
        let text = error.to_string();
        assert!(text.contains("readable by other users") && text.contains("chmod 600"));
        std::fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn a_malformed_file_or_cookie_is_refused() {
        let store = temporary_store("malformed");
        store.create_dir().unwrap();
        let write = |text: &str| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(store.path())
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        write("[]");
        assert!(matches!(store.load(), Err(StoreError::Malformed { .. })));
        write(r#"{"https://p": {"cookies": ["a=1\r\nX: y"], "expires_at": 1, "user": "u"}}"#);
        assert!(matches!(store.load(), Err(StoreError::Malformed { .. })));
        std::fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn cookie_pairs_are_checked() {
        assert_eq!(Cookie::parse(" s = v ").unwrap().to_string(), "s=v");
        assert_eq!(Cookie::parse("s=").unwrap().to_string(), "s=");
        for bad in ["novalue", "=v", "a b=1", "s=a;b", "s=a\nb", "s=a b", "s=é"] {
            assert!(Cookie::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_cookie_replaces_adds_and_removes() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut stored = credential(&["session=old", "csrf=1", "extra=x"]);
        assert!(stored.apply_set_cookie("session=new; Path=/; HttpOnly; Secure", now));
        assert!(!stored.apply_set_cookie("session=new; Max-Age=3600", now));
        assert!(stored.apply_set_cookie("csrf=; Max-Age=0", now));
        assert!(stored.apply_set_cookie("extra=gone; Expires=Thu, 01 Jan 1970 00:00:00 GMT", now));
        assert!(stored.apply_set_cookie("fresh=1; expires=Wed, 21-Oct-2099 07:28:00 GMT", now));
        // Max-Age wins over a past Expires.
        assert!(stored.apply_set_cookie(
            "kept=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60",
            now
        ));
        // Removing what is not there, and headers that do not parse, change nothing.
        assert!(!stored.apply_set_cookie("absent=; Max-Age=0", now));
        assert!(!stored.apply_set_cookie("garbage", now));
        assert!(!stored.apply_set_cookie("bad\r\nname=1", now));
        assert_eq!(stored.cookie_header(), "session=new; fresh=1; kept=1");
        // An Expires that does not parse is ignored: the cookie is kept.
        assert!(stored.apply_set_cookie("session=newer; Expires=someday", now));
        assert_eq!(stored.cookie_header(), "session=newer; fresh=1; kept=1");
    }
}
