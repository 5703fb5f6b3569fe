//! Container metrics from the cgroup tree (v1 and v2).

pub mod mountinfo;
pub mod path;
