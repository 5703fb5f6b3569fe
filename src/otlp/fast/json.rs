//! JSON text as `serde_json` writes it (compact): strings with its
//! escapes, integers in decimal, lowercase hex ids as strings. Appends to a
//! `Vec<u8>`; nothing here allocates but the vector's growth.

use crate::otlp::wire::needs_escape;

/// `serde_json`'s escape of each byte: 0 none, `u` as `\u00XX`, else the
/// letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `s` as a JSON string, quotes included.
#[inline]
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// `s` escaped, without quotes.
#[inline]
pub fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    // most strings need no escape: checked eight bytes at a time first
    if !needs_escape(s) {
        out.extend_from_slice(s);
        return;
    }
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = ESCAPE[usize::from(b)];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if e == b'u' {
            let hex = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ];
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// `bytes` as a JSON string of lowercase hex.
#[inline]
pub fn hex_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2 + 2);
    out.push(b'"');
    for &b in bytes {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
    out.push(b'"');
}

/// An unsigned integer in decimal.
#[inline]
pub fn uint(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// A signed integer in decimal.
#[inline]
pub fn int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    uint(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_as_serde_json_writes_them() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for s in [
            "",
            "plain",
            "quote \" and \\ back",
            "tab\tnl\ncr\rff\u{c}bs\u{8}",
            "\u{0}\u{1f}\u{7f}",
            "é ü 日本 🙂",
            &all,
        ] {
            let mut out = Vec::new();
            string(&mut out, s.as_bytes());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn each_escaped_byte_is_found_wherever_it_is() {
        for len in 1..20 {
            for at in 0..len {
                for b in [
                    0x00u8, 0x08, 0x1f, 0x20, b'"', b'\\', 0x5b, 0x5d, 0x21, 0x23, 0x7f, 0xa2, 0xdc,
                ] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let want = ESCAPE[usize::from(b)] != 0;
                    assert_eq!(needs_escape(&bytes), want, "{bytes:?}");
                    if let Ok(s) = std::str::from_utf8(&bytes) {
                        let mut out = Vec::new();
                        string(&mut out, &bytes);
                        assert_eq!(out, serde_json::to_vec(s).unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_and_hex() {
        for v in [0i64, 7, -1, 10, 1_732_650_000_123, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            int(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        let mut out = Vec::new();
        uint(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string().as_bytes());
        let mut out = Vec::new();
        hex_string(&mut out, &[0x01, 0xab, 0xff]);
        assert_eq!(out, b"\"01abff\"");
    }
}
