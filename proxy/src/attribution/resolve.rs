//! A cgroup v2 id (the inode number of the cgroup's directory) → the cgroup's path, from a
//! cache of one walk of the cgroup v2 mount, re-walked on a miss at most once per interval.
//!
//! The cache answers every known id without I/O. An unknown id (a cgroup created since the last
//! walk, or an id that names no cgroup) re-walks the tree, but never twice within
//! [`DEFAULT_MIN_RESCAN`] of the previous walk's end, so lookups of made-up ids cannot keep the
//! resolver walking. A walk replaces the cache, so removed cgroups are forgotten by the next
//! one. One walk runs at a time, without the cache's lock: hits are answered while it runs.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The least time between the end of one walk and the start of a re-walk on a miss.
pub const DEFAULT_MIN_RESCAN: Duration = Duration::from_secs(1);
/// The deepest cgroup a walk records, counted from the root (depth 0).
pub const MAX_DEPTH: usize = 32;
/// The most cgroups a walk records; beyond it the walk stops and the rest are unknown.
pub const MAX_CGROUPS: usize = 200_000;

/// The cgroup path for a cgroup id, cached (see the module documentation).
pub struct Resolver {
    root: PathBuf,
    min_rescan: Duration,
    cache: Mutex<Cache>,
    /// Held for the whole of a walk, so that only one runs and a thread that waited for it
    /// finds the new cache instead of walking again.
    walking: Mutex<()>,
    hits: AtomicU64,
    misses: AtomicU64,
    rescans: AtomicU64,
}

/// The resolver's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Lookups answered with a path.
    pub hits: u64,
    /// Lookups answered with nothing.
    pub misses: u64,
    /// Walks of the tree after the first, each caused by a miss.
    pub rescans: u64,
}

#[derive(Debug, Default)]
struct Cache {
    paths: HashMap<u64, String>,
    /// When the last walk ended; `None` before the first.
    walked: Option<Instant>,
}

