//! The audit log's commands: `audit verify` checks the chain, checkpoints and signed head;
//! `audit query` searches the records through their index.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

// The doc comments of the variants and fields are the commands' help texts.
#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Verify the hash chain and checkpoint signatures of audit log files (oldest first);
    /// exit 1 at the first break, when lines follow the last checkpoint unsigned, or when the
    /// log ends before the signed head (records cut off).
    Verify {
        /// Configuration file: verifies its `audit.dir` with `audit-signing.pub` there, against
        /// the head `{state_dir}/audit-head.json`.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// File of checkpoint public keys (hex of a 32-byte Ed25519 key per line, like
        /// `audit-signing.pub`, which lists every key that signed the log); repeatable.
        #[arg(long, required_unless_present = "config")]
        public_key: Vec<PathBuf>,
        /// The newest signed checkpoint, kept apart from the log (`audit-head.json`, or the
        /// last checkpoint line from the OTLP pipeline): the log must reach it.
        #[arg(long)]
        head: Option<PathBuf>,
        /// The files do not start at the beginning of the log (the first is a later rotation).
        #[arg(long)]
        mid_chain: bool,
        /// Audit log files, oldest first, or directories (all their log files, in order).
        #[arg(required_unless_present = "config")]
        files: Vec<PathBuf>,
    },
    /// Search the audit log: `--since 1h --user alice@example.com --decision deny`.
    Query(Box<AuditQuery>),
}

#[derive(clap::Args)]
pub(super) struct AuditQuery {
    /// Configuration file (the log is in its `audit.dir`).
    #[arg(short, long, conflicts_with = "dir", required_unless_present = "dir")]
    config: Option<PathBuf>,
    /// The audit directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Records from this long ago (`90m`, `1h`, `7d`) or this RFC 3339 time on.
    #[arg(long)]
    since: Option<String>,
    /// Records before this time (same forms as `--since`).
    #[arg(long)]
    until: Option<String>,
    /// The user: email (or subject).
    #[arg(long)]
    user: Option<String>,
    /// allow, deny, login, unauthenticated, error; or logout, refresh, credential_rejected,
    /// source_banned, source_unbanned, backchannel_logout, backchannel_logout_sent, nic_drop,
    /// upstream_bypass.
    #[arg(long)]
    decision: Option<String>,
    /// Route id.
    #[arg(long)]
    route: Option<String>,
    /// Client address.
    #[arg(long)]
    source: Option<String>,
    /// Container id.
    #[arg(long)]
    container: Option<String>,
    /// Request id (`X-Request-Id`).
    #[arg(long)]
    request_id: Option<String>,
    /// Show at most this many (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// `table` (one line per record) or `json` (JSON lines, the records as written).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

/// Runs an `audit` subcommand.
pub(super) fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Query(query) => audit_query(&query),
        AuditCommand::Verify {
            config,
            public_key,
            head,
            mid_chain,
            files,
        } => audit_verify(config.as_deref(), public_key, head, mid_chain, files),
    }
}

