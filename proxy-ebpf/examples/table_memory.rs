//! The kernel memory of the socket hooks' maps with 100,000 live connections in the table.
//! Root only: `cargo run --release -p proxy-ebpf --example table_memory [connections]`.
//!
//! The example makes `<cgroup2 mount>/sk-pemem-<pid>`, attaches the hooks to it, and reads the
//! `memlock` of every map this process holds (from `/proc/self/fdinfo`, the kernel's own
//! accounting of a map's memory; names from the map ids). Workers (this binary re-executed,
//! moved into the cgroup before they make a socket; as many as RLIMIT_NOFILE needs) then open
//! the connections to `LISTENERS` listeners of this process on 127.0.0.1 (several destination
//! ports, so that the ~28,000 ephemeral ports serve more than 28,000 connections) and hold
//! them. The listeners, outside the cgroup, never accept: the connections wait established in
//! their accept queues, so each is one `FLOWS` entry (the initiator's) and one `SOCKETS` entry.
//! The table is read again with the connections open: `FLOWS` entries (`SocketHooks::flows`),
//! memlock per map, and resident sets for context; then the workers close their ends and the
//! table should empty.

#[path = "support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    error::Error,
    fs,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::maps::MapInfo;
use proxy_ebpf::SocketHooks;
use rustix::{
    net::{AddressFamily, SocketType},
    process::{Resource, Rlimit},
};
use support::{Cgroup, Worker};

/// Connections opened unless given on the command line.
const CONNECTIONS: usize = 100_000;
/// Listeners (destination ports) the connections are spread over.
/// Each queues at most `BACKLOG` (net.core.somaxconn caps it) un-accepted connections.
const LISTENERS: usize = 32;
const BACKLOG: i32 = 4096;
/// Longest wait for the table to empty after the close.
const WITHIN: Duration = Duration::from_secs(60);

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        [] => measure(CONNECTIONS),
        [count] => measure(count.parse()?),
        ["hold", count, ports] => hold_worker(count.parse()?, ports),
        _ => Err("usage: table_memory [connections]".into()),
    }
}

/// One map as `/proc/<pid>/fdinfo` shows it.
#[derive(Clone, Debug)]
struct MapMemory {
    name: String,
    map_type: u32,
    max_entries: u64,
    key_size: u64,
    value_size: u64,
    memlock: u64,
}

fn measure(connections: usize) -> Result<(), Box<dyn Error>> {
    let per_worker = descriptors_per_process()?;
    let cgroup = Cgroup::create("sk-pemem")?;
    let hooks = SocketHooks::attach(cgroup.path())?;
    let rss_before = support::rss_kib("self");
    let slab_before = slab_kib();
    let before = maps_of_this_process()?;

    // Never accepted: the handshake completes in the kernel and the connection waits in the
    // accept queue, so the listeners' side needs no descriptor per connection.
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..LISTENERS {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        rustix::net::listen(&listener, BACKLOG)?;
        ports.push(listener.local_addr()?.port().to_string());
        listeners.push(listener);
    }
    let ports = ports.join(",");

    let mut workers = Vec::new();
    let mut left = connections;
    while left > 0 {
        let count = left.min(per_worker);
        left -= count;
        let worker = Worker::spawn(&["hold", &count.to_string(), &ports])?;
        cgroup.adopt(worker.pid())?;
        workers.push(worker);
    }
    let started = Instant::now();
    let mut opened = 0;
    for worker in &mut workers {
        // One at a time: each worker's connects then have the machine to themselves.
        worker.go()?;
        let report = worker.line()?;
        let count: usize = report
            .strip_prefix("connected ")
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("the worker said {report:?}"))?
            .parse()?;
        if report.contains("stopped") {
            eprintln!("worker {}: {report}", worker.pid());
        }
        opened += count;
    }
    let took = started.elapsed();
    let flows = hooks.flows();
    let with = maps_of_this_process()?;
    let rss_with = support::rss_kib("self");
    let workers_rss: u64 = workers
        .iter()
        .filter_map(|worker| support::rss_kib(&worker.pid().to_string()))
        .sum();
    let slab_with = slab_kib();

    // Close the connecting ends; the table should empty.
    let mut statuses = Vec::new();
    for worker in &mut workers {
        statuses.push(worker.finish()?.to_string());
    }
    statuses.dedup();
    let closing = Instant::now();
    while hooks.flows() > 0 && closing.elapsed() < WITHIN {
        std::thread::sleep(Duration::from_millis(50));
    }
    let flows_after = hooks.flows();
    let emptied = closing.elapsed();
    drop(listeners);

    println!(
        "connections opened from the cgroup: {opened} of {connections} in {:.1} s, by {} workers of at most {per_worker} descriptors (exit: {}); the listeners, outside the cgroup, never accepted them",
        took.as_secs_f64(),
        workers.len(),
        statuses.join(", "),
    );
    println!("FLOWS entries with the connections open: {flows}");
    println!(
        "FLOWS entries after the worker closed them: {flows_after} ({:.1} s later)",
        emptied.as_secs_f64()
    );
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>4} {:>6} {:>13} {:>13} {:>10} {:>12}",
        "map",
        "type",
        "max",
        "key",
        "value",
        "memlock idle",
        "memlock open",
        "B/max ent",
        "B/live ent"
    );
    let mut total_before = 0;
    let mut total_with = 0;
    for (id, map) in &before {
        let open = with.get(id).map_or(0, |m| m.memlock);
        total_before += map.memlock;
        total_with += open;
        let per_live = if map.name == "FLOWS" || map.name == "SOCKETS" {
            format!("{:.0}", ratio(open, flows as u64))
        } else {
            "-".to_owned()
        };
        println!(
            "{:<16} {:>9} {:>8} {:>4} {:>6} {:>13} {:>13} {:>10.0} {:>12}",
            map.name,
            map_type_name(map.map_type),
            map.max_entries,
            map.key_size,
            map.value_size,
            map.memlock,
            open,
            ratio(map.memlock, map.max_entries),
            per_live,
        );
    }
    println!(
        "{:<16} {:>42} {:>13} {:>10} {:>12}",
        "all maps",
        total_before,
        total_with,
        "",
        format!("{:.0}", ratio(total_with, flows as u64)),
    );
    println!();
    println!("{:<52} {:>10} {:>10}", "context (KiB)", "idle", "open");
    println!(
        "{:<52} {:>10} {:>10}",
        "RSS of this process (the hooks' user space)",
        show(rss_before),
        show(rss_with)
    );
    println!(
        "{:<52} {:>10} {:>10}",
        "RSS of the workers (hold the connecting ends)",
        "-",
        show(Some(workers_rss))
    );
    println!(
        "{:<52} {:>10} {:>10}",
        "kernel slab, whole host (the sockets themselves; noisy)",
        show(slab_before),
        show(slab_with)
    );
    Ok(())
}

