//! TLS libraries: finding OpenSSL (libssl, or a binary with its symbols
//! linked in) and Go's `crypto/tls` in processes' maps, and keeping the
//! uprobes of `bpf/http.bpf.c` (`*_up`) on each such file while a process
//! maps it.
//!
//! A file is named by (device, inode), as the kernel keys uprobes: each
//! container image has its own copy of libssl, and one attach covers every
//! process that maps that copy. Processes are looked at when the agent
//! starts (all of them) and when one begins to listen or connect over TCP
//! (the kernel tells: [`Control::Talks`](super::event::Control)), by which
//! time its TLS library is mapped. A file's probes go once no process that
//! maps it is left: the kernel reports the exit of every process found
//! mapping one, and when a file's last known user is gone every process is
//! looked at again to be sure.

pub mod elf;
pub mod maps;

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};

use elf::{Probes, SSL_ENTRIES, SSL_RETURN};
pub use maps::FileId;
use maps::{parse_maps, worth_a_look};

/// Go's programs: entries of `(*Conn).Write` and `Read`, and their returns.
const GO_WRITE_UP: &str = "go_tls_write_up";
const GO_READ_UP: &str = "go_tls_read_up";
const GO_RET_UP: &str = "go_tls_ret_up";

/// How soon after a full look at every process another may run (one
/// reads every process's maps).
const FULL_SCAN_GAP: Duration = Duration::from_secs(5);
/// How long a file no process maps keeps its probes: a short-lived client
/// run again and again (a curl in a loop) finds them still on.
const GRACE: Duration = Duration::from_secs(10);
/// Files whose verdict is kept; past it the cache starts over.
const MAX_VERDICTS: usize = 8192;
/// Files probed at once, at most: each costs the kernel a perf event per
/// probe, and a pod could map any number of copies of a library (or of
/// files that merely define OpenSSL's names). Past it a file is counted in
/// `attach_errors` and not probed.
pub const MAX_FILES: usize = 256;

/// Where a program goes in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Symbol(&'static str),
    Offset(u64),
}

/// Every (program, place) of a file's probes.
fn points(p: &Probes) -> Vec<(&'static str, Point)> {
    match p {
        Probes::OpenSsl(funcs) => SSL_ENTRIES
            .iter()
            .filter(|(f, _)| funcs.contains(f))
            .flat_map(|(f, entry)| [(*entry, Point::Symbol(f)), (SSL_RETURN, Point::Symbol(f))])
            .collect(),
        Probes::Go { write, read, rets } => [
            (GO_WRITE_UP, Point::Offset(*write)),
            (GO_READ_UP, Point::Offset(*read)),
        ]
        .into_iter()
        .chain(rets.iter().map(|r| (GO_RET_UP, Point::Offset(*r))))
        .collect(),
    }
}

/// A file could not be probed.
#[derive(Debug, thiserror::Error)]
#[error("attaching {program} at {point:?} of {path}: {reason}")]
pub struct AttachError {
    program: &'static str,
    point: Point,
    path: PathBuf,
    reason: String,
}

impl AttachError {
    /// For want of privilege (EACCES, EPERM), not because of the file.
    fn refused(&self) -> bool {
        self.reason.contains("Permission denied") || self.reason.contains("Operation not permitted")
    }
}

/// How putting a file's probes on went.
enum Probed {
    Yes,
    No,
    /// For want of privilege: no file will do.
    Refused,
}

struct Attached {
    /// Its path as the process that led to it maps it.
    path: String,
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Processes seen mapping it (and told to the kernel, `tls_pids`).
    users: HashSet<u32>,
    /// Since when no process has been seen mapping it.
    lonely_since: Option<Instant>,
}

/// The TLS libraries found and the probes on them.
pub struct TlsProbes {
    proc_path: PathBuf,
    /// Per file looked at: what it takes (`None`: no TLS, or it failed).
    verdicts: HashMap<FileId, Option<Probes>>,
    attached: HashMap<FileId, Attached>,
    /// Processes whose exit the kernel reports (`tls_pids`).
    pids: BpfHashMap<MapData, u32, u8>,
    last_full: Option<Instant>,
    full_due: bool,
    /// Files that could not be probed, since start.
    pub attach_errors: u64,
    /// The kernel refused uprobes for want of privilege: no file is looked
    /// at any more.
    refused: bool,
}