impl Resolver {
    /// A resolver for the cgroup v2 mount at `root` (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` in a hybrid layout; see [`detect_root`]). Nothing is read until
    /// the first lookup.
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        Self::with_min_rescan(root, DEFAULT_MIN_RESCAN)
    }

    /// As [`Resolver::new`], re-walking on a miss at most once per `min_rescan`.
    #[must_use]
    pub fn with_min_rescan(root: PathBuf, min_rescan: Duration) -> Self {
        Self {
            root,
            min_rescan,
            cache: Mutex::new(Cache::default()),
            walking: Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rescans: AtomicU64::new(0),
        }
    }

    /// The path of cgroup `id` relative to the root, with a leading `/` (the root is `/`).
    pub fn path(&self, id: u64) -> Option<String> {
        let found = self.cached(id).or_else(|| self.walk_for(id));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The counters so far.
    pub fn stats(&self) -> ResolverStats {
        ResolverStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rescans: self.rescans.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, id: u64) -> Option<String> {
        self.cache().paths.get(&id).cloned()
    }

    /// On a miss: walks the tree if none has been walked, or the last walk ended at least
    /// `min_rescan` ago, and looks `id` up in the result.
    fn walk_for(&self, id: u64) -> Option<String> {
        let _walking = self.walking.lock().unwrap_or_else(PoisonError::into_inner);
        let first = {
            let cache = self.cache();
            // Another thread's walk may have found it while this one waited.
            if let Some(found) = cache.paths.get(&id) {
                return Some(found.clone());
            }
            match cache.walked {
                Some(end) if end.elapsed() < self.min_rescan => return None,
                walked => walked.is_none(),
            }
        };
        let paths = walk(&self.root);
        if !first {
            self.rescans.fetch_add(1, Ordering::Relaxed);
        }
        let mut cache = self.cache();
        cache.paths = paths;
        cache.walked = Some(Instant::now());
        cache.paths.get(&id).cloned()
    }

    /// The cache is replaced whole by a walk, so a panic elsewhere cannot leave it half-done.
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("root", &self.root)
            .field("min_rescan", &self.min_rescan)
            .field("cached", &self.cache().paths.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The cgroup v2 mount point from `/proc/self/mountinfo`: `/sys/fs/cgroup` if it is cgroup2,
/// else the hybrid layout's `/sys/fs/cgroup/unified`, else the first other cgroup2 mount. Only
/// mounts of the hierarchy's root count (a mount of a sub-cgroup would give ids paths that are
/// not the host's).
#[must_use]
pub fn detect_root() -> Option<PathBuf> {
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => root_in_mountinfo(&text),
        Err(error) => {
            tracing::warn!(%error, "cannot read /proc/self/mountinfo to find the cgroup v2 mount");
            None
        }
    }
}

fn root_in_mountinfo(text: &str) -> Option<PathBuf> {
    let mounts: Vec<String> = text.lines().filter_map(cgroup2_mount).collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find_map(|preferred| mounts.iter().find(|mount| *mount == preferred))
        .or_else(|| mounts.first())
        .map(PathBuf::from)
}

/// The mount point of one mountinfo line, if it mounts a cgroup2 hierarchy's root:
/// `id parent major:minor root mount-point options [optional…] - fstype source super-options`.
fn cgroup2_mount(line: &str) -> Option<String> {
    let (mount, filesystem) = line.split_once(" - ")?;
    if filesystem.split(' ').next() != Some("cgroup2") {
        return None;
    }
    let mut fields = mount.split(' ').skip(3);
    let (root, point) = (fields.next()?, fields.next()?);
    (root == "/").then(|| unescape_octal(point))
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash in mountinfo.
fn unescape_octal(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = match (byte, tail) {
            (b'\\', [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', more @ ..]) => {
                out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
                more
            }
            _ => {
                out.push(byte);
                tail
            }
        };
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every cgroup directory under `root` (itself included) by inode number, within
/// [`MAX_DEPTH`] and [`MAX_CGROUPS`]. Directories on another filesystem, with names that are
/// not UTF-8, or that vanish during the walk are left out, with what is below them.
fn walk(root: &Path) -> HashMap<u64, String> {
    let mut paths = HashMap::new();
    let device = match fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() => {
            paths.insert(meta.ino(), "/".to_owned());
            meta.dev()
        }
        Ok(_) => {
            tracing::warn!(root = %root.display(), "the cgroup root is not a directory");
            return paths;
        }
        Err(error) => {
            tracing::warn!(root = %root.display(), %error, "cannot read the cgroup root");
            return paths;
        }
    };
    let mut too_deep = false;
    let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, relative, depth)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::debug!(dir = %dir.display(), %error, "cgroup left out of the walk");
                continue;
            }
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_dir() || meta.dev() != device {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                tracing::debug!(dir = %dir.display(), "cgroup with a non-UTF-8 name left out");
                continue;
            };
            if depth >= MAX_DEPTH {
                too_deep = true;
                continue;
            }
            if paths.len() >= MAX_CGROUPS {
                tracing::warn!(
                    root = %root.display(),
                    limit = MAX_CGROUPS,
                    "cgroup walk stopped at its limit; the cgroups beyond are unknown"
                );
                return paths;
            }
            let path = format!("{relative}/{name}");
            paths.insert(meta.ino(), path.clone());
            pending.push((entry.path(), path, depth.saturating_add(1)));
        }
    }
    if too_deep {
        tracing::warn!(
            root = %root.display(),
            limit = MAX_DEPTH,
            "cgroups deeper than the limit left out of the walk"
        );
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A directory tree under the system's temporary directory, removed when dropped.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let unique = format!(
                "sekisho-resolve-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let root = std::env::temp_dir().join(unique);
            fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
            Self(root)
        }

        /// Creates `relative` (and its parents) and returns its inode number.
        fn mkdir(&self, relative: &str) -> u64 {
            let dir = self.0.join(relative);
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            self.ino(relative)
        }

        fn ino(&self, relative: &str) -> u64 {
            let dir = self.0.join(relative);
            fs::metadata(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .ino()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn stats(hits: u64, misses: u64, rescans: u64) -> ResolverStats {
        ResolverStats {
            hits,
            misses,
            rescans,
        }
    }

    #[test]
    fn ids_resolve_to_paths_from_one_walk() {
        let tree = Tree::new("paths");
        let scope = tree.mkdir("system.slice/docker-abc.scope");
        let service = tree.mkdir("system.slice/nginx.service");
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap_or_else(|e| panic!("{e}"));
        let resolver = Resolver::with_min_rescan(tree.0.clone(), Duration::ZERO);
        assert_eq!(resolver.path(tree.ino("")).as_deref(), Some("/"));
        assert_eq!(
            resolver.path(tree.ino("system.slice")).as_deref(),
            Some("/system.slice")
        );
        assert_eq!(
            resolver.path(scope).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(
            resolver.path(service).as_deref(),
            Some("/system.slice/nginx.service")
        );
        let file = fs::metadata(tree.0.join("system.slice/cgroup.procs"))
            .unwrap_or_else(|e| panic!("{e}"))
            .ino();
        assert_eq!(resolver.path(file), None);
        assert_eq!(resolver.stats(), stats(4, 1, 1));
    }

    #[test]
    fn a_new_cgroup_is_found_after_a_miss() {
        let tree = Tree::new("new");
        tree.mkdir("system.slice");
        let resolver = Resolver::with_min_rescan(tree.0.clone(), Duration::ZERO);
        assert_eq!(resolver.path(tree.ino("")).as_deref(), Some("/"));
        let created = tree.mkdir("system.slice/late.service");
        assert_eq!(
            resolver.path(created).as_deref(),
            Some("/system.slice/late.service")
        );
        assert_eq!(resolver.stats(), stats(2, 0, 1));
    }

    #[test]
    fn a_removed_cgroup_is_forgotten_after_a_rescan() {
        let tree = Tree::new("removed");
        let gone = tree.mkdir("gone.scope");
        let resolver = Resolver::with_min_rescan(tree.0.clone(), Duration::ZERO);
        assert_eq!(resolver.path(gone).as_deref(), Some("/gone.scope"));
        fs::remove_dir(tree.0.join("gone.scope")).unwrap_or_else(|e| panic!("{e}"));
        // The cache answers until a miss re-walks.
        assert_eq!(resolver.path(gone).as_deref(), Some("/gone.scope"));
        assert_eq!(resolver.path(u64::MAX), None);
        assert_eq!(resolver.path(gone), None);
        assert_eq!(resolver.stats().rescans, 2);
    }

    #[test]
    fn misses_do_not_rewalk_within_the_interval() {
        let tree = Tree::new("limit");
        let resolver = Resolver::with_min_rescan(tree.0.clone(), Duration::from_secs(3600));
        assert_eq!(resolver.path(tree.ino("")).as_deref(), Some("/"));
        let created = tree.mkdir("late.service");
        for _ in 0..100 {
            assert_eq!(resolver.path(created), None);
        }
        assert_eq!(resolver.stats(), stats(1, 100, 0));
    }

    #[test]
    fn lookups_from_several_threads_share_one_walk() {
        let tree = Tree::new("threads");
        let id = tree.mkdir("a/b/c");
        let resolver = Resolver::with_min_rescan(tree.0.clone(), Duration::from_secs(3600));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| assert_eq!(resolver.path(id).as_deref(), Some("/a/b/c")));
            }
        });
        assert_eq!(resolver.stats(), stats(8, 0, 0));
    }

    #[test]
    fn the_walk_is_bounded_in_depth() {
        let tree = Tree::new("deep");
        let deepest = vec!["d"; MAX_DEPTH + 1].join("/");
        let too_deep = tree.mkdir(&deepest);
        let limit = tree.ino(&vec!["d"; MAX_DEPTH].join("/"));
        let resolver = Resolver::new(tree.0.clone());
        assert_eq!(resolver.path(too_deep), None);
        assert_eq!(
            resolver.path(limit),
            Some(format!("/{}", vec!["d"; MAX_DEPTH].join("/")))
        );
    }

    #[test]
    fn a_missing_root_resolves_nothing() {
        let tree = Tree::new("missing");
        let resolver = Resolver::new(tree.0.join("absent"));
        assert_eq!(resolver.path(tree.ino("")), None);
        assert_eq!(resolver.stats(), stats(0, 1, 0));
    }

    #[test]
    fn mountinfo_prefers_the_unified_root() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            root_in_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "\
90 80 0:50 / /mnt/my\\040cgroup rw shared:9 - cgroup2 cgroup2 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            root_in_mountinfo(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let elsewhere = "90 80 0:50 / /mnt/my\\040cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            root_in_mountinfo(elsewhere),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
        let sub_cgroup = "35 24 0:30 /system.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(root_in_mountinfo(sub_cgroup), None);
        assert_eq!(root_in_mountinfo("garbage\n - \n\\\n"), None);
        assert_eq!(unescape_octal("a\\134b\\0\\"), "a\\b\\0\\");
    }

    #[test]
    fn detect_root_finds_a_cgroup2_mount_of_this_machine() {
        let Some(root) = detect_root() else {
            return;
        };
        assert!(root.is_dir(), "{}", root.display());
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").unwrap_or_else(|e| panic!("{e}"));
        let mounted = mountinfo.lines().any(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4).map(PathBuf::from);
            let filesystem = line.split(" - ").nth(1).and_then(|f| f.split(' ').next());
            point.as_ref() == Some(&root) && filesystem == Some("cgroup2")
        });
        assert!(mounted, "{} is no cgroup2 mount", root.display());
        // Its root resolves to `/`.
        let resolver = Resolver::new(root.clone());
        let ino = fs::metadata(&root).unwrap_or_else(|e| panic!("{e}")).ino();
        assert_eq!(resolver.path(ino).as_deref(), Some("/"));
    }
}
