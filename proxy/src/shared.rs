//! Shared state between several sekisho instances, through Redis (or Valkey).
//!
//! What one instance learns, the others must apply: revocations (logout, a refresh the
//! provider refused, back-channel logout), login states used at the callback, session events
//! (the NIC guard admits a session's address on every instance, a provider logout announced on
//! one closes tunnels on all) and sign-in failures (auto-bans count every instance's).
//!
//! A request never waits on Redis: each instance keeps its own copy (the revocation list in
//! memory and in its file, the used-state set, the guard's holders) and only hands changes to
//! a queue. Two background tasks connect to Redis:
//! - the **writer** drains the queue into the stream `{prefix}events` (`XADD`, every message
//!   tagged with this instance's id) and, for revocations and used states, into the sorted sets
//!   `{prefix}revocations` and `{prefix}used-states` (score: when the entry stops mattering);
//! - the **reader** follows the stream (`XREAD BLOCK`) from where it left off and applies what
//!   other instances wrote; at every (re)connection it first loads both sorted sets, so an
//!   instance that starts late, or was cut off while the stream was trimmed, still knows every
//!   live revocation.
//!
//! While Redis is unreachable, changes are applied locally and queued (at most
//! [`MAX_QUEUED`]; the oldest are dropped beyond, and counted); `/readyz` says `degraded`. When
//! the writer reconnects it first pushes every local revocation with `ZADD GT CH` and streams
//! those Redis did not have (so revocations made while Redis was down, even across a restart of
//! this instance or a Redis that lost its data, reach everyone), then the queue.
//!
//! Whoever can write to these keys can revoke sessions and admit addresses at the NIC guards:
//! give sekisho its own ACL user and TLS.

pub mod resp;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sekisho_config::Redis;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::revocation::{Revocation, RevocationList, RevocationSink};
use crate::session::Identity;
use crate::sessions::events::{EndReason, SessionChange, SessionEvent, SessionSubscriber};
use resp::{Connection, RespError, Value};

/// Messages queued while Redis is unreachable, at most.
pub const MAX_QUEUED: usize = 100_000;
/// Messages written per pipeline.
const BATCH: usize = 256;
/// Stream entries read per `XREAD`.
const READ_COUNT: &str = "512";
/// How long one `XREAD` blocks on the server (ms).
const READ_BLOCK_MS: &str = "2000";
/// How long a command may take before the connection is given up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries kept in the stream (approximately): the slack a reader cut off can catch up from.
const STREAM_LENGTH: &str = "100000";
/// The largest message accepted from the stream.
const MAX_MESSAGE: usize = 64 * 1024;
/// Reconnection back-off bounds.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often expired entries are removed from the sorted sets.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One change, as it travels between instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// A session, or a provider session, is revoked until `until` (Unix seconds).
    Revoked {
        /// Its revocation-list key.
        key: String,
        /// When the entry stops mattering.
        until: u64,
    },
    /// A subject's sessions that started at or before `before` are revoked until `until`.
    SubjectRevoked {
        /// The subject's revocation-list key.
        key: String,
        /// The latest start time revoked.
        before: u64,
        /// When the entry stops mattering.
        until: u64,
    },
    /// A login state was used at the callback (its hash), and is remembered until `until`.
    StateUsed {
        /// The state's hash.
        key: String,
        /// When the flow would have expired.
        until: u64,
    },
    /// A session started, was refreshed or ended on another instance.
    Session {
        /// What happened.
        change: Change,
        /// The session id's hash.
        session: String,
        /// The client address that caused it.
        client_ip: IpAddr,
        /// When the session was signed in (Unix seconds).
        login_at: u64,
        /// When it ends at the latest (Unix seconds).
        expires_at: u64,
        /// Whose session.
        identity: Identity,
    },
    /// A sign-in failed or a credential was refused, from `client_ip`.
    Failure {
        /// The client address.
        client_ip: IpAddr,
    },
}

/// [`SessionChange`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A login.
    Started,
    /// A refresh.
    Refreshed,
    /// Signed out here.
    Logout,
    /// The provider refused a refresh.
    RefreshRefused,
    /// The provider's back-channel logout.
    ProviderLogout,
}

