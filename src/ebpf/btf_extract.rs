//! The few kernel BTF types the object needs, instead of all of them.
//!
//! aya 0.14 parses `/sys/kernel/btf/vmlinux` whole (126,668 types on 6.18,
//! ~16 MB of `Vec`s per parse) yet uses it for two things only: the CO-RE
//! relocations, which look types up by name and follow by-value members
//! (a pointer field matches any pointer, its pointee is never read), and
//! `BtfTracePoint::load`, which wants the kernel's id of the typedef
//! `btf_trace_<tracepoint>`. [`RawBtf`] indexes the raw bytes (record
//! offsets, nothing parsed); [`RawBtf::extract`] writes a renumbered BTF
//! blob of the named roots closed over by-value members, pointers leaving
//! that closure cut to `void`; [`tracepoint_blob`] puts each wanted typedef
//! at its kernel id behind stub pointers. aya parses those small blobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aya::{Btf, Endianness};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

// linux/btf.h kinds
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// Every struct, union, enum and typedef the object's CO-RE relocations
/// name (flavors such as `file___f_count` stripped); a test holds it to
/// the relocations of the committed `bpf/http.bpf.o`.
pub(crate) const CORE_ROOTS: &[&str] = &[
    "bpf_func_id",
    "cgroup",
    "cgroup_subsys_id",
    "cgroup_subsys_state",
    "css_set",
    "fdtable",
    "file",
    "files_struct",
    "inode",
    "iovec",
    "kernfs_node",
    "pt_regs",
    "sock",
    "socket",
    "task_struct",
    "trace_event_raw_inet_sock_set_state",
    "trace_event_raw_sys_enter",
    "trace_event_raw_sys_exit",
    "user_msghdr",
];

/// Why raw BTF could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no BTF header (magic, or {0} bytes)")]
    Header(usize),
    #[error("section {0} out of the data")]
    Section(&'static str),
    #[error("type {id}: unknown kind {kind}")]
    Kind { id: u32, kind: u32 },
    #[error("type {id}: record truncated")]
    Truncated { id: u32 },
    #[error("type {id} refers to missing type {to}")]
    TypeId { id: u32, to: u32 },
    #[error("string offset {0} out of the string section or unterminated")]
    String(u32),
    #[error("more than {0} type ids")]
    TooMany(u32),
}

/// Why the kernel's types could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error("{path}: no typedef {name}")]
    NoTracepoint { path: PathBuf, name: String },
    #[error("the extract of {path} does not parse: {source}")]
    Aya {
        path: PathBuf,
        source: aya::BtfError,
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// One type record: its 12-byte header and what follows it.
#[derive(Clone, Copy)]
struct Rec<'a> {
    name: u32,
    info: u32,
    size_type: u32,
    tail: &'a [u8],
}

impl Rec<'_> {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn word(&self, i: usize) -> u32 {
        // the index checked every tail's length
        u32_at(self.tail, 4 * i).unwrap_or(0)
    }
}

/// Bytes after a record's header, by kind (linux/btf.h).
fn tail_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        INT | VAR | DECL_TAG => 4,
        ARRAY => 12,
        STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
        ENUM | FUNC_PROTO => 8 * vlen,
        PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
        _ => return None,
    })
}

/// Raw BTF with the offset of each type's record (id `i` at `offsets[i - 1]`).
pub(crate) struct RawBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    offsets: Vec<u32>,
}

impl<'a> RawBtf<'a> {
    /// Index `data` (little-endian BTF, as every BPF target writes it).
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, ParseError> {
        let header = |at| u32_at(data, at).ok_or(ParseError::Header(data.len()));
        if data.get(0..2) != Some(&MAGIC.to_le_bytes()[..]) {
            return Err(ParseError::Header(data.len()));
        }
        let hdr = header(4)? as usize;
        if hdr < HEADER_LEN {
            return Err(ParseError::Header(data.len()));
        }
        let section = |off: usize, len: usize, name| {
            let (off, len) = (header(off)? as usize, header(len)? as usize);
            let start = hdr.checked_add(off).ok_or(ParseError::Section(name))?;
            let end = start.checked_add(len).ok_or(ParseError::Section(name))?;
            data.get(start..end).ok_or(ParseError::Section(name))
        };
        let types = section(8, 12, "types")?;
        let strings = section(16, 20, "strings")?;
        let offsets = index(types)?;
        Ok(RawBtf {
            types,
            strings,
            offsets,
        })
    }

    /// Type ids run `1..=count()` (0 is `void`).
    pub(crate) fn count(&self) -> u32 {
        self.offsets.len() as u32
    }

