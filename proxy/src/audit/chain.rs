//! The hash chain of the audit log. Every line is one JSON object carrying `seq` (consecutive
//! from 0) and `prev_hash` (hex SHA-256 of the previous line's exact bytes; 64 zeros before the
//! first). Periodic checkpoint lines (`"type":"checkpoint"`) carry an Ed25519 signature over
//! `sekisho-audit-checkpoint\n{seq}\n{prev_hash}`, and so vouch for every line before them.
//! [`verify`] walks lines (across rotated files, in order) and reports the first line where the
//! chain or a signature breaks, and how many lines follow the last checkpoint unsigned (a
//! truncated or crashed tail).

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
        let signature = key.sign(checkpoint_message(self.next_seq, &self.prev_hash).as_bytes());
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

    fn commit(&mut self, line: Map<String, Value>) -> Result<String, ChainError> {
        let text = serde_json::to_string(&Value::Object(line)).map_err(ChainError::Serialise)?;
        self.prev_hash = sha256_hex(text.as_bytes());
        self.next_seq += 1;
        Ok(text)
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
}

impl Verification {
    /// True when the chain is intact and fully signed.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none() && self.unsigned_tail == 0
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
    verifier.result().clone()
}

/// Verification line by line, for a log that keeps growing (the review page verifies only
/// what was added since it last looked).
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<Vec<u8>>,
    expected: Option<(u64, String)>,
    result: Verification,
}

impl Verifier {
    /// A verifier for `public_key`; see [`verify`] for `starts_at_genesis`.
    pub fn new(public_key: &[u8], starts_at_genesis: bool) -> Self {
        Self::with_keys(vec![public_key.to_vec()], starts_at_genesis)
    }

    /// A verifier that accepts checkpoints signed by any of `public_keys` (the current key and
    /// the ones it replaced).
    pub fn with_keys(public_keys: Vec<Vec<u8>>, starts_at_genesis: bool) -> Self {
        Verifier {
            keys: public_keys,
            expected: starts_at_genesis.then(|| (0, GENESIS.to_owned())),
            result: Verification {
                lines: 0,
                checkpoints: 0,
                first_break: None,
                unsigned_tail: 0,
            },
        }
    }

    /// What was found so far.
    pub fn result(&self) -> &Verification {
        &self.result
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
                    self.result.lines - 1
                ));
            }
        }
        if object.get("type").and_then(Value::as_str) == Some("checkpoint") {
            let signature = object
                .get("signature")
                .and_then(Value::as_str)
                .and_then(crate::hex::decode);
            let message = checkpoint_message(seq, prev);
            let valid = signature.is_some_and(|sig| {
                self.keys.iter().any(|key| {
                    UnparsedPublicKey::new(&ED25519, key)
                        .verify(message.as_bytes(), &sig)
                        .is_ok()
                })
            });
            if !valid {
                return Err("checkpoint signature does not verify".into());
            }
            self.result.checkpoints += 1;
            self.result.unsigned_tail = 0;
        } else {
            self.result.unsigned_tail += 1;
        }
        self.expected = Some((seq + 1, sha256_hex(line.as_bytes())));
        Ok(())
    }
}

fn checkpoint_message(seq: u64, prev_hash: &str) -> String {
    format!("sekisho-audit-checkpoint\n{seq}\n{prev_hash}")
}

/// A short identifier of a checkpoint key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8]) -> String {
    let mut id = sha256_hex(public_key);
    id.truncate(16);
    id
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
        let v = verify([line.as_str(), line.as_str()], key.public_key().as_ref(), false);
        assert_eq!(v.first_break.map(|(n, _)| n), Some(1), "no line can follow seq u64::MAX");
    }

    #[test]
    fn a_key_switch_without_an_introduction_record_is_refused() {
        let old = new_key();
        let new = new_key();
        let mut chain = Chain::default();
        let mut lines = Vec::new();
        lines.push(chain.append(record(0)).unwrap());
        lines.push(chain.checkpoint(&old, "2026-11-25T00:00:00Z").unwrap());
        lines.push(chain.append(record(1)).unwrap());
        // The new key signs without the old one having introduced it.
        lines.push(chain.checkpoint(&new, "2026-11-25T00:00:01Z").unwrap());
        let both = Verifier::with_keys(
            vec![old.public_key().as_ref().to_vec(), new.public_key().as_ref().to_vec()],
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
    fn reserved_fields_and_garbage_are_refused() {
        let mut chain = Chain::default();
        let bad = serde_json::json!({"seq": 7}).as_object().cloned().unwrap();
        assert!(chain.append(bad).is_err());
        let key = new_key();
        let v = verify(["not json"], key.public_key().as_ref(), true);
        assert_eq!(v.first_break.map(|(n, _)| n), Some(1));
    }
}
