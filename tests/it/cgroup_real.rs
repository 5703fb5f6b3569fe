//! Container metrics from real v1 cgroups on this machine (root).
//!
//! Each test makes a kubelet-shaped tree under a unique root in every v1
//! controller (`/sys/fs/cgroup/<ctl>/<unique>/kubepods/<qos>/pod<uid>/<id>`),
//! moves spawned Python processes into it, and runs the collector made by
//! `CgroupCollector::new` against the live `/proc` and `/sys/fs/cgroup`
//! (layout from the real mountinfo; discovery finds `kubepods` below the
//! unique root). Kernel truth is read from the cgroup files directly.
//! Tolerances are stated at each assertion.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use cased_agent::collect::Collector;
use cased_agent::collect::cgroup::CgroupCollector;
use cased_agent::host::HostPaths;
use cased_agent::model::{About, Sample};
use cased_agent::telemetry::Telemetry;

use super::cgroup_support::{RealTree, by_container, container_id, need_root, pod_uid, serial};

fn live_collector() -> (CgroupCollector, Arc<Telemetry>) {
    let t = Arc::new(Telemetry::new());
    let c = CgroupCollector::new(HostPaths::new("/proc", "/sys/fs/cgroup"), t.clone());
    assert_eq!(c.version(), "v1", "this machine has v1 controllers");
    (c, t)
}

/// Spawn `python3 -c code`, move it into `rel`, then let it go (it waits
/// for one byte on stdin before doing anything).
fn spawn_in(tree: &mut RealTree, rel: &str, code: &str) -> usize {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!("import sys\nsys.stdin.buffer.read(1)\n{code}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    tree.enter(rel, child.id());
    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    tree.children.push(child);
    tree.children.len() - 1
}

fn wait_line(tree: &mut RealTree, idx: usize) -> String {
    let out = tree.children[idx].stdout.as_mut().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    line
}

fn kernel_u64(tree: &RealTree, ctl: &str, rel: &str, file: &str) -> u64 {
    tree.read(ctl, rel, file).trim().parse().unwrap()
}

fn kernel_key(tree: &RealTree, ctl: &str, rel: &str, file: &str, key: &str) -> u64 {
    let text = tree.read(ctl, rel, file);
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{key} in {file}"))
        .trim()
        .parse()
        .unwrap()
}

fn pod_samples<'a>(out: &'a [Sample], uid: &str) -> Vec<&'a Sample> {
    out.iter()
        .filter(|s| matches!(&s.about, About::Pod { pod_uid } if &**pod_uid == uid))
        .collect()
}

const BURN: &str = "import time\nend = time.time() + 20\nwhile time.time() < end:\n    pass\n";

#[test]
fn cpu_usage_and_throttling_match_the_kernel() {
    if !need_root("real cgroup cpu test") {
        return;
    }
    let _g = serial();
    let Some(mut tree) = RealTree::new("cpu") else {
        panic!("no v1 cpu/cpuacct/memory/blkio/pids mounts on this machine");
    };
    let uid = pod_uid(1, std::process::id());
    let (ida, idb) = (container_id(1, 0xa), container_id(2, 0xb));
    let a = tree.add_container("burstable", &uid, &ida);
    let b = tree.add_container("burstable", &uid, &idb);
    // B: 20 % of one core
    tree.write("cpu", &b, "cpu.cfs_period_us", "100000");
    tree.write("cpu", &b, "cpu.cfs_quota_us", "20000");
    spawn_in(&mut tree, &a, BURN);
    spawn_in(&mut tree, &b, BURN);
    sleep(Duration::from_millis(500)); // python is up and spinning

    let (mut col, tel) = live_collector();
    let mut out = Vec::new();
    let t1 = Instant::now();
    col.collect(t1, &mut out).unwrap();
    let k1 = (
        kernel_u64(&tree, "cpuacct", &a, "cpuacct.usage"),
        kernel_u64(&tree, "cpuacct", &b, "cpuacct.usage"),
        kernel_key(&tree, "cpu", &b, "cpu.stat", "nr_periods"),
        kernel_key(&tree, "cpu", &b, "cpu.stat", "nr_throttled"),
        kernel_key(&tree, "cpu", &b, "cpu.stat", "throttled_time"),
    );
    let first = by_container(&out);
    assert!(!first[&ida].contains_key("container.cpu.usage_percent"));
    assert!(tel.cycle.containers.get() >= 2);

    sleep(Duration::from_secs(2));
    out.clear();
    let t2 = Instant::now();
    col.collect(t2, &mut out).unwrap();
    let k2 = (
        kernel_u64(&tree, "cpuacct", &a, "cpuacct.usage"),
        kernel_u64(&tree, "cpuacct", &b, "cpuacct.usage"),
        kernel_key(&tree, "cpu", &b, "cpu.stat", "nr_periods"),
        kernel_key(&tree, "cpu", &b, "cpu.stat", "nr_throttled"),
        kernel_key(&tree, "cpu", &b, "cpu.stat", "throttled_time"),
    );
    let el = (t2 - t1).as_secs_f64();
    let got = by_container(&out);
    let (ma, mb) = (&got[&ida], &got[&idb]);

    // usage: against the kernel's own cpuacct.usage delta over the same
    // interval, within 2.5 points (the kernel is read a few µs after the
    // collector; a throttled burst can land in that gap)
    let ua = ma["container.cpu.usage_percent"];
    let ka = (k2.0 - k1.0) as f64 / 1e9 / el * 100.0;
    assert!((ua - ka).abs() < 2.5, "A usage {ua} vs kernel {ka}");
    // (how much a spinner gets depends on the machine's load; that it ran
    // at all is what is checked here, the number is checked against the kernel)
    assert!(ua > 10.0, "A spins one thread: {ua}");
    let ub = mb["container.cpu.usage_percent"];
    let kb = (k2.1 - k1.1) as f64 / 1e9 / el * 100.0;
    assert!((ub - kb).abs() < 2.5, "B usage {ub} vs kernel {kb}");
    assert!(ub < 23.0 && ub > 5.0, "B is held to 20 % of a core: {ub}");

    // throttling: B is throttled in nearly every period; A has no quota
    let tp = mb["container.cpu.throttle_percent"];
    let ktp = (k2.3 - k1.3) as f64 / (k2.2 - k1.2) as f64 * 100.0;
    assert!(tp > 0.0, "B throttle_percent {tp}");
    assert!((tp - ktp).abs() < 5.0, "B throttle {tp} vs kernel {ktp}");
    let tt = mb["container.cpu.throttled_time"];
    let ktt = (k2.4 - k1.4) as f64 / 1e6 / el;
    assert!(tt > 0.0, "B throttled ms/s {tt}");
    assert!(
        (tt - ktt).abs() < 0.1 * ktt,
        "B throttled {tt} vs kernel {ktt}"
    );
    assert_eq!(mb["container.cpu.limit_cores"], 0.2);
    assert!(!ma.contains_key("container.cpu.limit_cores"));
    assert!(!ma.contains_key("container.cpu.throttle_percent"));

    // the pod shares the host network namespace: no pod network
    assert!(
        pod_samples(&out, &uid).is_empty(),
        "{:?}",
        pod_samples(&out, &uid)
    );
}

