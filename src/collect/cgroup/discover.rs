//! Finding container cgroups in one hierarchy, cheaply, every cycle.
//!
//! The hierarchy is walked from its root; each directory is classified by
//! its path ([`super::path::classify`]) and the walk stops at a container's
//! own cgroup (the kernel already sums its children into it). Kubelet trees
//! are found wherever they sit below the root (`/kubepods`, or a
//! `/<anything>/kubepods` as in the tests).
//!
//! Cost control: cgroupfs does not update a directory's mtime when a child
//! is created or removed, but it does keep `st_nlink` = 2 + number of
//! subdirectories. So each cycle stats every non-container directory and
//! re-lists only those whose link count changed, or that were marked dirty
//! because one of their containers vanished (a remove plus a create between
//! two cycles leaves the count unchanged; the vanished container's failed
//! read marks its parent, and the collector rescans at once, so the new
//! container still shows in that cycle). Container directories themselves
//! are never stat'ed or listed. Walked directories are kept open (within
//! the descriptor budget) so the check is an `fstat`, with no path walk.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ContainerIdentity;

use super::files::{FdBudget, KeptDir};
use super::path::classify;

/// A container cgroup, stable across cycles while it exists.
#[derive(Debug)]
pub struct Found {
    /// Path relative to the hierarchy root, with a leading `/`
    /// (`/kubepods/burstable/pod<uid>/<id>`).
    pub rel: Arc<str>,
    pub identity: Arc<ContainerIdentity>,
}

#[derive(Debug)]
struct Node {
    /// Relative path (`""` for the root).
    rel: String,
    /// Kept open for `fstat` (cheaper than `stat` by path).
    dir: Option<KeptDir>,
    nlink: u64,
    /// Listed at least once and not marked for a re-list.
    fresh: bool,
    dirs: Vec<Node>,
    containers: Vec<Arc<Found>>,
}

impl Node {
    fn new(rel: String) -> Self {
        Node {
            rel,
            dir: None,
            nlink: 0,
            fresh: false,
            dirs: Vec::new(),
            containers: Vec::new(),
        }
    }
}

/// The cached shape of one hierarchy.
#[derive(Debug)]
pub struct Discovery {
    root: PathBuf,
    tree: Node,
    /// Reused path buffer.
    scratch: PathBuf,
    budget: Arc<FdBudget>,
    /// Directory listings done (for tests and benchmarks).
    pub listings: u64,
}

impl Discovery {
    /// Directories are kept open within `budget` (stat by path past it).
    pub fn new(root: impl Into<PathBuf>, budget: Arc<FdBudget>) -> Self {
        Discovery {
            root: root.into(),
            tree: Node::new(String::new()),
            scratch: PathBuf::new(),
            budget,
            listings: 0,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walk the hierarchy and put every container found into `out`
    /// (cleared first). A missing root gives no containers.
    pub fn scan(&mut self, out: &mut Vec<Arc<Found>>) -> io::Result<()> {
        out.clear();
        let Discovery {
            root,
            tree,
            scratch,
            budget,
            listings,
        } = self;
        let mut w = Walk {
            root,
            scratch,
            budget,
            listings,
        };
        w.visit(tree, out).map(|_| ())
    }

    /// A container below `rel`'s parent vanished: list that parent again at
    /// the next [`Discovery::scan`].
    pub fn mark_parent_dirty(&mut self, rel: &str) {
        let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let mut node = &mut self.tree;
        for comp in parent.split('/').filter(|c| !c.is_empty()) {
            let Some(i) = node.dirs.iter().position(|d| last(&d.rel) == comp) else {
                return;
            };
            node = &mut node.dirs[i];
        }
        node.fresh = false;
    }
}

fn last(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(_, l)| l).unwrap_or(rel)
}

fn abs(root: &Path, rel: &str, scratch: &mut PathBuf) {
    scratch.clear();
    scratch.push(root);
    if let Some(r) = rel.strip_prefix('/') {
        scratch.push(r);
    }
}

struct Walk<'a> {
    root: &'a Path,
    scratch: &'a mut PathBuf,
    budget: &'a Arc<FdBudget>,
    listings: &'a mut u64,
}

impl Walk<'_> {
    /// Visit `node` and below; `Ok(false)` when `node` itself is gone.
    fn visit(&mut self, node: &mut Node, out: &mut Vec<Arc<Found>>) -> io::Result<bool> {
        let start = out.len();
        for _pass in 0..2 {
            let nlink = match node.dir.as_ref().map(|d| d.nlink()) {
                Some(Ok(n)) => n,
                _ => {
                    node.dir = None;
                    abs(self.root, &node.rel, self.scratch);
                    match std::fs::metadata(&*self.scratch) {
                        Ok(m) => m.nlink(),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
            };
            if !node.fresh || nlink != node.nlink {
                abs(self.root, &node.rel, self.scratch);
                if !relist(node, self.scratch, self.listings)? {
                    return Ok(false);
                }
                if node.dir.is_none() {
                    node.dir = KeptDir::open(self.scratch, self.budget);
                }
                node.nlink = nlink;
                node.fresh = true;
            }
            out.extend(node.containers.iter().cloned());
            let mut gone = false;
            for d in &mut node.dirs {
                gone |= !self.visit(d, out)?;
            }
            if !gone {
                return Ok(true);
            }
            // a subdirectory vanished (its replacement may have come with
            // the same link count): list this one again, once
            out.truncate(start);
            node.fresh = false;
        }
        Ok(true)
    }
}

/// List `dir` again; `Ok(false)` when it is gone.
fn relist(node: &mut Node, dir: &Path, listings: &mut u64) -> io::Result<bool> {
    *listings += 1;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            node.dirs.clear();
            node.containers.clear();
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    // what is known, by name (a relist is rare: only on change)
    let mut old_dirs: HashMap<String, Node> = node
        .dirs
        .drain(..)
        .map(|d| (last(&d.rel).to_owned(), d))
        .collect();
    let mut old_containers: HashMap<String, Arc<Found>> = node
        .containers
        .drain(..)
        .map(|c| (last(&c.rel).to_owned(), c))
        .collect();
    for entry in rd {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // keep what is known (identity Arcs, cached subtrees)
        if let Some(c) = old_containers.remove(name) {
            node.containers.push(c);
            continue;
        }
        if let Some(d) = old_dirs.remove(name) {
            node.dirs.push(d);
            continue;
        }
        let rel = format!("{}/{}", node.rel, name);
        match classify(&rel) {
            Some(c) if c.cgroup == rel => node.containers.push(Arc::new(Found {
                rel: Arc::from(rel.as_str()),
                identity: Arc::new(c.identity),
            })),
            // inside a container (cannot happen below a non-container
            // directory, but never descend into one)
            Some(_) => {}
            None => node.dirs.push(Node::new(rel)),
        }
    }
    Ok(true)
}
