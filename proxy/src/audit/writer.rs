//! The audit writer: one thread that owns the log files. Requests hand it events through a
//! bounded channel and never wait for it, except in strict mode, where a response is released
//! only after the batch holding its record has been written and `fdatasync`ed (group commit:
//! one sync covers every record that arrived meanwhile).
//!
//! Files are `audit-<first seq>-<UTC start time>.jsonl` in the audit directory, rotated by size
//! and age, removed after the retention period (a record says so). The hash chain runs across
//! rotation; a signed checkpoint closes every file, and is written every `checkpoint_interval`
//! while records arrive, at start (vouching for what a crash left unsigned) and at shutdown.
//! Next to each file an index (`.idx`, JSON lines, one per block of records) lets
//! `sekisho audit query` skip what cannot match; it is a cache, never trusted for integrity.
//!
//! When a write or sync fails (disk full, I/O error) the file is cut back to its last good
//! length and the chain to its last good state, nothing half-written remains, and the writer
//! marks itself failing: with `on_failure: deny` new requests get 503 until a retry succeeds.
//! Events that could not be written wait in memory (bounded by `queue`) and are written, in
//! order, once the disk takes them again; what overflows is counted and recorded as lost.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use sekisho_config::{Audit, Durability, OnFailure};
use serde::{Deserialize, Serialize};

use super::chain::{Chain, Head, HeadError, Missing};
use super::otlp::{ExportMetrics, Exported, Exporter};
use super::record::{Event, Lifecycle};

/// Records per index block.
const BLOCK_RECORDS: usize = 1024;
/// Events the writer takes from the channel per batch.
const BATCH_LIMIT: usize = 8192;
/// How long a busy writer in batched mode lets records gather before it takes them.
const LINGER: Duration = Duration::from_millis(2);
/// How long a failing writer waits between retries.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How long a strict-mode request waits for its commit before it counts as failed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file or directory operation failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// What it was about.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint key is not an Ed25519 PKCS#8 key.
    #[error("audit signing key: {0}")]
    Key(String),
    /// The OTLP exporter could not start.
    #[error("audit OTLP export: {0}")]
    Otlp(String),
    /// The newest file's last line is not a chained record.
    #[error(
        "audit log {0}: the last line is not a chained record; move the file aside or repair it"
    )]
    Resume(PathBuf),
    /// The head file is not a checkpoint signed by a key of this log.
    #[error("audit head {path}: {error}")]
    Head {
        /// The head file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        error: HeadError,
    },
    /// The log ends before the newest signed head: it was cut back.
    #[error(
        "the audit log was cut back: {missing} (signed head {path}); investigate before moving the head aside to start writing again (keep it: it is the evidence)"
    )]
    Truncated {
        /// The head file.
        path: PathBuf,
        /// What is missing.
        missing: Missing,
    },
    /// The line at the head's seq is not the head's checkpoint.
    #[error(
        "the audit log was rewritten: its line at seq {seq} is not the checkpoint of the signed head {path}"
    )]
    Rewritten {
        /// The head file.
        path: PathBuf,
        /// The head's seq.
        seq: u64,
    },
    /// The configured key is not the one that signs the chain, and the previous key was not
    /// given to introduce it.
    #[error(
        "the audit log is signed by key {chain}; the configured signing_key {new} is new to it: set audit.previous_signing_key to the key it replaces (it signs the record introducing the new key), or restore that key"
    )]
    KeyNotIntroduced {
        /// The key id that signs the chain now.
        chain: String,
        /// The configured key's id.
        new: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Why a record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The channel to the writer is full.
    #[error("the audit writer is behind (queue full)")]
    QueueFull,
    /// The record could not be made durable (disk full, I/O error, timeout).
    #[error("the audit log cannot be written")]
    Failing,
    /// The writer has stopped.
    #[error("the audit writer has stopped")]
    Closed,
}

/// Operator counters (exported on the admin listener's `/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records written to disk.
    pub records_written: AtomicU64,
    /// Records lost: the queue or the retry buffer overflowed.
    pub records_dropped: AtomicU64,
    /// Writes or syncs that failed.
    pub write_failures: AtomicU64,
    /// Events refused because the channel was full.
    pub queue_full: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// `fdatasync` calls.
    pub syncs: AtomicU64,
    /// Requests refused with 503 because of the audit log (`on_failure: deny`).
    pub requests_refused: AtomicU64,
    /// Records in the channel, not yet taken by the writer (gauge).
    pub queued: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    failing: AtomicBool,
    metrics: Metrics,
    last_error: Mutex<Option<String>>,
}

/// Where a strict-mode request learns the fate of its record: written, or handed back.
type Waiter = tokio::sync::oneshot::Sender<Result<(), Event>>;

/// A record that could not be made durable, handed back to the request so that it can record
/// what really happened (a 503 instead of the response, with `on_failure: deny`).
#[derive(Debug)]
pub struct Unrecorded {
    /// Why.
    pub reason: Refused,
    /// The event, when the writer gave it back (not after a timeout: then the writer still
    /// holds it and writes it when it can).
    pub event: Option<Event>,
}

