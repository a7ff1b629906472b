//! The tunnel benchmarks of issue 13, printed as one table: one tunnel's bulk throughput and the
//! time to open a tunnel, through sekisho (a raw `CONNECT` with a bearer token, and the real
//! client `sekisho tcp --listen` with a stored session) against a direct TCP connection and
//! `ssh -L` to the same upstream, in interleaved rounds; then sekisho's memory per idle tunnel
//! with 1,000 of them open.
//!
//! ```text
//! cargo run --release -p sekisho-tests --example tunnel_bench
//! ```
//!
//! It builds `cargo build --release -p sekisho --bin sekisho` and runs itself again with
//! `SEKISHO_BIN` naming that binary (set `SEKISHO_BIN` to measure another one) and sekisho's
//! `SEKISHO_LOG=warn` (unless set). Sizes: `ROUNDS` (5), `BULK_MIB` (512), `PROBES` (opens per
//! path and round, 200), `TUNNELS` (idle tunnels, 1000). See `tests/bench/TUNNEL.md`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark tool: a panic with context is its failure report"
)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "byte counts and durations become floating-point rates for printing"
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sekisho_tests::{Agent, DEADLINE, accepting, clean_cargo_env, eventually, stack, workspace};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The tunnel route's name and port, as clients ask for it.
const TARGET: &str = "db.internal:5432";

/// The first byte of a bulk transfer: the upstream reads a length, discards that many bytes and
/// answers one byte. Any other first byte starts an echo.
const SINK: u8 = b'S';

/// The size of each write of a bulk transfer.
const CHUNK: usize = 256 * 1024;

fn main() -> ExitCode {
    if std::env::var_os("SEKISHO_BIN").is_none() || std::env::var_os("SEKISHO_LOG").is_none() {
        return run_again();
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench(Sizes::from_env()));
    ExitCode::SUCCESS
}

