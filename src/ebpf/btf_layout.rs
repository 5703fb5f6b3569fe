//! The ring buffer's record layout as the compiled object describes it:
//! `struct http_event` read back from `bpf/http.bpf.o`'s BTF, checked
//! against [`super::event::LAYOUT`] (the `_Static_assert`s hold the C
//! side to the same offsets at compile time). A minimal BTF reader: the
//! header, the type section (each kind's trailing data skipped by its
//! size) and the strings.

use object::{Object, ObjectSection};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// A struct's name, size and (member name, bit offset) list.
#[derive(Debug)]
struct BtfStruct {
    name: String,
    size: u32,
    members: Vec<(String, u32)>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn string_at(strings: &[u8], off: u32) -> String {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// Bytes after a type's 12-byte header, by kind (linux/btf.h).
fn trailing(kind: u32, vlen: u32) -> Option<usize> {
    let v = vlen as usize;
    Some(match kind {
        1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
        3 => 12,                   // ARRAY
        4 | 5 | 15 | 19 => 12 * v, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * v,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    })
}

/// Every struct of a `.BTF` section.
fn structs(btf: &[u8]) -> Option<Vec<BtfStruct>> {
    if u16::from_le_bytes(btf.get(0..2)?.try_into().ok()?) != BTF_MAGIC {
        return None;
    }
    let hdr = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf.get(hdr + type_off..hdr + type_off + type_len)?;
    let strings = btf.get(hdr + str_off..hdr + str_off + str_len)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < types.len() {
        let (name, info, size) = (
            u32_at(types, at)?,
            u32_at(types, at + 4)?,
            u32_at(types, at + 8)?,
        );
        let (kind, vlen, bitfields) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31 == 1);
        if kind == KIND_STRUCT {
            let members = (0..vlen as usize)
                .map(|i| {
                    let m = at + 12 + 12 * i;
                    let off = u32_at(types, m + 8)?;
                    let bits = if bitfields { off & 0xff_ffff } else { off };
                    Some((string_at(strings, u32_at(types, m)?), bits))
                })
                .collect::<Option<Vec<_>>>()?;
            out.push(BtfStruct {
                name: string_at(strings, name),
                size,
                members,
            });
        }
        at += 12 + trailing(kind, vlen)?;
    }
    Some(out)
}

#[test]
fn the_object_has_the_layout_userspace_decodes() {
    let file = object::File::parse(super::loader::OBJECT).expect("the eBPF object is ELF");
    let btf = file
        .section_by_name(".BTF")
        .and_then(|s| s.data().ok())
        .expect("the object has BTF");
    let all = structs(btf).expect("the BTF parses");
    let ev = all
        .iter()
        .find(|s| s.name == "http_event")
        .expect("struct http_event in the BTF");
    assert_eq!(ev.size as usize, super::event::EVENT_LEN, "record size");
    let got: Vec<(&str, usize)> = ev
        .members
        .iter()
        .map(|(n, bits)| (n.as_str(), *bits as usize / 8))
        .filter(|(n, _)| *n != "pad")
        .collect();
    assert_eq!(got, super::event::LAYOUT.to_vec());
}