impl From<SessionChange> for Change {
    fn from(change: SessionChange) -> Self {
        match change {
            SessionChange::Started => Change::Started,
            SessionChange::Refreshed => Change::Refreshed,
            SessionChange::Ended(EndReason::Logout) => Change::Logout,
            SessionChange::Ended(EndReason::RefreshRefused) => Change::RefreshRefused,
            SessionChange::Ended(EndReason::ProviderLogout) => Change::ProviderLogout,
        }
    }
}

impl From<Change> for SessionChange {
    fn from(change: Change) -> Self {
        match change {
            Change::Started => SessionChange::Started,
            Change::Refreshed => SessionChange::Refreshed,
            Change::Logout => SessionChange::Ended(EndReason::Logout),
            Change::RefreshRefused => SessionChange::Ended(EndReason::RefreshRefused),
            Change::ProviderLogout => SessionChange::Ended(EndReason::ProviderLogout),
        }
    }
}

impl Message {
    /// Reads a message from a stream entry's body: at most 64 KiB of JSON of a known kind,
    /// without unknown fields, whose content passes [`Message::validate`].
    pub fn decode(body: &[u8]) -> Result<Message, String> {
        if body.len() > MAX_MESSAGE {
            return Err(format!("{} bytes, more than {MAX_MESSAGE}", body.len()));
        }
        let message: Message =
            serde_json::from_slice(body).map_err(|e| format!("not a message: {e}"))?;
        message.validate().map_err(str::to_owned)?;
        Ok(message)
    }

    /// Checks what a message from the stream claims: keys are revocation-list keys (16
    /// base64url characters), times are sane. A message that fails is dropped and counted.
    pub fn validate(&self) -> Result<(), &'static str> {
        let key = |k: &str| {
            (k.len() == 16
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .then_some(())
            .ok_or("a key is not 16 base64url characters")
        };
        match self {
            Message::Revoked { key: k, .. } | Message::StateUsed { key: k, .. } => key(k),
            Message::SubjectRevoked {
                key: k,
                before,
                until,
            } => {
                key(k)?;
                (before <= until)
                    .then_some(())
                    .ok_or("before is after until")
            }
            Message::Session {
                session,
                login_at,
                expires_at,
                ..
            } => {
                key(session)?;
                (login_at <= expires_at)
                    .then_some(())
                    .ok_or("login_at is after expires_at")
            }
            Message::Failure { .. } => Ok(()),
        }
    }
}

/// Applies what other instances wrote to what this instance holds besides the revocation
/// list: implemented by the proxy.
pub trait Replica: Send + Sync {
    /// A login state (its hash) was used elsewhere.
    fn state_used(&self, key: &str, until: u64);
    /// A session event happened elsewhere.
    fn session_event(&self, event: &SessionEvent);
    /// A failure happened elsewhere.
    fn failure(&self, client_ip: IpAddr);
}

/// Counters and state for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct SharedCounters {
    /// Messages written to Redis.
    pub published: AtomicU64,
    /// Messages from other instances applied.
    pub received: AtomicU64,
    /// Messages dropped from a full queue.
    pub dropped: AtomicU64,
    /// Messages from the stream that were not understood, or were refused.
    pub malformed: AtomicU64,
    /// Connection attempts that failed, and connections lost.
    pub disconnects: AtomicU64,
    /// Revocations Redis did not have, pushed at a reconnection.
    pub resynced: AtomicU64,
    /// Milliseconds between the newest applied message's publication and its application
    /// (both instances' clocks).
    pub lag_ms: AtomicU64,
}

/// The queue of changes to publish.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Message>,
}

/// This instance's link to the shared state.
pub struct SharedState {
    redis: Redis,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// A random id of this process: its own messages are skipped when read back.
    instance: String,
    stream: String,
    revocations_key: String,
    states_key: String,
    outbox: Mutex<Outbox>,
    wake: Notify,
    revoked: Arc<RevocationList>,
    replica: OnceLock<Weak<dyn Replica>>,
    reader_up: AtomicBool,
    writer_up: AtomicBool,
    /// The last connection error, for `/readyz`.
    last_error: Mutex<Option<String>>,
    /// Counters.
    pub counters: SharedCounters,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("redis", &self.redis)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Why the shared state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The TLS client configuration could not be built.
    #[error("shared_state.redis.tls: {0}")]
    Tls(String),
}

