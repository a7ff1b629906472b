//! A real `redis-server` for the shared-state tests, on a Unix socket in a temporary directory
//! (no TCP port to pick), without persistence: a restart comes back empty, the hardest case for
//! the instances that must repopulate it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::DEADLINE;

/// A running (or stopped) Redis server.
#[derive(Debug)]
pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// With TLS: the TCP port and the CA certificate (PEM) that issued the server's.
    tls: Option<(u16, String)>,
}

/// The ACL user the TLS server has: only the commands and keys sekisho uses.
pub const ACL_USER: &str = "sekisho";
/// Its password.
pub const ACL_PASSWORD: &str = "redis-password-for-tests";
/// The ACL rule of that user (also the one the README recommends).
pub const ACL_RULE: &str = "on ~sekisho:* resetchannels -@all +ping +xadd +xread +xrevrange +zadd +zrangebyscore +zremrangebyscore";

impl Redis {
    /// Starts a server on `{dir}/redis.sock` and waits until it answers `PING`.
    pub async fn start() -> Redis {
        let mut redis = Redis {
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            tls: None,
        };
        redis.start_again().await;
        redis
    }

    /// Starts a server that also listens with TLS on 127.0.0.1 (a port found free just
    /// before; retried on another when it was taken meanwhile), with the default user off and
    /// [`ACL_USER`] allowed [`ACL_RULE`]. The Unix socket stays for `redis-cli`.
    pub async fn start_tls() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::pki::TestCa::new("redis test CA");
        let issued = ca.server("redis", "IP:127.0.0.1");
        std::fs::copy(&ca.cert, dir.path().join("ca.crt")).expect("copy CA");
        std::fs::copy(&issued.cert, dir.path().join("tls.crt")).expect("copy cert");
        std::fs::copy(&issued.key, dir.path().join("tls.key")).expect("copy key");
        let cert = std::fs::read_to_string(&ca.cert).expect("CA");
        let mut redis = Redis {
            dir,
            child: None,
            tls: None,
        };
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            redis.tls = Some((port, cert.clone()));
            if redis.launch().await {
                return redis;
            }
            redis.child = None;
        }
        panic!(
            "redis-server did not listen with TLS; log:\n{}",
            redis.logs()
        );
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The `shared_state` YAML for sekisho (top-level section): the Unix socket, or with TLS
    /// `rediss://127.0.0.1:PORT` trusting the server's certificate, as [`ACL_USER`] with
    /// `password`.
    pub fn shared_state_yaml(&self, password: &str) -> String {
        match &self.tls {
            None => format!(
                "shared_state:\n  redis:\n    url: unix://{}\n",
                self.socket().display()
            ),
            Some((port, _)) => format!(
                "shared_state:\n  redis:\n    url: rediss://127.0.0.1:{port}\n    tls: {{ca_file: {}}}\n    username: {ACL_USER}\n    password: {password}\n",
                self.dir.path().join("ca.crt").display()
            ),
        }
    }

    /// Starts the server again after [`Redis::stop`] (empty: nothing was persisted).
    pub async fn start_again(&mut self) {
        assert!(
            self.launch().await,
            "redis-server exited at start; log:\n{}",
            self.logs()
        );
    }

    /// Starts the server and waits until it answers `PING`: false when it exited first (its
    /// TLS port taken meanwhile).
    async fn launch(&mut self) -> bool {
        assert!(self.child.is_none(), "redis-server is already running");
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let mut command = Command::new("redis-server");
        if let Some((port, _)) = &self.tls {
            let dir = self.dir.path();
            command
                .args(["--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--tls-cert-file")
                .arg(dir.join("tls.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("tls.key"))
                .args(["--tls-auth-clients", "no", "--user", "default", "off"])
                .args(["--user", ACL_USER, &format!(">{ACL_PASSWORD}")])
                .args(ACL_RULE.split(' '))
                .args(["--user", "admin", "on", "nopass", "~*", "&*", "+@all"]);
        }
        let child = command
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::from(log))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning redis-server (apt install redis-server)");
        let child = self.child.insert(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !pong(&socket, self.tls.is_some()).await {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.child = None;
                return false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Kills the server (SIGKILL: nothing is saved) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(DEADLINE, child.wait()).await;
        }
    }

    /// The server's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Runs one command with `redis-cli` and returns its output (for assertions on the keys).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = std::process::Command::new("redis-cli");
        command.arg("-s").arg(self.socket());
        if self.tls.is_some() {
            command.args(["--user", "admin", "--pass", "x", "--no-auth-warning"]);
        }
        let output = command.args(args).output().expect("running redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// True when the server at `socket` answers `PING` with `PONG` (signed in as the admin user
/// first when the default user is off).
async fn pong(socket: &Path, as_admin: bool) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let mut request = Vec::new();
    if as_admin {
        request.extend_from_slice(b"*3\r\n$4\r\nAUTH\r\n$5\r\nadmin\r\n$1\r\nx\r\n");
    }
    request.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    if stream.write_all(&request).await.is_err() {
        return false;
    }
    let expected: &[u8] = if as_admin {
        b"+OK\r\n+PONG\r\n"
    } else {
        b"+PONG\r\n"
    };
    let mut reply = vec![0u8; expected.len()];
    stream.read_exact(&mut reply).await.is_ok() && reply == expected
}
