//! A bounded SYN flood over a veth pair: the CPU the receiving side spends per dropped packet
//! with the XDP guard (native and generic), with an nftables raw-table drop of the same
//! traffic, and with no filter at all, interleaved round by round in one run. Root only; needs
//! `trafgen` (Debian `netsniff-ng`) and `nft` (Debian `nftables`). See `xdp-guard/bench/README.md`.
//!
//! ```sh
//! cargo run --release -p xdp-guard --example flood [-- --packets 3000000 --rounds 5]
//! ```
//!
//! It makes two network namespaces joined by a veth pair (named after this process's id),
//! attaches nothing outside them, and deletes both on exit, on error and on Ctrl-C/SIGTERM.
//! The sender is one `trafgen` process on one CPU sending the same 54-byte TCP SYN from an
//! unadmitted source to the protected port as fast as it can (`PACKET_TX_RING`, qdisc bypass).
//!
//! What is measured, per run, from `/proc/stat` deltas over the send:
//! - **softirq ns/packet**: machine-wide softirq time. Everything the receiving side does
//!   (veth NAPI, the XDP program, the netfilter hook, the TCP stack and its RST in the baseline)
//!   runs in softirq; the sender's own transmit path runs in process context and is not in it.
//! - **sender ns/packet**: the sender process's user + system time (`/proc/self/stat` cutime +
//!   cstime of the reaped `trafgen`). On this kernel (`CONFIG_IRQ_TIME_ACCOUNTING` off) the
//!   softirq work that runs on the way out of the sender's system calls is charged to the
//!   sender, so this column is send + receive, free of other tenants' noise.
//!
//! "Machine non-idle minus the sender's CPU" is not used: without IRQ time accounting it
//! subtracts the receive work itself and leaves mostly other tenants' load.
//!
//! Drops are confirmed from the guard's `dropped` counter, the nft rule's counter, and (no filter)
//! the receiving namespace's TCP `OutRsts`. Afterwards one more send per XDP mode runs with
//! `BPF_ENABLE_STATS` on, for the program's own run time per packet (kept out of the rounds
//! because the statistics add their own cost to every run).

use std::error::Error;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use xdp_guard::{AttachMode, Guard};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The protected port the flood is aimed at.
const PORT: u16 = 2222;
const RECEIVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SENDER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const RECEIVER_MAC: &str = "02:00:00:5e:f1:01";
const SENDER_MAC: &str = "02:00:00:5e:f1:02";
/// `/proc/stat` and `/proc/<pid>/stat` count in `USER_HZ` ticks, 100 per second in the Linux ABI.
const NS_PER_TICK: u64 = 10_000_000;
/// The nftables table the `nftables` variant adds in the receiving namespace.
const NFT_TABLE: &str = "sk_flood";

fn main() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    for tool in ["ip", "nft", "trafgen"] {
        if which(tool).is_none() {
            return Err(format!(
                "{tool} not found (apt-get install iproute2 nftables netsniff-ng)"
            )
            .into());
        }
    }
    let stop = watch_signals()?;
    let pair = Pair::new()?;

    // Which XDP attach modes the veth takes.
    let mut variants = Vec::new();
    let mut mode_notes = Vec::new();
    for (variant, mode) in [
        (Variant::XdpNative, AttachMode::Native),
        (Variant::XdpGeneric, AttachMode::Generic),
    ] {
        match pair.load_guard(mode) {
            Ok(guard) => {
                let (id, attached) = pair.xdp_program()?;
                mode_notes.push(format!(
                    "{}: attached as {attached} (program id {id})",
                    variant.name()
                ));
                drop(guard);
                variants.push(variant);
            }
            Err(e) => mode_notes.push(format!("{}: cannot attach: {e}", variant.name())),
        }
    }
    variants.push(Variant::Nftables);
    if !options.no_baseline {
        variants.push(Variant::NoFilter);
    }
    for note in &mode_notes {
        eprintln!("{note}");
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    for round in 0..options.rounds {
        // Interleaved, starting one variant later each round so that no variant always runs
        // first after a pause.
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let Some(&variant) = variants.get(i) else {
                continue;
            };
            let sample = pair.run(variant, options.packets, &stop)?;
            eprintln!(
                "round {} {:<12} sent {} confirmed {} softirq {} ns/pkt sender {} ns/pkt ({:.1} s)",
                round + 1,
                variant.name(),
                sample.sent,
                sample.confirmed,
                sample.softirq_ns_per_packet(),
                sample.sender_ns_per_packet(),
                sample.wall.as_secs_f64()
            );
            if let Some(list) = samples.get_mut(i) {
                list.push(sample);
            }
        }
    }

    let mut program_cost = Vec::new();
    for &variant in &variants {
        if let Some(mode) = variant.attach_mode() {
            let ns = pair.program_run_time(mode, options.packets, &stop)?;
            program_cost.push((variant, ns));
        }
    }

    print_table(&options, &variants, &samples, &program_cost, &mode_notes);
    Ok(())
}

