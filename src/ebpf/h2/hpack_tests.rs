use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A tag for the tests: the name's length.
fn by_length(name: &[u8]) -> u8 {
    name.len() as u8
}

static BY_LENGTH: Tags = Tags::new(by_length);

fn new(limit: usize) -> Decoder {
    Decoder::new(limit, &BY_LENGTH)
}

fn ours(d: &mut Decoder, block: &[u8]) -> Result<Fields, Error> {
    let mut out = Vec::new();
    d.decode(block, |t, n, v| {
        // a name's tag is its classification, wherever the name came from
        assert_eq!(t, by_length(n), "{n:?}");
        out.push((n.to_vec(), v.to_vec()));
    })?;
    Ok(out)
}

fn httlib(d: &mut httlib_hpack::Decoder<'static>, block: &[u8]) -> Fields {
    let mut out = Vec::new();
    d.decode(&mut block.to_vec(), &mut out).unwrap();
    out.into_iter().map(|(n, v, _)| (n, v)).collect()
}

fn loona(d: &mut loona_hpack::Decoder<'static>, block: &[u8]) -> Fields {
    let mut out = Vec::new();
    d.decode_with_cb(block, |n, v| out.push((n.into_owned(), v.into_owned())))
        .unwrap();
    out
}

/// A field a real peer might send: a name from the static table or made
/// up, a value of any bytes (so every Huffman code appears).
fn field(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let name = if rng.random_bool(0.5) {
        STATIC_NAMES[rng.random_range(0..STATIC_LEN)]
            .as_bytes()
            .to_vec()
    } else {
        let len = rng.random_range(1..20);
        (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect()
    };
    let len = rng.random_range(0..60);
    let value = (0..len).map(|_| rng.random::<u8>()).collect();
    (name, value)
}

/// Blocks from `httlib-hpack`'s encoder in every representation (indexed,
/// literal with, without and never indexed, Huffman or not, table size
/// updates, eviction from a small table) decode to what was encoded, and
/// as both reference crates decode them.
#[test]
fn decodes_as_encoded_and_as_both_reference_crates() {
    use httlib_hpack::Encoder;
    let mut rng = StdRng::seed_from_u64(7541);
    for round in 0..40 {
        // small tables evict; the first block of each connection sets it
        let size = [256u32, 4096, 1024][round % 3];
        let mut enc = Encoder::with_dynamic_size(size);
        let mut d = new(4096);
        let mut h = httlib_hpack::Decoder::with_dynamic_size(4096);
        let mut l = loona_hpack::Decoder::new();
        let mut seen: Fields = Vec::new();
        for i in 0..30 {
            let mut block = Vec::new();
            if i == 0 {
                enc.update_max_dynamic_size(size, &mut block).unwrap();
            }
            let mut want = Vec::new();
            for _ in 0..rng.random_range(1..8) {
                // a field seen before, to hit the table, or a new one
                let f = match seen.len() {
                    n if n > 0 && rng.random_bool(0.4) => seen[rng.random_range(0..n)].clone(),
                    _ => field(&mut rng),
                };
                let flags = [
                    Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_VALUE,
                    Encoder::BEST_FORMAT | Encoder::WITH_INDEXING,
                    Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE | Encoder::WITH_INDEXING,
                    Encoder::HUFFMAN_VALUE,
                    Encoder::NEVER_INDEXED | Encoder::HUFFMAN_NAME,
                    Encoder::BEST_FORMAT,
                ][rng.random_range(0..6)];
                enc.encode((f.0.clone(), f.1.clone(), flags), &mut block)
                    .unwrap();
                seen.push(f.clone());
                want.push(f);
            }
            let got = ours(&mut d, &block).unwrap();
            assert_eq!(got, want, "round {round} block {i}");
            assert_eq!(got, httlib(&mut h, &block), "round {round} block {i}");
            assert_eq!(got, loona(&mut l, &block), "round {round} block {i}");
        }
    }
}

/// Every byte value through the Huffman code, alone and in a run.
#[test]
fn every_byte_decodes_through_huffman() {
    let mut all = Vec::new();
    for b in 0..=255u8 {
        let mut enc = Vec::new();
        httlib_huffman_encode(&[b], &mut enc);
        let mut out = Vec::new();
        huffman_decode(&enc, &mut out).unwrap();
        assert_eq!(out, [b]);
        all.push(b);
    }
    let mut enc = Vec::new();
    httlib_huffman_encode(&all, &mut enc);
    let mut out = Vec::new();
    huffman_decode(&enc, &mut out).unwrap();
    assert_eq!(out, all);
}

/// A value through `httlib-hpack`'s encoder as a Huffman literal, its
/// string's bytes only.
fn httlib_huffman_encode(v: &[u8], out: &mut Vec<u8>) {
    use httlib_hpack::Encoder;
    let mut enc = Encoder::with_dynamic_size(0);
    let mut b = Vec::new();
    // a literal without indexing, its name a raw string ("n")
    enc.encode((b"n".to_vec(), v.to_vec(), Encoder::HUFFMAN_VALUE), &mut b)
        .unwrap();
    assert_eq!(b[..3], [0x00, 0x01, b'n']);
    let mut s = &b[3..];
    assert!(s[0] & 0x80 != 0, "a Huffman string");
    let len = integer(&mut s, 7).unwrap();
    out.extend_from_slice(&s[..len]);
}

/// Padding: at most 7 bits, all ones; EOS never (§5.2).
#[test]
fn huffman_padding_and_eos_are_checked() {
    let mut out = Vec::new();
    // '0' is 00000: then 3 ones of padding
    assert_eq!(huffman_decode(&[0b0000_0111], &mut out), Ok(()));
    assert_eq!(out, b"0");
    // padding with a zero in it
    assert_eq!(
        huffman_decode(&[0b0000_0101], &mut out),
        Err(Error::Huffman)
    );
    // a whole byte of padding after a whole code ('0','0','0' then 1 bit
    // pad, then a byte of ones): 8 bits of padding
    assert_eq!(
        huffman_decode(&[0b0000_0000, 0b0000_0001, 0xff], &mut out),
        Err(Error::Huffman)
    );
    // EOS: 30 ones, then padding
    assert_eq!(
        huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
        Err(Error::Huffman)
    );
    // zeros as padding: ' ' is 010100, then 00
    assert_eq!(
        huffman_decode(&[0b0101_0000], &mut out),
        Err(Error::Huffman)
    );
    // empty is fine
    assert_eq!(huffman_decode(&[], &mut out), Ok(()));
}

/// RFC 7541 C.4.1: the first request of C.4, with Huffman.
#[test]
fn rfc_example_request_with_huffman() {
    let block = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let mut d = new(4096);
    let got = ours(&mut d, &block).unwrap();
    let want: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ];
    let got: Vec<(&[u8], &[u8])> = got.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    assert_eq!(got, want);
    // one entry: 10 + 15 + 32 bytes
    assert_eq!(d.table(), (1, 57));
}

