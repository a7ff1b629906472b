//! The hash chain of the audit log. Every line is one JSON object carrying `seq` (consecutive
//! from 0) and `prev_hash` (hex SHA-256 of the previous line's exact bytes; 64 zeros before the
//! first). Periodic checkpoint lines (`"type":"checkpoint"`) carry an Ed25519 signature over
//! `sekisho-audit-checkpoint\n{seq}\n{prev_hash}\n{time}`, and so vouch for every line before
//! them; a key-introduction line (`"type":"key"`) signed by the current key hands over to a new
//! one. [`verify`] walks lines (across rotated files, in order) and reports the first line where
//! the chain or a signature breaks, how many lines follow the last checkpoint unsigned, and,
//! given the newest signed [`Head`] kept elsewhere, which records a log cut back is missing.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::{Map, Value};

/// `prev_hash` of the very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why the chain state could not produce a line.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The record is not a JSON object, or uses a field the chain reserves.
    #[error("audit record must be a JSON object without `seq`, `prev_hash` or `signature`")]
    Record,
    /// Serialising failed.
    #[error("audit record could not be serialised: {0}")]
    Serialise(#[source] serde_json::Error),
}

/// The running end of a chain: the next sequence number and the hash of the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    next_seq: u64,
    prev_hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            next_seq: 0,
            prev_hash: GENESIS.to_owned(),
        }
    }
}

impl Chain {
    /// Resumes a chain after the line `last` (e.g. the last line of the newest file at startup).
    pub fn resume_after(last: &str) -> Option<Chain> {
        let value: Value = serde_json::from_str(last).ok()?;
        let seq = value.get("seq")?.as_u64()?;
        Some(Chain {
            next_seq: seq.checked_add(1)?,
            prev_hash: sha256_hex(last.as_bytes()),
        })
    }

    /// Chains `record` (a JSON object) and returns its line, without the newline.
    pub fn append(&mut self, record: Map<String, Value>) -> Result<String, ChainError> {
        if ["seq", "prev_hash", "signature"]
            .iter()
            .any(|k| record.contains_key(*k))
        {
            return Err(ChainError::Record);
        }
        let mut line = Map::new();
        line.insert("seq".into(), Value::from(self.next_seq));
        line.insert("prev_hash".into(), Value::from(self.prev_hash.clone()));
        line.extend(record);
        self.commit(line)
    }

    /// Chains `object`, one serialised JSON object written by sekisho (so without `seq`,
    /// `prev_hash` or `signature` keys), and appends its line and a newline to `out`. This is the
    /// writer's path: no JSON tree is built.
    pub fn append_object(&mut self, object: &[u8], out: &mut Vec<u8>) -> Result<(), ChainError> {
        let rest = match object {
            [b'{', b'}'] => &b"}"[..],
            [b'{', rest @ ..] if rest.last() == Some(&b'}') => rest,
            _ => return Err(ChainError::Record),
        };
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(self.next_seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev_hash\":\"");
        out.extend_from_slice(self.prev_hash.as_bytes());
        out.extend_from_slice(if rest == b"}" { b"\"" } else { b"\"," });
        out.extend_from_slice(rest);
        let line = out.get(start..).unwrap_or_default();
        self.prev_hash = sha256_hex(line);
        self.next_seq += 1;
        out.push(b'\n');
        Ok(())
    }

    /// The sequence number the next line will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A checkpoint line signed by `key`, vouching for every line so far.
    pub fn checkpoint(&mut self, key: &Ed25519KeyPair, time: &str) -> Result<String, ChainError> {
        let signature =
            key.sign(checkpoint_message(self.next_seq, &self.prev_hash, time).as_bytes());
        let mut line = Map::new();
        line.insert("seq".into(), Value::from(self.next_seq));
        line.insert("prev_hash".into(), Value::from(self.prev_hash.clone()));
        line.insert("type".into(), Value::from("checkpoint"));
        line.insert("time".into(), Value::from(time));
        line.insert(
            "key_id".into(),
            Value::from(key_id(key.public_key().as_ref())),
        );
        line.insert(
            "signature".into(),
            Value::from(crate::hex::encode(signature.as_ref())),
        );
        self.commit(line)
    }

