//! Pod network through the pod's own network namespace (root).
//!
//! Two namespaces of the test's own (`ip netns add`): the "pod" and a peer,
//! joined by a veth pair with 192.0.2.0/30 (TEST-NET-1) addresses; nothing
//! touches the host's namespace. A pod process runs in the pod namespace
//! and in a pod cgroup (real v1 tree), sends a known number of bytes to the
//! peer over TCP and receives a known number back; the pod's
//! `container.network.{tx,rx}_bytes_per_sec` × the interval must cover the
//! payload plus at most 10 % + 64 KiB of TCP/IP overhead. A second pod on
//! the host network reports no network at all.
//!
//! Pid reuse: a remembered pid that exits and is reused by another pod's
//! process is not read for the old pod, through a fake `/proc` (no root)
//! and for real (root: the number handed out again with `ns_last_pid`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use cased_agent::collect::Collector;
use cased_agent::collect::cgroup::CgroupCollector;
use cased_agent::host::HostPaths;
use cased_agent::model::{About, Sample};
use cased_agent::telemetry::Telemetry;

use super::cgroup_support::{
    RealTree, V2Tree, by_container, container_id, need_root, pod_uid, serial,
};

/// Namespaces made by the test; deleted (with the veth) on drop.
struct Netns {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}: {st}");
}

fn pod_rates(out: &[Sample], uid: &str) -> (Option<f64>, Option<f64>) {
    let mut rx = None;
    let mut tx = None;
    for s in out {
        if let About::Pod { pod_uid } = &s.about
            && &**pod_uid == uid
        {
            match s.name {
                "container.network.rx_bytes_per_sec" => rx = Some(s.value),
                "container.network.tx_bytes_per_sec" => tx = Some(s.value),
                other => panic!("unexpected pod metric {other}"),
            }
        }
    }
    (rx, tx)
}

const SENT: u64 = 4 << 20;
const RECEIVED: u64 = 2 << 20;

#[test]
fn pod_network_rates_match_bytes_moved() {
    if !need_root("pod network test") {
        return;
    }
    let _g = serial();
    let tag = format!("{}", std::process::id() % 100000);
    let pod_ns = format!("cased-pod-{tag}");
    let peer_ns = format!("cased-peer-{tag}");
    let mut ns = Netns {
        names: Vec::new(),
        children: Vec::new(),
    };
    for n in [&pod_ns, &peer_ns] {
        ip(&["netns", "add", n]);
        ns.names.push(n.clone());
    }
    let (va, vb) = (format!("cvp{tag}"), format!("cvq{tag}"));
    ip(&[
        "-n", &pod_ns, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &peer_ns,
    ]);
    for (n, dev, addr) in [
        (&pod_ns, &va, "192.0.2.2/30"),
        (&peer_ns, &vb, "192.0.2.1/30"),
    ] {
        // no IPv6 chatter (router solicitations, MLD) on the counted link
        let _ = Command::new("ip")
            .args(["netns", "exec", n, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{dev}.disable_ipv6=1"))
            .status();
        ip(&["-n", n, "addr", "add", addr, "dev", dev]);
        ip(&["-n", n, "link", "set", dev, "up"]);
    }

    // the peer: receive SENT bytes, send RECEIVED back
    let server = format!(
        "import socket\ns = socket.socket()\ns.bind(('192.0.2.1', 18080))\ns.listen(1)\n\
         print('listening', flush=True)\nc, _ = s.accept()\nn = 0\n\
         while n < {SENT}:\n    d = c.recv(65536)\n    if not d: break\n    n += len(d)\n\
         c.sendall(b'r' * {RECEIVED})\nc.close()\nprint(n, flush=True)\n"
    );
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &peer_ns, "python3", "-c", &server])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut srv_out = BufReader::new(srv.stdout.take().unwrap());
    ns.children.push(srv);
    let mut line = String::new();
    srv_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");

    // the pod: a cgroup with a process in the pod namespace
    let mut tree = RealTree::new("net").expect("v1 controllers");
    let uid = pod_uid(7, std::process::id());
    let c = tree.add_container("burstable", &uid, &container_id(7, 0xf));
    let client = format!(
        "import socket, sys, time\nsys.stdin.buffer.read(1)\n\
         s = socket.create_connection(('192.0.2.1', 18080))\ns.sendall(b's' * {SENT})\n\
         n = 0\nwhile n < {RECEIVED}:\n    d = s.recv(65536)\n    if not d: break\n    n += len(d)\n\
         print(n, flush=True)\ntime.sleep(30)\n"
    );
    let mut pod = Command::new("ip")
        .args(["netns", "exec", &pod_ns, "python3", "-c", &client])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pod_pid = pod.id();
    // `ip netns exec` execs python in place: same pid
    std::thread::sleep(std::time::Duration::from_millis(300));
    tree.enter(&c, pod_pid);

    // a host-network pod beside it
    let host_uid = pod_uid(8, std::process::id());
    let hc = tree.add_container("besteffort", &host_uid, &container_id(8, 0xf));
    let host_proc = Command::new("sleep").arg("30").spawn().unwrap();
    tree.enter(&hc, host_proc.id());
    tree.children.push(host_proc);

    let t = Arc::new(Telemetry::new());
    let mut col = CgroupCollector::new(HostPaths::new("/proc", "/sys/fs/cgroup"), t);
    let mut out = Vec::new();
    let t1 = Instant::now();
    col.collect(t1, &mut out).unwrap();
    assert_eq!(pod_rates(&out, &uid), (None, None), "first sight: no rate");

    pod.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    pod.stdin.as_mut().unwrap().flush().unwrap();
    let mut pod_out = BufReader::new(pod.stdout.take().unwrap());
    tree.children.push(pod);
    let mut got = String::new();
    pod_out.read_line(&mut got).unwrap();
    assert_eq!(got.trim(), RECEIVED.to_string());
    line.clear();
    srv_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), SENT.to_string());

    out.clear();
    let t2 = Instant::now();
    col.collect(t2, &mut out).unwrap();
    let el = (t2 - t1).as_secs_f64();
    let (rx, tx) = pod_rates(&out, &uid);
    let (rx, tx) = (rx.expect("rx rate") * el, tx.expect("tx rate") * el);
    let within = |bytes: f64, payload: u64| {
        bytes >= payload as f64 && bytes <= payload as f64 * 1.10 + 65536.0
    };
    assert!(within(tx, SENT), "tx {tx} bytes for {SENT} sent");
    assert!(
        within(rx, RECEIVED),
        "rx {rx} bytes for {RECEIVED} received"
    );
    // once per pod, not per container; the host-network pod has none
    assert_eq!(pod_rates(&out, &host_uid), (None, None));
    assert!(by_container(&out).contains_key(&container_id(8, 0xf)));
}

