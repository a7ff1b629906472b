//! The command-line client of TCP tunnels, end to end with the real provider and real
//! programs: `sekisho login` signed in through the browser flow (driven by an [`Agent`]), the
//! real OpenSSH client through `sekisho tcp --stdio` as its ProxyCommand to a real sshd,
//! redis-cli through `sekisho tcp --listen` to a real redis-server, 100 MiB byte-exact through
//! `--listen`, and `sekisho logout` closing an open tunnel within the bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sekisho_tests::{Agent, DEADLINE, Idp, Proxy, accepting, location, sekisho_binary, stack};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a signed-out session's tunnel may stay open (the bound is 10 s).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// The bulk transfer's size.
const BULK: usize = 100 * 1024 * 1024;

#[tokio::test]
async fn login_signs_the_command_line_in_through_the_browser() {
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |_| {}).await;
    let started = Instant::now();
    let alice = sign_in(&proxy, &idp, "alice", "alice-pw").await;
    eprintln!("sekisho login took {:?}", started.elapsed());
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(alice.path().join("credentials.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored[proxy.base()]["user"],
        "alice@example.com",
        "{stored:#}"
    );

    // A callback whose state is not the login's: the CLI's page answers 400 and the login fails.
    let dir = tempfile::tempdir().unwrap();
    let mut cli = login_command(&proxy, dir.path());
    let url = cli.sign_in_url().await;
    let agent = Agent::new();
    let callback = browse_to_callback(&agent, &proxy, &idp, &url, "alice", "alice-pw").await;
    let mut tampered = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = tampered
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                format!("{v}x")
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    let page = agent.browse(tampered.as_str()).await;
    assert_eq!(page.status(), 400, "the CLI's page for a tampered state");
    let (status, stderr) = cli.finish().await;
    assert!(!status.success(), "a tampered state signed in: {stderr}");
    assert!(stderr.contains("state does not match"), "{stderr}");
    let credentials = dir.path().join("credentials.json");
    let kept = std::fs::read_to_string(&credentials).unwrap_or_default();
    assert!(!kept.contains(&proxy.base()), "stored: {kept}");
}

#[tokio::test]
async fn ssh_goes_through_sekisho_tcp_stdio_for_whom_the_policy_allows() {
    let sshd = Sshd::start().await;
    let port = sshd.addr.port();
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.routes_yaml = format!(
            "  - id: shell\n    from: tcp+http://shell.internal:22\n    to: tcp://127.0.0.1:{port}\n    \
             policy: {{allow: {{and: [{{email: {{is: alice@example.com}}}}]}}}}\n  \
             - id: web\n    from: http://127.0.0.1\n    to: http://{{echo}}\n"
        );
    })
    .await;
    let alice = sign_in(&proxy, &idp, "alice", "alice-pw").await;
    let bob = sign_in(&proxy, &idp, "bob", "bob-pw").await;

    let started = Instant::now();
    let output = sshd.ssh(&proxy, alice.path()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ssh as alice failed ({}):\n{stderr}\nsshd log:\n{}",
        output.status,
        sshd.logs()
    );
    assert_eq!(stdout, "hello-from-sshd\nroot\n", "stderr:\n{stderr}");
    eprintln!("ssh through the tunnel took {:?}", started.elapsed());

    let output = sshd.ssh(&proxy, bob.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "ssh as bob got in:\n{stderr}");
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    assert!(
        stderr.contains("denied by policy: rule ") && stderr.contains("routes[0].policy"),
        "sekisho tcp's refusal is not on ssh's stderr:\n{stderr}"
    );
    eprintln!("bob's refusal: {}", stderr.trim());
}

#[tokio::test]
async fn redis_cli_goes_through_sekisho_tcp_listen() {
    let redis = Redis::start().await;
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.routes_yaml = format!(
            "  - id: cache\n    from: tcp+http://cache.internal:6379\n    to: tcp://{}\n  \
             - id: web\n    from: http://127.0.0.1\n    to: http://{{echo}}\n",
            redis.addr
        );
    })
    .await;
    let alice = sign_in(&proxy, &idp, "alice", "alice-pw").await;
    let (local, _tcp) = listen(&proxy, alice.path(), "cache.internal:6379").await;
    assert_eq!(redis_cli(local, &["SET", "k", "v"]).await, "OK");
    assert_eq!(redis_cli(local, &["GET", "k"]).await, "v");
}

