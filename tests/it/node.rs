//! NodeCollector over a fixture proc tree built from real captured files,
//! and over the live `/proc`.

use std::path::Path;
use std::time::{Duration, Instant};

use cased_agent::collect::Collector;
use cased_agent::collect::node::{NodeCollector, names};
use cased_agent::host::HostPaths;
use cased_agent::model::{About, Sample};

const HYBRID: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/captured-linux-6.18-hybrid/proc"
);

const FILES: &[&str] = &[
    "stat",
    "meminfo",
    "diskstats",
    "loadavg",
    "net/dev",
    "pressure/cpu",
    "pressure/memory",
    "pressure/io",
];

const CPU: &[&str] = &[
    names::CPU_USER,
    names::CPU_SYSTEM,
    names::CPU_IDLE,
    names::CPU_IOWAIT,
    names::CPU_STEAL,
    names::CPU_USAGE,
];
const MEMORY: &[&str] = &[
    names::MEM_TOTAL,
    names::MEM_FREE,
    names::MEM_AVAILABLE,
    names::MEM_BUFFERS,
    names::MEM_CACHED,
    names::MEM_SWAP_TOTAL,
    names::MEM_SWAP_FREE,
    names::MEM_USED,
    names::MEM_USED_PERCENT,
];
const NET_CUMULATIVE: &[&str] = &[
    names::NET_RX_BYTES,
    names::NET_TX_BYTES,
    names::NET_RX_PACKETS,
    names::NET_TX_PACKETS,
    names::NET_RX_ERRORS,
    names::NET_TX_ERRORS,
];
const RATES: &[&str] = &[
    names::NET_RX_BYTES_PER_SEC,
    names::NET_TX_BYTES_PER_SEC,
    names::DISK_READ_BYTES_PER_SEC,
    names::DISK_WRITE_BYTES_PER_SEC,
];
const LOAD: &[&str] = &[names::LOAD_1, names::LOAD_5, names::LOAD_15];
const PRESSURE: &[&str] = &[
    names::PRESSURE_CPU,
    names::PRESSURE_MEMORY,
    names::PRESSURE_IO,
];

/// A proc tree in a temp dir holding copies of the captured files.
fn fixture_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in FILES {
        let to = dir.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(HYBRID).join(f), &to).unwrap();
    }
    dir
}

/// Add `deltas[(i, d)]` to the i-th number after the token `key` on the line
/// holding it (`cpu`, `eth0:`, `vda`).
fn bump(path: &Path, key: &str, deltas: &[(usize, u64)]) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let toks: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = toks
                .iter()
                .position(|t| *t == key || t.strip_suffix(':') == Some(key))
            else {
                return line.to_string();
            };
            found = true;
            let mut toks: Vec<String> = toks.iter().map(|t| t.to_string()).collect();
            for (i, d) in deltas {
                let t = &mut toks[at + 1 + i];
                *t = (t.parse::<u64>().unwrap() + d).to_string();
            }
            toks.join(" ")
        })
        .collect();
    assert!(found, "{key} not in {path:?}");
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The value of `name`, asserting it is there exactly once, about the node,
/// with `unit`.
#[track_caller]
fn one(out: &[Sample], name: &str, unit: &str) -> f64 {
    let found: Vec<&Sample> = out.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {} samples", found.len());
    assert_eq!(found[0].unit, unit, "{name}");
    assert!(matches!(found[0].about, About::Node), "{name}");
    found[0].value
}

fn has(out: &[Sample], name: &str) -> bool {
    out.iter().any(|s| s.name == name)
}