/// Builds the release binary when `SEKISHO_BIN` is not set and runs this program again with
/// `SEKISHO_BIN` and `SEKISHO_LOG` set (the harness reads both from the environment).
fn run_again() -> ExitCode {
    let bin = match std::env::var_os("SEKISHO_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_release(),
    };
    let log = std::env::var_os("SEKISHO_LOG").unwrap_or_else(|| "warn".into());
    let status = std::process::Command::new(std::env::current_exe().expect("this program"))
        .args(std::env::args_os().skip(1))
        .env("SEKISHO_BIN", bin)
        .env("SEKISHO_LOG", log)
        .status()
        .expect("running the benchmark");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo build --release -p sekisho --bin sekisho`; the binary's path.
fn build_release() -> PathBuf {
    eprintln!("building the release sekisho (cargo build --release -p sekisho --bin sekisho)");
    let mut cargo =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    clean_cargo_env(&mut cargo);
    let status = cargo
        .args(["build", "--release", "-p", "sekisho", "--bin", "sekisho"])
        .current_dir(workspace())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --release -p sekisho failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    target.join("release").join("sekisho")
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Interleaved rounds.
    rounds: usize,
    /// Bytes per bulk transfer.
    bulk: u64,
    /// Opens per path and round.
    probes: usize,
    /// Idle tunnels for the memory figure.
    tunnels: usize,
}

impl Sizes {
    fn from_env() -> Self {
        let read = |name: &str, default: u64| -> u64 {
            std::env::var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        Sizes {
            rounds: read("ROUNDS", 5) as usize,
            bulk: read("BULK_MIB", 512) * 1024 * 1024,
            probes: read("PROBES", 200) as usize,
            tunnels: read("TUNNELS", 1000) as usize,
        }
    }
}

/// The ways to the upstream that are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A TCP connection straight to the upstream.
    Direct,
    /// A raw HTTP/1.1 `CONNECT` to sekisho with a bearer token.
    Connect,
    /// `sekisho tcp --listen` (the real client) with a stored session.
    Client,
    /// `ssh -L` port forwarding to sshd on this machine.
    Ssh,
}

impl Way {
    const ALL: [Way; 4] = [Way::Direct, Way::Connect, Way::Client, Way::Ssh];

    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct TCP",
            Way::Connect => "sekisho, raw CONNECT (bearer)",
            Way::Client => "sekisho tcp --listen (session)",
            Way::Ssh => "ssh -L",
        }
    }
}

/// Where each way starts.
#[derive(Debug)]
struct Ends {
    upstream: SocketAddr,
    proxy: SocketAddr,
    /// `CONNECT …` with the bearer token, the whole request head.
    connect_head: Vec<u8>,
    client: SocketAddr,
    ssh: SocketAddr,
}

impl Ends {
    /// A connection that reaches the upstream by `way`, ready for the upstream's protocol.
    async fn open(&self, way: Way) -> TcpStream {
        let address = match way {
            Way::Direct => self.upstream,
            Way::Connect => self.proxy,
            Way::Client => self.client,
            Way::Ssh => self.ssh,
        };
        let mut stream = TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("{}: connecting {address}: {e}", way.name()));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        if way == Way::Connect {
            stream.write_all(&self.connect_head).await.unwrap();
            read_connect_answer(&mut stream).await;
        }
        stream
    }
}

/// Reads the proxy's answer head to a `CONNECT` and panics unless it is a 200. The upstream
/// never speaks first, so no tunnel byte can follow the head before the client writes: reading
/// in chunks loses nothing, which the assertion checks.
async fn read_connect_answer(stream: &mut TcpStream) {
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await.expect("reading the answer");
        assert!(
            n > 0,
            "the proxy closed before the end of the head: {head:?}"
        );
        head.extend_from_slice(&buffer[..n]);
        assert!(head.len() < 16 * 1024, "an answer head over 16 KiB");
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 200"), "CONNECT answered {text}");
    assert!(
        text.ends_with("\r\n\r\n") && text.find("\r\n\r\n") == Some(text.len() - 4),
        "bytes after the head: {text:?}"
    );
}

/// The upstream: per connection, a bulk sink (first byte [`SINK`]) or an echo.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_upstream(stream));
        }
    });
    address
}

async fn serve_upstream(mut stream: TcpStream) {
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut first = [0u8; 1];
    if stream.read_exact(&mut first).await.is_err() {
        return; // a readiness check's connection
    }
    if first[0] == SINK {
        let mut length = [0u8; 8];
        if stream.read_exact(&mut length).await.is_err() {
            return;
        }
        let mut left = u64::from_be_bytes(length);
        let mut buffer = vec![0u8; CHUNK];
        while left > 0 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
        let _ = stream.write_all(b"K").await;
        return;
    }
    if stream.write_all(&first).await.is_err() {
        return;
    }
    let (mut read, mut write) = stream.into_split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
    let _ = write.shutdown().await;
}

/// One bulk transfer of `bytes` by `way`: the seconds from the first byte sent until the
/// upstream's answer that it has them all (the open is not counted).
async fn bulk(ends: &Ends, way: Way, bytes: u64, data: &[u8]) -> f64 {
    let mut stream = ends.open(way).await;
    let started = Instant::now();
    let mut header = vec![SINK];
    header.extend_from_slice(&bytes.to_be_bytes());
    stream.write_all(&header).await.unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        stream.write_all(&data[..n]).await.unwrap();
        left -= n as u64;
    }
    let mut done = [0u8; 1];
    stream
        .read_exact(&mut done)
        .await
        .unwrap_or_else(|e| panic!("{}: the upstream's answer: {e}", way.name()));
    started.elapsed().as_secs_f64()
}

/// One open by `way`: from the start of `connect()` until a byte sent through comes back
/// echoed (for the raw CONNECT: including the request and its 200).
async fn open_once(ends: &Ends, way: Way) -> Duration {
    let started = Instant::now();
    let mut stream = ends.open(way).await;
    stream.write_all(b"p").await.unwrap();
    let mut echoed = [0u8; 1];
    stream
        .read_exact(&mut echoed)
        .await
        .unwrap_or_else(|e| panic!("{}: the echo: {e}", way.name()));
    started.elapsed()
}

/// What was measured for one way.
#[derive(Debug, Default)]
struct Measured {
    /// MB/s (10^6 bytes) of each round's bulk transfer.
    throughput: Vec<f64>,
    /// Every open, microseconds.
    opens: Vec<f64>,
    /// Each round's median open, microseconds.
    round_medians: Vec<f64>,
}

async fn bench(sizes: Sizes) {
    let upstream = upstream().await;
    let routes = format!(
        "  - id: db\n    from: tcp+http://{TARGET}\n    to: tcp://{upstream}\n  \
         - id: web\n    from: http://127.0.0.1\n    to: http://{{echo}}\n"
    );
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |o| o.routes_yaml = routes).await;
    let pid = proxy.pid().expect("sekisho runs");
    let token = idp
        .token(&[
            ("sub", "alice"),
            ("aud", "sekisho"),
            ("alg", "ES256"),
            ("ttl", "3600"),
        ])
        .await;
    let connect_head = format!(
        "CONNECT {TARGET} HTTP/1.1\r\nHost: {TARGET}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes();

    // The real client, with the cookies of a session signed in through the provider's form.
    let alice = Agent::new();
    alice
        .login(
            &format!("{}/hello", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let config_dir = tempfile::tempdir().expect("tempdir");
    write_credentials(config_dir.path(), &proxy.base(), &alice);
    let (_client, client) = start_client(config_dir.path(), &proxy.base()).await;

    let ssh = Ssh::start(upstream).await;
    let ends = Ends {
        upstream,
        proxy: proxy.http,
        connect_head,
        client,
        ssh: ssh.listen,
    };

    // Warm-up: one open and a 16 MiB transfer each way, not counted.
    let data = vec![0x5a_u8; CHUNK];
    for way in Way::ALL {
        open_once(&ends, way).await;
        bulk(&ends, way, 16 * 1024 * 1024, &data).await;
    }

    let cpu_start = cpu_seconds(pid);
    let mut measured: Vec<Measured> = Way::ALL.iter().map(|_| Measured::default()).collect();
    for round in 0..sizes.rounds {
        // Each round starts with another way, so that none is always first or last.
        for step in 0..Way::ALL.len() {
            let index = (round + step) % Way::ALL.len();
            let way = Way::ALL[index];
            let seconds = bulk(&ends, way, sizes.bulk, &data).await;
            let mut opens = Vec::with_capacity(sizes.probes);
            for _ in 0..sizes.probes {
                opens.push(open_once(&ends, way).await.as_secs_f64() * 1e6);
            }
            let m = &mut measured[index];
            m.throughput.push(sizes.bulk as f64 / seconds / 1e6);
            m.round_medians.push(percentile(&mut opens.clone(), 0.5));
            m.opens.extend(opens);
        }
        eprintln!("round {}/{} done", round + 1, sizes.rounds);
    }
    let cpu_rounds = cpu_seconds(pid) - cpu_start;

    let memory = idle_tunnels(&ends, pid, sizes.tunnels).await;

    println!(
        "{}",
        table(
            sizes,
            &mut measured,
            &memory,
            cpu_rounds,
            &ssh.cipher,
            &proxy.logs()
        )
    );
}

/// Writes the credentials file `sekisho login` would have written for `origin`: the agent's
/// sekisho cookies (`_sekisho…`), mode 0600.
fn write_credentials(dir: &Path, origin: &str, agent: &Agent) {
    let cookies: Vec<String> = agent
        .cookies()
        .into_iter()
        .filter(|(name, _)| name.starts_with("_sekisho"))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(!cookies.is_empty(), "no sekisho cookie after the login");
    let expires_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 8 * 3600;
    let credentials = json!({
        origin: {"cookies": cookies, "expires_at": expires_at, "user": "alice@example.com"}
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("credentials.json"))
        .expect("creating credentials.json");
    file.write_all(credentials.to_string().as_bytes())
        .expect("writing credentials.json");
}

/// Starts `sekisho tcp TARGET --listen 127.0.0.1:0 --proxy ORIGIN`; the child and where it
/// listens (from its `Listening on ADDR for …` line).
async fn start_client(config_dir: &Path, origin: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(sekisho_tests::sekisho_binary())
        .args(["tcp", TARGET, "--listen", "127.0.0.1:0", "--proxy", origin])
        .env("SEKISHO_CONFIG_DIR", config_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning sekisho tcp");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let listening = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("sekisho tcp's stderr") {
            if let Some(rest) = line.strip_prefix("Listening on ") {
                let address = rest.split_whitespace().next().expect("an address");
                return address.parse::<SocketAddr>().expect("a socket address");
            }
            eprintln!("sekisho tcp: {line}");
        }
        panic!("sekisho tcp exited before listening");
    })
    .await
    .expect("sekisho tcp did not say where it listens");
    // Anything it says later besides a tunnel's opening and closing (a failure) is shown.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let routine = line.ends_with(" open") || line.contains(" closed (");
            if !routine {
                eprintln!("sekisho tcp: {line}");
            }
        }
    });
    (child, listening)
}

/// sshd started inetd-style (`sshd -i`) for each connection to a loopback port, and an
/// `ssh -N -L` client forwarding a local port to the upstream through it.
struct Ssh {
    /// The forwarded local port.
    listen: SocketAddr,
    /// The cipher the two agreed on.
    cipher: String,
    _client: Child,
    _dir: tempfile::TempDir,
}

impl Ssh {
    async fn start(upstream: SocketAddr) -> Ssh {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("running ssh-keygen");
            assert!(status.success(), "ssh-keygen failed");
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "HostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nPidFile none\nStrictModes no\n\
                 AllowTcpForwarding yes\nLogLevel ERROR\n",
                d = d.display()
            ),
        )
        .expect("sshd_config");
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding sshd's port");
        let sshd = listener.local_addr().expect("sshd's port");
        let config = d.join("sshd_config");
        let sshd_log = d.join("sshd.log");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let output = stream.try_clone().expect("dup of the connection");
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&sshd_log)
                    .expect("sshd.log");
                // The child owns the connection; this side's copies close when `spawn` returns.
                let spawned = std::process::Command::new("/usr/sbin/sshd")
                    .arg("-i")
                    .arg("-f")
                    .arg(&config)
                    .stdin(Stdio::from(OwnedFd::from(stream)))
                    .stdout(Stdio::from(OwnedFd::from(output)))
                    .stderr(Stdio::from(log))
                    .spawn();
                if let Ok(mut child) = spawned {
                    std::thread::spawn(move || child.wait());
                }
            }
        });

        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let options = |command: &mut Command| {
            command
                .args(["-F", "/dev/null", "-i"])
                .arg(d.join("client_key"))
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                    "-p",
                ])
                .arg(sshd.port().to_string());
        };

        // The cipher, from a verbose one-shot session.
        let mut probe = Command::new("ssh");
        options(&mut probe);
        let output = probe
            .arg("-v")
            .arg(format!("{user}@127.0.0.1"))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running ssh");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "ssh to the benchmark's sshd failed:\n{said}\nsshd log:\n{}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
        let cipher = said
            .lines()
            .find_map(|l| l.split_once("kex: client->server cipher: "))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();

        for _ in 0..5 {
            let listen = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let mut command = Command::new("ssh");
            options(&mut command);
            let mut client = command
                .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
                .arg(format!("{listen}:{upstream}"))
                .arg(format!("{user}@127.0.0.1"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawning ssh -L");
            if accepting(&mut client, listen, "ssh -L").await {
                return Ssh {
                    listen,
                    cipher,
                    _client: client,
                    _dir: dir,
                };
            }
            // Exited: most likely the port was taken meanwhile; try another.
        }
        panic!("ssh -L did not start");
    }
}

/// sekisho's memory and CPU with idle tunnels open.
#[derive(Debug)]
struct Memory {
    tunnels: usize,
    /// VmRSS before, KiB.
    before: u64,
    /// VmRSS with the tunnels open, KiB.
    with: u64,
    /// VmRSS after the idle window, KiB.
    after_idle: u64,
    /// VmRSS once they are closed, KiB.
    after_close: u64,
    /// CPU seconds sekisho spent while they were opened.
    cpu_open: f64,
    /// Wall seconds the opening took.
    wall_open: f64,
    /// CPU seconds sekisho spent while they idled for `idle`.
    cpu_idle: f64,
    idle: Duration,
}

/// Opens `count` tunnels by raw CONNECT (each echoes one byte, so its relay runs), reads
/// sekisho's VmRSS before and with them, lets them idle, closes them, and checks that a new
/// tunnel still works.
async fn idle_tunnels(ends: &Ends, pid: u32, count: usize) -> Memory {
    const IDLE: Duration = Duration::from_secs(6);
    let fds_before = open_fds(pid);
    let before = vm_rss(pid);
    let cpu = cpu_seconds(pid);
    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = ends.open(Way::Connect).await;
        stream.write_all(b"i").await.unwrap();
        let mut echoed = [0u8; 1];
        stream.read_exact(&mut echoed).await.unwrap();
        open.push(stream);
    }
    let wall_open = started.elapsed().as_secs_f64();
    let cpu_open = cpu_seconds(pid) - cpu;
    let with = vm_rss(pid);
    // A measurement window, not a wait for a condition: what sekisho spends on idle tunnels
    // (its credential sweep runs every 2 s).
    let cpu = cpu_seconds(pid);
    tokio::time::sleep(IDLE).await;
    let cpu_idle = cpu_seconds(pid) - cpu;
    let after_idle = vm_rss(pid);
    drop(open);
    // A little slack: sekisho may hold a few descriptors more for other reasons (a new audit file).
    eventually("sekisho to close the tunnels' sockets", || async {
        open_fds(pid) <= fds_before + 16
    })
    .await;
    let after_close = vm_rss(pid);
    open_once(ends, Way::Connect).await;
    Memory {
        tunnels: count,
        before,
        with,
        after_idle,
        after_close,
        cpu_open,
        wall_open,
        cpu_idle,
        idle: IDLE,
    }
}

/// `VmRSS` of `pid`, KiB.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// User plus system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command's closing parenthesis: state is field 3; utime and stime are
    // fields 14 and 15, in clock ticks (100 per second on Linux).
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Open file descriptors of `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .count()
}

