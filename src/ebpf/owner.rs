//! Which container a process belongs to: `/proc/<tgid>/cgroup`, classified
//! by the same rules as the cgroup collector (`collect::cgroup::path`), so
//! HTTP metrics join the same container identity and pod metadata.
//!
//! Every owner also keeps a cgroup path (tag `cgroup`): the container's own
//! cgroup; for a process in no container, the v2 path when it is not the
//! root, else the v1 path of the first of `cpu`, `cpuacct`, `pids`,
//! `memory`, `blkio` (then any other) that is not the root.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::collect::cgroup::path::{classify, split_proc_cgroup_line};
use crate::model::ContainerIdentity;

/// Who served or made a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `None`: not in a container (or gone before it could be looked up).
    pub container: Option<Arc<ContainerIdentity>>,
    /// Empty when the process was gone before it could be looked up.
    pub cgroup: Arc<str>,
}

impl Owner {
    pub fn unknown() -> Owner {
        Owner {
            container: None,
            cgroup: Arc::from(""),
        }
    }

    fn cgroup(path: &str) -> Owner {
        Owner {
            container: None,
            cgroup: Arc::from(path),
        }
    }
}

/// v1 controllers in the order their path is preferred.
const V1_ORDER: [&str; 5] = ["cpu", "cpuacct", "pids", "memory", "blkio"];

/// The owner a `/proc/<pid>/cgroup` text names (pure).
pub fn parse(text: &str) -> Owner {
    let mut v2 = None;
    let mut v1: Option<(usize, &str)> = None;
    for line in text.lines() {
        let Some((controllers, path)) = split_proc_cgroup_line(line) else {
            continue;
        };
        if let Some(c) = classify(path) {
            return Owner {
                container: Some(Arc::new(c.identity)),
                cgroup: Arc::from(c.cgroup),
            };
        }
        if path == "/" || path.is_empty() {
            continue;
        }
        if line.starts_with("0::") {
            v2.get_or_insert(path);
        } else if !controllers.is_empty() {
            let rank = controllers
                .split(',')
                .filter_map(|c| V1_ORDER.iter().position(|o| *o == c))
                .min()
                .unwrap_or(V1_ORDER.len());
            if v1.is_none_or(|(r, _)| rank < r) {
                v1 = Some((rank, path));
            }
        }
    }
    Owner::cgroup(v2.or(v1.map(|(_, p)| p)).unwrap_or("/"))
}

/// Cgroup directory inode numbers → paths, for one hierarchy (the kernel
/// names cgroups by their kernfs id, which is the directory's inode).
/// Rebuilt by walking the hierarchy when an id is not found, at most once
/// per [`REINDEX_EVERY`].
#[derive(Debug)]
pub struct CgroupIndex {
    root: Option<PathBuf>,
    paths: FxHashMap<u64, Arc<str>>,
    built: Option<Instant>,
}

/// How often an unknown cgroup id can cause a walk of a hierarchy.
pub const REINDEX_EVERY: Duration = Duration::from_millis(500);
/// Directories indexed per hierarchy, at most.
const MAX_INDEXED: usize = 100_000;

impl CgroupIndex {
    pub fn new(root: Option<PathBuf>) -> Self {
        CgroupIndex {
            root,
            paths: FxHashMap::default(),
            built: None,
        }
    }

    /// The path (relative to the hierarchy's root, `/`-led) of cgroup `id`.
    pub fn path(&mut self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if self.built.is_some_and(|t| t.elapsed() < REINDEX_EVERY) {
            return None;
        }
        self.rebuild();
        self.paths.get(&id).cloned()
    }

    fn rebuild(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.built = Some(Instant::now());
        self.paths.clear();
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![(root, String::new())];
        while let Some((dir, rel)) = stack.pop() {
            if let Ok(m) = std::fs::metadata(&dir) {
                let shown = if rel.is_empty() { "/" } else { rel.as_str() };
                self.paths.insert(m.ino(), Arc::from(shown));
            }
            if self.paths.len() >= MAX_INDEXED {
                break;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    stack.push((e.path(), format!("{rel}/{name}")));
                }
            }
        }
    }
}

/// Owners by process (tgid and start time, so a reused pid is a new
/// process), looked up once and kept while the process is seen. Equal owners (processes of one container) share one `Arc`, so the
/// aggregate can key on the pointer.
#[derive(Debug)]
pub struct Owners {
    proc: PathBuf,
    v2: CgroupIndex,
    cpu: CgroupIndex,
    cache: FxHashMap<(u32, u64), (Arc<Owner>, u64)>,
    interned: HashMap<Owner, Arc<Owner>>,
    generation: u64,
}

