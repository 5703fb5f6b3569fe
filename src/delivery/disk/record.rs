//! The disk buffer's on-disk formats, apart from the queue that uses them
//! (layout in [`super`]'s docs): a record is `MAGIC (4) | len u32 LE |
//! crc32 u32 LE` followed by `len` payload bytes (`kind u8 | encoding u8 |
//! items u64 LE | body`), the CRC over the payload; the cursor is
//! `segment u64 LE | offset u64 LE | crc32 u32 LE`. Pure: no I/O, never
//! panics on input (the `buffer_records` fuzz target runs these).

use crate::sink::{ContentEncoding, EncodedBatch, PayloadKind};

/// First bytes of every record.
pub const MAGIC: [u8; 4] = *b"CAB1";
/// Magic, payload length, CRC32 of the payload.
pub const HEADER_LEN: usize = 12;
/// Kind, encoding, item count.
pub const PAYLOAD_PREFIX: usize = 10;
/// Longest payload accepted: a corrupt length never allocates more.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Why a payload is not a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("payload shorter than its fixed prefix")]
    Short,
    #[error("unknown payload kind {0}")]
    Kind(u8),
    #[error("unknown content encoding {0}")]
    Encoding(u8),
}

/// One decoded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub kind: PayloadKind,
    pub encoding: ContentEncoding,
    pub items: u64,
    pub body: &'a [u8],
}

/// The bytes of one record for `b` (header and payload).
pub fn encode_record(b: &EncodedBatch) -> Vec<u8> {
    let mut payload = Vec::with_capacity(PAYLOAD_PREFIX + b.body.len());
    payload.push(match b.kind {
        PayloadKind::Metrics => 0,
        PayloadKind::Spans => 1,
    });
    payload.push(match b.encoding {
        ContentEncoding::Identity => 0,
        ContentEncoding::Gzip => 1,
    });
    payload.extend_from_slice(&b.items.to_le_bytes());
    payload.extend_from_slice(&b.body);
    let mut rec = Vec::with_capacity(HEADER_LEN + payload.len());
    rec.extend_from_slice(&MAGIC);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    rec.extend_from_slice(&payload);
    rec
}

/// Decode a payload whose CRC already matched.
pub fn decode_payload(p: &[u8]) -> Result<RecordView<'_>, RecordError> {
    let (&kind, rest) = p.split_first().ok_or(RecordError::Short)?;
    let (&enc, rest) = rest.split_first().ok_or(RecordError::Short)?;
    let (items, body) = rest.split_at_checked(8).ok_or(RecordError::Short)?;
    let kind = match kind {
        0 => PayloadKind::Metrics,
        1 => PayloadKind::Spans,
        k => return Err(RecordError::Kind(k)),
    };
    let encoding = match enc {
        0 => ContentEncoding::Identity,
        1 => ContentEncoding::Gzip,
        e => return Err(RecordError::Encoding(e)),
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(items);
    Ok(RecordView {
        kind,
        encoding,
        items: u64::from_le_bytes(n),
        body,
    })
}

/// The record at the start of `buf`, if a whole valid one is there:
/// (its view, its length including the header).
pub fn parse_record(buf: &[u8]) -> Option<(RecordView<'_>, usize)> {
    let (head, rest) = buf.split_at_checked(HEADER_LEN)?;
    if head[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = rest.get(..len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let view = decode_payload(payload).ok()?;
    Some((view, HEADER_LEN + len))
}

/// What [`scan_records`] finds, in order, covering the whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned<'a> {
    Record {
        offset: usize,
        len: usize,
        view: RecordView<'a>,
    },
    /// Bytes that are not a valid record (torn, overwritten), skipped up to
    /// the next valid record or the end.
    Corrupt { offset: usize, len: usize },
}

/// Split a segment's bytes into valid records and corrupt regions. After a
/// bad record it resynchronises on the next [`MAGIC`] that starts a record
/// whose CRC matches. Pure; never panics.
///
/// Work is linear in the input: checking a candidate costs a CRC over the
/// length its header claims, so input full of fake headers (each claiming
/// a long record) would make resynchronising quadratic. Past a budget of
/// CRC bytes ([`resync_budget`]) a candidate is only checked when the record
/// it claims ends at the end of the input or where another [`MAGIC`]
/// starts, as records written by the agent do; past twice the budget the
/// rest of the input counts as one corrupt region (counted, not silent).
/// Random damage and torn tails never come near the budget.
pub fn scan_records(buf: &[u8]) -> Vec<Scanned<'_>> {
    scan_records_counting(buf).0
}

/// CRC bytes resynchronisation may spend on unconstrained candidates.
pub fn resync_budget(len: usize) -> usize {
    4 * len + (1 << 20)
}

/// The length a header at the start of `buf` claims, when it is a
/// plausible header (magic, length within bounds and within `buf`).
fn claimed_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..HEADER_LEN)?;
    if head[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    (len <= MAX_PAYLOAD && buf.len() >= HEADER_LEN + len).then_some(len)
}

/// [`scan_records`], and the CRC bytes spent resynchronising.
pub fn scan_records_counting(buf: &[u8]) -> (Vec<Scanned<'_>>, usize) {
    let mut spent = 0usize;
    let budget = resync_budget(buf.len());
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        if let Some((view, len)) = parse_record(&buf[pos..]) {
            out.push(Scanned::Record {
                offset: pos,
                len,
                view,
            });
            pos += len;
            continue;
        }
        let start = pos;
        let mut next = buf.len();
        let mut p = pos + 1;
        while let Some(i) = find_magic(&buf[p..]) {
            if spent >= 2 * budget {
                break;
            }
            let at = p + i;
            if let Some(len) = claimed_len(&buf[at..]) {
                let end = at + HEADER_LEN + len;
                let plausible = end == buf.len() || buf[end..].starts_with(&MAGIC);
                if spent < budget || plausible {
                    spent += len;
                    if parse_record(&buf[at..]).is_some() {
                        next = at;
                        break;
                    }
                }
            }
            p = at + 1;
        }
        out.push(Scanned::Corrupt {
            offset: start,
            len: next - start,
        });
        pos = next;
    }
    (out, spent)
}

