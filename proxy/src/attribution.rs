//! Container attribution: which container (cgroup) is on the other end of a connection.
//!
//! - [`identity`]: a cgroup v2 path → the container, pod or service it belongs to, by the
//!   naming of each runtime (Docker, containerd/CRI, CRI-O, Podman, Kubernetes, systemd).
//! - [`resolve`]: a cgroup id (the inode of its directory) → its path, walking the cgroup v2
//!   mount once and caching, re-resolving on a miss and forgetting removed cgroups.

pub mod identity;
pub mod resolve;