    /// A key-introduction line: `previous` (the key that signed the chain so far) hands over
    /// to `new_public`, which signs the checkpoints from here on.
    pub fn introduce_key(
        &mut self,
        previous: &Ed25519KeyPair,
        new_public: &[u8],
        time: &str,
    ) -> Result<String, ChainError> {
        let new_key = crate::hex::encode(new_public);
        let signature =
            previous.sign(key_message(self.next_seq, &self.prev_hash, time, &new_key).as_bytes());
        let mut line = Map::new();
        line.insert("seq".into(), Value::from(self.next_seq));
        line.insert("prev_hash".into(), Value::from(self.prev_hash.clone()));
        line.insert("type".into(), Value::from("key"));
        line.insert("time".into(), Value::from(time));
        line.insert(
            "key_id".into(),
            Value::from(key_id(previous.public_key().as_ref())),
        );
        line.insert("new_key".into(), Value::from(new_key));
        line.insert(
            "signature".into(),
            Value::from(crate::hex::encode(signature.as_ref())),
        );
        self.commit(line)
    }

    fn commit(&mut self, line: Map<String, Value>) -> Result<String, ChainError> {
        let text = serde_json::to_string(&Value::Object(line)).map_err(ChainError::Serialise)?;
        self.prev_hash = sha256_hex(text.as_bytes());
        self.next_seq += 1;
        Ok(text)
    }
}

/// A signed line the verifier accepted: its `seq` and `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Its `seq`.
    pub seq: u64,
    /// Its `time` (RFC 3339, as written).
    pub time: String,
}

/// The log ends before the signed head: lines were cut off (or never reached this copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The `seq` of the log's last line (none: no line at all).
    pub log_ends: Option<u64>,
    /// The head's `seq`.
    pub head_seq: u64,
    /// The head's `time`.
    pub head_time: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.head_seq;
        match self.log_ends {
            Some(end) => {
                let from = end.saturating_add(1);
                write!(
                    f,
                    "log ends at seq {end}; the signed head says {head}: records {from}–{head} are missing"
                )
            }
            None => write!(
                f,
                "the log has no lines; the signed head says {head}: records up to {head} are missing"
            ),
        }?;
        write!(f, " (head signed at {})", self.head_time)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Lines read.
    pub lines: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// The first break: (1-based line number over all input, what is wrong).
    pub first_break: Option<(u64, String)>,
    /// Lines after the last valid checkpoint (not vouched for by a signature).
    pub unsigned_tail: u64,
    /// `seq` of the first line read (not 0 for a slice that starts mid-chain).
    pub first_seq: Option<u64>,
    /// `seq` of the last line accepted.
    pub last_seq: Option<u64>,
    /// The last checkpoint that verified.
    pub last_checkpoint: Option<Signed>,
    /// Keys introduced in the chain by a record signed with the key before them.
    pub keys_introduced: u64,
    /// The signed head given to the verifier, when one was.
    pub head: Option<Signed>,
    /// The log ends before that head.
    pub missing: Option<Missing>,
}

impl Verification {
    /// True when the chain is intact, fully signed, and reaches the signed head (if any).
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none() && self.unsigned_tail == 0 && self.missing.is_none()
    }
}

/// Why a head could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The text is not a checkpoint line.
    #[error("not a checkpoint line: {0}")]
    Malformed(&'static str),
    /// No listed key made its signature.
    #[error("its signature does not verify with any of the public keys")]
    Signature,
}

