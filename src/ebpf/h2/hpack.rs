//! HPACK header-block decoding (RFC 7541) for the HTTP/2 tracer: the
//! static and dynamic tables and Huffman strings, each field lent to a
//! callback rather than handed over, with a tag saying what the name is to
//! its user (sorted once per table entry, so a field the tracer does not
//! keep costs it no name comparison).
//!
//! Why not a crate: `httlib-hpack` allocates two `Vec`s for every field,
//! even one indexed from the table, about 1 µs a block, which kept the
//! agent above its 1 µs budget per traced request (BENCHMARKS.md, "HTTP/2
//! decoded"); `loona-hpack` builds a Huffman tree for every string. This
//! decoder allocates only a dynamic-table entry's one buffer. Both crates
//! remain the references its tests and fuzz target compare it with.
//!
//! Input comes from any pod on the node: every length is checked against
//! the block, integers are at most five bytes, a Huffman string must end
//! on valid padding and never hold EOS, and the table never grows past
//! the size it was made with.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// Why a block does not decode; the connection's HPACK state is lost then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An integer or string runs past the end of the block.
    Truncated,
    /// An integer longer than five bytes.
    Integer,
    /// Index 0, or past the static and dynamic tables.
    Index,
    /// A Huffman string with EOS, bad padding or padding over 7 bits.
    Huffman,
    /// A table size above the limit, or an update after the first field.
    SizeUpdate,
}

/// Bytes a table entry counts beyond its name and value (§4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Sorts a field name into what the decoder's user keeps of it (0:
/// nothing): once per static-table entry for all decoders, once per field
/// when it enters the dynamic table, and for each literal name.
pub type Classify = fn(&[u8]) -> u8;

/// A [`Classify`] and the static table's tags by it, sorted on first use
/// and shared by every decoder (a `static`: not once per connection).
pub struct Tags {
    classify: Classify,
    statics: OnceLock<[u8; STATIC_LEN]>,
}

impl Tags {
    pub const fn new(classify: Classify) -> Tags {
        Tags {
            classify,
            statics: OnceLock::new(),
        }
    }

    fn statics(&self) -> &[u8; STATIC_LEN] {
        self.statics
            .get_or_init(|| STATIC_NAMES.map(|n| (self.classify)(n.as_bytes())))
    }
}

/// One direction's decoder: its dynamic table and scratch for Huffman
/// strings.
pub struct Decoder {
    /// Newest first: index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// The table's size as §4.1 counts it.
    size: usize,
    /// The size the peer set last (§6.3).
    max: usize,
    /// The largest size a peer may set.
    limit: usize,
    name: Vec<u8>,
    value: Vec<u8>,
    classify: Classify,
    static_tags: &'static [u8; STATIC_LEN],
}

/// A dynamic-table entry: its name and value in one buffer, and its tag.
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
    tag: u8,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }
    fn value(&self) -> &[u8] {
        &self.bytes[self.name_len..]
    }
}

