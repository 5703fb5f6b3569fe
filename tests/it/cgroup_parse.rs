//! The cgroup v1/v2 parsers on every real captured file in
//! `shared/fixtures/` (cgroup_v1, cgroup_v2, the 6.18 hybrid capture),
//! asserting the numbers the files hold.

use std::path::PathBuf;

use cased_agent::collect::cgroup::{v1, v2};

fn fixtures() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if p.is_dir() {
        p
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

fn read(rel: &str) -> String {
    let p = fixtures().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const V1_DOCKER: &str = "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f";
const HYBRID: &str = "captured-linux-6.18-hybrid/sys/fs/cgroup";
const HYBRID_C: &str = "kubepods/burstable/pod3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12/35f0ce87f0997160a8e4c8b66d662371d12daa0b5f3400aac68acde466c27fcd";
const V2_POD: &str = "cgroup_v2/coroot-node-agent/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/docker-73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd.scope";
const V2_SVC: &str = "cgroup_v2/coroot-node-agent/system.slice/docker-ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2.scope";

fn v1f(ctl: &str, file: &str) -> String {
    read(&format!(
        "cgroup_v1/coroot-node-agent/{ctl}/docker/{V1_DOCKER}/{file}"
    ))
}

fn hy(ctl: &str, file: &str) -> String {
    read(&format!("{HYBRID}/{ctl}/{HYBRID_C}/{file}"))
}

#[test]
fn v1_coroot_docker_container() {
    assert_eq!(
        v1::cpuacct_usage(&v1f("cpuacct", "cpuacct.usage")).unwrap(),
        107292866812141
    );
    assert_eq!(
        v1::cpu_stat(&v1f("cpu", "cpu.stat")).unwrap(),
        v1::CpuStat {
            nr_periods: 380975143,
            nr_throttled: 5583849,
            throttled_ns: 254005032764376
        }
    );
    assert_eq!(
        v1::cfs_quota(&v1f("cpu", "cpu.cfs_quota_us")).unwrap(),
        Some(150000)
    );
    assert_eq!(
        v1::cfs_period(&v1f("cpu", "cpu.cfs_period_us")).unwrap(),
        100000
    );
    assert_eq!(
        v1::memory_limit(&v1f("memory", "memory.limit_in_bytes")).unwrap(),
        Some(21474836480)
    );
    let m = v1::memory_stat(&v1f("memory", "memory.stat")).unwrap();
    assert_eq!(
        m,
        v1::MemStat {
            rss: 12778020864,
            cache: 3206844416,
            swap: None,
            inactive_file: 1601998848
        }
    );
    let io = v1::io_service_bytes(&v1f("blkio", "blkio.throttle.io_service_bytes")).unwrap();
    assert_eq!(
        io.read,
        875529547776 + 998632854016 + 10238894080,
        "Read summed over 8:16, 8:0, 8:48, 8:32, 9:1"
    );
    assert_eq!(
        io.write,
        655360 + 4603904 + 753046432768 + 884175858688 + 49152
    );
    // sanity: read + write equals the file's own final Total line
    assert_eq!(io.read + io.write, 3521628895744);
}

#[test]
fn v1_coroot_systemd_service_memory_stat() {
    let m = v1::memory_stat(&read(
        "cgroup_v1/coroot-node-agent/memory/system.slice/ssh.service/memory.stat",
    ))
    .unwrap();
    assert_eq!(
        (m.rss, m.cache, m.inactive_file),
        (12778020864, 3206844416, 1601998848)
    );
}

#[test]
fn hybrid_6_18_capture_throttled_and_oom_killed() {
    assert_eq!(
        v1::cpuacct_usage(&hy("cpuacct", "cpuacct.usage")).unwrap(),
        1806142812
    );
    let c = v1::cpu_stat(&hy("cpu", "cpu.stat")).unwrap();
    assert_eq!(
        c,
        v1::CpuStat {
            nr_periods: 39,
            nr_throttled: 33,
            throttled_ns: 1076084165
        }
    );
    assert_eq!(
        v1::cfs_quota(&hy("cpu", "cpu.cfs_quota_us")).unwrap(),
        Some(50000)
    );
    assert_eq!(
        v1::cfs_period(&hy("cpu", "cpu.cfs_period_us")).unwrap(),
        100000
    );
    assert_eq!(
        v1::memory_usage(&hy("memory", "memory.usage_in_bytes")).unwrap(),
        528384
    );
    assert_eq!(
        v1::memory_limit(&hy("memory", "memory.limit_in_bytes")).unwrap(),
        Some(64 << 20)
    );
    let m = v1::memory_stat(&hy("memory", "memory.stat")).unwrap();
    assert_eq!(
        m,
        v1::MemStat {
            rss: 0,
            cache: 0,
            swap: Some(0),
            inactive_file: 0
        }
    );
    assert_eq!(
        v1::oom_kills(&hy("memory", "memory.oom_control")).unwrap(),
        Some(1)
    );
    assert_eq!(
        v1::io_service_bytes(&hy("blkio", "blkio.throttle.io_service_bytes")).unwrap(),
        v1::IoBytes { read: 0, write: 0 }
    );
    // the unlimited memsw value of this capture counts as unlimited
    let memsw = hy("memory", "memory.memsw.limit_in_bytes");
    assert_eq!(memsw.trim(), "9223372036854771712");
    assert_eq!(v1::memory_limit(&memsw).unwrap(), None);
}

#[test]
fn v2_coroot_kubepods_container() {
    let c = v2::cpu_stat(&read(&format!("{V2_POD}/cpu.stat"))).unwrap();
    assert_eq!(c.usage_usec, 3795681254);
    assert_eq!(
        c.throttling,
        Some(v2::Throttling {
            nr_periods: 809036,
            nr_throttled: 76,
            throttled_usec: 363166
        })
    );
    assert_eq!(
        v2::cpu_max(&read(&format!("{V2_POD}/cpu.max"))).unwrap(),
        v2::CpuMax {
            quota_usec: Some(10000),
            period_usec: 100000
        }
    );
    let cur = read(&format!("{V2_POD}/memory.current"));
    assert_eq!(
        cased_agent::collect::cgroup::parse::single_u64("memory.current", &cur).unwrap(),
        48648192
    );
    let max = read(&format!("{V2_POD}/memory.max"));
    assert_eq!(
        cased_agent::collect::cgroup::parse::max_or_u64("memory.max", &max).unwrap(),
        None
    );
    assert_eq!(
        v2::memory_stat(&read(&format!("{V2_POD}/memory.stat"))).unwrap(),
        v2::MemStat {
            anon: 44892160,
            file: 1044480,
            inactive_file: 159744
        }
    );
    assert_eq!(
        v2::io_stat(&read(&format!("{V2_POD}/io.stat"))).unwrap(),
        v2::IoBytes {
            read: 11 + 33,
            write: 630538240 + 630538241
        }
    );
}

#[test]
fn v2_coroot_system_slice_docker() {
    let c = v2::cpu_stat(&read(&format!("{V2_SVC}/cpu.stat"))).unwrap();
    assert_eq!(c.usage_usec, 5531521992);
    assert_eq!(
        c.throttling,
        Some(v2::Throttling {
            nr_periods: 0,
            nr_throttled: 0,
            throttled_usec: 0
        })
    );
    assert_eq!(
        v2::cpu_max(&read(&format!("{V2_SVC}/cpu.max"))).unwrap(),
        v2::CpuMax {
            quota_usec: None,
            period_usec: 100000
        }
    );
    let max = read(&format!("{V2_SVC}/memory.max"));
    assert_eq!(
        cased_agent::collect::cgroup::parse::max_or_u64("memory.max", &max).unwrap(),
        Some(4294967296)
    );
    assert_eq!(
        v2::memory_stat(&read(&format!("{V2_SVC}/memory.stat"))).unwrap(),
        v2::MemStat {
            anon: 75247616,
            file: 50835456,
            inactive_file: 50204672
        }
    );
}

#[test]
fn truncated_real_files_are_errors() {
    // a file cut in the middle of its text: a missing key or a bad number
    let stat = v1f("cpu", "cpu.stat");
    let cut = &stat[..stat.find("throttled_time").unwrap()];
    assert!(v1::cpu_stat(cut).is_err());
    let m = read(&format!("{V2_POD}/memory.stat"));
    assert!(v2::memory_stat(&m[..20]).is_err());
    let u = v1f("cpuacct", "cpuacct.usage");
    assert!(v1::cpuacct_usage(&format!("{}x", &u[..5])).is_err());
}
