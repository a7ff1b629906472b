//! What the provider remembers between requests: authorization codes (memory, one minute, single
//! use), refresh tokens (kept by hash in an append-only file under the state directory, so that
//! a restart keeps everybody signed in; rotated at every use, and a reused one revokes its
//! whole family), ended sign-ins, used login forms and used TOTP steps.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Codes or form ids kept in memory before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// Why the grant file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Who signed in, how and when: carried from the login through codes and refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    /// The user's username (`sub`).
    pub username: String,
    /// The sign-in's id (`sid`).
    pub sid: String,
    /// When the password was checked, unix seconds.
    pub auth_time: u64,
    /// Methods used: `pwd`, plus `otp` and `mfa` with a second factor.
    pub amr: Vec<String>,
    /// When the sign-in ends, unix seconds.
    pub expires_at: u64,
}

/// An issued authorization code.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub challenge: String,
    /// `nonce` of the request, echoed in the ID token.
    pub nonce: Option<String>,
    /// Granted scopes.
    pub scope: Vec<String>,
    /// The sign-in.
    pub sign_in: SignIn,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// A refresh token's grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshGrant {
    /// Tokens rotated from one code share a family; reuse of a rotated one revokes it.
    pub family: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes.
    pub scope: Vec<String>,
    /// The sign-in (its expiry bounds the token's).
    pub sign_in: SignIn,
}

/// Why a code or refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, expired or for another client.
    Invalid,
    /// Used before: the tokens issued from it are revoked.
    Replayed,
}

/// One line of the grant file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// A refresh token (by hash) was issued.
    Issue { token: String, grant: RefreshGrant },
    /// A refresh token was rotated away: remembered until `until` to detect reuse.
    Used {
        token: String,
        family: String,
        until: u64,
    },
    /// Every token of a family is revoked.
    RevokeFamily { family: String },
    /// A sign-in ended (logout): its tokens and cookie are refused until `until`.
    RevokeSid { sid: String, until: u64 },
}

/// The refresh-token state, replayed from the file.
#[derive(Debug, Default)]
struct Refresh {
    live: HashMap<String, RefreshGrant>,
    used: HashMap<String, (String, u64)>,
    revoked_sids: HashMap<String, u64>,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: Mutex<File>,
    refresh: Mutex<Refresh>,
    codes: Mutex<HashMap<String, (CodeGrant, Option<String>)>>,
    used_forms: Mutex<HashMap<String, u64>>,
    totp_steps: Mutex<HashMap<String, u64>>,
}

