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
        self.list.sort_by(|a, b| a.key.cmp(b.key));
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
        let i = self.list.binary_search_by(|a| a.key.cmp(key)).ok()?;
        Some(self.value(&self.list[i]))
    }

    /// The first of `keys` present.
    pub fn first_of(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
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