fn find_magic(hay: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, &MAGIC)
}

pub fn encode_cursor(seg: u64, off: u64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&seg.to_le_bytes());
    b[8..16].copy_from_slice(&off.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `(segment, offset)` from a cursor file's bytes; `None` when damaged.
pub fn decode_cursor(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
    if crc32fast::hash(&b[..16]) != crc {
        return None;
    }
    Some((
        u64::from_le_bytes(b[..8].try_into().ok()?),
        u64::from_le_bytes(b[8..16].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::super::tests::batch;
    use super::*;

    #[test]
    fn record_round_trip_and_every_field() {
        for i in 0..6 {
            let b = batch(i, 40);
            let rec = encode_record(&b);
            assert_eq!(rec.len(), HEADER_LEN + PAYLOAD_PREFIX + 40);
            let (v, len) = parse_record(&rec).unwrap();
            assert_eq!(len, rec.len());
            assert_eq!(v.kind, b.kind);
            assert_eq!(v.encoding, b.encoding);
            assert_eq!(v.items, i + 1);
            assert_eq!(v.body, &b.body[..]);
        }
        let rec = encode_record(&batch(0, 40));
        // every single-byte flip is caught (header or CRC-covered payload)
        for i in 0..rec.len() {
            let mut r = rec.clone();
            r[i] ^= 0x40;
            assert!(parse_record(&r).is_none(), "flip at {i} not caught");
        }
        // every truncation is caught
        for n in 0..rec.len() {
            assert!(parse_record(&rec[..n]).is_none());
        }
    }

    /// The fuzz seeds were written from the format description alone (in
    /// Python, zlib's CRC32): the reader agrees with it.
    #[test]
    fn the_documented_format_reads_back() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/buffer_records");
        let valid = fs::read(seeds.join("valid")).unwrap();
        let s = scan_records(&valid);
        let views: Vec<_> = s
            .iter()
            .map(|x| match x {
                Scanned::Record { view, .. } => {
                    (view.kind, view.encoding, view.items, view.body.len())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            views,
            vec![
                (PayloadKind::Metrics, ContentEncoding::Identity, 2, 46),
                (PayloadKind::Spans, ContentEncoding::Gzip, 1, 6),
                (PayloadKind::Metrics, ContentEncoding::Identity, 0, 0),
            ]
        );
        let torn = fs::read(seeds.join("torn")).unwrap();
        assert!(matches!(
            scan_records(&torn)[2],
            Scanned::Corrupt { len: 17, .. }
        ));
        let cursor = fs::read(seeds.join("cursor")).unwrap();
        assert_eq!(decode_cursor(&cursor), Some((3, 1234)));
    }

    #[test]
    fn resync_over_fake_headers_stays_within_its_budget() {
        // 4 MiB of garbage dense with record headers (one every ~100
        // bytes), each claiming a long record: unbounded, ~40k CRCs over
        // megabytes each
        let mut buf = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        while buf.len() < 4 << 20 {
            let claim = (next() % (4 << 20)) as u32;
            buf.extend_from_slice(&MAGIC);
            buf.extend_from_slice(&claim.to_le_bytes());
            buf.extend_from_slice(&(next() as u32).to_le_bytes());
            for _ in 0..(next() % 176) {
                buf.push(b'a' + (next() % 26) as u8);
            }
        }
        let (s, spent) = scan_records_counting(&buf);
        // bounded: twice the budget, plus the one check that crossed it
        assert!(spent <= 2 * resync_budget(buf.len()) + buf.len(), "{spent}");
        // and the whole input is accounted for, as corrupt
        let covered: usize = s
            .iter()
            .map(|x| match x {
                Scanned::Corrupt { len, .. } => *len,
                Scanned::Record { .. } => panic!("no record in there"),
            })
            .sum();
        assert_eq!(covered, buf.len());
    }

    #[test]
    fn scan_skips_a_torn_tail_and_resyncs_after_garbage() {
        let recs: Vec<Vec<u8>> = (0..4).map(|i| encode_record(&batch(i, 30))).collect();
        let l = recs[0].len();
        // torn tail: the last record cut in half
        let mut buf: Vec<u8> = recs.concat();
        buf.truncate(buf.len() - l / 2);
        let s = scan_records(&buf);
        assert_eq!(s.len(), 4);
        assert!(matches!(s[2], Scanned::Record { offset, .. } if offset == 2 * l));
        assert_eq!(
            s[3],
            Scanned::Corrupt {
                offset: 3 * l,
                len: l - l / 2
            }
        );
        // random bytes over the middle of record 1: 0, 2, 3 survive
        let mut buf: Vec<u8> = recs.concat();
        for (k, b) in buf[l + 5..l + 25].iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(37) ^ 0xa5;
        }
        let s = scan_records(&buf);
        let kept: Vec<u64> = s
            .iter()
            .filter_map(|x| match x {
                Scanned::Record { view, .. } => Some(view.items - 1),
                _ => None,
            })
            .collect();
        assert_eq!(kept, vec![0, 2, 3]);
        assert_eq!(s[1], Scanned::Corrupt { offset: l, len: l });
        // nothing valid at all
        assert_eq!(
            scan_records(b"garbage CAB1 more"),
            vec![Scanned::Corrupt { offset: 0, len: 17 }]
        );
        assert!(scan_records(b"").is_empty());
    }
}