    fn rec(&self, id: u32) -> Option<Rec<'a>> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let (name, info) = (u32_at(self.types, at)?, u32_at(self.types, at + 4)?);
        let mut rec = Rec {
            name,
            info,
            size_type: u32_at(self.types, at + 8)?,
            tail: &[],
        };
        let len = tail_len(rec.kind(), rec.vlen())?;
        rec.tail = self.types.get(at + 12..at + 12 + len)?;
        Some(rec)
    }

    fn string(&self, off: u32) -> Result<&'a [u8], ParseError> {
        let s = self
            .strings
            .get(off as usize..)
            .ok_or(ParseError::String(off))?;
        let end = memchr::memchr(0, s).ok_or(ParseError::String(off))?;
        Ok(&s[..end])
    }

    /// The id of the first type of `kind` named `name` (what aya's
    /// `id_by_type_name_kind` answers).
    pub(crate) fn id_of(&self, name: &str, kind: u32) -> Option<u32> {
        (1..=self.count()).find(|&id| {
            self.rec(id).is_some_and(|r| {
                r.kind() == kind && self.string(r.name).ok() == Some(name.as_bytes())
            })
        })
    }

    /// The id of typedef `name` (`btf_trace_<tracepoint>`).
    pub(crate) fn typedef_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, TYPEDEF)
    }
}

/// Each record's offset, every record checked to fit and to be of a known kind.
fn index(types: &[u8]) -> Result<Vec<u32>, ParseError> {
    let mut offsets = Vec::new();
    let mut at = 0usize;
    while at < types.len() {
        let id = offsets.len() as u32 + 1;
        if id == u32::MAX || at > u32::MAX as usize {
            return Err(ParseError::TooMany(id));
        }
        let info = u32_at(types, at + 4).ok_or(ParseError::Truncated { id })?;
        let kind = (info >> 24) & 0x1f;
        let len = tail_len(kind, (info & 0xffff) as usize).ok_or(ParseError::Kind { id, kind })?;
        if types.len() - at < 12 + len {
            return Err(ParseError::Truncated { id });
        }
        offsets.push(at as u32);
        at += 12 + len;
    }
    Ok(offsets)
}

/// What CO-RE matching reads through by value: the referent of a typedef
/// or qualifier, an array's element and index, a struct's members.
fn by_value(rec: &Rec<'_>, mut visit: impl FnMut(u32)) {
    match rec.kind() {
        TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => visit(rec.size_type),
        ARRAY => (0..2).for_each(|i| visit(rec.word(i))),
        STRUCT | UNION => (0..rec.vlen()).for_each(|m| visit(rec.word(3 * m + 1))),
        _ => {}
    }
}

fn flavorless(name: &[u8]) -> &[u8] {
    memchr::memmem::find(name, b"___").map_or(name, |at| &name[..at])
}

impl<'a> RawBtf<'a> {
    /// Ids of the named types of `roots` and everything they hold by value, ascending.
    fn closure(&self, roots: &[&str]) -> Result<Vec<bool>, ParseError> {
        let n = self.count();
        let mut keep = vec![false; n as usize + 1];
        let mut todo = Vec::new();
        for id in 1..=n {
            let r = self.rec(id).ok_or(ParseError::Truncated { id })?;
            if matches!(r.kind(), STRUCT | UNION | ENUM | ENUM64 | TYPEDEF | FWD) && r.name != 0 {
                let name = flavorless(self.string(r.name)?);
                if roots.iter().any(|root| root.as_bytes() == name) {
                    keep[id as usize] = true;
                    todo.push(id);
                }
            }
        }
        while let Some(id) = todo.pop() {
            let r = self.rec(id).ok_or(ParseError::Truncated { id })?;
            let mut bad = None;
            by_value(&r, |to| match keep.get_mut(to as usize) {
                Some(k) if !*k && to != 0 => {
                    *k = true;
                    todo.push(to);
                }
                Some(_) => {}
                None => bad = Some(to),
            });
            if let Some(to) = bad {
                return Err(ParseError::TypeId { id, to });
            }
        }
        Ok(keep)
    }

    /// A BTF blob of `roots` closed over by-value members: ids renumbered
    /// in kernel order, pointers out of the closure to `void`, only the
    /// strings those types name.
    pub(crate) fn extract(&self, roots: &[&str]) -> Result<Vec<u8>, ParseError> {
        let keep = self.closure(roots)?;
        let mut new_id = vec![0u32; keep.len()];
        let mut next = 0;
        for (id, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            next += 1;
            new_id[id] = next;
        }
        let mut w = Writer::default();
        for id in (1..keep.len() as u32).filter(|&id| keep[id as usize]) {
            let r = self.rec(id).ok_or(ParseError::Truncated { id })?;
            // by construction every by-value referent is kept; anything
            // else (a pointer's target) that is not becomes void
            let map = |to: u32| new_id.get(to as usize).copied().unwrap_or(0);
            self.write(&mut w, &r, map)?;
        }
        Ok(w.finish())
    }

