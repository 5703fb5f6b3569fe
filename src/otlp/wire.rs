//! What the two allocation-free scans ([`super::scan`] for traces,
//! [`super::metrics::scan`] for metrics) share: the protobuf wire format's
//! field walk, the JSON string token, and the sizes a bound is made of.
//! Pure: bytes in, positions out; every failure at its byte offset.

/// prost's own nesting limit: deeper bodies do not decode anyway.
pub const MAX_DEPTH: u32 = 100;
/// What one heap allocation costs beyond its bytes (malloc's header and
/// rounding to 16, at least 32 bytes a chunk).
pub const ALLOC: u64 = 32;

/// Why a body is not a protobuf message or JSON document at all (a 400
/// before decoding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("truncated or invalid protobuf at byte {0}")]
    Wire(usize),
    #[error("protobuf nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("invalid JSON at byte {0}")]
    Json(usize),
}

/// One protobuf field: its number, wire type and where its payload lies
/// in the buffer walked (`start..end`: a length-delimited field's bytes;
/// empty for a varint, which is consumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub number: u64,
    pub wire: u64,
    pub start: usize,
    pub end: usize,
}

impl Field {
    /// Length-delimited: a message, a string, bytes or a packed array.
    pub fn delimited(&self) -> bool {
        self.wire == 2
    }
}

/// The fields of one message, in order; stops at the first error.
/// `base` is the buffer's offset in the body (for the error's position).
pub fn fields(buf: &[u8], base: usize) -> Fields<'_> {
    Fields {
        buf,
        base,
        pos: 0,
        failed: false,
    }
}

pub struct Fields<'a> {
    buf: &'a [u8],
    base: usize,
    pos: usize,
    failed: bool,
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, ScanError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.field();
        self.failed = r.is_err();
        Some(r)
    }
}

impl Fields<'_> {
    #[inline]
    fn field(&mut self) -> Result<Field, ScanError> {
        let key = varint(self.buf, &mut self.pos, self.base)?;
        let (number, wire) = (key >> 3, key & 7);
        let len = match wire {
            0 => {
                varint(self.buf, &mut self.pos, self.base)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => varint(self.buf, &mut self.pos, self.base)?,
            _ => return Err(ScanError::Wire(self.base + self.pos)),
        };
        let start = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or(ScanError::Wire(self.base + start))?;
        self.pos = end;
        Ok(Field {
            number,
            wire,
            start,
            end,
        })
    }
}

#[inline]
fn varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, ScanError> {
    // most keys and lengths are one byte
    if let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(ScanError::Wire(base + *pos))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(ScanError::Wire(base + *pos))
}

/// A JSON string token opening at `start`: the index of its closing quote,
/// whether it holds an escape, and whether it is an object's key (the next
/// token is `:`).
pub fn json_string(body: &[u8], start: usize) -> Result<(usize, bool, bool), ScanError> {
    let mut i = start + 1;
    let mut escaped = false;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let is_key = body[i + 1..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|&b| b == b':');
                return Ok((i, escaped, is_key));
            }
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err(ScanError::Json(start))
}

/// Whether any byte of `s` is escaped: a control character, `"` or `\\`.
#[inline]
pub fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    // a byte below n (n <= 128) exists iff (v - n*ONES) & !v & HIGH != 0
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let hits = below(v, 0x20) | below(v ^ (ONES * 0x22), 1) | below(v ^ (ONES * 0x5c), 1);
        if hits != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

pub const fn size<T>() -> u64 {
    std::mem::size_of::<T>() as u64
}

/// The largest of `sizes` (for the largest struct a message may become).
pub const fn largest(sizes: &[u64]) -> u64 {
    let mut max = 0;
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] > max {
            max = sizes[i];
        }
        i += 1;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_every_wire_type_and_their_errors() {
        // 1: varint 150; 2: "ab"; 3: fixed64; 4: fixed32
        let buf = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'a', b'b', 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3,
            4,
        ];
        let got: Vec<Field> = fields(&buf, 0).collect::<Result<_, _>>().unwrap();
        let spans: Vec<(u64, u64, usize, usize)> = got
            .iter()
            .map(|f| (f.number, f.wire, f.start, f.end))
            .collect();
        assert_eq!(
            spans,
            [(1, 0, 3, 3), (2, 2, 5, 7), (3, 1, 8, 16), (4, 5, 17, 21)]
        );
        // a length past the end, at offset 10 of the body
        let r: Vec<_> = fields(&[0x12, 0x05, b'a'], 10).collect();
        assert_eq!(r, [Err(ScanError::Wire(12))]);
        // wire type 3 (groups) is not OTLP
        assert_eq!(fields(&[0x0b], 0).next(), Some(Err(ScanError::Wire(1))));
        // a key without its value, and a value varint of 11 bytes
        assert_eq!(fields(&[0x08], 0).next(), Some(Err(ScanError::Wire(1))));
        let mut long = vec![0x08];
        long.extend([0xff; 10]);
        long.push(0x01);
        assert_eq!(fields(&long, 0).next(), Some(Err(ScanError::Wire(11))));
    }

    #[test]
    fn json_strings_keys_and_escapes() {
        let b = br#"{"a\"b" : "x", "y"]"#;
        assert_eq!(json_string(b, 1), Ok((6, true, true)));
        assert_eq!(json_string(b, 10), Ok((12, false, false)));
        assert_eq!(json_string(b"\"open", 0), Err(ScanError::Json(0)));
    }
}