/// The `p` quantile (nearest rank) of `values`.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// The report.
fn table(
    sizes: Sizes,
    measured: &mut [Measured],
    memory: &Memory,
    cpu_rounds: f64,
    cipher: &str,
    proxy_log: &str,
) -> String {
    let mut out = String::new();
    let mib = sizes.bulk / (1024 * 1024);
    let _ = writeln!(
        out,
        "tunnel benchmark: {} interleaved rounds; per round and path one {mib} MiB transfer \
         client → upstream and {} opens; {} cores",
        sizes.rounds,
        sizes.probes,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<32} {:>26} {:>10} {:>22} {:>10}",
        "path", "MB/s median (min–max)", "open p50", "round p50s (min–max)", "open p99"
    );
    let mut medians = Vec::new();
    for (way, m) in Way::ALL.iter().zip(measured.iter_mut()) {
        let throughput = percentile(&mut m.throughput, 0.5);
        let (lo, hi) = min_max(&m.throughput);
        let p50 = percentile(&mut m.opens, 0.5);
        let p99 = percentile(&mut m.opens, 0.99);
        let (rlo, rhi) = min_max(&m.round_medians);
        let _ = writeln!(
            out,
            "{:<32} {:>26} {:>7.0} µs {:>19} µs {:>7.0} µs",
            way.name(),
            format!("{throughput:.0} ({lo:.0}–{hi:.0})"),
            p50,
            format!("{rlo:.0}–{rhi:.0}"),
            p99
        );
        medians.push((throughput, p50));
    }
    let _ = writeln!(
        out,
        "(MB = 10^6 bytes; opens: connect() until one byte comes back echoed; ssh cipher {cipher})"
    );
    let kib = |k: u64| k as f64 / 1024.0;
    let per_tunnel = (memory.with as f64 - memory.before as f64) / memory.tunnels as f64;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} idle tunnels (raw CONNECT, bearer, one echoed byte each): sekisho VmRSS {:.1} MiB → \
         {:.1} MiB = {per_tunnel:.1} KiB per tunnel; {:.1} MiB after {} s idle; {:.1} MiB once \
         closed (a new tunnel still echoes)",
        memory.tunnels,
        kib(memory.before),
        kib(memory.with),
        kib(memory.after_idle),
        memory.idle.as_secs(),
        kib(memory.after_close),
    );
    let _ = writeln!(
        out,
        "sekisho CPU: {:.2} s to open them ({:.0} µs per tunnel; {:.2} s wall), {:.2} s in {} s \
         idle with them open; {:.2} s over the measured rounds",
        memory.cpu_open,
        memory.cpu_open * 1e6 / memory.tunnels as f64,
        memory.wall_open,
        memory.cpu_idle,
        memory.idle.as_secs(),
        cpu_rounds,
    );
    let (direct, _) = medians[0];
    let (connect, connect_open) = medians[1];
    let (client, client_open) = medians[2];
    let (_, ssh_open) = medians[3];
    let _ = writeln!(out);
    let _ = writeln!(out, "ratios (medians):");
    let _ = writeln!(
        out,
        "  throughput, raw CONNECT / direct:     {:.2} (target ≥ 0.80)",
        connect / direct
    );
    let _ = writeln!(
        out,
        "  throughput, sekisho tcp / direct:     {:.2}",
        client / direct
    );
    let _ = writeln!(
        out,
        "  open p50, raw CONNECT / ssh -L:       {:.2} (target < 1: faster than ssh -L)",
        connect_open / ssh_open
    );
    let _ = writeln!(
        out,
        "  open p50, sekisho tcp / ssh -L:       {:.2}",
        client_open / ssh_open
    );
    let warnings = proxy_log.lines().filter(|l| l.contains("WARN")).count();
    let errors = proxy_log.lines().filter(|l| l.contains("ERROR")).count();
    let _ = writeln!(
        out,
        "sekisho logged {warnings} warnings and {errors} errors (SEKISHO_LOG={})",
        std::env::var("SEKISHO_LOG").unwrap_or_default()
    );
    out
}
