//! The admin listener's audit review page (search and
//! filter, one record with its policy explanation, a user's timeline, the chain's verification
//! status). Server-rendered HTML and CSS, no JavaScript, nothing loaded from elsewhere. The
//! proxy authenticates and authorizes every request (sekisho's own login and the `admin`
//! policy) before a page here is rendered.

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;

use http::Response;
use http::header::HeaderValue;
use serde_json::Value;

use crate::audit::AuditLog;
use crate::audit::chain::{Head, Verifier};
use crate::audit::query::{self, Filter};
use crate::audit::writer::log_files;
use crate::error::{ProxyBody, ProxyError, full, html_escape};

/// The review page's chain verification, carried forward as the log grows: each render
/// verifies only the bytes added since the previous one.
#[derive(Debug, Default)]
pub struct LiveVerification {
    state: Mutex<Option<VerifyState>>,
}

#[derive(Debug)]
struct VerifyState {
    verifier: Verifier,
    /// The file being read and how far.
    file: PathBuf,
    offset: u64,
    verified_at: jiff::Timestamp,
    /// A break the verifier cannot see line by line (a file that shrank, a head refused).
    broken: Option<String>,
}

/// The verification status shown on every page.
#[derive(Debug, Clone)]
pub struct Status {
    /// Lines verified.
    pub lines: u64,
    /// Valid checkpoints.
    pub checkpoints: u64,
    /// The first break, if any.
    pub broken: Option<String>,
    /// Lines after the last checkpoint.
    pub unsigned_tail: u64,
    /// The `seq` verification started from (not 0: older files are not on disk).
    pub from_seq: u64,
    /// The log ends before the signed head (`{state_dir}/audit-head.json`): what is missing.
    pub missing: Option<String>,
    /// When.
    pub at: jiff::Timestamp,
}

