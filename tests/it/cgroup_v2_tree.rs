//! cgroup v2 through a 200-container `kubepods.slice` fixture tree built
//! from the real v2 files (all QoS classes; containerd, CRI-O and Docker
//! scope names): two cycles 10 s apart (the cycle clock is injected) with
//! counters bumped by known amounts → exact values; containers coming and
//! going; a malformed file costing only its own container.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cased_agent::collect::Collector;
use cased_agent::collect::cgroup::CgroupCollector;
use cased_agent::collect::cgroup::files::FdBudget;
use cased_agent::host::HostPaths;
use cased_agent::model::{About, QosClass, Runtime};
use cased_agent::telemetry::Telemetry;

use super::cgroup_support::{V2Tree, by_container, v2_vals};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn collector(tree: &V2Tree, budget: Option<Arc<FdBudget>>) -> (CgroupCollector, Arc<Telemetry>) {
    let t = Arc::new(Telemetry::new());
    // a proc root without processes: no pod network, no MemTotal
    let host = HostPaths::new(tree.dir.path().join("no-proc"), tree.dir.path());
    let c = match budget {
        Some(b) => CgroupCollector::with_budget(tree.layout(), host, t.clone(), b),
        None => CgroupCollector::with_layout(tree.layout(), host, t.clone()),
    };
    (c, t)
}

fn check_two_cycles(budget: Option<Arc<FdBudget>>, kept: bool) {
    let n = 200;
    let tree = V2Tree::new(n);
    let (mut col, tel) = collector(&tree, budget);
    assert_eq!(col.version(), "v2");
    let t0 = Instant::now();
    let mut out = Vec::new();
    col.collect(t0, &mut out).unwrap();
    assert_eq!(tel.cycle.containers.get(), n as i64);
    let first = by_container(&out);
    assert_eq!(first.len(), n as usize);
    // first sight: gauges yes, rates and deltas no
    for (i, (_, id)) in tree.ids.iter().enumerate() {
        let m = &first[id];
        let v = v2_vals(i as u64, 0);
        assert_eq!(m["container.memory.usage"], v.current as f64);
        for rate in [
            "container.cpu.usage_percent",
            "container.cpu.throttle_percent",
            "container.cpu.throttled_time",
            "container.memory.oom_kills",
            "container.disk.read_bytes_per_sec",
        ] {
            assert!(!m.contains_key(rate), "{rate} on first sight");
        }
    }
    if kept {
        // 8 files and cgroup.procs per container, plus the non-container
        // directories
        let dirs = col.open_files() - n as usize * 9;
        assert!(col.open_files() >= n as usize * 9 && dirs < 200, "{dirs}");
    } else {
        assert_eq!(col.open_files(), 0);
    }

    tree.write_all(1);
    out.clear();
    col.collect(t0 + Duration::from_secs(10), &mut out).unwrap();
    let got = by_container(&out);
    assert_eq!(got.len(), n as usize);
    assert_eq!(tel.cycle.container_errors.get(), 0);

    let mut qos_seen = std::collections::HashSet::new();
    let mut rt_seen = std::collections::HashSet::new();
    for s in &out {
        if let About::Container(c) = &s.about {
            qos_seen.insert(c.qos);
            rt_seen.insert(c.runtime);
            assert!(c.pod_uid.is_some());
        }
    }
    assert_eq!(qos_seen.len(), 3, "{qos_seen:?}");
    assert!(qos_seen.contains(&Some(QosClass::Guaranteed)));
    assert_eq!(rt_seen.len(), 3, "{rt_seen:?}");
    assert!(rt_seen.contains(&Runtime::Crio) && rt_seen.contains(&Runtime::Docker));

    for (i, (_, id)) in tree.ids.iter().enumerate() {
        let (a, b) = (v2_vals(i as u64, 0), v2_vals(i as u64, 1));
        let m = &got[id];
        let g = |k: &str| -> Option<f64> { m.get(k).copied() };
        // usage: Δusage_usec µs over 10 s, 100 = one core
        let cpu = (b.usage_usec - a.usage_usec) as f64 / 10e6 * 100.0;
        assert!(close(g("container.cpu.usage_percent").unwrap(), cpu), "{i}");
        assert!(close(
            g("container.cpu.throttle_percent").unwrap(),
            (b.throttled - a.throttled) as f64 / (b.periods - a.periods) as f64 * 100.0
        ));
        assert!(close(
            g("container.cpu.throttled_time").unwrap(),
            (b.throttled_usec - a.throttled_usec) as f64 / 1000.0 / 10.0
        ));
        assert_eq!(
            g("container.cpu.limit_cores"),
            b.quota.map(|q| q as f64 / 100000.0)
        );
        assert_eq!(g("container.memory.usage"), Some(b.current as f64));
        assert_eq!(g("container.memory.limit"), b.max.map(|x| x as f64));
        match b.max {
            Some(l) => assert!(close(
                g("container.memory.usage_percent").unwrap(),
                b.current as f64 / l as f64 * 100.0
            )),
            None => assert_eq!(g("container.memory.usage_percent"), None),
        }
        assert_eq!(
            g("container.memory.working_set"),
            Some((b.current - b.inactive_file) as f64)
        );
        assert_eq!(g("container.memory.rss"), Some(b.anon as f64));
        assert_eq!(g("container.memory.cache"), Some(b.file as f64));
        assert_eq!(
            g("container.memory.swap"),
            (b.swap > 0).then_some(b.swap as f64)
        );
        assert_eq!(
            g("container.memory.oom_kills"),
            Some((b.oom_kill - a.oom_kill) as f64)
        );
        let rd: u64 = b.rbytes.iter().sum::<u64>() - a.rbytes.iter().sum::<u64>();
        let wr: u64 = b.wbytes.iter().sum::<u64>() - a.wbytes.iter().sum::<u64>();
        assert!(close(
            g("container.disk.read_bytes_per_sec").unwrap(),
            rd as f64 / 10.0
        ));
        assert!(close(
            g("container.disk.write_bytes_per_sec").unwrap(),
            wr as f64 / 10.0
        ));
    }
    // no pod network from a fixture tree without processes
    assert!(out.iter().all(|s| !matches!(s.about, About::Pod { .. })));
}

