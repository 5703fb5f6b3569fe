//! TLS libraries: finding OpenSSL (libssl, or a binary with its symbols
//! linked in) in processes' maps, and keeping the uprobes of
//! `bpf/http.bpf.c` (`SSL_*_up`) on each such file while a process maps it.
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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use object::{Object, ObjectSymbol};

/// The functions probed at entry, each with its program; every one's
/// return goes to [`RETURN`].
pub const ENTRIES: [(&str, &str); 4] = [
    ("SSL_write", "SSL_write_up"),
    ("SSL_read", "SSL_read_up"),
    ("SSL_write_ex", "SSL_write_ex_up"),
    ("SSL_read_ex", "SSL_read_ex_up"),
];
/// The return probe of every function of [`ENTRIES`].
pub const RETURN: &str = "SSL_ret_up";

/// How soon after a full look at every process another may run (a file
/// whose last known user exited waits that long for its probes to go).
const FULL_SCAN_GAP: Duration = Duration::from_secs(2);
/// Files whose verdict is kept; past it the cache starts over.
const MAX_VERDICTS: usize = 8192;

/// A file as the kernel names it: device (`major << 20 | minor`, as in
/// `/proc/<pid>/maps`) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// An executable mapping of a file, from a line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped<'a> {
    pub file: FileId,
    /// `start-end`: its name under `/proc/<pid>/map_files/`.
    pub range: &'a str,
    pub path: &'a str,
}

/// The executable file mappings of a maps text, one per file.
pub fn parse_maps(text: &str) -> Vec<Mapped<'_>> {
    let mut out: Vec<Mapped<'_>> = Vec::new();
    for line in text.lines() {
        let Some(m) = parse_line(line) else { continue };
        if !out.iter().any(|o| o.file == m.file) {
            out.push(m);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<Mapped<'_>> {
    let mut f = line.split_ascii_whitespace();
    let range = f.next()?;
    let perms = f.next()?;
    let _offset = f.next()?;
    let dev = f.next()?;
    let ino: u64 = f.next()?.parse().ok()?;
    let path = f.next()?;
    if !perms.contains('x') || ino == 0 || !path.starts_with('/') {
        return None;
    }
    if line.ends_with(" (deleted)") {
        return None;
    }
    let (maj, min) = dev.split_once(':')?;
    let maj = u64::from_str_radix(maj, 16).ok()?;
    let min = u64::from_str_radix(min, 16).ok()?;
    Some(Mapped {
        file: FileId {
            dev: (maj << 20) | min,
            ino,
        },
        range,
        path,
    })
}

/// Why a file could not be looked into or probed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is no ELF object: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("attaching {program} to {symbol} of {path}: {reason}")]
    Attach {
        program: &'static str,
        symbol: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The functions of [`ENTRIES`] that the ELF object `data` defines.
pub fn defined_ssl_functions(data: &[u8]) -> Result<Vec<&'static str>, String> {
    let obj = object::File::parse(data).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if sym.is_undefined() || sym.kind() != object::SymbolKind::Text {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if let Some((f, _)) = ENTRIES.iter().find(|(f, _)| *f == name)
            && !found.contains(f)
        {
            found.push(*f);
        }
    }
    // SSL_read and SSL_write at least: a file with a stray one is not TLS
    let both = found.contains(&"SSL_read") && found.contains(&"SSL_write");
    Ok(if both { found } else { Vec::new() })
}

/// Whether a file is worth opening: a libssl by name, or any other file
/// (a binary may link OpenSSL or BoringSSL in) that is not a well-known
/// library without it.
fn worth_a_look(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    if base.starts_with("libssl.so") {
        return true;
    }
    const WITHOUT: [&str; 12] = [
        "libc.so",
        "libm.so",
        "ld-linux",
        "libpthread",
        "libdl.so",
        "librt.so",
        "libcrypto.so",
        "libz.so",
        "libstdc++",
        "libgcc_s",
        "libpython",
        "libnss_",
    ];
    !WITHOUT.iter().any(|w| base.starts_with(w))
}

/// Bytes read at a time from a string table.
const CHUNK: usize = 64 * 1024;

/// The (offset, size) of every string table (`SHT_STRTAB`) of the ELF64
/// little-endian object whose header is `head` and section headers
/// `shdrs`; `None` when it is no such object.
fn string_tables(head: &[u8], shdrs: &[u8]) -> Option<Vec<(u64, u64)>> {
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    const SHT_STRTAB: u32 = 3;
    Some(
        shdrs
            .chunks_exact(64)
            .filter(|sh| u32_at(sh, 4) == Some(SHT_STRTAB))
            .filter_map(|sh| Some((u64_at(sh, 24)?, u64_at(sh, 32)?)))
            .collect(),
    )
}

/// Whether any string table of the ELF file names `SSL_write` (as a whole
/// name or the end of one): read a chunk at a time, so a large binary costs
/// no memory; only a file that passes is parsed whole.
fn names_ssl_write(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 64];
    if file.read_at(&mut head, 0)? < 64 {
        return Ok(false);
    }
    let shoff = u64::from_le_bytes(head[0x28..0x30].try_into().unwrap_or_default());
    let shnum = usize::from(u16::from_le_bytes([head[0x3c], head[0x3d]]));
    let mut shdrs = vec![0u8; shnum * 64];
    if file.read_at(&mut shdrs, shoff)? < shdrs.len() {
        return Ok(false);
    }
    let Some(tables) = string_tables(&head, &shdrs) else {
        return Ok(false);
    };
    const NEEDLE: &[u8] = b"SSL_write\0";
    let finder = memchr::memmem::Finder::new(NEEDLE);
    let mut buf = vec![0u8; CHUNK + NEEDLE.len()];
    for (offset, size) in tables {
        let mut done = 0u64;
        let mut carry = 0usize;
        while done < size {
            let want = (CHUNK as u64).min(size - done) as usize;
            let got = file.read_at(&mut buf[carry..carry + want], offset + done)?;
            if got == 0 {
                break;
            }
            if finder.find(&buf[..carry + got]).is_some() {
                return Ok(true);
            }
            // keep the tail: a name split between two chunks
            let end = carry + got;
            carry = (NEEDLE.len() - 1).min(end);
            buf.copy_within(end - carry..end, 0);
            done += got as u64;
        }
    }
    Ok(false)
}

