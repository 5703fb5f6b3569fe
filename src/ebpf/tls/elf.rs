//! What an ELF file holds to probe: OpenSSL's functions by symbol, or Go's
//! `crypto/tls` functions with their return instructions. A file is first
//! looked at through its string tables, a chunk at a time (a large binary
//! costs no memory); only one that names a TLS function is parsed whole.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol};

/// OpenSSL's functions probed at entry, each with its program; every one's
/// return goes to [`SSL_RETURN`].
pub const SSL_ENTRIES: [(&str, &str); 4] = [
    ("SSL_write", "SSL_write_up"),
    ("SSL_read", "SSL_read_up"),
    ("SSL_write_ex", "SSL_write_ex_up"),
    ("SSL_read_ex", "SSL_read_ex_up"),
];
/// The return probe of every function of [`SSL_ENTRIES`].
pub const SSL_RETURN: &str = "SSL_ret_up";

const GO_WRITE: &str = "crypto/tls.(*Conn).Write";
const GO_READ: &str = "crypto/tls.(*Conn).Read";

/// What a file holds that the TLS path probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probes {
    /// OpenSSL (or a relative with its ABI): the functions of
    /// [`SSL_ENTRIES`] it defines, by symbol.
    OpenSsl(Vec<&'static str>),
    /// Go 1.18+'s crypto/tls: file offsets of `(*Conn).Write` and `Read`,
    /// and of every return instruction of `Read` (a write is reported at
    /// its entry, where its data is).
    Go {
        write: u64,
        read: u64,
        rets: Vec<u64>,
    },
}

/// Why a file could not be looked into.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// The probes `file` (opened at `path`) takes, `None` when it has no TLS.
/// Of a shared library only the exported names are looked at (`.dynstr`:
/// OpenSSL's are exported); of an executable every string table (a static
/// OpenSSL's or Go's names are in `.strtab`).
pub fn probes_of(file: &File, path: &Path, shared: bool) -> Result<Option<Probes>, ElfError> {
    let read = |source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    };
    let needles: [&[u8]; 2] = [b"SSL_write\0", b"crypto/tls.(*Conn).Write\0"];
    let [ssl, go] = names_in_string_tables(file, needles, shared).map_err(read)?;
    if !ssl && !go {
        return Ok(None);
    }
    // SAFETY: a read-only private mapping; a file truncated under it would
    // fault (SIGBUS), but these are executables mapped by running
    // processes, which the kernel keeps from being written (ETXTBSY).
    let data = unsafe { memmap2::Mmap::map(file) }.map_err(read)?;
    let parse = |reason| ElfError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    if ssl {
        let funcs = defined_ssl_functions(&data).map_err(parse)?;
        if !funcs.is_empty() {
            return Ok(Some(Probes::OpenSsl(funcs)));
        }
    }
    if go {
        return go_probes(&data).map_err(parse);
    }
    Ok(None)
}

/// Bytes read at a time from a string table.
const CHUNK: usize = 64 * 1024;
/// String-table bytes looked at per file at most (a binary's are a few MB;
/// a crafted file could claim any size).
const MAX_STRINGS: u64 = 256 * 1024 * 1024;
/// Section headers read at most (a real file has tens).
const MAX_SECTIONS: usize = 4096;
/// Return instructions probed in Go's `Read` at most (Go 1.19 compiles it
/// with 7): a file with more is not probed.
const MAX_RETS: usize = 64;

