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
}

impl Redis {
    /// Starts a server on `{dir}/redis.sock` and waits until it answers `PING`.
    pub async fn start() -> Redis {
        let mut redis = Redis {
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        redis.start_again().await;
        redis
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The `shared_state` YAML for sekisho (top-level section).
    pub fn shared_state_yaml(&self) -> String {
        format!(
            "shared_state:\n  redis:\n    url: unix://{}\n",
            self.socket().display()
        )
    }

    /// Starts the server again after [`Redis::stop`] (empty: nothing was persisted).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
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
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !pong(&socket).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        let output = std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("running redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// True when the server at `socket` answers `PING` with `PONG`.
async fn pong(socket: &Path) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
}