/// A block cut inside any representation is an error, never a panic;
/// cut between representations, it decodes the whole ones.
#[test]
fn cut_blocks_are_errors() {
    use httlib_hpack::Encoder;
    let mut enc = Encoder::with_dynamic_size(4096);
    let mut block = vec![0x3f, 0xe1, 0x1f];
    let mut ends = vec![0, 3];
    for (n, v) in [
        (&b"x-long"[..], vec![b'v'; 200]),
        (b":path", b"/a".to_vec()),
    ] {
        let flags = Encoder::HUFFMAN_VALUE | Encoder::WITH_INDEXING;
        enc.encode((n.to_vec(), v, flags), &mut block).unwrap();
        ends.push(block.len());
    }
    block.push(0x82);
    ends.push(block.len());
    for cut in 0..=block.len() {
        let r = ours(&mut new(4096), &block[..cut]);
        assert_eq!(r.is_ok(), ends.contains(&cut), "{cut}: {r:?}");
    }
    // an integer longer than 5 bytes
    assert_eq!(
        ours(&mut new(4096), &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(Error::Integer)
    );
}

#[test]
fn indexes_sizes_and_updates_are_checked() {
    let mut d = new(4096);
    assert_eq!(ours(&mut d, &[0x80]), Err(Error::Index));
    // 62: the dynamic table is empty
    assert_eq!(ours(&mut new(4096), &[0xbe]), Err(Error::Index));
    // a literal whose name index is past the tables
    assert_eq!(ours(&mut new(4096), &[0x7f, 0x00, 0x00]), Err(Error::Index));
    // a size update above the limit, and one after a field
    assert_eq!(
        ours(&mut new(4096), &[0x3f, 0xe2, 0x1f]),
        Err(Error::SizeUpdate)
    );
    assert_eq!(ours(&mut new(4096), &[0x82, 0x20]), Err(Error::SizeUpdate));
    // two updates opening a block are fine
    assert!(ours(&mut new(4096), &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).is_ok());
}

/// The table evicts oldest first to stay within its size, an entry
/// larger than it empties it, and a size update evicts.
#[test]
fn the_table_stays_within_its_size() {
    // literal with indexing, new name "a"..: 1 + 1 + 32 = 34 bytes each
    let entry = |c: u8| [0x40, 0x01, c, 0x01, c];
    let mut d = new(100);
    for c in [b'a', b'b', b'c'] {
        ours(&mut d, &entry(c)).unwrap();
    }
    assert_eq!(d.table(), (2, 68));
    // 62 is the newest ("c"), 63 "b"; "a" was evicted
    let got = ours(&mut d, &[0xbe, 0xbf]).unwrap();
    assert_eq!(
        got,
        vec![
            (b"c".to_vec(), b"c".to_vec()),
            (b"b".to_vec(), b"b".to_vec())
        ]
    );
    assert_eq!(ours(&mut d, &[0xc0]), Err(Error::Index));
    // an entry of 1 + 70 + 32 bytes: larger than the table, which empties
    let mut big = vec![0x40, 0x01, b'x', 70];
    big.extend([b'y'; 70]);
    ours(&mut d, &big).unwrap();
    assert_eq!(d.table(), (0, 0));
    ours(&mut d, &entry(b'd')).unwrap();
    // down to 0: everything goes
    ours(&mut d, &[0x20]).unwrap();
    assert_eq!(d.table(), (0, 0));
}

/// A long string's scratch is given back after its block: an idle
/// connection keeps at most `KEEP` bytes of it.
#[test]
fn scratch_grown_by_a_long_string_is_given_back() {
    let mut d = new(4096);
    // a literal without indexing, name "n", a 2,000-byte raw value
    let mut block = vec![0x00, 0x01, b'n', 0x7f, 0xd1, 0x0e];
    block.extend([b'v'; 2000]);
    let got = ours(&mut d, &block).unwrap();
    assert_eq!(got[0].1.len(), 2000);
    assert_eq!(d.value.capacity(), 0);
    // a short one keeps its buffer
    ours(&mut d, &[0x00, 0x01, b'n', 0x01, b'v']).unwrap();
    assert!(d.value.capacity() > 0 && d.value.capacity() <= super::super::KEEP);
}

/// The static table's tags are sorted once for every decoder of a
/// [`Tags`], not once per connection.
#[test]
fn decoders_share_their_static_tags() {
    let (a, b) = (new(4096), new(100));
    assert!(std::ptr::eq(a.static_tags, b.static_tags));
    assert_eq!(a.static_tags[1], by_length(b":method"));
}
