//! The agent binary as the DaemonSet runs it: in a network namespace of its
//! own (`hostNetwork: false`), in the host's pid namespace (`hostPID`), with
//! the host's `/proc` and cgroup tree bind-mounted read-only at other paths
//! (`--proc-path`, `--cgroup-path`). Its numbers are checked against the
//! host's own files, read by the test from the host's namespaces. Every
//! source the agent reads gets a case here.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use cased_agent::collect::procfs::net_dev;
use serde_json::Value;

use super::cgroup_support::{RealTree, container_id, need_root, pod_uid, serial};

/// Bind the host's `/proc` and `/sys/fs/cgroup` read-only under `root` in a
/// private mount namespace and a new network namespace, then run the agent
/// once with those paths. Returns its stdout lines as JSON and its stderr.
fn run_deployed(root: &Path) -> (Vec<Value>, String) {
    let r = root.display();
    let script = format!(
        r#"set -eu
mkdir -p {r}/host/proc {r}/host/sys/fs/cgroup
mount --rbind /proc {r}/host/proc
mount -o remount,bind,ro {r}/host/proc
mount --rbind /sys/fs/cgroup {r}/host/sys/fs/cgroup
findmnt -rn -o TARGET -R {r}/host/sys/fs/cgroup | while read -r m; do
  mount -o remount,bind,ro "$m"
done
# the agent's own namespace has nothing but a loopback
test "$(ip -o link | wc -l)" = 1
exec "$0" --once --sink stdout --node-name n-deployed \
  --proc-path {r}/host/proc --cgroup-path {r}/host/sys/fs/cgroup
"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_cased-agent"))
        .env_remove("CASED_API_KEY")
        .env_remove("KUBECONFIG")
        .env("HOME", root)
        .output()
        .expect("unshare");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "agent as deployed: {stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, stderr)
}

fn node_value(out: &[Value], name: &str) -> f64 {
    let hits: Vec<f64> = out
        .iter()
        .filter(|v| v["metric_name"] == name && v["tags"].get("container_id").is_none())
        .map(|v| v["value"].as_f64().unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{name}: {hits:?}");
    hits[0]
}

fn container_value(out: &[Value], id: &str, name: &str) -> Option<f64> {
    out.iter()
        .find(|v| v["metric_name"] == name && v["tags"]["container_id"] == id)
        .map(|v| v["value"].as_f64().unwrap())
}

/// The host's physical interfaces (the test runs in the host's namespace).
fn host_net() -> net_dev::IfaceCounters {
    let text = std::fs::read_to_string("/proc/1/net/dev").unwrap();
    net_dev::sum_physical(&text).unwrap()
}

/// (busy, total) jiffies of the host's `cpu` line.
fn host_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    let cols: Vec<u64> = text.lines().next().unwrap()[3..]
        .split_whitespace()
        .take(8)
        .map(|c| c.parse().unwrap())
        .collect();
    let total: u64 = cols.iter().sum();
    (total - cols[3] - cols[4], total)
}

fn mem_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024.0
}

/// A python3 process in `rel`: holds `mib` MiB and spins.
fn spawn_holder(tree: &mut RealTree, rel: &str, mib: usize) {
    let code = format!(
        "import sys, time\nsys.stdin.buffer.read(1)\nb = bytearray({mib} << 20)\n\
         for i in range(0, len(b), 4096): b[i] = 1\nend = time.time() + 30\n\
         while time.time() < end: pass\n"
    );
    let mut child: Child = Command::new("python3")
        .arg("-c")
        .arg(code)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    tree.enter(rel, child.id());
    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    tree.children.push(child);
}

#[test]
fn as_deployed_node_and_container_numbers_are_the_hosts() {
    if !need_root("as-deployed test (netns, bind mounts, cgroups)") {
        return;
    }
    let _g = serial();
    let mut tree = RealTree::new("deployed").expect("v1 controllers");
    let uid = pod_uid(7, std::process::id());
    let id = container_id(7, 0xde);
    let rel = tree.add_container("burstable", &uid, &id);
    tree.write("cpu", &rel, "cpu.cfs_period_us", "100000");
    tree.write("cpu", &rel, "cpu.cfs_quota_us", "30000");
    spawn_holder(&mut tree, &rel, 48);
    sleep(Duration::from_millis(800)); // allocated and spinning

    let dir = tempfile::tempdir().unwrap();
    let (net0, cpu0) = (host_net(), host_cpu());
    let (out, stderr) = run_deployed(dir.path());
    let (net1, cpu1) = (host_net(), host_cpu());
    let mem_usage: f64 = tree
        .read("memory", &rel, "memory.usage_in_bytes")
        .trim()
        .parse()
        .unwrap();

    // network: the node's interfaces, not the agent's empty namespace
    assert!(
        net0.rx_bytes > 0,
        "no physical traffic on this host: nothing to check"
    );
    let rx = node_value(&out, "node.network.rx_bytes");
    let tx = node_value(&out, "node.network.tx_bytes");
    assert!(
        rx >= net0.rx_bytes as f64 && rx <= net1.rx_bytes as f64,
        "node rx {rx} outside the host's [{}, {}]",
        net0.rx_bytes,
        net1.rx_bytes
    );
    assert!(tx >= net0.tx_bytes as f64 && tx <= net1.tx_bytes as f64);
    let rxp = node_value(&out, "node.network.rx_packets");
    assert!(rxp >= net0.rx_packets as f64 && rxp <= net1.rx_packets as f64);

    // memory: the host's meminfo
    assert_eq!(node_value(&out, "node.memory.total"), mem_total_bytes());

    // CPU: the host's /proc/stat over about the same window (the container
    // spins at 30 % of a core, the test machine may be busier)
    let usage = node_value(&out, "node.cpu.usage_percent");
    let host = (cpu1.0 - cpu0.0) as f64 / (cpu1.1 - cpu0.1).max(1) as f64 * 100.0;
    assert!(
        usage > 0.0 && (usage - host).abs() < 25.0,
        "node usage {usage} vs host {host}"
    );

    // the container, through the read-only bind of the cgroup tree
    let cpu = container_value(&out, &id, "container.cpu.usage_percent")
        .unwrap_or_else(|| panic!("no container CPU for {id}: {stderr}"));
    assert!(cpu > 15.0 && cpu < 33.0, "30 % quota, got {cpu}");
    assert_eq!(
        container_value(&out, &id, "container.cpu.limit_cores"),
        Some(0.3)
    );
    let mem = container_value(&out, &id, "container.memory.usage").unwrap();
    assert!(mem >= 48.0 * 1048576.0, "holds 48 MiB: {mem}");
    assert!(
        (mem - mem_usage).abs() < 0.05 * mem_usage,
        "memory {mem} vs kernel {mem_usage}"
    );
    // it shares the host's network namespace: no pod network, although the
    // agent itself is in another namespace
    assert!(
        !out.iter().any(|v| v["pod_uid"] == uid.as_str()
            && v["metric_name"]
                .as_str()
                .unwrap()
                .starts_with("container.network")),
        "a host-network pod got network metrics"
    );
}
