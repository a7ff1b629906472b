//! Reading the log back: `sekisho audit query` and the review page. The side index (one line
//! per block of records, see [`super::writer::IndexBlock`]) lets a query skip every block whose
//! time range or facet sets cannot match; what the index does not cover (a crash tail, a
//! missing or unreadable index) is scanned line by line. The index only ever saves work: a block
//! it lets through is still checked record by record.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::writer::{IndexBlock, facet, index_path, log_files};

/// What to look for. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Records before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// User: email, or subject when there is no email.
    pub user: Option<String>,
    /// Decision (`allow`, `deny`, `login`, `unauthenticated`, `error`) or authentication event
    /// (`login`, `logout`, `refresh`, `credential_rejected`).
    pub decision: Option<String>,
    /// Route id.
    pub route: Option<String>,
    /// Client address.
    pub source: Option<String>,
    /// Container id.
    pub container: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// One record by its sequence number.
    pub seq: Option<u64>,
}

/// What a query found, and how much it read.
#[derive(Debug, Default)]
pub struct Found {
    /// Matching records, oldest first (the newest `limit`).
    pub records: Vec<Value>,
    /// Matches in all (may exceed `records.len()`).
    pub matched: u64,
    /// Index blocks skipped without reading.
    pub blocks_skipped: u64,
    /// Index blocks read.
    pub blocks_read: u64,
    /// Bytes scanned outside any index block.
    pub unindexed_bytes: u64,
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct QueryError {
    /// The file.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl Filter {
    fn block_may_match(&self, block: &IndexBlock) -> bool {
        let facet = |tag: u8, wanted: &Option<String>| {
            wanted
                .as_deref()
                .is_none_or(|value| block.facets.may_contain(tag, value))
        };
        self.since_ms.is_none_or(|since| block.to_ms >= since)
            && self.until_ms.is_none_or(|until| block.from_ms < until)
            && self
                .seq
                .is_none_or(|seq| (block.first_seq..=block.last_seq).contains(&seq))
            && facet(facet::USER, &self.user)
            && facet(facet::ROUTE, &self.route)
            && facet(facet::DECISION, &self.decision)
            && facet(facet::SOURCE, &self.source)
            && facet(facet::CONTAINER, &self.container)
    }

    /// Cheap test on the raw line: every wanted string must occur in it.
    fn line_may_match(&self, line: &str) -> bool {
        [
            &self.user,
            &self.route,
            &self.decision,
            &self.source,
            &self.container,
            &self.request_id,
        ]
        .into_iter()
        .flatten()
        .all(|wanted| line.contains(wanted.as_str()))
    }

    /// The exact test on a parsed record.
    pub fn matches(&self, record: &Value) -> bool {
        if record.get("type").and_then(Value::as_str) == Some("checkpoint") {
            return false;
        }
        let text = |pointer: &str| record.pointer(pointer).and_then(Value::as_str);
        let time = record.get("time").and_then(Value::as_i64).unwrap_or(0);
        let eq = |wanted: &Option<String>, candidates: &[&str]| match wanted {
            None => true,
            Some(w) => candidates.iter().any(|p| text(p) == Some(w.as_str())),
        };
        self.since_ms.is_none_or(|since| time >= since)
            && self.until_ms.is_none_or(|until| time < until)
            && self
                .seq
                .is_none_or(|seq| record.get("seq").and_then(Value::as_u64) == Some(seq))
            && eq(
                &self.user,
                &[
                    "/unmapped/user",
                    "/actor/user/email_addr",
                    "/actor/user/uid",
                    "/user/email_addr",
                    "/user/uid",
                ],
            )
            && eq(&self.decision, &["/unmapped/decision", "/unmapped/event"])
            && eq(&self.route, &["/unmapped/route"])
            && eq(&self.source, &["/src_endpoint/ip"])
            && eq(&self.container, &["/container/uid"])
            && eq(&self.request_id, &["/http_request/uid", "/metadata/uid"])
    }
}

/// Runs `filter` over the log in `dir`, keeping the newest `limit` matches.
pub fn query(dir: &Path, filter: &Filter, limit: usize) -> Result<Found, QueryError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| QueryError { path, source }
    };
    let mut found = Found::default();
    let mut kept: VecDeque<Value> = VecDeque::new();
    let mut keep = |found: &mut Found, line: &str| {
        if !filter.line_may_match(line) {
            return;
        }
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if filter.matches(&record) {
            found.matched += 1;
            if kept.len() == limit {
                kept.pop_front();
            }
            if limit > 0 {
                kept.push_back(record);
            }
        }
    };
    for log in log_files(dir).map_err(io(dir))? {
        let mut file = File::open(&log.path).map_err(io(&log.path))?;
        let len = file.metadata().map_err(io(&log.path))?.len();
        let blocks = read_index(&log.path, len);
        let mut position = 0u64;
        let mut buf = Vec::new();
        for block in &blocks {
            if block.offset > position {
                // A stretch the index does not cover.
                found.unindexed_bytes += block.offset - position;
                scan(
                    &mut file,
                    position,
                    block.offset - position,
                    &mut buf,
                    |l| {
                        keep(&mut found, l);
                    },
                )
                .map_err(io(&log.path))?;
            }
            if filter.block_may_match(block) {
                found.blocks_read += 1;
                scan(&mut file, block.offset, block.len, &mut buf, |l| {
                    keep(&mut found, l);
                })
                .map_err(io(&log.path))?;
            } else {
                found.blocks_skipped += 1;
            }
            position = block.offset + block.len;
        }
        if position < len {
            found.unindexed_bytes += len - position;
            scan(&mut file, position, len - position, &mut buf, |l| {
                keep(&mut found, l);
            })
            .map_err(io(&log.path))?;
        }
    }
    found.records = kept.into();
    Ok(found)
}