impl TlsProbes {
    /// Load the uprobe programs (attached later, per file).
    pub fn new(ebpf: &mut Ebpf, proc_path: PathBuf) -> Result<Self, String> {
        let names = SSL_ENTRIES.iter().map(|(_, p)| *p);
        for name in names.chain([SSL_RETURN, GO_WRITE_UP, GO_READ_UP, GO_RET_UP]) {
            program(ebpf, name)?
                .load()
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let map = ebpf
            .take_map("tls_pids")
            .ok_or_else(|| "map tls_pids missing".to_string())?;
        let pids = BpfHashMap::try_from(map).map_err(|e| format!("tls_pids: {e}"))?;
        Ok(TlsProbes {
            proc_path,
            verdicts: HashMap::new(),
            attached: HashMap::new(),
            pids,
            last_full: None,
            full_due: true,
            attach_errors: 0,
            refused: false,
        })
    }

    /// Files with probes on them.
    pub fn libraries(&self) -> usize {
        self.attached.len()
    }

    /// The files with probes on them, and the path each was found at.
    pub fn files(&self) -> Vec<(FileId, String)> {
        self.attached
            .iter()
            .map(|(f, a)| (*f, a.path.clone()))
            .collect()
    }

    /// Look at every process: at start, and once a file has had no known
    /// user for [`GRACE`] (at most every [`FULL_SCAN_GAP`]); a file that
    /// no process maps then loses its probes. A short-lived client that
    /// comes back within the grace (a health check) makes it a user again,
    /// and costs no such look.
    pub fn tick(&mut self, ebpf: &mut Ebpf) {
        let now = Instant::now();
        let lonely = self.attached.values().any(|a| {
            a.users.is_empty()
                && a.lonely_since
                    .is_some_and(|t| now.duration_since(t) >= GRACE)
        });
        let gap = self
            .last_full
            .is_none_or(|t| now.duration_since(t) >= FULL_SCAN_GAP);
        if !(self.full_due || lonely) || !gap {
            return;
        }
        self.full_due = false;
        self.last_full = Some(now);
        for a in self.attached.values_mut() {
            a.users.clear();
        }
        let pids = pids_of(&self.proc_path);
        for pid in &pids {
            self.scan_pid(ebpf, *pid);
        }
        tracing::debug!(
            processes = pids.len(),
            took_us = now.elapsed().as_micros() as u64,
            "TLS: every process looked at"
        );
        let mut unused = Vec::new();
        for (f, a) in &mut self.attached {
            if !a.users.is_empty() {
                a.lonely_since = None;
                continue;
            }
            // a file no process was seen mapping at all starts its grace now
            let since = *a.lonely_since.get_or_insert(now);
            if now.duration_since(since) >= GRACE {
                unused.push(*f);
            }
        }
        for f in unused {
            self.detach(ebpf, f);
        }
    }

    /// A process began to talk: probe the TLS files it maps.
    pub fn talks(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.scan_pid(ebpf, pid);
    }

    /// A process known to map a TLS file exited: a file left with no known
    /// user starts its grace.
    pub fn exited(&mut self, pid: u32) {
        let now = Instant::now();
        for a in self.attached.values_mut() {
            if a.users.remove(&pid) && a.users.is_empty() {
                a.lonely_since.get_or_insert(now);
            }
        }
    }

    fn scan_pid(&mut self, ebpf: &mut Ebpf, pid: u32) {
        // the agent never traces itself (self_tgid in the kernel)
        if pid == std::process::id() || self.refused {
            return;
        }
        let dir = self.proc_path.join(pid.to_string());
        // a process gone already, or a kernel thread: nothing mapped
        let Ok(text) = std::fs::read_to_string(dir.join("maps")) else {
            return;
        };
        let mut uses = false;
        for m in parse_maps(&text) {
            if !worth_a_look(m.path) {
                continue;
            }
            // a file probed already, or known to hold no TLS: not opened
            // again (a full look at every process stays cheap)
            if let Some(a) = self.attached.get_mut(&m.file) {
                a.users.insert(pid);
                a.lonely_since = None;
                uses = true;
                continue;
            }
            if matches!(self.verdicts.get(&m.file), Some(None)) {
                continue;
            }
            // held open, so a process that exits meanwhile takes nothing
            // along
            let Some((file, path)) = open_mapped(&dir, &m) else {
                continue;
            };
            let Some(probes) = self.verdict(m.file, &file, &path, m.shared()) else {
                continue;
            };
            match self.probe(ebpf, &m, &file, &probes) {
                Probed::Yes => {
                    tracing::info!(
                        pid,
                        "TLS uprobes attached to {} (dev {:#x}, inode {})",
                        m.path,
                        m.file.dev,
                        m.file.ino
                    );
                    if let Some(a) = self.attached.get_mut(&m.file) {
                        a.users.insert(pid);
                        uses = true;
                    }
                }
                Probed::No => {}
                Probed::Refused => return,
            }
        }
        if uses && let Err(e) = self.pids.insert(pid, 1, 0) {
            tracing::debug!(pid, "TLS: tls_pids: {e}");
        }
    }

    /// Put the probes of `probes` on the file of mapping `m`, open as
    /// `file`, within [`MAX_FILES`].
    fn probe(
        &mut self,
        ebpf: &mut Ebpf,
        m: &maps::Mapped<'_>,
        file: &std::fs::File,
        probes: &Probes,
    ) -> Probed {
        if self.attached.len() >= MAX_FILES {
            self.attach_errors += 1;
            self.verdicts.insert(m.file, None);
            tracing::warn!("TLS: {} not probed: {MAX_FILES} files are already", m.path);
            return Probed::No;
        }
        let held = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        match attach_file(ebpf, &held, probes) {
            Ok(links) => {
                let a = Attached {
                    path: m.path.to_string(),
                    links,
                    users: HashSet::new(),
                    lonely_since: None,
                };
                self.attached.insert(m.file, a);
                Probed::Yes
            }
            Err(e) if e.refused() => {
                self.attach_errors += 1;
                self.refused = true;
                tracing::error!(
                    "eBPF TLS: the kernel refuses uprobes to this process ({e}); \
                     they need CAP_SYS_ADMIN here: HTTPS is not traced \
                     (--ebpf-tls=false stops trying)"
                );
                Probed::Refused
            }
            Err(e) => {
                self.attach_errors += 1;
                // not tried again: the verdict says so
                self.verdicts.insert(m.file, None);
                tracing::warn!("TLS: {e}");
                Probed::No
            }
        }
    }

    /// What file takes, looked at once.
    fn verdict(
        &mut self,
        id: FileId,
        file: &std::fs::File,
        path: &Path,
        shared: bool,
    ) -> Option<Probes> {
        if let Some(v) = self.verdicts.get(&id) {
            return v.clone();
        }
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.clear();
        }
        let started = Instant::now();
        let found = elf::probes_of(file, path, shared);
        tracing::trace!(
            took_us = started.elapsed().as_micros() as u64,
            "TLS: {} looked at",
            path.display()
        );
        match found {
            Ok(v) => {
                self.verdicts.insert(id, v.clone());
                v
            }
            // unreadable now (the process may have just left): looked at
            // again the next time a process maps it
            Err(e @ elf::ElfError::Read { .. }) => {
                tracing::debug!("TLS: {e}");
                None
            }
            Err(e) => {
                tracing::debug!("TLS: {e}");
                self.verdicts.insert(id, None);
                None
            }
        }
    }

