//! What the socket hooks add to a TCP connection's setup: loopback `connect()`s timed from a
//! process in a cgroup with the hooks attached (A) and from one in a sibling cgroup without (B).
//! Root only: `cargo run --release -p proxy-ebpf --example connect_cost`.
//!
//! The example makes `<cgroup2 mount>/sk-pebench-<pid>/{a,b}`, attaches the hooks to `a` only,
//! and runs four variants, interleaved round by round (A, B, A, B, … in alternating order) so
//! that a noisy machine affects them alike:
//!
//! - **client only**: a worker in A (or B) connects to a listener of this process, which is in
//!   neither; the accepted end runs no program (its socket belongs to the listener's cgroup).
//! - **both ends**: a worker in A (or B) connects to a listener worker in the same cgroup, so
//!   in A both ends run the hooks (connect4, sock_ops on both sides, post_bind4 once for the
//!   listener) — what sekisho sees when a client and an upstream are on the hooked host.
//!
//! Each connect worker (this binary re-executed, moved into its cgroup before it makes a
//! socket) makes `WARMUP` unmeasured connects, then `CONNECTS` measured ones: `socket()`,
//! `SO_LINGER` 0 (so that `close()` sends a reset and no port is left in `TIME_WAIT`), then
//! `connect()` timed with the monotonic clock, then `close()`. On loopback the whole handshake,
//! including the listener's side, runs in softirq within the `connect()` call. The worker also
//! reports its process CPU time (`CLOCK_PROCESS_CPUTIME_ID`) over the measured loop: per connect
//! it covers socket + setsockopt + connect + close (so also `sock_release` and the `FLOWS`
//! clean-up on close), and is the less noisy figure on a shared machine. The connecting workers
//! run on CPU 0, the listeners on CPU 1 (on loopback the handshake's softirq work runs on the
//! connecting CPU either way).
//!
//! After the timed rounds, one more round of each hooked variant runs with the kernel's BPF run
//! time statistics on (`BPF_ENABLE_STATS`, off again when this process ends; they add a clock
//! read or two per program run, which is why the timed rounds run without them), and the
//! programs' own `run_cnt` and `run_time_ns` (from `/proc/self/fdinfo`) give how often each
//! program ran per connect and how long it took: the cost of the programs themselves, without
//! the kernel's hook dispatch and the extra `sock_ops` callbacks they ask for.

#![allow(
    clippy::indexing_slicing,
    reason = "fixed tables of variants, indexed by their own bounds"
)]

#[path = "support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    error::Error,
    io::Write as _,
    net::{SocketAddrV4, TcpListener},
    time::{Duration, Instant},
};

use proxy_ebpf::SocketHooks;
use rustix::{
    net::{AddressFamily, SocketType},
    time::{ClockId, clock_gettime},
};
use support::{Cgroup, Worker, quantile};

/// Interleaved rounds; each variant runs once per round.
const ROUNDS: usize = 10;
/// Measured connects per variant and round.
const CONNECTS: usize = 4_000;
/// Unmeasured connects first in each worker (page faults, caches, branch predictors).
const WARMUP: usize = 500;
/// The listeners' accept queue (net.core.somaxconn caps it).
const BACKLOG: i32 = 4096;
/// Where the connecting workers run, and where the listeners do: the same CPUs for every
/// variant, so that where the scheduler happens to put them does not differ between them.
const CONNECT_CPU: usize = 0;
const LISTENER_CPU: usize = 1;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        [] => measure(),
        ["connect", target, warmup, count] => {
            connect_worker(target.parse()?, warmup.parse()?, count.parse()?)
        }
        ["listen"] => listen_worker(),
        _ => Err("usage: connect_cost (the workers' arguments are internal)".into()),
    }
}

/// One variant's samples.
struct Variant {
    name: &'static str,
    /// Index into the cgroups: 0 = A (hooks), 1 = B (none).
    cgroup: usize,
    target: SocketAddrV4,
    /// Connect latencies, ns.
    samples: Vec<u64>,
    /// Median of each round, ns.
    round_medians: Vec<u64>,
    /// The workers' process CPU time over their measured loops, ns.
    cpu_ns: u64,
}

