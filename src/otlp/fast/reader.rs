//! The protobuf wire format over a borrowed buffer: keys, varints,
//! fixed-width and length-delimited fields, each payload a slice of the
//! body. Every rule prost applies to a field is applied here, and anything
//! this reader does not take (groups, bad keys, bad varints, truncation,
//! invalid UTF-8) is [`NotFast`]: the caller hands the body to prost, which
//! decides (and says why).

/// The body is not for the fast path: decode it with the generated types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not for the fast path: decode with prost")]
pub struct NotFast;

/// One field's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

impl<'a> Value<'a> {
    /// A varint field (integers, enums, bools).
    #[inline]
    pub fn varint(self) -> Result<u64, NotFast> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(NotFast),
        }
    }

    #[inline]
    pub fn fixed64(self) -> Result<u64, NotFast> {
        match self {
            Value::Fixed64(v) => Ok(v),
            _ => Err(NotFast),
        }
    }

    #[inline]
    pub fn fixed32(self) -> Result<u32, NotFast> {
        match self {
            Value::Fixed32(v) => Ok(v),
            _ => Err(NotFast),
        }
    }

    /// A bytes field or a message's encoding.
    #[inline]
    pub fn bytes(self) -> Result<&'a [u8], NotFast> {
        match self {
            Value::Len(b) => Ok(b),
            _ => Err(NotFast),
        }
    }

    /// A string field: valid UTF-8, as prost insists.
    #[inline]
    pub fn str(self) -> Result<&'a str, NotFast> {
        std::str::from_utf8(self.bytes()?).map_err(|_| NotFast)
    }
}

/// The fields of one message, in order.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next field (number and payload), `None` at the end.
    #[inline]
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, NotFast> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = varint(&mut self.buf)?;
        // prost: a key over u32, field number 0, wire types 3, 4, 6, 7 (groups
        // are legal for unknown fields, but no OTLP sender writes them)
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return Err(NotFast);
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.buf)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| NotFast)?,
            )),
            2 => {
                let len = varint(&mut self.buf)?;
                let len = usize::try_from(len).map_err(|_| NotFast)?;
                Value::Len(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| NotFast)?,
            )),
            _ => return Err(NotFast),
        };
        Ok(Some(((key >> 3) as u32, value)))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotFast> {
        if n > self.buf.len() {
            return Err(NotFast);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

/// A base-128 varint of at most 10 bytes, the 10th at most 1 (prost's
/// rule: no more than 64 bits).
#[inline]
fn varint(buf: &mut &[u8]) -> Result<u64, NotFast> {
    let b = *buf.first().ok_or(NotFast)?;
    if b < 0x80 {
        *buf = &buf[1..];
        return Ok(u64::from(b));
    }
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if i == 9 && b > 1 {
                return Err(NotFast);
            }
            *buf = &buf[i + 1..];
            return Ok(v);
        }
    }
    Err(NotFast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, NotFast> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some(f) = r.next_field()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn every_wire_type() {
        let buf = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'a', b'b', 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3,
            4,
        ];
        assert_eq!(
            fields(&buf).unwrap(),
            [
                (1, Value::Varint(150)),
                (2, Value::Len(b"ab")),
                (3, Value::Fixed64(0x0807060504030201)),
                (4, Value::Fixed32(0x04030201)),
            ]
        );
    }

    #[test]
    fn varints_as_prost_reads_them() {
        // the largest, an overlong zero, one 11 bytes long, a 10th byte of 2
        let mut max = vec![0xff; 9];
        max.push(0x01);
        let mut eleven = vec![0x80; 10];
        eleven.push(0x00);
        let mut two = vec![0xff; 9];
        two.push(0x02);
        for (bytes, want) in [
            (max, Ok(u64::MAX)),
            (vec![0x80, 0x00], Ok(0)),
            (eleven, Err(NotFast)),
            (two, Err(NotFast)),
            (vec![0x80], Err(NotFast)),
        ] {
            let mut b = &bytes[..];
            let got = varint(&mut b);
            let mut p = &bytes[..];
            let prost = prost::encoding::decode_varint(&mut p).map_err(|_| NotFast);
            assert_eq!(got, want, "{bytes:x?}");
            assert_eq!(got, prost, "{bytes:x?}");
        }
    }

    #[test]
    fn what_prost_refuses_is_not_fast() {
        for bad in [
            &[0x0a, 0x05, b'a'][..], // length past the end
            &[0x0b],                 // a group
            &[0x00, 0x01],           // field number 0
            &[0x08],                 // a key without its value
            &[0x19, 1, 2, 3],        // fixed64 cut short
            &[0x0e, 0x00],           // wire type 6
        ] {
            assert_eq!(fields(bad), Err(NotFast), "{bad:x?}");
            // prost refuses them too (as an unknown field of any message)
            assert!(prost_types_any(bad).is_err(), "{bad:x?}");
        }
        assert_eq!(Value::Len(&[0xff]).str(), Err(NotFast));
        assert_eq!(Value::Varint(1).bytes(), Err(NotFast));
    }

    /// Decode as a message whose field 1 is a string: its other fields are
    /// unknown and skipped.
    fn prost_types_any(buf: &[u8]) -> Result<(), prost::DecodeError> {
        crate::otlp::decode::ProtoDuration::decode(buf).map(|_| ())
    }
}