/// `sekisho audit query`: matching records, newest last, and what the index saved.
fn audit_query(query: &AuditQuery) -> anyhow::Result<ExitCode> {
    use sekisho::audit::query::{self, Filter};
    let dir = match (&query.dir, &query.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => {
            sekisho_config::load_without_secrets(config)
                .map_err(|errors| anyhow::anyhow!("{errors}"))?
                .audit
                .dir
        }
        (None, None) => anyhow::bail!("give --config or --dir"),
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let time = |text: &Option<String>, flag: &str| {
        text.as_deref()
            .map(|t| query::parse_time(t, now))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    };
    let filter = Filter {
        since_ms: time(&query.since, "--since")?,
        until_ms: time(&query.until, "--until")?,
        user: query.user.clone(),
        decision: query.decision.clone(),
        route: query.route.clone(),
        source: query.source.clone(),
        container: query.container.clone(),
        request_id: query.request_id.clone(),
        seq: None,
    };
    let found = query::query(&dir, &filter, query.limit)?;
    for record in &found.records {
        if query.format == "json" {
            println!("{record}");
        } else {
            println!("{}", query::table_row(record));
        }
    }
    eprintln!(
        "{} matching records ({} shown); index: {} blocks read, {} skipped, {} bytes unindexed",
        found.matched,
        found.records.len(),
        found.blocks_read,
        found.blocks_skipped,
        found.unindexed_bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// `sekisho audit verify`: exit 1 at a break, an unsigned tail or records cut off before the
/// signed head.
fn audit_verify(
    config: Option<&std::path::Path>,
    mut public_keys: Vec<PathBuf>,
    mut head: Option<PathBuf>,
    mid_chain: bool,
    mut files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = config {
        let config = sekisho_config::load_without_secrets(path)
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
        if files.is_empty() {
            files.push(config.audit.dir.clone());
        }
        if public_keys.is_empty() {
            public_keys.push(config.audit.dir.join("audit-signing.pub"));
        }
        if head.is_none() {
            let path = sekisho::audit::writer::head_path(&config.state_dir);
            anyhow::ensure!(
                path.exists(),
                "{}: no signed head: without it a log cut back to an earlier checkpoint cannot be told from a complete one; pass --head with a copy kept elsewhere (the OTLP pipeline's last checkpoint line)",
                path.display()
            );
            head = Some(path);
        }
    }
    let mut expanded = Vec::new();
    for path in &files {
        if path.is_dir() {
            let logs = sekisho::audit::writer::log_files(path)
                .with_context(|| format!("reading {}", path.display()))?;
            // An empty directory is still a log (one cut back to nothing) when there is a head.
            anyhow::ensure!(
                !logs.is_empty() || head.is_some(),
                "{}: no audit log files",
                path.display()
            );
            expanded.extend(logs.into_iter().map(|f| f.path));
        } else {
            expanded.push(path.clone());
        }
    }
    let files = &expanded[..];
    let mut keys = Vec::new();
    for path in &public_keys {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            anyhow::ensure!(
                line.is_empty()
                    || (line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit())),
                "{}:{}: expected 64 hex digits (an Ed25519 public key) per line",
                path.display(),
                n + 1
            );
        }
        keys.extend(sekisho::audit::writer::parse_public_keys(&text));
    }
    anyhow::ensure!(!keys.is_empty(), "no public key given");
    let mut text = String::new();
    let mut boundaries = Vec::new();
    for file in files {
        let content =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        boundaries.push((file.display().to_string(), content.lines().count()));
        text.push_str(&content);
        if !content.is_empty() && !content.ends_with('\n') {
            text.push('\n');
        }
    }
    let mut verifier = sekisho::audit::chain::Verifier::with_keys(keys, !mid_chain);
    if let Some(path) = &head {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed = sekisho::audit::chain::Head::parse(&text)
            .with_context(|| format!("{}: not a signed head", path.display()))?;
        verifier
            .set_head(parsed)
            .with_context(|| format!("{}: not a signed head of this log", path.display()))?;
    }
    for line in text.lines() {
        if !verifier.feed(line) {
            break;
        }
    }
    let report = verifier.result();
    // Name the file and line of a break.
    let locate = |mut n: u64| -> String {
        for (file, count) in &boundaries {
            let count = *count as u64;
            if n <= count {
                return format!("{file}:{n}");
            }
            n -= count;
        }
        format!("line {n}")
    };
    println!(
        "{} lines, {} valid checkpoints{}",
        report.lines,
        report.checkpoints,
        match report.keys_introduced {
            0 => String::new(),
            n => format!(", {n} key introductions"),
        }
    );
    if let Some(first) = report.first_seq.filter(|s| *s > 0) {
        println!("the log starts at seq {first} (mid-chain): records before it are not verified");
    }
    if let Some(checkpoint) = &report.last_checkpoint {
        println!(
            "last checkpoint: seq {} signed at {}",
            checkpoint.seq, checkpoint.time
        );
    }
    if let Some((line, why)) = &report.first_break {
        println!("BROKEN at {}: {why}", locate(*line));
        return Ok(ExitCode::FAILURE);
    }
    if let Some(missing) = &report.missing {
        println!("TRUNCATED: {missing}");
        return Ok(ExitCode::FAILURE);
    }
    if report.unsigned_tail > 0 {
        println!(
            "chain intact, but the last {} lines follow the last checkpoint unsigned (truncated or not yet checkpointed)",
            report.unsigned_tail
        );
        return Ok(ExitCode::FAILURE);
    }
    match (&report.head, &head) {
        (Some(signed), Some(path)) => println!(
            "chain intact and signed, and it reaches the signed head {} (seq {}, signed at {})",
            path.display(),
            signed.seq,
            signed.time
        ),
        _ => println!(
            "chain intact and signed up to its last checkpoint; no signed head given, so a log cut back to an earlier checkpoint would verify the same: pass -c CONFIG or --head FILE to check that nothing was cut off"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