impl Variant {
    fn new(name: &'static str, cgroup: usize, target: SocketAddrV4) -> Self {
        Self {
            name,
            cgroup,
            target,
            samples: Vec::with_capacity(ROUNDS * CONNECTS),
            round_medians: Vec::with_capacity(ROUNDS),
            cpu_ns: 0,
        }
    }

    fn cpu_per_connect(&self) -> f64 {
        ns_f64(self.cpu_ns) / ns_f64(self.samples.len() as u64)
    }
}

fn measure() -> Result<(), Box<dyn Error>> {
    let top = Cgroup::create("sk-pebench")?;
    let cgroups = [top.child("a")?, top.child("b")?];
    let hooks = SocketHooks::attach(cgroups[0].path())?;

    // The parent's listener: outside both cgroups.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    rustix::net::listen(&listener, BACKLOG)?;
    let outside = v4(listener.local_addr()?)?;
    std::thread::spawn(move || {
        pin(LISTENER_CPU);
        for accepted in listener.incoming() {
            drop(accepted);
        }
    });
    // A listener worker in each cgroup (killed before the cgroups are removed).
    let mut listeners = Vec::new();
    let mut inside = Vec::new();
    for cgroup in &cgroups {
        let mut worker = Worker::spawn(&["listen"])?;
        cgroup.adopt(worker.pid())?;
        worker.go()?;
        inside.push(SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            worker.line()?.parse()?,
        ));
        listeners.push(worker);
    }

    let mut variants = [
        Variant::new("client only, A (hooks)", 0, outside),
        Variant::new("client only, B (none)", 1, outside),
        Variant::new("both ends, A (hooks)", 0, inside[0]),
        Variant::new("both ends, B (none)", 1, inside[1]),
    ];
    eprintln!(
        "{ROUNDS} rounds x {} variants x {CONNECTS} connects (+{WARMUP} warm-up each)",
        variants.len()
    );
    for round in 0..ROUNDS {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..variants.len()).collect()
        } else {
            (0..variants.len()).rev().collect()
        };
        for index in order {
            let variant = &mut variants[index];
            let (cpu_ns, mut samples) = run_round(&cgroups[variant.cgroup], variant.target)?;
            samples.sort_unstable();
            variant.round_medians.push(quantile(&samples, 0.5));
            variant.samples.extend(samples);
            variant.cpu_ns += cpu_ns;
        }
        eprintln!("round {} of {ROUNDS} done", round + 1);
    }
    let flows_left = hooks.flows();

    // The programs' own cost, in one more round of each hooked variant with statistics on.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let mut program_cost = Vec::new();
    for index in [0, 2] {
        let variant = &variants[index];
        let before = programs_of_this_process()?;
        run_round(&cgroups[variant.cgroup], variant.target)?;
        let after = programs_of_this_process()?;
        program_cost.push((variant.name, before, after));
    }
    drop(listeners);

    print_table(&mut variants);
    println!();
    print_program_cost(&program_cost);
    println!();
    println!(
        "FLOWS entries left after all connections closed: {flows_left} (the listener workers' sockets aside, expect 0)"
    );
    Ok(())
}

/// One connect worker in `cgroup`: its CPU time (ns) and its latencies (ns, unsorted).
fn run_round(cgroup: &Cgroup, target: SocketAddrV4) -> Result<(u64, Vec<u64>), Box<dyn Error>> {
    let mut worker = Worker::spawn(&[
        "connect",
        &target.to_string(),
        &WARMUP.to_string(),
        &CONNECTS.to_string(),
    ])?;
    cgroup.adopt(worker.pid())?;
    worker.go()?;
    let cpu_ns: u64 = worker
        .line()?
        .strip_prefix("cpu ")
        .ok_or("the worker's first line is its CPU time")?
        .parse()?;
    let mut samples = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        samples.push(worker.line()?.parse()?);
    }
    let status = worker.finish()?;
    if !status.success() {
        return Err(format!("connect worker exited with {status}").into());
    }
    Ok((cpu_ns, samples))
}