#[test]
fn two_cycles_exact_values_kept_descriptors() {
    check_two_cycles(None, true);
}

#[test]
fn two_cycles_exact_values_open_close_per_read() {
    check_two_cycles(Some(FdBudget::new(0)), false);
}

#[test]
fn containers_come_and_go() {
    let tree = V2Tree::new(20);
    let (mut col, tel) = collector(&tree, None);
    let t0 = Instant::now();
    let mut out = Vec::new();
    col.collect(t0, &mut out).unwrap();
    assert_eq!(tel.cycle.containers.get(), 20);
    let listings = col.listings();
    let fds_before = col.open_files();
    // nothing changed: no directory is listed again
    out.clear();
    col.collect(t0 + Duration::from_secs(1), &mut out).unwrap();
    assert_eq!(col.listings(), listings);

    // container 3 goes; in the next interval a new one comes in its pod.
    // (A remove plus a create within one interval, which leaves the
    // parent's link count unchanged, relies on cgroupfs failing reads of a
    // removed cgroup with ENODEV: see cgroup_real.rs.)
    let gone = tree.abs(&tree.containers[3]);
    std::fs::remove_dir_all(&gone).unwrap();
    out.clear();
    col.collect(t0 + Duration::from_secs(2), &mut out).unwrap();
    assert!(
        !by_container(&out).contains_key(&tree.ids[3].1),
        "vanished container reported"
    );
    assert_eq!(tel.cycle.containers.get(), 19);
    let fds = col.open_files();
    assert_eq!(fds, fds_before - 9, "its 9 descriptors are closed");
    let parent = gone.parent().unwrap().to_path_buf();
    let new_id = "f".repeat(64);
    let new_dir = parent.join(format!("crio-{new_id}.scope"));
    std::fs::create_dir(&new_dir).unwrap();
    for f in [
        "cpu.stat",
        "cpu.max",
        "memory.current",
        "memory.max",
        "memory.stat",
        "memory.swap.current",
        "memory.events",
        "io.stat",
    ] {
        std::fs::copy(tree.abs(&tree.containers[4]).join(f), new_dir.join(f)).unwrap();
    }
    out.clear();
    col.collect(t0 + Duration::from_secs(3), &mut out).unwrap();
    let got = by_container(&out);
    assert!(
        got.contains_key(&new_id),
        "new container missing in the next cycle"
    );
    assert_eq!(
        got[&new_id]["container.memory.usage"],
        v2_vals(4, 0).current as f64
    );
    assert!(!got[&new_id].contains_key("container.cpu.usage_percent"));
    assert_eq!(tel.cycle.containers.get(), 20);
    assert_eq!(tel.cycle.container_errors.get(), 0);
    // the others kept their rate state
    assert!(got[&tree.ids[5].1].contains_key("container.cpu.usage_percent"));
    // its 8 files; its cgroup.procs waits until its pod (no process here)
    // is looked at again
    assert_eq!(col.open_files(), fds_before - 1);

    // a whole pod goes: both containers disappear, descriptors are closed
    let pod_dir = tree
        .abs(&tree.containers[0])
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::remove_dir_all(&pod_dir).unwrap();
    out.clear();
    col.collect(t0 + Duration::from_secs(4), &mut out).unwrap();
    let got = by_container(&out);
    assert!(!got.contains_key(&tree.ids[0].1) && !got.contains_key(&tree.ids[1].1));
    assert_eq!(got.len(), 18);
    assert_eq!(tel.cycle.containers.get(), 18);
    // 2 containers × 9 files and the pod directory
    assert_eq!(col.open_files(), fds_before - 1 - 19);
}

