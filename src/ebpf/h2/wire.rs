//! The kernel's HTTP/2 records (`EV_H2_READ`/`EV_H2_WRITE` of
//! `bpf/http.bpf.c`, `h2_walk`): a list of items, parsed here (pure; fuzzed
//! by `fuzz/fuzz_targets/h2_conn.rs`, through the connection).

/// Frame types the kernel passes on (RFC 9113 §6).
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const CONTINUATION: u8 = 9;

/// Frame flags.
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

const T_FRAME: u8 = 1;
const T_BYTES: u8 = 2;
const T_LOST: u8 = 3;
const T_PREFACE: u8 = 4;
const T_MIDSTREAM: u8 = 5;

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Frame {
    pub fn parse(h: &[u8; 9]) -> Frame {
        Frame {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        }
    }

    /// The 9 bytes of the header (tests and benches build records with it).
    pub fn bytes(&self) -> [u8; 9] {
        let l = self.len.to_be_bytes();
        let s = self.stream.to_be_bytes();
        [
            l[1], l[2], l[3], self.kind, self.flags, s[0], s[1], s[2], s[3],
        ]
    }
}

/// One item of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// The connection's preface went this way (its start).
    Preface,
    /// A connection whose preface was not seen (opened before the agent)
    /// begins here, at a frame boundary: its frames can be followed, its
    /// header blocks not decoded.
    Midstream,
    Frame(Frame),
    /// Payload bytes of the current HEADERS or CONTINUATION frame.
    Bytes(&'a [u8]),
    /// The kernel lost this direction's frame boundaries: nothing more
    /// comes. Also what a malformed record reads as.
    Lost,
}

/// The items of a record's data, in order; a malformed record ends in
/// [`Item::Lost`].
pub fn items(b: &[u8]) -> Items<'_> {
    Items { b, done: false }
}

pub struct Items<'a> {
    b: &'a [u8],
    done: bool,
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        if self.done {
            return None;
        }
        let (&tag, rest) = self.b.split_first()?;
        let (item, rest) = match tag {
            T_PREFACE => (Item::Preface, rest),
            T_MIDSTREAM => (Item::Midstream, rest),
            T_FRAME => match rest.split_first_chunk::<9>() {
                Some((h, rest)) => (Item::Frame(Frame::parse(h)), rest),
                None => (Item::Lost, &[][..]),
            },
            T_BYTES => match rest.split_first_chunk::<2>() {
                Some((n, rest)) => {
                    let n = usize::from(u16::from_le_bytes(*n));
                    match rest.split_at_checked(n) {
                        Some((bytes, rest)) => (Item::Bytes(bytes), rest),
                        None => (Item::Lost, &[][..]),
                    }
                }
                None => (Item::Lost, &[][..]),
            },
            _ => (Item::Lost, &[][..]),
        };
        if item == Item::Lost {
            self.done = true;
        }
        self.b = rest;
        Some(item)
    }
}

/// The bytes of `items` as the kernel writes them (tests, benches, fuzz
/// seeds).
pub fn encode(items: &[Item<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        match i {
            Item::Preface => out.push(T_PREFACE),
            Item::Midstream => out.push(T_MIDSTREAM),
            Item::Frame(f) => {
                out.push(T_FRAME);
                out.extend_from_slice(&f.bytes());
            }
            Item::Bytes(b) => {
                out.push(T_BYTES);
                out.extend_from_slice(&(b.len() as u16).to_le_bytes());
                out.extend_from_slice(b);
            }
            Item::Lost => out.push(T_LOST),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_ends_lost() {
        let f = Frame {
            len: 0x01_0203,
            kind: HEADERS,
            flags: END_HEADERS | END_STREAM,
            stream: 7,
        };
        let want = [
            Item::Preface,
            Item::Frame(f),
            Item::Bytes(b"abc"),
            Item::Lost,
        ];
        let b = encode(&want);
        assert_eq!(items(&b).collect::<Vec<_>>(), want);
        // the reserved bit is not part of the stream id
        let mut h = f.bytes();
        h[5] |= 0x80;
        assert_eq!(Frame::parse(&h).stream, 7);
        // cut anywhere: never a panic, a cut item reads as Lost and ends it
        for cut in 0..b.len() {
            let got: Vec<_> = items(&b[..cut]).collect();
            assert!(got.len() <= want.len(), "{cut}");
            if let Some(last) = got.last()
                && *last != want[got.len() - 1]
            {
                assert_eq!(*last, Item::Lost, "{cut}");
            }
        }
        assert_eq!(items(&[9, 1, 2]).collect::<Vec<_>>(), [Item::Lost]);
    }
}