/// The newest signed checkpoint, kept apart from the log (`{state_dir}/audit-head.json`, or a
/// copy from the OTLP pipeline): a log that ends before it was cut back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The checkpoint's `seq`.
    pub seq: u64,
    /// The checkpoint's `prev_hash`.
    pub prev_hash: String,
    /// The checkpoint's `time`.
    pub time: String,
    /// The checkpoint's `key_id`.
    pub key_id: String,
    signature: Vec<u8>,
    /// SHA-256 (hex) of the checkpoint line.
    hash: String,
    line: String,
}

impl Head {
    /// The checkpoint line in `text` (its last non-empty line: a head file holds one line, a
    /// file of exported checkpoints several, newest last).
    pub fn parse(text: &str) -> Result<Head, HeadError> {
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .ok_or(HeadError::Malformed("empty"))?;
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            return Err(HeadError::Malformed("not a JSON object"));
        };
        if object.get("type").and_then(Value::as_str) != Some("checkpoint") {
            return Err(HeadError::Malformed("`type` is not \"checkpoint\""));
        }
        let text = |name: &'static str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(HeadError::Malformed(name))
        };
        Ok(Head {
            seq: object
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or(HeadError::Malformed("seq"))?,
            prev_hash: text("prev_hash")?,
            time: text("time")?,
            key_id: text("key_id")?,
            signature: crate::hex::decode(&text("signature")?)
                .ok_or(HeadError::Malformed("signature"))?,
            hash: sha256_hex(line.as_bytes()),
            line: line.to_owned(),
        })
    }

    /// The checkpoint line, as written.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The key among `keys` that signed this head.
    pub fn signer<'k>(&self, keys: &'k [Vec<u8>]) -> Option<&'k [u8]> {
        let message = checkpoint_message(self.seq, &self.prev_hash, &self.time);
        keys.iter()
            .find(|key| signed_by(key, &message, &self.signature))
            .map(Vec::as_slice)
    }
}

/// Verifies lines (all files of a log, oldest first, concatenated) against the checkpoint
/// public key. `starts_at_genesis`: the first line must be `seq` 0 with the genesis hash (false
/// when verifying a later slice of a log).
pub fn verify<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    public_key: &[u8],
    starts_at_genesis: bool,
) -> Verification {
    let mut verifier = Verifier::new(public_key, starts_at_genesis);
    for line in lines {
        if !verifier.feed(line) {
            break;
        }
    }
    verifier.result()
}

/// Verification line by line, for a log that keeps growing (the review page verifies only
/// what was added since it last looked).
///
/// Keys: the first signed line pins its key (it must be one of the listed keys); from then on
/// checkpoints must be signed by that key, until a key-introduction record (`"type":"key"`,
/// signed by the current key) hands over to the key it names. A listed key that the chain
/// never introduced is refused.
#[derive(Debug, Clone)]
pub struct Verifier {
    listed: Vec<Vec<u8>>,
    signer: Option<Vec<u8>>,
    expected: Option<(u64, String)>,
    head: Option<Head>,
    /// SHA-256 of the last verified checkpoint line (to compare with a head given later).
    last_checkpoint_hash: Option<String>,
    result: Verification,
}

impl Verifier {
    /// A verifier for `public_key`; see [`verify`] for `starts_at_genesis`.
    pub fn new(public_key: &[u8], starts_at_genesis: bool) -> Self {
        Self::with_keys(vec![public_key.to_vec()], starts_at_genesis)
    }

    /// A verifier that knows `public_keys` (e.g. `audit-signing.pub`): the chain's first key
    /// must be one of them; later keys must also be introduced in the chain.
    pub fn with_keys(public_keys: Vec<Vec<u8>>, starts_at_genesis: bool) -> Self {
        Verifier {
            listed: public_keys,
            signer: None,
            expected: starts_at_genesis.then(|| (0, GENESIS.to_owned())),
            head: None,
            last_checkpoint_hash: None,
            result: Verification {
                lines: 0,
                checkpoints: 0,
                first_break: None,
                unsigned_tail: 0,
                first_seq: None,
                last_seq: None,
                last_checkpoint: None,
                keys_introduced: 0,
                head: None,
                missing: None,
            },
        }
    }

