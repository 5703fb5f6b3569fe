//! Container metrics from the cgroup tree (v1 and v2).
//!
//! - [`parse`], [`v1`], [`v2`]: pure parsers of the kernel files;
//! - [`files`]: kept-open descriptors and the descriptor budget;
//! - [`discover`]: finding container cgroups in a hierarchy, cheaply;
//! - [`collector`]: [`CgroupCollector`], turning all that into SPEC §4
//!   container samples;
//! - [`pod_net`]: the pod network, read through one process of each pod;
//! - [`path`], [`mountinfo`]: path → identity, and where controllers are.

pub mod collector;
pub mod discover;
pub mod files;
pub mod mountinfo;
pub mod parse;
pub mod path;
pub mod pod_net;
pub mod v1;
pub mod v2;

pub use collector::CgroupCollector;
