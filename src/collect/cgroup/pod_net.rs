//! Pod network (SPEC §4 `container.network.*`, per pod): read once per
//! cycle through one process of the pod, from that process's network
//! namespace (`/proc/<pid>/net/dev`, see [`netns`]).
//!
//! Per pod the state is a remembered pid and three cycle marks: the cycle
//! the pod was handled in (so its other containers skip it), the last cycle
//! one of its containers had no process (a second miss in the same cycle
//! parks the pod), and the cycle before which there is nothing to do
//! (no process: [`PODLESS_RETRY_CYCLES`]; host network:
//! [`HOSTNET_RECHECK_CYCLES`]). Host-network pods are recognised once and
//! then only rechecked now and then.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::collect::netns;
use crate::collect::procfs::net_dev::IfaceCounters;
use crate::model::{About, Sample, unit};
use crate::rate::{Counter, StateMap};
use crate::warn_limited;

use super::collector::names;

/// Cycles a pod without any process waits before its `cgroup.procs` are
/// read again.
pub const PODLESS_RETRY_CYCLES: u64 = 5;
/// Cycles between checks that a host-network pod is still one.
pub const HOSTNET_RECHECK_CYCLES: u64 = 30;

/// Per-pod state: the process the network is read through.
#[derive(Debug, Default)]
struct PodState {
    uid: Option<Arc<str>>,
    pid: Option<u32>,
    /// Last cycle the network was handled (read, or found nothing to read).
    cycle: u64,
    /// Last cycle a container of the pod had no process.
    misses_cycle: u64,
    /// Nothing to do before this cycle (host network, or no process).
    skip_until: u64,
    rx: Counter,
    tx: Counter,
}

/// Every pod's network state, and where to read it from.
#[derive(Debug)]
pub struct PodNetwork {
    proc: PathBuf,
    /// The host's network namespace: a pod in it has no network of its own.
    host_netns: Option<String>,
    pods: StateMap<String, PodState>,
}

impl PodNetwork {
    pub fn new(proc: &Path) -> Self {
        PodNetwork {
            proc: proc.to_path_buf(),
            host_netns: host_netns(proc),
            pods: StateMap::default(),
        }
    }

    /// Start of a cycle: pods not touched until [`PodNetwork::end_cycle`]
    /// are forgotten.
    pub fn begin_cycle(&mut self) {
        self.pods.begin();
    }

    pub fn end_cycle(&mut self) {
        self.pods.sweep();
    }

    /// Pod `uid`'s rates, once per `cycle`, when one of its containers is
    /// seen; `container_pid` gives a process of that container.
    pub fn collect(
        &mut self,
        cycle: u64,
        uid: &str,
        mut container_pid: impl FnMut() -> Option<u32>,
        now: Instant,
        out: &mut Vec<Sample>,
    ) {
        let pod = self.pods.touch_with(uid);
        if pod.cycle == cycle || cycle < pod.skip_until {
            return; // done through another container, or nothing to do yet
        }
        // a remembered pid is tried first; when it turns out to be another
        // pod's now (reused), one fresh pid of this container is tried
        for _ in 0..2 {
            if pod.pid.is_none() {
                pod.pid = container_pid();
            }
            let Some(pid) = pod.pid else {
                // no process in this container: let one more container
                // of the pod try this cycle, then wait a few cycles
                if pod.misses_cycle == cycle {
                    pod.cycle = cycle;
                    pod.skip_until = cycle + PODLESS_RETRY_CYCLES;
                }
                pod.misses_cycle = cycle;
                return;
            };
            pod.cycle = cycle;
            let counters = netns::pod_net(&self.proc, pid, self.host_netns.as_deref());
            // checked after the read: a pid that belongs to the pod after
            // it was read also did while it was read
            if !netns::pid_in_pod(&self.proc, pid, uid) {
                pod.pid = None;
                pod.cycle = 0;
                continue;
            }
            match counters {
                Ok(Some(c)) => {
                    let uid = pod.uid.get_or_insert_with(|| Arc::from(uid)).clone();
                    push_pod_rates(pod, uid, c, now, out);
                }
                Ok(None) => {
                    // host network (hostNetwork cannot change for a pod):
                    // nothing to report; checked again now and then in
                    // case the process was caught before joining its
                    // namespace
                    pod.skip_until = cycle + HOSTNET_RECHECK_CYCLES;
                }
                Err(e) => {
                    pod.pid = None;
                    warn_limited!("cgroup-podnet", pod_uid = uid, error = %e, "pod network lost for this cycle");
                }
            }
            return;
        }
    }
}

/// The pod's network rates from its counters now.
fn push_pod_rates(
    pod: &mut PodState,
    uid: Arc<str>,
    c: IfaceCounters,
    now: Instant,
    out: &mut Vec<Sample>,
) {
    let rx = pod.rx.rate(c.rx_bytes, now);
    let tx = pod.tx.rate(c.tx_bytes, now);
    let about = About::Pod { pod_uid: uid };
    if let Some(r) = rx {
        out.push(Sample::new(
            names::NET_RX,
            r,
            unit::BYTES_PER_SEC,
            about.clone(),
        ));
    }
    if let Some(t) = tx {
        out.push(Sample::new(names::NET_TX, t, unit::BYTES_PER_SEC, about));
    }
}

/// The host's network namespace: that of pid 1, or, when pid 1 cannot be
/// inspected (a non-dumpable init under a sandbox), that of pid 2
/// (`kthreadd`: kernel threads always live in the initial namespace).
fn host_netns(proc: &Path) -> Option<String> {
    netns::netns_id(proc, 1).or_else(|| netns::netns_id(proc, 2))
}
