//! Where the host's filesystems are: injected, so every reader works on a
//! fixture tree as well as on `/`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct HostPaths {
    /// The host's proc filesystem (`/proc`, or `/host/proc` in a pod).
    pub proc: PathBuf,
    /// The host's cgroup root (`/sys/fs/cgroup`).
    pub cgroup: PathBuf,
}

impl HostPaths {
    pub fn new(proc: impl Into<PathBuf>, cgroup: impl Into<PathBuf>) -> Self {
        HostPaths {
            proc: proc.into(),
            cgroup: cgroup.into(),
        }
    }

    pub fn proc_file(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup
    }
}