/// Command-line options.
#[derive(Debug)]
struct Options {
    packets: u64,
    rounds: usize,
    no_baseline: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut options = Options {
            packets: 3_000_000,
            rounds: 5,
            no_baseline: false,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--packets" => options.packets = args.next().ok_or("--packets N")?.parse()?,
                "--rounds" => options.rounds = args.next().ok_or("--rounds N")?.parse()?,
                "--no-baseline" => options.no_baseline = true,
                other => {
                    return Err(format!(
                        "unknown argument {other} (--packets N, --rounds N, --no-baseline)"
                    )
                    .into());
                }
            }
        }
        if options.packets == 0 || options.rounds == 0 {
            return Err("--packets and --rounds must be positive".into());
        }
        Ok(options)
    }
}

/// One way of treating the flood on the receiving side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    XdpNative,
    XdpGeneric,
    Nftables,
    NoFilter,
}

impl Variant {
    const fn name(self) -> &'static str {
        match self {
            Variant::XdpNative => "xdp native",
            Variant::XdpGeneric => "xdp generic",
            Variant::Nftables => "nftables raw",
            Variant::NoFilter => "no filter",
        }
    }

    const fn attach_mode(self) -> Option<AttachMode> {
        match self {
            Variant::XdpNative => Some(AttachMode::Native),
            Variant::XdpGeneric => Some(AttachMode::Generic),
            Variant::Nftables | Variant::NoFilter => None,
        }
    }
}

/// One send of the flood under one variant.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Frames trafgen reports sent.
    sent: u64,
    /// Frames the variant's own counter saw dropped (or, with no filter, RSTs the stack sent).
    confirmed: u64,
    /// Machine-wide softirq ticks over the send.
    softirq_ticks: u64,
    /// The sender process's user + system ticks.
    sender_ticks: u64,
    wall: Duration,
}

impl Sample {
    fn softirq_ns_per_packet(&self) -> u64 {
        per_packet(self.softirq_ticks, self.sent)
    }

    fn sender_ns_per_packet(&self) -> u64 {
        per_packet(self.sender_ticks, self.sent)
    }
}

fn per_packet(ticks: u64, packets: u64) -> u64 {
    ticks.saturating_mul(NS_PER_TICK) / packets.max(1)
}

/// The receiving and the sending namespace and the veth pair between them. Dropping it deletes
/// both namespaces (and with them the veth, the nft table and anything attached).
#[derive(Debug)]
struct Pair {
    receiver: String,
    sender: String,
    receiver_if: String,
    sender_if: String,
}