impl Store {
    /// Opens (creating) the grant file, drops what has expired and rewrites it compactly.
    pub fn open(path: &Path, now: u64) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut refresh = Refresh::default();
        if path.exists() {
            let file = File::open(path).map_err(io)?;
            let mut malformed = 0usize;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(io)?;
                match serde_json::from_str::<Line>(&line) {
                    Ok(entry) => refresh.apply(entry),
                    Err(_) => malformed += 1,
                }
            }
            if malformed > 0 {
                tracing::warn!(malformed, file = %path.display(), "skipped malformed grant lines");
            }
        }
        refresh.expire(now);
        let mut compact = String::new();
        for (token, grant) in &refresh.live {
            push_line(
                &mut compact,
                &Line::Issue {
                    token: token.clone(),
                    grant: grant.clone(),
                },
            );
        }
        for (token, (family, until)) in &refresh.used {
            push_line(
                &mut compact,
                &Line::Used {
                    token: token.clone(),
                    family: family.clone(),
                    until: *until,
                },
            );
        }
        for (sid, until) in &refresh.revoked_sids {
            push_line(
                &mut compact,
                &Line::RevokeSid {
                    sid: sid.clone(),
                    until: *until,
                },
            );
        }
        super::keys::write_private(path, compact.as_bytes()).map_err(|e| match e {
            super::keys::KeyError::Io { source, .. } => io(source),
            other => io(std::io::Error::other(other.to_string())),
        })?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            refresh: Mutex::new(refresh),
            codes: Mutex::new(HashMap::new()),
            used_forms: Mutex::new(HashMap::new()),
            totp_steps: Mutex::new(HashMap::new()),
        })
    }

    /// Remembers a code (by hash).
    pub fn put_code(&self, code: &str, grant: CodeGrant, now: u64) {
        if let Ok(mut codes) = self.codes.lock() {
            if codes.len() >= SWEEP_AT {
                codes.retain(|_, (g, _)| g.expires_at > now);
            }
            codes.insert(hash(code), (grant, None));
        }
    }

    /// Redeems a code for `client_id`: single use. A second redemption revokes the refresh
    /// family the first one started (RFC 6749 §4.1.2).
    pub fn take_code(&self, code: &str, client_id: &str, now: u64) -> Result<CodeGrant, Refusal> {
        let key = hash(code);
        let mut family_to_revoke = None;
        let result = {
            let Ok(mut codes) = self.codes.lock() else {
                return Err(Refusal::Invalid);
            };
            match codes.get_mut(&key) {
                None => Err(Refusal::Invalid),
                Some((grant, _)) if grant.client_id != client_id => Err(Refusal::Invalid),
                Some((grant, _)) if grant.expires_at <= now => Err(Refusal::Invalid),
                Some((_, Some(family))) => {
                    family_to_revoke = Some(family.clone());
                    Err(Refusal::Replayed)
                }
                Some((grant, family @ None)) => {
                    // Marked used before anything else is checked: a failed PKCE check burns it.
                    *family = Some(String::new());
                    Ok(grant.clone())
                }
            }
        };
        if let Some(family) = family_to_revoke.filter(|f| !f.is_empty()) {
            self.revoke_family(&family);
        }
        result
    }

    /// Records which refresh family a redeemed code started.
    pub fn code_started(&self, code: &str, family: &str) {
        if let Ok(mut codes) = self.codes.lock()
            && let Some((_, slot)) = codes.get_mut(&hash(code))
        {
            *slot = Some(family.to_owned());
        }
    }

    /// Stores a new refresh token's grant.
    pub fn issue_refresh(&self, token: &str, grant: RefreshGrant) {
        let line = Line::Issue {
            token: hash(token),
            grant,
        };
        self.append(&line);
        if let (Ok(mut refresh), Line::Issue { token, grant }) = (self.refresh.lock(), line) {
            refresh.live.insert(token, grant);
        }
    }

    /// Rotates a refresh token away: its grant, when it is live, belongs to `client_id` and its
    /// sign-in is current. A token rotated before revokes its family.
    pub fn use_refresh(
        &self,
        token: &str,
        client_id: &str,
        now: u64,
    ) -> Result<RefreshGrant, Refusal> {
        let key = hash(token);
        let outcome = {
            let Ok(mut refresh) = self.refresh.lock() else {
                return Err(Refusal::Invalid);
            };
            match refresh.live.get(&key) {
                Some(grant) if grant.client_id != client_id => Err(None),
                Some(grant) if grant.sign_in.expires_at <= now => Err(None),
                Some(grant) if refresh.revoked_sids.contains_key(&grant.sign_in.sid) => Err(None),
                Some(_) => {
                    let grant = refresh.live.remove(&key);
                    grant.ok_or(None).inspect(|g| {
                        refresh
                            .used
                            .insert(key.clone(), (g.family.clone(), g.sign_in.expires_at));
                    })
                }
                None => Err(refresh.used.get(&key).map(|(family, _)| family.clone())),
            }
        };
        match outcome {
            Ok(grant) => {
                self.append(&Line::Used {
                    token: key,
                    family: grant.family.clone(),
                    until: grant.sign_in.expires_at,
                });
                Ok(grant)
            }
            Err(Some(family)) => {
                tracing::warn!(%family, "identity provider: a rotated refresh token was reused; family revoked");
                self.revoke_family(&family);
                Err(Refusal::Replayed)
            }
            Err(None) => Err(Refusal::Invalid),
        }
    }

    /// Revokes every refresh token of a family.
    pub fn revoke_family(&self, family: &str) {
        self.append(&Line::RevokeFamily {
            family: family.to_owned(),
        });
        if let Ok(mut refresh) = self.refresh.lock() {
            refresh.apply(Line::RevokeFamily {
                family: family.to_owned(),
            });
        }
    }

    /// Ends a sign-in: its cookie and refresh tokens are refused from now on.
    pub fn revoke_sid(&self, sid: &str, until: u64) {
        let line = Line::RevokeSid {
            sid: sid.to_owned(),
            until,
        };
        self.append(&line);
        if let Ok(mut refresh) = self.refresh.lock() {
            refresh.apply(line);
        }
    }

    /// Whether a sign-in was ended.
    pub fn sid_revoked(&self, sid: &str) -> bool {
        self.refresh
            .lock()
            .map_or(true, |refresh| refresh.revoked_sids.contains_key(sid))
    }

    /// Marks a login form as used; false when it already was.
    pub fn claim_form(&self, id: &str, until: u64, now: u64) -> bool {
        let Ok(mut used) = self.used_forms.lock() else {
            return false;
        };
        if used.len() >= SWEEP_AT {
            used.retain(|_, u| *u > now);
        }
        used.insert(id.to_owned(), until).is_none()
    }

    /// Whether a login form was used.
    pub fn form_used(&self, id: &str) -> bool {
        self.used_forms
            .lock()
            .map_or(true, |used| used.contains_key(id))
    }

    /// Accepts TOTP step `step` for `username` only if it is later than the last accepted one
    /// (a code is never accepted twice).
    pub fn claim_totp_step(&self, username: &str, step: u64) -> bool {
        let Ok(mut steps) = self.totp_steps.lock() else {
            return false;
        };
        match steps.get(username) {
            Some(last) if *last >= step => false,
            _ => {
                steps.insert(username.to_owned(), step);
                true
            }
        }
    }

    /// Appends a line and syncs it to disk; a failure is logged (the in-memory state still
    /// applies, so the running provider stays correct).
    fn append(&self, line: &Line) {
        let mut text = String::new();
        push_line(&mut text, line);
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        if let Err(e) = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
        {
            tracing::error!(file = %self.path.display(), error = %e, "could not persist a refresh-token change");
        }
    }
}