    fn write(
        &self,
        w: &mut Writer<'a>,
        r: &Rec<'_>,
        map: impl Fn(u32) -> u32,
    ) -> Result<(), ParseError> {
        let name = w.string(self.string(r.name)?);
        let size_type = match r.kind() {
            PTR | TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => map(r.size_type),
            _ => r.size_type,
        };
        w.words(&[name, r.info, size_type]);
        match r.kind() {
            INT => w.words(&[r.word(0)]),
            ARRAY => w.words(&[map(r.word(0)), map(r.word(1)), r.word(2)]),
            STRUCT | UNION => {
                for m in 0..r.vlen() {
                    let name = w.string(self.string(r.word(3 * m))?);
                    w.words(&[name, map(r.word(3 * m + 1)), r.word(3 * m + 2)]);
                }
            }
            ENUM | ENUM64 => {
                let per = if r.kind() == ENUM { 2 } else { 3 };
                for v in 0..r.vlen() {
                    let name = w.string(self.string(r.word(per * v))?);
                    w.words(&[name]);
                    (1..per).for_each(|i| w.words(&[r.word(per * v + i)]));
                }
            }
            _ => {} // FWD, FLOAT, PTR, TYPEDEF and qualifiers: header only
        }
        Ok(())
    }
}

/// A BTF blob being written: types and a deduplicated string table.
#[derive(Default)]
struct Writer<'a> {
    types: Vec<u8>,
    strings: Vec<u8>,
    offsets: HashMap<&'a [u8], u32>,
}

impl<'a> Writer<'a> {
    fn words(&mut self, words: &[u32]) {
        words
            .iter()
            .for_each(|w| self.types.extend_from_slice(&w.to_le_bytes()));
    }

    fn string(&mut self, s: &'a [u8]) -> u32 {
        if self.strings.is_empty() {
            self.strings.push(0);
        }
        if s.is_empty() {
            return 0;
        }
        let next = self.strings.len() as u32;
        *self.offsets.entry(s).or_insert_with(|| {
            self.strings.extend_from_slice(s);
            self.strings.push(0);
            next
        })
    }

    fn finish(mut self) -> Vec<u8> {
        self.string(b"");
        blob(&self.types, &self.strings)
    }
}

/// Header, type section, string section.
fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[1, 0]); // version 1, no flags
    for w in [HEADER_LEN, 0, types.len(), types.len(), strings.len()] {
        out.extend_from_slice(&(w as u32).to_le_bytes());
    }
    out.extend_from_slice(types);
    out.extend_from_slice(strings);
    out
}

/// BTF in which each `(typedef name, id)` sits at that id, stub pointers
/// to `void` before and between (all `BtfTracePoint::load` reads of it).
pub(crate) fn tracepoint_blob(typedefs: &[(String, u32)]) -> Vec<u8> {
    let last = typedefs.iter().map(|(_, id)| *id).max().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut at = HashMap::new();
    for (name, id) in typedefs {
        at.insert(*id, strings.len() as u32);
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let mut types = Vec::with_capacity(12 * last as usize);
    for id in 1..=last {
        let (name, kind) = at.get(&id).map_or((0, PTR), |&n| (n, TYPEDEF));
        for w in [name, kind << 24, 0] {
            types.extend_from_slice(&w.to_le_bytes());
        }
    }
    blob(&types, &strings)
}

/// What the loader hands aya: the relocation types, and the kernel's id of
/// each `btf_trace_<tracepoint>` typedef.
pub(crate) struct KernelTypes {
    pub relocations: Btf,
    pub tracepoints: Vec<(String, u32)>,
}

/// Read `path` (the kernel's BTF), keep what `roots` and `tracepoints`
/// need; the raw bytes are freed before aya parses the extract.
pub(crate) fn read(
    path: &Path,
    roots: &[&str],
    tracepoints: &[&str],
) -> Result<KernelTypes, ExtractError> {
    let err = |source| ExtractError::Parse {
        path: path.to_owned(),
        source,
    };
    let data = std::fs::read(path).map_err(|source| ExtractError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw = RawBtf::parse(&data).map_err(err)?;
    let small = raw.extract(roots).map_err(err)?;
    let mut ids = Vec::new();
    for tp in tracepoints {
        let name = format!("btf_trace_{tp}");
        let id = raw
            .typedef_id(&name)
            .ok_or_else(|| ExtractError::NoTracepoint {
                path: path.to_owned(),
                name: name.clone(),
            })?;
        ids.push((name, id));
    }
    drop(raw);
    drop(data);
    let relocations = parse(path, &small)?;
    Ok(KernelTypes {
        relocations,
        tracepoints: ids,
    })
}

/// aya's parse of a blob written here.
pub(crate) fn parse(path: &Path, blob: &[u8]) -> Result<Btf, ExtractError> {
    Btf::parse(blob, Endianness::Little).map_err(|source| ExtractError::Aya {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
#[path = "btf_extract_tests.rs"]
mod tests;