fn ssl_functions_of(path: &Path) -> Result<Vec<&'static str>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    if !names_ssl_write(&file).map_err(read)? {
        return Ok(Vec::new());
    }
    // SAFETY: a read-only private mapping; a file truncated under it would
    // fault (SIGBUS) — these are executables mapped by running processes,
    // which the kernel keeps from being written (ETXTBSY) while mapped.
    let data = unsafe { memmap2::Mmap::map(&file) }.map_err(read)?;
    defined_ssl_functions(&data).map_err(|reason| TlsError::Elf {
        path: path.to_path_buf(),
        reason,
    })
}

struct Attached {
    /// Its path as the process that led to it maps it.
    path: String,
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Processes seen mapping it (and told to the kernel, `tls_pids`).
    users: HashSet<u32>,
}

/// The TLS libraries found and the probes on them.
pub struct TlsProbes {
    proc_path: PathBuf,
    /// Per file looked at: the TLS functions it defines (empty: none).
    verdicts: HashMap<FileId, Vec<&'static str>>,
    attached: HashMap<FileId, Attached>,
    /// Processes whose exit the kernel reports (`tls_pids`).
    pids: BpfHashMap<MapData, u32, u8>,
    last_full: Option<Instant>,
    full_due: bool,
    /// Files that could not be probed, since start.
    pub attach_errors: u64,
}

