//! Node metrics from `/proc` (SPEC §4, node table).
//!
//! STUB: owned by the node work.

use std::time::Instant;

use super::{CollectError, Collector};
use crate::host::HostPaths;
use crate::model::Sample;

pub struct NodeCollector {
    #[allow(dead_code)]
    host: HostPaths,
}

impl NodeCollector {
    pub fn new(host: HostPaths) -> Self {
        NodeCollector { host }
    }
}

impl Collector for NodeCollector {
    fn name(&self) -> &'static str {
        "node"
    }

    fn collect(&mut self, _now: Instant, _out: &mut Vec<Sample>) -> Result<(), CollectError> {
        Ok(())
    }
}