impl Owners {
    /// `unified` and `cpu`: the cgroup2 mount and the v1 `cpu` mount, for
    /// processes gone before `/proc` could be read.
    pub fn new(proc: PathBuf, unified: Option<PathBuf>, cpu: Option<PathBuf>) -> Self {
        Owners {
            proc,
            v2: CgroupIndex::new(unified),
            cpu: CgroupIndex::new(cpu),
            cache: FxHashMap::default(),
            interned: HashMap::new(),
            generation: 0,
        }
    }

    /// The owner of process `tgid` started at `start_ns` (the kernel's
    /// start time: a pid reused by another process, of another container,
    /// is another key); `cgroups` = the `(cgroup2, v1 cpu)` ids the kernel
    /// gave with a connection's first event (0 when not given), used when
    /// the process is already gone.
    pub fn get(&mut self, tgid: u32, start_ns: u64, cgroups: (u64, u64)) -> Arc<Owner> {
        let generation = self.generation;
        if let Some((o, seen)) = self.cache.get_mut(&(tgid, start_ns)) {
            *seen = generation;
            return o.clone();
        }
        // the ids were taken when the event happened: they hold even for a
        // process that has exited since (whose /proc/<pid>/cgroup is gone,
        // or for a zombie already shows the root)
        let from_ids = self.by_ids(cgroups);
        let owner = match from_ids {
            Some(o) if o.container.is_some() => o,
            from_ids => {
                let path = self.proc.join(tgid.to_string()).join("cgroup");
                match std::fs::read_to_string(&path).map(|t| parse(&t)) {
                    Ok(o) if o.container.is_some() => o,
                    Ok(o) => from_ids.unwrap_or(o),
                    Err(_) => from_ids.unwrap_or_else(Owner::unknown),
                }
            }
        };
        let o = match self.interned.get(&owner) {
            Some(o) => o.clone(),
            None => {
                let o = Arc::new(owner.clone());
                self.interned.insert(owner, o.clone());
                o
            }
        };
        self.cache.insert((tgid, start_ns), (o.clone(), generation));
        o
    }

    /// What `/proc/<pid>/cgroup` said, rebuilt from the kernel's ids.
    fn by_ids(&mut self, (v2, cpu): (u64, u64)) -> Option<Owner> {
        let mut text = String::new();
        if let Some(p) = self.cpu.path(cpu) {
            text.push_str(&format!("1:cpu:{p}\n"));
        }
        if let Some(p) = self.v2.path(v2) {
            text.push_str(&format!("0::{p}\n"));
        }
        (!text.is_empty()).then(|| parse(&text))
    }

