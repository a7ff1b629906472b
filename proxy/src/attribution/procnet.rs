//! The listening TCP sockets that exist already when the socket hooks are attached: their
//! binders were never seen by `post_bind`, so sekisho finds them in `/proc` once at start —
//! `/proc/net/tcp{,6}` for the listening addresses and their socket inodes, `/proc/<pid>/fd`
//! for the process holding each inode, `/proc/<pid>/cgroup` for its cgroup — and seeds the
//! hooks' listener map with them (never over an entry the kernel wrote).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP state `LISTEN` in `/proc/net/tcp`.
const LISTEN: &str = "0A";
/// Processes and descriptors looked at, at most (a host with more is seeded in part).
const MAX_FDS: usize = 1_000_000;

/// One listening socket from `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// Its local address.
    pub address: SocketAddr,
    /// Its socket inode.
    pub inode: u64,
}

/// The listening sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`; lines that do not
/// parse are skipped.
pub fn listening(table: &str) -> Vec<Listening> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = match addr.len() {
                8 => IpAddr::V4(Ipv4Addr::from(word(addr)?.to_ne_bytes())),
                32 => {
                    let mut octets = [0u8; 16];
                    for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                        let hex = addr.get(i * 8..i * 8 + 8)?;
                        chunk.copy_from_slice(&word(hex)?.to_ne_bytes());
                    }
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                _ => return None,
            };
            Some(Listening {
                address: SocketAddr::new(ip, port),
                inode: inode.parse().ok()?,
            })
        })
        .collect()
}

/// A 32-bit word as the kernel prints it: hex of the value in host byte order, whose memory
/// bytes are the address's wire octets.
fn word(hex: &str) -> Option<u32> {
    u32::from_str_radix(hex, 16).ok()
}

/// The process holding each socket inode in `inodes`, from `/proc/<pid>/fd` (the first one
/// found when several share it).
pub fn holders(inodes: &[u64]) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return found;
    };
    let mut looked = 0usize;
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            looked += 1;
            if looked > MAX_FDS || found.len() == inodes.len() {
                return found;
            }
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode
                && inodes.contains(&inode)
            {
                found.entry(inode).or_insert(pid);
            }
        }
    }
    found
}

/// The cgroup v2 path of process `pid` (`0::/path` in `/proc/<pid>/cgroup`).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().to_owned())
}

/// The `comm` of process `pid`.
pub fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|comm| comm.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_both_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1180 1 00000000ec4ba0f9 100 0 0 10 0\n\
   1: 0100007F:B6FD 0100007F:C0B0 06 00000000:00000000 03:0000148A 00000000     0        0 0 3 000000006a5d20f5\n\
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   3: garbage\n";
        let found = listening(v4);
        assert_eq!(
            found,
            [
                Listening {
                    address: "0.0.0.0:2024".parse().unwrap_or_else(|e| panic!("{e}")),
                    inode: 1180
                },
                Listening {
                    address: "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}")),
                    inode: 4242
                },
            ],
            "the established connection and the garbage line are skipped"
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000100007F:8A97 0000000000000000FFFF00000100007F:8E06 06 00000000:00000000 03:000011A0 00000000     0        0 0 3 0\n";
        assert_eq!(
            listening(v6),
            [Listening {
                address: "[::1]:8080".parse().unwrap_or_else(|e| panic!("{e}")),
                inode: 77
            }]
        );
    }

    #[test]
    fn this_process_is_found_holding_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_else(|e| panic!("{e}"));
        let mine = listening(&table)
            .into_iter()
            .find(|l| l.address == address)
            .unwrap_or_else(|| panic!("{address} not in /proc/net/tcp"));
        let holders = holders(&[mine.inode]);
        assert_eq!(holders.get(&mine.inode), Some(&std::process::id()));
        assert!(cgroup_of(std::process::id()).is_some_and(|p| p.starts_with('/')));
        assert!(comm_of(std::process::id()).is_some());
    }
}