impl Decoder {
    /// A decoder whose table starts at `limit` bytes and never grows past
    /// it (a peer's size update above it is an error), its names tagged by
    /// `tags`.
    pub fn new(limit: usize, tags: &'static Tags) -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
            name: Vec::new(),
            value: Vec::new(),
            classify: tags.classify,
            static_tags: tags.statics(),
        }
    }

    /// Decodes one whole header block, calling `field(tag, name, value)`
    /// for each field in order. On an error the table may hold part of the
    /// block: the caller stops decoding the connection.
    pub fn decode(&mut self, b: &[u8], field: impl FnMut(u8, &[u8], &[u8])) -> Result<(), Error> {
        let r = self.fields(b, field);
        super::empty(&mut self.name);
        super::empty(&mut self.value);
        r
    }

    fn fields(
        &mut self,
        mut b: &[u8],
        mut field: impl FnMut(u8, &[u8], &[u8]),
    ) -> Result<(), Error> {
        let mut first = true;
        while let Some(&head) = b.first() {
            match head {
                0x80.. => {
                    let i = integer(&mut b, 7)?;
                    let (t, n, v) = self.get(i)?;
                    field(t, n, v);
                }
                0x40.. => self.literal(&mut b, 6, true, &mut field)?,
                0x20.. => {
                    let max = integer(&mut b, 5)?;
                    if !first || max > self.limit {
                        return Err(Error::SizeUpdate);
                    }
                    self.max = max;
                    self.evict(0);
                    // several updates may open a block (§4.2)
                    continue;
                }
                _ => self.literal(&mut b, 4, false, &mut field)?,
            }
            first = false;
        }
        Ok(())
    }

    /// A literal field (§6.2), its name indexed or a string; added to the
    /// table when `index`.
    fn literal(
        &mut self,
        b: &mut &[u8],
        prefix: u32,
        index: bool,
        field: &mut impl FnMut(u8, &[u8], &[u8]),
    ) -> Result<(), Error> {
        let i = integer(b, prefix)?;
        if i == 0 {
            string(b, &mut self.name)?;
        }
        string(b, &mut self.value)?;
        let (tag, name) = if i == 0 {
            ((self.classify)(&self.name), &self.name[..])
        } else {
            let (t, n, _) = self.get(i)?;
            (t, n)
        };
        field(tag, name, &self.value);
        if index {
            let e = Entry {
                bytes: [name, &self.value[..]].concat().into_boxed_slice(),
                name_len: name.len(),
                tag,
            };
            self.insert(e);
        }
        Ok(())
    }

    /// Field `i` of the static table then the dynamic one (§2.3.3), with
    /// its tag.
    fn get(&self, i: usize) -> Result<(u8, &[u8], &[u8]), Error> {
        match i {
            0 => Err(Error::Index),
            1..=STATIC_LEN => {
                let name = STATIC_NAMES[i - 1].as_bytes();
                let value = STATIC_VALUES.get(i - 1).map_or(&b""[..], |v| v.as_bytes());
                Ok((self.static_tags[i - 1], name, value))
            }
            _ => self
                .entries
                .get(i - STATIC_LEN - 1)
                .map(|e| (e.tag, e.name(), e.value()))
                .ok_or(Error::Index),
        }
    }

    /// Adds an entry, evicting the oldest to make room; one larger than
    /// the table empties it and is not added (§4.4).
    fn insert(&mut self, e: Entry) {
        let size = e.bytes.len() + ENTRY_OVERHEAD;
        if size > self.max {
            self.evict(self.max);
            return;
        }
        self.evict(size);
        self.size += size;
        self.entries.push_front(e);
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.bytes.len() + ENTRY_OVERHEAD;
        }
    }

    /// The table's entry count and size (for tests).
    #[cfg(test)]
    pub fn table(&self) -> (usize, usize) {
        (self.entries.len(), self.size)
    }
}

/// An integer with an N-bit prefix (§5.1), at most five bytes in all (the
/// largest any field here can need: a block is at most 16 KiB).
fn integer(b: &mut &[u8], prefix: u32) -> Result<usize, Error> {
    let mask = (1usize << prefix) - 1;
    let (&first, mut rest) = b.split_first().ok_or(Error::Truncated)?;
    let mut v = usize::from(first) & mask;
    if v == mask {
        let mut shift = 0;
        loop {
            let (&c, r) = rest.split_first().ok_or(Error::Truncated)?;
            rest = r;
            if shift > 21 {
                return Err(Error::Integer);
            }
            v += usize::from(c & 0x7f) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                break;
            }
        }
    }
    *b = rest;
    Ok(v)
}

/// A string literal (§5.2) into `out`: copied, or Huffman-decoded.
fn string(b: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let huffman = b.first().is_some_and(|&c| c & 0x80 != 0);
    let len = integer(b, 7)?;
    let (s, rest) = b.split_at_checked(len).ok_or(Error::Truncated)?;
    *b = rest;
    out.clear();
    if huffman {
        huffman_decode(s, out)
    } else {
        out.extend_from_slice(s);
        Ok(())
    }
}

/// A transition of the Huffman state machine on one nibble: the next
/// state (an inner node of the code tree, 0 the root), the symbol it
/// completed, and flags.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

const EMIT: u8 = 1;
/// The nibble completes EOS, which a string may not hold.
const FAIL: u8 = 2;
/// The string may end here: at a symbol's end, or at most 7 bits of a
/// prefix of EOS (all ones), which is padding (§5.2).
const ACCEPT: u8 = 4;

/// 256 inner nodes of the tree of 257 codes, 16 nibbles each.
type Machine = [[Step; 16]; 256];