/// The worker: waits to be moved into the cgroup, opens `count` connections round-robin over
/// `ports` on 127.0.0.1, prints `connected <n>` (and the first error, if any), and holds them
/// until its stdin closes.
fn hold_worker(count: usize, ports: &str) -> Result<(), Box<dyn Error>> {
    let targets: Vec<SocketAddrV4> = ports
        .split(',')
        .map(|port| {
            port.parse()
                .map(|p| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p))
        })
        .collect::<Result<_, _>>()?;
    support::wait_for_go()?;
    let mut held: Vec<OwnedFd> = Vec::with_capacity(count);
    let mut failure = String::new();
    for target in targets.iter().cycle().take(count) {
        match connect(*target) {
            Ok(socket) => held.push(socket),
            Err(e) => {
                failure = format!(" (stopped: connect to {target}: {e})");
                break;
            }
        }
    }
    println!("connected {}{failure}", held.len());
    support::wait_for_end()?;
    drop(held);
    Ok(())
}

/// A connected socket whose `close()` sends a reset (no `TIME_WAIT` left behind).
fn connect(target: SocketAddrV4) -> Result<OwnedFd, Box<dyn Error>> {
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::sockopt::set_socket_linger(&socket, Some(Duration::ZERO))?;
    rustix::net::connect(&socket, &target)?;
    Ok(socket)
}

/// How many connections one worker can hold: its descriptor limit (the soft limit raised to
/// the hard one, which workers inherit) less some room. Raising the hard limit needs
/// CAP_SYS_RESOURCE, which root may lack (in a container), hence several workers.
fn descriptors_per_process() -> Result<usize, Box<dyn Error>> {
    let limit = rustix::process::getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20);
    rustix::process::setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(usize::try_from(hard.saturating_sub(64))?.max(1))
}

/// Every BPF map this process has a descriptor for, by map id.
fn maps_of_this_process() -> Result<BTreeMap<u32, MapMemory>, Box<dyn Error>> {
    let mut maps = BTreeMap::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let fd = entry?.file_name();
        let Ok(info) = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.to_string_lossy()))
        else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse().ok())
        };
        let (Some(map_type), Some(id)) = (field("map_type"), field("map_id")) else {
            continue;
        };
        let id = u32::try_from(id)?;
        let name = MapInfo::from_id(id)
            .ok()
            .and_then(|info| info.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("id {id}"));
        maps.insert(
            id,
            MapMemory {
                name,
                map_type: u32::try_from(map_type)?,
                max_entries: field("max_entries").unwrap_or(0),
                key_size: field("key_size").unwrap_or(0),
                value_size: field("value_size").unwrap_or(0),
                memlock: field("memlock").unwrap_or(0),
            },
        );
    }
    Ok(maps)
}

/// The `Slab` line of /proc/meminfo, KiB.
fn slab_kib() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("Slab:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn map_type_name(map_type: u32) -> String {
    match map_type {
        1 => "hash".to_owned(),
        2 => "array".to_owned(),
        9 => "lru_hash".to_owned(),
        27 => "ringbuf".to_owned(),
        other => other.to_string(),
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "byte and entry counts far below 2^52"
)]
fn ratio(bytes: u64, entries: u64) -> f64 {
    if entries == 0 {
        0.0
    } else {
        bytes as f64 / entries as f64
    }
}

fn show(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |kib| kib.to_string())
}
