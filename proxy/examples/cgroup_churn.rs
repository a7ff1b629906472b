//! The cgroup id → path resolver (`sekisho::attribution::resolve::Resolver`) on a realistic
//! churn of containers: how often it answers from its cache, how often it re-walks the cgroup
//! tree, how long a lookup takes, and how many lookups of a just-created cgroup go unanswered
//! because of the re-walk rate limit. Root only (it makes cgroups):
//! `cargo run --release -p sekisho --example cgroup_churn`.
//!
//! The example makes `<cgroup2 mount>/sk-pechurn-<pid>/` with `LIVE` cgroups in it, then runs
//! `ROUNDS` rounds of `ROUND` each: at the start of a round `CHURN` of the live cgroups are
//! removed and as many new ones created; over the round `LOOKUPS` lookups are made, spread out
//! in `BATCHES` batches, `NEW_SHARE` of them of this round's new cgroups (a container that just
//! started makes its first connections) and the rest of cgroups that existed before the round.
//! The resolver is the proxy's (`Resolver::with_min_rescan` with `DEFAULT_MIN_RESCAN`) on the
//! whole host's cgroup v2 tree. All the example's cgroups are removed when it ends, also on a
//! panic.

use std::{
    error::Error,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sekisho::attribution::resolve::{DEFAULT_MIN_RESCAN, Resolver, detect_root};

/// Cgroups alive at any time.
const LIVE: usize = 200;
/// Removed and created at the start of each round (5 %).
const CHURN: usize = 10;
const ROUNDS: usize = 20;
/// How long a round lasts.
const ROUND: Duration = Duration::from_millis(500);
/// Lookups per round, and the batches they come in (spread over the round).
const LOOKUPS: usize = 10_000;
const BATCHES: usize = 100;
/// The share of a round's lookups that are of the cgroups created at its start, in percent.
const NEW_SHARE: u64 = 10;

fn main() -> Result<(), Box<dyn Error>> {
    let root = detect_root().ok_or("no cgroup v2 mount in /proc/self/mountinfo")?;
    let host_cgroups = count_cgroups(&root);
    let mut churn = Churn::create(&root)?;
    for _ in 0..LIVE {
        churn.add()?;
    }
    let resolver = Resolver::with_min_rescan(root.clone(), DEFAULT_MIN_RESCAN);
    let mut random = XorShift::seeded();

    let mut latencies = Latencies::default();
    let (mut old_lookups, mut new_lookups, mut new_unanswered, mut old_unanswered) = (0, 0, 0, 0);
    // For each new cgroup: how long after its creation it was first resolved.
    let mut first_resolved: Vec<Duration> = Vec::new();
    let mut never_resolved = 0;
    let mut rescan_latencies: Vec<u64> = Vec::new();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let round_start = Instant::now();
        for _ in 0..CHURN {
            churn.remove_random(&mut random)?;
        }
        let old: Vec<u64> = churn.live.iter().map(|cgroup| cgroup.id).collect();
        let mut new = Vec::new();
        for _ in 0..CHURN {
            new.push((churn.add()?, Instant::now(), None::<Duration>));
        }
        for batch in 0..BATCHES {
            for _ in 0..LOOKUPS / BATCHES {
                let is_new = random.below(100) < NEW_SHARE;
                let rescans = resolver.stats().rescans;
                let (found, took) = if is_new {
                    let index = random.index(new.len());
                    let Some((id, created, resolved)) = new.get_mut(index) else {
                        continue;
                    };
                    let start = Instant::now();
                    let found = resolver.path(*id).is_some();
                    let took = start.elapsed();
                    new_lookups += 1;
                    if found {
                        resolved.get_or_insert_with(|| created.elapsed());
                    } else {
                        new_unanswered += 1;
                    }
                    (found, took)
                } else {
                    let Some(id) = old.get(random.index(old.len())) else {
                        continue;
                    };
                    let start = Instant::now();
                    let found = resolver.path(*id).is_some();
                    let took = start.elapsed();
                    old_lookups += 1;
                    if !found {
                        old_unanswered += 1;
                    }
                    (found, took)
                };
                let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                latencies.record(found, ns);
                if resolver.stats().rescans != rescans {
                    rescan_latencies.push(ns);
                }
            }
            // Spread the batches over the round.
            let due = ROUND.mul_f64((batch + 1) as f64 / BATCHES as f64);
            if let Some(wait) = due.checked_sub(round_start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for (_, _, resolved) in new {
            match resolved {
                Some(delay) => first_resolved.push(delay),
                None => never_resolved += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    drop(churn);

    let stats = resolver.stats();
    let lookups = stats.hits + stats.misses;
    println!(
        "host cgroups walked: {host_cgroups} (+{LIVE} of the example's); churn: {CHURN} of {LIVE} removed and {CHURN} created every {} ms, {ROUNDS} rounds ({:.1} s); minimum re-walk interval {} ms",
        ROUND.as_millis(),
        elapsed.as_secs_f64(),
        DEFAULT_MIN_RESCAN.as_millis()
    );
    println!(
        "lookups: {lookups} ({old_lookups} of older cgroups, {new_lookups} of cgroups created in the same round)"
    );
    println!();
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>9}",
        "resolver", "hits", "misses", "rescans", "hit rate"
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8.2}%",
        "stats",
        stats.hits,
        stats.misses,
        stats.rescans,
        percent(stats.hits, lookups)
    );
    println!();
    println!("lookups of older cgroups unanswered: {old_unanswered} of {old_lookups}");
    println!(
        "lookups of new cgroups unanswered (rate limit: created after the last walk, less than {} ms after it): {new_unanswered} of {new_lookups} ({:.1} %)",
        DEFAULT_MIN_RESCAN.as_millis(),
        percent(new_unanswered, new_lookups)
    );
    first_resolved.sort_unstable();
    println!(
        "new cgroups: {} resolved within their round, {never_resolved} not; creation to first answer: median {} ms, max {} ms",
        first_resolved.len(),
        quantile_duration(&first_resolved, 0.5).as_millis(),
        first_resolved
            .last()
            .copied()
            .unwrap_or_default()
            .as_millis()
    );
    println!();
    println!(
        "{:<26} {:>8} {:>10} {:>10} {:>10}",
        "lookup latency", "count", "p50 µs", "p99 µs", "max µs"
    );
    for (name, samples) in [
        ("all", &mut latencies.all),
        ("answered (hits)", &mut latencies.hits),
        ("unanswered (misses)", &mut latencies.misses),
        ("that re-walked the tree", &mut rescan_latencies),
    ] {
        samples.sort_unstable();
        println!(
            "{:<26} {:>8} {:>10.2} {:>10.2} {:>10.2}",
            name,
            samples.len(),
            micros(quantile(samples, 0.5)),
            micros(quantile(samples, 0.99)),
            micros(samples.last().copied().unwrap_or(0)),
        );
    }
    Ok(())
}

/// The example's cgroups, removed (leaves first) when dropped.
struct Churn {
    top: PathBuf,
    live: Vec<Made>,
    next: usize,
}

struct Made {
    path: PathBuf,
    id: u64,
}

impl Churn {
    fn create(root: &Path) -> Result<Self, Box<dyn Error>> {
        let top = root.join(format!("sk-pechurn-{}", std::process::id()));
        fs::create_dir(&top).map_err(|e| format!("creating {}: {e}", top.display()))?;
        Ok(Self {
            top,
            live: Vec::new(),
            next: 0,
        })
    }

    /// A new cgroup, named like a container's scope; its id.
    fn add(&mut self) -> Result<u64, Box<dyn Error>> {
        let path = self
            .top
            .join(format!("cri-containerd-{:064x}.scope", self.next));
        self.next += 1;
        fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let id = fs::metadata(&path)?.ino();
        self.live.push(Made { path, id });
        Ok(id)
    }

    fn remove_random(&mut self, random: &mut XorShift) -> Result<(), Box<dyn Error>> {
        let index = random.index(self.live.len());
        if index < self.live.len() {
            let gone = self.live.swap_remove(index);
            fs::remove_dir(&gone.path)
                .map_err(|e| format!("removing {}: {e}", gone.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        for made in self.live.drain(..) {
            if let Err(e) = fs::remove_dir(&made.path) {
                eprintln!("warning: removing {}: {e}", made.path.display());
            }
        }
        if let Err(e) = fs::remove_dir(&self.top) {
            eprintln!("warning: removing {}: {e}", self.top.display());
        }
    }
}

#[derive(Default)]
struct Latencies {
    all: Vec<u64>,
    hits: Vec<u64>,
    misses: Vec<u64>,
}

impl Latencies {
    fn record(&mut self, found: bool, ns: u64) {
        self.all.push(ns);
        if found {
            self.hits.push(ns);
        } else {
            self.misses.push(ns);
        }
    }
}

/// A small xorshift64* generator: the example needs a mix, not cryptography.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self((u64::from(nanos) ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap_or(u64::MAX))).unwrap_or(0)
    }
}

/// The cgroup directories under `root`, itself included (the size of the resolver's walk).
fn count_cgroups(root: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        count += 1;
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    count
}

fn quantile(sorted: &[u64], p: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a slice's length"
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

fn quantile_duration(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a slice's length"
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[allow(clippy::cast_precision_loss, reason = "nanoseconds far below 2^52")]
fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}