#[test]
fn memory_usage_working_set_and_limit_match_the_kernel() {
    if !need_root("real cgroup memory test") {
        return;
    }
    let _g = serial();
    let mut tree = RealTree::new("mem").expect("v1 controllers");
    let uid = pod_uid(2, std::process::id());
    let id = container_id(3, 0xc);
    let c = tree.add_container("guaranteed", &uid, &id);
    tree.write(
        "memory",
        &c,
        "memory.limit_in_bytes",
        &(256u64 << 20).to_string(),
    );
    // 64 MiB allocated and every page written
    let i = spawn_in(
        &mut tree,
        &c,
        "import time\nb = bytearray(b'\\x01') * (64 << 20)\nprint('ok', flush=True)\ntime.sleep(30)\n",
    );
    assert_eq!(wait_line(&mut tree, i).trim(), "ok");

    let (mut col, _tel) = live_collector();
    let mut out = Vec::new();
    col.collect(Instant::now(), &mut out).unwrap();
    let kernel_usage = kernel_u64(&tree, "memory", &c, "memory.usage_in_bytes");
    let inactive = kernel_key(&tree, "memory", &c, "memory.stat", "total_inactive_file");
    let got = by_container(&out);
    let m = &got[&id];
    let usage = m["container.memory.usage"];
    // the process is idle: the kernel's number a moment later is within 1 MiB
    assert!(
        (usage - kernel_usage as f64).abs() <= (1 << 20) as f64,
        "usage {usage} vs kernel {kernel_usage}"
    );
    assert!(usage >= (64 << 20) as f64, "usage {usage} < 64 MiB");
    assert!(
        usage <= (128 << 20) as f64,
        "usage {usage}: 64 MiB + interpreter"
    );
    let ws = m["container.memory.working_set"];
    assert!(ws <= usage && ws >= (64 << 20) as f64, "working set {ws}");
    assert!(
        (ws - (kernel_usage.saturating_sub(inactive)) as f64).abs() <= (1 << 20) as f64,
        "working set {ws} vs kernel {kernel_usage} - {inactive}"
    );
    assert!(m["container.memory.rss"] >= (64 << 20) as f64);
    assert_eq!(m["container.memory.limit"], (256u64 << 20) as f64);
    let pct = m["container.memory.usage_percent"];
    assert!((pct - usage / (256u64 << 20) as f64 * 100.0).abs() < 1e-9);
    assert!(!m.contains_key("container.memory.swap"), "no swap here");
    // guaranteed pod: no QoS level in the path
    let ident = out
        .iter()
        .find_map(|s| match &s.about {
            About::Container(c) if c.container_id == id => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ident.pod_uid.as_deref(), Some(uid.as_str()));
}

#[test]
fn oom_kill_is_counted_once() {
    if !need_root("real cgroup OOM test") {
        return;
    }
    let _g = serial();
    let mut tree = RealTree::new("oom").expect("v1 controllers");
    let uid = pod_uid(3, std::process::id());
    let id = container_id(4, 0xd);
    let c = tree.add_container("besteffort", &uid, &id);
    tree.write(
        "memory",
        &c,
        "memory.limit_in_bytes",
        &(32u64 << 20).to_string(),
    );
    let (mut col, _tel) = live_collector();
    let mut out = Vec::new();
    // first sight (oom_kill 0): no value
    col.collect(Instant::now(), &mut out).unwrap();
    assert!(!by_container(&out)[&id].contains_key("container.memory.oom_kills"));

    let i = spawn_in(
        &mut tree,
        &c,
        "b = bytearray(b'\\x01') * (128 << 20)\nprint('survived', flush=True)\n",
    );
    let status = tree.children[i].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by the OOM killer: {status:?}"
    );
    assert_eq!(
        kernel_key(&tree, "memory", &c, "memory.oom_control", "oom_kill"),
        1
    );
    out.clear();
    col.collect(Instant::now(), &mut out).unwrap();
    assert_eq!(by_container(&out)[&id]["container.memory.oom_kills"], 1.0);
    out.clear();
    col.collect(Instant::now(), &mut out).unwrap();
    assert_eq!(by_container(&out)[&id]["container.memory.oom_kills"], 0.0);
}

