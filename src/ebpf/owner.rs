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

/// Owners by tgid, looked up once and kept while the process is seen.
#[derive(Debug)]
pub struct Owners {
    proc: PathBuf,
    cache: HashMap<u32, (Arc<Owner>, u64)>,
    generation: u64,
}

impl Owners {
    pub fn new(proc: PathBuf) -> Self {
        Owners {
            proc,
            cache: HashMap::new(),
            generation: 0,
        }
    }

    pub fn get(&mut self, tgid: u32) -> Arc<Owner> {
        let generation = self.generation;
        if let Some((o, seen)) = self.cache.get_mut(&tgid) {
            *seen = generation;
            return o.clone();
        }
        let path = self.proc.join(tgid.to_string()).join("cgroup");
        let owner = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text),
            Err(_) => Owner::unknown(),
        };
        let o = Arc::new(owner);
        self.cache.insert(tgid, (o.clone(), generation));
        o
    }

    /// Called once per interval: processes not seen for two intervals are
    /// looked up afresh next time (their pid may have been reused).
    pub fn next_interval(&mut self) {
        let g = self.generation;
        self.cache
            .retain(|_, (_, seen)| g.saturating_sub(*seen) < 2);
        self.generation += 1;
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
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
    fn cache_follows_processes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("7")).unwrap();
        std::fs::write(dir.path().join("7/cgroup"), "0::/a.slice/x.scope\n").unwrap();
        let mut o = Owners::new(dir.path().to_path_buf());
        assert_eq!(*o.get(7), Owner::cgroup("/a.slice/x.scope"));
        assert_eq!(*o.get(8), Owner::unknown());
        std::fs::write(dir.path().join("7/cgroup"), "0::/b\n").unwrap();
        // cached while seen
        o.next_interval();
        assert_eq!(*o.get(7), Owner::cgroup("/a.slice/x.scope"));
        o.next_interval();
        o.next_interval();
        o.next_interval();
        assert_eq!(*o.get(7), Owner::cgroup("/b"));
    }
}