/// The (offset, size) of every string table (`SHT_STRTAB`) of the ELF64
/// little-endian object whose header is `head` and section headers
/// `shdrs`; `None` when it is no such object.
pub fn string_tables(head: &[u8], shdrs: &[u8]) -> Option<Vec<(u64, u64)>> {
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

/// The (offset, size) of the string table of the dynamic symbols
/// (`SHT_DYNSYM`'s `sh_link`), as [`string_tables`] reads them.
pub fn dynamic_string_table(head: &[u8], shdrs: &[u8]) -> Option<Vec<(u64, u64)>> {
    string_tables(head, shdrs)?;
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    const SHT_DYNSYM: u32 = 11;
    let link = shdrs
        .chunks_exact(64)
        .find(|sh| u32_at(sh, 4) == Some(SHT_DYNSYM))
        .and_then(|sh| u32_at(sh, 40))?;
    let sh = shdrs.chunks_exact(64).nth(usize::try_from(link).ok()?)?;
    Some(vec![(u64_at(sh, 24)?, u64_at(sh, 32)?)])
}

/// Which of `needles` a string table of the ELF file holds (a needle ends
/// in NUL: a whole name, or the end of one); with `dynamic_only`, the
/// dynamic symbols' table only.
pub fn names_in_string_tables<const N: usize>(
    file: &File,
    needles: [&[u8]; N],
    dynamic_only: bool,
) -> std::io::Result<[bool; N]> {
    let mut found = [false; N];
    let mut head = [0u8; 64];
    if file.read_at(&mut head, 0)? < 64 {
        return Ok(found);
    }
    let shoff = u64::from_le_bytes(head[0x28..0x30].try_into().unwrap_or_default());
    let shnum = usize::from(u16::from_le_bytes([head[0x3c], head[0x3d]])).min(MAX_SECTIONS);
    let mut shdrs = vec![0u8; shnum * 64];
    if file.read_at(&mut shdrs, shoff)? < shdrs.len() {
        return Ok(found);
    }
    let tables = if dynamic_only {
        dynamic_string_table(&head, &shdrs)
    } else {
        string_tables(&head, &shdrs)
    };
    let Some(tables) = tables else {
        return Ok(found);
    };
    let finders: Vec<_> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let keep = needles.iter().map(|n| n.len()).max().unwrap_or(1) - 1;
    let mut buf = vec![0u8; CHUNK + keep];
    let mut budget = MAX_STRINGS;
    for (offset, size) in tables {
        let size = size.min(budget);
        budget -= size;
        let (mut done, mut carry) = (0u64, 0usize);
        while done < size {
            let want = (CHUNK as u64).min(size - done) as usize;
            let got = file.read_at(&mut buf[carry..carry + want], offset + done)?;
            if got == 0 {
                break;
            }
            let end = carry + got;
            for (f, hit) in finders.iter().zip(found.iter_mut()) {
                *hit |= f.find(&buf[..end]).is_some();
            }
            if found.iter().all(|h| *h) {
                return Ok(found);
            }
            // keep the tail: a name split between two chunks
            carry = keep.min(end);
            buf.copy_within(end - carry..end, 0);
            done += got as u64;
        }
    }
    Ok(found)
}

/// The functions of [`SSL_ENTRIES`] that the ELF object `data` defines
/// (SSL_read and SSL_write at least, else none).
pub fn defined_ssl_functions(data: &[u8]) -> Result<Vec<&'static str>, String> {
    let obj = object::File::parse(data).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if sym.is_undefined() || sym.kind() != object::SymbolKind::Text {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if let Some((f, _)) = SSL_ENTRIES.iter().find(|(f, _)| *f == name)
            && !found.contains(f)
        {
            found.push(*f);
        }
    }
    let both = found.contains(&"SSL_read") && found.contains(&"SSL_write");
    Ok(if both { found } else { Vec::new() })
}