impl Pair {
    fn new() -> Result<Self> {
        let pid = std::process::id();
        // The names are filled in as the namespaces are made, so that Drop deletes exactly
        // what exists.
        let mut pair = Pair {
            receiver: String::new(),
            sender: String::new(),
            receiver_if: format!("skfr{pid}"),
            sender_if: format!("skft{pid}"),
        };
        let receiver = format!("sk-flood-{pid}-rx");
        ip(&["netns", "add", &receiver])?;
        pair.receiver = receiver;
        let sender = format!("sk-flood-{pid}-tx");
        ip(&["netns", "add", &sender])?;
        pair.sender = sender;
        let (rx, tx) = (pair.receiver.as_str(), pair.sender.as_str());
        let (rx_if, tx_if) = (pair.receiver_if.as_str(), pair.sender_if.as_str());
        ip(&[
            "-n",
            rx,
            "link",
            "add",
            rx_if,
            "address",
            RECEIVER_MAC,
            "type",
            "veth",
            "peer",
            "name",
            tx_if,
            "address",
            SENDER_MAC,
            "netns",
            tx,
        ])?;
        ip(&[
            "-n",
            rx,
            "addr",
            "add",
            &format!("{RECEIVER_IP}/24"),
            "dev",
            rx_if,
        ])?;
        ip(&[
            "-n",
            tx,
            "addr",
            "add",
            &format!("{SENDER_IP}/24"),
            "dev",
            tx_if,
        ])?;
        for (ns, dev) in [(rx, rx_if), (tx, tx_if)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // The receiver knows the sender's address without ARP, so that the baseline's RSTs
        // leave at once.
        ip(&[
            "-n",
            rx,
            "neigh",
            "replace",
            &SENDER_IP.to_string(),
            "lladdr",
            SENDER_MAC,
            "dev",
            rx_if,
            "nud",
            "permanent",
        ])?;
        Ok(pair)
    }

    /// Loads the guard on the receiving veth, protecting [`PORT`]; nothing is admitted.
    fn load_guard(&self, mode: AttachMode) -> Result<Guard> {
        let _inside = Entered::new(&self.receiver)?;
        let mut guard = Guard::load(&self.receiver_if, mode)?;
        guard.protect_port(PORT)?;
        Ok(guard)
    }

    /// The id of the XDP program attached to the receiving veth, and how (`xdp`: native,
    /// `xdpgeneric`), as `ip -d link` reports it.
    fn xdp_program(&self) -> Result<(u32, String)> {
        let out = ip(&[
            "-n",
            &self.receiver,
            "-d",
            "link",
            "show",
            "dev",
            &self.receiver_if,
        ])?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let mode = words
            .iter()
            .find(|w| matches!(**w, "xdp" | "xdpgeneric" | "xdpoffload" | "xdpmulti"));
        let id = words.windows(3).find_map(|w| match w {
            ["prog/xdp", "id", id] => id.parse().ok(),
            _ => None,
        });
        if let (Some(mode), Some(id)) = (mode, id) {
            return Ok((id, (*mode).to_owned()));
        }
        Err(format!("no XDP program on {}: {out}", self.receiver_if).into())
    }

    /// One send of `packets` frames under `variant`.
    fn run(&self, variant: Variant, packets: u64, stop: &AtomicBool) -> Result<Sample> {
        let guard = match variant.attach_mode() {
            Some(mode) => Some(self.load_guard(mode)?),
            None => None,
        };
        if variant == Variant::Nftables {
            self.nft_add()?;
        }
        let rsts_before = self.out_rsts()?;
        let send = self.send(packets, stop);
        let confirmed = match variant {
            Variant::XdpNative | Variant::XdpGeneric => match &guard {
                Some(guard) => guard.stats()?.dropped,
                None => 0,
            },
            Variant::Nftables => self.nft_counter()?,
            Variant::NoFilter => self.out_rsts()?.saturating_sub(rsts_before),
        };
        if variant == Variant::Nftables {
            self.netns_exec(
                &self.receiver,
                &["nft", "delete", "table", "inet", NFT_TABLE],
            )?;
        }
        drop(guard);
        let send = send?;
        Ok(Sample { confirmed, ..send })
    }

    /// The XDP program's own mean run time per packet (ns) over one send, from the kernel's
    /// `BPF_ENABLE_STATS` counters.
    fn program_run_time(&self, mode: AttachMode, packets: u64, stop: &AtomicBool) -> Result<f64> {
        let _guard = self.load_guard(mode)?;
        let (id, _) = self.xdp_program()?;
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
        let before = program_counters(id)?;
        self.send(packets, stop)?;
        let after = program_counters(id)?;
        let runs = after.1.saturating_sub(before.1);
        let time = after.0.saturating_sub(before.0);
        if runs == 0 {
            return Err(format!("program {id} did not run").into());
        }
        #[allow(clippy::cast_precision_loss, reason = "a figure for a table")]
        Ok(time.as_nanos() as f64 / runs as f64)
    }

    /// Sends the flood from the sending namespace and measures the CPU it costs.
    fn send(&self, packets: u64, stop: &AtomicBool) -> Result<Sample> {
        let packet = format!(
            "{{ eth(da={RECEIVER_MAC}, sa={SENDER_MAC}), ipv4(sa={SENDER_IP}, da={RECEIVER_IP}, ttl=64, df), tcp(sp=40000, dp={PORT}, seq=1, syn, window=65535) }}"
        );
        let packets_arg = packets.to_string();
        let before = CpuTimes::read()?;
        let children_before = children_ticks()?;
        let start = Instant::now();
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.sender,
                "trafgen",
                "--dev",
                &self.sender_if,
            ])
            .args([
                "--num",
                &packets_arg,
                "--cpus",
                "1",
                "--no-sock-mem",
                "--no-cpu-stats",
            ])
            .arg(&packet)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C reaches this process, which stops the sender
            // (and its forked worker) itself before deleting the namespaces.
            .process_group(0)
            .spawn()?;
        // trafgen's output is small: reading it after the exit cannot block the sender.
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if stop.load(Ordering::Relaxed) {
                // trafgen and the worker it forks, all in the group led by the child.
                let group = format!("-{}", child.id());
                let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
                let _ = child.wait();
                return Err("interrupted".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let wall = start.elapsed();
        let after = CpuTimes::read()?;
        let children_after = children_ticks()?;
        let output = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !status.success() {
            return Err(format!(
                "trafgen failed ({status}): {}{}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        let sent = stdout
            .lines()
            .find(|line| line.contains("packets outgoing"))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no packet count in trafgen's output: {stdout}"))?;
        Ok(Sample {
            sent,
            confirmed: 0,
            softirq_ticks: after.softirq.saturating_sub(before.softirq),
            sender_ticks: children_after.saturating_sub(children_before),
            wall,
        })
    }

    fn nft_add(&self) -> Result<()> {
        let rules = format!(
            "table inet {NFT_TABLE} {{ chain prerouting {{ type filter hook prerouting priority raw; policy accept; tcp dport {PORT} counter drop; }}; }}"
        );
        self.netns_exec(&self.receiver, &["nft", &rules])?;
        Ok(())
    }

    fn nft_counter(&self) -> Result<u64> {
        let out = self.netns_exec(
            &self.receiver,
            &["nft", "list", "chain", "inet", NFT_TABLE, "prerouting"],
        )?;
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .find_map(|w| match w {
                ["packets", n] => n.parse().ok(),
                _ => None,
            })
            .ok_or_else(|| format!("no counter in: {out}").into())
    }

    /// The receiving namespace's TCP `OutRsts`.
    fn out_rsts(&self) -> Result<u64> {
        let snmp = self.netns_exec(&self.receiver, &["cat", "/proc/net/snmp"])?;
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
            return Err("no Tcp lines in /proc/net/snmp".into());
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "OutRsts")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| "no OutRsts in /proc/net/snmp".into())
    }

    fn netns_exec(&self, ns: &str, command: &[&str]) -> Result<String> {
        let mut args = vec!["netns", "exec", ns];
        args.extend_from_slice(command);
        ip(&args)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.receiver, &self.sender] {
            if !ns.is_empty()
                && let Err(e) = ip(&["netns", "del", ns])
            {
                eprintln!("warning: could not delete network namespace {ns}: {e}");
            }
        }
    }
}

/// The calling thread inside a network namespace; back where it was when dropped.
struct Entered {
    home: File,
}

impl Entered {
    fn new(ns: &str) -> Result<Self> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{ns}"))?;
        move_into_link_name_space(target.as_fd(), Some(LinkNameSpaceType::Network))?;
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) =
            move_into_link_name_space(self.home.as_fd(), Some(LinkNameSpaceType::Network))
        {
            // Carrying on in the wrong namespace could touch the machine's own interfaces.
            eprintln!("fatal: could not return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Machine-wide CPU ticks from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug)]
struct CpuTimes {
    softirq: u64,
}

impl CpuTimes {
    fn read() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().ok_or("empty /proc/stat")?;
        // cpu user nice system idle iowait irq softirq steal ...
        let softirq = line
            .split_whitespace()
            .nth(7)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unexpected /proc/stat line: {line}"))?;
        Ok(CpuTimes { softirq })
    }
}

/// This process's reaped children's user + system ticks (`cutime` + `cstime`).
fn children_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which ends with the last ')': state is field 3, cutime 16,
    // cstime 17.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("bad /proc/self/stat")?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(13)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    match fields.as_slice() {
        [cutime, cstime] => Ok(cutime.saturating_add(*cstime)),
        _ => Err(format!("unexpected /proc/self/stat: {stat}").into()),
    }
}