impl SharedState {
    /// The link for `redis`, over `revoked` (the local revocation list, which tells it of every
    /// local revocation from now on). Nothing connects before [`SharedState::run`].
    pub fn new(redis: &Redis, revoked: Arc<RevocationList>) -> Result<Arc<Self>, SharedError> {
        let tls = match &redis.tls {
            None => None,
            Some(tls) => {
                let mut roots = rustls::RootCertStore::empty();
                match &tls.ca {
                    Some(bundle) => {
                        for certificate in &bundle.certificates {
                            roots
                                .add(certificate.clone())
                                .map_err(|e| SharedError::Tls(e.to_string()))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| SharedError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Some(Arc::new(config))
            }
        };
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| SharedError::Tls("no randomness for the instance id".into()))?;
        let prefix = &redis.key_prefix;
        let shared = Arc::new(SharedState {
            redis: redis.clone(),
            tls,
            instance: crate::hex::encode(&id),
            stream: format!("{prefix}events"),
            revocations_key: format!("{prefix}revocations"),
            states_key: format!("{prefix}used-states"),
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            revoked: revoked.clone(),
            replica: OnceLock::new(),
            reader_up: AtomicBool::new(false),
            writer_up: AtomicBool::new(false),
            last_error: Mutex::new(None),
            counters: SharedCounters::default(),
        });
        revoked.replicate_to(shared.clone());
        Ok(shared)
    }

    /// Tells the link where to apply session events, used states and failures from others.
    pub fn attach(&self, replica: Weak<dyn Replica>) {
        let _ = self.replica.set(replica);
    }

    /// Whether both connections are up.
    pub fn connected(&self) -> bool {
        self.reader_up.load(Ordering::Relaxed) && self.writer_up.load(Ordering::Relaxed)
    }

    /// Messages waiting to be written.
    pub fn queued(&self) -> usize {
        self.outbox.lock().map_or(0, |o| o.queue.len())
    }

    /// The last connection error, if the link is down.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The server, as the operator wrote it (for logs and `/readyz`).
    pub fn server(&self) -> String {
        self.redis.address.to_string()
    }

    /// Appends this link's metrics, in the Prometheus text format.
    pub fn render_metrics(&self, text: &mut String) {
        use std::fmt::Write as _;
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let _ = write!(
            text,
            "# HELP sekisho_shared_state_connected 1 while both connections to Redis are up (0: degraded, serving from the local copy).\n# TYPE sekisho_shared_state_connected gauge\nsekisho_shared_state_connected {}\n\
             # HELP sekisho_shared_state_queued Changes waiting to be written to Redis.\n# TYPE sekisho_shared_state_queued gauge\nsekisho_shared_state_queued {}\n\
             # HELP sekisho_shared_state_lag_seconds Time from the newest applied change's publication at another instance to its application here (both clocks).\n# TYPE sekisho_shared_state_lag_seconds gauge\nsekisho_shared_state_lag_seconds {:.3}\n\
             # HELP sekisho_shared_state_messages_total Changes written to Redis (published), applied from other instances (received), dropped from a full queue, refused as malformed, and local revocations Redis lacked at a reconnection (resynced).\n# TYPE sekisho_shared_state_messages_total counter\n\
             sekisho_shared_state_messages_total{{outcome=\"published\"}} {}\nsekisho_shared_state_messages_total{{outcome=\"received\"}} {}\nsekisho_shared_state_messages_total{{outcome=\"dropped\"}} {}\nsekisho_shared_state_messages_total{{outcome=\"malformed\"}} {}\nsekisho_shared_state_messages_total{{outcome=\"resynced\"}} {}\n\
             # HELP sekisho_shared_state_disconnects_total Failed connection attempts and lost connections to Redis.\n# TYPE sekisho_shared_state_disconnects_total counter\nsekisho_shared_state_disconnects_total {}\n",
            u8::from(self.connected()),
            self.queued(),
            Duration::from_millis(load(&c.lag_ms)).as_secs_f64(),
            load(&c.published),
            load(&c.received),
            load(&c.dropped),
            load(&c.malformed),
            load(&c.resynced),
            load(&c.disconnects),
        );
    }

    /// Queues a change for the other instances; never waits.
    pub fn publish(&self, message: Message) {
        if let Ok(mut outbox) = self.outbox.lock() {
            if outbox.queue.len() >= MAX_QUEUED {
                outbox.queue.pop_front();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            outbox.queue.push_back(message);
        }
        self.wake.notify_one();
    }

    /// Runs the reader and the writer until the process ends.
    pub async fn run(self: Arc<Self>) {
        let reader = tokio::spawn(self.clone().read_forever());
        self.write_forever().await;
        reader.abort();
    }

    fn went_down(&self, flag: &AtomicBool, what: &str, error: &RespError) {
        let was_up = flag.swap(false, Ordering::Relaxed);
        self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        let text = format!("{what}: {error}");
        // The first failure after start is said out loud too (a wrong password, a bad
        // certificate); repeats are debug.
        let first = self.counters.disconnects.load(Ordering::Relaxed) == 1;
        if was_up || first {
            tracing::warn!(server = %self.server(), error = %text, queued = self.queued(), "shared state: Redis unreachable; serving from the local copy and queueing changes");
        } else {
            tracing::debug!(server = %self.server(), error = %text, "shared state: connecting failed");
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(text);
        }
    }

    fn came_up(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Relaxed);
        if self.connected() {
            if let Ok(mut last) = self.last_error.lock() {
                *last = None;
            }
            tracing::info!(server = %self.server(), queued = self.queued(), "shared state: connected to Redis");
        }
    }

    async fn open(&self) -> Result<Connection, RespError> {
        tokio::time::timeout(
            COMMAND_TIMEOUT,
            Connection::open(&self.redis, self.tls.as_ref()),
        )
        .await
        .map_err(|_| RespError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, RespError>>,
        limit: Duration,
    ) -> Result<T, RespError> {
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| RespError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    /// The writer: connects, pushes the local revocations Redis lacks, then drains the queue.
    async fn write_forever(&self) {
        let mut backoff = RETRY_MIN;
        loop {
            let result = async {
                let mut connection = self.open().await?;
                self.resync(&mut connection).await?;
                self.came_up(&self.writer_up);
                self.drain(&mut connection).await
            }
            .await;
            if let Err(error) = result {
                self.went_down(&self.writer_up, "writing", &error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
            backoff = RETRY_MIN;
        }
    }

    /// Pushes every live local revocation (`ZADD GT CH`: only a longer entry changes Redis) and
    /// streams the ones Redis did not have.
    async fn resync(&self, connection: &mut Connection) -> Result<(), RespError> {
        let now = crate::session::unix_now();
        let entries = self.revoked.entries(now);
        for chunk in entries.chunks(BATCH) {
            let commands: Vec<Vec<Vec<u8>>> = chunk
                .iter()
                .map(|entry| self.zadd_revocation(entry))
                .collect();
            let replies = self
                .timed(connection.pipeline(&commands), COMMAND_TIMEOUT)
                .await?;
            let mut missing = Vec::new();
            for (entry, reply) in chunk.iter().zip(replies) {
                if reply.into_int()? > 0 {
                    missing.push(revocation_message(entry));
                }
            }
            if !missing.is_empty() {
                self.counters
                    .resynced
                    .fetch_add(missing.len() as u64, Ordering::Relaxed);
                let commands: Vec<_> = missing.iter().map(|m| self.xadd(m)).collect();
                for reply in self
                    .timed(connection.pipeline(&commands), COMMAND_TIMEOUT)
                    .await?
                {
                    reply.ok()?;
                }
            }
        }
        Ok(())
    }

    /// Writes queued messages until the connection fails.
    async fn drain(&self, connection: &mut Connection) -> Result<(), RespError> {
        let mut pruned = tokio::time::Instant::now();
        loop {
            let batch: Vec<Message> = match self.outbox.lock() {
                Ok(mut outbox) => {
                    let n = outbox.queue.len().min(BATCH);
                    outbox.queue.drain(..n).collect()
                }
                Err(_) => Vec::new(),
            };
            if batch.is_empty() {
                if pruned.elapsed() >= PRUNE_EVERY {
                    self.prune(connection).await?;
                    pruned = tokio::time::Instant::now();
                }
                // A ping now and then notices a dead server while nothing is written.
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {
                        self.timed(connection.command(&["PING"]), COMMAND_TIMEOUT).await?;
                    }
                }
                continue;
            }
            let mut commands = Vec::with_capacity(batch.len() * 2);
            for message in &batch {
                match message {
                    Message::Revoked { key, until } => {
                        commands.push(self.zadd_revocation(&Revocation::Session {
                            key: key.clone(),
                            until: *until,
                        }))
                    }
                    Message::SubjectRevoked { key, before, until } => {
                        commands.push(self.zadd_revocation(&Revocation::Subject {
                            key: key.clone(),
                            before: *before,
                            until: *until,
                        }));
                    }
                    Message::StateUsed { key, until } => {
                        commands.push(zadd(&self.states_key, *until, key.as_bytes().to_vec()))
                    }
                    Message::Session { .. } | Message::Failure { .. } => {}
                }
                commands.push(self.xadd(message));
            }
            match self
                .timed(connection.pipeline(&commands), COMMAND_TIMEOUT)
                .await
            {
                Ok(replies) => {
                    for reply in replies {
                        if let Value::Error(e) = reply {
                            tracing::error!(error = %e, "shared state: Redis refused a write");
                        }
                    }
                    self.counters
                        .published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    // Nothing is known to be written: the batch goes back to the front, in
                    // order (replaying a written message is harmless: every apply merges).
                    if let Ok(mut outbox) = self.outbox.lock() {
                        for message in batch.into_iter().rev() {
                            outbox.queue.push_front(message);
                        }
                        while outbox.queue.len() > MAX_QUEUED {
                            outbox.queue.pop_front();
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Removes expired entries from the sorted sets.
    async fn prune(&self, connection: &mut Connection) -> Result<(), RespError> {
        let now = crate::session::unix_now().to_string();
        let commands: Vec<Vec<Vec<u8>>> = [&self.revocations_key, &self.states_key]
            .into_iter()
            .map(|key| {
                vec![
                    b"ZREMRANGEBYSCORE".to_vec(),
                    key.as_bytes().to_vec(),
                    b"-inf".to_vec(),
                    now.as_bytes().to_vec(),
                ]
            })
            .collect();
        for reply in self
            .timed(connection.pipeline(&commands), COMMAND_TIMEOUT)
            .await?
        {
            reply.ok()?;
        }
        Ok(())
    }

    fn zadd_revocation(&self, entry: &Revocation) -> Vec<Vec<u8>> {
        let (member, until) = match entry {
            Revocation::Session { key, until } => (key.clone(), *until),
            Revocation::Subject { key, before, until } => (format!("{key} {before}"), *until),
        };
        zadd(&self.revocations_key, until, member.into_bytes())
    }

    fn xadd(&self, message: &Message) -> Vec<Vec<u8>> {
        let body = serde_json::to_vec(message).unwrap_or_default();
        let at = jiff::Timestamp::now().as_millisecond().to_string();
        vec![
            b"XADD".to_vec(),
            self.stream.as_bytes().to_vec(),
            b"MAXLEN".to_vec(),
            b"~".to_vec(),
            STREAM_LENGTH.as_bytes().to_vec(),
            b"*".to_vec(),
            b"from".to_vec(),
            self.instance.as_bytes().to_vec(),
            b"at".to_vec(),
            at.into_bytes(),
            b"m".to_vec(),
            body,
        ]
    }

    /// The reader: at each connection loads the sorted sets, then follows the stream from
    /// where it left off (the stream's end at the first connection).
    async fn read_forever(self: Arc<Self>) {
        let mut last_id: Option<String> = None;
        let mut backoff = RETRY_MIN;
        loop {
            let result = async {
                let mut connection = self.open().await?;
                let head = self.stream_head(&mut connection).await?;
                self.load_snapshot(&mut connection).await?;
                let from = last_id.get_or_insert(head);
                self.came_up(&self.reader_up);
                loop {
                    let reply = self
                        .timed(
                            connection.command(&[
                                "XREAD",
                                "COUNT",
                                READ_COUNT,
                                "BLOCK",
                                READ_BLOCK_MS,
                                "STREAMS",
                                &self.stream,
                                from,
                            ]),
                            COMMAND_TIMEOUT,
                        )
                        .await?;
                    for (id, fields) in stream_entries(reply)? {
                        self.apply_entry(&fields);
                        *from = id;
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), RespError>(())
            }
            .await;
            if let Err(error) = result {
                self.went_down(&self.reader_up, "reading", &error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
            backoff = RETRY_MIN;
        }
    }

    /// The id of the stream's newest entry (`0-0` when it is empty).
    async fn stream_head(&self, connection: &mut Connection) -> Result<String, RespError> {
        let reply = self
            .timed(
                connection.command(&["XREVRANGE", &self.stream, "+", "-", "COUNT", "1"]),
                COMMAND_TIMEOUT,
            )
            .await?;
        match reply.into_array()?.into_iter().next() {
            Some(entry) => entry
                .into_array()?
                .into_iter()
                .next()
                .ok_or(RespError::Protocol("stream entry without id"))?
                .into_text(),
            None => Ok("0-0".to_owned()),
        }
    }

    /// Applies every live entry of the sorted sets.
    async fn load_snapshot(&self, connection: &mut Connection) -> Result<(), RespError> {
        let now = crate::session::unix_now();
        let from = format!("({now}");
        let revocations = self
            .timed(
                connection.command(&[
                    "ZRANGEBYSCORE",
                    &self.revocations_key,
                    &from,
                    "+inf",
                    "WITHSCORES",
                ]),
                COMMAND_TIMEOUT,
            )
            .await?;
        let mut applied = 0usize;
        for (member, until) in scored(revocations)? {
            let mut parts = member.split(' ');
            let message = match (parts.next(), parts.next(), parts.next()) {
                (Some(key), None, _) => Message::Revoked {
                    key: key.to_owned(),
                    until,
                },
                (Some(key), Some(before), None) => match before.parse() {
                    Ok(before) => Message::SubjectRevoked {
                        key: key.to_owned(),
                        before,
                        until,
                    },
                    Err(_) => {
                        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                },
                _ => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            applied += usize::from(self.apply(message));
        }
        let states = self
            .timed(
                connection.command(&[
                    "ZRANGEBYSCORE",
                    &self.states_key,
                    &from,
                    "+inf",
                    "WITHSCORES",
                ]),
                COMMAND_TIMEOUT,
            )
            .await?;
        for (key, until) in scored(states)? {
            applied += usize::from(self.apply(Message::StateUsed { key, until }));
        }
        tracing::debug!(applied, "shared state: snapshot loaded");
        Ok(())
    }

    /// Applies one stream entry written by another instance.
    fn apply_entry(&self, fields: &[(Vec<u8>, Vec<u8>)]) {
        let field = |name: &[u8]| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        };
        if field(b"from") == Some(self.instance.as_bytes()) {
            return;
        }
        let message = match Message::decode(field(b"m").unwrap_or_default()) {
            Ok(message) => message,
            Err(reason) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason, "shared state: a stream entry was refused");
                return;
            }
        };
        if let Some(at) = field(b"at")
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<i64>().ok())
        {
            let lag = jiff::Timestamp::now().as_millisecond().saturating_sub(at);
            self.counters
                .lag_ms
                .store(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);
        }
        if self.apply(message) {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies a message from elsewhere to the local copy; false when it was refused.
    fn apply(&self, message: Message) -> bool {
        if let Err(reason) = message.validate() {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%reason, "shared state: a message was refused");
            return false;
        }
        let now = crate::session::unix_now();
        let replica = self.replica.get().and_then(Weak::upgrade);
        match message {
            Message::Revoked { key, until } => {
                self.revoked.merge(Revocation::Session { key, until }, now);
            }
            Message::SubjectRevoked { key, before, until } => {
                self.revoked
                    .merge(Revocation::Subject { key, before, until }, now);
            }
            Message::StateUsed { key, until } => {
                if let Some(replica) = replica {
                    replica.state_used(&key, until);
                }
            }
            Message::Session {
                change,
                session,
                client_ip,
                login_at,
                expires_at,
                identity,
            } => {
                if let Some(replica) = replica {
                    let event = SessionEvent {
                        change: change.into(),
                        identity: Arc::new(identity),
                        session,
                        source: crate::sessions::events::EventSource {
                            request_id: None,
                            client_ip,
                            peer: None,
                            user_agent: None,
                            host: None,
                        },
                        expires_at,
                        login_at,
                    };
                    replica.session_event(&event);
                }
            }
            Message::Failure { client_ip } => {
                if let Some(replica) = replica {
                    replica.failure(client_ip);
                }
            }
        }
        true
    }
}

impl RevocationSink for SharedState {
    /// Every local revocation goes to the other instances.
    fn revoked(&self, entry: &Revocation) {
        self.publish(revocation_message(entry));
    }
}

impl SessionSubscriber for SharedState {
    /// Local session events go to the other instances.
    fn session_event(&self, event: &SessionEvent) {
        self.publish(Message::Session {
            change: event.change.into(),
            session: event.session.clone(),
            client_ip: event.source.client_ip,
            login_at: event.login_at,
            expires_at: event.expires_at,
            identity: (*event.identity).clone(),
        });
    }

    /// Local failures count towards every instance's auto-ban.
    fn failure(&self, source: IpAddr) {
        self.publish(Message::Failure { client_ip: source });
    }
}

fn revocation_message(entry: &Revocation) -> Message {
    match entry {
        Revocation::Session { key, until } => Message::Revoked {
            key: key.clone(),
            until: *until,
        },
        Revocation::Subject { key, before, until } => Message::SubjectRevoked {
            key: key.clone(),
            before: *before,
            until: *until,
        },
    }
}

/// `ZADD key GT CH until member`: raises the entry's time, never lowers it; the reply counts
/// entries added or changed.
fn zadd(key: &str, until: u64, member: Vec<u8>) -> Vec<Vec<u8>> {
    vec![
        b"ZADD".to_vec(),
        key.as_bytes().to_vec(),
        b"GT".to_vec(),
        b"CH".to_vec(),
        until.to_string().into_bytes(),
        member,
    ]
}

/// The `(member, score)` pairs of a `WITHSCORES` reply.
fn scored(reply: Value) -> Result<Vec<(String, u64)>, RespError> {
    let items = reply.into_array()?;
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(member), Some(score)) = (items.next(), items.next()) {
        let member = member.into_text()?;
        let score = score.into_text()?;
        let score = score
            .parse::<f64>()
            .map_err(|_| RespError::Protocol("score not a number"))?;
        if score.is_finite() && score >= 0.0 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            pairs.push((member, score as u64));
        }
    }
    Ok(pairs)
}

/// The entries of an `XREAD` reply for one stream: `(id, [(field, value)])`.
/// One stream entry: its id and its field/value pairs.
type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

fn stream_entries(reply: Value) -> Result<Vec<Entry>, RespError> {
    let mut out = Vec::new();
    for stream in reply.into_array()? {
        let mut parts = stream.into_array()?.into_iter();
        let (Some(_name), Some(entries)) = (parts.next(), parts.next()) else {
            return Err(RespError::Protocol("stream reply without entries"));
        };
        for entry in entries.into_array()? {
            let mut parts = entry.into_array()?.into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err(RespError::Protocol("stream entry without fields"));
            };
            let id = id.into_text()?;
            let mut pairs = Vec::new();
            let mut fields = fields.into_array()?.into_iter();
            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                pairs.push((k.into_bytes()?, v.into_bytes()?));
            }
            out.push((id, pairs));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let message = Message::SubjectRevoked {
            key: "abcdefghijklmnop".into(),
            before: 10,
            until: 20,
        };
        let text = serde_json::to_string(&message).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"subject_revoked","key":"abcdefghijklmnop","before":10,"until":20}"#
        );
        assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), message);
        assert!(message.validate().is_ok());
        for bad in [
            Message::Revoked {
                key: "short".into(),
                until: 1,
            },
            Message::Revoked {
                key: "abcdefghijklmno/".into(),
                until: 1,
            },
            Message::SubjectRevoked {
                key: "abcdefghijklmnop".into(),
                before: 30,
                until: 20,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(
            serde_json::from_str::<Message>(
                r#"{"kind":"revoked","key":"abcdefghijklmnop","until":1,"extra":2}"#
            )
            .is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn xread_and_withscores_replies_are_unpacked() {
        let bulk = |s: &str| Value::Bulk(Some(s.as_bytes().to_vec()));
        let reply = Value::Array(Some(vec![Value::Array(Some(vec![
            bulk("sekisho:events"),
            Value::Array(Some(vec![Value::Array(Some(vec![
                bulk("5-1"),
                Value::Array(Some(vec![bulk("from"), bulk("x"), bulk("m"), bulk("{}")])),
            ]))])),
        ]))]));
        let entries = stream_entries(reply).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "5-1");
        assert_eq!(entries[0].1[1], (b"m".to_vec(), b"{}".to_vec()));
        assert!(
            stream_entries(Value::Array(None)).unwrap().is_empty(),
            "a timeout"
        );
        let scores = Value::Array(Some(vec![
            bulk("k1"),
            bulk("1700000000"),
            bulk("k2"),
            bulk("-inf"),
        ]));
        assert_eq!(
            scored(scores).unwrap(),
            vec![("k1".to_owned(), 1_700_000_000)]
        );
    }
}
