//! A pod's network counters, read through one of its processes:
//! `/proc/<pid>/net/dev` shows the network namespace of `<pid>` (the
//! DaemonSet runs with `hostPID`, so pod processes are visible).

use std::path::Path;

use super::procfs::net_dev::{self, IfaceCounters};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: super::procfs::ParseError,
    },
}

/// The network namespace of `pid` as the kernel names it (`net:[4026531840]`).
pub fn netns_id(proc: &Path, pid: u32) -> Option<String> {
    std::fs::read_link(proc.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Counters of the namespace of `pid`, all interfaces but `lo`.
/// `Ok(None)` when the process is gone (it exited between listing and
/// reading) or shares `host_netns` (a host-network pod reports nothing: its
/// traffic is the node's).
pub fn pod_net(
    proc: &Path,
    pid: u32,
    host_netns: Option<&str>,
) -> Result<Option<IfaceCounters>, NetnsError> {
    if let Some(host) = host_netns {
        match netns_id(proc, pid) {
            None => return Ok(None),
            Some(ns) if ns == host => return Ok(None),
            Some(_) => {}
        }
    }
    let path = proc.join(pid.to_string()).join("net/dev");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(3) => return Ok(None), // ESRCH: exited
        Err(source) => {
            return Err(NetnsError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    net_dev::sum_but_lo(&text)
        .map(Some)
        .map_err(|source| NetnsError::Parse {
            path: path.display().to_string(),
            source,
        })
}

/// Whether a `/proc/<pid>/cgroup` text places the process in pod `uid`:
/// its cgroup path names the pod (`pod<uid>` under cgroupfs, `pod<uid>`
/// with `_` for `-` under systemd), on any line (v1 lists one per
/// hierarchy). Paths seen through a cgroup namespace (`/../..`) still do.
pub fn cgroup_names_pod(cgroup: &str, uid: &str) -> bool {
    let dashed = format!("pod{uid}");
    let underscored = dashed.replace('-', "_");
    cgroup.lines().any(|l| {
        let path = l.splitn(3, ':').nth(2).unwrap_or("");
        path.contains(&dashed) || path.contains(&underscored)
    })
}

/// Whether `pid` is (still) a process of pod `uid`. False when it exited,
/// or when its number now belongs to a process of another pod (pid reuse).
pub fn pid_in_pod(proc: &Path, pid: u32, uid: &str) -> bool {
    std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup"))
        .is_ok_and(|text| cgroup_names_pod(&text, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_lines_name_their_pod() {
        let uid = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let systemd = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_00000000abcd.slice/cri-containerd-1f.scope\n";
        let cgroupfs = "12:memory:/kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-00000000abcd/1f\n11:cpu,cpuacct:/kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-00000000abcd/1f\n";
        let namespaced = "0::/../../kubepods-besteffort-pod0a1b2c3d_0000_4000_8000_00000000abcd.slice/crio-1f.scope\n";
        for text in [systemd, cgroupfs, namespaced] {
            assert!(cgroup_names_pod(text, uid), "{text}");
        }
        let other =
            "0::/kubepods.slice/kubepods-pod0a1b2c3d_0000_4000_8000_00000000ffff.slice/x.scope\n";
        assert!(!cgroup_names_pod(other, uid));
        assert!(!cgroup_names_pod("0::/system.slice/sshd.service\n", uid));
        assert!(!cgroup_names_pod("", uid));
    }
}
