//! Where the cgroup controllers are mounted, from mountinfo (not guesses).
//!
//! `/proc/self/mountinfo` (the agent's own view) lists every mount:
//!
//! ```text
//! 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
//! 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
//! ```
//!
//! `<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <fstype> <source> <super options>`;
//! a v1 mount's controllers are in its super options (`rw,cpu,cpuacct` for a
//! co-mount). Mount points escape space, tab, newline and backslash as octal
//! (`\040`, `\011`, `\012`, `\134`).
//!
//! Paths are turned into the agent's view of `--cgroup-path` (the root):
//! 1. a mount at or under the root is used as it is (a pod that mounts the
//!    host's `/sys/fs/cgroup` at `/host/sys/fs/cgroup` and is given that root);
//! 2. otherwise a mount at or under `/sys/fs/cgroup` (the host's usual place)
//!    is rebased onto the root (a fixture tree in a temp dir read with a
//!    captured mountinfo);
//! 3. anything else is ignored.
//!
//! A mount whose `root` field is not `/` shows only a subtree of its
//! hierarchy (a container's own cgroup mount); such a mount is used only when
//! it is under the root and nothing better is there, and never rebased. A
//! root starting with `/..` is the opposite: seen from inside a cgroup
//! namespace, it is the hierarchy above the namespace's root (the host's
//! tree bind-mounted into a pod), and counts as whole.
//!
//! When mountinfo holds no cgroup mount at all (an odd sandbox, a fixture
//! without one), [`layout_by_probing`] looks at the directories instead.

use std::path::{Path, PathBuf};

/// The controllers this agent reads, and where each is mounted, in the
/// agent's own view of the filesystem (rebased onto `--cgroup-path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The cgroup2 mount, when there is one (it may have no controllers).
    pub unified: Option<PathBuf>,
    /// v1 mounts per controller (`cpu` and `cpuacct` may be one directory).
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

impl CgroupLayout {
    /// No cgroup mount found at all.
    pub fn is_empty(&self) -> bool {
        self.unified.is_none() && !self.has_v1()
    }

    /// At least one v1 controller this agent reads is mounted.
    pub fn has_v1(&self) -> bool {
        self.cpu.is_some()
            || self.cpuacct.is_some()
            || self.memory.is_some()
            || self.blkio.is_some()
            || self.pids.is_some()
    }
}

/// Which hierarchy a cgroup mount is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupKind {
    /// cgroup v1, with the controllers named in its super options
    /// (`name=systemd` and other named hierarchies have none).
    V1 { controllers: Vec<String> },
    /// The cgroup2 (unified) hierarchy.
    V2,
}

/// One `cgroup` or `cgroup2` line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The `root` field: the hierarchy's directory seen at the mount point
    /// (`/` for a whole hierarchy).
    pub root: String,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    pub kind: CgroupKind,
}

/// Every v1 controller the kernel knows; anything else in the super options
/// of a `cgroup` mount is a mount flag (`rw`, `xattr`, `name=…`, …).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "blkio",
    "pids",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// The cgroup mounts in mountinfo text, in file order. Lines that are not
/// cgroup mounts, or are malformed, are skipped.
pub fn cgroup_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<CgroupMount> {
    let (left, right) = line.split_once(" - ")?;
    let mut right = right.split_ascii_whitespace();
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_opts = right.next().unwrap_or("");
    let kind = match fstype {
        "cgroup2" => CgroupKind::V2,
        "cgroup" => CgroupKind::V1 {
            controllers: super_opts
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(str::to_string)
                .collect(),
        },
        _ => return None,
    };
    let mut left = left.split_ascii_whitespace();
    let root = left.nth(3)?;
    let mount_point = left.next()?;
    if !mount_point.starts_with('/') {
        return None;
    }
    Some(CgroupMount {
        root: unescape(root),
        mount_point: PathBuf::from(unescape(mount_point)),
        kind,
    })
}

