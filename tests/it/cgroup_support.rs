//! Shared by the cgroup tests and `benches/cycle.rs` (included there with
//! `#[path]`): a v2 fixture tree built from the real captured v2 files, and
//! a kubelet-shaped tree of real v1 cgroups that removes itself on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use cased_agent::collect::cgroup::mountinfo::{CgroupLayout, read_layout};
use cased_agent::model::{About, Sample};

pub type ById = HashMap<String, HashMap<&'static str, f64>>;

/// Container samples per container id; a metric twice for one container
/// is a failure.
pub fn by_container(samples: &[Sample]) -> ById {
    let mut m: ById = HashMap::new();
    for s in samples {
        if let About::Container(c) = &s.about {
            let prev = m
                .entry(c.container_id.clone())
                .or_default()
                .insert(s.name, s.value);
            assert!(prev.is_none(), "{} twice for {}", s.name, c.container_id);
        }
    }
    m
}

/// Tests on the live kernel (CPU burners, netns) run one at a time, so
/// their timing and CPU figures do not disturb each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn fixtures() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if p.is_dir() {
        p
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

/// Root (and cgroups) needed: under `CI=true` a missing privilege fails
/// loudly; elsewhere the test skips, saying why.
pub fn need_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what}: needs root, and CI=true requires it to run");
    }
    eprintln!("not root: {what} does not run here (under CI=true this is a failure)");
    false
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test or process uses.
pub fn unique(tag: &str) -> String {
    format!(
        "cased-test-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pod UID and a 64-hex container id derived from `n` and `salt`.
pub fn pod_uid(n: u32, salt: u32) -> String {
    format!("{salt:08x}-{:04x}-4d7e-9a51-{n:012x}", n & 0xffff)
}

pub fn container_id(n: u32, salt: u32) -> String {
    format!("{salt:08x}{n:08x}{}", "ab".repeat(24))
}

// ---------------------------------------------------------------- v2 tree

pub const V2_TEMPLATE: &str = "cgroup_v2/coroot-node-agent/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/docker-73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd.scope";

/// The values one v2 container's files hold in a given cycle.
#[derive(Debug, Clone, Copy)]
pub struct V2Vals {
    pub usage_usec: u64,
    pub periods: u64,
    pub throttled: u64,
    pub throttled_usec: u64,
    pub quota: Option<u64>,
    pub current: u64,
    pub max: Option<u64>,
    pub anon: u64,
    pub file: u64,
    pub inactive_file: u64,
    pub swap: u64,
    pub oom_kill: u64,
    pub rbytes: [u64; 2],
    pub wbytes: [u64; 2],
}

/// Container `i`'s values in `cycle` (counters grow by known amounts).
pub fn v2_vals(i: u64, cycle: u64) -> V2Vals {
    let c = cycle;
    V2Vals {
        usage_usec: 3795681254 + i * 1000 + c * 250_000 * (i % 4 + 1),
        periods: 809036 + i + c * 100,
        throttled: 76 + c * (i % 5) * 10,
        throttled_usec: 363166 + c * (i % 5) * 20_000,
        quota: (!i.is_multiple_of(3)).then_some(10000 * (i % 7 + 1)),
        current: 48648192 + i * 4096 + c * 8192,
        max: i.is_multiple_of(2).then_some(1 << 30),
        anon: 44892160 + i * 4096,
        file: 1044480 + i,
        inactive_file: 159744 + i * 4096,
        swap: if i.is_multiple_of(10) { 4096 * i } else { 0 },
        oom_kill: i % 3 + c * (i % 2),
        rbytes: [11 + i, 33 + c * 1_000_000],
        wbytes: [630538240 + c * 5_000_000, 630538241 + i],
    }
}

/// Rewrite `key value` lines of a real file with new values.
fn set_keys(template: &str, vals: &[(&str, u64)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for line in template.lines() {
        let key = line.split_once(' ').map(|(k, _)| k).unwrap_or(line);
        match vals.iter().find(|(k, _)| *k == key) {
            Some((k, v)) => out.push_str(&format!("{k} {v}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A v2 `kubepods.slice` tree in a temp dir.
pub struct V2Tree {
    pub dir: tempfile::TempDir,
    /// Relative paths of the containers, index = `i` of [`v2_vals`].
    pub containers: Vec<String>,
    /// (pod uid, container id) per container.
    pub ids: Vec<(String, String)>,
    cpu_stat: String,
    mem_stat: String,
}

const QOS: [&str; 3] = ["guaranteed", "burstable", "besteffort"];
const RUNTIMES: [&str; 3] = ["cri-containerd", "crio", "docker"];

impl V2Tree {
    /// `n` containers, two per pod, spread over QoS classes and runtimes.
    pub fn new(n: u32) -> V2Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fixtures();
        let cpu_stat = std::fs::read_to_string(f.join(V2_TEMPLATE).join("cpu.stat")).unwrap();
        let mem_stat = std::fs::read_to_string(f.join(V2_TEMPLATE).join("memory.stat")).unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        // a few non-container cgroups, as on a real node
        for d in ["init.scope", "user.slice/user-0.slice", "system.slice"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut t = V2Tree {
            dir,
            containers: Vec::new(),
            ids: Vec::new(),
            cpu_stat,
            mem_stat,
        };
        for i in 0..n {
            let pod = i / 2;
            let qos = QOS[(pod % 3) as usize];
            let uid = pod_uid(pod, 0x200);
            let id = container_id(i, 0x200);
            let u = uid.replace('-', "_");
            let pod_slice = match qos {
                "guaranteed" => format!("/kubepods.slice/kubepods-pod{u}.slice"),
                q => format!("/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u}.slice"),
            };
            let rt = RUNTIMES[(i % 3) as usize];
            let rel = format!("{pod_slice}/{rt}-{id}.scope");
            std::fs::create_dir_all(t.abs(&rel)).unwrap();
            t.containers.push(rel);
            t.ids.push((uid, id));
            t.write(i as usize, 0);
        }
        t
    }

    pub fn layout(&self) -> CgroupLayout {
        CgroupLayout {
            unified: Some(self.dir.path().to_path_buf()),
            ..CgroupLayout::default()
        }
    }

    pub fn abs(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    /// Write container `i`'s files with the values of `cycle` (in place:
    /// kept-open descriptors see the new text).
    pub fn write(&self, i: usize, cycle: u64) {
        let v = v2_vals(i as u64, cycle);
        let d = self.abs(&self.containers[i]);
        let w = |name: &str, text: String| std::fs::write(d.join(name), text).unwrap();
        w(
            "cpu.stat",
            set_keys(
                &self.cpu_stat,
                &[
                    ("usage_usec", v.usage_usec),
                    ("nr_periods", v.periods),
                    ("nr_throttled", v.throttled),
                    ("throttled_usec", v.throttled_usec),
                ],
            ),
        );
        w(
            "cpu.max",
            match v.quota {
                Some(q) => format!("{q} 100000\n"),
                None => "max 100000\n".into(),
            },
        );
        w("memory.current", format!("{}\n", v.current));
        w(
            "memory.max",
            match v.max {
                Some(m) => format!("{m}\n"),
                None => "max\n".into(),
            },
        );
        w(
            "memory.stat",
            set_keys(
                &self.mem_stat,
                &[
                    ("anon", v.anon),
                    ("file", v.file),
                    ("inactive_file", v.inactive_file),
                ],
            ),
        );
        w("memory.swap.current", format!("{}\n", v.swap));
        w(
            "memory.events",
            format!(
                "low 0\nhigh 0\nmax 3\noom 1\noom_kill {}\noom_group_kill 0\n",
                v.oom_kill
            ),
        );
        w(
            "io.stat",
            format!(
                "252:0 rbytes={} wbytes={} rios=22 wios=57111 dbytes=0 dios=0\n\
                 253:0 rbytes={} wbytes={} rios=44 wios=57056 dbytes=0 dios=0\n",
                v.rbytes[0], v.wbytes[0], v.rbytes[1], v.wbytes[1]
            ),
        );
        w("cgroup.procs", String::new());
    }

    pub fn write_all(&self, cycle: u64) {
        for i in 0..self.containers.len() {
            self.write(i, cycle);
        }
    }
}

// ---------------------------------------------------------- real v1 tree

/// The v1 controllers a kubelet tree is made in.
pub const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "blkio", "pids"];

/// A kubelet-shaped tree of real v1 cgroups under `<mount>/<unique>/` in
/// every controller; children it spawned are killed and every directory it
/// made is removed (leaf first) on drop, whatever happened in between.
pub struct RealTree {
    pub unique: String,
    /// Mount point per controller (index as [`V1_CONTROLLERS`]).
    pub mounts: Vec<PathBuf>,
    made: Vec<PathBuf>,
    pub children: Vec<Child>,
}

impl RealTree {
    /// `None` when this host has no v1 `cpu`/`cpuacct`/`memory`/`blkio`/`pids`.
    pub fn new(tag: &str) -> Option<RealTree> {
        let layout = read_layout(
            Path::new("/proc/self/mountinfo"),
            Path::new("/sys/fs/cgroup"),
        );
        let mounts: Option<Vec<PathBuf>> = vec![
            layout.cpu,
            layout.cpuacct,
            layout.memory,
            layout.blkio,
            layout.pids,
        ]
        .into_iter()
        .collect();
        let mounts = mounts?;
        let mut t = RealTree {
            unique: unique(tag),
            mounts,
            made: Vec::new(),
            children: Vec::new(),
        };
        let u = t.unique.clone();
        t.mkdir_all(&format!("/{u}"));
        Some(t)
    }

    fn mkdir_all(&mut self, rel: &str) {
        for m in self.mounts.clone() {
            let mut p = m.clone();
            for comp in rel.split('/').filter(|c| !c.is_empty()) {
                p.push(comp);
                if !p.exists() {
                    std::fs::create_dir(&p)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                    self.made.push(p.clone());
                }
            }
        }
    }

    /// The layout with every controller rooted at this tree's own root, so a
    /// collector sees only this tree (`/kubepods/...` relative paths).
    pub fn layout(&self) -> CgroupLayout {
        let r = |i: usize| Some(self.mounts[i].join(&self.unique));
        CgroupLayout {
            unified: None,
            cpu: r(0),
            cpuacct: r(1),
            memory: r(2),
            blkio: r(3),
            pids: r(4),
        }
    }

    /// Make `kubepods/<qos>/pod<uid>/<id>` (guaranteed: no QoS level) in
    /// every controller; returns the path relative to the tree root.
    pub fn add_container(&mut self, qos: &str, uid: &str, id: &str) -> String {
        let rel = match qos {
            "guaranteed" => format!("/kubepods/pod{uid}/{id}"),
            q => format!("/kubepods/{q}/pod{uid}/{id}"),
        };
        let full = format!("/{}{rel}", self.unique);
        self.mkdir_all(&full);
        rel
    }

    /// The directory of `rel` in `controller`.
    pub fn dir(&self, controller: &str, rel: &str) -> PathBuf {
        let i = V1_CONTROLLERS
            .iter()
            .position(|c| *c == controller)
            .expect("known controller");
        self.mounts[i]
            .join(&self.unique)
            .join(rel.trim_start_matches('/'))
    }

    pub fn write(&self, controller: &str, rel: &str, file: &str, value: &str) {
        let p = self.dir(controller, rel).join(file);
        std::fs::write(&p, value).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    pub fn read(&self, controller: &str, rel: &str, file: &str) -> String {
        let p = self.dir(controller, rel).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// Move process `pid` into `rel` in every controller.
    pub fn enter(&self, rel: &str, pid: u32) {
        for c in V1_CONTROLLERS {
            self.write(c, rel, "cgroup.procs", &pid.to_string());
        }
    }
}

impl Drop for RealTree {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // and whatever they forked (nginx workers, shells' children)
        for d in &self.made {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for d in self.made.iter().rev() {
            // a just-killed task may linger a moment
            for _ in 0..50 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
    }
}
