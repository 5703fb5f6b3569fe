//! HPACK header blocks as a hostile pod could send them, through one
//! connection direction's decoder: never a panic, the table within its
//! size, and every block it accepts decoded to the same fields by the
//! reference crate (`loona-hpack`). Each 0xfe byte ends a block.
#![no_main]
use cased_agent::ebpf::h2::hpack::{Decoder, Tags};
use libfuzzer_sys::fuzz_target;

static BY_LENGTH: Tags = Tags::new(|n| n.len() as u8);

fuzz_target!(|data: &[u8]| {
    // loona-hpack's table is 4096 bytes and may not grow
    let mut ours = Decoder::new(4096, &BY_LENGTH);
    let mut reference = loona_hpack::Decoder::new();
    for block in data.split(|&b| b == 0xfe) {
        let mut got = Vec::new();
        if ours
            .decode(block, |t, n, v| {
                assert_eq!(t, n.len() as u8);
                got.push((n.to_vec(), v.to_vec()));
            })
            .is_err()
        {
            // the connection is lost: nothing more is decoded on it
            return;
        }
        let mut want = Vec::new();
        match reference.decode_with_cb(block, |n, v| want.push((n.into_owned(), v.into_owned())))
        {
            Ok(()) => assert_eq!(got, want, "{block:02x?}"),
            // stricter than RFC 7541 asks: a block may end on a size
            // update here (empty trailers after a SETTINGS change)
            Err(loona_hpack::decoder::DecoderError::SizeUpdateAtEnd) => return,
            Err(e) => panic!("accepted, the reference refuses ({e:?}): {block:02x?}"),
        }
    }
});