    fn detach(&mut self, ebpf: &mut Ebpf, file: FileId) {
        let Some(a) = self.attached.remove(&file) else {
            return;
        };
        detach_all(ebpf, a.links);
        tracing::info!(
            "TLS uprobes detached from {} (dev {:#x}, inode {}): no process maps it",
            a.path,
            file.dev,
            file.ino
        );
    }
}

/// The file of mapping `m` of the process at `dir`, whatever mount
/// namespace it lives in: the very file mapped through `map_files/`
/// (CAP_SYS_ADMIN), else its path under the process's root (what
/// CAP_SYS_PTRACE allows: the DaemonSet grants no CAP_SYS_ADMIN).
fn open_mapped(dir: &Path, m: &maps::Mapped<'_>) -> Option<(std::fs::File, PathBuf)> {
    let exact = dir.join("map_files").join(m.map_file());
    let rooted = dir.join("root").join(m.path.trim_start_matches('/'));
    [exact, rooted]
        .into_iter()
        .find_map(|p| Some((std::fs::File::open(&p).ok()?, p)))
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

fn detach_all(ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
    for (name, link) in links {
        if let Ok(p) = program(ebpf, name)
            && let Err(e) = p.detach(link)
        {
            tracing::warn!("TLS: detaching {name}: {e}");
        }
    }
}

/// Every probe of `probes` on the file at `path`; on error none stays.
fn attach_file(
    ebpf: &mut Ebpf,
    path: &Path,
    probes: &Probes,
) -> Result<Vec<(&'static str, UProbeLinkId)>, AttachError> {
    let mut links = Vec::new();
    for (name, point) in points(probes) {
        let at = match point {
            Point::Symbol(s) => UProbeAttachLocation::Symbol(s),
            Point::Offset(o) => UProbeAttachLocation::AbsoluteOffset(o),
        };
        let attached = program(ebpf, name).and_then(|p| {
            p.attach(at, path, UProbeScope::AllProcesses)
                .map_err(|e| super::loader::chain(&e))
        });
        match attached {
            Ok(link) => links.push((name, link)),
            Err(reason) => {
                detach_all(ebpf, links);
                return Err(AttachError {
                    program: name,
                    point,
                    path: path.to_path_buf(),
                    reason,
                });
            }
        }
    }
    Ok(links)
}

/// The processes of a `/proc`.
fn pids_of(proc_path: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc_path) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_gets_its_entry_and_return() {
        let ssl = points(&Probes::OpenSsl(vec!["SSL_read", "SSL_write"]));
        assert_eq!(
            ssl,
            [
                ("SSL_write_up", Point::Symbol("SSL_write")),
                ("SSL_ret_up", Point::Symbol("SSL_write")),
                ("SSL_read_up", Point::Symbol("SSL_read")),
                ("SSL_ret_up", Point::Symbol("SSL_read")),
            ]
        );
        let go = points(&Probes::Go {
            write: 0x100,
            read: 0x200,
            rets: vec![0x150, 0x160, 0x280],
        });
        assert_eq!(go.len(), 5);
        assert_eq!(go[0], ("go_tls_write_up", Point::Offset(0x100)));
        assert_eq!(go[1], ("go_tls_read_up", Point::Offset(0x200)));
        assert!(go[2..].iter().all(|(p, _)| *p == "go_tls_ret_up"));
    }
}
