//! The xdp-guard XDP program: drops TCP and UDP to protected ports unless the source is
//! admitted, drops banned sources, and rate-limits connection attempts to the proxy's own port.
//!
//! All parsing and the decision are [`xdp_guard_common::classify`] and
//! [`xdp_guard_common::decide`]; this file only supplies bounds-checked packet loads, the
//! map-backed policy, the rate limit's arithmetic, the counters and the drop tallies.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    unsafe_code,
    reason = "kernel code: packet loads, map lookups and BPF helpers are unsafe by nature"
)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use xdp_guard_common::{
    AllowEntry, COUNTERS, Counter, DEFAULT_DROP_WINDOW_NS, Decision, DropKey, DropReason,
    FrameBytes, MAX_ALLOWED_SOURCES, MAX_BANNED_SOURCES, MAX_DROP_TALLIES,
    MAX_RATE_LIMITED_SOURCES, MAX_TRUSTED_RANGES, PORT_SLOTS, Policy, SETTINGS_LEN, Setting,
    Source, SourceV4, SourceV6, Transport, Verdict, classify, decide, port_slot,
};

#[map]
static ALLOWED_V4: HashMap<SourceV4, AllowEntry> =
    HashMap::with_max_entries(MAX_ALLOWED_SOURCES, 0);
#[map]
static ALLOWED_V6: HashMap<SourceV6, AllowEntry> =
    HashMap::with_max_entries(MAX_ALLOWED_SOURCES, 0);
#[map]
static TRUSTED_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_TRUSTED_RANGES, 0);
#[map]
static TRUSTED_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_TRUSTED_RANGES, 0);
#[map]
static PORTS: Array<u8> = Array::with_max_entries(PORT_SLOTS, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);
#[map]
static SETTINGS: Array<u64> = Array::with_max_entries(SETTINGS_LEN, 0);
#[map]
static BANNED_V4: LruHashMap<SourceV4, AllowEntry> =
    LruHashMap::with_max_entries(MAX_BANNED_SOURCES, 0);
#[map]
static BANNED_V6: LruHashMap<SourceV6, AllowEntry> =
    LruHashMap::with_max_entries(MAX_BANNED_SOURCES, 0);
#[map]
static SYN_RATE_V4: LruHashMap<SourceV4, u64> =
    LruHashMap::with_max_entries(MAX_RATE_LIMITED_SOURCES, 0);
#[map]
static SYN_RATE_V6: LruHashMap<SourceV6, u64> =
    LruHashMap::with_max_entries(MAX_RATE_LIMITED_SOURCES, 0);
#[map]
static DROPS: LruPerCpuHashMap<DropKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_DROP_TALLIES, 0);

#[xdp]
pub fn xdp_guard(ctx: XdpContext) -> u32 {
    let Decision { verdict, malformed } = decide(classify(&Frame(&ctx)), &Maps);
    if malformed {
        count(Counter::Malformed as u32);
    }
    match verdict {
        Verdict::Pass => {
            count(Counter::Passed as u32);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(reason) => {
            count(Counter::Dropped as u32);
            count(reason.counter());
            xdp_action::XDP_DROP
        }
    }
}

/// Passes every frame and does nothing else: loaded only by the cost benchmark, whose
/// `BPF_PROG_TEST_RUN` time for it is the harness's own cost per run, to subtract.
#[xdp]
pub fn xdp_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(counter: u32) {
    if let Some(slot) = STATS.get_ptr_mut(counter) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; nothing else writes it
        // while this program runs on this CPU.
        unsafe { *slot = (*slot).wrapping_add(1) };
    }
}

