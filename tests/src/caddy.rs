//! Debian's Caddy as a front proxy for the tests (`forward_auth` in front of sekisho).

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// A running Caddy.
#[derive(Debug)]
pub struct Caddy {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Starts Caddy with one site, `http://{host}:{port}`, whose body is `site` (`{port}` in it
    /// is replaced by the port). Caddy cannot report a port 0 binding: a free port is found by
    /// binding `127.0.0.1:0` and closing it, and the start is retried on another port when
    /// someone took it meanwhile. Returns once it accepts.
    pub async fn start(host: &str, site: &str) -> Caddy {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let port = addr.port();
            let conf = format!(
                "{{\n  admin off\n  auto_https off\n}}\n\
                 http://{host}:{port} {{\n  bind 127.0.0.1\n{site}\n}}\n",
                site = site.replace("{port}", &port.to_string()),
            );
            let conf_path = dir.path().join("Caddyfile");
            std::fs::write(&conf_path, conf).expect("write Caddyfile");
            let log = std::fs::File::create(dir.path().join("caddy.log")).expect("caddy log");
            let mut child = Command::new("/usr/bin/caddy")
                .arg("run")
                .arg("--adapter")
                .arg("caddyfile")
                .arg("--config")
                .arg(&conf_path)
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .expect("spawning /usr/bin/caddy");
            if crate::accepting(&mut child, addr, "caddy").await {
                return Caddy { addr, child, dir };
            }
            // Exited: most likely the port was taken meanwhile; try another.
        }
        panic!("caddy did not start; log:\n{}", self_log(&dir));
    }

    /// Caddy's log so far.
    pub fn log(&self) -> String {
        self_log(&self.dir)
    }
}

fn self_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("caddy.log")).unwrap_or_default()
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
