//! Sources that run once per cycle and turn kernel state into [`Sample`]s.
//!
//! Each collector is isolated: an error costs that collector (or, inside it,
//! that container) for that cycle, is logged at a limited rate, and nothing
//! else.

pub mod cgroup;
pub mod netns;
pub mod node;
pub mod procfs;

use std::time::Instant;

use crate::model::Sample;

/// The error a collector reports for the part of the cycle it lost.
pub type CollectError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A tick-driven source: called once per interval.
pub trait Collector: Send {
    /// Short stable name, used in logs and the `collector` label on `/metrics`.
    fn name(&self) -> &'static str;

    /// Append this cycle's samples to `out`. `now` is the cycle's monotonic
    /// time; rates are computed against it. Partial failures (one container)
    /// are handled inside and do not return `Err`.
    fn collect(&mut self, now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError>;
}