fn print_table(variants: &mut [Variant; 4]) {
    println!(
        "{:<24} {:>9} {:>11} {:>9} {:>21} {:>15}",
        "variant", "connects", "median µs", "p99 µs", "round medians µs", "CPU µs/connect"
    );
    for variant in variants.iter_mut() {
        variant.samples.sort_unstable();
        let low = variant.round_medians.iter().min().copied().unwrap_or(0);
        let high = variant.round_medians.iter().max().copied().unwrap_or(0);
        println!(
            "{:<24} {:>9} {:>11.2} {:>9.2} {:>21} {:>15.2}",
            variant.name,
            variant.samples.len(),
            us(quantile(&variant.samples, 0.5)),
            us(quantile(&variant.samples, 0.99)),
            format!("{:.2}–{:.2}", us(low), us(high)),
            variant.cpu_per_connect() / 1000.0,
        );
    }
    println!();
    println!(
        "{:<12} {:>17} {:>20} {:>16} {:>22}",
        "added by", "median ns (%)", "paired rounds ns", "p99 ns (%)", "CPU ns/connect (%)"
    );
    for (name, hooked, plain) in [("client only", 0, 1), ("both ends", 2, 3)] {
        let (a, b) = (&variants[hooked], &variants[plain]);
        let delta = |with: u64, without: u64| {
            let d = ns_f64(with) - ns_f64(without);
            format!("{d:+.0} ({:+.1} %)", 100.0 * d / ns_f64(without))
        };
        let cpu = a.cpu_per_connect() - b.cpu_per_connect();
        // Round by round, A's median less B's: the machine's drift cancels within a round.
        let mut paired: Vec<i64> = a
            .round_medians
            .iter()
            .zip(&b.round_medians)
            .map(|(with, without)| {
                i64::try_from(*with).unwrap_or(i64::MAX) - i64::try_from(*without).unwrap_or(0)
            })
            .collect();
        paired.sort_unstable();
        let paired_median = paired.get(paired.len() / 2).copied().unwrap_or(0);
        let (low, high) = (
            paired.first().copied().unwrap_or(0),
            paired.last().copied().unwrap_or(0),
        );
        println!(
            "{:<12} {:>17} {:>20} {:>16} {:>22}",
            name,
            delta(quantile(&a.samples, 0.5), quantile(&b.samples, 0.5)),
            format!("{paired_median:+} [{low:+}, {high:+}]"),
            delta(quantile(&a.samples, 0.99), quantile(&b.samples, 0.99)),
            format!("{cpu:+.0} ({:+.1} %)", 100.0 * cpu / b.cpu_per_connect()),
        );
    }
}

/// A program this process holds: its name and counters.
#[derive(Clone, Debug)]
struct ProgramRuns {
    name: String,
    runs: u64,
    run_time_ns: u64,
}

/// Every BPF program this process has a descriptor for, by program id.
fn programs_of_this_process() -> Result<BTreeMap<u32, ProgramRuns>, Box<dyn Error>> {
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|info| (info.id(), info.name_as_str().unwrap_or("?").to_owned()))
        .collect();
    let mut programs = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let fd = entry?.file_name();
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.to_string_lossy()))
        else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse().ok())
        };
        let (Some(_), Some(id)) = (field("prog_type"), field("prog_id")) else {
            continue;
        };
        let id = u32::try_from(id)?;
        programs.insert(
            id,
            ProgramRuns {
                name: names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("id {id}")),
                runs: field("run_cnt").unwrap_or(0),
                run_time_ns: field("run_time_ns").unwrap_or(0),
            },
        );
    }
    Ok(programs)
}

