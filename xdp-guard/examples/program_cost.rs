//! The XDP program's own cost per packet, measured in the kernel with `BPF_PROG_TEST_RUN`
//! (root only; run with `cargo run --release -p xdp-guard --example program_cost`), with
//! 1,000,000 admitted IPv4 sources and 1,000 trusted prefixes loaded, one banned source, a
//! protected TCP and UDP port and a rate-limited one. Prints a table: the median over rounds of
//! the kernel's mean time per run, for each path, and the same less an empty program's (the
//! harness's own cost per run). The paths are interleaved round by round so that a noisy
//! machine affects them alike. Every drop path includes the per-source drop tally.

#![allow(
    clippy::indexing_slicing,
    reason = "a fixed table of samples, indexed by its own bounds"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use xdp_guard::Guard;
use xdp_guard_common::frames::{ethernet, v4_frame, v4_udp_frame};

const ADMITTED: u32 = 1_000_000;
const TRUSTED: u32 = 1_000;
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut guard = Guard::load_detached(Some(ADMITTED + 1024))?;
    guard.protect_port(22)?;
    guard.protect_udp_port(51820)?;
    // sekisho's own port: 100 attempts per second per source, bursts of 200.
    guard.limit_syn_rate(443, Duration::from_millis(10), 200)?;
    let banned = [198, 51, 100, 66];
    for i in 0..ADMITTED {
        let address = Ipv4Addr::from(0x0b00_0000 + i);
        guard.allow_source(IpAddr::V4(address), Duration::from_secs(3600))?;
    }
    for i in 0..TRUSTED {
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(0x6400_0000 + (i << 8)), 24)?;
        guard.trust_range(net.into())?;
    }
    let admitted = Ipv4Addr::from(0x0b00_0000 + ADMITTED / 2).octets();
    let stranger = [203, 0, 113, 9];
    let paths: [(&str, Vec<u8>); 8] = [
        (
            "non-TCP (ARP), pass",
            [ethernet(0x0806), vec![0; 28]].concat(),
        ),
        ("TCP to an unprotected port, pass", v4_frame(stranger, 8080)),
        (
            "SYN to sekisho's port beyond the rate, drop",
            v4_frame(stranger, 443),
        ),
        (
            "protected port, unknown source, drop",
            v4_frame(stranger, 22),
        ),
        (
            "protected port, admitted source, pass",
            v4_frame(admitted, 22),
        ),
        (
            "protected UDP port, unknown source, drop",
            v4_udp_frame(stranger, 51820),
        ),
        (
            "protected UDP port, admitted source, pass",
            v4_udp_frame(admitted, 51820),
        ),
        (
            "the banned source, any port (drop if banned)",
            v4_frame(banned, 8080),
        ),
    ];
    // Each round measures every path twice: while nobody is banned (frames skip the ban
    // lookup) and while one source is.
    let mut samples: [Vec<Vec<Duration>>; 2] =
        [vec![Vec::new(); paths.len()], vec![Vec::new(); paths.len()]];
    let mut empty = Vec::new();
    for _ in 0..ROUNDS {
        empty.push(guard.test_run_empty(&paths[1].1, REPEAT)?);
        for (banning, samples) in samples.iter_mut().enumerate() {
            if banning == 1 {
                guard.ban_source(
                    IpAddr::V4(Ipv4Addr::from(banned)),
                    Duration::from_secs(3600),
                )?;
            } else {
                guard.unban_source(IpAddr::V4(Ipv4Addr::from(banned)))?;
            }
            for (i, (_, frame)) in paths.iter().enumerate() {
                let (_, mean) = guard.test_run(frame, REPEAT)?;
                samples[i].push(mean);
            }
        }
    }
    empty.sort();
    let floor = empty[empty.len() / 2];
    println!(
        "xdp_guard program cost per packet (BPF_PROG_TEST_RUN, {REPEAT} runs x {ROUNDS} rounds, {ADMITTED} admitted sources, {TRUSTED} trusted prefixes)"
    );
    println!(
        "empty program (the harness's own cost per run, subtracted below): median {} ns (min {}, max {})",
        floor.as_nanos(),
        empty[0].as_nanos(),
        empty[empty.len() - 1].as_nanos()
    );
    println!(
        "{:<44} {:>22} {:>22}",
        "path", "nobody banned: ns net", "a ban active: ns net"
    );
    let cell = |s: &[Duration]| {
        let mut s = s.to_vec();
        s.sort();
        let median = s[s.len() / 2];
        format!(
            "{} ({}-{})",
            median.saturating_sub(floor).as_nanos(),
            s[0].saturating_sub(floor).as_nanos(),
            s[s.len() - 1].saturating_sub(floor).as_nanos()
        )
    };
    for (i, (name, _)) in paths.iter().enumerate() {
        println!(
            "{:<44} {:>22} {:>22}",
            name,
            cell(&samples[0][i]),
            cell(&samples[1][i])
        );
    }
    Ok(())
}