#[test]
fn malformed_file_costs_only_its_container() {
    let tree = V2Tree::new(10);
    let (mut col, tel) = collector(&tree, None);
    let t0 = Instant::now();
    let mut out = Vec::new();
    col.collect(t0, &mut out).unwrap();
    tree.write_all(1);
    // container 2: memory.stat truncated mid-file; container 5: cpu.stat garbled
    let ms = tree.abs(&tree.containers[2]).join("memory.stat");
    let text = std::fs::read_to_string(&ms).unwrap();
    std::fs::write(&ms, &text[..30]).unwrap();
    let cs = tree.abs(&tree.containers[5]).join("cpu.stat");
    std::fs::write(&cs, "usage_usec 12x4\n").unwrap();
    out.clear();
    col.collect(t0 + Duration::from_secs(10), &mut out).unwrap();
    let got = by_container(&out);
    assert!(!got.contains_key(&tree.ids[2].1));
    assert!(!got.contains_key(&tree.ids[5].1));
    assert_eq!(got.len(), 8);
    assert_eq!(tel.cycle.container_errors.get(), 2);
    assert_eq!(
        tel.cycle.containers.get(),
        10,
        "still there, only their metrics lost"
    );
    let v = (v2_vals(7, 0), v2_vals(7, 1));
    assert!(close(
        got[&tree.ids[7].1]["container.cpu.usage_percent"],
        (v.1.usage_usec - v.0.usage_usec) as f64 / 10e6 * 100.0
    ));
    // next cycle the files are fine again: the containers are back
    tree.write(2, 2);
    tree.write(5, 2);
    out.clear();
    col.collect(t0 + Duration::from_secs(20), &mut out).unwrap();
    assert_eq!(by_container(&out).len(), 10);
    assert_eq!(tel.cycle.container_errors.get(), 2);
}

#[test]
fn changed_limits_show_within_the_refresh_period() {
    use cased_agent::collect::cgroup::collector::LIMIT_REFRESH_CYCLES;
    let tree = V2Tree::new(6);
    let (mut col, _tel) = collector(&tree, None);
    let t0 = Instant::now();
    let mut out = Vec::new();
    col.collect(t0, &mut out).unwrap();
    let id = &tree.ids[0].1;
    let m = &by_container(&out)[id];
    assert_eq!(m["container.memory.limit"], (1u64 << 30) as f64);
    assert!(!m.contains_key("container.cpu.limit_cores"));
    // resize: 2 GiB, half a core
    let d = tree.abs(&tree.containers[0]);
    std::fs::write(d.join("memory.max"), "2147483648\n").unwrap();
    std::fs::write(d.join("cpu.max"), "50000 100000\n").unwrap();
    let mut seen_at = None;
    for k in 1..=LIMIT_REFRESH_CYCLES as u64 {
        out.clear();
        col.collect(t0 + Duration::from_secs(k), &mut out).unwrap();
        let m = &by_container(&out)[id];
        if m["container.memory.limit"] == 2147483648.0 {
            assert_eq!(m["container.cpu.limit_cores"], 0.5);
            seen_at = Some(k);
            break;
        }
        assert_eq!(m["container.memory.limit"], (1u64 << 30) as f64);
    }
    assert!(
        seen_at.is_some(),
        "new limits not seen within {LIMIT_REFRESH_CYCLES} cycles"
    );
}

#[test]
fn docker_and_systemd_services_outside_kubernetes() {
    use super::cgroup_support::fixtures;
    let svc = fixtures().join(
        "cgroup_v2/coroot-node-agent/system.slice/docker-ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2.scope",
    );
    let tree = V2Tree::new(2);
    let id = "ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2";
    for dir in [
        format!("system.slice/docker-{id}.scope"),
        "system.slice/nginx.service".into(),
    ] {
        let d = tree.dir.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        // the real captured files (no io.stat, memory.events, swap: absent)
        for f in [
            "cpu.stat",
            "cpu.max",
            "memory.current",
            "memory.max",
            "memory.stat",
        ] {
            std::fs::copy(svc.join(f), d.join(f)).unwrap();
        }
    }
    let (mut col, tel) = collector(&tree, None);
    let mut out = Vec::new();
    col.collect(Instant::now(), &mut out).unwrap();
    assert_eq!(tel.cycle.containers.get(), 4);
    assert_eq!(tel.cycle.container_errors.get(), 0);
    let mut seen = 0;
    for s in &out {
        if let About::Container(c) = &s.about
            && c.pod_uid.is_none()
        {
            assert!(c.qos.is_none());
            match c.runtime {
                Runtime::Docker => assert_eq!(c.container_id, id),
                Runtime::Systemd => assert_eq!(c.name, "nginx.service"),
                other => panic!("unexpected runtime {other:?}"),
            }
            seen += 1;
        }
    }
    assert!(seen > 0);
    let got = by_container(&out);
    for key in [id, ""] {
        let m = &got[key];
        assert_eq!(m["container.memory.usage"], 131047424.0);
        assert_eq!(m["container.memory.limit"], 4294967296.0);
        assert_eq!(
            m["container.memory.working_set"],
            (131047424u64 - 50204672) as f64
        );
        assert_eq!(m["container.memory.rss"], 75247616.0);
        assert_eq!(m["container.memory.cache"], 50835456.0);
        assert!(
            !m.contains_key("container.cpu.limit_cores"),
            "cpu.max is max"
        );
        assert!(!m.contains_key("container.memory.swap"));
    }
}