/// The index blocks of a log file that are usable: in order, inside the file, not
/// overlapping. A damaged index loses only its damaged part (that part is scanned).
fn read_index(log: &Path, len: u64) -> Vec<IndexBlock> {
    let Ok(file) = File::open(index_path(log)) else {
        return Vec::new();
    };
    let mut blocks: Vec<IndexBlock> = Vec::new();
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        let Ok(block) = serde_json::from_str::<IndexBlock>(&line) else {
            break;
        };
        let after_previous = blocks
            .last()
            .is_none_or(|b| block.offset >= b.offset + b.len);
        if !after_previous || block.offset.saturating_add(block.len) > len || block.len == 0 {
            break;
        }
        blocks.push(block);
    }
    blocks
}

/// Reads `len` bytes at `offset` and calls `each` for every complete line in them.
fn scan(
    file: &mut File,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&str),
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    buf.clear();
    file.take(len).read_to_end(buf)?;
    for line in buf.split(|&b| b == b'\n') {
        if let Ok(text) = std::str::from_utf8(line)
            && !text.is_empty()
        {
            each(text);
        }
    }
    Ok(())
}

/// Parses `--since`/`--until`: a duration back from now (`90m`, `1h`, `7d`) or an RFC 3339
/// time.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time.as_millisecond());
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number.parse().map_err(|_| {
        format!("`{text}` is neither a duration like 90m, 1h, 7d nor an RFC 3339 time")
    })?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}`: the unit must be s, m, h or d (or give an RFC 3339 time)"
            ));
        }
    };
    Ok(now_ms - n.saturating_mul(unit_ms))
}

/// One line per record for `--format table`.
pub fn table_row(record: &Value) -> String {
    let text = |pointer: &str| {
        record
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let time = text("/time_dt");
    let time = time.get(..23).unwrap_or(time);
    let what = match record.get("class_uid").and_then(Value::as_u64) {
        Some(4002) => format!(
            "{:<15} {:>3} {} {}{}",
            text("/unmapped/decision"),
            record
                .pointer("/http_response/code")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            text("/http_request/http_method"),
            text("/http_request/url/hostname"),
            text("/http_request/url/path"),
        ),
        Some(3002) => format!(
            "{:<15} {} {}",
            text("/unmapped/event"),
            text("/status"),
            text("/status_detail")
        ),
        _ => format!("{:<15} {}", text("/unmapped/event"), text("/message")),
    };
    let user = ["/unmapped/user", "/user/email_addr", "/actor/user/uid"]
        .iter()
        .map(|p| text(p))
        .find(|u| !u.is_empty())
        .unwrap_or("-");
    format!(
        "{time:<23}  {user:<24}  {:<15}  {what}  {}",
        text("/src_endpoint/ip"),
        text("/unmapped/rule")
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_durations_back_or_rfc3339() {
        assert_eq!(parse_time("1h", 10_000_000), Ok(10_000_000 - 3_600_000));
        assert_eq!(
            parse_time("2d", 1_000_000_000),
            Ok(1_000_000_000 - 172_800_000)
        );
        assert_eq!(parse_time("2026-11-25T00:00:00Z", 0), Ok(1_795_564_800_000));
        assert!(parse_time("1w", 0).is_err());
        assert!(parse_time("yesterday", 0).is_err());
    }

    #[test]
    fn records_match_on_every_field_given() {
        let record: Value = serde_json::json!({
            "time": 1000, "class_uid": 4002,
            "unmapped": {"decision": "deny", "route": "admin", "user": "bob@example.com"},
            "src_endpoint": {"ip": "10.0.0.1"},
            "http_request": {"uid": "r-1"},
        });
        let mut filter = Filter {
            user: Some("bob@example.com".into()),
            decision: Some("deny".into()),
            route: Some("admin".into()),
            since_ms: Some(999),
            ..Filter::default()
        };
        assert!(filter.matches(&record));
        filter.route = Some("adm".into());
        assert!(!filter.matches(&record), "exact, not substring");
        filter.route = None;
        filter.until_ms = Some(1000);
        assert!(!filter.matches(&record), "until is exclusive");
        let checkpoint = serde_json::json!({"type": "checkpoint", "time": 1000});
        assert!(!Filter::default().matches(&checkpoint));
    }
}