#[test]
fn replaced_container_within_one_interval() {
    if !need_root("real cgroup churn test") {
        return;
    }
    let _g = serial();
    let mut tree = RealTree::new("churn").expect("v1 controllers");
    let uid = pod_uid(4, std::process::id());
    let (old, new) = (container_id(5, 0xe), container_id(6, 0xe));
    let c_old = tree.add_container("burstable", &uid, &old);
    let (mut col, tel) = live_collector();
    let mut out = Vec::new();
    col.collect(Instant::now(), &mut out).unwrap();
    assert!(by_container(&out).contains_key(&old));
    let before = tel.cycle.containers.get();
    let open = col.open_files();
    // 8 files (no CPU quota, so no period read) and the walked directories
    assert!(open >= 8 + 4, "descriptors kept: {open}");

    // the pod directory's link count stays the same: one out, one in
    for ctl in ["cpu", "cpuacct", "memory", "blkio", "pids"] {
        std::fs::remove_dir(tree.dir(ctl, &c_old)).unwrap();
    }
    let _c_new = tree.add_container("burstable", &uid, &new);
    out.clear();
    col.collect(Instant::now(), &mut out).unwrap();
    let got = by_container(&out);
    assert!(!got.contains_key(&old), "removed container still reported");
    assert!(
        got.contains_key(&new),
        "new container not found in the next cycle"
    );
    assert!(got[&new].contains_key("container.memory.usage"));
    assert_eq!(tel.cycle.containers.get(), before);
    assert_eq!(tel.cycle.container_errors.get(), 0);
}

/// Kernel truth behind `CgFile::v1_pid_list`: v1's `cgroup.procs` re-read
/// through a kept descriptor within a second still lists a process that
/// left (the kernel's cached pid list); a v1 pid-list file read again that
/// soon is opened afresh and does not, and keeps its descriptor after.
#[test]
fn v1_procs_read_afresh_sees_a_process_leave() {
    use cased_agent::collect::cgroup::files::{CgFile, FdBudget};
    if !need_root("v1 cgroup.procs") {
        return;
    }
    let _g = serial();
    let mut tree = RealTree::new("procs").expect("v1 controllers");
    let rel = tree.add_container("besteffort", &pod_uid(11, 1), &container_id(11, 1));
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    tree.enter(&rel, pid);
    let dir: Arc<std::path::Path> = Arc::from(tree.dir("memory", &rel).as_path());
    let budget = FdBudget::new(16);
    let mut kept = CgFile::new(dir.clone(), "cgroup.procs", budget.clone());
    let mut fresh = CgFile::v1_pid_list(dir, "cgroup.procs", budget.clone());
    let mut buf = Vec::new();
    let pids = |f: &mut CgFile, buf: &mut Vec<u8>| -> Vec<u32> {
        let t = f.read(buf).unwrap().unwrap_or("");
        t.lines().filter_map(|l| l.trim().parse().ok()).collect()
    };
    assert_eq!(pids(&mut kept, &mut buf), vec![pid]);
    assert_eq!(pids(&mut fresh, &mut buf), vec![pid]);
    assert!(kept.is_kept() && fresh.is_kept());
    let _ = child.kill();
    let _ = child.wait();
    sleep(Duration::from_millis(100));
    // the kernel's behaviour the fix rests on; if a kernel stops caching,
    // this fails and keeping v1's file open becomes safe again
    assert_eq!(pids(&mut kept, &mut buf), vec![pid], "kept: cached list");
    // (a fresh open also reloads the list the kept descriptor is served)
    assert_eq!(pids(&mut fresh, &mut buf), Vec::<u32>::new(), "fresh open");
    assert!(fresh.is_kept(), "the reopened descriptor is kept");
    assert_eq!(budget.open(), 2, "one descriptor each, none leaked");
}
