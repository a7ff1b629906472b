//! What the provider remembers between requests: authorization codes (memory, one minute, single
//! use), refresh tokens (kept by hash in an append-only file under the state directory, so that
//! a restart keeps everybody signed in; rotated at every use, and a reused one revokes its
//! whole family), ended sign-ins, login forms (attempts, completion) and used TOTP steps.
//!
//! The file is written by one thread of its own ([`Writer`]): request handlers change memory
//! and queue the line under the same lock (so the file's order is memory's), and wait for
//! [`Store::synced`] before answering. The thread appends and syncs what is queued in one
//! write, and rewrites the file compactly (expired entries dropped) when it has grown.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Codes or form ids kept in memory before expired ones are swept.
const SWEEP_AT: usize = 10_000;
/// Lines appended before the file is rewritten compactly, at least (and at least twice the
/// entries the last compaction kept).
const COMPACT_AFTER: u64 = 10_000;
/// Password or code checks one sign-in form is good for.
pub const FORM_ATTEMPTS: u32 = 5;

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

/// A sign-in that [`Store::revoke_sid`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSignIn {
    /// Its `sid`.
    pub sid: String,
    /// Its user, when a live refresh token named it.
    pub username: Option<String>,
    /// The clients that held live refresh tokens of it, each once.
    pub clients: Vec<String>,
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
    refresh: Arc<Mutex<Refresh>>,
    writer: Writer,
    codes: Mutex<HashMap<String, (CodeGrant, Option<String>)>>,
    used_forms: Mutex<HashMap<String, u64>>,
    /// Checks made per form id, and until when the form lives.
    form_attempts: Mutex<HashMap<String, (u32, u64)>>,
    totp_steps: Mutex<HashMap<String, u64>>,
}

/// The queue to the writer thread and how far it has synced.
#[derive(Debug)]
struct Writer {
    queue: mpsc::Sender<Queued>,
    /// Sequence number of the last line queued.
    queued: AtomicU64,
    /// Sequence number of the last line on disk (or given up on after an error).
    synced: tokio::sync::watch::Receiver<u64>,
}

/// One line for the file, numbered.
#[derive(Debug)]
struct Queued {
    seq: u64,
    text: String,
}

impl Store {
    /// Opens (creating) the grant file, drops what has expired, rewrites it compactly and starts
    /// the thread that writes it.
    pub fn open(path: &Path, now: u64) -> Result<Self, StoreError> {
        Self::open_compacting_after(path, now, COMPACT_AFTER, crate::session::unix_now)
    }

    /// [`Store::open`], compacting once `compact_after` lines were appended (at least), with
    /// `clock` (unix seconds) deciding what has expired by then.
    fn open_compacting_after(
        path: &Path,
        now: u64,
        compact_after: u64,
        clock: fn() -> u64,
    ) -> Result<Self, StoreError> {
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
        rewrite(path, &refresh.snapshot()).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        let kept = refresh.len();
        let refresh = Arc::new(Mutex::new(refresh));
        let (queue, lines) = mpsc::channel();
        let (synced_tx, synced) = tokio::sync::watch::channel(0);
        let thread = WriterThread {
            path: path.to_owned(),
            file,
            refresh: refresh.clone(),
            lines,
            synced: synced_tx,
            appended: 0,
            compact_after,
            clock,
            threshold: compact_after.max(kept.saturating_mul(2)),
        };
        std::thread::Builder::new()
            .name("idp-grants".into())
            .spawn(move || thread.run())
            .map_err(io)?;
        Ok(Self {
            refresh,
            writer: Writer {
                queue,
                queued: AtomicU64::new(0),
                synced,
            },
            codes: Mutex::new(HashMap::new()),
            used_forms: Mutex::new(HashMap::new()),
            form_attempts: Mutex::new(HashMap::new()),
            totp_steps: Mutex::new(HashMap::new()),
        })
    }

    /// The sequence number of the last change queued for the file.
    pub fn queued(&self) -> u64 {
        self.writer.queued.load(Ordering::SeqCst)
    }