    /// The newest signed head (e.g. `audit-head.json`): the log must reach it, and its line
    /// there must be this checkpoint. Refused unless a listed key signed it. May be called
    /// again with a newer head as the log grows.
    pub fn set_head(&mut self, head: Head) -> Result<(), HeadError> {
        if head.signer(&self.listed).is_none() {
            return Err(HeadError::Signature);
        }
        let already = self.result.last_checkpoint.as_ref().map(|c| c.seq);
        if already == Some(head.seq)
            && self.last_checkpoint_hash.as_deref() != Some(head.hash.as_str())
            && self.result.first_break.is_none()
        {
            self.result.first_break = Some((self.result.lines, rewritten(head.seq)));
        }
        self.result.head = Some(Signed {
            seq: head.seq,
            time: head.time.clone(),
        });
        self.head = Some(head);
        Ok(())
    }

    /// What was found so far (with the head: whether the log reaches it).
    pub fn result(&self) -> Verification {
        let mut result = self.result.clone();
        if let Some(head) = &self.head
            && result.first_break.is_none()
            && result.last_seq.is_none_or(|end| end < head.seq)
        {
            result.missing = Some(Missing {
                log_ends: result.last_seq,
                head_seq: head.seq,
                head_time: head.time.clone(),
            });
        }
        result
    }

    /// The next line; false once the chain is broken (later lines are not looked at).
    pub fn feed(&mut self, line: &str) -> bool {
        if self.result.first_break.is_some() {
            return false;
        }
        self.result.lines += 1;
        match self.check(line) {
            Ok(()) => true,
            Err(why) => {
                self.result.first_break = Some((self.result.lines, why));
                false
            }
        }
    }

