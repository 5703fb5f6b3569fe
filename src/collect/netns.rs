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