impl LiveVerification {
    /// Verifies what was added since the last call (or everything, the first time or with
    /// `full`).
    pub fn refresh(&self, audit: &AuditLog, full: bool) -> Result<Status, std::io::Error> {
        let Ok(mut guard) = self.state.lock() else {
            return Err(std::io::Error::other("verification state poisoned"));
        };
        // The head first, then the log: the writer updates the head only after the checkpoint
        // is in the log, so a log read after the head reaches it unless it was cut back.
        let head = match std::fs::read_to_string(audit.head_path()) {
            Ok(text) => Some(Head::parse(&text).map_err(|e| e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let files = log_files(audit.dir())?;
        let Some(first) = files.first() else {
            return Ok(Status {
                lines: 0,
                checkpoints: 0,
                broken: None,
                unsigned_tail: 0,
                from_seq: 0,
                missing: head
                    .and_then(Result::ok)
                    .map(|h| format!("the log has no files; the signed head says {}", h.seq)),
                at: jiff::Timestamp::now(),
            });
        };
        let stale = guard
            .as_ref()
            .is_none_or(|s| full || !files.iter().any(|f| f.path == s.file));
        if stale {
            *guard = Some(VerifyState {
                verifier: Verifier::with_keys(audit.public_keys().to_vec(), first.first_seq == 0),
                file: first.path.clone(),
                offset: 0,
                verified_at: jiff::Timestamp::now(),
                broken: None,
            });
        }
        let Some(state) = guard.as_mut() else {
            return Err(std::io::Error::other("no verification state"));
        };
        match head {
            Some(Ok(head)) => {
                if let Err(e) = state.verifier.set_head(head) {
                    state.broken.get_or_insert(format!("the signed head: {e}"));
                }
            }
            Some(Err(e)) => {
                state.broken.get_or_insert(format!("the signed head: {e}"));
            }
            None => {}
        }
        let start = files.iter().position(|f| f.path == state.file).unwrap_or(0);
        for file in files.iter().skip(start) {
            if file.path != state.file {
                state.file = file.path.clone();
                state.offset = 0;
            }
            let mut handle = std::fs::File::open(&file.path)?;
            let len = handle.metadata()?.len();
            if len < state.offset {
                state.broken.get_or_insert(format!(
                    "{} shrank from {} to {len} bytes after it was verified (lines were cut off)",
                    file.path.display(),
                    state.offset
                ));
                break;
            }
            handle.seek(SeekFrom::Start(state.offset))?;
            let mut bytes = Vec::new();
            handle.read_to_end(&mut bytes)?;
            // Only whole lines: the writer may be in the middle of one.
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for line in bytes
                .get(..complete)
                .unwrap_or_default()
                .split(|&b| b == b'\n')
            {
                if line.is_empty() {
                    continue;
                }
                let text = String::from_utf8_lossy(line);
                if !state.verifier.feed(&text) {
                    break;
                }
            }
            state.offset += complete as u64;
        }
        state.verified_at = jiff::Timestamp::now();
        let result = state.verifier.result();
        Ok(Status {
            lines: result.lines,
            checkpoints: result.checkpoints,
            broken: state.broken.clone().or_else(|| {
                result
                    .first_break
                    .as_ref()
                    .map(|(line, why)| format!("line {line}: {why}"))
            }),
            unsigned_tail: result.unsigned_tail,
            from_seq: result.first_seq.unwrap_or(0),
            missing: result.missing.as_ref().map(ToString::to_string),
            at: state.verified_at,
        })
    }
}

/// Renders a review page for an authorized administrator (`who`).
pub fn review(
    audit: &AuditLog,
    live: &LiveVerification,
    path: &str,
    query_string: Option<&str>,
    who: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query_string.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let status = live
        .refresh(audit, param("verify").as_deref() == Some("full"))
        .map_err(|e| ProxyError::Internal {
            detail: format!("verifying the audit log: {e}"),
        })?;
    let (title, body) = match path {
        "/" | "/audit" => search_page(audit, &param)?,
        "/audit/record" => record_page(audit, &param)?,
        "/audit/user" => timeline_page(audit, &param)?,
        _ => return Err(ProxyError::NoRoute),
    };
    Ok(html(&title, &status_banner(&status, audit), &body, who))
}

type Param<'a> = dyn Fn(&str) -> Option<String> + 'a;

fn filter_from(param: &Param<'_>) -> Result<Filter, ProxyError> {
    let now = jiff::Timestamp::now().as_millisecond();
    let time = |name: &str| {
        param(name)
            .map(|t| query::parse_time(&t, now))
            .transpose()
            .map_err(|_| ProxyError::BadRequest {
                reason: "invalid time filter (write 1h, 7d or an RFC 3339 time)",
            })
    };
    Ok(Filter {
        since_ms: time("since")?,
        until_ms: time("until")?,
        user: param("user"),
        decision: param("decision"),
        route: param("route"),
        source: param("source"),
        container: param("container"),
        request_id: param("request_id"),
        seq: None,
    })
}

fn run(audit: &AuditLog, filter: &Filter, limit: usize) -> Result<query::Found, ProxyError> {
    query::query(audit.dir(), filter, limit).map_err(|e| ProxyError::Internal {
        detail: e.to_string(),
    })
}

fn search_page(audit: &AuditLog, param: &Param<'_>) -> Result<(String, String), ProxyError> {
    let filter = filter_from(param)?;
    let limit = param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(200usize)
        .min(5000);
    let found = run(audit, &filter, limit)?;
    let field = |name: &str, label: &str, hint: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>",
            html_escape(&param(name).unwrap_or_default())
        )
    };
    let decision = param("decision").unwrap_or_default();
    let options: String = [
        "",
        "allow",
        "deny",
        "login",
        "unauthenticated",
        "error",
        "logout",
        "refresh",
        "credential_rejected",
        "upstream_bypass",
        "nic_drop",
    ]
    .iter()
    .map(|d| {
        format!(
            "<option value=\"{d}\"{}>{}</option>",
            if *d == decision { " selected" } else { "" },
            if d.is_empty() { "any" } else { d }
        )
    })
    .collect();
    let mut body = format!(
        "<form method=\"get\" action=\"/audit\" class=\"filters\">{}{}{}<label>Decision<select name=\"decision\" id=\"decision\">{options}</select></label>{}{}{}<button type=\"submit\" id=\"search\">Search</button></form>",
        field("since", "Since", "1h, 7d or RFC 3339"),
        field("until", "Until", ""),
        field("user", "User", "alice@example.com"),
        field("route", "Route", "route id"),
        field("source", "Source", "client IP"),
        field("container", "Container", "container id"),
    );
    let _ = write!(
        body,
        "<p class=\"count\" id=\"count\">{} matching records{}</p>",
        found.matched,
        if found.matched > found.records.len() as u64 {
            format!(", newest {} shown", found.records.len())
        } else {
            String::new()
        }
    );
    body.push_str(&records_table(found.records.iter().rev()));
    Ok(("Audit log".into(), body))
}

fn records_table<'a>(records: impl Iterator<Item = &'a Value>) -> String {
    let mut table = String::from(
        "<table id=\"records\"><thead><tr><th>Time (UTC)</th><th>Decision</th><th>Status</th><th>User</th><th>Request</th><th>Route</th><th>Source</th><th>Container</th></tr></thead><tbody>",
    );
    for record in records {
        let text = |p: &str| record.pointer(p).and_then(Value::as_str).unwrap_or("");
        let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let decision = [text("/unmapped/decision"), text("/unmapped/event")]
            .into_iter()
            .find(|d| !d.is_empty())
            .unwrap_or("-");
        let user = [text("/unmapped/user"), text("/user/email_addr")]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or("");
        let status = record
            .pointer("/http_response/code")
            .and_then(Value::as_u64)
            .map_or_else(|| text("/status").to_owned(), |c| c.to_string());
        let request = match record.get("class_uid").and_then(Value::as_u64) {
            Some(4002) => format!(
                "{} {}{}",
                text("/http_request/http_method"),
                text("/http_request/url/hostname"),
                text("/http_request/url/path")
            ),
            _ => text("/message").to_owned(),
        };
        let user_cell = if user.is_empty() {
            String::new()
        } else {
            format!(
                "<a href=\"/audit/user?user={}\">{}</a>",
                urlencode(user),
                html_escape(user)
            )
        };
        let container = text("/container/uid");
        // The container's own view: every record it is the client (or bypasser) of.
        let container_cell = if container.is_empty() {
            String::new()
        } else {
            format!(
                "<a class=\"container\" href=\"/audit?container={}\" title=\"{}\">{}</a>",
                urlencode(container),
                html_escape(text("/container/cgroup")),
                html_escape(container.get(..12).unwrap_or(container))
            )
        };
        let time = text("/time_dt");
        let _ = write!(
            table,
            "<tr class=\"{cls}\"><td><a href=\"/audit/record?seq={seq}\">{time}</a></td><td class=\"decision\">{decision}</td><td>{status}</td><td>{user_cell}</td><td>{request}</td><td>{route}</td><td>{source}</td><td>{container_cell}</td></tr>",
            cls = html_escape(decision),
            time = html_escape(time.get(..23).unwrap_or(time)),
            decision = html_escape(decision),
            status = html_escape(&status),
            request = html_escape(&request),
            route = html_escape(text("/unmapped/route")),
            source = html_escape(text("/src_endpoint/ip")),
        );
    }
    table.push_str("</tbody></table>");
    table
}