    fn check(&mut self, line: &str) -> Result<(), String> {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            return Err("not a JSON object".into());
        };
        let (Some(seq), Some(prev)) = (
            object.get("seq").and_then(Value::as_u64),
            object.get("prev_hash").and_then(Value::as_str),
        ) else {
            return Err("missing seq or prev_hash".into());
        };
        if let Some((want_seq, want_prev)) = &self.expected {
            if seq != *want_seq {
                return Err(format!(
                    "seq {seq}, expected {want_seq} (a line was removed, added or moved)"
                ));
            }
            if prev != want_prev {
                return Err(format!(
                    "prev_hash does not match line {}: that line was changed, or lines were removed or moved here",
                    self.result.lines.saturating_sub(1)
                ));
            }
        }
        let Some(next) = seq.checked_add(1) else {
            return Err(format!("seq {seq} is out of range"));
        };
        let hash = sha256_hex(line.as_bytes());
        let text = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
        let signature = crate::hex::decode(text("signature")).unwrap_or_default();
        match text("type") {
            "checkpoint" => {
                let time = text("time");
                // Checkpoints written before the time was signed (sekisho before 2026-12) still
                // verify; their `time` is the only thing they do not vouch for. A checkpoint
                // signed over its time can never pass as one of them: the messages differ.
                let current = checkpoint_message(seq, prev, time);
                let legacy = legacy_checkpoint_message(seq, prev);
                let message =
                    if !self.verifies(&current, &signature) && self.verifies(&legacy, &signature) {
                        legacy
                    } else {
                        current
                    };
                self.check_signature("checkpoint", &message, &signature)?;
                if let Some(head) = &self.head
                    && head.seq == seq
                    && head.hash != hash
                {
                    return Err(rewritten(seq));
                }
                self.result.checkpoints += 1;
                self.result.unsigned_tail = 0;
                self.result.last_checkpoint = Some(Signed {
                    seq,
                    time: time.to_owned(),
                });
                self.last_checkpoint_hash = Some(hash.clone());
            }
            "key" => {
                let new_key = text("new_key");
                self.check_signature(
                    "key introduction",
                    &key_message(seq, prev, text("time"), new_key),
                    &signature,
                )?;
                let new_key = crate::hex::decode(new_key)
                    .filter(|k| k.len() == 32)
                    .ok_or_else(|| "key introduction without a valid `new_key`".to_owned())?;
                self.signer = Some(new_key);
                self.result.keys_introduced += 1;
                self.result.unsigned_tail = 0;
            }
            _ => {
                if let Some(head) = &self.head
                    && head.seq == seq
                {
                    return Err(rewritten(seq));
                }
                self.result.unsigned_tail += 1;
            }
        }
        self.result.first_seq.get_or_insert(seq);
        self.result.last_seq = Some(seq);
        self.expected = Some((next, hash));
        Ok(())
    }

    /// A signed line: by the chain's current key, or (for the first signed line) by a listed
    /// key, which is then pinned.
    /// True when `signature` over `message` verifies with the chain's key or a listed one.
    fn verifies(&self, message: &str, signature: &[u8]) -> bool {
        self.signer
            .iter()
            .chain(self.listed.iter())
            .any(|k| signed_by(k, message, signature))
    }

    fn check_signature(
        &mut self,
        what: &str,
        message: &str,
        signature: &[u8],
    ) -> Result<(), String> {
        if let Some(signer) = &self.signer {
            if signed_by(signer, message, signature) {
                return Ok(());
            }
            return Err(
                match self
                    .listed
                    .iter()
                    .find(|k| signed_by(k, message, signature))
                {
                    Some(other) => format!(
                        "{what} signed by key {}, which was not introduced: the chain is signed by key {} until a key-introduction record signed by it names another",
                        key_id(other),
                        key_id(signer)
                    ),
                    None => format!("{what} signature does not verify"),
                },
            );
        }
        match self
            .listed
            .iter()
            .find(|k| signed_by(k, message, signature))
        {
            Some(key) => {
                self.signer = Some(key.clone());
                Ok(())
            }
            None => Err(format!(
                "{what} signature does not verify with any of the public keys"
            )),
        }
    }
}

fn rewritten(seq: u64) -> String {
    format!(
        "the line at seq {seq} is not the checkpoint the signed head names: the log was rewritten after it"
    )
}

fn signed_by(key: &[u8], message: &str, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, key)
        .verify(message.as_bytes(), signature)
        .is_ok()
}

/// What a checkpoint signed before its time was signed too.
fn legacy_checkpoint_message(seq: u64, prev_hash: &str) -> String {
    format!("sekisho-audit-checkpoint\n{seq}\n{prev_hash}")
}

fn checkpoint_message(seq: u64, prev_hash: &str, time: &str) -> String {
    format!("sekisho-audit-checkpoint\n{seq}\n{prev_hash}\n{time}")
}

fn key_message(seq: u64, prev_hash: &str, time: &str, new_key_hex: &str) -> String {
    format!("sekisho-audit-key\n{seq}\n{prev_hash}\n{time}\n{new_key_hex}")
}

/// A short identifier of a checkpoint key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8]) -> String {
    let mut id = sha256_hex(public_key);
    id.truncate(16);
    id
}