#[tokio::test]
async fn a_hundred_mebibytes_cross_sekisho_tcp_listen_byte_exact() {
    let echo = sekisho_tests::echo::tcp().await;
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.routes_yaml = format!(
            "  - id: db\n    from: tcp+http://db.internal:5432\n    to: tcp://{echo}\n  \
             - id: web\n    from: http://127.0.0.1\n    to: http://{{echo}}\n"
        );
    })
    .await;
    let alice = sign_in(&proxy, &idp, "alice", "alice-pw").await;
    let (local, _tcp) = listen(&proxy, alice.path(), "db.internal:5432").await;

    let payload = Arc::new(pattern(BULK));
    let stream = TcpStream::connect(local).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let sent = Arc::clone(&payload);
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(256 * 1024) {
            write.write_all(chunk).await.unwrap();
        }
        write.shutdown().await.unwrap();
    });
    let mut at = 0usize;
    let mut buffer = vec![0u8; 256 * 1024];
    let compared = tokio::time::timeout(DEADLINE * 4, async {
        loop {
            let n = read.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            let end = at + n;
            assert!(end <= BULK, "more came back than was sent ({end} bytes)");
            if buffer[..n] != payload[at..end] {
                let first = (0..n).find(|&i| buffer[i] != payload[at + i]).unwrap();
                panic!("the echo differs at byte {}", at + first);
            }
            at = end;
        }
    })
    .await;
    assert!(
        compared.is_ok(),
        "only {at} of {BULK} bytes came back in time"
    );
    writer.await.unwrap();
    assert_eq!(at, BULK, "the echo ended early");
    let took = started.elapsed();
    eprintln!(
        "100 MiB each way through sekisho tcp --listen in {took:?} ({:.0} MiB/s)",
        100.0 / took.as_secs_f64()
    );
}

#[tokio::test]
async fn logout_closes_the_open_tunnel_and_later_ones_fail() {
    let echo = sekisho_tests::echo::tcp().await;
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.routes_yaml = format!(
            "  - id: db\n    from: tcp+http://db.internal:5432\n    to: tcp://{echo}\n  \
             - id: web\n    from: http://127.0.0.1\n    to: http://{{echo}}\n"
        );
    })
    .await;
    let alice = sign_in(&proxy, &idp, "alice", "alice-pw").await;
    let (local, mut tcp) = listen(&proxy, alice.path(), "db.internal:5432").await;
    let mut tunnel = TcpStream::connect(local).await.unwrap();
    tunnel.write_all(b"still there?").await.unwrap();
    let mut echoed = [0u8; 12];
    tokio::time::timeout(DEADLINE, tunnel.read_exact(&mut echoed))
        .await
        .expect("the echo through the tunnel")
        .unwrap();
    assert_eq!(&echoed, b"still there?");
    tcp.line("the tunnel's opening", |l| {
        l.contains("tunnel to db.internal:5432 open")
    })
    .await;

    let mut logout = sekisho(alice.path());
    logout.arg("logout").arg(proxy.base());
    let signed_out = Instant::now();
    let (status, stderr) = Cli::spawn("sekisho logout", logout).finish().await;
    assert!(status.success(), "sekisho logout failed:\n{stderr}");
    assert!(stderr.contains("ended the session"), "{stderr}");
    assert!(stderr.contains("Signed out of"), "{stderr}");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(CLOSE_WITHIN, tunnel.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the tunnel outlived the logout by more than {CLOSE_WITHIN:?}"
    );
    let took = signed_out.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    eprintln!("the logout's tunnel closed {took:?} after the logout started");

    // A new tunnel, through the running --listen and through a new --stdio: not signed in.
    let mut refused = TcpStream::connect(local).await.unwrap();
    let mut nothing = Vec::new();
    tokio::time::timeout(DEADLINE, refused.read_to_end(&mut nothing))
        .await
        .expect("the refused local connection to close")
        .unwrap();
    assert!(nothing.is_empty());
    let line = tcp
        .line("the refusal", |l| l.contains("not signed in to"))
        .await;
    assert!(
        line.contains(&format!("run `sekisho login {}`", proxy.base())),
        "{line}"
    );
    let mut stdio = sekisho(alice.path());
    stdio
        .args(["tcp", "db.internal:5432", "--stdio", "--proxy"])
        .arg(proxy.base());
    let (status, stderr) = Cli::spawn("sekisho tcp --stdio", stdio).finish().await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("not signed in to {}", proxy.base())),
        "{stderr}"
    );
}