/// Counts a drop in this CPU's slot of its source's tally for this window.
#[inline(always)]
fn tally(key: DropKey) {
    match DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU map; nothing else writes it meanwhile.
        Some(slot) => unsafe { *slot = (*slot).wrapping_add(1) },
        None => {
            // A full map evicts its least recently used tally; a failed insert (another CPU
            // made the entry meanwhile) loses one count.
            let _ = DROPS.insert(key, 1, 0);
        }
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The drop summary window now.
#[inline(always)]
fn window() -> u32 {
    let length = match setting(Setting::DropWindowNs) {
        0 => DEFAULT_DROP_WINDOW_NS,
        n => n,
    };
    (now_ns() / length) as u32
}

#[inline(always)]
fn setting(which: Setting) -> u64 {
    SETTINGS.get(which as u32).copied().unwrap_or(0)
}

struct Frame<'a>(&'a XdpContext);

impl FrameBytes for Frame<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + offset + N > end {
            return None;
        }
        // SAFETY: `start + offset .. start + offset + N` lies inside the packet (checked above,
        // in the form the verifier recognises), and `[u8; N]` has alignment 1.
        Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
    }
}

struct Maps;

impl Policy for Maps {
    #[inline(always)]
    fn port(&self, transport: Transport, port: u16) -> u8 {
        PORTS.get(port_slot(transport, port)).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn dropped(&self, source: Source, port: u16, reason: DropReason) {
        tally(DropKey::new(source, port, reason, window()));
    }

    #[inline(always)]
    fn guards_udp(&self) -> bool {
        setting(Setting::UdpGuarded) != 0
    }

    #[inline(always)]
    fn banned(&self, source: Source) -> bool {
        // Nobody banned (the usual case): no hash lookup.
        if setting(Setting::BansActive) == 0 {
            return false;
        }
        let entry = match source {
            // SAFETY: the entry is copied out at once (see `admits`).
            Source::V4(key) => unsafe { BANNED_V4.get(key) }.copied(),
            // SAFETY: as above.
            Source::V6(key) => unsafe { BANNED_V6.get(key) }.copied(),
        };
        unexpired(entry)
    }

    #[inline(always)]
    fn admits(&self, source: Source) -> bool {
        let entry = match source {
            // SAFETY: the entry is copied out at once; a concurrent update can only make us
            // read the old or the new expiry, both valid u64s.
            Source::V4(key) => unsafe { ALLOWED_V4.get(key) }.copied(),
            // SAFETY: as above.
            Source::V6(key) => unsafe { ALLOWED_V6.get(key) }.copied(),
        };
        unexpired(entry) || trusted(source)
    }

    /// The generic cell rate algorithm: one attempt per interval on average, bursts up to the
    /// tolerance. Two CPUs updating one source at once may each let an attempt through; the
    /// limit is per source, and a source's frames mostly meet one CPU.
    #[inline(always)]
    fn syn_allowed(&self, source: Source) -> bool {
        let interval = setting(Setting::SynIntervalNs);
        if interval == 0 {
            return true;
        }
        let now = now_ns();
        let slot = match source {
            Source::V4(key) => SYN_RATE_V4.get_ptr_mut(key),
            Source::V6(key) => SYN_RATE_V6.get_ptr_mut(key),
        };
        let Some(slot) = slot else {
            let next = now.wrapping_add(interval);
            let _ = match source {
                Source::V4(key) => SYN_RATE_V4.insert(key, next, 0),
                Source::V6(key) => SYN_RATE_V6.insert(key, next, 0),
            };
            return true;
        };
        // SAFETY: a map value of this program's own type; a racing writer on another CPU can
        // only make us read its whole u64 or ours.
        let arrival = unsafe { *slot }.max(now);
        if arrival - now > setting(Setting::SynToleranceNs) {
            return trusted(source);
        }
        // SAFETY: as above.
        unsafe { *slot = arrival.wrapping_add(interval) };
        true
    }
}

#[inline(always)]
fn trusted(source: Source) -> bool {
    match source {
        Source::V4(key) => TRUSTED_V4.get(Key::new(32, key.octets)).is_some(),
        Source::V6(key) => TRUSTED_V6.get(Key::new(128, key.octets)).is_some(),
    }
}

#[inline(always)]
fn unexpired(entry: Option<AllowEntry>) -> bool {
    entry.is_some_and(|entry| entry.admits_at(now_ns()))
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The workspace's licence. The program calls no GPL-only helper, so the kernel accepts it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
