//! The audit verifier (`sekisho::audit::chain::Verifier`) on arbitrary and on tampered logs.
//!
//! Raw mode: any text as log lines (mid-chain or from genesis, with or without a head taken
//! from the input). It never panics, and a verified-intact verdict implies what "intact"
//! promises: every line a JSON object, seqs consecutive (from 0 at genesis), each `prev_hash`
//! the hash of the line before, the last line signed.
//!
//! Tamper mode: a real signed log (records, checkpoints, possibly a key introduction) with its
//! head, then one edit chosen by the input (cut back, drop, swap, duplicate or change a line).
//! The verifier with the head reports it intact exactly when the lines are unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use sekisho::audit::chain::{Chain, GENESIS, Head, Verifier, line_hash};
use sekisho::audit::writer::key_from_pem;
use serde_json::{Map, Value};

const KEY_A: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFQvalIqM42xmQoneh9/1KrQFPXu67zQXkh2MN03l0y9\n-----END PRIVATE KEY-----\n";
const KEY_B: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGploxitpqJWjWg7ztWtfB4k9+UV1kJpvI+8JVShgWwL\n-----END PRIVATE KEY-----\n";

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 0 => raw(*mode, rest),
        Some((mode, rest)) => tamper(*mode, rest),
        None => {}
    }
});

fn public_keys() -> Vec<Vec<u8>> {
    [KEY_A, KEY_B]
        .iter()
        .map(|pem| public(&key_from_pem(pem).expect("fixed test key")))
        .collect()
}

fn public(key: &Ed25519KeyPair) -> Vec<u8> {
    key.public_key().as_ref().to_vec()
}

fn raw(mode: u8, input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let genesis = mode & 2 != 0;
    let mut lines: Vec<&str> = text.lines().collect();
    let mut verifier = Verifier::with_keys(public_keys(), genesis);
    if mode & 4 != 0
        && let Some(first) = lines.first()
        && let Ok(head) = Head::parse(first)
    {
        let _ = verifier.set_head(head);
        lines.remove(0);
    }
    let mut fed = 0usize;
    for line in &lines {
        fed += 1;
        if !verifier.feed(line) {
            break;
        }
    }
    let result = verifier.result();
    assert_eq!(result.lines, fed as u64);
    if !result.is_intact() || lines.is_empty() {
        return;
    }
    // Intact: check what that promises, independently of the verifier.
    let mut previous: Option<(u64, String)> = None;
    for line in &lines {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            panic!("intact, but a line is not a JSON object: {line:?}");
        };
        let seq = object["seq"].as_u64().expect("intact lines carry seq");
        let prev = object["prev_hash"].as_str().expect("and prev_hash");
        match &previous {
            Some((last_seq, last_hash)) => {
                assert_eq!(Some(seq), last_seq.checked_add(1), "seqs consecutive");
                assert_eq!(prev, last_hash, "prev_hash is the previous line's hash");
            }
            None if genesis => {
                assert_eq!((seq, prev), (0, GENESIS), "a genesis chain starts at seq 0");
            }
            None => {}
        }
        previous = Some((seq, line_hash(line)));
    }
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).expect("checked above");
    assert!(
        matches!(last["type"].as_str(), Some("checkpoint" | "key")),
        "intact, but the last line is not signed"
    );
    assert_eq!(result.last_seq, previous.map(|(seq, _)| seq));
}

fn record(i: usize, byte: u8) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("n".into(), Value::from(i));
    map.insert("b".into(), Value::from(byte));
    map
}

fn tamper(mode: u8, input: &[u8]) {
    let (Some(&shape), Some(&edit), Some(&at), Some(&other)) =
        (input.first(), input.get(1), input.get(2), input.get(3))
    else {
        return;
    };
    let bytes = input.get(4..).unwrap_or_default();
    let key_a = key_from_pem(KEY_A).expect("fixed test key");
    let key_b = key_from_pem(KEY_B).expect("fixed test key");
    let rotate = mode & 2 != 0;
    // Build a log: records from the input bytes, a checkpoint where a byte's low bits say so,
    // a key introduction halfway when rotating, and a closing checkpoint (the head).
    let mut chain = Chain::default();
    let mut lines = Vec::new();
    let count = usize::from(shape % 24) + 1;
    let mut signer = &key_a;
    for i in 0..count {
        let byte = bytes.get(i).copied().unwrap_or(0);
        lines.push(chain.append(record(i, byte)).expect("a record"));
        if byte & 3 == 0 {
            lines.push(
                chain
                    .checkpoint(signer, "2026-01-01T00:00:00Z")
                    .expect("a checkpoint"),
            );
        }
        if rotate && i == count / 2 {
            let new = public(&key_b);
            lines.push(
                chain
                    .introduce_key(signer, &new, "2026-01-01T00:00:01Z")
                    .expect("a key"),
            );
            signer = &key_b;
        }
    }
    lines.push(
        chain
            .checkpoint(signer, "2026-01-01T00:00:02Z")
            .expect("the head"),
    );
    let head = Head::parse(lines.last().expect("lines")).expect("a head");
    let original = lines.clone();

    let n = lines.len();
    let i = usize::from(at) % n;
    let j = usize::from(other) % n;
    match edit % 6 {
        0 => {}
        1 => lines.truncate(i),
        2 => {
            lines.remove(i);
        }
        3 => lines.swap(i, j),
        4 => {
            let copy = lines[i].clone();
            lines.insert(j, copy);
        }
        _ => {
            // Change one character of line i to another printable ASCII one.
            let line = &lines[i];
            let pos = usize::from(other) % line.len();
            let replacement = (b'!' + (bytes.first().copied().unwrap_or(0) % 94)) as char;
            if line.is_char_boundary(pos) && line.is_char_boundary(pos + 1) {
                let mut changed = line.clone();
                changed.replace_range(pos..pos + 1, &replacement.to_string());
                lines[i] = changed;
            }
        }
    }

    let mut verifier = Verifier::with_keys(public_keys(), true);
    verifier
        .set_head(head)
        .expect("the head is signed by a listed key");
    for line in &lines {
        if !verifier.feed(line) {
            break;
        }
    }
    let result = verifier.result();
    assert_eq!(
        result.is_intact(),
        lines == original,
        "intact exactly when unchanged: edit {}, line {i}/{n}, {result:?}",
        edit % 6
    );
}