enum Message {
    Event(Event, Option<Waiter>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The handle the proxy holds.
pub struct AuditLog {
    tx: Mutex<Option<SyncSender<Message>>>,
    shared: Arc<Shared>,
    durability: Durability,
    on_failure: OnFailure,
    thread: Mutex<Option<JoinHandle<()>>>,
    public_key_hex: String,
    public_keys: Vec<Vec<u8>>,
    dir: PathBuf,
    head_path: PathBuf,
    exporter: Option<Exporter>,
    export_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    export_timeout: Duration,
    /// At most one log line per second about records that could not be kept (the metrics count
    /// every one): an overloaded or full disk must not also flood the log.
    complaints: OncePerSecond,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir`, resumes its chain and starts the writer.
    /// The checkpoint key is `config.signing_key`, else `{state_dir}/audit-signing.pem`
    /// (created on first use); its public half is written to `{dir}/audit-signing.pub` (hex).
    pub fn open(config: &Audit, state_dir: &Path) -> Result<Self, OpenError> {
        create_private_dir(&config.dir)?;
        let key = load_or_create_key(config, state_dir)?;
        let public_key_hex = crate::hex::encode(key.public_key().as_ref());
        // Every key that ever signed this log, oldest first: a new key is appended, so that
        // checkpoints of the keys it replaced still verify.
        let pub_path = config.dir.join("audit-signing.pub");
        let mut known = match std::fs::read_to_string(&pub_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error(&pub_path)(e)),
        };
        if !known.lines().any(|l| l.trim() == public_key_hex) {
            known.push_str(&public_key_hex);
            known.push('\n');
            std::fs::write(&pub_path, &known).map_err(io_error(&pub_path))?;
        }
        let public_keys = parse_public_keys(&known);

        let files = log_files(&config.dir).map_err(io_error(&config.dir))?;
        let (chain, active) = match files.last() {
            Some(newest) => resume(&newest.path)?,
            None => (Chain::default(), None),
        };
        let head_path = head_path(state_dir);
        let head = check_head(&head_path, &public_keys, &config.dir, &chain)?;
        // The key that signs the chain now: the last signed line's, else the head's.
        let chain_key = match files.last() {
            Some(newest) => last_signer(&newest.path).map_err(io_error(&newest.path))?,
            None => None,
        }
        .or_else(|| head.as_ref().map(|h| h.key_id.clone()));
        let current_id = super::chain::key_id(key.public_key().as_ref());
        let introducer = match chain_key {
            Some(chain_key) if chain_key != current_id => {
                let previous = config
                    .previous_signing_key
                    .as_ref()
                    .map(|pem| key_from_pem(pem.expose()))
                    .transpose()?
                    .filter(|k| super::chain::key_id(k.public_key().as_ref()) == chain_key);
                match previous {
                    Some(previous) => Some(previous),
                    None => {
                        return Err(OpenError::KeyNotIntroduced {
                            chain: chain_key,
                            new: current_id,
                        });
                    }
                }
            }
            _ => None,
        };
        let shared = Arc::new(Shared::default());
        let (exporter, export_done) = match config.otlp.as_ref().map(Exporter::start) {
            Some(Ok((exporter, done))) => (Some(exporter), Some(done)),
            Some(Err(e)) => return Err(OpenError::Otlp(e)),
            None => (None, None),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
        let mut writer = Writer {
            config: config.clone(),
            key,
            chain,
            active,
            pending: VecDeque::new(),
            lost: 0,
            dirty: false,
            last_sync: Instant::now(),
            last_checkpoint: Instant::now(),
            since_checkpoint: 0,
            last_retention: None,
            shared: shared.clone(),
            failure: None,
            exporter: exporter.clone(),
            head_path: head_path.clone(),
        };
        if let Some(previous) = introducer {
            writer.introduce_key(&previous).map_err(|e| OpenError::Io {
                path: config.dir.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        if writer.chain.next_seq() > 0 {
            // Vouch for what the previous run left after its last checkpoint (a crash).
            writer.checkpoint();
        }
        let thread = std::thread::Builder::new()
            .name("sekisho-audit".into())
            .spawn(move || writer.run(&rx))
            .map_err(io_error(&config.dir))?;
        Ok(AuditLog {
            tx: Mutex::new(Some(tx)),
            shared,
            durability: config.durability,
            on_failure: config.on_failure,
            thread: Mutex::new(Some(thread)),
            public_key_hex,
            public_keys,
            dir: config.dir.clone(),
            head_path,
            exporter,
            export_done: Mutex::new(export_done),
            export_timeout: config.otlp.as_ref().map_or(Duration::ZERO, |o| o.timeout),
            complaints: OncePerSecond::default(),
        })
    }

    /// Where the newest signed head is kept (`{state_dir}/audit-head.json`).
    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    /// The directory of the log files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint public key (32 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        crate::hex::decode(&self.public_key_hex).unwrap_or_default()
    }

    /// Every key that signed checkpoints of this log (the current one last).
    pub fn public_keys(&self) -> &[Vec<u8>] {
        &self.public_keys
    }

    /// Hex of the checkpoint public key.
    pub fn public_key_hex(&self) -> &str {
        &self.public_key_hex
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The OTLP export counters, when exporting.
    pub fn export_metrics(&self) -> Option<&ExportMetrics> {
        self.exporter.as_ref().map(Exporter::metrics)
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The last write error, while the writer is failing.
    pub fn failure(&self) -> Option<String> {
        if !self.shared.failing.load(Ordering::Relaxed) {
            return None;
        }
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Whether new requests may be served: false with `on_failure: deny` while records cannot
    /// be written. (With `allow` always true.)
    pub fn accepting(&self) -> bool {
        self.on_failure == OnFailure::Allow || !self.shared.failing.load(Ordering::Relaxed)
    }

    /// The failure mode.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// Hands `event` to the writer; gives it back when the channel is full or closed.
    fn send(&self, event: Event, waiter: Option<Waiter>) -> Result<(), Unrecorded> {
        let closed = |event| Unrecorded {
            reason: Refused::Closed,
            event: Some(event),
        };
        let Ok(guard) = self.tx.lock() else {
            return Err(closed(event));
        };
        let Some(tx) = guard.as_ref() else {
            return Err(closed(event));
        };
        // Counted before it is sent, so that the writer never takes away what was not added.
        let queued = &self.shared.metrics.queued;
        queued.fetch_add(1, Ordering::Relaxed);
        let sent = tx.try_send(Message::Event(event, waiter));
        if sent.is_err() {
            queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(message)) => {
                self.shared
                    .metrics
                    .queue_full
                    .fetch_add(1, Ordering::Relaxed);
                self.shared
                    .metrics
                    .records_dropped
                    .fetch_add(1, Ordering::Relaxed);
                Err(Unrecorded {
                    reason: Refused::QueueFull,
                    event: match message {
                        Message::Event(event, _) => Some(event),
                        Message::Flush(_) => None,
                    },
                })
            }
            Err(TrySendError::Disconnected(_)) => Err(Unrecorded {
                reason: Refused::Closed,
                event: None,
            }),
        }
    }

    /// Queues an event without waiting (batched durability, and events no response waits on).
    /// A full queue loses the event (counted in `records_dropped`).
    pub fn record(&self, event: Event) -> Result<(), Refused> {
        self.send(event, None).map_err(|u| u.reason)
    }

    /// Records an event no response waits on (logins, reloads, rejected credentials); a
    /// refusal is counted by the log and reported at most once per second.
    pub fn keep(&self, event: Event) {
        if let Err(e) = self.record(event)
            && let Some(suppressed) = self.complaints.admit()
        {
            tracing::error!(error = %e, suppressed, "audit record not kept");
        }
    }

    /// `Some(complaints suppressed since the last one)` when a complaint about unkept records
    /// may be logged now (at most once per second).
    pub fn complaint_admitted(&self) -> Option<u64> {
        self.complaints.admit()
    }

    /// Records an event the way the durability mode asks: in strict mode returns once it is on
    /// disk, in batched mode once it is queued; otherwise hands it back with the reason.
    pub async fn commit(&self, event: Event) -> Result<(), Unrecorded> {
        if self.durability == Durability::Batched {
            return self.send(event, None);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(event, Some(tx))?;
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(event))) => Err(Unrecorded {
                reason: Refused::Failing,
                event: Some(event),
            }),
            Ok(Err(_)) => Err(Unrecorded {
                reason: Refused::Closed,
                event: None,
            }),
            Err(_) => Err(Unrecorded {
                reason: Refused::Failing,
                event: None,
            }),
        }
    }

    /// Waits until everything queued so far is written, synced and signed by a checkpoint.
    pub fn flush(&self) -> Result<(), Refused> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let guard = self.tx.lock().map_err(|_| Refused::Closed)?;
            let sender = guard.as_ref().ok_or(Refused::Closed)?;
            sender
                .send(Message::Flush(tx))
                .map_err(|_| Refused::Closed)?;
        }
        rx.recv().map_err(|_| Refused::Closed)
    }

    /// Stops the writer after it has written, synced and signed everything queued.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the audit writer thread panicked");
        }
        // Let the exporter send what the writer handed it last (the final checkpoint: the head
        // kept downstream), for at most one export timeout.
        let done = self.export_done.lock().ok().and_then(|mut d| d.take());
        if let (Some(exporter), Some(done)) = (&self.exporter, done) {
            exporter.close();
            if done.recv_timeout(self.export_timeout).is_err() {
                tracing::warn!("OTLP export of the last audit records did not finish");
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// One log file, as found in the directory.
#[derive(Debug, Clone)]
pub struct LogFile {
    /// Its path.
    pub path: PathBuf,
    /// The `seq` of its first line (from the name).
    pub first_seq: u64,
}

/// The log files in `dir`, oldest first (by the first `seq` in their names).
pub fn log_files(dir: &Path) -> std::io::Result<Vec<LogFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = parse_file_name(name) {
            files.push(LogFile {
                path: entry.path(),
                first_seq,
            });
        }
    }
    files.sort_by_key(|f| f.first_seq);
    Ok(files)
}

/// `audit-<seq, 16 digits>-<time>.jsonl` → seq.
fn parse_file_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (seq, _time) = rest.split_once('-')?;
    if seq.len() != 16 {
        return None;
    }
    seq.parse().ok()
}

fn file_name(first_seq: u64, time: jiff::Timestamp) -> String {
    format!(
        "audit-{first_seq:016}-{}.jsonl",
        time.strftime("%Y%m%dT%H%M%SZ")
    )
}

/// The path of a log file's index.
pub fn index_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".idx");
    PathBuf::from(name)
}

/// One index line: a block of consecutive records of one file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexBlock {
    /// Byte offset of the block's first line.
    pub offset: u64,
    /// Byte length of the block (whole lines).
    pub len: u64,
    /// `seq` of the first and last line.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Earliest and latest record time, ms since the epoch.
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// Users, decisions (and event kinds), routes, client addresses and containers of the
    /// block's records, each value tagged with its facet (see [`facet`]).
    pub facets: Bloom,
}

/// A Bloom filter of 8192 bits and 4 probes: over one block's distinct facet values (a few
/// hundred at most) it answers "maybe" for an absent value about once in a thousand times,
/// and never "no" for a present one. Written as base64 in the index.
#[derive(Clone, PartialEq, Eq)]
pub struct Bloom(Box<[u64; BLOOM_WORDS]>);

const BLOOM_WORDS: usize = 128;
const BLOOM_BITS: u64 = BLOOM_WORDS as u64 * 64;

impl Default for Bloom {
    fn default() -> Self {
        Bloom(Box::new([0; BLOOM_WORDS]))
    }
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "Bloom({set} bits set)")
    }
}

impl Bloom {
    fn probes(facet: u8, value: &str) -> impl Iterator<Item = u64> {
        // FNV-1a 64 over the tagged value, split for double hashing; stable across versions,
        // since the index outlives the binary that wrote it.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in [facet, b':'].iter().chain(value.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let h1 = hash;
        let h2 = hash.rotate_left(32) | 1;
        (0..4u64).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % BLOOM_BITS)
    }

    /// Adds `value` of `facet`.
    pub fn insert(&mut self, facet: u8, value: &str) {
        for bit in Self::probes(facet, value) {
            if let Some(word) = self.0.get_mut((bit / 64) as usize) {
                *word |= 1 << (bit % 64);
            }
        }
    }

    /// False only when `value` of `facet` is certainly absent.
    pub fn may_contain(&self, facet: u8, value: &str) -> bool {
        Self::probes(facet, value).all(|bit| {
            self.0
                .get((bit / 64) as usize)
                .is_some_and(|w| w & (1 << (bit % 64)) != 0)
        })
    }
}

impl Serialize for Bloom {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        serializer.serialize_str(&STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Bloom {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() != BLOOM_WORDS * 8 {
            return Err(serde::de::Error::custom("bloom filter of the wrong size"));
        }
        let mut words = Box::new([0u64; BLOOM_WORDS]);
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            *word = u64::from_le_bytes(le);
        }
        Ok(Bloom(words))
    }
}

/// Facet tags in the index's Bloom filter.
pub mod facet {
    /// The user (email, else subject).
    pub const USER: u8 = b'u';
    /// The decision or event kind.
    pub const DECISION: u8 = b'd';
    /// The route.
    pub const ROUTE: u8 = b'r';
    /// The client address.
    pub const SOURCE: u8 = b's';
    /// The container.
    pub const CONTAINER: u8 = b'c';
}

struct ActiveFile {
    file: File,
    path: PathBuf,
    len: u64,
    opened: Instant,
    block: Option<IndexBlock>,
    block_records: usize,
}

struct Writer {
    config: Audit,
    key: Ed25519KeyPair,
    chain: Chain,
    active: Option<ActiveFile>,
    /// Events not yet written because writing failed, oldest first.
    pending: VecDeque<Event>,
    /// Events dropped since the last successful write.
    lost: u64,
    /// Written but not yet synced (batched mode).
    dirty: bool,
    last_sync: Instant,
    last_checkpoint: Instant,
    since_checkpoint: u64,
    last_retention: Option<Instant>,
    shared: Arc<Shared>,
    /// The error that made the writer fail, while it does.
    failure: Option<String>,
    exporter: Option<Exporter>,
    /// `{state_dir}/audit-head.json`: the newest checkpoint, rewritten after each.
    head_path: PathBuf,
}

fn exported(event: &Event, line: &[u8]) -> Exported {
    let facets = event.facets();
    let (class_uid, success) = match event {
        Event::Http(e) => (
            4002,
            e.decision == crate::audit::Decision::Allow && e.status < 400,
        ),
        Event::Auth(e) => (3002, e.success),
        Event::Lifecycle(e) => (6002, e.success),
        Event::Network(_) | Event::Bypass(_) => (4001, false),
        Event::Tunnel(_) => (4001, true),
    };
    Exported {
        line: String::from_utf8_lossy(line).into_owned(),
        time_ms: facets.time_ms,
        class_uid: Some(class_uid),
        chain: None,
        decision: facets.decision.map(str::to_owned),
        user: facets.user.map(str::to_owned),
        route: facets.route.map(str::to_owned),
        success,
    }
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Message>) {
        self.retention();
        let mut busy = false;
        loop {
            // While records keep coming (batched mode), let them gather for a moment instead of
            // blocking on the channel: a sender only pays for a futex wake-up when the writer is
            // parked in `recv`, so this turns one wake-up per request into one per few hundred.
            // Strict mode never lingers: a response waits for this batch.
            let first = if busy && self.config.durability == Durability::Batched {
                std::thread::sleep(LINGER.min(self.config.batch_window));
                match rx.try_recv() {
                    Ok(message) => Some(message),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv_timeout(self.next_wake()) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            busy = first.is_some();
            let mut events = Vec::new();
            let mut flushes = Vec::new();
            let mut next = first;
            while let Some(message) = next {
                match message {
                    Message::Event(event, waiter) => events.push((event, waiter)),
                    Message::Flush(done) => flushes.push(done),
                }
                next = if events.len() < BATCH_LIMIT {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.shared
                .metrics
                .queued
                .fetch_sub(events.len() as u64, Ordering::Relaxed);
            self.write_batch(events);
            self.housekeeping(!flushes.is_empty());
            for done in flushes {
                let _ = done.send(());
            }
        }
        // The channel closed: write what is left, sign it, sync.
        self.write_batch(Vec::new());
        self.housekeeping(true);
    }

    fn next_wake(&self) -> Duration {
        let mut wake = Duration::from_secs(1);
        if self.failure.is_some() {
            wake = wake.min(RETRY_INTERVAL);
        }
        if self.dirty {
            wake = wake.min(
                self.config
                    .batch_window
                    .saturating_sub(self.last_sync.elapsed()),
            );
        }
        let due = if self.since_checkpoint > 0 {
            Some(self.config.checkpoint_interval)
        } else {
            self.heartbeat_due().then(|| self.heartbeat())
        };
        if let Some(due) = due {
            wake = wake.min(due.saturating_sub(self.last_checkpoint.elapsed()));
        }
        wake.max(Duration::from_millis(1))
    }

    /// Writes pending events and `events` as one group; strict waiters learn the outcome.
    fn write_batch(&mut self, events: Vec<(Event, Option<Waiter>)>) {
        if events.is_empty() && self.pending.is_empty() {
            return;
        }
        if self.rotation_due()
            && let Err(e) = self.rotate()
        {
            self.fail(&e);
        }
        let mut batch: Vec<(Event, Option<Waiter>)> =
            self.pending.drain(..).map(|e| (e, None)).collect();
        if self.lost > 0 {
            let lost = std::mem::take(&mut self.lost);
            batch.push((
                Event::lifecycle(
                    Lifecycle::AuditLog,
                    false,
                    format!("{lost} audit records were lost while the log could not be written"),
                ),
                None,
            ));
        }
        batch.extend(events);

        if self.active.is_none()
            && let Err(e) = self.open_new_file()
        {
            self.fail(&e);
            self.refuse(batch);
            return;
        }
        let snapshot = self.chain.clone();
        let mut buf = Vec::with_capacity(batch.len() * 1024);
        let mut object = Vec::with_capacity(2048);
        let mut ends = Vec::with_capacity(batch.len());
        for (event, _) in &batch {
            object.clear();
            let chained = event
                .write_json(&mut object)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    self.chain
                        .append_object(&object, &mut buf)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = chained {
                // Unreachable for the records sekisho builds; never silently.
                tracing::error!(error = %e, "audit record could not be serialised");
            }
            ends.push(buf.len());
        }
        let sync = self.config.durability == Durability::Strict;
        match self.append(&buf, sync) {
            Ok(start) => {
                self.recovered();
                let first_seq = snapshot.next_seq();
                let mut line_start = 0;
                for (i, (event, waiter)) in batch.into_iter().enumerate() {
                    let end = ends.get(i).copied().unwrap_or(line_start);
                    self.index(
                        &event,
                        first_seq + i as u64,
                        start + line_start as u64,
                        end - line_start,
                    );
                    if let Some(exporter) = &self.exporter {
                        // Without the newline.
                        let line = buf
                            .get(line_start..end.saturating_sub(1))
                            .unwrap_or_default();
                        exporter.offer(exported(&event, line));
                    }
                    line_start = end;
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Ok(()));
                    }
                }
                self.since_checkpoint += ends.len() as u64;
                self.dirty |= !sync;
                self.shared
                    .metrics
                    .records_written
                    .fetch_add(ends.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.chain = snapshot;
                self.fail(&e);
                self.refuse(batch);
            }
        }
    }

    /// A batch that could not be written: strict waiters get their event back (the request
    /// records what really happened), the rest wait for the next attempt.
    fn refuse(&mut self, batch: Vec<(Event, Option<Waiter>)>) {
        for (event, waiter) in batch {
            match waiter {
                Some(waiter) => {
                    if let Err(Err(event)) = waiter.send(Err(event)) {
                        // The request stopped waiting (timeout): keep the record.
                        self.keep_pending(event);
                    }
                }
                None => self.keep_pending(event),
            }
        }
    }

    fn keep_pending(&mut self, event: Event) {
        if self.pending.len() >= self.config.queue {
            self.pending.pop_front();
            self.lost += 1;
            self.shared
                .metrics
                .records_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        self.pending.push_back(event);
    }

    /// Appends `bytes` to the active file (opening one if needed), optionally synced; on any
    /// failure cuts the file back. Returns the offset the bytes start at.
    fn append(&mut self, bytes: &[u8], sync: bool) -> Result<u64, String> {
        if self.active.is_none() {
            self.open_new_file()?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err("no audit file".into());
        };
        let start = active.len;
        let written = active.file.write_all(bytes).and_then(|()| {
            if sync {
                active.file.sync_data()
            } else {
                Ok(())
            }
        });
        if sync && written.is_ok() {
            self.shared.metrics.syncs.fetch_add(1, Ordering::Relaxed);
            self.last_sync = Instant::now();
        }
        match written {
            Ok(()) => {
                active.len += bytes.len() as u64;
                Ok(start)
            }
            Err(e) => {
                // Leave no partial line behind: the chain is rolled back too.
                let cut = active.file.set_len(start);
                if let Err(cut) = cut {
                    tracing::error!(error = %cut, path = %active.path.display(), "could not cut the audit file back after a failed write");
                }
                Err(format!("{}: {e}", active.path.display()))
            }
        }
    }

    fn fail(&mut self, error: &str) {
        self.shared
            .metrics
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        if self.failure.is_none() {
            tracing::error!(error, "audit log cannot be written");
        }
        self.failure = Some(error.to_owned());
        if let Ok(mut last) = self.shared.last_error.lock() {
            *last = Some(error.to_owned());
        }
        self.shared.failing.store(true, Ordering::Relaxed);
    }

    fn recovered(&mut self) {
        if let Some(error) = self.failure.take() {
            tracing::warn!(previous_error = %error, "audit log is being written again");
            self.shared.failing.store(false, Ordering::Relaxed);
        }
    }

    fn index(&mut self, event: &Event, seq: u64, offset: u64, len: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let facets = event.facets();
        let block = active.block.get_or_insert_with(|| IndexBlock {
            offset,
            first_seq: seq,
            from_ms: facets.time_ms,
            to_ms: facets.time_ms,
            ..IndexBlock::default()
        });
        block.len = offset + len as u64 - block.offset;
        block.last_seq = seq;
        block.from_ms = block.from_ms.min(facets.time_ms);
        block.to_ms = block.to_ms.max(facets.time_ms);
        let bloom = &mut block.facets;
        for (tag, value) in [
            (facet::USER, facets.user),
            (facet::ROUTE, facets.route),
            (facet::DECISION, facets.decision),
            (facet::CONTAINER, facets.container),
        ] {
            if let Some(value) = value {
                bloom.insert(tag, value);
            }
        }
        if let Some(source) = facets.source {
            use std::fmt::Write as _;
            let mut text = String::with_capacity(46);
            let _ = write!(text, "{source}");
            bloom.insert(facet::SOURCE, &text);
        }
        active.block_records += 1;
        if active.block_records >= BLOCK_RECORDS {
            self.flush_index();
        }
    }

    fn flush_index(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        active.block_records = 0;
        let Some(block) = active.block.take() else {
            return;
        };
        let path = index_path(&active.path);
        let line = serde_json::to_string(&block).map(|mut l| {
            l.push('\n');
            l
        });
        let written = line.map_err(std::io::Error::other).and_then(|line| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?
                .write_all(line.as_bytes())
        });
        if let Err(e) = written {
            // The index is a cache: queries scan what it does not cover.
            tracing::warn!(error = %e, path = %path.display(), "audit index not written");
        }
    }

    /// Syncs when due, writes a checkpoint when due (or `now`), rotates by age, applies
    /// retention.
    fn housekeeping(&mut self, now: bool) {
        if self.failure.is_some() && !self.pending.is_empty() {
            return;
        }
        let since = self.last_checkpoint.elapsed();
        let checkpoint_due = (self.since_checkpoint > 0
            && (now || since >= self.config.checkpoint_interval))
            || (self.heartbeat_due() && since >= self.heartbeat());
        if checkpoint_due {
            self.checkpoint();
        } else if self.dirty && (now || self.last_sync.elapsed() >= self.config.batch_window) {
            self.sync();
        }
        if self.active.is_some()
            && self.rotation_due()
            && let Err(e) = self.rotate()
        {
            self.fail(&e);
        }
        if self
            .last_retention
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(3600))
        {
            self.retention();
        }
    }

    fn sync(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        match active.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
                self.shared.metrics.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let error = format!("{}: sync: {e}", active.path.display());
                self.fail(&error);
            }
        }
    }

    /// Whether an idle log gets heartbeats now: it has lines (an empty log has nothing to
    /// vouch for) and the writer is not failing (its retries wait for new records).
    fn heartbeat_due(&self) -> bool {
        self.chain.next_seq() > 0 && self.failure.is_none()
    }

    /// How long an idle log waits for a heartbeat checkpoint.
    fn heartbeat(&self) -> Duration {
        self.config
            .checkpoint_interval
            .saturating_mul(self.config.heartbeat_multiple)
    }

    /// Writes and syncs the record by which `previous` (the key that signed the chain so far)
    /// introduces the configured key. The checkpoint that follows is the new key's first.
    fn introduce_key(&mut self, previous: &Ed25519KeyPair) -> Result<(), String> {
        let snapshot = self.chain.clone();
        let now = jiff::Timestamp::now();
        let line = self
            .chain
            .introduce_key(previous, self.key.public_key().as_ref(), &now.to_string())
            .map_err(|e| e.to_string())?;
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if let Err(e) = self.append(&bytes, true) {
            self.chain = snapshot;
            return Err(e);
        }
        tracing::warn!(
            previous = %super::chain::key_id(previous.public_key().as_ref()),
            new = %super::chain::key_id(self.key.public_key().as_ref()),
            "a new audit checkpoint key was introduced into the chain"
        );
        self.export_chain_line(&bytes, now, "key");
        Ok(())
    }

    /// Hands a checkpoint or key-introduction line (with its newline) to the OTLP exporter.
    fn export_chain_line(&self, bytes: &[u8], time: jiff::Timestamp, kind: &'static str) {
        if let Some(exporter) = &self.exporter {
            let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            exporter.offer(Exported {
                line: String::from_utf8_lossy(line).into_owned(),
                time_ms: time.as_millisecond(),
                class_uid: None,
                chain: Some(kind),
                decision: None,
                user: None,
                route: None,
                success: true,
            });
        }
    }

    /// Writes and syncs a signed checkpoint vouching for every line so far, then keeps it as
    /// the head (outside the audit directory) and hands it to the exporter.
    fn checkpoint(&mut self) {
        let snapshot = self.chain.clone();
        let now = jiff::Timestamp::now();
        let time = now.to_string();
        let line = match self.chain.checkpoint(&self.key, &time) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "audit checkpoint could not be built");
                return;
            }
        };
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        match self.append(&bytes, true) {
            Ok(_) => {
                self.recovered();
                self.dirty = false;
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
                self.shared
                    .metrics
                    .checkpoints
                    .fetch_add(1, Ordering::Relaxed);
                self.flush_index();
                if let Err(e) = write_head(&self.head_path, &bytes) {
                    tracing::error!(error = %e, path = %self.head_path.display(), "audit head not written");
                }
                self.export_chain_line(&bytes, now, "checkpoint");
            }
            Err(e) => {
                self.chain = snapshot;
                self.fail(&e);
            }
        }
    }

    fn rotation_due(&self) -> bool {
        self.active.as_ref().is_some_and(|a| {
            a.len > 0
                && (a.len >= self.config.rotate_size
                    || a.opened.elapsed() >= self.config.rotate_interval)
        })
    }

    /// Closes the active file with a checkpoint; the next write opens a new one.
    fn rotate(&mut self) -> Result<(), String> {
        self.checkpoint();
        if let Some(error) = &self.failure {
            return Err(error.clone());
        }
        self.active = None;
        self.retention();
        Ok(())
    }

    fn open_new_file(&mut self) -> Result<(), String> {
        let name = file_name(self.chain.next_seq(), jiff::Timestamp::now());
        let path = self.config.dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        sync_dir(&self.config.dir).map_err(|e| format!("{}: {e}", self.config.dir.display()))?;
        self.active = Some(ActiveFile {
            file,
            path,
            len: 0,
            opened: Instant::now(),
            block: None,
            block_records: 0,
        });
        Ok(())
    }

    /// Removes rotated files older than the retention period, and records that it did.
    fn retention(&mut self) {
        self.last_retention = Some(Instant::now());
        let Ok(files) = log_files(&self.config.dir) else {
            return;
        };
        let active = self.active.as_ref().map(|a| a.path.clone());
        let mut removed = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let Some(next) = files.get(i + 1) else { break };
            if Some(&file.path) == active.as_ref() {
                continue;
            }
            let old = std::fs::metadata(&file.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > self.config.retention);
            if !old {
                break;
            }
            match std::fs::remove_file(&file.path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(index_path(&file.path));
                    removed.push(format!(
                        "{} (seq {}..{})",
                        file.path.file_name().unwrap_or_default().to_string_lossy(),
                        file.first_seq,
                        next.first_seq.saturating_sub(1)
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %file.path.display(), "retention could not remove an audit file");
                    break;
                }
            }
        }
        if !removed.is_empty() {
            self.pending.push_back(Event::lifecycle(
                Lifecycle::AuditLog,
                true,
                format!("retention removed {}", removed.join(", ")),
            ));
        }
    }
}

/// `{state_dir}/audit-head.json`.
pub fn head_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit-head.json")
}

/// Replaces the head file with `line`: temporary file (0600), fsync, rename, fsync of the
/// directory.
fn write_head(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(line)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// At start: the head (if any) must be signed by a key of this log, and the log must reach
/// it with the very same checkpoint line.
fn check_head(
    path: &Path,
    keys: &[Vec<u8>],
    dir: &Path,
    chain: &Chain,
) -> Result<Option<Head>, OpenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let head_error = |error| OpenError::Head {
        path: path.to_owned(),
        error,
    };
    let head = Head::parse(&text).map_err(head_error)?;
    if head.signer(keys).is_none() {
        return Err(head_error(HeadError::Signature));
    }
    if chain.next_seq() <= head.seq {
        return Err(OpenError::Truncated {
            path: path.to_owned(),
            missing: Missing {
                log_ends: chain.next_seq().checked_sub(1),
                head_seq: head.seq,
                head_time: head.time.clone(),
            },
        });
    }
    match find_line(dir, head.seq).map_err(io_error(dir))? {
        Some(line) if line != head.line() => Err(OpenError::Rewritten {
            path: path.to_owned(),
            seq: head.seq,
        }),
        // Equal, or in a file retention removed.
        _ => Ok(Some(head)),
    }
}

/// The line with `seq` (read from the file whose range holds it).
fn find_line(dir: &Path, seq: u64) -> std::io::Result<Option<String>> {
    use std::io::BufRead as _;
    let files = log_files(dir)?;
    let Some(file) = files.iter().rev().find(|f| f.first_seq <= seq) else {
        return Ok(None);
    };
    // Records start with `{"seq":N,`; checkpoints are serialised maps (keys in any order).
    let needle = format!("\"seq\":{seq}");
    for line in std::io::BufReader::new(File::open(&file.path)?).lines() {
        let line = line?;
        if !line.contains(&needle) {
            continue;
        }
        let found = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
        if found == Some(seq) {
            return Ok(Some(line));
        }
    }
    Ok(None)
}

/// The id of the key that signs the chain after the last signed line of `path` (a
/// checkpoint's `key_id`, or the key a key-introduction record names).
fn last_signer(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::BufRead as _;
    let mut signer = None;
    for line in std::io::BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if !line.contains("\"type\":\"checkpoint\"") && !line.contains("\"type\":\"key\"") {
            continue;
        }
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str(&line) else {
            continue;
        };
        let text = |name: &str| object.get(name).and_then(serde_json::Value::as_str);
        signer = match text("type") {
            Some("checkpoint") => text("key_id").map(str::to_owned),
            Some("key") => text("new_key")
                .and_then(crate::hex::decode)
                .map(|k| super::chain::key_id(&k)),
            _ => signer,
        };
    }
    Ok(signer)
}

/// Opens the newest file to continue its chain. A last line without its newline (a write cut
/// by power loss) is cut off: no reader was ever told it existed.
fn resume(path: &Path) -> Result<(Chain, Option<ActiveFile>), OpenError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))?;
    let len = file.metadata().map_err(io_error(path))?.len();
    let tail_len = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - tail_len))
        .map_err(io_error(path))?;
    let mut tail = Vec::with_capacity(usize::try_from(tail_len).unwrap_or(0));
    file.read_to_end(&mut tail).map_err(io_error(path))?;
    let complete = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if len > tail_len => return Err(OpenError::Resume(path.to_owned())),
        None => 0,
    };
    let kept = len - tail_len + complete as u64;
    if kept < len {
        tracing::warn!(path = %path.display(), bytes = len - kept, "cutting an incomplete last line off the audit log");
        file.set_len(kept).map_err(io_error(path))?;
    }
    let lines = tail.get(..complete).unwrap_or_default();
    let last = lines
        .strip_suffix(b"\n")
        .and_then(|l| l.rsplit(|&b| b == b'\n').next())
        .filter(|l| !l.is_empty());
    let chain = match last {
        Some(line) => std::str::from_utf8(line)
            .ok()
            .and_then(Chain::resume_after)
            .ok_or_else(|| OpenError::Resume(path.to_owned()))?,
        None => return Ok((Chain::default(), None)),
    };
    let active = ActiveFile {
        file,
        path: path.to_owned(),
        len: kept,
        opened: Instant::now(),
        block: None,
        block_records: 0,
    };
    Ok((chain, Some(active)))
}

fn create_private_dir(dir: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn load_or_create_key(config: &Audit, state_dir: &Path) -> Result<Ed25519KeyPair, OpenError> {
    let pem = match &config.signing_key {
        Some(pem) => pem.expose().to_owned(),
        None => {
            let path = state_dir.join("audit-signing.pem");
            match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    create_private_dir(state_dir)?;
                    let pem = generate_key_pem().map_err(OpenError::Key)?;
                    let mut file = OpenOptions::new()
                        .create_new(true)
                        .write(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    file.write_all(pem.as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(io_error(&path))?;
                    tracing::info!(path = %path.display(), "created the audit checkpoint key");
                    pem
                }
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
    };
    key_from_pem(&pem)
}

/// A new Ed25519 key as PKCS#8 PEM (what `sekisho gen-audit-key` prints).
pub fn generate_key_pem() -> Result<String, String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
    let body = STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// Parses an Ed25519 PKCS#8 PEM (v1 as openssl writes it, or v2 as ring does).
pub fn key_from_pem(pem: &str) -> Result<Ed25519KeyPair, OpenError> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|e| OpenError::Key(format!("PEM body is not base64: {e}")))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| OpenError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))
}

/// The public keys of a key file: one hex Ed25519 key per line; blank lines ignored, any other
/// line skipped (`sekisho audit verify` reports malformed lines itself).
pub fn parse_public_keys(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.len() == 64)
        .filter_map(crate::hex::decode)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;

/// Admits one event per second and counts the ones it turned away meanwhile.
#[derive(Debug, Default)]
struct OncePerSecond {
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl OncePerSecond {
    /// `Some(events turned away since the last admitted one)`, at most once per second.
    fn admit(&self) -> Option<u64> {
        self.admit_at(crate::session::unix_now())
    }

    /// [`Self::admit`] at `now` (Unix seconds).
    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if now > last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod complaint_tests {
    use super::OncePerSecond;

    #[test]
    fn complaints_are_admitted_once_per_second_and_the_rest_counted() {
        let limiter = OncePerSecond::default();
        assert_eq!(limiter.admit_at(1000), Some(0));
        assert_eq!(limiter.admit_at(1000), None);
        assert_eq!(limiter.admit_at(1000), None);
        assert_eq!(limiter.admit_at(1001), Some(2));
        assert_eq!(limiter.admit_at(1001), None);
        assert_eq!(
            limiter.admit_at(999),
            None,
            "a clock stepping back admits nothing"
        );
        assert_eq!(limiter.admit_at(1005), Some(2));
    }
}