#[track_caller]
fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn fixture_tree_two_cycles_exact_values() {
    let dir = fixture_tree();
    let p = dir.path();
    let mut c = NodeCollector::new(HostPaths::new(p, "/nonexistent"));
    let t0 = Instant::now();
    let mut out = vec![];
    c.collect(t0, &mut out).unwrap();

    // first cycle: no percents from deltas, no rates
    for n in CPU.iter().chain(RATES) {
        assert!(!has(&out, n), "{n} on the first cycle");
    }
    let kib = 1024.0;
    close(one(&out, names::MEM_TOTAL, "bytes"), 24684084.0 * kib);
    close(one(&out, names::MEM_FREE, "bytes"), 21604496.0 * kib);
    close(one(&out, names::MEM_AVAILABLE, "bytes"), 23873456.0 * kib);
    close(one(&out, names::MEM_BUFFERS, "bytes"), 14096.0 * kib);
    close(one(&out, names::MEM_CACHED, "bytes"), 2407012.0 * kib);
    close(one(&out, names::MEM_SWAP_TOTAL, "bytes"), 0.0);
    close(one(&out, names::MEM_SWAP_FREE, "bytes"), 0.0);
    close(
        one(&out, names::MEM_USED, "bytes"),
        (24684084.0 - 23873456.0) * kib,
    );
    close(
        one(&out, names::MEM_USED_PERCENT, "percent"),
        (24684084.0 - 23873456.0) * 100.0 / 24684084.0,
    );
    // eth0 (ifb0/ifb1 are all zeros; lo is skipped)
    close(one(&out, names::NET_RX_BYTES, "bytes"), 172125181.0);
    close(one(&out, names::NET_TX_BYTES, "bytes"), 647773.0);
    close(one(&out, names::NET_RX_PACKETS, "count"), 8367.0);
    close(one(&out, names::NET_TX_PACKETS, "count"), 5303.0);
    close(one(&out, names::NET_RX_ERRORS, "count"), 0.0);
    close(one(&out, names::NET_TX_ERRORS, "count"), 0.0);
    close(one(&out, names::LOAD_1, "count"), 2.22);
    close(one(&out, names::LOAD_5, "count"), 1.56);
    close(one(&out, names::LOAD_15, "count"), 0.74);
    close(one(&out, names::PRESSURE_CPU, "percent"), 12.31);
    close(one(&out, names::PRESSURE_MEMORY, "percent"), 0.0);
    close(one(&out, names::PRESSURE_IO, "percent"), 0.16);

    // 10 s later: known increments
    // cpu: user nice system idle iowait irq softirq steal guest
    //      300  40   100    450  50     10  30      20    5   = 1000 ticks (guest is inside user)
    bump(
        &p.join("stat"),
        "cpu",
        &[
            (0, 300),
            (1, 40),
            (2, 100),
            (3, 450),
            (4, 50),
            (5, 10),
            (6, 30),
            (7, 20),
            (8, 5),
        ],
    );
    // eth0: rx bytes, packets, errs ... tx bytes, packets, errs
    bump(
        &p.join("net/dev"),
        "eth0",
        &[
            (0, 10_000_000),
            (1, 1000),
            (2, 2),
            (8, 50_000),
            (9, 400),
            (10, 1),
        ],
    );
    // loopback traffic is not node traffic
    bump(&p.join("net/dev"), "lo", &[(0, 999_999), (8, 999_999)]);
    // vda: sectors read (+2000), sectors written (+4000)
    bump(&p.join("diskstats"), "vda", &[(2, 2000), (6, 4000)]);
    // loop and zram devices are not disks
    bump(&p.join("diskstats"), "loop0", &[(2, 1_000_000)]);
    bump(&p.join("diskstats"), "zram0", &[(6, 5000)]);

    let mut out = vec![];
    c.collect(t0 + Duration::from_secs(10), &mut out).unwrap();
    close(one(&out, names::CPU_USER, "percent"), 30.0);
    close(one(&out, names::CPU_SYSTEM, "percent"), 10.0);
    close(one(&out, names::CPU_IDLE, "percent"), 45.0);
    close(one(&out, names::CPU_IOWAIT, "percent"), 5.0);
    close(one(&out, names::CPU_STEAL, "percent"), 2.0);
    close(one(&out, names::CPU_USAGE, "percent"), 50.0);
    close(one(&out, names::NET_RX_BYTES, "bytes"), 182125181.0);
    close(one(&out, names::NET_TX_BYTES, "bytes"), 697773.0);
    close(one(&out, names::NET_RX_PACKETS, "count"), 9367.0);
    close(one(&out, names::NET_TX_PACKETS, "count"), 5703.0);
    close(one(&out, names::NET_RX_ERRORS, "count"), 2.0);
    close(one(&out, names::NET_TX_ERRORS, "count"), 1.0);
    close(
        one(&out, names::NET_RX_BYTES_PER_SEC, "bytes/sec"),
        1_000_000.0,
    );
    close(one(&out, names::NET_TX_BYTES_PER_SEC, "bytes/sec"), 5_000.0);
    close(
        one(&out, names::DISK_READ_BYTES_PER_SEC, "bytes/sec"),
        2000.0 * 512.0 / 10.0,
    );
    close(
        one(&out, names::DISK_WRITE_BYTES_PER_SEC, "bytes/sec"),
        4000.0 * 512.0 / 10.0,
    );

    // a counter that went down (eth0 reset) gives no rx rate; tx still
    // moves. (The ifb interfaces go away, so eth0 is the only one left.)
    let text = std::fs::read_to_string(p.join("net/dev")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("ifb"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        p.join("net/dev"),
        text.replace("eth0: 182125181", "eth0: 100"),
    )
    .unwrap();
    bump(&p.join("net/dev"), "eth0", &[(8, 10_000)]);
    let mut out = vec![];
    c.collect(t0 + Duration::from_secs(15), &mut out).unwrap();
    assert!(!has(&out, names::NET_RX_BYTES_PER_SEC));
    close(one(&out, names::NET_TX_BYTES_PER_SEC, "bytes/sec"), 2_000.0);
    // nothing moved on the disks: rates are zero, not absent
    close(one(&out, names::DISK_READ_BYTES_PER_SEC, "bytes/sec"), 0.0);
    // no CPU ticks passed: no percents rather than a division by zero
    for n in CPU {
        assert!(!has(&out, n), "{n} without ticks");
    }
}

#[test]
fn a_malformed_file_costs_only_its_metrics() {
    let dir = fixture_tree();
    let p = dir.path();
    // meminfo cut in the middle of a line
    let mem = std::fs::read_to_string(p.join("meminfo")).unwrap();
    std::fs::write(p.join("meminfo"), &mem[..mem.find("Buffers").unwrap() + 3]).unwrap();
    // stat with garbage in the cpu line
    std::fs::write(p.join("stat"), "cpu  1 2 x 4 5 6 7 8 9 10\n").unwrap();

    let mut c = NodeCollector::new(HostPaths::new(p, "/nonexistent"));
    let t0 = Instant::now();
    let mut out = vec![];
    c.collect(t0, &mut out).unwrap();
    bump(&p.join("net/dev"), "eth0", &[(0, 1000)]);
    let mut out = vec![];
    c.collect(t0 + Duration::from_secs(1), &mut out).unwrap();
    for n in MEMORY.iter().chain(CPU) {
        assert!(!has(&out, n), "{n} from a malformed file");
    }
    for n in NET_CUMULATIVE
        .iter()
        .chain(RATES)
        .chain(LOAD)
        .chain(PRESSURE)
    {
        assert!(has(&out, n), "{n} missing");
    }
    close(one(&out, names::NET_RX_BYTES_PER_SEC, "bytes/sec"), 1000.0);
}

#[test]
fn old_kernel_meminfo_and_no_psi() {
    let dir = fixture_tree();
    let p = dir.path();
    // a kernel without MemAvailable, and without /proc/pressure
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/proc/procfs/fixtures/proc/meminfo"
        ),
        p.join("meminfo"),
    )
    .unwrap();
    std::fs::remove_dir_all(p.join("pressure")).unwrap();
    let mut c = NodeCollector::new(HostPaths::new(p, "/nonexistent"));
    let mut out = vec![];
    c.collect(Instant::now(), &mut out).unwrap();
    close(one(&out, names::MEM_TOTAL, "bytes"), 15666184.0 * 1024.0);
    close(one(&out, names::MEM_CACHED, "bytes"), 12007640.0 * 1024.0);
    for n in [
        names::MEM_AVAILABLE,
        names::MEM_USED,
        names::MEM_USED_PERCENT,
    ]
    .iter()
    .chain(PRESSURE)
    {
        assert!(!has(&out, n), "{n}");
    }
}