/// The run time and run count the kernel recorded for program `id`.
fn program_counters(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    Err(format!("program {id} is not loaded").into())
}

/// Runs `ip` with `args`; its standard output, or an error with its standard error.
fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// A flag set on SIGINT or SIGTERM, so that the run stops between steps and cleans up.
fn watch_signals() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, before the first namespace exists.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        eprintln!("stopping: cleaning up the namespaces");
        flag.store(true, Ordering::Relaxed);
    });
    Ok(stop)
}

fn print_table(
    options: &Options,
    variants: &[Variant],
    samples: &[Vec<Sample>],
    program_cost: &[(Variant, f64)],
    mode_notes: &[String],
) {
    println!();
    println!(
        "SYN flood over veth: {} packets per run x {} rounds, one trafgen sender on one CPU, as fast as it goes; TCP dport {PORT} from an unadmitted source",
        options.packets, options.rounds
    );
    for note in mode_notes {
        println!("  {note}");
    }
    println!(
        "{:<13} {:>11} {:>22} {:>24} {:>24} {:>9}",
        "variant",
        "packets",
        "drops confirmed",
        "softirq ns/pkt med",
        "sender ns/pkt med",
        "kpps med"
    );
    let mut medians = Vec::new();
    for (variant, list) in variants.iter().zip(samples) {
        let sent: u64 = list.iter().map(|s| s.sent).sum();
        let confirmed: u64 = list.iter().map(|s| s.confirmed).sum();
        let confirmed = if *variant == Variant::NoFilter {
            format!("- ({confirmed} RSTs)")
        } else if confirmed == sent {
            confirmed.to_string()
        } else {
            format!("{confirmed} MISSING!")
        };
        let softirq = spread(list.iter().map(Sample::softirq_ns_per_packet).collect());
        let sender = spread(list.iter().map(Sample::sender_ns_per_packet).collect());
        let kpps = spread(
            list.iter()
                .map(|s| {
                    let ms = u64::try_from(s.wall.as_millis()).unwrap_or(u64::MAX).max(1);
                    s.sent / ms
                })
                .collect(),
        );
        println!(
            "{:<13} {:>11} {:>22} {:>24} {:>24} {:>9}",
            variant.name(),
            sent,
            confirmed,
            softirq.show(),
            sender.show(),
            kpps.median
        );
        medians.push((*variant, softirq.median, sender.median));
    }
    let find = |v: Variant| medians.iter().find(|(w, _, _)| *w == v).copied();
    if let Some((_, nft_softirq, nft_sender)) = find(Variant::Nftables) {
        for v in [Variant::XdpNative, Variant::XdpGeneric] {
            if let Some((_, softirq, sender)) = find(v) {
                #[allow(clippy::cast_precision_loss, reason = "ratios for a table")]
                let (a, b) = (
                    softirq as f64 / nft_softirq.max(1) as f64,
                    sender as f64 / nft_sender.max(1) as f64,
                );
                println!(
                    "ratio {}/nftables: softirq {a:.2}, sender {b:.2} (medians)",
                    v.name()
                );
            }
        }
    }
    for (variant, ns) in program_cost {
        println!(
            "{} program's own run time (BPF_ENABLE_STATS, one extra send): {ns:.0} ns/pkt",
            variant.name()
        );
    }
}

/// Median, min and max of per-run figures.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: u64,
    min: u64,
    max: u64,
}

impl Spread {
    fn show(self) -> String {
        format!("{} ({}-{})", self.median, self.min, self.max)
    }
}

fn spread(mut values: Vec<u64>) -> Spread {
    values.sort_unstable();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    Spread {
        median: at(values.len() / 2),
        min: at(0),
        max: at(values.len().saturating_sub(1)),
    }
}
