//! Where the cgroup controllers are mounted, from mountinfo (not guesses).
//!
//! STUB: owned by the path/mountinfo work; signatures are the contract.

use std::path::PathBuf;

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

/// Parse mountinfo text and find the cgroup mounts under `cgroup_root`.
pub fn layout_from_mountinfo(text: &str, cgroup_root: &std::path::Path) -> CgroupLayout {
    let _ = (text, cgroup_root);
    CgroupLayout::default()
}
