//! The guard's drops as audit records: the kernel tallies dropped frames per source,
//! destination port, reason and summary window (`xdp.drop_summary`, a minute by default); once
//! a window is over, its tallies become one OCSF Network Activity record per source and
//! interface — at most [`MAX_ITEMISED`] per window and interface, the busiest first, and one
//! roll-up record for the rest — so that a flood from many spoofed sources cannot flood the
//! audit log.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::audit::NetworkEvent;

/// Sources itemised per interface and window; the rest share one roll-up record.
pub const MAX_ITEMISED: usize = 100;
/// Destination ports named per record (the most dropped first).
const MAX_PORTS: usize = 8;

/// Frames dropped from one source to one port for one reason within one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The source.
    pub source: IpAddr,
    /// The destination port (0 for fragments).
    pub port: u16,
    /// Why (the reason's name).
    pub reason: &'static str,
    /// The window.
    pub window: u32,
    /// How many frames.
    pub packets: u64,
}

#[derive(Default)]
struct PerSource {
    packets: u64,
    reasons: Vec<(&'static str, u64)>,
    ports: Vec<(u16, u64)>,
}

fn add<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, count)) => *count = count.saturating_add(n),
        None => list.push((key, n)),
    }
}

/// The records for `tallies` from `interface`; `window` gives each window's start and end.
pub fn records(
    interface: &str,
    tallies: &[Tally],
    window: impl Fn(u32) -> (jiff::Timestamp, jiff::Timestamp),
) -> Vec<NetworkEvent> {
    let mut minutes: HashMap<u32, HashMap<IpAddr, PerSource>> = HashMap::new();
    for tally in tallies {
        let source = minutes
            .entry(tally.window)
            .or_default()
            .entry(tally.source.to_canonical())
            .or_default();
        source.packets = source.packets.saturating_add(tally.packets);
        add(&mut source.reasons, tally.reason, tally.packets);
        add(&mut source.ports, tally.port, tally.packets);
    }
    let mut minutes: Vec<(u32, HashMap<IpAddr, PerSource>)> = minutes.into_iter().collect();
    minutes.sort_by_key(|(minute, _)| *minute);
    let mut out = Vec::new();
    for (minute, sources) in minutes {
        let (start, end) = window(minute);
        let mut sources: Vec<(IpAddr, PerSource)> = sources.into_iter().collect();
        sources.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0)));
        let rest = sources.split_off(sources.len().min(MAX_ITEMISED));
        for (source, mut per) in sources {
            per.reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            per.ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            per.ports.truncate(MAX_PORTS);
            out.push(NetworkEvent {
                time: end,
                start,
                source: Some(source),
                sources: 1,
                interface: interface.to_owned(),
                packets: per.packets,
                reasons: per.reasons,
                ports: per.ports.into_iter().map(|(port, _)| port).collect(),
            });
        }
        if !rest.is_empty() {
            let mut reasons = Vec::new();
            let mut ports = Vec::new();
            let mut packets = 0u64;
            for (_, per) in &rest {
                packets = packets.saturating_add(per.packets);
                for (reason, n) in &per.reasons {
                    add(&mut reasons, *reason, *n);
                }
                for (port, n) in &per.ports {
                    add(&mut ports, *port, *n);
                }
            }
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            ports.truncate(MAX_PORTS);
            out.push(NetworkEvent {
                time: end,
                start,
                source: None,
                sources: u64::try_from(rest.len()).unwrap_or(u64::MAX),
                interface: interface.to_owned(),
                packets,
                reasons,
                ports: ports.into_iter().map(|(port, _)| port).collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(source: &str, port: u16, reason: &'static str, minute: u32, packets: u64) -> Tally {
        Tally {
            source: source.parse().unwrap_or_else(|e| panic!("{e}")),
            port,
            reason,
            window: minute,
            packets,
        }
    }

    fn window(minute: u32) -> (jiff::Timestamp, jiff::Timestamp) {
        let start =
            jiff::Timestamp::from_second(i64::from(minute) * 60).unwrap_or_else(|e| panic!("{e}"));
        (start, start + jiff::SignedDuration::from_secs(60))
    }

    #[test]
    fn one_record_per_source_and_minute_with_reasons_and_ports() {
        let records = records(
            "eth0",
            &[
                tally("192.0.2.1", 22, "not_admitted", 5, 10),
                tally("192.0.2.1", 5432, "not_admitted", 5, 3),
                tally("192.0.2.1", 443, "syn_rate_limited", 5, 20),
                tally("::ffff:192.0.2.1", 22, "not_admitted", 5, 1),
                tally("192.0.2.1", 22, "not_admitted", 6, 4),
                tally("2001:db8::9", 0, "fragment", 5, 2),
            ],
            window,
        );
        assert_eq!(records.len(), 3, "{records:#?}");
        let first = &records[0];
        assert_eq!(
            first.source,
            Some("192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(first.packets, 34);
        assert_eq!(
            first.reasons,
            [("syn_rate_limited", 20), ("not_admitted", 14)]
        );
        assert_eq!(first.ports, [443, 22, 5432]);
        assert_eq!(first.start, window(5).0);
        assert_eq!(first.time, window(5).1);
        assert_eq!(records[1].ports, [0]);
        assert_eq!(records[2].packets, 4, "the next minute is its own record");
    }

    #[test]
    fn a_minute_of_many_sources_itemises_the_busiest_and_rolls_up_the_rest() {
        let tallies: Vec<Tally> = (0..(MAX_ITEMISED as u32 + 50))
            .map(|i| Tally {
                source: IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
                port: 22,
                reason: "not_admitted",
                window: 1,
                packets: u64::from(i) + 1,
            })
            .collect();
        let records = records("eth0", &tallies, window);
        assert_eq!(records.len(), MAX_ITEMISED + 1);
        assert_eq!(records[0].packets, u64::from(MAX_ITEMISED as u32 + 50));
        let rollup = &records[MAX_ITEMISED];
        assert_eq!(rollup.source, None);
        assert_eq!(rollup.sources, 50);
        assert_eq!(rollup.packets, (1..=50).sum::<u64>());
    }
}
