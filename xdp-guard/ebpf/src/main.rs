//! The xdp-guard XDP program: drops TCP to protected ports unless the source is admitted.
//!
//! All parsing and the decision are [`xdp_guard_common::classify`] and
//! [`xdp_guard_common::decide`]; this file only supplies bounds-checked packet loads, the
//! map-backed policy and the counters.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    unsafe_code,
    reason = "kernel code: packet loads, map lookups and BPF helpers are unsafe by nature"
)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use xdp_guard_common::{
    AllowEntry, COUNTERS, Counter, Decision, FrameBytes, MAX_ALLOWED_SOURCES, MAX_BANNED_SOURCES,
    MAX_PROTECTED_PORTS, MAX_TRUSTED_RANGES, Policy, Source, SourceV4, SourceV6, Verdict, classify,
    decide,
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
static PROTECTED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PROTECTED_PORTS, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);
#[map]
static BANS_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static BANNED_V4: LruHashMap<SourceV4, AllowEntry> =
    LruHashMap::with_max_entries(MAX_BANNED_SOURCES, 0);
#[map]
static BANNED_V6: LruHashMap<SourceV6, AllowEntry> =
    LruHashMap::with_max_entries(MAX_BANNED_SOURCES, 0);

#[xdp]
pub fn xdp_guard(ctx: XdpContext) -> u32 {
    match try_xdp_guard(&ctx) {
        Ok(Verdict::Pass) => xdp_action::XDP_PASS,
        Ok(Verdict::Drop) => xdp_action::XDP_DROP,
    }
}

fn try_xdp_guard(ctx: &XdpContext) -> Result<Verdict, core::convert::Infallible> {
    let Decision { verdict, malformed } = decide(classify(&Frame(ctx)), &Maps);
    count(match verdict {
        Verdict::Pass => Counter::Passed,
        Verdict::Drop => Counter::Dropped,
    });
    if malformed {
        count(Counter::Malformed);
    }
    Ok(verdict)
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; nothing else writes it
        // while this program runs on this CPU.
        unsafe { *slot = (*slot).wrapping_add(1) };
    }
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
    fn is_protected(&self, port: u16) -> bool {
        PROTECTED_PORTS.get_ptr(port).is_some()
    }

    #[inline(always)]
    fn banned(&self, source: Source) -> bool {
        // Nobody banned (the usual case): no hash lookup.
        if BANS_ACTIVE.get(0).is_none_or(|active| *active == 0) {
            return false;
        }
        allowed(Maps::banned_entry(source))
    }

    #[inline(always)]
    fn admits(&self, source: Source) -> bool {
        match source {
            Source::V4(key) => {
                // SAFETY: the entry is copied out at once; a concurrent update can only make
                // us read the old or the new expiry, both valid u64s.
                allowed(unsafe { ALLOWED_V4.get(key) }.copied())
                    || TRUSTED_V4.get(Key::new(32, key.octets)).is_some()
            }
            Source::V6(key) => {
                // SAFETY: as above.
                allowed(unsafe { ALLOWED_V6.get(key) }.copied())
                    || TRUSTED_V6.get(Key::new(128, key.octets)).is_some()
            }
        }
    }
}

impl Maps {
    #[inline(always)]
    fn banned_entry(source: Source) -> Option<AllowEntry> {
        match source {
            // SAFETY: the entry is copied out at once (see `admits`).
            Source::V4(key) => unsafe { BANNED_V4.get(key) }.copied(),
            // SAFETY: as above.
            Source::V6(key) => unsafe { BANNED_V6.get(key) }.copied(),
        }
    }
}

#[inline(always)]
fn allowed(entry: Option<AllowEntry>) -> bool {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    entry.is_some_and(|entry| entry.admits_at(unsafe { bpf_ktime_get_ns() }))
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
