//! The collector end to end on the captured 6.18 hybrid host
//! (`shared/fixtures/captured-linux-6.18-hybrid`): its own mountinfo (v1
//! controllers, separate `cpu` and `cpuacct`, a cgroup2 mount without
//! controllers) rebased onto the capture's `sys/fs/cgroup`, and its one
//! kubelet-shaped container, throttled and OOM-killed when captured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cased_agent::collect::Collector;
use cased_agent::collect::cgroup::CgroupCollector;
use cased_agent::host::HostPaths;
use cased_agent::model::{About, QosClass};
use cased_agent::telemetry::Telemetry;

use super::cgroup_support::{by_container, fixtures};

const ID: &str = "35f0ce87f0997160a8e4c8b66d662371d12daa0b5f3400aac68acde466c27fcd";

#[test]
fn captured_hybrid_host_end_to_end() {
    let cap = fixtures().join("captured-linux-6.18-hybrid");
    let t = Arc::new(Telemetry::new());
    let mut col = CgroupCollector::new(
        HostPaths::new(cap.join("proc"), cap.join("sys/fs/cgroup")),
        t.clone(),
    );
    assert_eq!(col.version(), "v1", "hybrid: the v1 controllers are read");
    let t0 = Instant::now();
    let mut out = Vec::new();
    col.collect(t0, &mut out).unwrap();
    assert_eq!(t.cycle.containers.get(), 1);
    let ident = out
        .iter()
        .find_map(|s| match &s.about {
            About::Container(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the captured container");
    assert_eq!(ident.container_id, ID);
    assert_eq!(
        ident.pod_uid.as_deref(),
        Some("3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12")
    );
    assert_eq!(ident.qos, Some(QosClass::Burstable));

    let got = by_container(&out);
    let m = &got[ID];
    // memory.usage_in_bytes 528384 under a 64 MiB limit (MemTotal 24 GiB)
    assert_eq!(m["container.memory.usage"], 528384.0);
    assert_eq!(m["container.memory.limit"], 67108864.0);
    assert!((m["container.memory.usage_percent"] - 528384.0 / 67108864.0 * 100.0).abs() < 1e-12);
    // total_inactive_file 0
    assert_eq!(m["container.memory.working_set"], 528384.0);
    // cfs_quota 50000 / period 100000
    assert_eq!(m["container.cpu.limit_cores"], 0.5);
    // rss, cache and swap are 0: not reported; first sight: no rates, no
    // OOM delta
    let mut names: Vec<_> = m.keys().copied().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "container.cpu.limit_cores",
            "container.memory.limit",
            "container.memory.usage",
            "container.memory.usage_percent",
            "container.memory.working_set",
        ]
    );

    // the files did not change: zero rates, zero OOM kills in the interval,
    // no throttle percentage (no periods elapsed)
    out.clear();
    col.collect(t0 + Duration::from_secs(10), &mut out).unwrap();
    let got = by_container(&out);
    let m = &got[ID];
    assert_eq!(m["container.cpu.usage_percent"], 0.0);
    assert_eq!(m["container.cpu.throttled_time"], 0.0);
    assert!(!m.contains_key("container.cpu.throttle_percent"));
    assert_eq!(m["container.memory.oom_kills"], 0.0);
    assert_eq!(m["container.disk.read_bytes_per_sec"], 0.0);
    assert_eq!(m["container.disk.write_bytes_per_sec"], 0.0);
    assert_eq!(t.cycle.container_errors.get(), 0);
}
