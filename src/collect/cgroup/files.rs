//! Reading cgroup files cheaply, again and again.
//!
//! Opening, reading and closing a small cgroup file costs ~8.5 µs of CPU;
//! re-reading it through a descriptor kept open (`pread` at offset 0, which
//! makes the kernel generate the text afresh) costs ~2–6 µs. So each
//! container keeps its files open across cycles, within an [`FdBudget`]
//! derived from `RLIMIT_NOFILE` (raised to its hard limit at start by
//! [`raise_nofile_limit`]); past the budget, files are opened and closed per
//! read, which is slower but still correct.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Twice the kernel's pid-list lifetime (one second), for timer slack.
pub const V1_PID_LIST_STALE: Duration = Duration::from_secs(2);

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit
/// in force afterwards (unchanged on failure).
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// How many descriptors the cgroup reader may keep open.
#[derive(Debug)]
pub struct FdBudget {
    open: AtomicUsize,
    max: AtomicUsize,
}

impl FdBudget {
    /// A budget of `max` kept-open descriptors.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(FdBudget {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        })
    }

    /// From a soft `RLIMIT_NOFILE`: all but a reserve (an eighth, at least
    /// 256) for sockets, the delivery client and the rest of the agent.
    pub fn from_nofile(soft: u64) -> Arc<Self> {
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        let reserve = (soft / 8).max(256);
        Self::new(soft.saturating_sub(reserve))
    }

    fn try_acquire(&self) -> bool {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The process ran out of descriptors: keep no more than are open now.
    fn exhausted(&self) {
        self.max
            .store(self.open.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Descriptors currently kept open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One cgroup file, kept open between reads while the budget allows.
#[derive(Debug)]
pub struct CgFile {
    /// The cgroup directory (shared by a container's files of one
    /// controller) and the file name: no path kept per file.
    dir: Arc<Path>,
    name: &'static str,
    fd: Option<File>,
    /// Reads through the kept descriptor closer together than this may be
    /// stale, so they open the file afresh (see [`CgFile::v1_pid_list`]).
    stale_within: Option<Duration>,
    last_read: Option<Instant>,
    budget: Arc<FdBudget>,
}

fn is_gone(e: &io::Error) -> bool {
    // ENOENT: not there (controller off, cgroup removed); ENODEV: read
    // through a descriptor of a removed cgroup; ESRCH: likewise on some files
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ESRCH))
}

impl CgFile {
    pub fn new(dir: Arc<Path>, name: &'static str, budget: Arc<FdBudget>) -> Self {
        CgFile {
            dir,
            name,
            fd: None,
            stale_within: None,
            last_read: None,
            budget,
        }
    }

    /// cgroup v1's `cgroup.procs` (or `tasks`): a kept descriptor is
    /// answered from a pid list the kernel caches after each read and frees
    /// a second later (`CGROUP_PIDLIST_DESTROY_DELAY`), so a re-read within
    /// that second does not see a process leave; an open afresh reloads the
    /// list. Reads more than [`V1_PID_LIST_STALE`] apart (every cycle at
    /// the usual intervals) keep the cheap `pread`; closer ones reopen.
    pub fn v1_pid_list(dir: Arc<Path>, name: &'static str, budget: Arc<FdBudget>) -> Self {
        let mut f = CgFile::new(dir, name, budget);
        f.stale_within = Some(V1_PID_LIST_STALE);
        f
    }

    /// The file's full path (built on demand: errors, opening).
    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    /// Read the whole file into `buf` (reused; grown when a file does not
    /// fit). `Ok(None)` when the file is not there (or its cgroup was
    /// removed); invalid UTF-8 is `InvalidData`.
    pub fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<Option<&'b str>> {
        if buf.len() < 4096 {
            buf.resize(4096, 0);
        }
        let n = match self.read_raw(buf) {
            Ok(n) => n,
            Err(e) if is_gone(&e) => {
                self.close();
                return Ok(None);
            }
            Err(e) => {
                self.close();
                return Err(e);
            }
        };
        std::str::from_utf8(&buf[..n])
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn read_raw(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if self.may_be_stale() {
            self.close();
        }
        if let Some(f) = &self.fd {
            return read_all_at(f, buf);
        }
        let f = match File::open(self.path()) {
            Ok(f) => f,
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                    self.budget.exhausted();
                }
                return Err(e);
            }
        };
        let n = read_all_at(&f, buf)?;
        if self.budget.try_acquire() {
            self.fd = Some(f); // kept for the next cycle
        }
        Ok(n)
    }

    /// Whether a read through the kept descriptor now could be answered
    /// from a kernel cache of the previous one; marks this read's time.
    fn may_be_stale(&mut self) -> bool {
        let Some(window) = self.stale_within else {
            return false;
        };
        let now = Instant::now();
        let last = self.last_read.replace(now);
        last.is_some_and(|t| now.duration_since(t) < window)
    }

    /// Whether the descriptor is kept open between reads.
    pub fn is_kept(&self) -> bool {
        self.fd.is_some()
    }

    fn close(&mut self) {
        if self.fd.take().is_some() {
            self.budget.release();
        }
    }
}

impl Drop for CgFile {
    fn drop(&mut self) {
        self.close();
    }
}

/// `pread` from offset 0 until the text is complete. Cgroup files produce
/// their whole text in one read when the buffer is large enough, and so do
/// regular files (fixture trees), so a read that does not fill the buffer is
/// the end; a full buffer is grown and the read continues.
fn read_all_at(f: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut n = 0;
    loop {
        let got = f.read_at(&mut buf[n..], n as u64)?;
        n += got;
        if got == 0 || n < buf.len() {
            return Ok(n);
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
    }
}

/// A directory kept open so its link count can be read with `fstat`
/// (no path walk), within the same budget as the files.
#[derive(Debug)]
pub struct KeptDir {
    file: File,
    budget: Arc<FdBudget>,
}

impl KeptDir {
    /// `None` when the budget is spent or the directory cannot be opened.
    pub fn open(path: &Path, budget: &Arc<FdBudget>) -> Option<KeptDir> {
        if !budget.try_acquire() {
            return None;
        }
        match File::open(path) {
            Ok(file) => Some(KeptDir {
                file,
                budget: budget.clone(),
            }),
            Err(_) => {
                budget.release();
                None
            }
        }
    }

    /// The directory's link count (2 + subdirectories on cgroupfs).
    pub fn nlink(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map(|m| m.nlink())
    }
}

impl Drop for KeptDir {
    fn drop(&mut self) {
        self.budget.release();
    }
}