/// The hash a line's successor carries as `prev_hash`: hex SHA-256 of the line's exact bytes.
pub fn line_hash(line: &str) -> String {
    sha256_hex(line.as_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn raw_objects_chain_like_maps() {
        let key = new_key();
        let mut raw = Chain::default();
        let mut out = Vec::new();
        for i in 0..3 {
            let object = serde_json::to_vec(&Value::Object(record(i))).unwrap();
            raw.append_object(&object, &mut out).unwrap();
        }
        raw.append_object(b"{}", &mut out).unwrap();
        assert!(raw.append_object(b"[1]", &mut out).is_err());
        let text = String::from_utf8(out).unwrap();
        let raw_lines: Vec<&str> = text.lines().collect();
        let first: Value = serde_json::from_str(raw_lines[0]).unwrap();
        assert_eq!(first["seq"], 0);
        assert_eq!(first["n"], 0);
        let last: Value = serde_json::from_str(raw_lines[3]).unwrap();
        assert_eq!(last["seq"], 3);
        assert_eq!(raw.next_seq(), 4);
        let mut all: Vec<String> = raw_lines.iter().map(|l| (*l).to_owned()).collect();
        all.push(raw.checkpoint(&key, "t").unwrap());
        let report = verify(
            all.iter().map(String::as_str),
            key.public_key().as_ref(),
            true,
        );
        assert!(report.is_intact(), "{report:?}");
    }

    fn new_key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn record(i: u64) -> Map<String, Value> {
        serde_json::json!({"type": "http", "decision": "allow", "n": i})
            .as_object()
            .cloned()
            .unwrap()
    }

    /// 10 records with a checkpoint after every 4, and a final checkpoint.
    fn log(key: &Ed25519KeyPair) -> Vec<String> {
        let mut chain = Chain::default();
        let mut lines = Vec::new();
        for i in 0..10 {
            lines.push(chain.append(record(i)).unwrap());
            if i % 4 == 3 {
                lines.push(chain.checkpoint(key, "2026-11-25T00:00:00Z").unwrap());
            }
        }
        lines.push(chain.checkpoint(key, "2026-11-25T00:00:01Z").unwrap());
        lines
    }

    fn check(lines: &[String], key: &Ed25519KeyPair) -> Verification {
        verify(
            lines.iter().map(String::as_str),
            key.public_key().as_ref(),
            true,
        )
    }

    #[test]
    fn checkpoints_signed_before_their_time_was_still_verify_but_not_when_changed() {
        let key = new_key();
        let mut chain = Chain::default();
        let mut lines = Vec::new();
        for i in 0..3 {
            lines.push(chain.append(record(i)).unwrap());
        }
        // A checkpoint as sekisho wrote it before the time was signed.
        let signature = key.sign(legacy_checkpoint_message(3, &chain.prev_hash).as_bytes());
        let mut line = Map::new();
        line.insert("seq".into(), Value::from(3));
        line.insert("prev_hash".into(), Value::from(chain.prev_hash.clone()));
        line.insert("type".into(), Value::from("checkpoint"));
        line.insert("time".into(), Value::from("2026-11-01T00:00:00Z"));
        line.insert(
            "key_id".into(),
            Value::from(key_id(key.public_key().as_ref())),
        );
        line.insert(
            "signature".into(),
            Value::from(crate::hex::encode(signature.as_ref())),
        );
        let legacy = serde_json::to_string(&line).unwrap();
        lines.push(legacy.clone());
        let v = check(&lines, &key);
        assert!(v.is_intact(), "{v:?}");
        // Its signature does not cover another position in the chain.
        let moved = legacy.replace("\"seq\":3", "\"seq\":2");
        let mut tampered = lines.clone();
        tampered.remove(2);
        tampered.pop();
        tampered.push(moved);
        assert!(!check(&tampered, &key).is_intact());
    }

    #[test]
    fn an_untouched_log_verifies() {
        let key = new_key();
        let lines = log(&key);
        let v = check(&lines, &key);
        assert!(v.is_intact(), "{v:?}");
        assert_eq!((v.lines, v.checkpoints), (13, 3));
    }

    #[test]
    fn a_modified_record_is_found() {
        let key = new_key();
        let mut lines = log(&key);
        lines[2] = lines[2].replace("\"allow\"", "\"deny\"");
        let v = check(&lines, &key);
        assert_eq!(
            v.first_break.map(|(n, _)| n),
            Some(4),
            "the next line no longer chains"
        );
    }

    #[test]
    fn a_deleted_record_is_found() {
        let key = new_key();
        let mut lines = log(&key);
        lines.remove(5);
        assert_eq!(check(&lines, &key).first_break.map(|(n, _)| n), Some(6));
    }

    #[test]
    fn reordered_records_are_found() {
        let key = new_key();
        let mut lines = log(&key);
        lines.swap(1, 2);
        assert_eq!(check(&lines, &key).first_break.map(|(n, _)| n), Some(2));
    }

    #[test]
    fn truncation_after_the_last_checkpoint_is_reported() {
        let key = new_key();
        let mut lines = log(&key);
        lines.pop();
        let v = check(&lines, &key);
        assert_eq!(v.first_break, None);
        assert_eq!(
            v.unsigned_tail, 2,
            "the lines after the last checkpoint are not vouched for"
        );
        assert!(!v.is_intact());
    }

    #[test]
    fn a_forged_or_foreign_checkpoint_is_found() {
        let key = new_key();
        let other = new_key();
        let lines = log(&key);
        assert_eq!(
            check(&lines, &other).first_break.map(|(n, _)| n),
            Some(5),
            "signed by another key"
        );
        let mut lines = log(&key);
        lines[4] = lines[4].replacen("\"signature\":\"", "\"signature\":\"00", 1);
        assert_eq!(check(&lines, &key).first_break.map(|(n, _)| n), Some(5));
    }

    #[test]
    fn a_chain_resumes_across_files() {
        let key = new_key();
        let lines = log(&key);
        let mut chain = Chain::resume_after(lines.last().unwrap()).unwrap();
        let mut more = lines.clone();
        more.push(chain.append(record(99)).unwrap());
        more.push(chain.checkpoint(&key, "t").unwrap());
        assert!(check(&more, &key).is_intact());
        // Verifying the second file alone starts mid-chain.
        let tail: Vec<&str> = more[lines.len()..].iter().map(String::as_str).collect();
        assert!(verify(tail, key.public_key().as_ref(), false).is_intact());
        // But a rotated file that went missing breaks the chain.
        let mut gap = lines[..5].to_vec();
        gap.extend_from_slice(&more[lines.len()..]);
        assert!(check(&gap, &key).first_break.is_some());
    }

    #[test]
    fn the_largest_seq_in_a_mid_chain_slice_is_refused_without_panicking() {
        let key = new_key();
        let line = format!("{{\"seq\":{},\"prev_hash\":\"{GENESIS}\"}}", u64::MAX);
        let v = verify(
            [line.as_str(), line.as_str()],
            key.public_key().as_ref(),
            false,
        );
        assert_eq!(
            v.first_break.map(|(n, _)| n),
            Some(1),
            "no line can follow seq u64::MAX"
        );
    }

    #[test]
    fn a_key_switch_without_an_introduction_record_is_refused() {
        let old = new_key();
        let new = new_key();
        let mut chain = Chain::default();
        let lines = [
            chain.append(record(0)).unwrap(),
            chain.checkpoint(&old, "2026-11-25T00:00:00Z").unwrap(),
            chain.append(record(1)).unwrap(),
            // The new key signs without the old one having introduced it.
            chain.checkpoint(&new, "2026-11-25T00:00:01Z").unwrap(),
        ];
        let both = Verifier::with_keys(
            vec![
                old.public_key().as_ref().to_vec(),
                new.public_key().as_ref().to_vec(),
            ],
            true,
        );
        let v = lines.iter().fold(both, |mut v, l| {
            v.feed(l);
            v
        });
        let (line, why) = v.result().first_break.clone().expect("refused");
        assert_eq!(line, 4);
        assert!(why.contains("not introduced"), "{why}");
    }

    #[test]
    fn a_log_cut_back_to_an_earlier_checkpoint_is_missing_records_of_the_head() {
        let key = new_key();
        let lines = log(&key);
        let head = Head::parse(lines.last().unwrap()).unwrap();
        // Cut back to the first checkpoint (line 5, seq 4): still a valid, signed chain…
        let cut = &lines[..5];
        assert!(check(cut, &key).is_intact());
        // …but not against the head.
        let mut verifier = Verifier::new(key.public_key().as_ref(), true);
        verifier.set_head(head.clone()).unwrap();
        for line in cut {
            verifier.feed(line);
        }
        let v = verifier.result();
        assert!(!v.is_intact());
        let missing = v.missing.expect("missing records");
        assert_eq!((missing.log_ends, missing.head_seq), (Some(4), 12));
        assert!(
            missing.to_string().starts_with(
                "log ends at seq 4; the signed head says 12: records 5–12 are missing"
            ),
            "{missing}"
        );
        // The whole log reaches the head.
        let mut verifier = Verifier::new(key.public_key().as_ref(), true);
        verifier.set_head(head).unwrap();
        lines.iter().for_each(|l| {
            verifier.feed(l);
        });
        assert!(verifier.result().is_intact(), "{:?}", verifier.result());
    }

    #[test]
    fn a_head_of_another_log_or_key_is_refused() {
        let key = new_key();
        let lines = log(&key);
        let mut other = Chain::default();
        for i in 0..12 {
            other.append(record(50 + i)).unwrap();
        }
        let other_head = other.checkpoint(&key, "t").unwrap();
        // Another chain's head at the same seq: the log was rewritten.
        let mut verifier = Verifier::new(key.public_key().as_ref(), true);
        verifier
            .set_head(Head::parse(&other_head).unwrap())
            .unwrap();
        lines.iter().for_each(|l| {
            verifier.feed(l);
        });
        let (line, why) = verifier.result().first_break.expect("rewritten");
        assert_eq!(line, 13);
        assert!(why.contains("rewritten"), "{why}");
        // A head signed by a key not listed.
        let mut verifier = Verifier::new(new_key().public_key().as_ref(), true);
        assert_eq!(
            verifier.set_head(Head::parse(lines.last().unwrap()).unwrap()),
            Err(HeadError::Signature)
        );
        assert!(Head::parse(&lines[0]).is_err(), "a record is not a head");
        assert!(Head::parse("").is_err());
    }

    #[test]
    fn a_key_introduced_by_the_previous_key_signs_from_then_on() {
        let old = new_key();
        let new = new_key();
        let mut chain = Chain::default();
        let mut lines = vec![
            chain.append(record(0)).unwrap(),
            chain.checkpoint(&old, "t0").unwrap(),
        ];
        lines.push(
            chain
                .introduce_key(&old, new.public_key().as_ref(), "t1")
                .unwrap(),
        );
        lines.push(chain.append(record(1)).unwrap());
        lines.push(chain.checkpoint(&new, "t2").unwrap());
        let keys = vec![
            old.public_key().as_ref().to_vec(),
            new.public_key().as_ref().to_vec(),
        ];
        let mut verifier = Verifier::with_keys(keys.clone(), true);
        lines.iter().for_each(|l| {
            verifier.feed(l);
        });
        let v = verifier.result();
        assert!(v.is_intact(), "{v:?}");
        assert_eq!((v.checkpoints, v.keys_introduced), (2, 1));
        // The retired key may no longer sign.
        lines.push(chain.checkpoint(&old, "t3").unwrap());
        let mut verifier = Verifier::with_keys(keys, true);
        lines.iter().for_each(|l| {
            verifier.feed(l);
        });
        let (line, why) = verifier.result().first_break.expect("refused");
        assert_eq!(line, 6);
        assert!(why.contains("not introduced"), "{why}");
    }

    #[test]
    fn reserved_fields_and_garbage_are_refused() {
        let mut chain = Chain::default();
        let bad = serde_json::json!({"seq": 7}).as_object().cloned().unwrap();
        assert!(chain.append(bad).is_err());
        let key = new_key();
        let v = verify(["not json"], key.public_key().as_ref(), true);
        assert_eq!(v.first_break.map(|(n, _)| n), Some(1));
    }
}