    /// Waits until every change up to `upto` ([`Store::queued`]) is on disk (or its write
    /// failed and was logged, or the writer has stopped).
    pub async fn synced(&self, upto: u64) {
        let mut synced = self.writer.synced.clone();
        // An error means the writer thread is gone: nothing more will be synced.
        let _ = synced.wait_for(|done| *done >= upto).await;
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
        let mut refresh = lock(&self.refresh);
        let line = Line::Issue {
            token: hash(token),
            grant,
        };
        self.persist(&refresh, &line);
        refresh.apply(line);
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
        let mut refresh = lock(&self.refresh);
        let reused = match refresh.live.get(&key) {
            Some(grant) if grant.client_id != client_id => return Err(Refusal::Invalid),
            Some(grant) if grant.sign_in.expires_at <= now => return Err(Refusal::Invalid),
            Some(grant) if refresh.revoked_sids.contains_key(&grant.sign_in.sid) => {
                return Err(Refusal::Invalid);
            }
            Some(grant) => {
                let grant = grant.clone();
                let line = Line::Used {
                    token: key,
                    family: grant.family.clone(),
                    until: grant.sign_in.expires_at,
                };
                self.persist(&refresh, &line);
                refresh.apply(line);
                return Ok(grant);
            }
            None => match refresh.used.get(&key) {
                Some((family, _)) => family.clone(),
                None => return Err(Refusal::Invalid),
            },
        };
        drop(refresh);
        tracing::warn!(family = ?reused, "identity provider: a rotated refresh token was reused; family revoked");
        self.revoke_family(&reused);
        Err(Refusal::Replayed)
    }

    /// Revokes every refresh token of a family. A family without live tokens writes nothing
    /// (a replayed code or token cannot grow the file).
    pub fn revoke_family(&self, family: &str) {
        let mut refresh = lock(&self.refresh);
        if !refresh.live.values().any(|g| g.family == family) {
            return;
        }
        let line = Line::RevokeFamily {
            family: family.to_owned(),
        };
        self.persist(&refresh, &line);
        refresh.apply(line);
    }