impl TlsProbes {
    /// Load the uprobe programs (attached later, per file).
    pub fn new(ebpf: &mut Ebpf, proc_path: PathBuf) -> Result<Self, String> {
        let names = ENTRIES.iter().map(|(_, p)| *p).chain([RETURN]);
        for name in names {
            let prog: &mut UProbe = program(ebpf, name)?;
            prog.load().map_err(|e| format!("{name}: {e}"))?;
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

    /// Look at every process (at start, and when a file lost its last
    /// known user, at most every [`FULL_SCAN_GAP`]); files no process maps
    /// any more lose their probes.
    pub fn tick(&mut self, ebpf: &mut Ebpf) {
        let due = self.full_due && self.last_full.is_none_or(|t| t.elapsed() >= FULL_SCAN_GAP);
        if !due {
            return;
        }
        self.full_due = false;
        self.last_full = Some(Instant::now());
        for a in self.attached.values_mut() {
            a.users.clear();
        }
        for pid in pids_of(&self.proc_path) {
            self.scan_pid(ebpf, pid);
        }
        let unused: Vec<FileId> = self
            .attached
            .iter()
            .filter(|(_, a)| a.users.is_empty())
            .map(|(f, _)| *f)
            .collect();
        for f in unused {
            self.detach(ebpf, f);
        }
    }

    /// A process began to talk: probe the TLS files it maps.
    pub fn talks(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.scan_pid(ebpf, pid);
    }

    /// A process known to map a TLS file exited.
    pub fn exited(&mut self, pid: u32) {
        for a in self.attached.values_mut() {
            if a.users.remove(&pid) && a.users.is_empty() {
                self.full_due = true;
            }
        }
    }

    fn scan_pid(&mut self, ebpf: &mut Ebpf, pid: u32) {
        // the agent never traces itself (self_tgid in the kernel)
        if pid == std::process::id() {
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
            let path = dir.join("map_files").join(m.range);
            if !self.verdicts.contains_key(&m.file) {
                if self.verdicts.len() >= MAX_VERDICTS {
                    self.verdicts.clear();
                }
                let found = ssl_functions_of(&path).unwrap_or_else(|e| {
                    tracing::debug!("TLS: {e}");
                    Vec::new()
                });
                self.verdicts.insert(m.file, found);
            }
            let funcs = self.verdicts.get(&m.file).cloned().unwrap_or_default();
            if funcs.is_empty() {
                continue;
            }
            if let Entry::Vacant(slot) = self.attached.entry(m.file) {
                match attach_file(ebpf, &path, &funcs) {
                    Ok(links) => {
                        tracing::info!(
                            pid,
                            functions = funcs.len(),
                            "TLS uprobes attached to {} (dev {:#x}, inode {})",
                            m.path,
                            m.file.dev,
                            m.file.ino
                        );
                        let users = HashSet::new();
                        slot.insert(Attached {
                            path: m.path.to_string(),
                            links,
                            users,
                        });
                    }
                    Err(e) => {
                        self.attach_errors += 1;
                        // not retried: the verdict says it is done
                        self.verdicts.insert(m.file, Vec::new());
                        tracing::warn!("TLS: {e}");
                        continue;
                    }
                }
            }
            if let Some(a) = self.attached.get_mut(&m.file) {
                a.users.insert(pid);
                uses = true;
            }
        }
        if uses && let Err(e) = self.pids.insert(pid, 1, 0) {
            tracing::debug!(pid, "TLS: tls_pids: {e}");
        }
    }

    fn detach(&mut self, ebpf: &mut Ebpf, file: FileId) {
        let Some(a) = self.attached.remove(&file) else {
            return;
        };
        for (name, link) in a.links {
            if let Ok(prog) = program(ebpf, name)
                && let Err(e) = prog.detach(link)
            {
                tracing::warn!("TLS: detaching {name}: {e}");
            }
        }
        tracing::info!(
            "TLS uprobes detached from {} (dev {:#x}, inode {}): no process maps it",
            a.path,
            file.dev,
            file.ino
        );
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// Entry and return probes on each of `funcs` of the file at `path`; on
/// error none stays.
fn attach_file(
    ebpf: &mut Ebpf,
    path: &Path,
    funcs: &[&'static str],
) -> Result<Vec<(&'static str, UProbeLinkId)>, TlsError> {
    let mut links = Vec::new();
    let mut result = Ok(());
    'all: for (symbol, entry) in ENTRIES.iter().filter(|(f, _)| funcs.contains(f)) {
        for name in [*entry, RETURN] {
            let attached = program(ebpf, name).and_then(|p| {
                p.attach(*symbol, path, UProbeScope::AllProcesses)
                    .map_err(|e| e.to_string())
            });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(reason) => {
                    result = Err(TlsError::Attach {
                        program: name,
                        symbol,
                        path: path.to_path_buf(),
                        reason,
                    });
                    break 'all;
                }
            }
        }
    }
    match result {
        Ok(()) => Ok(links),
        Err(e) => {
            for (name, link) in links {
                if let Ok(p) = program(ebpf, name) {
                    let _ = p.detach(link);
                }
            }
            Err(e)
        }
    }
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

    const MAPS: &str = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 08:01 1311 /usr/bin/curl
55d0c0a28000-55d0c0a5c000 r-xp 00028000 08:01 1311 /usr/bin/curl
7f2a1c000000-7f2a1c021000 rw-p 00000000 00:00 0
7f2a1d200000-7f2a1d25c000 r-xp 00022000 fd:03 524301 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f2a1d25c000-7f2a1d27a000 r-xp 0007e000 fd:03 524301 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f2a1d400000-7f2a1d410000 r-xp 00000000 08:01 99 /tmp/gone.so (deleted)
7ffd1e5f0000-7ffd1e5f2000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn executable_file_mappings_one_per_file() {
        let m = parse_maps(MAPS);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].path, "/usr/bin/curl");
        assert_eq!(m[0].range, "55d0c0a28000-55d0c0a5c000");
        assert_eq!(
            m[0].file,
            FileId {
                dev: 8 << 20 | 1,
                ino: 1311
            }
        );
        assert_eq!(m[1].path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(
            m[1].file,
            FileId {
                dev: 0xfd << 20 | 3,
                ino: 524301
            }
        );
        // malformed lines are skipped, not a panic
        assert!(parse_maps("zz\n1-2 r-xp 0 zz 5 /x\n1-2 r-xp 0 08:01 notanumber /x\n").is_empty());
    }

    #[test]
    fn which_files_are_opened() {
        assert!(worth_a_look("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(worth_a_look("/usr/sbin/nginx"));
        assert!(!worth_a_look("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!worth_a_look("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
    }

    #[test]
    fn defined_functions_only() {
        // this test binary defines none and is an ELF file
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(defined_ssl_functions(&me).unwrap(), Vec::<&str>::new());
        assert!(defined_ssl_functions(b"not an elf").is_err());
        // the system's libssl defines all four (OpenSSL 1.1.1+)
        for lib in [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
        ] {
            if let Ok(data) = std::fs::read(lib) {
                let mut f = defined_ssl_functions(&data).unwrap();
                f.sort();
                assert_eq!(f, ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"]);
            }
        }
        // the string-table look agrees with the parse: it names SSL_write
        // where the parse finds it defined (and where it is only imported)
        for (lib, named) in [
            ("/usr/lib/x86_64-linux-gnu/libssl.so.3", true),
            ("/usr/lib/x86_64-linux-gnu/libcurl.so.4", true),
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", false),
            ("/proc/self/exe", false),
        ] {
            if let Ok(f) = std::fs::File::open(lib) {
                assert_eq!(names_ssl_write(&f).unwrap(), named, "{lib}");
            }
        }
        // curl imports them through libcurl: undefined there, so not probed
        if let Ok(data) = std::fs::read("/usr/lib/x86_64-linux-gnu/libcurl.so.4") {
            assert!(defined_ssl_functions(&data).unwrap().is_empty());
        }
    }
}
