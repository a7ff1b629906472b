//! How long a sign-in takes to become effective in the kernel, and a revocation likewise
//! (root only; run with `cargo run --release -p xdp-guard --example admission_latency`).
//!
//! The guard is loaded detached with 1,000,000 admitted IPv4 sources preloaded and one protected
//! port. For each of 10,000 fresh sources it checks that a SYN from it to the protected port is
//! dropped (`BPF_PROG_TEST_RUN`, one run), then times, from just before `allow_source`:
//! (a) the map write alone, and (b) the write plus test runs until the program answers Pass
//! (one is expected: the update is visible to the next run once the system call returns).
//! Then the same for `revoke_source`, from Pass to Drop. Prints p50/p90/p99/max in µs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use xdp_guard::{Guard, TestVerdict};
use xdp_guard_common::frames::v4_frame;

const ADMITTED: u32 = 1_000_000;
const FRESH: u32 = 10_000;
const PORT: u16 = 22;
const VALID_FOR: Duration = Duration::from_secs(3600);
/// How long to keep re-running the program after a write before calling it a failure.
const DEADLINE: Duration = Duration::from_secs(1);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut guard = Guard::load_detached(Some(ADMITTED + FRESH + 1024))?;
    guard.protect_port(PORT)?;
    let preload = Instant::now();
    for i in 0..ADMITTED {
        let address = Ipv4Addr::from(0x0b00_0000 + i);
        guard.allow_source(IpAddr::V4(address), VALID_FOR)?;
    }
    let preload = preload.elapsed();

    let mut allow = Timings::default();
    let mut revoke = Timings::default();
    for i in 0..FRESH {
        let address = Ipv4Addr::from(0x0c00_0000 + i);
        let frame = v4_frame(address.octets(), PORT);
        let source = IpAddr::V4(address);

        expect(
            &mut guard,
            &frame,
            TestVerdict::Drop,
            "before its admission",
            address,
        )?;
        let start = Instant::now();
        guard.allow_source(source, VALID_FOR)?;
        let written = start.elapsed();
        let runs = until(&mut guard, &frame, TestVerdict::Pass, start, address)?;
        allow.push(written, start.elapsed(), runs);

        let start = Instant::now();
        guard.revoke_source(source)?;
        let written = start.elapsed();
        let runs = until(&mut guard, &frame, TestVerdict::Drop, start, address)?;
        revoke.push(written, start.elapsed(), runs);
    }

    println!(
        "admission latency: {ADMITTED} admitted IPv4 sources preloaded ({:.1} s), {FRESH} fresh sources, SYN to port {PORT} via BPF_PROG_TEST_RUN (repeat 1)",
        preload.as_secs_f64()
    );
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>8}",
        "from just before the call to", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    for (name, samples) in [
        ("allow_source returned (map write)", &mut allow.written),
        ("first Pass (write + test_run)", &mut allow.effective),
        ("revoke_source returned (map delete)", &mut revoke.written),
        ("first Drop (delete + test_run)", &mut revoke.effective),
    ] {
        samples.sort_unstable();
        println!(
            "{:<40} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name,
            micros(percentile(samples, 50)),
            micros(percentile(samples, 90)),
            micros(percentile(samples, 99)),
            micros(percentile(samples, 100)),
        );
    }
    println!(
        "test runs until the new verdict: allow max {}, revoke max {} (1 = effective at the first run after the call)",
        allow.max_runs, revoke.max_runs
    );
    Ok(())
}

/// Durations of one operation over all fresh sources.
#[derive(Debug, Default)]
struct Timings {
    written: Vec<Duration>,
    effective: Vec<Duration>,
    max_runs: u32,
}

impl Timings {
    fn push(&mut self, written: Duration, effective: Duration, runs: u32) {
        self.written.push(written);
        self.effective.push(effective);
        self.max_runs = self.max_runs.max(runs);
    }
}

/// Fails unless one run of the program on `frame` answers `verdict`.
fn expect(
    guard: &mut Guard,
    frame: &[u8],
    verdict: TestVerdict,
    when: &str,
    address: Ipv4Addr,
) -> Result<(), Box<dyn std::error::Error>> {
    let (got, _) = guard.test_run(frame, 1)?;
    if got == verdict {
        Ok(())
    } else {
        Err(format!("{address}: {got:?} {when}, expected {verdict:?}").into())
    }
}

/// Runs the program on `frame` until it answers `verdict`; how many runs that took.
fn until(
    guard: &mut Guard,
    frame: &[u8],
    verdict: TestVerdict,
    start: Instant,
    address: Ipv4Addr,
) -> Result<u32, Box<dyn std::error::Error>> {
    let mut runs = 0u32;
    loop {
        let (got, _) = guard.test_run(frame, 1)?;
        runs = runs.saturating_add(1);
        if got == verdict {
            return Ok(runs);
        }
        if start.elapsed() > DEADLINE {
            return Err(
                format!("{address}: still {got:?} {DEADLINE:?} after the map write").into(),
            );
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted `samples`.
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let rank = (samples.len() * p).div_ceil(100).max(1);
    samples.get(rank - 1).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