impl Refresh {
    fn apply(&mut self, line: Line) {
        match line {
            Line::Issue { token, grant } => {
                self.live.insert(token, grant);
            }
            Line::Used {
                token,
                family,
                until,
            } => {
                self.live.remove(&token);
                self.used.insert(token, (family, until));
            }
            Line::RevokeFamily { family } => self.live.retain(|_, g| g.family != family),
            Line::RevokeSid { sid, until } => {
                self.live.retain(|_, g| g.sign_in.sid != sid);
                self.revoked_sids.insert(sid, until);
            }
        }
    }

    fn expire(&mut self, now: u64) {
        self.live.retain(|_, g| g.sign_in.expires_at > now);
        self.used.retain(|_, (_, until)| *until > now);
        self.revoked_sids.retain(|_, until| *until > now);
    }
}

fn push_line(out: &mut String, line: &Line) {
    if let Ok(json) = serde_json::to_string(line) {
        out.push_str(&json);
        out.push('\n');
    }
}

/// How codes and refresh tokens are kept: SHA-256, base64url. A copy of the file or of memory
/// does not hold usable tokens.
pub fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_in(now: u64) -> SignIn {
        SignIn {
            username: "alice".into(),
            sid: "sid-1".into(),
            auth_time: now,
            amr: vec!["pwd".into()],
            expires_at: now + 3600,
        }
    }

    fn grant(now: u64) -> RefreshGrant {
        RefreshGrant {
            family: "fam".into(),
            client_id: "c".into(),
            scope: vec!["openid".into()],
            sign_in: sign_in(now),
        }
    }

    fn temp_path() -> PathBuf {
        let mut bytes = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        std::env::temp_dir().join(format!("sekisho-grants-{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    #[test]
    fn refresh_tokens_rotate_survive_a_restart_and_reuse_revokes_the_family() {
        let path = temp_path();
        let now = 1_000_000;
        let store = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        store.issue_refresh("rt1", grant(now));
        assert_eq!(
            store.use_refresh("rt1", "other", now),
            Err(Refusal::Invalid)
        );
        assert!(store.use_refresh("rt1", "c", now).is_ok());
        store.issue_refresh("rt2", grant(now));

        let reopened = Store::open(&path, now + 10).unwrap_or_else(|e| panic!("{e}"));
        // rt1 was rotated: presenting it again revokes rt2 as well.
        assert_eq!(
            reopened.use_refresh("rt1", "c", now + 10),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            reopened.use_refresh("rt2", "c", now + 10),
            Err(Refusal::Invalid)
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn ending_a_sign_in_revokes_its_tokens() {
        let path = temp_path();
        let now = 1_000_000;
        let store = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        store.issue_refresh("rt", grant(now));
        store.revoke_sid("sid-1", now + 3600);
        assert!(store.sid_revoked("sid-1"));
        assert_eq!(store.use_refresh("rt", "c", now), Err(Refusal::Invalid));
        let reopened = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        assert!(reopened.sid_revoked("sid-1"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn codes_are_single_use_and_replay_revokes() {
        let path = temp_path();
        let now = 1_000_000;
        let store = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        let code = CodeGrant {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            challenge: "x".into(),
            nonce: None,
            scope: vec!["openid".into()],
            sign_in: sign_in(now),
            expires_at: now + 60,
        };
        store.put_code("code", code.clone(), now);
        assert_eq!(
            store.take_code("code", "other", now).err(),
            Some(Refusal::Invalid)
        );
        assert!(store.take_code("code", "c", now).is_ok());
        store.code_started("code", "fam");
        store.issue_refresh("rt", grant(now));
        assert_eq!(
            store.take_code("code", "c", now).err(),
            Some(Refusal::Replayed)
        );
        assert_eq!(store.use_refresh("rt", "c", now), Err(Refusal::Invalid));
        store.put_code("late", code, now);
        assert_eq!(
            store.take_code("late", "c", now + 61).err(),
            Some(Refusal::Invalid)
        );
        assert!(store.claim_totp_step("alice", 5));
        assert!(!store.claim_totp_step("alice", 5));
        assert!(!store.claim_totp_step("alice", 4));
        assert!(store.claim_totp_step("alice", 6));
        let _ = std::fs::remove_file(&path);
    }
}
