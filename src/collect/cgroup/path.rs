//! Cgroup path → container identity (pure; every shape of
//! `shared/fixtures/cgroup_paths.md` is a test case).
//!
//! STUB: owned by the path/mountinfo work; signature is the contract.

use crate::model::ContainerIdentity;

/// A container cgroup found in a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified<'a> {
    pub identity: ContainerIdentity,
    /// The container's own cgroup: the prefix of the input path that ends at
    /// the container directory (children such as `/container` are cut).
    pub cgroup: &'a str,
}

/// Classify a cgroup path relative to its hierarchy's root (as in
/// `/proc/<pid>/cgroup` or a directory below a controller mount), e.g.
/// `/kubepods/burstable/pod<uid>/<id>` or
/// `/kubepods.slice/.../cri-containerd-<id>.scope`. `None` when the path is
/// not (inside) a container or service cgroup.
pub fn classify(path: &str) -> Option<Classified<'_>> {
    let _ = path;
    None
}