    /// Ends a sign-in until `until`, raised to the end of its live refresh tokens: its cookie
    /// and refresh tokens are refused from now on. A sign-in already ended, or over by `now`,
    /// writes nothing and returns `None`; otherwise the sign-in's user and the clients that
    /// held its live refresh tokens (every token response issues one, so these are the clients
    /// that received tokens during it and whose grant was not revoked before), for the
    /// back-channel logout.
    pub fn revoke_sid(&self, sid: &str, until: u64, now: u64) -> Option<EndedSignIn> {
        let mut refresh = lock(&self.refresh);
        if refresh.revoked_sids.contains_key(sid) {
            return None;
        }
        let grants: Vec<&RefreshGrant> = refresh
            .live
            .values()
            .filter(|g| g.sign_in.sid == sid)
            .collect();
        let until = grants
            .iter()
            .map(|g| g.sign_in.expires_at)
            .fold(until, u64::max);
        if until <= now {
            return None;
        }
        let mut clients: Vec<String> = grants.iter().map(|g| g.client_id.clone()).collect();
        clients.sort_unstable();
        clients.dedup();
        let ended = EndedSignIn {
            sid: sid.to_owned(),
            username: grants.first().map(|g| g.sign_in.username.clone()),
            clients,
        };
        let line = Line::RevokeSid {
            sid: sid.to_owned(),
            until,
        };
        self.persist(&refresh, &line);
        refresh.apply(line);
        Some(ended)
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

    /// Counts one password or code check on form `id` (alive until `until`); false, counting
    /// nothing, once the form has had its [`FORM_ATTEMPTS`].
    pub fn reserve_form_attempt(&self, id: &str, until: u64, now: u64) -> bool {
        let Ok(mut attempts) = self.form_attempts.lock() else {
            return false;
        };
        if attempts.len() >= SWEEP_AT {
            attempts.retain(|_, (_, u)| *u > now);
        }
        let (count, _) = attempts.entry(id.to_owned()).or_insert((0, until));
        if *count >= FORM_ATTEMPTS {
            return false;
        }
        *count += 1;
        true
    }

    /// Takes back an attempt on form `id` that was refused before any check.
    pub fn refund_form_attempt(&self, id: &str) {
        if let Ok(mut attempts) = self.form_attempts.lock()
            && let Some((count, _)) = attempts.get_mut(id)
        {
            *count = count.saturating_sub(1);
        }
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

    /// Queues a line for the writer thread. Called with the refresh state locked (`_held`), so
    /// lines reach the file in the order their changes reached memory.
    fn persist(&self, _held: &MutexGuard<'_, Refresh>, line: &Line) {
        let mut text = String::new();
        push_line(&mut text, line);
        let seq = self.writer.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if self.writer.queue.send(Queued { seq, text }).is_err() {
            tracing::error!(
                "identity provider: the grant file's writer has stopped; a change is kept in memory only"
            );
        }
    }
}

/// The thread that owns the grant file.
struct WriterThread {
    path: PathBuf,
    file: File,
    refresh: Arc<Mutex<Refresh>>,
    lines: mpsc::Receiver<Queued>,
    synced: tokio::sync::watch::Sender<u64>,
    /// Lines appended since the file was last rewritten.
    appended: u64,
    compact_after: u64,
    /// Unix seconds now.
    clock: fn() -> u64,
    /// `appended` at which the file is rewritten next.
    threshold: u64,
}

impl WriterThread {
    /// Appends and syncs what is queued, one batch at a time, until the store is dropped.
    fn run(mut self) {
        while let Ok(first) = self.lines.recv() {
            let mut batch = vec![first];
            batch.extend(self.lines.try_iter());
            let mut done = batch.last().map_or(0, |q| q.seq);
            self.append(&batch);
            if self.appended >= self.threshold {
                done = done.max(self.compact());
            }
            self.synced.send_replace(done);
        }
    }

    /// Appends `batch` in one write and syncs it; a failure is logged (memory still holds the
    /// change, so the running provider stays correct).
    fn append(&mut self, batch: &[Queued]) {
        let text: String = batch.iter().map(|q| q.text.as_str()).collect();
        if let Err(e) = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
        {
            tracing::error!(file = %self.path.display(), error = %e, "could not persist a refresh-token change");
        }
        self.appended = self.appended.saturating_add(batch.len() as u64);
    }

    /// Drops expired entries from memory and rewrites the file from it. Lines queued meanwhile
    /// are already in memory (they are queued under its lock, which is held here), so the new
    /// file covers them: the sequence number of the last one is returned.
    fn compact(&mut self) -> u64 {
        let (text, kept, covered) = {
            let mut refresh = lock(&self.refresh);
            refresh.expire((self.clock)());
            let covered: Vec<Queued> = self.lines.try_iter().collect();
            (refresh.snapshot(), refresh.len(), covered)
        };
        let reopened = rewrite(&self.path, &text)
            .and_then(|()| std::fs::OpenOptions::new().append(true).open(&self.path));
        match reopened {
            Ok(file) => {
                self.file = file;
                self.appended = 0;
                self.threshold = self.compact_after.max(kept.saturating_mul(2));
                tracing::debug!(kept, file = %self.path.display(), "identity provider: grant file compacted");
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "could not compact the grant file; appending");
                self.append(&covered);
                self.threshold = self.appended.saturating_add(self.compact_after);
            }
        }
        covered.last().map_or(0, |q| q.seq)
    }
}

/// The refresh state, also when a panicking thread poisoned its lock.
fn lock(refresh: &Mutex<Refresh>) -> MutexGuard<'_, Refresh> {
    refresh
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Replaces the file at `path` by `text` (0600, synced, renamed into place, directory synced).
fn rewrite(path: &Path, text: &str) -> std::io::Result<()> {
    super::keys::write_private(path, text.as_bytes()).map_err(|e| match e {
        super::keys::KeyError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })?;
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
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

    /// Entries held.
    fn len(&self) -> u64 {
        let n = self.live.len() + self.used.len() + self.revoked_sids.len();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// The state as the shortest file that replays to it.
    fn snapshot(&self) -> String {
        let mut compact = String::new();
        for (token, grant) in &self.live {
            push_line(
                &mut compact,
                &Line::Issue {
                    token: token.clone(),
                    grant: grant.clone(),
                },
            );
        }
        for (token, (family, until)) in &self.used {
            push_line(
                &mut compact,
                &Line::Used {
                    token: token.clone(),
                    family: family.clone(),
                    until: *until,
                },
            );
        }
        for (sid, until) in &self.revoked_sids {
            push_line(
                &mut compact,
                &Line::RevokeSid {
                    sid: sid.clone(),
                    until: *until,
                },
            );
        }
        compact
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

    /// Waits until everything queued is on disk.
    async fn flush(store: &Store) {
        store.synced(store.queued()).await;
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_survive_a_restart_and_reuse_revokes_the_family() {
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
        flush(&store).await;

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

    #[tokio::test]
    async fn ending_a_sign_in_revokes_its_tokens() {
        let path = temp_path();
        let now = 1_000_000;
        let store = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        store.issue_refresh("rt", grant(now));
        store.issue_refresh("rt-b", grant(now));
        store.issue_refresh(
            "rt-other",
            RefreshGrant {
                client_id: "d".into(),
                ..grant(now)
            },
        );
        assert_eq!(
            store.revoke_sid("sid-1", now + 60, now),
            Some(EndedSignIn {
                sid: "sid-1".into(),
                username: Some("alice".into()),
                clients: vec!["c".into(), "d".into()],
            }),
            "the clients that hold its tokens, each once, for the back-channel logout"
        );
        assert_eq!(store.revoke_sid("sid-1", now + 60, now), None, "once");
        assert!(store.sid_revoked("sid-1"));
        assert_eq!(store.use_refresh("rt", "c", now), Err(Refusal::Invalid));
        flush(&store).await;
        // Kept until the end of its tokens' sign-in, not only the `until` asked for.
        assert!(
            lines(&path)
                .iter()
                .any(|l| l.contains(&format!("\"until\":{}", now + 3600)))
        );
        let reopened = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        assert!(reopened.sid_revoked("sid-1"));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn ending_an_ended_or_expired_sign_in_and_revoking_an_empty_family_write_nothing() {
        let path = temp_path();
        let now = 1_000_000;
        let store = Store::open(&path, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store.revoke_sid("sid-1", now + 3600, now),
            Some(EndedSignIn {
                sid: "sid-1".into(),
                username: None,
                clients: Vec::new(),
            })
        );
        flush(&store).await;
        let once = lines(&path);
        assert_eq!(once.len(), 1);
        for i in 0..200 {
            assert_eq!(store.revoke_sid("sid-1", now + 3600 + i, now + i), None);
            assert_eq!(store.revoke_sid("sid-old", now - 1, now), None);
            store.revoke_family("no-such-family");
        }
        flush(&store).await;
        assert_eq!(lines(&path), once);
        assert!(!store.sid_revoked("sid-old"));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn the_file_is_compacted_when_it_grows_and_expired_entries_go() {
        let path = temp_path();
        let now = crate::session::unix_now();
        // Compaction runs as if ten seconds later.
        let later = || crate::session::unix_now() + 10;
        let store =
            Store::open_compacting_after(&path, now, 50, later).unwrap_or_else(|e| panic!("{e}"));
        // Sign-ins ended long ago (they expire within the second) and one still running.
        for i in 0..400u64 {
            let _ = store.revoke_sid(&format!("old-{i}"), now + 1, now);
        }
        let _ = store.revoke_sid("current", now + 3600, now);
        // A token rotated many times: one live, the rest remembered as used.
        for i in 0..30 {
            store.issue_refresh(&format!("rt{i}"), grant(now));
            assert!(store.use_refresh(&format!("rt{i}"), "c", now).is_ok());
        }
        store.issue_refresh("live", grant(now));
        flush(&store).await;
        assert!(
            lines(&path).len() < 120,
            "the file was compacted: {} lines",
            lines(&path).len()
        );
        drop(store);
        let reopened = Store::open(&path, now + 2).unwrap_or_else(|e| panic!("{e}"));
        // At start the file holds what is current only.
        assert!(lines(&path).len() <= 32, "{}", lines(&path).len());
        assert!(reopened.sid_revoked("current"));
        assert!(!reopened.sid_revoked("old-7"));
        assert_eq!(
            reopened.use_refresh("rt3", "c", now + 2),
            Err(Refusal::Replayed),
            "a rotated token is still recognised after compaction"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn forms_are_good_for_a_bounded_number_of_checks() {
        let path = temp_path();
        let store = Store::open(&path, 1_000).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..FORM_ATTEMPTS {
            assert!(store.reserve_form_attempt("f", 1_600, 1_000));
        }
        assert!(!store.reserve_form_attempt("f", 1_600, 1_000));
        store.refund_form_attempt("f");
        assert!(store.reserve_form_attempt("f", 1_600, 1_000));
        assert!(!store.reserve_form_attempt("f", 1_600, 1_000));
        assert!(store.reserve_form_attempt("g", 1_600, 1_000));
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
