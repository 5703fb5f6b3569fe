//! Cgroup path classification and mount layout on real captured files:
//! every `/proc/<pid>/cgroup` fixture, and the captured hybrid cgroup tree
//! found through its captured mountinfo.

use std::path::{Path, PathBuf};

use cased_agent::collect::cgroup::mountinfo::{layout_by_probing, layout_from_mountinfo};
use cased_agent::collect::cgroup::path::{classify, split_proc_cgroup_line};
use cased_agent::model::{QosClass, Runtime};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

/// What every line of one `/proc/<pid>/cgroup` fixture classifies to:
/// (runtime, container id, pod uid, qos, name), or `None` for the whole file.
type Expect = Option<(
    Runtime,
    &'static str,
    Option<&'static str>,
    Option<QosClass>,
    &'static str,
)>;

#[test]
fn every_proc_pid_cgroup_fixture() {
    let cases: &[(&str, Expect)] = &[
        (
            "100",
            Some((Runtime::Systemd, "", None, None, "docker.service")),
        ),
        (
            "200",
            Some((
                Runtime::Docker,
                "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f",
                None,
                None,
                "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f",
            )),
        ),
        (
            "300",
            Some((
                Runtime::Containerd,
                "17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
                Some("6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e"),
                Some(QosClass::Burstable),
                "17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
            )),
        ),
        (
            "400",
            Some((
                Runtime::Docker,
                "73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd",
                Some("8712f785-1a3e-41ec-a00b-e2dcc77431cb"),
                Some(QosClass::BestEffort),
                "73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd",
            )),
        ),
        (
            "4000",
            Some((
                Runtime::Podman,
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                None,
                None,
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            )),
        ),
        (
            "4100",
            Some((
                Runtime::Podman,
                "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                None,
                None,
                "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            )),
        ),
        (
            "4200",
            Some((
                Runtime::Podman,
                "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
                None,
                None,
                "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
            )),
        ),
        (
            "500",
            Some((
                Runtime::Docker,
                "ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2",
                None,
                None,
                "ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2",
            )),
        ),
        ("700", None),
        (
            "800",
            Some((
                Runtime::Docker,
                "cf87ba651579c9231db817909e7865e5747bd7abcac0c57ce23cf4abbaee046b",
                None,
                None,
                "cf87ba651579c9231db817909e7865e5747bd7abcac0c57ce23cf4abbaee046b",
            )),
        ),
    ];
    for (pid, expect) in cases {
        let file = format!("{FIXTURES}/proc_pid_cgroup/coroot-node-agent/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&file).unwrap();
        let mut containers = 0;
        for line in text.lines() {
            let (_, path) = split_proc_cgroup_line(line).unwrap_or_else(|| panic!("{line}"));
            let got = classify(path);
            // a hierarchy where the process sits at the root says nothing
            if path == "/" {
                assert_eq!(got, None, "{file}: {line}");
                continue;
            }
            match (expect, got) {
                (None, got) => assert_eq!(got, None, "{file}: {line}"),
                (Some((rt, id, pod, qos, name)), Some(c)) => {
                    assert_eq!(c.identity.runtime, *rt, "{file}: {line}");
                    assert_eq!(c.identity.container_id, *id, "{file}: {line}");
                    assert_eq!(c.identity.pod_uid.as_deref(), *pod, "{file}: {line}");
                    assert_eq!(c.identity.qos, *qos, "{file}: {line}");
                    assert_eq!(c.identity.name, *name, "{file}: {line}");
                    // these fixtures have no children below the container
                    assert_eq!(c.cgroup, path, "{file}: {line}");
                    containers += 1;
                }
                (Some(_), None) => panic!("{file}: {line}: not classified"),
            }
        }
        if expect.is_some() {
            assert!(containers > 0, "{file}");
        }
    }
}

/// Every directory below `dir`, as a path relative to `base` with a leading `/`.
fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            let p = e.path();
            out.push(format!("/{}", p.strip_prefix(base).unwrap().display()));
            walk(base, &p, out);
        }
    }
}

#[test]
fn captured_hybrid_tree_through_its_mountinfo() {
    let root = PathBuf::from(format!(
        "{FIXTURES}/captured-linux-6.18-hybrid/sys/fs/cgroup"
    ));
    let mountinfo = std::fs::read_to_string(format!(
        "{FIXTURES}/captured-linux-6.18-hybrid/proc/self/mountinfo"
    ))
    .unwrap();
    // the captured mounts at /sys/fs/cgroup/* rebased onto the fixture tree
    let layout = layout_from_mountinfo(&mountinfo, &root);
    assert_eq!(layout.cpu, Some(root.join("cpu")));
    assert_eq!(layout.cpuacct, Some(root.join("cpuacct")));
    assert_eq!(layout.memory, Some(root.join("memory")));
    assert_eq!(layout.blkio, Some(root.join("blkio")));
    assert_eq!(layout.pids, Some(root.join("pids")));
    assert_eq!(layout.unified, Some(root.join("unified")));
    // the tree holds no unified directory, so probing finds only v1
    let probed = layout_by_probing(&root);
    assert_eq!(probed.unified, None);
    assert_eq!(probed.cpu, layout.cpu);
    assert_eq!(probed.memory, layout.memory);

    let id = "35f0ce87f0997160a8e4c8b66d662371d12daa0b5f3400aac68acde466c27fcd";
    let uid = "3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12";
    for mount in [
        &layout.cpu,
        &layout.cpuacct,
        &layout.memory,
        &layout.blkio,
        &layout.pids,
    ] {
        let mount = mount.as_ref().unwrap();
        let mut dirs = vec![];
        walk(mount, mount, &mut dirs);
        dirs.sort();
        // kubepods, burstable, the pod, the container
        assert_eq!(dirs.len(), 4, "{mount:?}: {dirs:?}");
        let found: Vec<_> = dirs.iter().filter_map(|d| classify(d)).collect();
        assert_eq!(found.len(), 1, "{mount:?}: {dirs:?}");
        let c = &found[0];
        assert_eq!(c.identity.container_id, id);
        assert_eq!(c.identity.pod_uid.as_deref(), Some(uid));
        assert_eq!(c.identity.qos, Some(QosClass::Burstable));
        assert_eq!(c.cgroup, format!("/kubepods/burstable/pod{uid}/{id}"));
        assert!(mount.join(c.cgroup.trim_start_matches('/')).is_dir());
    }
}