fn huffman_decode(s: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let m = machine();
    let mut state = 0usize;
    let mut flags = ACCEPT;
    for &byte in s {
        for nibble in [byte >> 4, byte & 0xf] {
            let t = m[state][usize::from(nibble)];
            if t.flags & FAIL != 0 {
                return Err(Error::Huffman);
            }
            if t.flags & EMIT != 0 {
                out.push(t.sym);
            }
            state = usize::from(t.next);
            flags = t.flags;
        }
    }
    if flags & ACCEPT == 0 {
        return Err(Error::Huffman);
    }
    Ok(())
}

/// The state machine, built once from the canonical code's lengths.
fn machine() -> &'static Machine {
    static M: OnceLock<Box<Machine>> = OnceLock::new();
    M.get_or_init(build_machine)
}

/// A child in the code tree: an inner node, or a leaf (a symbol).
#[derive(Clone, Copy)]
enum Child {
    Inner(u8),
    Leaf(u16),
}

fn build_machine() -> Box<Machine> {
    let tree = code_tree();
    // inner nodes on the all-ones path within 7 bits of the root: where
    // padding may stop
    let mut padding = [false; 256];
    let mut node = 0u8;
    for _ in 0..=7 {
        padding[usize::from(node)] = true;
        match tree[usize::from(node)][1] {
            Child::Inner(n) => node = n,
            Child::Leaf(_) => break,
        }
    }
    let mut m = Box::new([[Step::default(); 16]; 256]);
    for (state, steps) in m.iter_mut().enumerate().take(tree.len()) {
        for (nibble, step) in steps.iter_mut().enumerate() {
            let mut at = state as u8;
            let mut flags = 0;
            let mut sym = 0;
            for bit in (0..4).rev() {
                match tree[usize::from(at)][(nibble >> bit) & 1] {
                    Child::Inner(n) => at = n,
                    Child::Leaf(256) => flags |= FAIL,
                    Child::Leaf(s) => {
                        // a code is at least 5 bits: one symbol a nibble
                        sym = s as u8;
                        flags |= EMIT;
                        at = 0;
                    }
                }
            }
            if padding[usize::from(at)] {
                flags |= ACCEPT;
            }
            *step = Step {
                next: at,
                sym,
                flags,
            };
        }
    }
    m
}

/// The code tree of §B as inner nodes (0 the root), children [0, 1]:
/// codes assigned canonically (by length, then symbol), as RFC 7541's
/// table is.
fn code_tree() -> Vec<[Child; 2]> {
    let mut order: Vec<u16> = (0..=256).collect();
    order.sort_by_key(|&s| (HUFFMAN_LENGTHS[usize::from(s)], s));
    let mut tree = vec![[Child::Leaf(u16::MAX); 2]];
    let mut code: u32 = 0;
    let mut prev_len = 0;
    for (k, &sym) in order.iter().enumerate() {
        let len = HUFFMAN_LENGTHS[usize::from(sym)];
        if k > 0 {
            code = (code + 1) << (len - prev_len);
        }
        prev_len = len;
        let mut node = 0usize;
        for bit in (0..len).rev() {
            let b = ((code >> bit) & 1) as usize;
            if bit == 0 {
                tree[node][b] = Child::Leaf(sym);
                break;
            }
            node = match tree[node][b] {
                Child::Inner(n) => usize::from(n),
                Child::Leaf(_) => {
                    tree.push([Child::Leaf(u16::MAX); 2]);
                    let n = tree.len() - 1;
                    tree[node][b] = Child::Inner(n as u8);
                    n
                }
            };
        }
    }
    tree
}

/// Code length of each symbol, 0–255 and EOS (RFC 7541 Appendix B).
const HUFFMAN_LENGTHS: [u32; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const STATIC_LEN: usize = 61;

/// The static table's names (RFC 7541 Appendix A), index 1 first.
const STATIC_NAMES: [&str; STATIC_LEN] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// The static table's values, index 1 first; the rest are empty.
const STATIC_VALUES: [&str; 16] = [
    "",
    "GET",
    "POST",
    "/",
    "/index.html",
    "http",
    "https",
    "200",
    "204",
    "206",
    "304",
    "400",
    "404",
    "500",
    "",
    "gzip, deflate",
];

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