/// Runs `sekisho login` for `user` into a new configuration directory, through the browser flow,
/// and checks what it reports and stores. The directory holds the credential. The CLI names the
/// user by verified email, else by subject (bob's email is not verified at the test provider).
async fn sign_in(proxy: &Proxy, idp: &Idp, user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut cli = login_command(proxy, dir.path());
    let url = cli.sign_in_url().await;
    let agent = Agent::new();
    let callback = browse_to_callback(&agent, proxy, idp, &url, user, password).await;
    let page = agent.browse(&callback).await;
    let status = page.status();
    let text = page.text().await.unwrap_or_default();
    assert_eq!(status, 200, "the CLI's page: {text}");
    assert!(text.contains("You can close this window"), "{text}");
    let (status, stderr) = cli.finish().await;
    assert!(status.success(), "sekisho login failed:\n{stderr}");
    let shown = if user == "bob" {
        user.to_owned()
    } else {
        format!("{user}@example.com")
    };
    let signed_in = format!("Signed in to {} as {shown}", proxy.base());
    assert!(stderr.contains(&signed_in), "{stderr}");
    let credentials = dir.path().join("credentials.json");
    let mode = std::fs::metadata(&credentials)
        .unwrap_or_else(|e| panic!("{}: {e}", credentials.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "credentials.json's mode");
    dir
}

/// `sekisho login PROXY --no-browser`, storing into `config_dir`, started.
fn login_command(proxy: &Proxy, config_dir: &Path) -> Cli {
    let mut command = sekisho(config_dir);
    command
        .arg("login")
        .arg(proxy.base())
        .args(["--no-browser", "--timeout", "2m"]);
    Cli::spawn("sekisho login", command)
}

/// Follows the browser flow from the CLI's sign-in `url`: the provider's login, back to
/// `/.sekisho/cli/login`, and its redirect to the CLI's loopback callback, which is returned
/// (not yet visited).
async fn browse_to_callback(
    agent: &Agent,
    proxy: &Proxy,
    idp: &Idp,
    url: &str,
    user: &str,
    password: &str,
) -> String {
    assert!(
        url.starts_with(&format!("{}/.sekisho/cli/login?", proxy.base())),
        "{url}"
    );
    let login = agent.login(url, &idp.issuer, user, password).await;
    assert!(
        login
            .landed
            .starts_with(&format!("{}/.sekisho/cli/login?", proxy.base())),
        "after the provider, the browser went to {}",
        login.landed
    );
    let back = agent.browse(&login.landed).await;
    assert_eq!(back.status(), 302, "{}", login.landed);
    let callback = location(&back, &login.landed);
    assert!(
        callback.starts_with("http://127.0.0.1:") && callback.contains("/callback?code="),
        "{callback}"
    );
    callback
}

/// A `sekisho` command with `SEKISHO_CONFIG_DIR` set to `config_dir`.
fn sekisho(config_dir: &Path) -> Command {
    let mut command = Command::new(sekisho_binary());
    command.env("SEKISHO_CONFIG_DIR", config_dir);
    command
}

/// `sekisho tcp TARGET --listen 127.0.0.1:L` with the credential in `config_dir`, once it
/// announced its listener; L is a free port (found by binding port 0 and closing it, retried when
/// another process took it meanwhile).
async fn listen(proxy: &Proxy, config_dir: &Path, target: &str) -> (SocketAddr, Cli) {
    for _ in 0..5 {
        let local = free_port();
        let mut command = sekisho(config_dir);
        command
            .args(["tcp", target, "--listen"])
            .arg(local.to_string())
            .arg("--proxy")
            .arg(proxy.base());
        let mut cli = Cli::spawn("sekisho tcp --listen", command);
        if cli
            .next_line(|l| l.starts_with("Listening on "))
            .await
            .is_some()
        {
            return (local, cli);
        }
    }
    panic!("sekisho tcp --listen did not start");
}

/// A loopback address whose port was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A command-line child whose stderr is read line by line (and kept for the failure report);
/// killed on drop.
struct Cli {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Arc<Mutex<String>>,
}

impl Cli {
    fn spawn(name: &'static str, mut command: Command) -> Cli {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::unbounded_channel();
        let transcript = Arc::new(Mutex::new(String::new()));
        let kept = Arc::clone(&transcript);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut all = kept.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                let _ = send.send(line);
            }
        });
        Cli {
            name,
            child,
            lines,
            transcript,
        }
    }

    /// The next stderr line that `wanted`, or `None` when stderr ends first (the child exited).
    async fn next_line(&mut self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let found = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = self.lines.recv().await {
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "{} printed no awaited line within {DEADLINE:?}:\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// The next stderr line that `wanted`; panics when the child ends first.
    async fn line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        match self.next_line(wanted).await {
            Some(line) => line,
            None => panic!("{} ended before {what}:\n{}", self.name, self.stderr()),
        }
    }

    /// The URL `sekisho login --no-browser` asks to open.
    async fn sign_in_url(&mut self) -> String {
        self.line("the sign-in URL", |l| l.trim_start().starts_with("http"))
            .await
            .trim()
            .to_owned()
    }

    /// Waits for the exit; the status and all of stderr.
    async fn finish(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit:\n{}", self.name, self.stderr()))
            .unwrap();
        // Stderr is complete once the reader saw its end.
        while self.lines.recv().await.is_some() {}
        (status, self.stderr())
    }

    fn stderr(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("----- {} stderr -----\n{}", self.name, self.stderr());
        }
    }
}