#[test]
fn nothing_readable_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = NodeCollector::new(HostPaths::new(dir.path(), "/nonexistent"));
    let mut out = vec![];
    let e = c.collect(Instant::now(), &mut out).unwrap_err();
    assert!(e.to_string().contains("no node file could be read"), "{e}");
    assert!(out.is_empty());
}

/// `<proc>/net/dev` is the reader's own namespace (a deployed agent's pod);
/// the node's is pid 1's, and pid 2 (`kthreadd`) stands in when pid 1
/// cannot be read.
#[test]
fn node_network_is_pid_1s_namespace_not_the_readers() {
    let dir = fixture_tree();
    let p = dir.path();
    // the reader's own namespace: a pod with nothing but a quiet eth0
    let pod = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  eth0:      70       1    0    0    0     0          0         0       90       1    0    0    0     0       0          0\n";
    let host = std::fs::read_to_string(p.join("net/dev")).unwrap();
    std::fs::write(p.join("net/dev"), pod).unwrap();
    std::fs::create_dir_all(p.join("1/net")).unwrap();
    std::fs::write(p.join("1/net/dev"), &host).unwrap();

    let mut c = NodeCollector::new(HostPaths::new(p, "/nonexistent"));
    let mut out = vec![];
    c.collect(Instant::now(), &mut out).unwrap();
    close(one(&out, names::NET_RX_BYTES, "bytes"), 172125181.0);
    close(one(&out, names::NET_TX_BYTES, "bytes"), 647773.0);

    // pid 1 unreadable (a directory where the file should be): pid 2's
    std::fs::remove_file(p.join("1/net/dev")).unwrap();
    std::fs::create_dir(p.join("1/net/dev")).unwrap();
    std::fs::create_dir_all(p.join("2/net")).unwrap();
    std::fs::write(
        p.join("2/net/dev"),
        host.replace("eth0: 172125181", "eth0: 172125182"),
    )
    .unwrap();
    let mut out = vec![];
    c.collect(Instant::now(), &mut out).unwrap();
    close(one(&out, names::NET_RX_BYTES, "bytes"), 172125182.0);
}

