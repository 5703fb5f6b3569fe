//! `/proc/<pid>/maps`: the files a process maps executable (pure).

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
    /// `start-end` as maps prints it (zero-padded to 8 digits).
    pub range: &'a str,
    pub path: &'a str,
}

impl Mapped<'_> {
    /// A shared library by its name (`lib*.so`, `*.so.3`), not an
    /// executable.
    pub fn shared(&self) -> bool {
        let base = self.path.rsplit('/').next().unwrap_or(self.path);
        base.ends_with(".so") || base.contains(".so.")
    }

    /// Its name under `/proc/<pid>/map_files/`: the range without maps'
    /// zero padding (`00400000-00665000` is `400000-665000` there).
    pub fn map_file(&self) -> String {
        let (start, end) = self.range.split_once('-').unwrap_or((self.range, ""));
        let bare = |h: &str| {
            let t = h.trim_start_matches('0');
            if t.is_empty() {
                "0".to_string()
            } else {
                t.to_string()
            }
        };
        format!("{}-{}", bare(start), bare(end))
    }
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
    // hex-hex (it names a file under map_files/: nothing else may pass)
    let (start, end) = range.split_once('-')?;
    let hex = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(start) || !hex(end) {
        return None;
    }
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

/// Whether a file is worth opening: a libssl by name, or any other file
/// (a binary may link OpenSSL, BoringSSL or Go's crypto/tls in) that is not
/// a well-known library without them.
pub fn worth_a_look(path: &str) -> bool {
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
        // a range that is not hex-hex (found by fuzz target tls_maps)
        for bad in ["1-2-3", "../x-1", "1-", "-1", "g-1"] {
            let line = format!("{bad} r-xp 0 08:01 5 /x\n");
            assert!(parse_maps(&line).is_empty(), "{bad}");
        }
    }

    #[test]
    fn which_files_are_opened() {
        assert!(worth_a_look("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(worth_a_look("/usr/sbin/nginx"));
        assert!(!worth_a_look("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!worth_a_look("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
    }
}