fn record_page(audit: &AuditLog, param: &Param<'_>) -> Result<(String, String), ProxyError> {
    let seq: u64 = param("seq")
        .and_then(|s| s.parse().ok())
        .ok_or(ProxyError::BadRequest {
            reason: "`seq` must be a record's sequence number",
        })?;
    let filter = Filter {
        seq: Some(seq),
        ..Filter::default()
    };
    let found = run(audit, &filter, 1)?;
    let Some(record) = found.records.first() else {
        return Err(ProxyError::NoRoute);
    };
    let text = |p: &str| record.pointer(p).and_then(Value::as_str).unwrap_or("");
    let mut body = String::new();
    let rule = text("/unmapped/rule");
    if !rule.is_empty() {
        let _ = write!(
            body,
            "<section class=\"explanation\"><h2>Why</h2><p id=\"explanation\"><strong>{}</strong>: {}</p><p>Policy: {}</p></section>",
            html_escape(text("/unmapped/decision")),
            html_escape(rule),
            html_escape(text("/actor/authorizations/0/policy/name")),
        );
    }
    let detail = text("/status_detail");
    if !detail.is_empty() {
        let _ = write!(body, "<p>Detail: {}</p>", html_escape(detail));
    }
    let pretty = serde_json::to_string_pretty(record).unwrap_or_default();
    let _ = write!(
        body,
        "<h2>Record {seq}</h2><pre id=\"record\">{}</pre>",
        html_escape(&pretty)
    );
    Ok((format!("Audit record {seq}"), body))
}

fn timeline_page(audit: &AuditLog, param: &Param<'_>) -> Result<(String, String), ProxyError> {
    let user = param("user").ok_or(ProxyError::BadRequest {
        reason: "`user` is required",
    })?;
    let mut filter = filter_from(param)?;
    filter.user = Some(user.clone());
    let found = run(audit, &filter, 1000)?;
    let mut body = format!(
        "<p class=\"count\" id=\"count\">{} records for {}, oldest first</p>",
        found.matched,
        html_escape(&user)
    );
    body.push_str(&records_table(found.records.iter()));
    Ok((format!("Timeline of {user}"), body))
}