    /// Called once per interval: processes not seen for two intervals are
    /// forgotten.
    pub fn next_interval(&mut self) {
        let g = self.generation;
        self.cache
            .retain(|_, (_, seen)| g.saturating_sub(*seen) < 2);
        // an owner nobody refers to any more (only this map holds it)
        self.interned.retain(|_, o| Arc::strong_count(o) > 1);
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_plain_cgroups() {
        let id = "a".repeat(64);
        let uid = "0b1c2d3e-0000-4000-8000-000000000001";
        let text = format!(
            "12:pids:/t/kubepods/burstable/pod{uid}/{id}\n4:cpu:/t/kubepods/burstable/pod{uid}/{id}/sub\n0::/\n"
        );
        let o = parse(&text);
        let c = o.container.unwrap();
        assert_eq!(c.container_id, id);
        assert_eq!(c.pod_uid.as_deref(), Some(uid));
        assert_eq!(&*o.cgroup, format!("/t/kubepods/burstable/pod{uid}/{id}"));
        let o = parse(&format!("0::/system.slice/docker-{id}.scope\n"));
        assert_eq!(o.container.unwrap().container_id, id);
        assert_eq!(
            parse("5:cpu:/cased-test-1\n0::/user.slice/user-0.slice/session-1.scope\n"),
            Owner::cgroup("/user.slice/user-0.slice/session-1.scope")
        );
        // v1 only: cpu's path before memory's, whatever the line order
        assert_eq!(
            parse("4:memory:/sandbox/1\n2:cpuacct:/\n1:cpu:/cased-test-1\n0::/\n"),
            Owner::cgroup("/cased-test-1")
        );
        assert_eq!(
            parse("4:memory:/sandbox/1\n3:cpu,cpuacct:/x\n0::/\n"),
            Owner::cgroup("/x")
        );
        assert_eq!(
            parse("9:name=systemd:/\n4:memory:/m\n"),
            Owner::cgroup("/m")
        );
        assert_eq!(parse(""), Owner::cgroup("/"));
    }

    #[test]
    fn a_gone_process_is_placed_by_its_cgroup_ids() {
        use std::os::unix::fs::MetadataExt;
        use std::path::Path;
        let proc = tempfile::tempdir().unwrap();
        let cpu = tempfile::tempdir().unwrap();
        let v2 = tempfile::tempdir().unwrap();
        let id = "b".repeat(64);
        let uid = "0b1c2d3e-0000-4000-8000-000000000002";
        let c = cpu
            .path()
            .join(format!("kubepods/besteffort/pod{uid}/{id}"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::create_dir_all(v2.path().join("user.slice/s.scope")).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut o = Owners::new(
            proc.path().into(),
            Some(v2.path().into()),
            Some(cpu.path().into()),
        );
        let got = o.get(41, 0, (ino(&v2.path().join("user.slice/s.scope")), ino(&c)));
        assert_eq!(got.container.as_ref().unwrap().container_id, id);
        assert_eq!(&*got.cgroup, format!("/kubepods/besteffort/pod{uid}/{id}"));
        // only the v2 id known: a plain cgroup
        let got = o.get(42, 0, (ino(&v2.path().join("user.slice/s.scope")), 12345));
        assert_eq!(*got, Owner::cgroup("/user.slice/s.scope"));
        assert_eq!(*o.get(43, 0, (0, 0)), Owner::unknown());
    }

    #[test]
    fn cache_follows_processes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("7")).unwrap();
        std::fs::write(dir.path().join("7/cgroup"), "0::/a.slice/x.scope\n").unwrap();
        let mut o = Owners::new(dir.path().to_path_buf(), None, None);
        assert_eq!(*o.get(7, 0, (0, 0)), Owner::cgroup("/a.slice/x.scope"));
        assert_eq!(*o.get(8, 0, (0, 0)), Owner::unknown());
        // processes of one owner share one Arc
        std::fs::create_dir_all(dir.path().join("9")).unwrap();
        std::fs::write(dir.path().join("9/cgroup"), "0::/a.slice/x.scope\n").unwrap();
        assert!(Arc::ptr_eq(&o.get(7, 0, (0, 0)), &o.get(9, 0, (0, 0))));
        std::fs::write(dir.path().join("7/cgroup"), "0::/b\n").unwrap();
        // cached while seen
        o.next_interval();
        assert_eq!(*o.get(7, 0, (0, 0)), Owner::cgroup("/a.slice/x.scope"));
        o.next_interval();
        o.next_interval();
        o.next_interval();
        assert_eq!(*o.get(7, 0, (0, 0)), Owner::cgroup("/b"));
    }

    /// Issue 11: a pid reused by a process of another container kept the
    /// first one's owner for as long as the pid was seen.
    #[test]
    fn a_reused_pid_is_looked_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let uid = "0b1c2d3e-0000-4000-8000-000000000003";
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let cg = |id: &str| format!("0::/kubepods/besteffort/pod{uid}/{id}\n");
        std::fs::create_dir_all(dir.path().join("7")).unwrap();
        std::fs::write(dir.path().join("7/cgroup"), cg(&a)).unwrap();
        let mut o = Owners::new(dir.path().to_path_buf(), None, None);
        let id = |o: &Arc<Owner>| o.container.as_ref().unwrap().container_id.clone();
        assert_eq!(id(&o.get(7, 1_000, (0, 0))), a);
        // pid 7 exits; another container's process gets pid 7, seen in the
        // same interval
        std::fs::write(dir.path().join("7/cgroup"), cg(&b)).unwrap();
        assert_eq!(id(&o.get(7, 2_000, (0, 0))), b);
        assert_eq!(id(&o.get(7, 2_000, (0, 0))), b);
        // the first process's late events keep its owner
        assert_eq!(id(&o.get(7, 1_000, (0, 0))), a);
        // and it is forgotten once no longer seen
        o.next_interval();
        o.get(7, 2_000, (0, 0));
        o.next_interval();
        o.get(7, 2_000, (0, 0));
        o.next_interval();
        assert_eq!(o.cache.len(), 1);
    }
}
