//! One span's (or event's) attributes, borrowed from the body: each
//! `KeyValue` read once, string values as slices of the body, every other
//! value rendered as convert.rs renders it into one scratch string, then
//! sorted by key with a later duplicate winning, as the reference's
//! `BTreeMap` does. Reused from span to span: nothing allocated per span
//! once the vectors have grown.

use std::fmt::Write;

use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;

use super::check::{Msg, check};
use super::json;
use super::reader::{NotFast, Reader};
use crate::otlp::convert::{attr_string, base64};

/// A value: a slice of the body, or a range of [`Attrs::text`].
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Text(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Attr<'a> {
    key: &'a str,
    val: Val<'a>,
}

#[derive(Debug, Default)]
pub struct Attrs<'a> {
    list: Vec<Attr<'a>>,
    text: String,
}

impl<'a> Attrs<'a> {
    pub fn clear(&mut self) {
        self.list.clear();
        self.text.clear();
    }

    /// One `KeyValue` (its encoding), `depth` messages below the request.
    pub fn push(&mut self, kv: &'a [u8], depth: u32) -> Result<(), NotFast> {
        let (mut key, mut value) = ("", None);
        let mut r = Reader::new(kv);
        while let Some((n, v)) = r.next_field()? {
            match n {
                1 => key = v.str()?,
                // a second value would be merged into the first: prost's rules
                2 if value.is_some() => return Err(NotFast),
                2 => value = Some(v.bytes()?),
                3 => {
                    v.varint()?;
                }
                _ => {}
            }
        }
        let val = match value {
            None => Val::Str(""),
            Some(b) => self.any_value(b, depth + 1)?,
        };
        self.list.push(Attr { key, val });
        Ok(())
    }

    /// An `AnyValue` as the API's string ([`attr_string`]).
    fn any_value(&mut self, buf: &'a [u8], depth: u32) -> Result<Val<'a>, NotFast> {
        let mut r = Reader::new(buf);
        let mut val = None;
        while let Some((n, v)) = r.next_field()? {
            if !(1..=8).contains(&n) {
                continue;
            }
            // one of the oneof only: two would follow prost's merge rules
            if val.is_some() {
                return Err(NotFast);
            }
            let start = self.text.len();
            match n {
                1 => {
                    val = Some(Val::Str(v.str()?));
                    continue;
                }
                2 => self
                    .text
                    .push_str(if v.varint()? != 0 { "true" } else { "false" }),
                3 => {
                    let _ = write!(self.text, "{}", v.varint()? as i64);
                }
                4 => {
                    let _ = write!(self.text, "{}", f64::from_bits(v.fixed64()?));
                }
                5 | 6 => {
                    let m = if n == 5 {
                        Msg::ArrayValue
                    } else {
                        Msg::KeyValueList
                    };
                    check(v.bytes()?, m, depth + 1)?;
                    // rare: the reference's own rendering of the decoded value
                    let any = AnyValue::decode(buf).map_err(|_| NotFast)?;
                    self.text.push_str(&attr_string(&any));
                }
                7 => self.text.push_str(&base64(v.bytes()?)),
                // a profiling-only string-table index: empty
                _ => {
                    v.varint()?;
                }
            }
            val = Some(Val::Text(start, self.text.len()));
        }
        Ok(val.unwrap_or(Val::Str("")))
    }

    /// Sort by key; of equal keys the last pushed stays.
    pub fn finish(&mut self) {
        // stable: equal keys keep their order, so the last is the later one
        self.list.sort_by(|a, b| key_cmp(a.key, b.key));
        self.list.dedup_by(|later, kept| {
            let same = later.key == kept.key;
            if same {
                kept.val = later.val;
            }
            same
        });
    }

    fn value(&self, a: &Attr<'a>) -> &str {
        match a.val {
            Val::Str(s) => s,
            Val::Text(s, e) => &self.text[s..e],
        }
    }

    /// The value of `key` (after [`Attrs::finish`]).
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.list.binary_search_by(|a| key_cmp(a.key, key)).ok()?;
        Some(self.value(&self.list[i]))
    }

    /// The values of the first present of each list of `keys` (in one
    /// pass: lookups by key were a fifth of the agent's time).
    pub fn first_of<const N: usize>(&self, keys: [&[&str]; N]) -> [Option<&str>; N] {
        let mut best: [Option<(usize, &str)>; N] = [None; N];
        for a in &self.list {
            // every key looked up starts with `h` or `u`
            if !matches!(a.key.as_bytes().first(), Some(b'h' | b'u')) {
                continue;
            }
            for (list, best) in keys.iter().zip(&mut best) {
                if let Some(rank) = list.iter().position(|k| *k == a.key)
                    && best.is_none_or(|(r, _)| rank < r)
                {
                    *best = Some((rank, self.value(a)));
                }
            }
        }
        best.map(|b| b.map(|(_, v)| v))
    }

    /// `"k":"v"` for each, comma-separated; whether any was written.
    pub fn write_members(&self, out: &mut Vec<u8>) -> bool {
        for (i, a) in self.list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::string(out, a.key.as_bytes());
            out.push(b':');
            json::string(out, self.value(a).as_bytes());
        }
        !self.list.is_empty()
    }
}

/// `str`'s order (bytes, lexicographic), deciding most pairs on their
/// first eight bytes as one integer before calling `memcmp`.
#[inline]
fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn head(s: &[u8]) -> u64 {
        let mut h = [0u8; 8];
        let n = s.len().min(8);
        h[..n].copy_from_slice(&s[..n]);
        u64::from_be_bytes(h)
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // zero-padded heads that differ order as the strings do
    head(a).cmp(&head(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_strs() {
        let keys = [
            "",
            "a",
            "a\0",
            "ab",
            "ab\0x",
            "http.route",
            "http.request.method",
            "http.response.status_code",
            "url.path",
            "url.full",
            "é",
            "\u{7f}",
            "abcdefgh",
            "abcdefghi",
            "abcdefgg",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(key_cmp(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }
}