/// Per hooked variant, the programs' counters before and after its statistics round (which
/// makes `WARMUP + CONNECTS` connects).
#[allow(
    clippy::type_complexity,
    reason = "a list of before/after snapshots, used once"
)]
fn print_program_cost(rounds: &[(&str, BTreeMap<u32, ProgramRuns>, BTreeMap<u32, ProgramRuns>)]) {
    let connects = ns_f64((WARMUP + CONNECTS) as u64);
    println!(
        "programs' own run time ({} connects with BPF run time statistics on)",
        WARMUP + CONNECTS
    );
    println!(
        "{:<24} {:<18} {:>13} {:>11} {:>14}",
        "variant", "program", "runs/connect", "ns/run", "ns/connect"
    );
    for (variant, before, after) in rounds {
        let mut total = 0.0;
        for (id, end) in after {
            let start = before.get(id);
            let runs = end.runs.saturating_sub(start.map_or(0, |s| s.runs));
            let time = end
                .run_time_ns
                .saturating_sub(start.map_or(0, |s| s.run_time_ns));
            let per_connect = ns_f64(time) / connects;
            total += per_connect;
            println!(
                "{:<24} {:<18} {:>13.2} {:>11.0} {:>14.0}",
                variant,
                end.name,
                ns_f64(runs) / connects,
                if runs == 0 {
                    0.0
                } else {
                    ns_f64(time) / ns_f64(runs)
                },
                per_connect,
            );
        }
        println!(
            "{:<24} {:<18} {:>13} {:>11} {:>14.0}",
            variant, "all", "", "", total
        );
    }
}

/// The connect worker: waits to be moved into its cgroup, connects `warmup + count` times and
/// prints `cpu <ns>` then one latency (ns) per line.
fn connect_worker(target: SocketAddrV4, warmup: usize, count: usize) -> Result<(), Box<dyn Error>> {
    support::wait_for_go()?;
    pin(CONNECT_CPU);
    for _ in 0..warmup {
        connect_once(target)?;
    }
    let mut samples = Vec::with_capacity(count);
    let cpu_start = clock_gettime(ClockId::ProcessCPUTime);
    for _ in 0..count {
        samples.push(connect_once(target)?);
    }
    let cpu_end = clock_gettime(ClockId::ProcessCPUTime);
    let cpu_ns =
        (cpu_end.tv_sec - cpu_start.tv_sec) * 1_000_000_000 + (cpu_end.tv_nsec - cpu_start.tv_nsec);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "cpu {cpu_ns}")?;
    for sample in samples {
        writeln!(out, "{sample}")?;
    }
    out.flush()?;
    Ok(())
}

/// One socket, connected and closed with a reset; how long `connect()` took, ns.
fn connect_once(target: SocketAddrV4) -> Result<u64, Box<dyn Error>> {
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::sockopt::set_socket_linger(&socket, Some(Duration::ZERO))?;
    let start = Instant::now();
    rustix::net::connect(&socket, &target)?;
    let took = start.elapsed();
    drop(socket);
    Ok(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX))
}

/// The listener worker: waits to be moved into its cgroup, binds 127.0.0.1:0, prints the port
/// and accepts (and closes) connections until killed.
fn listen_worker() -> Result<(), Box<dyn Error>> {
    support::wait_for_go()?;
    pin(LISTENER_CPU);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    rustix::net::listen(&listener, BACKLOG)?;
    println!("{}", listener.local_addr()?.port());
    for accepted in listener.incoming() {
        drop(accepted?);
    }
    Ok(())
}

/// Keeps the calling thread on `cpu` (if the machine has it; a warning otherwise).
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("warning: not pinned to CPU {cpu}: {e}");
    }
}

fn v4(address: std::net::SocketAddr) -> Result<SocketAddrV4, Box<dyn Error>> {
    match address {
        std::net::SocketAddr::V4(v4) => Ok(v4),
        std::net::SocketAddr::V6(_) => Err("expected an IPv4 listener".into()),
    }
}

fn us(ns: u64) -> f64 {
    ns_f64(ns) / 1000.0
}

#[allow(
    clippy::cast_precision_loss,
    reason = "nanosecond counts far below 2^52"
)]
fn ns_f64(ns: u64) -> f64 {
    ns as f64
}