/// Go's version from a `.go.buildinfo` section: `(major, minor)`. Only the
/// inline form of Go 1.18+ is read (older binaries are not probed).
pub fn go_version(buildinfo: &[u8]) -> Option<(u32, u32)> {
    if buildinfo.get(..14)? != b"\xff Go buildinf:" || buildinfo.get(15)? & 2 == 0 {
        return None;
    }
    let rest = buildinfo.get(32..)?;
    // a uvarint length, then the string ("go1.19.8")
    let (mut len, mut used) = (0usize, 0usize);
    for (i, b) in rest.iter().take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        used = i + 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let v = std::str::from_utf8(rest.get(used..used + len)?).ok()?;
    let mut parts = v.strip_prefix("go")?.split(['.', 'r', 'b', '-', ' ']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Go's crypto/tls in the ELF object `data` (Go 1.18+, amd64, with its
/// symbol table): `None` when it has none, or is older.
pub fn go_probes(data: &[u8]) -> Result<Option<Probes>, String> {
    let obj = object::File::parse(data).map_err(|e| e.to_string())?;
    let version = obj
        .section_by_name(".go.buildinfo")
        .and_then(|s| s.data().ok())
        .and_then(go_version);
    if version.is_none_or(|v| v < (1, 18)) {
        return Ok(None);
    }
    let func = |name: &str| {
        obj.symbols()
            .find(|s| s.name() == Ok(name) && !s.is_undefined())
            .map(|s| (s.address(), s.size()))
    };
    let (Some(write), Some(read)) = (func(GO_WRITE), func(GO_READ)) else {
        return Ok(None);
    };
    let (write, _) = code_at(&obj, write.0, write.1)?;
    let (read_at, code) = code_at(&obj, read.0, read.1)?;
    let rets: Vec<u64> = ret_offsets(code, read.0)
        .into_iter()
        .map(|r| read_at + r)
        .collect();
    if rets.is_empty() || rets.len() > MAX_RETS {
        return Err(format!("{} return instructions in {GO_READ}", rets.len()));
    }
    Ok(Some(Probes::Go {
        write,
        read: read_at,
        rets,
    }))
}

/// The file offset and the bytes of the function at `addr`, `size` long.
fn code_at<'d>(obj: &object::File<'d>, addr: u64, size: u64) -> Result<(u64, &'d [u8]), String> {
    let section = obj
        .sections()
        .find(|s| {
            let end = s.address().checked_add(s.size());
            s.address() <= addr && addr.checked_add(size).is_some_and(|e| Some(e) <= end)
        })
        .ok_or_else(|| format!("no section holds {addr:#x}"))?;
    let (file_start, _) = section
        .file_range()
        .ok_or_else(|| format!("the section of {addr:#x} is not in the file"))?;
    let data = section.data().map_err(|e| e.to_string())?;
    let at = usize::try_from(addr - section.address()).map_err(|e| e.to_string())?;
    let len = usize::try_from(size).map_err(|e| e.to_string())?;
    let code = data
        .get(at..at + len)
        .ok_or_else(|| format!("the function at {addr:#x} runs past its section"))?;
    Ok((file_start + at as u64, code))
}

/// Offsets (from the start of `code`, loaded at `ip`) of every return
/// instruction in it, decoded instruction by instruction (a 0xc3 byte
/// inside another instruction is not one).
pub fn ret_offsets(code: &[u8], ip: u64) -> Vec<u64> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        if i.mnemonic() == Mnemonic::Ret {
            // wrapping: code loaded near the top of the address space
            out.push(i.ip().wrapping_sub(ip));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defined_openssl_functions_only() {
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
        // curl imports them through libcurl: undefined there, so not probed
        if let Ok(data) = std::fs::read("/usr/lib/x86_64-linux-gnu/libcurl.so.4") {
            assert!(defined_ssl_functions(&data).unwrap().is_empty());
        }
    }

    #[test]
    fn the_string_table_look_agrees_with_the_parse() {
        // it names SSL_write where the parse finds it defined, and where it
        // is only imported; not in a file without it
        for (lib, named) in [
            ("/usr/lib/x86_64-linux-gnu/libssl.so.3", true),
            ("/usr/lib/x86_64-linux-gnu/libcurl.so.4", true),
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", false),
            ("/proc/self/exe", false),
        ] {
            if let Ok(f) = File::open(lib) {
                for dynamic_only in [false, true] {
                    let needles: [&[u8]; 2] = [b"SSL_write\0", b"Conn).Write\0"];
                    let [ssl, go] = names_in_string_tables(&f, needles, dynamic_only).unwrap();
                    assert_eq!((ssl, go), (named, false), "{lib} {dynamic_only}");
                }
            }
        }
        // not an ELF file: nothing, no error
        let f = File::open("/proc/self/status").unwrap();
        assert_eq!(
            names_in_string_tables(&f, [b"x\0"], false).unwrap(),
            [false]
        );
    }

    #[test]
    fn go_versions_from_buildinfo() {
        let mut b = b"\xff Go buildinf:\x08\x02".to_vec();
        b.resize(32, 0);
        b.push(8);
        b.extend_from_slice(b"go1.19.8");
        assert_eq!(go_version(&b), Some((1, 19)));
        let mut rc = b[..32].to_vec();
        rc.push(10);
        rc.extend_from_slice(b"go1.21rc2x");
        assert_eq!(go_version(&rc), Some((1, 21)));
        // the pointer form of Go before 1.18, and junk
        let mut old = b.clone();
        old[15] = 0;
        assert_eq!(go_version(&old), None);
        assert_eq!(go_version(b"\xff Go"), None);
        let mut long = b[..32].to_vec();
        long.push(200);
        assert_eq!(go_version(&long), None);
    }

    #[test]
    fn return_instructions_by_decoding_not_by_byte() {
        // mov eax, 0xc3c3c3c3; ret; nop; ret
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x90, 0xc3];
        assert_eq!(ret_offsets(&code, 0x1000), vec![5, 7]);
        assert!(ret_offsets(&[0x90, 0x90], 0).is_empty());
        // loaded at the very top: the offset wraps, no overflow (found by
        // fuzz target tls_elf)
        assert_eq!(ret_offsets(&[0x90, 0xc3], u64::MAX), vec![1]);
    }
}