/// A process of the fake `/proc`: its network namespace, cgroup and the
/// counters of its namespace (`eth0`).
fn fake_pid(proc: &std::path::Path, pid: u32, netns: &str, cgroup: &str, rx: u64, tx: u64) {
    let d = proc.join(pid.to_string());
    std::fs::create_dir_all(d.join("ns")).unwrap();
    std::fs::create_dir_all(d.join("net")).unwrap();
    let link = d.join("ns/net");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(netns, &link).unwrap();
    std::fs::write(d.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
    std::fs::write(
        d.join("net/dev"),
        format!(
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  \
             eth0: {rx} 10 0 0 0 0 0 0 {tx} 10 0 0 0 0 0 0\n"
        ),
    )
    .unwrap();
}

#[test]
fn reused_pid_is_not_read_for_its_old_pod() {
    let tree = V2Tree::new(4);
    let proc = tree.dir.path().join("proc");
    fake_pid(&proc, 1, "net:[4026531840]", "/init.scope", 9, 9);
    // containers 0 and 2: pods A and B
    let (a_uid, a_rel) = (tree.ids[0].0.clone(), tree.containers[0].clone());
    let (b_uid, b_rel) = (tree.ids[2].0.clone(), tree.containers[2].clone());
    let procs = |rel: &str, pids: &str| {
        std::fs::write(tree.abs(rel).join("cgroup.procs"), pids).unwrap();
    };
    let (a_ns, b_ns) = ("net:[4026532100]", "net:[4026532200]");
    let (a_rx, a_tx, b_rx, b_tx) = (1_000_000, 2_000_000, 50_000_000, 60_000_000);
    fake_pid(&proc, 100, a_ns, &a_rel, a_rx, a_tx);
    fake_pid(&proc, 200, b_ns, &b_rel, b_rx, b_tx);
    procs(&a_rel, "100\n");
    procs(&b_rel, "200\n");
    let t = Arc::new(Telemetry::new());
    let host = HostPaths::new(&proc, tree.dir.path());
    let mut col = CgroupCollector::with_layout(tree.layout(), host, t);
    let t0 = Instant::now();
    let mut out = Vec::new();
    col.collect(t0, &mut out).unwrap();
    assert_eq!(pod_rates(&out, &a_uid), (None, None), "first sight");
    // A's pid 100 exits and the number goes to a new process of pod B;
    // A carries on in pid 101; 10 s later
    let (da_rx, da_tx, db_rx, db_tx) = (30_000, 40_000, 10_000, 20_000);
    fake_pid(&proc, 100, b_ns, &b_rel, b_rx + db_rx, b_tx + db_tx);
    fake_pid(&proc, 200, b_ns, &b_rel, b_rx + db_rx, b_tx + db_tx);
    fake_pid(&proc, 101, a_ns, &a_rel, a_rx + da_rx, a_tx + da_tx);
    procs(&a_rel, "101\n");
    procs(&b_rel, "100\n200\n");
    let mut out = Vec::new();
    col.collect(t0 + std::time::Duration::from_secs(10), &mut out)
        .unwrap();
    assert_eq!(
        pod_rates(&out, &a_uid),
        (Some(da_rx as f64 / 10.0), Some(da_tx as f64 / 10.0)),
        "pod A"
    );
    assert_eq!(
        pod_rates(&out, &b_uid),
        (Some(db_rx as f64 / 10.0), Some(db_tx as f64 / 10.0)),
        "pod B"
    );
}

/// A process of `sleep 30` with pid `pid`, made by setting the kernel's
/// last pid (`ns_last_pid`) just below it; retried when another process of
/// the machine took the number first.
fn spawn_with_pid(pid: u32) -> Option<Child> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut c = Command::new("sleep").arg("30").spawn().ok()?;
        if c.id() == pid {
            return Some(c);
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    None
}

/// Real pid reuse (root): the process pod A's network was read through
/// exits, and its pid goes to a host-network process of pod B. Pod A keeps
/// reporting its own namespace through its other process; before, the
/// remembered pid led it to B's (the host's) namespace and it went quiet.
#[test]
fn real_pid_reused_by_another_pod() {
    if !need_root("pid reuse test") {
        return;
    }
    let _g = serial();
    let tag = format!("{}", std::process::id() % 100000);
    let pod_ns = format!("cased-reuse-{tag}");
    let mut ns = Netns {
        names: Vec::new(),
        children: Vec::new(),
    };
    ip(&["netns", "add", &pod_ns]);
    ns.names.push(pod_ns.clone());
    let mut tree = RealTree::new("reuse").expect("v1 controllers");
    let (a_uid, b_uid) = (
        pod_uid(9, std::process::id()),
        pod_uid(10, std::process::id()),
    );
    let ca = tree.add_container("burstable", &a_uid, &container_id(9, 0xf));
    let cb = tree.add_container("besteffort", &b_uid, &container_id(10, 0xf));
    let in_pod_ns = || {
        let c = Command::new("ip")
            .args(["netns", "exec", &pod_ns, "sleep", "30"])
            .spawn()
            .unwrap();
        // `ip netns exec` execs in place: same pid, once in the namespace
        std::thread::sleep(std::time::Duration::from_millis(300));
        c
    };
    let mut a1 = in_pod_ns();
    tree.enter(&ca, a1.id());
    let t = Arc::new(Telemetry::new());
    let mut col = CgroupCollector::new(HostPaths::new("/proc", "/sys/fs/cgroup"), t);
    let mut out = Vec::new();
    col.collect(Instant::now(), &mut out).unwrap();
    assert_eq!(pod_rates(&out, &a_uid), (None, None), "first sight");
    let a2 = in_pod_ns();
    tree.enter(&ca, a2.id());
    tree.children.push(a2);
    let old = a1.id();
    let _ = a1.kill();
    let _ = a1.wait();
    let b = spawn_with_pid(old).unwrap_or_else(|| panic!("pid {old} not reusable"));
    tree.enter(&cb, b.id());
    tree.children.push(b);
    out.clear();
    std::thread::sleep(std::time::Duration::from_millis(200));
    col.collect(Instant::now(), &mut out).unwrap();
    // the pod namespace has only `lo` (not counted): 0 bytes/s, reported
    assert_eq!(pod_rates(&out, &a_uid), (Some(0.0), Some(0.0)), "pod A");
    assert_eq!(pod_rates(&out, &b_uid), (None, None), "pod B: host network");
}