fn status_banner(status: &Status, audit: &AuditLog) -> String {
    let at = status.at.to_string();
    let at = at.get(..19).unwrap_or(&at);
    let (class, text) = match (&status.broken, status.unsigned_tail) {
        (Some(why), _) => ("broken", format!("Chain BROKEN at {}", html_escape(why))),
        (None, _) if status.missing.is_some() => (
            "broken",
            format!(
                "Chain BROKEN: {}",
                html_escape(status.missing.as_deref().unwrap_or_default())
            ),
        ),
        (None, tail) if status.from_seq > 0 => (
            "partial",
            format!(
                "Chain verified from seq {} only (the files before it are not on disk: removed by retention, or missing): {} lines, {} checkpoints{}",
                status.from_seq,
                status.lines,
                status.checkpoints,
                if tail > 0 {
                    format!("; the newest {tail} await the next checkpoint")
                } else {
                    String::new()
                }
            ),
        ),
        (None, 0) => (
            "intact",
            format!(
                "Chain intact and signed: {} lines, {} checkpoints",
                status.lines, status.checkpoints
            ),
        ),
        (None, tail) => (
            "intact",
            format!(
                "Chain intact: {} lines, {} checkpoints; the newest {tail} await the next checkpoint",
                status.lines, status.checkpoints
            ),
        ),
    };
    let failing = audit.failure().map_or_else(String::new, |e| {
        format!(
            "<p class=\"status broken\">The audit log cannot be written: {}</p>",
            html_escape(&e)
        )
    });
    format!(
        "<p class=\"status {class}\" id=\"verification\">{text} (verified {at} UTC; key {}; <a href=\"?verify=full\">verify everything again</a>)</p>{failing}",
        html_escape(audit.public_key_hex().get(..16).unwrap_or(""))
    )
}

fn html(title: &str, banner: &str, body: &str, who: &str) -> Response<ProxyBody> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title} · sekisho</title><style>{STYLE}</style></head><body><header><a href=\"/audit\">sekisho audit</a><span>{who}</span></header><main><h1>{title}</h1>{banner}{body}</main></body></html>",
        title = html_escape(title),
        who = html_escape(who),
    );
    let mut response = Response::new(full(page));
    crate::error::html_headers(
        response.headers_mut(),
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b}header{display:flex;justify-content:space-between;padding:.6em 1em;background:#1f2a44;color:#fff}header a{color:#fff;font-weight:600;text-decoration:none}main{padding:1em}.filters{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-end}.filters label{display:flex;flex-direction:column;font-size:12px}input,select,button{font:inherit;padding:.3em}table{border-collapse:collapse;width:100%;margin-top:1em}th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}tr.deny td.decision,tr.error td.decision,tr.unauthenticated td.decision{color:#a00;font-weight:600}tr.allow td.decision{color:#060}.status{padding:.5em;border-radius:4px}.status.intact{background:#e8f5e9}.status.broken{background:#fdecea;color:#a00;font-weight:600}.status.partial{background:#fff4e5}pre{background:#f6f6f6;padding:1em;overflow:auto}.explanation{border-left:4px solid #1f2a44;padding-left:1em}";

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::audit::Event;
    use crate::audit::writer::tests::config;

    /// The writer tests' request record at `/x`, always allowed.
    fn event(i: u64) -> Event {
        crate::audit::writer::tests::event(i * 2, "/x")
    }

    /// A temporary directory removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "sekisho-admin-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn banner(audit: &AuditLog) -> String {
        let status = LiveVerification::default().refresh(audit, true).unwrap();
        status_banner(&status, audit)
    }

    #[test]
    fn a_log_whose_first_files_are_gone_is_shown_as_verified_from_that_seq_only() {
        let tmp = TempDir::new();
        let mut config = config(tmp.path());
        config.rotate_size = 2048;
        let audit = AuditLog::open(&config, tmp.path()).unwrap();
        for i in 0..20 {
            audit.record(event(i)).unwrap();
            audit.flush().unwrap();
        }
        let files = log_files(&config.dir).unwrap();
        assert!(files.len() >= 3, "{files:?}");
        std::fs::remove_file(&files[0].path).unwrap();
        let text = banner(&audit);
        assert!(
            text.contains(&format!("from seq {}", files[1].first_seq)),
            "{text}"
        );
        assert!(!text.contains("Chain intact and signed"), "{text}");
    }

    #[test]
    fn a_log_cut_back_while_the_proxy_runs_is_shown_with_the_missing_records() {
        let tmp = TempDir::new();
        let config = config(tmp.path());
        let audit = AuditLog::open(&config, tmp.path()).unwrap();
        for i in 0..5 {
            audit.record(event(i)).unwrap();
        }
        audit.flush().unwrap();
        let file = log_files(&config.dir).unwrap()[0].path.clone();
        let first = std::fs::metadata(&file).unwrap().len();
        for i in 5..10 {
            audit.record(event(i)).unwrap();
        }
        audit.flush().unwrap();
        let live = LiveVerification::default();
        live.refresh(&audit, false).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(first)
            .unwrap();
        // Both an incremental look and a full one see it.
        let status = live.refresh(&audit, false).unwrap();
        let text = status_banner(&status, &audit);
        assert!(text.contains("BROKEN"), "{text}");
        let text = banner(&audit);
        assert!(text.contains("records 6–11 are missing"), "{text}");
    }
}
