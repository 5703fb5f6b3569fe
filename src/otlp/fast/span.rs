//! One `Span` (and its `Status` and `Event`s) read from its encoding: the
//! fields convert.rs uses, borrowed; the others checked as prost would
//! decode them.

use super::attrs::Attrs;
use super::check::{Msg, check};
use super::reader::{NotFast, Reader};

/// Messages below the request: request, resource spans, scope spans.
const SPAN_DEPTH: u32 = 3;

/// What of a span goes into its JSON.
#[derive(Debug, Default)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub status_code: i32,
    pub status_message: &'a str,
}

/// Read a span: its attributes into `attrs` (cleared first, then
/// finished), its events' encodings into `events`.
pub fn read<'a>(
    buf: &'a [u8],
    attrs: &mut Attrs<'a>,
    events: &mut Vec<&'a [u8]>,
) -> Result<SpanView<'a>, NotFast> {
    attrs.clear();
    events.clear();
    let mut s = SpanView::default();
    let mut r = Reader::new(buf);
    while let Some((n, v)) = r.next_field()? {
        match n {
            1 => s.trace_id = v.bytes()?,
            2 => s.span_id = v.bytes()?,
            3 => {
                v.str()?;
            }
            4 => s.parent_span_id = v.bytes()?,
            5 => s.name = v.str()?,
            6 => s.kind = v.varint()? as i32,
            7 => s.start = v.fixed64()?,
            8 => s.end = v.fixed64()?,
            9 => attrs.push(v.bytes()?, SPAN_DEPTH + 1)?,
            10 | 12 | 14 => {
                v.varint()?;
            }
            11 => events.push(v.bytes()?),
            13 => check(v.bytes()?, Msg::Link, SPAN_DEPTH + 1)?,
            // a status given twice is merged: its fields read in turn
            15 => status(v.bytes()?, &mut s)?,
            16 => {
                v.fixed32()?;
            }
            _ => {}
        }
    }
    attrs.finish();
    Ok(s)
}

fn status<'a>(buf: &'a [u8], s: &mut SpanView<'a>) -> Result<(), NotFast> {
    let mut r = Reader::new(buf);
    while let Some((n, v)) = r.next_field()? {
        match n {
            2 => s.status_message = v.str()?,
            3 => s.status_code = v.varint()? as i32,
            _ => {}
        }
    }
    Ok(())
}

/// One event: its name and time, its attributes into `attrs` (finished).
pub fn event<'a>(buf: &'a [u8], attrs: &mut Attrs<'a>) -> Result<(&'a str, u64), NotFast> {
    attrs.clear();
    let (mut name, mut time) = ("", 0);
    let mut r = Reader::new(buf);
    while let Some((n, v)) = r.next_field()? {
        match n {
            1 => time = v.fixed64()?,
            2 => name = v.str()?,
            3 => attrs.push(v.bytes()?, SPAN_DEPTH + 2)?,
            4 => {
                v.varint()?;
            }
            _ => {}
        }
    }
    attrs.finish();
    Ok((name, time))
}