#[test]
fn live_proc() {
    let mut c = NodeCollector::new(HostPaths::new("/proc", "/sys/fs/cgroup"));
    let mut out = vec![];
    c.collect(Instant::now(), &mut out).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut out = vec![];
    c.collect(Instant::now(), &mut out).unwrap();

    for s in &out {
        eprintln!("{} = {} {}", s.name, s.value, s.unit);
    }
    let psi = std::fs::read_to_string("/proc/pressure/cpu").is_ok();
    let mut expected: Vec<&str> = CPU
        .iter()
        .chain(MEMORY)
        .chain(NET_CUMULATIVE)
        .chain(RATES)
        .chain(LOAD)
        .copied()
        .collect();
    if psi {
        expected.extend(PRESSURE);
    }
    for n in &expected {
        assert_eq!(
            out.iter().filter(|s| s.name == *n).count(),
            1,
            "{n} not exactly once"
        );
    }
    assert_eq!(out.len(), expected.len(), "unexpected extra samples");
    for s in &out {
        assert!(
            s.value.is_finite() && s.value >= 0.0,
            "{}: {}",
            s.name,
            s.value
        );
        if s.unit == "percent" {
            assert!(s.value <= 100.0, "{}: {}", s.name, s.value);
        }
    }
    let v = |n| {
        one(
            &out,
            n,
            if n.ends_with("percent") {
                "percent"
            } else {
                "bytes"
            },
        )
    };
    let sum = v(names::CPU_USER)
        + v(names::CPU_SYSTEM)
        + v(names::CPU_IDLE)
        + v(names::CPU_IOWAIT)
        + v(names::CPU_STEAL);
    assert!(sum <= 100.5, "cpu shares add up to {sum}");
    close(
        v(names::CPU_USAGE),
        100.0 - v(names::CPU_IDLE) - v(names::CPU_IOWAIT),
    );
    assert_eq!(
        v(names::MEM_USED),
        v(names::MEM_TOTAL) - v(names::MEM_AVAILABLE)
    );
    assert!(v(names::MEM_TOTAL) > 0.0);
}