/// Undo mountinfo's octal escapes (`\040` → space); anything else is kept.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some((before, after)) = rest.split_once('\\') {
        out.push_str(before);
        let byte = after
            .get(..3)
            .filter(|o| o.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|o| u8::from_str_radix(o, 8).ok())
            .filter(u8::is_ascii);
        match byte {
            Some(b) => {
                out.push(b as char);
                rest = &after[3..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The host's usual cgroup root, the base that mounts are rebased from.
const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Parse mountinfo text and find the cgroup mounts under `cgroup_root`.
pub fn layout_from_mountinfo(text: &str, cgroup_root: &std::path::Path) -> CgroupLayout {
    // (rank, path) per slot: lower rank wins, then file order
    let mut slots: [Option<(u8, PathBuf)>; 6] = Default::default();
    for m in cgroup_mounts(text) {
        // `/` is the whole hierarchy; `/..`-rooted is the hierarchy above our
        // own cgroup namespace's root (the host's tree mounted into a pod
        // with a private cgroupns): also the whole of it
        let whole = m.root == "/" || m.root.starts_with("/..");
        let (rank, path) = if m.mount_point.starts_with(cgroup_root) {
            (if whole { 0 } else { 2 }, m.mount_point.clone())
        } else if whole && let Ok(rel) = m.mount_point.strip_prefix(HOST_CGROUP_ROOT) {
            (1, join_rel(cgroup_root, rel))
        } else {
            continue;
        };
        let mut put = |i: usize| {
            if slots[i].as_ref().is_none_or(|(r, _)| rank < *r) {
                slots[i] = Some((rank, path.clone()));
            }
        };
        match &m.kind {
            CgroupKind::V2 => put(0),
            CgroupKind::V1 { controllers } => {
                for c in controllers {
                    match c.as_str() {
                        "cpu" => put(1),
                        "cpuacct" => put(2),
                        "memory" => put(3),
                        "blkio" => put(4),
                        "pids" => put(5),
                        _ => {}
                    }
                }
            }
        }
    }
    let [unified, cpu, cpuacct, memory, blkio, pids] = slots.map(|s| s.map(|(_, p)| p));
    CgroupLayout {
        unified,
        cpu,
        cpuacct,
        memory,
        blkio,
        pids,
    }
}

fn join_rel(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Without mountinfo: look at `root` itself. Pure v2 when
/// `root/cgroup.controllers` exists; otherwise v1 controller directories
/// (`cpu`, `cpuacct`, co-mounted `cpu,cpuacct` or `cpuacct,cpu`, `memory`,
/// `blkio`, `pids`) and a hybrid `unified` directory holding
/// `cgroup.controllers`.
pub fn layout_by_probing(root: &Path) -> CgroupLayout {
    if root.join("cgroup.controllers").is_file() {
        return CgroupLayout {
            unified: Some(root.to_path_buf()),
            ..CgroupLayout::default()
        };
    }
    let dir = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.is_dir());
    let unified = Some(root.join("unified")).filter(|p| p.join("cgroup.controllers").is_file());
    CgroupLayout {
        unified,
        cpu: dir(&["cpu", "cpu,cpuacct", "cpuacct,cpu"]),
        cpuacct: dir(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]),
        memory: dir(&["memory"]),
        blkio: dir(&["blkio"]),
        pids: dir(&["pids"]),
    }
}

/// Read `mountinfo` (the agent's own: `/proc/self/mountinfo`) and find the
/// layout under `cgroup_root`; probe the directories when it lists no cgroup
/// mount or cannot be read.
pub fn read_layout(mountinfo: &Path, cgroup_root: &Path) -> CgroupLayout {
    let layout = match std::fs::read_to_string(mountinfo) {
        Ok(text) => layout_from_mountinfo(&text, cgroup_root),
        Err(_) => CgroupLayout::default(),
    };
    if layout.is_empty() {
        layout_by_probing(cgroup_root)
    } else {
        layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/captured-linux-6.18-hybrid/proc/self/mountinfo"
    );

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn captured_hybrid_mounts() {
        let text = std::fs::read_to_string(HYBRID).unwrap();
        let mounts = cgroup_mounts(&text);
        // 9 v1 hierarchies (with name=systemd) and the unified one
        assert_eq!(mounts.len(), 10);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(
            mounts[0].kind,
            CgroupKind::V1 {
                controllers: vec!["cpu".into()]
            }
        );
        // name=systemd: a v1 hierarchy without controllers
        assert_eq!(
            mounts[8].kind,
            CgroupKind::V1 {
                controllers: vec![]
            }
        );
        assert_eq!(mounts[9].kind, CgroupKind::V2);
        assert_eq!(mounts[9].root, "/");
    }

    #[test]
    fn captured_hybrid_layout_as_is_and_rebased() {
        let text = std::fs::read_to_string(HYBRID).unwrap();
        let l = layout_from_mountinfo(&text, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            l,
            CgroupLayout {
                unified: p("/sys/fs/cgroup/unified"),
                cpu: p("/sys/fs/cgroup/cpu"),
                cpuacct: p("/sys/fs/cgroup/cpuacct"),
                memory: p("/sys/fs/cgroup/memory"),
                blkio: p("/sys/fs/cgroup/blkio"),
                pids: p("/sys/fs/cgroup/pids"),
            }
        );
        let l = layout_from_mountinfo(&text, Path::new("/tmp/fx/sys/fs/cgroup"));
        assert_eq!(l.cpu, p("/tmp/fx/sys/fs/cgroup/cpu"));
        assert_eq!(l.cpuacct, p("/tmp/fx/sys/fs/cgroup/cpuacct"));
        assert_eq!(l.memory, p("/tmp/fx/sys/fs/cgroup/memory"));
        assert_eq!(l.unified, p("/tmp/fx/sys/fs/cgroup/unified"));
    }

    #[test]
    fn co_mounted_cpu_cpuacct() {
        let text = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,net_cls,net_prio
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
";
        let l = layout_from_mountinfo(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.cpu, p("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.cpuacct, p("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.memory, p("/sys/fs/cgroup/memory"));
        assert_eq!(l.blkio, None);
        assert_eq!(l.unified, None);
        let ms = cgroup_mounts(text);
        assert_eq!(
            ms[0].kind,
            CgroupKind::V1 {
                controllers: vec!["cpu".into(), "cpuacct".into()]
            }
        );
        assert_eq!(
            ms[3].kind,
            CgroupKind::V1 {
                controllers: vec![]
            }
        );
    }

    #[test]
    fn pure_v2() {
        let text = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let l = layout_from_mountinfo(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            l,
            CgroupLayout {
                unified: p("/sys/fs/cgroup"),
                ..Default::default()
            }
        );
        // rebased onto a temp root: the root itself
        let l = layout_from_mountinfo(text, Path::new("/tmp/x"));
        assert_eq!(l.unified, p("/tmp/x"));
    }

    #[test]
    fn pod_with_host_cgroup_at_host_path() {
        // the pod's own (namespaced) cgroup2 at /sys/fs/cgroup, the host's at
        // /host/sys/fs/cgroup: the one under the given root wins
        let text = "\
1200 1100 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup ro
1300 1100 0:30 / /host/sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
";
        let l = layout_from_mountinfo(text, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(l.unified, p("/host/sys/fs/cgroup"));
        // order does not matter
        let rev: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
        let l = layout_from_mountinfo(&rev, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(l.unified, p("/host/sys/fs/cgroup"));
    }

    #[test]
    fn host_tree_seen_from_a_private_cgroup_namespace() {
        // the pod's own cgroup2 and the host's, bind-mounted at /host: from
        // inside the pod's cgroup namespace the host's root reads `/../../..`
        let text = "\
1200 1100 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup ro
1300 1100 0:30 /../../.. /host/sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
";
        let l = layout_from_mountinfo(text, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(l.unified, p("/host/sys/fs/cgroup"));
        let ms = cgroup_mounts(text);
        assert_eq!(ms[1].root, "/../../..");
        // and a fixture root elsewhere still gets the rebased host path
        let l = layout_from_mountinfo(text, Path::new("/tmp/fx"));
        assert_eq!(l.unified, p("/tmp/fx"));
    }

    #[test]
    fn subtree_mounts_are_last_resort_and_never_rebased() {
        let text = "\
50 40 0:29 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
51 40 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
52 40 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let l = layout_from_mountinfo(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.cpu, p("/sys/fs/cgroup/cpu"));
        assert_eq!(l.memory, p("/sys/fs/cgroup/memory"));
        let l = layout_from_mountinfo(text, Path::new("/tmp/r"));
        assert_eq!(l.cpu, None);
        assert_eq!(l.memory, p("/tmp/r/memory"));
    }

    #[test]
    fn escaped_spaces_and_elsewhere() {
        let text = "\
60 1 0:40 / /mnt/my\\040cgroups/memory rw - cgroup cgroup rw,memory
61 1 0:41 / /elsewhere/pids rw - cgroup cgroup rw,pids
62 1 0:42 / /mnt/x rw - tmpfs tmpfs rw
garbage line
";
        let ms = cgroup_mounts(text);
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].mount_point, PathBuf::from("/mnt/my cgroups/memory"));
        let l = layout_from_mountinfo(text, Path::new("/mnt/my cgroups"));
        assert_eq!(l.memory, p("/mnt/my cgroups/memory"));
        // /elsewhere is neither under the root nor under /sys/fs/cgroup
        assert_eq!(l.pids, None);
        assert_eq!(unescape(r"a\134b\011c\0"), "a\\b\tc\\0");
    }

    #[test]
    fn live_mountinfo_matches_the_directories() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = Path::new("/sys/fs/cgroup");
        let l = layout_from_mountinfo(&text, root);
        assert!(!l.is_empty(), "no cgroup mount in /proc/self/mountinfo");
        if let Some(u) = &l.unified {
            assert!(u.join("cgroup.controllers").is_file(), "{u:?}");
        }
        for (ctl, path) in [("cpu", &l.cpu), ("memory", &l.memory), ("pids", &l.pids)] {
            if let Some(path) = path {
                let file = match ctl {
                    "cpu" => "cpu.shares",
                    "memory" => "memory.usage_in_bytes",
                    _ => "pids.current",
                };
                // the root of a v1 pids hierarchy has no pids.current
                if ctl != "pids" {
                    assert!(path.join(file).is_file(), "{path:?}/{file}");
                }
                assert!(path.join("cgroup.procs").is_file(), "{path:?}");
            }
        }
        // probing the same root sees the same mounts (as this host keeps
        // them at their usual names)
        let probed = layout_by_probing(root);
        assert_eq!(probed.unified.is_some(), l.unified.is_some());
        assert_eq!(probed.memory, l.memory);
        assert_eq!(probed.cpu, l.cpu);
        // read_layout agrees with the pure function
        assert_eq!(read_layout(Path::new("/proc/self/mountinfo"), root), l);
    }

    #[test]
    fn probing_a_temp_tree() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        assert_eq!(
            layout_by_probing(v2.path()),
            CgroupLayout {
                unified: Some(v2.path().to_path_buf()),
                ..Default::default()
            }
        );

        let v1 = tempfile::tempdir().unwrap();
        for d in ["cpu,cpuacct", "memory", "blkio", "unified"] {
            std::fs::create_dir(v1.path().join(d)).unwrap();
        }
        std::fs::write(v1.path().join("unified/cgroup.controllers"), "").unwrap();
        let l = layout_by_probing(v1.path());
        assert_eq!(l.cpu, Some(v1.path().join("cpu,cpuacct")));
        assert_eq!(l.cpuacct, Some(v1.path().join("cpu,cpuacct")));
        assert_eq!(l.memory, Some(v1.path().join("memory")));
        assert_eq!(l.blkio, Some(v1.path().join("blkio")));
        assert_eq!(l.pids, None);
        assert_eq!(l.unified, Some(v1.path().join("unified")));

        // no mountinfo to read: read_layout probes
        assert_eq!(
            read_layout(&v1.path().join("no-such-mountinfo"), v1.path()),
            l
        );
        assert!(layout_by_probing(&v1.path().join("nothing")).is_empty());
    }
}
