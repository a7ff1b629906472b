//! What the socket-hook benchmarks share: cgroup v2 directories removed on drop (also when the
//! example panics), workers (the example's own binary re-executed with arguments) killed and
//! reaped on drop, and percentiles.

#![allow(
    dead_code,
    reason = "included by several examples, each of which uses a part"
)]

use std::{
    error::Error,
    fs,
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A cgroup v2 directory made by the example, removed on drop. Declare children after their
/// parent and workers after the cgroups they are moved into, so that drop order (reverse of
/// declaration) empties and removes the leaves first.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// `<cgroup2 mount>/<prefix>-<pid>`.
    pub fn create(prefix: &str) -> Result<Self, Box<dyn Error>> {
        let path = cgroup2_mount()?.join(format!("{prefix}-{}", std::process::id()));
        fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// A cgroup inside this one.
    pub fn child(&self, name: &str) -> Result<Self, Box<dyn Error>> {
        let path = self.path.join(name);
        fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id: the inode number of the directory.
    pub fn id(&self) -> io::Result<u64> {
        Ok(fs::metadata(&self.path)?.ino())
    }

    /// Moves process `pid` into this cgroup.
    pub fn adopt(&self, pid: u32) -> Result<(), Box<dyn Error>> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .map_err(|e| format!("writing {pid} to {}: {e}", procs.display()))?;
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A reaped process may leave the cgroup "populated" for a moment: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!(
                        "warning: could not remove cgroup {}: {e}",
                        self.path.display()
                    );
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// Where cgroup v2 is mounted, from /proc/mounts (/sys/fs/cgroup on a unified layout,
/// /sys/fs/cgroup/unified on a hybrid one).
pub fn cgroup2_mount() -> Result<PathBuf, Box<dyn Error>> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            match (fields.next(), fields.next()) {
                (Some(point), Some("cgroup2")) => Some(PathBuf::from(point)),
                _ => None,
            }
        })
        .ok_or_else(|| "no cgroup2 mount in /proc/mounts".into())
}

/// This example's binary, re-executed with `args`: it waits for [`Worker::go`] (so that it can
/// be moved into its cgroup before it makes a socket) and talks back in lines on stdout.
/// Killed and reaped on drop.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    pub fn spawn(args: &[&str]) -> Result<Self, Box<dyn Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("the worker's stdout")?;
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it start (call once it is in its cgroup). Its stdin stays open until
    /// [`Worker::finish`].
    pub fn go(&mut self) -> Result<(), Box<dyn Error>> {
        let stdin = self.stdin.as_mut().ok_or("go() after finish()")?;
        writeln!(stdin, "go")?;
        stdin.flush()?;
        Ok(())
    }

    /// Its next line of output (an error if it ended).
    pub fn line(&mut self) -> Result<String, Box<dyn Error>> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("worker {} ended early", self.child.id()).into());
        }
        Ok(line.trim_end().to_owned())
    }

    /// Closes its stdin (the signal to end) and waits for it.
    pub fn finish(&mut self) -> io::Result<ExitStatus> {
        self.stdin = None;
        self.child.wait()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Both fail harmlessly if it already exited and was reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a worker: waits for the parent's [`Worker::go`].
pub fn wait_for_go() -> io::Result<()> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

/// In a worker: blocks until the parent closes stdin ([`Worker::finish`]).
pub fn wait_for_end() -> io::Result<()> {
    let mut rest = Vec::new();
    io::Read::read_to_end(&mut io::stdin().lock(), &mut rest)?;
    Ok(())
}

/// The nearest-rank `p`-quantile (0 < p ≤ 1) of `sorted` (ascending); 0 when empty.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a slice's length"
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// A process's resident set size, from /proc/<pid>/status, in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}