/// A real sshd served inetd-style (`sshd -i` per connection, as sshd cannot listen on port 0)
/// on a loopback port, with a fresh host key and one authorized user key, and the ssh client's
/// files beside them. Its connections' sshd processes are killed on drop.
struct Sshd {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Sshd {
    async fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host_key", "user_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key))
                .stdin(Stdio::null())
                .status()
                .await
                .expect("running ssh-keygen");
            assert!(status.success(), "ssh-keygen for {key}");
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "HostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\nStrictModes no\n\
                 LogLevel ERROR\n",
                d = d.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = d.join("sshd_config");
        let log = d.join("sshd.log");
        let server = tokio::spawn(async move {
            let mut sessions: Vec<Child> = Vec::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let stream = stream.into_std().unwrap();
                stream.set_nonblocking(false).unwrap();
                let socket = OwnedFd::from(stream);
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let child = Command::new("/usr/sbin/sshd")
                    .args(["-i", "-e", "-f"])
                    .arg(&config)
                    .stdin(Stdio::from(socket.try_clone().unwrap()))
                    .stdout(Stdio::from(socket))
                    .stderr(Stdio::from(log))
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawning /usr/sbin/sshd -i");
                sessions.push(child);
            }
        });
        Sshd { addr, dir, server }
    }

    /// Runs the real ssh client through `sekisho tcp --stdio` with the credential in
    /// `config_dir`, as root at shell.internal.
    async fn ssh(&self, proxy: &Proxy, config_dir: &Path) -> std::process::Output {
        let d = self.dir.path();
        let proxy_command = format!(
            "ProxyCommand={} tcp --stdio --proxy {} %h:%p",
            sekisho_binary().display(),
            proxy.base()
        );
        let ssh = Command::new("/usr/bin/ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(d.join("user_key"))
            .args(["-o", "IdentitiesOnly=yes", "-o"])
            .arg(format!(
                "UserKnownHostsFile={}",
                d.join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "BatchMode=yes",
                "-o",
            ])
            .arg(proxy_command)
            .args(["root@shell.internal", "echo hello-from-sshd; id -un"])
            .env("SEKISHO_CONFIG_DIR", config_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(DEADLINE, ssh)
            .await
            .unwrap_or_else(|_| panic!("ssh did not finish; sshd log:\n{}", self.logs()))
            .expect("running ssh")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Dropping the task drops its sshd children, which kills them.
        self.server.abort();
    }
}

/// A real redis-server on a loopback port (it cannot listen on port 0: a free one is found by
/// binding port 0 and closing it, retried when another process took it meanwhile). Killed on
/// drop.
struct Redis {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    async fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let addr = free_port();
            let mut child = Command::new("redis-server")
                .arg("--port")
                .arg(addr.port().to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawning redis-server");
            if accepting(&mut child, addr, "redis-server").await {
                return Redis {
                    addr,
                    child,
                    _dir: dir,
                };
            }
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS...`'s answer, trimmed.
async fn redis_cli(at: SocketAddr, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        DEADLINE,
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(at.port().to_string())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("redis-cli did not finish")
    .expect("running redis-cli");
    assert!(
        output.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `len` bytes of xorshift output: no two windows alike, so a lost, doubled or reordered chunk
/// shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
